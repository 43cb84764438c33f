"""The register tile of the tiled convolution (``conv/tiled.py``): P pixels x L output channels
of sums kept in vector registers while a loop runs over the taps, each tap one vector of L weights
and P input values (P vector multiply-adds), as oneDNN's and XNNPACK's direct kernels keep theirs.

``tile`` is a Numba intrinsic written in LLVM IR (``conv/vectors.py`` says why); LLVM lowers the
L-wide vectors to whatever the CPU has (16 or 8 float32 lanes a register). The forward, the weight
gradient and the input gradient of the tiled strategy all run on it, with different arrays in its
places: what it computes is only ``dst[d0 + p*stride + l] = bias[ob + l] + sum_t wf[t*Lp + ob + l] *
xf[bases[q0 + p] + offsets[t]]``. Where the caller wants each lane's pixels together (NCHW maps),
it transposes whole samples of tiles afterwards (``conv/transpose.py``).
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .vectors import FLOAT32_LANES, I64, WIDE, const, fmuladd, splat, vector_at

__all__ = ["LANES", "PIXELS", "tile", "tile_dims", "tile_shape"]

# the register tile, P pixels x L lanes of float32 (float64 has L // 2): 16 of the 32 registers of
# 16 float32 hold the sums with AVX-512 (measured, (C, H, O) (16, 32, 32), one thread: 4 x 32 70
# GMAC/s, 8 x 32 80; (32, 16, 64): 4 x 32 52, 8 x 32 71, 4 x 64 83), 12 of the 16 registers of 8
# float32 without (compiled for Haswell, OpenBLAS's Haswell kernels, 2 threads, forward with ReLU,
# tiled / im2col time, (N, C, H, O, kernel): 4 x 16 / 6 x 16: (64, 16, 32, 32, 3) 0.56 / 0.57;
# (64, 32, 16, 64, 3) 0.89 / 0.69; (32, 32, 32, 64, 3) 1.03 / 0.84; (64, 16, 32, 32, 1) 0.78 /
# 0.76). With at most L / 2 output channels, the tile has twice the pixels and half the lanes
# (the same registers, none of them holding padding).
PIXELS, LANES = (8, 2 * FLOAT32_LANES) if WIDE else (6, 2 * FLOAT32_LANES)


@nb.njit(cache=True, inline="always")
def tile_dims(itemsize, row):
    """(half, P, L) of the tile whose lanes run over ``row`` values (the output channels, or a
    weight row already padded to a whole number of lanes) of ``itemsize``-byte floats on this
    CPU: the half tile, 2P pixels x L/2 lanes, where they fit in half the lanes. The one rule
    the kernels (in Numba) and ``tile_shape`` (in Python) share."""
    whole = LANES if itemsize == 4 else LANES // 2
    half = row <= whole // 2
    return half, (2 * PIXELS if half else PIXELS), (whole // 2 if half else whole)


def tile_shape(dtype: np.dtype, out_channels: int) -> tuple[int, int]:
    """(P, L): the pixels and the output channels of a tile for ``dtype`` on this CPU."""
    _, pixels, lanes = tile_dims(np.dtype(dtype).itemsize, out_channels)
    return pixels, lanes


# --------------------------------------------------------------------------- the tile, in LLVM IR


@intrinsic
def tile(typingctx, xf, bases, q0, npix, offsets, wf, ob, bias, relu, dst, d0, stride, half):
    """``tile(xf, bases, q0, npix, offsets, wf, ob, bias, relu, dst, d0, stride, half)``: this
    CPU's tile for ``xf``'s dtype, P x L (``tile_shape``'s), or 2P x L/2 if ``half``:
    ``dst[d0 + p*stride + l] = f(bias[ob + l] + sum_t wf[t*Lp + ob + l] * xf[bases[q0 + p] +
    offsets[t]])`` for every p and l (f = ReLU if ``relu``), Lp = ``bias.shape[0]``, the weight's
    row length (a multiple of the tile's lanes). ``dst`` is a scratch tile (d0 0, stride the
    tile's lanes), or a channels-last output's pixels when the tile is whole there (its stride the
    output's channels). A pixel p >= npix is computed on pixel q0's input (in bounds; the caller
    does not copy it out). Both shapes are compiled in; ``half`` picks one at run time."""
    sig = types.void(xf, bases, q0, npix, offsets, wf, ob, bias, relu, dst, d0, stride, half)
    return sig, _whole_or_half(tile_ir, xf.dtype)


def _whole_or_half(make_ir, dtype):
    """The codegen of a tile intrinsic whose last argument is ``half``: both of this CPU's tile
    shapes for ``dtype`` emitted by ``make_ir(pixels, lanes)``, P x L and 2P x L/2, one picked at
    run time."""
    whole = LANES if dtype == types.float32 else LANES // 2
    tiles = (make_ir(PIXELS, whole), make_ir(2 * PIXELS, whole // 2))

    def codegen(context, builder, signature, args):
        is_half = builder.icmp_unsigned("!=", args[-1], ir.Constant(args[-1].type, 0))
        with builder.if_else(is_half) as (halved, otherwise):
            with halved:
                tiles[1](context, builder, signature, args)
            with otherwise:
                tiles[0](context, builder, signature, args)
        return context.get_dummy_value()

    return codegen


def tile_ir(pixels: int, lanes: int):
    """The IR of a tile of ``pixels`` x ``lanes`` (``_tile``'s), emitted where the builder is."""

    def emit(context, builder, signature, args):
        arrays = {i: context.make_array(signature.args[i])(context, builder, args[i])
                  for i in (0, 1, 4, 5, 7, 9)}
        vt = ir.VectorType(context.get_data_type(signature.args[0].dtype), lanes)
        row = cgutils.unpack_tuple(builder, arrays[7].shape, 1)[0]
        start = builder.load(vector_at(builder, arrays[7].data, args[6], vt), align=1)
        totals = _tap_sums(builder, arrays[0], arrays[1], args[2], args[3], arrays[4], arrays[5],
                           args[6], row, start, pixels, vt)
        # ReLU as the other epilogues take it: v if v > 0 else 0 (a NaN becomes 0)
        relu_v = args[8]
        zero = ir.Constant(vt, [0.0] * lanes)
        use_relu = builder.icmp_unsigned("!=", relu_v, ir.Constant(relu_v.type, 0))
        d0 = context.cast(builder, args[10], signature.args[10], types.int64)
        stride = context.cast(builder, args[11], signature.args[11], types.int64)
        for p, total in enumerate(totals):
            clipped = builder.select(builder.fcmp_ordered(">", total, zero), total, zero)
            at = builder.add(d0, builder.mul(const(p), stride))
            builder.store(builder.select(use_relu, clipped, total),
                          vector_at(builder, arrays[9].data, at, vt), align=1)

    return emit


def _tap_sums(builder, xf, bases, q0, npix, offsets, wf, ob, row, start, pixels, vt):
    """The tap loop the tiles share, emitted where the builder is, which it leaves after the
    loop: the ``pixels`` vectors of sums, each ``start + sum_t wf[t*row + ob + l] * xf[bases[q] +
    offsets[t]]`` with q = q0 + p (q0 for a pixel p >= npix: its input is in bounds, its sums
    unused)."""
    fma = fmuladd(builder, vt)
    taps = cgutils.unpack_tuple(builder, offsets.shape, 1)[0]
    pixel_bases = []
    for p in range(pixels):
        q = builder.select(builder.icmp_signed("<", const(p), npix), builder.add(q0, const(p)),
                           q0)
        pixel_bases.append(builder.load(builder.gep(bases.data, [q])))
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
    offset = builder.load(builder.gep(offsets.data, [t]))
    weights = builder.load(vector_at(builder, wf.data, builder.add(builder.mul(t, row), ob), vt),
                           align=1)
    summed = []
    for p, s in enumerate(sums):
        value = builder.load(builder.gep(xf.data, [builder.add(pixel_bases[p], offset)]))
        summed.append(builder.call(fma, [splat(builder, value, vt), weights, s]))
    t_next = builder.add(t, const(1))
    last = builder.basic_block
    t.add_incoming(t_next, last)
    for s, s_next in zip(sums, summed):
        s.add_incoming(s_next, last)
    builder.cbranch(builder.icmp_signed("<", t_next, taps), loop, done)

    builder.position_at_end(done)
    totals = [builder.phi(vt) for _ in summed]  # (phi nodes lead their block)
    for total, s_next in zip(totals, summed):
        total.add_incoming(start, entry)
        total.add_incoming(s_next, last)
    return totals
