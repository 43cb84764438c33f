"""im2col / col2im: the Numba kernels, the NumPy stride-tricks twin and a naive loop all agree."""

import numpy as np
import pytest
from conftest import in_memory_order
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col.im2col import col2im, im2col


def naive_im2col(x, kh, kw, sy, sx, ph, pw, pad_value):
    """The literal definition: one row per output position, the window flattened (c, i, j)."""
    n, c, h, w = x.shape
    padded = np.full((n, c, h + 2 * ph, w + 2 * pw), pad_value, dtype=x.dtype)
    padded[:, :, ph : ph + h, pw : pw + w] = x
    oh, ow = (h + 2 * ph - kh) // sy + 1, (w + 2 * pw - kw) // sx + 1
    rows = [
        padded[b, :, i * sy : i * sy + kh, j * sx : j * sx + kw].ravel()
        for b in range(n)
        for i in range(oh)
        for j in range(ow)
    ]
    return np.array(rows)


@st.composite
def window_cases(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sy, sx = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 8))
    w = draw(st.integers(max(1, kw - 2 * pw), 8))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    order = draw(st.sampled_from(["C", "F", "strided"]))
    seed = draw(st.integers(0, 2**16))
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(dtype)
    return x, (kh, kw), (sy, sx), (ph, pw), order


@given(window_cases(), st.sampled_from([0.0, -np.inf, 1.5]))
def test_backends_equal_naive_definition(case, pad_value):
    x, kernel, stride, padding, order = case
    expected = naive_im2col(x, *kernel, *stride, *padding, pad_value)
    for backend in ("numba", "numpy"):
        cols = im2col(
            in_memory_order(x, order), kernel, stride, padding, pad_value, backend=backend
        )
        assert cols.dtype == x.dtype
        np.testing.assert_array_equal(cols, expected)


@given(window_cases())
def test_col2im_is_the_adjoint_of_im2col(case):
    """<im2col(x), c> == <x, col2im(c)> for every x and c: col2im is the transpose of im2col."""
    x, kernel, stride, padding, order = case
    x = x.astype(np.float64)
    cols_shape = im2col(x, kernel, stride, padding).shape
    c = np.random.default_rng(1).standard_normal(cols_shape)
    for backend in ("numba", "numpy"):
        folded = col2im(
            in_memory_order(c, order), x.shape, kernel, stride, padding, backend=backend
        )
        lhs = np.vdot(im2col(x, kernel, stride, padding, backend=backend), c)
        np.testing.assert_allclose(lhs, np.vdot(x, folded), rtol=1e-10, atol=1e-10)


@given(window_cases())
def test_col2im_backends_agree(case):
    x, kernel, stride, padding, _ = case
    cols = im2col(x, kernel, stride, padding)
    a = col2im(cols, x.shape, kernel, stride, padding, backend="numba")
    b = col2im(cols, x.shape, kernel, stride, padding, backend="numpy")
    rtol = 1e-5 if x.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)


def test_overlapping_windows_accumulate():
    """With a 2x2 window at stride 1 the centre of a 3x3 image is in all four windows."""
    x = np.zeros((1, 1, 3, 3))
    ones = np.ones(im2col(x, 2).shape)
    counts = col2im(ones, x.shape, 2)
    np.testing.assert_array_equal(counts[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


def test_same_padding_with_even_kernel_pads_bottom_right():
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    cols = im2col(x, (2, 2), padding="same")
    assert cols.shape == (9, 4)
    np.testing.assert_array_equal(
        cols[0], [0, 1, 3, 4]
    )  # the first window starts at the image corner
    np.testing.assert_array_equal(
        cols[-1], [8, 0, 0, 0]
    )  # the last one hangs over the bottom-right


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: im2col(np.zeros((1, 1, 3)), 2), r"im2col: x must be 4-D, got 3-D"),
        (
            lambda: im2col(np.zeros((1, 1, 3, 3)), 4),
            r"kernel size \(4, 4\) is larger than the padded input \(3, 3\)",
        ),
        (
            lambda: im2col(np.zeros((1, 1, 3, 3)), 0),
            r"kernel_size must be an int >= 1 or a pair of them, got 0",
        ),
        (
            lambda: im2col(np.zeros((1, 1, 3, 3)), 2, stride=-1),
            r"stride must be an int >= 1 .* got -1",
        ),
        (
            lambda: im2col(np.zeros((1, 1, 3, 3)), 2, padding=-1),
            r"padding must be an int >= 0 .* got -1",
        ),
        (
            lambda: im2col(np.zeros((1, 1, 3, 3)), 2, padding="half"),
            r"padding must be one of \('valid', 'same'\), got 'half'",
        ),
        (
            lambda: im2col(np.zeros((1, 1, 3, 3)), 2, backend="cuda"),
            r"backend must be one of \('numba', 'numpy'\), got 'cuda'",
        ),
        (
            lambda: im2col(np.zeros((1, 1, 3, 3)), 2, pad_value=np.nan),
            r"im2col: pad_value must be a number \(not NaN\)",
        ),
        (
            lambda: col2im(np.zeros((5, 4)), (1, 1, 3, 3), 2),
            r"cols must have shape \(4, 4\) .* got \(5, 4\)",
        ),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "bad",
    [np.array([["a"]]), np.zeros((1, 1, 2, 2), dtype=complex), np.array([None], dtype=object)],
)
def test_non_numeric_arrays_are_type_errors(bad):
    with pytest.raises(TypeError, match="im2col: x must be a real numeric array"):
        im2col(bad, 1)


