"""Correct implementations that are not ours must pass; the same ones with a wrong gradient must not.

``tests/alt_adapters.py`` holds nine correct adapters whose numerics differ from the built-in
engine, PyTorch and JAX (im2col, FFT and Winograd convolutions, float64 accumulation, other
formulas for the elementwise derivatives and the cross-entropy, ``torch.func``, non-contiguous
channels-last PyTorch, JAX remat and ``linear_transpose``).  Each is checked here at the
default settings on the identities where its numerics differ (a few examples, every mode it
has), and each family has a negative control: the same adapter with a deliberately wrong
gradient fails.  The FFT convolution is the case that showed the tolerance's componentwise
model was too strict for correct norm-wise accurate algorithms (``gradoracle.tolerances``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import alt_adapters as alt
import numpy as np
import pytest

from gradoracle.results import Verdict
from gradoracle.runner import CheckSettings, check, evaluate_example
from gradoracle.strategies import Example
from gradoracle.tolerances import EPS32, Tolerance, tolerance_for

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_JAX = importlib.util.find_spec("jax") is not None

CONVS = ("conv-filter", "conv-input", "conv1d-layer", "conv2d-layer", "conv3d-layer")
ELEMENTWISE = tuple(f"elementwise-{f}" for f in ("sigmoid", "tanh", "softplus", "elu", "silu", "gelu"))

#: adapter class name -> (identities where its numerics differ, modes, framework it needs); the
#: framework adapters on one identity each (JAX compiles a program per shape: ~10 s a check)
CASES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "Im2colAdapter": (CONVS, ("vjp",), ""),
    "FFTConvAdapter": (CONVS, ("vjp",), ""),
    "WinogradAdapter": (("conv-filter", "conv-input", "matvec-weight-grad", "mlp"), ("vjp",), ""),
    "Float64AccumAdapter": (
        ("mlp-batch", "conv2d-layer", "elementwise-gelu", "cross-entropy-batch"),
        ("vjp",),
        "",
    ),
    "AltFormulaAdapter": ((*ELEMENTWISE, "mlp-a-logits", "cross-entropy-batch"), ("vjp",), ""),
    "TorchFuncAdapter": (("mlp",), ("vjp", "jvp", "hvp"), "torch"),
    "TorchStridedAdapter": (("linear-layer", "conv2d-layer"), ("vjp",), "torch"),
    "JaxRematAdapter": (("mlp",), ("vjp", "hvp"), "jax"),
    "JaxLinearTransposeAdapter": (("mlp",), ("vjp", "hvp"), "jax"),
}

#: few examples; a long time limit per call (importing torch or JAX on a loaded machine takes
#: more than the default 20 s)
SETTINGS = CheckSettings(examples=4, seed=0, configurations=2, timeout_s=300.0)


def _needs(framework: str) -> None:
    if framework == "torch" and not HAVE_TORCH:
        pytest.skip("torch is not installed")
    if framework == "jax" and not HAVE_JAX:
        pytest.skip("jax is not installed")


def test_every_alternative_adapter_has_a_case() -> None:
    assert set(CASES) == set(alt.ALT_ADAPTERS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_correct_alternative_passes(name: str) -> None:
    identities, modes, framework = CASES[name]
    _needs(framework)
    adapter = getattr(alt, name)()
    bad = []
    for mode in modes:
        for ident in identities:
            for dtype in ("float64", "float32"):
                res = check(ident, adapter, dtype, SETTINGS, mode=mode)
                if res.verdict is not Verdict.PASS:
                    bad.append((ident, mode, dtype, res.verdict.value, res.message[:400]))
    assert not bad, bad


def test_alternatives_agree_with_the_engine_to_a_few_ulps() -> None:
    """Correctness apart from the oracle: each NumPy variant's conv gradients agree with the engine's
    to ~1e-14 relative to the largest element in float64 (grouped, strided, dilated, padded)."""
    from gradoracle.adapters.numpy_engine import NumpyEngineAdapter

    ref = NumpyEngineAdapter()
    rng = np.random.default_rng(1)
    inputs = {
        "x": rng.standard_normal((2, 4, 9, 11)),
        "k": rng.standard_normal((6, 2, 3, 2)),
        "b": rng.standard_normal(6),
    }
    for stride, padding, dilation in [
        ((2, 1), (1, 2), (1, 2)),
        ((1, 1), "same", (2, 1)),
        ((3, 2), (0, 0), (1, 1)),
    ]:

        def fn(ops: Any, v: Mapping[str, Any], s: Any = stride, p: Any = padding, d: Any = dilation) -> Any:
            return ops.conv_nd(v["x"], v["k"], v["b"], s, p, d, 2)

        out = ref.forward(fn, inputs, "float64")
        u = rng.standard_normal(out.shape)
        want = ref.vjp(fn, inputs, ["x", "k", "b"], u, "float64")
        for cls in (alt.Im2colAdapter, alt.FFTConvAdapter, alt.Float64AccumAdapter):
            got = cls().vjp(fn, inputs, ["x", "k", "b"], u, "float64")
            for n in ("x", "k", "b"):
                scale = np.abs(want.grads[n]).max()
                assert np.abs(got.grads[n] - want.grads[n]).max() <= 1e-13 * scale, (cls.__name__, n)
            assert np.abs(got.output - want.output).max() <= 1e-13 * np.abs(want.output).max()


# ---- the false positive the FFT convolution found, and its fix ---------------------------------

#: Stride-1 convolutions (where cuDNN's FFT algorithms apply) on the simple examples Hypothesis
#: draws first: a single 1 in a map of zeros, or small integers.  The float32 closed form is then
#: exact, so the oracle's measured rounding eta is 0, and filter taps or outputs that read only
#: padding are exactly 0 with every term 0 (m_i = 0); the FFT spreads ~eps ||X|| ||delta|| of
#: rounding over all of them.  Before the norm-wise floor these failed by 6e6-3e7 (float32) and
#: 3e15-5e16 (float64); with it, the worst ratio is 0.06.
_SPARSE_CASES = [
    (
        "conv2d-layer",
        (1, 2, 5, 6),
        (2, 2, 3, 3),
        {"stride": (1, 1), "padding": (2, 1), "dilation": (1, 1), "groups": 1},
    ),
    ("conv1d-layer", (2, 2, 7), (4, 1, 3), {"stride": (1,), "padding": (2,), "dilation": (2,), "groups": 2}),
    (
        "conv3d-layer",
        (1, 2, 3, 4, 3),
        (2, 2, 2, 2, 2),
        {"stride": (1, 1, 1), "padding": (1, 1, 1), "dilation": (1, 1, 1), "groups": 1},
    ),
]


def _sparse_examples() -> list[tuple[str, str, Example]]:
    rng = np.random.default_rng(0)
    out = []
    for ident, xs, ks, params in _SPARSE_CASES:
        one = np.zeros(xs)
        one.flat[rng.integers(one.size)] = 1.0
        ints = rng.integers(-3, 4, size=xs).astype(float)
        kernel = rng.integers(-2, 3, size=ks).astype(float)
        for label, x in (("one", one), ("integers", ints)):
            out.append((ident, label, Example({"X": x, "K": kernel, "b": np.zeros(ks[0])}, params, 0)))
    return out


def _componentwise_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tolerance before the fix: ``atol + rtol m_i + kappa eta eps / eps_32``, eta as measured."""

    def allowed(self: Tolerance, magnitude: Any, noise: float, exact_floor: bool = False) -> np.ndarray:
        return (
            self.atol
            + self.rtol * np.asarray(magnitude, dtype=np.float64)
            + self.kappa * noise * (self.eps / EPS32)
        )

    monkeypatch.setattr(Tolerance, "allowed", allowed)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fft_convolution_on_exact_examples_passes(dtype: str) -> None:
    adapter = alt.FFTConvAdapter()
    for ident, _, example in _sparse_examples():
        outcome = evaluate_example(ident, adapter, dtype, example)
        assert outcome.passed, (ident, [(c.kind, c.input, c.ratio) for c in outcome.failures])
        assert max(c.ratio for c in outcome.comparisons if c.kind in ("analytic", "forward")) < 0.2


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fft_convolution_on_exact_examples_failed_without_the_floor(
    dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control of the fix: with the componentwise tolerance alone the cases fail."""
    _componentwise_only(monkeypatch)
    adapter = alt.FFTConvAdapter()
    failed = []
    for ident, label, example in _sparse_examples():
        outcome = evaluate_example(ident, adapter, dtype, example)
        if not outcome.passed:
            failed.append((ident, label))
            assert max(c.ratio for c in outcome.failures) > 1e5
    # every single-1 example, and integer ones where a tap or an output reads only padding
    assert {(ident, "one") for ident, *_ in _SPARSE_CASES} <= set(failed)
    assert len(failed) >= 4, failed


def test_strided_fft_leak_into_structural_zeros_still_fails() -> None:
    """The documented limit: FFT applied to a *strided* convolution (the stride-1 correlation,
    subsampled) leaks into filter taps that read no input at all (all m_i = 0, no scale for a
    floor); Hypothesis's shrunk example from the 100-example campaign, seed 0."""
    x = np.zeros((2, 2, 3, 1, 3))
    x[1, 1, 2, 0, 2] = 1.0
    params = {"stride": (2, 3, 2), "padding": (2, 2, 1), "dilation": (1, 1, 1), "groups": 2}
    example = Example({"X": x, "K": np.zeros((4, 1, 2, 1, 1)), "b": np.zeros(4)}, params, 0)
    for dtype in ("float64", "float32"):
        outcome = evaluate_example("conv3d-layer", alt.FFTSubsampledAdapter(), dtype, example)
        assert not outcome.passed
        worst = max(outcome.failures, key=lambda c: c.ratio)
        assert (worst.kind, worst.input, worst.analytic) == ("analytic", "K", 0.0)
        # the same example through the cuDNN-envelope FFT adapter (direct when strided) passes
        assert evaluate_example("conv3d-layer", alt.FFTConvAdapter(), dtype, example).passed


def test_exact_floor_replaces_a_zero_sample_only() -> None:
    for dtype in ("float64", "float32"):
        tol = tolerance_for(dtype)
        m = np.array([0.0, 0.5, 2.0])
        floor = tol.kappa * EPS32 * 2.0 * (tol.eps / EPS32)
        np.testing.assert_allclose(
            tol.allowed(m, 0.0, exact_floor=True), tol.atol + tol.rtol * m + floor, rtol=1e-15
        )
        # without the flag (the modes' slack sums pass 0 on purpose) nothing is added
        np.testing.assert_allclose(tol.allowed(m, 0.0), tol.atol + tol.rtol * m, rtol=1e-15)
        # a measured sample, however much smaller than the floor, is used as it is
        tiny = 1e-3 * EPS32 * 2.0
        np.testing.assert_allclose(
            tol.allowed(m, tiny, exact_floor=True),
            tol.atol + tol.rtol * m + tol.kappa * tiny * tol.eps / EPS32,
        )
        assert tol.allowed(np.zeros(0), 0.0, exact_floor=True).shape == (0,)
        # a non-finite magnitude leaves the floor out (its own element is inf anyway)
        got = tol.allowed(np.array([np.inf, 1.0]), 0.0, exact_floor=True)
        assert np.isinf(got[0]) and got[1] == pytest.approx(tol.atol + tol.rtol)


# ---- negative controls: the same adapters with a wrong gradient --------------------------------


class _FlippedFilterFFT(alt.FFTConvRules):
    """The FFT filter gradient as a convolution (spectra multiplied without the flip): rot180(dK)."""

    def conv2d_filter_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(super().conv2d_filter_grad(delta, x, k)[::-1, ::-1])


class _TanhSechNotSquared(alt.AltFormulaRules):
    """tanh' = 2 sqrt(e) / (1 + e) = sech x: the square of sech forgotten."""

    def tanh_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        e = np.exp(-2.0 * np.abs(x))
        return delta * (2.0 * np.sqrt(e) / (1.0 + e))


class _WinogradWrongTransform(alt.WinogradRules):
    """Winograd with the filter transform's middle rows not halved (G's 1/2 factors lost)."""

    @staticmethod
    def _correlate(x: np.ndarray, k: np.ndarray) -> np.ndarray:
        if k.shape == (3, 3) and min(x.shape) >= 3:
            saved = alt._WG.copy()
            alt._WG[1:3] *= 2.0
            try:
                return alt._winograd_3x3(x, k)
            finally:
                alt._WG[:] = saved
        return alt.WinogradRules._correlate(x, k)


class _Engine(alt._EngineVariant):
    variant = "numpy-negative-control"

    def __init__(self, rules: alt.Rules) -> None:
        alt.NumpyEngineAdapter.__init__(self, rules=rules, name=self.variant)


class _TorchFuncOffByFactor(alt.TorchFuncAdapter):
    """``torch.func.vjp`` whose pullback is scaled by 1 + 1e-3 (the catalogue's factor bug)."""

    name = "torch-func-wrong"

    def vjp(self, fn: Any, inputs: Any, wrt: Sequence[str], cotangent: np.ndarray, dtype: str) -> Any:
        res = super().vjp(fn, inputs, wrt, cotangent, dtype)
        return alt.VJPResult(res.output, {n: g * g.dtype.type(1.001) for n, g in res.grads.items()})


class _TorchStridedScrambledCotangent(alt.TorchStridedAdapter):
    """The cotangent's transposed buffer read as if it were contiguous: a stride bug in the backward."""

    name = "torch-strided-wrong"

    def vjp(self, fn: Any, inputs: Any, wrt: Sequence[str], cotangent: np.ndarray, dtype: str) -> Any:
        u = np.asarray(cotangent)
        scrambled = np.ascontiguousarray(np.swapaxes(u, -1, -2)).reshape(u.shape) if u.ndim >= 2 else u[::-1]
        return super().vjp(fn, inputs, wrt, scrambled, dtype)


class _JaxStaleLinearisation(alt.JaxLinearTransposeAdapter):
    """``linear_transpose`` of a linearisation taken at a stale point (x + 1e-2): remat gone wrong."""

    name = "jax-lintrans-wrong"

    def _vjp_function(self, fn: Any) -> Callable[..., Any]:
        import jax

        ops = self.ops

        def run(diff: dict[str, Any], const: dict[str, Any], u: Any) -> tuple[Any, Any]:
            f = lambda d: fn(ops, {**const, **d})  # noqa: E731
            out = f(diff)
            stale = jax.tree_util.tree_map(lambda a: a + a.dtype.type(1e-2), diff)
            _, lin = jax.linearize(f, stale)
            (grads,) = jax.linear_transpose(lin, diff)(u.astype(out.dtype))
            return out, grads

        return run


NEGATIVE: dict[str, tuple[Callable[[], Any], str, str, str]] = {
    "fft-filter-flipped": (lambda: _Engine(_FlippedFilterFFT()), "conv-filter", "vjp", ""),
    "tanh-sech-not-squared": (lambda: _Engine(_TanhSechNotSquared()), "elementwise-tanh", "vjp", ""),
    "torch-func-factor": (_TorchFuncOffByFactor, "mlp", "vjp", "torch"),
    "torch-strided-cotangent": (_TorchStridedScrambledCotangent, "linear-layer", "vjp", "torch"),
    "jax-stale-linearisation": (_JaxStaleLinearisation, "mlp", "vjp", "jax"),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_same_adapter_with_a_wrong_gradient_fails(case: str, dtype: str) -> None:
    make, ident, mode, framework = NEGATIVE[case]
    _needs(framework)
    res = check(ident, make(), dtype, SETTINGS.with_(shrink=False, examples=2), mode=mode)
    assert res.verdict is Verdict.FAIL, (case, res.verdict, res.message[:300])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_winograd_with_a_wrong_transform_fails_on_a_3x3_kernel(dtype: str) -> None:
    """Winograd runs only for 3x3 kernels (a check's few drawn examples may hold none): one
    example with a 3x3 kernel, the correct adapter passes and the wrong transform fails."""
    rng = np.random.default_rng(0)
    example = Example({"X": rng.standard_normal((6, 7)), "K": rng.standard_normal((3, 3))}, {}, 0)
    assert evaluate_example("conv-input", alt.WinogradAdapter(), dtype, example).passed
    outcome = evaluate_example("conv-input", _Engine(_WinogradWrongTransform()), dtype, example)
    assert not outcome.passed
