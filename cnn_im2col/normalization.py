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
# with: 64x16x32x32 1.48 / 0.99 (with the ReLU 1.75 / 1.03), 64x32x16x16 1.38 / 0.96; runs of 64
# values (an 8x8 map alone) cost more with the hints than without (1.68 / 1.70, 1.72 / 2.04), so
# runs below ``_PREFETCH_MIN_PLANE`` values go without.
_PREFETCH_MIN_PLANE = 256
# Channels a kernel visits together (``block_channels``): a sample's maps of a block of channels
# lie side by side, one run of at least ``_BLOCK_BYTES`` where one map is shorter, visited sample by
# sample and, within a sample, channel by channel. Channel by channel alone, an 8x8 map is a run
# of 256 bytes, the next sample's 16 KiB further at 64 channels, each on a page of its own:
# ResNet-20's 8x8 batch norms took 4.3 ns a value (thread time) in its training step's backward
# against 1.5 at 32x32. Each channel's sums still add its values in the same order, sample by
# sample, so a block gives the bits of one channel at a time. Measured 2026-12-06, Intel Xeon, 2
# threads, arrays out of cache, with the ReLU, us, one channel / blocks of 4 KiB / 8 / 16 / 64:
# 64x64x8x8 backward 767-818 / 512-529 / 526-530 / 496-521 / 509-545, forward 264-284 / 222-235
# / 231-233 / 217-232 / 222-238; 64x32x16x16 backward 791-947 / 745-746 / 653-749 / 800-973 /
# 788-811 (the host's noise). ResNet-20's training step, alternated processes: 0.97x.
_BLOCK_BYTES = 4096


