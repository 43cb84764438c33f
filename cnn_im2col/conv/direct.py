"""The direct strategy of a 3x3 or 5x5 convolution with few input channels (a network's RGB or
grayscale first layer): its forward computed straight from the input's phase planes, four output
maps at a time, with no im2col matrix; its backward is im2col's, that matrix rebuilt slice by slice
from the kept input.

With C <= ``MAX_CHANNELS`` input channels the im2col matrix has only K*K*C rows: its GEMM has an
inner axis of 27 for an RGB 3x3 kernel (25 for LeNet's grayscale 5x5), and the strategy's time
goes into building that matrix and into the Python between a slice's kernels (a 3 -> 16 stem at
32x32, batch 64, took 1.4 ms on one thread and no less on two). Here each sample's C input planes
are split once into zero-bordered phase planes (``depthwise.split_phases``, as the depthwise
strategy does), and each group of four output maps is accumulated in one pass per input channel
(3x3) or kernel row (5x5): at each output position a tap's value is loaded once and feeds four
multiply-adds. Measured 2026-12-04, Intel Xeon, 2 threads, batch 64, forward ms, im2col / direct:
3 -> 16 at 32x32, 3x3 pad 1, 1.4-2.3 / 0.63; LeNet's 1 -> 20 at 28x28, 5x5, 0.69-0.87 / 0.50
at inference and 0.99-1.12 / 0.42-0.55 in training (which keeps no matrix now: the backward's
rebuild costs 0.0-0.4 ms of that back). The backward rebuilds it in slices of as many samples as
keep it in cache, not in im2col's one-sample slices of large maps: ResNet-20's 3 -> 16 stem at
batch 64, weight gradient only, 3.2-3.8 -> 1.45-1.51 ms (2026-12-04, Intel Xeon, 2 threads). With
more channels, a strided convolution takes the tiled strategy (``conv/tiled.py``), which this one
also beat for these few-channel layers (2026-12-05, Intel Xeon, 2 threads, batch 64 (32 for the
64x64 one), forward with ReLU, us, direct / tiled: 3 -> 16 at 32x32 691 / 1102; 1 -> 20 5x5 at
28x28 511 / 746; 3 -> 16 stride 2 at 64x64 516 / 671). The im2col strategy is this one's slow
twin; the tests hold them equal to rounding.

Each output value is its bias, then one multiply-add per tap in the weight's order (c, i, j): the
tiled kernel's sums, so the two give the same bits (the tests hold them so). A session whose next
step reads a map channels-last has the tiled kernel write it so from its registers
(``program.py``), where this one's maps would need a scatter: ResNet-20's 3 -> 16 stem at batch
64, 2 threads, forward with ReLU into channels-last maps, direct 666-737 us, tiled 406
(2026-12-05, Intel Xeon); into NCHW maps this one stays ahead (545-573 against 567-587).
"""

from __future__ import annotations

from collections.abc import Callable

import numba as nb
import numpy as np

from .. import threads as _threads
from ..arrays import cache_slices
from ..arrays import unsigned as _u
from ..shapes import WindowGeometry
from .depthwise import split_phases, tap_base, taps
from .im2col import Im2colCache, backward, bias_columns

__all__ = ["MAX_CHANNELS", "backward", "direct_forward", "direct_forward_pool2", "forward",
           "forward_relu_pool2", "supports"]

#: input channels up to which a 3x3 or 5x5 convolution (groups 1) takes this strategy under "auto"
MAX_CHANNELS = 4

