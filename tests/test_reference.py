"""Tests for the slow oracles in ``cnn_im2col.reference``.

The oracles are checked against each other (scipy per-feature-map vs naive loops), against the
worked numbers of the primer, against a port of the primer's own MaxPoolingMap code, and against
float64 central finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from cnn_im2col import reference as ref

FAST = settings(deadline=None, max_examples=30)

# (rtol, atol) for comparing two float computations of the same sums
TOL = {np.float64: (1e-10, 1e-10), np.float32: (1e-4, 1e-4)}

BIAS_MODES = ("tied", "untied", None)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def numerical_gradient(loss, a, eps=1e-4):
    """Central finite differences of the scalar ``loss()`` with respect to ``a``.

    ``a`` (float64) is perturbed in place, one element at a time, and restored; ``loss`` reads it.
    """
    grad = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        orig = a[idx]
        a[idx] = orig + eps
        plus = loss()
        a[idx] = orig - eps
        minus = loss()
        a[idx] = orig
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def distinct_pair(lo, hi):
    """Two different ints in [lo, hi], in either order: exercises the (y, x) asymmetry."""
    return st.lists(st.integers(lo, hi), min_size=2, max_size=2, unique=True).map(tuple)


def spatial_size(draw, k, p, s):
    """An input length for which the window fits in the padded input, with a few positions."""
    lo = max(1, k - 2 * p)
    return draw(st.integers(lo, lo + 2 * s + 1))


@st.composite
def conv_cases(draw, max_maps=3):
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, max_maps))
    o = draw(st.integers(1, max_maps))
    kh, kw = draw(distinct_pair(1, 4))
    sy, sx = draw(distinct_pair(1, 3))
    ph, pw = draw(distinct_pair(0, 2))
    h = spatial_size(draw, kh, ph, sy)
    w = spatial_size(draw, kw, pw, sx)
    seed = draw(st.integers(0, 2**32 - 1))
    return {
        "n": n,
        "c": c,
        "o": o,
        "kh": kh,
        "kw": kw,
        "stride": (sy, sx),
        "padding": (ph, pw),
        "h": h,
        "w": w,
        "seed": seed,
    }


def conv_arrays(case, dtype, bias_mode):
    """x, weight, forward bias (per bias_mode) and a dout, drawn from the case's seed."""
    rng = np.random.default_rng(case["seed"])
    sy, sx = case["stride"]
    ph, pw = case["padding"]
    oh = (case["h"] + 2 * ph - case["kh"]) // sy + 1
    ow = (case["w"] + 2 * pw - case["kw"]) // sx + 1
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(dtype)
    weight = rng.standard_normal((case["o"], case["c"], case["kh"], case["kw"])).astype(dtype)
    bias = {
        None: None,
        "tied": rng.standard_normal(case["o"]),
        "untied": rng.standard_normal((case["o"], oh, ow)),
    }[bias_mode]
    bias = None if bias is None else bias.astype(dtype)
    dout = rng.standard_normal((case["n"], case["o"], oh, ow)).astype(dtype)
    return x, weight, bias, dout


