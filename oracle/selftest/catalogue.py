"""The mutant catalogue: one declarative :class:`Mutant` record per deliberately wrong adapter.

Each record names the bug, the notes' rule it breaks, the identities it must be caught on,
the fault the runner must report, the framework and the factory building it (the factories
are in :mod:`gradoracle.selftest.mutant_rules` and
:mod:`gradoracle.selftest.mutant_frameworks`).  :mod:`gradoracle.selftest.mutants` is the
public entry point (and the ``load_adapter`` spec target).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gradoracle.results import Fault
from gradoracle.selftest.mutant_audit import (
    _torch_conv_bias_grad_spatial_mean,
    _torch_conv_filter_batch_mean,
    _torch_conv_filter_channels_reversed,
    _torch_conv_filter_first_four_samples,
    _torch_conv_filter_float16,
    _torch_conv_filter_scaled,
    _torch_conv_input_batch_mean,
    _torch_conv_input_dilation_ignored,
    _torch_conv_input_first_axis_stride,
    _torch_conv_input_groups_crossed,
    _torch_conv_input_kernel_axes_swapped,
    _torch_conv_input_same_pad_swapped,
    _torch_cross_entropy_smoothing_over_c_minus_1,
    _torch_cross_entropy_soft_target_argmax,
    _torch_cross_entropy_sum_divided_by_n,
    _torch_linear_hessian_cross_term_missing,
    _torch_linear_input_grad_last_row,
    _torch_linear_jvp_transposed,
    _torch_linear_weight_grad_batch_mean,
    _torch_max_pool_ceil_window_dropped,
    _torch_max_pool_dilation_ignored,
)
from gradoracle.selftest.mutant_frameworks import (
    _jax_avg_pool_ceil_overhang_counted,
    _jax_avg_pool_divided_by_k,
    _jax_conv_filter_groups_offset_dropped,
    _jax_conv_input_cropped_at_origin,
    _jax_cross_entropy_hessian_missing_mean,
    _jax_cross_entropy_smoothing_ignored,
    _jax_matmul_outer_reversed,
    _jax_max_pool_overlap_overwrites,
    _jax_relu_second_derivative_one,
    _jax_sigmoid_missing_one_minus,
    _jax_softmax_ce_hessian_missing_outer,
    _torch_avg_pool_count_include_pad_ignored,
    _torch_conv_filter_dilation_ignored,
    _torch_conv_input_no_rot180,
    _torch_conv_input_stride_not_dilated,
    _torch_conv_jvp_rot180,
    _torch_conv_layer_jvp_missing_bias_tangent,
    _torch_cross_entropy_hessian_missing_mean,
    _torch_cross_entropy_mean_missing_1_over_n,
    _torch_linear_bias_grad_mean,
    _torch_max_pool_layer_jvp_routes_the_minimum,
    _torch_relu_mask_inverted,
    _torch_relu_second_derivative_one,
    _torch_sigmoid_jvp_missing_one_minus,
    _torch_softmax_ce_forgot_y,
    _torch_softmax_ce_hessian_missing_outer,
    _torch_tanh_backward_wrong_jvp_right,
)
from gradoracle.selftest.mutant_rules import (
    AbsSignLost,
    AvgPoolCeilDivisorFullWindow,
    AvgPoolDividedByK,
    AvgPoolFlaxCeilDivisor,
    AvgPoolNotDivided,
    AvgPoolPadCountedWhenExcluded,
    BiasGradSummed,
    ConvBiasGradFirstSample,
    ConvFilterDeltaFlipped,
    ConvFilterDilationIgnored,
    ConvFilterFloat16Accumulation,
    ConvFilterGroupsCrossed,
    ConvFilterStrideNotDilated,
    ConvInputCroppedAtWrongBorder,
    ConvInputNoRot180,
    ConvInputPadKMinus2,
    ConvInputPadShifted,
    ConvInputStrideNotDilated,
    CorrectRules,
    CrossEntropyMeanMissingOneOverN,
    CrossEntropyMeanOverClasses,
    CrossEntropySmoothingIgnored,
    CrossEntropyWithoutMaxSubtraction,
    DenseWeightGradFirstRow,
    EluUsesOutput,
    EluVanishesNearZero,
    ExpDerivativeFromInput,
    GeluCachedPhiRatio,
    GeluTanhApproximation,
    GeluZeroBelowMinusThree,
    GlobalAvgPoolLastAxisOnly,
    LeakyReluSlopeDropped,
    LeakyReluZeroAtZero,
    LinearBiasGradFirstRow,
    LogReciprocalForgotten,
    MatmulOverwritesInput,
    MatmulScaledPermille,
    MaximumTieGivesZero,
    MaxPoolOverlapOverwrites,
    MaxPoolPaddingNotCropped,
    MaxPoolRouteAll,
    MaxPoolRouteCorner,
    MaxPoolRouteLast,
    OuterReversed,
    ReluDerivativeTwoAtZero,
    ReluMaskInverted,
    ReluMaskMissing,
    ReluThresholdMilli,
    SigmoidMissingOneMinus,
    SigmoidUnstableOverflow,
    SiluProductRuleDropped,
    SiluUnstableSigmoid,
    SinDerivativeSign,
    SoftmaxCEForgotY,
    SoftmaxCESignFlipped,
    SoftmaxCEWithoutMaxSubtraction,
    SoftplusLinearAboveFive,
    SoftplusSigmoidSign,
    SoftplusUnstableOverflow,
    SquareFactorTwoMissing,
    SumPoolForward,
    TanhDerivativeZeroBeyondThree,
    TanhNotSquared,
    TanhUnstableOverflow,
    TrueConvolution,
    VecmatOuterReversed,
    VecmatWNotTransposed,
    WNotTransposed,
    _numpy,
    _pass_through_dropped,
)

BOTH: tuple[str, ...] = ("float64", "float32")
SPEC_PREFIX = "gradoracle.selftest.mutants:MutantAdapter?name="


class UnknownMutantError(KeyError):
    """A mutant name that is not in the catalogue; the message suggests close names."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Mutant:
    """One deliberately wrong adapter and what the oracle must say about it."""

    name: str
    description: str
    rule: str  # the notes' rule it breaks (a ``notes:`` source label)
    targets: tuple[str, ...]
    expected_fault: Fault
    framework: str  # "numpy", "torch" or "jax"
    factory: Callable[[str], Any]
    dtypes: tuple[str, ...] = BOTH
    control: bool = False  # a negative control: not a bug, must survive
    #: the mode the mutant must be killed in: vjp (reverse), jvp (forward), hvp (second order)
    mode: str = "vjp"
    #: convention probes (:mod:`gradoracle.conventions`) it must fail with ``outside-subdifferential``
    probes: tuple[str, ...] = ()
    #: a layer mutant's hyper-parameter (:data:`gradoracle.selftest.layer_parameters.PARAMETERS`):
    #: the bug shows only when it is on, the gradient is right when it is off
    parameter: str = ""
    #: other localisations that count as killed: a bug whose first failing example may show it
    #: one way or another (a softmax without the max: NaN past 88.7, or float32 bits lost to
    #: subnormals below -87, right in float64: ``reduced-precision``)
    also_faults: tuple[Fault, ...] = ()

    @property
    def expected_faults(self) -> str:
        """The accepted localisations, ``|``-separated (``expected_fault`` first)."""
        return "|".join(str(f) for f in (self.expected_fault, *self.also_faults))

    @property
    def adapter_name(self) -> str:
        """The adapter name the mutant reports (``mutant:<name>``)."""
        return f"mutant:{self.name}"

    @property
    def spec(self) -> str:
        """The ``load_adapter`` spec string of this mutant."""
        return mutant_spec(self.name)

    def build(self) -> Any:
        """A fresh adapter instance (imports torch/jax for those mutants)."""
        return self.factory(self.adapter_name)

    def available(self) -> tuple[bool, str]:
        """Whether the mutant's framework is installed (numpy mutants always are)."""
        if self.framework == "numpy":
            return True, ""
        import importlib.util

        if importlib.util.find_spec(self.framework) is None:
            return False, f"{self.framework} is not installed"
        return True, ""


