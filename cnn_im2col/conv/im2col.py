"""The im2col + GEMM strategy of a convolution: its forward/backward pair, its cache, its kernels.

Convolution (cross-correlation, as in PyTorch and Eq. 8.20) is im2col -> one GEMM -> reshape:

    cols (N*OH*OW, C*KH*KW) @ W (O, C*KH*KW).T -> (N*OH*OW, O) -> (N, O, OH, OW)

and its backward pass (Eq. 8.36, 8.45, 8.48 in matrix form) is

    dZ  = dout as (N*OH*OW, O)
    dW  = dZ.T @ cols            (the weight gradient: a correlation of the input with dZ)
    db  = sum of dZ              (tied: over N, OH, OW; untied: over N)
    dx  = col2im(dZ @ W)         (the full convolution with the kernel rotated 180 degrees)

That is the ``"numpy"`` backend, literally (the slow twin). With ``groups = G`` the channels split
into G groups and each is its own convolution: one GEMM per group, on the group's rows of ``cols``
and of ``W``.

The ``"numba"`` backend computes the same products transposed, in blocks: the batch is split into
slices (``arrays.cache_slices``), and each worker of the engine's pool runs a slice's whole block
while it is in its cache: channel-major im2col ``cols_t`` (C*KH*KW, n*OH*OW) -> ``W @ cols_t`` (O,
n*OH*OW), single-threaded -> one epilogue pass that adds the bias, applies the ReLU if it was
fused (``relu=True``) and writes NCHW. Backward, per slice: one pass turns dout into dZ.T (O,
n*OH*OW), applying the fused ReLU's derivative and summing the bias gradient; ``dW_slice = dZ.T @
cols_t.T``; ``dx_slice = col2im_t(W.T @ dZ.T)``; the slices' dW add up at the end.

Everything here trusts its caller (``conv/__init__.py`` or a layer's plan): ``x`` C-contiguous in
the weight's dtype, the bias checked, the geometry that of this input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numba as nb
import numpy as np

from .. import threads as _threads
from ..arrays import cache_slices, matmul, summed
from ..arrays import unsigned as _u
from ..arrays import valid_range as _valid_range
from ..im2col import fold, unfold
from ..shapes import WindowGeometry


class Im2colCache(NamedTuple):
    """What backward needs of an im2col convolution."""

    x_shape: tuple[int, int, int, int]
    weight: np.ndarray
    bias_shape: tuple[int, ...] | None
    geometry: WindowGeometry
    groups: int
    backend: str
    owner: str
    cols: (
        list[np.ndarray] | np.ndarray | None
    )  # numba: one cols_t per slice; numpy: cols; None: rebuild
    x: np.ndarray | None  # the input, kept instead of cols (keep=False)
    slices: list[slice] | None  # numba: the batch slices of ``cols``
    out: np.ndarray | None  # relu=True: the output, whose sign is ReLU's derivative


# --------------------------------------------------------------------------- channel-major im2col
# The convolution's own layout: ``cols_t`` is (C*KH*KW, N*OH*OW), the transpose of ``im2col``'s.
# Row ``k = (c*KH + i)*KW + j`` holds, for every output position ``(n, oh, ow)`` in order, the
# input pixel that kernel cell (c, i, j) sees there. ``W (O, C*KH*KW) @ cols_t`` is then
# (O, N*OH*OW): for one sample, already its NCHW output. Padding is not materialised: for each
# kernel cell the range of output columns whose input lies inside the image is computed once
# (``_valid_range``), so the innermost loop has no bounds check and (stride 1) is a contiguous
# copy that vectorises; the cells outside get 0.


@nb.njit(cache=True, nogil=True, inline="always")
def _copy_rows(src, s, step, dst, d, width, count):
    """``count`` runs of ``width`` values: ``src[s + r*step:][:width]`` ->
    ``dst[d + r*width:][:width]``."""
    for r in range(count):
        for q in range(width):
            dst[_u(d + r * width + q)] = src[_u(s + r * step + q)]


@nb.njit(cache=True, nogil=True, inline="always")
def _copy_rows_clipped(src, s, step, sx, dst, d, width, lo, hi, count):
    """``count`` runs of ``width`` values where only columns [lo, hi) of each run lie in the
    image: ``dst[d + r*width + q] = src[s + r*step + q*sx]`` there, 0 in the padding. ``sx`` is 1
    (a literal) for ``_copy_rows``'s contiguous runs, or a column stride for a run gathered from
    every sx-th value of a row. Inlined like every helper here, so that the cache holds whole
    kernels (a helper compiled apart is a cache entry that a cached process never loads),
    although inlining it made ``im2col_t`` 15% slower on LeNet's conv2 slices, which never take
    this path."""
    for r in range(count):
        row, first = d + r * width, s + r * step
        for q in range(lo):
            dst[_u(row + q)] = 0.0
        for q in range(lo, hi):
            dst[_u(row + q)] = src[_u(first + q * sx)]
        for q in range(hi, width):
            dst[_u(row + q)] = 0.0


@nb.njit(cache=True, nogil=True, inline="always")
def _split_columns(xf, image, height, width, sx, pf):
    """One (H, W) plane of the flat ``xf`` at ``image``, its columns split by their position modulo
    ``sx``: ``pf[(p*H + r)*WQ + k] = plane[r, k*SX + p]``, WQ = ceil(W / SX) (the cells past the
    edge are not written). A strided kernel cell then reads its columns as one contiguous run of a
    phase (stride-2 gathers did not vectorise)."""
    wq = -(-width // sx)
    if sx == 2:  # both phases of a row in one loop: the row is read as vectors, deinterleaved
        for r in range(height):
            src, dst = image + r * width, r * wq
            for k in range(width // 2):
                pf[_u(dst + k)] = xf[_u(src + 2 * k)]
                pf[_u(dst + height * wq + k)] = xf[_u(src + 2 * k + 1)]
            if width % 2:
                pf[_u(dst + width // 2)] = xf[_u(src + width - 1)]
        return
    for p in range(sx):
        for r in range(height):
            src, dst = image + r * width + p, (p * height + r) * wq
            for k in range((width - p + sx - 1) // sx):
                pf[_u(dst + k)] = xf[_u(src + k * sx)]


@nb.njit(cache=True, nogil=True, inline="always")
def _merge_columns(pf, height, width, sx, xf, image):
    """The inverse of ``_split_columns``: the phases of ``pf`` written back into the plane."""
    wq = -(-width // sx)
    if sx == 2:  # both phases into a row in one loop, interleaved
        for r in range(height):
            src, dst = r * wq, image + r * width
            for k in range(width // 2):
                xf[_u(dst + 2 * k)] = pf[_u(src + k)]
                xf[_u(dst + 2 * k + 1)] = pf[_u(src + height * wq + k)]
            if width % 2:
                xf[_u(dst + width - 1)] = pf[_u(src + width // 2)]
        return
    for p in range(sx):
        for r in range(height):
            src, dst = (p * height + r) * wq, image + r * width + p
            for k in range((width - p + sx - 1) // sx):
                xf[_u(dst + k * sx)] = pf[_u(src + k)]


@nb.njit(cache=True, nogil=True)
def im2col_t(x, kh, kw, sy, sx, dy, dx, pt, pl, oh_count, ow_count, cols):
    """``cols[k, (n*OH + oh)*OW + ow]`` (written) =
    ``x[n, c, oh*SY - PT + i*DY, ow*SX - PL + j*DX]`` (0 outside the image) for
    ``k = (c*KH + i)*KW + j``.

    x: (N, C, H, W); cols: (C*KH*KW, N*OH*OW), both C-contiguous. For each (n, c) input plane
    (which stays in cache) and kernel cell (i, j), the OH x OW block of the output is written in
    one pass over flat indices: rows [ylo, yhi) and columns [xlo, xhi) read the image, the rest
    is padding. Flat indices instead of per-row views: 1.3x faster on LeNet's conv2 slices, whose
    runs are only 8 values long. With a column stride SX > 1 the plane is first split into its SX
    column phases (``_split_columns``), and each kernel cell copies contiguous runs of one phase
    (8x32x32x32, 3x3 stride 2, one thread, in one run: 0.44 -> 0.24 ms); but a kernel one column
    wide (a ResNet's strided 1x1 projection) reads one phase of every SY-th row, so it gathers those
    values from the plane where they lie instead of splitting all of it.
    """
    n_count, c_count, height, width = x.shape
    plane = oh_count * ow_count
    length = n_count * plane
    xf = x.reshape(x.size)  # a view: the callers pass C-contiguous arrays (reshape refuses others)
    cf = cols.reshape(cols.size)
    split = sx > 1 and kw > 1
    wq = -(-width // sx) if split else width  # a phase's width (the whole row unsplit)
    pf = np.empty(sx * height * wq if split else 0, dtype=x.dtype)
    for n in range(n_count):
        for c in range(c_count):
            image = (n * c_count + c) * height * width
            if split:
                _split_columns(xf, image, height, width, sx, pf)
            for i in range(kh):
                ylo, yhi = _valid_range(i * dy - pt, sy, height, oh_count)
                for j in range(kw):
                    off = j * dx - pl
                    xlo, xhi = _valid_range(off, sx, width, ow_count)
                    d = ((c * kh + i) * kw + j) * length + n * plane
                    cf[d : d + ylo * ow_count] = 0.0
                    cf[d + yhi * ow_count : d + plane] = 0.0
                    row = ylo * sy + i * dy - pt  # the input row of output row ylo
                    if sx > 1 and not split:  # output column ow reads input column ow*SX + off
                        _copy_rows_clipped(xf, image + row * width + off, sy * width, sx, cf,
                                           d + ylo * ow_count, ow_count, xlo, xhi, yhi - ylo)
                        continue
                    # input column ow*SX + off = (ow + off // SX)*SX + off % SX: phase off % SX
                    src = xf if sx == 1 else pf
                    s = ((off % sx) * height + row) * wq + off // sx
                    if sx == 1:
                        s += image
                    if xlo == 0 and xhi == ow_count:
                        _copy_rows(src, s, sy * wq, cf, d + ylo * ow_count, ow_count, yhi - ylo)
                    else:
                        start = d + ylo * ow_count
                        _copy_rows_clipped(
                            src, s, sy * wq, 1, cf, start, ow_count, xlo, xhi, yhi - ylo
                        )


@nb.njit(cache=True, nogil=True)
def col2im_t(cols, kh, kw, sy, sx, dy, dx_step, pt, pl, oh_count, ow_count, dx):
    """Scatter-add the columns of ``im2col_t`` back into the image: its adjoint (padding dropped).

    cols: (C*KH*KW, N*OH*OW); dx (written whole, no need to zero it): (N, C, H, W); both
    C-contiguous. The same blocks as ``im2col_t``, added instead of copied; with a column stride
    SX > 1, into the plane's column phases, merged into dx once per plane (but for a kernel one
    column wide, added where they lie, as ``im2col_t`` gathers them).
    """
    n_count, c_count, height, width = dx.shape
    plane = oh_count * ow_count
    length = n_count * plane
    cf = cols.reshape(cols.size)
    xf = dx.reshape(dx.size)
    split = sx > 1 and kw > 1
    wq = -(-width // sx)
    pf = np.empty(sx * height * wq if split else 0, dtype=dx.dtype)
    if not split:
        xf[:] = 0.0
    for n in range(n_count):
        for c in range(c_count):
            image = (n * c_count + c) * height * width
            target = xf
            if split:
                pf[:] = 0.0
                target = pf
            for i in range(kh):
                ylo, yhi = _valid_range(i * dy - pt, sy, height, oh_count)
                for j in range(kw):
                    off = j * dx_step - pl
                    xlo, xhi = _valid_range(off, sx, width, ow_count)
                    d = ((c * kh + i) * kw + j) * length + n * plane + ylo * ow_count
                    if sx > 1 and not split:  # output column ow came from column ow*SX + off
                        first = image + (ylo * sy + i * dy - pt) * width + off
                        for r in range(yhi - ylo):
                            for q in range(xlo, xhi):
                                xf[_u(first + r * sy * width + q * sx)] += cf[
                                    _u(d + r * ow_count + q)]
                        continue
                    s = ((off % sx) * height + ylo * sy + i * dy - pt) * wq + off // sx
                    if sx == 1:
                        s += image
                    step = sy * wq
                    for r in range(yhi - ylo):
                        for q in range(xlo, xhi):
                            target[_u(s + r * step + q)] += cf[_u(d + r * ow_count + q)]
            if split:
                _merge_columns(pf, height, width, sx, xf, image)


# --------------------------------------------------------------------------- small weight gradients


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"}, inline="always")
def _dot(x, y):
    """``x @ y`` of two 1-D arrays, summed in their dtype (``reassoc``: in vector lanes)."""
    total = x.dtype.type(0)
    for p in range(x.shape[0]):
        total += x[p] * y[p]
    return total


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def matmul_abt(a, b, out):
    """``out = a @ b.T`` as dot products of rows: a (M, L), b (N, L), both C-contiguous; out (M, N).

    For a small result and a long L (a convolution's weight gradient on a batch slice). Register
    blocked: each pass over L reads 4 rows of ``a`` and 4 of ``b`` and keeps their 16 dot products
    running, so a value loaded is used 4 times; the rows and columns left over go 4 x 1 and 1 x 4,
    then one at a time. (One dot product a pass measured 3-4x slower, bound by loads; 2 x 4 blocks,
    which this replaced, 1.2-1.5x: 2026-12-06, Intel Xeon, one thread, 16 x 27 over 5,120 values
    (ResNet-20's stem on a 5-sample slice) 61-71 -> 48-53 us, 20 x 25 over 3,136 (LeNet's conv1
    on 4 samples) 39-45 -> 29-30.) The sums are in the inputs' dtype, as a BLAS keeps them;
    ``reassoc`` lets each be split over vector lanes (no less accurate than a BLAS's) and
    ``contract`` use fused multiply-adds. Not ``nnan``/``ninf``: a NaN or Inf in a gradient must
    come out as one, for the training guard to see it.
    """
    m, length = a.shape
    n = b.shape[0]
    m4, n4 = m - m % 4, n - n % 4
    zero = a.dtype.type(0)
    for i in range(0, m4, 4):
        a0, a1, a2, a3 = a[i], a[i + 1], a[i + 2], a[i + 3]
        for j in range(0, n4, 4):
            b0, b1, b2, b3 = b[j], b[j + 1], b[j + 2], b[j + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
            for p in range(length):
                u0, u1, u2, u3 = a0[p], a1[p], a2[p], a3[p]
                c0, c1, c2, c3 = b0[p], b1[p], b2[p], b3[p]
                s00 += u0 * c0
                s01 += u0 * c1
                s02 += u0 * c2
                s03 += u0 * c3
                s10 += u1 * c0
                s11 += u1 * c1
                s12 += u1 * c2
                s13 += u1 * c3
                s20 += u2 * c0
                s21 += u2 * c1
                s22 += u2 * c2
                s23 += u2 * c3
                s30 += u3 * c0
                s31 += u3 * c1
                s32 += u3 * c2
                s33 += u3 * c3
            out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s00, s01, s02, s03
            out[i + 1, j], out[i + 1, j + 1], out[i + 1, j + 2], out[i + 1, j + 3] = (
                s10, s11, s12, s13)
            out[i + 2, j], out[i + 2, j + 1], out[i + 2, j + 2], out[i + 2, j + 3] = (
                s20, s21, s22, s23)
            out[i + 3, j], out[i + 3, j + 1], out[i + 3, j + 2], out[i + 3, j + 3] = (
                s30, s31, s32, s33)
        for j in range(n4, n):
            out[i, j], out[i + 1, j], out[i + 2, j], out[i + 3, j] = _four_dots(
                b[j], a0, a1, a2, a3)
    for i in range(m4, m):
        for j in range(0, n4, 4):
            out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = _four_dots(
                a[i], b[j], b[j + 1], b[j + 2], b[j + 3])
        for j in range(n4, n):
            out[i, j] = _dot(a[i], b[j])


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"}, inline="always")
def _four_dots(x, y0, y1, y2, y3):
    """(x . y0, x . y1, x . y2, x . y3) in x's dtype, in one pass over x."""
    s0 = s1 = s2 = s3 = x.dtype.type(0)
    for p in range(x.shape[0]):
        u = x[p]
        s0 += u * y0[p]
        s1 += u * y1[p]
        s2 += u * y2[p]
        s3 += u * y3[p]
    return s0, s1, s2, s3


# --------------------------------------------------------------------------- conv epilogues


def bias_columns(bias: np.ndarray | None, out_channels: int, dtype: np.dtype) -> np.ndarray:
    """The bias as every strategy's epilogue takes it: (O, 1) tied (zeros for none) or (O, OH*OW)
    untied; ``bias`` checked, C-contiguous."""
    if bias is None:
        return np.zeros((out_channels, 1), dtype)
    return bias.reshape(out_channels, -1)


@nb.njit(cache=True, nogil=True)
def cm_to_nchw(src, bias, relu, out):
    """``out[n, o, p] = f(src[o, n*P + p] + bias[o, p or 0])``, f = ReLU if ``relu`` else identity:
    the GEMM's (O, N*P) result into NCHW, with the bias and the activation in the same pass.

    src: (O, N*P); bias: (O, 1) tied (zeros for none) or (O, P) untied; out (written): (N, O, P).
    """
    n_count, o_count, plane = out.shape
    untied = bias.shape[1] > 1
    for n in range(n_count):
        for o in range(o_count):
            s = src[o, n * plane : (n + 1) * plane]
            d = out[n, o]
            if untied:
                b = bias[o]
                for p in range(plane):
                    d[p] = s[p] + b[p]
            else:
                b0 = bias[o, 0]
                for p in range(plane):
                    d[p] = s[p] + b0
            if relu:
                for p in range(plane):
                    d[p] = d[p] if d[p] > 0 else 0.0


@nb.njit(cache=True, nogil=True)
def bias_relu_inplace(out, bias, relu):
    """``out[n, o, p] = f(out[n, o, p] + bias[o, p or 0])`` in place (the epilogue when the GEMM
    wrote NCHW itself). out: (N, O, P); bias: (O, 1) or (O, P)."""
    n_count, o_count, plane = out.shape
    untied = bias.shape[1] > 1
    for n in range(n_count):
        for o in range(o_count):
            d = out[n, o]
            if untied:
                b = bias[o]
                for p in range(plane):
                    v = d[p] + b[p]
                    d[p] = v if (v > 0 or not relu) else 0.0
            else:
                b0 = bias[o, 0]
                for p in range(plane):
                    v = d[p] + b0
                    d[p] = v if (v > 0 or not relu) else 0.0


@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def nchw_to_cm(src, y, relu, out, bias_grad):
    """``out[o, n*P + p] = src[n, o, p]`` (times ``y[n, o, p] > 0`` if ``relu``: the ReLU's
    backward in the same pass); ``bias_grad[o]`` (written, float64) = the sum of out's row o.

    src, y: (N, O, P) (y unused without relu); out (written): (O, N*P); bias_grad: (O,).
    ``reassoc``: the float64 sum may be reordered, so that it vectorises (a strict left-to-right sum
    measured 2.8 ms of a 14 ms LeNet step on one thread).
    """
    n_count, o_count, plane = src.shape
    bias_grad[:] = 0.0
    for n in range(n_count):
        for o in range(o_count):
            s = src[n, o]
            d = out[o, n * plane : (n + 1) * plane]
            total = 0.0
            if relu:
                m = y[n, o]
                for p in range(plane):
                    v = s[p] if m[p] > 0 else 0.0
                    d[p] = v
                    total += v
            else:
                for p in range(plane):
                    v = s[p]
                    d[p] = v
                    total += v
            bias_grad[o] += total


# ------------------------------------------------------------------------- the channel-major layout


def unfold_t(x: np.ndarray, g: WindowGeometry, out: np.ndarray | None = None) -> np.ndarray:
    """Channel-major im2col (Numba, serial: the caller runs it on a batch slice) for validated
    input: C-contiguous float (N, C, H, W) -> (C*KH*KW, N*OH*OW), the transpose of ``unfold``'s
    layout (``unfold_t(x, g) == unfold(x, g).T``); padding reads 0.

    The convolution's own layout: ``W (O, C*KH*KW) @ cols_t`` is (O, N*OH*OW).
    """
    n, c = x.shape[:2]
    dy, dx = g.dy, g.dx
    cols = np.empty((c * g.kh * g.kw, n * g.oh * g.ow), dtype=x.dtype) if out is None else out
    im2col_t(x, g.kh, g.kw, g.sy, g.sx, dy, dx, g.top, g.left, g.oh, g.ow, cols)
    return cols


def fold_t(cols: np.ndarray, g: WindowGeometry, out: np.ndarray) -> np.ndarray:
    """col2im (Numba, serial) for the channel-major layout of ``unfold_t``: scatter-add
    (C*KH*KW, N*OH*OW) into ``out`` (N, C, H, W), written whole; ``fold_t(cols, g, out) ==
    fold(cols.T, out.shape, g)`` (the padding's share is dropped)."""
    dy, dx = g.dy, g.dx
    col2im_t(
        np.ascontiguousarray(cols), g.kh, g.kw, g.sy, g.sx, dy, dx, g.top, g.left, g.oh, g.ow, out
    )
    return out


# --------------------------------------------------------------------------- grouped products

# A weight gradient of at most this many values per group (LeNet's conv1: 20 x 25) is a few long
# dot products, which OpenBLAS computes no faster on two threads at once than one after the other
# (measured, 20 x 4608 x 25 float32: 0.10 ms alone, 0.21-0.24 ms each when two threads call it
# together); Numba's loop (``matmul_abt``) takes 0.11 ms alone and 0.13-0.17 ms together. On an
# Intel Xeon (AVX-512, 2026-12-02), 20 x 2304 x 25: OpenBLAS 0.065 ms alone, 0.17 ms together; the
# register-blocked matmul_abt (2 x 4 then) 0.041 and 0.061. At 40 x 500 (conv2) OpenBLAS is 1.7-3x
# faster. Its 4 x 4 blocks (2026-12-06, the same Xeon, one thread / both at once, us): 20 x 25 over
# 2,304 38 / 33 against OpenBLAS's 50 / 42; 64 x 32 over 2,048 86 / 91 against 102 / 107; 40 x 500
# 1,599 / 1,605 against 801 / 916.
_DOT_GRAD_MAX = 1024


def weight_grad(d_t: np.ndarray, cols_t: np.ndarray, groups: int) -> np.ndarray:
    """Each group's ``dZ.T @ cols_t.T``: d_t (O, L) and cols_t (C*KH*KW, L), C-contiguous (as
    ``nchw_to_cm`` and ``unfold_t`` write them), -> (O, C/G*KH*KW), group g's rows from group g's
    rows of both."""
    o, r = d_t.shape[0] // groups, cols_t.shape[0] // groups
    if groups == 1 and o * r > _DOT_GRAD_MAX:
        # (cols_t @ dZ).T, not dZ.T @ cols_t.T: OpenBLAS is faster with the long axis in the
        # middle of "NT" this way round (measured, 40 x 500 x 4096: 1.13 vs 1.65 ms; 64 x 288 x
        # 1024: 0.21 vs 0.29 ms; one thread, SkylakeX kernel; within 5% with the Haswell one)
        return np.matmul(cols_t, d_t.T).T
    out = np.empty((groups * o, r), dtype=np.result_type(d_t, cols_t))
    for g in range(groups):
        rows, cols = d_t[g * o : (g + 1) * o], cols_t[g * r : (g + 1) * r]
        if o * r > _DOT_GRAD_MAX:
            out[g * o : (g + 1) * o] = np.matmul(cols, rows.T).T
        else:
            matmul_abt(rows, cols, out[g * o : (g + 1) * o])
    return out


def grouped_matmul(
    a: np.ndarray, b: np.ndarray, groups: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Block-diagonal product: group g of ``a``'s rows times group g of ``b``'s rows (a: (G*r, k),
    b: (G*k, m) -> (G*r, m)); ``groups == 1`` is ``a @ b``."""
    if groups == 1:
        return matmul(a, b, out)
    r, k = a.shape[0] // groups, b.shape[0] // groups
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    for g in range(groups):
        matmul(a[g * r : (g + 1) * r], b[g * k : (g + 1) * k], out[g * r : (g + 1) * r])
    return out


def _group_transpose(w2: np.ndarray, groups: int) -> np.ndarray:
    """(O, K) -> (G*K, O/G): each group's block of W transposed, stacked (W.T when G == 1)."""
    if groups == 1:
        return w2.T
    o, k = w2.shape[0] // groups, w2.shape[1]
    return np.ascontiguousarray(w2.reshape(groups, o, k).transpose(0, 2, 1).reshape(groups * k, o))


def _group_rows_t(cols_t: np.ndarray, groups: int) -> np.ndarray:
    """(G*K, M) -> (G*M, K): each group's rows transposed, stacked, so that ``grouped_matmul`` of
    dZ.T (G*r, M) with it gives each group's dW (r, K)."""
    if groups == 1:
        return cols_t.T
    k, m = cols_t.shape[0] // groups, cols_t.shape[1]
    return cols_t.reshape(groups, k, m).transpose(0, 2, 1).reshape(groups * m, k)


# --------------------------------------------------------------------------- forward / backward

# Maps of at least this many output pixels are sliced one sample at a time (ungrouped): a sample's
# ``W @ cols_t`` is then already its NCHW output, written in place, with no layout pass, and the
# GEMM's long axis is still long. Measured 2026-12-04, AMD EPYC, 2 threads, ReLU fused, default
# slices -> one sample each, inference / forward + backward ms: (64, 3, 32, 32) -> 32, 3x3:
# 2.18 -> 1.71 / 6.4 -> 6.3; with 256-pixel outputs it did not pay ((64, 32, 16, 16) -> 64:
# 5.1 -> 5.3 / 16.0 -> 17.0; stride-2 layers within noise or worse).
_ONE_SAMPLE_PLANE = 1024


def batch_slices(x_shape: tuple[int, ...], g: WindowGeometry, groups: int, itemsize: int
                 ) -> list[slice]:
    """The batch slices of ``forward`` (numba) for an input of ``x_shape``: one sample each for
    large ungrouped maps, else as many samples as keep a slice's im2col matrix in cache."""
    n, plane = x_shape[0], g.oh * g.ow
    if groups == 1 and plane >= _ONE_SAMPLE_PLANE:
        return _threads.split(n, n)
    return cache_slices(n, x_shape[1] * g.kh * g.kw * plane * itemsize)


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
    """``conv2d_forward``'s im2col strategy on checked arguments: x (N, C, H, W) C-contiguous in
    the weight's dtype, weight (O, C/groups, KH, KW), bias None, (O,) or (O, OH, OW) C-contiguous,
    ``g`` the geometry of x. Returns ``out`` (N, O, OH, OW) and the cache for ``backward``.
    ``keep=False``: the im2col matrix is built a slice at a time and not kept (the cache keeps x).
    ``then(s, out[s])``: called per batch slice right after it is written, on its thread."""
    n = x.shape[0]
    out_channels = weight.shape[0]
    w2 = weight.reshape(out_channels, -1)
    plane = g.oh * g.ow
    slices = None
    if backend == "numba":
        out = np.empty((n, out_channels, g.oh, g.ow), dtype=weight.dtype)
        bias2 = bias_columns(bias, out_channels, weight.dtype)
        out3 = out.reshape(n, out_channels, plane)
        slices = batch_slices(x.shape, g, groups, x.itemsize)

        def block(s: slice) -> np.ndarray | None:
            cols = unfold_t(x[s], g)
            if (
                groups == 1 and s.stop - s.start == 1
            ):  # W @ cols is already this sample's NCHW output
                grouped_matmul(w2, cols, groups, out=out3[s.start])
                bias_relu_inplace(out3[s], bias2, relu)
            else:
                cm_to_nchw(grouped_matmul(w2, cols, groups), bias2, relu, out3[s])
            if then is not None:
                then(s, out[s])
            return cols if keep else None

        cols = _threads.parallel_map(block, slices)
    else:
        cols = unfold(x, g, 0.0, backend)
        rows = grouped_matmul(w2, cols.T, groups).T  # (N*OH*OW, O): one GEMM per group
        # NHWC -> NCHW; the bias add doubles as the copy into a contiguous output.
        view = rows.reshape(n, g.oh, g.ow, out_channels).transpose(0, 3, 1, 2)
        out = np.empty(view.shape, dtype=weight.dtype)
        if bias is None:
            np.copyto(out, view)
        elif bias.ndim == 1:
            np.add(view, bias[:, None, None], out=out)
        else:
            np.add(view, bias, out=out)
        if relu:
            np.maximum(out, 0, out=out)
        if then is not None:
            then(slice(0, n), out)
    cache = Im2colCache(
        x.shape,
        weight,
        None if bias is None else bias.shape,
        g,
        groups,
        backend,
        owner,
        cols if keep else None,
        None if keep else x,
        slices,
        out if relu else None,
    )
    return out, cache


def backward(
    dout: np.ndarray | None,
    cache: Im2colCache,
    input_grad: bool = True,
    *,
    dout_of: Callable[[slice], np.ndarray] | None = None,
    dz_into: Callable[[slice, np.ndarray, np.ndarray], None] | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``conv2d_backward`` of an im2col convolution: ``(dx, dweight, dbias)``. ``dout`` checked
    (the output's shape and dtype), or None and ``dout_of(s)`` gives it per batch slice; with
    ``dz_into(s, d_t, bias_grad)`` beside it, the slice's dZ.T and tied bias gradient are written
    straight into this strategy's layout (the fused ReLU's derivative applied)."""
    g, backend, groups = cache.geometry, cache.backend, cache.groups
    x_shape, weight, bias_shape = cache.x_shape, cache.weight, cache.bias_shape
    out_channels = weight.shape[0]
    relu = cache.out is not None
    if (
        dout_of is not None and backend != "numba"
    ):  # the twin takes dout whole: one slice, the batch
        dout, dout_of = dout_of(slice(0, x_shape[0])), None
    w2 = weight.reshape(out_channels, -1)
    wt = _group_transpose(w2, groups)  # (C*KH*KW, O/G) per group, stacked: W.T of each group
    if backend == "numba":
        n, plane = x_shape[0], g.oh * g.ow
        dout3 = (
            None
            if dout_of is not None
            else np.ascontiguousarray(dout).reshape(n, out_channels, plane)
        )
        y3 = cache.out.reshape(n, out_channels, plane) if relu else None
        dx = np.empty(x_shape, dtype=weight.dtype) if input_grad else None
        slices, kept = cache.slices, cache.cols

        def block(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
            s = slices[i]
            cols = kept[i] if kept is not None else unfold_t(cache.x[s], g)
            d_t = np.empty((out_channels, (s.stop - s.start) * plane), dtype=weight.dtype)
            tied = np.empty(out_channels, dtype=np.float64)
            if dout_of is not None and dz_into is not None:
                dz_into(s, d_t, tied)
            else:
                d3 = dout3[s] if dout_of is None else dout_of(s).reshape(-1, out_channels, plane)
                nchw_to_cm(d3, y3[s] if relu else d3, relu, d_t, tied)
            dw = weight_grad(d_t, cols, groups)  # (O, C/G*KH*KW)
            if input_grad:
                fold_t(grouped_matmul(wt, d_t, groups), g, dx[s])
            untied = None
            if bias_shape is not None and len(bias_shape) == 3:
                untied = d_t.reshape(out_channels, -1, plane).sum(axis=1)
            return dw, tied, untied

        parts = _threads.parallel_map(block, list(range(len(slices))))
        dweight = summed([part[0] for part in parts]).reshape(weight.shape)
        if bias_shape is None:
            dbias = None
        elif len(bias_shape) == 1:
            dbias = sum(p[1] for p in parts).astype(weight.dtype)
        else:
            dbias = sum(p[2] for p in parts).reshape(bias_shape)
        return dx, dweight, dbias
    cols = cache.cols if cache.cols is not None else unfold(cache.x, g, 0.0, backend)
    if relu:
        dout = np.where(cache.out > 0, dout, 0).astype(weight.dtype)
    d_rows = dout.transpose(0, 2, 3, 1).reshape(-1, out_channels)  # (N*OH*OW, O)
    dweight = grouped_matmul(d_rows.T, _group_rows_t(cols.T, groups), groups).reshape(weight.shape)
    dx = fold(grouped_matmul(wt, d_rows.T, groups).T, x_shape, g, backend) if input_grad else None
    if bias_shape is None:
        dbias = None
    elif len(bias_shape) == 1:
        dbias = dout.sum(axis=(0, 2, 3))
    else:
        dbias = dout.sum(axis=0)
    return dx, dweight, dbias
