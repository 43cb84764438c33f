"""Batch normalisation: the functional pair and its Numba kernels.

``batch_norm2d_forward`` validates its arguments and returns ``(y, cache, mean, var)``;
``batch_norm2d_backward(dout, cache)`` the gradients. ``batch_norm2d`` is the same forward on
checked input (a layer's path, after its boundary check).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numba as nb
import numpy as np

from . import threads as _threads
from .arrays import prefetch, thread_slices
from .shapes import as_float_array, check_dout

# --------------------------------------------------------------------------- batch normalisation
# Serial (nogil) kernels over a range of channels [c_lo, c_hi): the engine's pool runs the ranges
# side by side (``_over_channels``), so nothing here asks for Numba's parallel pool. Each sample's
# map of a channel is contiguous (H*W values) and is read as a 1-D slice of the flat array (a
# slice costs a few instructions; ``x[n, c].reshape(H*W)``, which this replaces, cost about as
# much as summing 64 values, so 8x8 maps ran at a quarter of the speed of 32x32 ones). The sums run
# over it as one flat loop, in float64 whatever the array dtype (a float32 sum over N*H*W values
# loses digits that PyTorch's Welford keeps); ``reassoc`` lets those sums split over vector lanes,
# which is no less accurate. Not ``nnan``/``ninf``: a NaN must come out as one, for the training
# guard to see it. The backward pass never stores xhat: it is recomputed from x, mean and invstd,
# so one (N, C, H, W) temporary is saved. In training, a channel's statistics, its affine map and
# its output are made in one visit while the channel is in cache (one hand-off to the pool, not
# two). Passes over memory: forward 3 (the mean, the variance about it, the output), backward 2.
# A ReLU after the normalisation can run inside both (``relu``: a fused BatchNorm2D -> ReLU); its
# derivative in the backward is the sign of ``x * scale + shift`` recomputed from x, which both
# passes read anyway, with the forward's own float scale and shift and the same expression
# (``_affine``), so the very same sign as the output's: not the output read twice more (one
# thread, 64x16x32x32 float32: 0.93 ms with the output read, 0.67 without a ReLU). The first pass
# over a channel, which reads it from memory, asks for the next sample's map while it sums this
# one (``arrays.prefetch``): a channel's maps are far apart, a map of 16x16 values is one page or
# less, and the CPU's prefetcher only starts on a page after its first misses. Measured
# 2026-12-06, Intel Xeon, one thread, arrays out of every cache, backward ns a value, without /
# with: 64x16x32x32 1.48 / 0.99 (with the ReLU 1.75 / 1.03), 64x32x16x16 1.38 / 0.96; at 8x8
# (64 values a map) the hints cost more than they save (1.68 / 1.70, 1.72 / 2.04), so maps below
# ``_PREFETCH_MIN_PLANE`` values go without.
_PREFETCH_MIN_PLANE = 256


@nb.njit(cache=True, nogil=True, inline="always")
def _fetch_next(flat, start, samples, n, channels, plane):
    """Prefetch sample n + 1's map of the channel whose sample-n map starts at ``start``."""
    if plane >= _PREFETCH_MIN_PLANE and n + 1 < samples:
        prefetch(flat, start + channels * plane, plane)


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _channel_moments(flat, samples, c, channels, plane):
    """Mean and biased variance of channel ``c`` of a flat (N, C, H*W) array; two passes (the
    squares about the mean: no cancellation)."""
    total = 0.0
    for n in range(samples):
        start = (n * channels + c) * plane
        _fetch_next(flat, start, samples, n, channels, plane)
        values = flat[start:start + plane]
        for i in range(plane):
            total += values[i]
    m = total / (samples * plane)
    squares = 0.0
    for n in range(samples):
        start = (n * channels + c) * plane
        values = flat[start:start + plane]
        for i in range(plane):
            d = values[i] - m
            squares += d * d
    return m, squares / (samples * plane)


