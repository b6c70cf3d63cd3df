"""Weight-only rounding of one linear layer: its grid, round-to-nearest, GPTQ and AWQ's scale search.

A layer is ``y = x W^T`` with ``W`` as ``[N, K]`` (one row per output, K inputs), grouped along K:
``Grid`` holds one scale and zero point per (row, group).  What the data says about the layer's
input is ``H = sum x^T x`` over its input rows (``K x K``) and ``mean |x|`` per input channel,
gathered in one streaming pass (memory ``K^2`` per distinct input, whatever the sample count); the
output error of weights ``Q`` is then ``tr((W - Q) H (W - Q)^T)`` without storing a single row.

- **RTN** (Ascend's ``minmax``): each group's range ``[min(w, 0), max(w, 0)]`` (asymmetric) or
  its value of largest magnitude at code ``-2^(b-1)`` (symmetric, zero point 0), round to nearest.
- **GPTQ** (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
  Pre-trained Transformers"; the authors' ``gptq.py``, AutoGPTQ): columns quantized in order of
  decreasing ``diag(H)`` (act-order), each one's error spread over the columns not yet quantized
  through the inverse Hessian's Cholesky factor, in blocks of 128 columns (lazy batch updates).
  Grids are static (fitted to the weights as given, AutoGPTQ's ``static_groups``), so act-order
  needs no group index.  ``H`` is damped by 10 % of its mean diagonal, the value common in
  published GPTQ checkpoints: the paper's 1 % overfits a calibration set of a few hundred rows
  (paraphrase-MiniLM-L3, 16 sentences, float tables: held-out min cosine 0.988 at 1 %, 0.990 at
  3 %, 0.993 at 10 %, 0.991 at 30 % and 100 %).  Inputs come from the float model (one pass over the data).
- **AWQ** (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization"; llm-awq's
  ``auto_scale``): per input channel ``s = mean|x|^a`` (normalized by ``sqrt(max s * min s)``), ``a``
  on ``grids_num`` points ``0, 1/n, ..., (n-1)/n``; the weights quantized as ``Q(W s) / s``, the
  ``a`` with the least output error kept (summed over every layer reading the same input, since
  they share ``s``); then each (row, group) range shrunk by the factor of ``grids_num`` points in
  ``(0.5, 1]`` with the least error through the group's block of ``H`` (llm-awq's ``auto_clip``).
  ``a = 0`` and no shrink are RTN, so one grid point gives RTN and the search is never worse
  than RTN on the data.  The caller divides the input by ``s``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GPTQ_BLOCK = 128
GPTQ_DAMP = 0.1  # of H's mean diagonal; see the module docstring


@dataclass(frozen=True)
class Grid:
    """How a ``[N, K]`` weight is quantized: ``bits``, ``symmetric``, columns per group (``K``
    for per-channel; ``per_tensor`` shares one scale over everything)."""

    bits: int
    symmetric: bool
    group: int
    per_tensor: bool = False

    @property
    def levels(self) -> tuple[int, int]:
        """(qmin, qmax) of the signed codes (symmetric) or the unsigned ones."""
        if self.symmetric:
            return -2 ** (self.bits - 1), 2 ** (self.bits - 1) - 1
        return 0, 2 ** self.bits - 1

    def params(self, w: np.ndarray, clip: float | np.ndarray = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(scale, zero point) of each row of ``w`` (``[N, k]``, one group's columns) as ``[N]``
        arrays, the range shrunk by ``clip`` (per row or one); per tensor, the same for every row.
        Symmetric: the signed value of largest magnitude maps to ``qmin`` (the scale takes its
        sign, as onnxruntime's MatMulNBits quantizer does), so all ``2^bits`` codes are used."""
        qmin, qmax = self.levels
        lo = np.minimum(w.min(axis=1), 0.0) * clip
        hi = np.maximum(w.max(axis=1), 0.0) * clip
        if self.per_tensor:
            lo, hi = np.full_like(lo, lo.min()), np.full_like(hi, hi.max())
        if self.symmetric:
            scale = np.where(-lo >= hi, lo, hi) / qmin
            zp = np.zeros_like(scale)
        else:
            scale = (hi - lo) / (qmax - qmin)
            zp = np.clip(np.rint(-lo / np.where(scale > 0, scale, 1.0)), qmin, qmax)
        return np.where(scale != 0, scale, 1.0), zp

    def codes(self, w: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
        """Codes of ``w`` (``[N, k]``) with per-row ``scale``/``zp`` (``[N]``)."""
        qmin, qmax = self.levels
        return np.clip(np.rint(w / scale[:, None]) + zp[:, None], qmin, qmax)

    def groups(self, k: int) -> list[slice]:
        step = k if self.per_tensor else self.group
        return [slice(i, min(i + step, k)) for i in range(0, k, step)]


@dataclass
class Rounded:
    """A quantized ``[N, K]`` weight: integer codes, and scale/zero point per (row, group)."""

    codes: np.ndarray  # [N, K]
    scale: np.ndarray  # [N, G]
    zero_point: np.ndarray  # [N, G]
    grid: Grid

    def dequantize(self) -> np.ndarray:
        reps = [s.stop - s.start for s in self.grid.groups(self.codes.shape[1])]
        scale = np.repeat(self.scale, reps, axis=1)
        zp = np.repeat(self.zero_point, reps, axis=1)
        return (self.codes - zp) * scale


def rtn(w: np.ndarray, grid: Grid, clip: np.ndarray | None = None) -> Rounded:
    """Round to nearest on ``grid``, each (row, group) range shrunk by ``clip`` (``[N, G]``) if given."""
    w = np.asarray(w, np.float64)
    groups = grid.groups(w.shape[1])
    parts = [_fit(w, grid, sl) if clip is None else grid.params(w[:, sl], clip[:, gi]) for gi, sl in enumerate(groups)]
    codes = np.concatenate([grid.codes(w[:, sl], s, z) for sl, (s, z) in zip(groups, parts)], axis=1)
    return Rounded(codes, np.stack([s for s, _ in parts], 1), np.stack([z for _, z in parts], 1), grid)


def _fit(w: np.ndarray, grid: Grid, sl: slice) -> tuple[np.ndarray, np.ndarray]:
    """A group's (scale, zero point): per tensor fitted to the whole weight."""
    return grid.params(w if grid.per_tensor else w[:, sl])


def clip_search(w: np.ndarray, h: np.ndarray, grid: Grid, steps: int) -> np.ndarray | None:
    """Per (row, group) the range shrink ``1 - i / (2 steps)``, ``i < steps`` (1 down to just above
    0.5, llm-awq's ``auto_clip`` span) whose rounding gives the least output error through the
    group's own block of ``H``; one step is no shrink.  None per tensor (one range for everything)."""
    if grid.per_tensor:
        return None
    w = np.asarray(w, np.float64)
    groups = grid.groups(w.shape[1])
    ratios = np.ones((w.shape[0], len(groups)))
    for gi, sl in enumerate(groups):
        wg, hg = w[:, sl], np.asarray(h[sl, sl], np.float64)
        best = np.full(w.shape[0], np.inf)
        for i in range(max(int(steps), 1)):
            r = 1.0 - i / (2 * max(int(steps), 1))
            scale, zp = grid.params(wg, r)
            d = wg - (grid.codes(wg, scale, zp) - zp[:, None]) * scale[:, None]
            err = np.einsum("nk,nk->n", d @ hg, d)
            better = err < best
            best[better], ratios[better, gi] = err[better], r
    return ratios


def factor(h: np.ndarray) -> np.ndarray:
    """``L`` with ``H = L L^T`` (float32, ``K x r``): ``H``'s eigenvectors scaled by the square roots
    of its eigenvalues, the numerically zero ones dropped (``r`` <= the rows ``H`` summed)."""
    vals, vecs = np.linalg.eigh(np.asarray(h, np.float64))
    keep = vals > max(vals[-1], 0.0) * 1e-10
    return (vecs[:, keep] * np.sqrt(vals[keep])).astype(np.float32)


def output_error(w: np.ndarray, q: np.ndarray, l: np.ndarray) -> float:
    """``||(W - Q) L||^2 = tr((W - Q) H (W - Q)^T)``: the summed squared output error over the
    rows ``H = L L^T`` saw."""
    d = (np.asarray(w, np.float64) - q).astype(np.float32) @ l
    return float(np.einsum("nr,nr->", d, d, dtype=np.float64))


def inverse_factor(h: np.ndarray, damp: float = GPTQ_DAMP) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """GPTQ's column order (descending ``diag(H)``: act-order), and in that order the upper ``U``
    with ``H^-1 = U^T U`` of ``H`` damped by ``damp`` times its mean diagonal, dead inputs (zero
    diagonal) set to 1, and the dead mask; None when ``H`` is numerically indefinite.  Computed
    once per input, shared by every layer reading it."""
    h = np.array(h, np.float64)
    order = np.argsort(-np.diag(h), kind="stable")
    h = h[order][:, order]
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h[np.diag_indices(len(h))] += damp * np.mean(np.diag(h))
    try:
        return order, np.linalg.cholesky(np.linalg.inv(h)).T, dead
    except np.linalg.LinAlgError:
        return None


def gptq(w: np.ndarray, inverse: tuple | None, grid: Grid, block: int = GPTQ_BLOCK) -> Rounded:
    """GPTQ's column-by-column rounding with error compensation (see the module docstring), given
    :func:`inverse_factor` of the layer's ``H`` (None: nearest rounding, the safe answer)."""
    if inverse is None:
        return rtn(w, grid)
    order, hinv, dead = inverse
    w = np.asarray(w, np.float64)
    n, k = w.shape
    groups = grid.groups(k)
    fitted = [_fit(w, grid, sl) for sl in groups]  # static groups: the grids of the weights as given
    scale, zp = np.stack([s for s, _ in fitted], 1), np.stack([z for _, z in fitted], 1)
    gidx = np.concatenate([np.full(sl.stop - sl.start, gi) for gi, sl in enumerate(groups)])[order]
    wp = w[:, order]
    wp[:, dead] = 0.0
    codes = np.zeros((n, k))
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        wb, err = wp[:, b0:b1].copy(), np.zeros((n, b1 - b0))
        hb = hinv[b0:b1, b0:b1]
        for i in range(b1 - b0):
            gi = gidx[b0 + i]
            c = grid.codes(wb[:, i:i + 1], scale[:, gi], zp[:, gi])[:, 0]
            codes[:, order[b0 + i]] = c
            e = (wb[:, i] - (c - zp[:, gi]) * scale[:, gi]) / hb[i, i]
            wb[:, i:] -= np.outer(e, hb[i, i:])
            err[:, i] = e
        wp[:, b1:] -= err @ hinv[b0:b1, b1:]
    return Rounded(codes, scale, zp, grid)


def awq_scales(weights: list[np.ndarray], l: np.ndarray, mean_abs: np.ndarray, grid: Grid,
               grids_num: int) -> tuple[np.ndarray, float, float]:
    """(per-input-channel ``s``, the error with it, RTN's error): the ``a`` of ``s = mean|x|^a``
    whose ``Q(W s) / s`` gives the least output error summed over ``weights`` (all ``[N_i, K]``,
    reading the same input; ``l``: :func:`factor` of their input's ``H``)."""
    x = np.maximum(np.asarray(mean_abs, np.float64), 1e-4)
    best = None
    rtn_err = 0.0
    for step in range(max(int(grids_num), 1)):
        a = step / max(int(grids_num), 1)
        s = x ** a
        s = s / np.sqrt(s.max() * s.min())
        err = 0.0
        for w in weights:
            w = np.asarray(w, np.float64)
            q = rtn(w * s, grid).dequantize() / s
            err += output_error(w, q, l)
        if step == 0:
            rtn_err = err
        if best is None or err < best[1]:
            best = (s, err)
    return best[0], best[1], rtn_err
