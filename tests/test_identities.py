"""The oracle proves itself: every closed form against finite differences, pinned examples,
and negative controls (a deliberately wrong closed form is rejected by the same check)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradoracle import finite_differences as fd
from gradoracle.identities import (
    IDENTITIES,
    SOURCES,
    Identity,
    InvalidShapeError,
    UnknownIdentityError,
    all_identities,
    get_identity,
    select_identities,
)
from gradoracle.reference_ops import correlate2d_valid
from gradoracle.strategies import KINK_MARGIN, NEAREST, Example

SELF_CHECK = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None
)
IDS = [i.name for i in all_identities()]
#: The notes' textbook identities (the layer identities, which generalise them, are proven with
#: projected finite differences in tests/test_layers.py: their full Jacobians would be large).
NOTES_IDS = [i.name for i in all_identities() if not i.generalises]


def fd_vjp(ident: Identity, ex: Example, u: np.ndarray) -> dict[str, np.ndarray]:
    """``u^T J`` from full central-difference Jacobians of the reference forward (float64)."""
    out = {}
    for name in ident.wrt:
        J = fd.jacobian(lambda a: ident.reference_forward(a, ex.params), ex.inputs, name, "float64")
        out[name] = (u.reshape(-1) @ J.reshape(u.size, -1)).reshape(ex.inputs[name].shape)
    return out


def straddles_kink(ident: Identity, ex: Example, name: str) -> np.ndarray:
    """Per element of ``inputs[name]``: whether a central difference along it crosses a kink.

    The strategies draw some inputs a few ulps off a kink (#13); a difference across the kink
    measures nothing, so the comparisons below leave those elements out (the runner does
    the same with its kink-safe steps).
    """
    x = np.asarray(ex.inputs[name])
    crosses = np.zeros(x.size, dtype=bool)
    if ident.smooth_pattern is None:
        return crosses.reshape(x.shape)
    base = ident.smooth_pattern(ex.inputs, ex.params)
    h = 2 * fd.step_size("float64", ex.inputs)
    for j in range(x.size):
        for t in (h, -h):
            moved = x.astype(np.float64).reshape(-1).copy()
            moved[j] += t
            inputs = {**ex.inputs, name: moved.reshape(x.shape)}
            crosses[j] |= not np.array_equal(ident.smooth_pattern(inputs, ex.params), base)
    return crosses.reshape(x.shape)


def self_check_error(ident: Identity, ex: Example) -> float:
    """Worst norm-wise relative error of the closed form against finite differences (where
    the differences do not cross a kink)."""
    out = ident.reference_forward(ex.inputs, ex.params)
    u = np.random.default_rng(ex.seed).uniform(-1, 1, size=out.shape)
    ref = ident.gradient(ex.inputs, ex.params, u)
    num = fd_vjp(ident, ex, u)
    worst = 0.0
    for name in ident.wrt:
        keep = ~straddles_kink(ident, ex, name)
        if not np.any(keep):
            continue
        scale = max(float(np.max(np.abs(num[name][keep]))), 1e-3)
        worst = max(worst, float(np.max(np.abs(ref[name][keep] - num[name][keep]))) / scale)
    return worst


# ------------------------------------------------------------------ the registry


def test_every_source_label_of_the_notes_is_encoded() -> None:
    assert {i.source for i in all_identities()} == set(SOURCES)
    assert len(SOURCES) == 11


def test_identity_4_covers_every_elementwise_function_of_the_issue() -> None:
    wanted = {
        "relu",
        "leaky_relu",
        "sigmoid",
        "tanh",
        "exp",
        "log",
        "softplus",
        "sin",
        "square",
        "abs",
        "elu",
        "silu",
        "gelu",
    }
    got = {next(iter(i.ops)) for i in all_identities() if i.source == "notes:identity-4"}
    assert got == wanted


def test_mlp_steps_a_to_e_are_identities_of_their_own() -> None:
    steps = [i.name for i in all_identities() if i.source == "notes:mlp" and not i.generalises]
    assert steps == [
        "mlp",
        "mlp-a-logits",
        "mlp-b-output-params",
        "mlp-c-hidden-activation",
        "mlp-d-relu-mask",
        "mlp-e-hidden-params",
    ]


def test_records_are_frozen_and_complete() -> None:
    for ident in all_identities():
        with pytest.raises(dataclasses.FrozenInstanceError):
            ident.name = "x"  # type: ignore[misc]
        assert ident.formula and ident.wrt and ident.nondifferentiable and ident.kink_policy
        assert ident.reference_gradient.__doc__, (
            f"{ident.name}: reference gradient needs its formula docstring"
        )


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(UnknownIdentityError, match="conv-input"):
        get_identity("conv-inptu")


def test_select_by_source_label_and_family() -> None:
    assert [i.name for i in select_identities(["notes:conv-input"])] == ["conv-input"]
    assert {i.name for i in select_identities(["pool"])} == {"max-pool", "avg-pool"}
    assert len(select_identities([])) == len(IDENTITIES)


# ------------------------------------------- closed forms against finite differences


@pytest.mark.parametrize("name", NOTES_IDS)
def test_reference_gradient_equals_finite_differences(name: str) -> None:
    ident = get_identity(name)

    @SELF_CHECK
    @given(ident.strategy())
    def prop(ex: Example) -> None:
        assert self_check_error(ident, ex) < 1e-6

    prop()


@pytest.mark.parametrize("name", [i.name for i in all_identities() if i.reference_jacobian is not None])
def test_full_jacobian_equals_finite_differences(name: str) -> None:
    ident = get_identity(name)

    @SELF_CHECK
    @given(ident.strategy())
    def prop(ex: Example) -> None:
        assert ident.reference_jacobian is not None
        J = ident.reference_jacobian(ex.inputs, ex.params)["x"]
        num = fd.jacobian(lambda a: ident.reference_forward(a, ex.params), ex.inputs, "x")
        assert J.shape == num.shape
        keep = ~straddles_kink(ident, ex, "x").reshape(-1)  # columns whose difference crosses no kink
        np.testing.assert_allclose(J[:, keep], num[:, keep], rtol=1e-7, atol=1e-7)

    prop()


SHAPE_CASES = [
    ("matvec-weight-grad", {"W": (1, 1), "x": (1,)}, {}),
    ("matvec-weight-grad", {"W": (2, 5), "x": (5,)}, {}),
    ("vecmat-weight-grad", {"x": (5,), "W": (5, 2)}, {}),
    ("vecmat-jacobian", {"x": (3,), "W": (3, 7)}, {}),
    ("conv-filter", {"X": (4, 4), "K": (4, 4)}, {}),  # kernel as large as the input
    ("conv-input", {"X": (4, 4), "K": (4, 4)}, {}),
    ("conv-input", {"X": (3, 7), "K": (2, 2)}, {}),
    ("conv-filter", {"X": (1, 1), "K": (1, 1)}, {}),
    ("avg-pool", {"X": (7, 5)}, {"k": 3}),
    ("avg-pool", {"X": (4, 4)}, {"k": 4}),
    ("avg-pool", {"X": (3, 3)}, {"k": 1}),
    ("max-pool", {"X": (9, 6)}, {"k": 2}),
    ("max-pool", {"X": (5, 5)}, {"k": 5}),
]


@pytest.mark.parametrize(("name", "shapes", "params"), SHAPE_CASES)
def test_varied_shapes(name: str, shapes: dict[str, tuple[int, ...]], params: dict[str, int]) -> None:
    rng = np.random.default_rng(7)
    inputs = {k: rng.uniform(-1, 1, size=s) for k, s in shapes.items()}
    if name == "max-pool":
        from gradoracle.strategies import separate_window_maxima

        inputs["X"] = separate_window_maxima(inputs["X"], params["k"])
    assert self_check_error(get_identity(name), Example(inputs, params, 3)) < 1e-6


# ------------------------------------------------------- hand-computed examples


def test_pinned_matvec_2x2() -> None:
    W, x, delta = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([5.0, 6.0]), np.array([1.0, -1.0])
    ident = get_identity("matvec-weight-grad")
    assert ident.reference_forward({"W": W, "x": x}).tolist() == [17.0, 39.0]
    g = ident.gradient({"W": W, "x": x}, {}, delta)
    assert g["W"].tolist() == [[5.0, 6.0], [-5.0, -6.0]]  # delta x^T
    assert g["x"].tolist() == [-2.0, -2.0]  # W^T delta
    jac = get_identity("matvec-jacobian").reference_jacobian
    assert jac is not None and jac({"W": W, "x": x}, {})["x"].tolist() == W.tolist()  # dz/dx = W


def test_pinned_vecmat() -> None:
    x, W, delta = (
        np.array([1.0, 2.0]),
        np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
        np.array([1.0, 0.0, -1.0]),
    )
    ident = get_identity("vecmat-weight-grad")
    assert ident.reference_forward({"W": W, "x": x}).tolist() == [9.0, 12.0, 15.0]
    g = ident.gradient({"W": W, "x": x}, {}, delta)
    assert g["W"].tolist() == [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0]]  # x^T delta
    assert g["x"].tolist() == [-2.0, -2.0]  # delta W^T
    jac = get_identity("vecmat-jacobian").reference_jacobian
    assert jac is not None and jac({"W": W, "x": x}, {})["x"].tolist() == W.T.tolist()  # dz/dx = W^T


def test_pinned_identity_and_elementwise() -> None:
    jac = get_identity("identity-jacobian").reference_jacobian
    assert jac is not None and jac({"x": np.zeros(3)}, {})["x"].tolist() == np.eye(3).tolist()
    x = np.array([-2.0, 0.5, 3.0])
    sig = get_identity("elementwise-sigmoid").gradient({"x": x}, {}, np.ones(3))["x"]
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(sig, s * (1 - s), rtol=1e-15)
    gelu = get_identity("elementwise-gelu").gradient({"x": np.array([1.0])}, {}, np.ones(1))["x"][0]
    phi = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert gelu == pytest.approx(phi + math.exp(-0.5) / math.sqrt(2 * math.pi), rel=1e-15)


def test_pinned_conv_3x3_with_2x2_kernel() -> None:
    X = np.arange(1.0, 10.0).reshape(3, 3)
    K = np.array([[1.0, 0.0], [0.0, -1.0]])
    delta = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert get_identity("conv-filter").reference_forward({"X": X, "K": K}).tolist() == [
        [-4.0, -4.0],
        [-4.0, -4.0],
    ]
    dK = get_identity("conv-filter").gradient({"X": X, "K": K}, {}, delta)["K"]
    assert dK.tolist() == [[37.0, 47.0], [67.0, 77.0]]  # X * delta
    dX = get_identity("conv-input").gradient({"X": X, "K": K}, {}, delta)["X"]
    assert dX.tolist() == [[1.0, 2.0, 0.0], [3.0, 3.0, -2.0], [0.0, -3.0, -4.0]]  # pad(delta) * rot180(K)


def test_pinned_max_pool_router() -> None:
    X = np.array([[1.0, 2, 5, 0], [3, 4, 1, 1], [0, 0, 2, 9], [7, 0, 3, 1]])
    delta = np.array([[10.0, 20.0], [30.0, 40.0]])
    dX = get_identity("max-pool").gradient({"X": X}, {"k": 2}, delta)["X"]
    expected = np.zeros((4, 4))
    expected[1, 1], expected[0, 2], expected[3, 0], expected[2, 3] = 10, 20, 30, 40
    assert dX.tolist() == expected.tolist()


def test_pinned_avg_pool_floor_mode_edges_get_zero() -> None:
    delta = np.array([[4.0, 8.0], [12.0, 16.0]])
    dX = get_identity("avg-pool").gradient({"X": np.zeros((5, 5))}, {"k": 2}, delta)["X"]
    expected = np.zeros((5, 5))
    expected[0:2, 0:2], expected[0:2, 2:4], expected[2:4, 0:2], expected[2:4, 2:4] = 1, 2, 3, 4  # delta / k^2
    assert dX.tolist() == expected.tolist()


def test_pinned_mlp_steps_a_to_e() -> None:
    a = {
        "x": np.array([1.0, -1.0]),
        "W1": np.eye(2),
        "b1": np.zeros(2),
        "W2": np.eye(2),
        "b2": np.zeros(2),
        "y": np.array([0.0, 1.0]),
    }
    s = math.e / (1 + math.e)  # softmax([1, 0])[0]
    g = get_identity("mlp").gradient(a, {}, np.array(1.0))
    np.testing.assert_allclose(g["b2"], [s, -s], rtol=1e-15)  # A, B: delta2 = yhat - y
    np.testing.assert_allclose(g["W2"], [[s, 0], [-s, 0]], rtol=1e-15)  # B: delta2 h^T, h = [1, 0]
    np.testing.assert_allclose(g["b1"], [s, 0], rtol=1e-15)  # C, D: W2^T delta2 masked by z1 = [1, -1] > 0
    np.testing.assert_allclose(g["W1"], [[s, -s], [0, 0]], rtol=1e-15)  # E: delta1 x^T
    np.testing.assert_allclose(g["x"], [s, 0], rtol=1e-15)
    assert get_identity("mlp").reference_forward(a).item() == pytest.approx(math.log(1 + math.e))


# ------------------------------------------------------------ negative controls


def _wrong(name: str, ref) -> Identity:  # type: ignore[no-untyped-def]
    return dataclasses.replace(get_identity(name), reference_gradient=ref)


WRONG_REFERENCES = {
    # identity 6 with dJ/dx = delta W instead of delta W^T (square W, so the shapes still fit)
    "W instead of W^T": ("vecmat-weight-grad", lambda a, p, d: {"W": np.outer(a["x"], d), "x": d @ a["W"]}),
    # identity 5 with dJ/dW = x delta^T instead of delta x^T (square W)
    "outer product reversed": (
        "matvec-weight-grad",
        lambda a, p, d: {"W": np.outer(a["x"], d), "x": a["W"].T @ d},
    ),
    "conv input gradient without rot180": (
        "conv-input",
        lambda a, p, d: {
            "X": correlate2d_valid(
                np.pad(d, ((a["K"].shape[0] - 1,) * 2, (a["K"].shape[1] - 1,) * 2)), a["K"]
            )
        },
    ),
    "avg pool divided by k instead of k^2": (
        "avg-pool",
        lambda a, p, d: {"X": get_identity("avg-pool").reference_gradient(a, p, d)["X"] * p["k"]},
    ),
    "softmax CE gradient forgot - y": (
        "mlp-a-logits",
        lambda a, p, d: {"z2": d * np.exp(a["z2"] - a["z2"].max()) / np.exp(a["z2"] - a["z2"].max()).sum()},
    ),
}


@pytest.mark.parametrize("bug", list(WRONG_REFERENCES))
def test_wrong_closed_form_is_rejected(bug: str) -> None:
    name, ref = WRONG_REFERENCES[bug]
    wrong = _wrong(name, ref)
    rng = np.random.default_rng(11)
    shapes = {
        "vecmat-weight-grad": {"x": (3,), "W": (3, 3)},
        "matvec-weight-grad": {"W": (3, 3), "x": (3,)},
        "conv-input": {"X": (5, 5), "K": (3, 3)},
        "avg-pool": {"X": (6, 6)},
        "mlp-a-logits": {"z2": (4,)},
    }[name]
    inputs = {k: rng.uniform(-1, 1, size=s) for k, s in shapes.items()}
    params = {"k": 2} if name == "avg-pool" else {}
    if name == "mlp-a-logits":
        inputs["y"] = np.array([0.0, 1.0, 0.0, 0.0])
    ex = Example(inputs, params, 5)
    assert self_check_error(get_identity(name), ex) < 1e-6  # the right closed form passes here
    assert self_check_error(wrong, ex) > 1e-2  # and the wrong one is rejected by the same check


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None, derandomize=True, database=None)
def test_wrong_rule_is_rejected_on_random_inputs_too(seed: int) -> None:
    """avg pool / k (not k^2) is off by a factor k >= 2 on every input with k >= 2."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 4))
    ex = Example({"X": rng.uniform(-1, 1, size=(k * 2, k * 2 + 1))}, {"k": k}, seed)
    assert (
        self_check_error(_wrong("avg-pool", WRONG_REFERENCES["avg pool divided by k instead of k^2"][1]), ex)
        > 0.4
    )


# -------------------------------------------------------------- strategies & kinks


@pytest.mark.parametrize("name", [i.name for i in all_identities() if i.smooth_pattern is not None])
def test_kink_inputs_are_never_at_a_kink(name: str) -> None:
    """Kinks are approached from both sides (down to 2^-124 away, #13) but never hit; computed
    pre-activations (W1 x + b1) keep their margin; ELU is smooth at 0 and drawn there too."""
    ident = get_identity(name)

    @SELF_CHECK
    @given(ident.strategy())
    def prop(ex: Example) -> None:
        if "x" in ex.inputs and ident.family == "elementwise" and ident.nondifferentiable != "none":
            assert np.min(np.abs(ex.inputs["x"])) >= NEAREST
        if "z1" in ex.inputs:
            assert np.min(np.abs(ex.inputs["z1"])) >= NEAREST
        if "W1" in ex.inputs and "x" in ex.inputs:
            z1 = ex.inputs["W1"] @ ex.inputs["x"] + ex.inputs["b1"]
            assert np.min(np.abs(z1)) >= 2 * KINK_MARGIN - 1e-9
        if ident.name == "max-pool":
            k = ex.params["k"]
            X = ex.inputs["X"]
            ho, wo = X.shape[0] // k, X.shape[1] // k
            if k > 1:
                win = np.sort(
                    X[: ho * k, : wo * k].reshape(ho, k, wo, k).transpose(0, 2, 1, 3).reshape(ho, wo, -1)
                )
                assert np.min(win[..., -1] - win[..., -2]) > 0  # close to a tie at most, never tied

    prop()


def test_soft_targets_sum_to_one_exactly_in_float32() -> None:
    from gradoracle.strategies import target_vector

    for seed in range(50):
        y = target_vector(np.random.default_rng(seed), 7, soft=True)
        assert y.astype(np.float32).sum(dtype=np.float32) == 1.0
        assert y.sum() == 1.0


# ---------------------------------------------------------------- shape errors


@pytest.mark.parametrize(
    ("name", "inputs", "params", "match"),
    [
        ("conv-input", {"X": np.zeros((3, 3)), "K": np.zeros((4, 4))}, {}, "larger than the 3x3 input"),
        ("max-pool", {"X": np.zeros((3, 5))}, {"k": 4}, "pool window 4x4 is larger"),
        ("avg-pool", {"X": np.zeros((3, 5))}, {"k": 0}, "positive integer"),
        ("matvec-weight-grad", {"W": np.zeros((2, 3)), "x": np.zeros(2)}, {}, "W of shape"),
    ],
)
def test_impossible_shapes_are_rejected_with_a_reason(
    name: str, inputs: dict, params: dict, match: str
) -> None:
    with pytest.raises(InvalidShapeError, match=match):
        get_identity(name).gradient(inputs, params, np.zeros(1))
