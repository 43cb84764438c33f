"""winograd_kernels: the compiled input and output transforms of F(4x4, 3x3) and F(2x2, 5x5)
equal the textbook matrix products on hypothesis-drawn shapes, paddings, biases and dtypes; the
input transform's adjoint is its transpose; the channels-last and pooling variants give the very
bits of the NCHW ones; the 1-D tile steps compute in their data's type."""

from typing import NamedTuple

import numba as nb
import numpy as np
import pytest
from conftest import tolerance
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col.activations import add_into, add_relu_grad
from cnn_im2col.conv import winograd
from cnn_im2col.conv import winograd_kernels as kernels
from cnn_im2col.shapes import WindowGeometry


def no_shortcut(dtype):
    """The output kernels' "no shortcut": empty, of a shortcut's type (as ``slice_forward`` passes
    it), so that the tests compile no signature the engine does not use."""
    return np.empty((0, 0, 0, 0), dtype)


@st.composite
def input_transform_cases(draw):
    """(x's shape, geometry, seed) of a stride-1 3x3 or 5x5 convolution: paddings 0-3 above and
    left (the same below and right), sizes up to 13 that leave an output."""
    r, pt, pl = draw(st.sampled_from([3, 5])), draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h = draw(st.integers(max(1, r - 2 * pt), 13))
    w = draw(st.integers(max(1, r - 2 * pl), 13))
    g = WindowGeometry(r, r, 1, 1, pt, pt, pl, pl, h + 2 * pt - r + 1, w + 2 * pl - r + 1)
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 20)), h, w)
    return shape, g, draw(st.integers(0, 2**16))


@given(case=input_transform_cases(), dtype=st.sampled_from([np.float32, np.float64]))
def test_input_transform_equals_the_textbook_products(case, dtype):
    """V[6i + j, t, c] = (B^T d B)[i, j] for the 6x6 window d of every tile t (zero padding above
    and left by (pt, pl), below and right as far as the last tile reaches), against einsum."""
    (n, c, h, w), g, seed = case
    m, pt, pl = 7 - g.kh, g.top, g.left
    ty, tx = winograd.tiles(g)
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(dtype)
    padded = np.zeros((n, c, m * ty + 6 - m, m * tx + 6 - m))
    rows, cols = min(h, padded.shape[2] - pt), min(w, padded.shape[3] - pl)
    padded[:, :, pt : pt + rows, pl : pl + cols] = x[:, :, :rows, :cols]
    windows = np.lib.stride_tricks.sliding_window_view(padded, (6, 6), axis=(2, 3))
    windows = windows[:, :, ::m, ::m][:, :, :ty, :tx]  # (n, c, TY, TX, 6, 6)
    want = np.einsum("ia,ncyxab,jb->ijnyxc", winograd.BT, windows, winograd.BT)
    got = winograd.transform_input(x, g)
    assert got.shape == (36, n * ty * tx, c) and got.dtype == dtype
    np.testing.assert_allclose(got, want.reshape(got.shape), *tolerance(dtype))


@given(case=input_transform_cases(), dtype=st.sampled_from([np.float32, np.float64]))
def test_channels_last_input_transform_gives_the_same_bits(case, dtype):
    """The channels-last input transform (a session's program: x (N, H, W, C)) writes the very V
    of the NCHW one: only its copy into the transform's layout differs."""
    (n, c, h, w), g, seed = case
    ty, tx = winograd.tiles(g)
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(dtype)
    got = np.full((36, n * ty * tx, c), np.nan, dtype)
    kernels.compiled("winograd_input_last", g.kh)(
        np.ascontiguousarray(x.transpose(0, 2, 3, 1)), g.top, g.left, ty, tx, got)
    np.testing.assert_array_equal(got, winograd.transform_input(x, g))


@given(case=input_transform_cases())
def test_input_transform_adjoint_is_its_transpose(case):
    """<transform_input(x), dV> = <x, adjoint(dV)> for random x and dV (float64): with the
    textbook test of the forward transform above, the adjoint is the exact gradient."""
    (n, c, h, w), g, seed = case
    ty, tx = winograd.tiles(g)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    dvt = rng.standard_normal((36, n * ty * tx, c))
    dx = np.full_like(x, np.nan)  # written whole
    kernels.compiled("winograd_input_adjoint", g.kh)(
        dvt, g.top, g.left, ty, tx, no_shortcut(x.dtype), no_shortcut(x.dtype), dx)
    np.testing.assert_allclose(np.vdot(winograd.transform_input(x, g), dvt), np.vdot(x, dx),
                               rtol=1e-10, atol=1e-10 * np.abs(dvt).sum())


