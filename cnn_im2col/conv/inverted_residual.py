"""MobileNetV2's inverted residual at inference, in one compiled pass per sample: a 1x1 expansion
-> ReLU6 -> 3x3 depthwise -> ReLU6 -> 1x1 projection (the expansion optional), its three
convolutions' BatchNorms already folded into them.

Run as three layers, the expanded maps (6x the block's channels) are written to memory whole by the
expansion, read and written whole by the depthwise layer, read again by the projection: a 16 -> 96
-> 16 block on 32x32 maps at batch 64 moves about 100 MB, and the two 1x1 products have an inner
axis of only 16 or 96 (GEMMs that short spend their time packing). Here each sample is computed
four expanded channels at a time: their four maps (one plane each, in the core's first-level
cache) are expanded together from the sample's input (each input plane read once for four
outputs), clipped, convolved by the depthwise kernel through its phase planes
(``depthwise.nine_taps``, the same per-plane code as the depthwise strategy) into four maps that
are then accumulated into every output channel's map (each read once for four channels, two
outputs at a time). No expanded map leaves the cache, and nothing but the block's input and output
touches memory. This is what onnxruntime and XNNPACK do not do (they run the layers apart, in a
channel-blocked layout); measured 2026-12-04 against the three steps, Intel Xeon, 2 threads,
batch 64, float32 (`benchmarks/README.md`). Small maps keep the three steps: below
``MIN_PLANE`` input pixels a plane's vector loops are too short (4x4 maps: 2.5x slower fused).

The three layers run one by one are this kernel's slow twin; the tests hold them equal to
rounding (the 1x1 sums are taken in another order than BLAS takes them).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .. import threads as _threads
from ..arrays import cache_slices, matmul
from ..arrays import unsigned as _u
from ..shapes import WindowGeometry
from .depthwise import nine_taps, split_phases, taps

#: input maps of at least this many pixels run plane by plane, smaller ones channels-last
MIN_PLANE = 256

_GROUP = 4  # expanded channels computed together: four planes of the L1 cache


@nb.njit(cache=True, nogil=True, inline="always")
def _relu6(v, zero, six):
    return zero if v < zero else (six if v > six else v)  # NaN stays NaN, as ReLU6's kernel


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _expand_group(xs, we, be, e0, h):
    """``h[j] = ReLU6(be[e0 + j] + sum_c we[e0 + j, c] * xs[c])`` for the four planes j of ``h``
    (4, H*W): each input plane ``xs[c]`` is read once for all four, two at a time."""
    c_count, plane = xs.shape
    h0, h1, h2, h3 = h[0], h[1], h[2], h[3]
    b0, b1, b2, b3 = be[e0], be[e0 + 1], be[e0 + 2], be[e0 + 3]
    for p in range(plane):
        h0[_u(p)] = b0
        h1[_u(p)] = b1
        h2[_u(p)] = b2
        h3[_u(p)] = b3
    c = 0
    while c + 2 <= c_count:
        x0, x1 = xs[c], xs[c + 1]
        w00, w01, w10, w11 = we[e0, c], we[e0, c + 1], we[e0 + 1, c], we[e0 + 1, c + 1]
        w20, w21, w30, w31 = we[e0 + 2, c], we[e0 + 2, c + 1], we[e0 + 3, c], we[e0 + 3, c + 1]
        for p in range(plane):
            a0, a1 = x0[_u(p)], x1[_u(p)]
            h0[_u(p)] += w00 * a0 + w01 * a1
            h1[_u(p)] += w10 * a0 + w11 * a1
            h2[_u(p)] += w20 * a0 + w21 * a1
            h3[_u(p)] += w30 * a0 + w31 * a1
        c += 2
    if c < c_count:
        x0 = xs[c]
        w00, w10, w20, w30 = we[e0, c], we[e0 + 1, c], we[e0 + 2, c], we[e0 + 3, c]
        for p in range(plane):
            a0 = x0[_u(p)]
            h0[_u(p)] += w00 * a0
            h1[_u(p)] += w10 * a0
            h2[_u(p)] += w20 * a0
            h3[_u(p)] += w30 * a0


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _expand_one(xs, we, be, e, h):
    """``h = be[e] + sum_c we[e, c] * xs[c]`` (one plane, for the channels left over)."""
    b = be[e]
    for p in range(h.shape[0]):
        h[_u(p)] = b
    for c in range(xs.shape[0]):
        w, xc = we[e, c], xs[c]
        for p in range(h.shape[0]):
            h[_u(p)] += w * xc[_u(p)]


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _project_group(d, wp, e0, y):
    """``y[o] += sum_j wp[o, e0 + j] * d[j]`` over the four maps j of ``d``, for every output
    channel o (two at a time: each map read once per pair)."""
    o_count, plane = y.shape
    d0, d1, d2, d3 = d[0], d[1], d[2], d[3]
    o = 0
    while o + 2 <= o_count:
        w0, w1, w2, w3 = wp[o, e0], wp[o, e0 + 1], wp[o, e0 + 2], wp[o, e0 + 3]
        v0, v1, v2, v3 = wp[o + 1, e0], wp[o + 1, e0 + 1], wp[o + 1, e0 + 2], wp[o + 1, e0 + 3]
        ya, yb = y[o], y[o + 1]
        for p in range(plane):
            a0, a1, a2, a3 = d0[_u(p)], d1[_u(p)], d2[_u(p)], d3[_u(p)]
            ya[_u(p)] += (w0 * a0 + w1 * a1) + (w2 * a2 + w3 * a3)
            yb[_u(p)] += (v0 * a0 + v1 * a1) + (v2 * a2 + v3 * a3)
        o += 2
    if o < o_count:
        w0, w1, w2, w3 = wp[o, e0], wp[o, e0 + 1], wp[o, e0 + 2], wp[o, e0 + 3]
        yo = y[o]
        for p in range(plane):
            yo[_u(p)] += (w0 * d0[_u(p)] + w1 * d1[_u(p)]) + (w2 * d2[_u(p)] + w3 * d3[_u(p)])


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def inverted_residual_forward(x, we, be, wd, bd, sy, sx, dy, dx, pt, pl, wp, bp, skip, out):
    """``out = P(ReLU6(D(ReLU6(E(x))))) [+ skip]`` for each sample: E the 1x1 expansion ``we``
    (E, C) + ``be`` (E,) (none when ``we`` has no rows: then E = C), D the 3x3 depthwise
    convolution ``wd`` (E, 3, 3) + ``bd`` (E,) of strides (SY, SX), dilations (DY, DX) and
    top/left padding (PT, PL),
    P the 1x1 projection ``wp`` (O, E) + ``bp`` (O,); ``skip`` (N, O, OH, OW) is added (a
    Residual's identity shortcut: it starts each output) unless it has no samples.

    x: (N, C, H, W), C-contiguous; out (written): (N, O, OH, OW), OH x OW the depthwise output.
    """
    n_count, c_count, height, width = x.shape
    expand, adding = we.shape[0] > 0, skip.shape[0] > 0
    e_count, o_count = wd.shape[0], wp.shape[0]
    oh_count, ow_count = out.shape[2], out.shape[3]
    plane, out_plane = height * width, oh_count * ow_count
    by0, span_y = taps(3, sy, dy, pt)
    bx0, span_x = taps(3, sx, dx, pl)
    qh, qw = oh_count + span_y + 1, ow_count + span_x  # as depthwise_forward's phase planes
    zero, six = x.dtype.type(0), x.dtype.type(6)
    q = np.zeros(sy * sx * qh * qw, dtype=x.dtype)  # borders stay 0: only image cells are written
    h = np.empty((_GROUP, height, width), dtype=x.dtype)  # expanded maps
    h_flat = h.reshape(_GROUP, plane)
    acc = np.empty(oh_count * qw, dtype=x.dtype)
    d = np.empty((_GROUP, out_plane), dtype=x.dtype)  # depthwise maps, compact
    for n in range(n_count):
        xs = x[n].reshape(c_count, plane)
        y = out[n].reshape(o_count, out_plane)
        for o in range(o_count):
            yo, b = y[o], bp[o]
            if adding:
                so = skip[n, o].reshape(out_plane)
                for p in range(out_plane):
                    yo[_u(p)] = b + so[_u(p)]
            else:
                yo[:] = b
        for e0 in range(0, e_count, _GROUP):
            group = min(_GROUP, e_count - e0)
            if expand and group == _GROUP:
                _expand_group(xs, we, be, e0, h_flat)
            for j in range(group):
                e = e0 + j
                if expand:
                    hj = h_flat[j]
                    if group < _GROUP:
                        _expand_one(xs, we, be, e, hj)
                    for p in range(plane):
                        hj[_u(p)] = _relu6(hj[_u(p)], zero, six)
                    split_phases(h[j], sy, sx, by0, bx0, qh, qw, q)
                else:
                    split_phases(x[n, e], sy, sx, by0, bx0, qh, qw, q)
                nine_taps(q, wd[e], bd[e], sy, sx, dy, dx, pt, pl, by0, bx0, qh, qw, acc)
                dj = d[j]
                for oh in range(oh_count):
                    for ow in range(ow_count):
                        dj[_u(oh * ow_count + ow)] = _relu6(acc[_u(oh * qw + ow)], zero, six)
            if group == _GROUP:
                _project_group(d, wp, e0, y)
            else:
                for j in range(group):
                    dj = d[j]
                    for o in range(o_count):
                        w, yo = wp[o, e0 + j], y[o]
                        for p in range(out_plane):
                            yo[_u(p)] += w * dj[_u(p)]


@nb.njit(cache=True, nogil=True)
def to_channels_last(x, xc):
    """``xc[n*H*W + p, c] = x[n, c, p]``: x (k, C, H, W) -> xc (k*H*W, C)."""
    k, c_count, height, width = x.shape
    plane = height * width
    for n in range(k):
        for c in range(c_count):
            src = x[n, c].reshape(plane)
            for p in range(plane):
                xc[n * plane + p, c] = src[_u(p)]


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def depthwise_channels_last(h, be, activate, wd, bd, height, width, sy, sx, dy, dx, pt, pl,
                            oh_count, ow_count, d):
    """The depthwise step in channels-last rows: ``h`` (k*H*W, E), with ``activate`` first made
    ReLU6(h + be) in place (the expansion's bias and activation); ``d`` (k*OH*OW, E, written) =
    ReLU6(bd + the 3x3 taps ``wd`` (3, 3, E)), each output position's E values as one vector
    loop per tap (padding skipped)."""
    e_count = h.shape[1]
    k = h.shape[0] // (height * width)
    out_plane = oh_count * ow_count
    zero, six = h.dtype.type(0), h.dtype.type(6)
    if activate:
        for r in range(h.shape[0]):
            row = h[r]
            for e in range(e_count):
                row[e] = _relu6(row[e] + be[e], zero, six)
    for n in range(k):
        base = n * height * width
        for oh in range(oh_count):
            for ow in range(ow_count):
                a = d[n * out_plane + oh * ow_count + ow]
                for e in range(e_count):
                    a[e] = bd[e]
                for i in range(3):
                    r = oh * sy - pt + i * dy
                    if r < 0 or r >= height:
                        continue
                    for j in range(3):
                        c = ow * sx - pl + j * dx
                        if c < 0 or c >= width:
                            continue
                        src, wv = h[base + r * width + c], wd[i, j]
                        for e in range(e_count):
                            a[e] += wv[e] * src[e]
                for e in range(e_count):
                    a[e] = _relu6(a[e], zero, six)


@nb.njit(cache=True, nogil=True)
def from_channels_last(y, bp, skip, out):
    """``out[n, o, p] = y[n*OH*OW + p, o] + bp[o] [+ skip[n, o, p]]`` (``skip`` added unless it
    has no samples): y (k*OH*OW, O) -> out (k, O, OH, OW)."""
    k, o_count, oh_count, ow_count = out.shape
    plane = oh_count * ow_count
    adding = skip.shape[0] > 0
    for n in range(k):
        for o in range(o_count):
            dst, b = out[n, o].reshape(plane), bp[o]
            if adding:
                src = skip[n, o].reshape(plane)
                for p in range(plane):
                    dst[_u(p)] = (y[n * plane + p, o] + b) + src[_u(p)]
            else:
                for p in range(plane):
                    dst[_u(p)] = y[n * plane + p, o] + b



def supports(dw_weight_shape: tuple[int, ...]) -> bool:
    """Whether the fused kernels run a block whose depthwise weight has ``dw_weight_shape``: a 3x3
    kernel (the caller checks the rest: the 1x1 layers pointwise, the middle one depthwise, tied
    biases or none, one dtype)."""
    return tuple(dw_weight_shape[1:]) == (1, 3, 3)


def _bias(bias: np.ndarray | None, channels: int, dtype: np.dtype) -> np.ndarray:
    return np.zeros(channels, dtype) if bias is None else bias.reshape(channels)


def forward(
    x: np.ndarray,
    expand: tuple[np.ndarray, np.ndarray | None] | None,
    depthwise: tuple[np.ndarray, np.ndarray | None],
    g: WindowGeometry,
    project: tuple[np.ndarray, np.ndarray | None],
    skip: np.ndarray | None = None,
) -> np.ndarray:
    """The block's output (N, O, OH, OW) for checked, C-contiguous ``x`` (N, C, H, W) of the
    weights' dtype: ``expand`` (None: no expansion), ``depthwise`` and ``project`` are each
    (weight, bias or None), the convolutions' own arrays ((E, C, 1, 1), (E, 1, 3, 3), (O, E, 1,
    1)); ``g`` is the depthwise layer's geometry; ``skip`` (C-contiguous, the output's shape and
    dtype) is added to the output. Maps of at least ``MIN_PLANE`` pixels run plane by plane,
    smaller ones channels-last; batch slices on the engine's pool."""
    dtype = x.dtype
    n, height, width = x.shape[0], x.shape[2], x.shape[3]
    wd, bd = depthwise
    channels = wd.shape[0]
    bd = _bias(bd, channels, dtype)
    if expand is None:
        we, be = np.zeros((0, 0), dtype), np.zeros(0, dtype)
    else:
        we, be = expand[0].reshape(channels, -1), _bias(expand[1], channels, dtype)
    wp = project[0].reshape(project[0].shape[0], channels)
    bp = _bias(project[1], wp.shape[0], dtype)
    out = np.empty((n, wp.shape[0], g.oh, g.ow), dtype=dtype)
    skips = np.empty((0, 0, 0, 0), dtype) if skip is None else skip  # none: no samples
    if height * width >= MIN_PLANE:
        wd3 = wd.reshape(channels, 3, 3)

        def planes(s: slice) -> None:
            inverted_residual_forward(x[s], we, be, wd3, bd, g.sy, g.sx, g.dy, g.dx, g.top,
                                      g.left, wp, bp, skips[s], out[s])

        _threads.parallel_map(planes, cache_slices(n, x[0].nbytes + out[0].nbytes))
        return out
    wd_last = np.ascontiguousarray(wd.reshape(channels, 9).T).reshape(3, 3, channels)
    plane, out_plane = height * width, g.oh * g.ow

    def rows(s: slice) -> None:
        k = s.stop - s.start
        xc = np.empty((k * plane, x.shape[1]), dtype)
        to_channels_last(x[s], xc)
        h = xc if expand is None else matmul(xc, we.T)  # (k*H*W, E)
        d = np.empty((k * out_plane, channels), dtype)
        depthwise_channels_last(h, be, expand is not None, wd_last, bd, height, width, g.sy,
                                g.sx, g.dy, g.dx, g.top, g.left, g.oh, g.ow, d)
        from_channels_last(matmul(d, wp.T), bp, skips[s], out[s])

    _threads.parallel_map(rows, cache_slices(n, (plane + out_plane) * channels * x.itemsize))
    return out
