"""MobileNetV2's block by rows of channels (``conv/inverted_residual.py``'s channels-last path):
the transposes between NCHW maps and rows of channels, and the depthwise 3x3 pass over rows of
expanded channels (k*H*W + 1, E), a vector of channels at a time, runs of 8 or 4 adjacent output
pixels summed together in vector registers (Numba intrinsics written in LLVM IR), with the tables
of the rows each output's taps read, made once per geometry. The rows' bias (and a shortcut) is
added in the projection's output pass (``from_channels_last``, ``add_bias_rows``). The pointwise
strategy's transposes are these too.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..arrays import unsigned as _u
from ..shapes import WindowGeometry
from .vectors import I64, const, fmuladd, lanes_of, vector_at


@nb.njit(cache=True, nogil=True, inline="always")
def relu6(v, zero, six):
    """ReLU6 of a scalar as the ReLU6 layer's kernel takes it (a NaN stays NaN)."""
    return zero if v < zero else (six if v > six else v)


# The transposes between NCHW maps and rows of channels go 16 pixels at a time: every channel's
# run of 16 is read (or written) in turn while the 16 rows stay in the first-level cache. Pixel by
# pixel across whole planes, each row of channels left the cache before it was full: measured
# 2026-12-05, Intel Xeon, one thread, (16, 16, 32, 32) into rows 282 -> 110 us, (16, 80, 4, 4)
# 43 -> 8 us; out of rows with a shortcut, (16, 48, 8, 8) 53 -> 27 us, (16, 160, 4, 4) 155 -> 23.
_PIXEL_BLOCK = 16


@nb.njit(cache=True, nogil=True)
def to_channels_last(x, xc):
    """``xc[n*H*W + p, c] = x[n, c, p]``: x (k, C, H, W) -> xc (k*H*W or more rows, C; the rows
    after the first k*H*W are left as they are)."""
    k, c_count, height, width = x.shape
    plane = height * width
    xf = x.reshape(x.size)
    for n in range(k):
        for p0 in range(0, plane, _PIXEL_BLOCK):
            p1 = min(plane, p0 + _PIXEL_BLOCK)
            for c in range(c_count):
                src = (n * c_count + c) * plane
                for p in range(p0, p1):
                    xc[n * plane + p, c] = xf[_u(src + p)]


#: adjacent output pixels of an output row summed together by the depthwise rows' kernel, the
#: longest runs first: eight at stride 1 read 10 input vectors a kernel row for 24 multiply-adds
#: (one pixel: 3 for 3), and keep eight sums in flight; the pixels left over one at a time
#: (measured 2026-12-05, Intel Xeon, one thread, 8 samples of 96 channels at 16x16, us: one pixel
#: at a time 74-94, runs of four 57, runs of eight then four 45-51; 64 samples of 192 at 8x8 in
#: one call 45 -> 23; the 16 -> 96 -> 16 block at batch 64 on one thread 2,121 -> 1,751)
RUNS = (8, 4)


def run_columns(pixels: int, sx: int, dx: int) -> list[int]:
    """The input columns, counted from the first one, that ``pixels`` adjacent output pixels'
    three taps read in one kernel row (strides ``sx``, dilation ``dx``), in ascending order."""
    return sorted({p * sx + j * dx for p in range(pixels) for j in range(3)})


