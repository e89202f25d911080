"""Nested inputs (pytrees) in the user checks: a parameter tree (a flax-style params dict, a list
of layers, a registered JAX pytree) is flattened into leaf inputs named by their paths
(``params.l2.W``, ``layers[1].b``), checked by the unchanged machinery, and rebuilt before each
call of the user's forward, vjp and reference.  Each passing check has a negative control: the
same tree with one leaf's backward 1% off fails, and the message names that leaf's path."""

from __future__ import annotations

import collections
from typing import Any, NamedTuple

import numpy as np
import pytest

from gradoracle import GradientMismatch, check_gradients, check_gradients_at
from gradoracle.pytree_inputs import flatten_inputs, is_nested
from gradoracle.user_checks import UserCheckError

pytest_plugins = ["pytester"]

PARAMS = {"l1": {"W": ("h", "n"), "b": ("h",)}, "l2": {"W": ("o", "h"), "b": ("o",)}}
INPUTS = {"params": PARAMS, "x": ("n",)}


def mlp(params: dict[str, Any], x: np.ndarray) -> np.ndarray:
    h = np.tanh(params["l1"]["W"] @ x + params["l1"]["b"])
    return params["l2"]["W"] @ h + params["l2"]["b"]


def _mlp_vjp(g: np.ndarray, params: dict[str, Any], x: np.ndarray, off: float) -> dict[str, Any]:
    """dJ/dW2 = g h^T, dJ/db2 = g, da = (W2^T g) (1 - h^2), dJ/dW1 = da x^T, dJ/db1 = da, dJ/dx = W1^T da."""
    h = np.tanh(params["l1"]["W"] @ x + params["l1"]["b"])
    da = (params["l2"]["W"].T @ g) * (1 - h**2)
    grads = {"l1": {"W": np.outer(da, x), "b": da}, "l2": {"W": off * np.outer(g, h), "b": g}}
    return {"params": grads, "x": params["l1"]["W"].T @ da}


def mlp_vjp(g: np.ndarray, params: dict[str, Any], x: np.ndarray) -> dict[str, Any]:
    return _mlp_vjp(g, params, x, 1.0)


def mlp_vjp_off(g: np.ndarray, params: dict[str, Any], x: np.ndarray) -> dict[str, Any]:
    return _mlp_vjp(g, params, x, 1.01)  # dJ/dW2 1% off


def _named_leaf(exc: GradientMismatch, leaf: str) -> bool:
    """The failure names ``leaf``: as the worst element's input, or in the leaf-by-leaf note."""
    return (exc.worst is not None and exc.worst.input == leaf) or f"{leaf} fails (" in str(exc)


# ---------------------------------------------------------------- NumPy vjp


def test_a_params_tree_passes_with_a_correct_backward_and_fails_naming_the_wrong_leaf() -> None:
    results = check_gradients(mlp, INPUTS, vjp=mlp_vjp, examples=6)
    assert [r.verdict.value for r in results] == ["pass"]
    with pytest.raises(GradientMismatch) as info:
        check_gradients(mlp, INPUTS, vjp=mlp_vjp_off, examples=6)
    assert _named_leaf(info.value, "params.l2.W"), str(info.value)
    assert "params.l1.W[" in str(info.value)  # the example line names every leaf with its shape


def test_the_repro_builds_the_nested_inputs_and_fails_the_same_way() -> None:
    with pytest.raises(GradientMismatch) as info:
        check_gradients(mlp, INPUTS, vjp=mlp_vjp_off, examples=6)
    repro = info.value.repro or ""
    assert "'params': {'l1': {'W': inputs['params.l1.W']" in repro, repro
    assert "wrt=('params', 'x')" in repro, repro
    with pytest.raises(GradientMismatch) as again:
        exec(repro, {})
    assert _named_leaf(again.value, "params.l2.W"), str(again.value)
    # the control: the same snippet with the correct backward passes
    exec(repro.replace("mlp_vjp_off", "mlp_vjp"), {})


