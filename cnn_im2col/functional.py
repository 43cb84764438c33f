"""Stateless forward/backward pairs: convolution, pooling, batch normalisation, activations.

Each ``*_forward`` validates its arguments, computes the output and returns ``(out, cache)``;
the matching ``*_backward(dout, cache)`` returns the gradients. Layers (``layers.py``) hold the
state; these functions hold the mathematics.

Convolution (cross-correlation, as in PyTorch and Eq. 8.20) is im2col -> one GEMM -> reshape:

    cols (N*OH*OW, C*KH*KW) @ W (O, C*KH*KW).T -> (N*OH*OW, O) -> (N, O, OH, OW)

and its backward pass (Eq. 8.36, 8.45, 8.48 in matrix form) is

    dZ  = dout as (N*OH*OW, O)
    dW  = dZ.T @ cols            (the weight gradient: a correlation of the input with dZ)
    db  = sum of dZ              (tied: over N, OH, OW; untied: over N)
    dx  = col2im(dZ @ W)         (the full convolution with the kernel rotated 180 degrees)

That is the ``"numpy"`` backend, literally. The ``"numba"`` backend computes the same products
transposed, with the channel-major matrix ``cols_t = cols.T`` (C*KH*KW, N*OH*OW) of
``im2col.unfold_t``: ``W @ cols_t`` is (O, N*OH*OW), i.e. (O, N, OH, OW) with contiguous planes, so
the move to NCHW is a copy of whole planes fused with the bias (``_kernels.cnhw_to_nchw``) instead
of a strided NHWC -> NCHW transpose; backward turns dout into dZ.T (O, N*OH*OW) in one pass that
also sums the tied bias gradient, then ``dW = dZ.T @ cols_t.T`` and ``dx = col2im_t(W.T @ dZ.T)``.
Every matrix product goes through ``gemm`` (NumPy's BLAS).

``owner`` names the caller in error messages (a layer passes its own name).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _kernels
from .im2col import BACKENDS, fold, fold_t, unfold, unfold_t
from .shapes import (
    WindowGeometry,
    as_float_array,
    check_choice,
    check_input_channels,
    pair,
    resolve_padding,
    window_geometry,
)

# --------------------------------------------------------------------------- GEMM


def gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` through NumPy's BLAS: every matrix product of the engine goes through here (one
    place to profile; dtypes are the callers' business and never mixed)."""
    return np.matmul(a, b)


# --------------------------------------------------------------------------- convolution

# conv2d_forward(keep_cols=False): im2col at most this much at a time, so that it is still in cache
# when the GEMM reads it. Measured, LeNet inference on 10k images (batch 1000, Numba 2 + BLAS 2
# threads): 0.5 MiB 1.76 s, 1 MiB 1.54 s, 2 MiB 1.40 s, 4 MiB 1.37 s, 8 MiB 1.34 s, 16 MiB 1.57 s,
# 64 MiB 1.64 s (smaller chunks pay more kernel launches and thread wake-ups, larger ones leave the
# 4 MiB L2). Training keeps whole matrices: chunking it there was slower.
_CHUNK_BYTES = 4 * 2**20


class ConvCache(NamedTuple):
    x_shape: tuple[int, int, int, int]
    cols: np.ndarray | None  # None when conv2d_forward ran with keep_cols=False
    weight: np.ndarray
    bias_shape: tuple[int, ...] | None
    geometry: WindowGeometry
    backend: str
    owner: str
    x: np.ndarray | None = None  # the (contiguous) input, kept instead of cols (keep_cols=False)


