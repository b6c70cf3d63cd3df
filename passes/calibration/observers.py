"""The observer protocol, the ``min_max`` observer and the histogram observers (``kl``,
``kl_v2``, ``mse``, ``percentile``, ``removal_outlier``).

An observer is fed batches (``observe``), merges with another observer of the same kind
fed other batches (``merge``: how calibration is split over processes or machines), and
answers with a range (``range(dtype, symmetric)``: the range depends on how many levels the
target type has) that :func:`ptqc.quant.qparam_from_range` turns into parameters
(``qparams``).  It keeps fixed-size state, never the activations.

Merging is exact for every observer here: min_max keeps min and max; the histogram
observers share the power-of-two histogram of :mod:`.histogram`, whose merge is
bit-identical to one observer fed everything, in any order.  So the bound "within one
histogram bin" that a re-binning histogram would need is zero here, and tests check equality.
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

import ptqc.passes.calibration.histogram as histogram
from ptqc.errors import PtqcError
from ptqc.quant import _narrow, qparam_from_range, QuantParam
from ptqc.vocab import HISTOGRAM, HISTOGRAM_METHODS, Method


class CalibrationDataError(PtqcError):
    """Calibration saw NaN: the data (or the model on that data) is broken."""


class Observer(Protocol):
    method: str

    def observe(self, x: np.ndarray) -> None: ...
    def merge(self, other: "Observer") -> None: ...
    def range(self, dtype=None, symmetric: bool = False) -> tuple[np.ndarray, np.ndarray] | None: ...
    def qparams(self, dtype, *, symmetric: bool) -> QuantParam: ...
    def reset(self) -> None: ...


class MinMaxObserver:
    """The smallest and largest value seen, per tensor (``axis`` None) or per channel.

    Merging is exact: min of mins and max of maxes, so halves merged give bit-identical
    parameters to one observer fed everything.  ±Inf is kept (the range computation clamps it
    and warns); NaN is an error naming the tensor.

    ``average`` is onnxruntime's ``CalibMovingAverage`` as its quantize_static computes it (one
    ``compute_data`` over all batches): the range is the mean of the batches' minima and maxima.
    Its moving-average constant only weighs one such mean against another computed earlier, which
    a single calibration run never has.  Sums and counts merge exactly.
    """

    method = Method.MIN_MAX

    def __init__(self, name: str = "", axis: int | None = None, average: bool = False):
        self.name, self.axis, self.average = name, axis, average
        self.reset()

    def reset(self) -> None:
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None
        self.batches = 0
        self._sums: list | None = None  # average: [sum of minima, sum of maxima, batches]

    def observe(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if x.size == 0:
            return
        if self.axis is None:
            lo, hi = np.min(x), np.max(x)
        else:
            moved = np.moveaxis(x, self.axis, 0).reshape(x.shape[self.axis], -1)
            lo, hi = moved.min(axis=1), moved.max(axis=1)
        if np.isnan(lo).any() or np.isnan(hi).any():
            raise CalibrationDataError(f"tensor {self.name!r} contains NaN during calibration "
                                       f"(batch {self.batches + 1}); check the calibration data")
        lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
        self.batches += 1
        if self.average:
            s = self._sums = self._sums or [0.0, 0.0, 0]
            s[0], s[1], s[2] = s[0] + lo.astype(np.float64), s[1] + hi.astype(np.float64), s[2] + 1
            self._mean()
            return
        self.min = lo if self.min is None else np.minimum(self.min, lo)
        self.max = hi if self.max is None else np.maximum(self.max, hi)

    def _mean(self) -> None:
        """min/max: the means of the batches' minima and maxima (``average``)."""
        self.min, self.max = (np.asarray(v / self._sums[2], np.float32) for v in self._sums[:2])

    def merge(self, other: "MinMaxObserver") -> None:
        if self.average:
            if other._sums:
                mine = self._sums or [0.0, 0.0, 0]
                self._sums = [mine[0] + other._sums[0], mine[1] + other._sums[1], mine[2] + other._sums[2]]
                self._mean()
            self.batches += other.batches
            return
        if other.min is None:
            return
        if self.min is None:
            self.min, self.max = other.min.copy(), other.max.copy()
        else:
            self.min, self.max = np.minimum(self.min, other.min), np.maximum(self.max, other.max)
        self.batches += other.batches

    def range(self, dtype=None, symmetric: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self.min is None else (self.min, self.max)

    def qparams(self, dtype, *, symmetric: bool) -> QuantParam:
        if self.min is None:
            raise CalibrationDataError(f"tensor {self.name!r} was never observed: calibration ran no batch")
        return qparam_from_range(self.min, self.max, dtype, symmetric=symmetric, axis=self.axis,
                                 method=self.method, name=self.name)


class HistogramObserver:
    """Exact min/max plus the mergeable power-of-two histogram; ``method`` picks how a range
    is read from it (one inference can serve every method: :meth:`with_method`).

    * ``percentile``: keep ``percent`` of the values (the reference tool's ``-per``): the
      ``percent`` quantile of |x| when symmetric, else (1 - percent) / 2 cut at each end.
    * ``removal_outlier`` (MindSpore's REMOVAL_OUTLIER): cut ``outlier_ratio`` of the values
      at each end separately, whatever the symmetry, then cover what is left.
    * ``mse``: the clipping range minimizing the expected squared error, clipping error from
      the histogram plus rounding noise ``step**2 / 12`` inside; candidates scale both ends by
      one factor in (0, 1] (200 steps).
    * ``kl``: TensorRT's entropy calibration on the histogram of |x| with as many levels as the
      target has on that side (128 for int8, 256 for uint8 data that is never negative).
    * ``kl_v2``: ``kl`` with two fixes for the cases where it is known to clip too hard: the
      bin of exact zeros (ReLU output, padding) is left out of both distributions, since a
      spike there makes every wide threshold look costly; and the threshold never goes below
      the 0.999 quantile of |x|, so a heavy but meaningful tail keeps its values.
    With more levels than |x| bins (16-bit), kl and kl_v2 keep the whole range.
    """

    def __init__(self, name: str = "", axis: int | None = None, *, method: str = HISTOGRAM, bins: int = 4096,
                 percent: float = 0.99999, outlier_ratio: float = 1e-4):
        if axis is not None:
            raise PtqcError(f"tensor {name!r}: histogram observers are per tensor, not per channel")
        if bins < 16 or bins & (bins - 1):
            raise PtqcError(f"histogram bins must be a power of two >= 16, got {bins}")
        self.name, self.axis, self.method, self.bins = name, None, method, bins
        self.percent, self.outlier_ratio = percent, outlier_ratio
        self.reset()

    def reset(self) -> None:
        self.counts = np.zeros(self.bins, np.int64)
        self.exponent = -126
        self.min: float | None = None
        self.max: float | None = None
        self.batches = 0

    def with_method(self, method: str, **options) -> "HistogramObserver":
        """The same histogram read by ``method`` (``options``: percent, outlier_ratio)."""
        other = HistogramObserver(self.name, method=method, bins=self.bins,
                                  percent=options.get("percent", self.percent),
                                  outlier_ratio=options.get("outlier_ratio", self.outlier_ratio))
        other.counts, other.exponent, other.min, other.max, other.batches = (
            self.counts.copy(), self.exponent, self.min, self.max, self.batches)
        return other

    def observe(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if x.size == 0:
            return
        lo, hi = histogram.min_max(x)
        if np.isnan(lo) or np.isnan(hi):
            raise CalibrationDataError(f"tensor {self.name!r} contains NaN during calibration "
                                       f"(batch {self.batches + 1}); check the calibration data")
        if not (np.isfinite(lo) and np.isfinite(hi)):
            x = np.clip(x, -np.finfo(np.float32).max / 4, np.finfo(np.float32).max / 4)  # masks: kept in range
            lo, hi = float(np.min(x)), float(np.max(x))
        self._grow(histogram.exponent_for(max(abs(lo), abs(hi))))
        histogram.accumulate(x, self.counts, self.exponent)
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)
        self.batches += 1

    def _grow(self, exponent: int) -> None:
        if exponent > self.exponent:
            self.counts = histogram.coarsen(self.counts, exponent - self.exponent)
            self.exponent = exponent

    def merge(self, other: "HistogramObserver") -> None:
        if other.min is None:
            return
        self._grow(other.exponent)
        counts = histogram.coarsen(other.counts, self.exponent - other.exponent)
        self.counts = self.counts + counts
        self.min = other.min if self.min is None else min(self.min, other.min)
        self.max = other.max if self.max is None else max(self.max, other.max)
        self.batches += other.batches

    def qparams(self, dtype, *, symmetric: bool) -> QuantParam:
        r = self.range(dtype, symmetric)
        if r is None:
            raise CalibrationDataError(f"tensor {self.name!r} was never observed: calibration ran no batch")
        return qparam_from_range(r[0], r[1], dtype, symmetric=symmetric, method=self.method, name=self.name)

    # -------------------------------------------------------------- reading a range
    @property
    def width(self) -> float:
        return 2.0 * 2.0 ** self.exponent / self.bins

    def _abs_hist(self) -> np.ndarray:
        half = self.bins // 2
        return self.counts[half:] + self.counts[:half][::-1]  # bin m holds |x| in [m, m+1) widths

    def _quantile_edges(self, cut_low: float, cut_high: float) -> tuple[float, float]:
        """Lower edge of the bin where the cdf passes ``cut_low``, upper edge where it reaches
        ``1 - cut_high`` (fractions of the count cut at each end)."""
        cdf = np.cumsum(self.counts) / self.counts.sum()
        half, w = self.bins // 2, self.width
        k_lo = int(np.searchsorted(cdf, cut_low, side="right"))
        k_hi = int(np.searchsorted(cdf, 1.0 - cut_high, side="left"))
        return (k_lo - half) * w, (min(k_hi, self.bins - 1) - half + 1) * w

    def _abs_quantile(self, q: float) -> float:
        cdf = np.cumsum(self._abs_hist()) / self.counts.sum()
        return (int(np.searchsorted(cdf, q, side="left")) + 1) * self.width

    def range(self, dtype=None, symmetric: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        if self.min is None:
            return None
        lo, hi = self.min, self.max
        if self.counts.sum() and lo != hi:
            lo, hi = self._clipped(np.dtype(dtype) if dtype is not None else np.dtype(np.uint8), symmetric)
        lo, hi = max(lo, self.min), min(hi, self.max)
        return np.float32(min(lo, 0.0) if self.min <= 0 else lo), np.float32(max(hi, 0.0) if self.max >= 0 else hi)

    def _clipped(self, dtype: np.dtype, symmetric: bool) -> tuple[float, float]:
        m = self.method
        if m == Method.MIN_MAX:  # one calibration serving several methods reads min_max here too
            return self.min, self.max
        if m == Method.PERCENTILE:
            if symmetric:
                t = self._abs_quantile(self.percent)
                return -t, t
            cut = (1.0 - self.percent) / 2
            return self._quantile_edges(cut, cut)
        if m == Method.REMOVAL_OUTLIER:
            return self._quantile_edges(self.outlier_ratio, self.outlier_ratio)
        if m == Method.MSE:
            return self._mse_range(dtype, symmetric)
        if m in (Method.KL, Method.KL_V2):
            return self._kl_range(dtype, symmetric, m == Method.KL_V2)
        raise PtqcError(f"unknown histogram method {m!r}")

    def _levels(self, dtype: np.dtype, symmetric: bool) -> int:
        qmin, qmax = _qrange(dtype, symmetric)
        levels = qmax - qmin + 1
        return levels // 2 if (symmetric or self.min < 0) else levels

    def _kl_range(self, dtype: np.dtype, symmetric: bool, v2: bool) -> tuple[float, float]:
        abs_hist = self._abs_hist()
        used = int(np.nonzero(abs_hist)[0].max()) + 1  # search only where data is
        keep = histogram.kl_threshold(abs_hist[:used], self._levels(dtype, symmetric), skip_zero=v2)
        t = keep * self.width
        if v2:
            t = max(t, self._abs_quantile(0.999))
        return -t, t

    def _mse_range(self, dtype: np.dtype, symmetric: bool) -> tuple[float, float]:
        qmin, qmax = _qrange(dtype, symmetric)
        half, w = self.bins // 2, self.width
        centers = (np.arange(self.bins) - half + 0.5) * w
        nz = self.counts > 0
        c, n = centers[nz], self.counts[nz].astype(np.float64)
        lo0, hi0 = min(self.min, 0.0), max(self.max, 0.0)
        if symmetric:
            lo0, hi0 = -max(-lo0, hi0), max(-lo0, hi0)
        best, best_err = (lo0, hi0), np.inf
        for a in np.linspace(1.0, 0.005, 200):
            lo, hi = lo0 * a, hi0 * a
            step = (hi - lo) / (qmax - qmin)
            if step <= 0:
                continue
            clipped = np.clip(c, lo, hi)
            err = float(np.sum(n * (c - clipped) ** 2) + np.sum(n[(c >= lo) & (c <= hi)]) * step * step / 12)
            if err < best_err:
                best, best_err = (lo, hi), err
        return best


def _qrange(dtype: np.dtype, symmetric: bool) -> tuple[int, int]:
    return _narrow(dtype, symmetric)


def _histogram_factory(method: str) -> Callable[..., Observer]:
    def make(name: str = "", axis: int | None = None, **options) -> Observer:
        return HistogramObserver(name, axis, method=method, **options)
    make.__name__ = f"{method}_observer"
    return make


# Factories keyed by the calibration methods (ptqc.vocab.Method: the CLI's -qm names, plus
# MindSpore's removal_outlier); HISTOGRAM_METHODS (every method but min_max) share one histogram.
OBSERVERS: dict[str, Callable[..., Observer]] = {
    Method.MIN_MAX: MinMaxObserver,
    **{m: _histogram_factory(m) for m in HISTOGRAM_METHODS},
}


def make_observer(method: str, name: str = "", axis: int | None = None, **options) -> Observer:
    """An observer for ``method``; ``options`` (``percent``, ``bins``...) go to histogram ones."""
    try:
        factory = OBSERVERS[method]
    except KeyError:
        raise PtqcError(f"-qm/--quant-mode {method}: unknown method "
                        f"(available: {', '.join(OBSERVERS)})") from None
    average = options.pop("average", False)  # min_max only (onnxruntime's CalibMovingAverage)
    if method == Method.MIN_MAX:
        return factory(name=name, axis=axis, average=average)
    return factory(name=name, axis=axis, **options)
