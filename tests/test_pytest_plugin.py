"""The pytest plugin and the fixture, exercised the way another repository uses them.

``pytester`` builds a throwaway "other repo" holding its own autodiff library and adapter
(:data:`MINI_AUTODIFF`: a small tape with hand-written backward rules, supporting a few
ops only), then runs pytest in it with ``--gradoracle-adapter mymod:MiniAdapter``:

- the conformance suite passes for the correct adapter and fails with the oracle's
  diagnostic for one whose max-pool backward routes delta to the wrong pixel (negative
  control), and its repro snippet reproduces the failure;
- ids, ``--co``, ``-k``, skip reasons, known deviations (xfail, stale, unmatched), ini
  keys (and the command line winning over them), usage errors, ``-p no:gradoracle``,
  pytest-xdist, the console script, the terminal matrix and ``--gradoracle-report``;
- the ``gradoracle`` fixture / :func:`gradoracle.user_checks.check_gradients` on correct and
  wrong hand-written backwards, a wrong user reference, a forward that computes another
  function, a torch ``autograd.Function``;
- loading the plugin imports neither torch nor jax.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import strategies as st

from gradoracle.adapters.base import AdapterBase
from gradoracle.results import Fault, GradientMismatch, Verdict
from gradoracle.user_checks import (
    USER_REFERENCE_FAULT,
    FrameworkUnavailableError,
    GradOracle,
    UserCheckError,
    check_gradients,
    check_gradients_at,
)

pytest_plugins = ["pytester"]

# A team's own reverse-mode library and its gradoracle adapter: the "other repo".
MINI_AUTODIFF = '''
"""mini: a tiny tape with hand-written backward rules, and its gradoracle adapter."""
import numpy as np

from gradoracle.adapters.base import VJPResult


class T:
    """A traced value: its array and, per parent, a function sending the cotangent back."""

    def __init__(self, value, parents=()):
        self.value = value
        self.parents = parents


def val(x):
    return x.value if isinstance(x, T) else x


def backprop(out, cotangent):
    order, seen = [], set()

    def visit(t):
        if id(t) in seen:
            return
        seen.add(id(t))
        for parent, _ in t.parents:
            if isinstance(parent, T):
                visit(parent)
        order.append(t)

    visit(out)
    grads = {id(out): cotangent}
    for t in reversed(order):
        g = grads.get(id(t))
        if g is None:
            continue
        for parent, rule in t.parents:
            if isinstance(parent, T):
                grads[id(parent)] = grads.get(id(parent), 0) + rule(g)
    return grads


class Ops:
    ROUTE_SHIFT = 0  # 0: delta goes to the window's argmax

    def relu(self, x):
        X = val(x)
        return T(np.maximum(X, 0), [(x, lambda g: g * (X > 0))])

    def sigmoid(self, x):
        s = 1 / (1 + np.exp(-val(x)))
        return T(s, [(x, lambda g: g * s * (1 - s))])

    def tanh(self, x):
        t = np.tanh(val(x))
        return T(t, [(x, lambda g: g * (1 - t * t))])

    def conv2d(self, x, k):
        X, K = val(x), val(k)
        kh, kw = K.shape
        ho, wo = X.shape[0] - kh + 1, X.shape[1] - kw + 1
        out = sum(K[a, b] * X[a:a + ho, b:b + wo] for a in range(kh) for b in range(kw))

        def dx(g):
            d = np.zeros_like(X)
            for a in range(kh):
                for b in range(kw):
                    d[a:a + ho, b:b + wo] += K[a, b] * g
            return d

        def dk(g):
            return np.array([[np.sum(g * X[a:a + ho, b:b + wo]) for b in range(kw)] for a in range(kh)],
                            dtype=X.dtype)

        return T(out, [(x, dx), (k, dk)])

    def _windows(self, X, k, stride):
        if stride not in (None, k):
            raise ValueError("mini pools only with stride == k")
        ho, wo = X.shape[0] // k, X.shape[1] // k
        return X[:ho * k, :wo * k].reshape(ho, k, wo, k).transpose(0, 2, 1, 3).reshape(ho, wo, k * k)

    def max_pool2d(self, x, k, stride=None):
        X = val(x)
        win = self._windows(X, k, stride)
        idx = win.argmax(axis=-1)
        out = np.take_along_axis(win, idx[..., None], axis=-1)[..., 0]

        def dx(g):
            routed = (idx + self.ROUTE_SHIFT) % (k * k)
            rows = np.arange(g.shape[0])[:, None] * k + routed // k
            cols = np.arange(g.shape[1])[None, :] * k + routed % k
            d = np.zeros_like(X)
            d[rows, cols] += g
            return d

        return T(out, [(x, dx)])

    def avg_pool2d(self, x, k, stride=None):
        X = val(x)
        win = self._windows(X, k, stride)
        ho, wo = win.shape[:2]

        def dx(g):
            d = np.zeros_like(X)
            d[:ho * k, :wo * k] = np.repeat(np.repeat(g / (k * k), k, axis=0), k, axis=1)
            return d

        return T(win.mean(axis=-1), [(x, dx)])


class MiniAdapter:
    name = "mini"
    dtypes = ("float64", "float32")
    has_jvp = False
    ops_class = Ops

    def available(self):
        return True, ""

    def supported_ops(self):
        return frozenset({"relu", "sigmoid", "tanh", "conv2d", "max_pool2d", "avg_pool2d"})

    @property
    def ops(self):
        return self.ops_class()

    def from_numpy(self, a, dtype):
        return np.array(a, dtype=dtype)

    def to_numpy(self, t):
        return np.array(val(t))

    def forward(self, fn, inputs, dtype):
        return self.to_numpy(fn(self.ops, {k: self.from_numpy(v, dtype) for k, v in inputs.items()}))

    def vjp(self, fn, inputs, wrt, cotangent, dtype):
        args = {k: self.from_numpy(v, dtype) for k, v in inputs.items()}
        leaves = {n: T(args[n]) for n in wrt}
        out = fn(self.ops, {**args, **leaves})
        grads = backprop(out, np.asarray(cotangent, dtype=dtype))
        return VJPResult(self.to_numpy(out), {n: np.asarray(grads.get(id(leaves[n]), np.zeros_like(args[n])))
                                              for n in wrt})


class WrongPixelOps(Ops):
    ROUTE_SHIFT = 1  # the bug: delta goes to the pixel after the argmax (row-major, wrapping)


class WrongPixelAdapter(MiniAdapter):
    name = "mini-wrongpixel"
    ops_class = WrongPixelOps


class NotInstalledAdapter(MiniAdapter):
    name = "notinstalled"

    def available(self):
        return False, "minilib-gpu is not installed on this machine"
'''

FAST = ["-p", "no:cacheprovider", "--gradoracle-examples", "3"]
SUPPORTED = ("elementwise-relu", "elementwise-sigmoid", "elementwise-tanh", "conv-filter", "conv-input")
POOLS = ("max-pool", "avg-pool")


@pytest.fixture
def other_repo(pytester: pytest.Pytester) -> pytest.Pytester:
    """A fresh directory holding the other repo's adapter module ``mymod.py``."""
    pytester.makepyfile(mymod=MINI_AUTODIFF)
    pytester.syspathinsert()
    return pytester


