"""The notes' MLP with a batch, as ``F.cross_entropy`` defines the loss.

``Z1 = X W1^T + b1``, ``H = ReLU(Z1)``, ``Z2 = H W2^T + b2``, ``J = r sum_n CE(t~_n,
softmax(z2_n))`` over N rows, with class-index or class-probability targets, ``r = 1/N``
(``mean``) or 1 (``sum``), and PyTorch's label smoothing ``t~ = (1 - eps) t + eps / C``
(class indices made one-hot first).

Derivation (steps A-E of the notes, per row, then summed over the batch):

- A: the loss is ``r`` times a sum of per-row losses, so ``delta2_n = dJ/dz2_n = r
  (yhat_n sum_c t~_nc - t~_n) = r (yhat_n - t~_n)`` (rows of t~ sum to 1);
- B: ``dJ/dW2 = sum_n delta2_n h_n^T = Delta2^T H``, ``dJ/db2 = sum_n delta2_n``;
- C: ``dJ/dH = Delta2 W2``;  D: ``Delta1 = dJ/dH * 1(Z1 > 0)``;
- E: ``dJ/dW1 = Delta1^T X``, ``dJ/db1 = sum_n delta1_n``, and ``dJ/dX = Delta1 W1``.

Forward mode and second order: one tangent pass through the batch (tangents dX, dW1, db1,
dW2, db2; zero for inputs held constant; ``M = 1(Z1 > 0)``)::

    dZ1 = dX W1^T + X dW1^T + db1,  dH = M * dZ1,  dZ2 = dH W2^T + H dW2^T + db2
    J v = sum_(n,c) Delta2 * dZ2                                   (forward mode)

and steps A-E differentiated along it, for ``s = c J`` (H v)::

    d Delta2_n = c r S_n (diag(yhat_n) - yhat_n yhat_n^T) dz2_n = c r S_n yhat_n * (dz2_n - <yhat_n, dz2_n>)
    (S_n = sum_c t~_nc, 1 for every target here; the smoothed targets are constants)
    (H v)_W2 = dDelta2^T H + Delta2^T dH,   (H v)_b2 = sum_n d delta2_n
    dG = dDelta2 W2 + Delta2 dW2,  dDelta1 = M * dG   (M is constant off the kink)
    (H v)_W1 = dDelta1^T X + Delta1^T dX,  (H v)_b1 = sum_n d delta1_n,  (H v)_X = dDelta1 W1 + Delta1 dW1

``r`` (1/N under mean) multiplies both Delta2 and its tangent: a double backward that drops
it is off by N.  For the logits alone (``cross-entropy-batch``): ``J v = sum Delta2 * dZ``,
``(H v)_Z = d Delta2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradoracle import layer_strategies as L
from gradoracle import strategies as S
from gradoracle.identities.record import Arrays, Identity, InvalidShapeError, Params
from gradoracle.reference_layers import log_softmax_rows, reduction_scale, smoothed_targets

REDUCTIONS: tuple[str, ...] = ("mean", "sum")
LABEL_SMOOTHING: tuple[float, ...] = (0.0, 0.1, 0.25)
TARGETS: tuple[str, ...] = ("index", "probability")
#: Classes of an accelerator-sized cross-entropy: past a block of 64 (and of 16, 32) by 4.
LARGE_CLASSES = 68


def _check_targets(z_shape: tuple[int, ...], T: np.ndarray, params: Params) -> None:
    n, classes = z_shape
    if params.get("reduction", "mean") not in REDUCTIONS:
        raise InvalidShapeError(f"reduction {params.get('reduction')!r}: use one of {REDUCTIONS}")
    eps = float(params.get("label_smoothing", 0.0))
    if not 0.0 <= eps <= 1.0:
        raise InvalidShapeError(f"label_smoothing {eps} must lie in [0, 1]")
    if T.shape == (n,):
        if np.any(np.rint(T) != T) or np.any(T < 0) or np.any(classes <= T):
            raise InvalidShapeError(
                f"class-index targets must be integers in [0, {classes}); got {T.tolist()}"
            )
    elif T.shape == (n, classes):
        if np.any(T < 0) or not np.allclose(T.sum(axis=1), 1.0, atol=1e-6):
            raise InvalidShapeError("probability targets must be non-negative rows summing to 1")
    else:
        raise InvalidShapeError(
            f"targets T{list(T.shape)} fit neither class indices ({n},) nor probabilities ({n}, {classes})"
        )


def _check_mlp_batch(a: Arrays, p: Params) -> None:
    X, W1, b1, W2, b2 = (a[k] for k in ("X", "W1", "b1", "W2", "b2"))
    if X.ndim != 2 or W1.shape != (b1.shape[0], X.shape[1]) or W2.shape != (b2.shape[0], b1.shape[0]):
        raise InvalidShapeError(
            "mlp-batch needs X (N, n), W1 (h, n), b1 (h,), W2 (m, h), b2 (m,); got "
            + ", ".join(f"{k}{list(a[k].shape)}" for k in ("X", "W1", "b1", "W2", "b2"))
        )
    _check_targets((X.shape[0], W2.shape[0]), a["T"], p)


def _check_logits(a: Arrays, p: Params) -> None:
    if a["Z"].ndim != 2:
        raise InvalidShapeError(f"logits must be (N, C); got Z{list(a['Z'].shape)}")
    _check_targets(a["Z"].shape, a["T"], p)


def _loss(ops: Any, z: Any, t: Any, p: Params) -> Any:
    return ops.cross_entropy(z, t, p.get("reduction", "mean"), float(p.get("label_smoothing", 0.0)))


def _mlp_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``J = CE(T, softmax(ReLU(X W1^T + b1) W2^T + b2))`` with the drawn reduction and smoothing."""
    hidden = ops.relu(ops.linear(a["X"], a["W1"], a["b1"]))
    return _loss(ops, ops.linear(hidden, a["W2"], a["b2"]), a["T"], p)


