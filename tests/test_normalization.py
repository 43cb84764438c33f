"""normalization: batch normalisation equals the reference in both modes, passes a float64
finite-difference check, and names bad arguments."""

import numpy as np
import pytest
from conftest import in_memory_order, tolerance
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import functional as F
from cnn_im2col import reference
from cnn_im2col.gradcheck import check_function
from cnn_im2col.normalization import batch_norm2d, batch_norm2d_backward


@st.composite
def batch_norm_cases(draw):
    """Small maps, or maps of 256 values and more, which the kernels' first passes read with the
    next sample's map prefetched."""
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    h, w = draw(st.one_of(st.tuples(st.integers(1, 4), st.integers(2, 4)),
                          st.sampled_from([(16, 16), (17, 31), (32, 32)])))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = (rng.standard_normal((n, c, h, w)) * rng.uniform(0.1, 5) + rng.uniform(-3, 3)).astype(dtype)
    affine = draw(st.booleans())
    weight = rng.standard_normal(c).astype(dtype) if affine else None
    bias = rng.standard_normal(c).astype(dtype) if affine else None
    stats = draw(st.booleans())  # fixed (eval) statistics, or the batch's
    mean = rng.standard_normal(c) if stats else None
    var = rng.random(c) + 0.1 if stats else None
    dout = rng.standard_normal(x.shape).astype(dtype)
    return x, weight, bias, mean, var, dout, draw(st.sampled_from(["C", "F", "strided"]))


@given(case=batch_norm_cases())
def test_batch_norm_equals_reference(case):
    x, weight, bias, mean, var, dout, order = case
    rtol, atol = tolerance(x.dtype)
    training = mean is None
    out, cache, used_mean, used_var = F.batch_norm2d_forward(
        in_memory_order(x, order), weight, bias, mean, var
    )
    expected, _, _ = reference.batch_norm2d_forward(x, weight, bias, mean, var, training=training)
    assert out.dtype == x.dtype
    np.testing.assert_allclose(out, expected, rtol, atol)
    if training:
        np.testing.assert_allclose(used_mean, x.astype(np.float64).mean(axis=(0, 2, 3)), rtol, atol)
        np.testing.assert_allclose(used_var, x.astype(np.float64).var(axis=(0, 2, 3)), rtol, atol)
    dx, dweight, dbias = F.batch_norm2d_backward(in_memory_order(dout, order), cache)
    ref_dx, ref_dweight, ref_dbias = reference.batch_norm2d_backward(
        x, dout, weight, mean, var, training=training
    )
    assert dx.dtype == dweight.dtype == dbias.dtype == x.dtype
    # dx of a training batch norm is a difference of sums: scale the tolerance by its inputs' size
    scale = 1.0 if weight is None else max(1.0, float(np.abs(weight).max()))
    np.testing.assert_allclose(dx, ref_dx, rtol, atol * scale * np.sqrt(x.size))
    np.testing.assert_allclose(dweight, ref_dweight, rtol, atol * x.size)
    np.testing.assert_allclose(dbias, ref_dbias, rtol, atol * x.size)


@given(case=batch_norm_cases())
def test_batch_norm_relu_equals_reference_then_relu(case):
    """The fused BatchNorm2D -> ReLU kernels (``relu=True``: the ReLU in the output pass, its
    derivative inside the backward) against the reference followed by a ReLU."""
    x, weight, bias, mean, var, dout, _ = case
    rtol, atol = tolerance(x.dtype)
    training = mean is None
    out, cache, _, _ = batch_norm2d(np.ascontiguousarray(x), weight, bias, mean, var, 1e-5,
                                    relu=True)
    expected, _, _ = reference.batch_norm2d_forward(x, weight, bias, mean, var, training=training)
    np.testing.assert_allclose(out, np.maximum(expected, 0), rtol, atol)
    dx, dweight, dbias = batch_norm2d_backward(dout, cache)
    masked = np.where(out > 0, dout, 0).astype(x.dtype)
    ref_dx, ref_dweight, ref_dbias = reference.batch_norm2d_backward(
        x, masked, weight, mean, var, training=training
    )
    scale = 1.0 if weight is None else max(1.0, float(np.abs(weight).max()))
    np.testing.assert_allclose(dx, ref_dx, rtol, atol * scale * np.sqrt(x.size))
    np.testing.assert_allclose(dweight, ref_dweight, rtol, atol * x.size)
    np.testing.assert_allclose(dbias, ref_dbias, rtol, atol * x.size)


