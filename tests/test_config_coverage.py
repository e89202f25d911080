"""Every configuration of a layer identity's covering pool is evaluated in every check.

A check draws each example's configuration from the pool (``--configurations N``); a
configuration none of its examples drew gets a top-up Hypothesis run of its own (values
drawn, shrunk, saved and replayed as in the main run).  Here:

- a mutant wrong in exactly one non-first configuration of conv1d-layer's pool (a NumPy
  engine ``Rules`` subclass, as the self-test builds its mutants) is caught at every seed,
  including the seeds at which the check's 30 examples never draw that configuration (before
  the top-ups it passed there: seeds 20, 24 and 28 of 0-39 for configuration 1);
- negative control: the correct engine passes at every seed, with the same top-ups;
- a top-up failure is shrunk within its configuration, says it came from a top-up, and its
  repro snippet, its ``@reproduce_failure`` blob and the example database reproduce it;
- batched adapters, one-at-a-time adapters, forward mode and second order all top up;
  ``--configurations all`` (no pool), a blob replay and the user's own ``@given`` do not.

``GRADORACLE_COVER_FULL=1`` sweeps every non-first configuration over 40 seeds, both paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.database import InMemoryExampleDatabase

from gradoracle import CheckSettings, GradientMismatch, Verdict, check, runner
from gradoracle.adapters.base import VJPResult
from gradoracle.adapters.numpy_engine import NumpyEngineAdapter, Rules
from gradoracle.identities import get_identity
from gradoracle.runner import TOP_UP_EXAMPLES

pytest_plugins = ["pytester"]

FULL = os.environ.get("GRADORACLE_COVER_FULL", "") not in ("", "0")
NAME = "conv1d-layer"
#: The pool configuration the mutant is wrong in (not the first: failures do not shrink to it).
TARGET = 1
#: Seeds (of 0-39) at which the 30 examples of a default check draw no example of TARGET.
UNDRAWN = (1, 9, 21, 24)
SEEDS = range(40) if FULL else (*UNDRAWN, 0, 2)


def _pool() -> tuple[dict[str, Any], ...]:
    space = get_identity(NAME).configurations
    assert space is not None
    return space.pool(8).configurations


def _is(
    config: Mapping[str, Any], x: np.ndarray, k: np.ndarray, stride: Any, dilation: Any, groups: int
) -> bool:
    p = config["params"]
    return (
        tuple(x.shape) == tuple(config["shapes"]["X"])
        and tuple(k.shape) == tuple(config["shapes"]["K"])
        and tuple(stride) == tuple(p["stride"])
        and tuple(dilation) == tuple(p["dilation"])
        and groups == p["groups"]
    )


class WrongInOneConfiguration(Rules):
    """dJ/dX 1.5 times too large in exactly one configuration of conv1d-layer's default pool
    (its shapes, stride, dilation and groups): a kernel specialised for one case."""

    target = TARGET

    def conv_nd_input_grad(
        self,
        delta: np.ndarray,
        x: np.ndarray,
        k: np.ndarray,
        stride: tuple[int, ...],
        pads: tuple[tuple[int, int], ...],
        dilation: tuple[int, ...],
        groups: int,
    ) -> np.ndarray:
        grad = super().conv_nd_input_grad(delta, x, k, stride, pads, dilation, groups)
        if _is(_pool()[self.target], x, k, stride, dilation, groups):
            return grad * 1.5
        return grad


class Mutant(NumpyEngineAdapter):
    """The NumPy engine with :class:`WrongInOneConfiguration` (one example at a time)."""

    def __init__(self, target: int = TARGET) -> None:
        rules = WrongInOneConfiguration()
        rules.target = target
        super().__init__(rules=rules, name="wrong-in-one-configuration")


class Batching(NumpyEngineAdapter):
    """An engine with ``forward_batch``/``vjp_batch`` (looping), so checks take the batched path."""

    def forward_batch(self, fn: Any, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        rows = len(next(iter(inputs.values())))
        return np.stack([self.forward(fn, {k: v[i] for k, v in inputs.items()}, dtype) for i in range(rows)])

    def vjp_batch(
        self,
        fn: Any,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangents: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        res = [
            self.vjp(fn, {k: v[i] for k, v in inputs.items()}, wrt, cotangents[i], dtype)
            for i in range(len(cotangents))
        ]
        return VJPResult(
            np.stack([r.output for r in res]), {n: np.stack([r.grads[n] for r in res]) for n in wrt}
        )


class BatchingMutant(Batching):
    """:class:`Batching` with the mutant's rules."""

    def __init__(self, target: int = TARGET) -> None:
        rules = WrongInOneConfiguration()
        rules.target = target
        super().__init__(rules=rules, name="wrong-in-one-configuration-batched")