def test_a_large_leaf_is_named_by_the_leaf_by_leaf_note() -> None:
    # 8 x 6 weights: the worst comparison is a random direction moving every leaf at once
    sizes = {"params": {"l1": {"W": (8, 6), "b": (8,)}, "l2": {"W": (3, 8), "b": (3,)}}, "x": (6,)}
    with pytest.raises(GradientMismatch) as info:
        check_gradients(mlp, sizes, vjp=mlp_vjp_off, examples=3)
    message = str(info.value)
    assert info.value.worst is not None and info.value.worst.input == "projection"
    assert "checked one subtree at a time, params.l2.W fails" in message, message
    assert "the other 4 match" in message
    check_gradients(mlp, sizes, vjp=mlp_vjp, examples=3)  # the control


def many(layers: list[dict[str, Any]], x: np.ndarray) -> np.ndarray:
    return sum(np.tanh(layer["w"] * x) for layer in layers)


def many_vjp_off(g: np.ndarray, layers: list[dict[str, Any]], x: np.ndarray) -> dict[str, Any]:
    """d/dw_i = g x (1 - tanh(w_i x)^2), d/dx = sum_i g w_i (1 - tanh(w_i x)^2); layers[29].w 1% off."""
    d = [g * (1 - np.tanh(layer["w"] * x) ** 2) for layer in layers]
    grads = [{"w": (1.01 if i == 29 else 1.0) * di * x} for i, di in enumerate(d)]
    return {"layers": grads, "x": sum(di * layer["w"] for di, layer in zip(d, layers, strict=True))}


def test_forty_layers_are_narrowed_to_the_wrong_leaf_by_halving() -> None:
    rng = np.random.default_rng(1)
    example = {"layers": [{"w": rng.uniform(-1, 1, 2)} for _ in range(40)], "x": rng.uniform(-1, 1, 2)}
    with pytest.raises(GradientMismatch) as info:  # one fixed example: no shrinking of 41 leaves
        check_gradients_at(many, example, vjp=many_vjp_off)
    message = str(info.value)
    assert "checked one subtree at a time, layers[29].w fails" in message, message
    assert "the other 40 match" in message, message


class Layer(NamedTuple):
    w: Any
    b: Any


def stack(layers: list[Layer], x: np.ndarray) -> np.ndarray:
    assert isinstance(layers, list) and all(type(la) is Layer for la in layers)  # rebuilt as given
    for layer in layers:
        x = np.tanh(layer.w @ x + layer.b)
    return x


def stack_vjp(g: np.ndarray, layers: list[Layer], x: np.ndarray, off: float = 1.0) -> dict[str, Any]:
    xs = [x]
    for layer in layers:
        xs.append(np.tanh(layer.w @ xs[-1] + layer.b))
    grads = []
    for i in reversed(range(len(layers))):
        da = g * (1 - xs[i + 1] ** 2)
        grads.append(Layer(np.outer(da, xs[i]), off * da if i == 0 else da))
        g = layers[i].w.T @ da
    return {"layers": grads[::-1], "x": g}


def test_a_list_of_namedtuples_with_wrt_a_leaf_path() -> None:
    inputs = {"layers": [Layer(("h", "n"), ("h",)), Layer((2, "h"), (2,))], "x": ("n",)}
    off = lambda g, layers, x: stack_vjp(g, layers, x, 1.01)  # noqa: E731  (layers[0].b off)
    check_gradients(stack, inputs, vjp=stack_vjp, examples=4, wrt=["layers[1].w", "x"])
    check_gradients(stack, inputs, vjp=off, examples=4, wrt=["layers[1].w", "x"])  # b not checked
    with pytest.raises(GradientMismatch) as info:
        check_gradients(stack, inputs, vjp=off, examples=4, wrt=["layers[0]"])
    assert _named_leaf(info.value, "layers[0].b"), str(info.value)
    assert "wrt=('layers[0].w', 'layers[0].b')" in (info.value.repro or "")