@nb.njit(cache=True, nogil=True)
def _channel_affine(m, v, eps, weight, bias):
    """(scale, shift) of the normalisation and affine map, float64, rounded as ``batch_norm2d``
    rounds them in NumPy for fixed statistics (no fused multiply-add here)."""
    scale = 1.0 / np.sqrt(v + eps) * weight
    return scale, bias - m * scale


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _affine(v, a, b):
    """``v * a + b``, the normalisation and affine map of one value (a fused multiply-add where the
    machine has one): the forward's output and the backward's ReLU mask both come from here, so
    that they round alike."""
    return v * a + b


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def _channel_apply(flat, out, samples, c, channels, plane, a, b, relu, skip):
    """``out = flat * a + b`` on channel ``c`` of flat (N, C, H*W) arrays, plus ``skip`` (of
    out's size; empty: none) after the output is rounded, then ReLU with ``relu``: the very
    values of the unfused layer, a separate add and the ReLU after it."""
    zero = out.dtype.type(0)
    joined = skip.size > 0
    for n in range(samples):
        start = (n * channels + c) * plane
        src = flat[start:start + plane]
        dst = out[start:start + plane]
        if joined:
            other = skip[start:start + plane]
            if relu:
                for i in range(plane):
                    v = _affine(src[i], a, b) + other[i]
                    dst[i] = v if v > zero else zero
            else:
                for i in range(plane):
                    dst[i] = _affine(src[i], a, b) + other[i]
        elif relu:
            for i in range(plane):
                v = _affine(src[i], a, b)
                dst[i] = v if v > zero else zero
        else:
            for i in range(plane):
                dst[i] = _affine(src[i], a, b)


@nb.njit(cache=True, nogil=True)
def batch_norm_train(x, c_lo, c_hi, weight, bias, eps, relu, skip, mean, var, out):
    """Training's forward for channels c_lo..c_hi-1 of x (N, C, H, W): each channel's batch
    mean and biased variance (written to mean, var: (C,) float64), then
    ``out = (x - mean) / sqrt(var + eps) * weight + bias`` (plus ``skip``, of x's shape, unless
    it is empty; then ReLU of it with ``relu``) while the channel is in cache. weight, bias: (C,)
    float64 (ones and zeros without the affine map)."""
    samples, channels, plane = x.shape[0], x.shape[1], x.shape[2] * x.shape[3]
    flat, flat_out, flat_skip = x.reshape(x.size), out.reshape(out.size), skip.reshape(skip.size)
    for c in range(c_lo, c_hi):
        m, v = _channel_moments(flat, samples, c, channels, plane)
        mean[c] = m
        var[c] = v
        scale, shift = _channel_affine(m, v, eps, weight[c], bias[c])
        _channel_apply(flat, flat_out, samples, c, channels, plane, out.dtype.type(scale),
                       out.dtype.type(shift), relu, flat_skip)


