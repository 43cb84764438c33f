"""functional: convolution and pooling equal the scipy / naive-loop oracles of ``reference``,
on both backends; every activation passes a float64 finite-difference check."""

import numpy as np
import pytest
from conftest import in_memory_order, tolerance
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import functional as F
from cnn_im2col import reference
from cnn_im2col.gradcheck import check_function

BACKENDS = ["numba", "numpy"]


def distinct_from(draw, low, high, other):
    return draw(st.integers(low, high).filter(lambda v: v != other))


@st.composite
def conv_cases(draw):
    """N, C, O, H, W with KH != KW, sy != sx, ph != pw, every bias mode, both dtypes, three layouts."""
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    kh = draw(st.integers(1, 4))
    kw = distinct_from(draw, 1, 4, kh)
    sy = draw(st.integers(1, 3))
    sx = distinct_from(draw, 1, 3, sy)
    ph = draw(st.integers(0, 2))
    pw = distinct_from(draw, 0, 2, ph)
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    bias = draw(st.sampled_from(["tied", "untied", None]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    order = draw(st.sampled_from(["C", "F", "strided"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c, kh, kw)).astype(dtype)
    oh, ow = (h + 2 * ph - kh) // sy + 1, (w + 2 * pw - kw) // sx + 1
    b = {"tied": rng.standard_normal(o), "untied": rng.standard_normal((o, oh, ow)), None: None}[bias]
    b = None if b is None else b.astype(dtype)
    dout = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    return x, weight, b, bias, (sy, sx), (ph, pw), dout, order


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=conv_cases())
def test_conv2d_forward_and_gradients_equal_reference(backend, case):
    x, weight, bias, bias_mode, stride, padding, dout, order = case
    rtol, atol = tolerance(x.dtype)
    out, cache = F.conv2d_forward(in_memory_order(x, order), weight, bias, stride, padding, backend=backend)
    assert out.dtype == x.dtype and out.flags.c_contiguous
    np.testing.assert_allclose(out, reference.conv2d_forward(x, weight, bias, stride, padding), rtol, atol)

    dx, dweight, dbias = F.conv2d_backward(in_memory_order(dout, order), cache)
    ref_dx, ref_dweight, ref_dbias = reference.conv2d_backward(x, weight, dout, stride, padding, bias=bias_mode)
    np.testing.assert_allclose(dx, ref_dx, rtol, atol)
    np.testing.assert_allclose(dweight, ref_dweight, rtol, atol)
    if bias_mode is None:
        assert dbias is None
    else:
        assert dbias.shape == bias.shape
        np.testing.assert_allclose(dbias, ref_dbias, rtol, atol)


@st.composite
def pool_cases(draw, overlapping=False):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if overlapping:  # the primer's MaxPoolingMap: windows that share pixels
        sy, sx = draw(st.integers(1, max(1, kh - 1))), draw(st.integers(1, max(1, kw - 1)))
    else:
        sy, sx = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h, w = draw(st.integers(max(1, kh - 2 * ph), 9)), draw(st.integers(max(1, kw - 2 * pw), 9))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    order = draw(st.sampled_from(["C", "F", "strided"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    # A permutation: no ties, so the winner of every window is unambiguous.
    x = rng.permutation(n * c * h * w).reshape(n, c, h, w).astype(dtype)
    oh, ow = (h + 2 * ph - kh) // sy + 1, (w + 2 * pw - kw) // sx + 1
    dout = rng.standard_normal((n, c, oh, ow)).astype(dtype)
    return x, (kh, kw), (sy, sx), (ph, pw), dout, order


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=st.one_of(pool_cases(), pool_cases(overlapping=True)))
def test_max_pool_equals_reference(backend, case):
    x, kernel, stride, padding, dout, order = case
    rtol, atol = tolerance(x.dtype)
    out, cache = F.max_pool2d_forward(in_memory_order(x, order), kernel, stride, padding, backend=backend)
    np.testing.assert_array_equal(out, reference.max_pool2d_forward(x, kernel, stride, padding))
    dx = F.max_pool2d_backward(dout, cache)
    np.testing.assert_allclose(dx, reference.max_pool2d_backward(x, dout, kernel, stride, padding), rtol, atol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("trainable", [False, True])
@given(case=st.one_of(pool_cases(), pool_cases(overlapping=True)))
def test_avg_pool_equals_reference(backend, trainable, case):
    x, kernel, stride, padding, dout, order = case
    rtol, atol = tolerance(x.dtype)
    x = x / x.size  # keep sums of float32 values small enough for a tight tolerance
    scale = np.linspace(0.5, 2.0, x.shape[1]).astype(x.dtype) if trainable else None
    out, cache = F.avg_pool2d_forward(in_memory_order(x, order), kernel, stride, padding, scale, backend=backend)
    np.testing.assert_allclose(out, reference.avg_pool2d_forward(x, kernel, stride, padding, scale), rtol, atol)
    dx, dscale = F.avg_pool2d_backward(dout, cache)
    ref_dx, ref_dscale = reference.avg_pool2d_backward(x, dout, kernel, stride, padding, scale)
    np.testing.assert_allclose(dx, ref_dx, rtol, atol)
    if trainable:
        np.testing.assert_allclose(dscale, ref_dscale, rtol, atol)
    else:
        assert dscale is None


def test_max_pool_ties_go_to_the_first_maximum_in_scan_order():
    x = np.ones((1, 1, 2, 2))
    out, cache = F.max_pool2d_forward(x, 2)
    dx = F.max_pool2d_backward(np.ones_like(out), cache)
    np.testing.assert_array_equal(dx[0, 0], [[1, 0], [0, 0]])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias_mode", ["tied", "untied", None])
def test_conv2d_gradcheck_float64(backend, bias_mode):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 5, 6))
    weight = rng.standard_normal((3, 2, 3, 2))
    bias = {"tied": rng.standard_normal(3), "untied": rng.standard_normal((3, 3, 5)), None: None}[bias_mode]
    stride, padding = (2, 1), (1, 0)
    state = {}

    def forward(v):
        out, state["cache"] = F.conv2d_forward(v, weight, bias, stride, padding, backend=backend)
        return out

    check_function(forward, lambda d: F.conv2d_backward(d, state["cache"])[0], x)

    def forward_w(w):
        out, state["cache"] = F.conv2d_forward(x, w, bias, stride, padding, backend=backend)
        return out

    check_function(forward_w, lambda d: F.conv2d_backward(d, state["cache"])[1], weight)
    if bias is not None:
        def forward_b(b):
            out, state["cache"] = F.conv2d_forward(x, weight, b, stride, padding, backend=backend)
            return out

        check_function(forward_b, lambda d: F.conv2d_backward(d, state["cache"])[2], bias)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (2, 1, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 1))])