def test_a_reference_returns_the_nested_gradients() -> None:
    def reference(g: np.ndarray, params: dict[str, Any], x: np.ndarray) -> dict[str, Any]:
        return _mlp_vjp(g, params, x, 1.0)

    check_gradients(mlp, INPUTS, vjp=mlp_vjp, reference=reference, examples=4)
    with pytest.raises(GradientMismatch) as info:
        check_gradients(mlp, INPUTS, vjp=mlp_vjp_off, reference=reference, examples=4)
    assert _named_leaf(info.value, "params.l2.W"), str(info.value)


def test_container_types_and_key_order_are_kept() -> None:
    seen = []

    def f(p: Any, x: np.ndarray) -> np.ndarray:
        seen.append((type(p).__name__, list(p), type(p["t"]).__name__))
        return p["b"] * x + p["a"] * p["t"][0] + p["t"][1][0]

    p = collections.OrderedDict([("b", (3,)), ("a", (3,)), ("t", ((3,), [(3,)]))])
    check_gradients(f, {"p": p, "x": (3,)}, framework=None, vjp=_f_vjp, examples=2)
    assert seen and all(s == ("OrderedDict", ["b", "a", "t"], "tuple") for s in seen), seen[:2]


def _f_vjp(g: np.ndarray, p: Any, x: np.ndarray) -> dict[str, Any]:
    return {"p": {"b": g * x, "a": g * p["t"][0], "t": (g * p["a"], [g])}, "x": g * p["b"]}


def test_check_gradients_at_takes_a_nested_example() -> None:
    rng = np.random.default_rng(0)
    params = {
        "l1": {"W": rng.normal(size=(3, 2)), "b": rng.normal(size=3)},
        "l2": {"W": rng.normal(size=(1, 3)), "b": rng.normal(size=1)},
    }
    example = {"params": params, "x": rng.normal(size=2)}
    check_gradients_at(mlp, example, vjp=mlp_vjp)
    with pytest.raises(GradientMismatch) as info:
        check_gradients_at(mlp, example, vjp=mlp_vjp_off)
    assert _named_leaf(info.value, "params.l2.W"), str(info.value)


def test_an_in_place_write_into_a_leaf_names_its_path() -> None:
    def scaling(params: dict[str, Any], x: np.ndarray) -> np.ndarray:
        params["s"] *= 2
        return params["s"] * x

    with pytest.raises(GradientMismatch, match=r"changed its argument 'params\.s' in place"):
        check_gradients(scaling, {"params": {"s": (2,)}, "x": (2,)}, vjp=_scaling_vjp, examples=2)
    with pytest.raises(GradientMismatch, match=r"changed its argument 's' in place"):  # as a flat input
        check_gradients(lambda s, x: scaling({"s": s}, x), {"s": (2,), "x": (2,)}, vjp=_flat_vjp, examples=2)


def _scaling_vjp(g: np.ndarray, params: dict[str, Any], x: np.ndarray) -> dict[str, Any]:
    return {"params": {"s": g * x}, "x": g * params["s"]}


def _flat_vjp(g: np.ndarray, s: np.ndarray, x: np.ndarray) -> dict[str, Any]:
    return {"s": g * x, "x": g * s}


# ---------------------------------------------------------------- flat inputs stay flat


def test_flat_inputs_are_not_trees() -> None:
    flat = {"x": (3,), "W": ("n", "m"), "v": [[1.0, 2.0], [3.0, 4.0]], "s": [np.ones(3), np.ones(3)]}
    assert flatten_inputs(flat) is None
    assert not any(is_nested(v) for v in [(3,), [1, 2], ((3, 4), (4, 2)), np.ones(3), 2.0, ("n", None)])
    # the controls: what is a structure
    assert all(is_nested(v) for v in [{"a": (3,)}, [(3, 4), (4,)], [{"w": (2,)}], [("n",), (3,)]])
    tree = flatten_inputs(
        {"p": {"Dense_0": {"kernel": (3, 4)}, "0.weight": (2,)}, "layers": [{"w": (2,)}, 7]}
    )
    assert tree is not None
    assert list(tree.specs) == ["p.Dense_0.kernel", "p['0.weight']", "layers[0].w", "layers[1]"]