def _identity_args(names: tuple[str, ...]) -> list[str]:
    return [arg for n in names for arg in ("--gradoracle-identity", n)]


# ------------------------------------------------------------------ collection and ids


def test_collect_only_lists_one_item_per_identity_adapter_dtype(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--co", "-q", "--gradoracle-adapter", "numpy", *_identity_args(("conv-input", "max-pool")), *FAST
    )
    ids = [line for line in result.outlines if line.startswith("gradoracle::")]
    assert ids == [
        "gradoracle::conv-input[numpy-float64]",
        "gradoracle::conv-input[numpy-float32]",
        "gradoracle::max-pool[numpy-float64]",
        "gradoracle::max-pool[numpy-float32]",
    ]
    # the whole catalogue by default: 38 identities x 2 dtypes
    everything = pytester.runpytest("--co", "-q", "--gradoracle-adapter", "numpy", *FAST)
    assert len([x for x in everything.outlines if x.startswith("gradoracle::")]) == 76
    # negative control: without an adapter the plugin adds nothing
    plain = pytester.runpytest("--co", "-q", *FAST)
    assert not [line for line in plain.outlines if "gradoracle::" in line]


def test_k_and_m_select_conformance_items(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--gradoracle-adapter", "numpy", "-k", "max-pool and float32", "-v", *FAST)
    result.assert_outcomes(passed=2, deselected=74)  # max-pool and max-pool-layer
    result.stdout.fnmatch_lines(["gradoracle::max-pool[[]numpy-float32[]] PASSED*"])
    # family and source are keywords too; the "gradoracle" marker selects or drops the suite
    conv = pytester.runpytest("--gradoracle-adapter", "numpy", "-k", "notes:conv-filter", "--co", "-q", *FAST)
    # (the layer convolutions generalise notes:conv-filter and carry it as their source)
    assert [x for x in conv.outlines if x.startswith("gradoracle::")] == [
        f"gradoracle::{name}[numpy-{dtype}]"
        for name in ("conv-filter", "conv1d-layer", "conv2d-layer", "conv3d-layer")
        for dtype in ("float64", "float32")
    ]
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    own = pytester.runpytest("--gradoracle-adapter", "numpy", "-m", "not gradoracle", *FAST)
    own.assert_outcomes(passed=1, deselected=76)
    suite = pytester.runpytest("--gradoracle-adapter", "numpy", "-m", "gradoracle", "--co", "-q", *FAST)
    suite.stdout.fnmatch_lines(["76/77 tests collected (1 deselected)*"])


def test_unknown_adapter_and_identity_are_usage_errors(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--gradoracle-adapter", "nmupy", *FAST)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gradoracle-adapter nmupy*unknown adapter 'nmupy'*Did you mean numpy*"])
    result = pytester.runpytest("--gradoracle-adapter", "numpy", "--gradoracle-identity", "max-poll", *FAST)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown identity 'max-poll'*max-pool*"])
    pytester.makepyfile(broken_mod="raise RuntimeError('the framework failed to initialise')")
    pytester.syspathinsert()
    result = pytester.runpytest("--gradoracle-adapter", "broken_mod:Adapter", *FAST)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*broken_mod:Adapter*failed: RuntimeError: the framework failed to initialise*"]
    )
    result = pytester.runpytest("--gradoracle-adapter", "numpy", "--gradoracle-examples", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*bad value '0' for --gradoracle-examples*positive integer*"])


# ----------------------------------------------------------- the other repo's adapter


def test_other_repo_adapter_passes_and_skips_ops_it_lacks(other_repo: pytest.Pytester) -> None:
    result = other_repo.runpytest("--gradoracle-adapter", "mymod:MiniAdapter", "-rs", *FAST)
    # 8 identities use only ops mini implements (identity-jacobian uses none); the other 30 skip,
    # naming what is missing
    result.assert_outcomes(passed=16, skipped=60)
    result.stdout.fnmatch_lines(["SKIPPED [[]8[]] gradoracle:1: adapter 'mini' does not implement matmul"])
    result.stdout.fnmatch_lines(["*gradoracle conformance*", "*max-pool*pass*pass*", "16 pass, 60 skip"])


def test_wrong_max_pool_backward_fails_with_the_oracle_diagnostic(other_repo: pytest.Pytester) -> None:
    args = ["--gradoracle-adapter", "mymod:MiniAdapter", "--gradoracle-adapter", "mymod:WrongPixelAdapter"]
    result = other_repo.runpytest(*args, *_identity_args(POOLS), *FAST)
    result.assert_outcomes(passed=6, failed=2)  # only max-pool on the wrong adapter, both dtypes
    out = result.stdout.str()
    for dtype in ("float64", "float32"):
        assert f"FAILED gradoracle::max-pool[mini-wrongpixel-{dtype}]" in out
    block = out.split("gradoracle: max-pool[mini-wrongpixel-float64]")[1].split("gradoracle: max-pool[")[0]
    assert (
        'gradient check failed: max-pool (notes "Pooling layers: max pooling") / adapter mini-wrongpixel / float64'
        in block
    )
    assert "fault: backward" in block
    assert re.search(
        r"worst: autodiff vs (analytic|finite differences).*input 'X', element \[\d+, \d+\]", block
    )
    assert re.search(r"autodiff = \S+ +analytic = \S+ +finite differences = \S+", block)
    assert re.search(r"\|error\| \S+ > allowed \S+ = ", block)
    assert "tolerance formula:" not in block  # one --verbose away
    assert "allowed" in block
    # Hypothesis shrank the counterexample to the smallest window that shows the bug
    assert "example: X[2, 2], params={'k': 2}" in block
    assert "reproduce('max-pool', 'mymod:WrongPixelAdapter', 'float64'" in block
    # the matrix shows the failing cells next to the passing ones
    result.stdout.fnmatch_lines(["*max-pool*pass*pass*FAIL*FAIL*", "*avg-pool*pass*pass*pass*pass*"])
    # and the repro snippet reproduces the failure
    lines = block.split("  repro:\n")[1].splitlines()
    snippet = textwrap.dedent("\n".join(line for line in lines if line.startswith("    ")))
    run = subprocess.run(
        [sys.executable, "-c", snippet], cwd=other_repo.path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode != 0
    assert "GradientMismatch" in run.stderr
    assert "max-pool" in run.stderr


def test_adapter_that_is_not_installed_skips_with_reason(other_repo: pytest.Pytester) -> None:
    result = other_repo.runpytest(
        "--gradoracle-adapter", "mymod:NotInstalledAdapter", "-rs", *_identity_args(POOLS), *FAST
    )
    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines(["*adapter 'notinstalled' is not available: minilib-gpu is not installed*"])


def test_known_deviations_become_xfail_and_stale_entries_are_reported(other_repo: pytest.Pytester) -> None:
    other_repo.makefile(
        ".toml",
        deviations="""
        [[deviation]]
        identity = "max-pool"
        adapter = "mini-wrongpixel"
        reason = "router off by one pixel, fix in mini 2.0"
        link = "https://example.org/mini/12"

        [[deviation]]
        identity = "avg-pool"
        adapter = "mini-wrongpixel"
        reason = "thought to be broken, but is not"

        [[deviation]]
        identity = "conv-*"
        adapter = "no-such-adapter"
        reason = "a typo"
        """,
    )
    args = [
        "--gradoracle-adapter",
        "mymod:WrongPixelAdapter",
        "--gradoracle-known-deviations",
        "deviations.toml",
    ]
    result = other_repo.runpytest(*args, "-rxX", *_identity_args(POOLS), *FAST)
    # the stale entry's checks pass: XPASS, with a pytest warning naming the entry
    result.assert_outcomes(xpassed=2, xfailed=2, warnings=2)
    result.stdout.fnmatch_lines(
        [
            "*StaleDeviationWarning: gradoracle::avg-pool[[]mini-wrongpixel-float64[]] passes: "
            "the known deviation avg-pool / mini-wrongpixel / * (thought to be broken, but is not) is stale*",
            "*stale known deviation (now passes; remove it): avg-pool / mini-wrongpixel / *",
            "*known deviation matches no check in this run: conv-* / no-such-adapter / *",
            "XFAIL gradoracle::max-pool[[]mini-wrongpixel-float64[]] - known deviation: "
            "router off by one pixel, fix in mini 2.0 (https://example.org/mini/12)",
        ]
    )
    # negative control: without the file the same checks fail
    other_repo.runpytest("--gradoracle-adapter", "mymod:WrongPixelAdapter", *_identity_args(POOLS), *FAST)
    failed = other_repo.runpytest(
        "--gradoracle-adapter", "mymod:WrongPixelAdapter", *_identity_args(POOLS), *FAST
    )
    failed.assert_outcomes(passed=2, failed=2)
    bad = other_repo.runpytest(
        "--gradoracle-adapter", "mymod:MiniAdapter", "--gradoracle-known-deviations", "missing.toml", *FAST
    )
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*known-deviations file*missing.toml*does not exist*"])


def test_options_from_the_ini_file_and_the_command_line_wins(other_repo: pytest.Pytester) -> None:
    other_repo.mkdir("conf")
    (other_repo.path / "conf" / "devs.toml").write_text(
        '[[deviation]]\nidentity = "max-pool"\nadapter = "mini-wrongpixel"\n'
        'reason = "ini-relative path works"\n'
    )
    other_repo.makeini(
        """
        [pytest]
        gradoracle_adapter = mymod:WrongPixelAdapter
        gradoracle_identity = max-pool conv-input
        gradoracle_dtype = float32
        gradoracle_examples = 2
        gradoracle_seed = 7
        gradoracle_known_deviations = conf/devs.toml
        """
    )
    result = other_repo.runpytest("-p", "no:cacheprovider", "-rx")
    result.stdout.fnmatch_lines(
        [
            "gradoracle: adapters mini-wrongpixel (mymod:WrongPixelAdapter); 2 identities x "
            "float32; 2 examples per check (gradoracle option), seed 7"
        ]
    )
    result.assert_outcomes(passed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*XFAIL*max-pool[[]mini-wrongpixel-float32[]]*ini-relative path works*"])
    # the command line overrides the ini value (dtype) and adds to nothing else
    co = other_repo.runpytest("-p", "no:cacheprovider", "--co", "-q", "--gradoracle-dtype", "float64")
    ids = [line for line in co.outlines if line.startswith("gradoracle::")]
    assert ids == [
        "gradoracle::max-pool[mini-wrongpixel-float64]",
        "gradoracle::conv-input[mini-wrongpixel-float64]",
    ]
    # a bad ini value names the key
    other_repo.makeini("[pytest]\ngradoracle_adapter = numpy\ngradoracle_dtype = float16\n")
    bad = other_repo.runpytest("-p", "no:cacheprovider")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(
        ["*bad value*float16*--gradoracle-dtype (ini key gradoracle_dtype*unknown dtype*"]
    )


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("--gradoracle-identity", "nope"), "--gradoracle-identity"),
        (("--gradoracle-identity", "elementwise-relu"), "--gradoracle-identity"),
        (("--gradoracle-max-hangs", "2"), "--gradoracle-max-hangs"),
    ],
)
def test_suite_only_options_without_an_adapter_are_a_usage_error(
    pytester: pytest.Pytester, args: tuple[str, ...], flag: str
) -> None:
    # they select the conformance suite's checks, which no adapter runs: silently nothing
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{flag} needs the conformance suite*--gradoracle-adapter*"])
    # the fixture's own options (and the same option from the ini file) stay quiet
    assert pytester.runpytest("--gradoracle-examples", "3").ret == pytest.ExitCode.OK
    pytester.makeini("[pytest]\ngradoracle_identity = elementwise-relu\n")
    assert pytester.runpytest().ret == pytest.ExitCode.OK