@st.composite
def pool_cases(draw):
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 3))
    kh = draw(st.integers(1, 4))
    kw = draw(st.integers(1, 4))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    sy, sx = (kh, kw) if stride is None else stride
    ph = draw(st.integers(0, kh // 2))
    pw = draw(st.integers(0, kw // 2))
    h = spatial_size(draw, kh, ph, sy)
    w = spatial_size(draw, kw, pw, sx)
    seed = draw(st.integers(0, 2**32 - 1))
    out_hw = ((h + 2 * ph - kh) // sy + 1, (w + 2 * pw - kw) // sx + 1)
    return {
        "n": n,
        "c": c,
        "kernel_size": (kh, kw),
        "stride": stride,
        "padding": (ph, pw),
        "h": h,
        "w": w,
        "seed": seed,
        "out_hw": out_hw,
    }


def pool_kwargs(case):
    return {k: case[k] for k in ("kernel_size", "stride", "padding")}


def distinct_values(rng, shape):
    """Values at least 1 apart, in random order: no ties, so max pooling is differentiable
    everywhere within a finite-difference step."""
    return rng.permutation(int(np.prod(shape))).reshape(shape).astype(np.float64) - 3.0


# --------------------------------------------------------------------------------------------
# convolution: scipy version == naive version
# --------------------------------------------------------------------------------------------


@FAST
@given(
    case=conv_cases(),
    dtype=st.sampled_from([np.float64, np.float32]),
    bias_mode=st.sampled_from(BIAS_MODES),
)
def test_conv_scipy_matches_naive(case, dtype, bias_mode):
    x, weight, bias, dout = conv_arrays(case, dtype, bias_mode)
    rtol, atol = TOL[dtype]
    kw = {"stride": case["stride"], "padding": case["padding"]}

    fast = ref.conv2d_forward(x, weight, bias, **kw)
    naive = ref.conv2d_forward_naive(x, weight, bias, **kw)
    assert fast.dtype == naive.dtype == dtype
    assert fast.shape == dout.shape
    np.testing.assert_allclose(fast, naive, rtol=rtol, atol=atol)

    grads = ref.conv2d_backward(x, weight, dout, bias=bias_mode, **kw)
    grads_naive = ref.conv2d_backward_naive(x, weight, dout, bias=bias_mode, **kw)
    for name, g, g_naive, like in zip(
        ("dx", "dweight", "dbias"), grads, grads_naive, (x, weight, bias)
    ):
        if like is None:
            assert g is None and g_naive is None, name
            continue
        assert g.shape == g_naive.shape == like.shape, name
        assert g.dtype == g_naive.dtype == dtype, name
        np.testing.assert_allclose(g, g_naive, rtol=rtol, atol=atol, err_msg=name)


def test_conv_stride_skips_trailing_rows():
    # H + 2*ph - KH = 5 is not a multiple of sy = 2: the last input row is in no window,
    # so it must get a zero gradient; same for the last two columns (7 - 3 = 4, sx = 3)
    x = np.ones((1, 1, 7, 7))
    weight = np.ones((1, 1, 2, 3))
    dout = np.ones((1, 1, 3, 2))
    for backward in (ref.conv2d_backward, ref.conv2d_backward_naive):
        dx, dweight, _ = backward(x, weight, dout, stride=(2, 3))
        assert dx.shape == x.shape
        np.testing.assert_array_equal(dx[0, 0, 6, :], 0.0)
        np.testing.assert_array_equal(dx[0, 0, :, 6], 0.0)
        np.testing.assert_array_equal(dx[0, 0, :6, :6], 1.0)
        np.testing.assert_array_equal(dweight, 6.0)


# --------------------------------------------------------------------------------------------
# convolution: the primer's worked numbers
# --------------------------------------------------------------------------------------------

VALUES = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float64)
F = np.array([[10, 20], [30, 40]], dtype=np.float64)


@pytest.mark.parametrize("forward", [ref.conv2d_forward, ref.conv2d_forward_naive])
def test_primer_appendix_a(forward):
    x, w = VALUES[None, None], F[None, None]
    np.testing.assert_array_equal(forward(x, w)[0, 0], [[370, 470], [670, 770]])
    # full correlation is valid correlation of the input zero-padded by (KH-1, KW-1)
    np.testing.assert_array_equal(
        forward(x, w, padding=1)[0, 0],
        [[40, 110, 180, 90], [180, 370, 470, 210], [360, 670, 770, 330], [140, 230, 260, 90]],
    )
    # convolution is correlation with the filter rotated by 180 degrees
    np.testing.assert_array_equal(forward(x, w[:, :, ::-1, ::-1])[0, 0], [[230, 330], [530, 630]])


@pytest.mark.parametrize("forward", [ref.conv2d_forward, ref.conv2d_forward_naive])
def test_primer_appendix_b_stacking(forward):
    fm1, fm2 = VALUES, VALUES[::-1, ::-1]
    f1 = np.array([[1, 2], [3, 4]], dtype=np.float64)
    f2 = np.array([[5, 6], [7, 8]], dtype=np.float64)
    np.testing.assert_array_equal(
        forward(fm1[None, None], f1[None, None])[0, 0], [[37, 47], [67, 77]]
    )
    np.testing.assert_array_equal(
        forward(fm2[None, None], f2[None, None])[0, 0], [[175, 149], [97, 71]]
    )
    x = np.stack([fm1, fm2])[None]  # (1, 2, 3, 3): two maps
    weight = np.stack([f1, f2])[None]  # (1, 2, 2, 2): one output map, a filter per input map
    np.testing.assert_array_equal(forward(x, weight), [[[[212, 196], [164, 148]]]])


@pytest.mark.parametrize("backward", [ref.conv2d_backward, ref.conv2d_backward_naive])
def test_primer_feature_map_backward(backward):
    # FeatureMap.propagate_backward on the primer's 4x5 arange input and a 2x2 filter
    rng = np.random.default_rng(0)
    a_prev = np.arange(20, dtype=np.float64).reshape(4, 5)
    w = rng.standard_normal((2, 2))
    b_gradient_components = rng.standard_normal((3, 4))
    dx, dw, db = backward(a_prev[None, None], w[None, None], b_gradient_components[None, None])
    np.testing.assert_allclose(
        dw[0, 0], signal.correlate2d(a_prev, b_gradient_components, mode="valid"), rtol=1e-12
    )
    np.testing.assert_allclose(
        dx[0, 0], signal.convolve2d(w, b_gradient_components, mode="full"), rtol=1e-12
    )
    np.testing.assert_allclose(db, [b_gradient_components.sum()], rtol=1e-12)


# --------------------------------------------------------------------------------------------
# convolution: naive gradients against finite differences
# --------------------------------------------------------------------------------------------


@FAST
@given(case=conv_cases(max_maps=2), bias_mode=st.sampled_from(BIAS_MODES))
def test_conv_naive_gradients_finite_differences(case, bias_mode):
    x, weight, bias, dout = conv_arrays(case, np.float64, bias_mode)
    kw = {"stride": case["stride"], "padding": case["padding"]}

    def loss():
        return float(np.sum(ref.conv2d_forward_naive(x, weight, bias, **kw) * dout))

    dx, dweight, dbias = ref.conv2d_backward_naive(x, weight, dout, bias=bias_mode, **kw)
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dweight, numerical_gradient(loss, weight), rtol=1e-6, atol=1e-7)
    if bias_mode is None:
        assert dbias is None
    else:
        np.testing.assert_allclose(dbias, numerical_gradient(loss, bias), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------------------------

PRIMER_POOL_INPUT = np.array(
    [[8, 0, 11, 1, 6], [10, 2, 4, 14, 17], [5, 16, 19, 15, 7], [12, 13, 9, 18, 3]],
    dtype=np.float64,
)


def primer_max_pooling(a_prev, overlay_shape, a_gradient):
    """The primer's max_values_and_positions + MaxPoolingMap.propagate_backward (stride 1),
    ported to Python 3 (range for xrange), otherwise as published."""
    rows = a_prev.shape[0] - overlay_shape[0] + 1
    cols = a_prev.shape[1] - overlay_shape[1] + 1
    max_values = np.zeros((rows, cols))
    a_prev_gradient = np.zeros(a_prev.shape)
    for r in range(rows):
        for c in range(cols):
            overlay = a_prev[r : r + overlay_shape[0], c : c + overlay_shape[1]]
            max_values[r][c] = np.amax(overlay)
            mr, mc = np.unravel_index(overlay.argmax(), overlay.shape)
            a_prev_gradient[(r + mr, c + mc)] += a_gradient[r][c]
    return max_values, a_prev_gradient


def test_primer_max_pool_example():
    x = PRIMER_POOL_INPUT[None, None]
    out = ref.max_pool2d_forward(x, 2, stride=1)
    np.testing.assert_array_equal(out[0, 0], [[10, 11, 14, 17], [16, 19, 19, 17], [16, 19, 19, 18]])
    counts = ref.max_pool2d_backward(x, np.ones_like(out), 2, stride=1)[0, 0]
    expected = np.zeros((4, 5))
    # 19 wins four overlapping windows, 17 and 16 two each, the rest one
    for pos, n in {
        (1, 0): 1,
        (0, 2): 1,
        (1, 3): 1,
        (1, 4): 2,
        (2, 1): 2,
        (2, 2): 4,
        (3, 3): 1,
    }.items():
        expected[pos] = n
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == out.size


@FAST
@given(
    h=st.integers(2, 6),
    w=st.integers(2, 6),
    kh=st.integers(1, 2),
    kw=st.integers(1, 2),
    seed=st.integers(0, 2**32 - 1),
    ties=st.booleans(),
)
def test_max_pool_matches_primer_code(h, w, kh, kw, seed, ties):
    rng = np.random.default_rng(seed)
    # small integers make ties common, which checks the first-maximum rule against argmax
    a = (rng.integers(0, 3, (h, w)) if ties else rng.standard_normal((h, w))).astype(np.float64)
    grad = rng.standard_normal((h - kh + 1, w - kw + 1))
    values, a_grad = primer_max_pooling(a, (kh, kw), grad)
    np.testing.assert_array_equal(ref.max_pool2d_forward(a[None, None], (kh, kw), 1)[0, 0], values)
    np.testing.assert_allclose(
        ref.max_pool2d_backward(a[None, None], grad[None, None], (kh, kw), 1)[0, 0],
        a_grad,
        rtol=1e-12,
        atol=1e-12,
    )


def test_max_pool_ties_go_to_first_maximum():
    x = np.full((1, 1, 2, 3), 5.0)
    dx = ref.max_pool2d_backward(x, np.array([[[[7.0]]]]), (2, 3))
    expected = np.zeros((1, 1, 2, 3))
    expected[0, 0, 0, 0] = 7.0
    np.testing.assert_array_equal(dx, expected)
    # a tie between (0, 2) and (1, 0): row-major scan order reaches (0, 2) first
    x = np.array([[[[0.0, 1.0, 9.0], [9.0, 2.0, 3.0]]]])
    dx = ref.max_pool2d_backward(x, np.ones((1, 1, 1, 1)), (2, 3))
    assert dx[0, 0, 0, 2] == 1.0 and dx.sum() == 1.0


def test_max_pool_padding_never_wins():
    x = -1.0 - np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)  # all negative
    out = ref.max_pool2d_forward(x, 2, stride=2, padding=1)
    assert out.shape == (1, 1, 3, 3)
    assert out[0, 0, 0, 0] == x[0, 0, 0, 0]  # the corner window's only real cell
    assert np.all(out < 0)
    dx = ref.max_pool2d_backward(x, np.ones_like(out), 2, stride=2, padding=1)
    assert dx.sum() == out.size  # no gradient lost into the padding


def test_pool_stride_defaults_to_kernel_size():
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 7))
    for forward in (ref.max_pool2d_forward, ref.avg_pool2d_forward):
        np.testing.assert_array_equal(forward(x, (2, 3)), forward(x, (2, 3), stride=(2, 3)))
        assert forward(x, (2, 3)).shape == (2, 3, 3, 2)


@FAST
@given(case=pool_cases())
def test_max_pool_gradient_finite_differences(case):
    rng = np.random.default_rng(case["seed"])
    x = distinct_values(rng, (case["n"], case["c"], case["h"], case["w"]))
    dout = rng.standard_normal((case["n"], case["c"]) + case["out_hw"])
    kw = pool_kwargs(case)

    def loss():
        return float(np.sum(ref.max_pool2d_forward(x, **kw) * dout))

    dx = ref.max_pool2d_backward(x, dout, **kw)
    np.testing.assert_allclose(dx, numerical_gradient(loss, x, eps=1e-3), rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------------------------------
# average pooling
# --------------------------------------------------------------------------------------------


def test_avg_pool_counts_padding():
    x = np.arange(1, 17, dtype=np.float64).reshape(1, 1, 4, 4)
    out = ref.avg_pool2d_forward(x, 2, stride=2, padding=1)
    assert out.shape == (1, 1, 3, 3)
    assert out[0, 0, 0, 0] == x[0, 0, 0, 0] / 4  # one real cell, still divided by KH*KW
    assert out[0, 0, 1, 1] == (6 + 7 + 10 + 11) / 4
    dx, dscale = ref.avg_pool2d_backward(x, np.ones_like(out), 2, stride=2, padding=1)
    assert dscale is None
    np.testing.assert_array_equal(dx, 0.25)  # every cell is in exactly one window


def test_avg_pool_eq_8_22_and_p8_3_p8_4():
    # stride == kernel: P8.3 says dA = w * (each dout element expanded to a KHxKW block)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 6))
    scale = np.array([0.5, -2.0, 3.0])
    out = ref.avg_pool2d_forward(x, (2, 3), scale=scale)
    window_sums = x.reshape(2, 3, 2, 2, 2, 3).sum(axis=(3, 5))
    np.testing.assert_allclose(out, window_sums * scale[:, None, None], rtol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx, dscale = ref.avg_pool2d_backward(x, dout, (2, 3), scale=scale)
    expanded = np.kron(dout, np.ones((2, 3)))
    np.testing.assert_allclose(dx, expanded * scale[:, None, None], rtol=1e-12)
    np.testing.assert_allclose(dscale, (dout * window_sums).sum(axis=(0, 2, 3)), rtol=1e-12)
    # scale = 1/(KH*KW) for every map is the mean
    mean = ref.avg_pool2d_forward(x, (2, 3))
    np.testing.assert_allclose(
        ref.avg_pool2d_forward(x, (2, 3), scale=np.full(3, 1 / 6)), mean, rtol=1e-12
    )
    np.testing.assert_allclose(mean, window_sums / 6, rtol=1e-12)


@FAST
@given(case=pool_cases(), scaled=st.booleans())
def test_avg_pool_gradients_finite_differences(case, scaled):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]))
    scale = rng.standard_normal(case["c"]) if scaled else None
    dout = rng.standard_normal((case["n"], case["c"]) + case["out_hw"])
    kw = pool_kwargs(case)

    def loss():
        return float(np.sum(ref.avg_pool2d_forward(x, scale=scale, **kw) * dout))

    dx, dscale = ref.avg_pool2d_backward(x, dout, scale=scale, **kw)
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    if scaled:
        np.testing.assert_allclose(dscale, numerical_gradient(loss, scale), rtol=1e-6, atol=1e-8)
    else:
        assert dscale is None