@nb.njit(cache=True, nogil=True)
def batch_norm_apply(x, c_lo, c_hi, scale, shift, relu, skip, out):
    """``out[n, c] = x[n, c] * scale[c] + shift[c]`` for channels c_lo..c_hi-1 (fixed statistics:
    the normalisation and the affine map in one pass), plus ``skip`` (of x's shape) unless it is
    empty; with ``relu``, ReLU of it in the same pass. scale, shift: (C,) in x's dtype."""
    samples, channels, plane = x.shape[0], x.shape[1], x.shape[2] * x.shape[3]
    flat, flat_out, flat_skip = x.reshape(x.size), out.reshape(out.size), skip.reshape(skip.size)
    for c in range(c_lo, c_hi):
        _channel_apply(flat, flat_out, samples, c, channels, plane, scale[c], shift[c], relu,
                       flat_skip)


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def batch_norm_backward(dout, x, relu, scale, shift, y, c_lo, c_hi, mean, invstd, gamma,
                        batch_stats, dx, dgamma, dbeta):
    """Fused batch-norm backward over (N, C, H, W) for channels c_lo..c_hi-1, with
    xhat = (x - mean) * invstd recomputed.

    dbeta[c] = sum dout, dgamma[c] = sum dout * xhat (written, float64 (C,)). With batch
    statistics (training) dx = gamma * invstd / M * (M * dout - dbeta - xhat * dgamma), M = N*H*W;
    with fixed statistics (eval) dx = gamma * invstd * dout. dx (written) has dout's shape.
    With ``relu`` (a fused ReLU after the normalisation), dout is first taken only where the
    output was > 0, ReLU's derivative (it is read twice, so masked twice, never stored): where
    ``y`` (the forward's output) is given, from its sign (a shortcut was added before the ReLU);
    where ``y`` is empty, from the sign of ``x * scale + shift`` recomputed (scale, shift: (C,)
    in x's dtype, the values the forward used).
    """
    samples, channels, plane = x.shape[0], x.shape[1], x.shape[2] * x.shape[3]
    count = samples * plane
    zero = dout.dtype.type(0)
    flat_dout, flat_x, flat_dx = dout.reshape(dout.size), x.reshape(x.size), dx.reshape(dx.size)
    flat_y = y.reshape(y.size)
    from_y = relu and y.size > 0
    for c in range(c_lo, c_hi):
        m = mean[c]
        s = invstd[c]
        ra, rb = scale[c], shift[c]
        sum_dy = 0.0
        sum_dy_x = 0.0  # sum of dout * (x - mean); times invstd it is dgamma
        for n in range(samples):
            start = (n * channels + c) * plane
            _fetch_next(flat_dout, start, samples, n, channels, plane)
            _fetch_next(flat_x, start, samples, n, channels, plane)
            g = flat_dout[start:start + plane]
            v = flat_x[start:start + plane]
            if from_y:
                _fetch_next(flat_y, start, samples, n, channels, plane)
                o = flat_y[start:start + plane]
                for i in range(plane):
                    gi = g[i] if o[i] > zero else zero
                    sum_dy += gi
                    sum_dy_x += gi * (v[i] - m)
            elif relu:
                for i in range(plane):
                    gi = g[i] if _affine(v[i], ra, rb) > zero else zero
                    sum_dy += gi
                    sum_dy_x += gi * (v[i] - m)
            else:
                for i in range(plane):
                    sum_dy += g[i]
                    sum_dy_x += g[i] * (v[i] - m)
        sum_dy_xhat = sum_dy_x * s
        dbeta[c] = sum_dy
        dgamma[c] = sum_dy_xhat
        k = gamma[c] * s
        if batch_stats:
            a = sum_dy / count
            b = sum_dy_xhat / count * s  # xhat * b = (x - mean) * (s * b)
            # in the data's dtype: k * (dout - a - (x - m) * b), with the constants rounded once
            kk, ka, kb, km = (dx.dtype.type(k), dx.dtype.type(k * a), dx.dtype.type(k * b),
                              dx.dtype.type(m))
            for n in range(samples):
                start = (n * channels + c) * plane
                g = flat_dout[start:start + plane]
                v = flat_x[start:start + plane]
                out = flat_dx[start:start + plane]
                if from_y:
                    o = flat_y[start:start + plane]
                    for i in range(plane):
                        gi = g[i] if o[i] > zero else zero
                        out[i] = kk * gi - ka - (v[i] - km) * kb
                elif relu:
                    for i in range(plane):
                        gi = g[i] if _affine(v[i], ra, rb) > zero else zero
                        out[i] = kk * gi - ka - (v[i] - km) * kb
                else:
                    for i in range(plane):
                        out[i] = kk * g[i] - ka - (v[i] - km) * kb
        else:
            kk = dx.dtype.type(k)
            for n in range(samples):
                start = (n * channels + c) * plane
                g = flat_dout[start:start + plane]
                v = flat_x[start:start + plane]
                out = flat_dx[start:start + plane]
                if from_y:
                    o = flat_y[start:start + plane]
                    for i in range(plane):
                        out[i] = kk * g[i] if o[i] > zero else zero
                elif relu:
                    for i in range(plane):
                        out[i] = kk * g[i] if _affine(v[i], ra, rb) > zero else zero
                else:
                    for i in range(plane):
                        out[i] = kk * g[i]


# "no skip" and "no output to mask by", per dtype: empty, four dimensions, so that one compiled
# kernel a dtype serves both
_NO_SKIP = {np.dtype(t): np.empty((0, 0, 0, 0), dtype=t) for t in (np.float32, np.float64)}


def _over_channels(work: Any, channels: int) -> None:
    """``work(c_lo, c_hi)`` on ranges of the channels, side by side on the engine's pool."""
    _threads.parallel_map(lambda s: work(s.start, s.stop), thread_slices(channels))


# --------------------------------------------------------------------------- functional pair


class BatchNormCache(NamedTuple):
    x: np.ndarray  # the (C-contiguous) input: xhat is recomputed from it, never stored
    mean: np.ndarray  # (C,) float64: the statistics used, batch or running
    invstd: np.ndarray  # (C,) float64: 1 / sqrt(var + eps)
    gamma: np.ndarray | None  # (C,) weight, None without affine
    batch_stats: bool  # True: mean and var came from x, so they depend on it (training)
    owner: str
    # relu=True: the forward's (scale, shift), (C,) in x's dtype: the sign of x * scale + shift
    # is ReLU's derivative
    relu_affine: tuple[np.ndarray, np.ndarray] | None = None
    # relu=True with a skip added before it: the output, whose sign is ReLU's derivative
    relu_out: np.ndarray | None = None


