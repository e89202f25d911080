"""gradoracle as a pytest and Hypothesis citizen (issue 12, items 0-5).

- selection: an identity's exact name selects it alone, ``family:NAME`` and globs select more;
- values shrink: the shrunk counterexample's values are small integers and halves, and the
  drawn values are generic (uniform on a fine grid) before shrinking;
- a different seed draws a different first example; the results record the index of the
  first failing example and the examples drawn apart from shrinking;
- the user's Hypothesis profile is honoured (``max_examples``, ``--hypothesis-seed``, the
  example database replaying a failure first, ``print_blob`` with
  ``--gradoracle-reproduce-failure``), explicit gradoracle options win over it;
- node ids round-trip; ``--lf`` / ``--ff`` / ``--sw`` narrow to failed conformance items;
- known deviations are xfails: a stale one XPASSes, fails under ``xfail_strict`` and under
  ``-W error::gradoracle.StaleDeviationWarning``;
- the fixture follows ``--gradoracle-dtype`` and works inside a user's ``@given`` test.

Runs that load a Hypothesis profile or force a seed change process-wide Hypothesis state
(the loaded profile, ``hypothesis.core.global_force_seed``); the :func:`repo` fixture puts
both back after each test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gradoracle.runner as runner_module
from gradoracle.adapters.base import ForwardFn, VJPResult
from gradoracle.adapters.numpy_engine import NumpyEngineAdapter
from gradoracle.identities import UnknownIdentityError, select_identities
from gradoracle.results import Fault, Verdict
from gradoracle.runner import CheckSettings, check, profile_examples
from gradoracle.strategies import grid_values

pytest_plugins = ["pytester"]

# An adapter module for the pytester runs: the NumPy engine, logging the inputs of every
# vjp call to inputs.log (one JSON line each), optionally with a wrong max-pool backward.
LOGGING_ADAPTERS = '''
import json
import os

import numpy as np

from gradoracle.adapters.base import VJPResult
from gradoracle.adapters.numpy_engine import NumpyEngineAdapter


class LoggingAdapter(NumpyEngineAdapter):
    def __init__(self):
        super().__init__(name="logged")

    def vjp(self, fn, inputs, wrt, cotangent, dtype):
        with open(os.path.join(os.environ.get("LOG_DIR", "."), "inputs.log"), "a") as log:
            log.write(json.dumps({k: np.asarray(v).tolist() for k, v in inputs.items()}) + "\\n")
        return super().vjp(fn, inputs, wrt, cotangent, dtype)


class ScaledAdapter(LoggingAdapter):
    """Every gradient off by a factor 1 + 1e-3: fails every identity."""

    def __init__(self):
        NumpyEngineAdapter.__init__(self, name="scaled")

    def vjp(self, fn, inputs, wrt, cotangent, dtype):
        r = super().vjp(fn, inputs, wrt, cotangent, dtype)
        return VJPResult(r.output, {k: v * v.dtype.type(1.001) for k, v in r.grads.items()})
'''

ONE = ["--gradoracle-identity", "elementwise-sigmoid", "--gradoracle-dtype", "float64"]


@pytest.fixture
def repo(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.Pytester]:
    """A directory with :data:`LOGGING_ADAPTERS`; Hypothesis's global state restored afterwards."""
    from hypothesis import core, settings

    pytester.makepyfile(logadapters=LOGGING_ADAPTERS)
    pytester.syspathinsert()
    monkeypatch.setenv("LOG_DIR", str(pytester.path))
    profile, forced = settings.get_current_profile_name(), core.global_force_seed
    try:
        yield pytester
    finally:
        settings.load_profile(profile)
        core.global_force_seed = forced


def _logged(path: Path) -> list[dict[str, Any]]:
    log = path / "inputs.log"
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    # the runner calls the vjp twice per example, on the same input (nondeterminism check):
    # one entry per example
    assert lines[::2] == lines[1::2], "the two vjp calls of an example saw different inputs"
    return [json.loads(line) for line in lines[::2]]


