"""NumPy's own BLAS product, called from compiled kernels without the GIL.

A kernel that runs a batch slice as "product, compiled pass, product, compiled pass" from Python
gives the GIL up and takes it back at every call. With two threads of the pool doing so, each
taking the GIL back waits on the other's Python and on a cross-core wake-up: measured 2026-12-06,
Intel Xeon, MobileNetV2's 16 -> 96 -> 16 block on 11 samples of 16x16 maps, one call 280-284 us
on one thread and 331-339 us each on two; the same work as one compiled call that runs the
products itself, 297-299 us on one thread and 290-300 us each on two.

``gemm(blas, a, b, out)`` is ``out = a @ b`` through the same ``cblas_?gemm`` that ``np.matmul``
calls for 2-D row-major operands (no transposes, alpha 1, beta 0, the same leading dimensions), so
the same bits; ``gemm_at(blas, a, b, out)`` is ``out = a.T @ b``, as ``np.matmul`` calls it for
a transposed view (TransA); ``matmul(blas, a, b, out)`` is ``arrays.matmul``'s products (whole,
or in the column or row blocks that OpenBLAS's small-matrix kernels take), so its bits.
``blas`` is ``library()``: the two functions' addresses and their integer width, passed in at run
time so that the kernels compile once and cache (an address differs from process to process),
found at the first call (not on import: threadpoolctl's scan and the probe took 11-15 ms of
``import cnn_im2col``'s 0.85 s, measured 2026-12-06, Intel Xeon) and kept. It is None where the
functions cannot be found or do not give ``np.matmul``'s bits on a probe (another BLAS than
OpenBLAS, or a NumPy whose matmul does not use it): callers then keep NumPy's matmul between
their compiled passes."""

from __future__ import annotations

import ctypes
import functools

import numba as nb
import numpy as np
import threadpoolctl
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .arrays import product_blocks

_I32, _I64 = ir.IntType(32), ir.IntType(64)
# CBLAS's enums: row-major order, no transpose, transpose
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


@intrinsic
def _cblas_gemm(typingctx, blas, trans_a, m, n, k, a, lda, b, ldb, out, ldc):
    """``cblas_?gemm(RowMajor, TransA, NoTrans, m, n, k, 1, a, lda, b, ldb, 0, out, ldc)``
    through the address in ``blas`` (``library()``'s layout) for the operands' dtype, TransA
    Trans where ``trans_a`` is nonzero: 32-bit integers where ``blas[2]`` is 0, 64-bit (an ILP64
    build) where it is 1."""
    sig = types.void(blas, trans_a, m, n, k, a, lda, b, ldb, out, ldc)

    def codegen(context, builder, signature, args):
        blas_value, trans_value, m_value, n_value, k_value, a_value, lda_value, b_value, \
            ldb_value, out_value, ldc_value = args
        array_type = signature.args[5]
        float_type = context.get_value_type(array_type.dtype)
        pointer = float_type.as_pointer()
        data = [cgutils.create_struct_proxy(signature.args[i])(context, builder, value=args[i]).data
                for i in (5, 7, 9)]
        blas_array = cgutils.create_struct_proxy(signature.args[0])(context, builder,
                                                                   value=blas_value)
        slot = 0 if array_type.dtype == types.float32 else 1
        address = builder.load(builder.gep(blas_array.data, [ir.Constant(_I64, slot)]))
        wide = builder.load(builder.gep(blas_array.data, [ir.Constant(_I64, 2)]))
        transposed = builder.icmp_signed("!=", trans_value, ir.Constant(trans_value.type, 0))
        trans = builder.select(transposed, ir.Constant(_I32, _TRANS),
                               ir.Constant(_I32, _NO_TRANS))
        enums = [ir.Constant(_I32, _ROW_MAJOR), trans, ir.Constant(_I32, _NO_TRANS)]
        one, zero = ir.Constant(float_type, 1.0), ir.Constant(float_type, 0.0)
        is_wide = builder.icmp_signed("!=", wide, ir.Constant(_I64, 0))
        with builder.if_else(is_wide) as (then, otherwise):
            for block, int_type in ((then, _I64), (otherwise, _I32)):
                with block:
                    fn_type = ir.FunctionType(ir.VoidType(), [
                        _I32, _I32, _I32, int_type, int_type, int_type, float_type, pointer,
                        int_type, pointer, int_type, float_type, pointer, int_type])
                    fn = builder.inttoptr(address, fn_type.as_pointer())
                    mi, ni, ki, lda_i, ldb_i, ldc_i = (
                        v if int_type is _I64 else builder.trunc(v, int_type)
                        for v in (m_value, n_value, k_value, lda_value, ldb_value, ldc_value))
                    builder.call(fn, [*enums, mi, ni, ki, one, data[0], lda_i, data[1], ldb_i,
                                      zero, data[2], ldc_i])
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True, inline="always")
def gemm(blas, a, b, out):
    """``out[:] = a @ b`` for 2-D row-major ``a`` (M, K), ``b`` (K, N), ``out`` (M, N) of one dtype
    (float32 or float64), each with unit stride along its rows (views of larger arrays too):
    ``np.matmul``'s BLAS call, with the same leading dimensions, so its bits (the caller checks
    the shapes; ``blas`` is ``library()``, not None)."""
    _product(blas, 0, a.shape[0], a.shape[1], a, b, out)


