"""Transposes of a matrix between two flat arrays, B x B blocks at a time in vector registers
(B: one register's floats, 16 float32 with AVX-512, 8 without; float64 half as many).

The tiled strategy (``conv/tiled.py``) makes its sums a pixel at a time, the channels of a pixel in
one vector, and its NCHW arrays want each channel's pixels together. A transpose one value at a
time moves about one value a cycle; a block's B loads, log2(B) rounds of B two-vector shuffles and
B stores move B*B. Measured 2026-12-06, Intel Xeon (AVX-512), one thread, a (1024, 32) float32
matrix into (32, 1024): one value at a time 8.0-11.3 us, in blocks 6.8 us where the destination's
rows start on a cache line, 11 where they do not (each 64-byte store then spans two lines). So
where the destination's rows are a whole number of lines apart, the blocks start at its first
line boundary and the values before it go one at a time.

NumPy's ``.T`` copy is the slow twin: the tests hold them equal, value for value, on drawn shapes,
offsets, strides and dtypes.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..arrays import unsigned as _u
from .vectors import I32, const, lanes_of, vector_at

__all__ = ["transpose_block", "transpose_into"]

_LINE = 64  # bytes in a cache line


@intrinsic
def transpose_block(typingctx, src, s0, s_stride, dst, d0, d_stride):
    """``transpose_block(src, s0, s_stride, dst, d0, d_stride)``: ``dst[d0 + j*d_stride + i] =
    src[s0 + i*s_stride + j]`` for i, j < B (``vectors.lanes_of``), src and dst flat arrays of one
    float dtype: B rows loaded as vectors, log2(B) rounds of interleaving pairs of rows (after
    them, row j holds column j), B vectors stored. No bounds are checked."""
    sig = types.void(src, s0, s_stride, dst, d0, d_stride)
    lanes = lanes_of.py_func(src.dtype.bitwidth // 8)

    def codegen(context, builder, signature, args):
        source = context.make_array(signature.args[0])(context, builder, args[0])
        target = context.make_array(signature.args[3])(context, builder, args[3])
        vt = ir.VectorType(context.get_data_type(signature.args[0].dtype), lanes)
        s0_, ss, d0_, ds = (context.cast(builder, args[k], signature.args[k], types.int64)
                            for k in (1, 2, 4, 5))
        rows = [builder.load(vector_at(builder, source.data,
                                       builder.add(s0_, builder.mul(const(r), ss)), vt), align=1)
                for r in range(lanes)]
        # a round: rows (i, i + B/2) -> their first halves interleaved, then their second halves;
        # after log2(B) rounds value (i, j) has moved to row j, lane i
        half = lanes // 2
        order = ir.VectorType(I32, lanes)
        low = ir.Constant(order, [v for k in range(half) for v in (k, k + lanes)])
        high = ir.Constant(order, [v for k in range(half, lanes) for v in (k, k + lanes)])
        for _ in range(lanes.bit_length() - 1):
            rows = [shuffled for i in range(half)
                    for shuffled in (builder.shuffle_vector(rows[i], rows[i + half], low),
                                     builder.shuffle_vector(rows[i], rows[i + half], high))]
        for j, column in enumerate(rows):
            builder.store(column, vector_at(builder, target.data,
                                            builder.add(d0_, builder.mul(const(j), ds)), vt),
                          align=1)
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True)
def transpose_into(src, s0, s_stride, rows, cols, dst, d0, d_stride):
    """``dst[d0 + j*d_stride + i] = src[s0 + i*s_stride + j]`` for i < ``rows``, j < ``cols``
    (src and dst flat, one float dtype, not overlapping): whole B x B blocks in registers
    (``transpose_block``), taken row-block by row-block of dst so that its lines fill in turn,
    and the rest one value at a time."""
    b = lanes_of(src.itemsize)
    item = dst.itemsize
    lead = 0  # the i written one at a time before dst's rows reach a line boundary
    if d_stride * item % _LINE == 0:
        address = np.int64(dst.ctypes.data) + d0 * item  # (an unsigned address would mix to float)
        lead = min(rows, (-address % _LINE) // item)
    i_end = lead + (rows - lead) // b * b
    j_end = cols // b * b
    for j0 in range(0, j_end, b):
        for i0 in range(lead, i_end, b):
            transpose_block(src, s0 + i0 * s_stride + j0, s_stride, dst, d0 + j0 * d_stride + i0,
                            d_stride)
    for j in range(cols):  # the edges: i before the blocks and after them, and j after them
        at, base = d0 + j * d_stride, s0 + j
        for i in range(lead):
            dst[_u(at + i)] = src[_u(base + i * s_stride)]
        for i in range(lead if j >= j_end else i_end, rows):
            dst[_u(at + i)] = src[_u(base + i * s_stride)]
