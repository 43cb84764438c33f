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
    n_count, c_count, height, width = dx.shape
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
