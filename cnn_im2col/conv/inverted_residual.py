"""MobileNetV2's inverted residual at inference as one step: a 1x1 expansion -> ReLU6 -> 3x3
depthwise -> ReLU6 -> 1x1 projection (the expansion optional), the three convolutions' BatchNorms
already folded into them, and a Residual's identity shortcut added in the same pass.

Run as three layers, the expanded maps (6x the block's channels) are written to memory whole by
the expansion, read and written whole by the depthwise layer and read again by the projection (a
16 -> 96 -> 16 block on 32x32 maps at batch 64 moves about 100 MB), each layer's 1x1 products are
one short GEMM per sample (an inner axis of 16, or 16 pixels a sample at 4x4), and every layer
pays its Python. Two kernels instead:

- **Plane by plane** (stride 1, maps of at least ``MIN_PLANE`` pixels): each sample four expanded
  channels at a time. Their four maps (one plane each, in the core's first-level cache) are
  expanded together from the sample's input (each input plane read once for the four), clipped,
  convolved through their phase planes (``depthwise.nine_taps``, the depthwise strategy's
  per-plane code) and accumulated into every output map (each read once for the four, two
  outputs at a time). No expanded map leaves the cache.
- **Channels-last rows** (smaller maps, and strided blocks): a part of a batch slice (a few
  samples, whose rows stay in the core's cache) is turned into rows of channels, (k*H*W, C),
  expanded by one BLAS product with every sample's pixels in its long axis, convolved by a loop
  whose vectors run over the expanded channels (all nine taps of an output summed before it is
  stored), projected by a second product and turned back to NCHW with the bias and the
  shortcut. One compiled call a slice, which runs NumPy's BLAS itself
  (``blas.matmul``) and so holds no GIL between the products (``rows_numpy``, the same passes
  around NumPy's matmul, is its twin and the path where that BLAS was not found). A session's
  program takes a batch slice through several such blocks in one map (``planned_chain``). The
  rows' own kernels (the transposes, the depthwise pass) are ``conv/channels_last_rows.py``.

The three layers run one by one are the kernels' slow twin; the tests hold them equal to rounding
(the 1x1 sums are taken in another order than BLAS takes them). Measured against the three steps
in `benchmarks/README.md`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numba as nb
import numpy as np

from .. import blas
from .. import threads as _threads
from ..arrays import cache_slices, matmul
from ..arrays import unsigned as _u
from ..blas import matmul as matmul_compiled
from ..shapes import WindowGeometry
from .channels_last_rows import (
    DepthwiseTables,
    add_bias_rows,
    depthwise_channels_last,
    depthwise_tables,
    from_channels_last,
    relu6,
    to_channels_last,
)
from .depthwise import nine_taps, split_phases, taps
from .im2col import bias_columns

#: input maps of at least this many pixels run plane by plane at stride 1; smaller ones, and
#: strided blocks, channels-last (measured 2026-12-04, Intel Xeon, 2 threads, batch 64, ms,
#: planes / channels-last: 16 -> 96 -> 16 at 32x32 5.74 / 6.83, at 16x16 1.92 / 3.57; 16 -> 96
#: -> 24 at 32x32 stride 2 4.48 / 3.76, 16 -> 96 -> 32 at 16x16 stride 2 1.74 / 1.03; 8 -> 48 ->
#: 12 at 32x32 2.23 / 3.49). Since the depthwise rows are summed in vector registers
#: (``channels_last_rows``), 16x16 maps run faster by rows (2026-12-05, Intel Xeon, one
#: thread, 8 samples, 16 -> 96 -> 16, us: planes 367, rows 232; at 32x32 planes 1006, rows 1056;
#: MobileNetV2's session at batch 64, 2 threads: its 16x16 blocks 1620 / 1591 / 882 -> 1126 /
#: 1216 / 667 us with 1024 here in place of 256). Since they are summed in runs of pixels, 32x32
#: maps too (measured 2026-12-05, Intel Xeon, one thread, us, planes / rows from channels-last
#: input: 16 -> 96 -> 16 at 32x32 148 / 115 at batch 1, 8,920 / 7,599 at 64; at 64x64, 8 samples,
#: 4,422 / 3,974, but 8 -> 48 -> 8 1,570 / 1,896). In MobileNetV2's session (2 threads, medians
#: of 3 alternated processes, us) its block without an expansion is slower by rows (682 -> 877 at
#: batch 64, 24 -> 37 at batch 1: its rows are a copy of its input), but then the stem before it
#: and the block after it pass channels-last maps (745 -> 654 and 2,543 -> 2,190 at batch 64),
#: so all blocks by rows beat that one block by planes. The session with 4096 here and the runs
#: of pixels, against 1024 and one pixel at a time (the same medians): batch 1 1,002 -> 926 us,
#: batch 64 24.7 -> 23.6 ms
MIN_PLANE = 4096

_GROUP = 4  # expanded channels computed together: four planes of the L1 cache

# The channels-last path cuts a batch into the same slices for every block, two a thread
# (``_row_slices``), so that a session's program takes each slice through all its blocks by rows
# in one map (``planned_chain``), and each block's compiled call takes its slice a part of
# ``_PART_BYTES`` at a time (expanded + depthwise rows; one sample at least): the part's rows stay
# in the core's cache between the expansion, the depthwise pass and the projection. Measured
# 2026-12-06, Intel Xeon, 2 threads, MobileNetV2's session at batch 64, medians of 5 alternated
# processes, ms: slices of about 2 MiB per block, chains where they agreed (four), 22.4; every
# block one chain in 8 slices with parts of 256 KiB 18.9 (512 KiB 20.2, 1 MiB 20.2, 128 KiB
# 19.5); 2 / 4 / 16 slices with 256 KiB parts 18.4 / 18.5 / 20.4. Against onnxruntime (8
# alternated processes each): 1.048x its time -> 0.891x.
_SLICES_PER_THREAD = 2
_PART_BYTES = 2**18


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _expand_group(xs, we, be, e0, h):
    """``h[j] = ReLU6(be[e0 + j] + sum_c we[e0 + j, c] * xs[c])`` for the four planes j of ``h``
    (4, H*W): each input plane ``xs[c]`` is read once for all four, four planes at a time (16
    weights in registers: 0.88-0.91x the time of two at a time, measured with the projection's
    four outputs, Intel Xeon, batch 64)."""
    c_count, plane = xs.shape
    h0, h1, h2, h3 = h[0], h[1], h[2], h[3]
    b0, b1, b2, b3 = be[e0], be[e0 + 1], be[e0 + 2], be[e0 + 3]
    for p in range(plane):
        h0[_u(p)] = b0
        h1[_u(p)] = b1
        h2[_u(p)] = b2
        h3[_u(p)] = b3
    c = 0
    while c + 4 <= c_count:
        x0, x1, x2, x3 = xs[c], xs[c + 1], xs[c + 2], xs[c + 3]
        w00, w01, w02, w03 = we[e0, c], we[e0, c + 1], we[e0, c + 2], we[e0, c + 3]
        w10, w11, w12, w13 = we[e0 + 1, c], we[e0 + 1, c + 1], we[e0 + 1, c + 2], we[e0 + 1, c + 3]
        w20, w21, w22, w23 = we[e0 + 2, c], we[e0 + 2, c + 1], we[e0 + 2, c + 2], we[e0 + 2, c + 3]
        w30, w31, w32, w33 = we[e0 + 3, c], we[e0 + 3, c + 1], we[e0 + 3, c + 2], we[e0 + 3, c + 3]
        for p in range(plane):
            a0, a1, a2, a3 = x0[_u(p)], x1[_u(p)], x2[_u(p)], x3[_u(p)]
            h0[_u(p)] += (w00 * a0 + w01 * a1) + (w02 * a2 + w03 * a3)
            h1[_u(p)] += (w10 * a0 + w11 * a1) + (w12 * a2 + w13 * a3)
            h2[_u(p)] += (w20 * a0 + w21 * a1) + (w22 * a2 + w23 * a3)
            h3[_u(p)] += (w30 * a0 + w31 * a1) + (w32 * a2 + w33 * a3)
        c += 4
    while c < c_count:
        x0 = xs[c]
        w00, w10, w20, w30 = we[e0, c], we[e0 + 1, c], we[e0 + 2, c], we[e0 + 3, c]
        for p in range(plane):
            a0 = x0[_u(p)]
            h0[_u(p)] += w00 * a0
            h1[_u(p)] += w10 * a0
            h2[_u(p)] += w20 * a0
            h3[_u(p)] += w30 * a0
        c += 1


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _expand_one(xs, we, be, e, h):
    """``h = be[e] + sum_c we[e, c] * xs[c]`` (one plane, for the channels left over)."""
    b = be[e]
    for p in range(h.shape[0]):
        h[_u(p)] = b
    for c in range(xs.shape[0]):
        w, xc = we[e, c], xs[c]
        for p in range(h.shape[0]):
            h[_u(p)] += w * xc[_u(p)]


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _project_group(d, wp, e0, y):
    """``y[o] += sum_j wp[o, e0 + j] * d[j]`` over the four maps j of ``d``, for every output
    channel o (four at a time: each map read once per four)."""
    o_count, plane = y.shape
    d0, d1, d2, d3 = d[0], d[1], d[2], d[3]
    o = 0
    while o + 4 <= o_count:
        w0, w1, w2, w3 = wp[o, e0], wp[o, e0 + 1], wp[o, e0 + 2], wp[o, e0 + 3]
        v0, v1, v2, v3 = wp[o + 1, e0], wp[o + 1, e0 + 1], wp[o + 1, e0 + 2], wp[o + 1, e0 + 3]
        s0, s1, s2, s3 = wp[o + 2, e0], wp[o + 2, e0 + 1], wp[o + 2, e0 + 2], wp[o + 2, e0 + 3]
        t0, t1, t2, t3 = wp[o + 3, e0], wp[o + 3, e0 + 1], wp[o + 3, e0 + 2], wp[o + 3, e0 + 3]
        ya, yb, yc, yd = y[o], y[o + 1], y[o + 2], y[o + 3]
        for p in range(plane):
            a0, a1, a2, a3 = d0[_u(p)], d1[_u(p)], d2[_u(p)], d3[_u(p)]
            ya[_u(p)] += (w0 * a0 + w1 * a1) + (w2 * a2 + w3 * a3)
            yb[_u(p)] += (v0 * a0 + v1 * a1) + (v2 * a2 + v3 * a3)
            yc[_u(p)] += (s0 * a0 + s1 * a1) + (s2 * a2 + s3 * a3)
            yd[_u(p)] += (t0 * a0 + t1 * a1) + (t2 * a2 + t3 * a3)
        o += 4
    while o < o_count:
        w0, w1, w2, w3 = wp[o, e0], wp[o, e0 + 1], wp[o, e0 + 2], wp[o, e0 + 3]
        yo = y[o]
        for p in range(plane):
            yo[_u(p)] += (w0 * d0[_u(p)] + w1 * d1[_u(p)]) + (w2 * d2[_u(p)] + w3 * d3[_u(p)])
        o += 1


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def inverted_residual_forward(x, we, be, wd, bd, sy, sx, dy, dx, pt, pl, wp, bp, skip, out):
    """``out = P(ReLU6(D(ReLU6(E(x))))) [+ skip]`` for each sample: E the 1x1 expansion ``we``
    (E, C) + ``be`` (E,) (none when ``we`` has no rows: then E = C), D the 3x3 depthwise
    convolution ``wd`` (E, 3, 3) + ``bd`` (E,) of strides (SY, SX), dilations (DY, DX) and
    top/left padding (PT, PL),
    P the 1x1 projection ``wp`` (O, E) + ``bp`` (O,); ``skip`` (N, O, OH, OW) is added (a
    Residual's identity shortcut: it starts each output) unless it has no samples.

    x: (N, C, H, W), C-contiguous; out (written): (N, O, OH, OW), OH x OW the depthwise output.
    """
    n_count, c_count, height, width = x.shape
    expand, adding = we.shape[0] > 0, skip.shape[0] > 0
    e_count, o_count = wd.shape[0], wp.shape[0]
    oh_count, ow_count = out.shape[2], out.shape[3]
    plane, out_plane = height * width, oh_count * ow_count
    by0, span_y = taps(3, sy, dy, pt)
    bx0, span_x = taps(3, sx, dx, pl)
    qh, qw = oh_count + span_y + 1, ow_count + span_x  # as depthwise_forward's phase planes
    zero, six = x.dtype.type(0), x.dtype.type(6)
    q = np.zeros(sy * sx * qh * qw, dtype=x.dtype)  # borders stay 0: only image cells are written
    h = np.empty((_GROUP, height, width), dtype=x.dtype)  # expanded maps
    h_flat = h.reshape(_GROUP, plane)
    acc = np.empty(oh_count * qw, dtype=x.dtype)
    d = np.empty((_GROUP, out_plane), dtype=x.dtype)  # depthwise maps, compact
    for n in range(n_count):
        xs = x[n].reshape(c_count, plane)
        y = out[n].reshape(o_count, out_plane)
        for o in range(o_count):
            yo, b = y[o], bp[o]
            if adding:
                so = skip[n, o].reshape(out_plane)
                for p in range(out_plane):
                    yo[_u(p)] = b + so[_u(p)]
            else:
                yo[:] = b
        for e0 in range(0, e_count, _GROUP):
            group = min(_GROUP, e_count - e0)
            if expand and group == _GROUP:
                _expand_group(xs, we, be, e0, h_flat)
            for j in range(group):
                e = e0 + j
                if expand:
                    hj = h_flat[j]
                    if group < _GROUP:
                        _expand_one(xs, we, be, e, hj)
                    for p in range(plane):
                        hj[_u(p)] = relu6(hj[_u(p)], zero, six)
                    split_phases(h[j], sy, sx, by0, bx0, qh, qw, q)
                else:
                    split_phases(x[n, e], sy, sx, by0, bx0, qh, qw, q)
                nine_taps(q, wd[e], bd[e], sy, sx, dy, dx, pt, pl, by0, bx0, qh, qw, acc)
                dj = d[j]
                for oh in range(oh_count):
                    for ow in range(ow_count):
                        dj[_u(oh * ow_count + ow)] = relu6(acc[_u(oh * qw + ow)], zero, six)
            if group == _GROUP:
                _project_group(d, wp, e0, y)
            else:
                for j in range(group):
                    dj = d[j]
                    for o in range(o_count):
                        w, yo = wp[o, e0 + j], y[o]
                        for p in range(out_plane):
                            yo[_u(p)] += w * dj[_u(p)]


def by_rows(x_shape: tuple[int, ...], g: WindowGeometry) -> bool:
    """Whether ``forward`` runs a block on inputs of ``x_shape`` (N, C, H, W) channels-last, by
    rows (maps under ``MIN_PLANE`` pixels, or strided), rather than plane by plane."""
    return not (x_shape[2] * x_shape[3] >= MIN_PLANE and g.sy == g.sx == 1)


def supports(dw_weight_shape: tuple[int, ...]) -> bool:
    """Whether the fused kernels run a block whose depthwise weight has ``dw_weight_shape``: a 3x3
    kernel (the caller checks the rest: the 1x1 layers pointwise, the middle one depthwise, tied
    biases or none, one dtype)."""
    return tuple(dw_weight_shape[1:]) == (1, 3, 3)


class BlockWeights(NamedTuple):
    """A block's weights in the layouts its kernels read, made by ``block_weights`` (C-contiguous
    views of the layers' arrays where the layout already fits, copies where it does not)."""

    expand: np.ndarray  # (E, C); no rows: no expansion
    expand_t: np.ndarray  # (C, E), the channels-last product's operand
    expand_bias: np.ndarray  # (E,)
    depthwise: np.ndarray  # (E, 3, 3)
    depthwise_last: np.ndarray  # (3, 3, E), channels-last
    depthwise_bias: np.ndarray  # (E,)
    project: np.ndarray  # (O, E)
    project_t: np.ndarray  # (E, O)
    project_bias: np.ndarray  # (O,)


def _bias(bias: np.ndarray | None, channels: int, dtype: np.dtype) -> np.ndarray:
    """(channels,): the bias as every strategy's epilogue takes it, flat."""
    return bias_columns(bias, channels, dtype).reshape(channels)


def block_weights(
    expand: tuple[np.ndarray, np.ndarray | None] | None,
    depthwise: tuple[np.ndarray, np.ndarray | None],
    project: tuple[np.ndarray, np.ndarray | None],
) -> BlockWeights:
    """``expand`` (None: no expansion), ``depthwise`` and ``project``, each (weight, bias or None)
    of the convolutions ((E, C, 1, 1), (E, 1, 3, 3), (O, E, 1, 1)), in the kernels' layouts.
    Transposed operands are copied contiguous: BLAS multiplies them 1.6-2x faster than a
    transposed view at these sizes (measured 2026-12-04, Intel Xeon, one thread, (64, 32) @ (32,
    192) 10.4 -> 6.3 us, (16, 80) @ (80, 480) 20.7 -> 10.0 us)."""
    wd, bd = depthwise
    dtype, channels = wd.dtype, wd.shape[0]
    if expand is None:
        we, be = np.zeros((0, 0), dtype), np.zeros(0, dtype)
    else:
        we = np.ascontiguousarray(expand[0].reshape(channels, -1))
        be = _bias(expand[1], channels, dtype)
    wp = np.ascontiguousarray(project[0].reshape(project[0].shape[0], channels))
    return BlockWeights(
        we, np.ascontiguousarray(we.T), be, np.ascontiguousarray(wd.reshape(channels, 3, 3)),
        np.ascontiguousarray(wd.reshape(channels, 9).T).reshape(3, 3, channels),
        _bias(bd, channels, dtype), wp, np.ascontiguousarray(wp.T),
        _bias(project[1], wp.shape[0], dtype))


def forward(x: np.ndarray, w: BlockWeights, g: WindowGeometry, skip: np.ndarray | None = None,
            x_last: bool = False, out_last: bool = False) -> np.ndarray:
    """The block's output (N, O, OH, OW) for checked, C-contiguous ``x`` (N, C, H, W) of the
    weights' dtype: ``w`` its weights (``block_weights``), ``g`` the depthwise layer's geometry;
    ``skip`` (C-contiguous, the output's shape and dtype) is added to the output. Maps of at least
    ``MIN_PLANE`` pixels run plane by plane, smaller ones channels-last; batch slices on the
    engine's pool. Where it runs by rows (``by_rows``), ``x_last``: x comes channels-last, (N, H,
    W, C), its rows as they are; ``out_last``: the output (and ``skip``) is channels-last, (N,
    OH, OW, O), the projection's rows with the bias and skip added in place (a session's program
    passes these from one such block to the next, with the same bits)."""
    dtype = x.dtype
    if x_last:
        n, height, width, c_in = x.shape
    else:
        n, c_in, height, width = x.shape
    channels = w.depthwise.shape[0]
    rows_path = by_rows((n, c_in, height, width), g)
    if (x_last or out_last) and not rows_path:
        raise ValueError(f"inverted_residual.forward: channels-last maps run by rows only, not "
                         f"{height}x{width} maps at stride {(g.sy, g.sx)}")
    o_count = w.project.shape[0]
    out = np.empty((n, g.oh, g.ow, o_count) if out_last else (n, o_count, g.oh, g.ow), dtype)
    skips = np.empty((0, 0, 0, 0), dtype) if skip is None else skip  # none: no samples
    if not rows_path:

        def planes(s: slice) -> None:
            inverted_residual_forward(x[s], w.expand, w.expand_bias, w.depthwise,
                                      w.depthwise_bias, g.sy, g.sx, g.dy, g.dx, g.top, g.left,
                                      w.project, w.project_bias, skips[s], out[s])

        _threads.parallel_map(planes, cache_slices(n, x[0].nbytes + out[0].nbytes))
        return out
    out_plane = g.oh * g.ow
    tables = depthwise_tables(height, width, g, channels)

    def rows(s: slice) -> None:
        _rows(x[s], w, tables, out_plane, x_last, out_last, skips[s], out[s])

    _threads.parallel_map(rows, _row_slices(n))
    return out


def _row_slices(n: int) -> list[slice]:
    """The batch slices of every block by rows (``_SLICES_PER_THREAD`` a thread): the same for
    all, so that ``planned_chain`` runs any run of them, and so that ``forward`` and the chain
    cut the same parts (the same products, so the same bits)."""
    return _threads.split(n, _SLICES_PER_THREAD * _threads.get_num_threads())


def _part_samples(plane: int, out_plane: int, channels: int, itemsize: int) -> int:
    """Samples a part of a slice takes through a block by rows (``_PART_BYTES``)."""
    return max(1, _PART_BYTES // ((plane + out_plane) * channels * itemsize))


def _row_buffers(k: int, plane: int, out_plane: int, c_in: int, w: BlockWeights,
                 dtype: np.dtype, x_last: bool) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """The rows of a part of ``k`` samples for ``rows_numpy``: ``xc`` the input's (k*H*W, C)
    channels-last (None where an expansion reads a channels-last x in place; without an
    expansion, h itself, with a row of zeros under it), ``h`` the expanded rows plus that row of
    zeros (the depthwise kernel's padding), ``d`` the depthwise output's rows."""
    channels, expand = w.depthwise.shape[0], w.expand.shape[0] > 0
    xc = None if x_last and expand else np.empty((k * plane + (0 if expand else 1), c_in), dtype)
    h = np.empty((k * plane + 1, channels), dtype) if expand else xc
    h[-1] = 0  # nothing else writes it
    return xc, h, np.empty((k * out_plane, channels), dtype)


def _rows(x: np.ndarray, w: BlockWeights, tables: DepthwiseTables, out_plane: int, x_last: bool,
          out_last: bool, skip: np.ndarray, out: np.ndarray) -> None:
    """The block by rows on a slice ``x`` of k samples into ``out`` (``skip`` of out's shape, or
    with no samples: none), ``_part_samples`` samples at a time: in one compiled call that runs
    NumPy's BLAS itself (``rows_compiled``) where ``blas.library()`` was found, else
    ``rows_numpy``. The same bits."""
    plane = x.shape[1] * x.shape[2] if x_last else x.shape[2] * x.shape[3]
    part = _part_samples(plane, out_plane, w.depthwise.shape[0], x.itemsize)
    library = blas.library()
    if library is not None:
        rows_compiled(library, x, x_last, out_last, w.expand_t, w.expand_bias, w.depthwise_last,
                      w.depthwise_bias, w.project_t, w.project_bias, tables, out_plane, skip, out,
                      part)
    else:
        rows_numpy(x, w, tables, out_plane, x_last, out_last, skip, out, part)


def rows_numpy(x: np.ndarray, w: BlockWeights, tables: DepthwiseTables, out_plane: int,
               x_last: bool, out_last: bool, skip: np.ndarray, out: np.ndarray,
               part: int) -> None:
    """``_rows`` with NumPy's matmul between the compiled passes, ``part`` samples at a time:
    the expansion (a BLAS product), the depthwise rows, the projection (another) with its bias
    and the shortcut. Five calls a part, each giving the GIL up and taking it back
    (``rows_compiled``'s twin)."""
    for a in range(0, x.shape[0], part):
        b = min(x.shape[0], a + part)
        _part_numpy(x[a:b], w, tables, out_plane, x_last, out_last,
                    skip[a:b] if skip.shape[0] else skip, out[a:b])


def _part_numpy(x: np.ndarray, w: BlockWeights, tables: DepthwiseTables, out_plane: int,
                x_last: bool, out_last: bool, skip: np.ndarray, out: np.ndarray) -> None:
    """One part of ``rows_numpy``."""
    k, expand, o_count = x.shape[0], w.expand.shape[0] > 0, w.project.shape[0]
    plane = x.shape[1] * x.shape[2] if x_last else x.shape[2] * x.shape[3]
    xc, h, d = _row_buffers(k, plane, out_plane, x.shape[3] if x_last else x.shape[1], w,
                            x.dtype, x_last)
    if x_last and expand:  # the expansion reads the rows in place
        xc = x.reshape(-1, x.shape[3])
    elif x_last:
        xc[:-1] = x.reshape(-1, x.shape[3])
    else:
        to_channels_last(x, xc)
    if expand:
        matmul(xc, w.expand_t, out=h[:-1])
    depthwise_channels_last(h, w.expand_bias, expand, w.depthwise_last, w.depthwise_bias, tables,
                            out_plane, d)
    if out_last:
        y = out.reshape(k * out_plane, o_count)
        matmul(d, w.project_t, out=y)
        add_bias_rows(y, w.project_bias, skip.reshape(-1, o_count))
    else:
        from_channels_last(matmul(d, w.project_t), w.project_bias, skip, out)


@nb.njit(cache=True, nogil=True)
def rows_compiled(blas, x, x_last, out_last, we_t, be, wd, bd, wp_t, bp, tables, out_plane,
                  skip, out, part):
    """``rows_numpy`` in one call without the GIL (``blas.matmul`` runs the two products as
    ``arrays.matmul`` runs them): x (k, C,
    H, W), or (k, H, W, C) if ``x_last``, C-contiguous; ``we_t`` (C, E) (no columns: no
    expansion), ``be`` (E,), ``wd`` (3, 3, E), ``bd`` (E,), ``wp_t`` (E, O), ``bp`` (O,);
    ``out`` (k, O, OH, OW) or (k, OH, OW, O) if ``out_last``, ``skip`` its shape or no samples;
    ``part`` samples at a time. The same buffers, kernels and products in the same order, so the
    same bits."""
    for a in range(0, x.shape[0], part):
        b = min(x.shape[0], a + part)
        _part_compiled(blas, x[a:b], x_last, out_last, we_t, be, wd, bd, wp_t, bp, tables,
                       out_plane, skip[a:b] if skip.shape[0] else skip, out[a:b])


@nb.njit(cache=True, nogil=True)
def _part_compiled(blas, x, x_last, out_last, we_t, be, wd, bd, wp_t, bp, tables, out_plane,
                   skip, out):
    """One part of ``rows_compiled``."""
    k = x.shape[0]
    if x_last:
        height, width, c_in = x.shape[1], x.shape[2], x.shape[3]
    else:
        c_in, height, width = x.shape[1], x.shape[2], x.shape[3]
    rows, channels, o_count = k * height * width, wd.shape[2], wp_t.shape[1]
    expand = we_t.shape[1] > 0
    h = np.empty((rows + 1, channels), x.dtype)
    h[rows] = 0  # the row padding reads
    if expand and x_last:
        matmul_compiled(blas, x.reshape(rows, c_in), we_t, h[:rows])
    elif expand:
        xc = np.empty((rows, c_in), x.dtype)
        to_channels_last(x, xc)
        matmul_compiled(blas, xc, we_t, h[:rows])
    elif x_last:
        h[:rows] = x.reshape(rows, c_in)
    else:
        to_channels_last(x, h)
    d = np.empty((k * out_plane, channels), x.dtype)
    depthwise_channels_last(h, be, expand, wd, bd, tables, out_plane, d)
    if out_last:
        y = out.reshape(k * out_plane, o_count)
        matmul_compiled(blas, d, wp_t, y)
        add_bias_rows(y, bp, skip.reshape(skip.shape[0] * out_plane, o_count))
    else:
        y = np.empty((k * out_plane, o_count), x.dtype)
        matmul_compiled(blas, d, wp_t, y)
        from_channels_last(y, bp, skip, out)


def planned_forward(shape: tuple[int, ...], w: BlockWeights, g: WindowGeometry,
                    x_last: bool = False, out_last: bool = False
                    ) -> Callable[[np.ndarray, np.ndarray | None], np.ndarray] | None:
    """``forward`` for inputs of ``shape`` (N, C, H, W), laid out channels-last if ``x_last``,
    where it runs by rows in one slice (a small batch): ``run(x, skip)`` with its tables and its
    slicing decided once, so that a run is the kernels and little else (a session's program at
    batch 1: MobileNetV2's blocks spent a tenth of their time in ``forward``'s own Python and
    the pool's map). The same kernels on the same rows, so the same bits; ``run`` takes x and
    skip as ``forward`` does, C-contiguous, of the weights' dtype. Its buffers are made per run,
    as ``forward``'s: buffers kept per block measured no faster (freed ones are reused while in
    cache; 2026-12-05, Intel Xeon). None where ``forward`` would cut the batch or run plane by
    plane."""
    n, c_in, height, width = shape
    channels, dtype = w.depthwise.shape[0], w.depthwise.dtype
    out_plane = g.oh * g.ow
    if not by_rows(shape, g) or len(_row_slices(n)) != 1:
        return None
    tables = depthwise_tables(height, width, g, channels)
    o_count = w.project.shape[0]
    out_shape = (n, g.oh, g.ow, o_count) if out_last else (n, o_count, g.oh, g.ow)
    none = np.empty((0, 0, 0, 0), dtype)

    def run(x: np.ndarray, skip: np.ndarray | None) -> np.ndarray:
        out = np.empty(out_shape, dtype)
        _rows(x, w, tables, out_plane, x_last, out_last, none if skip is None else skip, out)
        return out

    return run


class ChainLink(NamedTuple):
    """One block of ``planned_chain``: its weights, geometry and input shape (N, C, H, W), and
    whether it adds its input (an identity Residual around it)."""

    weights: BlockWeights
    geometry: WindowGeometry
    shape: tuple[int, int, int, int]
    residual: bool


def link_slices(link: ChainLink) -> list[slice]:
    """The batch slices ``forward`` would cut for this block by rows."""
    return _row_slices(link.shape[0])


def planned_chain(links: list[ChainLink]) -> Callable[[np.ndarray], np.ndarray]:
    """Blocks run by rows one after the other on channels-last maps, ``run(x)`` (x (N, H, W, C)
    -> (N, OH, OW, O) of the last), each batch slice taken through all of them in one map of the
    pool: a slice's maps pass from block to block while in the core's cache, and the blocks hand
    off once, not once each (a hand-off cost 60-90 us of a 650 us block at batch 64). Every link
    must slice the batch alike (``link_slices``; all blocks by rows do): the same kernels on the
    same parts as each block's own ``forward``, so the same bits."""
    slices = link_slices(links[0])
    n, dtype = links[0].shape[0], links[0].weights.depthwise.dtype
    none = np.empty((0, 0, 0, 0), dtype)
    tables = [depthwise_tables(link.shape[2], link.shape[3], link.geometry,
                               link.weights.depthwise.shape[0]) for link in links]
    last = links[-1]
    out_shape = (n, last.geometry.oh, last.geometry.ow, last.weights.project.shape[0])

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=dtype)
        out = np.empty(out_shape, dtype)

        def through(s: slice) -> None:
            k, current = s.stop - s.start, x[s]
            for i, (link, table) in enumerate(zip(links, tables)):
                g, w = link.geometry, link.weights
                into = (out[s] if i == len(links) - 1
                        else np.empty((k, g.oh, g.ow, w.project.shape[0]), dtype))
                _rows(current, w, table, g.oh * g.ow, True, True,
                      current if link.residual else none, into)
                current = into

        _threads.parallel_map(through, slices)
        return out

    return run