def _make_depthwise_runs(pixels: int, sx: int):
    """The intrinsic ``runs(hf, offsets, wf, bias, count, df, dsts, dst)``: for each run r of
    ``pixels`` adjacent output pixels (R = ``dsts.shape[0]``) and the channels e < ``count`` (a
    multiple of L, a vector's lanes, ``vectors.lanes_of``: 16 or 8 float32, half as many float64), L
    channels at a time in vector registers:
    ``df[dst + dsts[r] + p*E + e] = ReLU6(bias[e] + sum_t wf[t*E + e] * hf[row_t + e])``, pixel p's
    nine taps t = 3i + j added one multiply-add after another in their order, E =
    ``bias.shape[0]``. ``offsets`` holds each run's rows: for each kernel row i, the offset in
    ``hf`` of each input column the run reads (``run_columns(pixels, sx, 1)``: with one pixel, the
    three taps' columns at any dilation). Each input vector is loaded once for all the run's pixels
    that read it, and each weight vector once for all of them. (A Numba loop over the channels with
    nine rows and nine weight rows needs more pointers than LLVM checks for overlap: it ran 8 lanes
    wide with its pointers spilled, 12 GMAC/s; this kernel one pixel at a time was bound by its
    loads, 19 for 9 multiply-adds.)"""
    columns = run_columns(pixels, sx, 1)
    span = len(columns)
    # uses[c]: the (pixel, tap column) pairs that read column c; for any one pixel its taps come
    # in ascending column order, hence in order, as the scalar sum takes them
    uses = [[(p, j) for p in range(pixels) for j in range(3) if p * sx + j == column]
            for column in columns]

    @intrinsic
    def runs(typingctx, hf, offsets, wf, bias, count, df, dsts, dst):
        sig = types.void(hf, offsets, wf, bias, count, df, dsts, dst)

        def codegen(context, builder, signature, args):
            arrays = {i: context.make_array(signature.args[i])(context, builder, args[i])
                      for i in (0, 1, 2, 3, 5, 6)}
            hp, op, wp, bp, dp, sp = (arrays[i].data for i in (0, 1, 2, 3, 5, 6))
            channels = cgutils.unpack_tuple(builder, arrays[3].shape, 1)[0]
            run_count = cgutils.unpack_tuple(builder, arrays[6].shape, 1)[0]
            count_v = context.cast(builder, args[4], signature.args[4], types.int64)
            dst_v = context.cast(builder, args[7], signature.args[7], types.int64)
            ft = context.get_data_type(signature.args[0].dtype)
            lanes = lanes_of.py_func(signature.args[0].dtype.bitwidth // 8)
            vt = ir.VectorType(ft, lanes)
            fma = fmuladd(builder, vt)
            zero, six = ir.Constant(vt, [0.0] * lanes), ir.Constant(vt, [6.0] * lanes)
            entry = builder.basic_block
            run_loop = builder.append_basic_block("runs.run")
            channel_loop = builder.append_basic_block("runs.channels")
            run_end = builder.append_basic_block("runs.next")
            done = builder.append_basic_block("runs.done")
            go = builder.and_(builder.icmp_signed(">", count_v, const(0)),
                              builder.icmp_signed(">", run_count, const(0)))
            builder.cbranch(go, run_loop, done)

            builder.position_at_end(run_loop)
            r = builder.phi(I64)
            r.add_incoming(const(0), entry)
            first = builder.mul(r, const(3 * span))  # the run's first offset
            out0 = builder.add(dst_v, builder.load(builder.gep(sp, [r])))
            builder.branch(channel_loop)

            builder.position_at_end(channel_loop)
            e = builder.phi(I64)
            e.add_incoming(const(0), run_loop)
            total = [builder.load(vector_at(builder, bp, e, vt), align=1)] * pixels
            for i in range(3):
                weights = [builder.load(vector_at(
                    builder, wp, builder.add(builder.mul(const(3 * i + j), channels), e), vt),
                    align=1) for j in range(3)]
                for c in range(span):
                    row = builder.load(builder.gep(op, [builder.add(first, const(i * span + c))]))
                    values = builder.load(vector_at(builder, hp, builder.add(row, e), vt),
                                          align=1)
                    for p, j in uses[c]:
                        total[p] = builder.call(fma, [weights[j], values, total[p]])
            for p in range(pixels):  # ReLU6 as ``_relu6``: a NaN stays NaN
                capped = builder.select(builder.fcmp_ordered(">", total[p], six), six, total[p])
                clipped = builder.select(builder.fcmp_ordered("<", total[p], zero), zero, capped)
                at = builder.add(builder.add(out0, builder.mul(const(p), channels)), e)
                builder.store(clipped, vector_at(builder, dp, at, vt), align=1)
            e_next = builder.add(e, const(lanes))
            e.add_incoming(e_next, channel_loop)
            builder.cbranch(builder.icmp_signed("<", e_next, count_v), channel_loop, run_end)

            builder.position_at_end(run_end)
            r_next = builder.add(r, const(1))
            r.add_incoming(r_next, run_end)
            builder.cbranch(builder.icmp_signed("<", r_next, run_count), run_loop, done)
            builder.position_at_end(done)
            return context.get_dummy_value()

        return sig, codegen

    return runs


# the kernels by run length and stride (a run of one pixel serves any stride), each compiled for
# the dtype it is called with
_one = _make_depthwise_runs(1, 1)
_long = _make_depthwise_runs(RUNS[0], 1)
_short = _make_depthwise_runs(RUNS[1], 1)
_strided_long = _make_depthwise_runs(RUNS[0], 2)
_strided_short = _make_depthwise_runs(RUNS[1], 2)


class DepthwiseTables(NamedTuple):
    """Where the depthwise rows' taps read, in one sample (``depthwise_tables``): four groups of
    runs of adjacent output pixels, one after the other in each array: runs of ``RUNS[0]`` pixels,
    of ``RUNS[1]``, the pixels left over one at a time, then every pixel alone (for the channels
    after the last whole vector). Offsets point into the sample's flat rows (H*W image rows of E
    channels), each with an ``inside`` flag (1: an image row, shifted to each sample's rows; 0:
    padding, which reads the zero row after all samples). Four arrays, not a tuple of twelve: a
    call unboxes each one (about 0.3 us an array)."""

    offsets: np.ndarray  # per run and kernel row, each input column's offset
    inside: np.ndarray
    dsts: np.ndarray  # per run of the first three groups: its first output pixel, times E
    bounds: np.ndarray  # the runs' stride (0: no runs), the ends of the four offset groups,
    #                     the ends of the three dsts groups


@functools.lru_cache(maxsize=128)
def depthwise_tables(height: int, width: int, g: WindowGeometry, channels: int,
                     runs: bool = True) -> DepthwiseTables:
    """The tables of ``depthwise_channels_last`` for H x W maps of ``channels`` and the depthwise
    geometry ``g`` (3x3), made once a geometry: each output row as runs of ``RUNS[0]`` adjacent
    pixels, then of ``RUNS[1]``, then single pixels; runs only at stride 1 or 2 and dilation 1
    across the row (the kernels' column patterns). ``runs=False``: every pixel alone (the runs'
    twin in the tests)."""
    stride = g.sx if runs and g.dx == 1 and g.sx in (1, 2) else 0
    groups: list[tuple[int, list[tuple[int, int]]]] = [(length, []) for length in (*RUNS, 1)]
    for oh in range(g.oh):
        ow = 0
        for length, starts in groups if stride else groups[-1:]:
            while ow + length <= g.ow:
                starts.append((oh, ow))
                ow += length
    groups.append((1, [(oh, ow) for oh in range(g.oh) for ow in range(g.ow)]))
    offsets, inside, dsts, bounds = [], [], [], [stride]
    for number, (length, starts) in enumerate(groups):
        columns = run_columns(length, g.sx, g.dx)
        for oh, ow in starts:
            for i in range(3):
                r = oh * g.sy - g.top + i * g.dy
                for column in columns:
                    c = ow * g.sx - g.left + column
                    image = 0 <= r < height and 0 <= c < width
                    offsets.append((r * width + c) * channels if image else 0)
                    inside.append(int(image))
            if number < 3:
                dsts.append((oh * g.ow + ow) * channels)
        bounds.append(len(offsets))
    bounds += [len(groups[0][1]), len(groups[0][1]) + len(groups[1][1]), len(dsts)]
    tables = DepthwiseTables(*(np.array(values, dtype=np.int64)
                               for values in (offsets, inside, dsts, bounds)))
    for array in tables:
        array.flags.writeable = False  # shared by every call with this geometry
    return tables


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def depthwise_channels_last(h, be, activate, wd, bd, tables, out_plane, d):
    """The depthwise step in channels-last rows: ``h`` (k*H*W + 1, E), its last row zeros (what
    padding reads), the others with ``activate`` first made ReLU6(h + be) in place (the
    expansion's bias and activation); ``d`` (k*OH*OW, E, written) = ReLU6(bd + the 3x3 taps ``wd``
    (3, 3, E)), each output's taps added in their order. ``tables`` (``depthwise_tables``, for one
    sample, shifted for each) say which rows each output's taps read; its channels are summed a
    vector at a time, runs of adjacent pixels together (``_make_depthwise_runs``), and the last
    few channels one by one."""
    e_count = h.shape[1]
    zero_row = h.shape[0] - 1
    k = d.shape[0] // out_plane
    plane = zero_row // k
    zero_at = zero_row * e_count
    zero, six = h.dtype.type(0), h.dtype.type(6)
    if activate:
        for r in range(zero_row):
            row = h[r]
            for e in range(e_count):
                row[e] = relu6(row[e] + be[e], zero, six)
    lanes = lanes_of(h.itemsize)
    vectors = e_count - e_count % lanes  # the channels summed a vector at a time
    hf, wf, df = h.reshape(h.size), wd.reshape(wd.size), d.reshape(d.size)
    stride, b1, b2, b3, b4, d1, d2, d3 = tables.bounds
    used = b3 if vectors == e_count else b4  # the last group only for a channel tail
    rows = np.empty(used, dtype=np.int64)
    for n in range(k):
        shift, dst = n * plane * e_count, n * out_plane * e_count
        for t in range(used):
            rows[t] = tables.offsets[t] + shift if tables.inside[t] else zero_at
        long_rows, short_rows, one_rows = rows[:b1], rows[b1:b2], rows[b2:b3]
        long_dsts, short_dsts, one_dsts = tables.dsts[:d1], tables.dsts[d1:d2], tables.dsts[d2:d3]
        if stride == 1:
            _long(hf, long_rows, wf, bd, vectors, df, long_dsts, dst)
            _short(hf, short_rows, wf, bd, vectors, df, short_dsts, dst)
        elif stride == 2:
            _strided_long(hf, long_rows, wf, bd, vectors, df, long_dsts, dst)
            _strided_short(hf, short_rows, wf, bd, vectors, df, short_dsts, dst)
        _one(hf, one_rows, wf, bd, vectors, df, one_dsts, dst)
        every = rows[b3:used]
        for q in range(every.shape[0] // 9):
            for e in range(vectors, e_count):
                v = bd[e]
                for t in range(9):
                    v += wf[t * e_count + e] * hf[every[q * 9 + t] + e]
                df[dst + q * e_count + e] = relu6(v, zero, six)


@nb.njit(cache=True, nogil=True)
def from_channels_last(y, bp, skip, out):
    """``out[n, o, p] = y[n*OH*OW + p, o] + bp[o] [+ skip[n, o, p]]`` (``skip`` added unless it
    has no samples): y (k*OH*OW, O) -> out (k, O, OH, OW)."""
    k, o_count, oh_count, ow_count = out.shape
    plane = oh_count * ow_count
    adding = skip.shape[0] > 0
    of, sf = out.reshape(out.size), skip.reshape(skip.size)
    for n in range(k):
        for p0 in range(0, plane, _PIXEL_BLOCK):
            p1 = min(plane, p0 + _PIXEL_BLOCK)
            for o in range(o_count):
                dst, b = (n * o_count + o) * plane, bp[o]
                if adding:
                    for p in range(p0, p1):
                        of[_u(dst + p)] = (y[n * plane + p, o] + b) + sf[_u(dst + p)]
                else:
                    for p in range(p0, p1):
                        of[_u(dst + p)] = y[n * plane + p, o] + b


@nb.njit(cache=True, nogil=True)
def add_bias_rows(rows, bp, skip):
    """``rows[r, o] = (rows[r, o] + bp[o]) [+ skip[r, o]]`` in place (``skip`` added unless it has
    no rows): ``from_channels_last``'s sums in its order, for an output kept channels-last."""
    adding = skip.shape[0] > 0
    for r in range(rows.shape[0]):
        row = rows[r]
        if adding:
            src = skip[r]
            for o in range(rows.shape[1]):
                row[o] = (row[o] + bp[o]) + src[o]
        else:
            for o in range(rows.shape[1]):
                row[o] = row[o] + bp[o]
