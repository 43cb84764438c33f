"""Pooling: max, average (Eq. 8.22 with a trainable scale), global and adaptive average and adaptive
max; functional pairs and their Numba kernels.

Each ``*_forward`` validates its arguments and returns ``(out, cache)``; the matching
``*_backward(dout, cache)`` returns the gradients. ``max_pool2d`` / ``avg_pool2d`` /
``global_avg_pool2d`` are the same forwards on checked input and geometry (a layer's plan); the
``*_into`` functions run the Numba kernels on one batch slice, from any thread (a fused
Conv2D -> ReLU -> MaxPool2D pools each slice where the convolution wrote it). At inference, with
no backward to follow, ``max_pool2d_values`` (and ``max_pool2d_values_into`` per slice) give the
max pool's output alone, without the argmax its backward would need. The ``"numpy"`` backend is
the slow twin: im2col of each plane, then NumPy's reductions.

Kernels: serial, on batch slices, releasing the GIL, like the rest of the engine.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numba as nb
import numpy as np

from . import threads as _threads
from .arrays import thread_slices
from .arrays import unsigned as _u
from .im2col import BACKENDS, fold, unfold
from .shapes import WindowGeometry, as_float_array, check_choice, check_dout, pool_geometry

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
    x, out, argmax C-contiguous (the caller's slices of the batch).

    Ties go to the first maximum in scan order: top-left, top-right, bottom-left, bottom-right. Each
    window's maximum and its offset are chosen by selects, not branches, over flat unsigned
    indices (no wraparound test): 64x20x24x24 float32 0.33 -> 0.25 ms, 64x64x32x32 1.95 -> 1.51
    (one thread, Intel Xeon, 2026-12-04; the same outputs and indices).
    """
    maps, height, width = x.shape[0] * x.shape[1], x.shape[2], x.shape[3]
    oh_count, ow_count = out.shape[2], out.shape[3]
    xf, of, af = x.reshape(x.size), out.reshape(out.size), argmax.reshape(argmax.size)
    for m in range(maps):
        for oh in range(oh_count):
            row = oh * sy * width  # the window's top row, within its map
            top = m * height * width + row
            bottom = top + width
            o = (m * oh_count + oh) * ow_count
            for ow in range(ow_count):
                v0, v1 = xf[_u(top + ow * sx)], xf[_u(top + ow * sx + 1)]
                v2, v3 = xf[_u(bottom + ow * sx)], xf[_u(bottom + ow * sx + 1)]
                right = v1 > v0  # a NaN never wins a comparison: the first value stays
                best = v1 if right else v0
                offset = 1 if right else 0
                lower = v2 > best
                best = v2 if lower else best
                offset = width if lower else offset
                lower_right = v3 > best
                best = v3 if lower_right else best
                offset = width + 1 if lower_right else offset
                of[_u(o + ow)] = best if (best > 0 or not relu) else 0.0
                af[_u(o + ow)] = row + ow * sx + offset


@nb.njit(cache=True, nogil=True)
def max_pool_values_2x2(x, sy, sx, relu, out):
    """``max_pool_forward_2x2``'s maxima without their argmax, for inference with no backward to
    follow: the same comparisons in the same order, so the same values (64x64x16x16 float32, one
    thread, Intel Xeon, 2026-12-04: 0.22 -> 0.14 ms)."""
    maps, height, width = x.shape[0] * x.shape[1], x.shape[2], x.shape[3]
    oh_count, ow_count = out.shape[2], out.shape[3]
    xf, of = x.reshape(x.size), out.reshape(out.size)
    for m in range(maps):
        for oh in range(oh_count):
            top = m * height * width + oh * sy * width
            bottom = top + width
            o = (m * oh_count + oh) * ow_count
            for ow in range(ow_count):
                v0, v1 = xf[_u(top + ow * sx)], xf[_u(top + ow * sx + 1)]
                v2, v3 = xf[_u(bottom + ow * sx)], xf[_u(bottom + ow * sx + 1)]
                best = v1 if v1 > v0 else v0  # a NaN never wins a comparison, as there
                best = v2 if v2 > best else best
                best = v3 if v3 > best else best
                of[_u(o + ow)] = best if (best > 0 or not relu) else 0.0


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
    plane = dx.shape[2] * dx.shape[3]
    count = dout.shape[2] * dout.shape[3]
    # flat arrays, a map at a time as a 1-D slice: ``dx[n, c].reshape(...)`` per map cost more
    # than routing a small map's gradients (as in normalization.py)
    flat_dx, flat_dout = dx.reshape(dx.size), dout.reshape(dout.size)
    flat_arg, flat_pooled = argmax.reshape(argmax.size), pooled.reshape(pooled.size)
    for m in range(dx.shape[0] * dx.shape[1]):
        dst = flat_dx[m * plane : (m + 1) * plane]
        grad = flat_dout[m * count : (m + 1) * count]
        arg = flat_arg[m * count : (m + 1) * count]
        keep = flat_pooled[m * count : (m + 1) * count]
        dst[:] = 0.0
        for q in range(count):
            if relu and not keep[q] > 0:
                continue
            dst[arg[q]] = grad[q]


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
    flat_dout, flat_arg = dout.reshape(dout.size), argmax.reshape(argmax.size)
    flat_pooled = pooled.reshape(pooled.size)
    bias_grad[:] = 0.0
    for n in range(n_count):
        for o in range(o_count):
            d = out[o, n * plane : (n + 1) * plane]
            d[:] = 0.0
            start = (n * o_count + o) * count
            grad = flat_dout[start : start + count]
            arg = flat_arg[start : start + count]
            gate = flat_pooled[start : start + count]
            total = 0.0
            for q in range(count):
                if relu and not gate[q] > 0:
                    continue
                d[arg[q]] += grad[q]
                total += grad[q]
            bias_grad[o] += total


