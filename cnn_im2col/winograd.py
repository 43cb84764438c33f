"""Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", 2016): a 3x3, stride-1, undilated convolution in 36 GEMMs with 4x fewer
multiply-adds than im2col's one.

Each 4x4 block of outputs comes from the 6x6 input window d under it (a *tile*; tiles overlap by
2 pixels). For kernel g of output map k and input map c,

    Y_k = A^T [ sum_c (G g_kc G^T) * (B^T d_c B) ] A          (* elementwise, 6x6)

with the constant matrices ``BT``, ``G``, ``AT`` below (interpolation points 0, 1, -1, 2, -2 and
infinity). Element xi = 6i + j of the 6x6 sum over c is a matrix product over all tiles at once:

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
one thread), the GEMMs of a 32x32x32x32 -> 64 layer's forward+backward: 10.2 ms against 29.6 ms.

Rounding: the transforms' entries reach 5 and 8 (B^T, A^T) and 1/24 (G), so float32 results carry a
few times more rounding than im2col's (the tests compare both with float64 references at the same
tolerances; ``benchmarks/profile_conv.py`` reports the error at real sizes).

Memory: V, kept for backward, holds 36 values per tile and channel, 2.25 per output pixel; im2col
keeps 9 (KH*KW). Arrays are worked on a batch slice at a time, on the engine's pool, as in
``functional.py``.
"""

from __future__ import annotations

import numpy as np

from . import _kernels
from .shapes import WindowGeometry

BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
              dtype=np.float64)
TILE = 4  # outputs per tile side (m)
ALPHA = 6  # input window side (m + 2); ALPHA**2 transformed planes

# "auto" takes Winograd when both channel counts, both output sides and the batch's output pixels
# per map (N*OH*OW) reach these. Below them, the transforms' passes over the data and the GEMMs'
# short inner dimension (C), or the weight's own transforms (K*C*36 values, each call), cost more than
# the multiply-adds saved. Measured 2026-12-02, Intel Xeon (AVX-512), 2 threads, Winograd / im2col
# time, forward+backward (forward alone), (N, C, K, H=W, pad 1): (64, 1, 16, 28) 2.92;
# (64, 3, 16, 32) 1.26; (64, 8, 16, 32) 0.70-0.83 (0.99); (64, 16, 16, 32) 0.58; (32, 32, 64, 32)
# 0.58-0.63 (0.64); (64, 64, 64, 14) 0.65-0.76 (0.79); (16, 64, 64, 56) 0.41; (32, 128, 128, 8) 0.71-0.77
# (0.88); (8, 64, 64, 8) 0.96 (0.96); (64, 64, 64, 7) 0.91; (64, 32, 32, 4) 0.87 (0.86);
# (1, 64, 64, 32) 0.54 (0.55); (1, 16, 16, 8) 1.41 (1.57); (16, 256, 256, 4) 1.23 (1.21);
# (8, 256, 256, 4) 1.62.
AUTO_MIN_CHANNELS = 8
AUTO_MIN_SIDE = 4
AUTO_MIN_PIXELS = 512


def supports(kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], groups: int) -> bool:
    """Whether F(4x4, 3x3) computes this convolution: a 3x3 kernel, stride 1, dilation 1, groups 1
    (any padding, any input size). The layer asks at construction, ``conv2d_forward`` per call."""
    return (tuple(kernel), tuple(stride), tuple(dilation), groups) == ((3, 3), (1, 1), (1, 1), 1)


def preferred(in_channels: int, out_channels: int, g: WindowGeometry, batch: int) -> bool:
    """Whether ``algorithm="auto"`` takes Winograd for a convolution it ``supports``, on a batch of
    ``batch`` samples."""
    return (min(in_channels, out_channels) >= AUTO_MIN_CHANNELS and min(g.oh, g.ow) >= AUTO_MIN_SIDE
            and batch * g.oh * g.ow >= AUTO_MIN_PIXELS)


def tiles(g: WindowGeometry) -> tuple[int, int]:
    """(TY, TX): tiles per column and per row, enough to cover OH x OW (the last may stick out)."""
    return -(-g.oh // TILE), -(-g.ow // TILE)


def transform_weight(weight: np.ndarray) -> np.ndarray:
    """(K, C, 3, 3) -> U (36, K, C), ``U[6a + b] = (G w G^T)[a, b]``, in the weight's dtype."""
    u = np.empty((ALPHA * ALPHA, *weight.shape[:2]), dtype=weight.dtype)
    _kernels.winograd_weight(np.ascontiguousarray(weight), u)
    return u


def weight_grad(du: np.ndarray) -> np.ndarray:
    """The adjoint of ``transform_weight``: dU (36, K, C) -> dW (K, C, 3, 3) = G^T dU G."""
    dw = np.empty((*du.shape[1:], 3, 3), dtype=du.dtype)
    _kernels.winograd_weight_adjoint(np.ascontiguousarray(du), dw)
    return dw


def transform_input(x: np.ndarray, g: WindowGeometry) -> np.ndarray:
    """x (n, C, H, W), C-contiguous -> V (36, C, n*TY*TX)."""
    ty, tx = tiles(g)
    v = np.empty((ALPHA * ALPHA, x.shape[1], x.shape[0] * ty * tx), dtype=x.dtype)
    _kernels.winograd_input(x, g.top, g.left, ty, tx, v)
    return v


def forward(x: np.ndarray, u: np.ndarray, g: WindowGeometry, bias2: np.ndarray, relu: bool,
            out: np.ndarray) -> np.ndarray:
    """One batch slice: ``out`` (n, K, OH, OW) (written) = f(conv(x) + bias) from x (n, C, H, W)
    and U (36, K, C); bias2 (K, 1) tied or (K, OH*OW) untied. Returns V, for ``backward``."""
    ty, tx = tiles(g)
    v = transform_input(x, g)
    _kernels.winograd_output(np.matmul(u, v), ty, tx, bias2, relu, out)
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
    _kernels.winograd_output_adjoint(dout, dout if y is None else y, y is not None, ty, tx, dm, tied)
    du = np.matmul(dm, v.transpose(0, 2, 1))
    if dx is not None:
        _kernels.winograd_input_adjoint(np.matmul(u.transpose(0, 2, 1), dm), g.top, g.left, ty, tx, dx)
    return du, tied
