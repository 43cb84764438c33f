"""A classifier's head at inference, GlobalAvgPool2D -> Dense (a ResNet's), in one compiled call:
each sample's maps averaged and multiplied by the weight while they are in cache, instead of a
pool and a matrix product in NumPy, each with its own arrays and dispatch. On a batch of one that
dispatch was most of the head's time: ResNet-20's head took 31 us of a session's 658 after the
last convolution (the pool 14, Dense 9, the steps around them the rest, each first touched after
the convolutions had filled the caches), measured 2026-12-06, Intel Xeon, one core; one call
took 19 us less (alternated rounds in one process).

The slow twin is the two layers one after the other (``GlobalPoolDense.run`` where the head is too
large to pay, and the tests). The sums run in float64 whatever the dtype, so the head gives the
layers' numbers to rounding, not their bits.
"""

from __future__ import annotations

import numba as nb
import numpy as np

# Heads of at most this many multiply-adds (batch x in_features x out_features) run the kernel:
# above it BLAS's product is faster than the kernel's loop of dot products. Measured 2026-12-06,
# Intel Xeon, one thread, warm, us, kernel / layers: 1x64x8x8 -> 10 1.2 / 5.0, 64x64x8x8 -> 10
# 25.8 / 21.2, 64x1280x2x2 -> 10 (819,200) 175 / 182, 64x512x7x7 -> 1000 4,144 / 983. In
# ResNet-20's session, from the last block's end to the output's check: 14 / 33 us at batch 1,
# 175 / 246 at batch 64 (the map comes from both cores' caches; the layers read it twice).
MAX_MACS = 2**20


def fits(samples: int, in_features: int, out_features: int) -> bool:
    """Whether a head of this size runs the kernel (``MAX_MACS``)."""
    return samples * in_features * out_features <= MAX_MACS


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _pooled_dense(x, weight, bias, out):
    """out[n, k] = bias[k] + sum_c weight[k, c] * mean(x[n, c]), in float64. x: (N, C, P), the
    maps flattened, C-contiguous; weight: (K, C); bias: (K,) or empty for none; out (written):
    (N, K). ``reassoc`` lets the sums split over vector lanes (no less accurate); no ``nnan``: a
    NaN comes out as one."""
    n_count, c_count, plane = x.shape
    k_count = weight.shape[0]
    means = np.empty(c_count)
    for n in range(n_count):
        for c in range(c_count):
            total = 0.0
            for p in range(plane):
                total += x[n, c, p]
            means[c] = total / plane
        for k in range(k_count):
            total = 0.0 if bias.size == 0 else np.float64(bias[k])
            for c in range(c_count):
                total += weight[k, c] * means[c]
            out[n, k] = total


def pooled_dense(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Dense(GlobalAvgPool2D(x)): x (N, C, H, W) a float array; weight (K, C); bias (K,) or None.
    Returns (N, K) in the weight's dtype, as ``Dense`` casts its input to it."""
    n, c = x.shape[:2]
    x3 = np.ascontiguousarray(x).reshape(n, c, -1)
    out = np.empty((n, weight.shape[0]), dtype=weight.dtype)
    _pooled_dense(x3, weight, np.empty(0, weight.dtype) if bias is None else bias, out)
    return out