# --------------------------------------------------------------------------------------------
# dtypes and memory order
# --------------------------------------------------------------------------------------------


def _all_results(x, weight, dout_conv, dout_pool, scale):
    """Every oracle's outputs on one input (stride/padding asymmetric), as a flat list."""
    conv_kw = {"stride": (2, 1), "padding": (1, 0)}
    pool_kw = {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0)}
    results = [
        ref.conv2d_forward(x, weight, **conv_kw),
        ref.conv2d_forward_naive(x, weight, **conv_kw),
    ]
    results += ref.conv2d_backward(x, weight, dout_conv, **conv_kw)
    results += ref.conv2d_backward_naive(x, weight, dout_conv, **conv_kw)
    results.append(ref.max_pool2d_forward(x, **pool_kw))
    results.append(ref.max_pool2d_backward(x, dout_pool, **pool_kw))
    results.append(ref.avg_pool2d_forward(x, scale=scale, **pool_kw))
    results += ref.avg_pool2d_backward(x, dout_pool, scale=scale, **pool_kw)
    return results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_and_memory_order_irrelevant(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    weight = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    dout_conv = rng.standard_normal((2, 4, 3, 4)).astype(dtype)
    dout_pool = rng.standard_normal((2, 3, 6, 2)).astype(dtype)
    scale = rng.standard_normal(3).astype(dtype)
    base = _all_results(x, weight, dout_conv, dout_pool, scale)
    assert all(r.dtype == dtype for r in base)

    def strided(a):  # a non-contiguous view with the same values
        big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
        big[tuple(slice(None, None, 2) for _ in a.shape)] = a
        return big[tuple(slice(None, None, 2) for _ in a.shape)]

    for convert in (np.asfortranarray, strided):
        other = _all_results(
            convert(x), convert(weight), convert(dout_conv), convert(dout_pool), convert(scale)
        )
        for a, b in zip(base, other):
            np.testing.assert_array_equal(a, b)


def test_mixed_dtypes_promote():
    x = np.ones((1, 1, 3, 3), np.float32)
    weight = np.ones((1, 1, 2, 2), np.float64)
    assert ref.conv2d_forward(x, weight).dtype == np.float64
    assert ref.conv2d_forward(x, weight.astype(np.float32), np.zeros(1)).dtype == np.float64
    assert ref.avg_pool2d_forward(x, 2, scale=np.ones(1)).dtype == np.float64


# --------------------------------------------------------------------------------------------
# bad arguments
# --------------------------------------------------------------------------------------------

X = np.zeros((2, 3, 4, 4))


@pytest.mark.parametrize("name", ["conv2d_forward", "conv2d_forward_naive"])
def test_conv_forward_bad_arguments(name):
    forward = getattr(ref, name)
    with pytest.raises(
        ValueError,
        match=rf"{name}: x must have 2 channels .* "
        r"got shape \(2, 3, 4, 4\)",
    ):
        forward(X, np.zeros((5, 2, 3, 3)))
    with pytest.raises(
        ValueError,
        match=rf"{name}: weight's kernel size \(5, 2\) is larger than "
        r"the padded input \(4, 4\)",
    ):
        forward(X, np.zeros((5, 3, 5, 2)))
    forward(X, np.zeros((5, 3, 5, 2)), padding=(1, 0))  # fits once padded
    with pytest.raises(
        ValueError,
        match=rf"{name}: bias must be None, shape \(5,\) .* "
        r"got shape \(3,\)",
    ):
        forward(X, np.zeros((5, 3, 3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=rf"{name}: x must be 4-D"):
        forward(X[0], np.zeros((5, 3, 3, 3)))
    with pytest.raises(ValueError, match=rf"{name}: stride must be"):
        forward(X, np.zeros((5, 3, 3, 3)), stride=0)
    with pytest.raises(ValueError, match=rf"{name}: padding must be"):
        forward(X, np.zeros((5, 3, 3, 3)), padding=(0, -1))


@pytest.mark.parametrize("name", ["conv2d_backward", "conv2d_backward_naive"])
def test_conv_backward_bad_arguments(name):
    backward = getattr(ref, name)
    weight = np.zeros((5, 3, 3, 3))
    dout = np.zeros((2, 5, 2, 2))
    with pytest.raises(ValueError, match=rf"{name}: x must have 4 channels"):
        backward(X, np.zeros((5, 4, 3, 3)), dout)
    with pytest.raises(ValueError, match=rf"{name}: weight's kernel size \(3, 6\) is larger"):
        backward(X, np.zeros((5, 3, 3, 6)), dout)
    with pytest.raises(
        ValueError,
        match=rf"{name}: dout must have the forward output's shape "
        r"\(2, 5, 2, 2\), got \(2, 5, 3, 3\)",
    ):
        backward(X, weight, np.zeros((2, 5, 3, 3)))
    with pytest.raises(ValueError, match=rf"{name}: bias must be one of .* got 'shared'"):
        backward(X, weight, dout, bias="shared")


@pytest.mark.parametrize(
    "name",
    ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward"],
)
def test_pool_bad_arguments(name):
    fn = getattr(ref, name)

    def call(x, *args, **kwargs):
        if name.endswith("backward"):  # dout is checked after the pooling arguments
            return fn(x, np.zeros((2, 3, 1, 1)), *args, **kwargs)
        return fn(x, *args, **kwargs)

    with pytest.raises(
        ValueError,
        match=rf"{name}: padding must be at most half the window .* "
        r"got padding \(2, 0\) with kernel_size \(3, 3\)",
    ):
        call(X, 3, padding=(2, 0))
    with pytest.raises(
        ValueError,
        match=rf"{name}: kernel_size \(5, 1\) is larger than the "
        r"padded input \(4, 4\)",
    ):
        call(X, (5, 1))
    with pytest.raises(ValueError, match=rf"{name}: kernel_size must be"):
        call(X, 0)
    with pytest.raises(ValueError, match=rf"{name}: x must be 4-D"):
        call(X[0], 2)
    if name.endswith("backward"):
        with pytest.raises(
            ValueError,
            match=rf"{name}: dout must have the forward output's "
            r"shape \(2, 3, 2, 2\), got \(2, 3, 1, 1\)",
        ):
            fn(X, np.zeros((2, 3, 1, 1)), 2)
    if name.startswith("avg"):
        with pytest.raises(
            ValueError,
            match=rf"{name}: scale must be None or one weight per "
            r"map, shape \(3,\), got shape \(2,\)",
        ):
            call(X, 4, scale=np.ones(2))


# --------------------------------------------------------------------------------------------
# average pooling: count_include_pad=False
# --------------------------------------------------------------------------------------------


def test_avg_pool_count_include_pad_false_divides_by_inside_cells():
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    out = ref.avg_pool2d_forward(x, 2, stride=2, padding=1, count_include_pad=False)
    # windows of a 2x2 pool on the padded 5x5: corners hold 1 real cell, edges 2, the centre 4
    np.testing.assert_allclose(out[0, 0], [[1.0, 2.5], [5.5, 7.0]])
    counted = ref.avg_pool2d_forward(x, 2, stride=2, padding=1)
    np.testing.assert_allclose(counted[0, 0], [[0.25, 1.25], [2.75, 7.0]])


@FAST
@given(case=pool_cases(), scaled=st.booleans())
def test_avg_pool_exclude_pad_gradients_finite_differences(case, scaled):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]))
    scale = rng.standard_normal(case["c"]) if scaled else None
    dout = rng.standard_normal((case["n"], case["c"]) + case["out_hw"])
    kw = {**pool_kwargs(case), "count_include_pad": False}

    def loss():
        return float(np.sum(ref.avg_pool2d_forward(x, scale=scale, **kw) * dout))

    dx, dscale = ref.avg_pool2d_backward(x, dout, scale=scale, **kw)
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    if scaled:
        np.testing.assert_allclose(dscale, numerical_gradient(loss, scale), rtol=1e-6, atol=1e-8)


