"""The PyTorch and JAX adapters: ops semantics, dtypes, vjp/jvp, laziness, loading.

Expected values are plain NumPy written here from the semantics in :mod:`gradoracle.ops`
(not taken from :mod:`gradoracle.reference_ops`), so a wrong op in either place shows up.
Tests that need a framework skip, with a reason, when it is not installed.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import naive_layers as naive
import numpy as np
import pytest

from gradoracle.adapters import load_adapter
from gradoracle.ops import ALL_OPS

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("torch", "jax")
DTYPES = ("float64", "float32")
# float32 results are compared at float32 precision; float64 at (near) float64 precision.
RTOL = {"float64": 1e-12, "float32": 2e-5}
ATOL = {"float64": 1e-12, "float32": 2e-6}


# ------------------------------------------------------------------ NumPy semantics

_erf = np.vectorize(math.erf, otypes=[float])


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _np_correlate(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    kh, kw = k.shape
    out = np.zeros((x.shape[0] - kh + 1, x.shape[1] - kw + 1))
    for u in range(out.shape[0]):
        for v in range(out.shape[1]):
            out[u, v] = np.sum(x[u : u + kh, v : v + kw] * k)
    return out


def _np_pool(x: np.ndarray, k: int, s: int, reduce: Callable[[np.ndarray], float]) -> np.ndarray:
    ho, wo = (x.shape[0] - k) // s + 1, (x.shape[1] - k) // s + 1
    out = np.zeros((ho, wo))
    for u in range(ho):
        for v in range(wo):
            out[u, v] = reduce(x[u * s : u * s + k, v * s : v * s + k])
    return out


_RNG = np.random.default_rng(1234)
# Elementwise inputs avoid 0 (kinks) and include values beyond softplus/elu thresholds' sides.
_X = np.array([-2.5, -1.0, -0.3, 0.2, 0.7, 1.9, 3.0])
_POS = np.array([0.1, 0.5, 1.0, 2.0, 7.5])
_A = _RNG.standard_normal((3, 4))
_B = _RNG.standard_normal((4, 2))
_V4 = _RNG.standard_normal(4)
_V3 = _RNG.standard_normal(3)
_LOGITS = np.array([0.5, -1.2, 2.0, 0.1])
_SOFT = np.array([0.25, 0.125, 0.5, 0.125])
# An asymmetric kernel: a convolution (flipped kernel) would give different numbers.
_IMG = _RNG.standard_normal((6, 7))
_KER = np.array([[1.0, 2.0, 0.0], [-1.0, 0.5, 3.0]])
_POOL_IMG = _RNG.permutation(35).reshape(5, 7).astype(float) / 7.0  # distinct values, no ties

# op -> list of (args, kwargs, expected); args are NumPy arrays or Python ints.
OP_CASES: dict[str, list[tuple[tuple[Any, ...], dict[str, Any], np.ndarray]]] = {
    "matmul": [
        ((_A, _V4), {}, np.array([sum(_A[i, j] * _V4[j] for j in range(4)) for i in range(3)])),
        ((_V3, _A), {}, np.array([sum(_V3[i] * _A[i, j] for i in range(3)) for j in range(4)])),
        ((_A, _B), {}, np.einsum("ij,jk->ik", _A, _B)),
    ],
    "add": [((_A, 2 * _A + 1), {}, 3 * _A + 1)],
    "relu": [((_X,), {}, np.where(_X > 0, _X, 0.0))],
    "leaky_relu": [((_X,), {}, np.where(_X > 0, _X, 0.01 * _X))],
    "sigmoid": [((_X,), {}, _np_sigmoid(_X))],
    "tanh": [((_X,), {}, np.tanh(_X))],
    "exp": [((_X,), {}, np.exp(_X))],
    "log": [((_POS,), {}, np.log(_POS))],
    "softplus": [((_X,), {}, np.log1p(np.exp(_X)))],
    "sin": [((_X,), {}, np.sin(_X))],
    "square": [((_X,), {}, _X * _X)],
    "abs": [((_X,), {}, np.abs(_X))],
    "elu": [((_X,), {}, np.where(_X > 0, _X, np.exp(_X) - 1.0))],
    "silu": [((_X,), {}, _X * _np_sigmoid(_X))],
    "gelu": [((_X,), {}, _X / 2 * (1 + _erf(_X / math.sqrt(2))))],
    "softmax_cross_entropy": [
        (
            (_LOGITS, _SOFT),
            {},
            np.array(-np.sum(_SOFT * np.log(np.exp(_LOGITS) / np.sum(np.exp(_LOGITS))))),
        ),
        ((_LOGITS, np.eye(4)[2]), {}, np.array(np.log(np.sum(np.exp(_LOGITS))) - _LOGITS[2])),
    ],
    "conv2d": [((_IMG, _KER), {}, _np_correlate(_IMG, _KER))],
    "max_pool2d": [
        ((_POOL_IMG, 2), {}, _np_pool(_POOL_IMG, 2, 2, np.max)),
        ((_POOL_IMG, 3), {"stride": 1}, _np_pool(_POOL_IMG, 3, 1, np.max)),
        ((_POOL_IMG, 2), {"stride": 3}, _np_pool(_POOL_IMG, 2, 3, np.max)),
    ],
    "avg_pool2d": [
        ((_POOL_IMG, 2), {}, _np_pool(_POOL_IMG, 2, 2, np.mean)),
        ((_POOL_IMG, 3), {"stride": 2}, _np_pool(_POOL_IMG, 3, 2, np.mean)),
    ],
    "sum": [((_A,), {}, np.array(np.sum(_A)))],
    "maximum_zero": [((_X,), {}, np.where(_X > 0, _X, 0.0))],
    "clamp_min_zero": [((_X,), {}, np.where(_X > 0, _X, 0.0))],
    # kinks (#13)
    "maximum": [((_X, _X[::-1].copy()), {}, np.maximum(_X, _X[::-1]))],
    "clamp": [((_X, -1.0, 0.5), {}, np.clip(_X, -1.0, 0.5))],
}

# ---- the layer ops (expected values: loops in tests/naive_layers.py)
_BX = _RNG.standard_normal((2, 3, 4))
_LW, _LB = _RNG.standard_normal((5, 4)), _RNG.standard_normal(5)
_Z = _RNG.standard_normal((3, 4))
_IDX = np.array([0.0, 3.0, 1.0])
_PROB = np.array([[0.25, 0.25, 0.5, 0.0], [0.125, 0.125, 0.25, 0.5], [1.0, 0.0, 0.0, 0.0]])
_C2 = _RNG.standard_normal((2, 4, 6, 7))
_K2 = _RNG.standard_normal((6, 2, 3, 2))  # groups 2: C_in 4 = 2 x 2, C_out 6
_KB = _RNG.standard_normal(6)
_C1, _K1 = _RNG.standard_normal((2, 3, 9)), _RNG.standard_normal((2, 3, 3))
_C3, _K3 = _RNG.standard_normal((1, 2, 4, 5, 3)), _RNG.standard_normal((2, 1, 2, 3, 2))
_P2 = (_RNG.permutation(2 * 2 * 7 * 6).reshape(2, 2, 7, 6) / 7.0) - 6.0  # distinct values

OP_CASES.update(
    {
        "linear": [((_BX, _LW, _LB), {}, naive.linear(_BX, _LW, _LB))],
        "dense": [((_BX, _LW.T, _LB), {}, naive.dense(_BX, _LW.T, _LB))],
        "cross_entropy": [
            ((_Z, _IDX, reduction, eps), {}, naive.cross_entropy(_Z, t, reduction, eps))
            for t in (_IDX,)
            for reduction in ("mean", "sum")
            for eps in (0.0, 0.2)
        ]
        + [((_Z, _PROB, "mean", 0.1), {}, naive.cross_entropy(_Z, _PROB, "mean", 0.1))],
        "conv_nd": [
            (
                (_C2, _K2, _KB, (2, 1), (1, 2), (1, 2), 2),
                {},
                naive.conv(_C2, _K2, _KB, (2, 1), (1, 2), (1, 2), 2),
            ),
            (
                (_C2, _K2, _KB, (1, 1), "same", (2, 1), 2),
                {},
                naive.conv(_C2, _K2, _KB, (1, 1), "same", (2, 1), 2),
            ),
            ((_C1, _K1, None, (3,), (0,), (2,), 1), {}, naive.conv(_C1, _K1, None, (3,), (0,), (2,), 1)),
            (
                (_C3, _K3, None, (1, 2, 1), (1, 0, 1), (1, 1, 2), 2),
                {},
                naive.conv(_C3, _K3, None, (1, 2, 1), (1, 0, 1), (1, 1, 2), 2),
            ),
        ],
        "max_pool_nd": [
            (
                (_P2, (3, 2), (2, 1), (1, 1), (1, 2), True),
                {},
                naive.pool(_P2, "max", (3, 2), (2, 1), (1, 1), (1, 2), True),
            ),
            (
                (_P2, (2, 2), (2, 2), (0, 0), (1, 1), False),
                {},
                naive.pool(_P2, "max", (2, 2), (2, 2), (0, 0), (1, 1), False),
            ),
        ],
        "avg_pool_nd": [
            (
                (_P2, (3, 2), (2, 3), (1, 1), ceil, cip),
                {},
                naive.pool(_P2, "avg", (3, 2), (2, 3), (1, 1), (1, 1), ceil, cip),
            )
            for ceil in (False, True)
            for cip in (False, True)
        ],
        "global_avg_pool": [((_C3,), {}, naive.global_avg(_C3)), ((_C1,), {}, naive.global_avg(_C1))],
    }
)


def test_every_op_has_a_case() -> None:
    assert set(OP_CASES) == set(ALL_OPS)


# ------------------------------------------------------------------ fixtures

_ADAPTERS: dict[str, Any] = {}


def _adapter(framework: str) -> Any:
    pytest.importorskip(framework)
    if framework not in _ADAPTERS:
        _ADAPTERS[framework] = load_adapter(framework)
    return _ADAPTERS[framework]


@pytest.fixture(params=FRAMEWORKS)
def adapter(request: pytest.FixtureRequest) -> Any:
    return _adapter(request.param)


@pytest.fixture(params=DTYPES)
def dtype(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _close(actual: np.ndarray, expected: np.ndarray, dtype: str) -> None:
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=ATOL[dtype])


# ------------------------------------------------------------------ ops semantics


@pytest.mark.parametrize("op", ALL_OPS)
def test_op_matches_numpy_semantics(adapter: Any, dtype: str, op: str) -> None:
    for args, kwargs, expected in OP_CASES[op]:
        arrays = {f"a{i}": a for i, a in enumerate(args) if isinstance(a, np.ndarray)}

        def fn(ops: Any, v: Any, args: tuple[Any, ...] = args, kwargs: dict[str, Any] = kwargs) -> Any:
            call = [v[f"a{i}"] if isinstance(a, np.ndarray) else a for i, a in enumerate(args)]
            return getattr(ops, op)(*call, **kwargs)

        out = adapter.forward(fn, arrays, dtype)
        assert isinstance(out, np.ndarray)
        assert out.dtype == np.dtype(dtype), f"{adapter.name} {op} returned {out.dtype}, asked for {dtype}"
        assert out.shape == expected.shape, f"{adapter.name} {op}: shape {out.shape} != {expected.shape}"
        _close(out, expected, dtype)


def test_supported_ops_are_all_ops(adapter: Any) -> None:
    assert adapter.supported_ops() == frozenset(ALL_OPS)
    assert adapter.available() == (True, "")


# ------------------------------------------------------------------ vjp / jvp


def _matvec(ops: Any, v: Any) -> Any:
    return ops.matmul(v["W"], v["x"])


_W = np.array([[1.0, 2.0, -1.0], [0.5, -3.0, 4.0]])
_x = np.array([2.0, -1.0, 0.5])
_u = np.array([3.0, -2.0])


def test_vjp_of_matvec_is_hand_known(adapter: Any, dtype: str) -> None:
    res = adapter.vjp(_matvec, {"W": _W, "x": _x}, ["W", "x"], _u, dtype)
    _close(res.output, np.array([-0.5, 6.0]), dtype)  # W x by hand
    # u^T W = [3*1 - 2*0.5, 3*2 + 2*3, -3 - 8] and u x^T (identity 5).
    _close(res.grads["x"], np.array([2.0, 12.0, -11.0]), dtype)
    _close(res.grads["W"], np.array([[6.0, -3.0, 1.5], [-4.0, 2.0, -1.0]]), dtype)
    assert set(res.grads) == {"W", "x"}
    for g in (res.output, *res.grads.values()):
        assert g.dtype == np.dtype(dtype)


def test_constants_get_no_gradient_entry(adapter: Any, dtype: str) -> None:
    res = adapter.vjp(_matvec, {"W": _W, "x": _x}, ["x"], _u, dtype)
    assert set(res.grads) == {"x"}
    _close(res.grads["x"], _u @ _W, dtype)
    empty = adapter.vjp(_matvec, {"W": _W, "x": _x}, [], _u, dtype)
    assert empty.grads == {}
    _close(empty.output, _W @ _x, dtype)


def test_vjp_of_scalar_output_takes_0d_cotangent(adapter: Any, dtype: str) -> None:
    def loss(ops: Any, v: Any) -> Any:
        return ops.softmax_cross_entropy(v["z"], v["y"])

    res = adapter.vjp(loss, {"z": _LOGITS, "y": _SOFT}, ["z"], np.array(2.0), dtype)
    assert res.output.shape == ()
    softmax = np.exp(_LOGITS) / np.sum(np.exp(_LOGITS))
    _close(res.grads["z"], 2.0 * (softmax - _SOFT), dtype)


def test_forward_returning_its_input(adapter: Any, dtype: str) -> None:
    def ident(ops: Any, v: Any) -> Any:
        return v["x"]

    res = adapter.vjp(ident, {"x": _x}, ["x"], _W[0], dtype)
    _close(res.output, _x, dtype)
    _close(res.grads["x"], _W[0], dtype)
    out, jv = adapter.jvp(ident, {"x": _x}, {"x": _W[1]}, dtype)
    _close(out, _x, dtype)
    _close(jv, _W[1], dtype)
    # Results are the caller's to mutate: they must not alias each other or the inputs.
    res.output[...] = 0
    res.grads["x"][...] = 0
    again = adapter.vjp(ident, {"x": _x}, ["x"], _W[0], dtype)
    _close(again.output, _x, dtype)


def test_unused_input_gets_zero_gradient(adapter: Any, dtype: str) -> None:
    def only_x(ops: Any, v: Any) -> Any:
        return ops.sum(ops.square(v["x"]))

    res = adapter.vjp(only_x, {"x": _x, "b": _V4}, ["x", "b"], np.array(1.0), dtype)
    _close(res.grads["x"], 2 * _x, dtype)
    assert res.grads["b"].shape == _V4.shape
    assert not np.any(res.grads["b"])


def test_cotangent_of_the_wrong_shape_is_an_error(adapter: Any) -> None:
    with pytest.raises(ValueError, match=r"cotangent shape \(3,\) != output shape \(2,\)"):
        adapter.vjp(_matvec, {"W": _W, "x": _x}, ["x"], np.ones(3), "float64")


def test_jvp_of_matvec_is_jacobian_times_tangent(adapter: Any, dtype: str) -> None:
    assert adapter.has_jvp
    dW = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, -1.0]])
    dx = np.array([1.0, 0.0, -2.0])
    out, jv = adapter.jvp(_matvec, {"W": _W, "x": _x}, {"W": dW, "x": dx}, dtype)
    _close(out, _W @ _x, dtype)
    _close(jv, dW @ _x + _W @ dx, dtype)  # product rule
    assert jv.dtype == np.dtype(dtype)
    # Only x moves: W is held constant.
    _, jv_x = adapter.jvp(_matvec, {"W": _W, "x": _x}, {"x": dx}, dtype)
    _close(jv_x, _W @ dx, dtype)


def test_vjp_and_jvp_agree_on_a_conv_pool_network(adapter: Any) -> None:
    """``<u, J v>`` from jvp equals ``<u^T J, v>`` from vjp (adjointness), float64."""

    def net(ops: Any, v: Any) -> Any:
        return ops.max_pool2d(ops.tanh(ops.conv2d(v["X"], v["K"])), 2)

    inputs = {"X": _IMG, "K": _KER}
    tangents = {"X": _RNG.standard_normal(_IMG.shape), "K": _RNG.standard_normal(_KER.shape)}
    out, jv = adapter.jvp(net, inputs, tangents, "float64")
    u = _RNG.standard_normal(out.shape)
    res = adapter.vjp(net, inputs, ["X", "K"], u, "float64")
    lhs = float(np.sum(u * jv))
    rhs = sum(float(np.sum(res.grads[k] * tangents[k])) for k in tangents)
    assert lhs == pytest.approx(rhs, rel=1e-10)


# ------------------------------------------------------------------ loading & laziness


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_modules_import_neither_framework() -> None:
    code = (
        "import sys, gradoracle.adapters.torch_adapter, gradoracle.adapters.jax_adapter\n"
        "from gradoracle.adapters import load_adapter\n"
        "load_adapter('torch'), load_adapter('jax')\n"
        "bad = sorted(m for m in ('torch', 'jax', 'jaxlib') if m in sys.modules)\n"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    done = _run_python(code)
    assert done.returncode == 0, (
        f"importing/loading the adapters imported {done.stdout.strip()} {done.stderr}"
    )


def test_missing_framework_is_reported_by_available() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['jax'] = None  # makes 'import torch' fail\n"
        "from gradoracle.adapters import load_adapter\n"
        "for name in ('torch', 'jax'):\n"
        "    ok, why = load_adapter(name).available()\n"
        "    assert not ok and f'gradoracle[{name}]' in why, (name, ok, why)\n"
    )
    done = _run_python(code)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_load_adapter_by_short_name(framework: str) -> None:
    pytest.importorskip(framework)
    adapter = load_adapter(framework)
    assert adapter.name == framework
    assert adapter.has_jvp
    assert adapter.dtypes == ("float64", "float32")
    assert type(adapter).__name__ == {"torch": "TorchAdapter", "jax": "JaxAdapter"}[framework]


def test_bad_options_are_rejected_with_the_fix() -> None:
    with pytest.raises(ValueError, match="device=cpu"):
        load_adapter("torch?device=gpu")
    with pytest.raises(ValueError, match="auto, always, never"):
        load_adapter("jax?jit=sometimes")


def test_a_class_that_needs_arguments_is_named_as_such_not_as_bad_options() -> None:
    from gradoracle.adapters import AdapterLoadError

    with pytest.raises(AdapterLoadError, match=r"cannot be constructed without arguments.*msg"):
        load_adapter("json:JSONDecodeError")
    with pytest.raises(AdapterLoadError, match=r"does not accept options \{'x': '1'\}"):
        load_adapter("numpy?x=1")  # with options given, the options are what is wrong


def test_torch_cuda_without_cuda_is_a_clear_error() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=r"CUDA is not available.*device=cpu"):
        load_adapter("torch?device=cuda")


def test_torch_device_option_is_used() -> None:
    pytest.importorskip("torch")
    adapter = load_adapter("torch?device=cpu")
    assert adapter.from_numpy(_x, "float64").device.type == "cpu"


# ------------------------------------------------------------------ JAX specifics


def test_jax_float64_is_scoped_not_global() -> None:
    jnp = pytest.importorskip("jax.numpy")
    adapter = _adapter("jax")
    tiny = np.array([1.0 + 2.0**-40])  # not representable in float32
    res = adapter.vjp(_matvec, {"W": np.eye(1), "x": tiny}, ["x"], np.ones(1), "float64")
    assert res.output.dtype == np.float64
    assert res.output[0] == tiny[0], "float64 path truncated to float32"
    assert jnp.zeros(1).dtype == jnp.float32, "the float64 vjp left jax_enable_x64 on globally"
    assert adapter.forward(_matvec, {"W": np.eye(1), "x": tiny}, "float32").dtype == np.float32


@pytest.mark.parametrize("mode", ["never", "always", "auto"])
def test_jax_jit_modes_agree_and_cache(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("jax")
    from gradoracle.adapters import jax_adapter
    from gradoracle.adapters.jax_adapter import JaxAdapter

    monkeypatch.setattr(jax_adapter, "AUTO_JIT_AFTER", {"vjp": 2, "jvp": 2, "forward": 3})
    adapter = JaxAdapter(jit=mode)
    jax_adapter.clear_cache(adapter)  # what earlier tests compiled for plain adapters
    for i in range(4):  # past the auto thresholds, so the compiled path runs too
        if mode == "auto" and i == 1:
            assert not adapter._compiled, "auto compiled before the threshold"
        res = adapter.vjp(_matvec, {"W": _W, "x": _x}, ["W", "x"], _u, "float64")
        _close(res.grads["x"], _u @ _W, "float64")
        _close(adapter.forward(_matvec, {"W": _W, "x": _x}, "float64"), _W @ _x, "float64")
    # Different values on a cached shape are not baked in.
    _close(adapter.forward(_matvec, {"W": 2 * _W, "x": _x}, "float64"), 2 * _W @ _x, "float64")
    assert (len(adapter._compiled) > 0) == (mode != "never")
    # A fresh plain adapter reuses what another plain one compiled (the same stock ops):
    # a report's checks, each with a fresh adapter, compile each program once per process.
    fresh = JaxAdapter(jit=mode)
    _close(fresh.forward(_matvec, {"W": _W, "x": _x}, "float64"), _W @ _x, "float64")
    assert set(fresh._compiled.values()) == set(adapter._compiled.values())

    # A subclass, or an instance whose ops were replaced, never sees what another adapter
    # compiled (the compiled code holds that adapter's ops): in auto mode its first call
    # counts from zero again.
    class Derived(JaxAdapter):
        pass

    replaced = JaxAdapter(jit=mode)
    replaced.ops = jax_adapter.JaxOps()
    replaced.ops.relu = lambda x: x  # type: ignore[method-assign]
    for other in (Derived(jit=mode), replaced):
        _close(other.forward(_matvec, {"W": _W, "x": _x}, "float64"), _W @ _x, "float64")
        assert (len(other._compiled) > 0) == (mode == "always")
        assert not set(other._compiled.values()) & set(adapter._compiled.values())
    jax_adapter.clear_cache(adapter)
    assert not adapter._compiled and not fresh._compiled


@pytest.mark.parametrize("wrong_first", [True, False])
def test_jax_adapters_never_share_compiled_functions(wrong_first: bool) -> None:
    """Issue 11 item 0: a JAX-derived adapter with a wrong ``custom_vjp`` sigmoid and the
    built-in one, in one process with the default jit policy, each give their own verdict."""
    pytest.importorskip("jax")
    from broken_adapters import WrongSigmoidJaxAdapter

    from gradoracle.adapters.jax_adapter import JaxAdapter
    from gradoracle.runner import CheckSettings, check

    settings = CheckSettings(examples=3, shrink=False)
    adapters = [WrongSigmoidJaxAdapter(), JaxAdapter()]
    assert all(a.jit == "auto" for a in adapters)
    verdicts = {}
    for adapter in adapters if wrong_first else adapters[::-1]:
        verdicts[adapter.name] = check("elementwise-sigmoid", adapter, "float64", settings).verdict
    assert verdicts == {"jax-wrong-sigmoid": "fail", "jax": "pass"}


def test_jax_auto_falls_back_to_eager_for_value_dependent_control_flow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jax = pytest.importorskip("jax")
    from gradoracle.adapters import jax_adapter
    from gradoracle.adapters.jax_adapter import JaxAdapter

    monkeypatch.setattr(jax_adapter, "AUTO_JIT_AFTER", {"vjp": 1, "jvp": 1, "forward": 1})

    def branchy(ops: Any, v: Any) -> Any:
        x = v["x"]
        return ops.square(x) if ops.sum(x) > 0 else ops.sin(x)  # bool(tracer): not traceable by jit

    auto = JaxAdapter(jit="auto")
    for sign in (1.0, -1.0, 1.0):
        x = sign * _x
        res = auto.vjp(branchy, {"x": x}, ["x"], np.ones(3), "float64")
        _close(res.grads["x"], 2 * x if x.sum() > 0 else np.cos(x), "float64")
        _close(auto.forward(branchy, {"x": x}, "float64"), x * x if x.sum() > 0 else np.sin(x), "float64")
    assert branchy in auto._untraceable
    with pytest.raises(jax.errors.ConcretizationTypeError):
        JaxAdapter(jit="always").forward(branchy, {"x": _x}, "float64")