def mutant_spec(name: str) -> str:
    """``gradoracle.selftest.mutants:MutantAdapter?name=<name>``: the spec ``load_adapter`` understands."""
    return SPEC_PREFIX + name


# ======================================================================================
# The catalogue
# ======================================================================================

B, F_, A = Fault.BACKWARD, Fault.FORWARD, Fault.ADAPTER
FM, SO = Fault.FORWARD_MODE, Fault.SECOND_ORDER
#: What a mutant's convention probes must report.
OUTSIDE = Fault.OUTSIDE_SUBDIFFERENTIAL
MLP_CE = ("mlp-a-logits", "mlp-b-output-params", "mlp-c-hidden-activation", "mlp")

_ENTRIES: tuple[Mutant, ...] = (
    # identities 1, 2, 5, 6
    Mutant(
        "matvec-w-not-transposed",
        "z = W x: dJ/dx = W delta (W.reshape(m, n) for non-square W) instead of W^T delta",
        "notes:identity-1",
        ("matvec-jacobian", "matvec-weight-grad", "mlp-c-hidden-activation", "mlp"),
        B,
        "numpy",
        _numpy(WNotTransposed),
    ),
    Mutant(
        "vecmat-w-not-transposed",
        "z = x W: dJ/dx = delta W (reshaped) instead of delta W^T",
        "notes:identity-2",
        ("vecmat-jacobian", "vecmat-weight-grad"),
        B,
        "numpy",
        _numpy(VecmatWNotTransposed),
    ),
    Mutant(
        "identity-pass-through-dropped",
        "z = x: an output that is an input unchanged gets gradient 0 instead of u (J = 0, not I)",
        "notes:identity-3",
        ("identity-jacobian",),
        B,
        "numpy",
        _pass_through_dropped,
    ),
    Mutant(
        "matvec-outer-reversed",
        "z = W x: dJ/dW = (x delta^T) reshaped to W's shape instead of delta x^T",
        "notes:identity-5",
        ("matvec-weight-grad", "mlp-b-output-params", "mlp-e-hidden-params", "mlp"),
        B,
        "numpy",
        _numpy(OuterReversed),
    ),
    Mutant(
        "vecmat-outer-reversed",
        "z = x W: dJ/dW = (delta^T x) reshaped instead of x^T delta",
        "notes:identity-6",
        ("vecmat-weight-grad",),
        B,
        "numpy",
        _numpy(VecmatOuterReversed),
    ),
    Mutant(
        "matmul-scaled-1e-3",
        "every matmul gradient multiplied by 1 + 1e-3 (a detection-threshold case)",
        "notes:identity-5",
        ("matvec-jacobian", "vecmat-jacobian", "matvec-weight-grad", "vecmat-weight-grad", "mlp"),
        B,
        "numpy",
        _numpy(MatmulScaledPermille),
    ),
    Mutant(
        "matmul-backward-overwrites-input",
        "z = W x: the backward writes W^T delta into the saved x in place, then dJ/dW = delta x^T reads it",
        "notes:identity-5",
        ("matvec-weight-grad", "mlp-b-output-params", "mlp"),
        B,
        "numpy",
        _numpy(MatmulOverwritesInput),
    ),
    # identity 4
    Mutant(
        "relu-mask-missing",
        "ReLU backward passes delta unmasked (1(x > 0) forgotten)",
        "notes:identity-4",
        ("elementwise-relu", "mlp-d-relu-mask", "mlp"),
        B,
        "numpy",
        _numpy(ReluMaskMissing),
    ),
    Mutant(
        "relu-mask-inverted",
        "ReLU backward masks with 1(x <= 0) instead of 1(x > 0)",
        "notes:identity-4",
        ("elementwise-relu", "mlp-d-relu-mask", "mlp-e-hidden-params", "mlp"),
        B,
        "numpy",
        _numpy(ReluMaskInverted),
    ),
    Mutant(
        "leaky-relu-slope-dropped",
        "leaky_relu' = 0 for x < 0 (the 0.01 slope dropped)",
        "notes:identity-4",
        ("elementwise-leaky-relu",),
        B,
        "numpy",
        _numpy(LeakyReluSlopeDropped),
    ),
    Mutant(
        "sigmoid-missing-one-minus",
        "sigmoid' = s instead of s (1 - s)",
        "notes:identity-4",
        ("elementwise-sigmoid",),
        B,
        "numpy",
        _numpy(SigmoidMissingOneMinus),
    ),
    Mutant(
        "tanh-not-squared",
        "tanh' = 1 - tanh instead of 1 - tanh^2",
        "notes:identity-4",
        ("elementwise-tanh",),
        B,
        "numpy",
        _numpy(TanhNotSquared),
    ),
    Mutant(
        "exp-derivative-from-input",
        "exp' computed as x (the cached input) instead of exp(x) (the output)",
        "notes:identity-4",
        ("elementwise-exp",),
        B,
        "numpy",
        _numpy(ExpDerivativeFromInput),
    ),
    Mutant(
        "log-reciprocal-forgotten",
        "log' = x instead of 1 / x",
        "notes:identity-4",
        ("elementwise-log",),
        B,
        "numpy",
        _numpy(LogReciprocalForgotten),
    ),
    Mutant(
        "softplus-sigmoid-sign",
        "softplus' = sigmoid(-x) instead of sigmoid(x)",
        "notes:identity-4",
        ("elementwise-softplus",),
        B,
        "numpy",
        _numpy(SoftplusSigmoidSign),
    ),
    Mutant(
        "sin-derivative-sign",
        "sin' = -cos instead of cos",
        "notes:identity-4",
        ("elementwise-sin",),
        B,
        "numpy",
        _numpy(SinDerivativeSign),
    ),
    Mutant(
        "square-factor-two-missing",
        "(x^2)' = x instead of 2 x",
        "notes:identity-4",
        ("elementwise-square",),
        B,
        "numpy",
        _numpy(SquareFactorTwoMissing),
    ),
    Mutant(
        "abs-sign-lost",
        "|x|' = 1 instead of sign(x)",
        "notes:identity-4",
        ("elementwise-abs",),
        B,
        "numpy",
        _numpy(AbsSignLost),
    ),
    Mutant(
        "elu-uses-output",
        "elu' for x < 0 = exp(x) - 1 (the output) instead of exp(x)",
        "notes:identity-4",
        ("elementwise-elu",),
        B,
        "numpy",
        _numpy(EluUsesOutput),
    ),
    Mutant(
        "silu-product-rule-dropped",
        "silu' = sigmoid(x): the x s (1 - s) term of the product rule dropped",
        "notes:identity-4",
        ("elementwise-silu",),
        B,
        "numpy",
        _numpy(SiluProductRuleDropped),
    ),
    Mutant(
        "gelu-tanh-approximation",
        "GELU backward is the tanh approximation's derivative while the forward is the exact erf form",
        "notes:identity-4",
        ("elementwise-gelu",),
        B,
        "numpy",
        _numpy(GeluTanhApproximation),
    ),
    # kinks (#13): values outside the generalised gradient, rules off just next to a kink
    Mutant(
        "relu-derivative-two-at-0",
        "relu'(0) = 2: outside the generalised gradient [0, 1] (right everywhere else)",
        "notes:identity-4",
        (),
        OUTSIDE,
        "numpy",
        _numpy(ReluDerivativeTwoAtZero),
        probes=("relu-at-0",),
    ),
    Mutant(
        "leaky-relu-zero-at-0",
        "leaky_relu'(0) = 0 (MyGrad): outside [0.01, 1] (right everywhere else)",
        "notes:identity-4",
        (),
        OUTSIDE,
        "numpy",
        _numpy(LeakyReluZeroAtZero),
        probes=("leaky-relu-at-0",),
    ),
    Mutant(
        "maximum-tie-gives-zero",
        "maximum(a, b) at a = b gives 0 to both (MyGrad): d/dx max(x, x) = 0, outside {(t, 1 - t)}",
        "notes:identity-4",
        (),
        OUTSIDE,
        "numpy",
        _numpy(MaximumTieGivesZero),
        probes=("maximum-tie", "maximum-same-input"),
    ),
    Mutant(
        "relu-threshold-1e-3",
        "ReLU's rule written x > 1e-3 instead of x > 0: relu' = 0 on (0, 1e-3]",
        "notes:identity-4",
        ("elementwise-relu", "mlp-d-relu-mask"),
        B,
        "numpy",
        _numpy(ReluThresholdMilli),
        probes=("relu-at-0",),
    ),
    Mutant(
        "elu-vanishes-near-0",
        "elu' = 0 on (-1e-3, 1e-3) (tinygrad), where ELU (alpha 1) is smooth with elu' ~ 1",
        "notes:identity-4",
        ("elementwise-elu",),
        B,
        "numpy",
        _numpy(EluVanishesNearZero),
        probes=("elu-at-0",),
    ),
    # MLP
    Mutant(
        "softmax-ce-forgot-y",
        "delta2 = yhat (the - y of yhat - y forgotten)",
        "notes:mlp",
        MLP_CE,
        B,
        "numpy",
        _numpy(SoftmaxCEForgotY),
    ),
    Mutant(
        "softmax-ce-sign-flipped",
        "delta2 = y - yhat (sign flipped)",
        "notes:mlp",
        MLP_CE,
        B,
        "numpy",
        _numpy(SoftmaxCESignFlipped),
    ),
    Mutant(
        "bias-grad-summed",
        "dJ/db = sum(delta) in every entry (reduced over the wrong axis) instead of delta",
        "notes:mlp",
        ("mlp-b-output-params", "mlp-e-hidden-params", "mlp"),
        B,
        "numpy",
        _numpy(BiasGradSummed),
    ),
    Mutant(
        "cross-entropy-mean-over-classes",
        "FORWARD: J = -mean_k y_k log yhat_k (mean, not sum), with the consistent backward (yhat - y)/m",
        "notes:mlp",
        ("mlp-a-logits", "mlp"),
        F_,
        "numpy",
        _numpy(CrossEntropyMeanOverClasses),
    ),
    # conv
    Mutant(
        "conv-filter-delta-flipped",
        "dJ/dK = X * rot180(delta) instead of X * delta",
        "notes:conv-filter",
        ("conv-filter",),
        B,
        "numpy",
        _numpy(ConvFilterDeltaFlipped),
    ),
    Mutant(
        "conv-filter-float16-accumulation",
        "float32 dJ/dK computed and accumulated in float16 (a reduced-precision mode: named as such, "
        "with its ~11 correct mantissa bits, not as a wrong rule; right in float64)",
        "notes:conv-filter",
        ("conv-filter",),
        Fault.PRECISION,
        "numpy",
        _numpy(ConvFilterFloat16Accumulation),
        dtypes=("float32",),
    ),
    Mutant(
        "conv-input-no-rot180",
        "dJ/dX = pad(delta, k-1) * K: the rot180 of the kernel forgotten",
        "notes:conv-input",
        ("conv-input",),
        B,
        "numpy",
        _numpy(ConvInputNoRot180),
    ),
    Mutant(
        "conv-input-pad-shifted",
        "delta padded by k-2 before and k after instead of k-1 on both sides (dJ/dX shifted a pixel)",
        "notes:conv-input",
        ("conv-input",),
        B,
        "numpy",
        _numpy(ConvInputPadShifted),
    ),
    Mutant(
        "conv-input-pad-k-minus-2",
        "delta padded by k-2 on both sides: dJ/dX has the wrong shape (the engine rejects it: ADAPTER)",
        "notes:conv-input",
        ("conv-input",),
        A,
        "numpy",
        _numpy(ConvInputPadKMinus2),
    ),
    Mutant(
        "conv-true-convolution",
        "FORWARD: a true convolution (kernel flipped) instead of a cross-correlation, backward consistent",
        "notes:conv-filter",
        ("conv-filter", "conv-input"),
        F_,
        "numpy",
        _numpy(TrueConvolution),
    ),
    # pooling
    Mutant(
        "max-pool-route-last",
        "max-pool router sends delta to the last (bottom-right) pixel of every window",
        "notes:max-pool",
        ("max-pool",),
        B,
        "numpy",
        _numpy(MaxPoolRouteLast),
    ),
    Mutant(
        "max-pool-route-corner",
        "max-pool router sends delta to a fixed corner (top-left) of every window",
        "notes:max-pool",
        ("max-pool",),
        B,
        "numpy",
        _numpy(MaxPoolRouteCorner),
    ),
    Mutant(
        "max-pool-route-all",
        "max-pool router sends delta to every pixel of the window",
        "notes:max-pool",
        ("max-pool",),
        B,
        "numpy",
        _numpy(MaxPoolRouteAll),
    ),
    Mutant(
        "avg-pool-divided-by-k",
        "average-pool backward spreads delta / k instead of delta / k^2",
        "notes:avg-pool",
        ("avg-pool",),
        B,
        "numpy",
        _numpy(AvgPoolDividedByK),
    ),
    Mutant(
        "avg-pool-not-divided",
        "average-pool backward spreads delta undivided (1/k^2 forgotten)",
        "notes:avg-pool",
        ("avg-pool",),
        B,
        "numpy",
        _numpy(AvgPoolNotDivided),
    ),
    Mutant(
        "avg-pool-forward-sum",
        "FORWARD: the average pool computes the window sum; its backward spreads delta undivided",
        "notes:avg-pool",
        ("avg-pool",),
        F_,
        "numpy",
        _numpy(SumPoolForward),
    ),
    # PyTorch wrappers
    Mutant(
        "torch-relu-mask-inverted",
        "PyTorch: torch.relu swapped for an autograd.Function whose backward masks with 1(x <= 0)",
        "notes:mlp",
        ("elementwise-relu", "mlp-d-relu-mask", "mlp"),
        B,
        "torch",
        _torch_relu_mask_inverted,
    ),
    Mutant(
        "torch-conv-input-no-rot180",
        "PyTorch: F.conv2d swapped for an autograd.Function whose input gradient skips rot180(K)",
        "notes:conv-input",
        ("conv-input",),
        B,
        "torch",
        _torch_conv_input_no_rot180,
    ),
    Mutant(
        "torch-softmax-ce-forgot-y",
        "PyTorch: F.cross_entropy swapped for an autograd.Function whose backward returns yhat",
        "notes:mlp",
        ("mlp-a-logits", "mlp"),
        B,
        "torch",
        _torch_softmax_ce_forgot_y,
    ),
    # JAX wrappers
    Mutant(
        "jax-sigmoid-missing-one-minus",
        "JAX: jax.nn.sigmoid swapped for a custom_vjp whose backward is g * s (1 - s missing)",
        "notes:identity-4",
        ("elementwise-sigmoid",),
        B,
        "jax",
        _jax_sigmoid_missing_one_minus,
    ),
    Mutant(
        "jax-avg-pool-divided-by-k",
        "JAX: the average pool swapped for a custom_vjp that spreads g / k instead of g / k^2",
        "notes:avg-pool",
        ("avg-pool",),
        B,
        "jax",
        _jax_avg_pool_divided_by_k,
    ),
    Mutant(
        "jax-matmul-outer-reversed",
        "JAX: jnp.matmul swapped for a custom_vjp whose dJ/dW for W x is (x g^T) reshaped",
        "notes:identity-5",
        ("matvec-weight-grad", "mlp-b-output-params"),
        B,
        "jax",
        _jax_matmul_outer_reversed,
    ),
    # forward mode and second order (issue 15): one rule wrong, the others right
    Mutant(
        "torch-sigmoid-jvp-missing-one-minus",
        "PyTorch: sigmoid's forward-mode rule is J v = s v ((1 - s) dropped); its backward is right",
        "notes:identity-4",
        ("elementwise-sigmoid",),
        FM,
        "torch",
        _torch_sigmoid_jvp_missing_one_minus,
        mode="jvp",
    ),
    Mutant(
        "torch-conv-jvp-rot180",
        "PyTorch: conv2d's forward-mode rule correlates the input tangent with rot180(K); backward right",
        "notes:conv-input",
        ("conv-input",),
        FM,
        "torch",
        _torch_conv_jvp_rot180,
        mode="jvp",
    ),
    Mutant(
        "torch-tanh-backward-wrong-jvp-right",
        "PyTorch: tanh's backward is u (1 - tanh) (square dropped) while its forward mode is right: "
        "the transpose identity u^T (J v) = (u^T J) v pins the reverse rule",
        "notes:identity-4",
        ("elementwise-tanh",),
        B,
        "torch",
        _torch_tanh_backward_wrong_jvp_right,
        mode="jvp",
    ),
    Mutant(
        "torch-relu-second-derivative-one",
        "PyTorch: relu(x) + (x - x.detach())^2 / 2: value and gradient right, double backward f'' = 1",
        "notes:identity-4",
        ("elementwise-relu", "mlp-d-relu-mask", "mlp"),
        SO,
        "torch",
        _torch_relu_second_derivative_one,
        mode="hvp",
    ),
    Mutant(
        "torch-softmax-ce-hessian-missing-outer",
        "PyTorch: cross-entropy with the right gradient yhat - y whose double backward is diag(yhat) "
        "(the - yhat yhat^T term missing)",
        "notes:mlp",
        ("mlp-a-logits", "mlp-c-hidden-activation", "mlp"),
        SO,
        "torch",
        _torch_softmax_ce_hessian_missing_outer,
        mode="hvp",
    ),
    Mutant(
        "jax-relu-second-derivative-one",
        "JAX: relu(x) + (x - stop_gradient(x))^2 / 2: first order right, second derivative 1 instead of 0",
        "notes:identity-4",
        ("elementwise-relu", "mlp-d-relu-mask"),
        SO,
        "jax",
        _jax_relu_second_derivative_one,
        mode="hvp",
    ),
    Mutant(
        "jax-softmax-ce-hessian-missing-outer",
        "JAX: cross-entropy whose gradient is right and whose Hessian misses - yhat yhat^T",
        "notes:mlp",
        ("mlp-a-logits", "mlp-b-output-params"),
        SO,
        "jax",
        _jax_softmax_ce_hessian_missing_outer,
        mode="hvp",
    ),
    # forward mode and second order on the layer identities (issue 15, second round)
    Mutant(
        "torch-conv-layer-jvp-missing-bias-tangent",
        "PyTorch: F.conv{1,2,3}d's forward-mode rule is conv(dX, K) + conv(X, dK), the bias tangent db "
        "dropped; value and backward right",
        "notes:conv-filter",
        ("conv1d-layer", "conv2d-layer", "conv3d-layer"),
        FM,
        "torch",
        _torch_conv_layer_jvp_missing_bias_tangent,
        mode="jvp",
    ),
    Mutant(
        "torch-max-pool-layer-jvp-routes-the-minimum",
        "PyTorch: F.max_pool{1,2,3}d's forward-mode rule takes each window's tangent at its minimum, not its "
        "maximum (the router pointed at the wrong element); value and backward right",
        "notes:max-pool",
        ("max-pool-layer",),
        FM,
        "torch",
        _torch_max_pool_layer_jvp_routes_the_minimum,
        mode="jvp",
    ),
    Mutant(
        "torch-cross-entropy-hessian-missing-mean",
        "[mean, N > 1] PyTorch: F.cross_entropy whose value and gradient are right but whose double "
        "backward is the sum's (the 1/N of reduction='mean' missing in second order)",
        "notes:mlp",
        ("cross-entropy-batch", "mlp-batch"),
        SO,
        "torch",
        _torch_cross_entropy_hessian_missing_mean,
        mode="hvp",
    ),
    Mutant(
        "jax-cross-entropy-hessian-missing-mean",
        "[mean, N > 1] JAX: batched cross-entropy with the right value and gradient whose Hessian misses "
        "the 1/N of the mean",
        "notes:mlp",
        ("cross-entropy-batch",),
        SO,
        "jax",
        _jax_cross_entropy_hessian_missing_mean,
        mode="hvp",
    ),
)

