"""The observer protocol and the ``min_max`` observer.

An observer is fed batches (``observe``), merges with another observer of the same kind
fed other batches (``merge``: how calibration is split over processes or machines), and
answers with a range (``range``) that :func:`ptqc.quant.qparam_from_range` turns into
parameters (``qparams``).  It keeps fixed-size state, never the activations.
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from ptqc.errors import PtqcError
from ptqc.quant import QuantParam, qparam_from_range


class CalibrationDataError(PtqcError):
    """Calibration saw NaN: the data (or the model on that data) is broken."""


class Observer(Protocol):
    method: str

    def observe(self, x: np.ndarray) -> None: ...
    def merge(self, other: "Observer") -> None: ...
    def range(self) -> tuple[np.ndarray, np.ndarray] | None: ...
    def qparams(self, dtype, *, symmetric: bool) -> QuantParam: ...
    def reset(self) -> None: ...


class MinMaxObserver:
    """The smallest and largest value seen, per tensor (``axis`` None) or per channel.

    Merging is exact: min of mins and max of maxes, so halves merged give bit-identical
    parameters to one observer fed everything.  ±Inf is kept (the range computation clamps it
    and warns); NaN is an error naming the tensor.
    """

    method = "min_max"

    def __init__(self, name: str = "", axis: int | None = None):
        self.name, self.axis = name, axis
        self.reset()

    def reset(self) -> None:
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None
        self.batches = 0

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
        self.min = lo if self.min is None else np.minimum(self.min, lo)
        self.max = hi if self.max is None else np.maximum(self.max, hi)
        self.batches += 1

    def merge(self, other: "MinMaxObserver") -> None:
        if other.min is None:
            return
        if self.min is None:
            self.min, self.max = other.min.copy(), other.max.copy()
        else:
            self.min, self.max = np.minimum(self.min, other.min), np.maximum(self.max, other.max)
        self.batches += other.batches

    def range(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self.min is None else (self.min, self.max)

    def qparams(self, dtype, *, symmetric: bool) -> QuantParam:
        if self.min is None:
            raise CalibrationDataError(f"tensor {self.name!r} was never observed: calibration ran no batch")
        return qparam_from_range(self.min, self.max, dtype, symmetric=symmetric, axis=self.axis,
                                 method=self.method, name=self.name)


# Factories keyed by the CLI's -qm names.  kl, kl_v2, mse, percentile and removal_outlier are
# histogram observers that come with the calibration issue; asking for them is refused by
# name (make_observer), never silently replaced.
OBSERVERS: dict[str, Callable[..., Observer]] = {"min_max": MinMaxObserver}


def make_observer(method: str, name: str = "", axis: int | None = None) -> Observer:
    try:
        factory = OBSERVERS[method]
    except KeyError:
        raise PtqcError(f"-qm/--quant-mode {method}: not built yet in this version "
                        f"(available: {', '.join(OBSERVERS)})") from None
    return factory(name=name, axis=axis)
