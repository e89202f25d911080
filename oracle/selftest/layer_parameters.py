"""The layer hyper-parameters the mutation catalogue proves are checked (issue 14).

Each layer mutant names one :class:`LayerParameter`: its bug shows only when that parameter
is on (``stride > 1``, ``groups > 1``, ``N > 1``, ...) and the mutant computes the right
gradient when it is off.  ``on(identity, inputs, params)`` says whether a drawn example has
the parameter on; the self-test's kill matrix groups the killed mutants by parameter, and
the tests check every mutant against the correct adapter on examples with its parameter off.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradoracle.reference_layers import conv_output_shape, conv_pads, pool_geometry, window_positions

Inputs = Mapping[str, np.ndarray]
Params = Mapping[str, Any]

#: Identities whose leading axes are all batch axes (``X`` is ``(..., features)``).
FLAT_BATCH = ("linear-layer", "dense-layer")


def rows(identity: str, inputs: Inputs) -> int:
    """The batch size N: the rows of ``X (..., in)`` for a linear layer, else the leading axis."""
    if identity in FLAT_BATCH:
        return int(np.prod(np.shape(inputs["X"])[:-1]))
    key = "Z" if "Z" in inputs else "X"
    return int(np.shape(inputs[key])[0])


def _leading_padding(identity: str, inputs: Inputs, params: Params) -> tuple[int, ...]:
    """The padding before the first element of every spatial axis (``same`` resolved as PyTorch)."""
    if "K" in inputs:
        kernel = tuple(np.shape(inputs["K"])[2:])
        return tuple(lo for lo, _ in conv_pads(params["padding"], kernel, tuple(params["dilation"])))
    return tuple(int(p) for p in params.get("padding", ()))


def windows_overlap(inputs: Inputs, params: Params) -> bool:
    """Whether two pooling windows share an input position (along some axis, hence in the map)."""
    spatial = np.shape(inputs["X"])[2:]
    window, stride, padding = params["window"], params["stride"], params["padding"]
    dilation = params.get("dilation", (1,) * len(window))
    out, _ = pool_geometry(spatial, window, stride, padding, dilation, bool(params["ceil_mode"]))
    for n, w, s, p, d, o in zip(spatial, window, stride, padding, dilation, out, strict=True):
        positions = window_positions(n, w, s, p, d, o)
        if len(np.unique(positions)) < positions.size:
            return True
    return False


def ceil_adds_a_window(inputs: Inputs, params: Params) -> bool:
    """Whether ceil mode gives some axis one more (partial) window than floor mode."""
    spatial = np.shape(inputs["X"])[2:]
    window, stride, padding = params["window"], params["stride"], params["padding"]
    dilation = params.get("dilation", (1,) * len(window))
    ceil, _ = pool_geometry(spatial, window, stride, padding, dilation, True)
    floor, _ = pool_geometry(spatial, window, stride, padding, dilation, False)
    return ceil != floor


def _conv_pads(inputs: Inputs, params: Params) -> tuple[tuple[int, int], ...]:
    kernel = tuple(np.shape(inputs["K"])[2:])
    return tuple(conv_pads(params["padding"], kernel, tuple(params["dilation"])))


def output_positions(inputs: Inputs, params: Params) -> int:
    """The number of spatial positions of a convolution's output."""
    kernel = tuple(np.shape(inputs["K"])[2:])
    spatial = tuple(np.shape(inputs["X"])[2:])
    pads = _conv_pads(inputs, params)
    return int(
        np.prod(conv_output_shape(spatial, kernel, tuple(params["stride"]), pads, tuple(params["dilation"])))
    )


def soft_targets(inputs: Inputs) -> bool:
    """Whether the targets are class probabilities with some row that is not one-hot."""
    target = np.asarray(inputs["T"])
    if target.ndim != 2:
        return False
    return bool(np.any(np.sum(target > 0, axis=-1) > 1))


@dataclass(frozen=True)
class LayerParameter:
    """A hyper-parameter setting under which (and only under which) a layer mutant's bug shows."""

    name: str
    description: str
    on: Callable[[str, Inputs, Params], bool]


