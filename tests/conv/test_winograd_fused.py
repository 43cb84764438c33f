"""winograd_fused: a slice's Winograd forward in one compiled pass equals its slow twin (the input
transform, one BLAS call for the 36 products, the output transform) on hypothesis-drawn shapes,
paddings, bias modes, shortcuts, ReLU, dtypes and chunk sizes; a slice's backward in one compiled
call gives the bits of its steps called from Python; a layer whose forward is fused (V not kept,
rebuilt by backward) gives the unfused layer's outputs and gradients, and its float64 gradients
pass a finite-difference check."""

import numpy as np
import pytest
from conftest import tolerance
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_im2col.conv import winograd, winograd_fused
from cnn_im2col.gradcheck import check_layer
from cnn_im2col.layers import Conv2D
from cnn_im2col.shapes import WindowGeometry


def fused_channels(dtype):
    """Output channel counts (up to 64) whose forward fuses in ``dtype`` on this CPU."""
    return [k for k in (4, 8, 16, 24, 32, 48, 64) if winograd_fused.fuses(k, 1, dtype)]


@st.composite
def fused_cases(draw):
    r = draw(st.sampled_from([3, 5]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(1, 5))
    c = draw(st.integers(1, 20))
    k = draw(st.sampled_from(fused_channels(dtype)))
    pt, pl = draw(st.integers(0, r)), draw(st.integers(0, r))
    h = draw(st.integers(max(1, r - 2 * pt), 13))
    w = draw(st.integers(max(1, r - 2 * pl), 13))
    g = WindowGeometry(r, r, 1, 1, pt, pt, pl, pl, h + 2 * pt - r + 1, w + 2 * pl - r + 1)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = (rng.standard_normal((k, c, r, r)) / r).astype(dtype)
    # (x_last, out_last, pool): a training step's NCHW, a session's channels-last maps, its pool
    x_last, out_last, pool = draw(st.sampled_from([(False, False, False), (True, False, False),
                                                   (False, True, False), (True, True, False),
                                                   (False, False, True), (True, False, True)]))
    bias = draw(st.sampled_from([None, (k,)] if pool else [None, (k,), (k, g.oh, g.ow)]))
    bias = None if bias is None else rng.standard_normal(bias).astype(dtype)
    out_shape = (n, g.oh, g.ow, k) if out_last else (n, k, g.oh, g.ow)
    skip = (rng.standard_normal(out_shape).astype(dtype) if not pool and draw(st.booleans())
            else None)
    return (x, weight, bias, g, draw(st.booleans()), skip, draw(st.integers(1, n)),
            (x_last, out_last, pool))


@settings(deadline=None, max_examples=80)
@given(fused_cases())
def test_the_fused_forward_equals_the_unfused_one(case):
    """In every layout the plans take: NCHW, channels-last in or out (a session's), pooled."""
    x, weight, bias, g, relu, skip, chunk, (x_last, out_last, pool) = case
    p = winograd.plan_forward(x.shape, weight, bias, g, relu=relu, x_last=x_last,
                              out_last=out_last, pool=pool, fuse=True)._replace(chunk=chunk)
    assert p.fused is not None
    if x_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    fused, unfused = np.full(p.out_shape, np.nan, x.dtype), np.empty(p.out_shape, x.dtype)
    assert winograd.slice_forward(x, p, fused, skip, keep=False) is None
    winograd.slice_forward_unfused(x, p, unfused, skip)
    rtol, atol = tolerance(x.dtype)
    np.testing.assert_allclose(fused, unfused, rtol=rtol, atol=atol)
    if relu:
        assert (fused >= 0).all()


@st.composite
def backward_cases(draw):
    r = draw(st.sampled_from([3, 5]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n, c, k = draw(st.integers(1, 4)), draw(st.integers(1, 20)), draw(st.integers(1, 20))
    pad = draw(st.integers(0, r))
    h = draw(st.integers(max(1, r - 2 * pad), 13))
    g = WindowGeometry(r, r, 1, 1, pad, pad, pad, pad, h + 2 * pad - r + 1, h + 2 * pad - r + 1)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, c, h, h)).astype(dtype)
    u = winograd.transform_weight(rng.standard_normal((k, c, r, r)).astype(dtype))
    dout = rng.standard_normal((n, k, g.oh, g.ow)).astype(dtype)
    dout[0, 0, 0, 0] = draw(st.sampled_from([0.0, np.nan, np.inf]))
    y = rng.standard_normal(dout.shape).astype(dtype) if draw(st.booleans()) else None
    shortcut = ((rng.standard_normal(x.shape).astype(dtype),
                 rng.standard_normal(x.shape).astype(dtype)) if draw(st.booleans()) else None)
    return x, u, g, dout, y, shortcut, draw(st.booleans()), draw(st.booleans())


@settings(deadline=None, max_examples=60)
@given(backward_cases())
def test_a_slice_backward_in_one_compiled_call_gives_its_steps_bits(case):
    """dU, the tied bias gradient and dx (the shortcut's gradient added), V kept or made again
    from x, NaN and Inf included: bit for bit the steps called from Python."""
    x, u, g, dout, y, shortcut, kept, input_grad = case
    results = []
    try:
        for one_call in (True, False):
            winograd._ONE_CALL_BACKWARD = one_call
            dx = np.full(x.shape, np.nan, x.dtype) if input_grad else None
            v = winograd.transform_input(x, g) if kept else None
            with np.errstate(invalid="ignore"):  # (NumPy warns of the NaN's products)
                du, tied = winograd.slice_backward(dout, y, v, u, g, dx, 1,
                                                   shortcut if input_grad else None,
                                                   x=None if kept else x)
            results.append((du, tied, dx))
    finally:
        winograd._ONE_CALL_BACKWARD = True
    for one, steps in zip(*results):
        np.testing.assert_array_equal(one, steps)


def test_a_plan_fuses_only_where_the_kernel_applies():
    g = WindowGeometry(3, 3, 1, 1, 1, 1, 1, 1, 8, 8)
    for k in fused_channels(np.float32):
        w = np.ones((k, 4, 3, 3), np.float32)
        assert winograd.plan_forward((2, 4, 8, 8), w, None, g, fuse=True).fused is not None
        for layout in ({"x_last": True, "out_last": True}, {"pool": True}):  # a session's
            assert winograd.plan_forward((2, 4, 8, 8), w, None, g, fuse=True, **layout
                                         ).fused is not None
        # not asked, and grouped products, take the three steps
        assert winograd.plan_forward((2, 4, 8, 8), w, None, g).fused is None
        w2 = np.ones((k, 2, 3, 3), np.float32)
        assert winograd.plan_forward((2, 4, 8, 8), w2, None, g, groups=2, fuse=True).fused is None
    assert not winograd_fused.fuses(5, 1, np.float32)  # not a whole number of lanes
    assert winograd_fused.chunk_samples(64, winograd_fused.CHUNK_BYTES + 1) == 1
    assert winograd_fused.chunk_samples(3, 1) == 3
    # inference fuses from 2 samples on (a single sample's V stays in cache unfused)
    assert not winograd.fuses_inference(1) and winograd.fuses_inference(2)


def counted(monkeypatch):
    """Count the calls of the fused kernels (a plan looks them up when it is made)."""
    calls = []
    for name in ("winograd_fused_f43", "winograd_fused_f25"):
        kernel = getattr(winograd_fused, name)
        monkeypatch.setattr(winograd_fused, name,
                            lambda *a, kernel=kernel: calls.append(1) or kernel(*a))
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_a_fused_layer_trains_as_the_unfused_one(monkeypatch, dtype, kernel_size):
    """Forward fused and V rebuilt by backward, against the unfused forward that keeps V."""
    rng = np.random.default_rng(3)
    k = fused_channels(dtype)[-1]
    x = rng.standard_normal((5, 6, 9, 10)).astype(dtype)
    dout = rng.standard_normal((5, k, 9, 10)).astype(dtype)
    calls = counted(monkeypatch)
    results = []
    for fused in (True, False):
        monkeypatch.setattr(winograd, "_FUSED", fused)
        before = len(calls)
        layer = Conv2D(6, k, kernel_size, padding=kernel_size // 2, algorithm="winograd", seed=1,
                       dtype=dtype)
        out = layer.forward(x, training=True)
        assert (len(calls) > before) == fused
        dx = layer.backward(dout)
        results.append((out, dx, layer.grads["weight"].copy(), layer.grads["bias"].copy()))
    rtol, atol = tolerance(dtype)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_a_fused_layers_float64_gradients_pass_finite_differences(monkeypatch):
    calls = counted(monkeypatch)
    k = fused_channels(np.float64)[0]
    layer = Conv2D(3, k, 3, padding=1, algorithm="winograd", seed=2, dtype=np.float64)
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 7))
    check_layer(layer, x, seed=0, training=True)  # raises GradientCheckError where it fails
    assert calls


@pytest.mark.parametrize("batch", [1, 4])
def test_inference_fuses_from_two_samples_on_and_gives_the_unfused_numbers(monkeypatch, batch):
    """A session's program (channels-last maps, shortcuts joined in the output transform) and
    predict run the fused kernel at batch 4, not at batch 1; both agree with the unfused forward
    to rounding."""
    from cnn_im2col import architectures
    from cnn_im2col.session import InferenceSession

    model = architectures.resnet20(input_shape=(3, 16, 16))
    x = np.random.default_rng(5).random((batch, 3, 16, 16), dtype=np.float32)
    calls = counted(monkeypatch)
    results = []
    for fused in (True, False):
        monkeypatch.setattr(winograd, "_FUSED", fused)
        before = len(calls)
        results.append((InferenceSession(model, (3, 16, 16)).run(x), model.predict(x)))
        assert (len(calls) > before) == (fused and batch >= 2)
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
