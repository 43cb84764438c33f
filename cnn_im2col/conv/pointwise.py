"""The pointwise strategy of a convolution: a 1x1 kernel (stride 1, no padding, dilation 1,
groups 1) as one matrix product per sample, straight from NCHW into NCHW.

A 1x1 convolution of sample n is ``out[n] (O, OH*OW) = W (O, C) @ x[n] (C, OH*OW)``: the input map
*is* the im2col matrix of that sample, so there is nothing to unfold. The im2col strategy would copy
it into the channel-major layout (C, N*OH*OW), multiply, and copy the result back to NCHW; this one
multiplies each sample where it lies (but for maps of at most 16 pixels, a MobileNet's last
4x4 stage, whose per-sample products have too few columns: those slices are multiplied
channel-major after all). The backward pass is the same products transposed: ``dW =
sum_n dZ[n] @ x[n].T``, ``dx[n] = W.T @ dZ[n]``, ``db = sum of dZ``. Measured 2026-12-03 against the
im2col path, AMD EPYC (AVX2), 2 threads, float32, forward / backward ms, (N, C, O, H=W): (64, 96,
16, 16) 0.58 / 2.08 vs 1.54 / 1.57; (64, 16, 96, 16) with ReLU 0.58 / 2.28 vs 1.08 / 2.26; (32, 64,
128, 32) 6.03 / 10.66 vs 6.09 / 10.62; (64, 160, 480, 4) 1.41 / 2.86 vs 1.47 / 2.47. A strided 1x1
kernel (a ResNet projection) stays with im2col, whose gather is the same copy and whose backward was
faster (0.49 vs 0.68 ms, (32, 16, 32, 32), stride 2). Each batch slice runs on one worker of the
engine's pool, its BLAS single-threaded, as in the im2col strategy, whose grouped path is this
one's twin (the tests hold them equal).

``forward_pooled`` runs a network's head at inference: the 1x1 convolution, its activation and a
global average pool in one pass over channels-last rows (``inference_blocks.ConvGlobalPool``);
its twin is the three one by one. MobileNetV2 x0.5's 160 -> 1280 head on 4x4 maps, inside a
session at batch 64, took 2.9 ms as the convolution and the pool, 1.7 ms so (measured 2026-12-05,
Intel Xeon, 2 threads).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numba as nb
import numpy as np

from .. import threads as _threads
from ..arrays import cache_slices, matmul, summed
from ..shapes import WindowGeometry
from .channels_last_rows import to_channels_last
from .im2col import bias_columns, bias_relu_inplace, cm_to_nchw

# Maps of at most this many pixels are multiplied channel-major, as one product per batch slice,
# W (O, C) @ x (C, k*H*W), then written back to NCHW with the bias and the ReLU: a product per
# sample would have only H*W columns. Measured 2026-12-04, Intel Xeon, 2 threads, forward with ReLU,
# ms, per sample / channel-major: (N, C, O, H=W) (64, 160, 1280, 4) 2.94 / 1.94, (1, 160, 1280, 4)
# 0.082 / 0.089; at 8x8 the per-sample products won, (64, 32, 192, 8) 0.36 / 0.70.
_CHANNEL_MAJOR_MAX_PLANE = 16
_CHANNEL_MAJOR_CHUNK_BYTES = 2**21  # its slices: one product each, as long as the cache allows

# Output maps of at least this many pixels: the weight gradient as one GEMM per sample, K = OH*OW
# long; smaller maps (a MobileNet's last stages) are gathered channel-major per slice first, so the
# product's inner dimension is the slice's pixels, not a handful
_PER_SAMPLE_PLANE = 256


class PointwiseCache(NamedTuple):
    """What backward needs of a pointwise convolution."""

    x_shape: tuple[int, int, int, int]
    x: np.ndarray  # the input as (N, C, H*W), C-contiguous
    weight: np.ndarray
    bias_shape: tuple[int, ...] | None
    geometry: WindowGeometry
    owner: str
    slices: list[slice]
    out: np.ndarray | None  # relu=True: the output, whose sign is ReLU's derivative


def supports(weight_shape: tuple[int, ...], g: WindowGeometry, groups: int) -> bool:
    """Whether a convolution is pointwise: 1x1 kernel, stride 1, no padding, groups 1."""
    return (
        tuple(weight_shape[2:]) == (1, 1)
        and groups == 1
        and (g.top, g.bottom, g.left, g.right) == (0, 0, 0, 0)
        and (g.sy, g.sx, g.dy, g.dx) == (1, 1, 1, 1)
    )


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
) -> tuple[np.ndarray, PointwiseCache]:
    """``conv2d_forward``'s pointwise strategy on checked arguments (as ``conv.im2col.forward``;
    ``groups`` is 1, ``backend`` numba, and the cache keeps the input either way)."""
    n, out_channels = x.shape[0], weight.shape[0]
    plane = g.oh * g.ow
    x3 = x.reshape(n, x.shape[1], plane)
    w2 = weight.reshape(out_channels, -1)
    out = np.empty((n, out_channels, g.oh, g.ow), dtype=weight.dtype)
    out3 = out.reshape(n, out_channels, plane)
    bias2 = bias_columns(bias, out_channels, weight.dtype)
    channel_major = plane <= _CHANNEL_MAJOR_MAX_PLANE
    if channel_major:
        slices = cache_slices(n, x3[0].nbytes + out3[0].nbytes, _CHANNEL_MAJOR_CHUNK_BYTES)
    else:
        slices = cache_slices(n, x3[0].nbytes + out3[0].nbytes)

    def block(s: slice) -> None:
        if channel_major:
            x_cm = np.ascontiguousarray(x3[s].transpose(1, 0, 2)).reshape(x3.shape[1], -1)
            cm_to_nchw(matmul(w2, x_cm), bias2, relu, out3[s])
        else:
            matmul(w2, x3[s], out3[s])
            if bias is not None or relu:
                bias_relu_inplace(out3[s], bias2, relu)
        if then is not None:
            then(s, out[s])

    _threads.parallel_map(block, slices)
    cache = PointwiseCache(
        x.shape, x3, weight, None if bias is None else bias.shape, g, owner, slices,
        out if relu else None,
    )
    return out, cache


def backward(
    dout: np.ndarray | None,
    cache: PointwiseCache,
    input_grad: bool = True,
    *,
    dout_of: Callable[[slice], np.ndarray] | None = None,
    dz_into: Callable[[slice, np.ndarray, np.ndarray], None] | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``conv2d_backward`` of a pointwise convolution, slice by slice. It takes dout whole
    (``dout_of`` is asked once, for the batch; ``dz_into`` is the im2col layout's, unused)."""
    g, weight, x3, bias_shape = cache.geometry, cache.weight, cache.x, cache.bias_shape
    n, out_channels, plane = x3.shape[0], weight.shape[0], g.oh * g.ow
    if dout_of is not None:
        dout = dout_of(slice(0, n))
    dz = np.ascontiguousarray(dout).reshape(n, out_channels, plane)
    y3 = None if cache.out is None else cache.out.reshape(dz.shape)
    w2 = weight.reshape(out_channels, -1)
    wt = np.ascontiguousarray(w2.T)
    dx3 = np.empty(x3.shape, dtype=weight.dtype) if input_grad else None
    untied = []

    def block(s: slice) -> tuple[np.ndarray, np.ndarray]:
        d = dz[s] if y3 is None else np.where(y3[s] > 0, dz[s], dz.dtype.type(0))  # fused ReLU
        if plane >= _PER_SAMPLE_PLANE:
            dw = np.zeros(w2.shape, dtype=weight.dtype)
            for i in range(d.shape[0]):
                dw += d[i] @ x3[s.start + i].T
        else:  # short rows: one product over the slice's samples, in the channel-major layout
            dw = (d.transpose(1, 0, 2).reshape(out_channels, -1)
                  @ x3[s].transpose(1, 0, 2).reshape(x3.shape[1], -1).T)
        if bias_shape is not None and len(bias_shape) == 3:
            untied.append(d.sum(axis=0))
        if input_grad:
            matmul(wt, d, dx3[s])
        # each map summed in its dtype (pairwise, as NumPy sums a contiguous axis), the maps in
        # float64: one pass, where a float64 sum of everything converts every value
        return dw, d.sum(axis=2).sum(axis=0, dtype=np.float64)

    parts = _threads.parallel_map(block, cache.slices)
    dweight = summed([part[0] for part in parts])
    dx = dx3.reshape(cache.x_shape) if input_grad else None
    if bias_shape is None:
        dbias = None
    elif len(bias_shape) == 1:
        dbias = sum(p[1] for p in parts).astype(weight.dtype)
    else:
        dbias = sum(untied).reshape(bias_shape)
    return dx, dweight.reshape(weight.shape), dbias


