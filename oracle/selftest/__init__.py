"""The oracle's self-test: mutants it must kill, correct adapters it must pass, two campaigns.

**Mutants** (``gradoracle selftest``).  Every mutant of :mod:`gradoracle.selftest.mutants` runs on
each of its target identities and dtypes through the normal runner
(:func:`gradoracle.matrix.run_matrix` -> :func:`gradoracle.runner.check`) with the default
settings except ``shrink=False``: shrinking only makes the counterexample smaller
(``CheckResult.first_failure`` is the index of the first failing example).  A
mutant is *killed* when every (target, dtype) fails with the expected fault; *survived*
when one passes; *mislocalised* when one fails with another fault.  The correct adapters
(NumPy engine, PyTorch, JAX when installed) run every identity in every dtype with the
default settings.  The result is a kill matrix, written as ``selftest.json`` and
``selftest.md``.

**False-positive campaign** (``--campaign fp``).  Correct adapters, many examples per
identity x adapter x dtype: each example goes through :func:`gradoracle.runner.evaluate_example`
(the runner's per-example three-way comparison), and the error/tolerance ratio of every
comparison is recorded in a log-histogram (20 bins per decade) per dtype and kind.  Work
is cut into units of ``chunk`` examples, each persisted to ``fp_campaign.parts.jsonl`` as
it finishes, so a run can be stopped and resumed; the report (``fp_campaign.json/md``)
aggregates every unit in that file.

**Detection threshold** (``--campaign threshold``).  A correct adapter is wrapped so
that its gradients are perturbed: ``g (1 + eps)`` (``scale``) or ``g + eps ||g||_2 n /
||n||_2`` with ``n`` Gaussian (``noise``).  For each family and dtype, the smallest eps on
the grid ``10^(k/4)`` (1e-16 .. 1e-1) that is caught in at least 99% of independent
checks is found by bisection (assuming the catch rate grows with eps), stopping a grid
point early once more than 1% of its checks missed.  The same is measured for
``torch.autograd.gradcheck`` and ``jax.test_util.check_grads`` on the same perturbed
functions, and every tool's false-failure rate at ``eps = 0``.  Written as
``thresholds.json/md``.

The package, one module per job: :mod:`~gradoracle.selftest.common` (helpers shared by the
campaigns), :mod:`~gradoracle.selftest.kill_matrix`, :mod:`~gradoracle.selftest.fp_campaign`
and :mod:`~gradoracle.selftest.fp_report`, :mod:`~gradoracle.selftest.thresholds` and
:mod:`~gradoracle.selftest.perturbations`; the mutation catalogue is
:mod:`gradoracle.selftest.mutants`.  Every public name is re-exported here.

Nothing here prints; front-ends pass callbacks for progress.
"""

from __future__ import annotations

from gradoracle.selftest.common import (
    FINGERPRINT_MODULES,
    TOOL_MODULES,
    Callback,
    adapter_modules,
    code_fingerprint,
    draw_examples,
    example_digest,
)
from gradoracle.selftest.fp_campaign import (
    FP_FILES,
    FP_PARTS,
    FPUnit,
    aggregate_fp,
    plan_fp_units,
    run_fp_campaign,
    run_fp_unit,
)
from gradoracle.selftest.fp_report import (
    BINS_PER_DECADE,
    FP_KINDS,
    FPCampaignReport,
    RatioHistogram,
    fp_markdown,
)
from gradoracle.selftest.kill_matrix import (
    DEFAULT_CORRECT_ADAPTERS,
    PROBE_PREFIX,
    SELFTEST_FILES,
    STATUS_ORDER,
    MutantReport,
    MutantRow,
    SelftestReport,
    kill_cell,
    mutant_settings,
    row_from_probe,
    row_from_result,
    run_selftest,
    select_mutants,
    selftest_markdown,
    write_selftest,
)
from gradoracle.selftest.perturbations import (
    CHECK_GRADS_SETTINGS,
    GRADCHECK_DEFAULTS,
    GRADCHECK_TUNED_FLOAT32,
    PERTURBATIONS,
    PerturbedAdapter,
    perturb,
)
from gradoracle.selftest.thresholds import (
    CATCH_TARGET,
    GRID,
    THRESHOLD_FILES,
    THRESHOLD_PARTS,
    TOOL_TEXT,
    TOOLS,
    ThresholdReport,
    ThresholdUnit,
    aggregate_thresholds,
    families,
    plan_threshold_units,
    run_threshold_campaign,
    run_threshold_unit,
    threshold_markdown,
)

__all__ = [
    "BINS_PER_DECADE",
    "CATCH_TARGET",
    "CHECK_GRADS_SETTINGS",
    "DEFAULT_CORRECT_ADAPTERS",
    "FINGERPRINT_MODULES",
    "FP_FILES",
    "FP_KINDS",
    "FP_PARTS",
    "GRADCHECK_DEFAULTS",
    "GRADCHECK_TUNED_FLOAT32",
    "GRID",
    "PERTURBATIONS",
    "PROBE_PREFIX",
    "SELFTEST_FILES",
    "STATUS_ORDER",
    "THRESHOLD_FILES",
    "THRESHOLD_PARTS",
    "TOOLS",
    "TOOL_MODULES",
    "TOOL_TEXT",
    "Callback",
    "FPCampaignReport",
    "FPUnit",
    "MutantReport",
    "MutantRow",
    "PerturbedAdapter",
    "RatioHistogram",
    "SelftestReport",
    "ThresholdReport",
    "ThresholdUnit",
    "adapter_modules",
    "aggregate_fp",
    "aggregate_thresholds",
    "code_fingerprint",
    "draw_examples",
    "example_digest",
    "families",
    "fp_markdown",
    "kill_cell",
    "mutant_settings",
    "perturb",
    "plan_fp_units",
    "plan_threshold_units",
    "row_from_probe",
    "row_from_result",
    "run_fp_campaign",
    "run_fp_unit",
    "run_selftest",
    "run_threshold_campaign",
    "run_threshold_unit",
    "select_mutants",
    "selftest_markdown",
    "threshold_markdown",
    "write_selftest",
]
