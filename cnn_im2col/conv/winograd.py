"""Winograd's minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
2016) for stride-1, undilated, ungrouped convolutions with a 6x6 input window: F(4x4, 3x3) for a
3x3 kernel (36 GEMMs, 4x fewer multiply-adds than im2col's one) and F(2x2, 5x5) for a 5x5 kernel
(36 GEMMs, 2.78x fewer).

With r the kernel's size and m = 7 - r the tile's, each m x m block of outputs comes from the 6x6
input window d under it (a *tile*; tiles are m apart and overlap by r - 1). For kernel g of output
map k and input map c,

    Y_k = A^T [ sum_c (G g_kc G^T) * (B^T d_c B) ] A          (* elementwise, 6x6)

with the constant matrices below: ``BT`` (6x6), the same for both, and ``G`` (6 x r), ``AT``
(m x 6) of each (``MATRICES``), all from the interpolation points 0, 1, -1, 2, -2 and infinity.
Element xi = 6i + j of the 6x6 sum over c is a matrix product over all tiles at once:

    U[xi] = (G g G^T)[xi]   (K, C)     the weight, transformed once per call
    V[xi] = (B^T d B)[xi]   (C, T)     the input, every tile (``winograd_input_*``)
    M[xi] = U[xi] @ V[xi]   (K, T)     36 GEMMs, NumPy's BLAS
    Y     = A^T M A + bias  (N, K, OH, OW)   (``winograd_output_*``, with the fused ReLU)

Backward is the adjoint of each of those linear steps, so it is exact (the same function's
gradient, not a second approximation):

    dM = A dY A^T per tile; dU[xi] = dM[xi] @ V[xi]^T; dW = G^T dU G;
    dV[xi] = U[xi]^T @ dM[xi]; dx = the sum over tiles of B dV B^T on each window.

Why F(4x4, 3x3) and not F(2x2, 3x3) (16 GEMMs, 2.25x fewer multiply-adds, which this module held
before): per output pixel and channel it transforms 2.25 values instead of 4 and multiplies 2.25
instead of 4, and its GEMMs are smaller and stay in cache. Measured 2026-12-02 (Intel Xeon, AVX-512,
one thread), the GEMMs of a 32x32x32x32 -> 64 layer's forward+backward: 10.2 ms against 29.6 ms;
LeNet's conv2 (64x20x12x12 -> 40, 5x5): F(2x2, 5x5)'s GEMMs 1.9-2.4 ms against im2col's 5.7.

Rounding: the transforms' entries reach 5 and 8 (B^T, A^T) and 1/24 (G), so float32 results carry
about 20x im2col's rounding: ~1e-5 of the output's largest value against ~5e-7 (measured up to
512 channels). The tests compare both with float64 references at the same tolerances;
``algorithm="im2col"`` keeps im2col's rounding.

Memory: V, kept for backward, holds 36 values per tile and channel: 2.25 per output pixel for
F(4x4, 3x3) (im2col keeps 9), 9 for F(2x2, 5x5) (im2col keeps 25). Arrays are worked on a batch
slice at a time, on the engine's pool, as in ``conv/im2col.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numba as nb
import numpy as np

from .. import threads as _threads
from ..arrays import cache_slices, matmul
from ..arrays import unsigned as _u
from ..shapes import WindowGeometry
from .im2col import bias_columns

ALPHA = 6  # input window side; ALPHA**2 transformed planes
BT = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    dtype=np.float64,
)
# kernel size r -> (G (6 x r), A^T (m x 6)), m = 7 - r outputs per tile side
MATRICES = {
    3: (
        np.array(
            [
                [1 / 4, 0, 0],
                [-1 / 6, -1 / 6, -1 / 6],
                [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6],
                [1 / 24, -1 / 12, 1 / 6],
                [0, 0, 1],
            ]
        ),
        np.array(
            [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
            dtype=np.float64,
        ),
    ),
    5: (
        np.array(
            [
                [1 / 4, 0, 0, 0, 0],
                [-1 / 6] * 5,
                [-1 / 6, 1 / 6, -1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6, 1 / 3, 2 / 3],
                [1 / 24, -1 / 12, 1 / 6, -1 / 3, 2 / 3],
                [0, 0, 0, 0, 1],
            ]
        ),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]], dtype=np.float64),
    ),
}


def supports(
    kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], groups: int
) -> bool:
    """Whether Winograd computes this convolution: a 3x3 or 5x5 kernel, stride 1, dilation 1 (any
    groups, padding and input size: a grouped convolution's 36 products are block-diagonal, one
    GEMM per group). The layer asks at construction, ``conv2d_forward`` per call."""
    return tuple(kernel) in ((3, 3), (5, 5)) and (tuple(stride), tuple(dilation)) == (
        (1, 1),
        (1, 1),
    )


# kernel size r -> the suffix of the transforms compiled for its tile (``winograd_input_f43``...)
VARIANTS = {3: "f43", 5: "f25"}
TRANSFORMS = (
    "winograd_input",
    "winograd_input_adjoint",
    "winograd_output",
    "winograd_output_adjoint",
)


def tile(g: WindowGeometry) -> int:
    """m: the outputs per tile side, 4 for a 3x3 kernel, 2 for a 5x5 one."""
    return ALPHA + 1 - g.kh


def _kernel(name: str, g: WindowGeometry):
    """The transform ``name`` (one of ``TRANSFORMS``) compiled for this geometry's kernel (looked up
    when called, so that a profiler's wrapper of the module attribute is seen)."""
    return globals()[f"{name}_{VARIANTS[g.kh]}"]


