"""The cheap parts made cheap (issue 16): each keeps the property the slow version had."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from gradoracle import CheckSettings, Fault, Verdict, check
from gradoracle import finite_differences as fd
from gradoracle.identities import get_identity
from gradoracle.reference_ops import correlate2d_valid
from gradoracle.runner import oracle_sampled
from gradoracle.strategies import Example

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------ convolution reference


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(1, 9),
    st.sampled_from(["float64", "float32"]),
    st.integers(0, 2**32 - 1),
)
def test_correlate_by_slices_is_the_windowed_sum(
    kh: int, kw: int, dh: int, dw: int, dtype: str, seed: int
) -> None:
    """Both loop orders (kernel offsets, output positions) give ``sum_ab X[u+a, v+b] K[a,b]``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((kh + dh - 1, kw + dw - 1)).astype(dtype)
    k = rng.standard_normal((kh, kw)).astype(dtype)
    want = np.einsum("uvab,ab->uv", sliding_window_view(x.astype(np.float64), k.shape), k.astype(np.float64))
    got = correlate2d_valid(x, k)
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    eps = float(np.finfo(np.dtype(dtype)).eps)
    bound = 4 * kh * kw * eps * np.einsum("uvab,ab->uv", np.abs(sliding_window_view(x, k.shape)), np.abs(k))
    assert np.all(np.abs(got - want) <= bound + 1e-300)


def test_correlate_negative_control_and_bad_shapes() -> None:
    x = np.arange(12.0).reshape(3, 4)
    k = np.array([[1.0, 2.0], [3.0, 4.0]])
    # a true convolution (kernel flipped) is a different function: the reference must not be it
    flipped = correlate2d_valid(x, k[::-1, ::-1])
    assert not np.allclose(correlate2d_valid(x, k), flipped)
    assert correlate2d_valid(x, k)[0, 0] == 0 * 1 + 1 * 2 + 4 * 3 + 5 * 4
    with pytest.raises(ValueError, match="larger than the input"):
        correlate2d_valid(np.ones((2, 2)), np.ones((3, 1)))


# ------------------------------------------------------------------ directions


def test_random_directions_are_unit_uniform_and_catch_every_error_vector() -> None:
    rng = np.random.default_rng(3)
    shapes = {"W": (4, 5), "x": (5,)}
    dirs = fd.directions(rng, shapes, 200, full_max=12)
    assert len(dirs) == 200
    for d in dirs:
        norm = np.sqrt(sum(float(np.sum(v * v)) for v in d.values()))
        assert abs(norm - 1.0) < 1e-12
    flat = np.concatenate([np.concatenate([d["W"].ravel(), d["x"]]) for d in dirs])
    assert len(np.unique(flat)) == flat.size  # continuous draws, no sign patterns
    # an error vector (1, -1, 0, ...) is seen by every direction (<e, v> != 0 almost surely)
    e = np.zeros(25)
    e[0], e[1] = 1.0, -1.0
    assert all(abs(float(np.concatenate([d["W"].ravel(), d["x"]]) @ e)) > 0 for d in dirs)
    # negative control: Rademacher signs miss that error vector about half the time
    signs = np.where(rng.random((200, 25)) < 0.5, -1.0, 1.0)
    assert 60 < int(np.sum(signs @ e == 0)) < 140


def test_small_inputs_still_get_every_basis_vector() -> None:
    dirs = fd.directions(np.random.default_rng(0), {"x": (3,), "b": (2,)}, 2, full_max=12)
    assert len(dirs) == 5 and all(fd.is_basis(d) is not None for d in dirs)


# --------------------------------------------------------- the oracle's self-test


def _example(seed: int) -> Example:
    rng = np.random.default_rng(seed)
    return Example({"x": rng.standard_normal(4)}, {}, seed)


def test_oracle_sample_is_deterministic_and_about_one_in_n() -> None:
    picks = [oracle_sampled(_example(s), 4) for s in range(400)]
    assert picks == [oracle_sampled(_example(s), 4) for s in range(400)]
    assert 60 <= sum(picks) <= 140
    assert all(oracle_sampled(_example(s), 1) for s in range(20))


