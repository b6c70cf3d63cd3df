"""ptqc.passes: one module per pass.  Each pass runs alone on any graph:
``FuseBatchNorm().run(graph, PassContext())``."""
from ptqc.passes.assign_quant_specs import AssignQuantSpecs
from ptqc.passes.adaround import AdaRound
from ptqc.passes.calibrate import Calibrate
from ptqc.passes.choose_ranges import ChooseRanges
from ptqc.passes.equalize_cross_layer import EqualizeCrossLayer
from ptqc.passes.crop_outputs import CropOutputs
from ptqc.passes.eliminate_dead_code import EliminateDeadCode
from ptqc.passes.fold_affine_into_conv import FoldAffineIntoConv
from ptqc.passes.fold_constants import FoldConstants
from ptqc.passes.fuse_activations import MarkActivationFusion
from ptqc.passes.fuse_batchnorm import FuseBatchNorm
from ptqc.passes.fuse_bias_add import FuseBiasAdd
from ptqc.passes.fuse_conv_scale import FuseConvScale
from ptqc.passes.fuse_hardswish import FuseHardSwish
from ptqc.passes.fuse_layernorm import FuseLayerNorm
from ptqc.passes.infer_shapes import InferShapes
from ptqc.passes.insert_normalization import InsertNormalization
from ptqc.passes.insert_qdq import InsertQDQ
from ptqc.passes.lift_constants import LiftConstantNodes
from ptqc.passes.propagate_ranges import PropagateRanges
from ptqc.passes.read_qdq import FitQDQParams, ReadQDQ
from ptqc.passes.remove_identity import RemoveIdentity
from ptqc.passes.upgrade_opset import UpgradeOpset

__all__ = ["AdaRound", "AssignQuantSpecs", "Calibrate", "ChooseRanges", "CropOutputs", "EliminateDeadCode", "EqualizeCrossLayer", "FitQDQParams", "FoldAffineIntoConv", "FoldConstants", "FuseBatchNorm",
           "FuseBiasAdd", "FuseConvScale", "FuseHardSwish", "FuseLayerNorm", "InferShapes", "InsertNormalization", "InsertQDQ", "LiftConstantNodes",
           "MarkActivationFusion", "PropagateRanges", "ReadQDQ", "RemoveIdentity", "UpgradeOpset"]
