"""Weight-only rounding: the grid holds what it says, GPTQ's output error is at most RTN's on
correlated inputs (measured on the rows themselves, not through H), AWQ with one grid point is
RTN and its search is never worse than RTN."""
import numpy as np
import pytest

from ptqc.passes import weight_rounding as wr

GRIDS = [wr.Grid(4, False, 32), wr.Grid(4, True, 32), wr.Grid(4, True, 96), wr.Grid(8, True, 64),
         wr.Grid(4, False, 192), wr.Grid(4, True, 192, per_tensor=True), wr.Grid(8, False, 192)]


def _layer(seed: int, k: int = 192, n: int = 48, rows: int = 1024):
    rng = np.random.default_rng(seed)
    mix = np.eye(k) + 0.4 * rng.normal(size=(k, k)) / np.sqrt(k)
    x = (rng.normal(size=(rows, k)) @ mix) * np.exp(rng.normal(0, 1, size=k))  # correlated, uneven channels
    return rng.normal(0, 0.05, size=(n, k)), x


def _error(w, q, x) -> float:
    d = x @ (w - q).T
    return float(np.sum(d * d))


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_rtn_codes_lie_on_the_grid_within_half_a_step(grid):
    w, _ = _layer(0)
    r = wr.rtn(w, grid)
    lo, hi = grid.levels
    assert r.codes.min() >= lo and r.codes.max() <= hi and np.array_equal(r.codes, np.rint(r.codes))
    widths = [sl.stop - sl.start for sl in grid.groups(w.shape[1])]
    step = np.abs(np.repeat(r.scale, widths, axis=1))
    err = np.abs(r.dequantize() - w)
    clipped = r.codes == hi  # symmetric: the far side's top value may round to 2^(b-1) and clip to one below
    assert np.all(err[~clipped] <= step[~clipped] / 2 + 1e-12) and np.all(err <= step + 1e-12)
    if grid.symmetric:  # zero point 0, and each group's value of largest magnitude on the code -2^(b-1)
        assert not r.zero_point.any()
        assert grid.per_tensor or np.all(r.codes.min(axis=1) == lo)
    if grid.per_tensor:
        assert np.unique(r.scale).size == 1


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_gptq_output_error_is_at_most_rtns_on_correlated_inputs(grid, seed):
    w, x = _layer(seed)
    h = x.T @ x
    g = wr.gptq(w, wr.inverse_factor(h), grid)
    lo, hi = grid.levels
    assert g.codes.min() >= lo and g.codes.max() <= hi
    assert _error(w, g.dequantize(), x) <= _error(w, wr.rtn(w, grid).dequantize(), x)


def test_gptq_with_an_indefinite_hessian_rounds_to_nearest():
    w, _ = _layer(0, k=64)
    g = wr.gptq(w, None, wr.Grid(4, True, 32))
    assert np.array_equal(g.codes, wr.rtn(w, wr.Grid(4, True, 32)).codes)


def test_the_factor_gives_the_same_error_as_the_rows():
    w, x = _layer(1)
    q = wr.rtn(w, wr.Grid(4, False, 32)).dequantize()
    assert wr.output_error(w, q, wr.factor(x.T @ x)) == pytest.approx(_error(w, q, x), rel=1e-4)


@pytest.mark.parametrize("grid", GRIDS[:4], ids=str)
def test_awq_with_one_grid_point_is_rtn_and_its_search_never_worse(grid):
    w, x = _layer(2)
    l, mean_abs = wr.factor(x.T @ x), np.abs(x).mean(axis=0)
    s, err, base = wr.awq_scales([w], l, mean_abs, grid, 1)
    assert np.array_equal(s, np.ones_like(s)) and err == base
    assert np.array_equal(wr.rtn(w * s, grid).codes, wr.rtn(w, grid).codes)
    s, err, base = wr.awq_scales([w, 2 * w], l, mean_abs, grid, 20)
    assert err <= base
    measured = sum(_error(v, wr.rtn(v * s, grid).dequantize() / s, x) for v in (w, 2 * w))
    assert measured == pytest.approx(err, rel=1e-3)


def test_awq_protects_salient_channels():
    """Inputs with a few large channels: AWQ's scale beats RTN clearly (the paper's point)."""
    rng = np.random.default_rng(3)
    k = 128
    x = rng.normal(size=(2048, k))
    x[:, :4] *= 30.0
    w = rng.normal(0, 0.05, size=(64, k))
    grid = wr.Grid(4, True, 128)
    s, err, base = wr.awq_scales([w], wr.factor(x.T @ x), np.abs(x).mean(axis=0), grid, 20)
    assert err < 0.8 * base and s[:4].min() > s[4:].max()
