"""winograd: F(4x4, 3x3) and F(2x2, 5x5) equal im2col and the scipy reference on hypothesis-drawn
shapes, paddings, bias modes, dtypes and slicings; the weight transform and the matrices equal the
textbook products; the gradients pass a float64 finite-difference check; "auto" chooses them only
where they apply and pay. (Their compiled transforms: ``test_winograd_kernels.py``.)"""

import numpy as np
import pytest
from conftest import in_memory_order, tolerance
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import conv, reference
from cnn_im2col import functional as F
from cnn_im2col.conv import winograd
from cnn_im2col.gradcheck import check_function
from cnn_im2col.layers import Conv2D
from cnn_im2col.shapes import WindowGeometry


@st.composite
def winograd_cases(draw):
    """3x3 and 5x5 stride-1 convolutions: odd and even sizes (the last tile row/column sticks out),
    every padding from none to more than the kernel, "same", every bias mode, both dtypes, three
    layouts."""
    r = draw(st.sampled_from([3, 5]))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    n = draw(st.integers(1, 3))
    c, o = groups * draw(st.integers(1, 5 // groups)), groups * draw(st.integers(1, 5 // groups))
    if draw(st.booleans()):
        padding, pads = "same", (r // 2, r // 2)
    else:
        padding = pads = (draw(st.integers(0, r)), draw(st.integers(0, r)))
    h = draw(st.integers(max(1, r - 2 * pads[0]), 12))
    w = draw(st.integers(max(1, r - 2 * pads[1]), 12))
    oh, ow = h + 2 * pads[0] - r + 1, w + 2 * pads[1] - r + 1
    bias_mode = draw(st.sampled_from(["tied", "untied", None]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    order = draw(st.sampled_from(["C", "F", "strided"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c // groups, r, r)).astype(dtype)
    bias = {"tied": rng.standard_normal(o), "untied": rng.standard_normal((o, oh, ow)), None: None}[
        bias_mode
    ]
    bias = None if bias is None else bias.astype(dtype)
    dout = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    return x, weight, bias, bias_mode, padding, dout, order, groups


def dense_weight(weight, groups):
    """A grouped weight (O, C/G, r, r) as the dense (O, C, r, r) with zeros between the groups:
    what the reference (which has no groups) computes the same convolution with."""
    o, cg = weight.shape[:2]
    dense = np.zeros((o, cg * groups, *weight.shape[2:]), weight.dtype)
    for k in range(o):
        group = k // (o // groups)
        dense[k, group * cg : (group + 1) * cg] = weight[k]
    return dense


def grouped_part(dense_grad, groups):
    """The inverse of ``dense_weight`` for a gradient: each filter's own group's channels."""
    o, c = dense_grad.shape[:2]
    cg = c // groups
    return np.stack(
        [dense_grad[k, (k // (o // groups)) * cg : (k // (o // groups) + 1) * cg] for k in range(o)]
    )


@given(
    case=winograd_cases(),
    relu=st.booleans(),
    keep_cols=st.booleans(),
    chunk=st.sampled_from([1, 2**40]),
)
def test_winograd_equals_im2col_and_the_reference(monkeypatch_module, case, relu, keep_cols, chunk):
    """Forward and every gradient, against the im2col path and against scipy's loops (the fused
    ReLU's gradients are those of the plain convolution at dout * (out > 0)), one sample per slice
    or the whole batch in one."""
    x, weight, bias, bias_mode, padding, dout, order, groups = case
    rtol, atol = tolerance(x.dtype)
    monkeypatch_module.setattr(winograd, "_SLICE_BYTES", chunk)
    kw = {"padding": padding, "relu": relu, "keep_cols": keep_cols, "groups": groups}
    fast, fast_cache = F.conv2d_forward(
        in_memory_order(x, order), weight, bias, algorithm="winograd", **kw
    )
    twin, twin_cache = F.conv2d_forward(x, weight, bias, algorithm="im2col", **kw)
    assert isinstance(fast_cache, winograd.WinogradCache) and not isinstance(
        twin_cache, winograd.WinogradCache
    )
    assert fast.dtype == x.dtype and fast.flags.c_contiguous
    pads = (weight.shape[2] // 2,) * 2 if padding == "same" else padding
    plain = reference.conv2d_forward(x, dense_weight(weight, groups), bias, 1, pads)
    np.testing.assert_allclose(fast, twin, rtol, atol)
    np.testing.assert_allclose(fast, np.maximum(plain, 0) if relu else plain, rtol, atol)

    masked = np.where(twin > 0, dout, 0) if relu else dout
    ref = reference.conv2d_backward(
        x, dense_weight(weight, groups), masked, 1, pads, bias=bias_mode
    )
    ref = (ref[0], grouped_part(ref[1], groups), *ref[2:])
    ref_db = (
        None
        if bias_mode is None
        else (masked.sum(axis=(0, 2, 3)) if bias_mode == "tied" else masked.sum(0))
    )
    # the same ReLU mask for both paths: where the two outputs round to different signs of ~0,
    # their derivatives differ, correctly
    fast_cache = fast_cache._replace(out=twin) if relu else fast_cache
    for got, want, oracle in zip(
        F.conv2d_backward(in_memory_order(dout, order), fast_cache),
        F.conv2d_backward(dout, twin_cache),
        (*ref[:2], ref_db),
    ):
        if oracle is None:
            assert got is None and want is None
            continue
        assert got.dtype == x.dtype and got.shape == oracle.shape
        # a gradient sums many products: its float32 rounding error scales with the values summed,
        # so the absolute tolerance is the array's scale times atol (an element near 0 among
        # values of ~25 was 1.5e-4 off in float32, 6e-6 of the scale)
        scaled = atol * max(1.0, float(np.abs(oracle).max()))
        np.testing.assert_allclose(got, want, rtol, scaled)
        np.testing.assert_allclose(got, oracle, rtol, scaled)


@given(
    k=st.integers(1, 20),
    c=st.integers(1, 20),
    r=st.sampled_from([3, 5]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_weight_transform_and_its_adjoint_equal_the_matrix_products(k, c, r, dtype, seed):
    """U = G w G^T and dW = G^T dU G, against einsum with the module's G (the textbook form)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, c, r, r)).astype(dtype)
    du = rng.standard_normal((36, k, c)).astype(dtype)
    rtol, atol = tolerance(dtype)
    g = winograd.MATRICES[r][0]
    u = winograd.transform_weight(w)
    assert u.shape == (36, k, c) and u.dtype == dtype
    want = np.einsum("ai,kcij,bj->abkc", g, w.astype(np.float64), g).reshape(36, k, c)
    np.testing.assert_allclose(u, want, rtol, atol)
    dw = winograd.weight_grad(du, r)
    assert dw.shape == w.shape and dw.dtype == dtype
    want = np.einsum("ai,abkc,bj->kcij", g, du.astype(np.float64).reshape(6, 6, k, c), g)
    np.testing.assert_allclose(dw, want, rtol, atol)


def test_a_pooling_plan_refuses_what_its_kernel_does_not_compute():
    g = WindowGeometry(3, 3, 1, 1, 1, 1, 1, 1, 4, 4)
    weight = np.ones((2, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="pool=True takes a tied bias or none"):
        winograd.plan_forward((1, 1, 4, 4), weight, np.ones((2, 4, 4), np.float32), g, pool=True)
    with pytest.raises(ValueError, match="out_last=True"):
        winograd.plan_forward((1, 1, 4, 4), weight, None, g, pool=True, out_last=True)


@pytest.mark.parametrize("r", [3, 5])
def test_transform_matrices_compute_a_correlation(r):
    """The constants themselves: A^T [(G g G^T) * (B^T d B)] A is the m x m valid correlation
    of d."""
    rng = np.random.default_rng(0)
    g_mat, at = winograd.MATRICES[r]
    m = 7 - r
    assert g_mat.shape == (6, r) and at.shape == (m, 6)
    d, g = rng.standard_normal((6, 6)), rng.standard_normal((r, r))
    y = at @ ((g_mat @ g @ g_mat.T) * (winograd.BT @ d @ winograd.BT.T)) @ at.T
    want = [[np.sum(d[i : i + r, j : j + r] * g) for j in range(m)] for i in range(m)]
    np.testing.assert_allclose(y, want, 1e-12, 1e-12)


@pytest.mark.parametrize("bias_mode", ["tied", "untied", None])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("r", [3, 5])
@pytest.mark.parametrize("groups", [1, 2])
def test_winograd_gradcheck_float64(bias_mode, relu, r, groups):
    """Odd sizes and uneven padding: the last tiles stick out of the output and of the input."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2 * groups, 7, 6))
    weight = rng.standard_normal((4, 2, r, r))
    padding = (1, 2)
    oh, ow = 7 + 2 - r + 1, 6 + 4 - r + 1
    bias = {"tied": rng.standard_normal(4), "untied": rng.standard_normal((4, oh, ow)), None: None}[
        bias_mode
    ]
    state = {}

    def run(v, w, b):
        out, state["cache"] = F.conv2d_forward(
            v, w, b, 1, padding, relu=relu, algorithm="winograd", groups=groups
        )
        return out

    check_function(
        lambda v: run(v, weight, bias), lambda d: F.conv2d_backward(d, state["cache"])[0], x
    )
    check_function(
        lambda w: run(x, w, bias), lambda d: F.conv2d_backward(d, state["cache"])[1], weight
    )
    if bias is not None:
        check_function(
            lambda b: run(x, weight, b), lambda d: F.conv2d_backward(d, state["cache"])[2], bias
        )


@pytest.mark.parametrize(
    "shape, n, size, kw, chosen",
    [
        ((8, 8, 3, 3), 8, 8, {"padding": 1}, True),  # 8 x 8x8 = 512 output pixels per map
        ((8, 8, 3, 3), 32, 6, {}, True),  # 32 x 4x4
        (
            (8, 8, 3, 3),
            7,
            8,
            {"padding": 1},
            False,
        ),  # 448 pixels: the weight's transforms cost more
        ((8, 8, 3, 3), 64, 5, {}, False),  # a 3x3 output: too small
        ((8, 7, 3, 3), 8, 8, {"padding": 1}, False),  # too few input channels
        ((7, 8, 3, 3), 8, 8, {"padding": 1}, False),  # too few output channels
        ((8, 8, 5, 5), 8, 8, {"padding": 2}, True),  # F(2x2, 5x5), the same thresholds
        ((8, 8, 5, 5), 7, 8, {"padding": 2}, False),
        ((8, 8, 7, 7), 8, 8, {"padding": 3}, False),
        ((8, 8, 3, 3), 8, 16, {"stride": 2, "padding": 1}, False),
        ((8, 8, 3, 3), 8, 12, {"dilation": 2}, False),
        ((8, 4, 3, 3), 8, 8, {"groups": 2, "padding": 1}, False),  # 4 channels a group: few
        ((16, 8, 3, 3), 8, 8, {"groups": 2, "padding": 1}, True),  # 8 a group: one GEMM each
        ((8, 1, 3, 3), 8, 8, {"groups": 8, "padding": 1}, False),  # depthwise: its own kernels
        ((8, 8, 3, 3), 8, 8, {"backend": "numpy", "padding": 1}, False),
    ],
)
def test_auto_takes_winograd_only_where_it_applies_and_pays(shape, n, size, kw, chosen):
    x = np.ones((n, shape[1] * kw.get("groups", 1), size, size), np.float32)
    _, cache = F.conv2d_forward(x, np.ones(shape, np.float32), **kw)
    assert isinstance(cache, winograd.WinogradCache) == chosen
    # the table above is drawn at these thresholds
    assert (conv.AUTO_MIN_CHANNELS, conv.AUTO_MIN_SIDE, conv.AUTO_MIN_PIXELS) == (
        8,
        4,
        512,
    )


@pytest.mark.parametrize(
    "weight_shape, n, size, frozen, chosen",
    [
        ((8, 8, 3, 3), 1, 8, False, False),  # 64 pixels: a layer that trains keeps im2col
        ((8, 8, 3, 3), 1, 8, True, True),  # a session's: its weight is transformed once
        ((8, 8, 3, 3), 1, 4, True, True),  # a 4x4 output still pays there
        ((8, 8, 3, 3), 1, 3, True, False),  # a 3x3 output does not
        ((8, 7, 3, 3), 1, 8, True, False),  # nor 7 input channels
        ((8, 8, 3, 3), 1, 8, None, False),  # algorithm="im2col" is obeyed
    ],
)
def test_a_frozen_plan_takes_winograd_at_any_pixel_count(weight_shape, n, size, frozen, chosen):
    """``Conv2D.plan(shape, frozen=True)``, a session's plan, drops the pixel threshold only."""
    layer = Conv2D(weight_shape[1], weight_shape[0], 3, padding=1, seed=0,
                   algorithm="im2col" if frozen is None else "auto")
    plan = layer.plan((n, weight_shape[1], size, size), frozen=bool(frozen))
    assert (plan.strategy is winograd) == chosen
    assert layer.plan((n, weight_shape[1], size, size)).strategy is not winograd


@pytest.mark.parametrize(
    "kw, message",
    [
        (
            {"stride": 2},
            r"algorithm='winograd' needs a 3x3 or 5x5 kernel, stride 1.*got kernel \(3, 3\), "
            r"stride \(2, 2\)",
        ),
        ({"dilation": 2}, r"dilation \(2, 2\)"),
        ({"backend": "numpy"}, r"algorithm='winograd' needs backend='numba'; got backend='numpy'"),
    ],
)
def test_winograd_where_it_does_not_apply_is_refused(kw, message):
    x, w = np.ones((1, 4, 9, 9)), np.ones((4, 4 // kw.get("groups", 1), 3, 3))
    with pytest.raises(ValueError, match=message):
        F.conv2d_forward(x, w, owner="conv", algorithm="winograd", **kw)


def test_winograd_refuses_other_kernel_sizes_and_unknown_algorithms():
    with pytest.raises(ValueError, match=r"got kernel \(7, 7\)"):
        F.conv2d_forward(np.ones((1, 2, 9, 9)), np.ones((2, 2, 7, 7)), algorithm="winograd")
    with pytest.raises(ValueError, match=r"got kernel \(3, 5\)"):
        F.conv2d_forward(np.ones((1, 2, 9, 9)), np.ones((2, 2, 3, 5)), algorithm="winograd")
    with pytest.raises(ValueError, match="algorithm.*'fft'"):
        F.conv2d_forward(np.ones((1, 2, 9, 9)), np.ones((2, 2, 3, 3)), algorithm="fft")