def test_pool_gradcheck_float64(backend, kernel, stride, padding):
    rng = np.random.default_rng(1)
    x = rng.permutation(2 * 2 * 6 * 7).reshape(2, 2, 6, 7) / 10.0  # distinct values: no ties
    scale = np.array([0.3, -1.2])
    state = {}

    def max_forward(v):
        out, state["cache"] = F.max_pool2d_forward(v, kernel, stride, padding, backend=backend)
        return out

    check_function(max_forward, lambda d: F.max_pool2d_backward(d, state["cache"]), x, eps=1e-7)
    for s in (None, scale):
        def avg_forward(v, s=s):
            out, state["cache"] = F.avg_pool2d_forward(v, kernel, stride, padding, s, backend=backend)
            return out

        check_function(avg_forward, lambda d: F.avg_pool2d_backward(d, state["cache"])[0], x)

    def scale_forward(s):
        out, state["cache"] = F.avg_pool2d_forward(x, kernel, stride, padding, s, backend=backend)
        return out

    check_function(scale_forward, lambda d: F.avg_pool2d_backward(d, state["cache"])[1], scale.copy())


@pytest.mark.parametrize("forward, backward", [
    (F.relu, F.relu_backward), (F.sigmoid, F.sigmoid_backward), (F.tanh, F.tanh_backward),
    (F.softmax, F.softmax_backward)])
def test_activation_gradcheck_float64(forward, backward):
    x = np.random.default_rng(2).standard_normal((4, 5)) * 3
    x[np.abs(x) < 1e-3] = 0.5  # keep away from ReLU's kink
    state = {}

    def f(v):
        state["y"] = forward(v)
        return state["y"]

    check_function(f, lambda d: backward(d, state["y"]), x)


def test_sigmoid_has_no_overflow_for_large_inputs():
    x = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is exact enough
        y = F.sigmoid(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [0, 0, 1.9287e-22, 0.5, 1, 1, 1], rtol=1e-4, atol=0)