CONV_LAYERS = ("conv1d-layer", "conv2d-layer", "conv3d-layer")

#: Bugs that show under one hyper-parameter of the layers only (the parameter in brackets).
_LAYER_ENTRIES: tuple[Mutant, ...] = (
    Mutant(
        "linear-bias-grad-first-row",
        "[N > 1] Z = X W^T + b: dJ/db = delta of the first batch row, not summed over the batch",
        "notes:identity-5",
        ("linear-layer", "mlp-batch"),
        B,
        "numpy",
        _numpy(LinearBiasGradFirstRow),
        parameter="N > 1",
    ),
    Mutant(
        "dense-weight-grad-first-row",
        "[N > 1] Z = X W + b: dJ/dW = x_1^T delta_1 (first row only) instead of X^T delta",
        "notes:identity-6",
        ("dense-layer",),
        B,
        "numpy",
        _numpy(DenseWeightGradFirstRow),
        parameter="N > 1",
    ),
    Mutant(
        "cross-entropy-mean-missing-1-over-n",
        "[reduction=mean, N > 1] dJ/dz = yhat - t~ per row: the mean's 1/N forgotten",
        "notes:mlp",
        ("cross-entropy-batch", "mlp-batch"),
        B,
        "numpy",
        _numpy(CrossEntropyMeanMissingOneOverN),
        parameter="reduction=mean",
    ),
    Mutant(
        "cross-entropy-smoothing-ignored",
        "[label_smoothing > 0] dJ/dz = r (yhat - t) with the unsmoothed target",
        "notes:mlp",
        ("cross-entropy-batch", "mlp-batch"),
        B,
        "numpy",
        _numpy(CrossEntropySmoothingIgnored),
        parameter="label_smoothing > 0",
    ),
    Mutant(
        "conv-input-stride-not-dilated",
        "[stride > 1] dJ/dX: the transposed convolution skips dilating delta by the stride",
        "notes:conv-input",
        CONV_LAYERS,
        B,
        "numpy",
        _numpy(ConvInputStrideNotDilated),
        parameter="stride > 1",
    ),
    Mutant(
        "conv-filter-stride-not-dilated",
        "[stride > 1] dJ/dK: the padded input correlated with delta not dilated by the stride",
        "notes:conv-filter",
        CONV_LAYERS,
        B,
        "numpy",
        _numpy(ConvFilterStrideNotDilated),
        parameter="stride > 1",
    ),
    Mutant(
        "conv-filter-dilation-ignored",
        "[dilation > 1] dJ/dK sampled at every offset a instead of a d",
        "notes:conv-filter",
        CONV_LAYERS,
        B,
        "numpy",
        _numpy(ConvFilterDilationIgnored),
        parameter="dilation > 1",
    ),
    Mutant(
        "conv-input-cropped-at-wrong-border",
        "[padding > 0] dJ/dX: the transposed convolution cropped at one border only (shifted by the padding)",
        "notes:conv-input",
        CONV_LAYERS,
        B,
        "numpy",
        _numpy(ConvInputCroppedAtWrongBorder),
        parameter="padding > 0",
    ),
    Mutant(
        "conv-filter-groups-crossed",
        "[groups > 1] dJ/dK pairs each group's delta with the mirrored group's input channels",
        "notes:conv-filter",
        CONV_LAYERS,
        B,
        "numpy",
        _numpy(ConvFilterGroupsCrossed),
        parameter="groups > 1",
    ),
    Mutant(
        "conv-bias-grad-first-sample",
        "[N > 1] dJ/db = delta of the first sample summed over space, not over the batch",
        "notes:conv-filter",
        CONV_LAYERS,
        B,
        "numpy",
        _numpy(ConvBiasGradFirstSample),
        parameter="N > 1",
    ),
    Mutant(
        "max-pool-overlap-overwrites",
        "[stride < window] windows sharing a maximum overwrite its gradient instead of accumulating",
        "notes:max-pool",
        ("max-pool-layer",),
        B,
        "numpy",
        _numpy(MaxPoolOverlapOverwrites),
        parameter="overlapping windows",
    ),
    Mutant(
        "max-pool-padding-not-cropped",
        "[padding > 0] the routed gradient cropped from the padded map's origin (shifted by the padding)",
        "notes:max-pool",
        ("max-pool-layer",),
        B,
        "numpy",
        _numpy(MaxPoolPaddingNotCropped),
        parameter="padding > 0",
    ),
    Mutant(
        "avg-pool-ceil-divisor-full-window",
        "[ceil_mode] the backward divides a partial window by the full window size (forward clipped)",
        "notes:avg-pool",
        ("avg-pool-layer",),
        B,
        "numpy",
        _numpy(AvgPoolCeilDivisorFullWindow),
        parameter="ceil_mode",
    ),
    Mutant(
        "avg-pool-pad-counted-when-excluded",
        "[padding > 0, count_include_pad=False] the backward divides by the padded window",
        "notes:avg-pool",
        ("avg-pool-layer",),
        B,
        "numpy",
        _numpy(AvgPoolPadCountedWhenExcluded),
        parameter="count_include_pad=False",
    ),
    Mutant(
        "avg-pool-flax-ceil-divisor",
        "FORWARD [ceil_mode] every window divided by the full window size (Flax's convention), forward "
        "and backward: another function, not a backward bug",
        "notes:avg-pool",
        ("avg-pool-layer",),
        F_,
        "numpy",
        _numpy(AvgPoolFlaxCeilDivisor),
        parameter="ceil_mode",
    ),
    Mutant(
        "global-avg-pool-last-axis-only",
        "[2-D/3-D maps] global average pooling's backward divides by the last axis, not prod(S)",
        "notes:avg-pool",
        ("global-avg-pool",),
        B,
        "numpy",
        _numpy(GlobalAvgPoolLastAxisOnly),
        parameter="2-D/3-D maps",
    ),
)


