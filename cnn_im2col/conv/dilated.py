"""Dilated convolutions as undilated ones: the polyphase decomposition, then Winograd.

A stride-1 convolution with dilation ``(dy, dx)`` reads, for output row ``i``, the input rows
``i - top + dy*u`` (u = 0..KH-1): rows of a single residue modulo ``dy``. When the padding on each
side is a multiple of the dilation and the output's sides are too (then so are the input's), the
input splits into ``dy*dx`` phases ``x[:, :, a::dy, b::dx]`` of size (H/dy, W/dx), and output phase
``(a, b)``, ``out[:, :, a::dy, b::dx]``, is the *undilated* convolution of input phase ``(a, b)``
with the same kernel and the padding divided by the dilation. The phases go in as ``dy*dx`` times
the batch, so the inner convolution is an ordinary 3x3 (or 5x5) one that Winograd computes
(:mod:`.winograd`); two reorderings take the input in and the output back (and the same two
backward). ``conv.choose`` picks this strategy only where that inner convolution passes
Winograd's own thresholds; im2col (which computes any dilation) is its twin in the tests.

The per-slice hook ``then`` (a layer's NaN/Inf scan, a fused pool) sees the batch's slices once
the output is put back together: the phases' slices are not the batch's. An untied bias (one per
output position) does not split into phases: those calls run im2col, whose cache then takes the
backward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numba as nb
import numpy as np

from .. import threads as _threads
from ..arrays import thread_slices
from ..arrays import unsigned as _u
from ..shapes import WindowGeometry
from . import im2col, winograd


def supports(weight_shape: tuple[int, ...], g: WindowGeometry, groups: int) -> bool:
    """Whether the decomposition applies: stride 1, a dilation above 1, every padding a multiple of
    its axis' dilation, output sides multiples of it, and a kernel Winograd computes."""
    return (
        (g.sy, g.sx) == (1, 1)
        and (g.dy, g.dx) != (1, 1)
        and g.top % g.dy == g.bottom % g.dy == 0
        and g.left % g.dx == g.right % g.dx == 0
        and g.oh % g.dy == 0
        and g.ow % g.dx == 0
        and winograd.supports(tuple(weight_shape[2:]), (1, 1), (1, 1), groups)
    )


def inner_geometry(g: WindowGeometry) -> WindowGeometry:
    """The undilated convolution of one phase."""
    return g._replace(
        top=g.top // g.dy, bottom=g.bottom // g.dy, left=g.left // g.dx, right=g.right // g.dx,
        oh=g.oh // g.dy, ow=g.ow // g.dx, dy=1, dx=1,
    )


@nb.njit(cache=True, nogil=True)
def _split(x, n_lo, n_hi, dy, dx, out):
    """``out[n, a, b] = x[n, :, a::dy, b::dx]`` for samples n_lo..n_hi-1; x (N, C, H, W), out
    (N, dy, dx, C, H/dy, W/dx), both C-contiguous. A row goes to one row phase; with dx == 2 its
    two column phases are filled in one loop, so the row is read as whole vectors and
    deinterleaved (NumPy's strided copy, which this replaces, read it element by element)."""
    channels, h, w = x.shape[1], x.shape[2] // dy, x.shape[3] // dx
    for n in range(n_lo, n_hi):
        for c in range(channels):
            for r in range(h * dy):
                a, i = r % dy, r // dy
                row = x[n, c, r]
                if dx == 2:
                    even, odd = out[n, a, 0, c, i], out[n, a, 1, c, i]
                    for j in range(w):
                        even[j] = row[_u(2 * j)]
                        odd[j] = row[_u(2 * j + 1)]
                else:
                    for b in range(dx):
                        dst = out[n, a, b, c, i]
                        for j in range(w):
                            dst[j] = row[_u(j * dx + b)]


@nb.njit(cache=True, nogil=True)
def _merge(p, n_lo, n_hi, dy, dx, out):
    """The inverse of ``_split``: ``out[n, :, a::dy, b::dx] = p[n, a, b]`` for samples
    n_lo..n_hi-1; p (N, dy, dx, C, h, w), out (N, C, h*dy, w*dx), both C-contiguous."""
    channels, h, w = p.shape[3], p.shape[4], p.shape[5]
    for n in range(n_lo, n_hi):
        for c in range(channels):
            for r in range(h * dy):
                a, i = r % dy, r // dy
                row = out[n, c, r]
                if dx == 2:
                    even, odd = p[n, a, 0, c, i], p[n, a, 1, c, i]
                    for j in range(w):
                        row[_u(2 * j)] = even[j]
                        row[_u(2 * j + 1)] = odd[j]
                else:
                    for b in range(dx):
                        src = p[n, a, b, c, i]
                        for j in range(w):
                            row[_u(j * dx + b)] = src[j]


