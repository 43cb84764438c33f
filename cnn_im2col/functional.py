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

That is the ``"numpy"`` backend, literally. With ``groups = G`` the channels split into G groups
and each is its own convolution: one GEMM per group, on the group's rows of ``cols`` and of ``W``.

The ``"numba"`` backend computes the same products transposed, in blocks: the batch is split into
slices (``threads.split``), and each worker of the engine's pool runs a slice's whole block while
it is in its cache: channel-major im2col ``cols_t`` (C*KH*KW, n*OH*OW) -> ``W @ cols_t`` (O,
n*OH*OW), single-threaded -> one epilogue pass that adds the bias, applies the ReLU if it was
fused (``relu=True``) and writes NCHW. Backward, per slice: one pass turns dout into dZ.T (O,
n*OH*OW), applying the fused ReLU's derivative and summing the bias gradient; ``dW_slice = dZ.T @
cols_t.T``; ``dx_slice = col2im_t(W.T @ dZ.T)``; the slices' dW add up at the end. A depthwise
convolution (``groups == C == O``) takes direct kernels instead (``_kernels.depthwise_*``, no
im2col: measured 18-25 ms against 57-78 ms for one GEMM per channel, 32x64x32x32 3x3 pad 1 forward
+ backward on one thread). A 3x3 or 5x5, stride-1 convolution takes Winograd's F(4x4, 3x3) or
F(2x2, 5x5) instead of im2col (``winograd.py``: 36 GEMMs of 4x or 2.78x fewer multiply-adds in
all), in the same slice blocks, when ``algorithm="auto"`` finds it worthwhile or
``algorithm="winograd"`` asks for it.

