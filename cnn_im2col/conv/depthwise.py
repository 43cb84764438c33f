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
from ..arrays import cache_slices
from ..arrays import unsigned as _u
from ..arrays import valid_range as _valid_range
from ..shapes import WindowGeometry

# Input maps of at most this many pixels are computed channels-last (vectors over the channels);
# larger ones row by row (vectors along a row). The input's size decides, not the output's: the
# channels-last kernels copy the whole padded input per sample, which a stride does not shrink
# (forward + backward of a 3x3 stride-2 32x96x32x32 layer, 16x16 outputs: 16.3 ms channels-last,
# 8.1 ms by rows; PyTorch 7.0 ms). Measured 2026-12-03, AMD EPYC (AVX2), 2 threads,
# float32 3x3 forward, channels-last / rows ms, (N, C, H=W, stride): (64, 96, 32, 1) 21.7 / 8.9;
# (32, 64, 32, 1) 6.1 / 2.8; (64, 96, 16, 1) 2.6 / 3.6; (64, 144, 16, 2) 2.8 / 3.3; (64, 192, 8,
# 1) 0.96 / 2.9; (64, 480, 4, 1) 0.81 / 3.2; (64, 960, 2, 1) 0.44 / 4.0; (1, 192, 8, 1) 0.058 /
# 0.083; (1, 96, 16, 1) 0.090 / 0.088. Backward (ReLU fused): (32, 64, 32, 1) 10.9 / 9.4;
# (64, 96, 16, 1) 5.4 / 8.3; (64, 144, 16, 2) 4.5 / 4.0; (64, 192, 8, 1) 2.4 / 4.5; (64, 480, 4,
# 1) 1.6 / 4.6; (64, 960, 2, 1) 1.0 / 5.2
_CHANNELS_LAST_MAX_PLANE = 256


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


