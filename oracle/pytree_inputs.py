"""Nested inputs (pytrees) of a user check, flattened into leaf inputs named by their paths.

An input of :func:`gradoracle.check_gradients` may be a dict, list or tuple nested to any depth
(and, when JAX is already imported, any registered JAX pytree node, such as an equinox module),
whose leaves are the specs a flat input takes (a shape, a fixed array, a Hypothesis strategy).
At the boundary the structure is flattened into leaf inputs named by their paths::

    {"params": {"Dense_0": {"kernel": (3, 4)}}, "layers": [{"w": (2,)}]}
    -> {"params.Dense_0.kernel": (3, 4), "layers[0].w": (2,)}

(a string key that is not a Python identifier is written ``['0.weight']``, an int key ``[0]``).
The oracle's machinery runs on the flat leaves unchanged; before every call of the user's
forward, vjp or reference the structure is rebuilt (same container types, same key order) from
the leaves of the moment (NumPy arrays, torch tensors that require grad, JAX tracers), and a
gradient the user's vjp returns in the same nested structure is flattened back, leaf by leaf.

A list or tuple is a container when it holds a dict, a strategy or a shape with a named
dimension, or when NumPy cannot read it as one array (``[W1, b1]`` of different shapes); a
list of same-shaped arrays or numbers stays one (stacked) array, as before, and a tuple of
ints or names is a shape.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

__all__ = ["InputTree", "Node", "flatten_inputs", "is_nested"]

LEAF, MAPPING, SEQUENCE, PYTREE, NONE = "leaf", "mapping", "sequence", "pytree", "none"

#: How many leaf paths a message lists before it says "..."
LISTED = 12


def _error(message: str) -> Exception:
    from gradoracle.user_checks import UserCheckError

    return UserCheckError(message)


def _is_int(d: Any) -> bool:
    return isinstance(d, int | np.integer) and not isinstance(d, bool)


def _shape_like(value: Any) -> bool:
    """A tuple or list of sizes, dimension names and None (a shape, or today's shape errors);
    never a namedtuple (its items are named: a structure)."""
    return (
        isinstance(value, tuple | list)
        and not hasattr(type(value), "_fields")
        and all(d is None or isinstance(d, str) or _is_int(d) for d in value)
    )


def _holds_text_or_none(value: Any) -> bool:
    """Whether a list or tuple holds (at any depth) a string or None: kept as one value, so that
    the messages of flat inputs (``input 'x' is not an array of numbers``) stay as they were."""
    return any(
        v is None or isinstance(v, str | bytes) or (isinstance(v, list | tuple) and _holds_text_or_none(v))
        for v in value
    )


def _holds_structure(value: Any) -> bool:
    """Whether a list or tuple holds (at any depth) a dict, a strategy, a shape with a named
    dimension or a registered JAX pytree node: never one array of numbers."""
    for v in value:
        if isinstance(v, Mapping | st.SearchStrategy) or _pytree_node(v):
            return True
        if isinstance(v, tuple | list):
            if _shape_like(v) and any(isinstance(d, str) for d in v):
                return True
            if not _shape_like(v) and _holds_structure(v):
                return True
    return False


def _one_array(value: Any) -> bool:
    """Whether NumPy reads a list or tuple as one array of numbers (not ragged, not objects)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.asarray(value)
    except (ValueError, TypeError, RuntimeError):
        return False
    return arr.dtype.kind != "O"


def _pytree_node(value: Any) -> bool:
    """A registered JAX pytree node other than dict / list / tuple / None (an equinox module, a
    flax struct): only when JAX is already imported (the check never imports it for this)."""
    if "jax" not in sys.modules or value is None:
        return False
    if isinstance(value, Mapping | list | tuple | str | bytes | np.ndarray | np.generic | int | float):
        return False
    if isinstance(value, st.SearchStrategy) or hasattr(value, "__array__") or hasattr(value, "detach"):
        return False
    import jax

    try:
        treedef = jax.tree_util.tree_structure(value, is_leaf=lambda n: n is not value)
    except Exception:  # an object jax cannot look into: a leaf
        return False
    return not jax.tree_util.treedef_is_leaf(treedef)


def is_nested(value: Any, inside: bool = False) -> bool:
    """Whether an input's value is a structure to flatten rather than one spec: a dict, a
    registered JAX pytree node, or a list / tuple that is not a shape nor one array of numbers.
    ``inside`` a nested input, a list or tuple of shapes (``[(3, 4), (4,)]``) is shapes too (at
    the top, a list of int tuples stays the array of numbers it always was)."""
    if isinstance(value, st.SearchStrategy):
        return False
    if isinstance(value, Mapping):
        return True
    if isinstance(value, list | tuple):
        if _shape_like(value):
            return False
        if inside and all(isinstance(v, tuple) and _shape_like(v) for v in value):
            return True
        if _holds_structure(value):
            return True
        return not _holds_text_or_none(value) and not _one_array(value)
    return _pytree_node(value)


def _key_text(key: Any) -> str:
    """A mapping key as a path step: ``.kernel``, ``['0.weight']``, ``[3]``."""
    if isinstance(key, str) and key.isidentifier():
        return f".{key}"
    return f"[{key!r}]" if isinstance(key, str) else f"[{int(key)}]"


def _jax_step(entry: Any) -> tuple[str, str]:
    """A JAX key-path entry as (path step, Python locator): ``.weight``, ``['a']``, ``[0]``."""
    from jax import tree_util

    if isinstance(entry, tree_util.GetAttrKey):
        return f".{entry.name}", f".{entry.name}"
    if isinstance(entry, tree_util.DictKey):
        key = entry.key
        step = _key_text(key) if isinstance(key, str | int) and not isinstance(key, bool) else f"[{key!r}]"
        return step, f"[{key!r}]"
    if isinstance(entry, tree_util.SequenceKey):
        return f"[{entry.idx}]", f"[{entry.idx}]"
    index = getattr(entry, "key", entry)  # FlattenedIndexKey
    return f"[{index}]", f"[{index}]"


@dataclass(frozen=True)
class Node:
    """One node of an input's structure: a leaf (its spec), a mapping, a sequence or a JAX node."""

    path: str
    #: Python code reaching this node from the inputs dict: ``['params']['Dense_0']``
    locator: str
    kind: str
    spec: Any = None
    keys: tuple[Any, ...] = ()
    children: tuple[Node, ...] = ()
    #: rebuilds the container from its children's values (None for a leaf)
    make: Callable[[list[Any]], Any] | None = None
    #: the container's type (mapping, sequence) or the JAX treedef (pytree)
    container: Any = None
    #: a JAX pytree node's type name (``MLP``), for the repro
    label: str = ""

    def leaves(self) -> list[Node]:
        """The leaves under this node, in order."""
        if self.kind == LEAF:
            return [self]
        if self.kind == NONE:
            return []
        return [leaf for child in self.children for leaf in child.leaves()]

    def nodes(self) -> list[Node]:
        """This node and every node under it."""
        return [self, *(n for child in self.children for n in child.nodes())]

    def build(self, flat: Mapping[str, Any]) -> Any:
        """The structure with each leaf's value from ``flat`` (keyed by leaf path)."""
        if self.kind == LEAF:
            return flat[self.path]
        if self.kind == NONE:
            return None
        assert self.make is not None
        return self.make([child.build(flat) for child in self.children])


def _mapping_maker(value: Mapping[Any, Any], keys: tuple[Any, ...]) -> Callable[[list[Any]], Any]:
    kind: Any = type(value)
    if kind is dict:
        return lambda values: dict(zip(keys, values, strict=True))
    import collections

    if isinstance(value, collections.defaultdict):
        factory = value.default_factory
        return lambda values: collections.defaultdict(factory, zip(keys, values, strict=True))
    return lambda values: kind(dict(zip(keys, values, strict=True)))


def _sequence_maker(value: Sequence[Any]) -> Callable[[list[Any]], Any]:
    kind: Any = type(value)
    if kind is list:
        return list
    if kind is tuple:
        return tuple
    if hasattr(kind, "_make"):  # a namedtuple
        return kind._make
    return kind


def _container_words(node: Node) -> str:
    if node.kind == MAPPING:
        return f"a {node.container.__name__}"
    if node.kind == SEQUENCE:
        return f"a {node.container.__name__} of {len(node.children)}"
    return "a JAX pytree node"


def _node(path: str, locator: str, value: Any, top: bool = False) -> Node:
    """The node for ``value`` at ``path``; a :class:`UserCheckError` for what cannot be a leaf."""
    if top and not is_nested(value):
        return Node(path, locator, LEAF, spec=value)
    if value is None or isinstance(value, str | bytes):
        what = "None" if value is None else f"a {type(value).__name__} ({value!r:.40})"
        raise _error(
            f"input {path!r} ({locator}) is {what}: each leaf of a nested input is a shape such as (3,) or "
            "('n',), an array or a Hypothesis strategy of arrays; take it out of the tree (a fixed value "
            "that is not differentiated goes in params=, a keyword argument of its own)"
        )
    empty_hint = (
        f"input {path!r} ({locator}) is an empty {type(value).__name__}: there is nothing in it to "
        "differentiate; leave it out of inputs (or pass it in params=)"
    )
    if isinstance(value, Mapping):
        if not value:
            raise _error(empty_hint)
        keys = tuple(value)
        for key in keys:
            if isinstance(key, bool) or not isinstance(key, str | int | np.integer):
                raise _error(
                    f"input {path!r} ({locator}) has the key {key!r} ({type(key).__name__}): keys of a "
                    "nested input name its leaves in messages and in the repro, so each is a str or an int; "
                    "use str keys"
                )
        children = tuple(_node(f"{path}{_key_text(k)}", f"{locator}[{k!r}]", value[k]) for k in keys)
        return Node(
            path,
            locator,
            MAPPING,
            keys=keys,
            children=children,
            make=_mapping_maker(value, keys),
            container=type(value),
        )
    if isinstance(value, list | tuple) and (
        not _shape_like(value) or (not top and isinstance(value, list) and not value)
    ):
        if not value:  # inside a tree [] is no shape: a scalar's is ()
            raise _error(empty_hint + "; a scalar leaf's shape is ()")
        if is_nested(value, inside=True):
            fields = getattr(type(value), "_fields", None)  # a namedtuple's items by name: layers[1].w
            steps = [f".{f}" for f in fields] if fields else [f"[{i}]" for i in range(len(value))]
            children = tuple(
                _node(f"{path}{step}", f"{locator}{step}", v) for step, v in zip(steps, value, strict=True)
            )
            return Node(
                path,
                locator,
                SEQUENCE,
                keys=tuple(range(len(value))),
                children=children,
                make=_sequence_maker(value),
                container=type(value),
            )
        return Node(path, locator, LEAF, spec=value)
    if _pytree_node(value):
        import jax

        pairs, treedef = jax.tree_util.tree_flatten_with_path(value, is_leaf=lambda n: n is not value)
        if not pairs:
            raise _error(empty_hint)
        children_list = []
        steps = []
        for keypath, child in pairs:
            step, loc = _jax_step(keypath[0]) if keypath else ("", "")
            steps.append(step)
            if child is None:  # JAX's empty subtree (eqx.partition leaves None where no array is)
                children_list.append(Node(f"{path}{step}", f"{locator}{loc}", NONE))
            else:
                children_list.append(_node(f"{path}{step}", f"{locator}{loc}", child))
        return Node(
            path,
            locator,
            PYTREE,
            keys=tuple(steps),
            children=tuple(children_list),
            make=functools.partial(jax.tree_util.tree_unflatten, treedef),
            container=treedef,
            label=type(value).__name__,
        )
    if (
        callable(value)
        and not isinstance(value, type | st.SearchStrategy)
        and not hasattr(value, "__array__")
    ):
        raise _error(
            f"input {path!r} ({locator}) is a function ({getattr(value, '__name__', type(value).__name__)}), "
            "not a leaf to differentiate: give the tree of arrays only (equinox: arrays, static = "
            "eqx.partition(model, eqx.is_array); check arrays and call eqx.combine(arrays, static) in "
            "your forward)"
        )
    return Node(path, locator, LEAF, spec=value)


@dataclass(frozen=True)
class InputTree:
    """All of a check's inputs: each top-level input's structure, and the flat leaf specs."""

    roots: dict[str, Node]
    specs: dict[str, Any] = field(default_factory=dict)

    @property
    def tops(self) -> list[str]:
        """The top-level input names (the user's function's keyword arguments)."""
        return list(self.roots)

    def top_of(self, path: str) -> str:
        """The top-level input a leaf path belongs to."""
        for name, root in self.roots.items():
            if any(leaf.path == path for leaf in root.leaves()):
                return name
        raise KeyError(path)

    def rebuild(self, flat: Mapping[str, Any]) -> dict[str, Any]:
        """``{top: structure}`` with each leaf's value from ``flat`` (keyed by leaf path)."""
        return {name: root.build(flat) for name, root in self.roots.items()}

    def expand_wrt(self, wrt: Sequence[str]) -> tuple[str, ...]:
        """``wrt`` as leaf paths: a top-level input or any node path (``params.Dense_0``) stands
        for all the leaves under it."""
        by_path = {n.path: n for root in self.roots.values() for n in root.nodes()}
        unknown = [w for w in wrt if w not in by_path]
        if unknown:
            leaves = [leaf.path for root in self.roots.values() for leaf in root.leaves()]
            shown = ", ".join(leaves[:LISTED]) + (", ..." if len(leaves) > LISTED else "")
            raise _error(
                f"wrt names {unknown} are not inputs nor paths in them: the inputs are {self.tops}, "
                f"their leaves {shown}; name a top-level input (all its leaves) or a path"
            )
        out = [leaf.path for w in wrt for leaf in by_path[w].leaves()]
        return tuple(dict.fromkeys(out))

    def compress_wrt(self, wrt: Sequence[str]) -> tuple[str, ...]:
        """Leaf paths written back shortly: a top-level input whose leaves are all in ``wrt`` by
        its name (what :meth:`expand_wrt` reads back into the same leaves)."""
        chosen = set(wrt)
        out: list[str] = []
        for name, root in self.roots.items():
            paths = [leaf.path for leaf in root.leaves()]
            if all(p in chosen for p in paths):
                out.append(name)
            else:
                out.extend(p for p in paths if p in chosen)
        return tuple(out)

    def wrt_tops(self, wrt: Sequence[str]) -> list[str]:
        """The top-level inputs holding a leaf in ``wrt``, in input order."""
        chosen = set(wrt)
        return [n for n, root in self.roots.items() if any(leaf.path in chosen for leaf in root.leaves())]

    def gradients(self, name: str, grad: Any, wrt: Sequence[str], who: str) -> dict[str, Any]:
        """A gradient returned for input ``name`` in its nested structure, as ``{leaf path:
        gradient}`` for the leaves in ``wrt``; a missing or extra leaf (or another structure) is a
        :class:`UserCheckError` naming its path."""
        out: dict[str, Any] = {}
        _match(self.roots[name], grad, set(wrt), who, name, out)
        return out

    def source(self, var: str = "inputs") -> tuple[list[str], list[str]]:
        """Python code rebuilding the nested inputs from ``var`` (the flat leaves, keyed by leaf
        path): (import lines, the assignment lines)."""
        imports: list[str] = []
        items = [f"    {name!r}: {_source(root, var, imports)}," for name, root in self.roots.items()]
        return list(dict.fromkeys(imports)), [
            f"{var} = {{  # the nested inputs, from their leaves",
            *items,
            "}",
        ]


def _source(node: Node, var: str, imports: list[str]) -> str:
    """Python code building ``node`` from ``var[leaf path]``."""
    if node.kind == LEAF:
        return f"{var}[{node.path!r}]"
    if node.kind == NONE:
        return "None"
    parts = [_source(child, var, imports) for child in node.children]
    if node.kind == MAPPING:
        body = "{" + ", ".join(f"{k!r}: {p}" for k, p in zip(node.keys, parts, strict=True)) + "}"
        return body if node.container is dict else f"{_imported(node.container, imports)}({body})"
    if node.kind == SEQUENCE:
        if node.container is list:
            return "[" + ", ".join(parts) + "]"
        if node.container is tuple:
            return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
        name = _imported(node.container, imports)
        return (
            f"{name}({', '.join(parts)})"
            if hasattr(node.container, "_make")
            else f"{name}([{', '.join(parts)}])"
        )
    maker = "rebuild_" + re.sub(r"\W", "_", node.path)
    imports.append(
        f"# {maker}(children): define it to build {node.path} (a {node.label}, a JAX pytree node) from "
        "its children as your test does (jax.tree_util.tree_unflatten(treedef, children))"
    )
    return f"{maker}([{', '.join(parts)}])"


def _imported(kind: type, imports: list[str]) -> str:
    """The name of a container type in generated code, its import line added to ``imports``."""
    module, qual = getattr(kind, "__module__", ""), getattr(kind, "__qualname__", kind.__name__)
    if module in ("builtins", "") or "<" in qual:
        if "<" in qual:
            imports.append(f"# {qual} is defined locally: bring it into scope here")
        return qual
    imports.append(f"from {module} import {qual.split('.')[0]}")
    return qual


def _match(node: Node, grad: Any, wrt: set[str], who: str, top: str, out: dict[str, Any]) -> None:
    """Walk ``grad`` along ``node``'s structure, putting the leaves in ``wrt`` into ``out``."""
    if node.kind == LEAF:
        if node.path in wrt:
            out[node.path] = grad
        return
    wanted = [leaf.path for leaf in node.leaves() if leaf.path in wrt]
    if not wanted:  # nothing under this node is checked: whatever came back is not read
        return
    layout = (
        f"return the gradient of input {top!r} in its structure ({_container_words(node)} at {node.path!r})"
    )
    if node.kind == MAPPING:
        if not isinstance(grad, Mapping):
            raise _error(f"{who} returned a {type(grad).__name__} for {node.path!r}, not a mapping: {layout}")
        extra = [k for k in grad if k not in node.keys]
        if extra:
            paths = [f"{node.path}{_key_text(k) if isinstance(k, str | int) else f'[{k!r}]'}" for k in extra]
            are = "is not a leaf" if len(paths) == 1 else "are not leaves"
            raise _error(
                f"{who} returned gradients for {paths}, which {are} "
                f"of input {top!r} (under {node.path!r} it has {list(node.keys)}): {layout}"
            )
        missing = [
            child.path
            for k, child in zip(node.keys, node.children, strict=True)
            if k not in grad and any(leaf.path in wrt for leaf in child.leaves())
        ]
        if missing:
            raise _error(
                f"{who} returned no gradient for {missing} (under {node.path!r} it returned "
                f"{[str(k) for k in grad]}): {layout}"
            )
        for k, child in zip(node.keys, node.children, strict=True):
            if k in grad:
                _match(child, grad[k], wrt, who, top, out)
        return
    if node.kind == SEQUENCE:
        if not isinstance(grad, list | tuple) or len(grad) != len(node.children):
            got = (
                f"a {type(grad).__name__} of {len(grad)}"
                if isinstance(grad, list | tuple)
                else f"a {type(grad).__name__}"
            )
            raise _error(f"{who} returned {got} for {node.path!r}: {layout}")
        for child, g in zip(node.children, grad, strict=True):
            _match(child, g, wrt, who, top, out)
        return
    import jax

    try:
        pairs, _ = jax.tree_util.tree_flatten_with_path(grad, is_leaf=lambda n: n is not grad)
    except Exception:  # not a structure jax can look into
        pairs = []
    steps = [(_jax_step(kp[0])[0] if kp else "") for kp, _ in pairs]
    if tuple(steps) != node.keys:
        raise _error(
            f"{who} returned a {type(grad).__name__} for {node.path!r} with the children {steps}, not "
            f"{list(node.keys)}: {layout}"
        )
    for child, (_, g) in zip(node.children, pairs, strict=True):
        _match(child, g, wrt, who, top, out)


def flatten_inputs(inputs: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> InputTree | None:
    """The :class:`InputTree` of ``inputs`` when any value is nested (:func:`is_nested`), else
    None (flat inputs go on exactly as before).  A :class:`UserCheckError` for an empty
    container, a leaf that is None or a string, a key that is not a str or int, two paths that
    flatten to the same name, a container that cannot be rebuilt, or a path named like a param."""
    if not any(is_nested(v) for v in inputs.values()):
        return None
    roots = {
        str(name): _node(str(name), f"inputs[{name!r}]", value, top=True) for name, value in inputs.items()
    }
    specs: dict[str, Any] = {}
    where: dict[str, str] = {}
    for root in roots.values():
        for leaf in root.leaves():
            if leaf.path in where:
                raise _error(
                    f"two inputs flatten to the same name {leaf.path!r}: {where[leaf.path]} and "
                    f"{leaf.locator}; messages and the repro name a leaf by its path, so rename one key"
                )
            where[leaf.path] = leaf.locator
            specs[leaf.path] = leaf.spec
    for root in roots.values():
        for node in root.nodes():
            if node.kind in (LEAF, NONE):
                continue
            try:
                node.build(specs)
            except Exception as exc:  # a container type that cannot be built from its items
                kind = type(node.container) if node.kind == PYTREE else node.container
                raise _error(
                    f"input {node.path!r} ({node.locator}) is a {kind.__name__} that cannot be rebuilt from "
                    f"its items ({type(exc).__name__}: {exc}); give it as a dict, list or tuple"
                ) from None
    params = dict(params or {})
    nested = [n for n, root in roots.items() if root.kind != LEAF and n in params]
    if nested:
        raise _error(
            f"{nested} named both as inputs and as params: a param would replace the input; rename one"
        )
    clash = [f"{p!r} ({where[p]})" for p in specs if p in params and p not in roots]
    if clash:
        raise _error(
            f"the leaf path {', '.join(clash)} of a nested input is also a param's name: messages and the "
            "repro could not tell them apart; rename the param"
        )
    return InputTree(roots, specs)