#: PyTorch and JAX layer mutants: the framework's own op with one gradient rewritten from a
#: formula that is right exactly when the parameter is off (:mod:`gradoracle.selftest.mutant_frameworks`).
_FRAMEWORK_LAYER_ENTRIES: tuple[Mutant, ...] = (
    Mutant(
        "torch-conv-input-stride-not-dilated",
        "PyTorch [stride > 1]: F.conv{1,2,3}d's input gradient is conv_transpose(delta, K) with stride "
        "1: delta not dilated by the stride",
        "notes:conv-input",
        CONV_LAYERS,
        B,
        "torch",
        _torch_conv_input_stride_not_dilated,
        parameter="stride > 1",
    ),
    Mutant(
        "torch-conv-filter-dilation-ignored",
        "PyTorch [dilation > 1]: the filter gradient correlates the padded input with delta at offsets "
        "a, not a d",
        "notes:conv-filter",
        CONV_LAYERS,
        B,
        "torch",
        _torch_conv_filter_dilation_ignored,
        parameter="dilation > 1",
    ),
    Mutant(
        "torch-linear-bias-grad-mean",
        "PyTorch [N > 1]: F.linear's bias gradient is delta averaged over the batch rows instead of summed",
        "notes:identity-5",
        ("linear-layer", "mlp-batch"),
        B,
        "torch",
        _torch_linear_bias_grad_mean,
        parameter="N > 1",
    ),
    Mutant(
        "torch-cross-entropy-mean-missing-1-over-n",
        "PyTorch [reduction=mean, N > 1]: F.cross_entropy's backward is yhat - t~ per row, the mean's "
        "1/N forgotten",
        "notes:mlp",
        ("cross-entropy-batch", "mlp-batch"),
        B,
        "torch",
        _torch_cross_entropy_mean_missing_1_over_n,
        parameter="reduction=mean",
    ),
    Mutant(
        "torch-avg-pool-count-include-pad-ignored",
        "PyTorch [count_include_pad=False, padding > 0]: the average pool's backward is recomputed with "
        "the default count_include_pad=True",
        "notes:avg-pool",
        ("avg-pool-layer",),
        B,
        "torch",
        _torch_avg_pool_count_include_pad_ignored,
        parameter="count_include_pad=False",
    ),
    Mutant(
        "jax-max-pool-overlap-overwrites",
        "JAX [overlapping windows]: a custom_vjp max pool whose router sets (.at[].set) each window's "
        "delta at its maximum instead of adding it",
        "notes:max-pool",
        ("max-pool-layer",),
        B,
        "jax",
        _jax_max_pool_overlap_overwrites,
        parameter="overlapping windows",
    ),
    Mutant(
        "jax-conv-filter-groups-offset-dropped",
        "JAX [groups > 1]: a custom_vjp convolution whose filter gradient pairs every group's delta "
        "with the first group's input channels",
        "notes:conv-filter",
        CONV_LAYERS,
        B,
        "jax",
        _jax_conv_filter_groups_offset_dropped,
        parameter="groups > 1",
    ),
    Mutant(
        "jax-conv-input-cropped-at-origin",
        "JAX [padding > 0]: a custom_vjp convolution whose input gradient is the padded input's "
        "gradient cropped from its origin, not from the padding",
        "notes:conv-input",
        CONV_LAYERS,
        B,
        "jax",
        _jax_conv_input_cropped_at_origin,
        parameter="padding > 0",
    ),
    Mutant(
        "jax-avg-pool-ceil-overhang-counted",
        "JAX [ceil_mode]: a custom_vjp average pool whose backward divisor counts the ceil-mode "
        "overhang as input",
        "notes:avg-pool",
        ("avg-pool-layer",),
        B,
        "jax",
        _jax_avg_pool_ceil_overhang_counted,
        parameter="ceil_mode",
    ),
    Mutant(
        "jax-cross-entropy-smoothing-ignored",
        "JAX [label_smoothing > 0]: a custom_vjp cross-entropy whose backward uses the unsmoothed target",
        "notes:mlp",
        ("cross-entropy-batch", "mlp-batch"),
        B,
        "jax",
        _jax_cross_entropy_smoothing_ignored,
        parameter="label_smoothing > 0",
    ),
)