def test_softmax_of_huge_logits_is_exact():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = F.softmax(np.array([[1e4, -1e4, 0.0], [5.0, 5.0, 5.0]]))
    np.testing.assert_allclose(y, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]])


@pytest.mark.parametrize("call, error, message", [
    (lambda: F.conv2d_forward(np.zeros((1, 2, 5, 5)), np.zeros((3, 1, 2, 2))), ValueError,
     r"conv2d: x must have 1 channels \(shape \(N, 1, H, W\)\), got shape \(1, 2, 5, 5\)"),
    (lambda: F.conv2d_forward(np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 2, 2)), np.zeros(2)), ValueError,
     r"bias must have shape \(3,\) \(tied\) or \(3, 4, 4\) \(untied"),
    (lambda: F.conv2d_forward(np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 2, 2)), stride=2, padding="same"),
     ValueError, r"padding='same' needs stride 1, got stride \(2, 2\)"),
    (lambda: F.conv2d_forward(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 7, 2))), ValueError,
     r"kernel size \(7, 2\) is larger than the padded input \(5, 5\)"),
    (lambda: F.conv2d_forward(np.full((1, 1, 5, 5), np.nan), np.zeros((1, 1, 2, 2))), ValueError,
     r"conv2d: x contains NaN or Inf"),
    (lambda: F.conv2d_backward(np.zeros((1, 1, 3, 3)), F.conv2d_forward(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 2, 2)))[1]),
     ValueError, r"dout must have the output's shape \(1, 1, 4, 4\), got \(1, 1, 3, 3\)"),
    (lambda: F.max_pool2d_forward(np.zeros((1, 1, 5, 5)), 2, padding=2), ValueError,
     r"max_pool2d: padding must be at most half the window \(1, 1\) for kernel_size \(2, 2\), got \(2, 2\)"),
    (lambda: F.max_pool2d_forward(np.zeros((1, 1, 2, 2)), 3), ValueError,
     r"pooling window size \(3, 3\) is larger than the padded input \(2, 2\)"),
    (lambda: F.avg_pool2d_forward(np.zeros((1, 2, 4, 4)), 2, scale=np.ones(3)), ValueError,
     r"scale must have shape \(2,\), one weight per feature map, got \(3,\)"),
    (lambda: F.conv2d_forward(np.zeros((1, 1, 5, 5), dtype=complex), np.zeros((1, 1, 2, 2))), TypeError,
     r"conv2d: x must be a real numeric array"),
])
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_integer_and_float16_inputs_are_converted():
    weight = np.ones((1, 1, 2, 2), dtype=np.float32)
    for x in (np.arange(9, dtype=np.uint8).reshape(1, 1, 3, 3), np.arange(9, dtype=np.float16).reshape(1, 1, 3, 3)):
        out, _ = F.conv2d_forward(x, weight)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out[0, 0], [[8, 12], [20, 24]])


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("bias_mode", ["tied", "untied", "none"])
def test_conv2d_backward_without_input_grad_gives_the_same_parameter_gradients(backend, bias_mode):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 7, 6))
    w = rng.standard_normal((4, 2, 3, 2))
    bias = {"tied": rng.standard_normal(4), "untied": rng.standard_normal((4, 4, 4)), "none": None}[bias_mode]
    out, cache = F.conv2d_forward(x, w, bias, stride=(2, 2), padding=1, backend=backend)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = F.conv2d_backward(dout, cache)
    none, dw2, db2 = F.conv2d_backward(dout, cache, input_grad=False)
    assert none is None and dx.shape == x.shape
    np.testing.assert_array_equal(dw2, dw)
    if bias is None:
        assert db is None and db2 is None
    else:
        np.testing.assert_array_equal(db2, db)