def batch_norm2d_forward(
    x: Any,
    weight: Any = None,
    bias: Any = None,
    mean: Any = None,
    var: Any = None,
    eps: float = 1e-5,
    owner: str = "batch_norm2d",
) -> tuple[np.ndarray, BatchNormCache, np.ndarray, np.ndarray]:
    """Batch normalisation of (N, C, H, W) per channel:
    ``y = (x - mean) / sqrt(var + eps) * weight + bias``.

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
        raise ValueError(
            f"{owner}: give both mean and var (fixed statistics) or neither (batch statistics)"
        )
    if mean is not None:
        mean = _channel_vector(mean, "mean", c, np.float64, owner)
        var = _channel_vector(var, "var", c, np.float64, owner)
        if (var < 0).any():
            raise ValueError(f"{owner}: var must be >= 0, got min {var.min()}")
    return batch_norm2d(x, weight, bias, mean, var, eps, owner)


def batch_norm2d(
    x: np.ndarray,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    mean: np.ndarray | None,
    var: np.ndarray | None,
    eps: float,
    owner: str = "batch_norm2d",
    relu: bool = False,
    skip: np.ndarray | None = None,
) -> tuple[np.ndarray, BatchNormCache, np.ndarray, np.ndarray]:
    """``batch_norm2d_forward`` of checked input: ``x`` (N, C, H, W) C-contiguous float;
    ``weight``/``bias`` None or (C,) in x's dtype; ``mean``/``var`` both None (batch statistics)
    or both (C,) float64 with var >= 0 (a layer's running statistics). ``skip`` (x's shape and
    dtype, C-contiguous): added to the normalisation in its output pass (a Residual's shortcut
    joined where its body ends in this layer). ``relu=True``: the output is ReLU of that, in the
    same pass (a fused BatchNorm2D -> ReLU, or a Residual -> ReLU); the backward then takes the
    gradient after the ReLU (and, with ``skip``, returns the normalisation's gradient only: the
    shortcut's is the caller's)."""
    c = x.shape[1]
    batch_stats = mean is None
    out = np.empty_like(x)
    joined = _NO_SKIP[x.dtype] if skip is None else skip
    if batch_stats:
        mean = np.empty(c)
        var = np.empty(c)
        w = np.ones(c) if weight is None else weight.astype(np.float64)
        b = np.zeros(c) if bias is None else bias.astype(np.float64)
        _over_channels(
            lambda lo, hi: batch_norm_train(x, lo, hi, w, b, float(eps), relu, joined, mean, var,
                                            out), c)
        invstd = 1.0 / np.sqrt(var + eps)
        # the kernel's own (``_channel_affine``), the same float64 operations in the same order
        scale = invstd * w
        scale, shift = scale.astype(x.dtype), (b - mean * scale).astype(x.dtype)
    else:
        invstd = 1.0 / np.sqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        shift = -mean * scale if bias is None else bias - mean * scale
        scale, shift = scale.astype(x.dtype), shift.astype(x.dtype)
        _over_channels(lambda lo, hi: batch_norm_apply(x, lo, hi, scale, shift, relu, joined,
                                                       out), c)
    cache = BatchNormCache(x, mean, invstd, weight, batch_stats, owner,
                           (scale, shift) if relu and skip is None else None,
                           out if relu and skip is not None else None)
    return out, cache, mean, var


def batch_norm2d_backward(
    dout: Any, cache: BatchNormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``batch_norm2d_forward``: ``(dx, dweight, dbias)``, all in x's dtype.

    The fused closed form, one kernel, no temporaries of x's size but dx: with M = N*H*W,
    xhat = (x - mean) * invstd, dbias = sum(dout), dweight = sum(dout * xhat) and, with batch
    statistics, dx = weight * invstd / M * (M * dout - dbias - xhat * dweight); with fixed
    statistics dx = weight * invstd * dout. Without affine, weight is 1 (dweight, dbias are still
    returned; the layer drops them).
    """
    x, mean, invstd, gamma, batch_stats, owner, relu_affine, relu_out = cache
    dout = np.ascontiguousarray(check_dout(dout, x.shape, x.dtype, owner))
    c = x.shape[1]
    dx = np.empty_like(x)
    dgamma = np.empty(c)
    dbeta = np.empty(c)
    g = np.ones(c) if gamma is None else gamma.astype(np.float64)
    relu = relu_affine is not None or relu_out is not None
    scale, shift = (relu_affine if relu_affine is not None
                    else (np.zeros(c, x.dtype), np.zeros(c, x.dtype)))
    y = _NO_SKIP[x.dtype] if relu_out is None else relu_out
    _over_channels(lambda lo, hi: batch_norm_backward(dout, x, relu, scale, shift, y, lo, hi,
                                                      mean, invstd, g, batch_stats, dx, dgamma,
                                                      dbeta), c)
    return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)


def _channel_vector(
    value: Any, name: str, channels: int, dtype: Any, owner: str
) -> np.ndarray | None:
    if value is None:
        return None
    value = as_float_array(value, name, owner, ndim=1, dtype=dtype)
    if value.shape != (channels,):
        raise ValueError(
            f"{owner}: {name} must have shape ({channels},), one per channel of x, "
            f"got {value.shape}"
        )
    return value