def test_bool_kernel_size_is_rejected():
    with pytest.raises(
        TypeError, match=r"kernel_size must be an int >= 1 or a pair of them, got True"
    ):
        im2col(np.zeros((1, 1, 3, 3)), True)


# --------------------------------------------------------------------------- dilation


def naive_dilated_im2col(x, kh, kw, sy, sx, dy, dx, ph, pw, pad_value):
    """The definition with dilation: window cell (i, j) reads pixel (oh*sy + i*dy, ow*sx + j*dx)."""
    n, c, h, w = x.shape
    padded = np.full((n, c, h + 2 * ph, w + 2 * pw), pad_value, dtype=x.dtype)
    padded[:, :, ph : ph + h, pw : pw + w] = x
    oh, ow = (h + 2 * ph - dy * (kh - 1) - 1) // sy + 1, (w + 2 * pw - dx * (kw - 1) - 1) // sx + 1
    rows = [
        padded[
            b, :, i * sy : i * sy + dy * (kh - 1) + 1 : dy, j * sx : j * sx + dx * (kw - 1) + 1 : dx
        ].ravel()
        for b in range(n)
        for i in range(oh)
        for j in range(ow)
    ]
    return np.array(rows)


@st.composite
def dilated_cases(draw):
    x, (kh, kw), stride, (ph, pw), order = draw(window_cases())
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    pad = (
        max(ph, (span[0] - x.shape[2] + 1) // 2),
        max(pw, (span[1] - x.shape[3] + 1) // 2),
    )  # so it fits
    return x, (kh, kw), stride, pad, dilation, order


@given(dilated_cases(), st.sampled_from([0.0, -np.inf]))
def test_dilated_backends_equal_naive_definition(case, pad_value):
    x, kernel, stride, padding, dilation, order = case
    expected = naive_dilated_im2col(x, *kernel, *stride, *dilation, *padding, pad_value)
    for backend in ("numba", "numpy"):
        cols = im2col(
            in_memory_order(x, order),
            kernel,
            stride,
            padding,
            pad_value,
            backend=backend,
            dilation=dilation,
        )
        np.testing.assert_array_equal(cols, expected)


@given(dilated_cases())
def test_dilated_col2im_is_the_adjoint_and_the_layouts_agree(case):
    """col2im with dilation is the transpose of im2col (both backends), and the convolution's
    channel-major kernels (unfold_t / fold_t) are the same matrices transposed."""
    from cnn_im2col.conv.im2col import fold_t, unfold_t
    from cnn_im2col.im2col import _geometry

    x, kernel, stride, padding, dilation, _ = case
    x = x.astype(np.float64)
    cols = im2col(x, kernel, stride, padding, dilation=dilation)
    c = np.random.default_rng(1).standard_normal(cols.shape)
    for backend in ("numba", "numpy"):
        folded = col2im(c, x.shape, kernel, stride, padding, backend=backend, dilation=dilation)
        np.testing.assert_allclose(np.vdot(cols, c), np.vdot(x, folded), rtol=1e-10, atol=1e-10)
    g = _geometry(x.shape, kernel, stride, padding, "test", dilation)
    np.testing.assert_array_equal(unfold_t(x, g), cols.T)
    np.testing.assert_allclose(
        fold_t(np.ascontiguousarray(c.T), g, np.empty_like(x)),
        col2im(c, x.shape, kernel, stride, padding, dilation=dilation),
        1e-12,
        1e-12,
    )


def test_bad_dilation_is_named():
    with pytest.raises(
        ValueError, match=r"im2col: dilation must be an int >= 1 or a pair of them, got 0"
    ):
        im2col(np.ones((1, 1, 4, 4)), 2, dilation=0)
    with pytest.raises(
        ValueError,
        match=r"im2col: kernel \(3, 3\) with dilation \(2, 2\): its span size \(5, 5\) is "
        r"larger than the padded",
    ):
        im2col(np.ones((1, 1, 4, 4)), 3, dilation=2)


@pytest.mark.parametrize("kernel", [(1, 1), (3, 1)])
@pytest.mark.parametrize("stride", [(2, 2), (1, 2), (3, 2), (2, 3)])
@pytest.mark.parametrize("padding", [(0, 0), (1, 2)])
def test_one_column_kernels_gather_their_strided_columns_in_place(kernel, stride, padding):
    """A kernel one column wide with a column stride (a ResNet's strided 1x1 projection) gathers
    every SX-th value of a row where it lies (``im2col_t``) and adds them back there
    (``col2im_t``), where wider kernels split the plane into column phases first: the same
    matrices as the NumPy twin and its adjoint, including odd widths and padded edges."""
    from cnn_im2col.conv.im2col import fold_t, unfold_t
    from cnn_im2col.im2col import _geometry

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 11))
    g = _geometry(x.shape, kernel, stride, padding, "test", (1, 1))
    cols = im2col(x, kernel, stride, padding, backend="numpy")
    np.testing.assert_array_equal(unfold_t(x, g), cols.T)
    c = rng.standard_normal(cols.shape)
    np.testing.assert_allclose(
        fold_t(np.ascontiguousarray(c.T), g, np.full_like(x, np.nan)),  # written whole
        col2im(c, x.shape, kernel, stride, padding, backend="numpy"), 1e-12, 1e-12)
