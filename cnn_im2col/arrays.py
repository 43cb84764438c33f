"""Helpers every room of the engine shares: how work is cut for the pool, GEMMs, and the small
helpers compiled kernels inline.

- ``thread_slices`` / ``cache_slices`` / ``flat_slices``: a batch (or a flat array) as slices for
  the engine's pool (``threads.py``), one per worker or as many as keep a slice's working set in
  cache; ``core_cache_bytes``, one core's second-level cache as Linux reports it, read once
  on import as ``CORE_CACHE_BYTES``;
- ``gemm``: a 2-D product through NumPy's BLAS, split by columns or rows over the pool when it is
  large;
- ``matmul``: a product on the calling thread, in column blocks that OpenBLAS's small-matrix
  kernels take (every GEMM of a convolution strategy);
- ``unsigned`` / ``valid_range``: index helpers that the convolution strategies' kernels inline;
- ``prefetch``: a hint that brings values into cache ahead of a kernel's loop over them.

The kernels here trust their callers, as every kernel of the engine: C-contiguous float arrays,
consistent sizes. They are serial and release the GIL; the pool runs them on slices.
"""

from __future__ import annotations

import os

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import threads as _threads

# --------------------------------------------------------------------------- slicing for the pool

# A worker's batch slice of a convolution: at most this many bytes of its largest temporary (the
# im2col matrix, Winograd's V), so that it is still in the core's cache (L2: 1 MiB a core where
# this was measured; Winograd's slices follow the core's own, ``winograd._SLICE_BYTES``)
# when the GEMM reads it (measured, single thread: 256 KiB to 4 MiB within noise for the 3x3 case,
# 256-512 KiB best for LeNet's), and at least as many slices as threads. Training keeps every
# slice's matrix for backward.
_CHUNK_BYTES = 2**19


# Element-wise passes over big arrays run on the pool in flat slices (below this many elements, one
# thread: a hand-off costs more than the pass).
_PARALLEL_ELEMENTS = 1 << 16


def core_cache_bytes(cpu_cache: str = "/sys/devices/system/cpu/cpu0/cache") -> int | None:
    """The size of one core's second-level cache, in bytes, as Linux reports it (the level-2
    data or unified cache of cpu0); None where it cannot be read (another system, a container
    that hides it)."""
    try:
        for entry in sorted(os.listdir(cpu_cache)):
            folder = os.path.join(cpu_cache, entry)
            if not entry.startswith("index"):
                continue
            with open(os.path.join(folder, "level")) as level, \
                    open(os.path.join(folder, "type")) as kind:
                if level.read().strip() != "2" or kind.read().strip() == "Instruction":
                    continue
            with open(os.path.join(folder, "size")) as size:
                text = size.read().strip().upper()
            units = {"K": 2**10, "M": 2**20, "G": 2**30}
            value = int(text[:-1]) * units[text[-1]] if text[-1:] in units else int(text)
            if value > 0:
                return value
    except (OSError, ValueError):
        pass
    return None


#: this machine's ``core_cache_bytes()``, read once (the Winograd slices and ``product_blocks``'s
#: rule follow it)
CORE_CACHE_BYTES = core_cache_bytes()


def thread_slices(n: int) -> list[slice]:
    """``range(n)`` (a batch, or channels) as one near-equal slice per thread of the pool."""
    return _threads.split(n, _threads.get_num_threads())