# ------------------------------------------------------------------- pooled: a network's head

#: the activations ``forward_pooled`` applies before the mean, by layer name (codes of its kernel)
POOLED_ACTIVATIONS = {None: 0, "ReLU": 1, "ReLU6": 2, "HardSigmoid": 3, "HardSwish": 4}

# Its batch slices: the rows of the input and of the product, at most this many bytes a slice (at
# least one slice a thread); the product is averaged while it is in the core's cache.
_POOLED_CHUNK_BYTES = 2**21


@nb.njit(cache=True, nogil=True, inline="always")
def _activation(v, code, zero, three, six):
    """The activation layers' formulas (``activations.py``): NaN stays NaN through each."""
    if code == 1:
        return zero if v < zero else v
    if code == 2:
        return zero if v < zero else (six if v > six else v)
    if code == 3:
        u = v + three
        return (zero if u < zero else (six if u > six else u)) / six
    if code == 4:
        u = v + three
        return v * (zero if u < zero else (six if u > six else u)) / six
    return v


@nb.njit(cache=True, nogil=True)
def pool_rows(y, bias, code, plane, out):
    """``out[n, o] = mean over p of f(y[n*P + p, o] + bias[o])``, f the activation of ``code``
    (``POOLED_ACTIVATIONS``), the P pixels summed in order, then divided by P as the pooling
    layer divides: y (k*P, O) -> out (k, O)."""
    k, o_count = out.shape
    zero, three, six = y.dtype.type(0), y.dtype.type(3), y.dtype.type(6)
    count = y.dtype.type(plane)
    for n in range(k):
        total = out[n]
        for o in range(o_count):
            total[o] = zero
        for p in range(plane):
            row = y[n * plane + p]
            for o in range(o_count):
                total[o] += _activation(row[o] + bias[o], code, zero, three, six)
        for o in range(o_count):
            total[o] = total[o] / count