def test_a_nested_numpy_check_imports_neither_framework() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, numpy as np\n"
        "from gradoracle import check_gradients\n"
        "f = lambda p, x: p['a'][0] * x\n"
        "check_gradients(f, {'p': {'a': [(2,)]}, 'x': (2,)}, examples=2,\n"
        "                vjp=lambda g, p, x: {'p': {'a': [g * x]}, 'x': g * p['a'][0]})\n"
        "print(sorted(m for m in ('torch', 'jax') if m in sys.modules))"
    )
    here = Path(__file__).resolve().parent
    done = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


# ---------------------------------------------------------------- errors that say what to do


@pytest.mark.parametrize(
    ("inputs", "params", "words"),
    [
        ({"p": {}, "x": (2,)}, None, r"input 'p' \(inputs\['p'\]\) is an empty dict"),
        ({"p": {"a": (2,), "b": []}}, None, r"input 'p.b' \(inputs\['p'\]\['b'\]\) is an empty list"),
        ({"p": {"a": (2,), "b": None}}, None, r"input 'p.b' \(inputs\['p'\]\['b'\]\) is None"),
        ({"p": [{"a": (2,)}, "relu"]}, None, r"input 'p\[1\]' \(inputs\['p'\]\[1\]\) is a str \('relu'\)"),
        ({"p": {(1, 2): (2,)}}, None, r"input 'p' \(inputs\['p'\]\) has the key \(1, 2\) \(tuple\)"),
        ({"p.a": (2,), "p": {"a": (2,)}}, None, r"same name 'p.a': inputs\['p.a'\] and inputs\['p'\]\['a'\]"),
        (
            {"p": {"a": (2,)}},
            {"p.a": 1.0},
            r"leaf path 'p.a' \(inputs\['p'\]\['a'\]\) of a nested input is also",
        ),
        ({"p": {"a": (2,)}}, {"p": 1.0}, r"\['p'\] named both as inputs and as params"),
    ],
)
def test_unusable_trees_are_refused_naming_the_path(inputs: Any, params: Any, words: str) -> None:
    with pytest.raises(UserCheckError, match=words):
        check_gradients(lambda **kw: 0.0, inputs, params=params, vjp=lambda g, **kw: {}, examples=1)
    with pytest.raises(UserCheckError, match=words):
        check_gradients_at(lambda **kw: 0.0, inputs, params=params, vjp=lambda g, **kw: {})


def test_a_flat_input_keeps_its_message() -> None:  # the control of the cases above
    with pytest.raises(UserCheckError, match=r"^input 'p' is a NoneType: give a shape"):
        check_gradients(lambda p: 0.0, {"p": None}, vjp=lambda g, p: {}, examples=1)


def test_wrt_names_an_input_a_node_or_a_leaf() -> None:
    tree = flatten_inputs(INPUTS)
    assert tree is not None
    assert tree.expand_wrt(["params"]) == ("params.l1.W", "params.l1.b", "params.l2.W", "params.l2.b")
    assert tree.expand_wrt(["params.l2", "x"]) == ("params.l2.W", "params.l2.b", "x")
    assert tree.compress_wrt(tree.expand_wrt(["params", "x"])) == ("params", "x")
    assert tree.compress_wrt(("params.l2.W",)) == ("params.l2.W",)
    with pytest.raises(UserCheckError, match=r"wrt names \['params.l3'\] are not inputs nor paths"):
        check_gradients(mlp, INPUTS, vjp=mlp_vjp, wrt=["params.l3"], examples=1)


