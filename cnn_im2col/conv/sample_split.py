"""A session's single sample through a convolution, split between the calling thread and one
of the pool's workers that waits for its half spinning, without the GIL.

At batch 1 a session runs its layers in the calling thread (``threads.batch_maps``): a hand-off
to the pool's Python workers costs more than a layer (the worker's wake-up, then the GIL at each
hand-off between the two threads' Python; an empty two-item map took 10-45 us on the 2-core
machine of ``benchmarks/``, a ResNet-20 layer 20-50 us). Here the hand-off is compiled: the
worker is lent a loop (``handoff``, ``threads.lend_worker``) that watches a few shared int64 words
(``atomics``) until it has been idle for the active wait policy's tail; the caller writes a
half's arguments (addresses and sizes) into them, posts it, runs its own half, then claims the
posted half itself if the worker has not (compare-and-swap: whoever wins runs it), or waits for
the worker to finish it. So the caller never waits for a worker that is late or not there, and
the results do not depend on who runs which half.

A Winograd layer (``plan`` and ``forward``) is halved one of two ways:

- **bands** of tile rows: each half transforms its rows' tiles, multiplies them by all of U and
  writes its rows of the output (rows of a channels-last sample are contiguous);
- **halves of the output channels** where U is large (a deep layer of few tiles, whose time is
  U streaming from memory: two halves read half of U each): each half transforms the whole input
  (the input transform is the smallest of the three steps), multiplies by its columns of U, and
  its output transform writes a channels-last buffer of its channels (bias added, nothing else),
  copied into its channels of the output with the shortcut and the ReLU after (the same
  operations in the same order as the output transform's, so the same values).

Measured (2026-12-06, Intel Xeon, one layer alone, channels-last, us, whole / bands / halves):
16 channels at 32x32 38.4 / 21.1 / 50.1; 32 at 16x16 26.8 / 12.3 / 24.0; 64 at 8x8 25.7 / 15.1 /
16.6; inside ResNet-20's session, where U comes from memory, its five 64-channel layers took
185-228 us a run whole, 206-219 in bands and 153-182 in halves, its five 32-channel ones 154-189
whole, 118-148 in bands and 174-180 in halves (several runs).

A strided layer in tiles (``tiled_plan`` and ``tiled``: a ResNet's stem, its strided 3x3 and 1x1
convolutions) is halved by its output pixels, each half padding its own copy of the sample
(``tiled.tiled_forward`` on a range of its pixel table): in ResNet-20's session, us a call whole /
split, its stem 25 / 19, its strided 3x3 layers 31 / 26 and 33 / 25, its 1x1 projections 9 / 9
and 9 / 7 (each half copies and pads the whole sample). The session at batch 1, the three
alternated in one process (2026-12-06, Intel Xeon): 0.951 ms whole, 0.817 with its Winograd
layers split, 0.713 with its five tiled ones too.

The slow twins are ``winograd.slice_forward_unfused`` and ``tiled.run_tiles``: the same kernels
on the whole sample in one thread; the tests hold each pair equal to rounding (in practice they
are equal bit for bit: a row's products do not depend on the rows beside it, and a tile's sums
on the tiles beside it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numba as nb
import numpy as np
from numba import types

from .. import threads as _threads
from ..atomics import compare_exchange, load_acquire, pointer, spin_pause, store_release
from ..blas import library
from ..blas import matmul as blas_matmul
from .tile_kernel import tile_dims
from .tiled import TileLayout, tiled_forward
from .winograd_kernels import winograd_input_last_f43, winograd_output_last_f43

__all__ = ["SplitPlan", "TiledSplit", "Switch", "plan", "forward", "tiled_plan", "tiled",
           "planning", "HALVES_U_BYTES", "MIN_LAYERS"]

# the mailbox's words, each on a 64-byte line of its own; then two blocks of a half's arguments
_POSTED, _CLAIMED, _DONE, _STOP, _SERVING = 0, 8, 16, 24, 32
_POSTED_ARGS, _OWN_ARGS, _ARGS = 40, 80, 32  # the posted half's block, the caller's, their size
_BOX = np.zeros(_OWN_ARGS + _ARGS + 8, np.int64)
_KIND = _ARGS - 1  # a block's last word: which kind of half it holds
_WINOGRAD, _TILED = 0, 1
# one caller at a time: a session run from another of the user's threads meanwhile is not split
_box_lock = threading.Lock()
# a Winograd half's argument block: its words
(_X, _TOP, _H, _W, _LEFT, _UT, _C, _K_PART, _BIAS, _SKIP, _OUT, _OH, _OW, _V, _MT, _TY, _TX,
 _RELU, _TMP, _K0, _K) = range(21)
# a tiled half's: x (address and 4 dims, layout), padding, the padded copy's steps and shape,
# in place, the tap and pixel tables (addresses and lengths), the weight (address, rows, columns),
# the bias (address, length), ReLU, out (address, pixels, channels)
(_T_X, _T_D0, _T_D1, _T_D2, _T_D3, _T_X_LAST, _T_TOP, _T_LEFT, _T_STEP0, _T_STEP1, _T_P0, _T_P1,
 _T_P2, _T_IN_PLACE, _T_TAPS, _T_TAP_COUNT, _T_PIX, _T_PIX_COUNT, _T_WT, _T_WT_ROWS, _T_WT_COLS,
 _T_BIAS, _T_RELU, _T_OUT, _T_OUT_CHANNELS) = range(25)
# the caller spins this many pauses waiting for the worker's half, then yields the core between
# pauses (the worker may have been preempted)
_PATIENT_SPINS = 1 << 14
# the worker's loop spins with the CPU's pause hint for this long after its last half (a session's
# layers come tens of microseconds apart), then yields the core between looks until its tail ends
_PAUSE_NS = 100_000
# U^T at least this many bytes: halves of the output channels, else bands of tile rows (see the
# module's measurements: a 64-channel 3x3 layer's U^T is 576 KiB, a 32-channel one's 144 KiB)
HALVES_U_BYTES = 256 * 1024

# the loop calls the C library's clock_gettime and sched_yield, as the spinners of the active wait
# policy do (``threads._spin``): Linux only; elsewhere nothing is split
_SUPPORTED = sys.platform.startswith("linux")
_lending = {"on": True}  # off for the process once the loop failed to run (a warning said why)
_clock_gettime = types.ExternalFunction("clock_gettime",
                                        types.int32(types.int32, types.voidptr))
_sched_yield = types.ExternalFunction("sched_yield", types.int32())
_CLOCK_MONOTONIC = 1


# a program with fewer split layers than this runs them whole: the lent loop, idle for its tail
# between them, ends, and lending it again at the next run costs more than the halves save.
# Measured 2026-12-06, Intel Xeon, sessions at batch 1, alternated in one process: MobileNetV2
# x0.5 (one split layer, its stem) 1.17 ms unsplit, 1.27-1.32 split; ResNet-20 (21) 0.95 -> 0.71
MIN_LAYERS = 4


class Switch:
    """Whether the split plans of one program run split (``planning``): one flag they share."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = True