# ----------------------------------------------------------------------- the strategies


def test_the_mutant_is_wrong_in_exactly_one_non_first_configuration() -> None:
    pool = _pool()
    # 8 drawn configurations and one top-up only ("N = 1, C_out > 1", a late facet)
    assert len(pool) == 9 and get_identity(NAME).configurations.pool(8).drawable == 8 and TARGET != 0
    matches = [
        i
        for i, c in enumerate(pool)
        if _is(
            pool[TARGET],
            np.empty(c["shapes"]["X"]),
            np.empty(c["shapes"]["K"]),
            c["params"]["stride"],
            c["params"]["dilation"],
            c["params"]["groups"],
        )
    ]
    assert matches == [TARGET]


def _draw_only(space: Any, k: int) -> tuple[list[int], set[bytes]]:
    """Six examples of ``space.pooled(8, only=k)``: the indices seen and the distinct X arrays."""
    pool = space.pool(8).configurations
    seen: list[int] = []
    arrays: set[bytes] = set()

    @hypothesis_seed(k)
    @settings(max_examples=6, database=None, phases=[Phase.generate], deadline=None)
    @given(space.pooled(8, only=k, seen=seen.append))
    def run(example: Any) -> None:
        assert {n: a.shape for n, a in example.inputs.items()} == dict(pool[k]["shapes"])
        assert example.params == dict(pool[k]["params"])
        arrays.add(example.inputs["X"].tobytes())

    run()
    return seen, arrays


def test_only_fixes_the_configuration_and_the_values_are_still_drawn() -> None:
    space = get_identity(NAME).configurations
    assert space is not None
    for k in (0, 3, 7):
        seen, arrays = _draw_only(space, k)
        assert set(seen) == {k}
        assert len(arrays) >= 3  # new values in each example
    with pytest.raises(ValueError, match="has 9 configurations"):  # 8 drawn, 1 top-up only
        space.pooled(8, only=9)
    with pytest.raises(ValueError, match="needs a covering pool"):
        space.pooled(0, only=1)
    with pytest.raises(ValueError, match="draws no configuration from a pool"):
        get_identity("matvec-jacobian").examples(8, only=0)
    assert get_identity(NAME).pool_size(8) == 9
    assert get_identity(NAME).pool_size(0) == get_identity("matvec-jacobian").pool_size(8) == 0


def test_a_top_up_choice_sequence_is_the_same_example_under_the_pooled_strategy() -> None:
    """The index is one integer choice under both strategies, so a top-up's blob or database
    entry replays through the main strategy (``--gradoracle-reproduce-failure``)."""
    from hypothesis import __version__ as version
    from hypothesis import reproduce_failure

    space = get_identity(NAME).configurations
    assert space is not None
    shown: list[Any] = []

    @settings(max_examples=20, database=None, print_blob=True, phases=[Phase.generate], deadline=None)
    @given(space.pooled(8, only=5))
    def top_up(example: Any) -> None:
        shown.append(example)
        raise AssertionError("fail")

    with pytest.raises(AssertionError) as info:
        top_up()
    blob = next(n for n in info.value.__notes__ if "reproduce_failure" in n).split("b'")[1].split("'")[0]
    replayed: list[Any] = []

    @reproduce_failure(version, blob.encode())
    @settings(database=None, deadline=None)
    @given(space.pooled(8))
    def main(example: Any) -> None:
        replayed.append(example)
        raise AssertionError("fail")

    with pytest.raises(AssertionError):
        main()
    a, b = shown[-1], replayed[0]
    assert a.params == b.params and a.seed == b.seed
    assert all(np.array_equal(a.inputs[n], b.inputs[n]) for n in a.inputs)


