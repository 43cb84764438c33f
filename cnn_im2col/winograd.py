"""Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", 2016): a 3x3, stride-1, undilated convolution in 16 GEMMs with 2.25x fewer
multiply-adds than im2col's one.

Each 2x2 block of outputs comes from the 4x4 input window d under it (a *tile*; tiles overlap by
2 pixels). For kernel g of output map k and input map c,

    Y_k = A^T [ sum_c (G g_kc G^T) * (B^T d_c B) ] A          (* elementwise, 4x4)

with the constant matrices ``BT``, ``G``, ``AT`` below. Element xi = 4i + j of the 4x4 sum over c
is a matrix product over all tiles at once:

    U[xi] = (G g G^T)[xi]   (K, C)     the weight, transformed once per call
    V[xi] = (B^T d B)[xi]   (C, T)     the input, every tile (``_kernels.winograd_input``)
    M[xi] = U[xi] @ V[xi]   (K, T)     16 GEMMs, NumPy's BLAS
    Y     = A^T M A + bias  (N, K, OH, OW)   (``_kernels.winograd_output``, with the fused ReLU)

Backward is the adjoint of each of those linear steps, so it is exact (the same function's
gradient, not a second approximation):

    dM = A dY A^T per tile; dU[xi] = dM[xi] @ V[xi]^T; dW = G^T dU G;
    dV[xi] = U[xi]^T @ dM[xi]; dx = the sum over tiles of B dV B^T on each window.

Rounding: the transforms' entries are 0, +-1 and +-1/2, so float32 results stay within a few units
in the last place of im2col's (the tests compare both with float64 references).

Memory: V, kept for backward, holds 16 values per tile and channel, 4 per output pixel; im2col
keeps 9 (KH*KW). Arrays are worked on a batch slice at a time, on the engine's pool, as in
``functional.py``.
"""

from __future__ import annotations

import numpy as np

from . import _kernels
from .shapes import WindowGeometry

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)

# "auto" takes Winograd when both channel counts and both output sides reach these. Below them the
# transforms' passes over the data, and the 16 GEMMs' short inner dimension (C), cost more than the
# multiply-adds saved. Measured 2026-12-02, AMD EPYC (AVX2), 2 threads, forward+backward, Winograd /
# im2col time, (N, C, K, H=W, pad 1): (64, 1, 16, 28) 2.87; (64, 3, 16, 32) 1.27; (64, 8, 16, 32)
# 1.05; (64, 16, 16, 32) 0.88; (32, 16, 32, 32) 0.96; (32, 32, 64, 32) 0.82; (64, 64, 64, 14) 0.75;
# (32, 128, 128, 8) 0.75; (16, 64, 64, 56) 0.60; (64, 64, 64, 7) 0.95; (8, 256, 256, 4) 1.27.
# Forward alone, 0.92-1.06 at C >= 16 and 8x8 or more, 0.72 at 56x56.
AUTO_MIN_CHANNELS = 16
AUTO_MIN_SIDE = 8


def supports(kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], groups: int) -> bool:
    """Whether F(2x2, 3x3) computes this convolution: a 3x3 kernel, stride 1, dilation 1, groups 1
    (any padding, any input size). The layer asks at construction, ``conv2d_forward`` per call."""
    return (tuple(kernel), tuple(stride), tuple(dilation), groups) == ((3, 3), (1, 1), (1, 1), 1)


def preferred(in_channels: int, out_channels: int, g: WindowGeometry) -> bool:
    """Whether ``algorithm="auto"`` takes Winograd for a convolution it ``supports``."""
    return min(in_channels, out_channels) >= AUTO_MIN_CHANNELS and min(g.oh, g.ow) >= AUTO_MIN_SIDE


def tiles(g: WindowGeometry) -> tuple[int, int]:
    """(TY, TX): tiles per column and per row, enough to cover OH x OW (the last may stick out)."""
    return -(-g.oh // 2), -(-g.ow // 2)


def transform_weight(weight: np.ndarray) -> np.ndarray:
    """(K, C, 3, 3) -> U (16, K, C), ``U[4a + b] = (G w G^T)[a, b]``, in the weight's dtype."""
    u = np.empty((16, *weight.shape[:2]), dtype=weight.dtype)
    _kernels.winograd_weight(np.ascontiguousarray(weight), u)
    return u


def weight_grad(du: np.ndarray) -> np.ndarray:
    """The adjoint of ``transform_weight``: dU (16, K, C) -> dW (K, C, 3, 3) = G^T dU G."""
    dw = np.empty((*du.shape[1:], 3, 3), dtype=du.dtype)
    _kernels.winograd_weight_adjoint(np.ascontiguousarray(du), dw)
    return dw


def transform_input(x: np.ndarray, g: WindowGeometry) -> np.ndarray:
    """x (n, C, H, W), C-contiguous -> V (16, C, n*TY*TX)."""
    ty, tx = tiles(g)
    v = np.empty((16, x.shape[1], x.shape[0] * ty * tx), dtype=x.dtype)
    _kernels.winograd_input(x, g.top, g.left, ty, tx, v)
    return v


def forward(x: np.ndarray, u: np.ndarray, g: WindowGeometry, bias2: np.ndarray, relu: bool,
            out: np.ndarray) -> np.ndarray:
    """One batch slice: ``out`` (n, K, OH, OW) (written) = f(conv(x) + bias) from x (n, C, H, W)
    and U (16, K, C); bias2 (K, 1) tied or (K, OH*OW) untied. Returns V, for ``backward``."""
    ty, tx = tiles(g)
    v = transform_input(x, g)
    _kernels.winograd_output(np.matmul(u, v), ty, tx, bias2, relu, out)
    return v


def backward(dout: np.ndarray, y: np.ndarray | None, v: np.ndarray, u: np.ndarray, g: WindowGeometry,
             dx: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One batch slice's gradients: dout (n, K, OH, OW), C-contiguous; y: the forward's output when
    it fused a ReLU (its derivative is ``y > 0``), else None; V and U from ``forward``.
    Writes ``dx`` (n, C, H, W) when it is given. Returns (dU (16, K, C), tied bias gradient (K,),
    float64); ``weight_grad`` turns the slices' summed dU into dW."""
    ty, tx = tiles(g)
    dm = np.empty((16, dout.shape[1], v.shape[2]), dtype=dout.dtype)
    tied = np.empty(dout.shape[1], dtype=np.float64)
    _kernels.winograd_output_adjoint(dout, dout if y is None else y, y is not None, ty, tx, dm, tied)
    du = np.matmul(dm, v.transpose(0, 2, 1))
    if dx is not None:
        _kernels.winograd_input_adjoint(np.matmul(u.transpose(0, 2, 1), dm), g.top, g.left, ty, tx, dx)
    return du, tied