# --------------------------------------------------------------------------- count_include_pad, GAP, batch norm


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("trainable", [False, True])
@given(case=st.one_of(pool_cases(), pool_cases(overlapping=True)))
def test_avg_pool_excluding_padding_equals_reference(backend, trainable, case):
    x, kernel, stride, padding, dout, order = case
    rtol, atol = tolerance(x.dtype)
    x = x / x.size
    scale = np.linspace(0.5, 2.0, x.shape[1]).astype(x.dtype) if trainable else None
    out, cache = F.avg_pool2d_forward(in_memory_order(x, order), kernel, stride, padding, scale, backend=backend,
                                      count_include_pad=False)
    expected = reference.avg_pool2d_forward(x, kernel, stride, padding, scale, count_include_pad=False)
    np.testing.assert_allclose(out, expected, rtol, atol)
    dx, dscale = F.avg_pool2d_backward(dout, cache)
    ref_dx, ref_dscale = reference.avg_pool2d_backward(x, dout, kernel, stride, padding, scale,
                                                       count_include_pad=False)
    np.testing.assert_allclose(dx, ref_dx, rtol, atol)
    if trainable:
        np.testing.assert_allclose(dscale, ref_dscale, rtol, atol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_avg_pool_excluding_padding_gradcheck_float64(backend):
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 4))
    cache = {}

    def forward(v):
        out, cache["c"] = F.avg_pool2d_forward(v, 3, 2, 1, backend=backend, count_include_pad=False)
        return out

    check_function(forward, lambda d: F.avg_pool2d_backward(d, cache["c"])[0], x)


@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 5), w=st.integers(1, 5),
       dtype=st.sampled_from([np.float32, np.float64]), order=st.sampled_from(["C", "F", "strided"]),
       seed=st.integers(0, 2**16))
def test_global_avg_pool_equals_reference(n, c, h, w, dtype, order, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    dout = rng.standard_normal((n, c)).astype(dtype)
    rtol, atol = tolerance(dtype)
    out, cache = F.global_avg_pool2d_forward(in_memory_order(x, order))
    assert out.shape == (n, c) and out.dtype == dtype
    np.testing.assert_allclose(out, reference.avg_pool2d_forward(x, (h, w))[:, :, 0, 0], rtol, atol)
    dx = F.global_avg_pool2d_backward(dout, cache)
    assert dx.dtype == dtype and dx.flags.c_contiguous
    np.testing.assert_allclose(dx, reference.avg_pool2d_backward(x, dout[:, :, None, None], (h, w))[0], rtol, atol)


def test_global_avg_pool_gradcheck_float64():
    cache = {}

    def forward(v):
        out, cache["c"] = F.global_avg_pool2d_forward(v)
        return out

    check_function(forward, lambda d: F.global_avg_pool2d_backward(d, cache["c"]),
                   np.random.default_rng(1).standard_normal((2, 3, 4, 3)))


@st.composite
def batch_norm_cases(draw):
    n, c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(2, 4))
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
    out, cache, used_mean, used_var = F.batch_norm2d_forward(in_memory_order(x, order), weight, bias, mean, var)
    expected, _, _ = reference.batch_norm2d_forward(x, weight, bias, mean, var, training=training)
    assert out.dtype == x.dtype
    np.testing.assert_allclose(out, expected, rtol, atol)
    if training:
        np.testing.assert_allclose(used_mean, x.astype(np.float64).mean(axis=(0, 2, 3)), rtol, atol)
        np.testing.assert_allclose(used_var, x.astype(np.float64).var(axis=(0, 2, 3)), rtol, atol)
    dx, dweight, dbias = F.batch_norm2d_backward(in_memory_order(dout, order), cache)
    ref_dx, ref_dweight, ref_dbias = reference.batch_norm2d_backward(x, dout, weight, mean, var, training=training)
    assert dx.dtype == dweight.dtype == dbias.dtype == x.dtype
    # dx of a training batch norm is a difference of sums: scale the tolerance by its inputs' size
    scale = 1.0 if weight is None else max(1.0, float(np.abs(weight).max()))
    np.testing.assert_allclose(dx, ref_dx, rtol, atol * scale * np.sqrt(x.size))
    np.testing.assert_allclose(dweight, ref_dweight, rtol, atol * x.size)
    np.testing.assert_allclose(dbias, ref_dbias, rtol, atol * x.size)


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


@pytest.mark.parametrize("kwargs, error, message", [
    ({"weight": np.ones(3)}, ValueError, (r"batch_norm2d: weight must have shape \(2,\), one per channel of x, "
                                         r"got \(3,\)")),
    ({"mean": np.zeros(2)}, ValueError, r"batch_norm2d: give both mean and var"),
    ({"mean": np.zeros(2), "var": -np.ones(2)}, ValueError, r"batch_norm2d: var must be >= 0"),
    ({"bias": "a"}, TypeError, r"batch_norm2d: bias must be a real numeric array"),
])
def test_batch_norm_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        F.batch_norm2d_forward(np.ones((2, 2, 3, 3)), **kwargs)


