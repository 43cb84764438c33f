"""signal.correlate2d / convolve2d equal scipy.signal's in shape and value, in all three modes."""

import numpy as np
import pytest
import scipy.signal
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import signal

shapes = st.tuples(st.integers(1, 7), st.integers(1, 7))


@given(
    shapes,
    shapes,
    st.sampled_from(["full", "valid", "same"]),
    st.sampled_from(["correlate2d", "convolve2d"]),
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**16),
)
def test_equals_scipy(shape1, shape2, mode, name, dtype, seed):
    rng = np.random.default_rng(seed)
    a, k = rng.standard_normal(shape1).astype(dtype), rng.standard_normal(shape2).astype(dtype)
    ours, theirs = getattr(signal, name), getattr(scipy.signal, name)
    fits = (shape1[0] >= shape2[0] and shape1[1] >= shape2[1]) or (
        shape2[0] >= shape1[0] and shape2[1] >= shape1[1]
    )
    if mode == "valid" and not fits:
        with pytest.raises(ValueError, match="one input must be at least as large as the other"):
            ours(a, k, mode)
        return
    expected = theirs(a, k, mode)
    result = ours(a, k, mode)
    assert result.shape == expected.shape
    assert result.dtype == dtype
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(result, expected, rtol=tol, atol=tol)


VALUES = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
F = [[10, 20], [30, 40]]


def test_primer_appendix_a():
    """Appendix A of the primer, number for number."""
    np.testing.assert_array_equal(
        signal.correlate2d(VALUES, F, mode="valid"), [[370, 470], [670, 770]]
    )
    np.testing.assert_array_equal(
        signal.convolve2d(VALUES, F, mode="valid"), [[230, 330], [530, 630]]
    )
    f_rot180 = np.rot90(np.rot90(F))
    np.testing.assert_array_equal(
        signal.correlate2d(VALUES, f_rot180, mode="valid"), [[230, 330], [530, 630]]
    )
    np.testing.assert_array_equal(
        signal.correlate2d(VALUES, F, mode="full"),
        [[40, 110, 180, 90], [180, 370, 470, 210], [360, 670, 770, 330], [140, 230, 260, 90]],
    )
    full_convolution = [
        [10, 40, 70, 60],
        [70, 230, 330, 240],
        [190, 530, 630, 420],
        [210, 520, 590, 360],
    ]
    np.testing.assert_array_equal(signal.convolve2d(VALUES, F, mode="full"), full_convolution)
    np.testing.assert_array_equal(
        signal.correlate2d(VALUES, f_rot180, mode="full"), full_convolution
    )


def test_integer_inputs_compute_in_float64():
    assert signal.correlate2d(VALUES, F).dtype == np.float64


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: signal.correlate2d(VALUES, F, mode="circular"),
            ValueError,
            r"correlate2d: mode must be one of \('full', 'valid', 'same'\), got 'circular'",
        ),
        (
            lambda: signal.convolve2d([1, 2, 3], F),
            ValueError,
            r"convolve2d: in1 must be 2-D, got 1-D",
        ),
        (
            lambda: signal.correlate2d(VALUES, np.ones((2, 2), dtype=complex)),
            TypeError,
            r"correlate2d: in2 must be a real numeric array",
        ),
        (
            lambda: signal.correlate2d(np.ones((2, 5)), np.ones((3, 2)), mode="valid"),
            ValueError,
            r"one input must be at least as large as the other in both dimensions, got shapes "
            r"\(2, 5\) and \(3, 2\)",
        ),
        (
            lambda: signal.correlate2d([[np.nan]], F),
            ValueError,
            r"correlate2d: in1 contains NaN or Inf",
        ),
    ],
)
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()
