"""The sample models the tests use: :mod:`ptqc.samples` (shared with tools/, which may not import
tests/), under the name the tests have always imported, with the internals some tests check."""
from ptqc.samples import (LAYOUT_NAMES, LAYOUT_PIP, PPOCR_FILES, PPOCR_PIP, _TEXT_WORDS, DigitsCNN, _conv3x3,
                          _digits_cached, _forward_infer, layout_model_path, layout_pages, light_inputs,
                          light_model_paths, onnx_backend_data_dir, ort_run, ppocr_model_paths, ppocr_rec_decode,
                          ppocr_sample_inputs, ppocr_text_line, random_feeds, synthetic_model, train_digits_cnn)

__all__ = ["LAYOUT_NAMES", "LAYOUT_PIP", "PPOCR_FILES", "PPOCR_PIP", "_TEXT_WORDS", "DigitsCNN", "_conv3x3",
           "_digits_cached", "_forward_infer", "layout_model_path", "layout_pages", "light_inputs",
           "light_model_paths", "onnx_backend_data_dir", "ort_run", "ppocr_model_paths", "ppocr_rec_decode",
           "ppocr_sample_inputs", "ppocr_text_line", "random_feeds", "synthetic_model", "train_digits_cnn"]
