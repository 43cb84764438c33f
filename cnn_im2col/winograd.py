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
    V[xi] = (B^T d B)[xi]   (C, T)     the input, every tile (``_kernels.winograd_input``)
    M[xi] = U[xi] @ V[xi]   (K, T)     36 GEMMs, NumPy's BLAS
    Y     = A^T M A + bias  (N, K, OH, OW)   (``_kernels.winograd_output``, with the fused ReLU)

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
slice at a time, on the engine's pool, as in ``functional.py``.
"""

from __future__ import annotations

import numpy as np

from . import _kernels
from .shapes import WindowGeometry

ALPHA = 6  # input window side; ALPHA**2 transformed planes
BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=np.float64)
# kernel size r -> (G (6 x r), A^T (m x 6)), m = 7 - r outputs per tile side
MATRICES = {
    3: (np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], dtype=np.float64)),
    5: (np.array([[1 / 4, 0, 0, 0, 0], [-1 / 6] * 5, [-1 / 6, 1 / 6, -1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6, 1 / 3, 2 / 3], [1 / 24, -1 / 12, 1 / 6, -1 / 3, 2 / 3], [0, 0, 0, 0, 1]]),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]], dtype=np.float64)),
}

# "auto" takes Winograd when both channel counts, both output sides and the batch's output pixels
# per map (N*OH*OW) reach these. Below them, the transforms' passes over the data and the GEMMs'
# short inner dimension (C), or the weight's own transforms (K*C*36 values, each call), cost more than
# the multiply-adds saved. Measured 2026-12-02, Intel Xeon (AVX-512), 2 threads, Winograd / im2col
# time, forward+backward (forward alone), (N, C, K, H=W, pad 1): (64, 1, 16, 28) 2.92;
# (64, 3, 16, 32) 1.26; (64, 8, 16, 32) 0.70-0.83 (0.99); (64, 16, 16, 32) 0.58; (32, 32, 64, 32)
# 0.58-0.63 (0.64); (64, 64, 64, 14) 0.65-0.76 (0.79); (16, 64, 64, 56) 0.41; (32, 128, 128, 8) 0.71-0.77
# (0.88); (8, 64, 64, 8) 0.96 (0.96); (64, 64, 64, 7) 0.91; (64, 32, 32, 4) 0.87 (0.86);
# (1, 64, 64, 32) 0.54 (0.55); (1, 16, 16, 8) 1.41 (1.57); (16, 256, 256, 4) 1.23 (1.21);
# (8, 256, 256, 4) 1.62. 5x5 kernels, F(2x2, 5x5), (N, C, K, H=W, pad): (64, 20, 40, 12, 0), LeNet's
# conv2, 0.76 (0.91); (64, 8, 16, 12, 0) 0.78 (0.94); (64, 16, 16, 8, 0) 0.62; (32, 32, 64, 16, 2) 0.67;
# (8, 64, 64, 8, 2) 0.79 (0.82); (16, 64, 128, 8, 2) 0.68; (1, 20, 40, 12, 0) 1.46 (1.51);
# (64, 3, 16, 32, 2) 1.10 (1.40); (2, 128, 128, 8, 2) 1.46 (1.66): the same thresholds hold.
AUTO_MIN_CHANNELS = 8
AUTO_MIN_SIDE = 4
AUTO_MIN_PIXELS = 512


def supports(kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], groups: int) -> bool:
    """Whether Winograd computes this convolution: a 3x3 or 5x5 kernel, stride 1, dilation 1,
    groups 1 (any padding, any input size). The layer asks at construction, ``conv2d_forward`` per
    call."""
    return (tuple(kernel) in ((3, 3), (5, 5)) and (tuple(stride), tuple(dilation), groups) == ((1, 1), (1, 1), 1))


# kernel size r -> the suffix of ``_kernels``' transforms compiled for its tile (``winograd_input_f43``...)
VARIANTS = {3: "f43", 5: "f25"}
TRANSFORMS = ("winograd_input", "winograd_input_adjoint", "winograd_output", "winograd_output_adjoint")


def tile(g: WindowGeometry) -> int:
    """m: the outputs per tile side, 4 for a 3x3 kernel, 2 for a 5x5 one."""
    return ALPHA + 1 - g.kh


def _kernel(name: str, g: WindowGeometry):
    """``_kernels``' transform ``name`` (one of ``TRANSFORMS``) compiled for this geometry's kernel."""
    return getattr(_kernels, f"{name}_{VARIANTS[g.kh]}")


def preferred(in_channels: int, out_channels: int, g: WindowGeometry, batch: int) -> bool:
    """Whether ``algorithm="auto"`` takes Winograd for a convolution it ``supports``, on a batch of
    ``batch`` samples."""
    return (min(in_channels, out_channels) >= AUTO_MIN_CHANNELS and min(g.oh, g.ow) >= AUTO_MIN_SIDE
            and batch * g.oh * g.ow >= AUTO_MIN_PIXELS)


def tiles(g: WindowGeometry) -> tuple[int, int]:
    """(TY, TX): tiles per column and per row, enough to cover OH x OW (the last may stick out)."""
    m = tile(g)
    return -(-g.oh // m), -(-g.ow // m)


def transform_weight(weight: np.ndarray) -> np.ndarray:
    """(K, C, r, r) -> U (36, K, C), ``U[6a + b] = (G w G^T)[a, b]``, in the weight's dtype."""
    u = np.empty((ALPHA * ALPHA, *weight.shape[:2]), dtype=weight.dtype)
    _kernels.winograd_weight(np.ascontiguousarray(weight), u)
    return u