def pooled_weight(weight: np.ndarray) -> np.ndarray:
    """``forward_pooled``'s operand: the (O, C, 1, 1) weight as W.T (C, O), C-contiguous (BLAS
    multiplied (16, 160) @ (160, 1280) in 65 us so, 113 us on the transposed view; measured
    2026-12-05, Intel Xeon, one thread)."""
    return np.ascontiguousarray(weight.reshape(weight.shape[0], -1).T)


def forward_pooled(x: np.ndarray, weight_t: np.ndarray, bias: np.ndarray | None,
                   activation: str | None = None, x_last: bool = False) -> np.ndarray:
    """A pointwise convolution, its activation and a global average pool in one pass: (N, O),
    ``out[n, o] = mean over pixels of f(conv(x)[n, o] + bias[o])`` for checked, C-contiguous ``x``
    (N, C, H, W) of the weight's dtype (``x_last``: (N, H, W, C)); ``weight_t`` from
    ``pooled_weight``, ``bias`` (O,) tied or None, ``activation`` a key of
    ``POOLED_ACTIVATIONS``. Each batch slice is multiplied as channels-last rows, (k*H*W, C) @
    (C, O), and averaged while the product is in its core's cache: the (N, O, H, W) map is never
    written, nor turned back to NCHW. Batch slices on the engine's pool."""
    if x_last:
        n, height, width, channels = x.shape
    else:
        n, channels, height, width = x.shape
    plane, out_channels, dtype = height * width, weight_t.shape[1], weight_t.dtype
    code = POOLED_ACTIVATIONS[activation]
    b = bias_columns(bias, out_channels, dtype).reshape(out_channels)
    out = np.empty((n, out_channels), dtype)

    def block(s: slice) -> None:
        k = s.stop - s.start
        if x_last:
            rows = x[s].reshape(k * plane, channels)
        else:
            rows = np.empty((k * plane, channels), dtype)
            to_channels_last(x[s], rows)
        pool_rows(matmul(rows, weight_t), b, code, plane, out[s])

    _threads.parallel_map(block, cache_slices(n, (channels + out_channels) * plane * x.itemsize,
                                              _POOLED_CHUNK_BYTES))
    return out
