"""The histogram observers against slow numpy references on known distributions, and the
exactness of their merge (any split, any order: bit-identical state)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ptqc.passes.calibration import histogram
from ptqc.passes.calibration.observers import HISTOGRAM_METHODS, HistogramObserver, make_observer
from ptqc.quant import qparam_from_range

RNG = np.random.default_rng(0)
GAUSS = RNG.standard_normal(400_000).astype(np.float32)


def _fed(method, *batches, **options):
    obs = make_observer(method, "t", **options)
    for b in batches:
        obs.observe(b)
    return obs


def test_counts_equal_a_floor_binning_reference():
    x = RNG.uniform(-3, 5, 10_000).astype(np.float32)
    obs = _fed("kl", x[:10], x[10:])  # the first batch sets a small R, the second grows it
    R = 2.0 ** obs.exponent
    assert np.abs(x).max() < R <= 2 * np.abs(x).max()
    ref = np.bincount(np.floor(x.astype(np.float64) * obs.bins / (2 * R)).astype(int) + obs.bins // 2,
                      minlength=obs.bins)
    np.testing.assert_array_equal(obs.counts, ref)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, st.integers(2, 300), elements=st.floats(-1e5, 1e5, width=32)),
       st.integers(1, 299), st.randoms(use_true_random=False))
def test_any_split_and_any_order_merge_to_the_same_state(x, cut, rnd):
    cut = min(cut, len(x) - 1)
    whole = _fed("kl", x)
    a, b = _fed("kl", x[:cut]), _fed("kl", x[cut:])
    a.merge(b)
    chunks = [x[i:i + 7] for i in range(0, len(x), 7)]
    rnd.shuffle(chunks)
    shuffled = _fed("kl", *chunks)
    for other in (a, shuffled):
        np.testing.assert_array_equal(other.counts, whole.counts)
        assert (other.exponent, other.min, other.max) == (whole.exponent, whole.min, whole.max)
    for method in HISTOGRAM_METHODS:
        r1 = whole.with_method(method).range(np.int8, True)
        r2 = a.with_method(method).range(np.int8, True)
        assert r1 == r2, method


def test_percentile_and_removal_outlier_match_numpy_quantiles_within_a_bin():
    obs = _fed("percentile", GAUSS, percent=0.999)
    w = obs.width
    t = float(obs.range(np.int8, True)[1])
    assert abs(t - np.quantile(np.abs(GAUSS), 0.999)) <= 2 * w
    lo, hi = (float(v) for v in obs.range(np.uint8, False))
    q = np.quantile(GAUSS, [0.0005, 0.9995])
    assert abs(lo - q[0]) <= 2 * w and abs(hi - q[1]) <= 2 * w
    ro = _fed("removal_outlier", GAUSS, outlier_ratio=0.01)
    lo, hi = (float(v) for v in ro.range(np.int8, True))
    q = np.quantile(GAUSS, [0.01, 0.99])
    assert abs(lo - q[0]) <= 2 * w and abs(hi - q[1]) <= 2 * w


def _fake_quant_mse(x, lo, hi, dtype, symmetric):
    p = qparam_from_range(np.float32(lo), np.float32(hi), dtype, symmetric=symmetric)
    return float(np.mean((p.fake_quantize(x) - x) ** 2))


def test_mse_clips_a_heavy_tail_and_beats_the_full_range():
    laplace = RNG.laplace(0, 1, 200_000).astype(np.float32)
    obs = _fed("mse", laplace)
    lo, hi = (float(v) for v in obs.range(np.int8, True))
    assert hi < laplace.max()
    assert _fake_quant_mse(laplace, lo, hi, np.int8, True) < _fake_quant_mse(
        laplace, laplace.min(), laplace.max(), np.int8, True)
    uniform = RNG.uniform(-1, 1, 200_000).astype(np.float32)
    lo, hi = (float(v) for v in _fed("mse", uniform).range(np.int8, True))
    assert hi > 0.97  # nothing to gain by clipping a uniform distribution


def _kl_reference(hist, levels):
    """MXNet's (and onnxruntime's) entropy search, slow and plain."""
    from scipy.stats import entropy

    def smooth(p, eps=1e-4):
        zeros = p == 0
        if zeros.all():
            return None
        return p + eps * zeros - eps * zeros.sum() / (~zeros).sum() * ~zeros

    best = (np.inf, len(hist))
    for i in range(levels, len(hist) + 1):
        p = hist[:i].astype(np.float64).copy()
        p[-1] += hist[i:].sum()
        merged = i // levels
        q = np.zeros(i)
        for j in range(levels):
            s, e = j * merged, (j + 1) * merged if j < levels - 1 else i
            nz = p[s:e] != 0
            if nz.any():
                q[s:e][nz] = hist[s:e].sum() / nz.sum()
        ps, qs = smooth(p), smooth(q)
        if ps is None or qs is None:
            continue
        kl = entropy(ps, qs)
        if kl < best[0]:
            best = (kl, i)
    return best[1]


def test_kl_threshold_equals_the_reference_search():
    pytest.importorskip("scipy")
    hist = np.histogram(np.abs(RNG.standard_normal(50_000)), bins=400, range=(0, 5))[0]
    best = _kl_reference(hist, 64)
    assert histogram.kl_threshold(hist, 64, step=1) == best
    assert abs(histogram.kl_threshold(hist, 64) - best) <= 2  # coarse-to-fine: within two bins


def test_kl_on_a_gaussian_and_kl_v2_on_a_relu_spike():
    t = float(_fed("kl", GAUSS).range(np.int8, True)[1])
    assert 2.5 < t < 5.0  # TensorRT-style thresholds on N(0, 1) at 128 levels
    relu = np.maximum(GAUSS, 0)
    kl = float(_fed("kl", relu).range(np.uint8, False)[1])
    v2 = float(_fed("kl_v2", relu).range(np.uint8, False)[1])
    assert v2 >= kl and v2 >= np.quantile(relu, 0.999) - 2 * _fed("kl", relu).width


def test_min_max_read_from_a_histogram_is_exact_and_nan_is_refused():
    obs = _fed("kl", GAUSS)
    assert obs.with_method("min_max").range() == (GAUSS.min(), GAUSS.max())
    with pytest.raises(Exception, match="NaN"):
        obs.observe(np.array([np.nan], np.float32))
    with pytest.raises(Exception, match="per tensor"):
        HistogramObserver("w", axis=0)