#: The second adversarial audit: framework bugs the default checks missed before their
#: configuration or value range was drawn (asymmetric 'same' padding, N > 4, the elementwise
#: tails), and more of the kind that were already caught, kept so that they stay caught.
_AUDIT_ENTRIES: tuple[Mutant, ...] = (
    Mutant(
        "softplus-linear-above-5",
        "softplus' = 1 for x > 5 (a linear-tail threshold of 5 in the backward, forward exact)",
        "notes:identity-4",
        ("elementwise-softplus",),
        B,
        "numpy",
        _numpy(SoftplusLinearAboveFive),
    ),
    Mutant(
        "tanh-derivative-zero-beyond-3",
        "tanh' = 0 for |x| > 3 (the saturated branch cut too early)",
        "notes:identity-4",
        ("elementwise-tanh",),
        B,
        "numpy",
        _numpy(TanhDerivativeZeroBeyondThree),
    ),
    Mutant(
        "gelu-zero-below-minus-3",
        "gelu' = 0 for x < -3 (an approximation's clamp)",
        "notes:identity-4",
        ("elementwise-gelu",),
        B,
        "numpy",
        _numpy(GeluZeroBelowMinusThree),
    ),
    Mutant(
        "torch-conv-filter-float16",
        "PyTorch: float32 dJ/dK of F.conv{1,2,3}d computed from float16-rounded operands (a reduced-"
        "precision mode, right in float64)",
        "notes:conv-filter",
        CONV_LAYERS,
        Fault.PRECISION,
        "torch",
        _torch_conv_filter_float16,
        dtypes=("float32",),
    ),
    Mutant(
        "torch-conv-filter-scaled-1e-4",
        "PyTorch: F.conv{1,2,3}d's dJ/dK multiplied by 1 + 1e-4",
        "notes:conv-filter",
        CONV_LAYERS,
        B,
        "torch",
        _torch_conv_filter_scaled,
    ),
    Mutant(
        "torch-linear-input-grad-last-row",
        "PyTorch: F.linear's dJ/dX wrong on the last row only (W's last output row dropped there)",
        "notes:identity-5",
        ("linear-layer", "mlp-batch"),
        B,
        "torch",
        _torch_linear_input_grad_last_row,
    ),
    Mutant(
        "torch-linear-jvp-transposed",
        "PyTorch: F.linear's forward-mode rule pushes dX through W instead of W^T (the vjp's matrix, "
        "which only fits a square W); reverse mode right",
        "notes:identity-5",
        ("linear-layer", "mlp-batch"),
        FM,
        "torch",
        _torch_linear_jvp_transposed,
        mode="jvp",
    ),
    Mutant(
        "torch-linear-hessian-cross-term-missing",
        "PyTorch: F.linear whose weight gradient reads a detached X: gradient right, the double "
        "backward misses (H v)_W = U^T v_X",
        "notes:identity-5",
        ("linear-layer", "mlp-batch"),
        SO,
        "torch",
        _torch_linear_hessian_cross_term_missing,
        mode="hvp",
    ),
)