_planning = threading.local()  # .switch, .count: the planning under way in this thread


@contextlib.contextmanager
def planning() -> Iterator[None]:
    """The block in which a program is compiled: the split plans made inside share one ``Switch``,
    turned off on leaving unless at least ``MIN_LAYERS`` were made. Plans made outside any
    planning run split."""
    before = getattr(_planning, "switch", None), getattr(_planning, "count", 0)
    switch = _planning.switch = Switch()
    _planning.count = 0
    try:
        yield
    finally:
        switch.on = _planning.count >= MIN_LAYERS
        _planning.switch, _planning.count = before


def _switch() -> Switch:
    """The switch of the planning under way (counting one more plan), or a new one."""
    switch = getattr(_planning, "switch", None)
    if switch is None:
        return Switch()
    _planning.count += 1
    return switch


class SplitPlan(NamedTuple):
    """A Winograd layer's forward of one sample in two halves, made once per session program
    (``plan``): the halves' weights, biases and buffers, used only while ``_box_lock`` is held."""

    halves: bool  # halves of the output channels (else bands of tile rows)
    rows: int  # bands: the caller's tile rows (the worker's the rest)
    ut: tuple[np.ndarray, np.ndarray]  # U^T (36, C, K) twice (bands), or its two column halves
    bias: tuple[np.ndarray, np.ndarray]  # the tied bias (K, 1), or its halves
    v: tuple[np.ndarray, np.ndarray]  # each half's V (36, its tiles, C)
    mt: tuple[np.ndarray, np.ndarray]  # each half's M^T (36, its tiles, its channels)
    tmp: tuple[np.ndarray, np.ndarray]  # halves: each one's output (1, OH, OW, its channels)
    switch: Switch  # off: the layer runs whole (``planning``)