def test_oracle_self_test_runs_on_a_sample_and_on_every_failure() -> None:
    from gradoracle.adapters import load_adapter
    from gradoracle.runner import evaluate_example

    ident, ad = get_identity("matvec-weight-grad"), load_adapter("numpy")
    rng = np.random.default_rng(5)
    examples = [
        Example({"W": rng.standard_normal((3, 2)), "x": rng.standard_normal(2)}, {}, s) for s in range(24)
    ]
    kinds = [
        {c.kind for c in evaluate_example(ident, ad, "float64", ex, CheckSettings()).comparisons}
        for ex in examples
    ]
    with_oracle = [("oracle" in k) for k in kinds]
    assert with_oracle == [oracle_sampled(ex, 4) for ex in examples]
    assert 0 < sum(with_oracle) < len(examples)
    assert all({"forward", "analytic", "fd"} <= k for k in kinds)  # the rest runs on every example
    full = [evaluate_example(ident, ad, "float64", ex, CheckSettings(oracle_every=1)) for ex in examples]
    assert all(any(c.kind == "oracle" for c in o.comparisons) for o in full)
    # a failing example always gets the self-test, sampled or not
    scaled = load_adapter("broken_adapters:ScaledAdapter")
    for ex in examples[:8]:
        o = evaluate_example(ident, scaled, "float64", ex, CheckSettings())
        assert o.fault == Fault.BACKWARD and any(c.kind == "oracle" for c in o.comparisons)


def test_a_wrong_closed_form_is_still_blamed_on_the_oracle_under_sampling() -> None:
    """Negative control: a reference gradient off by 10% must give Fault.ORACLE, not BACKWARD,
    on whichever example fails first, sampled or not."""
    ident = get_identity("matvec-weight-grad")
    assert ident.reference_gradient is not None
    good = ident.reference_gradient

    def wrong(inputs, params, u):  # type: ignore[no-untyped-def]
        return {k: 1.1 * np.asarray(v) for k, v in good(inputs, params, u).items()}

    broken = dataclasses.replace(ident, name="matvec-weight-grad-wrong-oracle", reference_gradient=wrong)
    for seed in range(3):
        r = check(broken, "numpy", "float64", CheckSettings(examples=10, seed=seed, oracle_every=1000))
        assert r.verdict == Verdict.FAIL and r.fault == Fault.ORACLE, r.message


# ------------------------------------------------------------- torch boundary


def test_torch_boundary_shares_only_what_the_framework_cannot_write() -> None:
    pytest.importorskip("torch")
    from gradoracle.adapters.torch_adapter import TorchAdapter

    ad = TorchAdapter()
    x = np.array([1.0, 2.0, 3.0])
    c = np.array([4.0, 5.0, 6.0])

    def writes_constant(ops, v):  # type: ignore[no-untyped-def]
        v["c"].mul_(10.0)  # a user's forward writing into an input in place
        return v["x"] * v["c"]

    res = ad.vjp(writes_constant, {"x": x, "c": c}, ["x"], np.ones(3), "float64")
    assert np.array_equal(c, [4.0, 5.0, 6.0])  # the caller's constant was copied
    assert np.array_equal(res.grads["x"], [40.0, 50.0, 60.0])
    ad.forward(writes_constant, {"x": x, "c": c}, "float64")
    assert np.array_equal(c, [4.0, 5.0, 6.0])

    def writes_leaf(ops, v):  # type: ignore[no-untyped-def]
        v["x"].mul_(10.0)
        return v["x"]

    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        ad.vjp(writes_leaf, {"x": x}, ["x"], np.ones(3), "float64")
    assert np.array_equal(x, [1.0, 2.0, 3.0])
    # float32 inputs given as float64 are converted (no sharing across dtypes)
    res32 = ad.vjp(lambda ops, v: v["x"] * 2, {"x": x}, ["x"], np.ones(3, dtype=np.float32), "float32")
    assert res32.grads["x"].dtype == np.float32


# ------------------------------------------------------------------- JAX cache

_CACHE_PROBE = textwrap.dedent(
    """
    import json, numpy as np
    from gradoracle.adapters.jax_adapter import JaxAdapter
    from gradoracle.adapters.jax_cache import cache_state, compile_stats
    import jax
    ad = JaxAdapter()
    ad.available()
    fn = lambda ops, v: ops.sum(ops.tanh(ops.matmul(v["W"], v["x"])))
    ad.vjp(fn, {"W": np.ones((3, 4)), "x": np.ones(4)}, ["W", "x"], np.array(1.0), "float64")
    s = cache_state()
    print(json.dumps({"dir": s.directory, "by": s.chosen_by, "config": jax.config.jax_compilation_cache_dir,
                      **compile_stats()}))
    """
)


