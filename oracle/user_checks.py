"""Check your own function's gradients with the oracle's machinery.

A test in another repository checks a function of its own: its framework's autodiff (a
custom ``torch.autograd.Function``, a ``jax.custom_vjp``, any adapter) or a hand-written
backward, against central finite differences of its forward and, when the identity is in
the catalogue (``identity="max-pool"``) or the user supplies a closed form
(``reference=...``), against that analytic gradient, over Hypothesis-drawn inputs::

    def matvec(W, x):
        return W @ x

    def matvec_backward(g, W, x):  # dJ/dW = g x^T, dJ/dx = W^T g
        return {"W": np.outer(g, x), "x": W.T @ g}

    def test_matvec(gradoracle):  # the pytest fixture; or call check_gradients directly
        gradoracle.check(matvec, vjp=matvec_backward,
                         inputs={"W": ("n", "m"), "x": ("m",)}, identity="matvec-weight-grad")

Calling conventions (the names are the input names):

- ``forward(**inputs, **params) -> output``;
- ``vjp(cotangent, **inputs, **params) -> {name: u^T J}`` (or a tuple in ``wrt`` order, or
  one array when there is one input), ``u`` being ``cotangent``;
- ``reference(cotangent, **inputs, **params)``: the same, as a NumPy closed form.

Params a function does not take are not passed to it (the catalogue strategies carry
extra ones, such as ``soft_target``).  ``inputs`` maps each name to a shape (a tuple of ints or
strings naming a dimension drawn once per example: ``("n", "m")``), a fixed array, or a
Hypothesis strategy of arrays; or is one strategy of dicts; or is omitted with a catalogue
``identity``, whose own strategy (kept away from kinks) is then used.  A value may also be a
nested dict / list / tuple (a parameter tree; with JAX imported, any registered pytree) of
such specs: it is checked leaf by leaf, each leaf named by its path (``params.l1.W``,
``layers[1].b``), and rebuilt before every call; a ``vjp`` returns that input's gradient in
the same structure (:mod:`gradoracle.pytree_inputs`).

Internally this builds an ad-hoc :class:`gradoracle.identities.Identity` and an adapter that
wraps the user's function, and runs :func:`gradoracle.runner.check`: the failure message is the
suite's (worst element, the three values, the tolerance, the shrunk example), with a repro
snippet that calls :func:`check_gradients_at` on the failing example.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from gradoracle.adapters.base import AdapterBase, ForwardFn, VJPResult
from gradoracle.identities import Identity, InvalidShapeError, get_identity
from gradoracle.pytree_inputs import flatten_inputs
from gradoracle.reference_ops import REFERENCE_OPS
from gradoracle.results import (
    CheckResult,
    Fault,
    GradientMismatch,
    InputSpecError,
    Verdict,
    Words,
    WorstElement,
    brief_message,
)
from gradoracle.runner import (
    DTYPES,
    CheckSettings,
    ExampleOutcome,
    _fd_dtype,
    check,
    describe_outcome,
    evaluate_example,
    forward_of,
)
from gradoracle.strategies import SEEDS, Example, values_for
from gradoracle.text import safe_str
from gradoracle.tolerances import tolerance_for

__all__ = [
    "FrameworkUnavailableError",
    "GradOracle",
    "UserCheckError",
    "UserFunctionAdapter",
    "check_gradients",
    "check_gradients_at",
    "user_identity",
]

Shape = tuple[int | str, ...]
InputSpec = Any  # a shape, an int (a vector's length), an array, or a Hypothesis strategy of arrays

#: What an "oracle" fault says when the closed form is the user's own ``reference``.
USER_REFERENCE_FAULT = "your reference gradient, not the backward, is wrong"


class UserCheckError(InputSpecError):
    """A user check that cannot run as asked; the message says what to change."""


class FrameworkUnavailableError(RuntimeError):
    """The framework named by ``framework=`` is not installed here (the fixture skips)."""


# ----------------------------------------------------------------- the user's function


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    """``getattr(obj, name, default)`` that also gives ``default`` where reading the attribute
    raises something else than AttributeError (a callable whose ``__name__`` is a property that
    raises made the check raise it)."""
    try:
        return getattr(obj, name, default)
    except Exception:
        return default


def _accepted(fn: Callable[..., Any]) -> tuple[set[str] | None, bool]:
    """(keyword names ``fn`` accepts or None for ``**kwargs``, whether it takes a positional first)."""
    try:
        sig = inspect.signature(fn)
    except Exception:  # TypeError, ValueError; or an __eq__ / __signature__ that raises
        return None, True
    params = list(sig.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None, True
    names = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return names, bool(params)


def _label(fn: Callable[..., Any] | None, role: str = "forward") -> str:
    """A Python name for ``fn`` in generated code (``role`` for a lambda: forward, vjp, reference)."""
    name = _attr(fn, "__name__", None) or type(fn).__name__
    return role if name == "<lambda>" else str(name)


def example_database_key(*functions: Callable[..., Any] | None) -> str:
    """What tells one user check's example-database entry from another's: the running pytest
    test (``PYTEST_CURRENT_TEST``, parameters included) and where each function is defined.

    Without it every check of a lambda shared one entry, so a correct test replayed (and
    Hypothesis deleted) another test's saved failure.
    """
    import functools
    import os

    parts = [os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]]
    for fn in functions:
        while isinstance(fn, functools.partial):
            fn = fn.func
        code = _attr(fn, "__code__", None)
        where = f"{code.co_filename}:{code.co_firstlineno}" if code is not None else type(fn).__qualname__
        parts.append(f"{_attr(fn, '__qualname__', '')}@{where}")
    return "|".join(parts)


def display_name(fn: Callable[..., Any] | None) -> str:
    """How messages name a user's callable: ``matvec``, ``the lambda at test_mod.py:12``."""
    import functools
    import os

    while isinstance(fn, functools.partial):
        fn = fn.func
    name = _attr(fn, "__name__", None)
    if name == "<lambda>":
        code = _attr(fn, "__code__", None)
        if code is not None:
            return f"(lambda at {os.path.basename(code.co_filename)}:{code.co_firstlineno})"
        return "a lambda"
    if name is None:  # a callable instance (a torch.nn.Module, a class with __call__)
        return f"{type(fn).__name__}()"
    return str(name)


def _callable_instance(fn: Any) -> bool:
    """Whether ``fn`` is an instance called through its class's ``__call__`` (a
    ``torch.nn.Module``, an ``equinox.Module``), not a function, method, class or partial, nor a
    wrapper that carries its function's name (``jax.jit(f)``, ``jax.custom_vjp``)."""
    import functools

    # functions, methods, classes and builtins all carry a __name__; a partial does not
    named = _attr(fn, "__name__", None) is not None
    return callable(fn) and not named and not isinstance(fn, functools.partial)


def user_words(
    forward: Callable[..., Any],
    vjp: Callable[..., Any] | None,
    inner: Any,
    reference: Callable[..., Any] | None,
    identity: str | None,
) -> Words:
    """The words a user check's messages use: "your function f", "your backward f_backward"."""
    subject = f"your function {display_name(forward)}"
    if inner is None:
        backward = f"your backward {display_name(vjp)}"
        gradient, who = "your backward", backward
    else:
        framework = str(getattr(inner, "name", "framework"))
        backward = f"the {framework} backward of your function"
        gradient, who = f"{framework} gradient", f"{framework} autodiff"
    if reference is not None:
        ref = f"your reference {display_name(reference)}"
    elif identity is not None:
        ref = f"the notes' closed form of {identity}"
    else:
        ref = "finite differences"
    return Words(
        subject=subject,
        forward=subject,
        backward=backward,
        gradient=gradient,
        reference=ref,
        user_reference=reference is not None,
        who=who,
        self_forward=identity is None,
    )


def _positional_only(fn: Callable[..., Any], names: Sequence[str], leading: int) -> bool:
    """Whether ``fn`` takes the inputs by position only (``np.tanh``, ``lambda x, /: ...``):
    none of ``names`` is one of its keyword parameters, and it has positional-only slots (or
    ``*args``) for ``leading`` (the cotangent) plus all the inputs."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except Exception:  # TypeError, ValueError; or an __eq__ / __signature__ that raises
        return False
    keywords = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    if not names or any(n in keywords for n in names):
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    slots = [p for p in params if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    return len(slots) >= leading + len(names) and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params
    )


def _signature_known(fn: Callable[..., Any]) -> bool:
    """Whether Python can read ``fn``'s parameters (a C builtin such as ``torch.atan2`` has none)."""
    try:
        inspect.signature(fn)
    except Exception:  # TypeError, ValueError; or a hostile __signature__ that raises
        return False
    return True


#: Callables without a readable signature that took the inputs by position after a call by
#: keyword failed (:func:`_call_unsigned`), keyed with the number of leading arguments and the
#: inputs' names: later such calls go by position at once.  Bounded: such
#: callables are builtins, of which a session checks few.
_POSITIONAL_CALLABLES: dict[tuple[Any, int, tuple[str, ...]], bool] = {}
_POSITIONAL_CALLABLES_SIZE = 256


def _takes_positionally(fn: Callable[..., Any], leading: int, names: Sequence[str]) -> bool:
    if not _POSITIONAL_CALLABLES:
        return False
    try:
        return _POSITIONAL_CALLABLES.get((fn, leading, tuple(names)), False)
    except Exception:  # unhashable, or a __hash__ / __eq__ that raises
        return False


def _call_unsigned(
    fn: Callable[..., Any], args: tuple[Any, ...], a: Mapping[str, Any], extra: Mapping[str, Any]
) -> Any:
    """``fn(*args, **a, **extra)`` for a callable whose parameters cannot be read; where that
    raises TypeError (``torch.atan2(y=..., x=...)``: its parameters are ``input`` and ``other``),
    ``fn(*args, *a.values(), **extra)``, the inputs in their order, as for ``np.tanh``.  When both
    fail, a TypeError that says what was tried and how to name the inputs."""
    try:
        return fn(*args, **{**a, **extra})
    except TypeError as by_keyword:
        try:
            out = fn(*args, *a.values(), **extra)
        except Exception as by_position:
            label = _label(fn)
            names = [*(["u"] if args else []), *a]
            raised = [f"{type(e).__name__}: {safe_str(e)}" for e in (by_keyword, by_position)]
            raise TypeError(
                f"{label} could not be called with the inputs: Python cannot read its parameters, so "
                f"gradoracle called it by keyword, {label}({', '.join(f'{n}=...' for n in names)}), "
                f"which raised {raised[0]}, and by position in the inputs' order, "
                f"{label}({', '.join(names)}), which raised {raised[1]}. Name "
                f"the inputs after {label}'s parameters, or pass a lambda that takes "
                f"{', '.join(names)} and calls {label} as it expects"
            ) from by_keyword
        try:
            if len(_POSITIONAL_CALLABLES) >= _POSITIONAL_CALLABLES_SIZE:
                _POSITIONAL_CALLABLES.pop(next(iter(_POSITIONAL_CALLABLES)))
            _POSITIONAL_CALLABLES[(fn, len(args), tuple(a))] = True
        except Exception:  # unhashable (or a hash that raises): tried by keyword first every time
            pass
        return out


