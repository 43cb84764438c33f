"""Batch normalisation: the functional pair and its Numba kernels.

``batch_norm2d_forward`` validates its arguments and returns ``(y, cache, mean, var)``;
``batch_norm2d_backward(dout, cache)`` the gradients. ``batch_norm2d`` is the same forward on
checked input (a layer's path, after its boundary check).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numba as nb
import numpy as np

from .shapes import as_float_array, check_dout

# --------------------------------------------------------------------------- batch normalisation
# Serial (nogil) kernels: the engine's own pool of threads calls them, so nothing here asks for
# Numba's parallel pool. Sums are accumulated in float64 whatever the array dtype (a float32 sum
# over N*H*W values loses digits that PyTorch's Welford keeps). The backward pass never stores
# xhat: it is recomputed from x, mean and invstd, so one (N, C, H, W) temporary is saved.


@nb.njit(cache=True, nogil=True)
def batch_norm_stats(x, mean, var):
    """Per-channel mean and biased variance of x (N, C, H, W), two passes (no cancellation).

    mean, var (written): (C,) float64.
    """
    n_count, c_count, height, width = x.shape
    count = n_count * height * width
    for c in range(c_count):
        total = 0.0
        for n in range(n_count):
            for y in range(height):
                for xx in range(width):
                    total += x[n, c, y, xx]
        m = total / count
        squares = 0.0
        for n in range(n_count):
            for y in range(height):
                for xx in range(width):
                    d = x[n, c, y, xx] - m
                    squares += d * d
        mean[c] = m
        var[c] = squares / count


@nb.njit(cache=True, nogil=True)
def batch_norm_apply(x, scale, shift, out):
    """``out[n, c] = x[n, c] * scale[c] + shift[c]``: the normalisation and the affine map in one
    pass."""
    n_count, c_count, height, width = x.shape
    for n in range(n_count):
        for c in range(c_count):
            a = scale[c]
            b = shift[c]
            for y in range(height):
                for xx in range(width):
                    out[n, c, y, xx] = x[n, c, y, xx] * a + b


@nb.njit(cache=True, nogil=True)
def batch_norm_backward(dout, x, mean, invstd, gamma, batch_stats, dx, dgamma, dbeta):
    """Fused batch-norm backward over (N, C, H, W), with xhat = (x - mean) * invstd recomputed.

    dbeta[c] = sum dout, dgamma[c] = sum dout * xhat (written, float64 (C,)). With batch
    statistics (training) dx = gamma * invstd / M * (M * dout - dbeta - xhat * dgamma), M = N*H*W;
    with fixed statistics (eval) dx = gamma * invstd * dout. dx (written) has dout's shape.
    """
    n_count, c_count, height, width = x.shape
    count = n_count * height * width
    for c in range(c_count):
        m = mean[c]
        s = invstd[c]
        sum_dy = 0.0
        sum_dy_xhat = 0.0
        for n in range(n_count):
            for y in range(height):
                for xx in range(width):
                    g = dout[n, c, y, xx]
                    sum_dy += g
                    sum_dy_xhat += g * ((x[n, c, y, xx] - m) * s)
        dbeta[c] = sum_dy
        dgamma[c] = sum_dy_xhat
        k = gamma[c] * s
        if batch_stats:
            a = sum_dy / count
            b = sum_dy_xhat / count
            for n in range(n_count):
                for y in range(height):
                    for xx in range(width):
                        xhat = (x[n, c, y, xx] - m) * s
                        dx[n, c, y, xx] = k * (dout[n, c, y, xx] - a - xhat * b)
        else:
            for n in range(n_count):
                for y in range(height):
                    for xx in range(width):
                        dx[n, c, y, xx] = k * dout[n, c, y, xx]


# --------------------------------------------------------------------------- functional pair


class BatchNormCache(NamedTuple):
    x: np.ndarray  # the (C-contiguous) input: xhat is recomputed from it, never stored
    mean: np.ndarray  # (C,) float64: the statistics used, batch or running
    invstd: np.ndarray  # (C,) float64: 1 / sqrt(var + eps)
    gamma: np.ndarray | None  # (C,) weight, None without affine
    batch_stats: bool  # True: mean and var came from x, so they depend on it (training)
    owner: str


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
) -> tuple[np.ndarray, BatchNormCache, np.ndarray, np.ndarray]:
    """``batch_norm2d_forward`` of checked input: ``x`` (N, C, H, W) C-contiguous float;
    ``weight``/``bias`` None or (C,) in x's dtype; ``mean``/``var`` both None (batch statistics)
    or both (C,) float64 with var >= 0 (a layer's running statistics)."""
    c = x.shape[1]
    batch_stats = mean is None
    if batch_stats:
        mean = np.empty(c)
        var = np.empty(c)
        batch_norm_stats(x, mean, var)
    invstd = 1.0 / np.sqrt(var + eps)
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    out = np.empty_like(x)
    batch_norm_apply(x, scale.astype(x.dtype), shift.astype(x.dtype), out)
    return out, BatchNormCache(x, mean, invstd, weight, batch_stats, owner), mean, var


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
    x, mean, invstd, gamma, batch_stats, owner = cache
    dout = np.ascontiguousarray(check_dout(dout, x.shape, x.dtype, owner))
    c = x.shape[1]
    dx = np.empty_like(x)
    dgamma = np.empty(c)
    dbeta = np.empty(c)
    g = np.ones(c) if gamma is None else gamma.astype(np.float64)
    batch_norm_backward(dout, x, mean, invstd, g, batch_stats, dx, dgamma, dbeta)
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