def to_phases(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """(N, C, H, W) -> (N*dy*dx, C, H/dy, W/dx), C-contiguous: sample ``(n*dy + a)*dx + b`` is
    ``x[n, :, a::dy, b::dx]``; x C-contiguous, its sides multiples of the dilation. Samples
    side by side on the pool. ``_split_numpy`` is the twin."""
    n, c, h, w = x.shape
    out = np.empty((n, dy, dx, c, h // dy, w // dx), dtype=x.dtype)
    _threads.parallel_map(lambda s: _split(x, s.start, s.stop, dy, dx, out), thread_slices(n))
    return out.reshape(n * dy * dx, c, h // dy, w // dx)


def from_phases(p: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The inverse of :func:`to_phases`: (N*dy*dx, C, h, w) -> (N, C, h*dy, w*dx), C-contiguous
    (p C-contiguous). ``_merge_numpy`` is the twin."""
    nd, c, h, w = p.shape
    n = nd // (dy * dx)
    out = np.empty((n, c, h * dy, w * dx), dtype=p.dtype)
    src = np.ascontiguousarray(p).reshape(n, dy, dx, c, h, w)
    _threads.parallel_map(lambda s: _merge(src, s.start, s.stop, dy, dx, out), thread_slices(n))
    return out


def _split_numpy(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``to_phases``'s slow twin: the phases as one strided copy each."""
    n, c, h, w = x.shape
    src = x.reshape(n, c, h // dy, dy, w // dx, dx)
    out = np.empty((n, dy, dx, c, h // dy, w // dx), dtype=x.dtype)
    for a in range(dy):
        for b in range(dx):
            out[:, a, b] = src[:, :, :, a, :, b]
    return out.reshape(n * dy * dx, c, h // dy, w // dx)


def _merge_numpy(p: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``from_phases``'s slow twin."""
    nd, c, h, w = p.shape
    n = nd // (dy * dx)
    src = p.reshape(n, dy, dx, c, h, w)
    out = np.empty((n, c, h, dy, w, dx), dtype=p.dtype)
    for a in range(dy):
        for b in range(dx):
            out[:, :, :, a, :, b] = src[:, a, b]
    return out.reshape(n, c, h * dy, w * dx)


class DilatedCache(NamedTuple):
    """What backward needs: the outer convolution's shapes and the inner Winograd cache."""

    x_shape: tuple[int, int, int, int]
    weight: np.ndarray
    bias_shape: tuple[int, ...] | None
    geometry: WindowGeometry  # the dilated convolution's
    owner: str
    inner: winograd.WinogradCache  # of the phases' undilated convolution


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
) -> tuple[np.ndarray, Any]:
    """``conv2d_forward``'s dilated strategy on checked arguments (``supports`` holds): out (N, O,
    OH, OW) and the cache; im2col's pair for an untied bias. ``then(s, out[s])`` per batch slice
    of the pool, once out is whole."""
    if bias is not None and bias.ndim == 3:
        return im2col.forward(x, weight, bias, g, groups=groups, backend=backend, owner=owner,
                              keep=keep, relu=relu, then=then)
    out_phases, inner = winograd.forward(
        to_phases(x, g.dy, g.dx), weight, bias, inner_geometry(g), groups=groups,
        backend=backend, owner=owner, keep=keep, relu=relu,
    )
    cache = DilatedCache(x.shape, weight, None if bias is None else bias.shape, g, owner, inner)
    out = from_phases(out_phases, g.dy, g.dx)
    if then is not None:
        _threads.parallel_map(lambda s: then(s, out[s]), thread_slices(x.shape[0]))
    return out, cache


def backward(
    dout: np.ndarray | None,
    cache: DilatedCache,
    input_grad: bool = True,
    *,
    dout_of: Callable[[slice], np.ndarray] | None = None,
    dz_into: Callable[[slice, np.ndarray, np.ndarray], None] | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``conv2d_backward`` through the phases: dout split as the input was, the inner backward,
    dx interleaved back (dW and the bias gradient are sums over the phases' batch already)."""
    g = cache.geometry
    if dout is None:  # (dout_of is a fused pool's, which never reaches this strategy; honoured)
        dout = dout_of(slice(0, cache.x_shape[0]))
    dx_phases, dweight, dbias = winograd.backward(
        to_phases(np.ascontiguousarray(dout), g.dy, g.dx), cache.inner, input_grad
    )
    dx = None if dx_phases is None else from_phases(dx_phases, g.dy, g.dx)
    return dx, dweight, dbias