# --------------------------------------------------------------------------- average pooling
# (serial, on batch slices, like the rest)


@nb.njit(cache=True, nogil=True)
def sum_pool_forward(x, kh, kw, sy, sx, pt, pl, out):
    """Sum over each window, padding counting as zero. x: (N, C, H, W); out (written):
    (N, C, OH, OW)."""
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


# --------------------------------------------------------------------------- functional pairs


class MaxPoolCache(NamedTuple):
    """What max pooling's backward needs."""

    x_shape: tuple[int, int, int, int]
    geometry: WindowGeometry
    backend: str
    owner: str
    argmax: np.ndarray  # the winners: flat indices into each plane (numba), window-local (numpy)
    dtype: np.dtype
    pooled: np.ndarray | None = None  # with a fused ReLU: the output, whose sign gates the gradient


class AvgPoolCache(NamedTuple):
    """What average pooling's backward needs."""

    x_shape: tuple[int, int, int, int]
    geometry: WindowGeometry
    backend: str
    owner: str
    dtype: np.dtype
    sums: np.ndarray | None  # with a trainable scale: the window sums (Eq. 8.22)
    scale: np.ndarray | None
    # (OH, OW) factors KH*KW / (cells that count: inside the image, or with count_include_pad and
    # ceil_mode inside the padded image) that turn each
    # window sum into the sum over KH*KW in-image-mean cells; None otherwise
    border: np.ndarray | None


def _no_padding(g: WindowGeometry) -> bool:
    return g.top == g.bottom == g.left == g.right == 0