def _p(name: str, description: str, on: Callable[[str, Inputs, Params], bool]) -> LayerParameter:
    return LayerParameter(name, description, on)


PARAMETERS: dict[str, LayerParameter] = {
    p.name: p
    for p in (
        _p("N > 1", "more than one batch row (sample)", lambda i, a, p: rows(i, a) > 1),
        _p(
            "reduction=mean",
            "the mean reduction over more than one row (with N = 1 mean and sum agree)",
            lambda i, a, p: p.get("reduction") == "mean" and rows(i, a) > 1,
        ),
        _p(
            "label_smoothing > 0",
            "PyTorch's label smoothing",
            lambda i, a, p: float(p.get("label_smoothing", 0)) > 0,
        ),
        _p(
            "stride > 1",
            "a stride above 1 on some axis",
            lambda i, a, p: any(int(s) > 1 for s in p["stride"]),
        ),
        _p(
            "dilation > 1",
            "a dilation above 1 on some axis",
            lambda i, a, p: any(int(d) > 1 for d in p.get("dilation", ())),
        ),
        _p(
            "padding > 0",
            "zero padding before the first element of some axis ('same' resolved as PyTorch splits it)",
            lambda i, a, p: any(lo > 0 for lo in _leading_padding(i, a, p)),
        ),
        _p("groups > 1", "a grouped (or depthwise) convolution", lambda i, a, p: int(p["groups"]) > 1),
        _p(
            "overlapping windows",
            "pooling windows that share input positions (stride below the dilated window)",
            lambda i, a, p: windows_overlap(a, p),
        ),
        _p(
            "ceil_mode",
            "ceil mode adding a last, partial window (ceil_mode=True without one is floor mode)",
            lambda i, a, p: bool(p["ceil_mode"]) and ceil_adds_a_window(a, p),
        ),
        _p(
            "count_include_pad=False",
            "padding > 0 with the padding left out of the average's divisor",
            lambda i, a, p: not p["count_include_pad"] and any(int(q) > 0 for q in p["padding"]),
        ),
        _p("N > 4", "more than four batch rows (a batch tile of 4 shows)", lambda i, a, p: rows(i, a) > 4),
        _p(
            "reduction=sum",
            "the sum reduction over more than one row",
            lambda i, a, p: p.get("reduction") == "sum" and rows(i, a) > 1,
        ),
        _p(
            "probability targets",
            "class-probability targets with a row that is not one-hot",
            lambda i, a, p: soft_targets(a),
        ),
        _p(
            "asymmetric padding",
            "more padding after than before on some axis ('same' with an odd d (k - 1), PyTorch's split)",
            lambda i, a, p: any(lo != hi for lo, hi in _conv_pads(a, p)),
        ),
        _p(
            "anisotropic stride",
            "strides that differ across the spatial axes",
            lambda i, a, p: len(set(p["stride"])) > 1,
        ),
        _p(
            "square 2-D kernel",
            "a 2-D convolution whose kernel is square and larger than 1 x 1",
            lambda i, a, p: np.ndim(a["K"]) == 4 and np.shape(a["K"])[2] == np.shape(a["K"])[3] > 1,
        ),
        _p(
            "C_in/groups > 1",
            "more than one input channel per group (the filter's channel axis)",
            lambda i, a, p: np.shape(a["K"])[1] > 1,
        ),
        _p(
            "output positions > 1",
            "a convolution output with more than one spatial position",
            lambda i, a, p: output_positions(a, p) > 1,
        ),
        _p(
            "2-D/3-D maps",
            "more than one spatial axis of size above 1 (global pooling)",
            lambda i, a, p: int(np.prod(np.shape(a["X"])[2:-1])) > 1,
        ),
    )
}


def parameter_on(parameter: str, identity: str, inputs: Inputs, params: Params) -> bool:
    """Whether ``parameter`` (a :data:`PARAMETERS` name) is on in this example of ``identity``."""
    return bool(PARAMETERS[parameter].on(identity, inputs, params))