#: The second audit's layer mutants: PyTorch's op, one gradient rewritten from a formula right
#: exactly when the parameter is off (:mod:`gradoracle.selftest.mutant_audit`).
_AUDIT_LAYER_ENTRIES: tuple[Mutant, ...] = (
    Mutant(
        "torch-conv-input-dilation-ignored",
        "PyTorch [dilation > 1]: dJ/dX spreads each kernel tap at offset a, not a d",
        "notes:conv-input",
        CONV_LAYERS,
        B,
        "torch",
        _torch_conv_input_dilation_ignored,
        parameter="dilation > 1",
    ),
    Mutant(
        "torch-conv-input-groups-crossed",
        "PyTorch [groups > 1]: dJ/dX spreads each group's delta with the mirrored group's filters",
        "notes:conv-input",
        CONV_LAYERS,
        B,
        "torch",
        _torch_conv_input_groups_crossed,
        parameter="groups > 1",
    ),
    Mutant(
        "torch-conv-input-same-pad-swapped",
        "PyTorch [asymmetric padding]: dJ/dX cropped with the padding's (before, after) swapped, as if "
        "'same' put its odd extra element first",
        "notes:conv-input",
        CONV_LAYERS,
        B,
        "torch",
        _torch_conv_input_same_pad_swapped,
        parameter="asymmetric padding",
    ),
    Mutant(
        "torch-conv-input-first-axis-stride",
        "PyTorch [anisotropic stride]: dJ/dX dilates delta by the first axis's stride on every axis",
        "notes:conv-input",
        ("conv2d-layer", "conv3d-layer"),
        B,
        "torch",
        _torch_conv_input_first_axis_stride,
        parameter="anisotropic stride",
    ),
    Mutant(
        "torch-conv-input-kernel-axes-swapped",
        "PyTorch [square 2-D kernel]: dJ/dX with the kernel's two spatial axes swapped (an HW/WH slip "
        "that only fits a square kernel)",
        "notes:conv-input",
        ("conv2d-layer",),
        B,
        "torch",
        _torch_conv_input_kernel_axes_swapped,
        parameter="square 2-D kernel",
    ),
    Mutant(
        "torch-conv-input-batch-mean",
        "PyTorch [N > 1]: every sample gets the batch's mean dJ/dX (a batch axis reduced)",
        "notes:conv-input",
        CONV_LAYERS,
        B,
        "torch",
        _torch_conv_input_batch_mean,
        parameter="N > 1",
    ),
    Mutant(
        "torch-conv-filter-channels-reversed",
        "PyTorch [C_in/groups > 1]: dJ/dK with its input-channel axis reversed (a channel permutation)",
        "notes:conv-filter",
        CONV_LAYERS,
        B,
        "torch",
        _torch_conv_filter_channels_reversed,
        parameter="C_in/groups > 1",
    ),
    Mutant(
        "torch-conv-filter-batch-mean",
        "PyTorch [N > 1]: dJ/dK averaged over the batch instead of summed",
        "notes:conv-filter",
        CONV_LAYERS,
        B,
        "torch",
        _torch_conv_filter_batch_mean,
        parameter="N > 1",
    ),
    Mutant(
        "torch-conv-filter-first-four-samples",
        "PyTorch [N > 4]: dJ/dK summed over the first four samples only (a batch tile never advanced)",
        "notes:conv-filter",
        CONV_LAYERS,
        B,
        "torch",
        _torch_conv_filter_first_four_samples,
        parameter="N > 4",
    ),
    Mutant(
        "torch-conv-bias-grad-spatial-mean",
        "PyTorch [output positions > 1]: dJ/db summed over the batch and averaged over space",
        "notes:conv-filter",
        CONV_LAYERS,
        B,
        "torch",
        _torch_conv_bias_grad_spatial_mean,
        parameter="output positions > 1",
    ),
    Mutant(
        "torch-max-pool-ceil-window-dropped",
        "PyTorch [ceil_mode]: the max pool's backward routes the floor-mode windows only (the partial "
        "window's delta dropped)",
        "notes:max-pool",
        ("max-pool-layer",),
        B,
        "torch",
        _torch_max_pool_ceil_window_dropped,
        parameter="ceil_mode",
    ),
    Mutant(
        "torch-max-pool-dilation-ignored",
        "PyTorch [dilation > 1]: the router maps a window's argmax offset a d back to p s - pad + a",
        "notes:max-pool",
        ("max-pool-layer",),
        B,
        "torch",
        _torch_max_pool_dilation_ignored,
        parameter="dilation > 1",
    ),
    Mutant(
        "torch-linear-weight-grad-batch-mean",
        "PyTorch [N > 1]: F.linear's dJ/dW averaged over the batch rows instead of summed",
        "notes:identity-5",
        ("linear-layer", "mlp-batch"),
        B,
        "torch",
        _torch_linear_weight_grad_batch_mean,
        parameter="N > 1",
    ),
    Mutant(
        "torch-cross-entropy-sum-divided-by-n",
        "PyTorch [reduction=sum]: F.cross_entropy's backward divides by N under 'sum' too",
        "notes:mlp",
        ("cross-entropy-batch", "mlp-batch"),
        B,
        "torch",
        _torch_cross_entropy_sum_divided_by_n,
        parameter="reduction=sum",
    ),
    Mutant(
        "torch-cross-entropy-smoothing-over-c-minus-1",
        "PyTorch [label_smoothing > 0]: the backward smooths with eps / (C - 1) off the true class, the "
        "forward with eps / C",
        "notes:mlp",
        ("cross-entropy-batch", "mlp-batch"),
        B,
        "torch",
        _torch_cross_entropy_smoothing_over_c_minus_1,
        parameter="label_smoothing > 0",
    ),
    Mutant(
        "torch-cross-entropy-soft-target-argmax",
        "PyTorch [probability targets]: the backward replaces a probability target by the one-hot of "
        "its argmax",
        "notes:mlp",
        ("cross-entropy-batch", "mlp-batch"),
        B,
        "torch",
        _torch_cross_entropy_soft_target_argmax,
        parameter="probability targets",
    ),
)

