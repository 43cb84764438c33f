"""The dilated strategy (the polyphase components' undilated convolution, by Winograd) equals the
im2col path and the oracle on hypothesis-drawn dilations, paddings, groups, bias modes, dtypes and
layouts, with and without the fused ReLU; passes a float64 finite-difference check; calls the
slice hook on the whole output and hands an untied bias to im2col; and ``choose`` takes it only
where it applies and Winograd pays for the phases."""

import numpy as np
import pytest
from conftest import in_memory_order, tolerance
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import conv
from cnn_im2col import functional as F
from cnn_im2col.conv import dilated, im2col
from cnn_im2col.gradcheck import check_function
from conv.cases import oracle_conv


@st.composite
def dilated_cases(draw):
    """Dilations 1-3 per axis (not both 1), paddings multiples of them, sides multiples of them;
    3x3 or 5x5 kernels; groups 1-2."""
    dy, dx = draw(st.sampled_from([(2, 2), (2, 1), (1, 3), (3, 2), (2, 3)]))
    r = draw(st.sampled_from([3, 3, 5]))
    groups = draw(st.sampled_from([1, 2]))
    n = draw(st.integers(1, 3))
    c, o = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    top, bottom = dy * draw(st.integers(0, r)), dy * draw(st.integers(0, r))
    left, right = dx * draw(st.integers(0, r)), dx * draw(st.integers(0, r))
    # the phases' sides: each at least the kernel less the phase's own padding, at most 5
    ph = draw(st.integers(max(1, r - (top + bottom) // dy), 5))
    pw = draw(st.integers(max(1, r - (left + right) // dx), 5))
    h, w = ph * dy, pw * dx
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    order = draw(st.sampled_from(["C", "F", "strided"]))
    bias_mode = draw(st.sampled_from(["tied", None]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c // groups, r, r)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype) if bias_mode else None
    return x, weight, bias, (dy, dx), (top, bottom, left, right), groups, order


def run(x, weight, bias, dilation, pads, groups, relu, algorithm):
    """forward through the strategy ``algorithm`` names ("dilated" or "im2col"), on the
    geometry of ``pads`` (top, bottom, left, right), as a plan would run it."""
    from cnn_im2col.shapes import window_geometry

    kh, kw = weight.shape[2:]
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    g = window_geometry(x.shape[2], x.shape[3], span, (1, 1), pads)
    g = g._replace(kh=kh, kw=kw, dy=dilation[0], dx=dilation[1])
    strategy = {"dilated": dilated, "im2col": im2col}[algorithm]
    if algorithm == "dilated":
        assert dilated.supports(weight.shape, g, groups)
    return strategy.forward(np.ascontiguousarray(x), weight, bias, g, groups=groups, relu=relu)


@given(case=dilated_cases(), relu=st.booleans(), input_grad=st.booleans())
def test_dilated_equals_im2col_and_the_oracle(case, relu, input_grad):
    x, weight, bias, dilation, pads, groups, order = case
    rtol, atol = tolerance(x.dtype)
    rtol, atol = 5 * rtol, 5 * atol  # Winograd's rounding inside
    fast, fast_cache = run(in_memory_order(x, order), weight, bias, dilation, pads, groups, relu,
                           "dilated")
    twin, twin_cache = run(x, weight, bias, dilation, pads, groups, relu, "im2col")
    assert isinstance(fast_cache, dilated.DilatedCache)
    assert fast.shape == twin.shape and fast.dtype == x.dtype and fast.flags.c_contiguous
    np.testing.assert_allclose(fast, twin, rtol, atol)
    top, bottom, left, right = pads
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    dout = np.random.default_rng(1).standard_normal(twin.shape).astype(x.dtype)
    masked = np.where(twin > 0, dout, 0) if relu else dout
    plain, dxp, dw = oracle_conv(padded, weight, bias, 1, 0, dilation, groups, masked)
    np.testing.assert_allclose(fast, np.maximum(plain, 0) if relu else plain, rtol, atol)
    # the same ReLU mask for both (outputs of ~0 may round to different signs)
    fast_cache = fast_cache._replace(out=twin) if relu else fast_cache
    got = F.conv2d_backward(in_memory_order(dout, order), fast_cache, input_grad=input_grad)
    want = F.conv2d_backward(dout, twin_cache, input_grad=input_grad)
    oracle = (dxp[:, :, top:top + x.shape[2], left:left + x.shape[3]], dw,
              None if bias is None else masked.sum(axis=(0, 2, 3)))
    for g_, w_, o_ in zip(got, want, oracle):
        if w_ is None:
            assert g_ is None
            continue
        if o_ is None:  # dx with input_grad=False
            continue
        np.testing.assert_allclose(g_, w_, rtol, atol)
        np.testing.assert_allclose(g_, o_, rtol, atol)
    if not input_grad:
        assert got[0] is None


@given(
    dilation=st.sampled_from([(2, 2), (2, 1), (1, 2), (1, 3), (3, 2), (4, 4)]),
    n=st.integers(1, 3), c=st.integers(1, 4), ph=st.integers(1, 6), pw=st.integers(1, 6),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_phase_split_and_merge_equal_their_numpy_twins(dilation, n, c, ph, pw, dtype):
    """The compiled polyphase split and merge (the dx == 2 rows deinterleaved in one loop)
    against the strided NumPy copies, and the merge undoes the split; the merge writes into a
    slice of a larger batch and nowhere else."""
    dy, dx = dilation
    x = np.random.default_rng(n * 7 + c).standard_normal((n, c, ph * dy, pw * dx)).astype(dtype)
    phases = dilated.to_phases(x, dy, dx)
    np.testing.assert_array_equal(phases, dilated._split_numpy(x, dy, dx))
    np.testing.assert_array_equal(dilated._merge_numpy(phases, dy, dx), x)
    batch = np.full((n + 2, *x.shape[1:]), np.nan, dtype=dtype)
    dilated.from_phases(phases, dy, dx, batch[1:n + 1])
    np.testing.assert_array_equal(batch[1:n + 1], x)
    assert np.isnan(batch[[0, n + 1]]).all()


@pytest.mark.parametrize("relu", [False, True])
def test_dilated_gradcheck_float64(relu):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 6))
    weight, bias = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    state = {}

    def forward(v, w, b):
        out, state["cache"] = run(v, w, b, (2, 3), (2, 4, 3, 3), 2, relu, "dilated")
        return out

    for index, arg in enumerate((x, weight, bias)):
        args = [x, weight, bias]

        def f(value, index=index, args=args):
            args[index] = value
            return forward(*args)

        check_function(f, lambda d, index=index: F.conv2d_backward(d, state["cache"])[index], arg)


def test_the_slice_hook_sees_the_whole_output_and_an_untied_bias_runs_im2col():
    """``then`` (a layer's NaN/Inf scan, a fused pool) gets every sample once, each slice of the
    finished output, and the phases keep the backward; an untied bias runs im2col."""
    rng = np.random.default_rng(0)
    x, weight = rng.standard_normal((5, 2, 8, 8)), rng.standard_normal((3, 2, 3, 3))
    seen = []
    from cnn_im2col.shapes import window_geometry

    g = window_geometry(8, 8, (5, 5), (1, 1), (2, 2, 2, 2))._replace(kh=3, kw=3, dy=2, dx=2)
    out, cache = dilated.forward(x, weight, None, g, then=lambda s, y: seen.append((s, y.copy())))
    assert isinstance(cache, dilated.DilatedCache)
    assert sorted(i for s, _ in seen for i in range(s.start, s.stop)) == list(range(5))
    for s, y in seen:
        np.testing.assert_array_equal(y, out[s])
    plain, _ = dilated.forward(x, weight, None, g)
    np.testing.assert_array_equal(out, plain)
    out, cache = dilated.forward(x, weight, rng.standard_normal((3, 8, 8)), g)
    assert isinstance(cache, im2col.Im2colCache)


def test_the_backward_without_the_kept_transforms_equals_the_one_with_them():
    """``keep=False`` (inference-time forward, kept input instead of each slice's V) gives the
    same gradients, bit for bit, over several batch slices."""
    from cnn_im2col.shapes import window_geometry

    rng = np.random.default_rng(3)
    x, weight = rng.standard_normal((6, 3, 8, 12)), rng.standard_normal((4, 3, 3, 3))
    g = window_geometry(8, 12, (5, 5), (1, 1), (2, 2, 2, 2))._replace(kh=3, kw=3, dy=2, dx=2)
    for relu in (False, True):
        out, kept = dilated.forward(x, weight, np.ones(4), g, relu=relu)
        again, rebuilt = dilated.forward(x, weight, np.ones(4), g, relu=relu, keep=False)
        assert kept.v is not None and rebuilt.v is None and len(kept.slices) >= 2
        np.testing.assert_array_equal(out, again)
        dout = rng.standard_normal(out.shape)
        for got, want in zip(dilated.backward(dout, rebuilt), dilated.backward(dout, kept)):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "shape, n, size, kw, chosen",
    [
        ((64, 32, 3, 3), 32, 32, {"padding": 2, "dilation": 2}, True),  # the benchmark's layer
        ((64, 32, 3, 3), 32, 32, {"padding": 1, "dilation": 2}, False),  # pads not multiples
        ((64, 32, 3, 3), 32, 31, {"padding": 2, "dilation": 2}, False),  # odd sides
        ((64, 32, 3, 3), 32, 32, {"padding": 2, "dilation": 2, "stride": 2}, False),
        ((64, 4, 3, 3), 32, 32, {"padding": 2, "dilation": 2}, False),  # Winograd does not pay
        ((64, 32, 3, 3), 1, 8, {"padding": 2, "dilation": 2}, False),  # nor here: 16 pixels
        ((64, 32, 3, 3), 32, 32, {"padding": 2, "dilation": 2, "algorithm": "im2col"}, False),
    ],
)
def test_auto_takes_the_dilated_strategy_only_where_it_applies_and_pays(shape, n, size, kw,
                                                                        chosen):
    x = np.ones((n, shape[1], size, size), np.float32)
    _, cache = F.conv2d_forward(x, np.ones(shape, np.float32), **kw)
    assert isinstance(cache, dilated.DilatedCache) == chosen
    assert conv.AUTO_MIN_CHANNELS == 8
