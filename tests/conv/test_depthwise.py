"""The direct depthwise kernels equal the grouped im2col path and the grouped/dilated oracle, with
and without the fused ReLU, and pass a float64 finite-difference check."""

import numpy as np
import pytest
from conftest import in_memory_order, tolerance
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import conv
from cnn_im2col import functional as F
from cnn_im2col.conv import depthwise
from cnn_im2col.conv.depthwise import DepthwiseCache
from conv.cases import check_conv_gradients, grouped_dilated_cases, oracle_conv


@st.composite
def depthwise_cases(draw):
    x, weight, bias, bias_mode, stride, padding, dilation, _, dout, order = draw(
        grouped_dilated_cases()
    )
    channels = draw(st.integers(2, 4))  # groups == in_channels == out_channels: the direct kernels
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((x.shape[0], channels, *x.shape[2:])).astype(x.dtype)
    weight = rng.standard_normal((channels, 1, *weight.shape[2:])).astype(x.dtype)
    dout = rng.standard_normal((dout.shape[0], channels, *dout.shape[2:])).astype(x.dtype)
    if bias is not None:
        bias = rng.standard_normal((channels, *bias.shape[1:])).astype(x.dtype)
    return x, weight, bias, bias_mode, stride, padding, dilation, channels, dout, order


@given(case=depthwise_cases(), relu=st.booleans())
def test_depthwise_direct_kernels_equal_the_grouped_gemm_path(monkeypatch_module, case, relu):
    x, weight, bias, bias_mode, stride, padding, dilation, groups, dout, order = case
    rtol, atol = tolerance(x.dtype)
    kw = {
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "groups": groups,
        "relu": relu,
    }
    results = []
    for direct in (True, False):
        monkeypatch_module.setattr(conv, "_DEPTHWISE_DIRECT", direct)
        out, cache = F.conv2d_forward(in_memory_order(x, order), weight, bias, **kw)
        results.append((out, *F.conv2d_backward(dout, cache)))
        assert isinstance(cache, DepthwiseCache) == direct
        ref_out, ref_dx, ref_dw = oracle_conv(
            x, weight, bias, stride, padding, dilation, groups, dout
        )
        if not relu:
            np.testing.assert_allclose(out, ref_out, rtol, atol)
            np.testing.assert_allclose(results[-1][1], ref_dx, rtol, atol)
            np.testing.assert_allclose(results[-1][2], ref_dw, rtol, atol)
    for a, b in zip(*results):
        if a is None:
            assert b is None and bias_mode is None
        else:
            np.testing.assert_allclose(a, b, rtol, atol)


@pytest.mark.parametrize("bias_mode", ["tied", "untied", None])
@pytest.mark.parametrize("plane", [10**9, 0])  # every map channels-last, then none
def test_depthwise_gradcheck_float64(monkeypatch, bias_mode, plane):
    # the direct kernels, whatever the module's earlier tests left patched
    monkeypatch.setattr(conv, "_DEPTHWISE_DIRECT", True)
    monkeypatch.setattr(depthwise, "_CHANNELS_LAST_MAX_PLANE", plane)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 6))
    weight = rng.standard_normal((3, 1, 3, 2))
    kw = {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "groups": 3, "relu": True}
    bias = {"tied": rng.standard_normal(3), "untied": rng.standard_normal((3, 4, 8)), None: None}[
        bias_mode
    ]
    assert isinstance(check_conv_gradients(x, weight, bias, **kw), DepthwiseCache)


@given(case=depthwise_cases(), relu=st.booleans(), input_grad=st.booleans())
def test_channels_last_kernels_equal_the_plane_kernels(monkeypatch_module, case, relu, input_grad):
    """Small maps run channels-last (vectors over the channels), forward and backward; the plane
    kernels (one loop per tap over a map's phase planes) are their twins."""
    x, weight, bias, _, stride, padding, dilation, groups, dout, order = case
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
          "relu": relu}
    results = []
    monkeypatch_module.setattr(conv, "_DEPTHWISE_DIRECT", True)
    for plane in (10**9, 0):  # every map channels-last, then none
        monkeypatch_module.setattr(depthwise, "_CHANNELS_LAST_MAX_PLANE", plane)
        out, cache = F.conv2d_forward(in_memory_order(x, order), weight, bias, **kw)
        assert isinstance(cache, DepthwiseCache)
        results.append((out, *F.conv2d_backward(dout, cache, input_grad=input_grad)))
    for a, b in zip(*results):
        if a is None:
            assert b is None
        else:
            np.testing.assert_allclose(a, b, *tolerance(x.dtype))
