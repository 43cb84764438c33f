"""The register tile (``conv/tile_kernel.py``) computes its formula, against NumPy, whole and
half, with the pixels past ``npix`` left out, for float32 and float64; it has its registers' worth
of lanes; the narrow tiles of a CPU without 512-bit vectors compute the tiled strategy's forward
and backward too."""

import numba as nb
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col.conv import tile_kernel


def _operands(rng, dtype, half, taps, blocks):
    """A tile's shape (P, L) on this CPU, whole or ``half``, and drawn operands: a weight of
    ``taps`` rows of ``blocks`` x L values (``row``), the lane block ``ob``, 500 input values,
    ``taps`` offsets, 40 pixel bases and the first pixel ``q0``."""
    whole, lanes = tile_kernel.tile_shape(dtype, 1000)
    pixels, lanes = (2 * whole, lanes // 2) if half else (whole, lanes)
    row = lanes * blocks  # Lp: a whole number of the tile's lanes
    ob = lanes * int(rng.integers(0, blocks))
    xf = rng.standard_normal(500).astype(dtype)
    offsets = rng.integers(0, 200, taps).astype(np.int64)
    bases = rng.integers(0, 300, 40).astype(np.int64)
    q0 = int(rng.integers(0, 40 - pixels + 1))
    wf = rng.standard_normal(max(taps, 1) * row).astype(dtype)
    return pixels, lanes, row, ob, xf, offsets, bases, q0, wf


def _sums(xf, bases, q0, count, offsets, wf, row, ob, lanes):
    """The tile's sums in NumPy, (count, lanes): ``sum_t wf[t*row + ob + l] * xf[bases[q0 + p] +
    offsets[t]]``."""
    taps = offsets.shape[0]
    w = wf[: taps * row].reshape(taps, row)[:, ob : ob + lanes]
    return xf[bases[q0 : q0 + count, None] + offsets[None, :]] @ w


@nb.njit(cache=True)
def _one_tile(xf, bases, q0, npix, offsets, wf, ob, bias, relu, dst, d0, stride, half):
    tile_kernel.tile(xf, bases, q0, npix, offsets, wf, ob, bias, relu, dst, d0, stride, half)


@given(dtype=st.sampled_from([np.float32, np.float64]), half=st.booleans(),
       taps=st.integers(0, 40), npix=st.integers(1, 16), blocks=st.integers(1, 3),
       relu=st.booleans(), seed=st.integers(0, 2**16))
def test_a_tile_computes_its_formula(dtype, half, taps, npix, blocks, relu, seed):
    """``dst[d0 + p*stride + l] = f(bias[ob + l] + sum_t wf[t*Lp + ob + l] * xf[bases[q0 + p] +
    offsets[t]])`` for p < npix; the rows of the pixels past npix are the caller's to ignore."""
    rng = np.random.default_rng(seed)
    pixels, lanes, row, ob, xf, offsets, bases, q0, wf = _operands(rng, dtype, half, taps, blocks)
    npix = min(npix, pixels)
    bias = rng.standard_normal(row).astype(dtype)
    stride = lanes + 3
    dst = np.full(5 + pixels * stride, np.nan, dtype=dtype)
    _one_tile(xf, bases, q0, npix, offsets, wf, ob, bias, relu, dst, 5, stride, half)
    want = bias[ob : ob + lanes] + _sums(xf, bases, q0, npix, offsets, wf, row, ob, lanes)
    if relu:
        want = np.maximum(want, 0)
    got = np.stack([dst[5 + p * stride : 5 + p * stride + lanes] for p in range(npix)])
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_the_tile_has_its_registers_worth_of_lanes():
    """A tile holds 96 float32 (12 registers of 8) or 256 (16 of 16), float64 half as many; with
    at most half its lanes of output channels, twice the pixels and half the lanes."""
    pixels, lanes = tile_kernel.tile_shape(np.float32, 64)
    assert pixels * lanes in (96, 256)
    assert tile_kernel.tile_shape(np.float64, 64) == (pixels, lanes // 2)
    assert tile_kernel.tile_shape(np.float32, lanes // 2) == (2 * pixels, lanes // 2)
    assert tile_kernel.tile_shape(np.float32, lanes // 2 + 1) == (pixels, lanes)
    assert tile_kernel.tile_shape(np.float64, lanes // 4) == (2 * pixels, lanes // 4)


NARROW_PROBE = r"""
import llvmlite.binding as llvm
features = llvm.get_host_cpu_features()
features.pop("avx512f", None)
llvm.get_host_cpu_features = lambda: features  # as on a CPU without 512-bit vectors
import numpy as np
from cnn_im2col.conv import im2col, tiled
from cnn_im2col.shapes import dilated_geometry
from cnn_im2col.conv import vectors
assert not vectors.WIDE
rng = np.random.default_rng(0)
worst = 0.0
for dtype in (np.float32, np.float64):
    for o in (3, 4, 8, 9, 16, 17, 40):  # half tiles, whole tiles, and their remainders
        # (16 and 40 input channels: whole transpose blocks of the input gradient, and edge ones)
        for (c, h, k, s) in ((5, 9, 3, 2), (3, 7, 1, 2), (16, 9, 3, 2), (40, 7, 1, 2)):
            x = rng.standard_normal((2, c, h, h)).astype(dtype)
            w = rng.standard_normal((o, c, k, k)).astype(dtype)
            b = rng.standard_normal(o).astype(dtype)
            g = dilated_geometry(h, h, (k, k), (s, s), (1, 1), (k // 2, k // 2), "t")
            want, want_cache = im2col.forward(x, w, b, g, backend="numpy", relu=True)
            got, got_cache = tiled.forward(x, w, b, g, relu=True)
            dout = rng.standard_normal(want.shape).astype(dtype)
            pairs = [(got, want), *zip(tiled.backward(dout, got_cache),
                                       im2col.backward(dout, want_cache))]
            for mine, theirs in pairs:
                scale = max(1.0, float(np.abs(theirs).max()))
                worst = max(worst, float(np.abs(mine - theirs).max()) / scale)
print(worst)
"""


def test_the_tiles_of_a_cpu_without_512_bit_vectors_compute_the_same(tmp_path):
    """The narrow tiles (6 x 16 float32, 6 x 8 float64, and their halves), which this CPU may not
    take itself, forward and backward, built and run in a process that sees a CPU without AVX-512
    (its own kernel cache, so that no kernel compiled for the wide tiles is loaded)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", NARROW_PROBE], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-5
