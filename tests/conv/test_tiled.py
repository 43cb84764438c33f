"""The tiled strategy of a strided convolution (``conv/tiled.py``) equals its twin, the im2col
path, and the oracle, on drawn shapes, kernels, strides, dilations, paddings, biases, dtypes and
layouts, with and without the fused ReLU and a per-slice ``then``, and whatever the tile's
remainders (pixels past the last whole tile, output channels past the last whole vector); its
channels-last output holds the same values; its backward (the weight gradient in tiles, the input
gradient one stride phase at a time) equals im2col's and passes a float64 finite-difference check;
the phases cover every input pixel and every tap once; ``choose`` takes it for exactly the
convolutions it supports, under ``algorithm="auto"``."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import conv
from cnn_im2col.conv import direct, im2col, tiled
from cnn_im2col.shapes import dilated_geometry
from conv.cases import check_conv_gradients, check_strategy_against_im2col, draw_conv_case


@st.composite
def strided_cases(draw):
    """A convolution the tiled strategy takes under "auto": groups 1 (not a few-channel 3x3 or 5x5
    one, which the direct strategy takes), a stride of 2 or more in at least one axis; up to 70
    output channels (more than two vectors of 32 float32 lanes)."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    few = direct.MAX_CHANNELS if (kh, kw) in ((3, 3), (5, 5)) else 0
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(few + 1, few + 9)), draw(st.integers(1, 70))
    stride = (draw(st.integers(1, 3)), draw(st.integers(2, 3)))
    if draw(st.booleans()):
        stride = stride[::-1]
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    return draw_conv_case(draw, n, c, o, (kh, kw), stride, dilation, padding, largest=14)


@given(case=strided_cases(), relu=st.booleans(), input_grad=st.booleans())
def test_the_tiled_kernel_equals_the_im2col_path_and_the_oracle(case, relu, input_grad):
    check_strategy_against_im2col(case, relu, input_grad, tiled)


@given(case=strided_cases())
def test_the_phases_cover_every_input_pixel_and_every_tap_once(case):
    """Each input pixel lies in one phase, where it reads dZ at the taps that land on it, inside
    the padded dZ; each tap (o, i, j) serves one phase."""
    x, weight, _, stride, padding, dilation, _, _ = case
    height, width = x.shape[2:]
    g = dilated_geometry(height, width, weight.shape[2:], stride, dilation, padding, "t")
    phases = tiled.input_phases(weight.shape[0], g, height, width)
    np.testing.assert_array_equal(np.sort(phases.dests), np.arange(height * width))
    np.testing.assert_array_equal(np.sort(phases.rows), np.arange(weight[:, 0].size))
    size = int(np.prod(phases.padded_shape))
    for k in range(phases.pixel_starts.size - 1):
        bases = phases.bases[phases.pixel_starts[k] : phases.pixel_starts[k + 1]]
        offsets = phases.offsets[phases.tap_starts[k] : phases.tap_starts[k + 1]]
        if bases.size and offsets.size:
            reads = bases[:, None] + offsets[None, :]
            assert reads.min() >= 0 and reads.max() < size


@given(case=strided_cases(), relu=st.booleans())
def test_the_backward_per_slice_gives_the_bits_of_the_whole_gradient(case, relu):
    """``dout_of`` (a fused step's gradient, slice by slice) and ``input_grad=False`` change
    nothing in what is computed: the same bits as the whole output gradient given at once."""
    x, weight, bias, stride, padding, dilation, dout, _ = case
    if bias is not None and bias.ndim != 1:
        bias = None
    g = dilated_geometry(x.shape[2], x.shape[3], weight.shape[2:], stride, dilation, padding, "t")
    _, cache = tiled.forward(x, weight, bias, g, relu=relu)
    dout = dout.astype(x.dtype)
    whole = tiled.backward(dout, cache)
    sliced = tiled.backward(None, cache, dout_of=lambda s: np.ascontiguousarray(dout[s]))
    no_dx = tiled.backward(dout, cache, input_grad=False)
    assert no_dx[0] is None
    for want, got, got_no_dx in zip(whole, sliced, no_dx):
        if want is None:
            assert got is None and got_no_dx is None
            continue
        np.testing.assert_array_equal(got, want)
        if got_no_dx is not None:
            np.testing.assert_array_equal(got_no_dx, want)


@given(case=strided_cases(), relu=st.booleans())
def test_channels_last_tiles_hold_the_nchw_values(case, relu):
    """``run_tiles`` writing (N, OH*OW, O) gives the NCHW output's values bit for bit (the same
    sums; only where they are copied differs)."""
    x, weight, bias, stride, padding, dilation, _, _ = case
    if bias is not None and bias.ndim != 1:
        bias = None  # an untied bias runs im2col's forward
    g = dilated_geometry(x.shape[2], x.shape[3], weight.shape[2:], stride, dilation, padding, "t")
    layout = tiled.tile_layout(weight, bias, g)
    n, o = x.shape[0], weight.shape[0]
    nchw = np.full((n, o, g.oh * g.ow), np.nan, dtype=x.dtype)
    last = np.full((n, g.oh * g.ow, o), np.nan, dtype=x.dtype)
    tiled.run_tiles(x, layout, g, relu, nchw)
    tiled.run_tiles(x, layout, g, relu, last, channels_last=True)
    np.testing.assert_array_equal(last, nchw.transpose(0, 2, 1))
    want = tiled.forward(x, weight, bias, g, relu=relu)[0]
    np.testing.assert_array_equal(nchw.reshape(want.shape), want)