@FAST
@given(case=pool_cases(), include=st.booleans())
def test_avg_pool_matches_torch(case, include):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(case["seed"]).standard_normal(
        (case["n"], case["c"], case["h"], case["w"])
    )
    stride = case["stride"] if case["stride"] is not None else case["kernel_size"]
    expected = torch.nn.functional.avg_pool2d(
        torch.tensor(x), case["kernel_size"], stride, case["padding"], count_include_pad=include
    ).numpy()
    out = ref.avg_pool2d_forward(x, count_include_pad=include, **pool_kwargs(case))
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_avg_pool_count_include_pad_must_be_bool():
    with pytest.raises(
        TypeError, match=r"avg_pool2d_forward: count_include_pad must be True or False, got 1"
    ):
        ref.avg_pool2d_forward(np.ones((1, 1, 2, 2)), 2, count_include_pad=1)


# --------------------------------------------------------------------------------------------
# convolution with dilation and groups
# --------------------------------------------------------------------------------------------


@st.composite
def general_conv_cases(draw):
    groups = draw(st.integers(1, 3))
    cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dy, dx = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sy, sx = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = spatial_size(draw, dy * (kh - 1) + 1, ph, sy)
    w = spatial_size(draw, dx * (kw - 1) + 1, pw, sx)
    return {
        "n": draw(st.integers(1, 2)),
        "c": groups * cg,
        "o": groups * og,
        "groups": groups,
        "kernel": (kh, kw),
        "dilation": (dy, dx),
        "stride": (sy, sx),
        "padding": (ph, pw),
        "h": h,
        "w": w,
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def general_arrays(case, dtype, bias_mode):
    rng = np.random.default_rng(case["seed"])
    (kh, kw), (dy, dx), (sy, sx), (ph, pw) = (
        case["kernel"],
        case["dilation"],
        case["stride"],
        case["padding"],
    )
    oh = (case["h"] + 2 * ph - dy * (kh - 1) - 1) // sy + 1
    ow = (case["w"] + 2 * pw - dx * (kw - 1) - 1) // sx + 1
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(dtype)
    weight = rng.standard_normal((case["o"], case["c"] // case["groups"], kh, kw)).astype(dtype)
    bias = {
        None: None,
        "tied": rng.standard_normal(case["o"]),
        "untied": rng.standard_normal((case["o"], oh, ow)),
    }[bias_mode]
    bias = None if bias is None else bias.astype(dtype)
    dout = rng.standard_normal((case["n"], case["o"], oh, ow)).astype(dtype)
    return x, weight, bias, dout


def general_kwargs(case):
    return {
        "stride": case["stride"],
        "padding": case["padding"],
        "dilation": case["dilation"],
        "groups": case["groups"],
    }


@FAST
@given(
    case=conv_cases(),
    dtype=st.sampled_from([np.float64, np.float32]),
    bias_mode=st.sampled_from(BIAS_MODES),
)
def test_general_conv_at_dilation_1_groups_1_matches_the_other_oracles(case, dtype, bias_mode):
    x, weight, bias, dout = conv_arrays(case, dtype, bias_mode)
    kw = {"stride": case["stride"], "padding": case["padding"]}
    rtol, atol = TOL[dtype]
    out = ref.conv2d_forward_general(x, weight, bias, **kw)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, ref.conv2d_forward(x, weight, bias, **kw), rtol=rtol, atol=atol)
    np.testing.assert_allclose(
        out, ref.conv2d_forward_naive(x, weight, bias, **kw), rtol=rtol, atol=atol
    )
    for got, scipy_way in zip(
        ref.conv2d_backward_general(x, weight, dout, bias=bias_mode, **kw),
        ref.conv2d_backward(x, weight, dout, bias=bias_mode, **kw),
    ):
        if scipy_way is None:
            assert got is None
        else:
            np.testing.assert_allclose(got, scipy_way, rtol=rtol, atol=atol)


@FAST
@given(case=general_conv_cases(), bias_mode=st.sampled_from(BIAS_MODES))
def test_general_conv_gradients_finite_differences(case, bias_mode):
    x, weight, bias, dout = general_arrays(case, np.float64, bias_mode)
    kw = general_kwargs(case)

    def loss():
        return float(np.sum(ref.conv2d_forward_general(x, weight, bias, **kw) * dout))

    dx, dweight, dbias = ref.conv2d_backward_general(x, weight, dout, bias=bias_mode, **kw)
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dweight, numerical_gradient(loss, weight), rtol=1e-6, atol=1e-8)
    if bias is not None:
        np.testing.assert_allclose(dbias, numerical_gradient(loss, bias), rtol=1e-6, atol=1e-8)


@FAST
@given(
    case=general_conv_cases(), dtype=st.sampled_from([np.float64, np.float32]), tied=st.booleans()
)
def test_general_conv_matches_torch(case, dtype, tied):
    torch = pytest.importorskip("torch")
    x, weight, bias, dout = general_arrays(case, dtype, "tied" if tied else None)
    kw = general_kwargs(case)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(weight, requires_grad=True)
    tb = None if bias is None else torch.tensor(bias, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, **kw)
    ty.backward(torch.tensor(dout))
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(
        ref.conv2d_forward_general(x, weight, bias, **kw), ty.detach().numpy(), rtol=rtol, atol=atol
    )
    dx, dweight, dbias = ref.conv2d_backward_general(
        x, weight, dout, bias="tied" if tied else None, **kw
    )
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(dweight, tw.grad.numpy(), rtol=rtol, atol=atol)
    if tied:
        np.testing.assert_allclose(dbias, tb.grad.numpy(), rtol=rtol, atol=atol)


def test_general_conv_depthwise_is_one_correlation_per_map():
    rng = np.random.default_rng(0)
    x, weight = rng.standard_normal((1, 3, 5, 5)), rng.standard_normal((3, 1, 2, 2))
    out = ref.conv2d_forward_general(x, weight, groups=3, dilation=2)
    for c in range(3):
        dilated = np.zeros((3, 3))
        dilated[::2, ::2] = weight[c, 0]
        np.testing.assert_allclose(
            out[0, c], signal.correlate2d(x[0, c], dilated, mode="valid"), rtol=1e-12
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"groups": 2},
            r"groups=2 must divide the input channels \(3\) and the output channels \(4\)",
        ),
        ({"groups": 0}, r"groups must be an int >= 1, got 0"),
        ({"dilation": 0}, r"dilation must be an int >= 1"),
        ({"dilation": 4}, r"dilated kernel extent \(9, 9\) is larger than the padded input"),
    ],
)
def test_general_conv_errors(kwargs, message):
    x, weight = np.ones((1, 3, 6, 6)), np.ones((4, 3, 3, 3))
    with pytest.raises(ValueError, match=f"conv2d_forward_general: {message}"):
        ref.conv2d_forward_general(x, weight, **kwargs)