``owner`` names the caller in error messages (a layer passes its own name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from . import _kernels, winograd
from . import threads as _threads
from .im2col import BACKENDS, dilated_geometry, fold, fold_t, unfold, unfold_t
from .shapes import (
    WindowGeometry,
    as_float_array,
    check_choice,
    check_input_channels,
    check_int,
    pair,
    window_geometry,
)

# --------------------------------------------------------------------------- GEMM

# a product is split over the pool only above this many multiply-adds: below, the hand-off and two
# concurrent small OpenBLAS calls cost more than one call (measured on 2 threads: 64x640 @ 640x100,
# 4.1M, 0.097 ms split vs 0.049 whole; 256x640 @ 640x100, 16M, 0.17 vs 0.18; 1000x640 @ 640x100,
# 64M, 0.41 vs 0.65)
_PARALLEL_GEMM_MACS = 16_000_000


def gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (2-D) through NumPy's BLAS, whose every call is single-threaded (``threads.py``):
    a large product is split by rows of ``a`` over the engine's pool, so that a Dense layer uses
    every core too. Every matrix product outside a convolution block goes through here."""
    rows = a.shape[0]
    threads = _threads.get_num_threads()
    if threads == 1 or rows < 2 * threads or rows * a.shape[1] * b.shape[1] < _PARALLEL_GEMM_MACS:
        return np.matmul(a, b)
    out = np.empty((rows, b.shape[1]), dtype=np.result_type(a, b))

    def work(s: slice) -> None:
        np.matmul(a[s], b, out=out[s])

    _threads.parallel_map(work, _threads.split(rows, threads))
    return out


# --------------------------------------------------------------------------- convolution

# A worker's batch slice: at most this many bytes of im2col matrix, so that it is still in the
# core's cache (L2 here: 1 MiB per core) when the GEMM reads it (measured, single thread: 256 KiB
# to 4 MiB within noise for the 3x3 case, 256-512 KiB best for LeNet's), and at least as many slices as
# threads. Training keeps every slice's matrix for backward.
_CHUNK_BYTES = 2**19

# how a "numba" convolution is lowered to GEMMs: "auto" picks (see conv2d_forward)
ALGORITHMS = ("auto", "im2col", "winograd")

# groups == in_channels == out_channels: the direct kernels (_kernels.depthwise_*) instead of one
# GEMM per channel (the module docstring has the measurement)
_DEPTHWISE_DIRECT = True


class ConvCache(NamedTuple):
    x_shape: tuple[int, int, int, int]
    cols: list[np.ndarray] | np.ndarray | None  # numba: one cols_t per slice; numpy: cols; None: rebuild
    weight: np.ndarray
    bias_shape: tuple[int, ...] | None
    geometry: WindowGeometry
    backend: str
    owner: str
    x: np.ndarray | None = None  # the (contiguous) input, kept instead of cols (keep_cols=False)
    groups: int = 1
    slices: list[slice] | None = None  # numba: the batch slices of ``cols``
    out: np.ndarray | None = None  # relu=True: the output, whose sign is ReLU's derivative
    relu: bool = False
    transformed: np.ndarray | None = None  # Winograd: the transformed weight U; ``cols`` holds V


def conv2d_output_shape(input_shape: tuple[int, int, int], weight_shape: tuple[int, int, int, int],
                        stride: Any = 1, padding: Any = 0, owner: str = "conv2d", dilation: Any = 1,
                        groups: int = 1) -> tuple[int, int, int]:
    """(C, H, W) -> (O, OH, OW) for a weight of shape (O, C/groups, KH, KW); raises if the kernel
    cannot fit. ``OH = (H + pad_top + pad_bottom - dilation*(KH - 1) - 1) // stride + 1``."""
    out_channels, group_channels, kh, kw = weight_shape
    groups = _check_groups(groups, out_channels, owner)
    in_channels = group_channels * groups
    if len(input_shape) != 3 or input_shape[0] != in_channels:
        raise ValueError(f"{owner}: input must be ({in_channels}, H, W) (channels, height, width), "
                         f"got {tuple(input_shape)}")
    g = _conv_geometry(input_shape[1], input_shape[2], (kh, kw), stride, padding, owner, dilation)
    return (out_channels, g.oh, g.ow)


def _check_groups(groups: Any, out_channels: int, owner: str, in_channels: int | None = None) -> int:
    """``groups`` as an int >= 1 dividing the output channels (and the input channels, if given:
    from a weight (O, C/groups, KH, KW) they always divide)."""
    groups = check_int(groups, "groups", owner, minimum=1)
    counts = (("in_channels", in_channels), ("out_channels", out_channels))
    for name, count in counts:
        if count is not None and count % groups:
            raise ValueError(f"{owner}: groups must divide {name}; got groups={groups} and {name}={count}")
    return groups


def _conv_geometry(height: int, width: int, kernel: tuple[int, int], stride: Any, padding: Any,
                   owner: str, dilation: Any = 1) -> WindowGeometry:
    steps = pair(stride, "stride", owner)
    dil = pair(dilation, "dilation", owner)
    return dilated_geometry(height, width, tuple(kernel), steps, dil, padding, owner)


def _slices(n: int, per_sample_bytes: int) -> list[slice]:
    """The batch as slices for the pool: at least one per thread, each im2col at most _CHUNK_BYTES."""
    threads = _threads.get_num_threads()
    by_cache = -(-n * per_sample_bytes // _CHUNK_BYTES)
    parts = max(threads, by_cache)
    parts = -(-parts // threads) * threads  # a multiple of the threads: no worker idles at the end
    return _threads.split(n, parts)


# A weight gradient of at most this many values per group (LeNet's conv1: 20 x 25) is a few long
# dot products, which OpenBLAS computes no faster on two threads at once than one after the other
# (measured, 20 x 4608 x 25 float32: 0.10 ms alone, 0.21-0.24 ms each when two threads call it
# together); Numba's loop (_kernels.matmul_abt) takes 0.11 ms alone and 0.13-0.17 ms together. On an
# Intel Xeon (AVX-512, 2026-12-02), 20 x 2304 x 25: OpenBLAS 0.065 ms alone, 0.17 ms together; the
# register-blocked matmul_abt 0.041 and 0.061. At 40 x 500 (conv2) OpenBLAS is 1.7-3x faster.
_DOT_GRAD_MAX = 1024


def _weight_grad(d_t: np.ndarray, cols_t: np.ndarray, groups: int) -> np.ndarray:
    """Each group's ``dZ.T @ cols_t.T``: d_t (O, L) and cols_t (C*KH*KW, L), C-contiguous (as
    ``nchw_to_cm`` and ``unfold_t`` write them), -> (O, C/G*KH*KW), group g's rows from group g's
    rows of both."""
    o, r = d_t.shape[0] // groups, cols_t.shape[0] // groups
    if groups == 1 and o * r > _DOT_GRAD_MAX:
        # (cols_t @ dZ).T, not dZ.T @ cols_t.T: OpenBLAS is faster with the long axis in the
        # middle of "NT" this way round (measured, 40 x 500 x 4096: 1.13 vs 1.65 ms; 64 x 288 x
        # 1024: 0.21 vs 0.29 ms; one thread, SkylakeX kernel; within 5% with the Haswell one)
        return np.matmul(cols_t, d_t.T).T
    out = np.empty((groups * o, r), dtype=np.result_type(d_t, cols_t))
    for g in range(groups):
        rows, cols = d_t[g * o:(g + 1) * o], cols_t[g * r:(g + 1) * r]
        if o * r > _DOT_GRAD_MAX:
            out[g * o:(g + 1) * o] = np.matmul(cols, rows.T).T
        else:
            _kernels.matmul_abt(rows, cols, out[g * o:(g + 1) * o])
    return out


def _grouped_matmul(a: np.ndarray, b: np.ndarray, groups: int, out: np.ndarray | None = None) -> np.ndarray:
    """Block-diagonal product: group g of ``a``'s rows times group g of ``b``'s rows (a: (G*r, k),
    b: (G*k, m) -> (G*r, m)); ``groups == 1`` is ``a @ b``."""
    if groups == 1:
        return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)
    r, k = a.shape[0] // groups, b.shape[0] // groups
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    for g in range(groups):
        np.matmul(a[g * r:(g + 1) * r], b[g * k:(g + 1) * k], out=out[g * r:(g + 1) * r])
    return out


def conv2d_forward(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                   backend: str = "numba", owner: str = "conv2d", *, keep_cols: bool = True,
                   dilation: Any = 1, groups: int = 1, relu: bool = False,
                   then: Callable[[slice, np.ndarray], None] | None = None,
                   algorithm: str = "auto") -> tuple[np.ndarray, ConvCache]:
    """Cross-correlate ``x`` (N, C, H, W) with ``weight`` (O, C/groups, KH, KW) and add ``bias``.

    ``bias``: ``None``; tied, shape (O,), one per feature map; or untied, shape (O, OH, OW), one per
    output neuron (Fig. 8.1). ``stride``, ``dilation``: int or pair. ``padding``: int, (ph, pw),
    ``"valid"`` or ``"same"`` (stride 1 only; with dilation, as PyTorch). ``groups``: the channels
    split into that many independent convolutions (PyTorch's meaning; it must divide C and O).
    ``relu=True``: the output is ReLU(conv), computed in the same pass (a fused Conv2D -> ReLU).
    ``x`` is cast to the weight's dtype (float32 or float64).
    Returns ``out`` (N, O, OH, OW), C-contiguous, and the cache for ``conv2d_backward``.
    ``keep_cols=False`` (inference): the im2col matrix (C/groups*KH*KW values per output position and
    group, the layer's largest array) is built a slice at a time and not kept; the cache holds
    ``x`` instead, and ``conv2d_backward`` rebuilds the matrix if it is ever called.
    ``then(s, out[s])``: called once for each batch slice ``s`` (together they cover the batch),
    right after that slice's output is written, on the thread that wrote it, while it is in cache
    (a fused Conv2D -> ReLU -> MaxPool2D pools there); it must touch only slice ``s``.
    ``algorithm`` (``"numba"`` backend): ``"im2col"``; ``"winograd"``, F(4x4, 3x3) or F(2x2, 5x5), for
    a 3x3 or 5x5 kernel with stride 1, dilation 1 and groups 1 only (float32 rounding about 20x
    im2col's, ~1e-5 of the output's scale); ``"auto"`` (default): Winograd where it applies and pays (``winograd.preferred``:
    at least 8 input and output channels, an output of at least 4x4 and 512 output pixels per map
    in the batch), im2col elsewhere.
    """
    check_choice(backend, "backend", BACKENDS, owner)
    check_choice(algorithm, "algorithm", ALGORITHMS, owner)
    weight = as_float_array(weight, "weight", owner, ndim=4)
    x = as_float_array(x, "x", owner, ndim=4, dtype=weight.dtype)
    out_channels = weight.shape[0]
    groups = _check_groups(groups, out_channels, owner)
    check_input_channels(x, weight.shape[1] * groups, owner)
    g = _conv_geometry(x.shape[2], x.shape[3], weight.shape[2:], stride, padding, owner, dilation)
    bias = _check_bias(bias, (out_channels, g.oh, g.ow), weight.dtype, owner)
    use_winograd = _use_winograd(algorithm, backend, weight.shape, g, groups, owner, x.shape[0])

    x = np.ascontiguousarray(x)
    n = x.shape[0]
    w2 = weight.reshape(out_channels, -1)
    plane = g.oh * g.ow
    slices = None
    depthwise = backend == "numba" and _DEPTHWISE_DIRECT and groups == x.shape[1] == out_channels > 1
    if backend == "numba":
        out = np.empty((n, out_channels, g.oh, g.ow), dtype=weight.dtype)
        if bias is None:
            bias2 = np.zeros((out_channels, 1), weight.dtype)
        else:
            bias2 = bias.reshape(out_channels, -1)
    if depthwise:  # no im2col matrix at all: the cache keeps x
        w3 = np.ascontiguousarray(weight[:, 0])
        slices = _slices(n, x[0].nbytes * 4)

        def direct(s: slice) -> None:
            _kernels.depthwise_forward(x[s], w3, g.sy, g.sx, g.dy, g.dx, g.top, g.left, bias2, relu, out[s])
            if then is not None:
                then(s, out[s])

        _threads.parallel_map(direct, slices)
        cache = ConvCache(x.shape, None, weight, None if bias is None else bias.shape, g, backend, owner, x,
                          groups, slices, out if relu else None, bool(relu))
        return out, cache
    if use_winograd:
        u = winograd.transform_weight(weight)
        ty, tx = winograd.tiles(g)
        slices = _slices(n, winograd.ALPHA**2 * x.shape[1] * ty * tx * x.itemsize)

        def tiled(s: slice) -> np.ndarray | None:
            v = winograd.forward(x[s], u, g, bias2, relu, out[s])
            if then is not None:
                then(s, out[s])
            return v if keep_cols else None

        kept = _threads.parallel_map(tiled, slices)
        cache = ConvCache(x.shape, kept if keep_cols else None, weight, None if bias is None else bias.shape, g,
                          backend, owner, None if keep_cols else x, groups, slices, out if relu else None,
                          bool(relu), u)
        return out, cache
    if backend == "numba":
        out3 = out.reshape(n, out_channels, plane)
        rows = x.shape[1] * g.kh * g.kw
        slices = _slices(n, rows * plane * x.itemsize)

        def block(s: slice) -> np.ndarray | None:
            cols = unfold_t(x[s], g)
            if groups == 1 and s.stop - s.start == 1:  # W @ cols is already this sample's NCHW output
                _grouped_matmul(w2, cols, groups, out=out3[s.start])
                _kernels.bias_relu_inplace(out3[s], bias2, relu)
            else:
                _kernels.cm_to_nchw(_grouped_matmul(w2, cols, groups), bias2, relu, out3[s])
            if then is not None:
                then(s, out[s])
            return cols if keep_cols else None

        cols = _threads.parallel_map(block, slices)
    else:
        cols = unfold(x, g, 0.0, backend)
        rows = _grouped_matmul(w2, cols.T, groups).T  # (N*OH*OW, O): one GEMM per group
        # NHWC -> NCHW; the bias add doubles as the copy into a contiguous output.
        view = rows.reshape(n, g.oh, g.ow, out_channels).transpose(0, 3, 1, 2)
        out = np.empty(view.shape, dtype=weight.dtype)
        if bias is None:
            np.copyto(out, view)
        elif bias.ndim == 1:
            np.add(view, bias[:, None, None], out=out)
        else:
            np.add(view, bias, out=out)
        if relu:
            np.maximum(out, 0, out=out)
        if then is not None:
            then(slice(0, n), out)
    cache = ConvCache(x.shape, cols if keep_cols else None, weight, None if bias is None else bias.shape, g,
                      backend, owner, None if keep_cols else x, groups, slices, out if relu else None, bool(relu))
    return out, cache


def _use_winograd(algorithm: str, backend: str, weight_shape: tuple[int, ...], g: WindowGeometry,
                  groups: int, owner: str, batch: int) -> bool:
    """Whether this convolution of ``batch`` samples takes Winograd (F(4x4, 3x3) or F(2x2, 5x5);
    ``algorithm`` already validated)."""
    if algorithm == "im2col":
        return False
    fits = winograd.supports(weight_shape[2:], (g.sy, g.sx), (g.dy, g.dx), groups)
    if algorithm == "winograd":
        if backend != "numba":
            raise ValueError(f"{owner}: algorithm='winograd' needs backend='numba'; got backend={backend!r}")
        if not fits:
            raise ValueError(f"{owner}: algorithm='winograd' needs a 3x3 or 5x5 kernel, stride 1, dilation 1 and "
                             f"groups 1; got kernel {tuple(weight_shape[2:])}, stride {(g.sy, g.sx)}, "
                             f"dilation {(g.dy, g.dx)}, groups {groups}")
        return True
    return backend == "numba" and fits and winograd.preferred(weight_shape[1], weight_shape[0], g, batch)


def _check_bias(bias: Any, out_shape: tuple[int, int, int], dtype: np.dtype, owner: str) -> np.ndarray | None:
    if bias is None:
        return None
    bias = as_float_array(bias, "bias", owner, dtype=dtype)
    if bias.shape not in (out_shape[:1], out_shape):
        raise ValueError(f"{owner}: bias must have shape {out_shape[:1]} (tied) or {out_shape} (untied, "
                         f"one per output neuron), got {bias.shape}")
    return np.ascontiguousarray(bias)


def conv2d_backward(dout: Any, cache: ConvCache, input_grad: bool = True, *,
                    dout_of: Callable[[slice], np.ndarray] | None = None,
                    dz_into: Callable[[slice, np.ndarray, np.ndarray], None] | None = None,
                    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of ``conv2d_forward``: ``(dx, dweight, dbias)`` with the shapes of x, weight, bias.

    ``dout`` is the gradient of the forward's output (after the fused ReLU when ``relu=True``).
    Or ``dout=None`` and ``dout_of(s)``: that gradient for batch slice ``s`` (C-contiguous, of the
    output's dtype and slice shape, already validated), computed on the thread that then uses it,
    while it is in cache (a fused MaxPool2D's backward runs there); called once per slice.
    ``dz_into(s, d_t, bias_grad)``, beside ``dout_of``: what the im2col path then makes of it,
    written directly: dZ.T (O, n*OH*OW) of slice ``s`` into ``d_t``, the fused ReLU's derivative
    applied, and its row sums into ``bias_grad`` (O,), float64 (a fused MaxPool2D routes its
    gradient there, ``max_pool2d_grad_cm_into``); the other paths call ``dout_of``.
    ``dbias`` is None when there was no bias; ``dx`` is None with ``input_grad=False`` (not
    computed: a network's first layer never needs it).
    """
    g, backend, owner, groups = cache.geometry, cache.backend, cache.owner, cache.groups
    x_shape, weight, bias_shape = cache.x_shape, cache.weight, cache.bias_shape
    out_channels = weight.shape[0]
    direct = backend == "numba" and cache.cols is None and cache.x is not None and \
        _DEPTHWISE_DIRECT and groups == x_shape[1] == out_channels > 1
    if dout_of is None:
        dout = check_dout(dout, (x_shape[0], out_channels, g.oh, g.ow), weight.dtype, owner)
    elif backend != "numba" or direct:  # these paths take dout whole: one slice, the batch
        dout, dout_of = dout_of(slice(0, x_shape[0])), None
    w2 = weight.reshape(out_channels, -1)
    wt = _group_transpose(w2, groups)  # (C*KH*KW, O/G) per group, stacked: W.T of each group
    if direct:
        return _depthwise_backward(dout, cache, input_grad)
    if cache.transformed is not None:
        return _winograd_backward(dout, dout_of, cache, input_grad)
    if backend == "numba":
        n, plane = x_shape[0], g.oh * g.ow
        dout3 = None if dout_of is not None else np.ascontiguousarray(dout).reshape(n, out_channels, plane)
        y3 = cache.out.reshape(n, out_channels, plane) if cache.relu else None
        dx = np.empty(x_shape, dtype=weight.dtype) if input_grad else None
        slices, kept = cache.slices, cache.cols

        def block(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
            s = slices[i]
            cols = kept[i] if kept is not None else unfold_t(cache.x[s], g)
            d_t = np.empty((out_channels, (s.stop - s.start) * plane), dtype=weight.dtype)
            tied = np.empty(out_channels, dtype=np.float64)
            if dout_of is not None and dz_into is not None:
                dz_into(s, d_t, tied)
            else:
                d3 = dout3[s] if dout_of is None else dout_of(s).reshape(-1, out_channels, plane)
                _kernels.nchw_to_cm(d3, y3[s] if cache.relu else d3, cache.relu, d_t, tied)
            dw = _weight_grad(d_t, cols, groups)  # (O, C/G*KH*KW)
            if input_grad:
                fold_t(_grouped_matmul(wt, d_t, groups), g, dx[s])
            untied = None
            if bias_shape is not None and len(bias_shape) == 3:
                untied = d_t.reshape(out_channels, -1, plane).sum(axis=1)
            return dw, tied, untied

        parts = _threads.parallel_map(block, list(range(len(slices))))
        dweight = parts[0][0]
        for part in parts[1:]:
            dweight += part[0]
        dweight = dweight.reshape(weight.shape)
        if bias_shape is None:
            dbias = None
        elif len(bias_shape) == 1:
            dbias = sum(p[1] for p in parts).astype(weight.dtype)
        else:
            dbias = sum(p[2] for p in parts).reshape(bias_shape)
        return dx, dweight, dbias
    cols = cache.cols if cache.cols is not None else unfold(cache.x, g, 0.0, backend)
    if cache.relu:
        dout = np.where(cache.out > 0, dout, 0).astype(weight.dtype)
    d_rows = dout.transpose(0, 2, 3, 1).reshape(-1, out_channels)  # (N*OH*OW, O)
    dweight = _grouped_matmul(d_rows.T, _group_rows_t(cols.T, groups), groups).reshape(weight.shape)
    dx = fold(_grouped_matmul(wt, d_rows.T, groups).T, x_shape, g, backend) if input_grad else None
    if bias_shape is None:
        dbias = None
    elif len(bias_shape) == 1:
        dbias = dout.sum(axis=(0, 2, 3))
    else:
        dbias = dout.sum(axis=0)
    return dx, dweight, dbias


def _depthwise_backward(dout: np.ndarray, cache: ConvCache,
                        input_grad: bool) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``conv2d_backward`` of a depthwise convolution (the direct kernels), slice by slice."""
    g, weight, x, bias_shape = cache.geometry, cache.weight, cache.x, cache.bias_shape
    w3 = np.ascontiguousarray(weight[:, 0])
    dout = np.ascontiguousarray(dout)
    y = cache.out if cache.relu else dout
    dx = np.empty(x.shape, dtype=weight.dtype) if input_grad else None
    dx_view = dx if input_grad else np.empty((1, 1, 1, 1), dtype=weight.dtype)

    def block(s: slice) -> tuple[np.ndarray, np.ndarray]:
        dw = np.empty(w3.shape, dtype=np.float64)
        db = np.empty(w3.shape[0], dtype=np.float64)
        _kernels.depthwise_backward(dout[s], y[s], cache.relu, x[s], w3, g.sy, g.sx, g.dy, g.dx, g.top, g.left,
                                    input_grad, dx_view[s] if input_grad else dx_view, dw, db)
        return dw, db

    parts = _threads.parallel_map(block, cache.slices)
    dweight = sum(p[0] for p in parts).astype(weight.dtype).reshape(weight.shape)
    if bias_shape is None:
        dbias = None
    elif len(bias_shape) == 1:
        dbias = sum(p[1] for p in parts).astype(weight.dtype)
    else:
        masked = np.where(y > 0, dout, 0) if cache.relu else dout
        dbias = masked.sum(axis=0).astype(weight.dtype)
    return dx, dweight, dbias


def _winograd_backward(dout: np.ndarray | None, dout_of: Callable[[slice], np.ndarray] | None,
                       cache: ConvCache, input_grad: bool) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``conv2d_backward`` of a Winograd convolution, slice by slice (``winograd.backward``)."""
    g, weight, bias_shape, slices = cache.geometry, cache.weight, cache.bias_shape, cache.slices
    dx = np.empty(cache.x_shape, dtype=weight.dtype) if input_grad else None

    def block(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        s = slices[i]
        d = np.ascontiguousarray(dout[s]) if dout_of is None else dout_of(s)
        y = cache.out[s] if cache.relu else None
        v = cache.cols[i] if cache.cols is not None else winograd.transform_input(cache.x[s], g)
        du, tied = winograd.backward(d, y, v, cache.transformed, g, None if dx is None else dx[s])
        untied = None
        if bias_shape is not None and len(bias_shape) == 3:
            untied = (d if y is None else np.where(y > 0, d, 0)).sum(axis=0)
        return du, tied, untied

    parts = _threads.parallel_map(block, list(range(len(slices))))
    du = parts[0][0]
    for part in parts[1:]:
        du += part[0]
    dweight = winograd.weight_grad(du, weight.shape[2])
    if bias_shape is None:
        dbias = None
    elif len(bias_shape) == 1:
        dbias = sum(p[1] for p in parts).astype(weight.dtype)
    else:
        dbias = sum(p[2] for p in parts).astype(weight.dtype)
    return dx, dweight, dbias


def _group_transpose(w2: np.ndarray, groups: int) -> np.ndarray:
    """(O, K) -> (G*K, O/G): each group's block of W transposed, stacked (W.T when G == 1)."""
    if groups == 1:
        return w2.T
    o, k = w2.shape[0] // groups, w2.shape[1]
    return np.ascontiguousarray(w2.reshape(groups, o, k).transpose(0, 2, 1).reshape(groups * k, o))


def _group_rows_t(cols_t: np.ndarray, groups: int) -> np.ndarray:
    """(G*K, M) -> (G*M, K): each group's rows transposed, stacked, so that ``_grouped_matmul`` of
    dZ.T (G*r, M) with it gives each group's dW (r, K)."""
    if groups == 1:
        return cols_t.T
    k, m = cols_t.shape[0] // groups, cols_t.shape[1]
    return cols_t.reshape(groups, k, m).transpose(0, 2, 1).reshape(groups * m, k)


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


class MaxPoolCache(NamedTuple):
    """``PoolCache``'s fields for max pooling, plus the fused ReLU's."""

    x_shape: tuple[int, int, int, int]
    geometry: WindowGeometry
    backend: str
    owner: str
    argmax: np.ndarray
    sums: None
    scale: None
    dtype: np.dtype
    pooled: np.ndarray | None = None  # relu=True: the output, whose sign gates the gradient
    relu: bool = False


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


def _batch_slices(n: int) -> list[slice]:
    return _threads.split(n, _threads.get_num_threads())


def max_pool2d_buffers(x_shape: tuple[int, int, int, int], dtype: Any,
                       g: WindowGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``(out, argmax)`` (N, C, OH, OW), allocated, not written, for max-pooling an input of shape
    ``x_shape`` (N, C, H, W) with geometry ``g`` (``pool_geometry``) slice by slice with
    ``max_pool2d_into``."""
    n, c, height, width = x_shape
    out = np.empty((n, c, g.oh, g.ow), dtype=dtype)
    argmax = np.empty((n, c, g.oh, g.ow), dtype=np.int32 if height * width < 2**31 else np.int64)
    return out, argmax


def max_pool2d_into(x: np.ndarray, g: WindowGeometry, relu: bool, out: np.ndarray, argmax: np.ndarray) -> None:
    """The Numba max pool of validated, C-contiguous ``x`` (n, C, H, W) into ``out`` and ``argmax``
    (n, C, OH, OW), serially: one batch slice, from any thread (``max_pool2d_forward`` is the API)."""
    if _no_padding(g) and (g.kh, g.kw) == (2, 2):
        _kernels.max_pool_forward_2x2(x, g.sy, g.sx, relu, out, argmax)
    elif _no_padding(g):
        _kernels.max_pool_forward_valid(x, g.kh, g.kw, g.sy, g.sx, relu, out, argmax)
    else:
        _kernels.max_pool_forward(x, g.kh, g.kw, g.sy, g.sx, g.top, g.left, relu, out, argmax)


def max_pool2d_grad_into(dout: np.ndarray, argmax: np.ndarray, pooled: np.ndarray, relu: bool, g: WindowGeometry,
                         dx: np.ndarray) -> None:
    """``max_pool2d_backward``'s Numba kernel on one batch slice, serially: ``dx`` (n, C, H, W)
    written whole from C-contiguous ``dout`` (n, C, OH, OW); ``pooled`` is read only if ``relu``."""
    tiled = _no_padding(g) and (g.sy, g.sx) == (g.kh, g.kw)  # windows tile the image: no overlap
    kernel = _kernels.max_pool_backward_tiled if tiled else _kernels.max_pool_backward
    kernel(dout, argmax, pooled, relu, dx)


def max_pool2d_grad_cm_into(dout: np.ndarray, argmax: np.ndarray, pooled: np.ndarray | None, d_t: np.ndarray,
                            bias_grad: np.ndarray) -> None:
    """A max pool's backward on one batch slice, written as the gradient of the convolution before
    it in that convolution's backward layout (``conv2d_backward``'s ``dz_into``), serially:
    ``d_t`` (C, n*H*W) and ``bias_grad`` (C,), float64, from C-contiguous ``dout`` and ``argmax``
    (n, C, OH, OW). ``pooled``: the pool's output (n, C, OH, OW) when the convolution fused a ReLU
    (its derivative at a window's winner is ``pooled > 0``), else None. Any window, stride and
    padding: the winners are flat indices into each plane, and overlapping windows accumulate."""
    relu = pooled is not None
    _kernels.max_pool_backward_cm(dout, argmax, pooled if relu else dout, relu, d_t, bias_grad)


def max_pool2d_forward(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                       backend: str = "numba", owner: str = "max_pool2d", *,
                       relu: bool = False) -> tuple[np.ndarray, MaxPoolCache]:
    """Max over windows of each feature map (Eq. 8.24), any window and stride, overlaps allowed.

    Padding cells count as -inf. Ties: the gradient goes to the FIRST maximum in window scan order
    (row-major within the window), like ``numpy.argmax`` and the primer's ``MaxPoolingMap``.
    ``relu=True``: the pool of ReLU(x) (a fused ReLU -> MaxPool), computed as ReLU of the pool in
    the same pass; outputs and gradients are those of the two layers, ties included.
    ``x`` (N, C, H, W) -> (N, C, OH, OW).
    """
    check_choice(backend, "backend", BACKENDS, owner)
    x = np.ascontiguousarray(as_float_array(x, "x", owner, ndim=4))
    g = pool_geometry(x.shape[2], x.shape[3], kernel_size, stride, padding, owner)
    n, c = x.shape[:2]
    relu = bool(relu)
    if backend == "numba":
        out, argmax = max_pool2d_buffers(x.shape, x.dtype, g)

        _threads.parallel_map(lambda s: max_pool2d_into(x[s], g, relu, out[s], argmax[s]), _batch_slices(n))
    else:
        cols = unfold(_planes_as_channels(x), g, -np.inf, "numpy")  # (N*C*OH*OW, KH*KW)
        argmax = cols.argmax(axis=1)  # window-local index of the first maximum
        out = np.take_along_axis(cols, argmax[:, None], axis=1).reshape(n, c, g.oh, g.ow)
        if relu:
            out = np.maximum(out, 0, dtype=out.dtype)
    return out, MaxPoolCache(x.shape, g, backend, owner, argmax, None, None, x.dtype, out if relu else None, relu)


def max_pool2d_backward(dout: Any, cache: MaxPoolCache) -> np.ndarray:
    """Route each output gradient to the input that won its window; overlapping windows accumulate.
    After a fused ReLU (``relu=True``) only where the pooled value is > 0."""
    x_shape, g, backend, owner, argmax = cache[:5]
    n, c, height, width = x_shape
    dout = np.ascontiguousarray(check_dout(dout, (n, c, g.oh, g.ow), cache.dtype, owner))
    relu = cache.relu
    pooled = cache.pooled if relu else dout
    if backend == "numba":
        dx = np.empty(x_shape, dtype=cache.dtype)
        _threads.parallel_map(lambda s: max_pool2d_grad_into(dout[s], argmax[s], pooled[s], relu, g, dx[s]),
                              _batch_slices(n))
        return dx
    if relu:
        dout = np.where(pooled > 0, dout, 0).astype(cache.dtype)
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
        _threads.parallel_map(lambda s: _kernels.sum_pool_forward(x[s], g.kh, g.kw, g.sy, g.sx, g.top, g.left,
                                                                  sums[s]), _batch_slices(n))
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
        _threads.parallel_map(lambda s: _kernels.sum_pool_backward(dsums[s], g.kh, g.kw, g.sy, g.sx, g.top, g.left,
                                                                   dx[s]), _batch_slices(x_shape[0]))
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


# Element-wise passes over big arrays run on the pool in flat slices (below this many elements, one
# thread: a hand-off costs more than the pass).
_PARALLEL_ELEMENTS = 1 << 16


def _flat_slices(size: int) -> list[slice]:
    threads = _threads.get_num_threads()
    return _threads.split(size, threads if size >= _PARALLEL_ELEMENTS else 1)


def relu(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, dtype=x.dtype)
    flat_x, flat_out = np.ascontiguousarray(x).reshape(-1), out.reshape(-1)

    def work(s: slice) -> None:
        np.maximum(flat_x[s], 0, out=flat_out[s], dtype=x.dtype)

    _threads.parallel_map(work, _flat_slices(flat_x.size))
    return out


def relu_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    if (dout.dtype == y.dtype and dout.dtype.char in "fd" and dout.shape == y.shape
            and dout.flags.c_contiguous and y.flags.c_contiguous):
        dx = np.empty_like(dout)
        flat_d, flat_y, flat_dx = dout.reshape(-1), y.reshape(-1), dx.reshape(-1)

        def work(s: slice) -> None:
            _kernels.relu_backward(flat_d[s], flat_y[s], flat_dx[s])  # one pass, no mask

        _threads.parallel_map(work, _flat_slices(flat_dx.size))
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
