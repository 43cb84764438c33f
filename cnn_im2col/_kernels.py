"""Every Numba-compiled loop of the engine, and nothing else.

The kernels trust their callers (``im2col.py``, ``functional.py``): arrays are C-contiguous,
float32 or float64, shapes and sizes consistent. No validation happens here.

Geometry shared by all kernels: an input plane of ``H x W`` is read through windows of
``KH x KW`` taken every ``(SY, SX)`` pixels, starting ``PT`` rows above and ``PL`` columns left of
the image (the top/left padding). ``OH x OW`` windows are taken; a window cell outside the image is
padding. Bottom/right padding needs no parameter: it only shows up in ``OH``/``OW``.

Parallel loops split work so that no two threads write the same element: im2col rows are
disjoint, and every scatter (col2im, pooling backward) is split by (sample, channel) plane.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, parallel=True, nogil=True)
def im2col(x, kh, kw, sy, sx, pt, pl, oh_count, ow_count, pad_value, cols):
    """Gather receptive fields into rows.

    x: (N, C, H, W); cols (written): (N*OH*OW, C*KH*KW), row ``(n*OH + oh)*OW + ow``,
    column ``(c*KH + i)*KW + j``, value ``x[n, c, oh*SY - PT + i, ow*SX - PL + j]`` or ``pad_value``.
    """
    n_count, c_count, height, width = x.shape
    for task in nb.prange(n_count * oh_count):
        n = task // oh_count
        oh = task % oh_count
        for ow in range(ow_count):
            row = task * ow_count + ow
            col = 0
            for c in range(c_count):
                for i in range(kh):
                    y = oh * sy - pt + i
                    inside_y = 0 <= y < height
                    for j in range(kw):
                        xx = ow * sx - pl + j
                        if inside_y and 0 <= xx < width:
                            cols[row, col] = x[n, c, y, xx]
                        else:
                            cols[row, col] = pad_value
                        col += 1


@nb.njit(cache=True, parallel=True, nogil=True)
def col2im(cols, kh, kw, sy, sx, pt, pl, oh_count, ow_count, dx):
    """Scatter-add rows back into the image: the adjoint of ``im2col`` (padding cells dropped).

    cols: (N*OH*OW, C*KH*KW); dx (zeroed by the caller, accumulated): (N, C, H, W).
    Overlapping windows add up. One thread owns one (n, c) plane, so writes never collide.
    """
    n_count, c_count, height, width = dx.shape
    for plane in nb.prange(n_count * c_count):
        n = plane // c_count
        c = plane % c_count
        for oh in range(oh_count):
            for i in range(kh):
                y = oh * sy - pt + i
                if y < 0 or y >= height:
                    continue
                for ow in range(ow_count):
                    row = (n * oh_count + oh) * ow_count + ow
                    col = (c * kh + i) * kw
                    for j in range(kw):
                        xx = ow * sx - pl + j
                        if 0 <= xx < width:
                            dx[n, c, y, xx] += cols[row, col + j]


@nb.njit(cache=True, parallel=True, nogil=True)
def max_pool_forward(x, kh, kw, sy, sx, pt, pl, out, argmax):
    """Max over each window; ``argmax`` gets the flat ``y*W + x`` index of the winner in its plane.

    x: (N, C, H, W); out, argmax (written): (N, C, OH, OW). Padding cells never win (they act as
    -inf). Ties go to the first maximum in window scan order (row-major), via strict ``>``.
    """
    n_count, c_count, height, width = x.shape
    oh_count, ow_count = out.shape[2], out.shape[3]
    for plane in nb.prange(n_count * c_count):
        n = plane // c_count
        c = plane % c_count
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
                out[n, c, oh, ow] = best
                argmax[n, c, oh, ow] = best_index


@nb.njit(cache=True, parallel=True, nogil=True)
def max_pool_backward(dout, argmax, dx):
    """Route each output gradient to its window's winner; overlapping windows accumulate.

    dout, argmax: (N, C, OH, OW); dx (zeroed by the caller, accumulated): (N, C, H, W).
    """
    n_count, c_count, _, width = dx.shape
    oh_count, ow_count = dout.shape[2], dout.shape[3]
    for plane in nb.prange(n_count * c_count):
        n = plane // c_count
        c = plane % c_count
        for oh in range(oh_count):
            for ow in range(ow_count):
                index = argmax[n, c, oh, ow]
                dx[n, c, index // width, index % width] += dout[n, c, oh, ow]


@nb.njit(cache=True, parallel=True, nogil=True)
def sum_pool_forward(x, kh, kw, sy, sx, pt, pl, out):
    """Sum over each window, padding counting as zero. x: (N, C, H, W); out (written): (N, C, OH, OW)."""
    n_count, c_count, height, width = x.shape
    oh_count, ow_count = out.shape[2], out.shape[3]
    for plane in nb.prange(n_count * c_count):
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


@nb.njit(cache=True, parallel=True, nogil=True)
def sum_pool_backward(dout, kh, kw, sy, sx, pt, pl, dx):
    """Spread each output gradient over its window (the adjoint of ``sum_pool_forward``).

    dout: (N, C, OH, OW); dx (zeroed by the caller, accumulated): (N, C, H, W).
    """
    n_count, c_count, height, width = dx.shape
    oh_count, ow_count = dout.shape[2], dout.shape[3]
    for plane in nb.prange(n_count * c_count):
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


# --------------------------------------------------------------------------- channel-major im2col
# The convolution's own layout: ``cols_t`` is (C*KH*KW, N*OH*OW), the transpose of ``im2col``'s.
# Row ``k = (c*KH + i)*KW + j`` holds, for every output position ``(n, oh, ow)`` in order, the
# input pixel that kernel cell (c, i, j) sees there. With stride 1 each (k, n, oh) run is a slice of
# one input row, so the gather and the scatter-add are contiguous copies, and ``W @ cols_t`` gives
# the output as (O, N*OH*OW): (O, N, OH, OW) with contiguous planes. im2col_t works one (n, c)
# input plane per task, which stays in cache while its KH*KW runs are written (measured 2-4x faster
# than one task per (k, n) run on the LeNet shapes; grouping samples as col2im_t does gained
# nothing there); col2im_t groups samples per task (see its docstring). Both take an already
# padded image: bounds checks or a multiply by a runtime stride in the innermost loop stop it from
# vectorising (measured 3-5x slower), so stride 1 has its own loop and the caller pads (one cheap
# extra pass).


@nb.njit(cache=True, parallel=True, nogil=True)
def im2col_t(x, kh, kw, sy, sx, oh_count, ow_count, cols):
    """Gather receptive fields into columns: ``cols[k, (n*OH + oh)*OW + ow]`` (written) is
    ``x[n, c, oh*SY + i, ow*SX + j]`` for ``k = (c*KH + i)*KW + j``.

    x: (N, C, H, W), already padded (the caller pads: no bounds checks here); cols:
    (C*KH*KW, N*OH*OW). One task reads one (n, c) plane, which stays in cache while its KH*KW runs
    of OH*OW values are written.
    """
    n_count, c_count = x.shape[0], x.shape[1]
    plane = oh_count * ow_count
    for task in nb.prange(n_count * c_count):
        n = task // c_count
        c = task % c_count
        src = x[n, c]
        for i in range(kh):
            for j in range(kw):
                dst = cols[(c * kh + i) * kw + j, n * plane:(n + 1) * plane]
                if sx == 1:  # contiguous runs: a separate loop, so that it vectorises
                    for oh in range(oh_count):
                        y = oh * sy + i
                        base = oh * ow_count
                        for ow in range(ow_count):
                            dst[base + ow] = src[y, ow + j]
                else:
                    for oh in range(oh_count):
                        y = oh * sy + i
                        base = oh * ow_count
                        for ow in range(ow_count):
                            dst[base + ow] = src[y, ow * sx + j]


@nb.njit(cache=True, parallel=True, nogil=True)
def col2im_t(cols, kh, kw, sy, sx, oh_count, ow_count, block, dx):
    """Scatter-add the columns of ``im2col_t`` back into the (padded) image: its adjoint.

    cols: (C*KH*KW, N*OH*OW); dx (written whole, no need to zero it): (N, C, H, W), padded like
    im2col_t's input (the caller crops). One task owns channel ``c`` of ``block`` consecutive
    samples, so writes never collide, and reads each of its KH*KW rows of ``cols`` as one run of
    ``block*OH*OW`` values: one plane per task read 256-byte pieces of 25 rows 16 KiB apart
    (LeNet's conv2), measured 1.5-2x slower.
    """
    n_count, c_count = dx.shape[0], dx.shape[1]
    plane = oh_count * ow_count
    n_blocks = (n_count + block - 1) // block
    for task in nb.prange(c_count * n_blocks):
        c = task // n_blocks
        first = (task % n_blocks) * block
        last = min(n_count, first + block)
        for n in range(first, last):
            dx[n, c] = 0.0
        for i in range(kh):
            for j in range(kw):
                row = cols[(c * kh + i) * kw + j]
                for n in range(first, last):
                    dst = dx[n, c]
                    src = row[n * plane:(n + 1) * plane]
                    if sx == 1:
                        for oh in range(oh_count):
                            y = oh * sy + i
                            base = oh * ow_count
                            for ow in range(ow_count):
                                dst[y, ow + j] += src[base + ow]
                    else:
                        for oh in range(oh_count):
                            y = oh * sy + i
                            base = oh * ow_count
                            for ow in range(ow_count):
                                dst[y, ow * sx + j] += src[base + ow]


@nb.njit(cache=True, parallel=True, nogil=True)
def cnhw_to_nchw(src, bias, out):
    """``out[n, o, p] = src[o, n*P + p] + bias[o]`` (the GEMM's (O, N*P) result into NCHW).

    src: (O, N*P); bias: (O,) (zeros for none); out (written): (N, O, P).
    """
    n_count, o_count, plane = out.shape
    for task in nb.prange(n_count * o_count):
        n = task // o_count
        o = task % o_count
        b = bias[o]
        for p in range(plane):
            out[n, o, p] = src[o, n * plane + p] + b


@nb.njit(cache=True, parallel=True, nogil=True)
def nchw_to_cnhw(src, out, bias_grad):
    """``out[o, n*P + p] = src[n, o, p]``, and ``bias_grad[o]`` (written) = the sum of src over n, p.

    src: (N, O, P); out (written): (O, N*P); bias_grad: (O,), accumulated in float64.
    """
    n_count, o_count, plane = src.shape
    for o in nb.prange(o_count):
        total = 0.0
        for n in range(n_count):
            for p in range(plane):
                v = src[n, o, p]
                out[o, n * plane + p] = v
                total += v
        bias_grad[o] = total


# --------------------------------------------------------------------------- fast paths


@nb.njit(cache=True, parallel=True, nogil=True)
def max_pool_forward_valid(x, kh, kw, sy, sx, out, argmax, with_argmax):
    """``max_pool_forward`` without padding (every window inside the image): no bounds checks.

    ``argmax`` (flat ``y*W + x`` index) is only written when ``with_argmax``. Ties go to the first
    maximum in window scan order (strict ``>``), as in ``max_pool_forward``.
    """
    n_count, c_count, width = x.shape[0], x.shape[1], x.shape[3]
    oh_count, ow_count = out.shape[2], out.shape[3]
    for plane in nb.prange(n_count * c_count):
        n = plane // c_count
        c = plane % c_count
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
                dst[oh, ow] = best
                if with_argmax:
                    arg[oh, ow] = best_index


@nb.njit(cache=True, parallel=True, nogil=True)
def max_pool_forward_2x2(x, sy, sx, out, argmax):
    """``max_pool_forward_valid`` for 2x2 windows, unrolled (about 3x faster than the general loop).

    Ties go to the first maximum in scan order: top-left, top-right, bottom-left, bottom-right.
    """
    n_count, c_count, width = x.shape[0], x.shape[1], x.shape[3]
    oh_count, ow_count = out.shape[2], out.shape[3]
    for plane in nb.prange(n_count * c_count):
        n = plane // c_count
        c = plane % c_count
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
                dst[oh, ow] = best
                arg[oh, ow] = y0 * width + x0 + offset


@nb.njit(cache=True, parallel=True, nogil=True)
def max_pool_backward_tiled(dout, argmax, dx):
    """``max_pool_backward`` for windows that tile the image (stride == window, no padding).

    Every input cell is in at most one window, so dx (N, C, H, W) is written whole (the winner gets
    dout, everything else 0) instead of zeroed and scattered into; no zeroing by the caller.
    """
    n_count, c_count, height, width = dx.shape
    oh_count, ow_count = dout.shape[2], dout.shape[3]
    for plane in nb.prange(n_count * c_count):
        n = plane // c_count
        c = plane % c_count
        dst = dx[n, c].reshape(height * width)
        grad = dout[n, c]
        arg = argmax[n, c]
        dst[:] = 0.0
        for oh in range(oh_count):
            for ow in range(ow_count):
                dst[arg[oh, ow]] = grad[oh, ow]


@nb.njit(cache=True, parallel=True, nogil=True)
def relu_backward(dout, y, dx):
    """``dx = dout where y > 0 else 0``, over flat arrays of the same size."""
    for index in nb.prange(dx.shape[0]):
        dx[index] = dout[index] if y[index] > 0 else 0.0


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
