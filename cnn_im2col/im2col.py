"""im2col / col2im: turn every receptive field into a row, and scatter rows back.

``im2col`` is what lets a convolution be one matrix multiplication (Eq. 8.12 without its sparse
matrix): the rows of ``cols`` are the receptive fields, so ``cols @ weight.reshape(O, -1).T`` is
every output neuron at once. ``col2im`` is its adjoint: it scatter-adds rows back into an image,
so overlapping windows accumulate. That is exactly what the backward pass needs.

Two backends compute the same thing:
- ``"numba"``: the compiled loops below (serial kernels on the engine's pool, one batch slice per
  worker; no temporaries);
- ``"numpy"``: ``sliding_window_view`` stride tricks and a loop over kernel offsets only; slower,
  but short enough to check by eye. The tests hold the two equal.

Layouts: ``x`` is (N, C, H, W); ``cols`` is (N*OH*OW, C*KH*KW), row ``(n, oh, ow)``, column
``(c, i, j)``, both row-major, which matches a PyTorch weight ``(O, C, KH, KW)`` reshaped to
``(O, C*KH*KW)``.

The convolution's own channel-major layout (``unfold_t``, the transpose of this one) belongs to its
im2col strategy, ``conv/im2col.py``.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import threads as _threads
from .arrays import thread_slices
from .shapes import (
    WindowGeometry,
    as_float_array,
    check_choice,
    check_float,
    dilated_geometry,
    pair,
)

BACKENDS = ("numba", "numpy")


# --------------------------------------------------------------------------- kernels


@nb.njit(cache=True, nogil=True)
def im2col_kernel(x, kh, kw, sy, sx, dy, dx, pt, pl, oh_count, ow_count, pad_value, cols):
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
def col2im_kernel(cols, kh, kw, sy, sx, dy, dx_step, pt, pl, oh_count, ow_count, dx):
    """Scatter-add rows back into the image: the adjoint of ``im2col_kernel`` (padding dropped).

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


# --------------------------------------------------------------------------- validated input


def unfold(
    x: np.ndarray, g: WindowGeometry, pad_value: float = 0.0, backend: str = "numba"
) -> np.ndarray:
    """im2col for validated input: C-contiguous float (N, C, H, W) -> (N*OH*OW, C*KH*KW).

    ``g``: a ``WindowGeometry`` (with its dilation)."""
    n, c = x.shape[:2]
    dy, dx = g.dy, g.dx
    if backend == "numba":
        cols = np.empty((n * g.oh * g.ow, c * g.kh * g.kw), dtype=x.dtype)
        rows = g.oh * g.ow

        def work(s: slice) -> None:
            im2col_kernel(
                x[s],
                g.kh,
                g.kw,
                g.sy,
                g.sx,
                dy,
                dx,
                g.top,
                g.left,
                g.oh,
                g.ow,
                pad_value,
                cols[s.start * rows : s.stop * rows],
            )

        _threads.parallel_map(work, thread_slices(n))
        return cols
    padded = np.pad(
        x, ((0, 0), (0, 0), (g.top, g.bottom), (g.left, g.right)), constant_values=pad_value
    )
    span = (dy * (g.kh - 1) + 1, dx * (g.kw - 1) + 1)
    windows = sliding_window_view(padded, span, axis=(2, 3))[
        ..., ::dy, ::dx
    ]  # (N, C, H', W', KH, KW)
    windows = windows[:, :, : g.sy * (g.oh - 1) + 1 : g.sy, : g.sx * (g.ow - 1) + 1 : g.sx]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * g.oh * g.ow, c * g.kh * g.kw)