_GROUP = 4  # output maps accumulated together


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _taps3(a, u, i, x0, x1, x2):
    """``a`` plus the three taps of kernel row ``i`` (weights ``u[3i:3i+3]``), one multiply-add
    after another in the taps' order (the tiled strategy's order: its tiles give these bits)."""
    a = a + u[3 * i] * x0
    a = a + u[3 * i + 1] * x1
    return a + u[3 * i + 2] * x2


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _nine(w, o, c):
    """The nine weights of map ``o``'s 3x3 kernel over channel ``c``, as a tuple."""
    return (w[o, c, 0, 0], w[o, c, 0, 1], w[o, c, 0, 2], w[o, c, 1, 0], w[o, c, 1, 1],
            w[o, c, 1, 2], w[o, c, 2, 0], w[o, c, 2, 1], w[o, c, 2, 2])


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _four_maps_3x3(q, w, o, c, bases, acc):
    """``acc[j, k] += w[o + j, c, t] * q[bases[t] + k]`` for j < 4 over the nine taps t of a 3x3
    kernel, in order: each tap's value loaded once for the four output maps."""
    b0, b1, b2, b3, b4 = bases[0], bases[1], bases[2], bases[3], bases[4]
    b5, b6, b7, b8 = bases[5], bases[6], bases[7], bases[8]
    u, v, s, t = _nine(w, o, c), _nine(w, o + 1, c), _nine(w, o + 2, c), _nine(w, o + 3, c)
    a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
    for k in range(a0.shape[0]):
        x0, x1, x2 = q[_u(b0 + k)], q[_u(b1 + k)], q[_u(b2 + k)]
        x3, x4, x5 = q[_u(b3 + k)], q[_u(b4 + k)], q[_u(b5 + k)]
        x6, x7, x8 = q[_u(b6 + k)], q[_u(b7 + k)], q[_u(b8 + k)]
        a0[_u(k)] = _taps3(_taps3(_taps3(a0[_u(k)], u, 0, x0, x1, x2), u, 1, x3, x4, x5), u, 2,
                           x6, x7, x8)
        a1[_u(k)] = _taps3(_taps3(_taps3(a1[_u(k)], v, 0, x0, x1, x2), v, 1, x3, x4, x5), v, 2,
                           x6, x7, x8)
        a2[_u(k)] = _taps3(_taps3(_taps3(a2[_u(k)], s, 0, x0, x1, x2), s, 1, x3, x4, x5), s, 2,
                           x6, x7, x8)
        a3[_u(k)] = _taps3(_taps3(_taps3(a3[_u(k)], t, 0, x0, x1, x2), t, 1, x3, x4, x5), t, 2,
                           x6, x7, x8)


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _taps5(a, w, o, c, i, x0, x1, x2, x3, x4):
    """``a`` plus the five taps of row ``i`` of map ``o``'s 5x5 kernel over channel ``c``, one
    multiply-add after another in the taps' order."""
    a = a + w[o, c, i, 0] * x0
    a = a + w[o, c, i, 1] * x1
    a = a + w[o, c, i, 2] * x2
    a = a + w[o, c, i, 3] * x3
    return a + w[o, c, i, 4] * x4


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _four_maps_row5(q, w, o, c, i, bases, acc):
    """``_four_maps_3x3`` for row ``i`` of a 5x5 kernel: its five taps (``bases[5*i:]``) in one
    pass, 20 multiply-adds for the five loads."""
    b0, b1, b2 = bases[5 * i], bases[5 * i + 1], bases[5 * i + 2]
    b3, b4 = bases[5 * i + 3], bases[5 * i + 4]
    a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
    for k in range(a0.shape[0]):
        x0, x1, x2 = q[_u(b0 + k)], q[_u(b1 + k)], q[_u(b2 + k)]
        x3, x4 = q[_u(b3 + k)], q[_u(b4 + k)]
        a0[_u(k)] = _taps5(a0[_u(k)], w, o, c, i, x0, x1, x2, x3, x4)
        a1[_u(k)] = _taps5(a1[_u(k)], w, o + 1, c, i, x0, x1, x2, x3, x4)
        a2[_u(k)] = _taps5(a2[_u(k)], w, o + 2, c, i, x0, x1, x2, x3, x4)
        a3[_u(k)] = _taps5(a3[_u(k)], w, o + 3, c, i, x0, x1, x2, x3, x4)


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _phase_setup(kh, kw, sy, sx, dy, dx, pt, pl, oh_count, ow_count):
    """The phase planes' geometry and tap offsets of ``direct_forward``: (qh, qw, size, by0, bx0,
    bases), each tap's start in a channel's planes."""
    by0, span_y = taps(kh, sy, dy, pt)
    bx0, span_x = taps(kw, sx, dx, pl)
    qh, qw = oh_count + span_y + 1, ow_count + span_x  # as depthwise_forward's phase planes
    bases = np.empty(kh * kw, dtype=np.int64)  # where each tap starts in the phase planes
    for i in range(kh):
        for j in range(kw):
            bases[i * kw + j] = tap_base(i * dy - pt, j * dx - pl, sy, sx, by0, bx0, qh, qw)
    return qh, qw, sy * sx * qh * qw, by0, bx0, bases


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _group_sums(q, w, o0, group, size, bases, bias, oh_count, ow_count, qw, acc):
    """``acc[j, oh*QW + ow] = bias[o0 + j] + sum_c w[o0 + j, c] (*) x[c]`` at each output
    position, for the ``group`` (<= 4) maps from ``o0``; ``q`` holds the sample's phase planes,
    ``size`` values a channel."""
    c_count, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    untied = bias.shape[1] > 1
    for j in range(group):
        aj = acc[j]
        for oh in range(oh_count):
            for ow in range(ow_count):
                aj[_u(oh * qw + ow)] = bias[o0 + j, oh * ow_count + ow if untied else 0]
    for c in range(c_count):
        qc = q[c * size : (c + 1) * size]
        if group == _GROUP and kh == 3:
            _four_maps_3x3(qc, w, o0, c, bases, acc)
            continue
        if group == _GROUP:
            for i in range(kh):
                _four_maps_row5(qc, w, o0, c, i, bases, acc)
            continue
        for j in range(group):  # the maps left over, one at a time
            aj = acc[j]
            for t in range(kh * kw):
                wt, base = w[o0 + j, c, t // kw, t % kw], bases[t]
                for k in range(aj.shape[0]):
                    aj[_u(k)] += wt * qc[_u(base + k)]


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _direct(x, w, sy, sx, dy, dx, pt, pl, bias, relu, pool, oh_count, ow_count, out):
    """``direct_forward`` (``pool`` False: ``out`` the (N, O, OH, OW) maps) or
    ``direct_forward_pool2`` (``pool`` True: ``out`` their 2x2 max pool): each sample
    split into its phase planes once, then four output maps at a time summed (``_group_sums``) and
    written."""
    n_count, c_count, o_count = x.shape[0], x.shape[1], w.shape[0]
    qh, qw, size, by0, bx0, bases = _phase_setup(w.shape[2], w.shape[3], sy, sx, dy, dx, pt, pl,
                                                 oh_count, ow_count)
    q = np.zeros(c_count * size, dtype=x.dtype)  # borders stay 0: only image cells are written
    acc = np.empty((_GROUP, oh_count * qw), dtype=x.dtype)
    for n in range(n_count):
        for c in range(c_count):
            split_phases(x[n, c], sy, sx, by0, bx0, qh, qw, q[c * size : (c + 1) * size])
        for o0 in range(0, o_count, _GROUP):
            group = min(_GROUP, o_count - o0)
            _group_sums(q, w, o0, group, size, bases, bias, oh_count, ow_count, qw, acc)
            for j in range(group):
                if pool:
                    _write_pooled(acc[j], qw, out[n, o0 + j])
                else:
                    _write_maps(acc[j], qw, relu, out[n, o0 + j])


@nb.njit(cache=True, nogil=True, inline="always")
def _write_maps(sums, qw, relu, dst):
    """``dst[oh, ow] = f(sums[oh*QW + ow])``, f = ReLU if ``relu``."""
    zero = dst.dtype.type(0)
    for oh in range(dst.shape[0]):
        row = dst[oh]
        for ow in range(dst.shape[1]):
            v = sums[_u(oh * qw + ow)]
            row[_u(ow)] = v if (v > zero or not relu) else zero


@nb.njit(cache=True, nogil=True, inline="always")
def _write_pooled(sums, qw, dst):
    """``dst[ph, pw]`` = the maximum of ReLU over the 2x2 window of ``sums`` at (2ph, 2pw): each
    value ReLU'd first (a NaN becomes 0, as in the convolution's epilogue), so the maximum of four
    values that are never NaN, the same whichever order it compares."""
    zero = dst.dtype.type(0)
    for ph in range(dst.shape[0]):
        row, top = dst[ph], 2 * ph * qw
        for pw in range(dst.shape[1]):
            k = top + 2 * pw
            v0, v1 = sums[_u(k)], sums[_u(k + 1)]
            v2, v3 = sums[_u(k + qw)], sums[_u(k + qw + 1)]
            v0, v1 = (v0 if v0 > zero else zero), (v1 if v1 > zero else zero)
            v2, v3 = (v2 if v2 > zero else zero), (v3 if v3 > zero else zero)
            row[_u(pw)] = max(max(v0, v1), max(v2, v3))


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def direct_forward(x, w, sy, sx, dy, dx, pt, pl, bias, relu, out):
    """``out[n, o] = f(bias[o] + sum_c w[o, c] (*) x[n, c])``, the 3x3 or 5x5 correlation of
    strides (SY, SX), dilations (DY, DX) and top/left padding (PT, PL) (padding reads 0; f = ReLU
    if ``relu``).

    x: (N, C, H, W); w: (O, C, K, K), K 3 or 5; bias: (O, 1) or (O, OH*OW); out (written): (N, O,
    OH, OW).
    """
    _direct(x, w, sy, sx, dy, dx, pt, pl, bias, relu, False, out.shape[2], out.shape[3], out)


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def direct_forward_pool2(x, w, sy, sx, dy, dx, pt, pl, bias, oh_count, ow_count, out):
    """``direct_forward`` with ReLU, then a 2x2 max pool of stride 2 (no padding, the last row and
    column dropped where the map's side is odd) taken from the sums while they are in cache: the
    convolution's (OH, OW) maps are never written. ``out`` (written): (N, O, OH // 2, OW // 2)."""
    _direct(x, w, sy, sx, dy, dx, pt, pl, bias, True, True, oh_count, ow_count, out)


def supports(weight_shape: tuple[int, ...], g: WindowGeometry, groups: int) -> bool:
    """Whether a convolution may take this strategy: groups 1 and a 3x3 or 5x5 kernel of at most
    ``MAX_CHANNELS`` input channels (any stride, padding and dilation)."""
    return (groups == 1 and tuple(weight_shape[2:]) in ((3, 3), (5, 5))
            and weight_shape[1] <= MAX_CHANNELS)


def forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    g: WindowGeometry,
    *,
    groups: int = 1,
    backend: str = "numba",
    owner: str = "conv2d",
    keep: bool = True,
    relu: bool = False,
    then: Callable[[slice, np.ndarray], None] | None = None,
) -> tuple[np.ndarray, Im2colCache]:
    """``conv2d_forward``'s direct strategy on checked arguments (as ``conv.im2col.forward``;
    ``groups`` is 1, ``backend`` numba). The cache is im2col's with the input kept (``keep``
    does not apply): ``backward`` (im2col's) rebuilds each slice's matrix from it."""
    n, out_channels = x.shape[0], weight.shape[0]
    out = np.empty((n, out_channels, g.oh, g.ow), dtype=weight.dtype)
    bias2 = bias_columns(bias, out_channels, weight.dtype)
    w4 = np.ascontiguousarray(weight)

    def block(s: slice) -> None:
        direct_forward(x[s], w4, g.sy, g.sx, g.dy, g.dx, g.top, g.left, bias2, relu, out[s])
        if then is not None:
            then(s, out[s])

    # backward's slices, in which it rebuilds the matrix: as many samples as keep it in cache (not
    # im2col's one sample a slice for large maps, which pays only for its forward's in-place GEMM)
    slices = cache_slices(n, x.shape[1] * g.kh * g.kw * g.oh * g.ow * x.itemsize)
    _threads.parallel_map(block, _threads.split(n, min(n, 4 * _threads.get_num_threads())))
    cache = Im2colCache(x.shape, weight, None if bias is None else bias.shape, g, 1, "numba",
                        owner, None, x, slices, out if relu else None)
    return out, cache


def forward_relu_pool2(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, g: WindowGeometry
) -> np.ndarray:
    """Inference only: MaxPool2D(2, stride=2) of ReLU(the convolution), (N, O, OH // 2, OW // 2),
    on the same checked arguments as ``forward``, each sample's maps pooled from the sums while
    they are in cache (``direct_forward_pool2``); nothing is kept for a backward."""
    n, out_channels = x.shape[0], weight.shape[0]
    out = np.empty((n, out_channels, g.oh // 2, g.ow // 2), dtype=weight.dtype)
    bias2 = bias_columns(bias, out_channels, weight.dtype)
    w4 = np.ascontiguousarray(weight)

    def block(s: slice) -> None:
        direct_forward_pool2(x[s], w4, g.sy, g.sx, g.dy, g.dx, g.top, g.left, bias2, g.oh, g.ow,
                             out[s])

    _threads.parallel_map(block, _threads.split(n, min(n, 4 * _threads.get_num_threads())))
    return out
