"""The ordered pass lists, by run mode.  The whole compiler's order is readable here."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ptqc.pass_manager import Pass
from ptqc.passes import (AdaRound, AssignQuantSpecs, Calibrate, CropOutputs, EliminateDeadCode, EqualizeCrossLayer,
                         FoldAffineIntoConv,
                         FoldConstants, FuseBatchNorm, FuseBiasAdd, FuseConvScale, FuseHardSwish, FuseLayerNorm,
                         InferShapes, InsertNormalization, InsertQDQ, LiftConstantNodes, MarkActivationFusion,
                         PropagateRanges, RemoveIdentity, UpgradeOpset)
from ptqc.passes.assign_precision import AssignPrecision
from ptqc.passes.cast_float16 import CastFloat16
from ptqc.passes.float_mixed_outputs import FloatMixedOutputs
from ptqc.passes.block_weights import BlockWeights
from ptqc.passes.convert_qdq import ConvertQDQ
from ptqc.passes.fuse_activations import UnfuseActivations
from ptqc.passes.minimum_real_range import MinimumRealRange
from ptqc.passes.restrict_zero_points import RestrictZeroPoints
from ptqc.passes.choose_ranges import ChooseRanges
from ptqc.passes.correct_bias import CorrectBias
from ptqc.passes.dequantize_weights import DequantizeWeights, storage
from ptqc.passes.quantize_dynamic import QuantizeDynamic
from ptqc.passes.read_qdq import FitQDQParams, ReadQDQ
from ptqc.passes.threshold_layer_norm import ThresholdLayerNorm
from ptqc.passes.unshare_biases import UnshareBiases
from ptqc.quant import QuantScheme
from ptqc.vocab import AUTO, HISTOGRAM, Method

MAX_VALIDATION = 8  # held-out batches kept for scoring (memory stays bounded)


def convert_pipeline() -> list[Pass]:
    """``-r convert``: clean the float graph, quantize nothing."""
    return [LiftConstantNodes(), InferShapes(), FoldConstants(), RemoveIdentity(), FuseConvScale(), FuseBiasAdd(),
            FuseBatchNorm(), FuseHardSwish(), FuseLayerNorm(), FoldAffineIntoConv(), MarkActivationFusion(),
            EliminateDeadCode()]


def prepare_pipeline(output_names: tuple[str, ...] = (), mean: tuple[float, ...] = (),
                     std: tuple[float, ...] = (), equalize: bool = False) -> list[Pass]:
    """The float half of ``-r quant``: a QDQ input model's Q/DQ taken out (its activation
    scales kept), opset 17 (per-channel QDQ needs 13, HardSwish 14, LayerNormalization 17),
    crop at ``-on``, ``--mean/--std`` after the first input, then the convert cleanup, then
    (``--cle``) cross-layer equalization.  Its output is the float model the quantized one
    is compared against."""
    return [ReadQDQ(), UpgradeOpset(17), LiftConstantNodes(), CropOutputs(output_names), InsertNormalization(mean, std),
            *convert_pipeline(), *([EqualizeCrossLayer()] if equalize else [])]


def observe_pipeline(scheme: QuantScheme, *, method: str = Method.MIN_MAX, calibrate: bool = True,
                     executor: str = "onnxruntime", workers: int = 1, client=None, snapshots: tuple[int, ...] = (),
                     holdout: int = 0, quantized_input: bool = False, prequantized_weights: bool = False,
                     **options) -> list[Pass]:
    """Shared biases copied per reader, specs, then calibration (skipped when a scale JSON is
    loaded or the input model is quantized, whose scales are fitted to the specs instead; a
    model with prequantized weights only keeps their parameters and calibrates the rest; over
    ``workers`` processes or a Dask ``client`` when given; keeping observer copies after
    ``snapshots`` batches for several -i values; holding every ``holdout``-th batch out for
    validation)."""
    method = HISTOGRAM if method == AUTO else method  # auto reads the same histograms
    return [UnshareBiases(), *([UnfuseActivations()] if scheme.keep_activations else []), AssignQuantSpecs(scheme),
            *([FitQDQParams(unify=scheme.unify_concat)] if quantized_input else []),
            *([FitQDQParams(unify=scheme.unify_concat, weights_only=True)] if prequantized_weights else []),
            *([Calibrate(method, executor, workers=workers, client=client, snapshots=snapshots, holdout=holdout,
                         max_holdout=MAX_VALIDATION, **options)]
              if calibrate else [])]


def materialize_pipeline(scheme: QuantScheme, *, output_dequant: bool = True,
                         input_dtypes: dict[str, np.dtype] | None = None, choose: bool = False,
                         precision: dict | None = None, adaround: bool = False, bias_correction: bool = False,
                         holdout: int = 0, batches: int | None = None,
                         layer_threshold: float | None = None, float16: bool = False) -> list[Pass]:
    """With ``choose`` (-qm auto) each group's range method picked by measured output error
    (on the all-8-bit model); with ``precision`` (AssignPrecision's arguments: -mc, -ams,
    --target-cosine) the 16-bit nodes chosen and the graph specced again; with ``adaround``
    each weight's rounding learned on the calibration batches; one union-find over all
    sharing (with ``layer_threshold``, -lt, LayerNormalization's input and output ranges
    overridden first; a graph-output Concat of parts of very different magnitudes left float),
    then Q/DQ (with ``float16``, an nncase scheme's f16 tensors rounded through
    float16 after); with ``bias_correction`` each Conv/Gemm's output mean corrected in its
    int32 bias.  Runs once per method when one calibration serves several (-qm all)."""
    headroom = dict(unify=scheme.unify_concat, wide_headroom=scheme.wide_headroom)
    held = dict(holdout=holdout, max_holdout=MAX_VALIDATION)
    return [*([ChooseRanges(**headroom)] if choose else []),
            *([AssignPrecision(scheme, bias_correction=bias_correction, **held, **precision)] if precision else []),
            *([AdaRound(**held, **headroom, max_batches=batches)] if adaround else []),
            *([ThresholdLayerNorm(layer_threshold)] if layer_threshold is not None else []),
            FloatMixedOutputs(),
            *([MinimumRealRange(scheme.min_real_range, scheme.unify_concat)] if scheme.min_real_range else []),
            *([RestrictZeroPoints(scheme.unify_concat)] if scheme.restricted_zero_points else []),
            PropagateRanges(**headroom, widen_for_bias=scheme.widen_weights_for_bias),
            *([BlockWeights(scheme.block_size)] if scheme.block_size else []),
            InsertQDQ(output_dequant=output_dequant, input_dtypes=input_dtypes, contrib_ops=scheme.contrib_qdq,
                      weight_pairs=scheme.weight_qdq_pairs, dedicated_pairs=scheme.dedicated_qdq_pairs),
            *([ConvertQDQ()] if any(o.convert for o in scheme.tensor_overrides.values()) else []),
            *([CastFloat16()] if float16 else []),
            *([CorrectBias(**held)] if bias_correction else [])]


def quantize_pipeline(scheme: QuantScheme, *, method: str = Method.MIN_MAX, calibrate: bool = True,
                      output_dequant: bool = True, input_dtypes: dict[str, np.dtype] | None = None,
                      executor: str = "onnxruntime", **options) -> list[Pass]:
    """The quantizing half: specs, calibration, range propagation, Q/DQ materialization."""
    return [*observe_pipeline(scheme, method=method, calibrate=calibrate, executor=executor, **options),
            *materialize_pipeline(scheme, output_dequant=output_dequant, input_dtypes=input_dtypes)]


def dynamic_pipeline(weight_dtype: np.dtype, **options) -> list[Pass]:
    """``quantize_dynamic``: the convert cleanup, then MatMul/Gemm/Conv to integer ops on
    run-time-quantized inputs (``options``: QuantizeDynamic's), then the float weights they
    replaced dropped."""
    return [*convert_pipeline(), QuantizeDynamic(weight_dtype, **options), EliminateDeadCode()]


def weight_only_pipeline(bits: int, max_error: float | None = None, **options) -> list[Pass]:
    """MindSpore's WEIGHT_QUANT: opset 21 where the codes need int4/int16 (always for mixed bits,
    ``max_error``), the convert cleanup, then every weight read through a DequantizeLinear of
    ``bits``-bit codes (``options``: DequantizeWeights')."""
    opset = 21 if max_error is not None else storage(bits)[1]
    return [UpgradeOpset(opset), *convert_pipeline(), DequantizeWeights(bits, max_error=max_error, **options)]


PIPELINES: dict[str, Callable[[], list[Pass]]] = {"convert": convert_pipeline}


def build_pipeline(mode: str) -> list[Pass]:
    """Fresh pass instances for a run mode."""
    return PIPELINES[mode]()