def test_general_conv_weight_must_have_channels_per_group():
    with pytest.raises(
        ValueError,
        match=r"weight must be \(O, C/groups, KH, KW\) = \(4, 1, KH, KW\) for 2 input channels "
        r"and groups=2, "
        r"got shape \(4, 2, 1, 1\)",
    ):
        ref.conv2d_forward_general(np.ones((1, 2, 3, 3)), np.ones((4, 2, 1, 1)), groups=2)


# --------------------------------------------------------------------------------------------
# batch normalisation
# --------------------------------------------------------------------------------------------


@FAST
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 3),
    h=st.integers(1, 3),
    w=st.integers(2, 3),
    training=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_batch_norm_gradients_finite_differences(n, c, h, w, training, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)) * 2 + 1
    weight, bias = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.random(c) + 0.5
    dout = rng.standard_normal(x.shape)

    def loss():
        return float(
            np.sum(ref.batch_norm2d_forward(x, weight, bias, rm, rv, training=training)[0] * dout)
        )

    dx, dweight, dbias = ref.batch_norm2d_backward(x, dout, weight, rm, rv, training=training)
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dweight, numerical_gradient(loss, weight), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dbias, numerical_gradient(loss, bias), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch(training):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5, 2)) * 3 - 1
    weight, bias = rng.standard_normal(4), rng.standard_normal(4)
    rm, rv = rng.standard_normal(4), rng.random(4) + 0.5
    dout = rng.standard_normal(x.shape)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    ty = torch.nn.functional.batch_norm(
        tx, trm, trv, tw, tb, training=training, momentum=0.3, eps=1e-3
    )
    ty.backward(torch.tensor(dout))
    y, new_mean, new_var = ref.batch_norm2d_forward(
        x, weight, bias, rm, rv, training=training, momentum=0.3, eps=1e-3
    )
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(new_mean, trm.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(new_var, trv.numpy(), rtol=1e-12, atol=1e-12)
    grads = ref.batch_norm2d_backward(x, dout, weight, rm, rv, training=training, eps=1e-3)
    for got, tensor in zip(grads, (tx, tw, tb)):
        np.testing.assert_allclose(got, tensor.grad.numpy(), rtol=1e-10, atol=1e-12)