def cache_slices(n: int, per_sample_bytes: int, chunk_bytes: int | None = None,
                 per_thread: int = 1) -> list[slice]:
    """A batch of ``n`` as slices for the pool: at least ``per_thread`` per thread, the slices'
    temporaries (``per_sample_bytes`` a sample) ``chunk_bytes`` (default ``_CHUNK_BYTES``) on
    average, a multiple of the threads in all; and as few slices as give the largest no more
    samples, so that they are all of one size where they can be (32 samples of 288 KiB: 16 slices
    of 2, not 14 of 2 and 4 of 1).
    Measured 2026-12-04, Intel Xeon, 2 threads, a 32x32x32x32 -> 64 3x3 stride-2 layer's forward
    + backward, medians of five alternated process pairs 7.54 -> 7.15 ms (6.92-7.68 and
    6.78-7.64)."""
    threads = _threads.get_num_threads()
    chunk_bytes = _CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    by_cache = -(-n * per_sample_bytes // chunk_bytes)
    parts = max(threads * per_thread, by_cache)
    parts = -(-parts // threads) * threads  # a multiple of the threads: no worker idles at the end
    even = -(-n // -(-n // parts))  # the fewest slices whose largest is as large as before
    if even % threads == 0 and even >= threads * per_thread:
        parts = even
    return _threads.split(n, parts)


def flat_slices(size: int, minimum: int = _PARALLEL_ELEMENTS) -> list[slice]:
    """A flat array of ``size`` elements as slices: one per thread from ``minimum`` elements on
    (a pass that costs less per element pays for the hand-off from a larger size), else one."""
    threads = _threads.get_num_threads()
    return _threads.split(size, threads if size >= minimum else 1)


def summed(parts: list[np.ndarray]) -> np.ndarray:
    """``parts[0] + parts[1] + ...`` (one shape and dtype), into ``parts[0]`` where it is
    C-contiguous (else a copy of it), in flat slices on the pool: each element added left to
    right, as a serial loop of ``+=`` adds it (the same rounding). For the batch slices' weight
    gradients, which the calling thread used to sum alone while the pool idled (measured
    2026-12-04, Intel Xeon: 1-2 ms of a ResNet-20 training step at batch 64)."""
    total = parts[0] if parts[0].flags.c_contiguous else parts[0].copy()
    flat = [total.reshape(-1), *(part.reshape(-1) for part in parts[1:])]

    def add(s: slice) -> None:
        head = flat[0][s]
        for part in flat[1:]:
            np.add(head, part[s], out=head)

    if len(parts) > 1:
        _threads.parallel_map(add, flat_slices(total.size))
    return total


def added(a: np.ndarray, b: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``a + b`` in a new array of ``dtype``, in flat slices on the pool where both are
    C-contiguous arrays of that dtype and one shape (else NumPy's ``np.add``, the twin)."""
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=dtype)
    if not (a.shape == b.shape and a.dtype == b.dtype == dtype and a.flags.c_contiguous
            and b.flags.c_contiguous):
        return np.add(a, b, out=out)
    flat_a, flat_b, flat_out = a.reshape(-1), b.reshape(-1), out.reshape(-1)
    _threads.parallel_map(lambda s: np.add(flat_a[s], flat_b[s], out=flat_out[s]),
                          flat_slices(out.size))
    return out


# --------------------------------------------------------------------------- GEMM

# a product is split over the pool only above this many multiply-adds: below, the hand-off and two
# concurrent small OpenBLAS calls cost more than one call (measured on 2 threads: 64x640 @ 640x100,
# 4.1M, 0.097 ms split vs 0.049 whole; 256x640 @ 640x100, 16M, 0.17 vs 0.18; 1000x640 @ 640x100,
# 64M, 0.41 vs 0.65)
_PARALLEL_GEMM_MACS = 16_000_000
# it is split by columns of b (each worker packs only its part of b) where b has this many columns
# a thread, else by rows of a. Measured 2026-12-04, Intel Xeon, 2 threads, float32, ms, one product
# / split by rows / by columns: a Dense layer 4096 -> 256 at batch 64, forward x @ W.T 1.50 / 1.13-
# 2.23 / 0.86-0.90, weight gradient dout.T @ x 1.26 / 0.80 / 0.75, input gradient dout @ W 1.29 /
# 0.87 / 0.72; at batch 256 4.20 / 2.59 / 2.46; 32x9216 @ 9216x256 2.44 / 1.93 / 1.33;
# 128x1024 @ 1024x1024 2.34 / 1.56 / 1.24.
_MIN_SPLIT_COLUMNS = 64


# x @ W.T with a few rows of x (a Dense layer's forward at a small batch) is taken as W @ x.T:
# OpenBLAS packs all of W.T for the few rows of an sgemm and then runs its large-matrix kernel,
# where W @ x.T streams W once. Measured 2026-12-05, Intel Xeon, one thread, float32, us, x @ W.T
# / W @ x.T: W 256 x 4096 at 2 rows 455 / 247, 8 rows 531 / 294, 16 rows 610 / 364, 32 rows 799
# / 548; W 1000 x 1280 at 2 rows 573 / 322, 8 rows 646 / 371; W 120 x 400 or smaller: the same.
# One row is a matrix-vector product either way (142 / 141); a product OpenBLAS's small-matrix
# kernels take (``_SMALL_PRODUCT``) packs nothing (120 x 400 at 2 rows: 3 / 6).
_FEW_ROWS = 16


# A small batch runs serially while the pool's other cores idle (``threads.cores_idle``); a product
# with at most _FEW_ROWS rows or columns (a Dense layer at batch 1-7) whose large operand has at
# least _WIDE_STREAMED elements (larger than one core's L2) then runs on OpenBLAS's own threads
# too (``threads.idle_cores_blas``): each core streams its part of the weight. Measured 2026-12-05,
# Intel Xeon, float32, us, 1 / 2 BLAS threads, 2 MiB of other data touched between calls: x @ W.T
# with W (256, 4096) at 1 row 140 / 77, 2 rows 274 / 146, 7 rows 497 / 268; W (1000, 1280) at 1
# row 170 / 93, 4 rows 369 / 235; W (512, 512) at 1 row 34 / 39, W (128, 1024) at 2 rows 14 / 18.
# A convolution's products stay on one thread: alone, those that OpenBLAS threads ran 1.2-1.6x
# faster on two ((1024, 16) @ (16, 96) 40 / 26 us), but in a session its worker then spins on the
# other core between calls, and MobileNetV2's at batch 1 took 1,093-1,104 us against 1,023-1,057
# with its four such products on one thread (vgg-bn's two: 308-316 against 305-314).
_WIDE_STREAMED = 2**20


def _on_idle_cores(m: int, k: int, n: int) -> bool:
    """Whether an (m, k) @ (k, n) product of this thread takes the idle cores' BLAS threads."""
    return (min(m, n) <= _FEW_ROWS and k * max(m, n) >= _WIDE_STREAMED
            and _threads.cores_idle())


def _wide_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.matmul(a, b)`` with the BLAS on the idle cores (``_on_idle_cores``)."""
    with _threads.idle_cores_blas():
        return np.matmul(a, b)


def gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (2-D) through NumPy's BLAS, whose every call is single-threaded (``threads.py``):
    a large product is split over the engine's pool, by columns of ``b`` where it has
    ``_MIN_SPLIT_COLUMNS`` a thread, else by rows of ``a``, so that a Dense layer uses every core
    too; a few rows of ``a`` against the transpose of a C-contiguous matrix (a Dense layer's
    weight) are taken as that matrix times ``a``'s transpose (``_FEW_ROWS``). Every matrix product
    outside a convolution block goes through here."""
    rows, columns = a.shape[0], b.shape[1]
    threads = _threads.get_num_threads()
    if (2 <= rows <= _FEW_ROWS and b.T.flags.c_contiguous and not b.flags.c_contiguous
            and a.size * columns > _SMALL_PRODUCT):
        return _few_rows(a, b, threads)
    if _on_idle_cores(rows, a.shape[1], columns):
        return _wide_matmul(a, b)
    if threads == 1 or rows * a.shape[1] * columns < _PARALLEL_GEMM_MACS:
        return np.matmul(a, b)
    by_columns = columns >= _MIN_SPLIT_COLUMNS * threads
    if not by_columns and rows < 2 * threads:
        return np.matmul(a, b)
    out = np.empty((rows, columns), dtype=np.result_type(a, b))
    if by_columns:

        def columns_of(s: slice) -> None:
            np.matmul(a, b[:, s], out=out[:, s])

        _threads.parallel_map(columns_of, _threads.split(columns, threads))
        return out

    def by_rows(s: slice) -> None:
        np.matmul(a[s], b, out=out[s])

    _threads.parallel_map(by_rows, _threads.split(rows, threads))
    return out


def _few_rows(a: np.ndarray, b: np.ndarray, threads: int) -> np.ndarray:
    """``a @ b`` as ``(b.T @ a.T).T`` (``_FEW_ROWS``), ``b.T`` C-contiguous; split over the pool
    by the rows of ``b.T`` (each worker streams its part) above ``_PARALLEL_GEMM_MACS``, or on the
    idle cores' BLAS threads where a small batch runs serially (``_on_idle_cores``)."""
    bt = b.T
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))

    def part(s: slice) -> None:
        out[:, s] = np.dot(bt[s], a.T).T

    if _on_idle_cores(*a.shape, b.shape[1]):  # (the pool's maps are serial there: no split)
        with _threads.idle_cores_blas():
            part(slice(None))
        return out
    parts = threads if a.size * b.shape[1] >= _PARALLEL_GEMM_MACS else 1
    _threads.parallel_map(part, _threads.split(b.shape[1], parts))
    return out


# OpenBLAS (NumPy's wheels) computes a product of M*K*N <= 100**3 with its small-matrix kernels
# (no packing of A and B, C written once, with beta = 0); a larger one packs both and scales C by
# beta first. With a short inner axis the packing is most of the work: measured 2026-12-04, AMD EPYC
# (Zen 4, SkylakeX kernel), one thread, float32, us: 96x16 @ 16x512 15.9, @ 16x1024 73 (4.6x the
# time for twice the work). Such a product is therefore cut into column blocks of at most 100**3
# multiply-adds: 96x16 @ 16x1024 73 -> 43 us, 48x8 @ 8x4096 161 -> 50, 16x96 @ 96x1024 73 -> 40;
# (M, K) of 16-384 x 8-288 against N 1024 and 4096: 1.1-3.2x faster while a block keeps at least
# _MIN_BLOCK_COLUMNS columns, slower below that (0.53-0.84x at 48-80 columns), so it stays whole.
_SMALL_PRODUCT = 100**3
_MIN_BLOCK_COLUMNS = 96
# The Intel Xeon (2 MiB of second-level cache a core) disagrees above a short inner axis: there
# OpenBLAS packs fast enough that column blocks only help up to K = 48. Measured 2026-12-06, one
# thread, float32, us, whole / in column blocks: K of 8-16 0.53-0.90x the time in blocks at every
# M (16-512) and N (1024, 4096) tried; MobileNetV2's (8, 48) @ (48, 4096) 70 / 50, (192, 48) @
# (48, 256) 51 / 41; but (128, 64) @ (64, 1024) 152 / 222, (64, 128) @ (128, 1024) 155 / 246,
# (96, 96) @ (96, 4096) 735 / 1158 (K of 64-288: 0.70-1.58x, 26 of 34 products above 1.0). So
# on a core with that much cache, column blocks are cut only where K <= 48; a pointwise 64 -> 128
# layer's forward + backward (32x64x32x32, 2 threads) took 22.5 -> 14.6 ms in fresh-process
# pairs, MobileNetV2's training step 639 -> 641 ms. The machines are told apart by the cache size
# that the engine reads anyway (``core_cache_bytes``); the AMD EPYC's (512 KiB - 1 MiB) keeps the
# rule measured there.


def _max_blocked_inner(cache_bytes: int | None) -> int:
    """The longest inner axis that ``product_blocks`` cuts in column blocks, for a core with
    ``cache_bytes`` of second-level cache (None: unknown): 48 from 2 MiB on, else no limit."""
    return 48 if (cache_bytes or 0) >= 2**21 else 2**62


_MAX_BLOCKED_INNER = _max_blocked_inner(CORE_CACHE_BYTES)
# A product with many rows and few columns (a channels-last 1x1 convolution: pixels x channels) is
# cut into row blocks of a and out instead, near-equal, each at most 100**3 multiply-adds, while a
# block keeps at least _MIN_BLOCK_ROWS rows. Measured 2026-12-05, Intel Xeon, one thread, float32,
# us, whole / in row blocks: (M, 16) @ (16, 96) at M = 1024, 4096, 8192: 34 / 25, 135 / 102, 304 /
# 201; (M, 96) @ (96, 16) 30 / 24, 120 / 110, 255 / 234; (4096, 48) @ (48, 16) 64 / 51;
# (M, 32) @ (32, 192) 95 / 73, 449 / 362, 895 / 659 (blocks of 147-161 rows); (M, 192) @ (192, 32)
# 98 / 83, 416 / 333; at 69-72 rows a block mixed, (M, 48) @ (48, 288) 0.91x, (M, 288) @ (288, 48)
# 1.12-1.19x; at 13-27 rows up to 2x slower.
_MIN_BLOCK_ROWS = 128


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b, out=out)`` on the calling thread: a (..., M, K), b (..., K, N) -> (...,
    M, N), stacks broadcast as NumPy's. Where both are row-major ("NN", the case OpenBLAS's
    small-matrix kernels take) and the product is large with a short inner axis, it is computed
    in column blocks of b and out, or, with too few columns for those, in row blocks of a and out
    (``product_blocks``; the same sums, rounded as another BLAS kernel may round them)."""
    m, k = a.shape[-2:]
    n = b.shape[-1]
    columns, rows = product_blocks.py_func(m, k, n)  # (the rule in Python: no dispatch)
    if (columns == rows == 0
            or a.strides[-1] != a.itemsize or b.strides[-1] != b.itemsize
            or (out is not None and out.strides[-1] != out.itemsize)):
        return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)
    if out is None:
        stack = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        out = np.empty((*stack, m, n), dtype=np.result_type(a, b))
    if columns:
        for j in range(0, n, columns):
            np.matmul(a, b[..., j : j + columns], out=out[..., j : j + columns])
        return out
    # the whole blocks as one stacked product: one call, so the GIL is released once (a pool worker
    # that takes it back once per block waits on the other workers: 2x slower on 2 threads)
    whole = m - m % rows
    blocks = (whole // rows, rows)
    np.matmul(a[..., :whole, :].reshape(*a.shape[:-2], *blocks, k), b[..., None, :, :],
              out=out[..., :whole, :].reshape(*out.shape[:-2], *blocks, n))
    if whole < m:
        np.matmul(a[..., whole:, :], b, out=out[..., whole:, :])
    return out


@nb.njit(cache=True)
def product_blocks(m, k, n):
    """How ``matmul`` cuts an (m, k) @ (k, n) product, as (columns, rows): column blocks of
    ``columns`` columns (whole vectors; only for an inner axis k of at most
    ``_MAX_BLOCKED_INNER``), or near-equal row blocks of ``rows`` rows (each at most
    ``_SMALL_PRODUCT`` multiply-adds), or (0, 0): whole (small enough, or blocks too narrow). The
    one rule of ``matmul`` (through ``py_func``) and of ``blas.matmul`` (compiled)."""
    if m * k * n <= _SMALL_PRODUCT:
        return 0, 0
    columns = _SMALL_PRODUCT // max(1, m * k)
    if columns >= _MIN_BLOCK_COLUMNS and k <= _MAX_BLOCKED_INNER:
        return columns - columns % 16, 0
    blocks = -(-m * k * n // _SMALL_PRODUCT)
    rows = -(-m // blocks)
    return 0, (rows if rows >= _MIN_BLOCK_ROWS else 0)


# --------------------------------------------------------------------------- inlined index helpers
# Inlined into the kernels that call them (``inline="always"``): the Numba cache then holds whole
# kernels, and no helper is compiled apart (a cached process would never load it).


@nb.njit(cache=True, nogil=True, inline="always")
def unsigned(index):
    """An index the caller knows is >= 0, as unsigned: Numba then emits no negative-index
    wraparound test, and the loop vectorises (measured 6x faster on LeNet's conv2 im2col)."""
    return nb.uint64(index)


@nb.njit(cache=True, nogil=True, inline="always")
def valid_range(offset, stride, size, count):
    """The outputs ``o`` in [lo, hi) whose input ``o*stride + offset`` lies in [0, size). Inlined
    (as ``unsigned``): the kernels' cache then holds everything, and no helper is compiled apart."""
    lo = min(max(-(offset // stride), 0), count)
    hi = max(min((size - 1 - offset) // stride + 1, count), lo)
    return lo, hi


@intrinsic
def _prefetch_line(typingctx, flat, index):
    """LLVM's prefetch hint (for reading, kept in every cache level) of the cache line that holds
    ``flat[index]``, flat a 1-D array. A hint: it never faults, and changes no value."""

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        byte = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        hint = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32]),
            "llvm.prefetch.p0i8")
        address = builder.bitcast(builder.gep(array.data, [args[1]]), byte)
        builder.call(hint, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(flat, index), codegen


@nb.njit(cache=True, nogil=True, inline="always")
def prefetch(flat, start, count):
    """Ask for ``flat[start:start + count]`` (a 1-D array, the range inside it) to be brought into
    cache, one hint per 64-byte line, while the caller works on other values: for a kernel that
    reads many short runs far apart (each sample's map of one channel), which the CPU's own
    prefetcher, working within a 4 KiB page, only starts to fetch after its first misses."""
    step = max(64 // flat.itemsize, 1)
    for q in range(0, count, step):
        _prefetch_line(flat, start + q)