def _probe(env: dict[str, str]) -> dict[str, object]:
    pytest.importorskip("jax")
    full = {
        k: v for k, v in os.environ.items() if k not in ("GRADORACLE_JAX_CACHE", "JAX_COMPILATION_CACHE_DIR")
    }
    full.update(env)
    out = subprocess.run(
        [sys.executable, "-c", _CACHE_PROBE], capture_output=True, text=True, env=full, cwd=REPO, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_jax_persistent_cache_is_on_by_default_and_hit_on_the_second_run(tmp_path: Path) -> None:
    home = tmp_path / "xdg"
    first = _probe({"XDG_CACHE_HOME": str(home)})
    assert first["by"] == "gradoracle" and first["dir"] == str(home / "gradoracle" / "jax")
    assert first["config"] == first["dir"]
    assert int(first["programs"]) >= 1 and first["cache_hits"] == 0  # type: ignore[call-overload]
    assert any((home / "gradoracle" / "jax").iterdir())
    second = _probe({"XDG_CACHE_HOME": str(home)})
    assert int(second["cache_hits"]) >= 1  # type: ignore[call-overload]


def test_jax_cache_switch_off_and_user_setting_win(tmp_path: Path) -> None:
    off = _probe({"GRADORACLE_JAX_CACHE": "off", "XDG_CACHE_HOME": str(tmp_path / "a")})
    assert off["by"] == "off" and off["config"] is None and not (tmp_path / "a").exists()
    moved = _probe({"GRADORACLE_JAX_CACHE": str(tmp_path / "here")})
    assert moved["by"] == "gradoracle" and any((tmp_path / "here").iterdir())
    user = _probe(
        {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "theirs"), "XDG_CACHE_HOME": str(tmp_path / "b")}
    )
    assert user["by"] == "user" and user["dir"] == str(tmp_path / "theirs") and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------ bench


def test_batched_bench_tool_costs_per_example_and_still_detects() -> None:
    from gradoracle.bench import BenchCase, make_tool
    from gradoracle.bench.tools import BATCH_EXAMPLES

    tool = make_tool("gradoracle-batch[numpy]", BenchCase("linear", 4))
    assert tool.examples_per_call == BATCH_EXAMPLES and len(tool.examples) == BATCH_EXAMPLES
    assert len({ex.seed for ex in tool.examples}) == BATCH_EXAMPLES  # own cotangents and directions
    assert tool.run()
    # per example: the vjp twice (determinism), two directions of two forwards
    assert tool.evaluations() == 6
    assert tool.caught(1e-2)  # negative control: a 1% wrong gradient is rejected
    assert not tool.caught(0.0)


def test_interleaved_ratio_alternates_and_takes_the_median() -> None:
    from gradoracle.bench.timing import interleaved_ratio

    order: list[str] = []

    def slow() -> None:
        order.append("a")
        sum(range(20000))

    def fast() -> None:
        order.append("b")
        sum(range(2000))

    r = interleaved_ratio(slow, fast, rounds=4, min_time_s=0.002)
    assert r > 2
    firsts = [order[i] for i in range(len(order)) if i == 0 or order[i] != order[i - 1]]
    # rounds alternate which side goes first: a b | b a | a b | b a, five runs once merged
    # (always the same side first would give eight)
    assert firsts == ["a", "b", "a", "b", "a"]


def test_report_timing_runs_cold_then_warm_and_counts_jax_programs() -> None:
    pytest.importorskip("jax")
    from gradoracle.bench.report_timing import time_reports

    args = ["--adapter", "jax", "--identity", "elementwise-sin", "--dtype", "float64", "--examples", "3"]
    timing = time_reports(rounds=1, jobs=(1,), args=args)
    cold, warm = timing.runs
    assert (cold.cache, warm.cache) == ("cold", "warm") and cold.exit_code == warm.exit_code == 0
    # an empty cache: XLA compiles each program once (later identical programs of the same
    # run, e.g. of the next adapter instance, may already load from it)
    assert cold.xla_compiles > 0 and cold.cache_hits < cold.programs
    assert warm.cache_hits > cold.cache_hits and warm.xla_compiles < cold.xla_compiles
    assert cold.load_before >= 0 and warm.wall_s > 0
    d = timing.to_dict()
    assert d["median_wall_s"]["cold jobs 1"] == pytest.approx(cold.wall_s)
    assert d["ratios"]["cold / warm, jobs 1"] == pytest.approx(cold.wall_s / warm.wall_s)
