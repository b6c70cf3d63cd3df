"""-cn N worker processes and a Dask cluster calibrate to exactly the model one process gives."""
import numpy as np
import pytest

from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize
from ptqc.errors import PtqcError


@pytest.fixture(scope="module")
def data(tmp_path_factory, digits):
    folder = tmp_path_factory.mktemp("data")
    for i in range(24):
        np.save(folder / f"s{i:02d}.npy", digits.x_train[i])
    return folder


def _config(**kw):
    return QuantConfig(iteration=(6,), batch_size=4, quant_mode=("kl",), **kw)


def test_cpu_num_2_gives_the_one_process_model(tmp_path, digits, data):
    one = quantize(digits.model, tmp_path / "one.onnx", data, _config(), evaluate=False)
    two = quantize(digits.model, tmp_path / "two.onnx", data,
                   _config(cpu_num=2), evaluate=False)
    assert one.model.SerializeToString() == two.model.SerializeToString()


def test_cpu_num_2_holds_out_the_same_batches_and_chooses_the_same_ranges(tmp_path, digits, data):
    cfg = dict(iteration=(6,), batch_size=4, validation_split=0.34)  # -qm auto: scored on held-out batches
    one = quantize(digits.model, tmp_path / "one.onnx", data, QuantConfig(**cfg), evaluate=False)
    two = quantize(digits.model, tmp_path / "two.onnx", data, QuantConfig(cpu_num=2, **cfg), evaluate=False)
    assert one.model.SerializeToString() == two.model.SerializeToString()


def test_dask_local_cluster_gives_the_one_process_model(tmp_path, digits, data):
    distributed = pytest.importorskip("dask.distributed")
    one = quantize(digits.model, None, data, _config(), evaluate=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        on_dask = quantize(digits.model, None, data, _config(), evaluate=False, client=client)
    assert one.model.SerializeToString() == on_dask.model.SerializeToString()


def test_an_infer_function_cannot_be_split(digits):
    def mine(executor):
        executor.forward(digits.x_train[:4])
        return 1.0

    with pytest.raises(PtqcError, match="-cn/--cpu-num"):
        quantize(digits.model, None, mine, _config(cpu_num=2), evaluate=False)