def block_channels(plane: int, itemsize: int) -> int:
    """The channels a kernel takes together (``_BLOCK_BYTES``) for maps of ``plane`` values."""
    return max(1, -(-_BLOCK_BYTES // (plane * itemsize)))


@nb.njit(cache=True, nogil=True, inline="always")
def _fetch_next(flat, start, samples, n, channels, plane, run):
    """Prefetch sample n + 1's ``run`` values from where sample n's start, at ``start`` (its maps
    of a block of channels), for runs of ``_PREFETCH_MIN_PLANE`` values and more."""
    if run >= _PREFETCH_MIN_PLANE and n + 1 < samples:
        prefetch(flat, start + channels * plane, run)


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _block_moments(flat, samples, c0, k, channels, plane, mean, var):
    """Mean and biased variance of channels c0..c0+k-1 of a flat (N, C, H*W) array, written to
    ``mean`` and ``var`` (float64 (C,)); two passes (the squares about the mean: no
    cancellation)."""
    for j in range(k):
        mean[c0 + j] = 0.0
        var[c0 + j] = 0.0
    for n in range(samples):
        start = (n * channels + c0) * plane
        _fetch_next(flat, start, samples, n, channels, plane, k * plane)
        for j in range(k):
            values = flat[start + j * plane:start + (j + 1) * plane]
            total = mean[c0 + j]
            for i in range(plane):
                total += values[i]
            mean[c0 + j] = total
    for j in range(k):
        mean[c0 + j] = mean[c0 + j] / (samples * plane)
    for n in range(samples):
        start = (n * channels + c0) * plane
        for j in range(k):
            values = flat[start + j * plane:start + (j + 1) * plane]
            m = mean[c0 + j]
            squares = var[c0 + j]
            for i in range(plane):
                d = values[i] - m
                squares += d * d
            var[c0 + j] = squares
    for j in range(k):
        var[c0 + j] = var[c0 + j] / (samples * plane)


@nb.njit(cache=True, nogil=True)
def _channel_affine(m, invstd, weight, bias):
    """(scale, shift) of the normalisation and affine map from the mean and 1 / sqrt(var + eps),
    float64, rounded as ``batch_norm2d`` rounds them in NumPy for fixed statistics (no fused
    multiply-add here)."""
    scale = invstd * weight
    return scale, bias - m * scale


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _affine(v, a, b):
    """``v * a + b``, the normalisation and affine map of one value (a fused multiply-add where the
    machine has one): the forward's output and the backward's ReLU mask both come from here, so
    that they round alike."""
    return v * a + b


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def _block_apply(flat, out, samples, c0, k, channels, plane, a, b, relu, skip):
    """``out = flat * a[c] + b[c]`` on channels c0..c0+k-1 of flat (N, C, H*W) arrays (a, b: (C,)
    in out's dtype), plus ``skip`` (of out's size; empty: none) after the output is rounded, then
    ReLU with ``relu``: the very values of the unfused layer, a separate add and the ReLU after
    it."""
    zero = out.dtype.type(0)
    joined = skip.size > 0
    for n in range(samples):
        for j in range(k):
            start = (n * channels + c0 + j) * plane
            aj, bj = a[c0 + j], b[c0 + j]
            src = flat[start:start + plane]
            dst = out[start:start + plane]
            if joined:
                other = skip[start:start + plane]
                if relu:
                    for i in range(plane):
                        v = _affine(src[i], aj, bj) + other[i]
                        dst[i] = v if v > zero else zero
                else:
                    for i in range(plane):
                        dst[i] = _affine(src[i], aj, bj) + other[i]
            elif relu:
                for i in range(plane):
                    v = _affine(src[i], aj, bj)
                    dst[i] = v if v > zero else zero
            else:
                for i in range(plane):
                    dst[i] = _affine(src[i], aj, bj)


@nb.njit(cache=True, nogil=True)
def batch_norm_train(x, c_lo, c_hi, block, weight, bias, eps, relu, skip, mean, var, invstd, a,
                     b, out):
    """Training's forward for channels c_lo..c_hi-1 of x (N, C, H, W), ``block`` channels at a
    time: their batch mean and biased variance (written to mean, var: (C,) float64), then
    ``out = (x - mean) / sqrt(var + eps) * weight + bias`` (plus ``skip``, of x's shape, unless
    it is empty; then ReLU of it with ``relu``) while the block is in cache. weight, bias: (C,)
    float64 (ones and zeros without the affine map). Also written, for the backward: invstd =
    1 / sqrt(var + eps) (C,) float64, and the map's scale and shift ``a``, ``b`` (C,) in out's
    dtype (in NumPy after the kernel, these cost 20-25 us a layer of ResNet-20's step, cold)."""
    samples, channels, plane = x.shape[0], x.shape[1], x.shape[2] * x.shape[3]
    flat, flat_out, flat_skip = x.reshape(x.size), out.reshape(out.size), skip.reshape(skip.size)
    for c0 in range(c_lo, c_hi, block):
        k = min(block, c_hi - c0)
        _block_moments(flat, samples, c0, k, channels, plane, mean, var)
        for c in range(c0, c0 + k):
            invstd[c] = 1.0 / np.sqrt(var[c] + eps)
            scale, shift = _channel_affine(mean[c], invstd[c], weight[c], bias[c])
            a[c], b[c] = out.dtype.type(scale), out.dtype.type(shift)
        _block_apply(flat, flat_out, samples, c0, k, channels, plane, a, b, relu, flat_skip)


@nb.njit(cache=True, nogil=True)
def batch_norm_apply(x, c_lo, c_hi, block, scale, shift, relu, skip, out):
    """``out[n, c] = x[n, c] * scale[c] + shift[c]`` for channels c_lo..c_hi-1, ``block`` at a
    time (fixed statistics: the normalisation and the affine map in one pass), plus ``skip`` (of
    x's shape) unless it is empty; with ``relu``, ReLU of it in the same pass. scale, shift: (C,)
    in x's dtype."""
    samples, channels, plane = x.shape[0], x.shape[1], x.shape[2] * x.shape[3]
    flat, flat_out, flat_skip = x.reshape(x.size), out.reshape(out.size), skip.reshape(skip.size)
    for c0 in range(c_lo, c_hi, block):
        _block_apply(flat, flat_out, samples, c0, min(block, c_hi - c0), channels, plane, scale,
                     shift, relu, flat_skip)


# ReLU's derivative applied to one value of dout (``g``), a gate for each way of knowing where the
# output was > 0: ``_pass`` (no ReLU), ``_gate_by_affine`` (the sign of ``v * scale + shift``
# recomputed from x's value v), ``_gate_by_output`` (the sign of the forward's output, o). The
# backward's body takes its gate as an argument, and one kernel a gate binds it (the pattern of
# the Winograd transforms' tile size), so that each compiled kernel holds one loop a pass. With
# the three loops side by side in one kernel, as they were, LLVM compiled every one of them
# worse. One thread, warm caches, float32, us, before / after, no ReLU / gated by affine / by
# output: 64x64x8x8 290 / 154, 309 / 171, 427 / 223; 64x32x16x16 393 / 322, 422 / 367, 534 /
# 471; 64x16x32x32 (memory-bound) 707 / 685, 772 / 790, 987 / 992. The same bits. Measured
# 2026-12-06, Intel Xeon (AVX-512).
@nb.njit(cache=True, nogil=True, inline="always")
def _pass(g, v, o, ra, rb, zero):
    return g


@nb.njit(cache=True, nogil=True, inline="always")
def _gate_by_affine(g, v, o, ra, rb, zero):
    return g if _affine(v, ra, rb) > zero else zero


@nb.njit(cache=True, nogil=True, inline="always")
def _gate_by_output(g, v, o, ra, rb, zero):
    return g if o > zero else zero


@nb.njit(cache=True, nogil=True, inline="always")
def _backward_sums(gate, flat_dout, flat_x, flat_y, fetch_y, scale, shift, samples, c0, k,
                   channels, plane, mean, sum_dy, sum_dy_x):
    """Add, for channels c0..c0+k-1 of flat (N, C, H*W) arrays, the gated dout's sum to
    ``sum_dy[c]`` and its sum times (x - mean[c]) to ``sum_dy_x[c]`` (float64, sample by sample).
    ``flat_y``: the output for ``_gate_by_output`` (``fetch_y`` True), any array of x's size for
    the others (unread)."""
    zero = flat_dout.dtype.type(0)
    for n in range(samples):
        run = (n * channels + c0) * plane
        _fetch_next(flat_dout, run, samples, n, channels, plane, k * plane)
        _fetch_next(flat_x, run, samples, n, channels, plane, k * plane)
        if fetch_y:
            _fetch_next(flat_y, run, samples, n, channels, plane, k * plane)
        for c in range(c0, c0 + k):
            start = (n * channels + c) * plane
            g = flat_dout[start:start + plane]
            v = flat_x[start:start + plane]
            o = flat_y[start:start + plane]
            m, ra, rb = mean[c], scale[c], shift[c]
            total, total_x = sum_dy[c], sum_dy_x[c]
            for i in range(plane):
                gi = gate(g[i], v[i], o[i], ra, rb, zero)
                total += gi
                total_x += gi * (v[i] - m)
            sum_dy[c], sum_dy_x[c] = total, total_x


@nb.njit(cache=True, nogil=True, inline="always")
def _backward_dx(gate, flat_dout, flat_x, flat_y, scale, shift, samples, c0, k, channels, plane,
                 kk, ka, kb, km, batch_stats, flat_dx):
    """dx for channels c0..c0+k-1: ``kk[c] * g - ka[c] - (x - km[c]) * kb[c]`` of the gated dout
    g with batch statistics, ``kk[c] * g`` with fixed ones (constants (C,) in dx's dtype)."""
    zero = flat_dout.dtype.type(0)
    for n in range(samples):
        for c in range(c0, c0 + k):
            start = (n * channels + c) * plane
            g = flat_dout[start:start + plane]
            v = flat_x[start:start + plane]
            o = flat_y[start:start + plane]
            out = flat_dx[start:start + plane]
            ra, rb, k1 = scale[c], shift[c], kk[c]
            if batch_stats:
                k2, k3, k4 = ka[c], kb[c], km[c]
                for i in range(plane):
                    out[i] = k1 * gate(g[i], v[i], o[i], ra, rb, zero) - k2 - (v[i] - k4) * k3
            else:
                for i in range(plane):
                    out[i] = k1 * gate(g[i], v[i], o[i], ra, rb, zero)


@nb.njit(cache=True, nogil=True, inline="always")
def _batch_norm_backward(gate, dout, x, scale, shift, y, c_lo, c_hi, block, mean, invstd, gamma,
                         batch_stats, dx, dgamma, dbeta):
    """Fused batch-norm backward over (N, C, H, W) for channels c_lo..c_hi-1, ``block`` at a
    time, with xhat = (x - mean) * invstd recomputed; ``gate`` one of the three above.

    dbeta[c] = sum dout, dgamma[c] = sum dout * xhat (written, float64 (C,)). With batch
    statistics (training) dx = gamma * invstd / M * (M * dout - dbeta - xhat * dgamma), M = N*H*W;
    with fixed statistics (eval) dx = gamma * invstd * dout. dx (written) has dout's shape.
    With a fused ReLU after the normalisation, dout is first taken only where the output was > 0,
    ReLU's derivative (it is read twice, so gated twice, never stored): ``_gate_by_output`` from
    the sign of ``y``, the forward's output (a shortcut was added before the ReLU);
    ``_gate_by_affine`` from the sign of ``x * scale + shift`` recomputed (scale, shift: (C,) in
    x's dtype, the values the forward used). ``y`` is empty but for ``_gate_by_output``.
    """
    samples, channels, plane = x.shape[0], x.shape[1], x.shape[2] * x.shape[3]
    count = samples * plane
    flat_dout, flat_x, flat_dx = dout.reshape(dout.size), x.reshape(x.size), dx.reshape(dx.size)
    from_y = y.size > 0
    flat_y = y.reshape(y.size) if from_y else flat_x  # a gate reads it only when it is y
    sums_x = np.empty(channels)  # sum of dout * (x - mean); times invstd it is dgamma
    kk, ka = np.empty(channels, dx.dtype), np.empty(channels, dx.dtype)
    kb, km = np.empty(channels, dx.dtype), np.empty(channels, dx.dtype)
    for c0 in range(c_lo, c_hi, block):
        k = min(block, c_hi - c0)
        for c in range(c0, c0 + k):
            dbeta[c] = 0.0
            sums_x[c] = 0.0
        _backward_sums(gate, flat_dout, flat_x, flat_y, from_y, scale, shift, samples, c0, k,
                       channels, plane, mean, dbeta, sums_x)
        for c in range(c0, c0 + k):
            s = invstd[c]
            sum_dy_xhat = sums_x[c] * s
            dgamma[c] = sum_dy_xhat
            gk = gamma[c] * s
            # in the data's dtype: k * (dout - a - (x - m) * b), with the constants rounded once
            # (xhat * b = (x - mean) * (s * b))
            kk[c] = dx.dtype.type(gk)
            ka[c] = dx.dtype.type(gk * (dbeta[c] / count))
            kb[c] = dx.dtype.type(gk * (sum_dy_xhat / count * s))
            km[c] = dx.dtype.type(mean[c])
        _backward_dx(gate, flat_dout, flat_x, flat_y, scale, shift, samples, c0, k, channels,
                     plane, kk, ka, kb, km, batch_stats, flat_dx)


# ``_batch_norm_backward`` compiled once a gate
@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def batch_norm_backward(dout, x, scale, shift, y, c_lo, c_hi, block, mean, invstd, gamma,
                        batch_stats, dx, dgamma, dbeta):
    """``_batch_norm_backward`` without a ReLU."""
    _batch_norm_backward(_pass, dout, x, scale, shift, y, c_lo, c_hi, block, mean, invstd, gamma,
                         batch_stats, dx, dgamma, dbeta)


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def batch_norm_relu_backward(dout, x, scale, shift, y, c_lo, c_hi, block, mean, invstd, gamma,
                             batch_stats, dx, dgamma, dbeta):
    """``_batch_norm_backward`` of a fused ReLU, its derivative from x * scale + shift."""
    _batch_norm_backward(_gate_by_affine, dout, x, scale, shift, y, c_lo, c_hi, block, mean,
                         invstd, gamma, batch_stats, dx, dgamma, dbeta)


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def batch_norm_relu_backward_by_output(dout, x, scale, shift, y, c_lo, c_hi, block, mean, invstd,
                                       gamma, batch_stats, dx, dgamma, dbeta):
    """``_batch_norm_backward`` of a fused ReLU, its derivative from the sign of y, the output."""
    _batch_norm_backward(_gate_by_output, dout, x, scale, shift, y, c_lo, c_hi, block, mean,
                         invstd, gamma, batch_stats, dx, dgamma, dbeta)


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
    block = block_channels(x.shape[2] * x.shape[3], x.itemsize)
    if batch_stats:
        mean, var, invstd = np.empty(c), np.empty(c), np.empty(c)
        scale, shift = np.empty(c, x.dtype), np.empty(c, x.dtype)
        w = np.ones(c) if weight is None else weight.astype(np.float64)
        b = np.zeros(c) if bias is None else bias.astype(np.float64)
        _over_channels(
            lambda lo, hi: batch_norm_train(x, lo, hi, block, w, b, float(eps), relu, joined,
                                            mean, var, invstd, scale, shift, out), c)
    else:
        invstd = 1.0 / np.sqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        shift = -mean * scale if bias is None else bias - mean * scale
        scale, shift = scale.astype(x.dtype), shift.astype(x.dtype)
        _over_channels(lambda lo, hi: batch_norm_apply(x, lo, hi, block, scale, shift, relu,
                                                       joined, out), c)
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
    block = block_channels(x.shape[2] * x.shape[3], x.itemsize)
    kernel = (batch_norm_backward if not relu else batch_norm_relu_backward if relu_out is None
              else batch_norm_relu_backward_by_output)
    _over_channels(lambda lo, hi: kernel(dout, x, scale, shift, y, lo, hi, block, mean, invstd, g,
                                         batch_stats, dx, dgamma, dbeta), c)
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
