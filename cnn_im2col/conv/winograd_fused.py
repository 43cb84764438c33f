"""The Winograd forward of a batch slice in one compiled pass, a few samples at a time: each
chunk's input transform (V), its 36 products (M = V @ U^T, in the register tile of
``conv/tile_kernel.py``) and its output transform, while the chunk's V and M stay in the core's
cache; V is not kept (a training step's backward makes it again from the input). Inference runs
it too from 2 samples on (``winograd.fuses_inference``), in a session's layouts (channels-last
maps, the pooled output): ResNet-20's session at batch 64 0.90x the unfused time, vgg-bn 0.96x.
The unfused forward (``winograd.slice_forward_unfused``: the input transform of the whole slice,
one BLAS call for its 36 products, the output transform) is this one's slow twin; the tests hold
them equal to rounding.

Why: V and M are 2.25x the input's size (36 values a tile of 16 pixels). Unfused, each is written
to memory out of cache and read back: in ResNet-20's training step the input transform took 1.4x
its time on a buffer in cache. Measured 2026-12-06, Intel Xeon, one thread, a slice's forward,
unfused / fused, us: 11 samples of 16 channels at 32x32 535-559 / 494-495; 16 of 32 at 16x16
472-494 / 430-466; 32 of 64 at 8x8 580-591 / 555-576. ResNet-20's training step, 2 threads, the
two alternated in one process (medians of 60-96 steps a side, six runs), ms: 94.9 / 93.8, 96.2 /
93.9, 96.7 / 94.3, 99.9 / 97.7, 101.2 / 100.3, 95.7 / 94.3 (0.9-2.5% faster); its peak RSS 399
-> 329 MiB. V kept instead (the chunks' input transform writing it where backward finds it): half
that gain. A layer alone, forward + backward over and over, is 6-11% slower fused (its V, unfused,
reuses memory still in cache from the call before, and fused it is made again in backward), and a
dilated layer (whose backward would remake its phases too) is not fused.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..blas import gemm_at
from ..blas import matmul as blas_matmul
from .tile_kernel import tile as _tile
from .tile_kernel import tile_dims
from .winograd_kernels import (
    _winograd_input,
    _winograd_output,
    winograd_input_adjoint_f25,
    winograd_input_adjoint_f43,
    winograd_input_f25,
    winograd_input_f43,
    winograd_output_adjoint_f25,
    winograd_output_adjoint_f43,
)

__all__ = ["CHUNK_BYTES", "chunk_samples", "fuses", "winograd_fused_f43", "winograd_fused_f25",
           "winograd_backward_f43", "winograd_backward_f25"]

# a chunk's V at most this many bytes (with its M, twice that stays in a core's second-level
# cache). Measured 2026-12-06, Intel Xeon (2 MiB L2), one thread, 12 samples, V not kept, us,
# chunks of 1 / 2 / 4 samples: 16 channels at 32x32 (147 KiB of V a sample) 532 / 525 / 527,
# 32 at 16x16 (37 KiB) 342 / 306 / 297
CHUNK_BYTES = 160 * 1024


def chunk_samples(samples: int, per_sample_v_bytes: int) -> int:
    """The samples of a chunk: as many as keep its V within ``CHUNK_BYTES``, at least 1."""
    return max(1, min(samples, CHUNK_BYTES // max(1, per_sample_v_bytes)))


def fuses(out_channels: int, groups: int, dtype: np.dtype) -> bool:
    """Whether a slice's forward runs fused: groups 1 and the output channels a whole number of
    the register tile's lanes (its rows are written straight into M, whose rows are K long)."""
    _, _, lanes = tile_dims(np.dtype(dtype).itemsize, out_channels)
    return groups == 1 and out_channels % lanes == 0


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_fused(x, pt, pl, m, ty_count, tx_count, ut, bias, relu, skip, out, chunk, x_last,
                    out_last, pool):
    """``out`` = the output transform of (V @ U^T) + bias [+ skip], ReLU'd if ``relu``, V the input
    transform of x: ``_winograd_input`` and ``_winograd_output`` (which say what each computes,
    m the tile, and how the layouts and the pool go) on ``chunk`` samples at a time, their 36
    products in the register tile.

    x: (N, C, H, W), or (N, H, W, C) if ``x_last``; ut: U^T (36, C, K), K a whole number of the
    tile's lanes (``fuses``); bias: (K, 1) or (K, OH*OW); skip: out's shape or empty; out
    (written): (N, K, OH, OW), (N, OH, OW, K) if ``out_last``, (N, K, OH // 2, OW // 2) if
    ``pool``. All C-contiguous, one dtype."""
    n_count, c_count = x.shape[0], ut.shape[1]
    k_count = ut.shape[2]
    per = ty_count * tx_count  # tiles a sample
    half, pixels, lanes = tile_dims(x.itemsize, k_count)
    most = min(chunk, n_count) * per  # a chunk's tiles
    vbuf = np.empty(36 * most * c_count, x.dtype)
    # a tile past a chunk's last is computed (on a row of V inside it) and stored: room for it
    mbuf = np.empty(36 * most * k_count + pixels * k_count, x.dtype)
    wf = ut.reshape(ut.size)
    no_bias = np.zeros(k_count, x.dtype)
    bases = np.arange(36 * most) * c_count  # row t of plane p of a chunk's V: (p*T + t) * C
    offsets = np.arange(c_count)  # the taps: V's channels
    joined = skip.size > 0
    for n0 in range(0, n_count, chunk):
        n1 = min(n0 + chunk, n_count)
        tiles = (n1 - n0) * per
        vc = vbuf[: 36 * tiles * c_count].reshape((36, tiles, c_count))
        _winograd_input(x[n0:n1], pt, pl, m, ty_count, tx_count, vc, x_last)
        for p in range(36):  # M's plane p = V's plane p @ U^T's plane p
            w0 = p * c_count * k_count
            for q0 in range(0, tiles, pixels):
                for ob in range(0, k_count, lanes):
                    _tile(vbuf, bases, p * tiles + q0, min(pixels, tiles - q0), offsets,
                          wf[w0:], ob, no_bias, False, mbuf, (p * tiles + q0) * k_count + ob,
                          k_count, half)
        mc = mbuf[: 36 * tiles * k_count].reshape((36, tiles, k_count))
        _winograd_output(mc, m, ty_count, tx_count, bias, relu, skip[n0:n1] if joined else skip,
                         out[n0:n1], out_last, pool)