def tiles(g: WindowGeometry) -> tuple[int, int]:
    """(TY, TX): tiles per column and per row, enough to cover OH x OW (the last may stick out)."""
    m = tile(g)
    return -(-g.oh // m), -(-g.ow // m)


def transform_weight(weight: np.ndarray) -> np.ndarray:
    """(K, C, r, r) -> U (36, K, C), ``U[6a + b] = (G w G^T)[a, b]``, in the weight's dtype."""
    u = np.empty((ALPHA * ALPHA, *weight.shape[:2]), dtype=weight.dtype)
    winograd_weight(np.ascontiguousarray(weight), u)
    return u


def weight_grad(du: np.ndarray, r: int) -> np.ndarray:
    """The adjoint of ``transform_weight``: dU (36, K, C) -> dW (K, C, r, r) = G^T dU G."""
    dw = np.empty((*du.shape[1:], r, r), dtype=du.dtype)
    winograd_weight_adjoint(np.ascontiguousarray(du), dw)
    return dw


def transform_input(x: np.ndarray, g: WindowGeometry) -> np.ndarray:
    """x (n, C, H, W), C-contiguous -> V (36, C, n*TY*TX)."""
    ty, tx = tiles(g)
    v = np.empty((ALPHA * ALPHA, x.shape[1], x.shape[0] * ty * tx), dtype=x.dtype)
    _kernel("winograd_input", g)(x, g.top, g.left, ty, tx, v)
    return v


def grouped_products(
    a: np.ndarray, b: np.ndarray, groups: int, ta: bool = False, tb: bool = False
) -> np.ndarray:
    """The 36 products of a (36, P, Q) and b (36, Q', R), block-diagonal over ``groups``: group
    g's rows of ``a`` times group g's rows of ``b`` (``ta`` / ``tb``: of their transposes, per
    group); ``groups == 1`` is ``a @ b``. (36, P, R) out, P and R summed over the groups."""
    if groups == 1:
        return matmul(a.transpose(0, 2, 1) if ta else a, b.transpose(0, 2, 1) if tb else b)
    a4 = a.reshape(a.shape[0], groups, a.shape[1] // groups, a.shape[2])
    b4 = b.reshape(b.shape[0], groups, b.shape[1] // groups, b.shape[2])
    out = matmul(a4.transpose(0, 1, 3, 2) if ta else a4, b4.transpose(0, 1, 3, 2) if tb else b4)
    return out.reshape(out.shape[0], -1, out.shape[3])


def slice_forward(
    x: np.ndarray,
    u: np.ndarray,
    g: WindowGeometry,
    bias2: np.ndarray,
    relu: bool,
    out: np.ndarray,
    groups: int = 1,
) -> np.ndarray:
    """One batch slice: ``out`` (n, K, OH, OW) (written) = f(conv(x) + bias) from x (n, C, H, W)
    and U (36, K, C / groups); bias2 (K, 1) tied or (K, OH*OW) untied. Returns V, for
    ``slice_backward``."""
    ty, tx = tiles(g)
    v = transform_input(x, g)
    _kernel("winograd_output", g)(grouped_products(u, v, groups), ty, tx, bias2, relu, out)
    return v


def slice_backward(
    dout: np.ndarray,
    y: np.ndarray | None,
    v: np.ndarray,
    u: np.ndarray,
    g: WindowGeometry,
    dx: np.ndarray | None,
    groups: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """One batch slice's gradients: dout (n, K, OH, OW), C-contiguous; y: the forward's output when
    it fused a ReLU (its derivative is ``y > 0``), else None; V and U from ``slice_forward``.
    Writes ``dx`` (n, C, H, W) when it is given. Returns (dU (36, K, C / groups), tied bias
    gradient (K,),
    float64); ``weight_grad`` turns the slices' summed dU into dW."""
    ty, tx = tiles(g)
    dm = np.empty((ALPHA * ALPHA, dout.shape[1], v.shape[2]), dtype=dout.dtype)
    tied = np.empty(dout.shape[1], dtype=np.float64)
    _kernel("winograd_output_adjoint", g)(
        dout, dout if y is None else y, y is not None, ty, tx, dm, tied
    )
    du = grouped_products(dm, v, groups, tb=True)  # (36, K, C / groups)
    if dx is not None:
        _kernel("winograd_input_adjoint", g)(
            grouped_products(u, dm, groups, ta=True), g.top, g.left, ty, tx, dx
        )
    return du, tied


# ------------------------------------------------------------ the kernels: F(4x4, 3x3), F(2x2, 5x5)
# The transforms (the mathematics and the matrices are at the top of this module) and their
# adjoints, for the two algorithms with a 6x6 input window (ALPHA = 6, the same B^T): F(4x4, 3x3)
# (tile m = 4) and F(2x2, 5x5) (m = 2). A tile (ty, tx) is the 6x6 input window at row m*ty - PT,
# column m*tx - PL, giving the m x m outputs at (m*ty, m*tx); tiles are numbered
# t = (n*TY + ty)*TX + tx.
# Transformed arrays are (36, C, T): element 6*i + j of every tile is one (C, T) matrix, so that the
# 36 products are plain GEMMs. Every 1-D step runs over all of an image's tiles at once, in flat
# indices, so that its loop is long enough to vectorise (loops over one row of a 32-wide image's 8
# tiles ran 5x slower). A loop writes at most 6 planes at once: the planes are often a power of two
# apart, and writing 16 at once thrashed one cache set (5x slower). ``m`` is 4 or 2; each loop that
# depends on it is written out for both, so that each version's trip counts are constants.


# B^T's and A^T's integer entries as float32: an int literal times a float32 value is float64 in
# Numba (NumPy's promotion), so ``4 * d`` turned a float32 transform into converts and float64
# arithmetic at half the vector width; a float32 constant keeps float32 data float32 and, exact,
# promotes with float64 data.
_TWO, _FOUR, _FIVE, _EIGHT = (np.float32(k) for k in (2, 4, 5, 8))


@nb.njit(cache=True, nogil=True, inline="always")
def _bt6(d0, d1, d2, d3, d4, d5):
    """B^T @ (d0, ..., d5), B^T's rows (4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0),
    (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)."""
    p, q = d4 - _FOUR * d2, d3 - _FOUR * d1
    s, t = d4 - d2, _TWO * (d3 - d1)
    return _FOUR * d0 - _FIVE * d2 + d4, p + q, p - q, s + t, s - t, _FOUR * d1 - _FIVE * d3 + d5


@nb.njit(cache=True, nogil=True, inline="always")
def _bt6_adjoint(e0, e1, e2, e3, e4, e5):
    """B @ (e0, ..., e5): the adjoint of ``_bt6``."""
    p, q = e1 + e2, e1 - e2
    s, t = e3 + e4, e3 - e4
    return (
        _FOUR * e0,
        _FOUR * (e5 - q) - _TWO * t,
        -_FIVE * e0 - _FOUR * p - s,
        q + _TWO * t - _FIVE * e5,
        e0 + p + s,
        e5,
    )


@nb.njit(cache=True, nogil=True, inline="always")
def _at4(m0, m1, m2, m3, m4, m5):
    """A^T @ (m0, ..., m5) of F(4x4, 3x3), A^T's rows (1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0),
    (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)."""
    p, q = m1 + m2, m1 - m2
    s, t = m3 + m4, m3 - m4
    return m0 + p + s, q + _TWO * t, p + _FOUR * s, q + _EIGHT * t + m5


@nb.njit(cache=True, nogil=True, inline="always")
def _at4_adjoint(g0, g1, g2, g3):
    """A @ (g0, g1, g2, g3): the adjoint of ``_at4``."""
    p, q = g0 + g2, g1 + g3
    s, t = g0 + _FOUR * g2, _TWO * g1 + _EIGHT * g3
    return g0, p + q, p - q, s + t, s - t, g3


@nb.njit(cache=True, nogil=True, inline="always")
def _at2(m0, m1, m2, m3, m4, m5):
    """A^T @ (m0, ..., m5) of F(2x2, 5x5), A^T's rows (1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 1)."""
    return m0 + m1 + m2 + m3 + m4, m1 - m2 + _TWO * (m3 - m4) + m5


@nb.njit(cache=True, nogil=True, inline="always")
def _at2_adjoint(g0, g1):
    """A @ (g0, g1): the adjoint of ``_at2``."""
    return g0, g0 + g1, g0 - g1, g0 + _TWO * g1, g0 - _TWO * g1, g1


_SIXTH, _TWELFTH, _TWENTYFOURTH, _THIRD = (
    1 / 6,
    1 / 12,
    1 / 24,
    1 / 3,
)  # G's entries (a division is ~10x slower)


@nb.njit(cache=True, nogil=True, inline="always")
def _g3(a0, a1, a2):
    """G @ (a0, a1, a2) of F(4x4, 3x3), G's rows (1/4, 0, 0), (-1/6, -1/6, -1/6), (-1/6, 1/6, -1/6),
    (1/24, 1/12, 1/6), (1/24, -1/12, 1/6), (0, 0, 1)."""
    p, q = (a0 + a2) * _SIXTH, a0 * _TWENTYFOURTH + a2 * _SIXTH
    h, m = a1 * _SIXTH, a1 * _TWELFTH
    return 0.25 * a0, -(p + h), h - p, q + m, q - m, a2


@nb.njit(cache=True, nogil=True, inline="always")
def _g3_adjoint(b0, b1, b2, b3, b4, b5):
    """G^T @ (b0, ..., b5): the adjoint of ``_g3``."""
    p, q = b1 + b2, b3 + b4
    return (
        0.25 * b0 - p * _SIXTH + q * _TWENTYFOURTH,
        (b2 - b1) * _SIXTH + (b3 - b4) * _TWELFTH,
        (q - p) * _SIXTH + b5,
    )


@nb.njit(cache=True, nogil=True, inline="always")
def _g5(a0, a1, a2, a3, a4):
    """G @ (a0, ..., a4) of F(2x2, 5x5), G's rows (1/4, 0, 0, 0, 0), -1/6 (1, 1, 1, 1, 1),
    -1/6 (1, -1, 1, -1, 1), 1/24 (1, 2, 4, 8, 16), 1/24 (1, -2, 4, -8, 16), (0, 0, 0, 0, 1)."""
    e, o = (a0 + a2 + a4) * _SIXTH, (a1 + a3) * _SIXTH
    p = a0 * _TWENTYFOURTH + a2 * _SIXTH + a4 * (2 * _THIRD)
    q = a1 * _TWELFTH + a3 * _THIRD
    return 0.25 * a0, -(e + o), o - e, p + q, p - q, a4


@nb.njit(cache=True, nogil=True, inline="always")
def _g5_adjoint(b0, b1, b2, b3, b4, b5):
    """G^T @ (b0, ..., b5): the adjoint of ``_g5``."""
    p, q = b1 + b2, b3 + b4
    d, h = (b2 - b1) * _SIXTH, b3 - b4
    return (
        0.25 * b0 - p * _SIXTH + q * _TWENTYFOURTH,
        d + h * _TWELFTH,
        (q - p) * _SIXTH,
        d + h * _THIRD,
        q * (2 * _THIRD) - p * _SIXTH + b5,
    )


@nb.njit(cache=True, nogil=True)
def winograd_weight(w, u):
    """``u[6a + b, k, c] = (G w[k, c] G^T)[a, b]``, computed in float64, G that of the kernel's size
    r (3 or 5). w: (K, C, r, r); u: (36, K, C), both C-contiguous. Vectorised over c (u's contiguous
    axis): kernel k's r*r taps of every c are gathered, then G is applied down the kernels' columns
    and along their rows (per (k, c), with 36 strided writes each, 256 x 256 3x3 kernels took 34 ms;
    this, 2.7 ms)."""
    k_count, c_count, r = w.shape[0], w.shape[1], w.shape[2]
    plane = k_count * c_count
    wf = w.reshape(w.size)
    uf = u.reshape(u.size)
    taps = np.empty(r * r * c_count)  # taps[(r*i + j)*C + c] = w[k, c, i, j]
    t = np.empty(6 * r * c_count)  # t[(r*a + j)*C + c] = (G w[k, c])[a, j]
    for k in range(k_count):
        for q in range(r * r):
            for c in range(c_count):
                taps[_u(q * c_count + c)] = wf[_u((k * c_count + c) * r * r + q)]
        for j in range(r):  # G down each column of the kernels
            for c in range(c_count):
                s = j * c_count + c
                if r == 3:
                    g0, g1, g2, g3, g4, g5 = _g3(
                        taps[_u(s)], taps[_u(s + 3 * c_count)], taps[_u(s + 6 * c_count)]
                    )
                else:
                    g0, g1, g2, g3, g4, g5 = _g5(
                        taps[_u(s)],
                        taps[_u(s + 5 * c_count)],
                        taps[_u(s + 10 * c_count)],
                        taps[_u(s + 15 * c_count)],
                        taps[_u(s + 20 * c_count)],
                    )
                d = r * c_count
                t[_u(s)], t[_u(s + d)], t[_u(s + 2 * d)] = g0, g1, g2
                t[_u(s + 3 * d)], t[_u(s + 4 * d)], t[_u(s + 5 * d)] = g3, g4, g5
        for a in range(6):  # then G^T along each row
            o = 6 * a * plane + k * c_count
            for c in range(c_count):
                s = r * a * c_count + c
                if r == 3:
                    g0, g1, g2, g3, g4, g5 = _g3(
                        t[_u(s)], t[_u(s + c_count)], t[_u(s + 2 * c_count)]
                    )
                else:
                    g0, g1, g2, g3, g4, g5 = _g5(
                        t[_u(s)],
                        t[_u(s + c_count)],
                        t[_u(s + 2 * c_count)],
                        t[_u(s + 3 * c_count)],
                        t[_u(s + 4 * c_count)],
                    )
                uf[_u(o + c)], uf[_u(o + plane + c)], uf[_u(o + 2 * plane + c)] = g0, g1, g2
                uf[_u(o + 3 * plane + c)], uf[_u(o + 4 * plane + c)], uf[_u(o + 5 * plane + c)] = (
                    g3,
                    g4,
                    g5,
                )


@nb.njit(cache=True, nogil=True)
def winograd_weight_adjoint(du, dw):
    """The adjoint of ``winograd_weight``: ``dw[k, c] = G^T dU[k, c] G``,
    dU[a, b] = du[6a + b, k, c], computed in float64, vectorised over c as it is. du: (36, K, C);
    dw (written): (K, C, r, r)."""
    k_count, c_count, r = dw.shape[0], dw.shape[1], dw.shape[2]
    plane = k_count * c_count
    uf = du.reshape(du.size)
    wf = dw.reshape(dw.size)
    t = np.empty(6 * r * c_count)  # t[(r*a + j)*C + c] = (dU[k, c] G)[a, j]
    taps = np.empty(r * r * c_count)  # taps[(r*i + j)*C + c] = dw[k, c, i, j]
    for k in range(k_count):
        for a in range(6):  # G along each row
            o = 6 * a * plane + k * c_count
            for c in range(c_count):
                b0, b1, b2 = (
                    nb.float64(uf[_u(o + c)]),
                    uf[_u(o + plane + c)],
                    uf[_u(o + 2 * plane + c)],
                )
                b3, b4, b5 = (
                    uf[_u(o + 3 * plane + c)],
                    uf[_u(o + 4 * plane + c)],
                    uf[_u(o + 5 * plane + c)],
                )
                s = r * a * c_count + c
                if r == 3:
                    t[_u(s)], t[_u(s + c_count)], t[_u(s + 2 * c_count)] = _g3_adjoint(
                        b0, b1, b2, b3, b4, b5
                    )
                else:
                    (
                        t[_u(s)],
                        t[_u(s + c_count)],
                        t[_u(s + 2 * c_count)],
                        t[_u(s + 3 * c_count)],
                        t[_u(s + 4 * c_count)],
                    ) = _g5_adjoint(b0, b1, b2, b3, b4, b5)
        d = r * c_count
        for j in range(r):  # then G^T down each column
            for c in range(c_count):
                s = j * c_count + c
                b0, b1, b2 = t[_u(s)], t[_u(s + d)], t[_u(s + 2 * d)]
                b3, b4, b5 = t[_u(s + 3 * d)], t[_u(s + 4 * d)], t[_u(s + 5 * d)]
                if r == 3:
                    taps[_u(s)], taps[_u(s + d)], taps[_u(s + 2 * d)] = _g3_adjoint(
                        b0, b1, b2, b3, b4, b5
                    )
                else:
                    (
                        taps[_u(s)],
                        taps[_u(s + d)],
                        taps[_u(s + 2 * d)],
                        taps[_u(s + 3 * d)],
                        taps[_u(s + 4 * d)],
                    ) = _g5_adjoint(b0, b1, b2, b3, b4, b5)
        for q in range(r * r):
            for c in range(c_count):
                wf[_u((k * c_count + c) * r * r + q)] = taps[_u(q * c_count + c)]


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_input(x, pt, pl, m, ty_count, tx_count, v):
    """``v[6i + j, c, t] = (B^T d B)[i, j]``, d the 6x6 window of tile t in x[n, c] (padding reads
    0), tiles ``m`` (4 or 2) apart.

    x: (N, C, H, W); v (written): (36, C, N*TY*TX); both C-contiguous. Channel by channel: each
    window row of every image is copied through a zero-padded row buffer into ``z`` (the m cells a
    tile starts) and ``e`` (the 6 - m it shares with the next tiles); then B runs along the windows'
    rows, and B^T down their columns into v's planes, each over all the slice's tiles at once.
    """
    n_count, c_count, height, width = x.shape
    tiles = ty_count * tx_count
    count = v.shape[2]  # n_count * tiles
    plane = v.shape[1] * count  # between the 36 planes of v
    xf = x.reshape(x.size)
    vf = v.reshape(v.size)
    wp = m * tx_count + 6 - m
    buf = np.zeros(wp, x.dtype)  # one window row; its columns outside the image stay 0
    z = np.empty(
        6 * m * count, x.dtype
    )  # z[i*m*count + m*t + l]: tile t's window cell (i, l), l < m
    e = np.empty(
        6 * (6 - m) * count, x.dtype
    )  # e[i*(6 - m)*count + (6 - m)*t + l]: its cell (i, m + l)
    rows = np.empty(36 * count, x.dtype)  # rows[(6i + j)*count + t]: B along window row i of tile t
    q_lo, q_hi = min(max(pl, 0), wp), min(max(width + pl, 0), wp)  # buffer columns inside the image
    for c in range(c_count):
        for n in range(n_count):
            image = (n * c_count + c) * height * width
            for ty in range(ty_count):
                t0 = n * tiles + ty * tx_count
                for i in range(6):
                    yy = m * ty - pt + i
                    if 0 <= yy < height:
                        src = image + yy * width - pl
                        for q in range(q_lo, q_hi):
                            buf[_u(q)] = xf[_u(src + q)]
                    else:
                        for q in range(q_lo, q_hi):
                            buf[_u(q)] = 0.0
                    a = m * (i * count + t0)
                    for q in range(m * tx_count):
                        z[_u(a + q)] = buf[_u(q)]
                    b = (6 - m) * (i * count + t0)
                    for tx in range(tx_count):
                        for q in range(6 - m):
                            e[_u(b + (6 - m) * tx + q)] = buf[_u(m * tx + m + q)]
        for i in range(6):  # B along window row i of every tile
            a, b, dst = m * i * count, (6 - m) * i * count, 6 * i * count
            for t in range(count):
                if m == 4:
                    r0, r1, r2, r3, r4, r5 = _bt6(
                        z[_u(a + 4 * t)],
                        z[_u(a + 4 * t + 1)],
                        z[_u(a + 4 * t + 2)],
                        z[_u(a + 4 * t + 3)],
                        e[_u(b + 2 * t)],
                        e[_u(b + 2 * t + 1)],
                    )
                else:
                    r0, r1, r2, r3, r4, r5 = _bt6(
                        z[_u(a + 2 * t)],
                        z[_u(a + 2 * t + 1)],
                        e[_u(b + 4 * t)],
                        e[_u(b + 4 * t + 1)],
                        e[_u(b + 4 * t + 2)],
                        e[_u(b + 4 * t + 3)],
                    )
                rows[_u(dst + t)], rows[_u(dst + count + t)], rows[_u(dst + 2 * count + t)] = (
                    r0,
                    r1,
                    r2,
                )
                (
                    rows[_u(dst + 3 * count + t)],
                    rows[_u(dst + 4 * count + t)],
                    rows[_u(dst + 5 * count + t)],
                ) = r3, r4, r5
        for j in range(6):  # then B^T down column j of every tile: planes 6i + j, i = 0..5
            o = j * plane + c * count
            for t in range(count):
                r0, r1, r2, r3, r4, r5 = _bt6(
                    rows[_u(j * count + t)],
                    rows[_u((6 + j) * count + t)],
                    rows[_u((12 + j) * count + t)],
                    rows[_u((18 + j) * count + t)],
                    rows[_u((24 + j) * count + t)],
                    rows[_u((30 + j) * count + t)],
                )
                vf[_u(o + t)] = r0
                vf[_u(o + 6 * plane + t)] = r1
                vf[_u(o + 12 * plane + t)] = r2
                vf[_u(o + 18 * plane + t)] = r3
                vf[_u(o + 24 * plane + t)] = r4
                vf[_u(o + 30 * plane + t)] = r5


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_input_adjoint(dv, pt, pl, m, ty_count, tx_count, dx):
    """The adjoint of ``_winograd_input``: ``dx`` (written whole) = the sum over tiles of B dV B^T,
    each on its 6x6 window (windows ``m`` apart overlap; cells in the padding are dropped).

    dv: (36, C, N*TY*TX); dx: (N, C, H, W); both C-contiguous. Channel by channel, over all the
    slice's tiles at once: B down the tiles' columns, then along their rows, each tile's 6 values
    per row split into the m it starts (``z``) and the 6 - m it shares with the next tiles (``e``);
    then each window row of every image is summed from both into the image.
    """
    n_count, c_count, height, width = dx.shape
    tiles = ty_count * tx_count
    count = dv.shape[2]
    plane = dv.shape[1] * count
    vf = dv.reshape(dv.size)
    xf = dx.reshape(dx.size)
    wp = m * tx_count + 6 - m
    cols = np.empty(
        36 * count, dx.dtype
    )  # cols[(6k + j)*count + t]: B's row k down column j of tile t
    z = np.empty(
        6 * m * count, dx.dtype
    )  # z[k*m*count + m*t + l]: tile t's window cell (k, l), l < m
    e = np.empty(
        6 * (6 - m) * count, dx.dtype
    )  # e[k*(6 - m)*count + (6 - m)*t + l]: its cell (k, m + l)
    acc = np.empty(wp, dx.dtype)
    q_lo, q_hi = min(max(pl, 0), wp), min(max(width + pl, 0), wp)
    xf[:] = 0.0
    for c in range(c_count):
        for j in range(6):  # B down each column of every tile (planes 6i + j, i = 0..5)
            o = j * plane + c * count
            for t in range(count):
                d0, d1, d2, d3, d4, d5 = _bt6_adjoint(
                    vf[_u(o + t)],
                    vf[_u(o + 6 * plane + t)],
                    vf[_u(o + 12 * plane + t)],
                    vf[_u(o + 18 * plane + t)],
                    vf[_u(o + 24 * plane + t)],
                    vf[_u(o + 30 * plane + t)],
                )
                cols[_u(j * count + t)] = d0
                cols[_u((6 + j) * count + t)] = d1
                cols[_u((12 + j) * count + t)] = d2
                cols[_u((18 + j) * count + t)] = d3
                cols[_u((24 + j) * count + t)] = d4
                cols[_u((30 + j) * count + t)] = d5
        for k in range(6):  # then B along row k of every tile
            src, a, b = 6 * k * count, m * k * count, (6 - m) * k * count
            for t in range(count):
                s = src + t
                d0, d1, d2, d3, d4, d5 = _bt6_adjoint(
                    cols[_u(s)],
                    cols[_u(s + count)],
                    cols[_u(s + 2 * count)],
                    cols[_u(s + 3 * count)],
                    cols[_u(s + 4 * count)],
                    cols[_u(s + 5 * count)],
                )
                if m == 4:
                    (
                        z[_u(a + 4 * t)],
                        z[_u(a + 4 * t + 1)],
                        z[_u(a + 4 * t + 2)],
                        z[_u(a + 4 * t + 3)],
                    ) = d0, d1, d2, d3
                    e[_u(b + 2 * t)], e[_u(b + 2 * t + 1)] = d4, d5
                else:
                    z[_u(a + 2 * t)], z[_u(a + 2 * t + 1)] = d0, d1
                    (
                        e[_u(b + 4 * t)],
                        e[_u(b + 4 * t + 1)],
                        e[_u(b + 4 * t + 2)],
                        e[_u(b + 4 * t + 3)],
                    ) = d2, d3, d4, d5
        for n in range(n_count):
            image = (n * c_count + c) * height * width
            for ty in range(ty_count):
                t0 = n * tiles + ty * tx_count
                for k in range(6):  # window row k of this row of tiles, into the image
                    yy = m * ty - pt + k
                    if 0 <= yy < height:
                        a = m * (k * count + t0)
                        for q in range(m * tx_count):
                            acc[_u(q)] = z[_u(a + q)]
                        for q in range(m * tx_count, wp):
                            acc[_u(q)] = 0.0
                        b = (6 - m) * (k * count + t0)
                        for tx in range(tx_count):  # the cells each window shares with the next
                            for q in range(6 - m):
                                acc[_u(m * tx + m + q)] += e[_u(b + (6 - m) * tx + q)]
                        dst = image + yy * width - pl
                        for q in range(q_lo, q_hi):
                            xf[_u(dst + q)] += acc[_u(q)]


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_output(mm, m, ty_count, tx_count, bias, relu, out):
    """``out[n, k]``'s m x m block of tile t = f(A^T M A + bias), M[i, j] = mm[6i + j, k, t]
    (f = ReLU if ``relu``; m = 4 or 2, A^T that of F(m x m, (7 - m) x (7 - m))); the last row and
    column of tiles are cut to the output's size.

    mm: (36, K, N*TY*TX); bias: (K, 1) tied (zeros for none) or (K, OH*OW) untied;
    out (written): (N, K, OH, OW); all C-contiguous. Map by map, over all the slice's tiles at once:
    A^T down the tiles' columns, then A along their rows into ``z``, where output row a of tile t's
    block is at z[a, m*t:m*t + m], so that each output row of each image is a contiguous run of z.
    """
    n_count, k_count, oh_count, ow_count = out.shape
    tiles = ty_count * tx_count
    count = mm.shape[2]
    plane = mm.shape[1] * count
    mf = mm.reshape(mm.size)
    of = out.reshape(out.size)
    untied = bias.shape[1] > 1
    r = np.empty(
        6 * m * count, mm.dtype
    )  # r[(6a + j)*count + t]: A^T's row a down column j of tile t
    z = np.empty(m * m * count, mm.dtype)  # z[a*m*count + m*t + b]: tile t's output (a, b)
    for k in range(k_count):
        for j in range(6):  # A^T down each column of every tile (planes 6i + j, i = 0..5)
            o = j * plane + k * count
            for t in range(count):
                if m == 4:
                    y0, y1, y2, y3 = _at4(
                        mf[_u(o + t)],
                        mf[_u(o + 6 * plane + t)],
                        mf[_u(o + 12 * plane + t)],
                        mf[_u(o + 18 * plane + t)],
                        mf[_u(o + 24 * plane + t)],
                        mf[_u(o + 30 * plane + t)],
                    )
                    r[_u(j * count + t)], r[_u((6 + j) * count + t)] = y0, y1
                    r[_u((12 + j) * count + t)], r[_u((18 + j) * count + t)] = y2, y3
                else:
                    r[_u(j * count + t)], r[_u((6 + j) * count + t)] = _at2(
                        mf[_u(o + t)],
                        mf[_u(o + 6 * plane + t)],
                        mf[_u(o + 12 * plane + t)],
                        mf[_u(o + 18 * plane + t)],
                        mf[_u(o + 24 * plane + t)],
                        mf[_u(o + 30 * plane + t)],
                    )
        for a in range(m):  # then A along each row of every tile
            s, d = 6 * a * count, m * a * count
            for t in range(count):
                if m == 4:
                    y0, y1, y2, y3 = _at4(
                        r[_u(s + t)],
                        r[_u(s + count + t)],
                        r[_u(s + 2 * count + t)],
                        r[_u(s + 3 * count + t)],
                        r[_u(s + 4 * count + t)],
                        r[_u(s + 5 * count + t)],
                    )
                    (
                        z[_u(d + 4 * t)],
                        z[_u(d + 4 * t + 1)],
                        z[_u(d + 4 * t + 2)],
                        z[_u(d + 4 * t + 3)],
                    ) = y0, y1, y2, y3
                else:
                    z[_u(d + 2 * t)], z[_u(d + 2 * t + 1)] = _at2(
                        r[_u(s + t)],
                        r[_u(s + count + t)],
                        r[_u(s + 2 * count + t)],
                        r[_u(s + 3 * count + t)],
                        r[_u(s + 4 * count + t)],
                        r[_u(s + 5 * count + t)],
                    )
        for n in range(n_count):
            image = (n * k_count + k) * oh_count * ow_count
            for y in range(
                oh_count
            ):  # output row y = m*ty + a is z[a, m*(n*tiles + ty*TX):], cut to OW
                dst = image + y * ow_count
                src = m * ((y % m) * count + n * tiles + (y // m) * tx_count)
                if untied:
                    for xx in range(ow_count):
                        of[_u(dst + xx)] = z[_u(src + xx)] + bias[k, y * ow_count + xx]
                else:
                    b0 = bias[k, 0]
                    for xx in range(ow_count):
                        of[_u(dst + xx)] = z[_u(src + xx)] + b0
                if relu:
                    for xx in range(ow_count):
                        v = of[_u(dst + xx)]
                        of[_u(dst + xx)] = v if v > 0 else 0.0


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_output_adjoint(dout, y, relu, m, ty_count, tx_count, dm, bias_grad):
    """The adjoint of ``_winograd_output``'s A^T M A: ``dm[6i + j, k, t] = (A dY A^T)[i, j]``, dY
    the m x m block of dout (times ``y > 0`` if ``relu``) of tile t, zero beyond the output's edge;
    ``bias_grad[k]`` (written, float64) = the sum of that dY over the slice.

    dout, y: (N, K, OH, OW) (y unused without relu); dm (written): (36, K, N*TY*TX); all
    C-contiguous. ``_winograd_output``'s steps in reverse, map by map: dY's rows into ``z`` (its
    layout), A along the tiles' rows, then down their columns.
    """
    n_count, k_count, oh_count, ow_count = dout.shape
    tiles = ty_count * tx_count
    count = dm.shape[2]
    plane = dm.shape[1] * count
    df = dout.reshape(dout.size)
    yf = y.reshape(y.size)
    mf = dm.reshape(dm.size)
    z = np.zeros(
        m * m * count, dout.dtype
    )  # z[a*m*count + m*t + b]: dY at tile t's (a, b); 0 past the edges
    s = np.empty(
        6 * m * count, dout.dtype
    )  # s[(6a + j)*count + t]: A's row j along row a of tile t
    for k in range(k_count):
        total = 0.0
        for n in range(n_count):
            image = (n * k_count + k) * oh_count * ow_count
            for yy in range(oh_count):
                src = image + yy * ow_count
                dst = m * ((yy % m) * count + n * tiles + (yy // m) * tx_count)
                if relu:
                    for xx in range(ow_count):
                        g = df[_u(src + xx)] if yf[_u(src + xx)] > 0 else 0.0
                        z[_u(dst + xx)] = g
                        total += g
                else:
                    for xx in range(ow_count):
                        g = df[_u(src + xx)]
                        z[_u(dst + xx)] = g
                        total += g
        bias_grad[k] = total
        for a in range(m):  # A along each row of every tile
            src, dst = m * a * count, 6 * a * count
            for t in range(count):
                e = src + m * t
                if m == 4:
                    c0, c1, c2, c3, c4, c5 = _at4_adjoint(
                        z[_u(e)], z[_u(e + 1)], z[_u(e + 2)], z[_u(e + 3)]
                    )
                else:
                    c0, c1, c2, c3, c4, c5 = _at2_adjoint(z[_u(e)], z[_u(e + 1)])
                d = dst + t
                s[_u(d)], s[_u(d + count)], s[_u(d + 2 * count)] = c0, c1, c2
                s[_u(d + 3 * count)], s[_u(d + 4 * count)], s[_u(d + 5 * count)] = c3, c4, c5
        for j in range(6):  # then A down each column of every tile: planes 6i + j, i = 0..5
            o = j * plane + k * count
            for t in range(count):
                if m == 4:
                    c0, c1, c2, c3, c4, c5 = _at4_adjoint(
                        s[_u(j * count + t)],
                        s[_u((6 + j) * count + t)],
                        s[_u((12 + j) * count + t)],
                        s[_u((18 + j) * count + t)],
                    )
                else:
                    c0, c1, c2, c3, c4, c5 = _at2_adjoint(
                        s[_u(j * count + t)], s[_u((6 + j) * count + t)]
                    )
                mf[_u(o + t)] = c0
                mf[_u(o + 6 * plane + t)] = c1
                mf[_u(o + 12 * plane + t)] = c2
                mf[_u(o + 18 * plane + t)] = c3
                mf[_u(o + 24 * plane + t)] = c4
                mf[_u(o + 30 * plane + t)] = c5


# The kernels proper: each body above with its tile m a constant, so that every loop over m, 6 - m
# or m*m has a constant trip count and every branch on m is folded away (with m an argument, the
# transforms ran 1.4-1.8x slower). "f43": F(4x4, 3x3), m = 4; "f25": F(2x2, 5x5), m = 2.


@nb.njit(cache=True, nogil=True)
def winograd_input_f43(x, pt, pl, ty_count, tx_count, v):
    _winograd_input(x, pt, pl, 4, ty_count, tx_count, v)


@nb.njit(cache=True, nogil=True)
def winograd_input_f25(x, pt, pl, ty_count, tx_count, v):
    _winograd_input(x, pt, pl, 2, ty_count, tx_count, v)


@nb.njit(cache=True, nogil=True)
def winograd_input_adjoint_f43(dv, pt, pl, ty_count, tx_count, dx):
    _winograd_input_adjoint(dv, pt, pl, 4, ty_count, tx_count, dx)


@nb.njit(cache=True, nogil=True)
def winograd_input_adjoint_f25(dv, pt, pl, ty_count, tx_count, dx):
    _winograd_input_adjoint(dv, pt, pl, 2, ty_count, tx_count, dx)


@nb.njit(cache=True, nogil=True)
def winograd_output_f43(mm, ty_count, tx_count, bias, relu, out):
    _winograd_output(mm, 4, ty_count, tx_count, bias, relu, out)


@nb.njit(cache=True, nogil=True)
def winograd_output_f25(mm, ty_count, tx_count, bias, relu, out):
    _winograd_output(mm, 2, ty_count, tx_count, bias, relu, out)


# ``reassoc``: the float64 bias-gradient sum may be reordered, so that it vectorises.
@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def winograd_output_adjoint_f43(dout, y, relu, ty_count, tx_count, dm, bias_grad):
    _winograd_output_adjoint(dout, y, relu, 4, ty_count, tx_count, dm, bias_grad)


@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def winograd_output_adjoint_f25(dout, y, relu, ty_count, tx_count, dm, bias_grad):
    _winograd_output_adjoint(dout, y, relu, 2, ty_count, tx_count, dm, bias_grad)


# --------------------------------------------------------------------------- the strategy


class WinogradCache(NamedTuple):
    """What backward needs of a Winograd convolution."""

    x_shape: tuple[int, int, int, int]
    weight: np.ndarray
    bias_shape: tuple[int, ...] | None
    geometry: WindowGeometry
    owner: str
    transformed: np.ndarray  # the transformed weight U (36, K, C / groups)
    v: list[np.ndarray] | None  # each slice's transformed input V; None: rebuilt from x
    x: np.ndarray | None  # the input, kept instead of V (keep=False)
    slices: list[slice]
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
    transformed: np.ndarray | None = None,
) -> tuple[np.ndarray, WinogradCache]:
    """``conv2d_forward``'s Winograd strategy on checked arguments (as ``conv.im2col.forward``;
    ``supports`` holds, numba). ``keep=False``: V is not kept (the cache keeps x).
    ``transformed``: ``transform_weight(weight)`` made once by a caller whose weight cannot
    change (a session's), else it is made here."""
    n, out_channels = x.shape[0], weight.shape[0]
    out = np.empty((n, out_channels, g.oh, g.ow), dtype=weight.dtype)
    bias2 = bias_columns(bias, out_channels, weight.dtype)
    u = transform_weight(weight) if transformed is None else transformed
    ty, tx = tiles(g)
    slices = cache_slices(n, ALPHA**2 * x.shape[1] * ty * tx * x.itemsize)

    def tiled(s: slice) -> np.ndarray | None:
        v = slice_forward(x[s], u, g, bias2, relu, out[s], groups)
        if then is not None:
            then(s, out[s])
        return v if keep else None

    kept = _threads.parallel_map(tiled, slices)
    cache = WinogradCache(
        x.shape,
        weight,
        None if bias is None else bias.shape,
        g,
        owner,
        u,
        kept if keep else None,
        None if keep else x,
        slices,
        out if relu else None,
        groups,
    )
    return out, cache


def backward(
    dout: np.ndarray | None,
    cache: WinogradCache,
    input_grad: bool = True,
    *,
    dout_of: Callable[[slice], np.ndarray] | None = None,
    dz_into: Callable[[slice, np.ndarray, np.ndarray], None] | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``conv2d_backward`` of a Winograd convolution, slice by slice (``slice_backward``); ``dout``
    checked, or None and ``dout_of(s)`` per slice (``dz_into`` is the im2col layout's, unused)."""
    g, weight, bias_shape, slices = cache.geometry, cache.weight, cache.bias_shape, cache.slices
    dx = np.empty(cache.x_shape, dtype=weight.dtype) if input_grad else None
    relu = cache.out is not None

    def block(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        s = slices[i]
        d = np.ascontiguousarray(dout[s]) if dout_of is None else dout_of(s)
        y = cache.out[s] if relu else None
        v = cache.v[i] if cache.v is not None else transform_input(cache.x[s], g)
        du, tied = slice_backward(
            d, y, v, cache.transformed, g, None if dx is None else dx[s], cache.groups
        )
        untied = None
        if bias_shape is not None and len(bias_shape) == 3:
            untied = (d if y is None else np.where(y > 0, d, 0)).sum(axis=0)
        return du, tied, untied

    parts = _threads.parallel_map(block, list(range(len(slices))))
    du = parts[0][0]
    for part in parts[1:]:
        du += part[0]
    dweight = weight_grad(du, weight.shape[2])
    if bias_shape is None:
        dbias = None
    elif len(bias_shape) == 1:
        dbias = sum(p[1] for p in parts).astype(weight.dtype)
    else:
        dbias = sum(p[2] for p in parts).astype(weight.dtype)
    return dx, dweight, dbias