def plan(x_shape: tuple[int, ...], ut: np.ndarray, bias2: np.ndarray, m: int, top: int,
         ty: int, tx: int, groups: int, layout: tuple[bool, bool, bool],
         out_shape: tuple[int, ...]) -> SplitPlan | None:
    """The split of a forward planned by ``winograd.plan_forward`` (U^T, its bias columns, its
    tile size ``m``, the padding above ``top``, its tiles, groups, layout and output shape), or
    None where it does not apply: one sample, float32, F(4x4, 3x3), groups 1, a tied bias, the
    input and output channels-last (not pooled), a pool of more than one thread, NumPy's BLAS
    callable from compiled code (``blas.library``), and two halves of work."""
    if (not _SUPPORTED or x_shape[0] != 1 or ut.dtype != np.float32 or m != 4 or groups != 1
            or bias2.shape[1] != 1 or layout != (True, True, False)
            or _threads.get_num_threads() < 2 or library() is None):
        return None
    c, k = ut.shape[1], ut.shape[2]
    _, oh, ow, _ = out_shape
    rows = (ty + 1) // 2
    # (each half's products at least 2 x 2: NumPy takes a single row or column as a vector
    # product, whose bits differ from the GEMM's)
    if (ut.nbytes < HALVES_U_BYTES and ty >= 2 and (ty - rows) * tx >= 2
            and 0 <= 4 * rows - top < x_shape[2]):
        counts = (rows * tx, (ty - rows) * tx)
        none = np.empty((0, 0, 0, 0), np.float32)
        return SplitPlan(
            False, rows, (ut, ut), (bias2, bias2),
            tuple(np.empty((36, t, c), np.float32) for t in counts),
            tuple(np.empty((36, t, k), np.float32) for t in counts),
            (none, none), _switch(),
        )
    if k < 4 or ty * tx < 2:
        return None
    tiles, parts = ty * tx, ((0, k // 2), (k // 2, k))
    return SplitPlan(
        True, ty,
        tuple(np.ascontiguousarray(ut[:, :, a:b]) for a, b in parts),
        tuple(np.ascontiguousarray(bias2[a:b]) for a, b in parts),
        (np.empty((36, tiles, c), np.float32), np.empty((36, tiles, c), np.float32)),
        tuple(np.empty((36, tiles, b - a), np.float32) for a, b in parts),
        tuple(np.empty((1, oh, ow, b - a), np.float32) for a, b in parts), _switch(),
    )


# --------------------------------------------------------------------------- the compiled halves


@nb.njit(cache=True, nogil=True, inline="always")
def _run_winograd(a, blas):
    """A Winograd half from its argument block ``a`` (``_fill``'s words): the session's compiled
    channels-last input transform of its input, its 36 products (``blas.matmul``:
    ``winograd.output_products``' bits) and its output transform; a half of the channels then
    copies its buffer into its channels of the output, adding the shortcut, then the ReLU, as the
    output transform would have."""
    c, kp, k, k0 = a[_C], a[_K_PART], a[_K], a[_K0]
    oh, ow, ty, tx = a[_OH], a[_OW], a[_TY], a[_TX]
    relu = a[_RELU] != 0
    x = nb.carray(pointer(a[_X]), (1, a[_H], a[_W], c), np.float32)
    ut = nb.carray(pointer(a[_UT]), (36, c, kp), np.float32)
    bias = nb.carray(pointer(a[_BIAS]), (kp, 1), np.float32)
    v = nb.carray(pointer(a[_V]), (36, ty * tx, c), np.float32)
    mt = nb.carray(pointer(a[_MT]), (36, ty * tx, kp), np.float32)
    none = nb.carray(pointer(a[_X]), (0, 0, 0, 0), np.float32)
    winograd_input_last_f43(x, a[_TOP], a[_LEFT], ty, tx, v)
    for p in range(36):
        blas_matmul(blas, v[p], ut[p], mt[p])
    if a[_TMP] == 0:  # a band: its rows of the output, written by the output transform
        out = nb.carray(pointer(a[_OUT]), (1, oh, ow, kp), np.float32)
        skip = (nb.carray(pointer(a[_SKIP]), (1, oh, ow, kp), np.float32) if a[_SKIP] != 0
                else none)
        winograd_output_last_f43(mt, ty, tx, bias, relu, skip, out)
        return
    tmp = nb.carray(pointer(a[_TMP]), (1, oh, ow, kp), np.float32)
    # (no ReLU yet: ``relu and not relu``, a bool of the band's type, not a literal False, which
    # would compile the output transform a second time)
    winograd_output_last_f43(mt, ty, tx, bias, relu and not relu, none, tmp)
    part = tmp.reshape((oh * ow, kp))
    out = nb.carray(pointer(a[_OUT]), (oh * ow, k), np.float32)
    joined = a[_SKIP] != 0
    skip = nb.carray(pointer(a[_SKIP] if joined else a[_OUT]), (oh * ow, k), np.float32)
    for q in range(oh * ow):
        for j in range(kp):
            val = part[q, j]
            if joined:
                val += skip[q, k0 + j]
            out[q, k0 + j] = val if not relu or val > 0 else 0.0


@nb.njit(cache=True, nogil=True, inline="always")
def _run_tiled(a):
    """A tiled half from its argument block ``a`` (``_fill_tiled``'s words): ``tiled_forward`` on
    its range of the output pixels, into its rows of the channels-last output."""
    x = nb.carray(pointer(a[_T_X]), (a[_T_D0], a[_T_D1], a[_T_D2], a[_T_D3]), np.float32)
    taps = nb.carray(pointer(a[_T_TAPS]), (a[_T_TAP_COUNT],), np.int64)
    pix = nb.carray(pointer(a[_T_PIX]), (a[_T_PIX_COUNT],), np.int64)
    wt = nb.carray(pointer(a[_T_WT]), (a[_T_WT_ROWS], a[_T_WT_COLS]), np.float32)
    bias = nb.carray(pointer(a[_T_BIAS]), (a[_T_WT_COLS],), np.float32)
    out = nb.carray(pointer(a[_T_OUT]), (1, a[_T_PIX_COUNT], a[_T_OUT_CHANNELS]), np.float32)
    tiled_forward(x, a[_T_X_LAST] != 0, a[_T_TOP], a[_T_LEFT], (a[_T_STEP0], a[_T_STEP1]),
                  (a[_T_P0], a[_T_P1], a[_T_P2]), a[_T_IN_PLACE] != 0, taps, pix, wt, bias,
                  a[_T_RELU] != 0, True, out)


@nb.njit(cache=True, nogil=True, inline="always")
def _run_half(a, blas):
    """The half whose argument block is ``a``, of either kind."""
    if a[_KIND] == _TILED:
        _run_tiled(a)
    else:
        _run_winograd(a, blas)


@nb.njit(cache=True, nogil=True, inline="always")
def _post_and_join(box, blas, own, posted):
    """Post the half in block ``posted``, run block ``own``, then claim the posted half unless the
    worker took it (then wait for it). Returns whether the worker ran it."""
    job = box[_POSTED] + 1
    store_release(box, _POSTED, job)
    _run_half(own, blas)
    if compare_exchange(box, _CLAIMED, job - 1, job):
        _run_half(posted, blas)
        store_release(box, _DONE, job)
        return False
    _wait_done(box, job)
    return True


@nb.njit(cache=True, nogil=True, inline="always")
def _wait_done(box, job):
    """Wait until the worker has marked half ``job`` done: pausing, then yielding the core
    between looks after ``_PATIENT_SPINS`` (the worker may have been preempted)."""
    spins = 0
    while load_acquire(box, _DONE) != job:
        spin_pause()
        spins += 1
        if spins > _PATIENT_SPINS:
            _sched_yield()


@nb.njit(cache=True, nogil=True, inline="always")
def _fill(a, x, top, left, h, w, ut, bias, relu, skip, out, oh, ow, v, mt, ty, tx, tmp, k0, k):
    """Write a half's arguments into block ``a``: addresses (x, ut, bias, skip or 0, out, v, mt,
    tmp or 0) and sizes."""
    a[_X], a[_TOP], a[_H], a[_W], a[_LEFT] = x, top, h, w, left
    a[_UT], a[_C], a[_K_PART], a[_BIAS] = ut.ctypes.data, ut.shape[1], ut.shape[2], bias.ctypes.data
    a[_SKIP], a[_OUT], a[_OH], a[_OW] = skip, out, oh, ow
    a[_V], a[_MT], a[_TY], a[_TX], a[_RELU] = v.ctypes.data, mt.ctypes.data, ty, tx, relu
    a[_TMP], a[_K0], a[_K] = tmp, k0, k
    a[_KIND] = _WINOGRAD


@nb.njit(cache=True, nogil=True, inline="always")
def _fill_tiled(a, x, x_last, top, left, steps, padded_shape, in_place, taps, pix, first, count,
                wt, bias, relu, out, out_channels):
    """Write a tiled half's arguments into block ``a``: output pixels [first, first + count)."""
    a[_T_X], a[_T_D0], a[_T_D1], a[_T_D2], a[_T_D3] = (x.ctypes.data, x.shape[0], x.shape[1],
                                                       x.shape[2], x.shape[3])
    a[_T_X_LAST], a[_T_TOP], a[_T_LEFT] = x_last, top, left
    a[_T_STEP0], a[_T_STEP1] = steps[0], steps[1]
    a[_T_P0], a[_T_P1], a[_T_P2] = padded_shape[0], padded_shape[1], padded_shape[2]
    a[_T_IN_PLACE], a[_T_TAPS], a[_T_TAP_COUNT] = in_place, taps.ctypes.data, taps.shape[0]
    a[_T_PIX], a[_T_PIX_COUNT] = pix.ctypes.data + 8 * first, count
    a[_T_WT], a[_T_WT_ROWS], a[_T_WT_COLS] = wt.ctypes.data, wt.shape[0], wt.shape[1]
    a[_T_BIAS], a[_T_RELU] = bias.ctypes.data, relu
    a[_T_OUT], a[_T_OUT_CHANNELS] = out.ctypes.data + 4 * first * out_channels, out_channels
    a[_KIND] = _TILED


@nb.njit(cache=True, nogil=True)
def _fill_winograd(box, x, top, left, ty, tx, relu, skip, out, halves, rows, ut0, ut1, bias0,
                   bias1, v0, v1, mt0, mt1, tmp0, tmp1):
    """Write a Winograd layer's two halves of one sample into ``box``'s blocks, the caller's and
    the one to post: x (1, H, W, C); skip: out's shape or empty; out (written by the halves):
    (1, OH, OW, K); all C-contiguous float32."""
    _, h, w, c = x.shape
    _, oh, ow, k = out.shape
    joined = skip.size > 0
    xa, oa = x.ctypes.data, out.ctypes.data
    sa = skip.ctypes.data if joined else 0
    own, posted = box[_OWN_ARGS:_OWN_ARGS + _ARGS], box[_POSTED_ARGS:_POSTED_ARGS + _ARGS]
    if halves:
        kp = ut0.shape[2]
        _fill(posted, xa, top, left, h, w, ut1, bias1, relu, sa, oa, oh, ow, v1, mt1, ty, tx,
              tmp1.ctypes.data, kp, k)
        _fill(own, xa, top, left, h, w, ut0, bias0, relu, sa, oa, oh, ow, v0, mt0, ty, tx,
              tmp0.ctypes.data, 0, k)
    else:
        # band 2 reads from input row 4 * rows - top on (top: the padding above band 1), with no
        # padding above; each band's output rows are contiguous (one sample, channels-last)
        first = 4 * rows - top
        row_in, row_out = w * c * 4, ow * k * 4  # bytes
        _fill(posted, xa + first * row_in, 0, left, h - first, w, ut1, bias1, relu,
              sa + 4 * rows * row_out if joined else 0, oa + 4 * rows * row_out,
              oh - 4 * rows, ow, v1, mt1, ty - rows, tx, 0, 0, k)
        _fill(own, xa, top, left, h, w, ut0, bias0, relu, sa, oa, 4 * rows, ow, v0, mt0, rows,
              tx, 0, 0, k)


@nb.njit(cache=True, nogil=True)
def _fill_tiled_halves(box, x, x_last, top, left, steps, padded_shape, in_place, taps, pix, wt,
                       bias, relu, out, first):
    """Write a tiled layer's two halves of one sample's output pixels into ``box``'s blocks: [0,
    first) the caller's, the rest to post. x (1, C, H, W) or (1, H, W, C) if ``x_last``; out
    (written by the halves): (1, OH*OW, O), channels-last; all C-contiguous float32."""
    own, posted = box[_OWN_ARGS:_OWN_ARGS + _ARGS], box[_POSTED_ARGS:_POSTED_ARGS + _ARGS]
    plane, channels = pix.shape[0], out.shape[2]
    _fill_tiled(posted, x, x_last, top, left, steps, padded_shape, in_place, taps, pix, first,
                plane - first, wt, bias, relu, out, channels)
    _fill_tiled(own, x, x_last, top, left, steps, padded_shape, in_place, taps, pix, 0, first,
                wt, bias, relu, out, channels)


@nb.njit(cache=True, nogil=True, inline="always")
def _now_ns(now):
    """The monotonic clock in ns, read into ``now`` (an int64 pair: tv_sec, tv_nsec)."""
    _clock_gettime(_CLOCK_MONOTONIC, now.ctypes.data)
    return now[0] * 1_000_000_000 + now[1]


@nb.njit(cache=True, nogil=True, inline="always")
def _serve(box, blas, tail_ns, generation):
    """The worker's loop: run each half posted and claimed, spinning between them (pausing, then
    yielding the core after ``_PAUSE_NS`` idle); return once ``box[_STOP]`` is no longer
    ``generation`` (a reclaim, ``_stop``), or after ``tail_ns`` ns of the monotonic clock with
    nothing posted. Returns the halves run."""
    store_release(box, _SERVING, 1)
    now = np.zeros(2, np.int64)  # (tv_sec, tv_nsec)
    last = _now_ns(now)
    served = spins = 0
    yielding = False
    while load_acquire(box, _STOP) == generation:
        job = load_acquire(box, _POSTED)
        if job != load_acquire(box, _CLAIMED):
            if compare_exchange(box, _CLAIMED, job - 1, job):
                _run_half(box[_POSTED_ARGS:_POSTED_ARGS + _ARGS], blas)
                store_release(box, _DONE, job)
                served += 1
            last = _now_ns(now)
            yielding = False
            continue
        spins += 1
        if yielding or spins % 256 == 0:  # (a yield may last another thread's time slice)
            idle = _now_ns(now) - last
            if idle > tail_ns:
                break
            yielding = idle > _PAUSE_NS
        if yielding:  # idle a while: any other thread that wants the core takes it at once
            _sched_yield()
        else:
            spin_pause()
    store_release(box, _SERVING, 0)
    return served


@nb.njit(cache=True, nogil=True)
def handoff(box, blas, serving, tail_ns, generation):
    """Both ends of the hand-off in one compiled function, so that the halves' kernels are
    compiled once (each compiled entry links its own copy of them: about 5 s each on a fresh
    cache). ``serving``: the worker's loop (``_serve``; returns the halves it ran). Else the
    caller's side of the halves written by ``_fill_winograd`` or ``_fill_tiled_halves``: post
    one, run the other, then claim the posted one unless the worker took it (then wait for it);
    returns 1 if the worker ran it, else 0."""
    if serving:
        return _serve(box, blas, tail_ns, generation)
    own, posted = box[_OWN_ARGS:_OWN_ARGS + _ARGS], box[_POSTED_ARGS:_POSTED_ARGS + _ARGS]
    return 1 if _post_and_join(box, blas, own, posted) else 0


@nb.njit(cache=True, nogil=True)
def _settle(box):
    """After the caller's half failed (an exception out of ``handoff``): the posted half
    is claimed here and marked done without running, or, taken by the worker, waited for, so
    that nothing writes the arrays once the caller has let them go."""
    job = load_acquire(box, _POSTED)
    if compare_exchange(box, _CLAIMED, job - 1, job):
        store_release(box, _DONE, job)
    _wait_done(box, job)


def _loop(generation: int) -> None:
    """The lent worker's job. If the loop cannot run here (it failed to compile or load), warn
    once and lend it no more: the caller then runs both halves, the results never depend on it."""
    try:
        handoff(_BOX, library(), True, _threads.SPIN_TAIL_NS, generation)
    except Exception as exc:  # noqa: BLE001 - reported as a warning, the engine goes on
        if _lending["on"]:
            _lending["on"] = False
            warnings.warn(f"cnn_im2col: a single sample's convolutions cannot use a second "
                          f"thread here ({type(exc).__name__}: {exc}); they run in the calling "
                          f"thread", RuntimeWarning, stacklevel=1)


def _stop() -> None:
    """A reclaim (``threads._reclaim``, with the pool held): the loop returns at its next look."""
    _BOX[_STOP] += 1


def _lend() -> None:
    """With the mailbox held: lend the worker the loop unless it runs it already."""
    if not _BOX[_SERVING] and _lending["on"]:
        _threads.lend_worker(functools.partial(_loop, int(_BOX[_STOP])), _stop)


def _contiguous_float32(*arrays: np.ndarray | None) -> bool:
    return all(a is None or (a.flags.c_contiguous and a.dtype == np.float32) for a in arrays)


def _split(switch: Switch, arrays: tuple[np.ndarray | None, ...], fill: Callable[..., None],
           *args: object) -> bool:
    """The Python side of a split layer: ``fill(_BOX, *args)`` writes its two halves, then
    ``handoff`` runs them, the worker lent the loop unless it runs it already. Returns False,
    having done nothing, where ``arrays`` are not all C-contiguous float32 (None passes), another
    thread is splitting meanwhile (the caller then runs the layer whole), or ``switch`` is off
    (``planning``)."""
    if (not switch.on or not _contiguous_float32(*arrays)
            or not _box_lock.acquire(blocking=False)):
        return False
    try:
        _lend()
        try:
            fill(_BOX, *args)
            handoff(_BOX, library(), False, 0, 0)
        except BaseException:
            _settle(_BOX)
            raise
    finally:
        _box_lock.release()
    return True


def forward(sp: SplitPlan, x: np.ndarray, top: int, left: int, ty: int, tx: int, relu: bool,
            skip: np.ndarray | None, out: np.ndarray) -> bool:
    """``sp``'s forward of x (1, H, W, C) into out (1, OH, OW, K) (+ ``skip``, of out's shape);
    False, having done nothing, where it cannot run split (``_split``)."""
    return _split(sp.switch, (x, out, skip), _fill_winograd, x, top, left, ty, tx, relu,
                  _NO_SKIP if skip is None else skip, out, sp.halves, sp.rows, *sp.ut, *sp.bias,
                  *sp.v, *sp.mt, *sp.tmp)


class TiledSplit(NamedTuple):
    """A tiled layer's forward of one sample in two halves of its output pixels: the caller's
    [0, first), the worker's the rest (``tiled_plan``)."""

    first: int
    switch: Switch  # off: the layer runs whole (``planning``)


def tiled_plan(layout: TileLayout, x_shape: tuple[int, ...], out_last: bool
               ) -> TiledSplit | None:
    """The split of ``tiled.run_tiles`` with ``layout`` on inputs of ``x_shape`` (N first), or
    None where it does not apply: one sample, float32, the output channels-last, a pool of more
    than one thread, and at least two of the register tile's rows of output pixels. The caller's
    half ends at a whole tile row near the middle."""
    plane = layout.geometry.pixels.shape[0]
    if (not _SUPPORTED or x_shape[0] != 1 or layout.weight.dtype != np.float32 or not out_last
            or _threads.get_num_threads() < 2):
        return None
    _, pixels, _ = tile_dims(4, layout.weight.shape[1])
    first = max(1, round(plane / (2 * pixels))) * pixels
    return TiledSplit(first, _switch()) if first < plane else None


def tiled(ts: TiledSplit, x: np.ndarray, layout: TileLayout, top: int, left: int, relu: bool,
          out: np.ndarray) -> bool:
    """``tiled.run_tiles(x, layout, g, relu, out, channels_last=True)`` in ``ts``'s two halves
    (``top`` and ``left``: g's padding): x one sample, out (1, OH*OW, O). False, having done
    nothing, where it cannot run split (``_split``)."""
    tg = layout.geometry
    return _split(ts.switch, (x, out), _fill_tiled_halves, x, tg.x_last, top, left, tg.steps,
                  tg.padded_shape, tg.in_place, tg.offsets, tg.pixels, layout.weight,
                  layout.bias, relu, out, ts.first)


_NO_SKIP = np.empty((0, 0, 0, 0), np.float32)


def _after_fork_in_child() -> None:
    """The parent's worker is not in the child: no half is claimed or running, none is served."""
    global _box_lock
    _BOX[_CLAIMED] = _BOX[_DONE] = _BOX[_POSTED]
    _BOX[_SERVING] = 0
    _box_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