@nb.njit(cache=True, nogil=True)
def winograd_fused_f43(x, pt, pl, ty_count, tx_count, ut, bias, relu, skip, out, chunk, x_last,
                       out_last, pool):
    _winograd_fused(x, pt, pl, 4, ty_count, tx_count, ut, bias, relu, skip, out, chunk, x_last,
                    out_last, pool)


@nb.njit(cache=True, nogil=True)
def winograd_fused_f25(x, pt, pl, ty_count, tx_count, ut, bias, relu, skip, out, chunk, x_last,
                       out_last, pool):
    _winograd_fused(x, pt, pl, 2, ty_count, tx_count, ut, bias, relu, skip, out, chunk, x_last,
                    out_last, pool)


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_backward(dout, y, relu, x, pt, pl, m, ty_count, tx_count, u, blas, skip_grad,
                       skip_out, dx, dm, v, du, tied):
    """``winograd.slice_backward``'s steps as one compiled call (no GIL taken between them): the
    same compiled transforms (``winograd_kernels``), and each product through NumPy's own BLAS as
    NumPy's matmul calls it (``blas.py``), so the same bits. dM and the tied bias gradient
    (``winograd_output_adjoint_*``), V made again from ``x`` unless x is empty
    (``winograd_input_*``; else ``v`` holds it), dU = dM @ V plane by plane, and, unless ``dx`` is
    empty, dx = the input adjoint of dV^T = dM^T @ U (plus the shortcut's gradient,
    ``winograd_input_adjoint_*``).

    dout, y: (N, K, OH, OW); x: (N, C, H, W) or empty; u: (36, K, C); dx, skip_grad, skip_out:
    (N, C, H, W) or empty; dm (written): (36, K, T); v: (36, T, C) (written if x is given); du
    (written): (36, K, C); tied (written, float64): (K,). All C-contiguous, one float dtype."""
    if m == 4:
        winograd_output_adjoint_f43(dout, y, relu, ty_count, tx_count, dm, tied)
    else:
        winograd_output_adjoint_f25(dout, y, relu, ty_count, tx_count, dm, tied)
    if x.size > 0:
        if m == 4:
            winograd_input_f43(x, pt, pl, ty_count, tx_count, v)
        else:
            winograd_input_f25(x, pt, pl, ty_count, tx_count, v)
    for p in range(36):
        blas_matmul(blas, dm[p], v[p], du[p])
    if dx.size > 0:
        dvt = np.empty((36, dm.shape[2], u.shape[2]), dx.dtype)
        for p in range(36):
            gemm_at(blas, dm[p], u[p], dvt[p])
        if m == 4:
            winograd_input_adjoint_f43(dvt, pt, pl, ty_count, tx_count, skip_grad, skip_out, dx)
        else:
            winograd_input_adjoint_f25(dvt, pt, pl, ty_count, tx_count, skip_grad, skip_out, dx)


@nb.njit(cache=True, nogil=True)
def winograd_backward_f43(dout, y, relu, x, pt, pl, ty_count, tx_count, u, blas, skip_grad,
                          skip_out, dx, dm, v, du, tied):
    _winograd_backward(dout, y, relu, x, pt, pl, 4, ty_count, tx_count, u, blas, skip_grad,
                       skip_out, dx, dm, v, du, tied)


@nb.njit(cache=True, nogil=True)
def winograd_backward_f25(dout, y, relu, x, pt, pl, ty_count, tx_count, u, blas, skip_grad,
                          skip_out, dx, dm, v, du, tied):
    _winograd_backward(dout, y, relu, x, pt, pl, 2, ty_count, tx_count, u, blas, skip_grad,
                       skip_out, dx, dm, v, du, tied)
