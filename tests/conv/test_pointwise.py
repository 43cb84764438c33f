"""The pointwise strategy (a 1x1 kernel: one GEMM per sample, NCHW in and out) equals the im2col
path and the oracle, strided or not, with and without the fused ReLU, and passes a float64
finite-difference check; ``choose`` takes it for exactly the convolutions it supports. Its pooled
head (``forward_pooled``) equals the convolution, the activation and the global pool one by
one."""

import numpy as np
import pytest
from conftest import in_memory_order, tolerance
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import conv, layers
from cnn_im2col import functional as F
from cnn_im2col.conv import pointwise
from cnn_im2col.conv.pointwise import PointwiseCache
from conv.cases import check_conv_gradients, oracle_conv


@st.composite
def pointwise_cases(draw):
    n, c, o = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    oh, ow = h, w
    bias_mode = draw(st.sampled_from(["tied", "untied", None]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    order = draw(st.sampled_from(["C", "F", "strided"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c, 1, 1)).astype(dtype)
    bias = {"tied": rng.standard_normal(o), "untied": rng.standard_normal((o, oh, ow)), None: None}[
        bias_mode
    ]
    bias = None if bias is None else bias.astype(dtype)
    dout = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    return x, weight, bias, bias_mode, dout, order


@given(case=pointwise_cases(), relu=st.booleans(), input_grad=st.booleans())
def test_pointwise_equals_the_im2col_path_and_the_oracle(case, relu, input_grad):
    x, weight, bias, bias_mode, dout, order = case
    rtol, atol = tolerance(x.dtype)
    results = []
    with pytest.MonkeyPatch.context() as patch:
        for direct in (True, False):
            patch.setattr(conv, "_POINTWISE_DIRECT", direct)
            out, cache = F.conv2d_forward(in_memory_order(x, order), weight, bias, relu=relu)
            assert isinstance(cache, PointwiseCache) == direct
            results.append((out, *F.conv2d_backward(dout, cache, input_grad=input_grad)))
    ref_out, ref_dx, ref_dw = oracle_conv(x, weight, bias, (1, 1), (0, 0), (1, 1), 1, dout)
    if not relu:
        np.testing.assert_allclose(results[0][0], ref_out, rtol, atol)
        np.testing.assert_allclose(results[0][2], ref_dw, rtol, atol)
        if input_grad:
            np.testing.assert_allclose(results[0][1], ref_dx, rtol, atol)
    for a, b in zip(*results):
        if a is None:
            assert b is None
        else:
            assert a.dtype == b.dtype == x.dtype
            np.testing.assert_allclose(a, b, rtol, atol)


@pytest.mark.parametrize("bias_mode", ["tied", "untied", None])
@pytest.mark.parametrize("batch", [1, 40])  # 40 samples of 4x4 maps: the channel-major weight grad
def test_pointwise_gradcheck_float64(bias_mode, batch):
    rng = np.random.default_rng(5)
    h, w = (16, 17) if batch == 1 else (4, 4)  # maps of at least, and of fewer than, 256 pixels
    x = rng.standard_normal((batch, 4, h, w))
    weight = rng.standard_normal((5, 4, 1, 1))
    bias = {"tied": rng.standard_normal(5), "untied": rng.standard_normal((5, h, w)),
            None: None}[bias_mode]
    assert isinstance(check_conv_gradients(x, weight, bias, relu=True), PointwiseCache)


@pytest.mark.parametrize(
    "kernel, kw, pointwise",
    [
        ((1, 1), {}, True),
        ((1, 1), {"stride": 2}, False),
        ((1, 1), {"padding": 1}, False),
        ((1, 1), {"groups": 2}, False),
        ((1, 2), {}, False),
        ((1, 1), {"backend": "numpy"}, False),
    ],
)
def test_choose_takes_pointwise_for_unpadded_ungrouped_1x1_kernels(kernel, kw, pointwise):
    x = np.ones((2, 4, 5, 5), np.float32)
    groups = kw.get("groups", 1)
    weight = np.ones((6, 4 // groups, *kernel), np.float32)
    _, cache = F.conv2d_forward(x, weight, **kw)
    assert isinstance(cache, PointwiseCache) == pointwise


# ------------------------------------------------------------ pooled: a network's head in one pass
@given(n=st.integers(1, 5), c=st.integers(1, 12), o=st.integers(1, 24), h=st.integers(1, 7),
       w=st.integers(1, 7), activation=st.sampled_from(sorted(pointwise.POOLED_ACTIVATIONS,
                                                             key=str)),
       dtype=st.sampled_from([np.float32, np.float64]), with_bias=st.booleans(),
       x_last=st.booleans(), seed=st.integers(0, 2**16))
def test_forward_pooled_equals_the_convolution_its_activation_and_the_pool(
        n, c, o, h, w, activation, dtype, with_bias, x_last, seed):
    """``forward_pooled`` (rows, activation and mean in one pass) against its slow twin: the
    pointwise strategy's NCHW output, the activation layer, then the global average pool; from
    NCHW and channels-last input alike (the same bits: the same rows)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c, h, w)) * 3).astype(dtype)  # every activation's kinks reached
    weight = rng.standard_normal((o, c, 1, 1)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype) if with_bias else None
    out, _ = F.conv2d_forward(x, weight, bias)
    if activation is not None:
        out = getattr(layers, activation)().forward(out)
    expected = out.mean(axis=(2, 3))
    x_in = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x_last else x
    got = pointwise.forward_pooled(x_in, pointwise.pooled_weight(weight), bias, activation,
                                   x_last=x_last)
    assert got.shape == (n, o) and got.dtype == x.dtype
    np.testing.assert_allclose(got, expected, *tolerance(dtype))
    if x_last:
        np.testing.assert_array_equal(
            got, pointwise.forward_pooled(x, pointwise.pooled_weight(weight), bias, activation))


@pytest.mark.parametrize("activation", sorted(pointwise.POOLED_ACTIVATIONS, key=str))
def test_forward_pooled_keeps_a_nan_in_its_sample_only(activation):
    """A NaN in the input comes out as NaN in its own sample's means, through every activation
    (as the layers keep it, so that the network's output check refuses it), and nowhere else."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 2, 2)).astype(np.float32)
    x[1, 2, 0, 1] = np.nan
    weight = rng.standard_normal((5, 4, 1, 1)).astype(np.float32)
    got = pointwise.forward_pooled(x, pointwise.pooled_weight(weight), None, activation)
    assert np.isnan(got[1]).all() and np.isfinite(got[[0, 2]]).all()