#: Unstable backward passes at the functions' tails (the textbook forms through exp(|x|)):
#: right in the bulk, inf/inf = NaN where an intermediate overflows.  float32's exp overflows
#: past 88.7, float64's past 709.8 (beyond the draws), so most are run in float32 only.  The
#: runner reports a non-finite gradient as a broken adapter contract (fault ``adapter``, the
#: message names the element and the example), whatever the reference there.
_TAIL_ENTRIES: tuple[Mutant, ...] = (
    Mutant(
        "sigmoid-unstable-overflow",
        "sigmoid' = e^-x / (1 + e^-x)^2 (NaN once e^-x overflows: x < -88.7 in float32)",
        "notes:identity-4",
        ("elementwise-sigmoid",),
        Fault.ADAPTER,
        "numpy",
        _numpy(SigmoidUnstableOverflow),
        dtypes=("float32",),
    ),
    Mutant(
        "softplus-unstable-overflow",
        "softplus' = e^x / (1 + e^x) (NaN once e^x overflows: x > 88.7 in float32)",
        "notes:identity-4",
        ("elementwise-softplus",),
        Fault.ADAPTER,
        "numpy",
        _numpy(SoftplusUnstableOverflow),
        dtypes=("float32",),
    ),
    Mutant(
        "tanh-unstable-overflow",
        "tanh' = 4 e^2x / (1 + e^2x)^2 (NaN once e^2x overflows: x > 44.4 in float32)",
        "notes:identity-4",
        ("elementwise-tanh",),
        Fault.ADAPTER,
        "numpy",
        _numpy(TanhUnstableOverflow),
        dtypes=("float32",),
    ),
    Mutant(
        "silu-unstable-sigmoid",
        "silu' = s (1 + x (1 - s)) with s = e^x / (1 + e^x) (NaN past x = 88.7 in float32)",
        "notes:identity-4",
        ("elementwise-silu",),
        Fault.ADAPTER,
        "numpy",
        _numpy(SiluUnstableSigmoid),
        dtypes=("float32",),
    ),
    Mutant(
        "gelu-cached-phi-ratio",
        "gelu' = Phi(x) (1 + x phi(x) / Phi(x)) (NaN where Phi underflows: x < -5.4 in float32, "
        "-8.3 in float64)",
        "notes:identity-4",
        ("elementwise-gelu",),
        Fault.ADAPTER,
        "numpy",
        _numpy(GeluCachedPhiRatio),
    ),
    Mutant(
        "softmax-ce-without-max-subtraction",
        "softmax cross-entropy: the backward's softmax exp(z) / sum exp(z) without the max (NaN for "
        "logits past 88.7 in float32; the forward stable)",
        "notes:mlp",
        ("mlp-a-logits",),
        Fault.ADAPTER,
        "numpy",
        _numpy(SoftmaxCEWithoutMaxSubtraction),
        dtypes=("float32",),
        also_faults=(Fault.PRECISION,),
    ),
    Mutant(
        "cross-entropy-without-max-subtraction",
        "batched cross-entropy: the backward's softmax per row without the max (NaN for logits past "
        "88.7 in float32; the forward stable)",
        "notes:mlp",
        ("cross-entropy-batch",),
        Fault.ADAPTER,
        "numpy",
        _numpy(CrossEntropyWithoutMaxSubtraction),
        dtypes=("float32",),
        also_faults=(Fault.PRECISION,),
    ),
)