@dataclass(frozen=True)
class _UserCallables:
    """The user's forward / vjp / reference and how to call them."""

    forward: Callable[..., Any]
    vjp: Callable[..., Any] | None
    reference: Callable[..., Any] | None
    wrt: tuple[str, ...]
    #: the caller's recursion limit when the check began: Hypothesis lowers it to its own
    #: stack depth + 2000 while a test runs, and a function that recursed fine in the
    #: caller's process raised RecursionError inside the check
    recursion_limit: int = 0
    #: the nested inputs' structure (:class:`gradoracle.pytree_inputs.InputTree`), rebuilt from
    #: the flat leaves before every call; None for flat inputs
    tree: Any = None

    def _call(
        self, fn: Callable[..., Any], args: tuple[Any, ...], a: Mapping[str, Any], p: Mapping[str, Any]
    ) -> Any:
        import sys

        if self.tree is not None:  # the nested inputs, holding this call's leaves
            a = self.tree.rebuild(a)
        names, _ = _accepted(fn)
        extra = {k: v for k, v in p.items() if names is None or k in names}
        positional = _positional_only(fn, list(a), len(args))  # np.tanh: the inputs in their order
        lowered = sys.getrecursionlimit()
        if self.recursion_limit > lowered:
            sys.setrecursionlimit(self.recursion_limit)
        try:
            if positional:
                return fn(*args, *a.values(), **extra)
            if not a or names is not None or _signature_known(fn):  # names: its signature was read
                return fn(*args, **{**a, **extra})
            if _takes_positionally(fn, len(args), list(a)):
                return fn(*args, *a.values(), **extra)
            return _call_unsigned(fn, args, a, extra)
        finally:
            if self.recursion_limit > lowered:
                sys.setrecursionlimit(lowered)

    def run_forward(self, a: Mapping[str, Any], p: Mapping[str, Any]) -> Any:
        return self._call(self.forward, (), a, p)

    def grads(
        self, fn: Callable[..., Any], u: Any, a: Mapping[str, Any], p: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Call a vjp-like ``fn(u, **a, **p)`` and normalise its answer to ``{name: grad}``."""
        out = self._call(fn, (u,), a, p)
        role = "your reference" if fn is self.reference else "your backward"
        what = f"{role} {display_name(fn)}"
        tree = self.tree
        wrt = tuple(tree.wrt_tops(self.wrt)) if tree is not None else self.wrt
        if tree is not None and len(wrt) == 1 and tree.roots[wrt[0]].kind != "leaf":
            picked = {wrt[0]: _one_tree(out, wrt[0], tree.roots[wrt[0]])}
        elif isinstance(out, Mapping):
            missing = [n for n in wrt if n not in out]
            if missing:
                raise UserCheckError(
                    f"{what} returned no gradient for {missing}; it returned {sorted(map(str, out))}. "
                    f"Return a dict with one gradient per input {list(wrt)}"
                )
            picked = {n: out[n] for n in wrt}
        elif isinstance(out, tuple | list) and (len(wrt) > 1 or len(out) == 1):
            if len(out) != len(wrt):
                raise UserCheckError(
                    f"{what} returned {len(out)} gradients for {len(wrt)} inputs {list(wrt)}; "
                    "return a dict {name: gradient} or a tuple in that order"
                )
            picked = dict(zip(wrt, out, strict=True))
        elif len(wrt) == 1:
            picked = {wrt[0]: out}
        else:
            raise UserCheckError(
                f"{what} returned one {type(out).__name__} for {len(wrt)} inputs {list(wrt)}; "
                "return a dict {name: gradient}"
            )
        if tree is not None:  # each nested input's gradient, leaf by leaf
            leaves: dict[str, Any] = {}
            for n, g in picked.items():
                leaves.update(tree.gradients(n, g, self.wrt, what))
            picked = leaves
        return {n: user_value(g, what, f" for {n!r}") for n, g in picked.items()}


def _one_tree(out: Any, name: str, root: Any) -> Any:
    """The gradient of the one nested input ``name`` checked, from what a backward returned:
    ``{name: tree}``, ``(tree,)``, or the tree itself (when the input's own structure is not
    read that way: a dict input that has a key ``name``, a tuple input of one item)."""
    if isinstance(out, Mapping) and name in out and not (root.kind == "mapping" and name in root.keys):
        return out[name]
    if (
        isinstance(out, tuple | list)
        and len(out) == 1
        and not (root.kind == "sequence" and len(root.keys) == 1)
    ):
        return out[0]
    return out


def user_value(value: Any, who: str, what: str = "") -> np.ndarray:
    """What a user's function or backward returned, as a real NumPy array (its dtype kept).

    Framework tensors are taken as NumPy (a torch tensor that requires grad is detached), a
    tuple or list of same-shaped arrays is stacked (``np.asarray``); anything else a gradient
    check cannot compare (None, a string, a dict, a generator, ragged or object arrays,
    booleans, complex numbers) is a :class:`UserCheckError` that says what came back and what
    to return instead.  ``who`` names the callable, ``what`` the gradient (``" for 'x'"``).
    """
    import types

    if value is None:
        raise UserCheckError(f"{who} returned None{what}: return a NumPy array (or a float)")
    if isinstance(value, str | bytes | Mapping | types.GeneratorType) or (
        not isinstance(value, np.ndarray | list | tuple)
        and hasattr(value, "__next__")
        and hasattr(value, "__iter__")
    ):
        hint = (
            "; a function with several outputs can return a tuple of same-shaped arrays, or "
            "np.concatenate([a.ravel(), b.ravel()])"
            if isinstance(value, Mapping)
            else ""
        )
        raise UserCheckError(
            f"{who} returned a {type(value).__name__}{what}: return a NumPy array (or a float){hint}"
        )
    if hasattr(value, "detach") and callable(value.detach):  # a torch tensor
        value = value.detach()
        value = value.cpu() if hasattr(value, "cpu") else value
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UserCheckError(
            f"{who} returned a {type(value).__name__}{what} that is not one array ({exc}); "
            "return a NumPy array (several outputs: same-shaped arrays in a tuple, or concatenated)"
        ) from None
    kind = arr.dtype.kind
    if kind in "fiu":
        return arr
    if kind == "c":
        raise UserCheckError(
            f"{who} returned complex values{what}: gradoracle checks real-valued functions and real "
            "gradients; return the real and imaginary parts as real arrays (np.stack([z.real, z.imag]))"
        )
    if kind == "b":
        raise UserCheckError(
            f"{who} returned booleans{what}: a gradient check needs real numbers (a comparison has no "
            "gradient); return a float array"
        )
    raise UserCheckError(
        f"{who} returned an array of {arr.dtype} ({type(value).__name__}){what}: return a NumPy array of "
        "floats (several outputs: same-shaped arrays in a tuple, or concatenated)"
    )


def framework_value(value: Any, inputs: Mapping[str, Any], who: str, inner: Any) -> Any:
    """What a user's function returned under a framework's autodiff, when it is one array.

    The framework's own array passes through untouched (its autodiff needs it); None, a
    string, a dict, a tuple or list, a generator, and NumPy values computed from the
    framework's arrays (which its autodiff cannot follow) are a :class:`UserCheckError`
    saying what to return instead.
    """
    import types

    framework = str(getattr(inner, "name", "the framework"))
    if value is None or isinstance(value, str | bytes | Mapping | tuple | list | types.GeneratorType):
        several = (
            f"; several outputs: stack same-shaped ones ({framework}'s stack) or concatenate their "
            "ravelled values"
            if isinstance(value, Mapping | tuple | list)
            else ""
        )
        if isinstance(value, tuple | list):  # values and their indices: the values alone, not stacked
            several = _integral_parts(value) or several
        shown = "None" if value is None else f"a {type(value).__name__}"
        raise UserCheckError(f"{who} returned {shown}: return one {framework} array{several}")
    given_numpy = all(isinstance(v, np.ndarray | np.generic) for v in inputs.values())
    if not given_numpy and isinstance(value, np.ndarray | np.generic | float | int):
        raise UserCheckError(
            f"{who} returned a {type(value).__name__} from {framework} arrays: {framework}'s autodiff "
            f"cannot follow NumPy (or Python number) computations; compute with {framework} operations "
            "and return the result"
        )
    return value


def _integral_parts(value: tuple[Any, ...] | list[Any]) -> str:
    """For a tuple or list of outputs holding integer or boolean arrays (the indices of
    ``max_pool2d(..., return_indices=True)``, ``torch.sort``, ``torch.topk``, ``torch.max(x, dim)``):
    which elements those are and which to return instead (integers have no gradient, so
    stacking them with the values is no answer); "" when every element is floating."""
    # a namedtuple's _fields; a structseq's (torch.return_types.sort) __match_args__, in order
    fields = getattr(value, "_fields", None) or getattr(type(value), "__match_args__", None)
    names = [str(f) for f in fields] if fields and len(fields) == len(value) else None

    def label(i: int) -> str:
        return f".{names[i]}" if names else f"[{i}]"

    integral, floating = [], []
    for i, part in enumerate(value):
        dtype = str(getattr(part, "dtype", ""))
        if "int" in dtype or "bool" in dtype:
            integral.append(f"{label(i)} ({dtype.removeprefix('torch.')})")
        elif "float" in dtype:
            floating.append(label(i))
    if not integral:
        return ""
    pick = f"return only {' or '.join(floating)}" if floating else "return a floating array"
    return (
        f"; it holds {', '.join(integral)}: integer and boolean arrays (indices, masks) have no "
        f"gradient, so {pick}"
    )


def unchanged(call: Callable[[], Any], arrays: Mapping[str, np.ndarray], who: str) -> Any:
    """``call()``, refusing a user callable that changed one of ``arrays`` in place.

    The check calls the function many times on the same arrays (and compares its forward
    with finite differences around them), so an in-place update (``x *= 2``) makes every
    later value wrong; this says so instead of reporting a wrong derivative.
    """
    before = {k: np.array(v, copy=True) for k, v in arrays.items()}
    result = call()
    for name, old in before.items():
        new = arrays[name]
        if not np.array_equal(old, new, equal_nan=True):
            where = np.argwhere(~((old == new) | (np.isnan(old) & np.isnan(new))))
            at = [int(i) for i in where[0]] if old.ndim and where.size else []
            index = tuple(at)
            raise UserCheckError(
                f"{who} changed its argument {name!r} in place ({name}{at} was {float(old[index]):.6g}, "
                f"is {float(new[index]):.6g}): compute on a copy (x = x.copy()) or without in-place "
                "operations (x = x * 2, not x *= 2)"
            )
    return result


def framework_unchanged(call: Callable[[], Any], arrays: Mapping[str, Any], who: str) -> Any:
    """``call()``, refusing a user function that wrote into one of its framework ``arrays``.

    Torch refuses in-place operations on a tensor that requires grad, but not writes through
    ``x.data`` or ``x.detach()`` (which share its memory): the forward then differentiates
    another function than finite differences see, and a correct autodiff was reported as "not
    the derivative".  Arrays that cannot be read as NumPy (torch's forward-mode dual tensors,
    JAX tracers, which are immutable anyway) are not compared.
    """
    before: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        detach = getattr(value, "detach", None)
        if not callable(detach):
            continue
        try:
            before[name] = np.array(detach().cpu().numpy(), copy=True)
        except Exception:  # a tensor without storage (forward-mode duals, functorch wrappers)
            continue
    result = call()
    for name, old in before.items():
        new = np.asarray(arrays[name].detach().cpu().numpy())
        if old.shape == new.shape and np.array_equal(old, new, equal_nan=True):
            continue
        changed = (
            np.argwhere(~((old == new) | (np.isnan(old) & np.isnan(new)))) if old.shape == new.shape else None
        )
        at = [int(i) for i in changed[0]] if changed is not None and old.ndim and changed.size else []
        index = tuple(at)
        values = (
            f" ({name}{at} was {float(old[index]):.6g}, is {float(new[index]):.6g})"
            if changed is not None
            else ""
        )
        raise UserCheckError(
            f"{who} changed its argument {name!r} in place{values}: writes through x.data or "
            "x.detach() change the input the autodiff differentiates; compute on a copy (x = x.clone()) "
            "or without in-place operations (x = x * 2, not x.data.mul_(2))"
        )
    return result


class _Recorder:
    """The "ops" handed to the user's forward on the NumPy path: it only records the params."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}