# ----------------------------------------------------------------- the mutant, every seed


@pytest.mark.parametrize("path", ["one-at-a-time", "batched"])
def test_a_mutant_in_one_configuration_is_caught_at_every_seed(path: str) -> None:
    adapter = Mutant() if path == "one-at-a-time" else BatchingMutant()
    missed, topped = [], []
    for s in SEEDS:
        r = check(NAME, adapter, "float64", CheckSettings(seed=s, shrink=False))
        if r.verdict != Verdict.FAIL:
            missed.append(s)
        elif r.first_failure is not None and r.first_failure > 30:
            # found after the 30 examples: by the top-up of the configuration they did not draw
            topped.append(s)
            assert f"top-up example of configuration {TARGET + 1} of the 9" in r.message
            assert "none of the check's 30 examples drew it" in r.message
    assert missed == []
    # the seeds at which the 30 examples alone miss it (the check passed there before top-ups)
    assert set(UNDRAWN) & set(SEEDS) <= set(topped)
    assert set(topped) <= set(UNDRAWN)


@pytest.mark.skipif(not FULL, reason="GRADORACLE_COVER_FULL=1: every non-first configuration, 40 seeds")
@pytest.mark.parametrize("target", range(1, 8))
@pytest.mark.parametrize("path", ["one-at-a-time", "batched"])
def test_every_non_first_configuration_is_caught_at_every_seed(target: int, path: str) -> None:
    adapter = Mutant(target) if path == "one-at-a-time" else BatchingMutant(target)
    missed = [
        s
        for s in range(40)
        if check(NAME, adapter, "float64", CheckSettings(seed=s, shrink=False)).verdict != Verdict.FAIL
    ]
    assert missed == []


@pytest.mark.parametrize("path", ["one-at-a-time", "batched"])
def test_a_correct_adapter_passes_every_seed_and_every_configuration_is_evaluated(path: str) -> None:
    """Negative control: the correct engine passes, with the top-ups, at every seed; the
    examples count the top-ups (30 drawn plus one per configuration they missed)."""
    adapter = NumpyEngineAdapter() if path == "one-at-a-time" else Batching()
    counts = []
    for s in SEEDS:
        r = check(NAME, adapter, "float64", CheckSettings(seed=s, shrink=False))
        assert r.verdict == Verdict.PASS, (s, r.message)
        counts.append(r.examples)
        assert 30 <= r.examples <= 30 + 7 * TOP_UP_EXAMPLES
    assert max(counts) > 30  # some seed topped up


# ------------------------------------------------------------- a top-up failure, reported


def _top_up_failure(adapter: Any, seed: int = UNDRAWN[0], **kw: Any) -> Any:
    r = check(NAME, adapter, "float64", CheckSettings(seed=seed, **kw))
    assert r.verdict == Verdict.FAIL, r.message
    assert r.first_failure == 31, (r.first_failure, r.message)  # the top-up, after the 30
    return r


def test_a_top_up_failure_is_shrunk_within_its_configuration_and_its_repro_reproduces() -> None:
    r = _top_up_failure(Mutant())
    assert r.shrink_calls > 0
    target = _pool()[TARGET]
    counter = r.counterexample
    assert {n: tuple(np.shape(v)) for n, v in counter["inputs"].items()} == dict(target["shapes"])
    assert counter["params"] == dict(target["params"])
    assert r.repro and "reproduce(" in r.repro
    with pytest.raises(GradientMismatch):
        exec(r.repro, {})
    # negative control: the same example on the correct engine passes
    from gradoracle import reproduce

    reproduce(NAME, "numpy", "float64", counter["inputs"], counter["params"], counter["seed"])


@pytest.fixture
def profile() -> Iterator[InMemoryExampleDatabase]:
    """A Hypothesis profile with an in-memory example database and ``print_blob``."""
    previous = settings.get_current_profile_name()
    db = InMemoryExampleDatabase()
    settings.register_profile(
        "cover-test",
        database=db,
        print_blob=True,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )
    settings.load_profile("cover-test")
    try:
        yield db
    finally:
        settings.load_profile(previous)


