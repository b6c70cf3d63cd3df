"""The names ptqc's modules share: calibration methods, the keys of IR ``meta`` dicts and of
the analysis store.  One definition each; every other list derives from these.

They are :class:`enum.StrEnum` classes: a member *is* its string (``Meta.QUANT == "quant"``,
same hash), so written files, messages and code or tests still using the bare strings see
exactly what they saw before.  ``repr`` differs (``<Meta.QUANT: 'quant'>``): use ``str`` or
an f-string where a name is shown.

Imports nothing of ptqc (a core module: every room may import it).
"""
from __future__ import annotations

from enum import StrEnum


class Method(StrEnum):
    """A calibration method: how an observer turns what it saw into a range (the ``-qm``
    names, plus MindSpore's ``removal_outlier``).  In the order ``-qm all`` runs them (and the
    CLI lists them)."""

    KL = "kl"
    MIN_MAX = "min_max"
    MSE = "mse"
    PERCENTILE = "percentile"
    KL_V2 = "kl_v2"
    REMOVAL_OUTLIER = "removal_outlier"


# Every method but min_max reads the one power-of-two histogram (HistogramObserver), so one
# calibration recorded for any of them serves them all (``with_method``).
HISTOGRAM_METHODS = tuple(m for m in Method if m is not Method.MIN_MAX)
# What to calibrate with when several methods, ``auto`` or a search will read the result: a
# histogram (kl is the histogram method the reference tool defaults to).
HISTOGRAM = Method.KL
# The reference tool's default -qm: a -gt template's mode when the run had no single method
# (-lsj, several modes in a -mc file).
REFERENCE_DEFAULT = Method.KL

AUTO = "auto"  # -qm auto: each group's method chosen by measured output error (ChooseRanges)
ALL = "all"  # -qm all: one run per method
QUANT_MODES = (AUTO, *(m.value for m in Method), ALL)  # -qm's choices (plain strings: argparse shows their repr)


def is_histogram(method: str) -> bool:
    """Whether ``method`` reads a histogram (so ``HISTOGRAM``'s calibration serves it)."""
    return method in HISTOGRAM_METHODS


class Meta(StrEnum):
    """Keys of ``Value.meta`` and ``Node.meta`` (never exported).  docs/DESIGN.md §2 says who
    writes and reads each."""

    # on values
    QSPEC = "qspec"  # PlainSpec / SharedSpec / DerivedSpec (AssignQuantSpecs)
    QMETHOD = "qmethod"  # a -mc node's calibration method for its output (AssignQuantSpecs)
    QUANT = "quant"  # the QuantParam (PropagateRanges)
    VALUE_INFO = "value_info"  # the input model listed it in value_info (onnx_io.import_model)
    # on nodes
    QUANTIZED = "quantized"  # runs quantized (AssignQuantSpecs)
    MIXABLE = "mixable"  # a mixed-precision template entry (AssignQuantSpecs)
    FUSED_ACTIVATION = "fused_activation"  # on a producer: its fused activation's node id (MarkActivationFusion)
    FUSED_INTO = "fused_into"  # on an activation: the id of the node it is fused into (MarkActivationFusion)


class Analysis(StrEnum):
    """Names of analyses: the declared ones a pass ``requires``/``produces``/``preserves``
    (the manager's ``established`` set) and the keys of ``ctx.analyses``' results.  Some are
    both.  docs/DESIGN.md §2 lists who writes and reads each."""

    # declared only (no result stored under the name)
    SHAPES = "shapes"
    QUANT_SPECS = "quant_specs"
    QUANT_PARAMS = "quant_params"
    # the run's inputs and calibration
    FLOAT_MODEL = "float_model"
    OBSERVERS = "observers"
    OBSERVER_SNAPSHOTS = "observer_snapshots"
    VALIDATION_FEEDS = "validation_feeds"
    CALIBRATION_FEEDS = "calibration_feeds"
    CALIBRATION_BATCHES = "calibration_batches"
    FLOAT_METRIC = "float_metric"
    FLOAT_OPS = "float_ops"
    # parameters given from outside calibration (precedence: docs/DESIGN.md §4)
    LOADED_PARAMS = "loaded_params"
    RANGE_OVERRIDES = "range_overrides"
    QDQ_PARAMS = "qdq_params"
    QDQ_WEIGHT_PARAMS = "qdq_weight_params"
    QDQ_FLOAT_CONSTANTS = "qdq_float_constants"
    # choices and results of the materializing passes
    RANGE_CHOICES = "range_choices"
    MIX = "mix"
    QUANT_GROUPS = "quant_groups"
    ACTIVATION_QDQ = "activation_qdq"
    OUTPUT_PARAMS = "output_params"
    WEIGHT_PARAMS = "weight_params"
    QDQ_PARAM_NAMES = "qdq_param_names"
    BIAS_CORRECTED = "bias_corrected"
    # graph cleanup and the calibrate-free paths
    REWRITE_FAILURES = "rewrite_failures"
    REWRITE_COUNTS = "rewrite_counts"
    FOLD_FAILURES = "fold_failures"
    ACTIVATION_GROUPS = "activation_groups"
    DYNAMIC_NODES = "dynamic_nodes"
    WEIGHT_LAYERS = "weight_layers"
    INPUT_RANGES = "input_ranges"