def test_report_needs_an_adapter(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--gradoracle-report", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gradoracle-report needs the conformance suite*--gradoracle-adapter*"])
    # from the ini file it waits for a session with an adapter instead of breaking every run
    pytester.makeini("[pytest]\ngradoracle_report = out\n")
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    quiet = pytester.runpytest()
    quiet.assert_outcomes(passed=1)
    assert not (pytester.path / "out").exists()


def test_report_dir_gets_the_report_files(other_repo: pytest.Pytester) -> None:
    from gradoracle.reporting import FILE_NAMES, validate_document

    other_repo.makefile(
        ".toml",
        devs='[[deviation]]\nidentity = "max-pool"\nadapter = "mini-wrongpixel"\n'
        'dtype = "float32"\nreason = "r"\n',
    )
    args = ["--gradoracle-adapter", "mymod:MiniAdapter", "--gradoracle-adapter", "mymod:WrongPixelAdapter"]
    args += ["--gradoracle-known-deviations", "devs.toml", "--gradoracle-report", "rep"]
    result = other_repo.runpytest(*args, *_identity_args(POOLS), *FAST)
    result.assert_outcomes(passed=6, failed=1, xfailed=1)
    out_dir = other_repo.path / "rep"
    shown = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("."))
    assert shown == sorted([*FILE_NAMES.values(), "report-set.json"])
    result.stdout.fnmatch_lines(
        ["gradoracle report (json): *rep*report.json", "gradoracle report (junit): *junit.xml"]
    )
    document = json.loads((out_dir / "report.json").read_text())
    validate_document(document)
    verdicts = {r["id"]: r["verdict"] for r in document["results"]}
    assert verdicts == {
        **{f"{i}-mini-{d}": "pass" for i in POOLS for d in ("float64", "float32")},
        "avg-pool-mini-wrongpixel-float64": "pass",
        "avg-pool-mini-wrongpixel-float32": "pass",
        "max-pool-mini-wrongpixel-float64": "fail",
        "max-pool-mini-wrongpixel-float32": "xfail",
    }
    assert document["summary"]["status"] != "conform"
    assert document["run"]["planned_checks"] == 8
    assert document["run"]["examples"] == 3
    assert document["known_deviations"]["matched"][0]["id"] == "max-pool-mini-wrongpixel-float32"
    assert document["conventions"], "the convention probes are part of the report"
    assert "max-pool" in (out_dir / "report.md").read_text()