@pytest.mark.parametrize("path", ["one-at-a-time", "batched"])
def test_a_top_up_failure_replays_from_the_database_and_from_its_blob(
    profile: InMemoryExampleDatabase, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a profile with a database and no seed of the user's (the pytest plugin's default),
    the check's random seed is :func:`runner._fresh_seed`: fixed here to a seed whose 30
    examples miss the configuration, so the failure comes from its top-up."""
    adapter = Mutant() if path == "one-at-a-time" else BatchingMutant()
    base = CheckSettings(seed=None, use_profile=True)
    monkeypatch.setattr(runner, "_fresh_seed", lambda: UNDRAWN[0])
    first = check(NAME, adapter, "float64", base)
    assert first.verdict == Verdict.FAIL and first.first_failure == 31, first.message
    assert first.hypothesis_seed == str(UNDRAWN[0])
    assert any(b":configuration:" in k for k in profile.data)  # the top-up's own key
    # the example database: the saved top-up failure is replayed first, whatever the seed
    for other_seed in (UNDRAWN[0], 0):
        monkeypatch.setattr(runner, "_fresh_seed", lambda s=other_seed: s)
        again = check(NAME, adapter, "float64", base)
        assert again.verdict == Verdict.FAIL, again.message
        assert again.first_failure == 1, again.message
        assert again.counterexample == first.counterexample
    # the blob printed by the top-up replays through the check (the pooled strategy)
    assert first.blob
    replay = check(NAME, adapter, "float64", base.with_(reproduce_failure=first.blob))
    assert replay.verdict == Verdict.FAIL, replay.message
    assert replay.counterexample == first.counterexample
    # negative controls: on the correct engine the blob's example passes (Hypothesis's
    # DidNotReproduce, said in words); a check without the database finds the failure anew
    fixed = check(NAME, NumpyEngineAdapter(), "float64", base.with_(reproduce_failure=first.blob))
    assert fixed.verdict == Verdict.ERROR and "no longer fails" in fixed.message
    profile.data.clear()
    fresh = check(NAME, adapter, "float64", base.with_(shrink=False))
    assert fresh.verdict == Verdict.FAIL and fresh.first_failure > 1


# ------------------------------------------------- forward mode, second order, a framework


def _torch_mutant() -> Any:
    from gradoracle.adapters.torch_adapter import TorchAdapter

    target = _pool()[TARGET]["shapes"]

    def hit(inputs: Mapping[str, np.ndarray], batched: bool) -> bool:
        cut = 1 if batched else 0
        return all(tuple(np.shape(inputs[n])[cut:]) == tuple(target[n]) for n in ("X", "K"))

    class TorchWrongInOneConfiguration(TorchAdapter):
        """PyTorch whose J v and H v are 1.5 times too large in configuration TARGET only."""

        name = "torch-wrong-in-one-configuration"

        def jvp(self, fn: Any, inputs: Any, tangents: Any, dtype: str) -> Any:
            out, jv = super().jvp(fn, inputs, tangents, dtype)
            return out, jv * 1.5 if hit(inputs, False) else jv

        def jvp_batch(self, fn: Any, inputs: Any, tangents: Any, dtype: str) -> Any:
            out, jv = super().jvp_batch(fn, inputs, tangents, dtype)
            return out, jv * 1.5 if hit(inputs, True) else jv

        def hvp(self, fn: Any, inputs: Any, wrt: Any, u: Any, tangents: Any, dtype: str, method: str) -> Any:
            hv = super().hvp(fn, inputs, wrt, u, tangents, dtype, method)
            return {n: a * 1.5 for n, a in hv.items()} if hit(inputs, False) else hv

        def hvp_batch(
            self, fn: Any, inputs: Any, wrt: Any, u: Any, tangents: Any, dtype: str, method: str
        ) -> Any:
            hv = super().hvp_batch(fn, inputs, wrt, u, tangents, dtype, method)
            return {n: a * 1.5 for n, a in hv.items()} if hit(inputs, True) else hv

    return TorchWrongInOneConfiguration(), TorchAdapter()


@pytest.mark.parametrize("mode", ["jvp", "hvp"])
def test_forward_mode_and_second_order_top_up_too(mode: str) -> None:
    pytest.importorskip("torch")
    wrong, right = _torch_mutant()
    settings_ = CheckSettings(seed=UNDRAWN[0], shrink=False)
    r = check(NAME, wrong, "float64", settings_, mode)
    assert r.verdict == Verdict.FAIL, r.message
    assert r.first_failure == 31 and "top-up example of configuration 2" in r.message, r.message
    # negative control: the framework itself passes the same check, top-up included
    ok = check(NAME, right, "float64", settings_, mode)
    # 30 drawn, the top-up of configuration 2, and the top-up only configuration 9
    assert ok.verdict == Verdict.PASS and ok.examples == 32, ok.message


def test_no_top_up_without_a_pool_or_when_replaying_one_blob() -> None:
    """``--configurations all`` has no pool (nothing to top up); the notes' identities have none."""
    free = check(NAME, Mutant(), "float64", CheckSettings(seed=UNDRAWN[0], configurations=0, shrink=False))
    assert "top-up" not in free.message and free.examples <= 30
    plain = check("matvec-jacobian", NumpyEngineAdapter(), "float64", CheckSettings(seed=0, examples=5))
    assert plain.verdict == Verdict.PASS and plain.examples == 5


