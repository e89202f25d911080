"""A framework team's workflows with the pytest plugin: what broke when a team adopted it.

Each test runs pytest in a throwaway project (``pytester``) the way a team does, with its
own adapter module, and pins one defect found by acting as that team:

- a session cut short (Ctrl-C, ``-x``) with ``--gradoracle-report`` crashed with an internal
  error (the convention probes ran on an adapter whose thread was still inside the
  interrupted check) and wrote no report; now the checks that did not run are ``not-run``
  and the report says ``incomplete``;
- ``--gradoracle-configurations`` / ``gradoracle_configurations`` were accepted and ignored.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TEAM_ADAPTERS = '''
import os
import signal
import time

from gradoracle.adapters.numpy_engine import NumpyEngineAdapter, Rules


class _BadSigmoid(Rules):
    def sigmoid_backward(self, delta, x, z):
        return delta * z  # sigma instead of sigma (1 - sigma)


class Bad(NumpyEngineAdapter):
    def __init__(self):
        super().__init__(rules=_BadSigmoid(), name="bad")


class Fixed(NumpyEngineAdapter):
    def __init__(self):
        super().__init__(name="bad")  # the same adapter, its sigmoid fixed


class CtrlC(NumpyEngineAdapter):
    """Presses Ctrl-C (SIGINT to its own process) during its third vjp, then finishes that call."""

    calls = 0

    def __init__(self):
        super().__init__(name="ctrlc")

    def vjp(self, fn, inputs, wrt, cotangent, dtype):
        type(self).calls += 1
        if type(self).calls == 3:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # the main thread handles the signal while this call is still running
        return super().vjp(fn, inputs, wrt, cotangent, dtype)


class Shapes(NumpyEngineAdapter):
    """Writes the input shapes of every vjp to the file named by $SHAPES_LOG."""

    def __init__(self):
        super().__init__(name="shapes")

    def vjp(self, fn, inputs, wrt, cotangent, dtype):
        with open(os.environ["SHAPES_LOG"], "a") as log:
            log.write(repr(sorted((k, tuple(v.shape)) for k, v in inputs.items())) + "\\n")
        return super().vjp(fn, inputs, wrt, cotangent, dtype)
'''

FAST = ["-p", "no:cacheprovider", "--gradoracle-examples", "4"]


@pytest.fixture
def team(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(team_adapters=TEAM_ADAPTERS)
    pytester.syspathinsert()
    return pytester


def _identities(*names: str) -> list[str]:
    return [a for n in names for a in ("--gradoracle-identity", n)]


def test_ctrl_c_during_a_session_with_a_report_writes_an_incomplete_report(team: pytest.Pytester) -> None:
    args = ["--gradoracle-adapter", "team_adapters:CtrlC", "--gradoracle-report", "rep"]
    args += _identities("elementwise-tanh", "elementwise-sigmoid", "elementwise-sin")
    # a test runner's worker may ignore SIGINT (pytest-xdist's can), and an ignored SIGINT is
    # inherited by the session under test: a handler here is reset to the default on exec
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = team.runpytest_subprocess(*args, "--gradoracle-dtype", "float64", *FAST, "gradoracle")
    finally:
        signal.signal(signal.SIGINT, previous)
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    assert result.ret == pytest.ExitCode.INTERRUPTED
    from gradoracle.reporting import validate_document

    document = json.loads((team.path / "rep" / "report.json").read_text())
    validate_document(document)
    verdicts = [r["verdict"] for r in document["results"]]
    assert len(verdicts) == 3 and verdicts.count("not-run") >= 2, verdicts
    assert document["summary"]["status"] == "incomplete"
    assert document["run"]["interrupted"] is True
    not_run = next(r for r in document["results"] if r["verdict"] == "not-run")
    assert "interrupted (Ctrl-C)" in not_run["message"]
    result.stdout.fnmatch_lines(["*gradoracle conformance*", "*not-run*"])


def test_a_session_stopped_by_x_marks_the_checks_it_did_not_run(team: pytest.Pytester) -> None:
    args = [
        "--gradoracle-adapter",
        "team_adapters:Bad",
        "--gradoracle-report",
        "rep",
        "--gradoracle-dtype",
        "float64",
    ]
    args += [*_identities("elementwise-sigmoid", "elementwise-tanh", "elementwise-sin"), *FAST]
    result = team.runpytest(*args, "-x")
    result.assert_outcomes(failed=1)
    document = json.loads((team.path / "rep" / "report.json").read_text())
    verdicts = {r["identity"]: r["verdict"] for r in document["results"]}
    assert verdicts == {
        "elementwise-sigmoid": "fail",
        "elementwise-tanh": "not-run",
        "elementwise-sin": "not-run",
    }
    assert "-x / --maxfail" in document["results"][-1]["message"]
    assert document["summary"]["status"] == "nonconformance"
    # negative control: without -x every check runs and none is marked not-run
    team.runpytest(*args).assert_outcomes(failed=1, passed=2)
    document = json.loads((team.path / "rep" / "report.json").read_text())
    assert {r["identity"]: r["verdict"] for r in document["results"]} == {
        "elementwise-sigmoid": "fail",
        "elementwise-tanh": "pass",
        "elementwise-sin": "pass",
    }


def _shapes(team: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *extra: str) -> set[str]:
    log = team.path / f"shapes{len(list(team.path.glob('shapes*')))}.log"
    log.touch()
    monkeypatch.setenv("SHAPES_LOG", str(log))
    args = ["--gradoracle-adapter", "team_adapters:Shapes", *_identities("conv2d-layer")]
    result = team.runpytest(
        *args,
        "--gradoracle-dtype",
        "float64",
        "--gradoracle-examples",
        "30",
        "-p",
        "no:cacheprovider",
        "--gradoracle-seed",
        "1",
        *extra,
    )
    result.assert_outcomes(passed=1)
    return set(log.read_text().splitlines())


def test_the_configurations_option_and_ini_key_reach_the_checks(
    team: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # conv2d-layer's default covering set has 8 configurations; "all" draws them freely
    free = _shapes(team, monkeypatch, "--gradoracle-configurations", "all")
    assert len(free) > 8, free
    assert len(_shapes(team, monkeypatch)) <= 8  # negative control: the default set
    team.makeini("[pytest]\ngradoracle_configurations = all\n")
    assert len(_shapes(team, monkeypatch)) > 8
    assert len(_shapes(team, monkeypatch, "--gradoracle-configurations", "8")) <= 8  # the command line wins


def test_the_report_records_the_configurations_setting(team: pytest.Pytester) -> None:
    args = ["--gradoracle-adapter", "numpy", *_identities("elementwise-tanh"), "--gradoracle-report", "rep ü"]
    args += ["--gradoracle-configurations", "all", *FAST]
    team.runpytest(*args).assert_outcomes(passed=2)
    run = json.loads(Path(team.path / "rep ü" / "report.json").read_text())["run"]
    assert run["settings"]["configurations"] == 0
    # the recorded command runs again as it is, a path with a space included (it was joined with spaces)
    assert shlex.split(run["invocation"])[: len(args) + 1] == ["pytest", *args]  # (pytester adds --basetemp)


TWO_FIXTURE_TESTS = """
def test_a_correct_square(gradoracle):
    gradoracle.check(lambda x: x * x, {"x": (3,)}, vjp=lambda g, x: {"x": 2 * x * g})