@nb.njit(cache=True, nogil=True, inline="always")
def _column_phases(src, sx, phases):
    """phases[p, r, k] = src[r, k*SX + p] (the cells past the map's edge are not written): a map's
    columns split by their position modulo the column stride, so that a strided row kernel reads
    and writes contiguous runs (a stride-2 gather or scatter does not vectorise)."""
    height, width = src.shape
    for p in range(sx):
        for r in range(height):
            row, dst = src[r], phases[p, r]
            for k in range((width - p + sx - 1) // sx):
                dst[_u(k)] = row[_u(k * sx + p)]


@nb.njit(cache=True, nogil=True)
def depthwise_forward(x, w, sy, sx, dy, dx, pt, pl, bias, relu, out):
    """``out[n, c, oh, ow] = f(bias[c, p or 0] + sum_ij w[c, i, j] * x[n, c, oh*SY - PT + i*DY,
    ow*SX - PL + j*DX])`` (padding reads 0; f = ReLU if ``relu``).

    x: (N, C, H, W); w: (C, KH, KW); bias: (C, 1) or (C, OH*OW); out (written): (N, C, OH, OW).
    Row by row, each tap a vector loop along the output row; with a column stride SX > 1 the map
    is first split into its SX column phases, so that the loop reads contiguously.
    """
    n_count, c_count, height, width = x.shape
    kh, kw = w.shape[1], w.shape[2]
    oh_count, ow_count = out.shape[2], out.shape[3]
    untied = bias.shape[1] > 1
    phases = np.empty((sx, height, -(-width // sx)), dtype=x.dtype)
    for n in range(n_count):
        for c in range(c_count):
            dst = out[n, c]
            for oh in range(oh_count):
                for ow in range(ow_count):
                    dst[oh, ow] = bias[c, oh * ow_count + ow] if untied else bias[c, 0]
            if sx > 1:
                _column_phases(x[n, c], sx, phases)
            for i in range(kh):
                y0 = i * dy - pt
                oh_lo, oh_hi = _valid_range(y0, sy, height, oh_count)
                for j in range(kw):
                    off = j * dx - pl
                    lo, hi = _valid_range(off, sx, width, ow_count)
                    # input column ow*SX + off = (ow + base)*SX + phase
                    phase, base = off % sx, off // sx
                    weight = w[c, i, j]
                    for oh in range(oh_lo, oh_hi):
                        row = x[n, c, oh * sy + y0] if sx == 1 else phases[phase, oh * sy + y0]
                        target = dst[oh]
                        for ow in range(lo, hi):
                            target[_u(ow)] += weight * row[_u(ow + base)]
            if relu:
                for oh in range(oh_count):
                    for ow in range(ow_count):
                        if not dst[oh, ow] > 0:
                            dst[oh, ow] = 0.0


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


# ``reassoc``: the float64 sums (the weight and bias gradients) may be reordered, so that they
# vectorise (stride 1 32x96x32x32 backward, one thread: 26.0 -> 11.8 ms).
@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def depthwise_backward(dout, y, relu, x, w, sy, sx, dy, dx_step, pt, pl, input_grad, dx, dw, db):
    """Gradients of ``depthwise_forward`` on a batch slice: ``dx`` (written whole when
    ``input_grad``), and this slice's ``dw`` (C, KH, KW) and ``db`` (C,) (written, float64).

    dout, y (the forward output; read only with ``relu``, whose derivative is ``y > 0``):
    (N, C, OH, OW); x, dx: (N, C, H, W); w: (C, KH, KW). With a column stride SX > 1, x is read
    and dx summed in their SX column phases (as ``depthwise_forward``), dx interleaved at the end.
    """
    n_count, c_count, height, width = x.shape
    kh, kw = w.shape[1], w.shape[2]
    oh_count, ow_count = dout.shape[2], dout.shape[3]
    dw[:] = 0.0
    db[:] = 0.0
    g = np.empty((oh_count, ow_count), dtype=dout.dtype)
    phases = np.empty((sx, height, -(-width // sx)), dtype=x.dtype)
    dphases = np.empty((sx, height, -(-width // sx)), dtype=x.dtype)
    for n in range(n_count):
        for c in range(c_count):
            total = 0.0
            for oh in range(oh_count):
                for ow in range(ow_count):
                    v = dout[n, c, oh, ow]
                    if relu and not y[n, c, oh, ow] > 0:
                        v = 0.0
                    g[oh, ow] = v
                    total += v
            db[c] += total
            if sx > 1:
                _column_phases(x[n, c], sx, phases)
            if input_grad:
                if sx == 1:
                    dx[n, c] = 0.0
                else:
                    dphases[:] = 0.0
            for i in range(kh):
                y0 = i * dy - pt
                oh_lo, oh_hi = _valid_range(y0, sy, height, oh_count)
                for j in range(kw):
                    off = j * dx_step - pl
                    lo, hi = _valid_range(off, sx, width, ow_count)
                    phase, base = off % sx, off // sx
                    weight = w[c, i, j]
                    acc = 0.0
                    for oh in range(oh_lo, oh_hi):
                        r = oh * sy + y0
                        row = x[n, c, r] if sx == 1 else phases[phase, r]
                        grad = g[oh]
                        for ow in range(lo, hi):
                            acc += grad[_u(ow)] * row[_u(ow + base)]
                        if input_grad:
                            target = dx[n, c, r] if sx == 1 else dphases[phase, r]
                            for ow in range(lo, hi):
                                target[_u(ow + base)] += weight * grad[_u(ow)]
                    dw[c, i, j] += acc
            if input_grad and sx > 1:  # interleave the phases back into dx's columns
                for p in range(sx):
                    for r in range(height):
                        src, dst = dphases[p, r], dx[n, c, r]
                        for k in range((width - p + sx - 1) // sx):
                            dst[_u(k * sx + p)] = src[_u(k)]


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
    bias2 = (
        np.zeros((out_channels, 1), weight.dtype)
        if bias is None
        else bias.reshape(out_channels, -1)
    )
    w3 = np.ascontiguousarray(weight[:, 0])
    slices = cache_slices(n, x[0].nbytes * 4)

    kernel = (
        depthwise_forward_channels_last if x.shape[2] * x.shape[3] <= _CHANNELS_LAST_MAX_PLANE
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
    """``conv2d_backward`` of a depthwise convolution, slice by slice. It takes dout whole
    (``dout_of`` is asked once, for the batch; ``dz_into`` is the im2col layout's, unused)."""
    g, weight, x, bias_shape = cache.geometry, cache.weight, cache.x, cache.bias_shape
    if dout_of is not None:
        dout = dout_of(slice(0, x.shape[0]))
    relu = cache.out is not None
    w3 = np.ascontiguousarray(weight[:, 0])
    dout = np.ascontiguousarray(dout)
    y = cache.out if relu else dout
    dx = np.empty(x.shape, dtype=weight.dtype) if input_grad else None
    dx_view = dx if input_grad else np.empty((1, 1, 1, 1), dtype=weight.dtype)

    kernel = (
        depthwise_backward_channels_last if x.shape[2] * x.shape[3] <= _CHANNELS_LAST_MAX_PLANE
        else depthwise_backward
    )

    def block(s: slice) -> tuple[np.ndarray, np.ndarray]:
        dw = np.empty(w3.shape, dtype=np.float64)
        db = np.empty(w3.shape[0], dtype=np.float64)
        kernel(
            dout[s],
            y[s],
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
        masked = np.where(y > 0, dout, 0) if relu else dout
        dbias = masked.sum(axis=0).astype(weight.dtype)
    return dx, dweight, dbias