def weight_grad(du: np.ndarray, r: int) -> np.ndarray:
    """The adjoint of ``transform_weight``: dU (36, K, C) -> dW (K, C, r, r) = G^T dU G."""
    dw = np.empty((*du.shape[1:], r, r), dtype=du.dtype)
    _kernels.winograd_weight_adjoint(np.ascontiguousarray(du), dw)
    return dw


def transform_input(x: np.ndarray, g: WindowGeometry) -> np.ndarray:
    """x (n, C, H, W), C-contiguous -> V (36, C, n*TY*TX)."""
    ty, tx = tiles(g)
    v = np.empty((ALPHA * ALPHA, x.shape[1], x.shape[0] * ty * tx), dtype=x.dtype)
    _kernel("winograd_input", g)(x, g.top, g.left, ty, tx, v)
    return v


def forward(x: np.ndarray, u: np.ndarray, g: WindowGeometry, bias2: np.ndarray, relu: bool,
            out: np.ndarray) -> np.ndarray:
    """One batch slice: ``out`` (n, K, OH, OW) (written) = f(conv(x) + bias) from x (n, C, H, W)
    and U (36, K, C); bias2 (K, 1) tied or (K, OH*OW) untied. Returns V, for ``backward``."""
    ty, tx = tiles(g)
    v = transform_input(x, g)
    _kernel("winograd_output", g)(np.matmul(u, v), ty, tx, bias2, relu, out)
    return v


def backward(dout: np.ndarray, y: np.ndarray | None, v: np.ndarray, u: np.ndarray, g: WindowGeometry,
             dx: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One batch slice's gradients: dout (n, K, OH, OW), C-contiguous; y: the forward's output when
    it fused a ReLU (its derivative is ``y > 0``), else None; V and U from ``forward``.
    Writes ``dx`` (n, C, H, W) when it is given. Returns (dU (36, K, C), tied bias gradient (K,),
    float64); ``weight_grad`` turns the slices' summed dU into dW."""
    ty, tx = tiles(g)
    dm = np.empty((ALPHA * ALPHA, dout.shape[1], v.shape[2]), dtype=dout.dtype)
    tied = np.empty(dout.shape[1], dtype=np.float64)
    _kernel("winograd_output_adjoint", g)(dout, dout if y is None else y, y is not None, ty, tx, dm, tied)
    du = np.matmul(dm, v.transpose(0, 2, 1))
    if dx is not None:
        _kernel("winograd_input_adjoint", g)(np.matmul(u.transpose(0, 2, 1), dm), g.top, g.left, ty, tx, dx)
    return du, tied
