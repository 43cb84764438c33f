"""Every Numba-compiled loop of the engine, and nothing else.

The kernels trust their callers (``im2col.py``, ``functional.py``): arrays are C-contiguous,
float32 or float64, shapes and sizes consistent. No validation happens here.

Geometry shared by all kernels: an input plane of ``H x W`` is read through windows of
``KH x KW`` cells taken every ``(SY, SX)`` pixels, the cells ``(DY, DX)`` pixels apart (dilation),
starting ``PT`` rows above and ``PL`` columns left of the image (the top/left padding).
``OH x OW`` windows are taken; a window cell outside the image is padding. Bottom/right padding
needs no parameter: it only shows up in ``OH``/``OW``.

Threads: the kernels are serial (``parallel=False``) and release the GIL (``nogil``). The engine
runs them on its own pool (``threads.py``), each worker on a slice of the batch, so that one set of
threads owns the cores and the slice stays in the worker's cache from im2col to the epilogue. A
kernel is called on a batch slice (``x[n0:n1]`` is C-contiguous), so no two calls write the same
element. No kernel is a parallel Numba loop: Numba starts no threads of its own.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, inline="always")
def _u(index):
    """An index the caller knows is >= 0, as unsigned: Numba then emits no negative-index
    wraparound test, and the loop vectorises (measured 6x faster on LeNet's conv2 im2col)."""
    return nb.uint64(index)


@nb.njit(cache=True, nogil=True, inline="always")
def _valid_range(offset, stride, size, count):
    """The outputs ``o`` in [lo, hi) whose input ``o*stride + offset`` lies in [0, size). Inlined
    (as ``_u``): the kernels' cache then holds everything, and no helper is compiled apart."""
    lo = min(max(-(offset // stride), 0), count)
    hi = max(min((size - 1 - offset) // stride + 1, count), lo)
    return lo, hi


@nb.njit(cache=True, nogil=True)
def im2col(x, kh, kw, sy, sx, dy, dx, pt, pl, oh_count, ow_count, pad_value, cols):
    """Gather receptive fields into rows.

    x: (N, C, H, W); cols (written): (N*OH*OW, C*KH*KW), row ``(n*OH + oh)*OW + ow``,
    column ``(c*KH + i)*KW + j``, value ``x[n, c, oh*SY - PT + i*DY, ow*SX - PL + j*DX]`` or
    ``pad_value``.
    """
    n_count, c_count, height, width = x.shape
    for task in range(n_count * oh_count):
        oh = task % oh_count
        n = task // oh_count
        for ow in range(ow_count):
            row = task * ow_count + ow
            col = 0
            for c in range(c_count):
                for i in range(kh):
                    y = oh * sy - pt + i * dy
                    inside_y = 0 <= y < height
                    for j in range(kw):
                        xx = ow * sx - pl + j * dx
                        if inside_y and 0 <= xx < width:
                            cols[row, col] = x[n, c, y, xx]
                        else:
                            cols[row, col] = pad_value
                        col += 1


@nb.njit(cache=True, nogil=True)
def col2im(cols, kh, kw, sy, sx, dy, dx_step, pt, pl, oh_count, ow_count, dx):
    """Scatter-add rows back into the image: the adjoint of ``im2col`` (padding cells dropped).

    cols: (N*OH*OW, C*KH*KW); dx (written whole): (N, C, H, W). Overlapping windows add up.
    """
    n_count, c_count, height, width = dx.shape
    dx[:] = 0.0
    for n in range(n_count):
        for c in range(c_count):
            for oh in range(oh_count):
                for i in range(kh):
                    y = oh * sy - pt + i * dy
                    if y < 0 or y >= height:
                        continue
                    for ow in range(ow_count):
                        row = (n * oh_count + oh) * ow_count + ow
                        col = (c * kh + i) * kw
                        for j in range(kw):
                            xx = ow * sx - pl + j * dx_step
                            if 0 <= xx < width:
                                dx[n, c, y, xx] += cols[row, col + j]


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
    """``count`` runs of ``width`` values: ``src[s + r*step:][:width]`` -> ``dst[d + r*width:][:width]``."""
    for r in range(count):
        for q in range(width):
            dst[_u(d + r * width + q)] = src[_u(s + r * step + q)]


@nb.njit(cache=True, nogil=True, inline="always")
def _copy_rows_clipped(src, s, step, sx, dst, d, width, lo, hi, count):
    """``_copy_rows`` where only columns [lo, hi) of each run lie in the image (read every ``sx``-th
    value from ``s + r*step``); the others are padding and get 0. Inlined like every helper here, so
    that the cache holds whole kernels (a helper compiled apart is a cache entry that a cached
    process never loads), although inlining it made ``im2col_t`` 15% slower on LeNet's conv2
    slices, which never take this path."""
    for r in range(count):
        row = d + r * width
        for q in range(lo):
            dst[_u(row + q)] = 0.0
        for q in range(lo, hi):
            dst[_u(row + q)] = src[_u(s + r * step + q * sx)]
        for q in range(hi, width):
            dst[_u(row + q)] = 0.0


@nb.njit(cache=True, nogil=True)
def im2col_t(x, kh, kw, sy, sx, dy, dx, pt, pl, oh_count, ow_count, cols):
    """``cols[k, (n*OH + oh)*OW + ow]`` (written) = ``x[n, c, oh*SY - PT + i*DY, ow*SX - PL + j*DX]``
    (0 outside the image) for ``k = (c*KH + i)*KW + j``.

    x: (N, C, H, W); cols: (C*KH*KW, N*OH*OW), both C-contiguous. For each (n, c) input plane
    (which stays in cache) and kernel cell (i, j), the OH x OW block of the output is written in
    one pass over flat indices: rows [ylo, yhi) and columns [xlo, xhi) read the image, the rest
    is padding. Flat indices instead of per-row views: 1.3x faster on LeNet's conv2 slices, whose
    runs are only 8 values long.
    """
    n_count, c_count, height, width = x.shape
    plane = oh_count * ow_count
    length = n_count * plane
    xf = x.reshape(x.size)  # a view: the callers pass C-contiguous arrays (reshape refuses others)
    cf = cols.reshape(cols.size)
    for n in range(n_count):
        for c in range(c_count):
            image = (n * c_count + c) * height * width
            for i in range(kh):
                ylo, yhi = _valid_range(i * dy - pt, sy, height, oh_count)
                for j in range(kw):
                    xlo, xhi = _valid_range(j * dx - pl, sx, width, ow_count)
                    d = ((c * kh + i) * kw + j) * length + n * plane
                    cf[d:d + ylo * ow_count] = 0.0
                    cf[d + yhi * ow_count:d + plane] = 0.0
                    s = image + (ylo * sy + i * dy - pt) * width + j * dx - pl  # (ylo, 0)'s source
                    if sx == 1 and xlo == 0 and xhi == ow_count:
                        _copy_rows(xf, s, sy * width, cf, d + ylo * ow_count, ow_count, yhi - ylo)
                    else:
                        _copy_rows_clipped(xf, s, sy * width, sx, cf, d + ylo * ow_count, ow_count, xlo, xhi,
                                           yhi - ylo)


@nb.njit(cache=True, nogil=True)
def col2im_t(cols, kh, kw, sy, sx, dy, dx_step, pt, pl, oh_count, ow_count, dx):
    """Scatter-add the columns of ``im2col_t`` back into the image: its adjoint (padding dropped).

    cols: (C*KH*KW, N*OH*OW); dx (written whole, no need to zero it): (N, C, H, W); both
    C-contiguous. The same blocks as ``im2col_t``, added instead of copied.
    """
    n_count, c_count, height, width = dx.shape
    plane = oh_count * ow_count
    length = n_count * plane
    cf = cols.reshape(cols.size)
    xf = dx.reshape(dx.size)
    xf[:] = 0.0
    for n in range(n_count):
        for c in range(c_count):
            image = (n * c_count + c) * height * width
            for i in range(kh):
                ylo, yhi = _valid_range(i * dy - pt, sy, height, oh_count)
                for j in range(kw):
                    xlo, xhi = _valid_range(j * dx_step - pl, sx, width, ow_count)
                    d = ((c * kh + i) * kw + j) * length + n * plane + ylo * ow_count
                    s = image + (ylo * sy + i * dy - pt) * width + j * dx_step - pl
                    step = sy * width
                    if sx == 1:
                        for r in range(yhi - ylo):
                            for q in range(xlo, xhi):
                                xf[_u(s + r * step + q)] += cf[_u(d + r * ow_count + q)]
                    else:
                        for r in range(yhi - ylo):
                            for q in range(xlo, xhi):
                                xf[_u(s + r * step + q * sx)] += cf[_u(d + r * ow_count + q)]


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
    blocked: each pass over L reads 2 rows of ``a`` and 4 of ``b`` and keeps their 8 dot products
    running, so a value loaded is used 2-4 times (one dot product per pass measured 3-4x slower:
    it is bound by loads). The sums are in the inputs' dtype, as a BLAS keeps them; ``reassoc``
    lets each be split over vector lanes (no less accurate than a BLAS's) and ``contract`` use
    fused multiply-adds. Not ``nnan``/``ninf``: a NaN or Inf in a gradient must come out as one,
    for the training guard to see it.
    """
    m, length = a.shape
    n = b.shape[0]
    m2, n4 = m - m % 2, n - n % 4
    for i in range(0, m2, 2):
        a0, a1 = a[i], a[i + 1]
        for j in range(0, n4, 4):
            b0, b1, b2, b3 = b[j], b[j + 1], b[j + 2], b[j + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = a.dtype.type(0)
            for p in range(length):
                u, v = a0[p], a1[p]
                c0, c1, c2, c3 = b0[p], b1[p], b2[p], b3[p]
                s00 += u * c0
                s01 += u * c1
                s02 += u * c2
                s03 += u * c3
                s10 += v * c0
                s11 += v * c1
                s12 += v * c2
                s13 += v * c3
            out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s00, s01, s02, s03
            out[i + 1, j], out[i + 1, j + 1], out[i + 1, j + 2], out[i + 1, j + 3] = s10, s11, s12, s13
        for j in range(n4, n):
            out[i, j] = _dot(a0, b[j])
            out[i + 1, j] = _dot(a1, b[j])
    for i in range(m2, m):
        for j in range(n):
            out[i, j] = _dot(a[i], b[j])


# --------------------------------------------------------------------------- finiteness


@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def all_finite(a):
    """Whether every element of the 1-D ``a`` is finite, in one pass: ``v - v`` is 0 for a finite
    ``v`` and NaN for +-Inf and NaN, so the sum is 0 exactly when all are finite. ``reassoc`` only
    (the sum of zeros may be split over vector lanes); never ``nnan``/``ninf``, which would let the
    compiler fold ``v - v`` to 0."""
    total = a.dtype.type(0)
    for p in range(a.shape[0]):
        total += a[p] - a[p]
    return total == 0


# --------------------------------------------------------------------------- conv epilogues


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
            s = src[o, n * plane:(n + 1) * plane]
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
            d = out[o, n * plane:(n + 1) * plane]
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


# --------------------------------------------------------------------------- max pooling
# ``relu``: the pool of ReLU(x), computed as ReLU of the pool of x (identical: ReLU is monotone),
# in one pass; the winner is the first maximum of x in scan order, and backward routes a gradient
# only where the pooled value is > 0 (where ReLU's derivative is 1), so outputs and gradients
# equal those of ReLU then MaxPool, ties included.


@nb.njit(cache=True, nogil=True)
def max_pool_forward(x, kh, kw, sy, sx, pt, pl, relu, out, argmax):
    """Max over each window; ``argmax`` gets the flat ``y*W + x`` index of the winner in its plane.

    x: (N, C, H, W); out, argmax (written): (N, C, OH, OW). Padding cells never win (they act as
    -inf). Ties go to the first maximum in window scan order (row-major), via strict ``>``.
    """
    n_count, c_count, height, width = x.shape
    oh_count, ow_count = out.shape[2], out.shape[3]
    for n in range(n_count):
        for c in range(c_count):
            for oh in range(oh_count):
                for ow in range(ow_count):
                    best = -np.inf
                    best_index = -1
                    for i in range(kh):
                        y = oh * sy - pt + i
                        if y < 0 or y >= height:
                            continue
                        for j in range(kw):
                            xx = ow * sx - pl + j
                            if 0 <= xx < width:
                                value = x[n, c, y, xx]
                                if value > best or best_index < 0:
                                    best = value
                                    best_index = y * width + xx
                    out[n, c, oh, ow] = best if (best > 0 or not relu) else 0.0
                    argmax[n, c, oh, ow] = best_index


@nb.njit(cache=True, nogil=True)
def max_pool_forward_valid(x, kh, kw, sy, sx, relu, out, argmax):
    """``max_pool_forward`` without padding (every window inside the image): no bounds checks."""
    n_count, c_count, width = x.shape[0], x.shape[1], x.shape[3]
    oh_count, ow_count = out.shape[2], out.shape[3]
    for n in range(n_count):
        for c in range(c_count):
            src = x[n, c]
            dst = out[n, c]
            arg = argmax[n, c]
            for oh in range(oh_count):
                y0 = oh * sy
                for ow in range(ow_count):
                    x0 = ow * sx
                    best = src[y0, x0]
                    best_index = y0 * width + x0
                    for i in range(kh):
                        row = src[y0 + i]
                        for j in range(kw):
                            value = row[x0 + j]
                            # selects, not a branch: on real data the winner is unpredictable
                            better = value > best
                            best_index = (y0 + i) * width + x0 + j if better else best_index
                            best = value if better else best
                    dst[oh, ow] = best if (best > 0 or not relu) else 0.0
                    arg[oh, ow] = best_index


@nb.njit(cache=True, nogil=True)
def max_pool_forward_2x2(x, sy, sx, relu, out, argmax):
    """``max_pool_forward_valid`` for 2x2 windows, unrolled (about 3x faster than the general loop).

    Ties go to the first maximum in scan order: top-left, top-right, bottom-left, bottom-right.
    """
    n_count, c_count, width = x.shape[0], x.shape[1], x.shape[3]
    oh_count, ow_count = out.shape[2], out.shape[3]
    for n in range(n_count):
        for c in range(c_count):
            src = x[n, c]
            dst = out[n, c]
            arg = argmax[n, c]
            for oh in range(oh_count):
                y0 = oh * sy
                top = src[y0]
                bottom = src[y0 + 1]
                for ow in range(ow_count):
                    x0 = ow * sx
                    best = top[x0]
                    offset = 0
                    if top[x0 + 1] > best:
                        best = top[x0 + 1]
                        offset = 1
                    if bottom[x0] > best:
                        best = bottom[x0]
                        offset = width
                    if bottom[x0 + 1] > best:
                        best = bottom[x0 + 1]
                        offset = width + 1
                    dst[oh, ow] = best if (best > 0 or not relu) else 0.0
                    arg[oh, ow] = y0 * width + x0 + offset


@nb.njit(cache=True, nogil=True)
def max_pool_backward(dout, argmax, pooled, relu, dx):
    """Route each output gradient to its window's winner; overlapping windows accumulate.

    dout, argmax, pooled (the forward output; read only with ``relu``): (N, C, OH, OW);
    dx (written whole): (N, C, H, W).
    """
    n_count, c_count, _, width = dx.shape
    oh_count, ow_count = dout.shape[2], dout.shape[3]
    dx[:] = 0.0
    for n in range(n_count):
        for c in range(c_count):
            for oh in range(oh_count):
                for ow in range(ow_count):
                    if relu and not pooled[n, c, oh, ow] > 0:
                        continue
                    index = argmax[n, c, oh, ow]
                    dx[n, c, index // width, index % width] += dout[n, c, oh, ow]


@nb.njit(cache=True, nogil=True)
def max_pool_backward_tiled(dout, argmax, pooled, relu, dx):
    """``max_pool_backward`` for windows that tile the image (stride == window, no padding):
    every input cell is in at most one window, so nothing accumulates."""
    n_count, c_count, height, width = dx.shape
    oh_count, ow_count = dout.shape[2], dout.shape[3]
    for n in range(n_count):
        for c in range(c_count):
            dst = dx[n, c].reshape(height * width)
            grad = dout[n, c]
            arg = argmax[n, c]
            keep = pooled[n, c]
            dst[:] = 0.0
            for oh in range(oh_count):
                for ow in range(ow_count):
                    if relu and not keep[oh, ow] > 0:
                        continue
                    dst[arg[oh, ow]] = grad[oh, ow]


@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def max_pool_backward_cm(dout, argmax, pooled, relu, out, bias_grad):
    """``max_pool_backward`` and the convolution's first backward pass (``nchw_to_cm``) in one,
    for a max pool that follows a convolution: each pooled gradient is routed to its window's
    winner straight in the convolution's layout, so the (N, O, H, W) gradient between the two is
    never written. ``out[o, n*P + p]`` (written whole) = the sum of ``dout`` over the windows that
    ``p`` won; with ``relu`` (the convolution fused a ReLU) only over windows whose pooled value is
    > 0, which is the ReLU's derivative at the winner (the pool's value is the winner's). Gating on
    the pooled values instead of the convolution's output reads 1/KH*KW as much.
    ``bias_grad[o]`` (written, float64) = the sum of out's row o.

    dout, argmax, pooled: (N, O, PH, PW): the pool's gradient, winners (flat indices into a plane
    of P) and output (read only with ``relu``); out: (O, N*P); bias_grad: (O,).
    ``reassoc``: the float64 sums may be reordered.
    """
    n_count, o_count = dout.shape[0], dout.shape[1]
    count = dout.shape[2] * dout.shape[3]
    plane = out.shape[1] // max(n_count, 1)
    bias_grad[:] = 0.0
    for n in range(n_count):
        for o in range(o_count):
            d = out[o, n * plane:(n + 1) * plane]
            d[:] = 0.0
            grad = dout[n, o].reshape(count)
            arg = argmax[n, o].reshape(count)
            gate = pooled[n, o].reshape(count)
            total = 0.0
            for q in range(count):
                if relu and not gate[q] > 0:
                    continue
                d[arg[q]] += grad[q]
                total += grad[q]
            bias_grad[o] += total


# --------------------------------------------------------------------------- activations


@nb.njit(cache=True, nogil=True)
def relu_backward(dout, y, dx):
    """``dx = dout where y > 0 else 0``, over flat arrays of the same size."""
    for index in range(dx.shape[0]):
        dx[index] = dout[index] if y[index] > 0 else 0.0


# --------------------------------------------------------------------------- average pooling
# (serial, on batch slices, like the rest)


@nb.njit(cache=True, nogil=True)
def sum_pool_forward(x, kh, kw, sy, sx, pt, pl, out):
    """Sum over each window, padding counting as zero. x: (N, C, H, W); out (written): (N, C, OH, OW)."""
    n_count, c_count, height, width = x.shape
    oh_count, ow_count = out.shape[2], out.shape[3]
    for plane in range(n_count * c_count):
        n = plane // c_count
        c = plane % c_count
        for oh in range(oh_count):
            for ow in range(ow_count):
                total = 0.0
                for i in range(kh):
                    y = oh * sy - pt + i
                    if y < 0 or y >= height:
                        continue
                    for j in range(kw):
                        xx = ow * sx - pl + j
                        if 0 <= xx < width:
                            total += x[n, c, y, xx]
                out[n, c, oh, ow] = total


@nb.njit(cache=True, nogil=True)
def sum_pool_backward(dout, kh, kw, sy, sx, pt, pl, dx):
    """Spread each output gradient over its window (the adjoint of ``sum_pool_forward``).

    dout: (N, C, OH, OW); dx (zeroed by the caller, accumulated): (N, C, H, W).
    """
    n_count, c_count, height, width = dx.shape
    oh_count, ow_count = dout.shape[2], dout.shape[3]
    for plane in range(n_count * c_count):
        n = plane // c_count
        c = plane % c_count
        for oh in range(oh_count):
            for ow in range(ow_count):
                grad = dout[n, c, oh, ow]
                for i in range(kh):
                    y = oh * sy - pt + i
                    if y < 0 or y >= height:
                        continue
                    for j in range(kw):
                        xx = ow * sx - pl + j
                        if 0 <= xx < width:
                            dx[n, c, y, xx] += grad


# --------------------------------------------------------------------------- depthwise convolution
# groups == in_channels == out_channels: each output map is one input map correlated with one
# KH x KW kernel. As grouped im2col + GEMM that is C GEMMs of 1 x KH*KW by KH*KW x N*OH*OW (too
# thin for a BLAS); directly, it is KH*KW multiply-adds per output, in registers.


@nb.njit(cache=True, nogil=True)
def depthwise_forward(x, w, sy, sx, dy, dx, pt, pl, bias, relu, out):
    """``out[n, c, oh, ow] = f(bias[c, p or 0] + sum_ij w[c, i, j] * x[n, c, oh*SY - PT + i*DY,
    ow*SX - PL + j*DX])`` (padding reads 0; f = ReLU if ``relu``).

    x: (N, C, H, W); w: (C, KH, KW); bias: (C, 1) or (C, OH*OW); out (written): (N, C, OH, OW).
    """
    n_count, c_count, height, width = x.shape
    kh, kw = w.shape[1], w.shape[2]
    oh_count, ow_count = out.shape[2], out.shape[3]
    untied = bias.shape[1] > 1
    for n in range(n_count):
        for c in range(c_count):
            dst = out[n, c]
            for oh in range(oh_count):
                for ow in range(ow_count):
                    dst[oh, ow] = bias[c, oh * ow_count + ow] if untied else bias[c, 0]
            src = x[n, c]
            for i in range(kh):
                y0 = i * dy - pt
                oh_lo, oh_hi = _valid_range(y0, sy, height, oh_count)
                for j in range(kw):
                    off = j * dx - pl
                    lo, hi = _valid_range(off, sx, width, ow_count)
                    weight = w[c, i, j]
                    for oh in range(oh_lo, oh_hi):
                        row = src[oh * sy + y0]
                        target = dst[oh]
                        if sx == 1:
                            for ow in range(lo, hi):
                                target[_u(ow)] += weight * row[_u(ow + off)]
                        else:
                            for ow in range(lo, hi):
                                target[_u(ow)] += weight * row[_u(ow * sx + off)]
            if relu:
                for oh in range(oh_count):
                    for ow in range(ow_count):
                        if not dst[oh, ow] > 0:
                            dst[oh, ow] = 0.0


@nb.njit(cache=True, nogil=True)
def depthwise_backward(dout, y, relu, x, w, sy, sx, dy, dx_step, pt, pl, input_grad, dx, dw, db):
    """Gradients of ``depthwise_forward`` on a batch slice: ``dx`` (written whole when
    ``input_grad``), and this slice's ``dw`` (C, KH, KW) and ``db`` (C,) (written, float64).

    dout, y (the forward output; read only with ``relu``, whose derivative is ``y > 0``):
    (N, C, OH, OW); x, dx: (N, C, H, W); w: (C, KH, KW).
    """
    n_count, c_count, height, width = x.shape
    kh, kw = w.shape[1], w.shape[2]
    oh_count, ow_count = dout.shape[2], dout.shape[3]
    dw[:] = 0.0
    db[:] = 0.0
    g = np.empty((oh_count, ow_count), dtype=dout.dtype)
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
            src = x[n, c]
            if input_grad:
                dst = dx[n, c]
                dst[:] = 0.0
            for i in range(kh):
                y0 = i * dy - pt
                oh_lo, oh_hi = _valid_range(y0, sy, height, oh_count)
                for j in range(kw):
                    off = j * dx_step - pl
                    lo, hi = _valid_range(off, sx, width, ow_count)
                    weight = w[c, i, j]
                    acc = 0.0
                    for oh in range(oh_lo, oh_hi):
                        row = src[oh * sy + y0]
                        grad = g[oh]
                        for ow in range(lo, hi):
                            acc += grad[_u(ow)] * row[_u(ow * sx + off)]
                        if input_grad:
                            target = dx[n, c, oh * sy + y0]
                            for ow in range(lo, hi):
                                target[_u(ow * sx + off)] += weight * grad[_u(ow)]
                    dw[c, i, j] += acc


# --------------------------------------------------------------------------- Winograd F(4x4, 3x3), F(2x2, 5x5)
# The transforms of ``winograd.py`` (which has the mathematics and the matrices) and their adjoints,
# for the two algorithms with a 6x6 input window (ALPHA = 6, the same B^T): F(4x4, 3x3) (tile m = 4)
# and F(2x2, 5x5) (m = 2). A tile (ty, tx) is the 6x6 input window at row m*ty - PT, column
# m*tx - PL, giving the m x m outputs at (m*ty, m*tx); tiles are numbered t = (n*TY + ty)*TX + tx.
# Transformed arrays are (36, C, T): element 6*i + j of every tile is one (C, T) matrix, so that the
# 36 products are plain GEMMs. Every 1-D step runs over all of an image's tiles at once, in flat
# indices, so that its loop is long enough to vectorise (loops over one row of a 32-wide image's 8
# tiles ran 5x slower). A loop writes at most 6 planes at once: the planes are often a power of two
# apart, and writing 16 at once thrashed one cache set (5x slower). ``m`` is 4 or 2; each loop that
# depends on it is written out for both, so that each version's trip counts are constants.


@nb.njit(cache=True, nogil=True, inline="always")
def _bt6(d0, d1, d2, d3, d4, d5):
    """B^T @ (d0, ..., d5), B^T's rows (4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
    (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)."""
    p, q = d4 - 4 * d2, d3 - 4 * d1
    s, t = d4 - d2, 2 * (d3 - d1)
    return 4 * d0 - 5 * d2 + d4, p + q, p - q, s + t, s - t, 4 * d1 - 5 * d3 + d5


@nb.njit(cache=True, nogil=True, inline="always")
def _bt6_adjoint(e0, e1, e2, e3, e4, e5):
    """B @ (e0, ..., e5): the adjoint of ``_bt6``."""
    p, q = e1 + e2, e1 - e2
    s, t = e3 + e4, e3 - e4
    return (4 * e0, 4 * (e5 - q) - 2 * t, -5 * e0 - 4 * p - s, q + 2 * t - 5 * e5,
            e0 + p + s, e5)


@nb.njit(cache=True, nogil=True, inline="always")
def _at4(m0, m1, m2, m3, m4, m5):
    """A^T @ (m0, ..., m5) of F(4x4, 3x3), A^T's rows (1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0),
    (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)."""
    p, q = m1 + m2, m1 - m2
    s, t = m3 + m4, m3 - m4
    return m0 + p + s, q + 2 * t, p + 4 * s, q + 8 * t + m5


@nb.njit(cache=True, nogil=True, inline="always")
def _at4_adjoint(g0, g1, g2, g3):
    """A @ (g0, g1, g2, g3): the adjoint of ``_at4``."""
    p, q = g0 + g2, g1 + g3
    s, t = g0 + 4 * g2, 2 * g1 + 8 * g3
    return g0, p + q, p - q, s + t, s - t, g3


@nb.njit(cache=True, nogil=True, inline="always")
def _at2(m0, m1, m2, m3, m4, m5):
    """A^T @ (m0, ..., m5) of F(2x2, 5x5), A^T's rows (1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 1)."""
    return m0 + m1 + m2 + m3 + m4, m1 - m2 + 2 * (m3 - m4) + m5


@nb.njit(cache=True, nogil=True, inline="always")
def _at2_adjoint(g0, g1):
    """A @ (g0, g1): the adjoint of ``_at2``."""
    return g0, g0 + g1, g0 - g1, g0 + 2 * g1, g0 - 2 * g1, g1


_SIXTH, _TWELFTH, _TWENTYFOURTH, _THIRD = 1 / 6, 1 / 12, 1 / 24, 1 / 3  # G's entries (a division is ~10x slower)


@nb.njit(cache=True, nogil=True, inline="always")
def _g3(a0, a1, a2):
    """G @ (a0, a1, a2) of F(4x4, 3x3), G's rows (1/4, 0, 0), (-1/6, -1/6, -1/6), (-1/6, 1/6, -1/6),
    (1/24, 1/12, 1/6), (1/24, -1/12, 1/6), (0, 0, 1)."""
    p, q = (a0 + a2) * _SIXTH, a0 * _TWENTYFOURTH + a2 * _SIXTH
    h, m = a1 * _SIXTH, a1 * _TWELFTH
    return 0.25 * a0, -(p + h), h - p, q + m, q - m, a2


@nb.njit(cache=True, nogil=True, inline="always")
def _g3_adjoint(b0, b1, b2, b3, b4, b5):
    """G^T @ (b0, ..., b5): the adjoint of ``_g3``."""
    p, q = b1 + b2, b3 + b4
    return (0.25 * b0 - p * _SIXTH + q * _TWENTYFOURTH, (b2 - b1) * _SIXTH + (b3 - b4) * _TWELFTH,
            (q - p) * _SIXTH + b5)


@nb.njit(cache=True, nogil=True, inline="always")
def _g5(a0, a1, a2, a3, a4):
    """G @ (a0, ..., a4) of F(2x2, 5x5), G's rows (1/4, 0, 0, 0, 0), -1/6 (1, 1, 1, 1, 1),
    -1/6 (1, -1, 1, -1, 1), 1/24 (1, 2, 4, 8, 16), 1/24 (1, -2, 4, -8, 16), (0, 0, 0, 0, 1)."""
    e, o = (a0 + a2 + a4) * _SIXTH, (a1 + a3) * _SIXTH
    p = a0 * _TWENTYFOURTH + a2 * _SIXTH + a4 * (2 * _THIRD)
    q = a1 * _TWELFTH + a3 * _THIRD
    return 0.25 * a0, -(e + o), o - e, p + q, p - q, a4


@nb.njit(cache=True, nogil=True, inline="always")
def _g5_adjoint(b0, b1, b2, b3, b4, b5):
    """G^T @ (b0, ..., b5): the adjoint of ``_g5``."""
    p, q = b1 + b2, b3 + b4
    d, h = (b2 - b1) * _SIXTH, b3 - b4
    return (0.25 * b0 - p * _SIXTH + q * _TWENTYFOURTH, d + h * _TWELFTH, (q - p) * _SIXTH,
            d + h * _THIRD, q * (2 * _THIRD) - p * _SIXTH + b5)


@nb.njit(cache=True, nogil=True)
def winograd_weight(w, u):
    """``u[6a + b, k, c] = (G w[k, c] G^T)[a, b]``, computed in float64, G that of the kernel's size
    r (3 or 5). w: (K, C, r, r); u: (36, K, C), both C-contiguous. Vectorised over c (u's contiguous
    axis): kernel k's r*r taps of every c are gathered, then G is applied down the kernels' columns
    and along their rows (per (k, c), with 36 strided writes each, 256 x 256 3x3 kernels took 34 ms;
    this, 2.7 ms)."""
    k_count, c_count, r = w.shape[0], w.shape[1], w.shape[2]
    plane = k_count * c_count
    wf = w.reshape(w.size)
    uf = u.reshape(u.size)
    taps = np.empty(r * r * c_count)  # taps[(r*i + j)*C + c] = w[k, c, i, j]
    t = np.empty(6 * r * c_count)  # t[(r*a + j)*C + c] = (G w[k, c])[a, j]
    for k in range(k_count):
        for q in range(r * r):
            for c in range(c_count):
                taps[_u(q * c_count + c)] = wf[_u((k * c_count + c) * r * r + q)]
        for j in range(r):  # G down each column of the kernels
            for c in range(c_count):
                s = j * c_count + c
                if r == 3:
                    g0, g1, g2, g3, g4, g5 = _g3(taps[_u(s)], taps[_u(s + 3 * c_count)], taps[_u(s + 6 * c_count)])
                else:
                    g0, g1, g2, g3, g4, g5 = _g5(taps[_u(s)], taps[_u(s + 5 * c_count)], taps[_u(s + 10 * c_count)],
                                                 taps[_u(s + 15 * c_count)], taps[_u(s + 20 * c_count)])
                d = r * c_count
                t[_u(s)], t[_u(s + d)], t[_u(s + 2 * d)] = g0, g1, g2
                t[_u(s + 3 * d)], t[_u(s + 4 * d)], t[_u(s + 5 * d)] = g3, g4, g5
        for a in range(6):  # then G^T along each row
            o = 6 * a * plane + k * c_count
            for c in range(c_count):
                s = r * a * c_count + c
                if r == 3:
                    g0, g1, g2, g3, g4, g5 = _g3(t[_u(s)], t[_u(s + c_count)], t[_u(s + 2 * c_count)])
                else:
                    g0, g1, g2, g3, g4, g5 = _g5(t[_u(s)], t[_u(s + c_count)], t[_u(s + 2 * c_count)],
                                                 t[_u(s + 3 * c_count)], t[_u(s + 4 * c_count)])
                uf[_u(o + c)], uf[_u(o + plane + c)], uf[_u(o + 2 * plane + c)] = g0, g1, g2
                uf[_u(o + 3 * plane + c)], uf[_u(o + 4 * plane + c)], uf[_u(o + 5 * plane + c)] = g3, g4, g5


@nb.njit(cache=True, nogil=True)
def winograd_weight_adjoint(du, dw):
    """The adjoint of ``winograd_weight``: ``dw[k, c] = G^T dU[k, c] G``, dU[a, b] = du[6a + b, k, c],
    computed in float64, vectorised over c as it is. du: (36, K, C); dw (written): (K, C, r, r)."""
    k_count, c_count, r = dw.shape[0], dw.shape[1], dw.shape[2]
    plane = k_count * c_count
    uf = du.reshape(du.size)
    wf = dw.reshape(dw.size)
    t = np.empty(6 * r * c_count)  # t[(r*a + j)*C + c] = (dU[k, c] G)[a, j]
    taps = np.empty(r * r * c_count)  # taps[(r*i + j)*C + c] = dw[k, c, i, j]
    for k in range(k_count):
        for a in range(6):  # G along each row
            o = 6 * a * plane + k * c_count
            for c in range(c_count):
                b0, b1, b2 = nb.float64(uf[_u(o + c)]), uf[_u(o + plane + c)], uf[_u(o + 2 * plane + c)]
                b3, b4, b5 = uf[_u(o + 3 * plane + c)], uf[_u(o + 4 * plane + c)], uf[_u(o + 5 * plane + c)]
                s = r * a * c_count + c
                if r == 3:
                    t[_u(s)], t[_u(s + c_count)], t[_u(s + 2 * c_count)] = _g3_adjoint(b0, b1, b2, b3, b4, b5)
                else:
                    t[_u(s)], t[_u(s + c_count)], t[_u(s + 2 * c_count)], t[_u(s + 3 * c_count)], \
                        t[_u(s + 4 * c_count)] = _g5_adjoint(b0, b1, b2, b3, b4, b5)
        d = r * c_count
        for j in range(r):  # then G^T down each column
            for c in range(c_count):
                s = j * c_count + c
                b0, b1, b2 = t[_u(s)], t[_u(s + d)], t[_u(s + 2 * d)]
                b3, b4, b5 = t[_u(s + 3 * d)], t[_u(s + 4 * d)], t[_u(s + 5 * d)]
                if r == 3:
                    taps[_u(s)], taps[_u(s + d)], taps[_u(s + 2 * d)] = _g3_adjoint(b0, b1, b2, b3, b4, b5)
                else:
                    taps[_u(s)], taps[_u(s + d)], taps[_u(s + 2 * d)], taps[_u(s + 3 * d)], taps[_u(s + 4 * d)] = \
                        _g5_adjoint(b0, b1, b2, b3, b4, b5)
        for q in range(r * r):
            for c in range(c_count):
                wf[_u((k * c_count + c) * r * r + q)] = taps[_u(q * c_count + c)]


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_input(x, pt, pl, m, ty_count, tx_count, v):
    """``v[6i + j, c, t] = (B^T d B)[i, j]``, d the 6x6 window of tile t in x[n, c] (padding reads 0),
    tiles ``m`` (4 or 2) apart.

    x: (N, C, H, W); v (written): (36, C, N*TY*TX); both C-contiguous. Channel by channel: each
    window row of every image is copied through a zero-padded row buffer into ``z`` (the m cells a
    tile starts) and ``e`` (the 6 - m it shares with the next tiles); then B runs along the windows'
    rows, and B^T down their columns into v's planes, each over all the slice's tiles at once.
    """
    n_count, c_count, height, width = x.shape
    tiles = ty_count * tx_count
    count = v.shape[2]  # n_count * tiles
    plane = v.shape[1] * count  # between the 36 planes of v
    xf = x.reshape(x.size)
    vf = v.reshape(v.size)
    wp = m * tx_count + 6 - m
    buf = np.zeros(wp, x.dtype)  # one window row; its columns outside the image stay 0
    z = np.empty(6 * m * count, x.dtype)  # z[i*m*count + m*t + l]: tile t's window cell (i, l), l < m
    e = np.empty(6 * (6 - m) * count, x.dtype)  # e[i*(6 - m)*count + (6 - m)*t + l]: its cell (i, m + l)
    rows = np.empty(36 * count, x.dtype)  # rows[(6i + j)*count + t]: B along window row i of tile t
    q_lo, q_hi = min(max(pl, 0), wp), min(max(width + pl, 0), wp)  # buffer columns inside the image
    for c in range(c_count):
        for n in range(n_count):
            image = (n * c_count + c) * height * width
            for ty in range(ty_count):
                t0 = n * tiles + ty * tx_count
                for i in range(6):
                    yy = m * ty - pt + i
                    if 0 <= yy < height:
                        src = image + yy * width - pl
                        for q in range(q_lo, q_hi):
                            buf[_u(q)] = xf[_u(src + q)]
                    else:
                        for q in range(q_lo, q_hi):
                            buf[_u(q)] = 0.0
                    a = m * (i * count + t0)
                    for q in range(m * tx_count):
                        z[_u(a + q)] = buf[_u(q)]
                    b = (6 - m) * (i * count + t0)
                    for tx in range(tx_count):
                        for q in range(6 - m):
                            e[_u(b + (6 - m) * tx + q)] = buf[_u(m * tx + m + q)]
        for i in range(6):  # B along window row i of every tile
            a, b, dst = m * i * count, (6 - m) * i * count, 6 * i * count
            for t in range(count):
                if m == 4:
                    r0, r1, r2, r3, r4, r5 = _bt6(z[_u(a + 4 * t)], z[_u(a + 4 * t + 1)], z[_u(a + 4 * t + 2)],
                                                  z[_u(a + 4 * t + 3)], e[_u(b + 2 * t)], e[_u(b + 2 * t + 1)])
                else:
                    r0, r1, r2, r3, r4, r5 = _bt6(z[_u(a + 2 * t)], z[_u(a + 2 * t + 1)], e[_u(b + 4 * t)],
                                                  e[_u(b + 4 * t + 1)], e[_u(b + 4 * t + 2)], e[_u(b + 4 * t + 3)])
                rows[_u(dst + t)], rows[_u(dst + count + t)], rows[_u(dst + 2 * count + t)] = r0, r1, r2
                rows[_u(dst + 3 * count + t)], rows[_u(dst + 4 * count + t)], rows[_u(dst + 5 * count + t)] = r3, r4, r5
        for j in range(6):  # then B^T down column j of every tile: planes 6i + j, i = 0..5
            o = j * plane + c * count
            for t in range(count):
                r0, r1, r2, r3, r4, r5 = _bt6(rows[_u(j * count + t)], rows[_u((6 + j) * count + t)],
                                              rows[_u((12 + j) * count + t)], rows[_u((18 + j) * count + t)],
                                              rows[_u((24 + j) * count + t)], rows[_u((30 + j) * count + t)])
                vf[_u(o + t)] = r0
                vf[_u(o + 6 * plane + t)] = r1
                vf[_u(o + 12 * plane + t)] = r2
                vf[_u(o + 18 * plane + t)] = r3
                vf[_u(o + 24 * plane + t)] = r4
                vf[_u(o + 30 * plane + t)] = r5


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_input_adjoint(dv, pt, pl, m, ty_count, tx_count, dx):
    """The adjoint of ``_winograd_input``: ``dx`` (written whole) = the sum over tiles of B dV B^T,
    each on its 6x6 window (windows ``m`` apart overlap; cells in the padding are dropped).

    dv: (36, C, N*TY*TX); dx: (N, C, H, W); both C-contiguous. Channel by channel, over all the
    slice's tiles at once: B down the tiles' columns, then along their rows, each tile's 6 values
    per row split into the m it starts (``z``) and the 6 - m it shares with the next tiles (``e``);
    then each window row of every image is summed from both into the image.
    """
    n_count, c_count, height, width = dx.shape
    tiles = ty_count * tx_count
    count = dv.shape[2]
    plane = dv.shape[1] * count
    vf = dv.reshape(dv.size)
    xf = dx.reshape(dx.size)
    wp = m * tx_count + 6 - m
    cols = np.empty(36 * count, dx.dtype)  # cols[(6k + j)*count + t]: B's row k down column j of tile t
    z = np.empty(6 * m * count, dx.dtype)  # z[k*m*count + m*t + l]: tile t's window cell (k, l), l < m
    e = np.empty(6 * (6 - m) * count, dx.dtype)  # e[k*(6 - m)*count + (6 - m)*t + l]: its cell (k, m + l)
    acc = np.empty(wp, dx.dtype)
    q_lo, q_hi = min(max(pl, 0), wp), min(max(width + pl, 0), wp)
    xf[:] = 0.0
    for c in range(c_count):
        for j in range(6):  # B down each column of every tile (planes 6i + j, i = 0..5)
            o = j * plane + c * count
            for t in range(count):
                d0, d1, d2, d3, d4, d5 = _bt6_adjoint(
                    vf[_u(o + t)], vf[_u(o + 6 * plane + t)], vf[_u(o + 12 * plane + t)],
                    vf[_u(o + 18 * plane + t)], vf[_u(o + 24 * plane + t)], vf[_u(o + 30 * plane + t)])
                cols[_u(j * count + t)] = d0
                cols[_u((6 + j) * count + t)] = d1
                cols[_u((12 + j) * count + t)] = d2
                cols[_u((18 + j) * count + t)] = d3
                cols[_u((24 + j) * count + t)] = d4
                cols[_u((30 + j) * count + t)] = d5
        for k in range(6):  # then B along row k of every tile
            src, a, b = 6 * k * count, m * k * count, (6 - m) * k * count
            for t in range(count):
                s = src + t
                d0, d1, d2, d3, d4, d5 = _bt6_adjoint(
                    cols[_u(s)], cols[_u(s + count)], cols[_u(s + 2 * count)],
                    cols[_u(s + 3 * count)], cols[_u(s + 4 * count)], cols[_u(s + 5 * count)])
                if m == 4:
                    z[_u(a + 4 * t)], z[_u(a + 4 * t + 1)], z[_u(a + 4 * t + 2)], z[_u(a + 4 * t + 3)] = d0, d1, d2, d3
                    e[_u(b + 2 * t)], e[_u(b + 2 * t + 1)] = d4, d5
                else:
                    z[_u(a + 2 * t)], z[_u(a + 2 * t + 1)] = d0, d1
                    e[_u(b + 4 * t)], e[_u(b + 4 * t + 1)], e[_u(b + 4 * t + 2)], e[_u(b + 4 * t + 3)] = d2, d3, d4, d5
        for n in range(n_count):
            image = (n * c_count + c) * height * width
            for ty in range(ty_count):
                t0 = n * tiles + ty * tx_count
                for k in range(6):  # window row k of this row of tiles, into the image
                    yy = m * ty - pt + k
                    if 0 <= yy < height:
                        a = m * (k * count + t0)
                        for q in range(m * tx_count):
                            acc[_u(q)] = z[_u(a + q)]
                        for q in range(m * tx_count, wp):
                            acc[_u(q)] = 0.0
                        b = (6 - m) * (k * count + t0)
                        for tx in range(tx_count):  # the cells each window shares with the next
                            for q in range(6 - m):
                                acc[_u(m * tx + m + q)] += e[_u(b + (6 - m) * tx + q)]
                        dst = image + yy * width - pl
                        for q in range(q_lo, q_hi):
                            xf[_u(dst + q)] += acc[_u(q)]


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_output(mm, m, ty_count, tx_count, bias, relu, out):
    """``out[n, k]``'s m x m block of tile t = f(A^T M A + bias), M[i, j] = mm[6i + j, k, t]
    (f = ReLU if ``relu``; m = 4 or 2, A^T that of F(m x m, (7 - m) x (7 - m))); the last row and
    column of tiles are cut to the output's size.

    mm: (36, K, N*TY*TX); bias: (K, 1) tied (zeros for none) or (K, OH*OW) untied;
    out (written): (N, K, OH, OW); all C-contiguous. Map by map, over all the slice's tiles at once:
    A^T down the tiles' columns, then A along their rows into ``z``, where output row a of tile t's
    block is at z[a, m*t:m*t + m], so that each output row of each image is a contiguous run of z.
    """
    n_count, k_count, oh_count, ow_count = out.shape
    tiles = ty_count * tx_count
    count = mm.shape[2]
    plane = mm.shape[1] * count
    mf = mm.reshape(mm.size)
    of = out.reshape(out.size)
    untied = bias.shape[1] > 1
    r = np.empty(6 * m * count, mm.dtype)  # r[(6a + j)*count + t]: A^T's row a down column j of tile t
    z = np.empty(m * m * count, mm.dtype)  # z[a*m*count + m*t + b]: tile t's output (a, b)
    for k in range(k_count):
        for j in range(6):  # A^T down each column of every tile (planes 6i + j, i = 0..5)
            o = j * plane + k * count
            for t in range(count):
                if m == 4:
                    y0, y1, y2, y3 = _at4(mf[_u(o + t)], mf[_u(o + 6 * plane + t)],
                                          mf[_u(o + 12 * plane + t)], mf[_u(o + 18 * plane + t)],
                                          mf[_u(o + 24 * plane + t)], mf[_u(o + 30 * plane + t)])
                    r[_u(j * count + t)], r[_u((6 + j) * count + t)] = y0, y1
                    r[_u((12 + j) * count + t)], r[_u((18 + j) * count + t)] = y2, y3
                else:
                    r[_u(j * count + t)], r[_u((6 + j) * count + t)] = _at2(
                        mf[_u(o + t)], mf[_u(o + 6 * plane + t)], mf[_u(o + 12 * plane + t)],
                        mf[_u(o + 18 * plane + t)], mf[_u(o + 24 * plane + t)], mf[_u(o + 30 * plane + t)])
        for a in range(m):  # then A along each row of every tile
            s, d = 6 * a * count, m * a * count
            for t in range(count):
                if m == 4:
                    y0, y1, y2, y3 = _at4(r[_u(s + t)], r[_u(s + count + t)], r[_u(s + 2 * count + t)],
                                          r[_u(s + 3 * count + t)], r[_u(s + 4 * count + t)], r[_u(s + 5 * count + t)])
                    z[_u(d + 4 * t)], z[_u(d + 4 * t + 1)], z[_u(d + 4 * t + 2)], z[_u(d + 4 * t + 3)] = y0, y1, y2, y3
                else:
                    z[_u(d + 2 * t)], z[_u(d + 2 * t + 1)] = _at2(
                        r[_u(s + t)], r[_u(s + count + t)], r[_u(s + 2 * count + t)],
                        r[_u(s + 3 * count + t)], r[_u(s + 4 * count + t)], r[_u(s + 5 * count + t)])
        for n in range(n_count):
            image = (n * k_count + k) * oh_count * ow_count
            for y in range(oh_count):  # output row y = m*ty + a is z[a, m*(n*tiles + ty*TX):], cut to OW
                dst = image + y * ow_count
                src = m * ((y % m) * count + n * tiles + (y // m) * tx_count)
                if untied:
                    for xx in range(ow_count):
                        of[_u(dst + xx)] = z[_u(src + xx)] + bias[k, y * ow_count + xx]
                else:
                    b0 = bias[k, 0]
                    for xx in range(ow_count):
                        of[_u(dst + xx)] = z[_u(src + xx)] + b0
                if relu:
                    for xx in range(ow_count):
                        v = of[_u(dst + xx)]
                        of[_u(dst + xx)] = v if v > 0 else 0.0


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_output_adjoint(dout, y, relu, m, ty_count, tx_count, dm, bias_grad):
    """The adjoint of ``_winograd_output``'s A^T M A: ``dm[6i + j, k, t] = (A dY A^T)[i, j]``, dY
    the m x m block of dout (times ``y > 0`` if ``relu``) of tile t, zero beyond the output's edge;
    ``bias_grad[k]`` (written, float64) = the sum of that dY over the slice.

    dout, y: (N, K, OH, OW) (y unused without relu); dm (written): (36, K, N*TY*TX); all
    C-contiguous. ``_winograd_output``'s steps in reverse, map by map: dY's rows into ``z`` (its
    layout), A along the tiles' rows, then down their columns.
    """
    n_count, k_count, oh_count, ow_count = dout.shape
    tiles = ty_count * tx_count
    count = dm.shape[2]
    plane = dm.shape[1] * count
    df = dout.reshape(dout.size)
    yf = y.reshape(y.size)
    mf = dm.reshape(dm.size)
    z = np.zeros(m * m * count, dout.dtype)  # z[a*m*count + m*t + b]: dY at tile t's (a, b); 0 past the edges
    s = np.empty(6 * m * count, dout.dtype)  # s[(6a + j)*count + t]: A's row j along row a of tile t
    for k in range(k_count):
        total = 0.0
        for n in range(n_count):
            image = (n * k_count + k) * oh_count * ow_count
            for yy in range(oh_count):
                src = image + yy * ow_count
                dst = m * ((yy % m) * count + n * tiles + (yy // m) * tx_count)
                if relu:
                    for xx in range(ow_count):
                        g = df[_u(src + xx)] if yf[_u(src + xx)] > 0 else 0.0
                        z[_u(dst + xx)] = g
                        total += g
                else:
                    for xx in range(ow_count):
                        g = df[_u(src + xx)]
                        z[_u(dst + xx)] = g
                        total += g
        bias_grad[k] = total
        for a in range(m):  # A along each row of every tile
            src, dst = m * a * count, 6 * a * count
            for t in range(count):
                e = src + m * t
                if m == 4:
                    c0, c1, c2, c3, c4, c5 = _at4_adjoint(z[_u(e)], z[_u(e + 1)], z[_u(e + 2)], z[_u(e + 3)])
                else:
                    c0, c1, c2, c3, c4, c5 = _at2_adjoint(z[_u(e)], z[_u(e + 1)])
                d = dst + t
                s[_u(d)], s[_u(d + count)], s[_u(d + 2 * count)] = c0, c1, c2
                s[_u(d + 3 * count)], s[_u(d + 4 * count)], s[_u(d + 5 * count)] = c3, c4, c5
        for j in range(6):  # then A down each column of every tile: planes 6i + j, i = 0..5
            o = j * plane + k * count
            for t in range(count):
                if m == 4:
                    c0, c1, c2, c3, c4, c5 = _at4_adjoint(s[_u(j * count + t)], s[_u((6 + j) * count + t)],
                                                          s[_u((12 + j) * count + t)], s[_u((18 + j) * count + t)])
                else:
                    c0, c1, c2, c3, c4, c5 = _at2_adjoint(s[_u(j * count + t)], s[_u((6 + j) * count + t)])
                mf[_u(o + t)] = c0
                mf[_u(o + 6 * plane + t)] = c1
                mf[_u(o + 12 * plane + t)] = c2
                mf[_u(o + 18 * plane + t)] = c3
                mf[_u(o + 24 * plane + t)] = c4
                mf[_u(o + 30 * plane + t)] = c5


# The kernels proper: each body above with its tile m a constant, so that every loop over m, 6 - m
# or m*m has a constant trip count and every branch on m is folded away (with m an argument, the
# transforms ran 1.4-1.8x slower). "f43": F(4x4, 3x3), m = 4; "f25": F(2x2, 5x5), m = 2.


@nb.njit(cache=True, nogil=True)
def winograd_input_f43(x, pt, pl, ty_count, tx_count, v):
    _winograd_input(x, pt, pl, 4, ty_count, tx_count, v)


@nb.njit(cache=True, nogil=True)
def winograd_input_f25(x, pt, pl, ty_count, tx_count, v):
    _winograd_input(x, pt, pl, 2, ty_count, tx_count, v)


@nb.njit(cache=True, nogil=True)
def winograd_input_adjoint_f43(dv, pt, pl, ty_count, tx_count, dx):
    _winograd_input_adjoint(dv, pt, pl, 4, ty_count, tx_count, dx)


@nb.njit(cache=True, nogil=True)
def winograd_input_adjoint_f25(dv, pt, pl, ty_count, tx_count, dx):
    _winograd_input_adjoint(dv, pt, pl, 2, ty_count, tx_count, dx)


@nb.njit(cache=True, nogil=True)
def winograd_output_f43(mm, ty_count, tx_count, bias, relu, out):
    _winograd_output(mm, 4, ty_count, tx_count, bias, relu, out)


@nb.njit(cache=True, nogil=True)
def winograd_output_f25(mm, ty_count, tx_count, bias, relu, out):
    _winograd_output(mm, 2, ty_count, tx_count, bias, relu, out)


# ``reassoc``: the float64 bias-gradient sum may be reordered, so that it vectorises.
@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def winograd_output_adjoint_f43(dout, y, relu, ty_count, tx_count, dm, bias_grad):
    _winograd_output_adjoint(dout, y, relu, 4, ty_count, tx_count, dm, bias_grad)


@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def winograd_output_adjoint_f25(dout, y, relu, ty_count, tx_count, dm, bias_grad):
    _winograd_output_adjoint(dout, y, relu, 2, ty_count, tx_count, dm, bias_grad)



# --------------------------------------------------------------------------- batch normalisation
# Serial (nogil) kernels: the engine's own pool of threads calls them, so nothing here asks for
# Numba's parallel pool. Sums are accumulated in float64 whatever the array dtype (a float32 sum
# over N*H*W values loses digits that PyTorch's Welford keeps). The backward pass never stores
# xhat: it is recomputed from x, mean and invstd, so one (N, C, H, W) temporary is saved.


@nb.njit(cache=True, nogil=True)
def batch_norm_stats(x, mean, var):
    """Per-channel mean and biased variance of x (N, C, H, W), two passes (no cancellation).

    mean, var (written): (C,) float64.
    """
    n_count, c_count, height, width = x.shape
    count = n_count * height * width
    for c in range(c_count):
        total = 0.0
        for n in range(n_count):
            for y in range(height):
                for xx in range(width):
                    total += x[n, c, y, xx]
        m = total / count
        squares = 0.0
        for n in range(n_count):
            for y in range(height):
                for xx in range(width):
                    d = x[n, c, y, xx] - m
                    squares += d * d
        mean[c] = m
        var[c] = squares / count


@nb.njit(cache=True, nogil=True)
def batch_norm_apply(x, scale, shift, out):
    """``out[n, c] = x[n, c] * scale[c] + shift[c]``: the normalisation and the affine map in one pass."""
    n_count, c_count, height, width = x.shape
    for n in range(n_count):
        for c in range(c_count):
            a = scale[c]
            b = shift[c]
            for y in range(height):
                for xx in range(width):
                    out[n, c, y, xx] = x[n, c, y, xx] * a + b


@nb.njit(cache=True, nogil=True)
def batch_norm_backward(dout, x, mean, invstd, gamma, batch_stats, dx, dgamma, dbeta):
    """Fused batch-norm backward over (N, C, H, W), with xhat = (x - mean) * invstd recomputed.

    dbeta[c] = sum dout, dgamma[c] = sum dout * xhat (written, float64 (C,)). With batch
    statistics (training) dx = gamma * invstd / M * (M * dout - dbeta - xhat * dgamma), M = N*H*W;
    with fixed statistics (eval) dx = gamma * invstd * dout. dx (written) has dout's shape.
    """
    n_count, c_count, height, width = x.shape
    count = n_count * height * width
    for c in range(c_count):
        m = mean[c]
        s = invstd[c]
        sum_dy = 0.0
        sum_dy_xhat = 0.0
        for n in range(n_count):
            for y in range(height):
                for xx in range(width):
                    g = dout[n, c, y, xx]
                    sum_dy += g
                    sum_dy_xhat += g * ((x[n, c, y, xx] - m) * s)
        dbeta[c] = sum_dy
        dgamma[c] = sum_dy_xhat
        k = gamma[c] * s
        if batch_stats:
            a = sum_dy / count
            b = sum_dy_xhat / count
            for n in range(n_count):
                for y in range(height):
                    for xx in range(width):
                        xhat = (x[n, c, y, xx] - m) * s
                        dx[n, c, y, xx] = k * (dout[n, c, y, xx] - a - xhat * b)
        else:
            for n in range(n_count):
                for y in range(height):
                    for xx in range(width):
                        dx[n, c, y, xx] = k * dout[n, c, y, xx]