def test_inside_the_users_own_given_one_example_is_drawn_and_nothing_topped_up() -> None:
    """Out of scope, by design: the user's ``@given`` test draws one example through the
    check's strategy (shrunk by the user's test); top-ups would be nested Hypothesis runs."""
    calls: list[int] = []

    class Counting(NumpyEngineAdapter):
        def vjp(self, fn: Any, inputs: Any, wrt: Any, cotangent: Any, dtype: str) -> Any:
            calls.append(1)
            return super().vjp(fn, inputs, wrt, cotangent, dtype)

    @hypothesis_seed(1)
    @settings(max_examples=3, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.just(None))
    def user_test(_: Any) -> None:
        r = check(NAME, Counting(), "float64", CheckSettings(seed=None, use_profile=True))
        assert r.verdict == Verdict.PASS and r.examples == 1, r.message

    user_test()
    assert 0 < len(calls) <= 3 * 2  # one example per run of the user's test (vjp called twice)


# ------------------------------------------------------------ the front-ends: CLI, plugin


def test_the_command_line_reports_a_top_up_failure() -> None:
    import subprocess
    import sys
    from pathlib import Path

    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "gradoracle", "check", "--identity", NAME, "--dtype", "float64"]
    cmd += ["--mode", "vjp", "--seed", str(UNDRAWN[0])]
    wrong = subprocess.run(
        [*cmd, "--adapter", "test_config_coverage:Mutant"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "top-up example of configuration 2 of the 9" in " ".join(wrong.stdout.split())
    # negative control: the correct engine passes the same command
    right = subprocess.run([*cmd, "--adapter", "numpy"], capture_output=True, text=True, env=env, timeout=300)
    assert right.returncode == 0, right.stdout + right.stderr


def test_the_pytest_plugin_reports_a_top_up_failure(pytester: pytest.Pytester) -> None:
    from pathlib import Path

    pytester.syspathinsert(Path(__file__).parent)
    args = ["-p", "no:cacheprovider", "--gradoracle-identity", NAME, "--gradoracle-dtype", "float64"]
    args += ["--gradoracle-mode", "vjp", "--gradoracle-seed", str(UNDRAWN[0])]
    wrong = pytester.runpytest(*args, "--gradoracle-adapter", "test_config_coverage:Mutant")
    wrong.assert_outcomes(failed=1)
    wrong.stdout.fnmatch_lines(
        ["*top-up example of configuration 2 of the 9*", "*example 31 of 31 drawn failed*"]
    )
    right = pytester.runpytest(*args, "--gradoracle-adapter", "numpy")
    right.assert_outcomes(passed=1)
