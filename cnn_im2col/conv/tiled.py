"""The tiled strategy of a strided convolution: a direct kernel that keeps a tile of P output
pixels x L output channels in vector registers while it runs over the taps, with no im2col matrix.

For output pixel q (of a sample) and output channel o,

    out[o, q] = bias[o] + sum_t W[o, t] * xp[base[q] + offset[t]]

where ``xp`` is the sample's input with its padding made real (zeros), ``t = (c*KH + i)*KW + j``
runs over the K = C*KH*KW taps, ``offset[t] = c*Hp*Wp + i*DY*Wp + j*DX`` and ``base[q] =
oh*SY*Wp + ow*SX``. For a tile, each tap loads one vector of L weights (``W.T``'s row t, so the
channels are contiguous) and P input values, and does P vector multiply-adds: the P x L sums stay in
registers from the first tap to the last, as oneDNN's and XNNPACK's direct kernels keep theirs. A
1x1 kernel (a ResNet's strided projection) reads one pixel of each stride, so its copy of the
input takes only those, and its tiles then run at stride 1. The tile is written in LLVM IR
(``_tile``, a Numba intrinsic: ``conv/vectors.py`` says why); LLVM lowers the L-wide vectors
to whatever the CPU has (16 or 8 float32 lanes a register). A whole tile of a channels-last output
is stored from the registers straight into it; an NCHW output, and the tiles at the edges, go
through a scratch tile (one thread, batch 64, channels-last in and out: (C, H, O, kernel) (16, 32,
32, 3) 1158 -> 988 us, (32, 16, 64, 3) 1089-1199 -> 929-1012, (16, 32, 32, 1) 350-380 -> 319;
2026-12-05, Intel Xeon).

Why: a strided convolution's im2col matrix has K rows and a quarter of the input's columns, so
copying it costs about as much as its GEMM, which is short (O rows). Measured 2026-12-05, Intel Xeon
(AVX-512), one thread, batch 64, 3x3 stride 2 pad 1, forward with ReLU: (C, H, O) (16, 32, 32)
im2col + GEMM + epilogue 40 us a sample, this kernel 15.8 (PyTorch on one thread 23); (32, 16, 64)
37 -> 14.2.

The backward is im2col's, its matrix rebuilt slice by slice from the kept input (as the direct
strategy's). The im2col strategy is this one's slow twin: the tests hold them equal to rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import threads as _threads
from ..arrays import cache_slices
from ..arrays import unsigned as _u
from ..shapes import WindowGeometry
from .im2col import Im2colCache, backward
from .im2col import forward as im2col_forward
from .vectors import FLOAT32_LANES, I64, WIDE, const, fmuladd, splat, vector_at

__all__ = ["TileGeometry", "TileLayout", "backward", "forward", "pad_into", "run_tiles", "supports",
           "tile_geometry", "tile_layout", "tile_shape", "tiled_forward"]


def supports(weight_shape: tuple[int, ...], g: WindowGeometry, groups: int) -> bool:
    """Whether a convolution takes this strategy (under "auto", numba): groups 1 and a stride of 2
    or more in either axis (a 1x1 kernel too: a ResNet's projection)."""
    return groups == 1 and max(g.sy, g.sx) >= 2


# the register tile, P pixels x L lanes of float32 (float64 has L // 2): 16 of the 32 registers of
# 16 float32 hold the sums with AVX-512 (measured, (C, H, O) (16, 32, 32), one thread: 4 x 32 70
# GMAC/s, 8 x 32 80; (32, 16, 64): 4 x 32 52, 8 x 32 71, 4 x 64 83), 12 of the 16 registers of 8
# float32 without (compiled for Haswell, OpenBLAS's Haswell kernels, 2 threads, forward with ReLU,
# tiled / im2col time, (N, C, H, O, kernel): 4 x 16 / 6 x 16: (64, 16, 32, 32, 3) 0.56 / 0.57;
# (64, 32, 16, 64, 3) 0.89 / 0.69; (32, 32, 32, 64, 3) 1.03 / 0.84; (64, 16, 32, 32, 1) 0.78 /
# 0.76). With at most L / 2 output channels, the tile has twice the pixels and half the lanes
# (the same registers, none of them holding padding).
_PIXELS, _LANES = (8, 2 * FLOAT32_LANES) if WIDE else (6, 2 * FLOAT32_LANES)


def tile_shape(dtype: np.dtype, out_channels: int) -> tuple[int, int]:
    """(P, L): the pixels and the output channels of a tile for ``dtype`` on this CPU."""
    lanes = _LANES if np.dtype(dtype) == np.float32 else _LANES // 2
    return (2 * _PIXELS, lanes // 2) if out_channels <= lanes // 2 else (_PIXELS, lanes)


# --------------------------------------------------------------------------- the tile, in LLVM IR


@intrinsic
def _tile(typingctx, xf, bases, q0, npix, offsets, wf, ob, bias, relu, dst, d0, stride, half):
    """``_tile(xf, bases, q0, npix, offsets, wf, ob, bias, relu, dst, d0, stride, half)``: this
    CPU's tile for ``xf``'s dtype, P x L (``tile_shape``'s), or 2P x L/2 if ``half``:
    ``dst[d0 + p*stride + l] = f(bias[ob + l] + sum_t wf[t*Lp + ob + l] * xf[bases[q0 + p] +
    offsets[t]])`` for every p and l (f = ReLU if ``relu``), Lp = ``bias.shape[0]``, the weight's
    row length (a multiple of the tile's lanes). ``dst`` is a scratch tile (d0 0, stride the
    tile's lanes), or a channels-last output's pixels when the tile is whole there (its stride the
    output's channels). A pixel p >= npix is computed on pixel q0's input (in bounds; the caller
    does not copy it out). Both shapes are compiled in; ``half`` picks one at run time."""
    sig = types.void(xf, bases, q0, npix, offsets, wf, ob, bias, relu, dst, d0, stride, half)
    whole = _LANES if xf.dtype == types.float32 else _LANES // 2
    tiles = (_tile_ir(_PIXELS, whole), _tile_ir(2 * _PIXELS, whole // 2))

    def codegen(context, builder, signature, args):
        is_half = builder.icmp_unsigned("!=", args[12], ir.Constant(args[12].type, 0))
        with builder.if_else(is_half) as (halved, otherwise):
            with halved:
                tiles[1](context, builder, signature, args)
            with otherwise:
                tiles[0](context, builder, signature, args)
        return context.get_dummy_value()

    return sig, codegen


def _tile_ir(pixels: int, lanes: int):
    """The IR of a tile of ``pixels`` x ``lanes`` (``_tile``'s), emitted where the builder is."""

    def emit(context, builder, signature, args):
        (xf_v, bases_v, q0_v, npix_v, off_v, wf_v, ob_v, bias_v, relu_v, dst_v, d0_v,
         stride_v) = args[:12]
        arrays = {i: context.make_array(signature.args[i])(context, builder, args[i])
                  for i in (0, 1, 4, 5, 7, 9)}
        xp, basep, offp, wp, bp, tp = (arrays[i].data for i in (0, 1, 4, 5, 7, 9))
        taps = cgutils.unpack_tuple(builder, arrays[4].shape, 1)[0]
        row = cgutils.unpack_tuple(builder, arrays[7].shape, 1)[0]
        ft = context.get_data_type(signature.args[0].dtype)
        vt = ir.VectorType(ft, lanes)
        fma = fmuladd(builder, vt)
        start = builder.load(vector_at(builder, bp, ob_v, vt), align=1)
        pixel_bases = []
        for p in range(pixels):
            q = builder.select(builder.icmp_signed("<", const(p), npix_v),
                               builder.add(q0_v, const(p)), q0_v)
            pixel_bases.append(builder.load(builder.gep(basep, [q])))
        entry = builder.basic_block
        loop = builder.append_basic_block("tile.taps")
        done = builder.append_basic_block("tile.done")
        builder.cbranch(builder.icmp_signed(">", taps, const(0)), loop, done)

        # the taps: one vector of weights and a value per pixel each, the sums in registers
        builder.position_at_end(loop)
        t = builder.phi(I64)
        t.add_incoming(const(0), entry)
        sums = [builder.phi(vt) for _ in range(pixels)]
        for s in sums:
            s.add_incoming(start, entry)
        offset = builder.load(builder.gep(offp, [t]))
        weight_at = builder.add(builder.mul(t, row), ob_v)
        weights = builder.load(vector_at(builder, wp, weight_at, vt), align=1)
        summed = []
        for p, s in enumerate(sums):
            value = builder.load(builder.gep(xp, [builder.add(pixel_bases[p], offset)]))
            summed.append(builder.call(fma, [splat(builder, value, vt), weights, s]))
        t_next = builder.add(t, const(1))
        last = builder.basic_block
        t.add_incoming(t_next, last)
        for s, s_next in zip(sums, summed):
            s.add_incoming(s_next, last)
        builder.cbranch(builder.icmp_signed("<", t_next, taps), loop, done)

        # ReLU as the other epilogues take it: v if v > 0 else 0 (a NaN becomes 0)
        builder.position_at_end(done)
        totals = [builder.phi(vt) for _ in summed]  # (phi nodes lead their block)
        for total, s_next in zip(totals, summed):
            total.add_incoming(start, entry)
            total.add_incoming(s_next, last)
        zero = ir.Constant(vt, [0.0] * lanes)
        use_relu = builder.icmp_unsigned("!=", relu_v, ir.Constant(relu_v.type, 0))
        d0_64 = context.cast(builder, d0_v, signature.args[10], types.int64)
        stride_64 = context.cast(builder, stride_v, signature.args[11], types.int64)
        for p, total in enumerate(totals):
            clipped = builder.select(builder.fcmp_ordered(">", total, zero), total, zero)
            at = builder.add(d0_64, builder.mul(const(p), stride_64))
            builder.store(builder.select(use_relu, clipped, total),
                          vector_at(builder, tp, at, vt), align=1)

    return emit


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
    ``channels_last``."""
    plane, padded = pix.shape[0], bias.shape[0]
    out_channels = out.shape[2] if channels_last else out.shape[1]
    xp = np.empty((1, padded_shape[0], padded_shape[1], padded_shape[2]), dtype=x.dtype)
    xf = xp.reshape(xp.size)
    wf = wt.reshape(wt.size)
    whole = _LANES if x.itemsize == 4 else _LANES // 2
    half = padded <= whole // 2  # (tile_shape's choice: the weight's rows are that long)
    pixels = 2 * _PIXELS if half else _PIXELS
    lanes = whole // 2 if half else whole
    tmp = np.empty(pixels * lanes, dtype=x.dtype)
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
                nlanes = min(lanes, out_channels - ob)
                # a whole tile of a channels-last output goes there from the registers
                stored = channels_last and npix == pixels and nlanes == lanes
                if stored:
                    dst, d0, stride = of, (n * plane + q0) * out_channels + ob, out_channels
                else:
                    dst, d0, stride = tmp, 0, lanes
                _tile(xf, pix, q0, npix, offsets, wf, ob, bias, relu, dst, d0, stride, half)
                if stored:
                    continue
                if npix == pixels and nlanes == lanes and half:  # whole: loops of fixed length
                    _copy_tile(tmp, out, n, q0, ob, 2 * _PIXELS, whole // 2, channels_last)
                elif npix == pixels and nlanes == lanes:
                    _copy_tile(tmp, out, n, q0, ob, _PIXELS, whole, channels_last)
                elif channels_last:
                    for p in range(npix):
                        dst_row = out[n, q0 + p]
                        for lane in range(nlanes):
                            dst_row[ob + lane] = tmp[p * lanes + lane]
                else:
                    for lane in range(nlanes):
                        dst_row = out[n, ob + lane]
                        for p in range(npix):
                            dst_row[q0 + p] = tmp[p * lanes + lane]


@nb.njit(cache=True, nogil=True, inline="always")
def _copy_tile(tmp, out, n, q0, ob, pixels, lanes, channels_last):
    """A whole tile (``pixels`` x ``lanes``, both constants where inlined) out of ``tmp``."""
    if channels_last:
        for p in range(pixels):
            dst = out[n, q0 + p]
            for lane in range(lanes):
                dst[_u(ob + lane)] = tmp[_u(p * lanes + lane)]
    else:
        for lane in range(lanes):
            dst = out[n, ob + lane]
            for p in range(pixels):
                dst[_u(q0 + p)] = tmp[_u(p * lanes + lane)]


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
    lanes = tile_shape(weight.dtype, out_channels)[1]
    padded = -(-out_channels // lanes) * lanes
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
) -> tuple[np.ndarray, Im2colCache]:
    """``conv2d_forward``'s tiled strategy on checked arguments (as ``conv.im2col.forward``;
    ``groups`` is 1, ``backend`` numba). The cache is im2col's with the input kept (``keep`` does
    not apply): ``backward`` (im2col's) rebuilds each slice's matrix from it. An untied bias runs
    im2col's forward. ``layout``: ``tile_layout(weight, bias, g, x_last, image)`` for x's (H, W),
    made once by a caller whose weight does not change (a session's). ``x_last`` / ``out_last``:
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
    # backward's slices, in which it rebuilds the matrix: as many samples as keep it in cache
    slices = cache_slices(n, x.shape[1] * g.kh * g.kw * g.oh * g.ow * x.itemsize)
    cache = Im2colCache(x.shape, weight, None if bias is None else bias.shape, g, 1, "numba",
                        owner, None, x, slices, out if relu else None)
    return out, cache
