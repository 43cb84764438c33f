"""The tiled strategy of a strided convolution: a direct kernel that keeps a tile of P output
pixels x L output channels in vector registers while it runs over the taps, with no im2col matrix.

For output pixel q (of a sample) and output channel o,

    out[o, q] = bias[o] + sum_t W[o, t] * xp[base[q] + offset[t]]

where ``xp`` is the sample's input with its padding made real (zeros), ``t = (c*KH + i)*KW + j``
runs over the K = C*KH*KW taps, ``offset[t] = c*Hp*Wp + i*DY*Wp + j*DX`` and ``base[q] =
oh*SY*Wp + ow*SX``. For a tile, each tap loads one vector of L weights (``W.T``'s row t, so the
channels are contiguous) and P input values, and does P vector multiply-adds: the P x L sums stay in
registers from the first tap to the last (``conv/tile_kernel.py``, in LLVM IR). A 1x1 kernel (a
ResNet's strided projection) reads one pixel of each stride, so its copy of the input takes only
those, and its tiles then run at stride 1. A whole tile of a channels-last output
is stored from the registers straight into it; an NCHW output, and the tiles at the edges, go
through a scratch tile (one thread, batch 64, channels-last in and out: (C, H, O, kernel) (16, 32,
32, 3) 1158 -> 988 us, (32, 16, 64, 3) 1089-1199 -> 929-1012, (16, 32, 32, 1) 350-380 -> 319;
2026-12-05, Intel Xeon).

Why: a strided convolution's im2col matrix has K rows and a quarter of the input's columns, so
copying it costs about as much as its GEMM, which is short (O rows). Measured 2026-12-05, Intel Xeon
(AVX-512), one thread, batch 64, 3x3 stride 2 pad 1, forward with ReLU: (C, H, O) (16, 32, 32)
im2col + GEMM + epilogue 40 us a sample, this kernel 15.8 (PyTorch on one thread 23); (32, 16, 64)
37 -> 14.2.

The backward runs on the same tile, with no im2col matrix and no col2im either. The weight
gradient ``dW[o, t] = sum_q dZ[o, q] * xp[base[q] + offset[t]]`` is the forward's sum with the
taps and the pixels swapped: a tile of P taps x L output channels, its loop over the output
pixels, reading dZ channels-last. The input gradient of a stride-S convolution is S*S stride-1
convolutions of dZ, one per phase of the input (its pixels a stride apart), each with only the
taps that land there (a 3x3 stride-2 kernel's 9 taps split 1 + 2 + 2 + 4): every product is made
once, and each lands on its own input pixel (``InputPhases``). Its tiles, whose lanes are input
channels, go to a channels-last buffer of the sample, each pixel's lanes one run at the pixel's
row, and the buffer is transposed into the NCHW gradient in blocks of a vector register's width
(``conv/transpose.py``); an NCHW forward's sums go the same way. Before, the input gradient's
tiles were stored transposed from the registers in the phases' pixel order and then moved to
their pixels a value at a time, and the forward's went through a scratch tile copied out a value
at a time. Measured 2026-12-06, Intel Xeon, one thread, us a 32x32x32 sample (3x3 stride 2, 64
output channels): input gradient 82-83 -> 70-72, dZ's layouts 11-13 -> 8; 2 threads, the layer's
forward + backward at batch 32 alternated with the old code in one process (12 rounds of 15
steps, three runs), 5.59-5.67 -> 5.15-5.22 ms (0.91-0.93x). Measured 2026-12-05, Intel Xeon, 2
threads, training forward + backward, medians of 25 steps in three alternated process pairs,
(N, C, H, O, kernel), im2col's backward -> this one, ms: (32, 32, 32, 64, 3) 5.0-5.4 -> 4.2-4.3;
(64, 16, 32, 32, 3) 3.6-3.7 -> 2.8-2.9; (64, 32, 16, 64, 3) 3.1-3.2 -> 2.3; ResNet's 1x1
projections (64, 32, 16, 64, 1) 1.1-1.4 -> 0.9-1.3 and (64, 16, 32, 32, 1) 1.27-1.40 -> 1.40-1.48
(there its weight gradient alone takes 0.63-0.77 ms against im2col's 0.53-0.65: a wash over
ResNet-20's two).

The im2col strategy is this one's slow twin: the tests hold them equal to rounding, forward and
backward.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numba as nb
import numpy as np

from .. import threads as _threads
from ..arrays import cache_slices, summed
from ..arrays import unsigned as _u
from ..shapes import WindowGeometry
from .im2col import Im2colCache
from .im2col import forward as im2col_forward
from .tile_kernel import tile as _tile
from .tile_kernel import tile_dims, tile_shape
from .transpose import transpose_into

__all__ = ["InputPhases", "TileGeometry", "TileLayout", "TiledCache", "backward", "forward",
           "input_phases", "pad_into", "run_tiles", "slice_grads", "supports", "tile_geometry",
           "tile_layout", "tile_shape", "tiled_forward"]


def supports(weight_shape: tuple[int, ...], g: WindowGeometry, groups: int) -> bool:
    """Whether a convolution takes this strategy (under "auto", numba): groups 1 and a stride of 2
    or more in either axis (a 1x1 kernel too: a ResNet's projection)."""
    return groups == 1 and max(g.sy, g.sx) >= 2


# --------------------------------------------------------------------------- the kernels


@nb.njit(cache=True, nogil=True)
def pad_into(x, pt, pl, sy, sx, xp):
    """``xp[n, c, r, v] = x[n, c, r*SY - PT, v*SX - PL]`` (0 outside the image), written whole:
    the input with its padding made real, taking every SY-th row and SX-th column (a 1x1 kernel's
    stride; 1 for larger kernels, whose windows overlap). x: (N, C, H, W); xp: (N, C, Hp, Wp), its
    sides only as long as the windows read."""
    n_count, c_count, height, width = x.shape
    _pad_rows(x.reshape(x.size), n_count * c_count, height, width, 1, pt, pl, sy, sx,
              xp.shape[2], xp.shape[3], xp.reshape(xp.size))


@nb.njit(cache=True, nogil=True)
def pad_into_last(x, pt, pl, sy, sx, xp):
    """``pad_into`` for channels-last maps: ``xp[n, r, v, c] = x[n, r*SY - PT, v*SX - PL, c]`` (0
    outside the image), written whole. x: (N, H, W, C); xp: (N, Hp, Wp, C)."""
    n_count, height, width, channels = x.shape
    _pad_rows(x.reshape(x.size), n_count, height, width, channels, pt, pl, sy, sx, xp.shape[1],
              xp.shape[2], xp.reshape(xp.size))


@nb.njit(cache=True, nogil=True, inline="always")
def _pad_rows(xf, planes, height, width, pixel, pt, pl, sy, sx, hp, wp, pf):
    """``pad_into``'s copy of ``planes`` maps of (H, W) pixels, each ``pixel`` values long (1:
    NCHW planes; C: channels-last samples), into (Hp, Wp) maps of pixels."""
    vlo = min(wp, -(-pl // sx))  # the columns that read the image: [vlo, vhi)
    vhi = max(vlo, min(wp, (width - 1 + pl) // sx + 1))
    zero = pf.dtype.type(0)
    for plane in range(planes):
        for r in range(hp):
            d = (plane * hp + r) * wp * pixel
            h = r * sy - pt
            if h < 0 or h >= height:
                for k in range(wp * pixel):
                    pf[_u(d + k)] = zero
                continue
            for k in range(vlo * pixel):
                pf[_u(d + k)] = zero
            src = ((plane * height + h) * width - pl) * pixel
            if sx == 1:  # the row's pixels in one run
                for k in range(vlo * pixel, vhi * pixel):
                    pf[_u(d + k)] = xf[_u(src + k)]
            else:
                for v in range(vlo, vhi):
                    for c in range(pixel):
                        pf[_u(d + v * pixel + c)] = xf[_u(src + v * sx * pixel + c)]
            for k in range(vhi * pixel, wp * pixel):
                pf[_u(d + k)] = zero


@nb.njit(cache=True, nogil=True)
def tiled_forward(x, x_last, pt, pl, steps, padded_shape, in_place, offsets, pix, wt, bias, relu,
                  channels_last, out):
    """The convolution of samples ``x`` (N, C, H, W), or (N, H, W, C) if ``x_last``, in tiles (see
    the module's docstring), each sample padded first (``pad_into`` or ``pad_into_last``, with the
    row and column ``steps``) into a buffer of ``padded_shape`` (C, Hp, Wp) or (Hp, Wp, C) that
    stays in cache, or read where it lies if ``in_place`` (no padding: the offsets are the
    sample's own): ``offsets`` (K,) each tap's offset in it,
    ``pix`` (OH*OW,) each output pixel's base, ``wt`` (K, Lp) the weight as (C*KH*KW, O) with its
    columns padded with zeros to Lp (a multiple of the tile's lanes), ``bias`` (Lp,) likewise.
    ``out`` (written whole, ReLU'd if ``relu``): (N, O, OH*OW) NCHW, or (N, OH*OW, O) if
    ``channels_last``. A whole tile of a channels-last output is stored there from the
    registers; an NCHW sample's tiles go to a channels-last buffer, transposed into ``out`` once
    the sample is done (``transpose_into``; a scratch tile copied out a value at a time took 8%
    of a 32x32x32 -> 64 3x3 stride-2 layer's forward)."""
    plane, padded = pix.shape[0], bias.shape[0]
    out_channels = out.shape[2] if channels_last else out.shape[1]
    xp = np.empty((1, padded_shape[0], padded_shape[1], padded_shape[2]), dtype=x.dtype)
    xf = xp.reshape(xp.size)
    wf = wt.reshape(wt.size)
    half, pixels, lanes = tile_dims(x.itemsize, padded)  # (tile_shape's: the rows are that long)
    tmp = np.empty(pixels * lanes, dtype=x.dtype)
    # an NCHW sample's sums, channels-last, as many rows as whole tiles cover
    by_pixel = np.empty(0 if channels_last else -(-plane // pixels) * pixels * padded,
                        dtype=x.dtype)
    of = out.reshape(out.size)
    for n in range(x.shape[0]):
        if in_place:
            xf = x[n].reshape(x[n].size)
        elif x_last:
            pad_into_last(x[n : n + 1], pt, pl, steps[0], steps[1], xp)
        else:
            pad_into(x[n : n + 1], pt, pl, steps[0], steps[1], xp)
        for q0 in range(0, plane, pixels):
            npix = min(pixels, plane - q0)
            for ob in range(0, padded, lanes):
                if not channels_last:  # (its pixels p >= npix land in rows past the plane)
                    _tile(xf, pix, q0, npix, offsets, wf, ob, bias, relu, by_pixel,
                          q0 * padded + ob, padded, half)
                    continue
                nlanes = min(lanes, out_channels - ob)
                if npix == pixels and nlanes == lanes:  # whole: from the registers into out
                    _tile(xf, pix, q0, npix, offsets, wf, ob, bias, relu, of,
                          (n * plane + q0) * out_channels + ob, out_channels, half)
                    continue
                _tile(xf, pix, q0, npix, offsets, wf, ob, bias, relu, tmp, 0, lanes, half)
                for p in range(npix):
                    dst_row = out[n, q0 + p]
                    for lane in range(nlanes):
                        dst_row[ob + lane] = tmp[p * lanes + lane]
        if not channels_last:
            transpose_into(by_pixel, 0, padded, plane, out_channels, of, n * out_channels * plane,
                           plane)


# --------------------------------------------------------------------------- the strategy


class TileGeometry(NamedTuple):
    """Where ``tiled_forward`` reads, for one input's channels, kernel and geometry (read-only
    arrays, shared: ``tile_geometry`` keeps them)."""

    offsets: np.ndarray  # (C*KH*KW,) int64: each tap's offset in a padded sample
    pixels: np.ndarray  # (OH*OW,) int64: each output pixel's first tap's offset
    padded_shape: tuple[int, int, int]  # (C, Hp, Wp), or (Hp, Wp, C) for channels-last input
    steps: tuple[int, int]  # the padded copy's row and column steps (a 1x1 kernel's stride, else 1)
    x_last: bool  # for channels-last input
    in_place: bool  # no padding: each sample read where it lies, not copied


class TileLayout(NamedTuple):
    """A convolution's operands as ``tiled_forward`` takes them, for one weight and geometry."""

    weight: np.ndarray  # (C*KH*KW, Lp): W.T, its columns padded with zeros
    bias: np.ndarray  # (Lp,)
    geometry: TileGeometry


@functools.lru_cache(maxsize=256)
def tile_geometry(channels: int, kh: int, kw: int, g: WindowGeometry, x_last: bool = False,
                  image: tuple[int, int] | None = None) -> TileGeometry:
    """The taps' and the output pixels' offsets in a padded sample, and that sample's shape, for
    an input NCHW or (``x_last``) channels-last; made once per convolution shape (18 us of a
    strided layer's 50-80 at batch 1 when made per call). The taps stay in the weight's order
    (c, i, j) either way: the same sums in the same order, whatever the layout. ``image``: the
    input's (H, W); given, a convolution without padding reads each sample where it lies (a
    ResNet's strided 1x1 projection: no copy to make)."""
    in_place = image is not None and (g.top, g.bottom, g.left, g.right) == (0, 0, 0, 0)
    # a 1x1 kernel reads one pixel of each stride: the padded copy takes only those
    steps = (g.sy, g.sx) if (kh, kw) == (1, 1) and not in_place else (1, 1)
    sy, sx = g.sy // steps[0], g.sx // steps[1]  # the windows' stride in the copy
    if in_place:
        hp, wp = image
    else:
        hp = (g.oh - 1) * sy + (kh - 1) * g.dy + 1  # the rows the windows read, padding included
        wp = (g.ow - 1) * sx + (kw - 1) * g.dx + 1
    c = np.arange(channels)[:, None, None]
    i, j = np.arange(kh)[None, :, None], np.arange(kw)[None, None, :]
    oh, ow = np.arange(g.oh)[:, None], np.arange(g.ow)[None, :]
    if x_last:  # (Hp, Wp, C): a pixel's channels are contiguous
        taps = (i * (g.dy * wp) + j * g.dx) * channels + c
        pixels = (oh * (sy * wp) + ow * sx) * channels
        shape = (hp, wp, channels)
    else:  # (C, Hp, Wp)
        taps = c * (hp * wp) + i * (g.dy * wp) + j * g.dx
        pixels = oh * (sy * wp) + ow * sx
        shape = (channels, hp, wp)
    offsets, pixels = taps.reshape(-1).astype(np.int64), pixels.reshape(-1).astype(np.int64)
    offsets.flags.writeable = pixels.flags.writeable = False
    return TileGeometry(offsets, pixels, shape, steps, x_last, in_place)


def tile_layout(weight: np.ndarray, bias: np.ndarray | None, g: WindowGeometry,
                x_last: bool = False, image: tuple[int, int] | None = None) -> TileLayout:
    """``weight`` (O, C, KH, KW) and its tied ``bias`` (O,) or None laid out for ``g``, and for an
    input NCHW or (``x_last``) channels-last of (H, W) ``image`` (``tile_geometry``)."""
    out_channels, channels, kh, kw = weight.shape
    padded = _lanes_padded(out_channels, weight.dtype)
    wt = np.zeros((channels * kh * kw, padded), dtype=weight.dtype)
    wt[:, :out_channels] = weight.reshape(out_channels, -1).T
    b = np.zeros(padded, dtype=weight.dtype)
    if bias is not None and bias.ndim == 1:  # (an untied bias runs im2col's forward instead)
        b[:out_channels] = bias
    return TileLayout(wt, b, tile_geometry(channels, kh, kw, g, x_last, image))


def run_tiles(x: np.ndarray, layout: TileLayout, g: WindowGeometry, relu: bool,
              out: np.ndarray, channels_last: bool = False) -> None:
    """``tiled_forward`` on samples ``x`` C-contiguous, (n, C, H, W), or (n, H, W, C) where the
    layout is for channels-last input; ``out``: (n, O, OH*OW), or (n, OH*OW, O) if
    ``channels_last``."""
    tg = layout.geometry
    tiled_forward(x, tg.x_last, g.top, g.left, tg.steps, tg.padded_shape, tg.in_place,
                  tg.offsets, tg.pixels, layout.weight, layout.bias, relu, channels_last, out)


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
    layout: TileLayout | None = None,
    x_last: bool = False,
    out_last: bool = False,
) -> tuple[np.ndarray, TiledCache | Im2colCache]:
    """``conv2d_forward``'s tiled strategy on checked arguments (as ``conv.im2col.forward``;
    ``groups`` is 1, ``backend`` numba). The cache keeps the input (``keep`` does not apply).
    An untied bias runs im2col's forward (and its backward then). ``layout``: ``tile_layout(weight,
    bias, g, x_last, image)`` for x's (H, W), made once by a caller whose weight does not change
    (a session's). ``x_last`` / ``out_last``:
    x comes (N, H, W, C) / the output goes (N, OH, OW, O), channels-last, from or to a session's
    steps that take them so (a tied bias or none; the layout for that input; no backward
    follows)."""
    if bias is not None and bias.ndim != 1:
        return im2col_forward(x, weight, bias, g, owner=owner, keep=keep, relu=relu, then=then)
    n, out_channels = x.shape[0], weight.shape[0]
    if layout is None:
        layout = tile_layout(weight, bias, g, x_last, x.shape[1:3] if x_last else x.shape[2:])
    plane = g.oh * g.ow
    if out_last:
        out = np.empty((n, g.oh, g.ow, out_channels), dtype=weight.dtype)
        flat = out.reshape(n, plane, out_channels)
    else:
        out = np.empty((n, out_channels, g.oh, g.ow), dtype=weight.dtype)
        flat = out.reshape(n, out_channels, plane)

    def block(s: slice) -> None:
        run_tiles(x[s], layout, g, relu, flat[s], channels_last=out_last)
        if then is not None:
            then(s, out[s])

    _threads.parallel_map(block, _threads.split(n, min(n, 4 * _threads.get_num_threads())))
    cache = TiledCache(x.shape, weight, None if bias is None else bias.shape, g, owner, x,
                       out if relu else None)
    return out, cache


# --------------------------------------------------------------------------- the backward


class TiledCache(NamedTuple):
    """What ``backward`` needs of a tiled convolution."""

    x_shape: tuple[int, int, int, int]
    weight: np.ndarray  # (O, C, KH, KW)
    bias_shape: tuple[int, ...] | None
    geometry: WindowGeometry
    owner: str
    x: np.ndarray  # (N, C, H, W): the input
    out: np.ndarray | None  # relu=True: the output, whose sign is ReLU's derivative


class InputPhases(NamedTuple):
    """The input gradient of a strided convolution as ``SY*SX`` stride-1 convolutions of the
    output gradient dZ, one per phase (the input pixels ``(h, w)`` with one value of
    ``((h + top) % SY, (w + left) % SX)``): only the taps ``(i, j)`` with ``i*DY ≡ h + top`` and
    ``j*DX ≡ w + left`` (mod the strides) reach a phase's pixels. dZ is padded with zeros to
    ``padded_shape`` (O, OHp, OWp), its values at rows ``top`` and columns ``left`` on, so that
    every tap a phase's pixel reads lies in it. Phase k's pixels are ``[pixel_starts[k],
    pixel_starts[k+1])`` of ``bases`` (each pixel's offset in the padded dZ of a sample) and
    ``dests`` (its index in the input's (H*W) plane); its taps ``[tap_starts[k], tap_starts[k+1])``
    of ``offsets`` (each tap's offset from a pixel's base) and ``rows`` (the tap's row of the
    weight laid out as (O*KH*KW, C)). Read-only arrays, shared (``input_phases`` keeps them)."""

    bases: np.ndarray
    dests: np.ndarray
    pixel_starts: np.ndarray
    offsets: np.ndarray
    rows: np.ndarray
    tap_starts: np.ndarray
    padded_shape: tuple[int, int, int]
    top: int
    left: int


def _axis_phases(size: int, out: int, k: int, stride: int, dilation: int, before: int):
    """One axis of ``input_phases``: for each residue r, the taps ``(i, m)`` whose cells land on
    it (input ``a*stride + r - before`` reads dZ at ``a - m``) and its range of ``a``; then dZ's
    padding before and its padded length."""
    phases = []
    for r in range(stride):
        taps = [(i, (i * dilation - r) // stride) for i in range(k) if i * dilation % stride == r]
        first = max(0, -((r - before) // stride))  # the first a whose input pixel is >= 0
        last = (size - 1 + before - r) // stride  # the last whose pixel is < size
        phases.append((taps, first, last))
    pad = max([0] + [m - first for taps, first, last in phases if last >= first for _, m in taps])
    return phases, pad, pad + max([out] + [last + 1 for _, _, last in phases])


@functools.lru_cache(maxsize=256)
def input_phases(out_channels: int, g: WindowGeometry, height: int, width: int) -> InputPhases:
    """``InputPhases`` of a convolution of ``out_channels`` with geometry ``g`` on (H, W) maps."""
    rows_of, top, hp = _axis_phases(height, g.oh, g.kh, g.sy, g.dy, g.top)
    cols_of, left, wp = _axis_phases(width, g.ow, g.kw, g.sx, g.dx, g.left)
    bases, dests, offsets, rows = [], [], [], []
    pixel_starts, tap_starts = [0], [0]
    for r, (row_taps, a0, a1) in enumerate(rows_of):
        for c, (col_taps, b0, b1) in enumerate(cols_of):
            a = np.arange(a0, a1 + 1)[:, None]
            b = np.arange(b0, b1 + 1)[None, :]
            bases.append((a * wp + b).reshape(-1))
            dests.append(((a * g.sy + r - g.top) * width + b * g.sx + c - g.left).reshape(-1))
            pixel_starts.append(pixel_starts[-1] + bases[-1].size)
            for o in range(out_channels):
                for i, mi in row_taps:
                    for j, mj in col_taps:
                        offsets.append(o * hp * wp + (top - mi) * wp + left - mj)
                        rows.append((o * g.kh + i) * g.kw + j)
            tap_starts.append(len(offsets))
    arrays = [np.concatenate(bases), np.concatenate(dests), np.array(pixel_starts),
              np.array(offsets), np.array(rows), np.array(tap_starts)]
    arrays = [array.astype(np.int64) for array in arrays]
    for array in arrays:
        array.flags.writeable = False
    return InputPhases(*arrays, (out_channels, hp, wp), top, left)


@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def dz_layouts(d, y, relu, top, left, dzp, dzt, bias_grad):
    """The output gradient in the two layouts the backward's tiles read. d, y: (n, O, OH, OW) (y,
    the output, only if ``relu``: dZ = d where y > 0, else 0). Written whole: ``dzp`` (n, O, OHp,
    OWp), dZ at rows ``top`` and columns ``left`` on, zeros around; ``dzt`` (n*OH*OW, Lo), dZ
    channels-last, columns past O zero, each row of dzp's pixels transposed in blocks
    (``transpose_into``); ``bias_grad`` (O,) float64, dZ's sums (``reassoc``: in any order, so
    that they vectorise, as ``im2col.nchw_to_cm``'s)."""
    n_count, o_count, oh, ow = d.shape
    plane, lo = oh * ow, dzt.shape[1]
    padded_plane = dzp.shape[2] * dzp.shape[3]
    dzp[:] = 0
    bias_grad[:] = 0.0
    zero = d.dtype.type(0)
    pf, tf = dzp.reshape(dzp.size), dzt.reshape(dzt.size)
    for n in range(n_count):
        for o in range(o_count):
            total = 0.0
            for r in range(oh):
                src, sign, dst = d[n, o, r], y[n, o, r], dzp[n, o, top + r]
                if relu:  # (both values loaded, then one picked: a select, which vectorises)
                    for v in range(ow):
                        value, kept = src[v], sign[v] > 0
                        value = value if kept else zero
                        dst[_u(left + v)] = value
                        total += value
                else:
                    for v in range(ow):
                        dst[_u(left + v)] = src[v]
                        total += src[v]
            bias_grad[o] += total
        for r in range(oh):  # row r's pixels: (O, OW) at a plane's stride -> (OW, O) rows of Lo
            transpose_into(pf, (n * o_count * dzp.shape[2] + top + r) * dzp.shape[3] + left,
                           padded_plane, o_count, ow, tf, (n * plane + r * ow) * lo, lo)
        for q in range(n * plane, (n + 1) * plane):
            for o in range(o_count, lo):
                tf[_u(q * lo + o)] = zero


@nb.njit(cache=True, nogil=True)
def weight_tiles(xf, taps, pixels, dzt, zeros, dwt):
    """The weight gradient in tiles: ``dwt[t, o] = sum_q xf[taps[t] + pixels[q]] * dzt[q, o]``,
    the forward's sums with the roles of taps and pixels swapped (a tile of P taps x L output
    channels; the loop runs over the slice's output pixels q). xf: the slice's padded input,
    flat; ``pixels`` (n*OH*OW,): each output pixel's base in it; dzt (n*OH*OW, Lo); zeros (Lo,);
    dwt (K, Lo) written whole."""
    k, lo = taps.shape[0], dzt.shape[1]
    half, count, lanes = tile_dims(xf.itemsize, lo)
    tmp = np.empty(count * lanes, dtype=xf.dtype)
    df, of = dzt.reshape(dzt.size), dwt.reshape(dwt.size)
    for t0 in range(0, k, count):
        ntaps = min(count, k - t0)
        for ob in range(0, lo, lanes):
            if ntaps == count:  # whole: from the registers into dwt's rows
                _tile(xf, taps, t0, ntaps, pixels, df, ob, zeros, False, of, t0 * lo + ob, lo,
                      half)
                continue
            _tile(xf, taps, t0, ntaps, pixels, df, ob, zeros, False, tmp, 0, lanes, half)
            for p in range(ntaps):
                for lane in range(lanes):
                    dwt[t0 + p, ob + lane] = tmp[p * lanes + lane]


@nb.njit(cache=True, nogil=True)
def input_tiles(dzp, bases, dests, pixel_starts, offsets, tap_starts, wf, zeros, dx):
    """The input gradient in tiles, phase by phase (``InputPhases``): ``dx[n, c, dests[q]] =
    sum_t wf[t*Lc + c] * dzp[n].flat[bases[q] + offsets[t]]`` over the taps t of q's phase (0
    where a phase has none). dzp (n, O, OHp, OWp); wf: the phases' weight rows (T, Lc), flat;
    zeros (Lc,); dx (n, C, H*W) written whole. A sample's tiles go through a scratch tile to a
    channels-last buffer (H*W, Lc), each pixel's lanes one contiguous run at its row
    ``dests[q]``, and the buffer is then transposed into dx[n] (``transpose_into``): the tiles
    stored transposed from the registers in the phases' pixel order, then moved to their pixels
    a value at a time, took 82-83 us of a 32x32x32 sample's input gradient (Intel Xeon, 3x3
    stride 2, 64 output channels, one thread), this way 70-72 (of which the tiles alone 57-59,
    the copies to the buffer 2-5 and the transpose 5-7)."""
    n_count, c_count = dx.shape[0], dx.shape[1]
    lc = zeros.shape[0]
    half, count, lanes = tile_dims(dx.itemsize, lc)
    tmp = np.empty(count * lanes, dtype=dx.dtype)
    hw = dx.shape[2]
    by_pixel = np.empty(hw * lc, dtype=dx.dtype)  # a sample's input gradient, channels-last
    zero = dx.dtype.type(0)
    for n in range(n_count):
        zf = dzp[n].reshape(dzp[n].size)
        for k in range(pixel_starts.shape[0] - 1):
            q_start, q_stop = pixel_starts[k], pixel_starts[k + 1]
            t_start, t_stop = tap_starts[k], tap_starts[k + 1]
            if t_start == t_stop:  # no tap lands on this phase
                for q in range(q_start, q_stop):
                    for lane in range(lc):
                        by_pixel[_u(dests[q] * lc + lane)] = zero
                continue
            phase_bases, phase_offsets = bases[q_start:q_stop], offsets[t_start:t_stop]
            phase_w = wf[t_start * lc : t_stop * lc]
            for q0 in range(0, q_stop - q_start, count):
                npix = min(count, q_stop - q_start - q0)
                for ob in range(0, lc, lanes):
                    _tile(zf, phase_bases, q0, npix, phase_offsets, phase_w, ob, zeros, False,
                          tmp, 0, lanes, half)
                    for p in range(npix):
                        at = dests[q_start + q0 + p] * lc + ob
                        for lane in range(lanes):
                            by_pixel[_u(at + lane)] = tmp[_u(p * lanes + lane)]
        transpose_into(by_pixel, 0, lc, hw, c_count, dx[n].reshape(dx[n].size), 0, hw)


@nb.njit(cache=True, nogil=True)
def slice_grads(x, d, y, relu, pt, pl, steps, padded_shape, taps, pixels, phase_top, phase_left,
                dz_shape, bases, dests, pixel_starts, offsets, tap_starts, wf, zeros_o, zeros_c,
                input_grad, dx, dwt, bias_grad):
    """One batch slice's gradients, in one call (the slice's temporaries made here): x (n, C, H,
    W), d and y (n, O, OH, OW) as ``dz_layouts`` takes them; ``steps``, ``padded_shape``, ``taps``
    and ``pixels`` of the forward's ``TileGeometry``; ``phase_top``, ``phase_left``, ``dz_shape``
    and the phases' arrays of ``InputPhases``; ``wf`` the phases' weight rows, flat. Written whole:
    ``dwt`` (K, Lo), this slice's share of the weight gradient (``weight_tiles``), ``bias_grad``
    (O,) float64, and if ``input_grad``, ``dx`` (n, C, H*W) (``input_tiles``)."""
    n = x.shape[0]
    plane, lo = pixels.shape[0], zeros_o.shape[0]
    dzp = np.empty((n, dz_shape[0], dz_shape[1], dz_shape[2]), dtype=x.dtype)
    dzt = np.empty((n * plane, lo), dtype=x.dtype)
    dz_layouts(d, y, relu, phase_top, phase_left, dzp, dzt, bias_grad)
    xp = np.empty((n, padded_shape[0], padded_shape[1], padded_shape[2]), dtype=x.dtype)
    pad_into(x, pt, pl, steps[0], steps[1], xp)
    sample = padded_shape[0] * padded_shape[1] * padded_shape[2]
    slice_pixels = np.empty(n * plane, dtype=np.int64)
    for m in range(n):
        for q in range(plane):
            slice_pixels[m * plane + q] = m * sample + pixels[q]
    weight_tiles(xp.reshape(xp.size), taps, slice_pixels, dzt, zeros_o, dwt)
    if input_grad:
        input_tiles(dzp, bases, dests, pixel_starts, offsets, tap_starts, wf, zeros_c, dx)


def _lanes_padded(channels: int, dtype: np.dtype) -> int:
    """``channels`` rounded up to a whole number of the tile's lanes (``tile_shape``)."""
    lanes = tile_shape(dtype, channels)[1]
    return -(-channels // lanes) * lanes


def backward(
    dout: np.ndarray | None,
    cache: TiledCache,
    input_grad: bool = True,
    *,
    dout_of: Callable[[slice], np.ndarray] | None = None,
    dz_into: Callable[[slice, np.ndarray, np.ndarray], None] | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``conv2d_backward`` of a tiled convolution: ``(dx, dweight, dbias)``, both products in
    tiles, with no im2col matrix and no col2im: the weight gradient as the forward's sums with
    taps and pixels swapped (``weight_tiles``), the input gradient as one stride-1 convolution of
    dZ per stride phase (``input_tiles``), each batch slice on its thread. ``dout`` checked, or
    None and ``dout_of(s)`` gives it per batch slice (``dz_into`` does not apply: it writes
    im2col's layout). Its slow twin is im2col's backward."""
    g, weight, x = cache.geometry, cache.weight, cache.x
    n, channels, height, width = cache.x_shape
    out_channels, _, kh, kw = weight.shape
    dtype, plane = weight.dtype, g.oh * g.ow
    relu = cache.out is not None
    taps = tile_geometry(channels, kh, kw, g)  # the forward's padded copy of a sample
    sample = int(np.prod(taps.padded_shape))
    lo = _lanes_padded(out_channels, dtype)
    zeros_o = np.zeros(lo, dtype=dtype)
    phases = input_phases(out_channels, g, height, width)
    if input_grad:
        lc = _lanes_padded(channels, dtype)
        zeros_c = np.zeros(lc, dtype=dtype)
        by_tap = weight.transpose(0, 2, 3, 1).reshape(-1, channels)  # (O*KH*KW, C)
        wf = np.zeros((phases.rows.size, lc), dtype=dtype)
        wf[:, :channels] = by_tap[phases.rows]
        wf = wf.reshape(-1)
        dx = np.empty(cache.x_shape, dtype=dtype)
    else:  # (input_tiles is not called: an empty stand-in for the arguments)
        zeros_c, wf, dx = zeros_o, zeros_o, None
    dx3 = (np.empty((n, 0, 0), dtype=dtype) if dx is None
           else dx.reshape(n, channels, height * width))
    per_sample = (sample + int(np.prod(phases.padded_shape)) + plane * lo) * x.itemsize

    def block(s: slice) -> tuple[np.ndarray, np.ndarray]:
        d = dout[s] if dout_of is None else dout_of(s).reshape(-1, out_channels, g.oh, g.ow)
        dwt = np.empty((taps.offsets.size, lo), dtype=dtype)
        tied = np.empty(out_channels, dtype=np.float64)
        slice_grads(x[s], d, cache.out[s] if relu else d, relu, g.top, g.left, taps.steps,
                    taps.padded_shape, taps.offsets, taps.pixels, phases.top, phases.left,
                    phases.padded_shape, phases.bases, phases.dests, phases.pixel_starts,
                    phases.offsets, phases.tap_starts, wf, zeros_o, zeros_c, input_grad,
                    dx3[s], dwt, tied)
        return dwt, tied

    parts = _threads.parallel_map(block, cache_slices(n, per_sample))
    dwt = summed([part[0] for part in parts])
    dweight = np.empty(weight.shape, dtype=dtype)  # dwt's first O columns, transposed
    transpose_into(dwt.reshape(-1), 0, lo, dwt.shape[0], out_channels, dweight.reshape(-1), 0,
                   dwt.shape[0])
    dbias = None
    if cache.bias_shape is not None:
        dbias = sum(part[1] for part in parts).astype(dtype)
    return dx, dweight, dbias