@given(case=batch_norm_cases(), relu=st.booleans())
def test_a_shortcut_joined_in_the_output_pass_equals_the_add_after_it_bit_for_bit(case, relu):
    """``skip`` (a Residual's shortcut, added in the output pass, then the ReLU) gives the bits of
    the plain normalisation, then NumPy's add, then the ReLU; with the ReLU the backward, which
    masks dout by the output's sign, gives those of the plain backward of the masked dout."""
    x, weight, bias, mean, var, dout, _ = case
    x = np.ascontiguousarray(x)
    skip = np.random.default_rng(1).standard_normal(x.shape).astype(x.dtype)
    out, cache, _, _ = batch_norm2d(x, weight, bias, mean, var, 1e-5, relu=relu, skip=skip)
    plain, plain_cache, _, _ = batch_norm2d(x, weight, bias, mean, var, 1e-5)
    added = plain + skip
    np.testing.assert_array_equal(out, np.maximum(added, 0) if relu else added)
    got = batch_norm2d_backward(dout, cache)
    expected = batch_norm2d_backward(np.where(out > 0, dout, 0).astype(x.dtype) if relu else dout,
                                     plain_cache)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fixed", [False, True])
def test_batch_norm_relu_backward_masks_exactly_where_the_forward_output_is_positive(dtype, fixed):
    """The fused backward recomputes ReLU's mask as the sign of x * scale + shift: on inputs within
    a few ulps of the kink (where a fused multiply-add and a rounded product differ), it must be
    the forward's own output's sign, element for element, and the gradient that of the plain
    normalisation's backward of the masked dout. With batch statistics the kink is the batch mean
    (no bias, values paired around it, so that the mean is it to rounding)."""
    rng = np.random.default_rng(7)
    c, shape = 3, (4, 3, 5, 6)
    weight = rng.uniform(0.5, 2, c).astype(dtype)
    if fixed:
        bias = rng.standard_normal(c).astype(dtype)
        mean, var = rng.standard_normal(c), rng.random(c) + 0.5
        scale = weight / np.sqrt(var + 1e-5)
        kink = (mean - bias / scale).astype(dtype)
        steps = rng.integers(-40, 41, shape)
    else:
        bias, mean, var = np.zeros(c, dtype), None, None
        kink = rng.standard_normal(c).astype(dtype)
        half = rng.integers(1, 41, (2, c, 5, 6))
        steps = np.concatenate([half, -half])  # each value's mirror image: the mean is the kink
    x = (kink[None, :, None, None] + steps * np.spacing(np.abs(kink))[None, :, None, None]
         ).astype(dtype)
    out, cache, used_mean, _ = batch_norm2d(x, weight, bias, mean, var, 1e-5, relu=True)
    if not fixed:
        np.testing.assert_allclose(used_mean, kink, rtol=1e-12)
    assert 0 < (out > 0).sum() < out.size  # both sides of the kink are reached
    dout = rng.uniform(0.5, 1.5, x.shape).astype(dtype)  # never 0: dx is 0 only where masked
    dx, dweight, dbias = batch_norm2d_backward(dout, cache)
    if fixed:  # dx = weight * invstd * dout where unmasked
        np.testing.assert_array_equal(dx != 0, out > 0)
    plain_out, plain_cache, _, _ = batch_norm2d(x, weight, bias, mean, var, 1e-5)
    np.testing.assert_array_equal(out, np.maximum(plain_out, 0))
    plain = batch_norm2d_backward(np.where(out > 0, dout, dtype(0)), plain_cache)
    for got, expected in zip((dx, dweight, dbias), plain):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("affine, fixed", [(True, False), (False, False), (True, True)])
