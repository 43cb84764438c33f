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

The work goes a batch slice at a time, each slice's samples split into their phases, convolved
and merged back while the slice is in cache (the whole batch's reorderings, one pass each over
memory, were 1.8 ms of the benchmark layer's 10-12). So the per-slice hook ``then`` (a layer's
NaN/Inf scan, a fused pool) sees the batch's own slices. An untied bias (one per output position)
does not split into phases: those calls run im2col, whose cache then takes the backward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numba as nb
import numpy as np

from .. import threads as _threads
from ..arrays import cache_slices, summed
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
def _split(x, dy, dx, out):
    """``out[n, a, b] = x[n, :, a::dy, b::dx]``; x (N, C, H, W), out (N, dy, dx, C, H/dy, W/dx),
    both C-contiguous. A row goes to one row phase; with dx == 2 its two column phases are filled
    in one loop, so the row is read as whole vectors and deinterleaved (NumPy's strided copy,
    ``_split_numpy``, reads it element by element)."""
    channels, h, w = x.shape[1], x.shape[2] // dy, x.shape[3] // dx
    for n in range(x.shape[0]):
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
def _merge(p, dy, dx, out):
    """The inverse of ``_split``: ``out[n, :, a::dy, b::dx] = p[n, a, b]``; p (N, dy, dx, C, h,
    w), out (N, C, h*dy, w*dx), both C-contiguous."""
    channels, h, w = p.shape[3], p.shape[4], p.shape[5]
    for n in range(p.shape[0]):
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
    """(n, C, H, W) -> (n*dy*dx, C, H/dy, W/dx), C-contiguous: sample ``(i*dy + a)*dx + b`` is
    ``x[i, :, a::dy, b::dx]``; x C-contiguous (a batch slice), its sides multiples of the
    dilation. ``_split_numpy`` is the twin."""
    n, c, h, w = x.shape
    out = np.empty((n, dy, dx, c, h // dy, w // dx), dtype=x.dtype)
    _split(x, dy, dx, out)
    return out.reshape(n * dy * dx, c, h // dy, w // dx)


def from_phases(p: np.ndarray, dy: int, dx: int, out: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_phases`: (n*dy*dx, C, h, w) into ``out`` (n, C, h*dy, w*dx); both
    C-contiguous. Returns out. ``_merge_numpy`` is the twin."""
    nd, c, h, w = p.shape
    _merge(p.reshape(nd // (dy * dx), dy, dx, c, h, w), dy, dx, out)
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
    """What backward needs of a dilated convolution run through its phases."""

    x_shape: tuple[int, int, int, int]
    weight: np.ndarray
    bias_shape: tuple[int, ...] | None
    geometry: WindowGeometry  # the dilated convolution's
    owner: str
    transformed: np.ndarray  # the transformed weight U (36, K, C / groups)
    v: list[np.ndarray] | None  # each batch slice's phases' transformed input V; None: from x
    x: np.ndarray | None  # the input, kept instead of V (keep=False)
    slices: list[slice]  # the batch's slices, whole samples (each with all its phases)
    out: np.ndarray | None  # relu=True: the output, whose sign is ReLU's derivative
    groups: int = 1


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
    """``conv2d_forward``'s dilated strategy on checked arguments (``supports`` holds), x
    C-contiguous: out (N, O, OH, OW) and the cache; im2col's pair for an untied bias. Each batch
    slice: its phases, their Winograd forward, merged into ``out[s]``, then ``then(s, out[s])``."""
    if bias is not None and bias.ndim == 3:
        return im2col.forward(x, weight, bias, g, groups=groups, backend=backend, owner=owner,
                              keep=keep, relu=relu, then=then)
    n, phases, inner = x.shape[0], g.dy * g.dx, inner_geometry(g)
    # not fused (``winograd_fused.py``): its backward would make the phases and their V again,
    # which cost more than the fusion saves (measured 2026-12-06, Intel Xeon, 2 threads, 32x32x32x32
    # -> 64, dilation 2, forward + backward alone: 10.37-10.61 ms unfused, 11.24-11.32 fused)
    p = winograd.plan_forward((n * phases, *x.shape[1:]), weight, bias, inner, groups=groups,
                              relu=relu)
    slices = cache_slices(n, phases * winograd.ALPHA**2 * x.shape[1] * p.ty * p.tx
                          * weight.itemsize)
    out = np.empty((n, weight.shape[0], g.oh, g.ow), dtype=weight.dtype)

    def block(s: slice) -> np.ndarray | None:
        x_phases = to_phases(x[s], g.dy, g.dx)
        out_phases = np.empty((x_phases.shape[0], weight.shape[0], inner.oh, inner.ow),
                              dtype=weight.dtype)
        v = winograd.slice_forward(x_phases, p, out_phases)
        from_phases(out_phases, g.dy, g.dx, out[s])
        if then is not None:
            then(s, out[s])
        return v if keep else None

    kept = _threads.parallel_map(block, slices)
    cache = DilatedCache(x.shape, weight, None if bias is None else bias.shape, g, owner, p.u,
                         kept if keep else None, None if keep else x, slices,
                         out if relu else None, groups)
    return out, cache


def backward(
    dout: np.ndarray | None,
    cache: DilatedCache,
    input_grad: bool = True,
    *,
    dout_of: Callable[[slice], np.ndarray] | None = None,
    dz_into: Callable[[slice, np.ndarray, np.ndarray], None] | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``conv2d_backward`` through the phases, a batch slice at a time: dout's slice (``dout``
    checked, or None and ``dout_of(s)``) split as the input was, Winograd's slice backward, its
    dx merged into ``dx[s]``; dW and the bias gradient are sums over all slices' phases
    (``dz_into`` is the im2col layout's, unused)."""
    g, weight = cache.geometry, cache.weight
    inner, dy, dx_ = inner_geometry(g), g.dy, g.dx
    dx = np.empty(cache.x_shape, dtype=weight.dtype) if input_grad else None

    def block(i: int) -> tuple[np.ndarray, np.ndarray]:
        s = cache.slices[i]
        d = np.ascontiguousarray(dout[s] if dout_of is None else dout_of(s))
        y = None if cache.out is None else to_phases(cache.out[s], dy, dx_)
        v = cache.v[i] if cache.v is not None else winograd.transform_input(
            to_phases(cache.x[s], dy, dx_), inner)
        n, channels, h, w = s.stop - s.start, *cache.x_shape[1:]
        dx_phases = None if dx is None else np.empty(
            (n * dy * dx_, channels, h // dy, w // dx_), dtype=weight.dtype)
        du, tied = winograd.slice_backward(to_phases(d, dy, dx_), y, v, cache.transformed, inner,
                                           dx_phases, cache.groups)
        if dx is not None:
            from_phases(dx_phases, dy, dx_, dx[s])
        return du, tied

    parts = _threads.parallel_map(block, list(range(len(cache.slices))))
    dweight = winograd.weight_grad(summed([part[0] for part in parts]), weight.shape[2])
    dbias = None if cache.bias_shape is None else sum(p[1] for p in parts).astype(weight.dtype)
    return dx, dweight, dbias