@given(case=strided_cases(), relu=st.booleans(), x_last=st.booleans())
def test_an_unpadded_sample_read_where_it_lies_gives_the_copys_bits(case, relu, x_last):
    """Given the image's size, a layout without padding reads each sample in place (the offsets
    are the sample's own; no copy); with padding it still copies. The same sums either way."""
    x, weight, bias, stride, padding, dilation, _, _ = case
    if bias is not None and bias.ndim != 1:
        bias = None
    g = dilated_geometry(x.shape[2], x.shape[3], weight.shape[2:], stride, dilation, padding, "t")
    inputs = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x_last else x
    copied = tiled.tile_layout(weight, bias, g, x_last)
    in_place = tiled.tile_layout(weight, bias, g, x_last, image=x.shape[2:])
    assert in_place.geometry.in_place == (padding == (0, 0)) and not copied.geometry.in_place
    n, o = x.shape[0], weight.shape[0]
    want = np.empty((n, o, g.oh * g.ow), dtype=x.dtype)
    got = np.empty_like(want)
    tiled.run_tiles(inputs, copied, g, relu, want)
    tiled.run_tiles(inputs, in_place, g, relu, got)
    np.testing.assert_array_equal(got, want)


def test_a_nan_stays_in_its_own_sample():
    """A NaN in one sample's input reaches that sample's outputs only (and the ReLU makes it 0, as
    the other strategies' epilogues do); the padding the kernel makes is zeros, never a
    neighbour's values."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 9, 10, 10)).astype(np.float32)
    weight = rng.standard_normal((40, 9, 3, 3)).astype(np.float32)
    g = dilated_geometry(10, 10, (3, 3), (2, 2), (1, 1), (1, 1), "t")
    x[1, 4, 0, 0] = np.nan
    out = tiled.forward(x, weight, None, g)[0]
    assert np.isnan(out[1]).any()
    assert np.isfinite(out[[0, 2]]).all()
    relu_out = tiled.forward(x, weight, None, g, relu=True)[0]
    assert np.isfinite(relu_out).all()
    clean = tiled.forward(np.nan_to_num(x[[0, 2]]), weight, None, g)[0]
    np.testing.assert_array_equal(out[[0, 2]], clean)


@pytest.mark.parametrize("bias_mode", ["tied", "untied", None])
def test_tiled_gradcheck_float64(bias_mode):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 11, 7, 8))
    weight = rng.standard_normal((6, 11, 3, 3))
    bias = {"tied": rng.standard_normal(6), "untied": rng.standard_normal((6, 4, 4)),
            None: None}[bias_mode]
    cache = check_conv_gradients(x, weight, bias, stride=2, padding=1, relu=True)
    assert conv.choose("auto", "numba", weight.shape, cache.geometry, 1, 11, 2, "t") is tiled


def test_tiled_gradcheck_float64_strided_1x1_padded():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4, 7, 6))
    weight = rng.standard_normal((5, 4, 1, 1))
    cache = check_conv_gradients(x, weight, rng.standard_normal(5), stride=(2, 3), padding=1)
    assert conv.choose("auto", "numba", weight.shape, cache.geometry, 1, 4, 2, "t") is tiled


def test_tiled_gradcheck_float64_dilated_rectangular():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 9, 8))
    weight = rng.standard_normal((5, 3, 2, 3))
    cache = check_conv_gradients(x, weight, rng.standard_normal(5), stride=(3, 2),
                                 padding=(1, 2), dilation=(2, 1))
    assert conv.choose("auto", "numba", weight.shape, cache.geometry, 1, 3, 2, "t") is tiled


def test_choose_takes_the_tiled_kernel_for_strided_kernels_under_auto_only():
    s2 = dilated_geometry(32, 32, (3, 3), (2, 2), (1, 1), (1, 1), "t")
    assert conv.choose("auto", "numba", (32, 16, 3, 3), s2, 1, 16, 64, "t") is tiled
    assert conv.choose("auto", "numba", (64, 32, 3, 3), s2, 1, 32, 1, "t") is tiled
    assert conv.choose("auto", "numba", (64, 32, 3, 3), s2, 1, 32, 1, "t", frozen=True) is tiled
    assert conv.choose("im2col", "numba", (32, 16, 3, 3), s2, 1, 16, 64, "t") is conv.im2col
    assert conv.choose("auto", "numpy", (32, 16, 3, 3), s2, 1, 16, 64, "t") is conv.im2col
    assert conv.choose("auto", "numba", (32, 8, 3, 3), s2, 2, 16, 64, "t") is conv.im2col  # groups
    assert conv.choose("auto", "numba", (16, 3, 3, 3), s2, 1, 3, 64, "t") is direct  # few channels
    s21 = dilated_geometry(32, 32, (3, 3), (2, 1), (1, 1), (1, 1), "t")  # one axis strided
    assert conv.choose("auto", "numba", (32, 16, 3, 3), s21, 1, 16, 64, "t") is tiled
    s2d = dilated_geometry(32, 32, (3, 3), (2, 2), (2, 2), (2, 2), "t")  # dilated
    assert conv.choose("auto", "numba", (32, 16, 3, 3), s2d, 1, 16, 64, "t") is tiled
    g1 = dilated_geometry(32, 32, (1, 1), (2, 2), (1, 1), (0, 0), "t")  # a ResNet's projection
    assert conv.choose("auto", "numba", (32, 16, 1, 1), g1, 1, 16, 64, "t") is tiled
    p1 = dilated_geometry(32, 32, (1, 1), (1, 1), (1, 1), (0, 0), "t")
    assert conv.choose("auto", "numba", (32, 16, 1, 1), p1, 1, 16, 64, "t") is conv.pointwise
    s1 = dilated_geometry(32, 32, (3, 3), (1, 1), (1, 1), (1, 1), "t")  # stride 1
    assert conv.choose("auto", "numba", (32, 16, 3, 3), s1, 1, 16, 64, "t") is not tiled


@given(case=strided_cases(), relu=st.booleans())
def test_a_channels_last_output_holds_the_nchw_output_bit_for_bit(case, relu):
    """``forward(out_last=True)`` (a session's, for a next step that reads channels-last) writes
    (N, OH, OW, O) with the NCHW output's values, and hands each slice to ``then`` so."""
    x, weight, bias, stride, padding, dilation, _, _ = case
    if bias is not None and bias.ndim != 1:
        bias = None
    g = dilated_geometry(x.shape[2], x.shape[3], weight.shape[2:], stride, dilation, padding, "t")
    seen = []
    last = tiled.forward(x, weight, bias, g, relu=relu, out_last=True,
                         then=lambda s, y: seen.append((s, y.copy())))[0]
    nchw = tiled.forward(x, weight, bias, g, relu=relu)[0]
    assert last.shape == (x.shape[0], g.oh, g.ow, weight.shape[0])
    np.testing.assert_array_equal(last, nchw.transpose(0, 2, 3, 1))
    for s, values in seen:
        np.testing.assert_array_equal(values, last[s])


@pytest.mark.parametrize("channels", [16, 32, 40, 64, 70])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel", [1, 3])
def test_input_gradient_tiles_stored_transposed_equal_the_im2col_gradient(channels, dtype,
                                                                          kernel):
    """The input gradient's whole tiles are stored transposed from the registers, the ones at the
    edges (13 x 13 pixels a phase, the last channels past a whole number of lanes) through the
    scratch tile: these channel counts make both, with half and whole tiles; a 1x1 kernel leaves
    three of the four phases without taps (zeros). Against im2col's backward."""
    rng = np.random.default_rng(channels + kernel)
    x = rng.standard_normal((2, channels, 26, 26)).astype(dtype)
    weight = rng.standard_normal((24, channels, kernel, kernel)).astype(dtype)
    g = dilated_geometry(26, 26, (kernel, kernel), (2, 2), (1, 1), (kernel // 2, kernel // 2), "t")
    out, cache = tiled.forward(x, weight, None, g)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = tiled.backward(dout, cache)[0]
    want = im2col.backward(dout, im2col.forward(x, weight, None, g)[1])[0]
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(dx, want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("out_channels", [8, 16, 32, 40, 64, 70])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_whole_tiles_written_from_the_registers_hold_the_nchw_values(out_channels, dtype):
    """A channels-last output takes each whole tile straight from the tile's registers (its
    stride the output's channels) and the partial ones through the scratch tile: 13 x 13 output
    pixels and these channel counts make both kinds, whole and half tiles, side by side."""
    rng = np.random.default_rng(out_channels)
    x = rng.standard_normal((2, 5, 26, 26)).astype(dtype)
    weight = rng.standard_normal((out_channels, 5, 3, 3)).astype(dtype)
    bias = rng.standard_normal(out_channels).astype(dtype)
    g = dilated_geometry(26, 26, (3, 3), (2, 2), (1, 1), (1, 1), "t")
    last = tiled.forward(x, weight, bias, g, relu=True, out_last=True)[0]
    nchw = tiled.forward(x, weight, bias, g, relu=True)[0]
    np.testing.assert_array_equal(last, nchw.transpose(0, 2, 3, 1))
    want = im2col.forward(x, weight, bias, g, relu=True)[0]
    np.testing.assert_allclose(nchw, want, rtol=1e-4, atol=1e-4)
