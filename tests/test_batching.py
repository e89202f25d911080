"""Examples evaluated as a batch (issue 16): same verdicts, fewer adapter calls, safe fallbacks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from gradoracle import CheckSettings, Fault, Verdict, check
from gradoracle.adapters.base import VJPResult
from gradoracle.adapters.numpy_engine import NumpyEngineAdapter
from gradoracle.batching import supports_batching
from gradoracle.identities import all_identities, get_identity
from gradoracle.runner import evaluate_example, evaluate_examples, forward_for
from gradoracle.strategies import Example

SEEDED = CheckSettings(examples=20, seed=3, timeout_s=30.0)


class CountingEngine(NumpyEngineAdapter):
    """The NumPy engine with batched methods that loop (and count every call)."""

    def __init__(self, scale: float = 1.0, batch_out: str = "ok") -> None:
        super().__init__()
        self.calls = {"vjp": 0, "forward": 0, "vjp_batch": 0, "forward_batch": 0}
        self.scale = scale
        self.batch_out = batch_out

    def vjp(self, fn: Any, inputs: Any, wrt: Any, cotangent: Any, dtype: str) -> VJPResult:
        self.calls["vjp"] += 1
        res = super().vjp(fn, inputs, wrt, cotangent, dtype)
        return VJPResult(res.output, {k: (v * self.scale).astype(v.dtype) for k, v in res.grads.items()})

    def forward(self, fn: Any, inputs: Any, dtype: str) -> np.ndarray:
        self.calls["forward"] += 1
        return super().forward(fn, inputs, dtype)

    def forward_batch(self, fn: Any, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        self.calls["forward_batch"] += 1
        rows = len(next(iter(inputs.values())))
        outs = np.stack(
            [
                super(CountingEngine, self).forward(fn, {k: v[i] for k, v in inputs.items()}, dtype)
                for i in range(rows)
            ]
        )
        if self.batch_out == "raise":
            raise RuntimeError("batched forward is broken")
        if self.batch_out == "short":
            return outs[:-1]
        if self.batch_out == "wrong":
            return outs * 1.01
        return outs

    def vjp_batch(
        self,
        fn: Any,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangents: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        self.calls["vjp_batch"] += 1
        rows = len(cotangents)
        res = [
            super(CountingEngine, self).vjp(
                fn, {k: v[i] for k, v in inputs.items()}, wrt, cotangents[i], dtype
            )
            for i in range(rows)
        ]
        if self.batch_out == "raise":
            raise RuntimeError("batched vjp is broken")
        return VJPResult(
            np.stack([r.output for r in res]),
            {n: np.stack([r.grads[n] * self.scale for r in res]).astype(dtype) for n in wrt},
        )


def _errors(r: Any) -> dict[str, dict[str, tuple[float, float, float]]]:
    return {k: {n: (s.max_abs, s.max_rel, s.max_ratio) for n, s in v.items()} for k, v in r.errors.items()}


@pytest.mark.parametrize("identity", ["mlp", "conv-input", "elementwise-gelu", "max-pool"])
def test_batched_check_is_the_same_check_with_fewer_calls(identity: str) -> None:
    one, many = CountingEngine(), CountingEngine()
    r1 = check(identity, one, "float64", SEEDED.with_(batch=1))
    rb = check(identity, many, "float64", SEEDED)
    assert r1.verdict == rb.verdict == Verdict.PASS
    assert r1.examples == rb.examples
    assert _errors(r1) == _errors(rb)  # same examples, same answers, same comparisons
    # one at a time, each example asks for its vjp (twice: the second shows whether it repeats
    # itself) and all its FD points in one call each (through the batched methods, so both
    # ways use the same adapter path)
    assert one.calls["vjp_batch"] == 2 * r1.examples and one.calls["vjp"] == one.calls["forward"] == 0
    assert many.calls["vjp_batch"] < one.calls["vjp_batch"] and many.calls["vjp"] == 0
    assert many.calls["forward_batch"] < one.calls["forward_batch"]


class _OverridesVjp(CountingEngine):
    """Overrides vjp (gradients off by 1%) but inherits vjp_batch: must not be batched."""

    def vjp(self, fn: Any, inputs: Any, wrt: Any, cotangent: Any, dtype: str) -> VJPResult:
        res = NumpyEngineAdapter.vjp(self, fn, inputs, wrt, cotangent, dtype)
        return VJPResult(res.output, {k: v * 1.01 for k, v in res.grads.items()})


class _Proxy:
    """Forwards everything to a batching adapter but wraps vjp (as the selftest's perturbations do)."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    def vjp(self, fn: Any, inputs: Any, wrt: Any, cotangent: Any, dtype: str) -> VJPResult:
        res = self.base.vjp(fn, inputs, wrt, cotangent, dtype)
        return VJPResult(res.output, {k: v * 1.01 for k, v in res.grads.items()})


def test_adapters_without_batching_work_one_call_at_a_time() -> None:
    plain = NumpyEngineAdapter()
    assert supports_batching(plain) == (False, False)
    assert supports_batching(CountingEngine()) == (True, True)
    # an override of vjp alone, a proxy, or a vjp set on the instance: their vjp answers
    assert supports_batching(_OverridesVjp()) == (True, False)
    assert supports_batching(_Proxy(CountingEngine())) == (False, False)
    patched = CountingEngine()
    patched.vjp = patched.vjp  # type: ignore[method-assign]
    assert supports_batching(patched) == (True, False)
    for wrapped in (_OverridesVjp(), _Proxy(CountingEngine())):
        r = check("matvec-weight-grad", wrapped, "float64", SEEDED)
        assert r.verdict == Verdict.FAIL and r.fault == Fault.BACKWARD  # the override was used
    r = check("mlp", plain, "float64", SEEDED)
    assert r.verdict == Verdict.PASS and r.examples >= 20


def test_a_failure_found_in_a_batch_is_replayed_and_shrunk_like_one_at_a_time() -> None:
    r1 = check("matvec-weight-grad", CountingEngine(scale=1.001), "float64", SEEDED.with_(batch=1))
    rb = check("matvec-weight-grad", CountingEngine(scale=1.001), "float64", SEEDED)
    assert r1.verdict == rb.verdict == Verdict.FAIL and r1.fault == rb.fault == Fault.BACKWARD
    assert rb.counterexample == r1.counterexample  # the same shrunk counterexample
    assert rb.message == r1.message and rb.examples == r1.examples


@pytest.mark.parametrize("mode", ["raise", "short"])
def test_a_broken_batched_method_falls_back_to_single_calls(mode: str) -> None:
    ad = CountingEngine(batch_out=mode)
    r = check("mlp", ad, "float64", SEEDED)
    assert r.verdict == Verdict.PASS, r.message
    assert ad.calls["forward"] > 0  # answered one point at a time after the batch failed
    assert ad.calls["forward_batch"] == 1  # and not asked to batch that forward again


def test_batched_answers_are_the_ones_checked() -> None:
    """Negative control: a batched forward 1% off must fail the finite-difference comparison
    (the gradients match the closed form: the adapter's forward is the fault)."""
    r = check("matvec-weight-grad", CountingEngine(batch_out="wrong"), "float64", SEEDED)
    assert r.verdict == Verdict.FAIL and r.fault == Fault.ADAPTER, r.message
    assert "forward() (or forward_batch)" in r.message


def test_evaluate_examples_matches_evaluate_example() -> None:
    ident = get_identity("vecmat-weight-grad")
    rng = np.random.default_rng(1)
    exs = [Example({"W": rng.standard_normal((3, 4)), "x": rng.standard_normal(3)}, {}, s) for s in range(6)]
    ad = CountingEngine()
    together = evaluate_examples(ident, ad, "float32", exs, CheckSettings(oracle_every=1))
    alone = [
        evaluate_example(ident, NumpyEngineAdapter(), "float32", ex, CheckSettings(oracle_every=1))
        for ex in exs
    ]
    for a, b in zip(together, alone, strict=True):
        assert [(c.kind, c.input, c.abs_error, c.allowed) for c in a.comparisons] == [
            (c.kind, c.input, c.abs_error, c.allowed) for c in b.comparisons
        ]
    assert ad.calls["vjp_batch"] == 2 and ad.calls["vjp"] == 0  # one batch per vjp round (two rounds)


def _same_shape_examples(ident: Any, count: int = 3) -> list[Example]:
    from hypothesis import given, settings

    drawn: list[Example] = []

    @settings(max_examples=40, database=None, derandomize=True)
    @given(ident.strategy())
    def record(ex: Example) -> None:
        drawn.append(ex)

    record()
    last = drawn[-1]

    def sig(e: Example) -> Any:
        return ({k: v.shape for k, v in e.inputs.items()}, e.params)

    return [e for e in drawn if sig(e) == sig(last)][:count]


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_framework_batches_equal_single_calls_on_every_identity(framework: str) -> None:
    pytest.importorskip(framework)
    from gradoracle.adapters import load_adapter

    ad = load_adapter(framework)
    for ident in all_identities():
        same = _same_shape_examples(ident)
        fn = forward_for(ident, same[0].params)
        stacked = {k: np.stack([e.inputs[k] for e in same]) for k in same[0].inputs}
        for dtype in ("float64", "float32"):
            outs = np.stack([ad.forward(fn, e.inputs, dtype) for e in same])
            u = np.random.default_rng(0).uniform(-1, 1, size=outs.shape)
            single = [ad.vjp(fn, e.inputs, ident.wrt, u[i], dtype) for i, e in enumerate(same)]
            fb = ad.forward_batch(fn, stacked, dtype)
            vb = ad.vjp_batch(fn, stacked, ident.wrt, u, dtype)
            tol = 1e-12 if dtype == "float64" else 1e-5
            assert fb.dtype == np.dtype(dtype) and fb.shape == outs.shape
            np.testing.assert_allclose(fb, outs, rtol=tol, atol=tol, err_msg=ident.name)
            for i, s in enumerate(single):
                for n in ident.wrt:
                    assert vb.grads[n].dtype == np.dtype(dtype)
                    np.testing.assert_allclose(
                        vb.grads[n][i], s.grads[n], rtol=tol, atol=tol, err_msg=ident.name
                    )


def test_jax_batches_compile_one_program_per_shape_and_kind() -> None:
    pytest.importorskip("jax")
    from gradoracle.adapters import jax_adapter
    from gradoracle.adapters.jax_adapter import JaxAdapter, batch_chunk
    from gradoracle.adapters.jax_cache import compile_stats

    assert batch_chunk({"x": (5,)}) == 32
    assert batch_chunk({"W": (128, 128), "x": (128,)}) == 8
    assert batch_chunk({"W": (1024, 1024)}) == 1
    # large inputs: no padding past the rows a call brings (one example: one row)
    assert batch_chunk({"X": (64, 64), "K": (3, 3)}, 1) == 1
    assert batch_chunk({"X": (64, 64), "K": (3, 3)}, 4) == 4
    assert batch_chunk({"X": (64, 64), "K": (3, 3)}, 1000) == 32
    assert batch_chunk({"x": (5,)}, 1) == 32  # small: always the one full-size program
    assert jax_adapter.VMAP_MIN_ROWS == 8
    ad = JaxAdapter()
    ad.available()
    jax_adapter.clear_cache(ad)  # what earlier tests compiled for plain adapters
    fn = forward_for(get_identity("elementwise-sin"), {})
    before = compile_stats()["programs"]
    # a shape first called with VMAP_MIN_ROWS rows or more: one chunk-sized vmapped program,
    # whatever the row counts of later calls
    for rows in (8, 1, 3, 7, 32, 33, 70):
        ad.forward_batch(fn, {"x": np.linspace(-1, 1, rows * 3).reshape(rows, 3)}, "float64")
    assert compile_stats()["programs"] - before == 1
    # a shape first called with fewer rows: the single-example program, row by row, for good
    tanh = forward_for(get_identity("elementwise-tanh"), {})
    for rows in (2, 40, 1):
        out = ad.forward_batch(tanh, {"x": np.linspace(-1, 1, rows * 3).reshape(rows, 3)}, "float64")
        np.testing.assert_allclose(out, np.tanh(np.linspace(-1, 1, rows * 3).reshape(rows, 3)), rtol=1e-15)
    assert compile_stats()["programs"] - before == 2
    assert {k[0] for k in ad._compiled} == {"forward_batch", "forward"}
    out = ad.forward_batch(fn, {"x": np.linspace(-1, 1, 70 * 3).reshape(70, 3)}, "float64")
    np.testing.assert_allclose(out, np.sin(np.linspace(-1, 1, 210).reshape(70, 3)), rtol=1e-15)


def test_jax_finite_difference_forwards_reuse_the_float64_vjp_program() -> None:
    """A small float64 ``vjp_batch`` (even of a few rows) runs the vmapped vjp program, and the
    finite-difference ``forward_batch`` of that fn and shapes is answered by it with a zero
    cotangent: in a reverse-mode run, one program where there were two, with the forward's
    values.  Negative control:
    with ``combine=off`` the forward builds its own program; float32 keeps the plain vjp."""
    pytest.importorskip("jax")
    from gradoracle.adapters import jax_adapter
    from gradoracle.adapters.jax_adapter import JaxAdapter
    from gradoracle.adapters.jax_cache import compile_stats

    ident = get_identity("mlp")
    fn = forward_for(ident, {})
    rng = np.random.default_rng(3)
    shapes = {"W1": (4, 3), "b1": (4,), "W2": (2, 4), "b2": (2,), "x": (3,), "y": (2,)}

    def batch(rows: int) -> dict[str, np.ndarray]:
        arrays = {k: rng.standard_normal((rows, *s)) for k, s in shapes.items()}
        arrays["y"] = np.abs(arrays["y"]) / np.abs(arrays["y"]).sum(axis=1, keepdims=True)
        return arrays

    def programs(ad: JaxAdapter, dtype: str) -> tuple[int, np.ndarray, np.ndarray]:
        ad.plan_modes(["vjp"])  # a reverse-mode run (several modes share the combined program)
        jax_adapter.clear_cache(ad)
        before = compile_stats()["programs"]
        examples = batch(3)  # fewer rows than VMAP_MIN_ROWS
        ad.vjp_batch(fn, examples, ["W1", "x"], np.ones(3), dtype)
        points = batch(40)
        got = ad.forward_batch(fn, points, dtype)
        plain = np.stack([ad.forward(fn, {k: v[i] for k, v in points.items()}, dtype) for i in range(40)])
        return int(compile_stats()["programs"] - before), got, plain

    shared, got, plain = programs(JaxAdapter(), "float64")
    assert shared == 2  # the vmapped vjp, then the plain forward of the comparison below
    np.testing.assert_allclose(got, plain, rtol=1e-13, atol=0)
    separate, got_off, plain_off = programs(JaxAdapter(combine="off"), "float64")
    assert separate == 3  # plain vjp, vmapped forward, plain forward: nothing shared
    np.testing.assert_allclose(got_off, plain_off, rtol=1e-13, atol=0)
    in_float32, got32, plain32 = programs(JaxAdapter(), "float32")
    assert in_float32 == 3
    np.testing.assert_allclose(got32, plain32, rtol=1e-6, atol=0)


def test_large_inputs_go_one_call_at_a_time() -> None:
    from gradoracle.batching import LARGE_INPUT_ELEMENTS

    n = int(np.sqrt(LARGE_INPUT_ELEMENTS)) + 1  # W alone is over the limit
    rng = np.random.default_rng(0)
    exs = [Example({"W": rng.standard_normal((n, n)), "x": rng.standard_normal(n)}, {}, s) for s in range(2)]
    ad = CountingEngine()
    outs = evaluate_examples("matvec-weight-grad", ad, "float64", exs, CheckSettings())
    assert all(o.passed for o in outs)
    # one call per example, twice (the second vjp on the same input checks determinism)
    assert ad.calls["vjp_batch"] == ad.calls["forward_batch"] == 0 and ad.calls["vjp"] == 2 * len(exs)
    small = CountingEngine()
    evaluate_examples(
        "matvec-weight-grad", small, "float64", [Example({"W": np.ones((3, 3)), "x": np.ones(3)})]
    )
    assert (
        small.calls["vjp_batch"] == 2 and small.calls["vjp"] == 0
    )  # negative control: small inputs are batched
