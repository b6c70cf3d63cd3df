"""The written models byte for byte (issue 17's guard for refactoring): the digits CNN and PP-OCR
cls/det/rec quantized at generic, TX510x and TX5368AV200 (mixed precision: IOhigh) must hash to
the table below.  A change that is meant to change outputs updates the table in the same commit
(``PTQC_PRINT_HASHES=1`` prints the new rows); a refactor must leave it as it is.

The table holds for the library versions it names (float results, hence ranges, may move with
onnxruntime or numpy); with other versions the test skips, saying which.
"""
import hashlib
import os

import numpy as np
import pytest

import models
from checks import list_reader
from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize

VERSIONS = {"onnxruntime": "1.32.0", "numpy": "2.4.6", "onnx": "1.23.2"}
HASHES = {
    ("digits", "generic"): "a6dbc0b339e80c37",
    ("digits", "TX510x"): "122357089e704640",
    ("digits", "TX5368AV200"): "e854277a7bcbb453",
    ("cls", "generic"): "f6f89c0118cc9a4e",
    ("cls", "TX510x"): "725b6e45f1d2d54b",
    ("cls", "TX5368AV200"): "7e3c32a29d30c417",
    ("det", "generic"): "244e51cbea7ef467",
    ("det", "TX510x"): "e077d88aed7f089e",
    ("det", "TX5368AV200"): "86a5b0de188add5f",
    ("rec", "generic"): "5b0ccb3bc1e1a142",
    ("rec", "TX510x"): "9948e89eec1c7eaf",
    ("rec", "TX5368AV200"): "ecf7adbacb0001cb",
}


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "onnx": onnx.__version__}


@pytest.mark.slow
@pytest.mark.parametrize("name, chip", list(HASHES), ids=[f"{n}-{c}" for n, c in HASHES])
def test_the_written_model_is_byte_for_byte_the_recorded_one(tmp_path, digits, name, chip):
    if _versions() != VERSIONS:
        pytest.skip(f"hash table recorded with {VERSIONS}; this is {_versions()}")
    if name == "digits":
        model, data = digits.model, [{"input": digits.x_train[i:i + 8]} for i in range(0, 32, 8)]
    else:
        paths = models.ppocr_model_paths()
        if not paths:
            pytest.skip(f"PP-OCR models not installed: run `{models.PPOCR_PIP}`")
        model, data = str(paths[name]), [models.ppocr_sample_inputs(name, s) for s in range(4)]
    mix = {"auto_mix_strategy": "IOhigh"} if chip == "TX5368AV200" else {}
    out = tmp_path / "q.onnx"
    quantize(model, out, list_reader(data), QuantConfig(chip=chip, **mix), evaluate=False)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()[:16]
    if os.environ.get("PTQC_PRINT_HASHES"):
        print(f'    ("{name}", "{chip}"): "{digest}",')
    assert digest == HASHES[(name, chip)]