class UserFunctionAdapter(AdapterBase):
    """An adapter around a user's function: a hand-written NumPy ``vjp``, or a framework's autodiff.

    With ``inner`` (a framework adapter such as ``torch`` or ``jax``) the forward runs on
    that framework's arrays and ``u^T J`` comes from its autodiff; without, inputs are
    NumPy arrays and ``u^T J`` comes from the user's ``vjp``.
    """

    has_jvp = False

    def __init__(self, user: _UserCallables, inner: Any = None, identity: str | None = None) -> None:
        self.user = user
        self.inner = inner
        #: how messages name the function, its backward and its reference
        self.words = user_words(user.forward, user.vjp, inner, user.reference, identity)
        #: the check's own example-database entry (see :func:`example_database_key`)
        self.example_database_key = example_database_key(user.forward, user.vjp, user.reference)
        if inner is None:
            self.name = f"vjp:{_label(user.vjp)}"
            self.dtypes: tuple[str, ...] = DTYPES
        else:
            self.name = str(getattr(inner, "name", "framework"))
            self.dtypes = tuple(getattr(inner, "dtypes", DTYPES))
            # the framework's forward mode and second order, when it has them
            self.has_jvp = bool(getattr(inner, "has_jvp", False))
            self.hvp_methods = tuple(getattr(inner, "hvp_methods", ()) or ())

    def jvp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        tangents: Mapping[str, np.ndarray],
        dtype: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Output and ``J v`` from the framework's forward mode."""
        if self.inner is None or not self.has_jvp:
            return super().jvp(fn, inputs, tangents, dtype)
        out, jv = self.inner.jvp(fn, inputs, tangents, dtype)
        return np.asarray(out), np.asarray(jv)

    def hvp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        tangents: Mapping[str, np.ndarray],
        dtype: str,
        method: str,
    ) -> dict[str, np.ndarray]:
        """``H v`` from the framework's second order."""
        if self.inner is None or not self.hvp_methods:
            return super().hvp(fn, inputs, wrt, cotangent, tangents, dtype, method)
        return dict(self.inner.hvp(fn, inputs, wrt, cotangent, tangents, dtype, method))

    def available(self) -> tuple[bool, str]:
        """The framework's availability (NumPy: always)."""
        if self.inner is None:
            return True, ""
        ok, why = self.inner.available()
        return bool(ok), str(why)

    def supported_ops(self) -> frozenset[str]:
        """None of the catalogue's ops: the user's forward is called as a whole."""
        return frozenset()

    @property
    def ops(self) -> Any:
        return self.inner.ops if self.inner is not None else _Recorder()

    def _arrays(self, inputs: Mapping[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
        return {k: np.array(v, dtype=dtype) for k, v in inputs.items()}

    def forward(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        """The user's forward on ``inputs`` in ``dtype``, as NumPy."""
        if self.inner is not None:
            return np.asarray(self.inner.forward(fn, inputs, dtype))
        arrays = self._arrays(inputs, dtype)
        return user_value(
            unchanged(lambda: fn(_Recorder(), arrays), arrays, self.words.subject), self.words.subject
        )

    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        """Output and ``u^T J``: the framework's autodiff, or the user's ``vjp``."""
        if self.inner is not None:
            result: VJPResult = self.inner.vjp(fn, inputs, wrt, cotangent, dtype)
            return result
        assert self.user.vjp is not None  # guaranteed by check_gradients
        arrays = self._arrays(inputs, dtype)
        recorder = _Recorder()
        output = user_value(
            unchanged(lambda: fn(recorder, arrays), arrays, self.words.subject), self.words.subject
        )
        u = np.array(cotangent, dtype=dtype)
        vjp = self.user.vjp
        grads = unchanged(
            lambda: self.user.grads(vjp, u, arrays, recorder.params),
            {**arrays, "cotangent": u},
            self.words.who,
        )
        return VJPResult(output=output, grads={n: grads[n] for n in wrt})


# ----------------------------------------------------------------------- the identity


def _shape_of(name: str, spec: Any) -> Shape | None:
    """``spec`` as a shape (ints and dimension names), or None when it is not a shape."""
    if isinstance(spec, bool | np.bool_):
        return None
    if _is_dimension(spec):
        return (int(spec),)
    if isinstance(spec, tuple) and any(d is None for d in spec):
        raise UserCheckError(
            f"input {name!r}: shape {spec} has None; give each dimension as a size (3) or a name drawn "
            "by Hypothesis ('n'): ('n', 3)"
        )
    if isinstance(spec, tuple | list) and all(isinstance(d, str) or _is_dimension(d) for d in spec):
        if any(not isinstance(d, str) and d < 0 for d in spec):
            raise UserCheckError(f"input {name!r}: negative dimension in shape {tuple(spec)}")
        if any(isinstance(d, str) and not d.strip() for d in spec):
            raise UserCheckError(
                f"input {name!r}: an empty dimension name in shape {tuple(spec)}; name each drawn "
                "dimension (('n', 'm')) or give its size (3)"
            )
        if spec and all(not isinstance(d, str) for d in spec) and isinstance(spec, list):
            return None  # a list of ints is a (vector) value, not a shape; use a tuple for a shape
        return tuple(d if isinstance(d, str) else int(d) for d in spec)
    return None


def _is_dimension(d: Any) -> bool:
    """An integer size: Python's ``int`` or NumPy's integer scalars (``np.int64(3)`` from
    ``np.prod``), never a bool."""
    return isinstance(d, int | np.integer) and not isinstance(d, bool)


def fixed_array(name: str, value: Any) -> np.ndarray:
    """A fixed input value as a float64 array, or a :class:`UserCheckError` naming the input.

    Numbers, nested lists, and int / bool / float arrays of any layout are taken as float64;
    None, strings, complex values, masked arrays with masked elements and non-finite entries
    (finite differences need a finite neighbourhood) are refused with what to give instead.
    """
    if value is None or isinstance(value, str | bytes | Mapping):
        raise UserCheckError(
            f"input {name!r} is a {type(value).__name__}: give a shape such as (3,) or ('n',), an array "
            "(numbers, nested lists) or a Hypothesis strategy of arrays"
        )
    if hasattr(value, "detach") and callable(value.detach):  # a torch tensor
        value = value.detach()
        value = value.cpu() if hasattr(value, "cpu") else value
    if isinstance(value, np.ma.MaskedArray) and np.ma.is_masked(value):
        # np.asarray drops the mask: the masked elements' hidden values would be checked
        raise UserCheckError(
            f"input {name!r} is a masked array with {int(np.ma.count_masked(value))} masked "
            "element(s): gradoracle checks plain arrays, and the mask would be dropped (the hidden "
            "values checked); pass value.filled(fill) or the unmasked elements value.compressed()"
        )
    try:
        raw = np.asarray(value)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UserCheckError(f"input {name!r} is not an array of numbers ({exc})") from None
    if raw.dtype.kind == "c":
        raise UserCheckError(
            f"input {name!r} is complex: gradoracle checks real inputs; pass the real and imaginary "
            "parts as two real inputs"
        )
    if raw.dtype.kind not in "biuf":
        raise UserCheckError(
            f"input {name!r} holds {raw.dtype} values ({type(value).__name__}), not numbers: give an "
            "array of floats"
        )
    arr = raw.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        where = [int(i) for i in np.argwhere(~np.isfinite(arr))[0]]
        at = f" at {where}" if arr.ndim else ""
        value_text = arr[tuple(where)] if arr.ndim else arr
        raise UserCheckError(
            f"input {name!r} is not finite{at} ({value_text}): finite differences need finite inputs; "
            "give finite values (or a strategy with allow_nan=False, allow_infinity=False)"
        )
    return arr


def refuse_beyond_dtype(arrays: Mapping[str, np.ndarray], dtypes: Sequence[str], drawn: bool = False) -> None:
    """A :class:`UserCheckError` when an input is finite in float64 but not in a checked dtype:
    ``|x| > finfo(dtype).max`` (3.4e38 for float32) rounds to inf there, and the check would
    compare the function and its gradient at an infinite input (finite differences give nan:
    a correct backward failed as "not the derivative")."""
    for dtype in dtypes:
        largest = float(np.finfo(np.dtype(dtype)).max)
        for name, arr in arrays.items():
            with np.errstate(over="ignore"):
                bad = ~np.isfinite(np.asarray(arr, dtype=np.float64).astype(dtype)) & np.isfinite(arr)
            if not bad.any():
                continue
            at = [int(i) for i in np.argwhere(bad)[0]]
            value = float(np.asarray(arr)[tuple(at)])
            where = f"[{', '.join(map(str, at))}] " if at else ""
            source = "your strategy drew" if drawn else "input"
            raise UserCheckError(
                f"{source} {name!r} {where}= {value:.6g}, beyond {dtype}'s range (largest {largest:.3g}): "
                f"in {dtype} it is inf, and a gradient check needs finite inputs; keep the inputs "
                f"within +-{largest:.3g} for {dtype} (scale=, or a strategy with elements="
                f"st.floats(-{largest:.1g}, {largest:.1g})), or check only float64 (dtypes=('float64',))"
            )


#: float64 copies of an example's inputs a check holds at once (the master, the dtype's and
#: float32's copies, the directions, the finite-difference points, the gradients and their
#: closed form, the comparisons' temporaries): the factor of the memory guard below.
CHECK_COPIES = 16


def available_memory() -> int | None:
    """Bytes this process may still allocate: Linux's ``MemAvailable``, else the physical
    memory (``os.sysconf``), else ``None`` (unknown: the guard is off)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def refuse_huge(sizes: Mapping[str, int], where: str = "") -> None:
    """A :class:`UserCheckError` when ``CHECK_COPIES * 8 * sum(sizes)`` bytes (the float64 copies
    a check holds at once) exceed :func:`available_memory`: a check that cannot fit is refused
    before it allocates anything, instead of swapping the machine or being killed by it."""
    total = sum(int(n) for n in sizes.values())
    memory = available_memory()
    need = CHECK_COPIES * 8 * total
    if memory is None or need <= memory:
        return
    largest = max(sizes, key=lambda n: sizes[n])
    raise UserCheckError(
        f"the inputs hold {total:,} elements{where} (the largest, {largest!r}, {int(sizes[largest]):,}); "
        f"a check holds about {CHECK_COPIES} float64 copies of them at once ({need / 2**30:.1f} GiB), "
        f"more than this machine has available ({memory / 2**30:.1f} GiB): check smaller shapes "
        "(a wrong gradient shows at small sizes) or a smaller max_dim"
    )


def _drawn_array(name: str, value: Any) -> np.ndarray:
    """A value the user's strategy drew, as :func:`fixed_array` takes a fixed one: text, complex or
    non-finite values are a :class:`UserCheckError` naming the input and saying it was drawn."""
    try:
        return fixed_array(name, value)
    except UserCheckError as exc:
        raise UserCheckError(f"your strategy drew an unusable value: {exc}") from None


def _refuse_empty(shapes: Mapping[str, tuple[Any, ...]]) -> None:
    """Every input empty: any backward would pass, so refuse instead of passing vacuously."""
    listed = ", ".join(f"{n}: shape {tuple(sh)}" for n, sh in shapes.items())
    raise UserCheckError(
        f"every input is empty ({listed}): there is no gradient element to check, so any backward "
        "would pass; give inputs with at least one element"
    )


def check_arguments(
    forward: Any,
    vjp: Any = None,
    reference: Any = None,
    *,
    examples: Any = None,
    seed: Any = None,
    scale: Any = 1.0,
    max_dim: Any = 6,
) -> None:
    """A :class:`UserCheckError` for arguments that cannot work (before anything runs)."""
    for role, fn in (("forward", forward), ("vjp", vjp), ("reference", reference)):
        if fn is not None and not callable(fn):
            raise UserCheckError(f"{role} must be a function, got a {type(fn).__name__}: {fn!r:.60}")
    for label, value, low in (("examples", examples, 1), ("max_dim", max_dim, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer)):
            raise UserCheckError(f"{label} must be an integer, got {type(value).__name__} {value!r:.60}")
        if value is not None and value < low:
            raise UserCheckError(f"{label} must be a positive integer, got {value}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
        raise UserCheckError(f"seed must be an integer or None, got {type(seed).__name__} {seed!r:.60}")
    if isinstance(scale, bool) or not isinstance(scale, int | float | np.number):
        raise UserCheckError(f"scale must be a number, got {type(scale).__name__} {scale!r:.60}")
    if not (np.isfinite(scale) and 0 < scale <= 1e100):
        raise UserCheckError(
            f"scale must be a positive finite number up to 1e100 (the drawn values lie in "
            f"[-scale, scale]), got {scale}"
        )


def _input_strategy(
    inputs: Any,
    params: Mapping[str, Any],
    scale: float,
    max_dim: int,
    validate: Callable[[Mapping[str, np.ndarray], Mapping[str, Any]], None] | None,
    dtypes: Sequence[str] = (),
    required: Sequence[str] = (),
) -> st.SearchStrategy[Example]:
    """Examples drawn from the user's input spec (see the module docstring); every value drawn
    or fixed must be finite in each of ``dtypes`` (:func:`refuse_beyond_dtype`), and a strategy
    of dicts must draw each of the ``required`` names (``wrt``)."""
    if isinstance(inputs, st.SearchStrategy):
        whole: st.SearchStrategy[Any] | None = inputs
        specs: dict[str, Any] = {}
    elif isinstance(inputs, Mapping):
        whole = None
        specs = dict(inputs)
    else:
        raise UserCheckError(
            f"inputs must be a dict {{name: shape | array | strategy}} or a Hypothesis strategy of dicts, "
            f"not {type(inputs).__name__}"
        )
    shapes = {name: _shape_of(name, spec) for name, spec in specs.items()}
    fixed = {
        name: fixed_array(name, spec)
        for name, spec in specs.items()
        if shapes[name] is None and not isinstance(spec, st.SearchStrategy)
    }
    if clash := sorted(set(specs) & set(params)):
        raise UserCheckError(
            f"{clash} named both as inputs and as params: a param would replace the input; rename one"
        )
    refuse_beyond_dtype(fixed, dtypes)
    narrow = [d for d in dtypes if scale > float(np.finfo(np.dtype(d)).max)]
    if narrow and any(sh is not None for sh in shapes.values()):
        top = float(np.finfo(np.dtype(narrow[0])).max)
        raise UserCheckError(
            f"scale={scale:g} draws values beyond {narrow[0]}'s range (largest {top:.3g}), which are "
            f"inf in {narrow[0]}: give a scale up to {top:.3g}, or check only float64 "
            "(dtypes=('float64',))"
        )
    empty = {n: a.shape for n, a in fixed.items() if a.size == 0}
    empty.update({n: sh for n, sh in shapes.items() if sh is not None and 0 in sh})
    if specs and len(empty) == len(specs):
        _refuse_empty(empty)
    # the largest example these specs can draw: every named dimension at max_dim
    largest = {n: a.size for n, a in fixed.items()}
    largest.update(
        {
            n: math.prod(max_dim if isinstance(d, str) else int(d) for d in sh)
            for n, sh in shapes.items()
            if sh is not None
        }
    )
    refuse_huge(
        largest,
        " at the largest draw"
        if any(isinstance(d, str) for sh in shapes.values() if sh is not None for d in sh)
        else "",
    )

    @st.composite
    def draw_example(draw: st.DrawFn) -> Example:
        seed = draw(SEEDS)
        rng = values_for(draw, seed)  # values that shrink to small integers and halves
        dims: dict[str, int] = {}
        arrays: dict[str, np.ndarray] = {}
        if whole is not None:
            drawn = draw(whole)
            if not isinstance(drawn, Mapping):
                raise UserCheckError(
                    f"the inputs strategy drew a {type(drawn).__name__}, not a dict of arrays"
                )
            arrays = {str(k): _drawn_array(str(k), v) for k, v in drawn.items()}
            if missing := [n for n in required if n not in arrays]:
                raise UserCheckError(
                    f"your strategy of dicts drew the inputs {sorted(arrays)}, without {missing} named in "
                    "wrt=: draw every input the function takes (st.fixed_dictionaries({name: strategy}))"
                )
            refuse_beyond_dtype(arrays, dtypes, drawn=True)
        for name, spec in specs.items():
            shape = shapes[name]
            if shape is not None:
                concrete = []
                for d in shape:
                    if isinstance(d, str):
                        if d not in dims:
                            dims[d] = draw(st.integers(1, max_dim))
                        concrete.append(dims[d])
                    else:
                        concrete.append(d)
                # drawn on [-1, 1] and scaled: a grid over [-scale, scale] overflows at huge
                # scales and holds only 0 at tiny ones
                arrays[name] = scale * rng.uniform(-1.0, 1.0, size=tuple(concrete))
            elif name in fixed:
                arrays[name] = fixed[name]
            else:
                arrays[name] = _drawn_array(name, draw(spec))
                refuse_beyond_dtype({name: arrays[name]}, dtypes, drawn=True)
        p = {k: draw(v) if isinstance(v, st.SearchStrategy) else v for k, v in params.items()}
        if validate is not None:
            try:
                validate(arrays, p)
            except InvalidShapeError:
                assume(False)
        return Example(arrays, p, seed)

    return draw_example()


def _validate_fixed_shapes(
    validate: Callable[[Mapping[str, np.ndarray], Mapping[str, Any]], None],
    inputs: Mapping[str, Any],
    params: Mapping[str, Any],
) -> None:
    """Catalogue shape rules, up front, when no shape or param is drawn (else Hypothesis filters)."""
    shapes = {name: _shape_of(name, spec) for name, spec in inputs.items()}
    drawn = any(isinstance(v, st.SearchStrategy) for v in [*inputs.values(), *params.values()])
    if drawn or any(s is not None and any(isinstance(d, str) for d in s) for s in shapes.values()):
        return
    arrays = {
        name: np.zeros(tuple(int(d) for d in shape))
        if shape is not None
        else np.asarray(inputs[name], dtype=float)
        for name, shape in shapes.items()
    }
    try:
        validate(arrays, params)
    except InvalidShapeError as exc:
        raise UserCheckError(f"these inputs cannot be used with the identity: {exc}") from exc
    except KeyError as exc:
        raise UserCheckError(f"the identity also needs the input {exc}; add it to inputs") from exc


def _check_names(
    what: str, fn: Callable[..., Any], names: Sequence[str], params: Sequence[str], positional: bool
) -> None:
    accepted, has_params = _accepted(fn)
    if positional and not has_params:
        raise UserCheckError(f"{what} {_label(fn)!r} must take the cotangent as its first argument")
    if accepted is None or _positional_only(fn, names, 1 if positional else 0):
        return
    missing = [n for n in names if n not in accepted]
    if missing:
        raise UserCheckError(
            f"{what} {_label(fn)!r} does not take the input(s) {missing} as keyword arguments; "
            f"it takes {sorted(accepted)}. Name its parameters after the inputs ({list(names)}), "
            "or accept **kwargs"
        )


#: How far past the rounding of a float32 evaluation a function's term magnitudes may be taken
#: (:func:`bounded_magnitude`): the float32 error of an ``n``-term sum is a random walk, about
#: ``sqrt(n)`` times smaller than the sum of its terms' magnitudes, so 64 keeps ``|W| |x|`` whole
#: up to 4096 terms, and a float32 evaluation that happened to round well by a factor of 64 is rare.
MAGNITUDE_HEADROOM = 64.0


def bounded_magnitude(
    at: Callable[[Mapping[str, np.ndarray]], Any], inputs: Mapping[str, np.ndarray]
) -> np.ndarray:
    """Per element, the term magnitude of a function whose terms are unknown (a user's forward or
    reference gradient): ``m = max(|f(x)|, min(|f(|x|)|, |f(x)| + H |f32(x) - f(x)| / eps32))``.

    ``f(|x|)`` is the exact term magnitude of a sum of products (``|W| |x|`` for ``W x``), but not of
    other functions: ``exp(|x|)`` at ``x = -30`` is ``1e13`` where ``exp(x)`` is ``1e-13``, an
    allowance under which any gradient passes.  The float32 evaluation measures the rounding the
    function really has (``eps32`` times its terms' magnitude, cancellation included), so
    ``f(|x|)`` is believed up to :data:`MAGNITUDE_HEADROOM` times that.  When the function cannot
    be evaluated in float32 (or overflows there), ``f(|x|)`` stands, as before.
    """
    x64 = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
    with np.errstate(all="ignore"):
        value = np.abs(np.asarray(at(x64), dtype=np.float64))
        absolute = np.abs(np.asarray(at({k: np.abs(v) for k, v in x64.items()}), dtype=np.float64))
        absolute = np.where(np.isfinite(absolute), absolute, np.inf)
        try:
            low = np.asarray(at({k: v.astype(np.float32) for k, v in x64.items()}), dtype=np.float64)
            measured = value + MAGNITUDE_HEADROOM * np.abs(low - value) / float(np.finfo(np.float32).eps)
        except Exception:  # a function that cannot run in float32: the sum-of-products model stands
            measured = np.full(value.shape, np.inf)
        if measured.shape != value.shape or absolute.shape != value.shape:
            return np.maximum(value, np.where(np.isfinite(absolute), absolute, 0.0))
        measured = np.where(np.isfinite(measured), measured, np.inf)
        bound = np.minimum(absolute, measured)
        return np.maximum(value, np.where(np.isfinite(bound), bound, 0.0))


class _UserForward:
    """The :class:`Identity` forward of a user check: the user's function on the adapter's
    arrays, the reference forward on NumPy (``ops is REFERENCE_OPS``).

    One object serves every check of one function and configuration in a process (see
    :func:`_user_forward`), so a framework that compiles per function object (JAX's jit) reuses
    its programs across ``check_gradients`` calls: inside a ``@given`` test, one call per
    example compiled three programs per example before (75 for 25 examples of one shape).  It
    holds the checks that use it weakly (:meth:`bind`): any live one serves, since they differ
    in nothing the forward runs, and the user's function goes when its checks go."""

    def __init__(self, forward: Callable[..., Any], cat: Identity | None) -> None:
        self.forward_name = display_name(forward)
        self.cat = cat
        self._bound: list[tuple[weakref.ref[_UserCallables], weakref.ref[Any] | None]] = []
        self._lock = threading.Lock()

    def bind(self, user: _UserCallables, inner: Any) -> None:
        """Serve the check of ``user`` (and its framework adapter ``inner``) too."""
        with self._lock:
            live = [b for b in self._bound if b[0]() is not None]
            self._bound = [*live, (weakref.ref(user), None if inner is None else weakref.ref(inner))]

    def _current(self) -> tuple[_UserCallables, Any]:
        with self._lock:
            for user_ref, inner_ref in reversed(self._bound):
                user, inner = user_ref(), None if inner_ref is None else inner_ref()
                if user is not None and (inner_ref is None or inner is not None):
                    return user, inner
        raise RuntimeError(f"the check of {self.forward_name} is over: its forward was called after it")

    def __call__(self, ops: Any, a: Mapping[str, Any], p: Mapping[str, Any]) -> Any:
        user, inner = self._current()
        who = f"your function {self.forward_name}"
        if ops is REFERENCE_OPS:
            if self.cat is not None:
                return self.cat.forward(ops, a, p)
            if inner is not None:
                dtype = str(np.asarray(next(iter(a.values()))).dtype) if a else "float64"
                # the check's own forward object (runner.forward_of: one per forward and
                # params), so a framework compiling per function object (JAX's jit) reuses its
                # program; a new function per call compiled a program at every evaluation of
                # the reference (162 programs in one check of expm; 3 GB and an abort after three)
                return inner.forward(forward_of(self, self.forward_name, p), a, dtype)
            copies = {k: np.array(v) for k, v in a.items()}  # the oracle's own arrays stay untouched
            return user_value(unchanged(lambda: user.run_forward(copies, p), copies, who), who)
        if isinstance(ops, _Recorder):
            ops.params = dict(p)
            return user.run_forward(a, p)
        return framework_value(framework_unchanged(lambda: user.run_forward(a, p), a, who), a, who, inner)


#: The shared :class:`_UserForward` objects, per user function (held weakly: the entries go
#: with the function) and configuration.
_USER_FORWARDS: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], _UserForward]] = (
    weakref.WeakKeyDictionary()
)
_USER_FORWARDS_LOCK = threading.Lock()


def _user_forward(
    forward: Callable[..., Any], cat: Identity | None, inner: Any, tree: Any, names: Sequence[str]
) -> _UserForward:
    """The :class:`_UserForward` of ``forward``: shared by the checks of one function with the
    same flat inputs through one stock JAX adapter configuration (the adapter that compiles per
    function object), a new one otherwise (another adapter may hold state per instance)."""
    adapter = type(inner)
    shared = (
        tree is None
        and adapter.__module__ == "gradoracle.adapters.jax_adapter"
        and adapter.__name__ == "JaxAdapter"
    )
    if not shared:
        return _UserForward(forward, cat)
    key = (None if cat is None else cat.name, str(getattr(inner, "name", "")), tuple(names))
    with _USER_FORWARDS_LOCK:
        try:
            per_key = _USER_FORWARDS.setdefault(forward, {})
        except TypeError:  # not weakly referenceable or not hashable: not shared
            return _UserForward(forward, cat)
        found = per_key.get(key)
        if found is None:
            found = per_key[key] = _UserForward(forward, cat)
        return found


def user_identity(
    forward: Callable[..., Any],
    inputs: Any = None,
    *,
    wrt: Sequence[str] | None = None,
    params: Mapping[str, Any] | None = None,
    identity: str | Identity | None = None,
    reference: Callable[..., Any] | None = None,
    inner: Any = None,
    vjp: Callable[..., Any] | None = None,
    scale: float = 1.0,
    max_dim: int = 6,
    name: str | None = None,
    dtypes: Sequence[str] = (),
    tree: Any = None,
) -> tuple[Identity, _UserCallables]:
    """The ad-hoc :class:`Identity` for a user function, and the callables it wraps.

    The reference forward is the catalogue identity's (so the "forward" comparison checks
    that the user's function computes the notes' function) or, without one, the user's
    own forward in float64; the reference gradient is the catalogue's closed form, the
    user's ``reference``, or none (finite differences only).  With ``tree`` (nested inputs,
    :class:`gradoracle.pytree_inputs.InputTree`), ``inputs`` and ``wrt`` are its flat leaves
    and the user's callables receive the nested structure, rebuilt before each call.
    """
    if identity is not None and reference is not None:
        raise UserCheckError(
            "give either identity= (a catalogue closed form) or reference= (yours), not both"
        )
    if identity is not None and tree is not None:
        raise UserCheckError(
            f"identity= compares flat inputs named like the identity's; the nested inputs {tree.tops} "
            "have no catalogue closed form: leave identity= out (finite differences judge), or pass "
            "reference= (yours, returning the nested gradients)"
        )
    cat = get_identity(identity) if identity is not None else None
    params = dict(params or {})
    if isinstance(wrt, str):  # one input's name (a string's characters are not names: "xy")
        wrt = (wrt,)
    if isinstance(inputs, Mapping) and not inputs:
        raise UserCheckError(
            "inputs is an empty dict: name each input your function takes, e.g. inputs={'x': (3,)} "
            "(a shape, an array or a Hypothesis strategy per input)"
        )
    if inputs is None:
        if cat is None:
            raise UserCheckError(
                "say what to draw: inputs={'x': (3,), 'W': ('n', 'm')} (shapes, arrays or Hypothesis "
                "strategies), a strategy of dicts, or identity=<catalogue name> to use its inputs"
            )
        if params:
            raise UserCheckError("params= needs inputs=; the catalogue strategy draws its own params")
        strategy = cat.strategy
        names: list[str] = list(dict.fromkeys([*cat.wrt]))
    else:
        validate = cat.validate if cat is not None else None
        strategy_obj = _input_strategy(inputs, params, scale, max_dim, validate, dtypes, tuple(wrt or ()))

        def strategy() -> st.SearchStrategy[Example]:
            return strategy_obj

        names = list(inputs) if isinstance(inputs, Mapping) else []
    wrt_names = tuple(wrt) if wrt is not None else (cat.wrt if cat is not None else tuple(names))
    if not wrt_names:
        raise UserCheckError("wrt= is needed when inputs is a strategy: name the inputs to differentiate")
    if cat is not None and names and (absent := [n for n in cat.wrt if n not in names]):
        raise UserCheckError(
            f"identity {cat.name!r} differentiates w.r.t. {list(cat.wrt)}; your inputs are {names} "
            f"(no {absent}). "
            "Name your inputs (and your function's parameters) like the identity's"
        )
    if cat is not None and cat.validate is not None and isinstance(inputs, Mapping):
        _validate_fixed_shapes(cat.validate, inputs, params)
    if names and (unknown := [n for n in wrt_names if n not in names]):
        raise UserCheckError(f"wrt names {unknown} are not inputs ({names})")
    if names:
        called = tree.tops if tree is not None else names  # what the user's callables take
        _check_names("forward", forward, called, list(params), positional=False)
        if vjp is not None:
            _check_names("vjp", vjp, called, list(params), positional=True)
        if reference is not None:
            _check_names("reference", reference, called, list(params), positional=True)
    import sys

    user = _UserCallables(forward, vjp, reference, wrt_names, sys.getrecursionlimit(), tree)

    run_forward = _user_forward(forward, cat, inner, tree, names)
    run_forward.bind(user, inner)

    reference_gradient: Any = None
    if cat is not None:
        reference_gradient = cat.reference_gradient
        source = f"{cat.source}, identity {cat.name}"
    elif reference is not None:

        def reference_gradient(
            a: Mapping[str, np.ndarray], p: Mapping[str, Any], u: np.ndarray
        ) -> dict[str, Any]:
            grads = user.grads(reference, u, a, p)
            return {n: np.asarray(g) for n, g in grads.items()}

        source = f"your reference {display_name(reference)}"
    else:
        source = "finite differences only"

    def user_forward_magnitude(a: Mapping[str, np.ndarray], p: Mapping[str, Any]) -> np.ndarray:
        """The user's forward's term magnitudes (:func:`bounded_magnitude`)."""
        return bounded_magnitude(lambda arrays: run_forward(REFERENCE_OPS, arrays, p), a)

    user_gradient_magnitude: Any = None
    if cat is None and reference_gradient is not None:
        closed_form = reference_gradient

        def user_gradient_magnitude(
            a: Mapping[str, np.ndarray], p: Mapping[str, Any], u: np.ndarray
        ) -> dict[str, np.ndarray]:
            """The user's reference gradient's term magnitudes, per input (:func:`bounded_magnitude`);
            the cotangent ``u`` goes in with the inputs (``|u|`` and float32 alike)."""
            both = {**a, "\0u": np.asarray(u)}
            shapes = {n: np.shape(a[n]) for n in wrt_names}

            def flat(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
                rest = {k: v for k, v in arrays.items() if k != "\0u"}
                g = closed_form(rest, p, arrays["\0u"])
                return np.concatenate([np.asarray(g[n], dtype=np.float64).reshape(-1) for n in wrt_names])

            m = bounded_magnitude(flat, both)
            out, start = {}, 0
            for n in wrt_names:
                size = int(np.prod(shapes[n]))
                out[n] = m[start : start + size].reshape(shapes[n])
                start += size
            return out

    label = name or _label(forward)
    ident = Identity(
        name=label,
        source=source,
        family="user",
        formula=(cat.formula if cat is not None else f"user function {label}"),
        forward=run_forward,
        wrt=wrt_names,
        reference_gradient=reference_gradient,
        strategy=strategy,
        ops=frozenset(),
        nondifferentiable=cat.nondifferentiable if cat is not None else "unknown (user function)",
        kink_policy=cat.kink_policy if cat is not None else "none",
        smooth_pattern=cat.smooth_pattern if cat is not None else None,
        validate=cat.validate if cat is not None else None,
        # the catalogue's forward-mode and second-order closed forms, for modes=
        reference_jvp=cat.reference_jvp if cat is not None else None,
        jvp_magnitude=cat.jvp_magnitude if cat is not None else None,
        reference_hvp=cat.reference_hvp
        if cat is not None and set(cat.second_order_wrt) <= set(names or cat.wrt)
        else None,
        hvp_magnitude=cat.hvp_magnitude if cat is not None else None,
        hvp_undefined=cat.hvp_undefined if cat is not None else None,
        hvp_wrt=cat.hvp_wrt
        if cat is not None and set(cat.second_order_wrt) <= set(names or cat.wrt)
        else None,
        magnitude=cat.magnitude if cat is not None else user_gradient_magnitude,
        forward_magnitude=cat.forward_magnitude if cat is not None else user_forward_magnitude,
    )
    return ident, user


# ------------------------------------------------------------------------ the checks


def _identity_name(identity: str | Identity | None) -> str | None:
    if identity is None or isinstance(identity, str):
        return identity
    return identity.name


def _inner_adapter(framework: Any, vjp: Callable[..., Any] | None) -> Any:
    """The framework adapter (None for a NumPy function with a hand-written vjp)."""
    if framework in (None, "numpy"):
        if vjp is None:
            raise UserCheckError(
                "nothing to check: give vjp= (your hand-written backward for a NumPy forward) or "
                "framework='torch' | 'jax' | 'package.module:Adapter' to check that framework's autodiff"
                + (
                    " (framework='numpy' means a plain NumPy function: NumPy has no autodiff, so it "
                    "needs vjp=)"
                    if framework == "numpy"
                    else ""
                )
            )
        return None
    if vjp is not None:
        raise UserCheckError(
            f"vjp= is for NumPy functions; with framework={framework!r} the framework's autodiff is "
            "checked (put your backward in a torch.autograd.Function / jax.custom_vjp)"
        )
    from gradoracle.adapters import AdapterLoadError, load_adapter

    if not isinstance(framework, str) and not callable(getattr(framework, "available", None)):
        raise UserCheckError(
            f"framework must be 'torch', 'jax', 'autograd', a 'package.module:Adapter' path or an adapter "
            f"object (see gradoracle.adapters.base.Adapter), not a {type(framework).__name__}"
        )
    try:
        inner = load_adapter(framework)
    except AdapterLoadError as exc:
        raise UserCheckError(str(exc)) from exc
    ok, why = inner.available()
    if not ok:
        raise FrameworkUnavailableError(f"framework {framework!r} is not available: {why}")
    return inner


def _resolves(module: str, qual: str, f: Any) -> bool:
    """Whether ``from module import <first part of qual>`` then ``qual`` reaches ``f``, where
    that can be told (a module already imported); a bound method reached through its class
    (``Model().forward``) counts as reaching it."""
    import sys

    obj: Any = sys.modules.get(module)
    if obj is None:
        return True  # not imported here: the generated import is the best there is
    try:
        for part in qual.split("."):
            obj = getattr(obj, part)
    except Exception:
        return False
    if obj is f or _attr(f, "__func__", None) is obj:
        return True
    try:  # a classmethod reached through its class is a new bound method, equal to f
        return inspect.ismethod(obj) and bool(obj == f)
    except Exception:
        return False


def _public_alias(f: Any, module: str) -> tuple[str, str] | None:
    """Where ``f``'s own ``__module__.__qualname__`` does not reach it (``torch.atan2`` says
    ``torch._VariableFunctionsClass.atan2``, which cannot be imported): the module or one of its
    parents that holds it under its ``__name__``; None when none does."""
    import sys

    name = _attr(f, "__name__", None)
    if not isinstance(name, str):
        return None
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        holder = sys.modules.get(candidate)
        try:
            if holder is not None and getattr(holder, name) is f:
                return candidate, name
        except Exception:
            continue
    return None


def _repro(
    forward: Callable[..., Any],
    vjp: Callable[..., Any] | None,
    reference: Callable[..., Any] | None,
    framework: Any,
    identity: Any,
    wrt: Sequence[str],
    dtype: str,
    counter: Mapping[str, Any],
    mode: str = "vjp",
    name: tuple[str, str] = ("", ""),
    directory: str | None = None,
    tree: Any = None,
) -> str:
    """A snippet calling :func:`check_gradients_at` on the failing example.

    With nested inputs (``tree``), the leaves are written out by path and the snippet builds
    the nested ``inputs`` from them (same container types and key order).

    Inputs too large to write out (the snippet past :data:`gradoracle.runner.INLINE_REPRO_LIMIT`)
    are loaded from an ``.npz`` file, written here: ``name`` (identity, adapter) names it, with
    dtype, mode and a digest, in :func:`gradoracle.runner.repro_directory` of ``directory``.
    """
    from gradoracle.runner import INLINE_REPRO_LIMIT, Repro, inputs_lines

    roles = ((forward, "forward"), (vjp, "vjp"), (reference, "reference"))
    fns = [(f, role) for f, role in roles if f is not None]
    lines = ["import numpy as np", "from gradoracle.user_checks import check_gradients_at"]
    by_module: dict[str, list[str]] = {}
    names: dict[str, str] = {}  # role: the expression that names it in the call
    for f, role in fns:
        module, qual = _attr(f, "__module__", None), _attr(f, "__qualname__", "")
        names[role] = _label(f, role)
        if _callable_instance(f):
            # an instance (a torch.nn.Module): its class is imported and built again, with the
            # arguments and state the test gave it
            cls = type(f)
            module, qual = _attr(cls, "__module__", None), _attr(cls, "__qualname__", "")
            if module and qual and "<" not in qual:
                by_module.setdefault(module, []).append(qual.split(".")[0])
                names[role] = f"{qual}()"
                lines.append(
                    f"# {names[role]}: an instance of {qual}; build it as your test does (its "
                    "constructor arguments, parameters and mode, e.g. .eval() or .double(), are part "
                    "of the check)"
                )
            else:
                lines.append(
                    f"# {_label(f, role)} = ... (an instance of {cls.__name__}, a class defined "
                    "inline or locally: bring it into scope here)"
                )
            continue
        if module and qual and "<" not in qual and not _resolves(module, qual, f):
            module, qual = _public_alias(f, module) or (module, qual)
        if module and qual and "<" not in qual:
            by_module.setdefault(module, []).append(qual.split(".")[0])
            if "." in qual:  # a method, or a function in a class: reached through the class
                owner = qual.rsplit(".", 1)[0]
                instance = inspect.ismethod(f) and not inspect.isclass(f.__self__)
                names[role] = f"{owner}().{f.__name__}" if instance else qual
                if instance:
                    lines.append(
                        f"# {names[role]}: a method of a {owner} instance; give {owner}() the arguments "
                        "your test does"
                    )
        else:
            lines.append(
                f"# {_label(f, role)} = ... ({display_name(f)} is defined inline or locally: "
                "bring it into scope here)"
            )
    for module, quals in by_module.items():
        lines.append(f"from {module} import {', '.join(dict.fromkeys(quals))}  # the functions under test")
    nested: list[str] = []  # the lines building the nested inputs from their leaves
    if tree is not None:
        imports, nested = tree.source("inputs")
        lines.extend(imports)
        wrt = tree.compress_wrt(wrt)
    lines.append("")
    args = [names["forward"], "inputs", f"params={dict(counter.get('params') or {})!r}"]
    args += [f"seed={counter.get('seed', 0)}", f"dtype={dtype!r}", f"wrt={tuple(wrt)!r}"]
    if vjp is not None:
        args.append(f"vjp={names['vjp']}")
    if framework not in (None, "numpy"):
        args.append(f"framework={framework if isinstance(framework, str) else type(framework).__name__!r}")
    if identity is not None:
        args.append(f"identity={identity if isinstance(identity, str) else identity.name!r}")
    if reference is not None:
        args.append(f"reference={names['reference']}")
    if mode != "vjp":
        args.append(f"mode={mode!r}")
    call = (
        f"check_gradients_at({', '.join(args)})  # raises while the fault is there "
        "(GradientMismatch, or the exception your function raises)"
    )
    from gradoracle.repro_env import needs_line

    modules = [m for m in by_module if m != "__main__"]
    if isinstance(framework, str) and ":" in framework.partition("?")[0]:
        modules.append(framework.partition("?")[0].partition(":")[0])
    needs = needs_line(modules)
    head = [needs, *lines] if needs else lines
    room = INLINE_REPRO_LIMIT - sum(len(line) + 1 for line in [*head, *nested]) - len(call)
    inline, loads, file, masters = inputs_lines(counter["inputs"], room, (*name, dtype, mode), directory)
    inline_text = "\n".join([*head, *inline, *nested, call])
    if file is None:
        return inline_text
    return Repro("\n".join([*head, *loads, *nested, call]), inline_text, file, masters).settle()


#: What a float32 failure judged by finite differences alone may be, when float64 passes.
FLOAT32_FD_ONLY_NOTE = (
    "note: the same example passes in float64. Judged by finite differences alone (no reference= or "
    "identity=), float32 rounding of a gradient that is a small difference of larger terms (1 - tanh(x)^2 "
    "near saturation, softmax with large logit gaps) looks like this too, and cannot be told from a "
    "float32-only fault of the backward: pass reference= (or identity=) so the check knows the terms' "
    "magnitudes, or check float64 only"
)


def _float32_fd_only_note(
    ident: Identity,
    adapter: Any,
    dtype: str,
    mode: str,
    fault: Fault,
    example: Example,
    settings: CheckSettings,
) -> str | None:
    """:data:`FLOAT32_FD_ONLY_NOTE` for a float32 failure of a check without a closed form whose
    example passes in float64 (one more evaluation, on a failing path only), else None."""
    if dtype != "float32" or ident.reference_gradient is not None or "float64" not in adapter.dtypes:
        return None
    if fault not in (Fault.BACKWARD, Fault.FORWARD_MODE):
        return None
    try:
        if mode == "vjp":
            outcome = evaluate_example(ident, adapter, "float64", example, settings)
        else:
            from gradoracle.modes import EVALUATORS

            outcome = EVALUATORS[mode](ident, adapter, "float64", example, settings)
    except Exception:  # the float64 run failing in any way: no evidence either way
        return None
    return FLOAT32_FD_ONLY_NOTE if outcome.passed else None


def _dtype_bound_note(
    ident: Identity, adapter: Any, fault: Fault, example: Example, dtype: str
) -> str | None:
    """For a check in ``dtype`` that failed because a call did not run (an ``adapter`` fault): when
    the user's forward runs at the failing example in one dtype and raises in the other (parameters
    of a fixed dtype: a torch module is float32 unless converted), a note saying so and what to do
    (two more evaluations, on a failing path only), else None."""
    if fault != Fault.ADAPTER:
        return None
    return _dtype_bound_text(ident, adapter, example, dtype)


def _dtype_bound_text(ident: Identity, adapter: Any, example: Example, dtype: str) -> str | None:
    """The note of :func:`_dtype_bound_note`, whatever the fault: None unless the forward runs at
    ``example`` in exactly one of float64 and float32, and the one it raises in is ``dtype`` or
    float64, the dtype of finite differences (a float64 module checked in float64 that failed for
    another reason, torch lacking a forward-mode rule, is not told about float32)."""
    from gradoracle.runner import forward_for

    fn = forward_for(ident, example.params)
    ran, raised = [], []
    for candidate in ("float64", "float32"):
        if candidate not in adapter.dtypes:
            continue
        try:
            adapter.forward(fn, example.inputs, candidate)
        except Exception:  # whatever it raises: this dtype does not run
            raised.append(candidate)
        else:
            ran.append(candidate)
    if not ran or not raised or raised[0] not in (dtype, "float64"):
        return None
    follow = (
        "or make it follow its inputs' dtype (a module: torch.func.functional_call(module, "
        "{k: p.to(x.dtype) for k, p in module.named_parameters()}, (x,)))"
    )
    if raised[0] == "float64":
        return (
            f"note: your function runs on float32 inputs only (it raised on float64 ones: arrays of a fixed "
            "dtype inside it, such as a float32 module's parameters); finite differences call it in float64 "
            f"whatever dtype is checked: convert it (module.double()) and check float64, {follow}"
        )
    return (
        "note: your function runs on float64 inputs only (it raised on float32 ones: arrays of a fixed "
        f"dtype inside it, such as a module converted with .double()): check float64 only, {follow}"
    )


def _cut_graph_note(
    ident: Identity, adapter: Any, dtype: str, fault: Fault, worst: WorstElement | None, example: Example
) -> str | None:
    """For a framework's gradient that failed as ``backward``: when that gradient is exactly 0 for
    every element of the worst input (finite differences are not, or it would have passed), a
    note that nothing connects the output to that input in the framework's graph (one more
    forward and vjp, on a failing path only), else None.

    The vjp takes the check's own cotangent ``u`` (drawn from the example's seed), not ones: a
    cut graph gives ``u^T J = 0`` for every ``u``, while ``1^T J = 0`` holds for any function
    whose outputs sum to a constant (softmax, layer norm, ``x - mean(x)``), connected or not."""
    inner = getattr(adapter, "inner", None)
    if inner is None or fault != Fault.BACKWARD or worst is None or worst.input not in ident.wrt:
        return None
    from gradoracle.runner import _cotangent, forward_for

    fn = forward_for(ident, example.params)
    try:
        out = np.asarray(adapter.forward(fn, example.inputs, dtype))
        u = _cotangent(np.random.default_rng(example.seed), out.shape).astype(dtype)
        grads = adapter.vjp(fn, example.inputs, ident.wrt, u, dtype).grads
        zero = bool(np.all(np.asarray(grads[worst.input]) == 0))
    except Exception:  # a call failing now: no evidence either way
        return None
    if not zero:
        return None
    name = str(getattr(inner, "name", "the framework"))
    exits = {
        "torch": ".detach(), .numpy(), .item(), torch.no_grad(), NumPy in between",
        "jax": "jax.lax.stop_gradient, NumPy in between",
    }.get(name, "NumPy in between")
    return (
        f"note: {name}'s gradient for input {worst.input!r} is exactly 0 for every element: nothing connects "
        f"the output to {worst.input!r} in {name}'s graph, as when the function leaves it ({exits}); keep "
        f"the computation in {name}'s operations"
    )


#: torch's words for an op with no forward-mode rule, and for torch.func refusing an in-place
#: write into a tensor the function closes over (BatchNorm's running statistics in train mode)
_NO_FORWARD_RULE = re.compile(r"forward AD with (\S+) that does not support it")
_CAPTURED_IN_PLACE = re.compile(r"in-place operation \((\S+)\) that would mutate a captured Tensor")


def _forward_mode_note(message: str) -> str | None:
    """For a check whose forward-mode call raised (``jvp raised ...`` in ``message``) because the
    framework cannot run that mode on a correct function: torch has no forward-mode rule for an op
    (``grid_sampler_2d``, ``_cdist_forward``, ``_ctc_loss``, ``_embedding_bag``, the CPU flash
    attention of ``TransformerEncoderLayer``), or ``torch.func.jvp`` refuses an in-place update of
    a module's buffer; a note naming the op and what to check instead, else None."""
    raised = [ln for ln in message.splitlines() if _raised_in(ln, "jvp") or _raised_in(ln, "hvp")]
    if not raised:
        return None
    if gap := _NO_FORWARD_RULE.search(raised[0]):
        return (
            f"note: torch has no forward-mode rule for {gap.group(1)} (not implemented in torch: a gap "
            "in the framework, not a fault of your function); check this function with modes='vjp' "
            "(a session-wide --gradoracle-mode jvp leaves it out by itself)"
        )
    if write := _CAPTURED_IN_PLACE.search(raised[0]):
        return (
            f"note: your function writes in place ({write.group(1)}) into a tensor it closes over, as "
            "a module updating its buffers does (BatchNorm's running statistics in train mode), and "
            "torch.func's forward mode refuses that: call module.eval(), build the module with "
            "track_running_stats=False, or check modes='vjp'"
        )
    return None


#: The most evaluations of the example :func:`_leaf_note` spends (on a failing path only).
LEAF_NOTE_CALLS = 32


def _leaf_note(
    ident: Identity,
    adapter: Any,
    dtype: str,
    mode: str,
    fault: Fault,
    worst: WorstElement | None,
    example: Example,
    settings: CheckSettings,
    tree: Any,
) -> str | None:
    """For a failure of nested inputs whose worst comparison names no leaf (a random direction
    moving every leaf at once: ``input 'projection'``), the leaves whose gradient fails: the
    example is checked again with ``wrt`` one subtree at a time, descending into the subtrees
    that fail (``params``, then ``params.l2``, then ``params.l2.W``; many siblings are halved), at
    most :data:`LEAF_NOTE_CALLS` evaluations; a subtree left there is named as not narrowed further.
    None for flat inputs, a worst element already on a leaf, or when nothing fails alone."""
    if tree is None or fault not in (Fault.BACKWARD, Fault.FORWARD_MODE, Fault.ORACLE):
        return None
    checked = set(ident.wrt)
    if len(checked) < 2 or (worst is not None and worst.input in checked):
        return None

    def worst_alone(paths: list[str]) -> Any:
        """The worst failing comparison with ``wrt=paths`` (None: it passes, or cannot run)."""
        alone = replace(ident, wrt=tuple(paths))
        try:
            if mode == "vjp":
                outcome = evaluate_example(alone, adapter, dtype, example, settings)
            else:
                from gradoracle.modes import EVALUATORS

                outcome = EVALUATORS[mode](alone, adapter, dtype, example, settings)
        except Exception:  # a call failing now: no evidence for these leaves
            return None
        return (
            None if outcome.passed or not outcome.failures else max(outcome.failures, key=lambda c: c.ratio)
        )

    # groups of sibling nodes: a group that fails is halved, a node that fails is descended into
    # (siblings, the comparison of their failing parent when they are all its children)
    stack: list[tuple[tuple[Any, ...], Any]] = [(tuple(tree.roots.values()), None)]
    parent: dict[int, Any] = {}
    failing: list[tuple[Any, Any]] = []  # (node, its worst comparison)
    narrowed: set[int] = set()  # nodes with a failing descendant found
    cleared: set[str] = set()  # leaves under a group that passed alone
    calls = 0
    while stack and calls < LEAF_NOTE_CALLS:
        group, known = stack.pop()
        leaves = [leaf.path for node in group for leaf in node.leaves() if leaf.path in checked]
        if not leaves:
            continue
        # a group covering every checked leaf, or its failing parent's leaves, tells nothing new
        c = known
        if c is None and len(leaves) < len(checked):
            calls += 1
            c = worst_alone(leaves)
            if c is None:
                cleared.update(leaves)
                continue
        if c is not None and len(group) == 1:
            failing.append((group[0], c))
            up = parent.get(id(group[0]))
            while up is not None:
                narrowed.add(id(up))
                up = parent.get(id(up))
        if len(group) > 1:
            half = (len(group) + 1) // 2
            stack += [(group[half:], None), (group[:half], None)]
        elif group[0].children:
            for child in group[0].children:
                parent[id(child)] = group[0]
            stack.append((tuple(group[0].children), c))
    shown = [(node, c) for node, c in failing if id(node) not in narrowed]
    if not shown:
        return None

    def where(node: Any, c: Any) -> str:
        if node.kind != "leaf":
            return f"{node.path} fails (error/tolerance = {c.ratio:.3g}; not narrowed further)"
        element = f"worst element {node.path}{list(c.index)}, " if c.input == node.path else ""
        return f"{node.path} fails ({element}error/tolerance = {c.ratio:.3g})"

    shown.sort(key=lambda pair: -pair[1].ratio)
    rest = f"; the other {len(cleared)} match" if cleared else ""
    return (
        "note: the worst direction moves every leaf at once; checked one subtree at a time, "
        + "; ".join(where(node, c) for node, c in shown)
        + rest
    )


_SLOW_CALL = re.compile(r"did not return within ([0-9.e+-]+) s")


def _slow_call_note(message: str) -> str | None:
    """For a check abandoned at the per-call limit (``did not return within N s`` in ``message``):
    a note that a first call compiles (``jax.jit`` of ``jax.scipy.linalg.expm`` took over 20 s on a
    loaded two-core machine, and a correct function failed) and where the limit is raised; else
    None."""
    slow = _SLOW_CALL.search(message)
    if slow is None:
        return None
    return (
        f"note: a call into your function or its framework took over the {slow.group(1)} s allowed per "
        "call (a first call compiles: jax.jit, torch.compile; a busy machine slows it): raise the limit, "
        "check_gradients(..., settings=gradoracle.CheckSettings(timeout_s=120)), or --gradoracle-timeout "
        "120 under pytest (0: none)"
    )


def _integer_inputs_note(inputs: Any, fault: Fault) -> str | None:
    """For a check that failed because a call did not run: the fixed inputs given as integer or
    boolean arrays (indices, masks), which the check passes to the function as floats, and
    where such arrays go instead (``params=``, handed over unchanged); inputs given as a bare
    int, which is a shape (a drawn vector of that length), not a number; else None."""
    if fault != Fault.ADAPTER or not isinstance(inputs, Mapping):
        return None
    given = {str(k): str(getattr(v, "dtype", "")) for k, v in inputs.items()}
    named = [f"{k!r} ({d})" for k, d in given.items() if "int" in d or "bool" in d]
    lengths = [f"{k!r}: {int(v)}" for k, v in inputs.items() if _is_dimension(v) and not hasattr(v, "dtype")]
    notes = []
    if named:
        notes.append(
            f"input {', '.join(named)} was given as integers or booleans, and your function received "
            "it as floats (inputs are differentiated); pass index and mask arrays in params= instead, as "
            "your framework's arrays (params={'idx': torch.tensor([0, 2])}): params reach your function "
            "unchanged"
        )
    if lengths:
        notes.append(
            f"input {', '.join(lengths)} is a shape, as a bare int is (a drawn vector of that length); a "
            "fixed number goes in params= (params={'n': 3}), a fixed value to differentiate as np.array(3.0)"
        )
    return "note: " + "; ".join(notes) if notes else None


def _with_note(message: str, note: str | None) -> str:
    """``message`` with ``note`` as an indented line after its ``fault:`` line."""
    if not note:
        return message
    lines = message.split("\n")
    at = next((i + 1 for i, line in enumerate(lines) if line.lstrip().startswith("fault:")), len(lines))
    return "\n".join([*lines[:at], f"  {note}", *lines[at:]])


def _rewrite_message(message: str, repro: str | None) -> str:
    """The runner's message with the user-facing repro."""
    if repro is not None and "\n  repro:\n" in message:
        head = message.split("\n  repro:\n", 1)[0]
        message = head + "\n  repro:\n" + "\n".join("    " + line for line in repro.splitlines())
    return message


def _mismatch(results: Sequence[CheckResult], verbose: bool = False) -> GradientMismatch:
    first = results[0]
    return GradientMismatch(
        "\n\n".join(brief_message(r.message, verbose) for r in results),
        identity=first.identity,
        adapter=first.adapter,
        dtype=first.dtype,
        fault=first.fault,
        worst=first.worst,
        repro=first.repro,
        hypothesis_seed=first.hypothesis_seed,
    )


def check_gradients(
    forward: Callable[..., Any],
    inputs: Any = None,
    *,
    vjp: Callable[..., Any] | None = None,
    framework: Any = None,
    wrt: Sequence[str] | None = None,
    params: Mapping[str, Any] | None = None,
    identity: str | Identity | None = None,
    reference: Callable[..., Any] | None = None,
    dtypes: Sequence[str] | str | None = ("float64",),
    examples: int | None = None,
    seed: int | None = None,
    scale: float = 1.0,
    max_dim: int = 6,
    name: str | None = None,
    settings: CheckSettings | None = None,
    modes: Sequence[str] | str | None = None,
    skip_unsupported_modes: bool = False,
    verbose: bool = False,
) -> list[CheckResult]:
    """Check ``forward``'s gradients (autodiff or ``vjp``) over Hypothesis-drawn inputs.

    ``modes`` (default ``("vjp",)``): also ``"jvp"`` (the framework's forward mode against
    the closed form, finite differences and its own reverse mode) and ``"hvp"``
    (Hessian-vector products; needs a closed form: a catalogue ``identity``).  A mode the
    function cannot run raises :class:`UserCheckError`, or is left out with
    ``skip_unsupported_modes`` (the fixture does that for the session's ``--gradoracle-mode``).

    Compares ``u^T J`` with central finite differences of ``forward`` and, with ``identity``
    or ``reference``, with the closed form.  Nested ``inputs`` (parameter trees) are checked
    leaf by leaf, named by path; ``wrt`` may name an input, a subtree or a leaf path.
    ``examples`` and ``seed`` default to ``settings``' (30 and 0: deterministic); inside a
    running Hypothesis test (``@given``) each dtype's check is one example drawn through that
    test instead.  Raises
    :class:`GradientMismatch` (the suite's diagnostic, shrunk example and repro) when any
    dtype fails, returns one :class:`CheckResult` per dtype otherwise.
    :class:`FrameworkUnavailableError` when ``framework`` is not installed;
    :class:`UserCheckError` for arguments that cannot work.
    The raised message spells the allowance out in words; ``verbose`` adds the tolerance
    formula (the results' messages always hold it).
    """
    __tracebackhide__ = True
    if dtypes is None:
        dtypes = ("float64",)
    if not isinstance(dtypes, str | Sequence):
        raise UserCheckError(f"dtypes must be a dtype name or a list of them, not {type(dtypes).__name__}")
    dtype_list = [dtypes] if isinstance(dtypes, str) else list(dtypes)
    bad = [d for d in dtype_list if d not in DTYPES]
    if bad or not dtype_list:
        raise UserCheckError(f"dtypes {bad or '[]'}: choose from {', '.join(DTYPES)}")
    check_arguments(forward, vjp, reference, examples=examples, seed=seed, scale=scale, max_dim=max_dim)
    tree = flatten_inputs(inputs, params) if isinstance(inputs, Mapping) else None
    if tree is not None:  # nested inputs: the checks run on their leaves, named by path
        inputs = tree.specs
        wrt = None if wrt is None else tree.expand_wrt([wrt] if isinstance(wrt, str) else list(wrt))
    inner = _inner_adapter(framework, vjp)
    ident, user = user_identity(
        forward,
        inputs,
        wrt=wrt,
        params=params,
        identity=identity,
        reference=reference,
        inner=inner,
        vjp=vjp,
        scale=scale,
        max_dim=max_dim,
        name=name,
        dtypes=dtype_list,
        tree=tree,
    )
    adapter = UserFunctionAdapter(user, inner, _identity_name(identity))
    unsupported = [d for d in dtype_list if d not in adapter.dtypes]
    if unsupported:
        raise UserCheckError(
            f"framework {adapter.name!r} does not support {unsupported}; it has {adapter.dtypes}"
        )
    base = settings or CheckSettings()
    run_settings = base.with_(
        examples=base.examples if examples is None else int(examples),
        seed=base.seed if seed is None else int(seed),
    )
    mode_list = _user_modes(modes, adapter, ident, skip_unsupported_modes)
    results = []
    left_out: set[tuple[str, str]] = set()
    pending = [(d, m) for m in mode_list for d in dtype_list]
    while pending:
        dtype, mode = pending.pop(0)
        run = functools.partial(check, ident, adapter, dtype, mode=mode)
        res = _outside_explicit_example(run, run_settings)
        if res.counterexample is not None and res.repro is not None:
            res.repro = _repro(
                forward,
                vjp,
                reference,
                framework,
                identity,
                ident.wrt,
                dtype,
                res.counterexample,
                mode,
                (res.identity, res.adapter),
                run_settings.repro_dir,
                tree,
            )
        res.message = _rewrite_message(res.message, res.repro)
        if res.verdict in (Verdict.FAIL, Verdict.ERROR) and res.counterexample is not None:
            counter = res.counterexample
            example = Example(
                {k: np.asarray(v, dtype=np.float64) for k, v in counter["inputs"].items()},
                dict(counter.get("params") or {}),
                int(counter.get("seed", 0)),
            )
            if res.verdict == Verdict.FAIL:
                note = _float32_fd_only_note(ident, adapter, dtype, mode, res.fault, example, run_settings)
                res.message = _with_note(res.message, note)
                cut = _cut_graph_note(ident, adapter, dtype, res.fault, res.worst, example)
                res.message = _with_note(res.message, cut)
                leaf = _leaf_note(
                    ident, adapter, dtype, mode, res.fault, res.worst, example, run_settings, tree
                )
                res.message = _with_note(res.message, leaf)
            bound = _dtype_bound_note(ident, adapter, res.fault, example, dtype)
            res.message = _with_note(res.message, bound)
            res.message = _with_note(res.message, _integer_inputs_note(inputs, res.fault))
            res.message = _with_note(res.message, _forward_mode_note(res.message))
            res.message = _with_note(res.message, _slow_call_note(res.message))
        if res.verdict == Verdict.ERROR and "FailedHealthCheck: " in res.message:
            raise UserCheckError(_health_check_advice(res.message, _identity_name(identity)))
        if skip_unsupported_modes and mode != "vjp" and _cannot_run(res, mode):
            # a session-wide mode (--gradoracle-mode) the framework cannot run on this function
            # (a torch.autograd.Function without jvp(), a jax.custom_vjp): left out, as the modes
            # the adapter lacks are, not a failure of the function's backward
            why = next((ln.strip() for ln in res.message.splitlines() if _raised_in(ln, mode)), "")
            res.verdict, res.fault = Verdict.SKIP, Fault.NONE
            res.message = f"mode {mode} left out: {adapter.name} cannot run it on your function ({why})"
            left_out.add((dtype, mode))
            if all((dtype, m) in left_out for m in mode_list) and "vjp" not in mode_list:
                # every session mode left out: reverse mode, as when none could run at all
                # (_user_modes), rather than a pass that checked nothing
                pending.append((dtype, "vjp"))
        results.append(res)
    failed = [r for r in results if r.verdict in (Verdict.FAIL, Verdict.ERROR)]
    if failed:
        raise _mismatch(failed, verbose)
    from gradoracle.runner import NO_EXAMPLES

    unchecked = [r for r in results if r.verdict == Verdict.SKIP and r.message.startswith(NO_EXAMPLES)]
    if unchecked:  # as Hypothesis does for a test of its own that ran no example: a skip, never a pass
        import unittest

        raise unittest.SkipTest(unchecked[0].message)
    return results


def _outside_explicit_example(
    run: Callable[[CheckSettings], CheckResult], settings: CheckSettings
) -> CheckResult:
    """``run(settings)``; inside a user's ``@given`` test, with its time kept out of the test's
    deadline, and in an ``@example(...)`` of it, one example on another thread.

    Inside ``@given`` a check draws its one example through the user's test, but an explicit
    example's test case has no choices to draw from (Hypothesis stopped it with an internal
    ``StopTest``/``Frozen`` error).  Hypothesis' test context is per thread, so on a thread of
    its own the check draws its one example itself (shrunk as usual when it fails).
    """
    import time

    from hypothesis.control import current_build_context, currently_in_test_context

    if not currently_in_test_context():
        return run(settings)
    data = current_build_context().data
    # the check's time is kept out of the user's @given deadline (200 ms by default; a
    # framework's first call compiles, and a correct backward failed with DeadlineExceeded) as
    # Hypothesis keeps a stateful test's rule runs out: in the test case's run times (draws
    # are out already; counted as draws, the check tripped the too_slow health check instead)
    runs = getattr(data, "_stateful_run_times", None)
    draws = getattr(data, "draw_times", None)
    drawing = sum(draws.values()) if isinstance(draws, dict) else 0.0
    start = time.perf_counter()
    try:
        if data.max_choices != 0:
            return run(settings)
        return _on_own_thread(run, settings.with_(examples=1))
    finally:
        if isinstance(runs, dict):
            drawn = sum(draws.values()) - drawing if isinstance(draws, dict) else 0.0
            spent = max(time.perf_counter() - start - drawn, 0.0)
            runs["execute:gradoracle"] = runs.get("execute:gradoracle", 0.0) + spent


def _on_own_thread(run: Callable[[CheckSettings], CheckResult], settings: CheckSettings) -> CheckResult:
    """``run(settings)`` on a thread of its own (outside the caller's Hypothesis test context)."""
    import threading

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = run(settings)
        except BaseException as exc:  # handed back to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="gradoracle-explicit-example", daemon=True)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    result: CheckResult = box["result"]
    return result


def _health_check_advice(message: str, identity: str | None) -> str:
    """A Hypothesis health check that stopped the drawing of the user's inputs, and what to change."""
    said = message.split("FailedHealthCheck: ", 1)[1].strip().split("\n")[0]
    if "filtering out a lot of inputs" in said:
        rules = f"the shape rules of identity {identity!r}" if identity else "your strategies' filters"
        hint = (
            f"most drawn inputs broke {rules}: draw dimensions that fit (fixed shapes, a smaller or larger "
            "max_dim=, params that suit the shapes)"
        )
    else:
        hint = (
            "make the inputs cheaper to draw (smaller shapes, simpler strategies), or suppress that "
            "health check in your Hypothesis profile (settings.register_profile(..., "
            "suppress_health_check=[...]))"
        )
    return f"Hypothesis could not draw your inputs: {said} ({hint})"


def _cannot_run(res: CheckResult, mode: str) -> bool:
    """Whether a forward-mode or second-order check errored because the framework raised in that
    mode (``jvp raised ...``), not because of a wrong value."""
    return (
        res.verdict == Verdict.ERROR
        and res.fault == Fault.ADAPTER
        and any(_raised_in(ln, mode) for ln in res.message.splitlines())
    )


def _raised_in(line: str, mode: str) -> bool:
    """``jvp raised TypeError: ...`` / ``hvp (forward-over-reverse) raised ...``: the mode's call raised."""
    return line.strip().startswith((f"{mode} raised", f"{mode} ("))


def _user_modes(
    modes: Sequence[str] | str | None, adapter: Any, ident: Identity, skip_unsupported: bool
) -> tuple[str, ...]:
    """The modes to run: validated, each supported by the function (or left out when asked)."""
    from gradoracle.modes import UnknownModeError, identity_mode_gap, parse_modes, unsupported_reason

    try:
        chosen = parse_modes([modes] if isinstance(modes, str) else list(modes or ())) or ("vjp",)
    except UnknownModeError as exc:
        raise UserCheckError(str(exc)) from None
    kept = []
    for mode in chosen:
        gap = unsupported_reason(adapter, mode) or identity_mode_gap(ident, mode)
        if gap and mode == "jvp" and adapter.inner is None:
            gap = (
                "jvp needs a framework's forward mode: pass framework='torch' or 'jax' (a NumPy vjp has none)"
            )
        if gap and mode == "hvp" and not gap.startswith("adapter") and ident.reference_hvp is None:
            gap = "hvp needs a closed form: pass identity=<catalogue name> (gradoracle list)"
            if isinstance(adapter, UserFunctionAdapter) and adapter.user.tree is not None:
                gap = (
                    "hvp needs a catalogue closed form (identity=), which nested inputs have none of: "
                    "check modes=('vjp', 'jvp'), or the second order of flat inputs named like an identity's"
                )
        if gap:
            if skip_unsupported:
                continue
            raise UserCheckError(f"mode {mode!r} cannot run here: {gap}")
        kept.append(mode)
    return tuple(kept) or ("vjp",)


def check_gradients_at(
    forward: Callable[..., Any],
    inputs: Mapping[str, Any],
    *,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    dtype: str = "float64",
    vjp: Callable[..., Any] | None = None,
    framework: Any = None,
    wrt: Sequence[str] | None = None,
    identity: str | Identity | None = None,
    reference: Callable[..., Any] | None = None,
    name: str | None = None,
    settings: CheckSettings | None = None,
    mode: str = "vjp",
    verbose: bool = False,
) -> ExampleOutcome:
    """One example (fixed arrays; ``seed`` fixes the cotangent and directions); raises on failure.

    ``mode``: ``vjp`` (default), ``jvp`` or ``hvp`` (see :func:`check_gradients`).

    The repro snippets of :func:`check_gradients` call this.
    """
    __tracebackhide__ = True
    if dtype not in DTYPES:
        raise UserCheckError(f"dtype {dtype!r}: choose from {', '.join(DTYPES)}")
    check_arguments(forward, vjp, reference, seed=seed)
    if not isinstance(inputs, Mapping):
        raise UserCheckError(f"inputs must be a dict {{name: array}}, not {type(inputs).__name__}")
    tree = flatten_inputs(inputs, params)
    if tree is not None:  # nested inputs: checked leaf by leaf, named by path
        inputs = tree.specs
        wrt = None if wrt is None else tree.expand_wrt([wrt] if isinstance(wrt, str) else list(wrt))
    inner = _inner_adapter(framework, vjp)
    arrays = {str(k): fixed_array(str(k), v) for k, v in inputs.items()}
    if arrays and all(a.size == 0 for a in arrays.values()):
        _refuse_empty({n: a.shape for n, a in arrays.items()})
    refuse_huge({n: a.size for n, a in arrays.items()})
    refuse_beyond_dtype(arrays, [dtype])
    if clash := sorted(set(arrays) & set(params or {})):
        raise UserCheckError(
            f"{clash} named both as inputs and as params: a param would replace the input; rename one"
        )
    ident, user = user_identity(
        forward,
        dict(arrays),
        wrt=wrt,
        params=params,
        identity=identity,
        reference=reference,
        inner=inner,
        vjp=vjp,
        name=name,
        tree=tree,
    )
    adapter = UserFunctionAdapter(user, inner, _identity_name(identity))
    settings = settings or CheckSettings()
    example = Example(arrays, dict(params or {}), int(seed))
    (mode,) = _user_modes(mode, adapter, ident, skip_unsupported=False)
    try:
        if mode == "vjp":
            outcome = evaluate_example(ident, adapter, dtype, example, settings)
        else:
            from gradoracle.modes import EVALUATORS

            outcome = EVALUATORS[mode](ident, adapter, dtype, example, settings)
    except Exception as exc:  # the function's own exception, with its traceback into the user's code
        bound = _dtype_bound_text(ident, adapter, example, dtype)
        if bound is not None:  # why a float32 module raises on float64 arrays in a float32 check
            exc.add_note(bound)
        integral = _integer_inputs_note(inputs, Fault.ADAPTER)
        if integral is not None:  # why an index array arrived as floats
            exc.add_note(integral)
        raise
    if not outcome.passed:
        tol = tolerance_for(dtype, _fd_dtype(adapter, dtype, settings))
        counter = {
            "inputs": {k: v.tolist() for k, v in arrays.items()},
            "params": example.params,
            "seed": seed,
        }
        repro = _repro(
            forward,
            vjp,
            reference,
            framework,
            identity,
            ident.wrt,
            dtype,
            counter,
            mode,
            (ident.name, adapter.name),
            settings.repro_dir,
            tree,
        )
        message, worst = describe_outcome(
            ident, adapter.name, dtype, outcome, tol, repro, adapter.words, mode
        )
        note = _float32_fd_only_note(ident, adapter, dtype, mode, outcome.fault, example, settings)
        message = _with_note(message, note)
        message = _with_note(message, _dtype_bound_note(ident, adapter, outcome.fault, example, dtype))
        message = _with_note(message, _integer_inputs_note(inputs, outcome.fault))
        message = _with_note(message, _forward_mode_note(message))
        message = _with_note(message, _slow_call_note(message))
        message = _with_note(message, _cut_graph_note(ident, adapter, dtype, outcome.fault, worst, example))
        message = _with_note(
            message, _leaf_note(ident, adapter, dtype, mode, outcome.fault, worst, example, settings, tree)
        )
        raise GradientMismatch(
            brief_message(_rewrite_message(message, None), verbose),
            identity=ident.name,
            adapter=adapter.name,
            dtype=dtype,
            fault=outcome.fault,
            worst=worst,
            repro=repro,
        )
    return outcome


# ------------------------------------------------------------------------ the fixture


@dataclass(frozen=True)
class GradOracle:
    """What the ``gradoracle`` pytest fixture returns.

    ``check`` and ``check_at`` are :func:`check_gradients` and :func:`check_gradients_at`
    with the session's examples, seed, dtypes and Hypothesis settings as defaults (see the
    ``gradoracle`` fixture), and a framework that is not installed turns into a skip with
    the reason.
    """

    examples: int = 30
    seed: int | None = 0
    dtypes: tuple[str, ...] = ("float64",)
    settings: CheckSettings | None = None
    #: the session's ``--gradoracle-mode`` (``()``: reverse mode only); a test's own
    #: ``modes=`` wins, and session modes the function cannot run are left out
    modes: tuple[str, ...] = ()
    verbose: bool = False  # pytest -v: the failure message also holds the tolerance formula

    def check(self, forward: Callable[..., Any], inputs: Any = None, **kwargs: Any) -> list[CheckResult]:
        """:func:`check_gradients` (see there for the arguments; ``modes=`` selects the modes)."""
        __tracebackhide__ = True
        if "mode" in kwargs:
            raise UserCheckError(
                f"gradoracle.check takes modes= (modes={kwargs['mode']!r} or a list such as "
                "modes=('vjp', 'jvp')); mode= is gradoracle.check_at's (one fixed example)"
            )
        kwargs.setdefault("examples", self.examples)
        kwargs.setdefault("seed", self.seed)
        kwargs.setdefault("verbose", self.verbose)
        kwargs.setdefault("dtypes", self.dtypes)
        kwargs.setdefault("settings", self.settings)
        if "modes" not in kwargs and self.modes:
            kwargs["modes"] = self.modes
            kwargs.setdefault("skip_unsupported_modes", True)
        try:
            return check_gradients(forward, inputs, **kwargs)
        except FrameworkUnavailableError as exc:
            import pytest

            pytest.skip(str(exc))

    def check_at(
        self, forward: Callable[..., Any], inputs: Mapping[str, Any], **kwargs: Any
    ) -> ExampleOutcome:
        """:func:`check_gradients_at` (one fixed example)."""
        __tracebackhide__ = True
        if "modes" in kwargs:
            raise UserCheckError(
                "gradoracle.check_at takes mode= (one mode, e.g. mode='jvp'; one call per mode); "
                "modes= is gradoracle.check's (drawn examples)"
            )
        kwargs.setdefault("verbose", self.verbose)
        kwargs.setdefault("settings", self.settings)
        try:
            return check_gradients_at(forward, inputs, **kwargs)
        except FrameworkUnavailableError as exc:
            import pytest

            pytest.skip(str(exc))

    def identity(self, name: str) -> Identity:
        """A catalogue identity (to read its formula or draw from its strategy)."""
        return get_identity(name)

    def with_(self, **changes: Any) -> GradOracle:
        """A copy with other defaults."""
        return replace(self, **changes)