def _returning(grads: Any) -> Any:
    def vjp(g: np.ndarray, params: dict[str, Any], x: np.ndarray) -> Any:
        return {"params": grads(g, params, x), "x": params["W"].T @ g}

    return vjp


def _affine(params: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return params["W"] @ x + params["b"]


@pytest.mark.parametrize(
    ("grads", "words"),
    [
        (lambda g, p, x: {"W": np.outer(g, x)}, r"returned no gradient for \['params.b'\]"),
        (
            lambda g, p, x: {"W": np.outer(g, x), "b": g, "c": g},
            r"gradients for \['params.c'\], which is not a leaf",
        ),
        (lambda g, p, x: [np.outer(g, x), g], r"returned a list for 'params', not a mapping"),
        (lambda g, p, x: {"W": np.outer(g, x), "b": None}, r"returned None for 'params.b'"),
    ],
)
def test_a_backward_returning_another_structure_is_told_which_path(grads: Any, words: str) -> None:
    example = {"params": {"W": np.ones((2, 3)), "b": np.ones(2)}, "x": np.ones(3)}
    with pytest.raises(GradientMismatch, match=words):
        check_gradients_at(_affine, example, vjp=_returning(grads))
    # the control: the same structure as the input passes
    check_gradients_at(_affine, example, vjp=_returning(lambda g, p, x: {"W": np.outer(g, x), "b": g}))


def test_identity_and_hvp_say_why_nested_inputs_cannot_use_them() -> None:
    with pytest.raises(UserCheckError, match="identity= compares flat inputs"):
        check_gradients(mlp, INPUTS, vjp=mlp_vjp, identity="matvec-weight-grad", examples=1)
    pytest.importorskip("torch")
    with pytest.raises(UserCheckError, match="which nested inputs have none of"):
        check_gradients(mlp, INPUTS, framework="torch", modes="hvp", examples=1)


# ---------------------------------------------------------------- torch


def torch_mlp(params: dict[str, Any], x: Any) -> Any:
    import torch

    h = torch.tanh(params["l1"]["W"] @ x + params["l1"]["b"])
    return params["l2"]["W"] @ h + params["l2"]["b"]


def _torch_off_bias() -> Any:
    import torch

    class OffBias(torch.autograd.Function):
        """The identity on a bias, its backward and forward mode 1% off."""

        @staticmethod
        def forward(b: Any) -> Any:
            return b.clone()

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            pass

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            return 1.01 * g

        @staticmethod
        def jvp(ctx: Any, t: Any) -> Any:
            return 1.01 * t

    return OffBias


def test_torch_autodiff_of_a_params_tree_in_both_modes() -> None:
    torch = pytest.importorskip("torch")
    off = _torch_off_bias()

    def wrong(params: dict[str, Any], x: Any) -> Any:
        h = torch.tanh(params["l1"]["W"] @ x + off.apply(params["l1"]["b"]))
        return params["l2"]["W"] @ h + params["l2"]["b"]

    fixed = {"params": {"l1": {"W": (3, 2), "b": (3,)}, "l2": {"W": (2, 3), "b": (2,)}}, "x": (2,)}
    results = check_gradients(torch_mlp, fixed, framework="torch", examples=3, modes=("vjp", "jvp"))
    assert [r.verdict.value for r in results] == ["pass", "pass"]
    for mode in ("vjp", "jvp"):
        with pytest.raises(GradientMismatch) as info:
            check_gradients(wrong, fixed, framework="torch", examples=3, modes=mode)
        assert _named_leaf(info.value, "params.l1.b"), str(info.value)


def test_torch_functional_call_over_a_modules_parameters() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh(), torch.nn.Linear(2, 1)).double()
    params = {k: v.detach().numpy().copy() for k, v in model.named_parameters()}

    def f(params: dict[str, Any], x: Any) -> Any:
        assert all(isinstance(p, torch.Tensor) for p in params.values())  # the tree holds torch's tensors
        return torch.func.functional_call(model, params, (x,))

    check_gradients(f, {"params": params, "x": (3,)}, framework="torch", examples=2, wrt="params")
    off = _torch_off_bias()

    def wrong(params: dict[str, Any], x: Any) -> Any:
        return torch.func.functional_call(model, {**params, "2.bias": off.apply(params["2.bias"])}, (x,))

    with pytest.raises(GradientMismatch) as info:
        check_gradients(wrong, {"params": params, "x": (3,)}, framework="torch", examples=2, wrt="params")
    assert _named_leaf(info.value, "params['2.bias']"), str(info.value)


