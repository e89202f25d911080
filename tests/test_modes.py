"""Forward mode (``jvp``), second order (``hvp``) and effective precision (issue 15).

- every identity's closed-form ``J v`` and ``H v`` against finite differences, with negative
  controls (a wrong closed form is caught by the same comparison);
- torch and jax conform in both new modes on every identity (``GRADORACLE_MODE_EXAMPLES``
  raises the example count; default 6);
- the mutants of the new modes are caught with the right localisation (and pass reverse mode);
- the simulated-TF32 adapter is a named reduced-precision finding with its bits, acceptable
  through the deviations file; a real bug in float32 is not;
- mode plumbing: ids, tasks, options, the numpy engine saying it has no forward mode.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from gradoracle import CheckSettings, Verdict, all_identities, check
from gradoracle import finite_differences as fd
from gradoracle.adapters import load_adapter
from gradoracle.identities import Identity, get_identity
from gradoracle.identities.mlp import _softmax
from gradoracle.modes import (
    MODES,
    UnknownModeError,
    adapter_modes,
    check_id,
    evaluate_hvp_example,
    evaluate_jvp_example,
    parse_modes,
)
from gradoracle.precision import effective_bits, name_precision_mode
from gradoracle.results import CheckResult, Fault

#: Every catalogue identity (the notes' and the layers') carries closed forms for both new modes.
IDENTITIES = [i.name for i in all_identities()]
LAYER_IDENTITIES = [i.name for i in all_identities() if i.parameters]
EXAMPLES = int(os.environ.get("GRADORACLE_MODE_EXAMPLES", "4"))
HAVE_JAX = importlib.util.find_spec("jax") is not None
SETTINGS = CheckSettings(examples=EXAMPLES, seed=20261130)
SLOW = CheckSettings(examples=6, seed=3, shrink=False)


def _available(name: str) -> Any:
    adapter = load_adapter(name)
    ok, why = adapter.available()
    if not ok:
        pytest.skip(f"{name} not installed: {why}")
    return adapter


def _examples(ident: Identity, n: int = 6) -> list[Any]:
    """``n`` examples of ``ident``, the same on every run: a control that needs some kind of
    example (a mean over N > 1 rows, a window with two distinct elements) must not depend on luck."""
    out: list[Any] = []

    @seed(20261130)
    @settings(max_examples=n, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ident.strategy())
    def collect(example: Any) -> None:
        out.append(example)

    collect()
    return out


# ------------------------------------------------- the closed forms vs finite differences


def _step(ident: Identity, a: dict[str, np.ndarray], p: Any, v: dict[str, np.ndarray]) -> float | None:
    """1e-6, halved until no kink lies within two steps (the runner's kink-safe step)."""
    from gradoracle.runner import _kink_safe_step

    return _kink_safe_step(ident, a, p, v, 1e-6)


def _jvp_error(ident: Identity, jvp: Callable[..., np.ndarray], example: Any) -> tuple[float, float]:
    """(max |closed-form J v - central difference|, scale) at one example, float64."""
    a = {k: np.asarray(v, dtype=np.float64) for k, v in example.inputs.items()}
    p = example.params
    rng = np.random.default_rng(example.seed)
    v = {n: rng.uniform(-1, 1, a[n].shape) for n in ident.wrt}
    out = ident.reference_forward(a, p)
    got = np.asarray(jvp(a, p, v)).reshape(out.shape)
    h = _step(ident, a, p, v)
    if h is None:  # every step crosses a kink (inputs drawn down to 2^-124 from it)
        return 0.0, 1.0
    numeric = (
        ident.reference_forward(fd.perturbed(a, v, h, "float64"), p)
        - ident.reference_forward(fd.perturbed(a, v, -h, "float64"), p)
    ) / (2 * h)
    return float(np.max(np.abs(got - numeric))), float(max(1.0, np.max(np.abs(numeric))))


def _full_gradient(
    ident: Identity, p: Any, u: np.ndarray
) -> Callable[[dict[str, np.ndarray]], dict[str, Any]]:
    """The closed-form gradient over the Hessian's inputs (the conv pair covers X and K)."""
    from gradoracle.identities import IDENTITIES

    missing = set(ident.second_order_wrt) - set(ident.wrt)
    sources = [ident] + [
        o
        for o in IDENTITIES.values()
        if missing and o.forward is ident.forward and o is not ident and o.reference_gradient
    ]

    def grad(a: dict[str, np.ndarray]) -> dict[str, Any]:
        g: dict[str, Any] = {}
        for s in sources:
            for k, val in s.gradient(a, p, u).items():
                g.setdefault(k, val)
        return g

    return grad


def _hvp_error(
    ident: Identity, hvp: Callable[..., dict[str, np.ndarray]], example: Any
) -> tuple[float, float]:
    a = {k: np.asarray(v, dtype=np.float64) for k, v in example.inputs.items()}
    p = example.params
    rng = np.random.default_rng(example.seed + 1)
    out = ident.reference_forward(a, p)
    u = rng.uniform(-1, 1, out.shape)
    names = ident.second_order_wrt
    v = {n: rng.uniform(-1, 1, a[n].shape) for n in names}
    got = hvp(a, p, u, v)
    grad = _full_gradient(ident, p, u)
    h = _step(ident, a, p, v)
    if h is None:
        return 0.0, 1.0
    gp, gm = grad(fd.perturbed(a, v, h, "float64")), grad(fd.perturbed(a, v, -h, "float64"))
    err = scale = 0.0
    for n in names:
        numeric = (np.asarray(gp[n]) - np.asarray(gm[n])) / (2 * h)
        err = max(err, float(np.max(np.abs(np.asarray(got[n]) - numeric))))
        scale = max(scale, 1.0, float(np.max(np.abs(numeric))))
    return err, scale


@pytest.mark.parametrize("name", IDENTITIES)
def test_every_identity_has_closed_forms_for_both_new_modes(name: str) -> None:
    ident = get_identity(name)
    assert ident.reference_jvp is not None and ident.reference_hvp is not None
    assert ident.second_order_note, "say what second order checks (kinks included)"


@pytest.mark.parametrize("name", IDENTITIES)
def test_closed_form_jvp_matches_finite_differences(name: str) -> None:
    ident = get_identity(name)
    for example in _examples(ident):
        err, scale = _jvp_error(ident, ident.reference_jvp, example)  # type: ignore[arg-type]
        assert err <= 1e-6 * scale, (name, err, scale)


@pytest.mark.parametrize("name", IDENTITIES)
def test_closed_form_hvp_matches_finite_differences_of_the_closed_form_gradient(name: str) -> None:
    ident = get_identity(name)
    for example in _examples(ident):
        err, scale = _hvp_error(ident, ident.reference_hvp, example)  # type: ignore[arg-type]
        assert err <= 1e-6 * scale, (name, err, scale)


def test_negative_controls_wrong_closed_forms_are_caught_by_the_same_comparisons() -> None:
    # a forward mode that transposes W (W^T v instead of W v) on a non-square W ...
    ident = get_identity("matvec-weight-grad")

    def transposed(a: Any, p: Any, t: Any) -> np.ndarray:
        W = a["W"]
        return np.asarray(t["W"] @ a["x"] + (W.T @ t["x"] if W.shape[0] == W.shape[1] else W @ t["x"] * 1.01))

    errs = [_jvp_error(ident, transposed, ex) for ex in _examples(ident, 10)]
    assert any(e > 1e-4 * s for e, s in errs)
    # ... a sigmoid J v without (1 - s) ...
    sig = get_identity("elementwise-sigmoid")
    # (on examples with an entry in the bulk: in the far negative tail s (1 - s) = s to rounding)
    bulk = [ex for ex in _examples(sig) if np.min(np.abs(ex.inputs["x"])) <= 4.0]
    errs = [_jvp_error(sig, lambda a, p, t: 1 / (1 + np.exp(-a["x"])) * t["x"], ex) for ex in bulk]
    assert len(bulk) >= 3
    assert all(e > 1e-4 * s for e, s in errs)
    # ... a softmax cross-entropy Hessian missing - yhat yhat^T (diag(yhat) only) ...
    ce = get_identity("mlp-a-logits")
    errs = [
        _hvp_error(ce, lambda a, p, u, t: {"z2": u * _softmax(a["z2"]) * t["z2"]}, ex) for ex in _examples(ce)
    ]
    assert all(e > 1e-4 * s for e, s in errs)
    # ... a ReLU whose second derivative is 1, and a conv Hessian without its cross term.
    relu = get_identity("elementwise-relu")
    errs = [_hvp_error(relu, lambda a, p, u, t: {"x": u * t["x"]}, ex) for ex in _examples(relu, 10)]
    assert any(e > 1e-4 * s for e, s in errs)  # (examples whose every step crosses the kink say 0)
    conv = get_identity("conv-filter")
    errs = [
        _hvp_error(conv, lambda a, p, u, t: {n: np.zeros_like(a[n]) for n in t}, ex) for ex in _examples(conv)
    ]
    assert all(e > 1e-4 * s for e, s in errs)


def _rel(errs: list[tuple[float, float]]) -> list[float]:
    return [e / sc for e, sc in errs]


def test_layer_identities_have_closed_forms_in_both_modes() -> None:
    assert len(LAYER_IDENTITIES) == 10
    for name in LAYER_IDENTITIES:
        ident = get_identity(name)
        assert ident.reference_jvp is not None and ident.reference_hvp is not None, name
        assert ident.second_order_note, name


def test_negative_controls_wrong_layer_jvps_are_caught() -> None:
    from gradoracle.identities import convolution_nd, linear_layers, pooling_nd
    from gradoracle.reference_layers import max_pool_nd

    # a convolution J v without the bias tangent db: wrong on every example with a bias (db is
    # drawn nonzero), right on those without one (their op has no b term)
    conv = get_identity("conv2d-layer")

    def conv_no_bias(a: Any, p: Any, t: Any) -> np.ndarray:
        return convolution_nd._jvp_conv(a, p, {k: v for k, v in t.items() if k != "b"})

    drawn = _examples(conv, 12)
    with_bias = [ex for ex in drawn if ex.params["bias"]]
    without = [ex for ex in drawn if not ex.params["bias"]]
    assert len(with_bias) >= 4 and without
    assert all(r > 1e-4 for r in _rel([_jvp_error(conv, conv_no_bias, ex) for ex in with_bias]))
    assert all(r < 1e-8 for r in _rel([_jvp_error(conv, conv_no_bias, ex) for ex in without]))
    # a linear-layer J v holding W (no X dW^T term): caught unless X is all zeros (the simplest draw)
    lin = get_identity("linear-layer")

    def lin_no_dw(a: Any, p: Any, t: Any) -> np.ndarray:
        return linear_layers._jvp_linear(a, p, {k: v for k, v in t.items() if k != "W"})

    examples = _examples(lin, 8)
    caught = [r > 1e-4 for r in _rel([_jvp_error(lin, lin_no_dw, ex) for ex in examples])]
    assert caught == [bool(np.any(ex.inputs["X"] != 0)) for ex in examples] and any(caught)
    # max pooling routing the tangent from each window's minimum instead of its maximum: caught
    # exactly on the examples where some window's minimum and maximum differ (a window of two
    # or more input elements), accepted where every window holds one element
    pool = get_identity("max-pool-layer")

    def route_min(a: Any, p: Any, t: Any) -> np.ndarray:
        return np.asarray(pooling_nd._jvp_max({"X": -a["X"]}, p, t))

    spreads = []
    for ex in _examples(pool, 20):
        x = np.asarray(ex.inputs["X"], dtype=np.float64)
        geometry = (ex.params[k] for k in ("window", "stride", "padding", "dilation", "ceil_mode"))
        w, s_, q, d, c = geometry
        spread = bool(np.any(max_pool_nd(x, w, s_, q, d, c) != -max_pool_nd(-x, w, s_, q, d, c)))
        err, scale = _jvp_error(pool, route_min, ex)
        assert (err > 1e-4 * scale) == spread, (ex.params, err, scale)
        spreads.append(spread)
    # the control proves something only if some drawn window held two distinct elements
    assert sum(spreads) >= 1, "no drawn max-pool window held two distinct elements"


def test_negative_controls_wrong_layer_hvps_are_caught() -> None:
    from gradoracle.identities import convolution_nd, linear_layers, mlp_batch

    # a batched cross-entropy H v missing the 1/N of reduction='mean': rejected exactly when
    # the reduction is mean over N > 1 rows, accepted for sum or a single row
    ce = get_identity("cross-entropy-batch")

    def missing_mean(a: Any, p: Any, u: Any, t: Any) -> dict[str, np.ndarray]:
        g = mlp_batch._hvp(a, p, u, t)
        n = a["Z"].shape[0]
        return {k: v * n for k, v in g.items()} if p["reduction"] == "mean" else g

    cases = set()
    for ex in _examples(ce, 16):
        on = ex.params["reduction"] == "mean" and ex.inputs["Z"].shape[0] > 1
        err, scale = _hvp_error(ce, missing_mean, ex)
        assert (err > 1e-4 * scale) == on, (ex.params, ex.inputs["Z"].shape, err, scale)
        cases.add(on)
    assert cases == {True, False}
    # the batched MLP's double backward without the Delta2 dW2 term of d(dJ/dH) (the path of W2's
    # tangent into Delta1): caught whenever some hidden unit is active (the mask carries it on)
    mlp = get_identity("mlp-batch")

    def no_dw2_term(a: Any, p: Any, u: Any, t: Any) -> dict[str, np.ndarray]:
        g = mlp_batch._hvp(a, p, u, t)
        z1 = a["X"] @ a["W1"].T + a["b1"]
        z2 = np.maximum(z1, 0) @ a["W2"].T + a["b2"]
        tt, r = mlp_batch._targets(a, p, z2)
        term = (z1 > 0) * (mlp_batch._delta2(z2, tt, r, np.asarray(u)) @ t["W2"])
        g["W1"], g["b1"], g["X"] = (
            g["W1"] - term.T @ a["X"],
            g["b1"] - term.sum(axis=0),
            g["X"] - term @ a["W1"],
        )
        return g

    for ex in _examples(mlp, 8):
        active = bool(np.any(ex.inputs["X"] @ ex.inputs["W1"].T + ex.inputs["b1"] > 0))
        err, scale = _hvp_error(mlp, no_dw2_term, ex)
        assert (err > 1e-4 * scale) == active, (err, scale)
    # a linear layer whose (H v)_W block takes the first batch row only: caught iff there are rows to sum
    lin = get_identity("linear-layer")

    def first_row(a: Any, p: Any, u: Any, t: Any) -> dict[str, np.ndarray]:
        g = linear_layers._hvp_linear(a, p, u, t)
        rows_u = u.reshape(-1, u.shape[-1])
        rows_v = np.asarray(t["X"]).reshape(-1, a["X"].shape[-1])
        g["W"] = np.outer(rows_u[0], rows_v[0])
        return g

    for ex in _examples(lin, 10):
        rows = int(np.prod(ex.inputs["X"].shape[:-1]))
        err, scale = _hvp_error(lin, first_row, ex)
        assert (err > 1e-4 * scale) == (rows > 1), (ex.inputs["X"].shape, err, scale)
    # a convolution H v taking the K block at X instead of the tangent v_X
    conv = get_identity("conv1d-layer")

    def at_x(a: Any, p: Any, u: Any, t: Any) -> dict[str, np.ndarray]:
        g = convolution_nd._hvp_conv(a, p, u, t)
        g["K"] = convolution_nd._grad_conv(a, p, u)["K"]
        return g

    # caught wherever the output reads X at all (a window over padding only, e.g. X (3, 32, 1)
    # with padding 2, kernel 2, stride 3, makes Z = b: every K block is 0, right or wrong)
    checked = 0
    for ex in _examples(conv, 12):
        ones = {k: np.ones_like(v) for k, v in ex.inputs.items()}
        reads_x = np.any(conv.reference_forward({**ones, "b": np.zeros_like(ex.inputs["b"])}, ex.params) != 0)
        if reads_x:
            checked += 1
            (rel,) = _rel([_hvp_error(conv, at_x, ex)])
            assert rel > 1e-4, (ex.params, {k: v.shape for k, v in ex.inputs.items()})
    assert checked >= 4


def test_tanh_second_order_allows_the_rounding_of_its_product_rule_form_only() -> None:
    # JAX differentiates f' = (1 - t)(1 + t): at t = 0 the product rule's two terms t' (1 - t) and
    # t' (1 + t) cancel, and under jit (FMA) leave ~1e-17 although f''(0) = 0, a false failure
    # of the false-positive campaign; the magnitude of the terms now includes them
    from gradoracle.strategies import Example
    from gradoracle.tolerances import tolerance_for

    ident = get_identity("elementwise-tanh")
    mag = ident.hvp_term_magnitude({"x": np.zeros(1)}, {}, np.ones(1), {"x": np.ones(1)})["x"]
    # at t = 0: the two product-rule terms |u v| t' (1 -/+ t) = 1 each, not |f''(0)| = 0
    assert mag[0] == 2.0
    # elsewhere |u v| (2 |t| (1 + t^2) + 2 t' (1 + |t|)), t' = 1 - t^2
    x, u, v = np.array([0.5, -1.2]), np.array([2.0, 1.0]), np.array([-3.0, 0.5])
    t = np.tanh(x)
    expected = np.abs(u * v) * (2 * np.abs(t) * (1 + t * t) + 2 * (1 - t * t) * (1 + np.abs(t)))
    got = ident.hvp_term_magnitude({"x": x}, {}, u, {"x": v})["x"]
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    allowed = float(tolerance_for("float64").allowed(mag, 0.0)[0])
    assert 1e-16 < allowed < 1e-12  # the FMA residue passes, an error of 1e-12 still fails
    if HAVE_JAX:
        jax = load_adapter("jax")  # the default adapter: jit after a few calls
        for dtype in ("float64", "float32"):
            for _ in range(3):
                outcome = evaluate_hvp_example(ident, jax, dtype, Example({"x": np.zeros(1)}, {}, 0))
                assert outcome.passed, [(c.kind, c.ratio) for c in outcome.failures]


# ----------------------------------------------------------------- conformance in the modes

#: JAX runs one identity per family by default (eager JAX is ~10x slower per example than
#: torch here); GRADORACLE_MODES_FULL=1 runs every identity on both (``gradoracle report``
#: covers every identity on both in every mode).
JAX_SAMPLE = (
    "vecmat-jacobian",
    "elementwise-relu",
    "elementwise-gelu",
    "matvec-weight-grad",
    "mlp-a-logits",
    "mlp",
    "conv-filter",
    "max-pool",
    "avg-pool",
    "conv2d-layer",
    "max-pool-layer",
    "cross-entropy-batch",
)
FULL = os.environ.get("GRADORACLE_MODES_FULL", "") not in ("", "0")
CASES = [
    pytest.param(name, adapter, dtype, mode, id=f"{name}-{adapter}-{dtype}-{mode}")
    for name in IDENTITIES
    for adapter in ("torch", "jax")
    for dtype in ("float64", "float32")
    for mode in ("jvp", "hvp")
    if adapter == "torch" or FULL or name in JAX_SAMPLE
]


@pytest.mark.parametrize(("identity", "adapter", "dtype", "mode"), CASES)
def test_torch_and_jax_conform_in_forward_mode_and_second_order(
    identity: str, adapter: str, dtype: str, mode: str
) -> None:
    # JAX eagerly: a handful of examples per shape does not repay a compilation each
    result = check(
        identity, _available(adapter if adapter != "jax" else "jax?jit=never"), dtype, SETTINGS, mode
    )
    assert result.verdict == Verdict.PASS, result.message
    assert result.mode == mode and result.id == f"{identity}-{adapter}-{dtype}-{mode}"
    assert result.examples >= min(EXAMPLES, 3)
    assert result.max_ratio() < 1.0
    kinds = set(result.errors)
    # the oracle's own finite differences run along one direction; near a kink (inputs drawn
    # down to 2^-124 from it) they may never find a safe step: only kinked identities may lack them
    kinked = get_identity(identity).smooth_pattern is not None
    if mode == "jvp":
        assert {"jvp-analytic", "jvp-fd", "transpose", "forward"} <= kinds
        assert kinked or "jvp-oracle" in kinds
    else:
        assert {"hvp-analytic", "hvp-fd", "hvp-methods"} <= kinds
        assert kinked or "hvp-oracle" in kinds
    if dtype == "float32":
        assert result.precision is not None and result.precision["bits"] >= 16
        assert "mode" not in result.precision


def test_the_numpy_engine_is_reverse_only_and_says_so() -> None:
    engine = load_adapter("numpy")
    assert adapter_modes(engine) == ("vjp",)
    for mode, words in (("jvp", "no forward mode"), ("hvp", "no Hessian-vector products")):
        result = check("mlp", engine, "float64", SETTINGS, mode)
        assert result.verdict == Verdict.SKIP and words in result.message
        assert result.id == f"mlp-numpy-float64-{mode}"


def test_an_identity_without_a_closed_form_hvp_is_not_checked_never_passed() -> None:
    adapter = _available("torch")
    bare = dataclasses.replace(get_identity("elementwise-tanh"), reference_hvp=None, reference_jvp=None)
    result = check(bare, adapter, "float64", SETTINGS, "hvp")
    assert result.verdict == Verdict.SKIP and "not checked" in result.message
    # forward mode without a closed form still runs finite differences and the transpose identity
    result = check(bare, adapter, "float64", SETTINGS, "jvp")
    assert result.verdict == Verdict.PASS
    assert "jvp-analytic" not in result.errors and {"jvp-fd", "transpose"} <= set(result.errors)


# ----------------------------------------------------------------------- mutants, localised


def _mutant_result(name: str, target: str, dtype: str, mode: str) -> CheckResult:
    from gradoracle.selftest.catalogue import get_mutant

    mutant = get_mutant(name)
    ok, why = mutant.available()
    if not ok:
        pytest.skip(why)
    return check(target, mutant.spec, dtype, SLOW, mode)


NEW_MUTANTS = [
    ("torch-sigmoid-jvp-missing-one-minus", "elementwise-sigmoid", "jvp", Fault.FORWARD_MODE, "jvp-analytic"),
    ("torch-conv-jvp-rot180", "conv-input", "jvp", Fault.FORWARD_MODE, "jvp-analytic"),
    ("torch-tanh-backward-wrong-jvp-right", "elementwise-tanh", "jvp", Fault.BACKWARD, "transpose"),
    ("torch-relu-second-derivative-one", "mlp-d-relu-mask", "hvp", Fault.SECOND_ORDER, "hvp-analytic"),
    ("torch-softmax-ce-hessian-missing-outer", "mlp", "hvp", Fault.SECOND_ORDER, "hvp-analytic"),
    ("jax-relu-second-derivative-one", "elementwise-relu", "hvp", Fault.SECOND_ORDER, "hvp-analytic"),
    ("jax-softmax-ce-hessian-missing-outer", "mlp-a-logits", "hvp", Fault.SECOND_ORDER, "hvp-analytic"),
    # on the layer identities
    ("torch-conv-layer-jvp-missing-bias-tangent", "conv2d-layer", "jvp", Fault.FORWARD_MODE, "jvp-analytic"),
    (
        "torch-max-pool-layer-jvp-routes-the-minimum",
        "max-pool-layer",
        "jvp",
        Fault.FORWARD_MODE,
        "jvp-analytic",
    ),
    (
        "torch-cross-entropy-hessian-missing-mean",
        "cross-entropy-batch",
        "hvp",
        Fault.SECOND_ORDER,
        "hvp-analytic",
    ),
]


@pytest.mark.parametrize(
    ("name", "target", "mode", "fault", "kind"), NEW_MUTANTS, ids=[m[0] for m in NEW_MUTANTS]
)
def test_mutants_of_the_new_modes_are_caught_where_they_are(
    name: str, target: str, mode: str, fault: Fault, kind: str
) -> None:
    result = _mutant_result(name, target, "float64", mode)
    assert result.verdict == Verdict.FAIL and result.fault == fault, result.message
    assert result.worst is not None and result.worst.kind == kind
    assert f"mode {mode}" in result.message and f"mode={mode!r}" in (result.repro or "")
    if fault != Fault.BACKWARD:
        # the rule that is wrong is only the new mode's: reverse mode conforms
        assert _mutant_result(name, target, "float64", "vjp").verdict == Verdict.PASS


def test_the_missing_mean_hessian_mutant_shows_under_mean_with_several_rows_only() -> None:
    from gradoracle.selftest.catalogue import get_mutant
    from gradoracle.strategies import Example

    mutant = get_mutant("torch-cross-entropy-hessian-missing-mean")
    if not mutant.available()[0]:
        pytest.skip("torch not installed")
    adapter = mutant.build()
    rng = np.random.default_rng(5)
    for reduction, rows, on in (("mean", 3, True), ("sum", 3, False), ("mean", 1, False)):
        inputs = {"Z": rng.uniform(-2, 2, (rows, 4)), "T": np.asarray(rng.integers(0, 4, rows), dtype=float)}
        params = {"target": "index", "reduction": reduction, "label_smoothing": 0.1}
        outcome = evaluate_hvp_example("cross-entropy-batch", adapter, "float64", Example(inputs, params, 11))
        assert outcome.passed != on, (reduction, rows, [c.kind for c in outcome.failures])
        if on:
            assert outcome.fault == Fault.SECOND_ORDER
            assert {c.kind for c in outcome.failures} >= {"hvp-analytic", "hvp-fd"}


def test_the_second_order_mutants_fail_finite_differences_of_their_own_gradient_too() -> None:
    result = _mutant_result("torch-relu-second-derivative-one", "elementwise-relu", "float64", "hvp")
    assert result.errors["hvp-fd"]
    assert max(s.max_ratio for s in result.errors["hvp-fd"].values()) > 1


# ------------------------------------------------------------------------------- precision

TF32 = "gradoracle.adapters.reduced_precision:SimulatedTF32Adapter"


def test_simulated_tf32_is_a_named_reduced_precision_finding_with_its_bits() -> None:
    for identity in ("matvec-weight-grad", "conv-input", "mlp"):
        r32 = check(identity, TF32, "float32", SLOW)
        assert r32.verdict == Verdict.FAIL and r32.fault == Fault.PRECISION, r32.message
        assert r32.precision is not None and r32.precision["mode"] == "tf32"
        assert 10.25 <= r32.precision["bits"] < 15
        assert r32.message.startswith("reduced precision: ") and "TF32" in r32.message
        # float64 is not affected: the adapter's derivatives are right
        assert check(identity, TF32, "float64", SLOW).verdict == Verdict.PASS
    bf16 = check("conv-filter", TF32 + "?mantissa_bits=7", "float32", SLOW)
    assert bf16.fault == Fault.PRECISION and bf16.precision is not None and bf16.precision["mode"] == "bf16"


def test_negative_controls_full_precision_and_a_real_bug_are_not_precision_findings() -> None:
    full = check("conv-input", TF32 + "?mantissa_bits=23", "float32", SLOW)
    assert full.verdict == Verdict.PASS and full.precision is not None and full.precision["bits"] >= 16
    # a 1e-3 relative error in every matmul gradient is wrong in float64 as well: backward, not precision
    from gradoracle.selftest.catalogue import get_mutant

    wrong = check("matvec-weight-grad", get_mutant("matmul-scaled-1e-3").spec, "float32", SLOW)
    assert wrong.verdict == Verdict.FAIL and wrong.fault == Fault.BACKWARD
    assert wrong.precision is None


def test_effective_bits_and_the_named_bands() -> None:
    ref = np.array([1.0, -2.0, 4.0])
    mag = np.abs(ref)
    assert effective_bits({"g": (ref, ref, mag)}) == 24.0
    assert effective_bits({"g": (ref * (1 + 2.0**-11), ref, mag)}) == pytest.approx(11.0)
    assert effective_bits({"g": (ref + np.array([0.0, 0.0, 1.0]), ref, mag)}) == pytest.approx(2.0)
    assert name_precision_mode(12.0).name == "tf32"  # type: ignore[union-attr]
    assert name_precision_mode(8.0).name == "bf16"  # type: ignore[union-attr]
    assert name_precision_mode(3.0) is None and name_precision_mode(20.0) is None


def test_a_precision_finding_is_accepted_only_through_the_deviations_file(tmp_path: Any) -> None:
    from gradoracle.deviations import apply_deviations, load_deviations

    path = tmp_path / "devs.toml"
    path.write_text(
        '[[deviation]]\nidentity = "*"\nadapter = "numpy-sim-10bit"\ndtype = "float32"\n'
        'fault = "reduced-precision"\nreason = "TF32 on by default"\n'
        '[[deviation]]\nidentity = "*"\nadapter = "numpy-sim-10bit"\nfault = "backward"\nreason = "never"\n'
    )
    entries = load_deviations(path)
    r = check("matvec-weight-grad", TF32, "float32", SLOW)
    outcome = apply_deviations([r], entries)
    assert (
        r.verdict == Verdict.XFAIL and r.deviation is not None and r.deviation["fault"] == "reduced-precision"
    )
    assert [d.reason for _, d in outcome.matched] == ["TF32 on by default"]
    # an entry for another kind of failure does not accept it
    r2 = check("matvec-weight-grad", TF32, "float32", SLOW)
    apply_deviations([r2], entries[1:])
    assert r2.verdict == Verdict.FAIL


# ----------------------------------------------------------------------------- plumbing


def test_mode_ids_tasks_and_options() -> None:
    from gradoracle.matrix import plan_tasks
    from gradoracle.options import modes_from

    assert MODES == ("vjp", "jvp", "hvp")
    assert check_id("mlp", "torch", "float32") == "mlp-torch-float32"
    assert check_id("mlp", "torch", "float32", "hvp") == "mlp-torch-float32-hvp"
    assert parse_modes(["hvp,vjp", "jvp"]) == ("vjp", "jvp", "hvp") and parse_modes(None) == ()
    with pytest.raises(UnknownModeError, match="choose from vjp, jvp, hvp"):
        parse_modes(["fwd"])
    with pytest.raises(ValueError, match="unknown mode"):
        modes_from(["rev"])
    torch_like = load_adapter("torch")
    tasks = plan_tasks(
        [get_identity("mlp")], [("torch", torch_like), ("numpy", load_adapter("numpy"))], ["float64"]
    )
    assert [t.id for t in tasks] == [
        "mlp-numpy-float64",
        "mlp-torch-float64",
        "mlp-torch-float64-jvp",
        "mlp-torch-float64-hvp",
    ]
    only = plan_tasks([get_identity("mlp")], [("torch", torch_like)], ["float32"], ("hvp",))
    assert [t.id for t in only] == ["mlp-torch-float32-hvp"]
    # results round-trip with their mode and precision
    r = CheckResult(
        "mlp", "notes:mlp", "torch", "float32", Verdict.PASS, mode="jvp", precision={"bits": 22.1}
    )
    back = CheckResult.from_dict(r.to_dict())
    assert back.mode == "jvp" and back.precision == {"bits": 22.1} and back.id == "mlp-torch-float32-jvp"


def test_an_unknown_mode_is_an_error_record() -> None:
    result = check("mlp", "numpy", "float64", SETTINGS, "fwd")
    assert result.verdict == Verdict.ERROR and "unknown mode 'fwd'" in result.message


@given(st.data())
@settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_evaluators_pass_a_correct_adapter_on_any_identity_and_example(data: st.DataObject) -> None:
    adapter = load_adapter("torch")
    if not adapter.available()[0]:
        return
    ident = get_identity(data.draw(st.sampled_from(IDENTITIES)))
    example = data.draw(ident.strategy())
    for dtype in ("float64", "float32"):
        assert evaluate_jvp_example(ident, adapter, dtype, example).passed
        assert evaluate_hvp_example(ident, adapter, dtype, example).passed