# --------------------------------------------------------- disabling, xdist, console script


def test_disabled_with_p_no_gradoracle(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_probe="""
        import sys

        def test_plugin_module_not_loaded():
            assert "gradoracle.pytest_plugin" not in sys.modules
        """
    )
    off = pytester.runpytest_subprocess("-p", "no:gradoracle", "-p", "no:cacheprovider")
    off.assert_outcomes(passed=1)
    # negative control: enabled, the plugin module is loaded
    on = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    on.assert_outcomes(failed=1)
    # disabled, its options and fixture are gone
    opt = pytester.runpytest_subprocess("-p", "no:gradoracle", "--gradoracle-adapter", "numpy")
    assert opt.ret == pytest.ExitCode.USAGE_ERROR
    opt.stderr.fnmatch_lines(["*unrecognized arguments: --gradoracle-adapter*"])
    pytester.makepyfile(test_fixture="def test_uses_fixture(gradoracle):\n    pass\n")
    fix = pytester.runpytest_subprocess("-p", "no:gradoracle", "test_fixture.py")
    fix.stdout.fnmatch_lines(["*fixture 'gradoracle' not found*"])


def test_xdist_workers_collect_the_same_items_and_the_controller_gets_every_result(
    other_repo: pytest.Pytester,
) -> None:
    pytest.importorskip("xdist")
    args = ["--gradoracle-adapter", "mymod:MiniAdapter", "--gradoracle-adapter", "mymod:WrongPixelAdapter"]
    # a fixed seed: with 3 examples a random one missed the wrong pixel in one dtype now and then
    seed = ["--gradoracle-seed", "0"]
    result = other_repo.runpytest_subprocess("-n", "2", *args, *_identity_args(POOLS), *FAST, *seed)
    result.assert_outcomes(passed=6, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*gradoracle conformance*",
            "*max-pool*pass*pass*FAIL*FAIL*",
            "*avg-pool*pass*pass*pass*pass*",
            "2 fail, 6 pass",
        ]
    )
    assert "gradient check failed: max-pool" in result.stdout.str()