def _logits_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``J = CE(T, softmax(Z))``."""
    return _loss(ops, a["Z"], a["T"], p)


def _targets(a: Arrays, p: Params, z: np.ndarray) -> tuple[np.ndarray, float]:
    t = smoothed_targets(a["T"], z.shape[1], float(p.get("label_smoothing", 0.0)), z.dtype)
    return t, reduction_scale(p.get("reduction", "mean"), z.shape[0])


def _delta2(z: np.ndarray, t: np.ndarray, r: float, c: np.ndarray) -> np.ndarray:
    """Step A per row: ``delta2_n = c r (yhat_n sum_c t~_nc - t~_n)``."""
    yhat = np.exp(log_softmax_rows(z))
    return c * z.dtype.type(r) * (yhat * t.sum(axis=1, keepdims=True) - t)


def _grad_logits(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """Step A with a batch: ``dJ/dZ = r (softmax(Z) - T~)`` (r = 1/N under mean)."""
    t, r = _targets(a, p, a["Z"])
    return {"Z": _delta2(a["Z"], t, r, c)}


def _grad_mlp(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """Steps A-E summed over the batch: dW2 = Delta2^T H, db2 = sum Delta2, Delta1 = Delta2 W2 * 1(Z1 > 0),
    dW1 = Delta1^T X, db1 = sum Delta1, dX = Delta1 W1."""
    X, W1, W2 = a["X"], a["W1"], a["W2"]
    z1 = X @ W1.T + a["b1"]
    h = np.maximum(z1, 0)
    z2 = h @ W2.T + a["b2"]
    t, r = _targets(a, p, z2)
    d2 = _delta2(z2, t, r, c)  # A
    d1 = (d2 @ W2) * (z1 > 0)  # C, D
    return {
        "W2": d2.T @ h,  # B
        "b2": d2.sum(axis=0),
        "W1": d1.T @ X,  # E
        "b1": d1.sum(axis=0),
        "X": d1 @ W1,
    }


def _delta2_magnitude(z: np.ndarray, terms: np.ndarray, t: np.ndarray, r: float, c: np.ndarray) -> np.ndarray:
    """Terms of ``r (yhat - t~)`` per row: ``|c| r (yhat (1 + terms + max terms) + |t~|)``."""
    yhat = np.exp(log_softmax_rows(z))
    return np.abs(c) * r * (yhat * (1 + terms + terms.max(axis=1, keepdims=True)) + np.abs(t))


def _mlp_terms(a: Arrays) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    z1 = a["X"] @ a["W1"].T + a["b1"]
    mask = z1 > 0
    terms1 = np.abs(a["X"]) @ np.abs(a["W1"]).T + np.abs(a["b1"])
    h = np.maximum(z1, 0)
    terms2 = (terms1 * mask) @ np.abs(a["W2"]).T + np.abs(a["b2"])
    return h, mask, h @ a["W2"].T + a["b2"], terms2


def _mlp_magnitude(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """Steps A-E with every product in absolute value (the rounding-error scale)."""
    h, mask, z2, terms2 = _mlp_terms(a)
    t, r = _targets(a, p, z2)
    d2 = _delta2_magnitude(z2, terms2, t, r, c)
    d1 = (d2 @ np.abs(a["W2"])) * mask
    return {
        "W2": d2.T @ np.abs(h),
        "b2": d2.sum(axis=0),
        "W1": d1.T @ np.abs(a["X"]),
        "b1": d1.sum(axis=0),
        "X": d1 @ np.abs(a["W1"]),
    }


def _logits_magnitude(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    t, r = _targets(a, p, a["Z"])
    return {"Z": _delta2_magnitude(a["Z"], np.abs(a["Z"]), t, r, c)}


def _ce_magnitude(z: np.ndarray, terms: np.ndarray, t: np.ndarray, r: float) -> np.ndarray:
    """``r sum_n (max|z_n| + log C + sum_c |t~_nc| (1 + terms_nc))``: the terms of the batched loss."""
    per_row = np.abs(z).max(axis=1) + np.log(z.shape[1]) + (np.abs(t) * (1 + terms)).sum(axis=1)
    return np.asarray(r * per_row.sum())


def _mlp_forward_magnitude(a: Arrays, p: Params) -> np.ndarray:
    _, _, z2, terms2 = _mlp_terms(a)
    t, r = _targets(a, p, z2)
    return _ce_magnitude(z2, terms2, t, r)


def _logits_forward_magnitude(a: Arrays, p: Params) -> np.ndarray:
    t, r = _targets(a, p, a["Z"])
    return _ce_magnitude(a["Z"], np.abs(a["Z"]), t, r)


def _mlp_pattern(a: Arrays, p: Params) -> np.ndarray:
    return np.asarray(a["X"] @ a["W1"].T + a["b1"] > 0)


def _softmax_tangent(
    z: np.ndarray, dz: np.ndarray, t: np.ndarray, r: float, c: np.ndarray, ab: bool, terms: np.ndarray
) -> np.ndarray:
    """``c r S_n yhat_n * (dz_n - <yhat_n, dz_n>)`` per row (with ``ab``: the magnitude of its terms,
    yhat carrying the relative error of ``exp(z - max z)``)."""
    yhat = np.exp(log_softmax_rows(z))
    weight = t.sum(axis=1, keepdims=True)
    if ab:
        ym = yhat * (1 + terms + terms.max(axis=1, keepdims=True))
        inner = np.sum(ym * np.abs(dz), axis=1, keepdims=True)
        return np.asarray(np.abs(c) * r * np.abs(t).sum(axis=1, keepdims=True) * ym * (np.abs(dz) + inner))
    inner = np.sum(yhat * dz, axis=1, keepdims=True)
    return np.asarray(c * z.dtype.type(r) * weight * yhat * (dz - inner))


def _batch_tangent(a: Arrays, p: Params, t: Arrays, c: np.ndarray, ab: bool = False) -> dict[str, np.ndarray]:
    """The tangent pass and steps A-E differentiated along it (module docstring), for the
    whole network (``X`` in the inputs) or the logits alone (``Z``); ``J`` is ``J v`` (c = 1)."""

    def A(n: str) -> np.ndarray:
        return np.abs(a[n]) if ab else np.asarray(a[n])

    def T(n: str) -> np.ndarray:
        v = np.asarray(t[n]) if n in t else np.zeros_like(np.asarray(a[n]))
        return np.abs(v) if ab else v

    if "Z" in a:  # step A alone
        z = a["Z"]
        tt, r = _targets(a, p, z)
        dz = T("Z")
        d2 = _delta2_magnitude(z, np.abs(z), tt, r, c) if ab else _delta2(z, tt, r, c)
        return {"J": np.asarray(np.sum(d2 * dz)), "Z": _softmax_tangent(z, dz, tt, r, c, ab, np.abs(z))}
    h, mask, z2, terms2 = _mlp_terms(a)
    m = mask.astype(h.dtype)
    tt, r = _targets(a, p, z2)
    dz1 = T("X") @ A("W1").T + A("X") @ T("W1").T + T("b1")
    dh = m * dz1
    hh = np.abs(h) if ab else h
    dz2 = dh @ A("W2").T + hh @ T("W2").T + T("b2")
    d2 = _delta2_magnitude(z2, terms2, tt, r, c) if ab else _delta2(z2, tt, r, c)
    dd2 = _softmax_tangent(z2, dz2, tt, r, c, ab, terms2)
    d1 = m * (d2 @ A("W2"))
    dd1 = m * (dd2 @ A("W2") + d2 @ T("W2"))
    return {
        "J": np.asarray(np.sum(d2 * dz2)),
        "W2": dd2.T @ hh + d2.T @ dh,
        "b2": dd2.sum(axis=0),
        "W1": dd1.T @ A("X") + d1.T @ T("X"),
        "b1": dd1.sum(axis=0),
        "X": dd1 @ A("W1") + d1 @ T("W1"),
    }


def _jvp(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """Forward mode: ``J v = sum Delta2 * dZ2`` with ``dZ2`` from the tangent pass (module docstring)."""
    return np.asarray(_batch_tangent(a, p, t, np.asarray(1.0))["J"])


def _hvp(a: Arrays, p: Params, u: np.ndarray, t: Arrays) -> dict[str, np.ndarray]:
    """Second order of ``s = u J``: steps A-E differentiated along the tangent, ``d Delta2 =
    u r S_n yhat_n * (dz2_n - <yhat_n, dz2_n>)`` (module docstring)."""
    g = _batch_tangent(a, p, t, np.asarray(u))
    return {n: g[n] for n in t if n in g and n != "J"}


def _hvp_magnitude(a: Arrays, p: Params, u: np.ndarray, t: Arrays) -> dict[str, np.ndarray]:
    """The same pass with every product in absolute value (the rounding-error scale)."""
    g = _batch_tangent(a, p, t, np.asarray(u), ab=True)
    return {n: g[n] for n in t if n in g and n != "J"}


_SECOND_ORDER = (
    "the batched softmax cross-entropy's Hessian r S_n (diag(yhat_n) - yhat_n yhat_n^T) per row (r = 1/N "
    "under mean, the smoothed targets constant) carried through both layers; ReLU: f'' is 0 off the kink "
    f"(b1 keeps |Z1| >= {2 * S.KINK_MARGIN} on every row), so the mask is constant and a double backward "
    "through ReLU that is not zero fails; at Z1 = 0 not checked"
)


def _loss_params(p: L.Picker) -> dict[str, Any]:
    return {
        "target": p.one("target", TARGETS),
        "reduction": p.one("reduction", REDUCTIONS),
        "label_smoothing": p.one("label_smoothing", LABEL_SMOOTHING),
    }


def _draw_targets(rng: S.ValueSource, n: int, m: int, kind: str) -> np.ndarray:
    if kind == "index":
        return np.asarray(rng.integers(0, m, size=n), dtype=float)
    return np.stack([S.target_vector(rng, m, soft=True) for _ in range(n)])


def _mlp_config(p: L.Picker) -> L.Configuration:
    big = p.large()
    n_rows = L.LARGE_ROWS if big else p.one("N", L.BATCH_SIZES)
    n, h, m = p.one("n, h, m", L.LARGE_MLP, cover=False) if big else p.one("n, h, m", S.MLP_SHAPES)
    return {"rows": n_rows, "widths": (n, h, m), "params": _loss_params(p)}


def _mlp_values(draw: st.DrawFn, config: L.Configuration) -> S.Example:
    n_rows, (n, h, m), params = config["rows"], config["widths"], dict(config["params"])
    seed = draw(S.SEEDS)
    rng = S.values_for(draw, seed)
    X = S.uniform(rng, (n_rows, n), 1.0)
    W1 = S.uniform(rng, (h, n), 1.0)
    b1 = L.bias_between_kinks(X @ W1.T, S.uniform(rng, (h,), 0.5), 2 * S.KINK_MARGIN)
    W2 = S.uniform(rng, (m, h), 1.0)
    b2 = S.uniform(rng, (m,), 0.5)
    T = _draw_targets(rng, n_rows, m, params["target"])
    return S.Example({"X": X, "W1": W1, "b1": b1, "W2": W2, "b2": b2, "T": T}, params, seed)


def _logit_config(p: L.Picker) -> L.Configuration:
    big = p.large()
    n_rows = L.LARGE_ROWS if big else p.one("N", L.BATCH_SIZES)
    m = LARGE_CLASSES if big else p.one("C", S.dim_menu(2, 10))
    return {"rows": n_rows, "classes": m, "params": _loss_params(p)}


def _logit_values(draw: st.DrawFn, config: L.Configuration) -> S.Example:
    n_rows, m, params = config["rows"], config["classes"], dict(config["params"])
    seed, scale = draw(S.SEEDS), draw(S.SCALES)
    kind = draw(st.sampled_from(S.LOGIT_KINDS))
    rng = S.values_for(draw, seed)
    # large logits in half the examples (tails or a common shift per row, up to 100): a softmax
    # without the max subtracted overflows past 88.7 in float32
    Z = S.logit_tails(rng, S.uniform(rng, (n_rows, m), 2 * scale), 2 * scale, kind)
    return S.Example({"Z": Z, "T": _draw_targets(rng, n_rows, m, params["target"])}, params, seed)


_MLP_SPACE = L.ConfigSpace("mlp-batch", _mlp_config, _mlp_values)
_LOGIT_SPACE = L.ConfigSpace("cross-entropy-batch", _logit_config, _logit_values)


_PARAMETERS = (
    (
        "N",
        f"batch rows from {list(L.BATCH_SIZES)} (N=1 first; {L.LARGE_ROWS} with 20-68 wide layers, rarely)",
    ),
    ("target", f"{list(TARGETS)}: class indices (T (N,)) or class probabilities (T (N, C), dyadic rows)"),
    ("reduction", f"{list(REDUCTIONS)}: r = 1/N or 1"),
    ("label_smoothing", f"eps from {list(LABEL_SMOOTHING)}: t~ = (1 - eps) t + eps / C (PyTorch)"),
)
_NOTE = "ReLU at Z1 = 0 (left derivative 0, right derivative 1)"

RECORDS: tuple[Identity, ...] = (
    Identity(
        name="mlp-batch",
        source="notes:mlp",
        family="mlp-batch",
        formula=(
            "Z1 = X W1^T + b1, H = ReLU(Z1), Z2 = H W2^T + b2, J = r sum_n CE(t~_n, softmax(z2_n));  "
            "Delta2 = r (softmax(Z2) - T~), dW2 = Delta2^T H, db2 = sum_n delta2_n, "
            "Delta1 = (Delta2 W2) * 1(Z1 > 0), dW1 = Delta1^T X, db1 = sum_n delta1_n, dX = Delta1 W1"
        ),
        forward=_mlp_forward,
        wrt=("X", "W1", "b1", "W2", "b2"),
        reference_gradient=_grad_mlp,
        magnitude=_mlp_magnitude,
        forward_magnitude=_mlp_forward_magnitude,
        strategy=_MLP_SPACE.free,
        configurations=_MLP_SPACE,
        ops=frozenset({"linear", "relu", "cross_entropy"}),
        nondifferentiable=_NOTE,
        kink_policy=f"b1 chosen per hidden unit so that |Z1| >= {2 * S.KINK_MARGIN} on every row",
        smooth_pattern=_mlp_pattern,
        validate=_check_mlp_batch,
        parameters=_PARAMETERS,
        reference_jvp=_jvp,
        reference_hvp=_hvp,
        hvp_magnitude=_hvp_magnitude,
        second_order_note=_SECOND_ORDER,
        generalises=("notes:mlp", "notes:identity-5", "notes:identity-4"),
        derivation=(
            "steps A-E per row; the loss is r times the sum of the rows' losses, so delta2 gains the "
            "factor r (1/N under mean) and the shared W, b sum the per-row gradients over the batch"
        ),
    ),
    Identity(
        name="cross-entropy-batch",
        source="notes:mlp",
        family="mlp-batch",
        formula="Step A with a batch: J = r sum_n CE(t~_n, softmax(z_n));  dJ/dZ = r (softmax(Z) - T~)",
        forward=_logits_forward,
        wrt=("Z",),
        reference_gradient=_grad_logits,
        magnitude=_logits_magnitude,
        forward_magnitude=_logits_forward_magnitude,
        strategy=_LOGIT_SPACE.free,
        configurations=_LOGIT_SPACE,
        ops=frozenset({"cross_entropy"}),
        validate=_check_logits,
        parameters=_PARAMETERS,
        reference_jvp=_jvp,
        reference_hvp=_hvp,
        hvp_magnitude=_hvp_magnitude,
        second_order_note=(
            "the batched softmax cross-entropy's Hessian: (H v)_Z = u r S_n (diag(yhat_n) - yhat_n yhat_n^T) "
            "dz_n per row (r = 1/N under mean; label smoothing changes only the constant target)"
        ),
        generalises=("notes:mlp",),
        derivation=(
            "step A per row (yhat - y with y the smoothed target t~), times r = 1/N under mean; "
            "smoothing only changes the target: d/dz -sum t~ log softmax(z) = softmax(z) sum t~ - t~"
        ),
    ),
)