@given(case=input_transform_cases(), dtype=st.sampled_from([np.float32, np.float64]))
def test_input_transform_adjoint_adds_a_gated_shortcut_as_add_relu_grad_does(case, dtype):
    """With ``skip_grad`` and ``skip_out`` (a residual block's identity shortcut through its
    ReLU), dx is the plain adjoint's plus skip_grad where skip_out > 0: the bits of
    ``activations.add_relu_grad`` after it, NaNs and zeros included."""
    (n, c, h, w), g, seed = case
    ty, tx = winograd.tiles(g)
    rng = np.random.default_rng(seed)
    dvt = rng.standard_normal((36, n * ty * tx, c)).astype(dtype)
    skip_grad = rng.standard_normal((n, c, h, w)).astype(dtype)
    skip_out = np.maximum(rng.standard_normal((n, c, h, w)), 0).astype(dtype)
    skip_out.flat[::7] = np.nan  # a NaN output: its gate is closed, as the ReLU's derivative
    skip_grad.flat[::5] = np.inf
    kernel = kernels.compiled("winograd_input_adjoint", g.kh)
    plain = np.full((n, c, h, w), np.nan, dtype)
    kernel(dvt, g.top, g.left, ty, tx, no_shortcut(dtype), no_shortcut(dtype), plain)
    joined = np.full_like(plain, np.nan)
    kernel(dvt, g.top, g.left, ty, tx, skip_grad, skip_out, joined)
    np.testing.assert_array_equal(joined, add_relu_grad(plain, skip_grad, skip_out, plain.dtype))


class OutputCase(NamedTuple):
    r: int
    g: WindowGeometry  # the geometry of an r x r kernel with an OH x OW output, no padding
    ty: int
    tx: int
    mt: np.ndarray  # M^T (36, N*TY*TX, K), the products
    bias: np.ndarray  # (K, 1) tied (zeros for none) or (K, OH*OW) untied
    skip: np.ndarray  # a shortcut (N, K, OH, OW)
    relu: bool
    dtype: type