def test_batch_norm_gradcheck_float64(affine, fixed):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 3, 2)) * 2 + 1
    weight, bias = (rng.standard_normal(2), rng.standard_normal(2)) if affine else (None, None)
    mean, var = (rng.standard_normal(2), rng.random(2) + 0.5) if fixed else (None, None)
    cache = {}

    def forward(v):
        out, cache["c"], _, _ = F.batch_norm2d_forward(v, weight, bias, mean, var)
        return out

    check_function(forward, lambda d: F.batch_norm2d_backward(d, cache["c"])[0], x)
    # and the parameter gradients, through a forward in the parameter
    if affine:
        dout = rng.standard_normal(x.shape)
        _, c, _, _ = F.batch_norm2d_forward(x, weight, bias, mean, var)
        _, dweight, dbias = F.batch_norm2d_backward(dout, c)
        for param, grad in ((weight, dweight), (bias, dbias)):
            numeric = np.zeros_like(param)
            for k in range(param.size):
                saved = param[k]
                param[k] = saved + 1e-6
                plus = np.sum(F.batch_norm2d_forward(x, weight, bias, mean, var)[0] * dout)
                param[k] = saved - 1e-6
                minus = np.sum(F.batch_norm2d_forward(x, weight, bias, mean, var)[0] * dout)
                param[k] = saved
                numeric[k] = (plus - minus) / 2e-6
            np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"weight": np.ones(3)},
            ValueError,
            (
                r"batch_norm2d: weight must have shape \(2,\), one per channel of x, "
                r"got \(3,\)"
            ),
        ),
        ({"mean": np.zeros(2)}, ValueError, r"batch_norm2d: give both mean and var"),
        ({"mean": np.zeros(2), "var": -np.ones(2)}, ValueError, r"batch_norm2d: var must be >= 0"),
        ({"bias": "a"}, TypeError, r"batch_norm2d: bias must be a real numeric array"),
    ],
)
def test_batch_norm_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        F.batch_norm2d_forward(np.ones((2, 2, 3, 3)), **kwargs)


def test_batch_norm_and_gap_bad_shapes():
    with pytest.raises(ValueError, match=r"batch_norm2d: x must be 4-D, got 2-D"):
        F.batch_norm2d_forward(np.ones((2, 3)))
    _, cache = F.global_avg_pool2d_forward(np.ones((2, 3, 4, 4)))
    with pytest.raises(
        ValueError,
        match=r"global_avg_pool2d: dout must have the output's shape \(2, 3\), got \(2, 4\)",
    ):
        F.global_avg_pool2d_backward(np.ones((2, 4)), cache)
    _, cache, _, _ = F.batch_norm2d_forward(np.ones((2, 2, 3, 3)) * np.arange(3))
    with pytest.raises(
        ValueError, match=r"batch_norm2d: dout must have the output's shape \(2, 2, 3, 3\)"
    ):
        F.batch_norm2d_backward(np.ones((2, 2, 3)), cache)


def test_float32_batch_norm_keeps_its_digits_far_from_zero():
    """Statistics summed in float64: a float32 batch with mean 100 and std 1 (its values carry
    about 5 significant digits about the mean) gets the float64 reference's outputs, input and
    weight gradients to 2e-5 of their scale."""
    rng = np.random.default_rng(3)
    x = (100 + rng.standard_normal((64, 3, 8, 8))).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    weight, bias = np.array([0.5, 1.0, 2.0], np.float32), np.zeros(3, np.float32)
    out, cache, _, _ = F.batch_norm2d_forward(x, weight, bias)
    dx, dweight, _ = F.batch_norm2d_backward(dout, cache)
    ref_out, _, _ = reference.batch_norm2d_forward(x.astype(np.float64), weight, bias, None, None,
                                                   training=True)
    ref_dx, ref_dweight, _ = reference.batch_norm2d_backward(
        x.astype(np.float64), dout.astype(np.float64), weight, None, None, training=True)
    for ours, ref in ((out, ref_out), (dx, ref_dx), (dweight, ref_dweight)):
        assert np.abs(ours - ref).max() <= 2e-5 * np.abs(ref).max()


@given(case=batch_norm_cases(), relu=st.booleans(), joined=st.booleans())
def test_channels_in_blocks_give_the_bits_of_one_channel_at_a_time(monkeypatch_module, case,
                                                                   relu, joined):
    """Small maps are visited a block of channels at a time (a sample's maps of the block side
    by side, ``block_channels``); each channel's sums keep their order, so the outputs, the
    statistics and every gradient equal those of one channel at a time bit for bit."""
    from cnn_im2col import normalization

    x, weight, bias, mean, var, dout, _ = case
    x = np.ascontiguousarray(x)
    skip = np.random.default_rng(2).standard_normal(x.shape).astype(x.dtype) if joined else None
    results = []
    for block_bytes in (normalization._BLOCK_BYTES, 1):
        monkeypatch_module.setattr(normalization, "_BLOCK_BYTES", block_bytes)
        out, cache, used_mean, used_var = batch_norm2d(x, weight, bias, mean, var, 1e-5,
                                                       relu=relu, skip=skip)
        results.append((out, used_mean, used_var, *batch_norm2d_backward(dout, cache)))
    for blocked, single in zip(*results):
        np.testing.assert_array_equal(blocked, single)
