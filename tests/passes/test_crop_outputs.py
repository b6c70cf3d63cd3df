"""CropOutputs (-on): named tensors become the outputs; a name the graph lacks is an error."""
import pytest

import builders
from checks import run_pass
from ptqc.errors import ConfigError
from ptqc.pass_manager import PassContext, PassManager
from ptqc.passes import CropOutputs, EliminateDeadCode
from ptqc.onnx_io import import_model


def test_crop_at_an_intermediate_tensor_drops_what_follows():
    graph = import_model(builders.conv_bn_relu_model())
    graph = PassManager([CropOutputs(("conv_out",)), EliminateDeadCode()]).run(graph, PassContext()).graph
    assert graph.outputs == ["conv_out"] and graph.op_counts() == {"Conv": 1}


def test_unknown_name_is_refused_by_name():
    with pytest.raises(ConfigError, match="-on/--output-name: the model has no tensor named 'nope'"):
        run_pass(builders.conv_bn_relu_model(), CropOutputs(("nope",)))