@st.composite
def output_transform_cases(draw, min_side=1, bias_modes=("tied", "untied")):
    """The output transform's arguments: F(4x4, 3x3) or F(2x2, 5x5), 1-3 samples, 1-20 maps,
    outputs of ``min_side`` to 13 a side (the last tile row and column cut), a bias of
    ``bias_modes`` ("none": zeros), ReLU or not, both dtypes."""
    r = draw(st.sampled_from([3, 5]))
    n, k = draw(st.integers(1, 3)), draw(st.integers(1, 20))
    oh, ow = draw(st.integers(min_side, 13)), draw(st.integers(min_side, 13))
    bias_mode = draw(st.sampled_from(bias_modes))
    relu = draw(st.booleans())
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    m = 7 - r
    ty, tx = -(-oh // m), -(-ow // m)
    mt = rng.standard_normal((36, n * ty * tx, k)).astype(dtype)
    bias = {"tied": rng.standard_normal((k, 1)), "untied": rng.standard_normal((k, oh * ow)),
            "none": np.zeros((k, 1))}[bias_mode].astype(dtype)
    skip = rng.standard_normal((n, k, oh, ow)).astype(dtype)
    return OutputCase(r, WindowGeometry(r, r, 1, 1, 0, 0, 0, 0, oh, ow), ty, tx, mt, bias, skip,
                      relu, dtype)


@given(case=output_transform_cases(), joined=st.booleans())
def test_output_transform_equals_the_textbook_products(case, joined):
    """out[n, k]'s m x m block of tile t = A^T M A + bias (+ a shortcut, then ReLU), M[i, j] =
    M^T[6i + j, t, k], the last row and column of tiles cut to the output's size, against einsum;
    the shortcut joined in the kernel gives the very bits of ``add_into`` after it."""
    r, g, ty, tx, mt, bias, skip, relu, dtype = case
    n, k, oh, ow = skip.shape
    m = 7 - r
    skip = skip if joined else no_shortcut(dtype)
    out = np.empty((n, k, oh, ow), dtype)
    kernel = kernels.compiled("winograd_output", g.kh)
    kernel(mt, ty, tx, bias, relu, skip, out)
    at = winograd.MATRICES[r][1]
    tiles = mt.reshape(6, 6, n, ty, tx, k).astype(np.float64)
    blocks = np.einsum("ai,ijnyxk,bj->nkyaxb", at, tiles, at).reshape(n, k, m * ty, m * tx)
    untied = bias.shape[1] > 1  # (K, OH*OW); a tied one, and an untied one of a 1x1 output: (K, 1)
    want = blocks[:, :, :oh, :ow] + (
        bias.reshape(k, oh, ow) if untied else bias.reshape(k, 1, 1)
    ) + (skip if joined else 0)
    np.testing.assert_allclose(out, np.maximum(want, 0) if relu else want, *tolerance(dtype))
    if joined:
        apart = np.empty_like(out)
        kernel(mt, ty, tx, bias, False, no_shortcut(dtype), apart)
        add_into(apart, skip, relu)
        np.testing.assert_array_equal(out, apart)


@given(case=output_transform_cases(), joined=st.booleans())
def test_channels_last_output_transform_gives_the_same_bits(case, joined):
    """The channels-last output transform (out and the shortcut (N, OH, OW, K)) writes the very
    values of the NCHW one above, transposed: the same operations in the same order per value."""
    _, g, ty, tx, mt, bias, skip, relu, dtype = case
    want = np.empty(skip.shape, dtype)
    kernels.compiled("winograd_output", g.kh)(mt, ty, tx, bias, relu,
                                           skip if joined else no_shortcut(dtype), want)
    got = np.full(skip.transpose(0, 2, 3, 1).shape, np.nan, dtype)
    last_skip = np.ascontiguousarray(skip.transpose(0, 2, 3, 1))
    kernels.compiled("winograd_output_last", g.kh)(mt, ty, tx, bias, relu,
                                                last_skip if joined else no_shortcut(dtype), got)
    np.testing.assert_array_equal(got, want.transpose(0, 2, 3, 1))


@given(case=output_transform_cases(min_side=2, bias_modes=("tied", "none")))
def test_pooling_output_transform_gives_the_pools_bits(case):
    """The output transform that max-pools 2x2 / 2 as it writes (a session's Conv2D -> ReLU ->
    MaxPool2D) gives the very values of the pool over the NCHW transform's output: odd sizes drop
    the last row and column as the pool does, and the windows of a cut last tile are whole."""
    from cnn_im2col.pooling import max_pool_values_2x2

    _, g, ty, tx, mt, tied, skip, relu, dtype = case
    n, k, oh, ow = skip.shape
    full = np.empty((n, k, oh, ow), dtype)
    kernels.compiled("winograd_output", g.kh)(mt, ty, tx, tied, relu, no_shortcut(dtype), full)
    want = np.empty((n, k, oh // 2, ow // 2), dtype)
    max_pool_values_2x2(full, 2, 2, False, want)
    got = np.full_like(want, np.nan)
    kernels.compiled("winograd_output_pool", g.kh)(mt, ty, tx, tied, relu, no_shortcut(dtype), got)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "name, arity",
    [
        ("_bt6", 6),
        ("_bt6_adjoint", 6),
        ("_at4", 6),
        ("_at4_adjoint", 4),
        ("_at2", 6),
        ("_at2_adjoint", 2),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_tile_transforms_compute_in_their_data_type(name, arity, dtype):
    """The 1-D steps of the input and output transforms, compiled for float32 data, return float32:
    an int literal in them (``4 * d``) made Numba compute in float64, at half the vector width
    (the input transform ran 1.8x slower). float64 data stays float64."""
    step = getattr(kernels, name)
    probes = {
        2: lambda a: step(a[0], a[1]),
        4: lambda a: step(a[0], a[1], a[2], a[3]),
        6: lambda a: step(a[0], a[1], a[2], a[3], a[4], a[5]),
    }
    probe = nb.njit(probes[arity])
    probe(np.ones(arity, dtype))
    returned = probe.nopython_signatures[0].return_type
    assert {str(t) for t in returned} == {np.dtype(dtype).name}
