"""The direct strategy of a 3x3 or 5x5 convolution with few input channels (``conv/direct.py``)
equals its twin, the im2col path, and the oracle, on drawn shapes, strides, dilations, paddings,
biases and dtypes, with and without the fused ReLU and a per-slice ``then``, and gives the tiled
kernel's bits in every layout; its backward (im2col's, from the kept input) passes a float64
finite-difference check; ``choose`` takes it for exactly the convolutions it supports, under
``algorithm="auto"``."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cnn_im2col import conv
from cnn_im2col import functional as F
from cnn_im2col.conv import direct, tiled
from cnn_im2col.shapes import dilated_geometry
from conv.cases import check_conv_gradients, check_strategy_against_im2col, draw_conv_case


@st.composite
def few_channel_cases(draw):
    """A convolution the direct strategy takes: few input channels, any 3x3 or 5x5 geometry."""
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, direct.MAX_CHANNELS)), draw(
        st.integers(1, 9))  # groups of four output maps and the rest
    k = draw(st.sampled_from([3, 5]))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    return draw_conv_case(draw, n, c, o, (k, k), stride, dilation, padding)


@given(case=few_channel_cases(), relu=st.booleans(), input_grad=st.booleans())
def test_the_direct_kernel_equals_the_im2col_path_and_the_oracle(case, relu, input_grad):
    check_strategy_against_im2col(case, relu, input_grad, direct)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("bias_mode", ["tied", "untied", None])
def test_direct_gradcheck_float64(bias_mode, k):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 6))
    weight = rng.standard_normal((5, 3, k, k))
    kw = {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "relu": True}
    oh, ow = (7 + 2 - (k - 1) - 1) // 2 + 1, 6 + 4 - 2 * (k - 1)
    bias = {"tied": rng.standard_normal(5), "untied": rng.standard_normal((5, oh, ow)),
            None: None}[bias_mode]
    cache = check_conv_gradients(x, weight, bias, **kw)
    assert conv.choose("auto", "numba", weight.shape, cache.geometry, 1, 3, 2, "t") is direct


def test_choose_takes_the_direct_kernel_for_few_channel_3x3_and_5x5_kernels_under_auto_only():
    g = dilated_geometry(32, 32, (3, 3), (1, 1), (1, 1), (1, 1), "t")
    assert conv.choose("auto", "numba", (16, 3, 3, 3), g, 1, 3, 64, "t") is direct
    assert conv.choose("auto", "numba", (16, 4, 3, 3), g, 1, 4, 64, "t") is direct
    assert conv.choose("im2col", "numba", (16, 3, 3, 3), g, 1, 3, 64, "t") is conv.im2col
    assert conv.choose("winograd", "numba", (16, 3, 3, 3), g, 1, 3, 64, "t") is conv.winograd
    assert conv.choose("auto", "numpy", (16, 3, 3, 3), g, 1, 3, 64, "t") is conv.im2col
    assert conv.choose("auto", "numba", (16, 5, 3, 3), g, 1, 5, 64, "t") is not direct
    assert conv.choose("auto", "numba", (16, 2, 3, 3), g, 2, 4, 64, "t") is not direct  # groups
    g5 = dilated_geometry(32, 32, (5, 5), (1, 1), (1, 1), (2, 2), "t")
    assert conv.choose("auto", "numba", (16, 3, 5, 5), g5, 1, 3, 64, "t") is direct
    g7 = dilated_geometry(32, 32, (7, 7), (1, 1), (1, 1), (3, 3), "t")
    assert conv.choose("auto", "numba", (16, 3, 7, 7), g7, 1, 3, 64, "t") is not direct
    g1 = dilated_geometry(32, 32, (1, 1), (2, 2), (1, 1), (0, 0), "t")
    assert conv.choose("auto", "numba", (16, 3, 1, 1), g1, 1, 3, 64, "t") is not direct
    s2 = dilated_geometry(64, 64, (3, 3), (2, 2), (1, 1), (1, 1), "t")  # a MobileNet's stem
    assert conv.choose("auto", "numba", (16, 3, 3, 3), s2, 1, 3, 32, "t") is direct


@given(case=few_channel_cases())
def test_the_pooled_kernel_equals_the_direct_kernel_then_relu_and_a_2x2_max_pool(case):
    """``forward_relu_pool2`` (inference: the pool taken from the sums in cache) against its
    twin, the direct kernel with its ReLU and then the engine's max pool, bit for bit (the same
    sums, and the maximum of four values whatever the order); odd sides drop their last row or
    column, and ties and zeros (integer inputs) pick the same value."""
    x, weight, bias, stride, padding, dilation, _, _ = case
    g = dilated_geometry(x.shape[2], x.shape[3], weight.shape[2:], stride, dilation, padding, "t")
    if min(g.oh, g.ow) < 2:
        return  # no 2x2 window fits
    for inputs in (x, np.rint(x)):
        y, _ = direct.forward(inputs, weight, bias, g, relu=True)
        want = F.max_pool2d_forward(y, 2, stride=2)[0]
        got = direct.forward_relu_pool2(inputs, weight, bias, g)
        assert got.shape == (x.shape[0], weight.shape[0], g.oh // 2, g.ow // 2)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@given(case=few_channel_cases(), relu=st.booleans())
def test_the_tiled_kernel_gives_the_direct_kernels_bits(case, relu):
    """Both sum a value's bias, then its taps in the weight's order, one multiply-add each: a
    session runs a direct-strategy convolution in tiles where it reads or writes channels-last maps
    (``program._conv_run``), and its numbers must stay those of ``Sequential.infer``, which runs
    the direct kernel. In every layout, for a tied bias or none (an untied one stays direct)."""
    x, weight, bias, stride, padding, dilation, _, _ = case
    assume(bias is None or bias.ndim == 1)
    g = dilated_geometry(x.shape[2], x.shape[3], weight.shape[2:], stride, dilation, padding, "t")
    want = direct.forward(x, weight, bias, g, relu=relu)[0]
    x_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    for inputs, from_last in ((x, False), (x_last, True)):
        layout = tiled.tile_layout(weight, bias, g, x_last=from_last)
        nchw = tiled.forward(inputs, weight, bias, g, relu=relu, layout=layout, x_last=from_last)[0]
        last = tiled.forward(inputs, weight, bias, g, relu=relu, layout=layout, x_last=from_last,
                             out_last=True)[0]
        np.testing.assert_array_equal(nchw, want)
        np.testing.assert_array_equal(last, want.transpose(0, 2, 3, 1))
