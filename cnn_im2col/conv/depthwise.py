"""The direct depthwise strategy of a convolution: forward/backward pair, cache and kernels.

``groups == in_channels == out_channels``: each output map is one input map correlated with one
KH x KW kernel. As grouped im2col + GEMM that is C GEMMs of 1 x KH*KW by KH*KW x N*OH*OW (too thin
for a BLAS); directly, it is KH*KW multiply-adds per output, in registers (measured 18-25 ms
against 57-78 ms for one GEMM per channel, 32x64x32x32 3x3 pad 1 forward + backward on one
thread). No im2col matrix at all: the cache keeps x. The grouped im2col path
(``conv/im2col.py``) is this strategy's twin; the tests hold them equal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numba as nb
import numpy as np

from .. import threads as _threads
from ..arrays import unsigned as _u
from ..arrays import valid_range as _valid_range
from ..shapes import WindowGeometry
from .im2col import bias_columns

# Input maps of at most this many pixels are computed channels-last (vectors over the channels);
# larger ones plane by plane (one vector loop per tap over the whole plane, below). The input's
# size decides, not the output's: the channels-last kernels copy the whole padded input per
# sample, which a stride does not shrink. Measured 2026-12-04, AMD EPYC (AVX-512), 2 threads,
# float32 3x3 pad 1, channels-last / planes ms, forward; forward + backward with ReLU fused,
# (N, C, H=W, stride): (64, 96, 32, 2) 12.0 / 4.1; 29.8 / 12.3. (32, 64, 32, 1) 6.2 / 1.4;
# 14.7 / 4.5. (64, 96, 16, 1) 2.6 / 1.5; 8.3 / 5.4. (64, 144, 16, 2) 2.6 / 2.4; 7.2 / 6.4.
# (64, 192, 8, 1) 1.25 / 1.23; 4.2 / 4.2. (64, 480, 4, 1) 0.70 / 2.0; 2.2 / 5.1. (1, 96, 16, 1)
# 0.094 / 0.065; 0.25 / 0.15. (1, 192, 8, 1) 0.057 / 0.063; 0.15 / 0.15.
_CHANNELS_LAST_MAX_PLANE = 64

# Batch slices a thread: the kernels work a plane (or a channels-last sample) at a time, so a
# slice's size only balances the threads; each slice costs a hand-off of its own (and the input's
# NaN/Inf scan rides with each). Measured 2026-12-06, Intel Xeon, 2 threads, forward + backward,
# bench_cnn_layers' workers, 5 alternated rounds, ms: 32x96x32x32 3x3 stride 2, slices of one
# sample (cache_slices' 512 KiB of temporaries) 3.31, 8 slices 3.13 (PyTorch 3.39); stride 1,
# 32x64x32x32, 3.35 -> 3.13.
_SLICES_PER_THREAD = 4


class DepthwiseCache(NamedTuple):
    """What backward needs of a depthwise convolution."""

    x: np.ndarray  # the (C-contiguous) input
    weight: np.ndarray
    bias_shape: tuple[int, ...] | None
    geometry: WindowGeometry
    owner: str
    slices: list[slice]
    out: np.ndarray | None  # relu=True: the output, whose sign is ReLU's derivative

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return self.x.shape


# The plane kernels. Output (oh, ow), tap (i, j) reads input row oh*SY + i*DY - PT = (oh + by)*SY
# + py with py = (i*DY - PT) mod SY, by = (i*DY - PT) // SY, and likewise a column. So each input
# plane is split once into its SY x SX phases, each a zero-bordered (QH, QW) plane ``q`` with
# q[py, px, a, b] = x[(a + by0)*SY + py, (b + bx0)*SX + px] (0 outside the image); with the
# output laid out QW wide too (its last QW - OW columns are scratch), a tap is then ONE contiguous
# multiply-add over the whole plane: ``out[k] += w * q[py, px, by - by0:, bx - bx0:][k]``. Row by
# row, the loops were OW long (16 at 3x3 stride 2 on 32x32): one thread, forward / backward,
# 32x96x32x32 3x3 stride 1 5.8 -> 3.0 / 12 -> 7.2-8.8 ms, stride 2 3.0 -> 2.4 / 6.4 -> 5.8-7.2 ms
# (alternated runs, AMD EPYC). With SX == 2 both column phases of a row are filled in one loop
# (``_split_row_pairs``: one loop over the cells both phases hold, the ends apart), measured
# faster (its docstring); an earlier paired fill, not kept, had measured 1.3x slower than two
# stride-2 loops.


@nb.njit(cache=True, nogil=True, inline="always")
def taps(k, step, dilation, pad):
    """(first, span): the phase offsets ``(t*D - P) // S`` of the taps t < K along one axis run
    from ``first`` to ``first + span``."""
    first = (-pad) // step
    return first, ((k - 1) * dilation - pad) // step - first


@nb.njit(cache=True, nogil=True, inline="always")
def split_phases(src, sy, sx, by0, bx0, qh, qw, q):
    """Fill the image cells of the phase planes ``q`` (SY*SX*QH*QW, flat) from the (H, W) map
    ``src``; the other cells are left as they are (0: the caller zeroes ``q`` once)."""
    height, width = src.shape
    for py in range(sy):
        a_lo, a_hi = _valid_range(by0 * sy + py, sy, height, qh)
        if sx == 2:
            _split_row_pairs(src, sy, py, by0, bx0, qh, qw, a_lo, a_hi, q)
            continue
        for px in range(sx):
            b_lo, b_hi = _valid_range(bx0 * sx + px, sx, width, qw)
            plane = (py * sx + px) * qh * qw
            col = bx0 * sx + px
            for a in range(a_lo, a_hi):
                row, dst = src[(a + by0) * sy + py], plane + a * qw
                for b in range(b_lo, b_hi):
                    q[_u(dst + b)] = row[_u(b * sx + col)]


@nb.njit(cache=True, nogil=True, inline="always")
def _row_pair_ranges(bx0, width, qw):
    """The phase columns [lo0, hi0) and [lo1, hi1) that hold image cells of a (., width) row at
    stride 2, and [both_lo, both_hi) where both do (empty: both_hi == both_lo)."""
    lo0, hi0 = _valid_range(bx0 * 2, 2, width, qw)
    lo1, hi1 = _valid_range(bx0 * 2 + 1, 2, width, qw)
    both_lo = max(lo0, lo1)
    return lo0, hi0, lo1, hi1, both_lo, max(min(hi0, hi1), both_lo)


@nb.njit(cache=True, nogil=True, inline="always")
def _split_row_pairs(src, sy, py, by0, bx0, qh, qw, a_lo, a_hi, q):
    """``split_phases``'s rows of row phase ``py`` when SX == 2: both column phases of an input
    row in one loop, where both have a cell, so that the row is read as whole vectors and
    deinterleaved (measured, 32x96x32x32 3x3 stride 2, one thread: the split 1.92 -> 0.67 ms of a
    2.56 ms forward; two stride-2 loops read it element by element)."""
    lo0, hi0, lo1, hi1, both_lo, both_hi = _row_pair_ranges(bx0, src.shape[1], qw)
    plane0 = py * 2 * qh * qw
    plane1 = plane0 + qh * qw
    col = bx0 * 2
    for a in range(a_lo, a_hi):
        row = src[(a + by0) * sy + py]
        d0, d1 = plane0 + a * qw, plane1 + a * qw
        for b in range(both_lo, both_hi):
            q[_u(d0 + b)] = row[_u(2 * b + col)]
            q[_u(d1 + b)] = row[_u(2 * b + col + 1)]
        for b in range(lo0, min(both_lo, hi0)):  # the cells only one phase has: at the ends
            q[_u(d0 + b)] = row[_u(2 * b + col)]
        for b in range(max(both_hi, lo0), hi0):
            q[_u(d0 + b)] = row[_u(2 * b + col)]
        for b in range(lo1, min(both_lo, hi1)):
            q[_u(d1 + b)] = row[_u(2 * b + col + 1)]
        for b in range(max(both_hi, lo1), hi1):
            q[_u(d1 + b)] = row[_u(2 * b + col + 1)]


@nb.njit(cache=True, nogil=True, inline="always")
def _merge_phases(q, sy, sx, by0, bx0, qh, qw, dst):
    """The adjoint of ``split_phases`` (each image cell is one phase cell): ``dst`` (H, W)
    (written whole) from the phase planes ``q``; cells no phase plane holds get 0."""
    height, width = dst.shape
    dst[:] = 0.0
    for py in range(sy):
        a_lo, a_hi = _valid_range(by0 * sy + py, sy, height, qh)
        if sx == 2:
            _merge_row_pairs(q, sy, py, by0, bx0, qh, qw, a_lo, a_hi, dst)
            continue
        for px in range(sx):
            b_lo, b_hi = _valid_range(bx0 * sx + px, sx, width, qw)
            plane = (py * sx + px) * qh * qw
            col = bx0 * sx + px
            for a in range(a_lo, a_hi):
                row, src = dst[(a + by0) * sy + py], plane + a * qw
                for b in range(b_lo, b_hi):
                    row[_u(b * sx + col)] = q[_u(src + b)]


@nb.njit(cache=True, nogil=True, inline="always")
def _merge_row_pairs(q, sy, py, by0, bx0, qh, qw, a_lo, a_hi, dst):
    """``_merge_phases``'s rows of row phase ``py`` when SX == 2 (the adjoint of
    ``_split_row_pairs``): both column phases into an output row in one loop, interleaved."""
    lo0, hi0, lo1, hi1, both_lo, both_hi = _row_pair_ranges(bx0, dst.shape[1], qw)
    plane0 = py * 2 * qh * qw
    plane1 = plane0 + qh * qw
    col = bx0 * 2
    for a in range(a_lo, a_hi):
        row = dst[(a + by0) * sy + py]
        s0, s1 = plane0 + a * qw, plane1 + a * qw
        for b in range(both_lo, both_hi):
            row[_u(2 * b + col)] = q[_u(s0 + b)]
            row[_u(2 * b + col + 1)] = q[_u(s1 + b)]
        for b in range(lo0, min(both_lo, hi0)):
            row[_u(2 * b + col)] = q[_u(s0 + b)]
        for b in range(max(both_hi, lo0), hi0):
            row[_u(2 * b + col)] = q[_u(s0 + b)]
        for b in range(lo1, min(both_lo, hi1)):
            row[_u(2 * b + col + 1)] = q[_u(s1 + b)]
        for b in range(max(both_hi, lo1), hi1):
            row[_u(2 * b + col + 1)] = q[_u(s1 + b)]


@nb.njit(cache=True, nogil=True, inline="always")
def tap_base(e, f, sy, sx, by0, bx0, qh, qw):
    """Where tap (e, f) (its offsets from the window's corner, padding subtracted) starts in the
    phase planes: output k of the plane reads ``q[base + k]``."""
    return (((e % sy) * sx + f % sx) * qh + e // sy - by0) * qw + f // sx - bx0


@nb.njit(cache=True, nogil=True, inline="always")
def _nine_bases(sy, sx, dy, dx, pt, pl, by0, bx0, qh, qw):
    """``tap_base`` of each tap of a 3x3 kernel, row by row."""
    return (
        tap_base(-pt, -pl, sy, sx, by0, bx0, qh, qw),
        tap_base(-pt, dx - pl, sy, sx, by0, bx0, qh, qw),
        tap_base(-pt, 2 * dx - pl, sy, sx, by0, bx0, qh, qw),
        tap_base(dy - pt, -pl, sy, sx, by0, bx0, qh, qw),
        tap_base(dy - pt, dx - pl, sy, sx, by0, bx0, qh, qw),
        tap_base(dy - pt, 2 * dx - pl, sy, sx, by0, bx0, qh, qw),
        tap_base(2 * dy - pt, -pl, sy, sx, by0, bx0, qh, qw),
        tap_base(2 * dy - pt, dx - pl, sy, sx, by0, bx0, qh, qw),
        tap_base(2 * dy - pt, 2 * dx - pl, sy, sx, by0, bx0, qh, qw),
    )


@nb.njit(cache=True, nogil=True, inline="always")
def _nine_weights(wc):
    """A 3x3 kernel's weights, row by row, as scalars (so the one-pass loops keep them in
    registers)."""
    return (wc[0, 0], wc[0, 1], wc[0, 2], wc[1, 0], wc[1, 1], wc[1, 2],
            wc[2, 0], wc[2, 1], wc[2, 2])


@nb.njit(cache=True, nogil=True, inline="always")
def nine_taps(q, wc, b, sy, sx, dy, dx, pt, pl, by0, bx0, qh, qw, acc):
    """``acc`` (written) = b + the 9 taps of a 3x3 kernel ``wc``, in ONE pass: each output is
    loaded and stored once instead of once per tap, and the sum is the tap-by-tap loop's, in the
    same order (bit for bit). Measured 2026-12-04, AMD EPYC, one thread, float32, the tap loops
    alone, alternated in one process, two runs: (64, 96, 32x32) 0.69-0.72x the time, stride 2 (32
    samples) 0.78-0.92x, (64, 96, 16x16) 0.83-0.88x, (64, 144, 16x16) stride 2 0.86-1.08x."""
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = _nine_bases(sy, sx, dy, dx, pt, pl, by0, bx0, qh, qw)
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = _nine_weights(wc)
    for k in range(acc.shape[0]):
        a = b
        a += w0 * q[_u(b0 + k)]
        a += w1 * q[_u(b1 + k)]
        a += w2 * q[_u(b2 + k)]
        a += w3 * q[_u(b3 + k)]
        a += w4 * q[_u(b4 + k)]
        a += w5 * q[_u(b5 + k)]
        a += w6 * q[_u(b6 + k)]
        a += w7 * q[_u(b7 + k)]
        a += w8 * q[_u(b8 + k)]
        acc[_u(k)] = a


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def depthwise_forward(x, w, sy, sx, dy, dx, pt, pl, bias, relu, out):
    """``out[n, c, oh, ow] = f(bias[c, p or 0] + sum_ij w[c, i, j] * x[n, c, oh*SY - PT + i*DY,
    ow*SX - PL + j*DX])`` (padding reads 0; f = ReLU if ``relu``).

    x: (N, C, H, W); w: (C, KH, KW); bias: (C, 1) or (C, OH*OW); out (written): (N, C, OH, OW).
    Plane by plane, through its phase planes (above): one vector loop per tap.
    """
    n_count, c_count = x.shape[0], x.shape[1]
    kh, kw = w.shape[1], w.shape[2]
    oh_count, ow_count = out.shape[2], out.shape[3]
    by0, span_y = taps(kh, sy, dy, pt)
    bx0, span_x = taps(kw, sx, dx, pl)
    qh, qw = oh_count + span_y + 1, ow_count + span_x  # + 1 row: the scratch columns' reads
    q = np.zeros(sy * sx * qh * qw, dtype=x.dtype)
    acc = np.empty(oh_count * qw, dtype=x.dtype)
    untied = bias.shape[1] > 1
    zero = x.dtype.type(0)
    for n in range(n_count):
        for c in range(c_count):
            split_phases(x[n, c], sy, sx, by0, bx0, qh, qw, q)
            if untied:
                for oh in range(oh_count):
                    for ow in range(ow_count):
                        acc[_u(oh * qw + ow)] = bias[c, oh * ow_count + ow]
            elif kh == 3 and kw == 3:
                nine_taps(q, w[c], bias[c, 0], sy, sx, dy, dx, pt, pl, by0, bx0, qh, qw, acc)
            else:
                acc[:] = bias[c, 0]
            if untied or kh != 3 or kw != 3:
                for i in range(kh):
                    e = i * dy - pt
                    for j in range(kw):
                        f = j * dx - pl
                        base = tap_base(e, f, sy, sx, by0, bx0, qh, qw)
                        weight = w[c, i, j]
                        for k in range(oh_count * qw):
                            acc[_u(k)] += weight * q[_u(base + k)]
            dst = out[n, c]
            for oh in range(oh_count):
                row = dst[oh]
                for ow in range(ow_count):
                    v = acc[_u(oh * qw + ow)]
                    row[_u(ow)] = v if (v > zero or not relu) else zero


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def depthwise_forward_channels_last(x, w, sy, sx, dy, dx, pt, pl, bias, relu, out):
    """``depthwise_forward`` with the channels innermost: for maps so small that a row of one map
    is shorter than a vector loop's start-up, each sample is copied into a zero-padded (PH, PW, C)
    scratch and each output position's C values are computed as vectors over the channels, then
    written back to NCHW with the bias and the ReLU (as oneDNN and XNNPACK lay out depthwise
    convolutions). Same arguments and result as ``depthwise_forward``.
    """
    n_count, c_count, height, width = x.shape
    kh, kw = w.shape[1], w.shape[2]
    oh_count, ow_count = out.shape[2], out.shape[3]
    ph_count = (oh_count - 1) * sy + (kh - 1) * dy + 1  # the padded rows the windows read
    pw_count = (ow_count - 1) * sx + (kw - 1) * dx + 1
    pad = np.zeros((ph_count, pw_count, c_count), dtype=x.dtype)  # borders stay 0 for every n
    acc = np.empty((oh_count, ow_count, c_count), dtype=x.dtype)
    wt = np.empty((kh, kw, c_count), dtype=x.dtype)
    for c in range(c_count):
        for i in range(kh):
            for j in range(kw):
                wt[i, j, c] = w[c, i, j]
    untied = bias.shape[1] > 1
    row_lo, row_hi = pt, min(pt + height, ph_count)
    col_lo, col_hi = pl, min(pl + width, pw_count)
    for n in range(n_count):
        for r in range(row_lo, row_hi):
            for q in range(col_lo, col_hi):
                cell = pad[r, q]
                for c in range(c_count):
                    cell[c] = x[n, c, r - pt, q - pl]
        for oh in range(oh_count):
            for ow in range(ow_count):
                a = acc[oh, ow]
                for c in range(c_count):
                    a[c] = bias[c, oh * ow_count + ow] if untied else bias[c, 0]
                for i in range(kh):
                    src_row = pad[oh * sy + i * dy]
                    for j in range(kw):
                        src = src_row[ow * sx + j * dx]
                        wv = wt[i, j]
                        for c in range(c_count):
                            a[c] += wv[c] * src[c]
        for c in range(c_count):
            dst = out[n, c]
            for oh in range(oh_count):
                for ow in range(ow_count):
                    v = acc[oh, ow, c]
                    dst[oh, ow] = v if (v > 0 or not relu) else 0.0


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"}, inline="always")
def _nine_tap_grads(g, gp, lead, q, wc, sy, sx, dy, dx, pt, pl, by0, bx0, qh, qw, input_grad,
                    dwc, dq):
    """A 3x3 kernel's gradients on one plane in one pass each: ``dwc`` (3, 3) += the nine taps'
    sums of g * q (nine float64 accumulators over one read of g), and, with ``input_grad``,
    ``dq`` (written whole) = the nine taps gathered, ``dq[m] = sum_t w_t * g[m - b_t]``, from
    ``gp``, where g sits at ``lead`` with zeros around it (so a tap whose window misses adds 0):
    the terms the tap-by-tap scatter adds to dq[m] (to rounding: ``reassoc`` may reorder them)."""
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = _nine_bases(sy, sx, dy, dx, pt, pl, by0, bx0, qh, qw)
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = 0.0
    for k in range(g.shape[0]):
        v = g[_u(k)]
        a0 += v * q[_u(b0 + k)]
        a1 += v * q[_u(b1 + k)]
        a2 += v * q[_u(b2 + k)]
        a3 += v * q[_u(b3 + k)]
        a4 += v * q[_u(b4 + k)]
        a5 += v * q[_u(b5 + k)]
        a6 += v * q[_u(b6 + k)]
        a7 += v * q[_u(b7 + k)]
        a8 += v * q[_u(b8 + k)]
    dwc[0, 0] += a0
    dwc[0, 1] += a1
    dwc[0, 2] += a2
    dwc[1, 0] += a3
    dwc[1, 1] += a4
    dwc[1, 2] += a5
    dwc[2, 0] += a6
    dwc[2, 1] += a7
    dwc[2, 2] += a8
    if input_grad:
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = _nine_weights(wc)
        zero = dq.dtype.type(0)
        for m in range(dq.shape[0]):
            s = lead + m
            d = zero
            d += w0 * gp[_u(s - b0)]
            d += w1 * gp[_u(s - b1)]
            d += w2 * gp[_u(s - b2)]
            d += w3 * gp[_u(s - b3)]
            d += w4 * gp[_u(s - b4)]
            d += w5 * gp[_u(s - b5)]
            d += w6 * gp[_u(s - b6)]
            d += w7 * gp[_u(s - b7)]
            d += w8 * gp[_u(s - b8)]
            dq[_u(m)] = d


# ``reassoc``: the sums (the weight and bias gradients) may be reordered, so that they vectorise
# (row by row, stride 1, 32x96x32x32 backward, one thread: 26.0 -> 11.8 ms).
@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def depthwise_backward(dout, y, relu, x, w, sy, sx, dy, dx_step, pt, pl, input_grad, dx, dw, db):
    """Gradients of ``depthwise_forward`` on a batch slice: ``dx`` (written whole when
    ``input_grad``), and this slice's ``dw`` (C, KH, KW) and ``db`` (C,) (written, float64).

    dout, y (the forward output; read only with ``relu``, whose derivative is ``y > 0``):
    (N, C, OH, OW); x, dx: (N, C, H, W); w: (C, KH, KW). Plane by plane, through the phase planes
    of x and of dx (as ``depthwise_forward``), the output gradient laid out QW wide with zeros in
    its scratch columns, so that they add nothing.
    """
    n_count, c_count = x.shape[0], x.shape[1]
    kh, kw = w.shape[1], w.shape[2]
    oh_count, ow_count = dout.shape[2], dout.shape[3]
    by0, span_y = taps(kh, sy, dy, pt)
    bx0, span_x = taps(kw, sx, dx_step, pl)
    qh, qw = oh_count + span_y + 1, ow_count + span_x
    q = np.zeros(sy * sx * qh * qw, dtype=x.dtype)
    dq = np.empty(sy * sx * qh * qw, dtype=x.dtype)
    # a 3x3 kernel at stride 1: its gradients in one pass each (``_nine_tap_grads``). Strided,
    # dq's gather would run over all SY*SX phase planes, each tap's scatter over one: measured
    # 1.10-1.38x the time at stride 2, 0.63-0.92x at stride 1 (one thread, float32, 32x64x32x32,
    # 64x96x16x16; 32x96x32x32 and 64x144x16x16 at stride 2)
    nine = kh == 3 and kw == 3 and sy == 1 and sx == 1
    # g: the output gradient, QW wide; with ``nine`` it sits at ``lead`` in a zero-bordered
    # ``gp`` so that dq can gather from it in one pass
    # the largest tap offset: every gather index s - b_t is then >= 0
    lead = max(_nine_bases(sy, sx, dy, dx_step, pt, pl, by0, bx0, qh, qw)) if nine else 0
    gp = np.zeros(lead + sy * sx * qh * qw, dtype=dout.dtype)
    g = gp[lead : lead + oh_count * qw]  # its scratch columns stay 0
    zero = dout.dtype.type(0)
    dw[:] = 0.0
    db[:] = 0.0
    for n in range(n_count):
        for c in range(c_count):
            total = 0.0
            for oh in range(oh_count):
                for ow in range(ow_count):
                    v = dout[n, c, oh, ow]
                    if relu and not y[n, c, oh, ow] > 0:
                        v = zero
                    g[_u(oh * qw + ow)] = v
                    total += v
            db[c] += total
            split_phases(x[n, c], sy, sx, by0, bx0, qh, qw, q)
            if nine:
                _nine_tap_grads(g, gp, lead, q, w[c], sy, sx, dy, dx_step, pt, pl, by0, bx0, qh,
                                qw, input_grad, dw[c], dq)
                if input_grad:
                    _merge_phases(dq, sy, sx, by0, bx0, qh, qw, dx[n, c])
                continue
            if input_grad:
                dq[:] = 0.0
            for i in range(kh):
                e = i * dy - pt
                for j in range(kw):
                    f = j * dx_step - pl
                    base = tap_base(e, f, sy, sx, by0, bx0, qh, qw)
                    # one plane's sum in the data's dtype, the planes' sums in float64: float32
                    # vectors are twice as wide (stride 2, 32x96x32x32, one thread, Intel Xeon:
                    # backward 3.51 -> 3.09 ms) and a plane's OH*OW terms are far fewer than
                    # the N*OH*OW that the im2col twin's float32 GEMM sums
                    acc = zero
                    for k in range(oh_count * qw):
                        acc += g[_u(k)] * q[_u(base + k)]
                    dw[c, i, j] += acc
                    if input_grad:
                        weight = w[c, i, j]
                        for k in range(oh_count * qw):
                            dq[_u(base + k)] += weight * g[_u(k)]
            if input_grad:
                _merge_phases(dq, sy, sx, by0, bx0, qh, qw, dx[n, c])


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def depthwise_backward_channels_last(
    dout, y, relu, x, w, sy, sx, dy, dx_step, pt, pl, input_grad, dx, dw, db
):
    """``depthwise_backward`` with the channels innermost, for small maps (see
    ``depthwise_forward_channels_last``): per sample, the padded input and the output gradient
    are copied channels-last, and every update is a vector over the channels. Same arguments and
    results as ``depthwise_backward``.
    """
    n_count, c_count, height, width = x.shape
    kh, kw = w.shape[1], w.shape[2]
    oh_count, ow_count = dout.shape[2], dout.shape[3]
    ph_count = (oh_count - 1) * sy + (kh - 1) * dy + 1
    pw_count = (ow_count - 1) * sx + (kw - 1) * dx_step + 1
    pad = np.zeros((ph_count, pw_count, c_count), dtype=x.dtype)
    dpad = np.zeros((ph_count, pw_count, c_count), dtype=x.dtype)
    g = np.empty((oh_count, ow_count, c_count), dtype=x.dtype)
    wt = np.empty((kh, kw, c_count), dtype=x.dtype)
    for c in range(c_count):
        for i in range(kh):
            for j in range(kw):
                wt[i, j, c] = w[c, i, j]
    dwt = np.zeros((kh, kw, c_count), dtype=np.float64)
    dbt = np.zeros(c_count, dtype=np.float64)
    row_lo, row_hi = pt, min(pt + height, ph_count)
    col_lo, col_hi = pl, min(pl + width, pw_count)
    zero = x.dtype.type(0)
    for n in range(n_count):
        for r in range(row_lo, row_hi):
            for q in range(col_lo, col_hi):
                cell = pad[r, q]
                for c in range(c_count):
                    cell[c] = x[n, c, r - pt, q - pl]
        for c in range(c_count):
            for oh in range(oh_count):
                for ow in range(ow_count):
                    v = dout[n, c, oh, ow]
                    if relu and not y[n, c, oh, ow] > 0:
                        v = zero
                    g[oh, ow, c] = v
        if input_grad:
            dpad[:] = 0.0
        for oh in range(oh_count):
            for ow in range(ow_count):
                gv = g[oh, ow]
                for c in range(c_count):
                    dbt[c] += gv[c]
                for i in range(kh):
                    r = oh * sy + i * dy
                    for j in range(kw):
                        q = ow * sx + j * dx_step
                        src = pad[r, q]
                        acc = dwt[i, j]
                        for c in range(c_count):
                            acc[c] += gv[c] * src[c]
                        if input_grad:
                            dst = dpad[r, q]
                            wv = wt[i, j]
                            for c in range(c_count):
                                dst[c] += wv[c] * gv[c]
        if input_grad:
            for c in range(c_count):
                target = dx[n, c]
                for r in range(height):
                    for q in range(width):
                        pr, pq = r + pt, q + pl
                        target[r, q] = dpad[pr, pq, c] if pr < ph_count and pq < pw_count else zero
    for c in range(c_count):
        db[c] = dbt[c]
        for i in range(kh):
            for j in range(kw):
                dw[c, i, j] = dwt[i, j, c]


def forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    g: WindowGeometry,
    *,
    groups: int,
    backend: str = "numba",
    owner: str = "conv2d",
    keep: bool = True,
    relu: bool = False,
    then: Callable[[slice, np.ndarray], None] | None = None,
) -> tuple[np.ndarray, DepthwiseCache]:
    """``conv2d_forward``'s depthwise strategy on checked arguments (as ``conv.im2col.forward``;
    ``groups``, ``backend`` and ``keep`` are the same for every strategy: here groups == C == O,
    numba, and x is kept either way)."""
    n, out_channels = x.shape[0], weight.shape[0]
    out = np.empty((n, out_channels, g.oh, g.ow), dtype=weight.dtype)
    bias2 = bias_columns(bias, out_channels, weight.dtype)
    w3 = np.ascontiguousarray(weight[:, 0])
    slices = _threads.split(n, min(n, _SLICES_PER_THREAD * _threads.get_num_threads()))

    kernel = (
        depthwise_forward_channels_last
        if x.shape[2] * x.shape[3] <= _CHANNELS_LAST_MAX_PLANE
        else depthwise_forward
    )

    def direct(s: slice) -> None:
        kernel(x[s], w3, g.sy, g.sx, g.dy, g.dx, g.top, g.left, bias2, relu, out[s])
        if then is not None:
            then(s, out[s])

    _threads.parallel_map(direct, slices)
    cache = DepthwiseCache(
        x, weight, None if bias is None else bias.shape, g, owner, slices, out if relu else None
    )
    return out, cache


def backward(
    dout: np.ndarray | None,
    cache: DepthwiseCache,
    input_grad: bool = True,
    *,
    dout_of: Callable[[slice], np.ndarray] | None = None,
    dz_into: Callable[[slice, np.ndarray, np.ndarray], None] | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``conv2d_backward`` of a depthwise convolution, slice by slice: ``dout`` checked, or None
    and ``dout_of(s)`` per slice (asked once for the batch where an untied bias needs it whole;
    ``dz_into`` is the im2col layout's, unused)."""
    g, weight, x, bias_shape = cache.geometry, cache.weight, cache.x, cache.bias_shape
    untied = bias_shape is not None and len(bias_shape) != 1
    if dout_of is not None and untied:
        dout, dout_of = dout_of(slice(0, x.shape[0])), None
    relu = cache.out is not None
    w3 = np.ascontiguousarray(weight[:, 0])
    if dout_of is None:
        dout = np.ascontiguousarray(dout)
    dx = np.empty(x.shape, dtype=weight.dtype) if input_grad else None
    dx_view = dx if input_grad else np.empty((1, 1, 1, 1), dtype=weight.dtype)

    kernel = (
        depthwise_backward_channels_last
        if x.shape[2] * x.shape[3] <= _CHANNELS_LAST_MAX_PLANE
        else depthwise_backward
    )

    def block(s: slice) -> tuple[np.ndarray, np.ndarray]:
        dw = np.empty(w3.shape, dtype=np.float64)
        db = np.empty(w3.shape[0], dtype=np.float64)
        d = dout[s] if dout_of is None else dout_of(s)
        kernel(
            d,
            cache.out[s] if relu else d,
            relu,
            x[s],
            w3,
            g.sy,
            g.sx,
            g.dy,
            g.dx,
            g.top,
            g.left,
            input_grad,
            dx_view[s] if input_grad else dx_view,
            dw,
            db,
        )
        return dw, db

    parts = _threads.parallel_map(block, cache.slices)
    dweight = sum(p[0] for p in parts).astype(weight.dtype).reshape(weight.shape)
    if bias_shape is None:
        dbias = None
    elif len(bias_shape) == 1:
        dbias = sum(p[1] for p in parts).astype(weight.dtype)
    else:
        masked = np.where(cache.out > 0, dout, 0) if relu else dout
        dbias = masked.sum(axis=0).astype(weight.dtype)
    return dx, dweight, dbias
