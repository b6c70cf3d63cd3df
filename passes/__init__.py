"""ptqc.passes: one module per pass.  Each pass runs alone on any graph:
``FuseBatchNorm().run(graph, PassContext())``."""
from ptqc.passes.eliminate_dead_code import EliminateDeadCode
from ptqc.passes.fold_constants import FoldConstants
from ptqc.passes.fuse_activations import MarkActivationFusion
from ptqc.passes.fuse_batchnorm import FuseBatchNorm
from ptqc.passes.fuse_bias_add import FuseBiasAdd
from ptqc.passes.infer_shapes import InferShapes
from ptqc.passes.lift_constants import LiftConstantNodes
from ptqc.passes.remove_identity import RemoveIdentity

__all__ = ["EliminateDeadCode", "FoldConstants", "FuseBatchNorm", "FuseBiasAdd", "InferShapes",
           "LiftConstantNodes", "MarkActivationFusion", "RemoveIdentity"]
