"""Constant padding's functional pair (cnn_im2col/padding.py) against NumPy's ``np.pad``, and its
backward as the forward's adjoint."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col.padding import constant_pad2d, constant_pad2d_backward

_shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6))
_pads = st.tuples(*[st.integers(0, 3)] * 4)


@given(shape=_shapes, pads=_pads, value=st.floats(-2, 2), dtype=st.sampled_from([np.float32,
                                                                                 np.float64]))
def test_the_border_is_numpys_constant_pad(shape, pads, value, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    top, bottom, left, right = pads
    got = constant_pad2d(x, pads, value)
    want = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=dtype(value))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)


@given(shape=_shapes, pads=_pads, seed=st.integers(0, 2**16))
def test_the_backward_is_the_adjoint(shape, pads, seed):
    """<pad(x), d> = <x, pad_backward(d)> for zero padding, in float64."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    padded = constant_pad2d(x, pads, 0.0)
    d = rng.standard_normal(padded.shape)
    back = constant_pad2d_backward(d, pads)
    assert back.shape == x.shape and back.flags.c_contiguous
    np.testing.assert_allclose(np.vdot(padded, d), np.vdot(x, back), rtol=1e-12)