def test_console_script_finds_the_adapter_module_next_to_the_tests(other_repo: pytest.Pytester) -> None:
    """``pytest --gradoracle-adapter mymod:MiniAdapter`` (the script, not ``python -m``) finds mymod."""
    script = Path(sys.executable).with_name("pytest")
    if not script.exists():
        pytest.skip(f"no pytest console script next to {sys.executable}")
    result = other_repo.run(
        str(script), "--gradoracle-adapter", "mymod:MiniAdapter", *_identity_args(POOLS), *FAST, timeout=120
    )
    result.assert_outcomes(passed=4)


def test_loading_the_plugin_imports_neither_torch_nor_jax(pytester: pytest.Pytester) -> None:
    code = (
        "import sys, gradoracle.pytest_plugin; print(sorted(m for m in ('torch', 'jax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # the plugin module itself adds nothing to what pytest and the oracle package import
    code = (
        "import sys, pytest, gradoracle; before = set(sys.modules); import gradoracle.pytest_plugin; "
        "print(sorted(m for m in set(sys.modules) - before if not m.startswith('gradoracle.pytest_plugin')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # nor does collecting the suite for torch and jax (the frameworks load when a check runs)
    pytester.makeconftest(
        """
        import sys

        def pytest_collection_finish(session):
            loaded = sorted(m for m in ("torch", "jax") if m in sys.modules)
            session.config._gradoracle_probe = loaded
            print("FRAMEWORKS LOADED:", loaded)
        """
    )
    result = pytester.runpytest_subprocess(
        "--co", "-q", "-s", "--gradoracle-adapter", "torch", "--gradoracle-adapter", "jax", *FAST
    )
    result.stdout.fnmatch_lines(["FRAMEWORKS LOADED: []"])
    items = [line for line in result.outlines if line.startswith("gradoracle::")]
    # 38 identities x 2 adapters x 2 dtypes x 3 modes (vjp, jvp, hvp: all that torch and jax support)
    assert len(items) == 38 * 2 * 2 * 3
    assert "gradoracle::mlp[torch-float32]" in items and "gradoracle::mlp[jax-float64-hvp]" in items


# ------------------------------------------------------------------- checking own code


def matvec(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``z = W x``."""
    return W @ x


def matvec_backward(g: np.ndarray, W: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """``dW = g x^T``, ``dx = W^T g``."""
    return {"W": np.outer(g, x), "x": W.T @ g}


def matvec_backward_no_transpose(
    g: np.ndarray, W: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The classic bug: ``dx = W g`` (only shape-correct for square W)."""
    return np.outer(g, x), (W @ g if W.shape[0] == W.shape[1] else W.T @ g)


def matvec_reference_wrong(g: np.ndarray, W: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """A user's closed form with a factor 2 too much on dW."""
    return {"W": 2 * np.outer(g, x), "x": W.T @ g}


def transposed_matvec(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Computes ``W^T x``: another function than the catalogue's ``W x`` (square W only)."""
    return W.T @ x


def transposed_matvec_backward(g: np.ndarray, W: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    return {"W": np.outer(x, g), "x": W @ g}


SHAPES = {"W": ("n", "m"), "x": ("m",)}
SQUARE = {"W": ("n", "n"), "x": ("n",)}


def test_correct_backward_passes_against_the_notes_and_finite_differences() -> None:
    results = check_gradients(
        matvec,
        SHAPES,
        vjp=matvec_backward,
        identity="matvec-weight-grad",
        dtypes=("float64", "float32"),
        examples=15,
    )
    assert [r.verdict for r in results] == [Verdict.PASS, Verdict.PASS]
    assert {"forward", "analytic", "fd", "oracle"} <= set(results[0].errors)
    assert results[0].max_rel("analytic") < 1e-12
    assert results[1].max_rel("analytic") < 1e-5
    # the symbolic dims were drawn consistently (matvec would raise otherwise) and vary
    assert results[0].examples == 15


def test_wrong_backward_fails_with_the_suites_diagnostic() -> None:
    with pytest.raises(GradientMismatch) as info:
        check_gradients(
            matvec, SHAPES, vjp=matvec_backward_no_transpose, identity="matvec-weight-grad", examples=30
        )
    err = info.value
    assert err.fault == Fault.BACKWARD
    assert err.worst is not None
    assert err.worst.input == "x"
    text = str(err)
    assert (
        'gradient check failed: your function matvec (notes "Useful identities 5: matrix times column vector '
        'w.r.t. the matrix", identity matvec-weight-grad) / your backward matvec_backward_no_transpose'
    ) in text
    assert re.search(r"your backward = \S+ +analytic = \S+ +finite differences = \S+", text)
    assert "128 ulp x magnitude of the terms" in text
    assert "inputs whose gradient matched the notes: W" in text
    assert "example: W[2, 2], x[2]" in text  # shrunk to the smallest square W that shows the bug
    assert "check_gradients_at(matvec, inputs" in text
    assert "vjp=matvec_backward_no_transpose" in text
    # the repro snippet runs and raises the same mismatch
    with pytest.raises(GradientMismatch, match="matvec"):
        exec(err.repro or "", {})


def test_finite_differences_alone_catch_a_wrong_backward() -> None:
    """No identity, no reference: FD only (the runner's optional-reference path)."""
    results = check_gradients(matvec, SHAPES, vjp=matvec_backward, examples=10)
    assert results[0].verdict == Verdict.PASS
    assert set(results[0].errors) == {"forward", "fd"}  # no analytic or oracle comparison
    assert results[0].source == "finite differences only"
    with pytest.raises(GradientMismatch) as info:
        check_gradients(matvec, SHAPES, vjp=matvec_backward_no_transpose, examples=30)
    assert info.value.fault == Fault.BACKWARD
    assert "analytic = n/a" in str(info.value)


def test_user_reference_is_checked_too() -> None:
    def reference(g: np.ndarray, W: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"W": np.outer(g, x), "x": W.T @ g}

    results = check_gradients(matvec, SHAPES, vjp=matvec_backward, reference=reference, examples=10)
    assert "analytic" in results[0].errors
    assert "oracle" in results[0].errors
    # a wrong reference (with a right backward) is blamed on the reference, not the backward
    with pytest.raises(GradientMismatch) as info:
        check_gradients(matvec, SHAPES, vjp=matvec_backward, reference=matvec_reference_wrong, examples=10)
    assert info.value.fault == Fault.ORACLE
    assert USER_REFERENCE_FAULT in str(info.value)


def test_a_forward_that_computes_another_function_is_a_forward_fault() -> None:
    with pytest.raises(GradientMismatch) as info:
        check_gradients(
            transposed_matvec,
            SQUARE,
            vjp=transposed_matvec_backward,
            identity="matvec-weight-grad",
            examples=20,
        )
    assert info.value.fault == Fault.FORWARD


def test_catalogue_strategy_and_params_for_a_user_max_pool() -> None:
    def pool(X: np.ndarray, k: int) -> np.ndarray:
        ho, wo = X.shape[0] // k, X.shape[1] // k
        return X[: ho * k, : wo * k].reshape(ho, k, wo, k).max(axis=(1, 3))

    def pool_backward(g: np.ndarray, X: np.ndarray, k: int, shift: int = 0) -> np.ndarray:
        ho, wo = g.shape
        win = X[: ho * k, : wo * k].reshape(ho, k, wo, k).transpose(0, 2, 1, 3).reshape(ho, wo, k * k)
        idx = (win.argmax(axis=-1) + shift) % (k * k)
        d = np.zeros_like(X)
        d[np.arange(ho)[:, None] * k + idx // k, np.arange(wo)[None, :] * k + idx % k] = g
        return d

    def pool_backward_wrong(g: np.ndarray, X: np.ndarray, k: int) -> np.ndarray:
        return pool_backward(g, X, k, shift=1)

    # inputs omitted: the catalogue's max-pool strategy (maxima kept apart) draws X and k
    assert check_gradients(pool, vjp=pool_backward, identity="max-pool", examples=20)[0].ok
    with pytest.raises(GradientMismatch) as info:
        check_gradients(pool, vjp=pool_backward_wrong, identity="max-pool", examples=20)
    assert info.value.fault == Fault.BACKWARD
    assert "params={'k': 2}" in str(info.value)
    # fixed shapes with a fixed param
    assert check_gradients(pool, {"X": (4, 6)}, params={"k": 2}, vjp=pool_backward, identity="max-pool")[0].ok


def test_hypothesis_strategies_as_inputs() -> None:
    def square(x: np.ndarray) -> np.ndarray:
        return x * x

    def square_backward(g: np.ndarray, x: np.ndarray) -> np.ndarray:
        return 2 * x * g

    elements = st.floats(-3, 3, allow_nan=False, width=64)
    inputs = {"x": hnp.arrays(np.float64, st.integers(1, 6), elements=elements)}
    assert check_gradients(square, inputs, vjp=square_backward, identity="elementwise-square")[0].ok
    whole = st.fixed_dictionaries({"x": hnp.arrays(np.float64, 4, elements=elements)})
    assert check_gradients(square, whole, vjp=square_backward, wrt=["x"], examples=10)[0].ok
    with pytest.raises(GradientMismatch):
        check_gradients(square, inputs, vjp=lambda g, x: x * g, identity="elementwise-square")


def test_check_at_one_fixed_example() -> None:
    inputs = {"W": np.arange(6.0).reshape(2, 3), "x": np.array([1.0, -1.0, 0.5])}
    assert check_gradients_at(matvec, inputs, vjp=matvec_backward, identity="matvec-weight-grad").passed
    square = {"W": np.arange(4.0).reshape(2, 2), "x": np.array([1.0, -1.0])}
    with pytest.raises(GradientMismatch):
        check_gradients_at(matvec, square, vjp=matvec_backward_no_transpose, seed=3)


class _Unavailable(AdapterBase):
    name = "unavailable-framework"

    def available(self) -> tuple[bool, str]:
        return False, "not installed here"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inputs": SHAPES}, "nothing to check: give vjp="),
        ({"inputs": SHAPES, "vjp": matvec_backward, "framework": "torch"}, "vjp= is for NumPy functions"),
        (
            {"inputs": {"A": (2, 2), "b": (2,)}, "vjp": matvec_backward},
            "does not take the input(s) ['A', 'b']",
        ),
        (
            {"inputs": {"W": (2, 2), "y": (2,)}, "vjp": matvec_backward, "identity": "matvec-weight-grad"},
            "no ['x']",
        ),
        ({"inputs": SHAPES, "vjp": matvec_backward, "dtypes": ("float16",)}, "dtypes ['float16']"),
        ({"vjp": matvec_backward}, "say what to draw"),
        ({"inputs": SHAPES, "vjp": matvec_backward, "wrt": ["q"]}, "wrt names ['q'] are not inputs"),
        (
            {"inputs": {"W": (2, 3), "x": (2,)}, "vjp": matvec_backward, "identity": "matvec-weight-grad"},
            "z = W x needs W of shape (n, m) and x of shape (m,)",
        ),
    ],
)
def test_bad_arguments_say_what_to_change(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UserCheckError) as info:
        check_gradients(matvec, **kwargs)
    assert message in str(info.value)


def test_framework_that_is_not_installed() -> None:
    with pytest.raises(FrameworkUnavailableError, match="not installed here"):
        check_gradients(matvec, SHAPES, framework=_Unavailable())
    with pytest.raises(pytest.skip.Exception, match="not installed here"):
        GradOracle().check(matvec, SHAPES, framework=_Unavailable())


def test_torch_custom_function_through_its_autodiff() -> None:
    torch = pytest.importorskip("torch")

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (x,) = ctx.saved_tensors
            return 2 * x * g

    class SquareForgotTwo(Square):
        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (x,) = ctx.saved_tensors
            return x * g

    def square(x: Any) -> Any:
        return Square.apply(x)

    def square_bug(x: Any) -> Any:
        return SquareForgotTwo.apply(x)

    ok = check_gradients(
        square, {"x": ("n",)}, framework="torch", identity="elementwise-square", dtypes=("float64", "float32")
    )
    assert all(r.ok for r in ok)
    assert ok[0].adapter == "torch"
    with pytest.raises(GradientMismatch) as info:
        check_gradients(
            square_bug, {"x": ("n",)}, framework="torch", identity="elementwise-square", examples=10
        )
    assert info.value.fault == Fault.BACKWARD


def test_jax_custom_vjp_through_its_autodiff() -> None:
    jax = pytest.importorskip("jax")

    def square_fwd(x: Any) -> Any:
        return x * x, x

    @jax.custom_vjp
    def square(x: Any) -> Any:
        return x * x

    square.defvjp(square_fwd, lambda x, g: (2 * x * g,))

    @jax.custom_vjp
    def square_bug(x: Any) -> Any:
        return x * x

    square_bug.defvjp(square_fwd, lambda x, g: (x * g,))
    ok = check_gradients(
        lambda x: square(x), {"x": ("n",)}, framework="jax", identity="elementwise-square", examples=10
    )
    assert ok[0].verdict == Verdict.PASS
    with pytest.raises(GradientMismatch) as info:
        check_gradients(
            lambda x: square_bug(x),
            {"x": ("n",)},
            framework="jax",
            identity="elementwise-square",
            examples=10,
        )
    assert info.value.fault == Fault.BACKWARD


FIXTURE_TESTS = """
import numpy as np


def matvec(W, x):
    return W @ x


def matvec_backward(g, W, x):
    return {"W": np.outer(g, x), "x": W.T @ g}


def matvec_backward_bug(g, W, x):
    return {"W": np.outer(g, x), "x": W @ g if W.shape[0] == W.shape[1] else W.T @ g}


def test_mine(gradoracle):
    shapes = {"W": ("n", "m"), "x": ("m",)}  # n and m drawn by Hypothesis
    gradoracle.check(matvec, shapes, vjp=matvec_backward, identity="matvec-weight-grad")


def test_mine_bug(gradoracle):
    gradoracle.check(matvec, {"W": (3, 3), "x": (3,)}, vjp=matvec_backward_bug, identity="matvec-weight-grad")


def test_examples_option_reaches_the_fixture(gradoracle):
    assert gradoracle.examples == 4 and gradoracle.seed == 11
"""


def test_fixture_in_another_repo(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_own=FIXTURE_TESTS)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--gradoracle-examples", "4", "--gradoracle-seed", "11"
    )
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "test_mine_bug" in out
    assert "GradientMismatch: gradient check failed: your function matvec" in out
    assert re.search(r"your backward = \S+ +analytic = \S+ +finite differences = \S+", out)
    assert "check_gradients_at(matvec, inputs" in out
    assert "from test_own import matvec, matvec_backward_bug" in out
    assert "gradoracle conformance" not in out  # no adapters: no suite, no matrix


KINKED_MODULE = """
from gradoracle.adapters.numpy_engine import NumpyEngineAdapter
from gradoracle.selftest.mutant_rules import LeakyReluZeroAtZero


class MyGradLike(NumpyEngineAdapter):
    def __init__(self):
        super().__init__(rules=LeakyReluZeroAtZero(), name="mygrad-like")
"""


def test_a_probe_outside_the_subdifferential_fails_the_session(pytester: pytest.Pytester) -> None:
    """#13: the plugin reports a convention probe outside the generalised gradient and fails."""
    pytester.makepyfile(kinked=KINKED_MODULE)
    pytester.syspathinsert()
    base = ["-p", "no:cacheprovider", "--gradoracle-identity", "elementwise-sigmoid"]
    base += ["--gradoracle-examples", "2", "--gradoracle-dtype", "float64"]
    bad = pytester.runpytest(*base, "--gradoracle-adapter", "kinked:MyGradLike", "--gradoracle-report", "rep")
    bad.assert_outcomes(passed=1)  # the conformance check itself passes ...
    assert bad.ret == pytest.ExitCode.TESTS_FAILED  # ... the leaky_relu'(0) = 0 probe does not
    bad.stdout.fnmatch_lines(
        [
            "FAILED: 1 convention probe(s) outside the generalised (Clarke) gradient*",
            "leaky-relu-at-0 [[]mygrad-like, float64[]]: gradient outside the generalised (Clarke) gradient",
            "*outside: x = 0: got 0, allowed [[]0.01, 1[]]*",
            "*reproduce_probe('leaky-relu-at-0', 'kinked:MyGradLike', 'float64')*",
        ]
    )
    document = json.loads((pytester.path / "rep" / "report.json").read_text())
    assert document["summary"]["convention_failures"] == 1
    # negative control: the correct engine passes, and so does the session
    good = pytester.runpytest(*base, "--gradoracle-adapter", "numpy", "--gradoracle-report", "rep2")
    assert good.ret == pytest.ExitCode.OK
    assert "outside the generalised" not in good.stdout.str()


def test_the_suite_s_modes_reach_the_adapter_as_its_plan(other_repo: pytest.Pytester) -> None:
    """The conformance suite hands the modes it runs to the adapter's optional ``plan_modes``
    (``CheckSettings.modes``; the JAX adapter builds its combined program for them)."""
    other_repo.makepyfile(
        planmod=(
            "from pathlib import Path\n"
            "from mymod import MiniAdapter\n\n"
            "class PlanningAdapter(MiniAdapter):\n"
            "    def plan_modes(self, modes):\n"
            "        with Path('planned.txt').open('a') as f:\n"
            "            f.write(','.join(modes) + '\\n')\n"
        )
    )
    args = ["--gradoracle-adapter", "planmod:PlanningAdapter", *_identity_args(("elementwise-relu",)), *FAST]
    other_repo.runpytest(*args).assert_outcomes(passed=2)
    planned = other_repo.path / "planned.txt"
    assert set(planned.read_text().split()) == {"vjp"}  # MiniAdapter has reverse mode only
    planned.unlink()
    other_repo.runpytest(*args, "--gradoracle-mode", "vjp,jvp").assert_outcomes(passed=2, skipped=2)
    assert set(planned.read_text().split()) == {"vjp,jvp"}