def _report_results(path: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = json.loads((path / "out" / "report.json").read_text())["results"]
    return results


# ------------------------------------------------------------------ 0. selection


def test_an_exact_name_selects_that_identity_alone_and_family_or_glob_select_more() -> None:
    assert [i.name for i in select_identities(["mlp"])] == ["mlp"]
    family = [i.name for i in select_identities(["family:mlp"])]
    assert len(family) == 6 and family[0] == "mlp" and all(n.startswith("mlp") for n in family)
    # the glob matches names: the batched MLP too; the notes' label selects the section and the
    # layer identities that generalise it (they carry it as their source)
    assert [i.name for i in select_identities(["mlp*"])] == [*family, "mlp-batch"]
    assert [i.name for i in select_identities(["notes:mlp"])] == [*family, "mlp-batch", "cross-entropy-batch"]
    assert {i.name for i in select_identities(["family:pool"])} == {"max-pool", "avg-pool"}
    assert len(select_identities(["elementwise"])) == 13  # a family that is no identity's name
    for bad, hint in [("family:nope", "families: "), ("zz*", "matches no identity"), ("mpl", "mlp")]:
        with pytest.raises(UnknownIdentityError, match=hint):
            select_identities([bad])


def test_the_plugin_selects_mlp_alone_by_name(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--co",
        "-q",
        "-p",
        "no:cacheprovider",
        "--gradoracle-adapter",
        "numpy",
        "--gradoracle-identity",
        "mlp",
    )
    assert [x for x in result.outlines if x.startswith("gradoracle::")] == [
        "gradoracle::mlp[numpy-float64]",
        "gradoracle::mlp[numpy-float32]",
    ]


# ------------------------------------------------------------------ 2. values that shrink


def test_grid_values_enumerate_integers_then_halves_then_quarters_uniformly() -> None:
    assert grid_values(np.arange(9), -1.0, 1.0).tolist() == [0, 1, -1, 0.5, -0.5, 0.25, -0.25, 0.75, -0.75]
    assert grid_values(np.arange(6), 0.1, 4.0).tolist() == [1, 2, 3, 4, 0.5, 1.5]  # log's domain
    codes = np.random.default_rng(0).integers(0, 2**48, size=100_000, dtype=np.uint64)
    values = grid_values(codes, -1.0, 1.0)
    assert values.min() >= -1 and values.max() <= 1
    counts, _ = np.histogram(values, bins=10, range=(-1, 1))
    assert counts.min() > 0.9 * counts.mean()  # uniform
    # generic codes give generic values: almost none is a multiple of 1/64
    assert np.mean(values * 64 == np.round(values * 64)) < 0.01


class _ScaledEngine(NumpyEngineAdapter):
    """Every gradient off by a factor 1 + 1e-3 (the forward correct): fails everywhere."""

    def __init__(self) -> None:
        super().__init__(name="scaled")

    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        r = super().vjp(fn, inputs, wrt, cotangent, dtype)
        return VJPResult(r.output, {k: v * v.dtype.type(1.001) for k, v in r.grads.items()})


def _values(counter: dict[str, Any] | None) -> np.ndarray:
    assert counter is not None
    return np.concatenate([np.ravel(v) for v in counter["inputs"].values()])


@pytest.mark.parametrize("identity", ["matvec-weight-grad", "conv-input", "elementwise-tanh"])
def test_a_shrunk_counterexample_has_small_integer_and_half_values(identity: str) -> None:
    shrunk = check(identity, _ScaledEngine(), "float64", CheckSettings(examples=10))
    assert shrunk.verdict == Verdict.FAIL and shrunk.fault == Fault.BACKWARD
    values = _values(shrunk.counterexample)
    assert np.all(values * 2 == np.round(values * 2)) and np.all(np.abs(values) <= 2), values
    # negative control: the same failure unshrunk shows generic values
    raw = check(identity, _ScaledEngine(), "float64", CheckSettings(examples=10, shrink=False))
    raw_values = _values(raw.counterexample)
    assert not np.all(raw_values * 2 == np.round(raw_values * 2))


def test_shrinking_keeps_the_fault_of_the_first_failure() -> None:
    """A forward fault (a true convolution) must not shrink into all-zero inputs where
    the forwards agree and only the backward differs."""
    import sys

    tests_dir = str(Path(__file__).parent)
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    r = check("conv-input", "broken_adapters:TrueConvolutionAdapter", "float64", CheckSettings(examples=10))
    assert r.fault == Fault.FORWARD
    assert np.all(_values(r.counterexample) * 2 == np.round(_values(r.counterexample) * 2))


# ------------------------------------------------------------------ 0. seeds, first failure


def _spied_examples(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    original = runner_module.evaluate_example

    def spy(ident: Any, adapter: Any, dtype: str, example: Any, settings: Any = None) -> Any:
        seen.append(example)
        return original(ident, adapter, dtype, example, settings)

    monkeypatch.setattr(runner_module, "evaluate_example", spy)
    return seen


def _key(example: Any) -> str:
    return repr({k: np.asarray(v).tolist() for k, v in example.inputs.items()}) + str(example.seed)


def test_a_different_seed_draws_a_different_first_example(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _spied_examples(monkeypatch)
    firsts: dict[int, str] = {}
    for seed in (0, 1, 2):
        seen.clear()
        assert check("matvec-weight-grad", "numpy", "float64", CheckSettings(examples=5, seed=seed)).ok
        firsts[seed] = _key(seen[0])
        # no example is made of zero arrays (the engine's simplest-fill probes are rejected)
        assert all(all(np.any(np.asarray(v) != 0) for v in e.inputs.values()) for e in seen)
    assert len(set(firsts.values())) == 3
    seen.clear()
    check("matvec-weight-grad", "numpy", "float64", CheckSettings(examples=5, seed=1))
    assert _key(seen[0]) == firsts[1]  # the same seed, the same first example


class _FailsFromCall(NumpyEngineAdapter):
    """Correct for the first ``n - 1`` examples, scaled gradients from example ``n`` on (the
    runner calls the vjp twice per example, to see that it repeats itself)."""

    def __init__(self, n: int) -> None:
        super().__init__(name="late")
        self.n, self.calls = n, 0

    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        self.calls += 1
        r = super().vjp(fn, inputs, wrt, cotangent, dtype)
        if (self.calls + 1) // 2 < self.n:
            return r
        return VJPResult(r.output, {k: v * v.dtype.type(1.001) for k, v in r.grads.items()})


def test_results_record_the_first_failing_example_and_the_examples_drawn() -> None:
    late = check("matvec-weight-grad", _FailsFromCall(4), "float64", CheckSettings(examples=20))
    assert late.verdict == Verdict.FAIL
    assert late.first_failure == 4 and late.examples == 4 and late.shrink_calls >= 1
    unshrunk = check(
        "matvec-weight-grad", _FailsFromCall(7), "float64", CheckSettings(examples=20, shrink=False)
    )
    assert (unshrunk.first_failure, unshrunk.examples, unshrunk.shrink_calls) == (7, 7, 1)  # the replay
    # negative control: a passing check drew all its examples and has no first failure
    ok = check("matvec-weight-grad", "numpy", "float64", CheckSettings(examples=12))
    assert ok.ok and ok.first_failure is None and ok.examples == 12 and ok.shrink_calls == 0


# ------------------------------------------------------------------ 1. Hypothesis settings


def test_profile_examples_precedence() -> None:
    from hypothesis import settings

    assert profile_examples(7) == 7
    name = settings.get_current_profile_name()
    settings.register_profile("gradoracle-test-five", max_examples=5)
    try:
        settings.load_profile("gradoracle-test-five")
        assert profile_examples() == 5 and profile_examples(9) == 9
        settings.register_profile("gradoracle-test-default", max_examples=100)
        settings.load_profile("gradoracle-test-default")
        assert profile_examples() == 30  # Hypothesis's own default: gradoracle's 30
    finally:
        settings.load_profile(name)


def test_without_an_example_database_no_database_key_is_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's checks run without an example database, so Hypothesis's database key (a digest
    of the test function's source, about 3 ms per check) is not computed.  Negative control:
    under a profile with a database the key is computed (and failures are saved under it,
    ``test_a_failing_example_replays_first_from_the_database``)."""
    import hypothesis.core as core
    from hypothesis import settings
    from hypothesis.database import InMemoryExampleDatabase

    digests: list[Any] = []
    real = core.function_digest
    monkeypatch.setattr(core, "function_digest", lambda f: digests.append(f) or real(f))
    assert check("matvec-jacobian", "numpy", "float64", CheckSettings(examples=3)).verdict == Verdict.PASS
    assert digests == []
    name = settings.get_current_profile_name()
    settings.register_profile("gradoracle-test-db", database=InMemoryExampleDatabase())
    try:
        settings.load_profile("gradoracle-test-db")
        profiled = CheckSettings(examples=3, use_profile=True)
        assert check("matvec-jacobian", "numpy", "float64", profiled).verdict == Verdict.PASS
    finally:
        settings.load_profile(name)
    assert digests


def _test_cases(identity: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """(test cases Hypothesis ran, of them rejected as drawn with zero arrays) in one check of
    ``identity`` on the NumPy engine (one example at a time: every test case reaches the body)."""
    seen: list[bool] = []
    real = runner_module.simplest_values_drawn

    def spy() -> tuple[bool, bool]:
        probe, degenerate = real()
        seen.append(degenerate and not probe)  # a zero array Hypothesis did not ask for as such
        return probe, degenerate

    monkeypatch.setattr(runner_module, "simplest_values_drawn", spy)
    result = check(identity, "numpy", "float64", CheckSettings(examples=30))
    assert result.verdict == Verdict.PASS and result.examples == 30, result.message
    return len(seen), sum(seen)


@pytest.mark.parametrize("identity", ["mlp", "matvec-weight-grad", "conv-filter"])
def test_generation_copies_arrays_only_between_arrays_of_one_size(
    identity: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hypothesis's generator copies a drawn part of an example over another part with the same
    span label.  Arrays are drawn under a label of their size (``array_label``), so a copy fits
    and no example comes out with an array of zeros that the runner must reject.  Negative
    control: under one label for every size (as before), such copies are a sizeable share."""
    from gradoracle import strategies

    assert strategies.array_label(3) != strategies.array_label(4)
    cases, zero_copies = _test_cases(identity, monkeypatch)
    assert zero_copies == 0
    one_label = strategies.array_label(1)
    monkeypatch.setattr(strategies, "array_label", lambda n: one_label)
    cases_before, zero_copies_before = _test_cases(identity, monkeypatch)
    assert zero_copies_before >= 5 and cases_before > cases


PROFILE_CONFTEST = """
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

settings.register_profile("three", max_examples=3)
settings.register_profile("blob", max_examples=10, print_blob=True, database=None)
settings.register_profile("db", database=DirectoryBasedExampleDatabase(".hypothesis/examples"))
"""


def test_a_loaded_profile_sets_the_examples_and_explicit_options_win(repo: pytest.Pytester) -> None:
    from hypothesis import settings

    outer_profile = settings.get_current_profile_name()
    repo.makeconftest(PROFILE_CONFTEST)
    args = ["-p", "no:cacheprovider", "--gradoracle-adapter", "logadapters:LoggingAdapter", *ONE]
    out = ["--gradoracle-report", "out"]
    result = repo.runpytest(*args, "--hypothesis-profile", "three", *out)
    result.assert_outcomes(passed=1)
    assert [r["examples"] for r in _report_results(repo.path)] == [3]
    result.stdout.fnmatch_lines(["*3 examples per check (Hypothesis profile)*"])
    explicit = repo.runpytest(*args, "--hypothesis-profile", "three", "--gradoracle-examples", "5", *out)
    explicit.assert_outcomes(passed=1)
    assert [r["examples"] for r in _report_results(repo.path)] == [5]
    # negative control: without the profile, gradoracle's default (in a fresh process the
    # profile is not loaded; in this one, put back the one this session runs under)
    from hypothesis import settings

    settings.load_profile(outer_profile)
    default = repo.runpytest(*args, *out)
    default.assert_outcomes(passed=1)
    assert [r["examples"] for r in _report_results(repo.path)] == [30]


def test_hypothesis_seed_decides_the_inputs(repo: pytest.Pytester) -> None:
    args = [
        "-p",
        "no:cacheprovider",
        "--gradoracle-adapter",
        "logadapters:LoggingAdapter",
        *ONE,
        "--gradoracle-examples",
        "4",
        # Hypothesis loads its "ci" profile (derandomize=True) where the CI variable is set; the
        # seed matters under a profile that does not derandomize, so name the default one here
        "--hypothesis-profile",
        "default",
    ]
    drawn = {}
    for run, seed in (("a", "1"), ("b", "2"), ("c", "1")):
        repo.runpytest(*args, f"--hypothesis-seed={seed}").assert_outcomes(passed=1)
        drawn[run] = _logged(repo.path)
    assert drawn["a"] == drawn["c"]
    assert drawn["a"] != drawn["b"]
    # the user's profile is honoured: under Hypothesis's "ci" profile every seed draws the same inputs
    ci_args = [*args[:-1], "ci"]
    for run, seed in (("ci1", "1"), ("ci2", "2")):
        repo.runpytest(*ci_args, f"--hypothesis-seed={seed}").assert_outcomes(passed=1)
        drawn[run] = _logged(repo.path)
    assert drawn["ci1"] == drawn["ci2"]
    # an explicit --gradoracle-seed wins over --hypothesis-seed
    for run, seed in (("d", "1"), ("e", "2")):
        repo.runpytest(*args, "--gradoracle-seed", "5", f"--hypothesis-seed={seed}").assert_outcomes(passed=1)
        drawn[run] = _logged(repo.path)
    assert drawn["d"] == drawn["e"] != drawn["a"]


def test_a_failing_example_replays_first_from_the_database(repo: pytest.Pytester) -> None:
    repo.makeconftest(PROFILE_CONFTEST)
    args = ["-p", "no:cacheprovider", "--gradoracle-adapter", "logadapters:ScaledAdapter", *ONE]
    args += ["--hypothesis-profile", "db"]
    first = repo.runpytest(*args)
    first.assert_outcomes(failed=1)
    shrunk = _logged(repo.path)[-1]  # the final replay is the shrunk example
    assert (repo.path / ".hypothesis" / "examples").is_dir()
    again = repo.runpytest(*args)
    again.assert_outcomes(failed=1)
    replayed = _logged(repo.path)
    assert replayed[0] == shrunk
    again.stdout.fnmatch_lines(["*example 1 of 1 drawn failed*"])
    # negative control: without the database the first example is a fresh random one
    import shutil

    shutil.rmtree(repo.path / ".hypothesis")
    fresh = repo.runpytest(*args)
    fresh.assert_outcomes(failed=1)
    assert _logged(repo.path)[0] != shrunk


def test_print_blob_and_reproduce_failure_replay_exactly_that_example(repo: pytest.Pytester) -> None:
    repo.makeconftest(PROFILE_CONFTEST)
    args = ["-p", "no:cacheprovider", "--gradoracle-adapter", "logadapters:ScaledAdapter", *ONE]
    failed = repo.runpytest(*args, "--hypothesis-profile", "blob")
    failed.assert_outcomes(failed=1)
    shrunk = _logged(repo.path)[-1]
    match = re.search(r"--gradoracle-reproduce-failure=(\S+)", failed.stdout.str())
    assert match, failed.stdout.str()
    node = "gradoracle::elementwise-sigmoid[scaled-float64]"
    assert (
        f"replay exactly this example: pytest '{node}' --gradoracle-reproduce-failure=" in failed.stdout.str()
    )
    replay = repo.runpytest(*args, node, f"--gradoracle-reproduce-failure={match.group(1)}")
    replay.assert_outcomes(failed=1)
    assert _logged(repo.path) == [shrunk]
    # negative control: the blob of another identity's example does not reproduce here
    other = repo.runpytest(
        "-p",
        "no:cacheprovider",
        "--gradoracle-adapter",
        "logadapters:LoggingAdapter",
        *ONE,
        f"--gradoracle-reproduce-failure={match.group(1)}",
    )
    other.assert_outcomes(failed=1)
    # Hypothesis's DidNotReproduce, said in words
    other.stdout.fnmatch_lines(["*example of --gradoracle-reproduce-failure no longer fails this check*"])


# ------------------------------------------------------------------ 3. node ids


def test_a_printed_node_id_runs_exactly_that_item(repo: pytest.Pytester) -> None:
    repo.makepyfile(test_own="def test_own():\n    pass\n")
    args = ["-p", "no:cacheprovider", "--gradoracle-adapter", "numpy", "--gradoracle-examples", "2"]
    listed = repo.runpytest("--co", "-q", *args)
    ids = [x for x in listed.outlines if x.startswith("gradoracle::")]
    assert "gradoracle::elementwise-sigmoid[numpy-float64]" in ids
    one = repo.runpytest("-v", *args, "gradoracle::elementwise-sigmoid[numpy-float64]")
    one.assert_outcomes(passed=1)
    one.stdout.fnmatch_lines(["gradoracle::elementwise-sigmoid[[]numpy-float64[]] PASSED*"])
    both = repo.runpytest("--co", "-q", *args, "gradoracle::mlp")
    assert [x for x in both.outlines if x.startswith("gradoracle::")] == [
        "gradoracle::mlp[numpy-float64]",
        "gradoracle::mlp[numpy-float32]",
    ]
    mixed = repo.runpytest(*args, "test_own.py::test_own", "gradoracle::max-pool[numpy-float32]")
    mixed.assert_outcomes(passed=2)
    own = repo.runpytest(*args, "test_own.py::test_own")  # the user's node id: no suite besides
    own.assert_outcomes(passed=1)
    # negative controls: an id of no item selects nothing; without an adapter it is a usage error
    none = repo.runpytest("--co", "-q", *args, "gradoracle::no-such[numpy-float64]")
    assert not [x for x in none.outlines if x.startswith("gradoracle::")]
    bare = repo.runpytest("-p", "no:cacheprovider", "gradoracle::mlp[numpy-float64]")
    assert bare.ret == pytest.ExitCode.USAGE_ERROR
    bare.stderr.fnmatch_lines(["*names a conformance check, but no adapter is under test*"])


def test_a_node_id_under_xdist(repo: pytest.Pytester) -> None:
    args = ["-p", "no:cacheprovider", "--gradoracle-adapter", "numpy", "--gradoracle-examples", "2"]
    result = repo.runpytest_subprocess("-n", "2", *args, "gradoracle::mlp")
    result.assert_outcomes(passed=2)


def test_lf_ff_and_sw_narrow_to_the_failed_conformance_items(repo: pytest.Pytester) -> None:
    repo.makepyfile(test_own="def test_own():\n    pass\n")
    args = [
        "--gradoracle-adapter",
        "numpy",
        "--gradoracle-adapter",
        "logadapters:ScaledAdapter",
        "--gradoracle-identity",
        "elementwise-sigmoid",
        "--gradoracle-examples",
        "2",
    ]
    first = repo.runpytest(*args)
    first.assert_outcomes(passed=3, failed=2)
    lf = repo.runpytest("--lf", *args)
    lf.assert_outcomes(failed=2, deselected=3)
    ff = repo.runpytest("--ff", "-v", *args)
    ff.assert_outcomes(passed=3, failed=2)
    ran = [line.split()[0] for line in ff.outlines if " PASSED" in line or " FAILED" in line]
    assert ran[:2] == [
        "gradoracle::elementwise-sigmoid[scaled-float64]",
        "gradoracle::elementwise-sigmoid[scaled-float32]",
    ]
    sw = repo.runpytest("--sw", *args)
    sw.assert_outcomes(passed=3, failed=1)  # stops at the first failure...
    again = repo.runpytest("--sw", *args)
    again.assert_outcomes(failed=1, deselected=3)  # ...and resumes from it


# ------------------------------------------------------------------ 4. known deviations


DEVIATIONS = """
[[deviation]]
identity = "elementwise-sigmoid"
adapter = "numpy"
reason = "thought broken, fixed since"

[[deviation]]
identity = "elementwise-sigmoid"
adapter = "scaled"
reason = "gradients 0.1% high until 2.0"
"""


def test_known_deviations_are_xfails_and_stale_ones_xpass(repo: pytest.Pytester) -> None:
    repo.makefile(".toml", devs=DEVIATIONS)
    args = [
        "-p",
        "no:cacheprovider",
        "--gradoracle-adapter",
        "numpy",
        "--gradoracle-adapter",
        "logadapters:ScaledAdapter",
        *ONE,
        "--gradoracle-examples",
        "2",
        "--gradoracle-known-deviations",
        "devs.toml",
    ]
    result = repo.runpytest(*args, "-rxX")
    result.assert_outcomes(xfailed=1, xpassed=1, warnings=1)
    result.stdout.fnmatch_lines(["*StaleDeviationWarning*numpy-float64*is stale*"])
    assert result.ret == pytest.ExitCode.OK
    strict = repo.runpytest(*args, "-o", "xfail_strict=true")
    strict.assert_outcomes(xfailed=1, failed=1)
    strict.stdout.fnmatch_lines(["*XPASS(strict)*"])
    gated = repo.runpytest(*args, "-W", "error::gradoracle.StaleDeviationWarning")
    gated.assert_outcomes(xfailed=1, failed=1)
    # negative control: without the file the scaled adapter fails and numpy passes
    plain = repo.runpytest(*args[:-2])
    plain.assert_outcomes(passed=1, failed=1)


# ------------------------------------------------------------------ 5. the fixture


FIXTURE_TESTS = """
import numpy as np
from hypothesis import given, strategies as st


def square(x):
    return x * x


def square_backward(g, x):
    return 2 * x * g


def square_backward_wrong(g, x):
    return 2.002 * x * g


def test_dtypes(gradoracle):
    results = gradoracle.check(square, {"x": ("n",)}, vjp=square_backward, examples=3)
    print("DTYPES", gradoracle.dtypes, [r.dtype for r in results])


@given(st.floats(0.5, 2.0))
def test_inside_given(gradoracle, scale):
    results = gradoracle.check(lambda x: square(x) * scale, {"x": (3,)}, vjp=lambda g, x: square_backward(g, x) * scale)
    assert [r.examples for r in results] == [1]


@given(st.floats(0.5, 2.0))
def test_inside_given_wrong(gradoracle, scale):
    gradoracle.check(square, {"x": (3,)}, vjp=square_backward_wrong)
"""


def test_the_fixture_follows_the_dtype_option_and_ini(repo: pytest.Pytester) -> None:
    repo.makepyfile(test_fix=FIXTURE_TESTS)
    result = repo.runpytest(
        "-p", "no:cacheprovider", "-s", "--gradoracle-dtype", "float32", "-k", "test_dtypes"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*DTYPES ('float32',) [[]'float32'[]]*"])
    ini_file = repo.makeini("[pytest]\ngradoracle_dtype = float64 float32\n")
    ini = repo.runpytest("-p", "no:cacheprovider", "-s", "-k", "test_dtypes")
    ini.stdout.fnmatch_lines(["*DTYPES ('float64', 'float32') [[]'float64', 'float32'[]]*"])
    # negative control: nothing set, float64 only
    ini_file.unlink()
    plain = repo.runpytest("-p", "no:cacheprovider", "-s", "-k", "test_dtypes")
    plain.stdout.fnmatch_lines(["*DTYPES ('float64',) [[]'float64'[]]*"])


def test_the_fixture_inside_a_given_test(repo: pytest.Pytester) -> None:
    repo.makepyfile(test_fix=FIXTURE_TESTS)
    result = repo.runpytest("-p", "no:cacheprovider", "-k", "inside_given")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "FailedHealthCheck" not in out and "function_scoped_fixture" not in out
    result.stdout.fnmatch_lines(
        ["*test_inside_given_wrong*", "*gradient check failed*", "*Failing test case*"]
    )


# ------------------------------------------------------------------ the cost, measured in the bench


def test_drawing_cost_compares_shrinkable_with_seed_drawn_values() -> None:
    from gradoracle import runner, strategies
    from gradoracle.bench.drawing import drawing_cost, seed_drawn_values

    saved = strategies.values_for, runner.simplest_values_drawn
    with seed_drawn_values():
        # the old way: values from the seed, so a shrunk counterexample keeps generic values
        old = check("matvec-weight-grad", _ScaledEngine(), "float64", CheckSettings(examples=5))
        assert not np.all(_values(old.counterexample) * 2 == np.round(_values(old.counterexample) * 2))
    assert (strategies.values_for, runner.simplest_values_drawn) == saved  # restored
    cost = drawing_cost(identities=["elementwise-tanh"], dtypes=["float64"], examples=3, rounds=2)
    assert len(cost.ratios) == 2 and all(r > 0 for r in cost.ratios)
    assert cost.to_dict()["median_ratio"] == cost.median_ratio