def test_batch_norm_and_gap_bad_shapes():
    with pytest.raises(ValueError, match=r"batch_norm2d: x must be 4-D, got 2-D"):
        F.batch_norm2d_forward(np.ones((2, 3)))
    _, cache = F.global_avg_pool2d_forward(np.ones((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"global_avg_pool2d: dout must have the output's shape \(2, 3\), got \(2, 4\)"):
        F.global_avg_pool2d_backward(np.ones((2, 4)), cache)
    _, cache, _, _ = F.batch_norm2d_forward(np.ones((2, 2, 3, 3)) * np.arange(3))
    with pytest.raises(ValueError, match=r"batch_norm2d: dout must have the output's shape \(2, 2, 3, 3\)"):
        F.batch_norm2d_backward(np.ones((2, 2, 3)), cache)


# --------------------------------------------------------------------------- dilation and groups
# The oracle is the existing reference convolution, which knows neither: a dilated kernel is the
# kernel with DY-1 / DX-1 zeros between its cells, and a grouped convolution is one convolution per
# group, concatenated over the output channels.


def dilate_kernel(weight, dilation):
    dy, dx = dilation
    o, c, kh, kw = weight.shape
    out = np.zeros((o, c, dy * (kh - 1) + 1, dx * (kw - 1) + 1), dtype=weight.dtype)
    out[:, :, ::dy, ::dx] = weight
    return out


def same_padding(kernel, dilation):
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    tops = [(s - 1) // 2 for s in spans]
    return tops, [s - 1 - t for s, t in zip(spans, tops)]


def oracle_conv(x, weight, bias, stride, padding, dilation, groups, dout):
    """(out, dx, dweight) from reference.conv2d_forward/backward, group by group, dilated kernel."""
    if padding == "same":
        tops, bottoms = same_padding(weight.shape[2:], dilation)
        x = np.pad(x, ((0, 0), (0, 0), (tops[0], bottoms[0]), (tops[1], bottoms[1])))
        padding, crop = 0, (tops, bottoms)
    else:
        crop = None
    wd = dilate_kernel(weight, dilation)
    cg, og = x.shape[1] // groups, weight.shape[0] // groups
    outs, dxs, dws = [], [], []
    for g in range(groups):
        xg, wg = x[:, g * cg:(g + 1) * cg], wd[g * og:(g + 1) * og]
        outs.append(reference.conv2d_forward(xg, wg, None, stride, padding))
        dxg, dwg, _ = reference.conv2d_backward(xg, wg, dout[:, g * og:(g + 1) * og], stride, padding, bias=None)
        dxs.append(dxg)
        dws.append(dwg[:, :, ::dilation[0], ::dilation[1]])
    out, dx, dw = np.concatenate(outs, axis=1), np.concatenate(dxs, axis=1), np.concatenate(dws, axis=0)
    if bias is not None:
        out = out + (bias[:, None, None] if bias.ndim == 1 else bias)
    if crop is not None:
        (t0, t1), (b0, b1) = crop
        dx = dx[:, :, t0:dx.shape[2] - b0, t1:dx.shape[3] - b1]
    return out, dx, dw


@st.composite
def grouped_dilated_cases(draw):
    groups = draw(st.integers(1, 3))
    c, o = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    n = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    if stride == (1, 1) and draw(st.booleans()):
        padding = "same"
        pads = same_padding((kh, kw), dilation)
        pads = [(pads[0][0], pads[1][0]), (pads[0][1], pads[1][1])]
    else:
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        pads = [(padding[0], padding[0]), (padding[1], padding[1])]
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    h = draw(st.integers(max(1, span[0] - sum(pads[0])), 9))
    w = draw(st.integers(max(1, span[1] - sum(pads[1])), 9))
    oh = (h + sum(pads[0]) - span[0]) // stride[0] + 1
    ow = (w + sum(pads[1]) - span[1]) // stride[1] + 1
    bias_mode = draw(st.sampled_from(["tied", "untied", None]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    order = draw(st.sampled_from(["C", "F", "strided"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c // groups, kh, kw)).astype(dtype)
    bias = {"tied": rng.standard_normal(o), "untied": rng.standard_normal((o, oh, ow)), None: None}[bias_mode]
    bias = None if bias is None else bias.astype(dtype)
    dout = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    return x, weight, bias, bias_mode, stride, padding, dilation, groups, dout, order


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=grouped_dilated_cases())
def test_dilated_grouped_conv2d_equals_the_reference_of_its_groups(backend, case):
    x, weight, bias, bias_mode, stride, padding, dilation, groups, dout, order = case
    rtol, atol = tolerance(x.dtype)
    out, cache = F.conv2d_forward(in_memory_order(x, order), weight, bias, stride, padding, backend=backend,
                                  dilation=dilation, groups=groups)
    ref_out, ref_dx, ref_dw = oracle_conv(x, weight, bias, stride, padding, dilation, groups, dout)
    assert out.shape == ref_out.shape and out.dtype == x.dtype and out.flags.c_contiguous
    np.testing.assert_allclose(out, ref_out, rtol, atol)
    assert F.conv2d_output_shape(x.shape[1:], weight.shape, stride, padding, dilation=dilation,
                                 groups=groups) == out.shape[1:]
    dx, dweight, dbias = F.conv2d_backward(in_memory_order(dout, order), cache)
    np.testing.assert_allclose(dx, ref_dx, rtol, atol)
    np.testing.assert_allclose(dweight, ref_dw, rtol, atol)
    if bias_mode is None:
        assert dbias is None
    else:
        np.testing.assert_allclose(dbias, dout.sum(axis=(0, 2, 3)) if bias_mode == "tied" else dout.sum(axis=0),
                                   rtol, atol)


@given(case=grouped_dilated_cases(), relu=st.booleans())
def test_fast_path_equals_the_numpy_twin_with_fused_relu(case, relu):
    """The Numba blocks (any slicing of the batch) against the NumPy twin, the fused ReLU included:
    out = ReLU(conv) and the gradients are those of conv at dout * (out > 0)."""
    x, weight, bias, _, stride, padding, dilation, groups, dout, _ = case
    rtol, atol = tolerance(x.dtype)
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    fast, fast_cache = F.conv2d_forward(x, weight, bias, relu=relu, **kw)
    twin, twin_cache = F.conv2d_forward(x, weight, bias, backend="numpy", relu=relu, **kw)
    plain, plain_cache = F.conv2d_forward(x, weight, bias, backend="numpy", **kw)
    np.testing.assert_allclose(fast, twin, rtol, atol)
    np.testing.assert_allclose(twin, np.maximum(plain, 0) if relu else plain, rtol, atol)
    masked = np.where(plain > 0, dout, 0) if relu else dout
    for a, b, c in zip(F.conv2d_backward(dout, fast_cache), F.conv2d_backward(dout, twin_cache),
                       F.conv2d_backward(masked, plain_cache)):
        if c is None:
            assert a is None and b is None
            continue
        np.testing.assert_allclose(a, b, rtol, atol)
        np.testing.assert_allclose(b, c, rtol, atol)


@pytest.mark.parametrize("keep_cols", [True, False])
def test_conv2d_slices_of_the_batch_do_not_change_the_result(monkeypatch, keep_cols):
    """Tiny slices (one sample each) and one slice for the whole batch give the same numbers."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 2))
    dout = rng.standard_normal((5, 6, 7, 4))
    results = []
    for chunk in (1, 2**40):
        monkeypatch.setattr(F, "_CHUNK_BYTES", chunk)
        out, cache = F.conv2d_forward(x, w, np.arange(6.0), 1, (1, 0), groups=2, dilation=(1, 2),
                                      keep_cols=keep_cols)
        results.append((out, *F.conv2d_backward(dout, cache)))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, 1e-12, 1e-12)


@pytest.mark.parametrize("bias_mode", ["tied", "untied", None])
@pytest.mark.parametrize("relu", [False, True])
def test_dilated_grouped_conv2d_gradcheck_float64(bias_mode, relu):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 6))
    weight = rng.standard_normal((6, 2, 2, 3))
    kw = {"stride": (1, 2), "padding": (2, 1), "dilation": (2, 1), "groups": 2, "relu": relu}
    bias = {"tied": rng.standard_normal(6), "untied": rng.standard_normal((6, 9, 3)), None: None}[bias_mode]
    state = {}

    def forward(v):
        out, state["cache"] = F.conv2d_forward(v, weight, bias, **kw)
        return out

    check_function(forward, lambda d: F.conv2d_backward(d, state["cache"])[0], x)

    def forward_w(w):
        out, state["cache"] = F.conv2d_forward(x, w, bias, **kw)
        return out

    check_function(forward_w, lambda d: F.conv2d_backward(d, state["cache"])[1], weight)


@given(case=grouped_dilated_cases())
def test_dilated_grouped_conv2d_equals_torch(case):
    torch = pytest.importorskip("torch")
    x, weight, bias, bias_mode, stride, padding, dilation, groups, dout, _ = case
    if bias_mode == "untied":
        bias = None
    rtol, atol = tolerance(x.dtype)
    out, cache = F.conv2d_forward(x, weight, bias, stride, padding, dilation=dilation, groups=groups)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(weight, requires_grad=True)
    tb = None if bias is None else torch.tensor(bias, requires_grad=True)
    t_out = torch.nn.functional.conv2d(tx, tw, tb, stride, padding, dilation, groups)
    t_out.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol, atol)
    dx, dweight, dbias = F.conv2d_backward(dout, cache)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol, atol)
    np.testing.assert_allclose(dweight, tw.grad.numpy(), rtol, atol)
    if bias is not None:
        np.testing.assert_allclose(dbias, tb.grad.numpy(), rtol, atol)


# --------------------------------------------------------------------------- fused ReLU -> MaxPool


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=st.one_of(pool_cases(), pool_cases(overlapping=True)), ties=st.booleans())
def test_fused_relu_max_pool_equals_relu_then_max_pool(backend, case, ties):
    """Outputs and gradients identical to ReLU then MaxPool, ties included (small integers give
    many equal values, negatives become equal zeros after the ReLU)."""
    x, kernel, stride, padding, dout, order = case
    if ties:
        x = (np.random.default_rng(int(x.sum()) % 1000).integers(-2, 3, x.shape)).astype(x.dtype)
    else:
        x = x - x.mean()
    out, cache = F.max_pool2d_forward(in_memory_order(x, order), kernel, stride, padding, backend=backend, relu=True)
    y = F.relu(x)
    ref_out, ref_cache = F.max_pool2d_forward(y, kernel, stride, padding, backend=backend)
    np.testing.assert_array_equal(out, ref_out)
    ref_dx = F.relu_backward(F.max_pool2d_backward(dout, ref_cache), y)
    np.testing.assert_array_equal(F.max_pool2d_backward(dout, cache), ref_dx)


@given(case=st.one_of(pool_cases(), pool_cases(overlapping=True)), relu=st.booleans(), ties=st.booleans())
def test_max_pool_gradient_in_conv_layout_equals_route_then_transpose(case, relu, ties):
    """max_pool2d_grad_cm_into (the fused conv-relu-pool backward) equals its twin: the pool's
    backward into (N, C, H, W), then the ReLU's derivative, the transpose to (C, N*H*W) and the
    row sums (overlapping and padded windows accumulate; ties from a ReLU's zeros)."""
    x, kernel, stride, padding, dout, _ = case
    if ties:
        x = (np.random.default_rng(int(x.sum()) % 1000).integers(-2, 3, x.shape)).astype(x.dtype)
    y = F.relu(x - x.mean()) if relu else x  # the conv's output, after its fused ReLU or not
    pooled, cache = F.max_pool2d_forward(y, kernel, stride, padding)
    n, c, h, w = y.shape
    dy = F.max_pool2d_backward(dout, cache)
    if relu:
        dy = np.where(y > 0, dy, 0)
    want = dy.transpose(1, 0, 2, 3).reshape(c, n * h * w)
    d_t, sums = np.full((c, n * h * w), np.nan, dtype=x.dtype), np.full(c, np.nan)
    F.max_pool2d_grad_cm_into(np.ascontiguousarray(dout), cache.argmax, pooled if relu else None, d_t, sums)
    np.testing.assert_allclose(d_t, want, *tolerance(x.dtype))
    np.testing.assert_allclose(sums, want.sum(axis=1, dtype=np.float64), *tolerance(x.dtype))


@st.composite
def depthwise_cases(draw):
    x, weight, bias, bias_mode, stride, padding, dilation, _, dout, order = draw(grouped_dilated_cases())
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
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups, "relu": relu}
    results = []
    for direct in (True, False):
        monkeypatch_module.setattr(F, "_DEPTHWISE_DIRECT", direct)
        out, cache = F.conv2d_forward(in_memory_order(x, order), weight, bias, **kw)
        results.append((out, *F.conv2d_backward(dout, cache)))
        assert (cache.cols is None) == direct
        ref_out, ref_dx, ref_dw = oracle_conv(x, weight, bias, stride, padding, dilation, groups, dout)
        if not relu:
            np.testing.assert_allclose(out, ref_out, rtol, atol)
            np.testing.assert_allclose(results[-1][1], ref_dx, rtol, atol)
            np.testing.assert_allclose(results[-1][2], ref_dw, rtol, atol)
    for a, b in zip(*results):
        if a is None:
            assert b is None and bias_mode is None
        else:
            np.testing.assert_allclose(a, b, rtol, atol)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.mark.parametrize("bias_mode", ["tied", "untied", None])
def test_depthwise_gradcheck_float64(bias_mode):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 6))
    weight = rng.standard_normal((3, 1, 3, 2))
    kw = {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "groups": 3, "relu": True}
    bias = {"tied": rng.standard_normal(3), "untied": rng.standard_normal((3, 4, 8)), None: None}[bias_mode]
    state = {}
    for index, (name, value) in enumerate((("x", x), ("weight", weight), ("bias", bias))):
        if value is None:
            continue

        def forward(v, name=name):
            args = {"x": x, "weight": weight, "bias": bias, name: v}
            out, state["cache"] = F.conv2d_forward(args["x"], args["weight"], args["bias"], **kw)
            return out

        check_function(forward, lambda d, index=index: F.conv2d_backward(d, state["cache"])[index], value)


@given(groups=st.sampled_from([1, 2, 3]), o=st.integers(1, 12), r=st.integers(1, 30), length=st.integers(1, 700),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_weight_grad_dot_products_equal_the_blas_product(monkeypatch_module, groups, o, r, length, dtype, seed):
    """The conv's weight gradients, small (Numba dot products) or not (BLAS), equal each group's
    d_t @ cols_t.T in float64."""
    rng = np.random.default_rng(seed)
    d_t = rng.standard_normal((groups * o, length)).astype(dtype)
    cols_t = rng.standard_normal((groups * r, length)).astype(dtype)
    want = np.concatenate([d_t[g * o:(g + 1) * o].astype(np.float64) @ cols_t[g * r:(g + 1) * r].T.astype(np.float64)
                           for g in range(groups)])
    rtol, atol = (1e-4, 1e-4 * np.sqrt(length)) if dtype == np.float32 else (1e-10, 1e-10 * np.sqrt(length))
    for limit in (0, 1024):  # BLAS for every group; then Numba's dot products where small (the default)
        monkeypatch_module.setattr(F, "_DOT_GRAD_MAX", limit)
        got = F._weight_grad(d_t, cols_t, groups)
        assert got.dtype == dtype and got.shape == (groups * o, r)
        np.testing.assert_allclose(got, want, rtol, atol)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("limit", [0, 1024])
def test_weight_grad_passes_a_non_finite_gradient_on(monkeypatch, bad, limit):
    """A NaN or Inf in dZ comes out of the weight gradient as non-finite on both paths (BLAS and
    the Numba dot products), so the training guard sees it instead of finite garbage."""
    monkeypatch.setattr(F, "_DOT_GRAD_MAX", limit)
    d_t = np.ones((3, 50), dtype=np.float32)
    d_t[1, 17] = bad
    got = F._weight_grad(d_t, np.ones((5, 50), dtype=np.float32), 1)
    assert not np.isfinite(got[1]).any() and np.isfinite(np.delete(got, 1, axis=0)).all()


@pytest.mark.parametrize("rows", [3, 4, 65])
def test_gemm_split_over_the_pool_equals_one_product(monkeypatch, rows):
    rng = np.random.default_rng(rows)
    a, b = rng.standard_normal((rows, 17)), rng.standard_normal((17, 9))
    monkeypatch.setattr(F, "_PARALLEL_GEMM_MACS", 1)  # split even these (when there are 2+ threads)
    np.testing.assert_allclose(F.gemm(a, b), a @ b, rtol=1e-12)
    np.testing.assert_allclose(F.gemm(a.astype(np.float32), b.astype(np.float32)), (a @ b).astype(np.float32),
                               rtol=1e-5, atol=1e-5)