def test_the_adapters_second_order_reaches_the_tree() -> None:
    pytest.importorskip("torch")
    from gradoracle.user_checks import UserFunctionAdapter, _inner_adapter, user_identity

    def f(p: dict[str, Any]) -> Any:
        return (p["a"] ** 2) * p["b"][0]  # H v: d/da = 2 a b, d/db = a^2

    tree = flatten_inputs({"p": {"a": (2,), "b": [(2,)]}})
    assert tree is not None
    inner = _inner_adapter("torch", None)
    ident, user = user_identity(f, tree.specs, wrt=tuple(tree.specs), inner=inner, tree=tree)
    adapter = UserFunctionAdapter(user, inner)
    a, b, u = np.array([0.5, -1.0]), np.array([2.0, 3.0]), np.array([1.0, 1.0])
    va, vb = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    hv = adapter.hvp(
        lambda ops, arrays: ident.forward(ops, arrays, {}),
        {"p.a": a, "p.b[0]": b},
        ("p.a", "p.b[0]"),
        u,
        {"p.a": va, "p.b[0]": vb},
        "float64",
        adapter.hvp_methods[0],
    )
    # s = sum u a^2 b: ds/da = 2 u a b, ds/db = u a^2; H v = (2 u (b va + a vb), 2 u a va)
    np.testing.assert_allclose(hv["p.a"], 2 * u * (b * va + a * vb))
    np.testing.assert_allclose(hv["p.b[0]"], 2 * u * a * va)


# ---------------------------------------------------------------- jax


def test_jax_autodiff_of_a_registered_pytree() -> None:
    jax = pytest.importorskip("jax")
    import dataclasses

    import jax.numpy as jnp

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass
    class Dense:
        w: Any
        b: Any
        scale: Any  # None: an empty subtree (eqx.partition leaves None where no array is)

    @jax.custom_vjp
    def off(b: Any) -> Any:
        return b

    off.defvjp(lambda b: (b, None), lambda _, g: (1.01 * g,))

    def f(layer: Dense, x: Any) -> Any:
        assert type(layer) is Dense and layer.scale is None
        return jnp.tanh(layer.w @ x + layer.b)

    def wrong(layer: Dense, x: Any) -> Any:
        return jnp.tanh(layer.w @ x + off(layer.b))

    inputs = {"layer": Dense(w=(2, 3), b=(2,), scale=None), "x": (3,)}
    check_gradients(f, inputs, framework="jax", examples=2)
    with pytest.raises(GradientMismatch) as info:
        check_gradients(wrong, inputs, framework="jax", examples=2)
    assert _named_leaf(info.value, "layer.b"), str(info.value)
    # the repro asks for the pytree node's rebuilding; given it, the snippet fails the same way
    repro = info.value.repro or ""
    assert "'layer': rebuild_layer([inputs['layer.w'], inputs['layer.b'], None])" in repro, repro
    with pytest.raises(GradientMismatch) as again:
        exec(repro, {"wrong": wrong, "rebuild_layer": lambda children: Dense(*children)})
    assert _named_leaf(again.value, "layer.b"), str(again.value)


