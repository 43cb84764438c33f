"""pooling: max, average and global-average pooling equal the naive-loop oracles of ``reference``
on both backends, pass float64 finite-difference checks, and the fused ReLU -> MaxPool and the
pool's gradient in the convolution's layout equal their twins. PyTorch's ``ceil_mode`` and (max)
``dilation``: equal to a loop written from PyTorch's definition (output size, windows, divisors)
and to PyTorch itself; the layers' config, repr and errors."""

import numpy as np
import pytest
from conftest import in_memory_order, tolerance
from hypothesis import assume, given
from hypothesis import strategies as st

from cnn_im2col import functional as F
from cnn_im2col import pooling, reference
from cnn_im2col.gradcheck import check_function
from cnn_im2col.layers import AvgPool2D, MaxPool2D
from cnn_im2col.model import Sequential
from cnn_im2col.shapes import pool_geometry

BACKENDS = ["numba", "numpy"]


def distinct_from(draw, low, high, other):
    return draw(st.integers(low, high).filter(lambda v: v != other))


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
    out, cache = F.max_pool2d_forward(
        in_memory_order(x, order), kernel, stride, padding, backend=backend
    )
    np.testing.assert_array_equal(out, reference.max_pool2d_forward(x, kernel, stride, padding))
    dx = F.max_pool2d_backward(dout, cache)
    np.testing.assert_allclose(
        dx, reference.max_pool2d_backward(x, dout, kernel, stride, padding), rtol, atol
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("trainable", [False, True])
@given(case=st.one_of(pool_cases(), pool_cases(overlapping=True)))
def test_avg_pool_equals_reference(backend, trainable, case):
    x, kernel, stride, padding, dout, order = case
    rtol, atol = tolerance(x.dtype)
    x = x / x.size  # keep sums of float32 values small enough for a tight tolerance
    scale = np.linspace(0.5, 2.0, x.shape[1]).astype(x.dtype) if trainable else None
    out, cache = F.avg_pool2d_forward(
        in_memory_order(x, order), kernel, stride, padding, scale, backend=backend
    )
    np.testing.assert_allclose(
        out, reference.avg_pool2d_forward(x, kernel, stride, padding, scale), rtol, atol
    )
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
@pytest.mark.parametrize(
    "kernel, stride, padding", [(2, None, 0), (2, 1, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 1))]
)
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
            out, state["cache"] = F.avg_pool2d_forward(
                v, kernel, stride, padding, s, backend=backend
            )
            return out

        check_function(avg_forward, lambda d: F.avg_pool2d_backward(d, state["cache"])[0], x)

    def scale_forward(s):
        out, state["cache"] = F.avg_pool2d_forward(x, kernel, stride, padding, s, backend=backend)
        return out

    check_function(
        scale_forward, lambda d: F.avg_pool2d_backward(d, state["cache"])[1], scale.copy()
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("trainable", [False, True])
@given(case=st.one_of(pool_cases(), pool_cases(overlapping=True)))
def test_avg_pool_excluding_padding_equals_reference(backend, trainable, case):
    x, kernel, stride, padding, dout, order = case
    rtol, atol = tolerance(x.dtype)
    x = x / x.size
    scale = np.linspace(0.5, 2.0, x.shape[1]).astype(x.dtype) if trainable else None
    out, cache = F.avg_pool2d_forward(
        in_memory_order(x, order),
        kernel,
        stride,
        padding,
        scale,
        backend=backend,
        count_include_pad=False,
    )
    expected = reference.avg_pool2d_forward(
        x, kernel, stride, padding, scale, count_include_pad=False
    )
    np.testing.assert_allclose(out, expected, rtol, atol)
    dx, dscale = F.avg_pool2d_backward(dout, cache)
    ref_dx, ref_dscale = reference.avg_pool2d_backward(
        x, dout, kernel, stride, padding, scale, count_include_pad=False
    )
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


@given(
    n=st.integers(1, 3),
    c=st.integers(1, 3),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    dtype=st.sampled_from([np.float32, np.float64]),
    order=st.sampled_from(["C", "F", "strided"]),
    seed=st.integers(0, 2**16),
)
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
    np.testing.assert_allclose(
        dx, reference.avg_pool2d_backward(x, dout[:, :, None, None], (h, w))[0], rtol, atol
    )


def test_global_avg_pool_gradcheck_float64():
    cache = {}

    def forward(v):
        out, cache["c"] = F.global_avg_pool2d_forward(v)
        return out

    check_function(
        forward,
        lambda d: F.global_avg_pool2d_backward(d, cache["c"]),
        np.random.default_rng(1).standard_normal((2, 3, 4, 3)),
    )


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
    out, cache = F.max_pool2d_forward(
        in_memory_order(x, order), kernel, stride, padding, backend=backend, relu=True
    )
    y = F.relu(x)
    ref_out, ref_cache = F.max_pool2d_forward(y, kernel, stride, padding, backend=backend)
    np.testing.assert_array_equal(out, ref_out)
    ref_dx = F.relu_backward(F.max_pool2d_backward(dout, ref_cache), y)
    np.testing.assert_array_equal(F.max_pool2d_backward(dout, cache), ref_dx)


@given(
    case=st.one_of(pool_cases(), pool_cases(overlapping=True)),
    relu=st.booleans(),
    ties=st.booleans(),
)
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
    pooling.max_pool2d_grad_cm_into(
        np.ascontiguousarray(dout), cache.argmax, pooled if relu else None, d_t, sums
    )
    np.testing.assert_allclose(d_t, want, *tolerance(x.dtype))
    np.testing.assert_allclose(sums, want.sum(axis=1, dtype=np.float64), *tolerance(x.dtype))


# ------------------------------------------------------------- ceil_mode and dilation
def out_size(size, k, s, p, d, ceil):
    """PyTorch's pooling output size (aten's pooling_output_shape)."""
    span = d * (k - 1) + 1
    num = size + 2 * p - span
    count = (-(-num // s) if ceil else num // s) + 1
    if ceil and (count - 1) * s >= size + p:
        count -= 1
    return count


def loop_pool(x, dout, k, s, p, d, ceil, kind, count_include_pad=True):
    """(out, dx) by one loop iteration per output cell, from PyTorch's definition."""
    n, c, h, w = x.shape
    oh, ow = out_size(h, k, s, p, d, ceil), out_size(w, k, s, p, d, ceil)
    out = np.zeros((n, c, oh, ow))
    dx = np.zeros(x.shape)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s - p, j * s - p
            rows = [r0 + a * d for a in range(k) if 0 <= r0 + a * d < h]
            cols = [c0 + b * d for b in range(k) if 0 <= c0 + b * d < w]
            window = x[:, :, rows][:, :, :, cols]  # (n, c, len(rows), len(cols))
            if kind == "max" and not (rows and cols):  # a dilated window of padding only
                out[:, :, i, j] = -np.inf  # as PyTorch, and no gradient
            elif kind == "max":
                flat = window.reshape(n, c, -1)
                arg = flat.argmax(axis=2)  # the first maximum in scan order
                out[:, :, i, j] = flat.max(axis=2)
                for a in range(n):
                    for b in range(c):
                        rr, cc = divmod(int(arg[a, b]), len(cols))
                        dx[a, b, rows[rr], cols[cc]] += dout[a, b, i, j]
            else:
                r_end, c_end = min(r0 + k, h + p), min(c0 + k, w + p)
                divisor = ((r_end - r0) * (c_end - c0) if count_include_pad
                           else len(rows) * len(cols))
                out[:, :, i, j] = window.sum(axis=(2, 3)) / divisor
                for rr in rows:
                    for cc in cols:
                        dx[:, :, rr, cc] += dout[:, :, i, j] / divisor
    return out, dx


@st.composite
def ceil_dilation_cases(draw, dilated):
    k = draw(st.integers(1, 4))
    s = draw(st.integers(1, 3))
    p = draw(st.integers(0, k // 2))
    d = draw(st.integers(1, 3)) if dilated else 1
    span = d * (k - 1) + 1
    h = draw(st.integers(max(1, span - 2 * p), 10))
    w = draw(st.integers(max(1, span - 2 * p), 10))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w)).astype(dtype)
    ceil = draw(st.booleans())
    try:  # a dilated window over only padding is refused (test below), not compared
        pool_geometry(h, w, k, s, p, "case", ceil, d)
    except ValueError:
        assume(False)
    return x, k, s, p, d, ceil, rng


def test_a_dilated_window_over_only_padding_is_refused():
    """PyTorch gives -inf there, and its backward aborts the process."""
    x = np.zeros((1, 1, 3, 2), np.float32)
    with pytest.raises(ValueError, match=r"MaxPool2D\(2, stride=1, padding=1, dilation=3\): for "
                                         r"an input of 3x2, the window of output column 0 reads "
                                         r"only padding \(cells \[-1, 2\] of 0..1\)"):
        MaxPool2D(2, 1, 1, dilation=3).forward(x)


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=ceil_dilation_cases(dilated=True))
def test_max_pool_ceil_mode_and_dilation_equal_the_loop(backend, case):
    x, k, s, p, d, ceil, rng = case
    out, cache = F.max_pool2d_forward(x, k, s, p, backend=backend, ceil_mode=ceil, dilation=d)
    dout = rng.standard_normal(out.shape).astype(x.dtype)
    ref_out, ref_dx = loop_pool(x, dout, k, s, p, d, ceil, "max")
    assert out.shape == ref_out.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out, ref_out.astype(x.dtype))
    np.testing.assert_allclose(F.max_pool2d_backward(dout, cache), ref_dx, *tolerance(x.dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("count_include_pad", [True, False])
@given(case=ceil_dilation_cases(dilated=False))
def test_avg_pool_ceil_mode_equals_the_loop(backend, count_include_pad, case):
    x, k, s, p, _, ceil, rng = case
    out, cache = F.avg_pool2d_forward(x, k, s, p, backend=backend, ceil_mode=ceil,
                                      count_include_pad=count_include_pad)
    dout = rng.standard_normal(out.shape).astype(x.dtype)
    ref_out, ref_dx = loop_pool(x, dout, k, s, p, 1, ceil, "avg", count_include_pad)
    assert out.shape == ref_out.shape
    rtol, atol = tolerance(x.dtype)
    np.testing.assert_allclose(out, ref_out, rtol, atol)
    np.testing.assert_allclose(F.avg_pool2d_backward(dout, cache)[0], ref_dx, rtol, atol)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_ceil_mode_and_dilation_gradcheck_float64(kind):
    rng = np.random.default_rng(4)
    x = rng.permutation(2 * 3 * 7 * 8).reshape(2, 3, 7, 8) / 10.0  # distinct: no ties
    if kind == "max":
        def forward(v):
            state["out"], state["cache"] = F.max_pool2d_forward(v, 3, 2, 1, ceil_mode=True,
                                                                dilation=2)
            return state["out"]

        def backward(dout):
            return F.max_pool2d_backward(dout, state["cache"])
    else:
        def forward(v):
            state["out"], state["cache"] = F.avg_pool2d_forward(v, 3, 2, 1, ceil_mode=True)
            return state["out"]

        def backward(dout):
            return F.avg_pool2d_backward(dout, state["cache"])[0]
    state = {}
    check_function(forward, backward, x)


@given(case=ceil_dilation_cases(dilated=True), count_include_pad=st.booleans())
def test_ceil_mode_and_dilation_equal_pytorch(case, count_include_pad):
    torch = pytest.importorskip("torch")
    x, k, s, p, d, ceil, rng = case
    tx = torch.from_numpy(x).requires_grad_(True)
    ours = Sequential([MaxPool2D(k, s, p, ceil_mode=ceil, dilation=d)])
    theirs = torch.nn.functional.max_pool2d(tx, k, s, p, dilation=d, ceil_mode=ceil)
    dout = rng.standard_normal(tuple(theirs.shape)).astype(x.dtype)
    theirs.backward(torch.from_numpy(dout))
    rtol, atol = tolerance(x.dtype)
    np.testing.assert_allclose(ours.forward(x), theirs.detach().numpy(), rtol, atol)
    np.testing.assert_allclose(ours.backward(dout), tx.grad.numpy(), rtol, atol)
    tx.grad = None
    ours = Sequential([AvgPool2D(k, s, p, ceil_mode=ceil, count_include_pad=count_include_pad,
                                 dtype=x.dtype)])
    theirs = torch.nn.functional.avg_pool2d(tx, k, s, p, ceil_mode=ceil,
                                            count_include_pad=count_include_pad)
    dout = rng.standard_normal(tuple(theirs.shape)).astype(x.dtype)
    theirs.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(ours.forward(x), theirs.detach().numpy(), rtol, atol)
    np.testing.assert_allclose(ours.backward(dout), tx.grad.numpy(), rtol, atol)


def test_layers_config_repr_and_errors():
    pool = MaxPool2D(3, 2, ceil_mode=True, dilation=2)
    assert repr(pool) == "MaxPool2D(3, stride=2, ceil_mode=True, dilation=2)"
    back = MaxPool2D.from_config(pool.config())
    assert (back.ceil_mode, back.dilation) == (True, (2, 2))
    assert repr(MaxPool2D(2)) == "MaxPool2D(2)"
    assert AvgPool2D.from_config(AvgPool2D(3, 2, ceil_mode=True).config()).ceil_mode is True
    assert MaxPool2D(3, 2, ceil_mode=True).output_shape((4, 8, 8)) == (4, 4, 4)
    assert MaxPool2D(3, 2).output_shape((4, 8, 8)) == (4, 3, 3)
    with pytest.raises(TypeError, match=r"MaxPool2D: ceil_mode must be True or False, got 1"):
        MaxPool2D(2, ceil_mode=1)
    with pytest.raises(ValueError, match=r"MaxPool2D: dilation must be"):
        MaxPool2D(2, dilation=0)
    with pytest.raises(ValueError, match=r"pooling window \(3, 3\) with dilation \(3, 3\): its "
                                         r"span size \(7, 7\) is larger than the padded input"):
        MaxPool2D(3, dilation=3).output_shape((1, 5, 5))


def test_a_dilated_pool_after_conv_relu_is_not_fused_and_still_right():
    from cnn_im2col.layers import Conv2D, ReLU
    from cnn_im2col.planning import plan

    layers = [Conv2D(2, 3, 3, padding=1, dtype=np.float64, seed=0), ReLU(),
              MaxPool2D(2, 1, dilation=2, ceil_mode=True)]
    assert [step.kind for step in plan(layers)] == ["conv_relu", "layer"]
    assert [step.kind for step in plan(layers[:2] + [MaxPool2D(2, ceil_mode=True)])] == [
        "conv_relu_pool"]
    x = np.random.default_rng(0).standard_normal((2, 2, 7, 7))
    model = Sequential(layers)
    out = model.forward(x, training=True)
    manual = x
    for layer in layers:
        manual = layer.forward(manual, training=True)
    np.testing.assert_array_equal(out, manual)


# ------------------------------------------------------------------ global average pooling
@given(n=st.integers(0, 3), c=st.integers(1, 5), height=st.integers(1, 70),
       width=st.integers(1, 70), dtype=st.sampled_from([np.float32, np.float64]),
       contiguous=st.booleans())
def test_global_avg_pool_sums_as_a_product_and_equals_numpys_mean(n, c, height, width, dtype,
                                                                   contiguous):
    """Maps of up to 4096 pixels are summed by one matrix-vector product, longer ones (and strided
    inputs) by NumPy's mean: both equal the float64 mean to rounding, in the input's dtype."""
    rng = np.random.default_rng(n * 1000 + height * 70 + width)
    x = rng.standard_normal((n, c, height, 2 * width)).astype(dtype)
    x = np.ascontiguousarray(x[..., ::2]) if contiguous else x[..., ::2]
    out, _ = pooling.global_avg_pool2d(x)
    assert out.shape == (n, c) and out.dtype == dtype
    rtol, atol = tolerance(dtype)
    np.testing.assert_allclose(out, x.mean(axis=(2, 3), dtype=np.float64), rtol=rtol, atol=atol)


def test_global_avg_pool_of_a_long_map_keeps_numpys_pairwise_mean():
    x = np.random.default_rng(0).standard_normal((2, 3, 80, 80)).astype(np.float32)
    assert 80 * 80 > pooling._GEMV_MAX_PLANE
    np.testing.assert_array_equal(pooling.global_avg_pool2d(x)[0],
                                  x.mean(axis=(2, 3), dtype=np.float32))


@given(case=st.one_of(pool_cases(), pool_cases(overlapping=True), ceil_dilation_cases(True)),
       relu=st.booleans(), ties=st.booleans(), nan=st.booleans())
def test_the_inference_max_pool_equals_the_pool_with_its_argmax_bit_for_bit(case, relu, ties, nan):
    """``max_pool2d_values`` (inference: no argmax) and a MaxPool2D's inference step give the
    output of ``max_pool2d`` bit for bit: drawn windows, strides, paddings, dilations, ceil mode,
    ties, a NaN, with and without the fused ReLU."""
    if len(case) == 6:
        x, k, s, p, _, _ = case
        d, ceil = 1, False
    else:
        x, k, s, p, d, ceil, _ = case
    x = np.ascontiguousarray(x, dtype=x.dtype)
    if ties:
        x = np.rint(x / max(1.0, float(np.abs(x).max())) * 2).astype(x.dtype)
    if nan:
        x.reshape(-1)[x.size // 2] = np.nan
    layer = MaxPool2D(k, s, p, ceil_mode=ceil, dilation=d)
    g = layer.plan(x.shape)
    want = pooling.max_pool2d(x, g, relu=relu)[0]
    np.testing.assert_array_equal(pooling.max_pool2d_values(x, g, relu=relu), want)
    if not relu:
        from cnn_im2col.blocks import LayerStep

        np.testing.assert_array_equal(LayerStep(layer, 0).infer(x), want)


def test_a_network_predicts_through_the_inference_max_pool_and_a_users_subclass_does_not():
    """predict runs a MaxPool2D and a ReLU -> MaxPool2D after the first step through the
    values-only kernels (no argmax kept); a user's subclass of MaxPool2D keeps its own forward."""
    from cnn_im2col.layers import Identity, ReLU

    class MyPool(MaxPool2D):
        def forward(self, x, training=False):
            return super().forward(x, training) + 1.0

    x = np.random.default_rng(3).standard_normal((2, 3, 6, 6)).astype(np.float32)
    for pool, kind in ((MaxPool2D(2), "layer"), (ReLU(), "relu_pool"), (MyPool(2), "layer")):
        layers = [Identity(), pool] + ([MaxPool2D(2)] if kind == "relu_pool" else [])
        model = Sequential(layers)
        got = model.predict(x)
        assert [s.kind for s in model._inference[0]] == ["layer", kind]
        assert (layers[-1]._cache is not None) == isinstance(pool, MyPool)  # only forward keeps
        np.testing.assert_array_equal(got, model.forward(x))