def fold(
    cols: np.ndarray,
    input_shape: tuple[int, int, int, int],
    g: WindowGeometry,
    backend: str = "numba",
) -> np.ndarray:
    """col2im for validated input: scatter-add (N*OH*OW, C*KH*KW) rows into a new (N, C, H, W)."""
    n, c, height, width = input_shape
    dy, dx = g.dy, g.dx
    if backend == "numba":
        out = np.empty(input_shape, dtype=cols.dtype)
        cols = np.ascontiguousarray(cols)
        rows = g.oh * g.ow

        def work(s: slice) -> None:
            col2im_kernel(
                cols[s.start * rows : s.stop * rows],
                g.kh,
                g.kw,
                g.sy,
                g.sx,
                dy,
                dx,
                g.top,
                g.left,
                g.oh,
                g.ow,
                out[s],
            )

        _threads.parallel_map(work, thread_slices(n))
        return out
    padded = np.zeros((n, c, height + g.top + g.bottom, width + g.left + g.right), dtype=cols.dtype)
    blocks = cols.reshape(n, g.oh, g.ow, c, g.kh, g.kw).transpose(
        0, 3, 4, 5, 1, 2
    )  # (N, C, KH, KW, OH, OW)
    for i in range(g.kh):
        for j in range(g.kw):
            padded[
                :, :, i * dy : i * dy + g.sy * g.oh : g.sy, j * dx : j * dx + g.sx * g.ow : g.sx
            ] += blocks[:, :, i, j]
    return padded[:, :, g.top : g.top + height, g.left : g.left + width].copy()


def _geometry(
    input_shape: tuple[int, ...],
    kernel_size: Any,
    stride: Any,
    padding: Any,
    owner: str,
    dilation: Any = 1,
) -> WindowGeometry:
    kernel = pair(kernel_size, "kernel_size", owner)
    steps = pair(stride, "stride", owner)
    dil = pair(dilation, "dilation", owner)
    return dilated_geometry(input_shape[2], input_shape[3], kernel, steps, dil, padding, owner)


def im2col(
    x: Any,
    kernel_size: Any,
    stride: Any = 1,
    padding: Any = 0,
    pad_value: float = 0.0,
    backend: str = "numba",
    dilation: Any = 1,
) -> np.ndarray:
    """Gather every receptive field of ``x`` (N, C, H, W) into a row of a (N*OH*OW, C*KH*KW) matrix.

    ``padding`` is an int, a pair ``(ph, pw)``, ``"valid"`` or ``"same"``; padded cells read
    ``pad_value`` (0 for convolution, ``-inf`` for max pooling). ``dilation``: int or (dy, dx), the
    distance between a window's cells (PyTorch's meaning).
    """
    check_choice(backend, "backend", BACKENDS, "im2col")
    x = np.ascontiguousarray(as_float_array(x, "x", "im2col", ndim=4))
    g = _geometry(x.shape, kernel_size, stride, padding, "im2col", dilation)
    return unfold(x, g, check_float(pad_value, "pad_value", "im2col", allow_inf=True), backend)


def col2im(
    cols: Any,
    input_shape: tuple[int, int, int, int],
    kernel_size: Any,
    stride: Any = 1,
    padding: Any = 0,
    backend: str = "numba",
    dilation: Any = 1,
) -> np.ndarray:
    """Scatter-add the rows of ``cols`` (N*OH*OW, C*KH*KW) back into an (N, C, H, W) array.

    The adjoint of ``im2col``: ``<im2col(x), c> == <x, col2im(c)>``. Padded cells are dropped.
    """
    check_choice(backend, "backend", BACKENDS, "col2im")
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else input_shape
    if not isinstance(shape, tuple) or len(shape) != 4:
        raise ValueError(f"col2im: input_shape must be (N, C, H, W), got {input_shape!r}")
    shape = tuple(pair((v, v), "input_shape", "col2im")[0] for v in shape)
    cols = as_float_array(cols, "cols", "col2im", ndim=2)
    g = _geometry(shape, kernel_size, stride, padding, "col2im", dilation)
    expected = (shape[0] * g.oh * g.ow, shape[1] * g.kh * g.kw)
    if cols.shape != expected:
        raise ValueError(
            f"col2im: cols must have shape {expected} for input_shape {shape}, got {cols.shape}"
        )
    return fold(cols, shape, g, backend)