def test_a_function_in_a_registered_pytree_says_to_partition() -> None:
    jax = pytest.importorskip("jax")
    import dataclasses

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass
    class Block:  # callable, as an equinox module is
        w: Any
        act: Any

        def __call__(self, x: Any) -> Any:
            return self.act(self.w * x)

    with pytest.raises(
        UserCheckError, match=r"input 'block.act' \(inputs\['block'\].act\) is a function \(tanh\)"
    ):
        check_gradients(lambda block: 0.0, {"block": Block(w=(2,), act=np.tanh)}, framework="jax")
    tree = flatten_inputs({"block": Block(w=(2,), act=None)})  # the control: partitioned, None is kept
    assert tree is not None and list(tree.specs) == ["block.w"]
    assert tree.rebuild({"block.w": 1.0}) == {"block": Block(w=1.0, act=None)}


# ---------------------------------------------------------------- the pytest fixture


FIXTURE_TESTS = """
import numpy as np

PARAMS = {"l1": {"W": ("h", "n"), "b": ("h",)}, "l2": {"W": ("o", "h"), "b": ("o",)}}


def mlp(params, x):
    h = np.tanh(params["l1"]["W"] @ x + params["l1"]["b"])
    return params["l2"]["W"] @ h + params["l2"]["b"]


def backward(g, params, x, off=1.0):
    h = np.tanh(params["l1"]["W"] @ x + params["l1"]["b"])
    da = (params["l2"]["W"].T @ g) * (1 - h ** 2)
    return {"params": {"l1": {"W": np.outer(da, x), "b": off * da}, "l2": {"W": np.outer(g, h), "b": g}},
            "x": params["l1"]["W"].T @ da}


def test_correct(gradoracle):
    gradoracle.check(mlp, {"params": PARAMS, "x": ("n",)}, vjp=backward, examples=4)


def test_wrong(gradoracle):
    gradoracle.check(mlp, {"params": PARAMS, "x": ("n",)}, vjp=lambda g, params, x: backward(g, params, x, 1.01),
                     examples=4)
"""


def test_the_fixture_checks_a_params_tree(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_tree=FIXTURE_TESTS)
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "'params.l1.b'" in out or "params.l1.b fails" in out, out


def test_one_checked_tree_may_come_back_bare_or_wrapped() -> None:
    example = {"params": {"W": np.ones((2, 3)), "b": np.ones(2)}, "x": np.arange(3.0)}

    def bare(g: np.ndarray, params: dict[str, Any], x: np.ndarray) -> Any:
        return {"W": np.outer(g, x), "b": g}  # the gradient of params itself

    def wrapped(g: np.ndarray, params: dict[str, Any], x: np.ndarray) -> Any:
        return ({"W": np.outer(g, x), "b": g},)

    for vjp in (bare, wrapped, _returning(lambda g, p, x: {"W": np.outer(g, x), "b": g})):
        check_gradients_at(_affine, example, vjp=vjp, wrt="params")
    # the control: with x checked too, a bare tree is not read as params' gradient
    with pytest.raises(GradientMismatch, match=r"returned no gradient for \['params', 'x'\]"):
        check_gradients_at(_affine, example, vjp=bare)


def test_a_strategy_leaf_is_drawn() -> None:
    from hypothesis.extra.numpy import arrays

    positive = arrays(np.float64, (3,), elements={"min_value": 0.5, "max_value": 2.0})
    drawn: list[float] = []

    def f(p: dict[str, Any], x: np.ndarray) -> np.ndarray:
        drawn.append(float(np.min(p["s"])))
        return np.log(p["s"]) * x

    def vjp(g: np.ndarray, p: dict[str, Any], x: np.ndarray) -> dict[str, Any]:
        return {"p": {"s": g * x / p["s"]}, "x": g * np.log(p["s"])}

    check_gradients(f, {"p": {"s": positive}, "x": (3,)}, vjp=vjp, examples=3)
    assert drawn and min(drawn) > 0.49  # the leaf came from the strategy (finite differences step off it)
