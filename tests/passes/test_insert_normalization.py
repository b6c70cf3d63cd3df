"""InsertNormalization (--mean/--std): the model then takes raw input."""
import numpy as np
import pytest

import builders
from checks import ort_outputs, run_pass
from ptqc.errors import ConfigError
from ptqc.passes import InsertNormalization


@pytest.mark.parametrize("mean,std", [((0.1, 0.2, 0.3), (1.2, 1.1, 1.3)), ((0.5,), (0.25,))])
def test_normalized_model_on_raw_input_equals_model_on_normalized_input(mean, std):
    model = builders.conv_bn_relu_model(in_channels=3)
    result, _ = run_pass(model, InsertNormalization(mean, std))
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)
    m, s = np.reshape(mean, (1, -1, 1, 1)), np.reshape(std, (1, -1, 1, 1))
    want, = ort_outputs(model, {"x": ((x - m) / s).astype(np.float32)})
    got, = ort_outputs(result.graph, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_wrong_counts_and_zero_std_are_refused():
    model = builders.conv_bn_relu_model(in_channels=3)
    with pytest.raises(ConfigError, match="--mean: 2 values given"):
        run_pass(model, InsertNormalization((0.1, 0.2), (1.0,)))
    with pytest.raises(ConfigError, match="--std: a value is 0"):
        run_pass(model, InsertNormalization((0.1,), (0.0,)))