def _planes_as_channels(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N*C, 1, H, W): pooling works on each plane alone."""
    n, c, height, width = x.shape
    return x.reshape(n * c, 1, height, width)


def max_pool2d_buffers(
    x_shape: tuple[int, int, int, int], dtype: Any, g: WindowGeometry
) -> tuple[np.ndarray, np.ndarray]:
    """``(out, argmax)`` (N, C, OH, OW), allocated, not written, for max-pooling an input of shape
    ``x_shape`` (N, C, H, W) with geometry ``g`` (``pool_geometry``) slice by slice with
    ``max_pool2d_into``."""
    n, c, height, width = x_shape
    out = np.empty((n, c, g.oh, g.ow), dtype=dtype)
    argmax = np.empty((n, c, g.oh, g.ow), dtype=np.int32 if height * width < 2**31 else np.int64)
    return out, argmax


def max_pool2d_into(
    x: np.ndarray, g: WindowGeometry, relu: bool, out: np.ndarray, argmax: np.ndarray
) -> None:
    """The Numba max pool of validated, C-contiguous ``x`` (n, C, H, W) into ``out`` and ``argmax``
    (n, C, OH, OW), serially: one batch slice, from any thread (``max_pool2d_forward`` is the
    API)."""
    if _no_padding(g) and (g.kh, g.kw) == (2, 2):
        max_pool_forward_2x2(x, g.sy, g.sx, relu, out, argmax)
    elif _no_padding(g):
        max_pool_forward_valid(x, g.kh, g.kw, g.sy, g.sx, relu, out, argmax)
    else:
        max_pool_forward(x, g.kh, g.kw, g.sy, g.sx, g.top, g.left, relu, out, argmax)


def max_pool2d_values_into(x: np.ndarray, g: WindowGeometry, relu: bool, out: np.ndarray) -> None:
    """``max_pool2d_into``'s ``out`` alone (inference, no backward to follow), serially: 2x2
    windows without padding or dilation by ``max_pool_values_2x2``, others with an argmax that is
    dropped."""
    if _no_padding(g) and (g.kh, g.kw, g.dy, g.dx) == (2, 2, 1, 1):
        max_pool_values_2x2(x, g.sy, g.sx, relu, out)
    else:
        max_pool2d_into(x, g, relu, out, max_pool2d_buffers(x.shape, x.dtype, g)[1])


def max_pool2d_grad_into(
    dout: np.ndarray,
    argmax: np.ndarray,
    pooled: np.ndarray,
    relu: bool,
    g: WindowGeometry,
    dx: np.ndarray,
) -> None:
    """``max_pool2d_backward``'s Numba kernel on one batch slice, serially: ``dx`` (n, C, H, W)
    written whole from C-contiguous ``dout`` (n, C, OH, OW); ``pooled`` is read only if ``relu``."""
    tiled = _no_padding(g) and (g.sy, g.sx) == (g.kh, g.kw)  # windows tile the image: no overlap
    kernel = max_pool_backward_tiled if tiled else max_pool_backward
    kernel(dout, argmax, pooled, relu, dx)


def max_pool2d_grad_cm_into(
    dout: np.ndarray,
    argmax: np.ndarray,
    pooled: np.ndarray | None,
    d_t: np.ndarray,
    bias_grad: np.ndarray,
) -> None:
    """A max pool's backward on one batch slice, written as the gradient of the convolution before
    it in that convolution's backward layout (``conv2d_backward``'s ``dz_into``), serially:
    ``d_t`` (C, n*H*W) and ``bias_grad`` (C,), float64, from C-contiguous ``dout`` and ``argmax``
    (n, C, OH, OW). ``pooled``: the pool's output (n, C, OH, OW) when the convolution fused a ReLU
    (its derivative at a window's winner is ``pooled > 0``), else None. Any window, stride and
    padding: the winners are flat indices into each plane, and overlapping windows accumulate."""
    relu = pooled is not None
    max_pool_backward_cm(dout, argmax, pooled if relu else dout, relu, d_t, bias_grad)


def max_pool2d_forward(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    backend: str = "numba",
    owner: str = "max_pool2d",
    *,
    relu: bool = False,
    ceil_mode: bool = False,
    dilation: Any = 1,
) -> tuple[np.ndarray, MaxPoolCache]:
    """Max over windows of each feature map (Eq. 8.24), any window and stride, overlaps allowed.
    ``ceil_mode`` and ``dilation`` as PyTorch's (``shapes.pool_geometry``).

    Padding cells count as -inf. Ties: the gradient goes to the FIRST maximum in window scan order
    (row-major within the window), like ``numpy.argmax`` and the primer's ``MaxPoolingMap``.
    ``relu=True``: the pool of ReLU(x) (a fused ReLU -> MaxPool), computed as ReLU of the pool in
    the same pass; outputs and gradients are those of the two layers, ties included.
    ``x`` (N, C, H, W) -> (N, C, OH, OW).
    """
    check_choice(backend, "backend", BACKENDS, owner)
    x = np.ascontiguousarray(as_float_array(x, "x", owner, ndim=4))
    g = pool_geometry(x.shape[2], x.shape[3], kernel_size, stride, padding, owner,
                      _flag(ceil_mode, "ceil_mode", owner), dilation)
    return max_pool2d(x, g, backend, owner, relu=bool(relu))


def max_pool2d(
    x: np.ndarray,
    g: WindowGeometry,
    backend: str = "numba",
    owner: str = "max_pool2d",
    *,
    relu: bool = False,
) -> tuple[np.ndarray, MaxPoolCache]:
    """``max_pool2d_forward`` of checked input: ``x`` (N, C, H, W) C-contiguous float, ``g`` its
    pooling geometry (``shapes.pool_geometry``)."""
    n, c = x.shape[:2]
    if (g.dy, g.dx) != (1, 1):  # dilated windows: the kernels assume adjacent cells
        backend = "numpy"
    if backend == "numba":
        out, argmax = max_pool2d_buffers(x.shape, x.dtype, g)

        _threads.parallel_map(
            lambda s: max_pool2d_into(x[s], g, relu, out[s], argmax[s]), thread_slices(n)
        )
    else:
        cols = unfold(_planes_as_channels(x), g, -np.inf, "numpy")  # (N*C*OH*OW, KH*KW)
        argmax = cols.argmax(axis=1)  # window-local index of the first maximum
        out = np.take_along_axis(cols, argmax[:, None], axis=1).reshape(n, c, g.oh, g.ow)
        if relu:
            out = np.maximum(out, 0, dtype=out.dtype)
    return out, MaxPoolCache(x.shape, g, backend, owner, argmax, x.dtype, out if relu else None)


def max_pool2d_values(x: np.ndarray, g: WindowGeometry, *, relu: bool = False) -> np.ndarray:
    """``max_pool2d``'s output alone, for inference with no backward to follow: no argmax is
    written where ``max_pool2d_values_into`` applies (dilated windows take ``max_pool2d``)."""
    if (g.dy, g.dx) != (1, 1):
        return max_pool2d(x, g, relu=relu)[0]
    out = np.empty((x.shape[0], x.shape[1], g.oh, g.ow), dtype=x.dtype)
    _threads.parallel_map(lambda s: max_pool2d_values_into(x[s], g, relu, out[s]),
                          thread_slices(x.shape[0]))
    return out


def max_pool2d_backward(dout: Any, cache: MaxPoolCache) -> np.ndarray:
    """Route each output gradient to the input that won its window; overlapping windows accumulate.
    After a fused ReLU (``relu=True``) only where the pooled value is > 0."""
    x_shape, g, backend, owner, argmax = cache[:5]
    n, c, height, width = x_shape
    dout = np.ascontiguousarray(check_dout(dout, (n, c, g.oh, g.ow), cache.dtype, owner))
    relu = cache.pooled is not None
    pooled = cache.pooled if relu else dout
    if backend == "numba":
        dx = np.empty(x_shape, dtype=cache.dtype)
        _threads.parallel_map(
            lambda s: max_pool2d_grad_into(dout[s], argmax[s], pooled[s], relu, g, dx[s]),
            thread_slices(n),
        )
        return dx
    if relu:
        dout = np.where(pooled > 0, dout, 0).astype(cache.dtype)
    dcols = np.zeros((argmax.size, g.kh * g.kw), dtype=cache.dtype)
    dcols[np.arange(argmax.size), argmax] = dout.ravel()
    return fold(dcols, (n * c, 1, height, width), g, "numpy").reshape(x_shape)


def _flag(value: Any, name: str, owner: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    return bool(value)


def _border_factors(
    g: WindowGeometry, height: int, width: int, dtype: np.dtype, count_include_pad: bool = False
) -> np.ndarray | None:
    """(OH, OW) factors KH*KW / (the window's cells that count), or None if every window counts
    KH*KW. The cells that count are those inside the image, or with ``count_include_pad`` those
    inside the padded image (PyTorch's divisors: a ``ceil_mode`` window overhanging the padding
    divides by what it covers of it)."""
    reach_h, reach_w = (g.top, g.left) if count_include_pad else (0, 0)
    rows = np.arange(g.oh) * g.sy - g.top
    cols = np.arange(g.ow) * g.sx - g.left
    inside_h = np.minimum(rows + g.kh, height + reach_h) - np.maximum(rows, -reach_h)
    inside_w = np.minimum(cols + g.kw, width + reach_w) - np.maximum(cols, -reach_w)
    if (inside_h == g.kh).all() and (inside_w == g.kw).all():
        return None
    return (g.kh * g.kw / np.outer(inside_h, inside_w)).astype(dtype)


def avg_pool2d_forward(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    scale: Any = None,
    backend: str = "numba",
    owner: str = "avg_pool2d",
    *,
    count_include_pad: bool = True,
    ceil_mode: bool = False,
) -> tuple[np.ndarray, AvgPoolCache]:
    """Average pooling; with ``scale`` (one weight per feature map, shape (C,)) it is Eq. 8.22.
    ``ceil_mode`` as PyTorch's: the windows overhanging the padded input divide by the cells they
    cover of it (of the image, with ``count_include_pad=False``).

    Without ``scale``: the mean of each window. ``count_include_pad=True`` (PyTorch's default):
    zero padding counts, the divisor is KH*KW; ``False``: the divisor is the number of window
    cells inside the image (PyTorch's ``count_include_pad=False``). With ``scale``: the window SUM
    times ``scale[c]``, so ``scale = 1/(KH*KW)`` gives the mean; with ``count_include_pad=False``
    a border window's sum is first scaled by KH*KW / (cells inside), so that ``1/(KH*KW)`` still
    gives PyTorch's ``count_include_pad=False`` mean (away from the borders nothing changes).
    ``x`` (N, C, H, W) -> (N, C, OH, OW).
    """
    check_choice(backend, "backend", BACKENDS, owner)
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(
            f"{owner}: count_include_pad must be True or False, got {count_include_pad!r}"
        )
    x = np.ascontiguousarray(as_float_array(x, "x", owner, ndim=4))
    g = pool_geometry(x.shape[2], x.shape[3], kernel_size, stride, padding, owner,
                      _flag(ceil_mode, "ceil_mode", owner))
    n, c = x.shape[:2]
    if scale is not None:
        scale = as_float_array(scale, "scale", owner, ndim=1, dtype=x.dtype)
        if scale.shape != (c,):
            raise ValueError(
                f"{owner}: scale must have shape ({c},), one weight per feature map, "
                f"got {scale.shape}"
            )
    return avg_pool2d(x, g, scale, backend, owner, count_include_pad=bool(count_include_pad))


def avg_pool2d(
    x: np.ndarray,
    g: WindowGeometry,
    scale: np.ndarray | None = None,
    backend: str = "numba",
    owner: str = "avg_pool2d",
    *,
    count_include_pad: bool = True,
) -> tuple[np.ndarray, AvgPoolCache]:
    """``avg_pool2d_forward`` of checked input: ``x`` (N, C, H, W) C-contiguous float, ``g`` its
    pooling geometry, ``scale`` None or (C,) in x's dtype."""
    n, c = x.shape[:2]
    if backend == "numba":
        sums = np.empty((n, c, g.oh, g.ow), dtype=x.dtype)
        _threads.parallel_map(
            lambda s: sum_pool_forward(x[s], g.kh, g.kw, g.sy, g.sx, g.top, g.left, sums[s]),
            thread_slices(n),
        )
    else:
        cols = unfold(_planes_as_channels(x), g, 0.0, "numpy")
        sums = cols.sum(axis=1).reshape(n, c, g.oh, g.ow)
    border = _border_factors(g, x.shape[2], x.shape[3], x.dtype, count_include_pad)
    if border is not None:
        sums *= border
    if scale is None:
        out = sums
        out *= x.dtype.type(1.0 / (g.kh * g.kw))
        return out, AvgPoolCache(x.shape, g, backend, owner, x.dtype, None, None, border)
    out = sums * scale[:, None, None]
    return out, AvgPoolCache(x.shape, g, backend, owner, x.dtype, sums, scale, border)


def avg_pool2d_backward(dout: Any, cache: AvgPoolCache) -> tuple[np.ndarray, np.ndarray | None]:
    """Gradients of ``avg_pool2d_forward``: ``(dx, dscale)``; ``dscale`` is None without a scale.

    dx spreads each output gradient times the window's weight over its window (P8.3);
    dscale[c] sums dout * window-sum over samples and positions (P8.4).
    """
    x_shape, g, backend, owner, dtype, sums, scale, border = cache
    n, c, height, width = x_shape
    dout = check_dout(dout, (n, c, g.oh, g.ow), dtype, owner)
    if scale is None:
        dsums = dout * dtype.type(1.0 / (g.kh * g.kw))
        dscale = None
    else:
        dsums = dout * scale[:, None, None]
        dscale = np.einsum("nchw,nchw->c", dout, sums)
    if border is not None:
        dsums *= border
    dsums = np.ascontiguousarray(dsums)
    if backend == "numba":
        dx = np.zeros(x_shape, dtype=dtype)
        _threads.parallel_map(
            lambda s: sum_pool_backward(dsums[s], g.kh, g.kw, g.sy, g.sx, g.top, g.left, dx[s]),
            thread_slices(x_shape[0]),
        )
    else:
        dcols = np.repeat(dsums.reshape(-1, 1), g.kh * g.kw, axis=1)
        dx = fold(dcols, (n * c, 1, height, width), g, "numpy").reshape(x_shape)
    return dx, dscale


def global_avg_pool2d_forward(x: Any, owner: str = "global_avg_pool2d") -> tuple[np.ndarray, tuple]:
    """The mean of each feature map: (N, C, H, W) -> (N, C). Returns ``(out, cache)``."""
    return global_avg_pool2d(as_float_array(x, "x", owner, ndim=4), owner)


# Maps of at most this many pixels are summed as one matrix-vector product, (N*C, H*W) @ ones, then
# divided by H*W as NumPy's mean divides: NumPy reduces a short last axis element by element
# (measured 2026-12-04, Intel Xeon, float32: 64x1280x4x4 1.42 -> 0.10 ms, 64x64x8x8 0.094 ->
# 0.013). Longer maps keep NumPy's pairwise sum (BLAS sums each vector lane in order).
_GEMV_MAX_PLANE = 4096


def global_avg_pool2d(x: np.ndarray, owner: str = "global_avg_pool2d") -> tuple[np.ndarray, tuple]:
    """``global_avg_pool2d_forward`` of checked input (a 4-D float array)."""
    n, c, height, width = x.shape
    plane = height * width
    if plane <= _GEMV_MAX_PLANE and x.flags.c_contiguous:
        out = np.matmul(x.reshape(n * c, plane), np.ones(plane, x.dtype)).reshape(n, c)
        out /= plane
    else:
        out = x.mean(axis=(2, 3), dtype=x.dtype)
    return out, (x.shape, x.dtype, owner)


def global_avg_pool2d_backward(dout: Any, cache: tuple) -> np.ndarray:
    """dx[n, c, i, j] = dout[n, c] / (H*W) for every pixel."""
    (n, c, height, width), dtype, owner = cache
    dout = check_dout(dout, (n, c), dtype, owner)
    dx = np.empty((n, c, height, width), dtype=dtype)
    dx[...] = (dout * dtype.type(1.0 / (height * width)))[:, :, None, None]
    return dx


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows along one axis: output cell ``i`` averages
    ``[floor(i * size / out), ceil((i + 1) * size / out))``."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def adaptive_avg_pool2d(x: np.ndarray, output_size: tuple[int, int]) -> tuple[np.ndarray, tuple]:
    """Average of each adaptive window of checked input (N, C, H, W) -> (N, C, OH, OW); windows
    may overlap when the sizes do not divide. A loop over the OH x OW output cells, each a
    vectorised mean over the batch and channels."""
    n, c, height, width = x.shape
    rows, cols = adaptive_windows(height, output_size[0]), adaptive_windows(width, output_size[1])
    out = np.empty((n, c, len(rows), len(cols)), dtype=x.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3), dtype=x.dtype)
    return out, (x.shape, x.dtype, rows, cols)


def adaptive_avg_pool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Each output cell's gradient spread evenly over its window (overlaps accumulate)."""
    shape, dtype, rows, cols = cache
    dx = np.zeros(shape, dtype=dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            share = dout[:, :, i, j] * dtype.type(1.0 / ((r1 - r0) * (c1 - c0)))
            dx[:, :, r0:r1, c0:c1] += share[:, :, None, None]
    return dx


def adaptive_max_pool2d(x: np.ndarray, output_size: tuple[int, int]) -> tuple[np.ndarray, tuple]:
    """Maximum of each adaptive window (PyTorch's windows, :func:`adaptive_windows`) of checked
    input (N, C, H, W) -> (N, C, OH, OW). Ties go to the first cell in row-major order, as in
    PyTorch. A loop over the OH x OW output cells, each a vectorised argmax over batch and
    channels; the cache keeps each cell's winner (N, C) for backward."""
    n, c, height, width = x.shape
    rows, cols = adaptive_windows(height, output_size[0]), adaptive_windows(width, output_size[1])
    out = np.empty((n, c, len(rows), len(cols)), dtype=x.dtype)
    winners = np.empty((len(rows), len(cols), n, c), dtype=np.intp)  # flat index in the window
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            window = x[:, :, r0:r1, c0:c1].reshape(n, c, -1)
            winners[i, j] = window.argmax(axis=2)
            out[:, :, i, j] = np.take_along_axis(window, winners[i, j][:, :, None], 2)[:, :, 0]
    return out, (x.shape, x.dtype, rows, cols, winners)


def adaptive_max_pool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Each output cell's gradient to its window's winner (overlapping windows accumulate)."""
    shape, dtype, rows, cols, winners = cache
    n, c = shape[:2]
    dx = np.zeros(shape, dtype=dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            width = c1 - c0
            y = r0 + winners[i, j] // width
            x = c0 + winners[i, j] % width
            np.add.at(dx, (np.arange(n)[:, None], np.arange(c)[None, :], y, x), dout[:, :, i, j])
    return dx