@nb.njit(cache=True, nogil=True, inline="always")
def gemm_at(blas, a, b, out):
    """``out[:] = a.T @ b`` for 2-D row-major ``a`` (K, M), ``b`` (K, N), ``out`` (M, N) of one
    dtype, each with unit stride along its rows: the call ``np.matmul`` makes for a transposed
    view of a row-major ``a`` (TransA, a's own leading dimension), so its bits."""
    _product(blas, 1, a.shape[1], a.shape[0], a, b, out)


@nb.njit(cache=True, nogil=True, inline="always")
def _product(blas, trans_a, m, k, a, b, out):
    """``gemm``'s and ``gemm_at``'s call: an (m, k) @ (k, N) product, ``a`` read transposed if
    ``trans_a``; zeros for an inner axis of 0, nothing for an empty ``out``."""
    if m > 0 and b.shape[1] > 0:
        if k == 0:
            out[:] = 0
        else:
            _cblas_gemm(blas, np.int64(trans_a), np.int64(m), np.int64(b.shape[1]), np.int64(k),
                        a, _leading(a), b, _leading(b), out, _leading(out))


@nb.njit(cache=True, nogil=True, inline="always")
def _leading(x):
    """A 2-D operand's leading dimension: its row stride in elements, or, for a single row (whose
    stride NumPy leaves arbitrary: a (1, N) transpose of an (N, 1) array keeps the column's), its
    row length."""
    if x.shape[0] > 1:
        return np.int64(x.strides[0] // x.itemsize)
    return np.int64(max(x.shape[1], 1))


@nb.njit(cache=True, nogil=True)
def matmul(blas, a, b, out):
    """``arrays.matmul(a, b, out=out)`` for 2-D C-contiguous operands, without the GIL: the same
    products (whole, in column blocks of b and out, or in row blocks of a and out, by
    ``arrays.product_blocks``), so the same bits."""
    m = a.shape[0]
    columns, rows = product_blocks(m, a.shape[1], b.shape[1])
    if columns:
        for j in range(0, b.shape[1], columns):
            gemm(blas, a, b[:, j : j + columns], out[:, j : j + columns])
    elif rows:
        whole = m - m % rows
        for r in range(0, whole, rows):
            gemm(blas, a[r : r + rows], b, out[r : r + rows])
        if whole < m:
            gemm(blas, a[whole:], b, out[whole:])
    else:
        gemm(blas, a, b, out)


def _address(function: object) -> int:
    return ctypes.cast(function, ctypes.c_void_p).value or 0


def _matches_numpy(blas: np.ndarray) -> bool:
    """Whether ``gemm`` through ``blas`` gives ``np.matmul``'s bits on small products of both
    dtypes (shapes that take matmul's general product, not its vector cases)."""
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for m, k, n in ((7, 5, 6), (33, 17, 9)):
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            out = np.empty((m, n), dtype)
            gemm(blas, a, b, out)
            if not np.array_equal(out, a @ b):
                return False
            at = np.ascontiguousarray(a.T)  # (k, m): out = at.T @ b, as matmul of a view
            gemm_at(blas, at, b, out)
            if not np.array_equal(out, at.T @ b):
                return False
    return True


def _numpy_library() -> ctypes.CDLL | None:
    """NumPy's compiled core as a library handle: looking a symbol up through it finds the BLAS
    NumPy itself was linked with (another process-wide BLAS, SciPy's, can be loaded too)."""
    try:
        from numpy._core import _multiarray_umath as core  # NumPy 2
    except ImportError:  # pragma: no cover - NumPy 1
        from numpy.core import _multiarray_umath as core
    try:
        return ctypes.CDLL(core.__file__)
    except OSError:
        return None


def _find() -> np.ndarray | None:
    """``library()`` for NumPy's own OpenBLAS (the one threadpoolctl finds whose ``cblas_sgemm`` is
    the one NumPy's core resolves), if its products match NumPy's; else None."""
    numpy_library = _numpy_library()
    if numpy_library is None:
        return None
    try:
        found = threadpoolctl.ThreadpoolController().select(internal_api="openblas")
    except Exception:  # noqa: BLE001 - an unusual install: NumPy's matmul is still there
        return None
    for lib in found.lib_controllers:
        prefix = getattr(lib, "_symbol_prefix", None)
        suffix = getattr(lib, "_symbol_suffix", None)
        if prefix is None or suffix is None:
            continue
        names = [f"{prefix}cblas_{kind}gemm{suffix}" for kind in "sd"]
        ours = [getattr(lib.dynlib, name, None) for name in names]
        numpy_own = [getattr(numpy_library, name, None) for name in names]
        if None in ours or None in numpy_own:
            continue
        addresses = [_address(f) for f in ours]
        if addresses != [_address(f) for f in numpy_own] or 0 in addresses:
            continue  # another BLAS of the process, not the one NumPy calls
        # OpenBLAS names an ILP64 build's symbols with a "64" suffix (INTERFACE64's convention)
        blas = np.array([*addresses, int("64" in suffix)], np.int64)
        if _matches_numpy(blas):
            blas.flags.writeable = False
            return blas
    return None


@functools.cache
def library() -> np.ndarray | None:
    """(address of cblas_sgemm, of cblas_dgemm, 1 if 64-bit integers) for ``gemm``, or None
    (``_find``, once a process: a second thread's first call may find it again, to the same
    value)."""
    return _find()