_CONTROL_ENTRIES: tuple[Mutant, ...] = (
    Mutant(
        "control-correct-numpy",
        "negative control: the unmodified NumPy engine under a mutant's name (must survive)",
        "notes:identity-4",
        ("elementwise-sigmoid", "mlp", "conv-input", "max-pool"),
        B,
        "numpy",
        _numpy(CorrectRules),
        control=True,
    ),
)

#: Every mutant of the default catalogue, by name.
CATALOGUE: dict[str, Mutant] = {
    m.name: m
    for m in (
        *_ENTRIES,
        *_LAYER_ENTRIES,
        *_FRAMEWORK_LAYER_ENTRIES,
        *_AUDIT_ENTRIES,
        *_AUDIT_LAYER_ENTRIES,
        *_TAIL_ENTRIES,
    )
}
#: Negative controls (correct adapters under a mutant's name), selectable by name only.
CONTROLS: dict[str, Mutant] = {m.name: m for m in _CONTROL_ENTRIES}


def all_mutants() -> list[Mutant]:
    """The default catalogue (controls excluded), in catalogue order."""
    return list(CATALOGUE.values())


def get_mutant(name: str) -> Mutant:
    """The mutant (or control) called ``name``; suggests close names when unknown."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    if name in CONTROLS:
        return CONTROLS[name]
    known = [*CATALOGUE, *CONTROLS]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownMutantError(
        f"unknown mutant {name!r}.{hint} Run 'gradoracle selftest --list-mutants' for the catalogue."
    )