def conv2d_output_shape(input_shape: tuple[int, int, int], weight_shape: tuple[int, int, int, int],
                        stride: Any = 1, padding: Any = 0, owner: str = "conv2d") -> tuple[int, int, int]:
    """(C, H, W) -> (O, OH, OW) for a weight of shape (O, C, KH, KW); raises if the kernel cannot fit."""
    out_channels, in_channels, kh, kw = weight_shape
    if len(input_shape) != 3 or input_shape[0] != in_channels:
        raise ValueError(f"{owner}: input must be ({in_channels}, H, W) (channels, height, width), "
                         f"got {tuple(input_shape)}")
    g = _conv_geometry(input_shape[1], input_shape[2], (kh, kw), stride, padding, owner)
    return (out_channels, g.oh, g.ow)


def _conv_geometry(height: int, width: int, kernel: tuple[int, int], stride: Any, padding: Any,
                   owner: str) -> WindowGeometry:
    steps = pair(stride, "stride", owner)
    pads = resolve_padding(padding, kernel, steps, owner)
    return window_geometry(height, width, kernel, steps, pads, owner)


def conv2d_forward(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                   backend: str = "numba", owner: str = "conv2d", *,
                   keep_cols: bool = True) -> tuple[np.ndarray, ConvCache]:
    """Cross-correlate ``x`` (N, C, H, W) with ``weight`` (O, C, KH, KW) and add ``bias``.

    ``bias``: ``None``; tied, shape (O,), one per feature map; or untied, shape (O, OH, OW), one per
    output neuron (Fig. 8.1). ``stride``: int or (sy, sx). ``padding``: int, (ph, pw), ``"valid"``
    or ``"same"`` (stride 1 only). ``x`` is cast to the weight's dtype (float32 or float64).
    Returns ``out`` (N, O, OH, OW), C-contiguous, and the cache for ``conv2d_backward``.
    ``keep_cols=False`` (inference): the im2col matrix (C*KH*KW values per output position, the
    layer's largest array) is built a few samples at a time (about 1 MiB each) and not kept; the
    cache holds ``x`` instead, and ``conv2d_backward`` rebuilds the matrix if it is ever called.
    """
    check_choice(backend, "backend", BACKENDS, owner)
    weight = as_float_array(weight, "weight", owner, ndim=4)
    x = as_float_array(x, "x", owner, ndim=4, dtype=weight.dtype)
    out_channels = weight.shape[0]
    check_input_channels(x, weight.shape[1], owner)
    g = _conv_geometry(x.shape[2], x.shape[3], weight.shape[2:], stride, padding, owner)
    bias = _check_bias(bias, (out_channels, g.oh, g.ow), weight.dtype, owner)

    x = np.ascontiguousarray(x)
    n = x.shape[0]
    w2 = weight.reshape(out_channels, -1)
    if backend == "numba":
        # channel-major cols (C*KH*KW, N*OH*OW): W @ cols is (O, N*OH*OW), whose planes are
        # contiguous, so the move to NCHW (fused with the tied bias) copies whole rows
        out = np.empty((n, out_channels, g.oh, g.ow), dtype=weight.dtype)
        tied = bias if bias is not None and bias.ndim == 1 else np.zeros(out_channels, weight.dtype)
        # kept for backward: all samples at once; otherwise a few samples at a time, so that the
        # im2col matrix never holds more than about _CHUNK_BYTES, whatever the batch size
        per_sample = w2.shape[1] * g.oh * g.ow * x.itemsize
        step = n if keep_cols else max(1, min(n, _CHUNK_BYTES // per_sample))
        cols = None
        for start in range(0, n, step):
            cols = unfold_t(x[start:start + step], g)
            rows_t = gemm(w2, cols)  # (O, n*OH*OW): the whole layer (or chunk) in one GEMM
            _kernels.cnhw_to_nchw(rows_t, tied, out[start:start + step].reshape(-1, out_channels, g.oh * g.ow))
            if not keep_cols:
                cols = rows_t = None  # free this chunk's arrays before the next one is made
        if bias is not None and bias.ndim == 3:
            out += bias
    else:
        cols = unfold(x, g, 0.0, backend)
        rows = gemm(cols, w2.T)  # (N*OH*OW, O): the whole layer in one GEMM
        # NHWC -> NCHW; the bias add doubles as the copy into a contiguous output.
        view = rows.reshape(n, g.oh, g.ow, out_channels).transpose(0, 3, 1, 2)
        out = np.empty(view.shape, dtype=weight.dtype)
        if bias is None:
            np.copyto(out, view)
        elif bias.ndim == 1:
            np.add(view, bias[:, None, None], out=out)
        else:
            np.add(view, bias, out=out)
    cache = ConvCache(x.shape, cols if keep_cols else None, weight, None if bias is None else bias.shape, g,
                      backend, owner, None if keep_cols else x)
    return out, cache


def _check_bias(bias: Any, out_shape: tuple[int, int, int], dtype: np.dtype, owner: str) -> np.ndarray | None:
    if bias is None:
        return None
    bias = as_float_array(bias, "bias", owner, dtype=dtype)
    if bias.shape not in (out_shape[:1], out_shape):
        raise ValueError(f"{owner}: bias must have shape {out_shape[:1]} (tied) or {out_shape} (untied, "
                         f"one per output neuron), got {bias.shape}")
    return bias


def conv2d_backward(dout: Any, cache: ConvCache,
                    input_grad: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of ``conv2d_forward``: ``(dx, dweight, dbias)`` with the shapes of x, weight, bias.

    ``dbias`` is None when there was no bias; ``dx`` is None with ``input_grad=False`` (not
    computed: a network's first layer never needs it).
    """
    x_shape, cols, weight, bias_shape, g, backend, owner, x = cache
    if cols is None:  # forward ran with keep_cols=False
        cols = unfold_t(x, g) if backend == "numba" else unfold(x, g, 0.0, backend)
    out_channels = weight.shape[0]
    dout = check_dout(dout, (x_shape[0], out_channels, g.oh, g.ow), weight.dtype, owner)
    w2 = weight.reshape(out_channels, -1)
    if backend == "numba":  # cols is channel-major (C*KH*KW, N*OH*OW), see conv2d_forward
        d_t = np.empty((out_channels, cols.shape[1]), dtype=weight.dtype)  # dout as (O, N*OH*OW)
        tied_grad = np.empty(out_channels, dtype=weight.dtype)
        _kernels.nchw_to_cnhw(np.ascontiguousarray(dout).reshape(x_shape[0], out_channels, -1), d_t, tied_grad)
        # (cols @ dZ) transposed, not dZ.T @ cols.T: the same product, but OpenBLAS runs this
        # orientation ~25% faster for these shapes (measured: LeNet's 2.85 -> 2.1 ms, 1.3 -> 1.0 ms)
        dweight = np.ascontiguousarray(gemm(cols, d_t.T).T).reshape(weight.shape)
        dx = fold_t(gemm(w2.T, d_t), x_shape, g) if input_grad else None  # col2im of (C*KH*KW, N*OH*OW)
    else:
        d_rows = dout.transpose(0, 2, 3, 1).reshape(-1, out_channels)  # (N*OH*OW, O)
        dweight = gemm(d_rows.T, cols).reshape(weight.shape)
        tied_grad = None
        dx = fold(gemm(d_rows, w2), x_shape, g, backend) if input_grad else None  # col2im of (N*OH*OW, C*KH*KW)
    if bias_shape is None:
        dbias = None
    elif len(bias_shape) == 1:
        dbias = tied_grad if tied_grad is not None else dout.sum(axis=(0, 2, 3))
    else:
        dbias = dout.sum(axis=0)
    return dx, dweight, dbias


def check_dout(dout: Any, expected: tuple[int, ...], dtype: np.dtype, owner: str) -> np.ndarray:
    """Validate an upstream gradient: numeric, finite, cast to ``dtype``, shaped like the output."""
    dout = as_float_array(dout, "dout", owner, dtype=dtype)
    if dout.shape != tuple(expected):
        raise ValueError(f"{owner}: dout must have the output's shape {tuple(expected)}, got {dout.shape}")
    return dout


# --------------------------------------------------------------------------- pooling


class PoolCache(NamedTuple):
    x_shape: tuple[int, int, int, int]
    geometry: WindowGeometry
    backend: str
    owner: str
    argmax: np.ndarray | None  # max pooling: winner indices
    sums: np.ndarray | None  # average pooling with a trainable scale: window sums (Eq. 8.22)
    scale: np.ndarray | None
    dtype: np.dtype
    # average pooling with count_include_pad=False: (OH, OW) factors KH*KW / (cells inside the
    # image) that turn each window sum into the sum over KH*KW in-image-mean cells; None otherwise
    border: np.ndarray | None = None


def pool_geometry(height: int, width: int, kernel_size: Any, stride: Any, padding: Any,
                  owner: str) -> WindowGeometry:
    """Window geometry of a pooling layer: stride defaults to the window; padding at most half of it."""
    kernel = pair(kernel_size, "kernel_size", owner)
    steps = kernel if stride is None else pair(stride, "stride", owner)
    ph, pw = pair(padding, "padding", owner, minimum=0)
    if ph > kernel[0] // 2 or pw > kernel[1] // 2:
        raise ValueError(f"{owner}: padding must be at most half the window ({kernel[0] // 2}, "
                         f"{kernel[1] // 2}) for kernel_size {kernel}, got {(ph, pw)}")
    return window_geometry(height, width, kernel, steps, (ph, ph, pw, pw), owner, what="pooling window")


def _no_padding(g: WindowGeometry) -> bool:
    return g.top == g.bottom == g.left == g.right == 0


def _planes_as_channels(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N*C, 1, H, W): pooling works on each plane alone."""
    n, c, height, width = x.shape
    return x.reshape(n * c, 1, height, width)


def max_pool2d_forward(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                       backend: str = "numba", owner: str = "max_pool2d") -> tuple[np.ndarray, PoolCache]:
    """Max over windows of each feature map (Eq. 8.24), any window and stride, overlaps allowed.

    Padding cells count as -inf. Ties: the gradient goes to the FIRST maximum in window scan order
    (row-major within the window), like ``numpy.argmax`` and the primer's ``MaxPoolingMap``.
    ``x`` (N, C, H, W) -> (N, C, OH, OW).
    """
    check_choice(backend, "backend", BACKENDS, owner)
    x = np.ascontiguousarray(as_float_array(x, "x", owner, ndim=4))
    g = pool_geometry(x.shape[2], x.shape[3], kernel_size, stride, padding, owner)
    n, c = x.shape[:2]
    if backend == "numba":
        out = np.empty((n, c, g.oh, g.ow), dtype=x.dtype)
        argmax = np.empty((n, c, g.oh, g.ow), dtype=np.int32 if x[0, 0].size < 2**31 else np.int64)
        if _no_padding(g) and (g.kh, g.kw) == (2, 2):
            _kernels.max_pool_forward_2x2(x, g.sy, g.sx, out, argmax)
        elif _no_padding(g):
            _kernels.max_pool_forward_valid(x, g.kh, g.kw, g.sy, g.sx, out, argmax, True)
        else:
            _kernels.max_pool_forward(x, g.kh, g.kw, g.sy, g.sx, g.top, g.left, out, argmax)
    else:
        cols = unfold(_planes_as_channels(x), g, -np.inf, "numpy")  # (N*C*OH*OW, KH*KW)
        argmax = cols.argmax(axis=1)  # window-local index of the first maximum
        out = np.take_along_axis(cols, argmax[:, None], axis=1).reshape(n, c, g.oh, g.ow)
    return out, PoolCache(x.shape, g, backend, owner, argmax, None, None, x.dtype)


def max_pool2d_backward(dout: Any, cache: PoolCache) -> np.ndarray:
    """Route each output gradient to the input that won its window; overlapping windows accumulate."""
    x_shape, g, backend, owner, argmax = cache[:5]
    n, c, height, width = x_shape
    dout = np.ascontiguousarray(check_dout(dout, (n, c, g.oh, g.ow), cache.dtype, owner))
    if backend == "numba":
        if _no_padding(g) and (g.sy, g.sx) == (g.kh, g.kw):  # windows tile the image: no overlap
            dx = np.empty(x_shape, dtype=cache.dtype)
            _kernels.max_pool_backward_tiled(dout, argmax, dx)
        else:
            dx = np.zeros(x_shape, dtype=cache.dtype)
            _kernels.max_pool_backward(dout, argmax, dx)
        return dx
    dcols = np.zeros((argmax.size, g.kh * g.kw), dtype=cache.dtype)
    dcols[np.arange(argmax.size), argmax] = dout.ravel()
    return fold(dcols, (n * c, 1, height, width), g, "numpy").reshape(x_shape)


def _border_factors(g: WindowGeometry, height: int, width: int, dtype: np.dtype) -> np.ndarray | None:
    """(OH, OW) factors KH*KW / (window cells inside the image), or None if no window touches padding."""
    rows = np.arange(g.oh) * g.sy - g.top
    cols = np.arange(g.ow) * g.sx - g.left
    inside_h = np.minimum(rows + g.kh, height) - np.maximum(rows, 0)
    inside_w = np.minimum(cols + g.kw, width) - np.maximum(cols, 0)
    if (inside_h == g.kh).all() and (inside_w == g.kw).all():
        return None
    return (g.kh * g.kw / np.outer(inside_h, inside_w)).astype(dtype)


def avg_pool2d_forward(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, scale: Any = None,
                       backend: str = "numba", owner: str = "avg_pool2d", *,
                       count_include_pad: bool = True) -> tuple[np.ndarray, PoolCache]:
    """Average pooling; with ``scale`` (one weight per feature map, shape (C,)) it is Eq. 8.22.

    Without ``scale``: the mean of each window. ``count_include_pad=True`` (PyTorch's default):
    zero padding counts, the divisor is KH*KW; ``False``: the divisor is the number of window
    cells inside the image (PyTorch's ``count_include_pad=False``). With ``scale``: the window SUM
    times ``scale[c]``, so ``scale = 1/(KH*KW)`` gives the mean; with ``count_include_pad=False``
    a border window's sum is first scaled by KH*KW / (cells inside), so that ``1/(KH*KW)`` still
    gives PyTorch's ``count_include_pad=False`` mean (away from the borders nothing changes).
    ``x`` (N, C, H, W) -> (N, C, OH, OW).
    """
    check_choice(backend, "backend", BACKENDS, owner)
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(f"{owner}: count_include_pad must be True or False, got {count_include_pad!r}")
    x = np.ascontiguousarray(as_float_array(x, "x", owner, ndim=4))
    g = pool_geometry(x.shape[2], x.shape[3], kernel_size, stride, padding, owner)
    n, c = x.shape[:2]
    if scale is not None:
        scale = as_float_array(scale, "scale", owner, ndim=1, dtype=x.dtype)
        if scale.shape != (c,):
            raise ValueError(f"{owner}: scale must have shape ({c},), one weight per feature map, got {scale.shape}")
    if backend == "numba":
        sums = np.empty((n, c, g.oh, g.ow), dtype=x.dtype)
        _kernels.sum_pool_forward(x, g.kh, g.kw, g.sy, g.sx, g.top, g.left, sums)
    else:
        cols = unfold(_planes_as_channels(x), g, 0.0, "numpy")
        sums = cols.sum(axis=1).reshape(n, c, g.oh, g.ow)
    border = None if count_include_pad else _border_factors(g, x.shape[2], x.shape[3], x.dtype)
    if border is not None:
        sums *= border
    if scale is None:
        out = sums
        out *= x.dtype.type(1.0 / (g.kh * g.kw))
        return out, PoolCache(x.shape, g, backend, owner, None, None, None, x.dtype, border)
    out = sums * scale[:, None, None]
    return out, PoolCache(x.shape, g, backend, owner, None, sums, scale, x.dtype, border)


def avg_pool2d_backward(dout: Any, cache: PoolCache) -> tuple[np.ndarray, np.ndarray | None]:
    """Gradients of ``avg_pool2d_forward``: ``(dx, dscale)``; ``dscale`` is None without a scale.

    dx spreads each output gradient times the window's weight over its window (P8.3);
    dscale[c] sums dout * window-sum over samples and positions (P8.4).
    """
    x_shape, g, backend, owner, _, sums, scale, dtype, border = cache
    n, c, height, width = x_shape
    dout = check_dout(dout, (n, c, g.oh, g.ow), dtype, owner)
    if scale is None:
        dsums = dout * dtype.type(1.0 / (g.kh * g.kw))
        dscale = None
    else:
        dsums = dout * scale[:, None, None]
        dscale = np.einsum("nchw,nchw->c", dout, sums)
    if border is not None:
        dsums *= border
    dsums = np.ascontiguousarray(dsums)
    if backend == "numba":
        dx = np.zeros(x_shape, dtype=dtype)
        _kernels.sum_pool_backward(dsums, g.kh, g.kw, g.sy, g.sx, g.top, g.left, dx)
    else:
        dcols = np.repeat(dsums.reshape(-1, 1), g.kh * g.kw, axis=1)
        dx = fold(dcols, (n * c, 1, height, width), g, "numpy").reshape(x_shape)
    return dx, dscale


def global_avg_pool2d_forward(x: Any, owner: str = "global_avg_pool2d") -> tuple[np.ndarray, tuple]:
    """The mean of each feature map: (N, C, H, W) -> (N, C). Returns ``(out, cache)``."""
    x = as_float_array(x, "x", owner, ndim=4)
    return x.mean(axis=(2, 3), dtype=x.dtype), (x.shape, x.dtype, owner)


def global_avg_pool2d_backward(dout: Any, cache: tuple) -> np.ndarray:
    """dx[n, c, i, j] = dout[n, c] / (H*W) for every pixel."""
    (n, c, height, width), dtype, owner = cache
    dout = check_dout(dout, (n, c), dtype, owner)
    dx = np.empty((n, c, height, width), dtype=dtype)
    dx[...] = (dout * dtype.type(1.0 / (height * width)))[:, :, None, None]
    return dx


# --------------------------------------------------------------------------- activations
# Each takes and returns arrays of any shape; backward gets the forward OUTPUT y, which is all
# these derivatives need (Eq. 8.52: dN = f'(N) * dA).


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, dtype=x.dtype)


def relu_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    if (dout.dtype == y.dtype and dout.dtype.char in "fd" and dout.shape == y.shape
            and dout.flags.c_contiguous and y.flags.c_contiguous):
        dx = np.empty_like(dout)
        _kernels.relu_backward(dout.reshape(-1), y.reshape(-1), dx.reshape(-1))  # one pass, no mask
        return dx
    return np.where(y > 0, dout, 0).astype(dout.dtype, copy=False)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) computed from exp(-|x|), so no overflow warning for any finite x."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def sigmoid_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    return dout * y * (1 - y)


def tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def tanh_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    return dout * (1 - y * y)


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Softmax along ``axis`` (the class axis), shifted by the max so large logits cannot overflow."""
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(dout: np.ndarray, y: np.ndarray, axis: int = 1) -> np.ndarray:
    """Jacobian-vector product of softmax: y * (dout - <dout, y>)."""
    return y * (dout - (dout * y).sum(axis=axis, keepdims=True))


# --------------------------------------------------------------------------- batch normalisation


class BatchNormCache(NamedTuple):
    x: np.ndarray  # the (C-contiguous) input: xhat is recomputed from it, never stored
    mean: np.ndarray  # (C,) float64: the statistics used, batch or running
    invstd: np.ndarray  # (C,) float64: 1 / sqrt(var + eps)
    gamma: np.ndarray | None  # (C,) weight, None without affine
    batch_stats: bool  # True: mean and var came from x, so they depend on it (training)
    owner: str


def batch_norm2d_forward(x: Any, weight: Any = None, bias: Any = None, mean: Any = None, var: Any = None,
                         eps: float = 1e-5, owner: str = "batch_norm2d") -> tuple[np.ndarray, BatchNormCache,
                                                                             np.ndarray, np.ndarray]:
    """Batch normalisation of (N, C, H, W) per channel: ``y = (x - mean) / sqrt(var + eps) * weight + bias``.

    ``mean``/``var`` None: the batch's statistics over (N, H, W), with the BIASED variance (as
    PyTorch normalises in training); given (shape (C,)): fixed statistics (eval with running stats).
    ``weight``/``bias`` (C,) or None (no affine map). Returns ``(y, cache, batch_mean, batch_var)``:
    the statistics used (float64, (C,)), so the caller can update its running statistics.
    """
    x = np.ascontiguousarray(as_float_array(x, "x", owner, ndim=4))
    c = x.shape[1]
    weight = _channel_vector(weight, "weight", c, x.dtype, owner)
    bias = _channel_vector(bias, "bias", c, x.dtype, owner)
    if (mean is None) != (var is None):
        raise ValueError(f"{owner}: give both mean and var (fixed statistics) or neither (batch statistics)")
    batch_stats = mean is None
    if batch_stats:
        mean = np.empty(c)
        var = np.empty(c)
        _kernels.batch_norm_stats(x, mean, var)
    else:
        mean = _channel_vector(mean, "mean", c, np.float64, owner)
        var = _channel_vector(var, "var", c, np.float64, owner)
        if (var < 0).any():
            raise ValueError(f"{owner}: var must be >= 0, got min {var.min()}")
    invstd = 1.0 / np.sqrt(var + eps)
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    out = np.empty_like(x)
    _kernels.batch_norm_apply(x, scale.astype(x.dtype), shift.astype(x.dtype), out)
    return out, BatchNormCache(x, mean, invstd, weight, batch_stats, owner), mean, var


def batch_norm2d_backward(dout: Any, cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``batch_norm2d_forward``: ``(dx, dweight, dbias)``, all in x's dtype.

    The fused closed form, one kernel, no temporaries of x's size but dx: with M = N*H*W,
    xhat = (x - mean) * invstd, dbias = sum(dout), dweight = sum(dout * xhat) and, with batch
    statistics, dx = weight * invstd / M * (M * dout - dbias - xhat * dweight); with fixed
    statistics dx = weight * invstd * dout. Without affine, weight is 1 (dweight, dbias are still
    returned; the layer drops them).
    """
    x, mean, invstd, gamma, batch_stats, owner = cache
    dout = np.ascontiguousarray(check_dout(dout, x.shape, x.dtype, owner))
    c = x.shape[1]
    dx = np.empty_like(x)
    dgamma = np.empty(c)
    dbeta = np.empty(c)
    g = np.ones(c) if gamma is None else gamma.astype(np.float64)
    _kernels.batch_norm_backward(dout, x, mean, invstd, g, batch_stats, dx, dgamma, dbeta)
    return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)


def _channel_vector(value: Any, name: str, channels: int, dtype: Any, owner: str) -> np.ndarray | None:
    if value is None:
        return None
    value = as_float_array(value, name, owner, ndim=1, dtype=dtype)
    if value.shape != (channels,):
        raise ValueError(f"{owner}: {name} must have shape ({channels},), one per channel of x, got {value.shape}")
    return value