def test_b_wrong_square(gradoracle):
    gradoracle.check(lambda x: x * x, {"x": (3,)}, vjp=lambda g, x: {"x": 3 * x * g})
"""

REPLAY_ONLY_CONFTEST = """
from hypothesis import Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

# derandomize and print_blob off: under CI=1 Hypothesis's "ci" profile is the parent
db = DirectoryBasedExampleDatabase(".hypothesis/examples")
settings.register_profile("db", database=db, derandomize=False, print_blob=False)
settings.register_profile("replay", parent=settings.get_profile("db"), phases=[Phase.explicit, Phase.reuse])
"""


@pytest.fixture(autouse=True)
def _hypothesis_profile_restored() -> Iterator[None]:
    """``--hypothesis-profile`` in an in-process run loads it for the rest of this process."""
    from hypothesis import core, settings

    profile, forced = settings.get_current_profile_name(), core.global_force_seed
    core.global_force_seed = None  # a --hypothesis-seed another in-process run left behind
    try:
        yield
    finally:
        settings.load_profile(profile)
        core.global_force_seed = forced


def test_a_fixture_failure_replays_from_the_database_for_its_own_test(pytester: pytest.Pytester) -> None:
    """Each fixture check has its own example-database entry: before, every check of a lambda shared
    one ("forward" / "vjp:vjp"), so a correct test replayed another test's saved failure, passed,
    and Hypothesis deleted it: the failing test did not replay it first on the next run."""
    pytester.makepyfile(test_mine=TWO_FIXTURE_TESTS)
    pytester.makeconftest(REPLAY_ONLY_CONFTEST)
    first = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--hypothesis-profile", "db")
    first.assert_outcomes(passed=1, failed=1)
    # only the saved examples run now: the failure must come back, the correct test has none of its own
    replay = pytester.runpytest("-p", "no:cacheprovider", "-rfs", "--hypothesis-profile", "replay")
    replay.assert_outcomes(failed=1, skipped=1)
    replay.stdout.fnmatch_lines(["*SKIPPED*no example ran: your Hypothesis profile's phases*Phase.generate*"])
    assert "test_b_wrong_square" in "\n".join(line for line in replay.outlines if line.startswith("FAILED"))


def test_a_replay_only_profile_skips_a_check_that_has_nothing_saved(team: pytest.Pytester) -> None:
    """A profile without Phase.generate checks nothing new: a skip that says so, as Hypothesis skips a
    test of its own (it was an error blamed on the adapter, quoting Hypothesis's internals)."""
    team.makeconftest(REPLAY_ONLY_CONFTEST)
    args = [
        "--gradoracle-adapter",
        "team_adapters:Bad",
        *_identities("elementwise-sigmoid", "elementwise-tanh"),
    ]
    args += ["--gradoracle-dtype", "float64", *FAST, "-rs"]
    team.runpytest(*args, "--hypothesis-profile", "db").assert_outcomes(failed=1, passed=1)
    replay = team.runpytest(*args, "--hypothesis-profile", "replay")
    # the saved failure replays; tanh, which saved nothing, is not silently passed
    replay.assert_outcomes(failed=1, skipped=1)
    replay.stdout.fnmatch_lines(["*SKIPPED*gradoracle*no example ran*Phase.explicit, Phase.reuse*"])


BLOB_CONFTEST = """
from hypothesis import settings

settings.register_profile("blob", print_blob=True, database=None, derandomize=False)
settings.register_profile("nodb", database=None, derandomize=False, print_blob=False)
"""


def test_how_a_failure_was_drawn_is_said_true_to_the_session(team: pytest.Pytester) -> None:
    team.makeconftest(REPLAY_ONLY_CONFTEST + BLOB_CONFTEST)
    args = ["--gradoracle-adapter", "team_adapters:Bad", *_identities("elementwise-sigmoid")]
    args += ["--gradoracle-dtype", "float64", *FAST]
    no_db = team.runpytest(*args, "--hypothesis-profile", "nodb")
    no_db.stdout.fnmatch_lines(
        [
            "*random seed: --hypothesis-seed=* draws them again; your Hypothesis profile has no "
            "example database, so the next run draws new examples"
        ]
    )
    assert "replays the failing one first" not in no_db.stdout.str()  # it was said without a database
    with_db = team.runpytest(*args, "--hypothesis-profile", "db")
    with_db.stdout.fnmatch_lines(["*the example database replays the failing one first on the next run"])
    seeded = team.runpytest(*args, "--hypothesis-profile", "nodb", "--hypothesis-seed=12")
    seeded.stdout.fnmatch_lines(
        ["examples drawn with --hypothesis-seed=12: the same command draws them again"]
    )


def test_a_reproduce_failure_blob_is_checked_and_its_replay_after_a_fix_says_so(
    team: pytest.Pytester,
) -> None:
    team.makeconftest(BLOB_CONFTEST)
    args = [*_identities("elementwise-sigmoid"), "--gradoracle-dtype", "float64", *FAST, "gradoracle"]
    failed = team.runpytest(
        "--gradoracle-adapter", "team_adapters:Bad", *args, "--hypothesis-profile", "blob"
    )
    blob = re.search(r"--gradoracle-reproduce-failure=(\S+)", failed.stdout.str())
    assert blob is not None, failed.stdout.str()
    replay = ["--hypothesis-profile", "nodb", f"--gradoracle-reproduce-failure={blob.group(1)}"]
    again = team.runpytest("--gradoracle-adapter", "team_adapters:Bad", *args, *replay)
    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines(["the example replayed is the one of --gradoracle-reproduce-failure"])
    fixed = team.runpytest("--gradoracle-adapter", "team_adapters:Fixed", *args, *replay)
    fixed.assert_outcomes(failed=1)  # as Hypothesis's @reproduce_failure: an error, not a pass
    fixed.stdout.fnmatch_lines(["*example of --gradoracle-reproduce-failure no longer fails this check*"])
    assert "DidNotReproduce" not in fixed.stdout.str()
    garbage = team.runpytest(
        "--gradoracle-adapter", "team_adapters:Bad", *args, "--gradoracle-reproduce-failure=xyz"
    )
    assert garbage.ret == pytest.ExitCode.USAGE_ERROR
    garbage.stderr.fnmatch_lines(["*--gradoracle-reproduce-failure 'xyz' is not a blob Hypothesis printed*"])
