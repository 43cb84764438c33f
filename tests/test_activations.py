"""activations: every activation passes a float64 finite-difference check; sigmoid and softmax
stay exact for huge inputs."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import activations as A
from cnn_im2col import functional as F
from cnn_im2col.gradcheck import check_function


@pytest.mark.parametrize(
    "forward, backward",
    [
        (F.relu, F.relu_backward),
        (F.sigmoid, F.sigmoid_backward),
        (F.tanh, F.tanh_backward),
        (F.softmax, F.softmax_backward),
    ],
)
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
    with np.errstate(
        over="raise", invalid="raise", divide="raise"
    ):  # underflow to 0 is exact enough
        y = F.sigmoid(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [0, 0, 1.9287e-22, 0.5, 1, 1, 1], rtol=1e-4, atol=0)


def test_softmax_of_huge_logits_is_exact():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = F.softmax(np.array([[1e4, -1e4, 0.0], [5.0, 5.0, 5.0]]))
    np.testing.assert_allclose(y, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]])


@given(
    values=st.lists(st.one_of(st.floats(-8, 8, width=32), st.sampled_from([-3.0, 0.0, 3.0, 6.0])),
                    min_size=1, max_size=300),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_clipped_activation_kernels_equal_their_numpy_twins_bit_for_bit(values, dtype):
    """ReLU6, HardSigmoid and HardSwish and their backward passes: the Numba kernels give the
    NumPy formulas' numbers exactly, kinks included (-3, 0, 3, 6)."""
    x = np.array(values, dtype=dtype).reshape(1, -1)
    dout = np.random.default_rng(len(values)).standard_normal(x.shape).astype(dtype)
    for name in ("relu6", "hard_sigmoid", "hard_swish"):
        forward, backward = getattr(A, name), getattr(A, f"{name}_backward")
        y = forward(x)
        np.testing.assert_array_equal(y, getattr(A, f"{name}_numpy")(x))
        saved = x if name == "hard_swish" else y  # HardSwish's derivative needs its input
        np.testing.assert_array_equal(
            backward(dout, saved), getattr(A, f"{name}_backward_numpy")(dout, saved)
        )
        assert y.dtype == backward(dout, saved).dtype == dtype
    # a non-contiguous view takes the NumPy path, with the same numbers
    np.testing.assert_array_equal(A.relu6(x[:, ::2]), A.relu6_numpy(x[:, ::2]))


@pytest.mark.parametrize("dtypes", [(np.float32, np.float32), (np.float64, np.float64),
                                    (np.float32, np.float64)])
def test_add_relu_is_its_numpy_formula_bit_for_bit(dtypes):
    from cnn_im2col.activations import add_relu, add_relu_numpy

    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4, 50, 70)).astype(dtypes[0])  # large: split over the pool
    b = rng.standard_normal((3, 4, 50, 70)).astype(dtypes[1])
    b[0, 0, 0, :3] = -a[0, 0, 0, :3]  # sums of exactly 0
    got = add_relu(a, b)
    assert got.dtype == np.result_type(a, b)
    np.testing.assert_array_equal(got, add_relu_numpy(a, b))
    np.testing.assert_array_equal(got, np.maximum(a + b, 0))
    np.testing.assert_array_equal(add_relu(a[:, :, ::2], b[:, :, ::2]),
                                  np.maximum(a[:, :, ::2] + b[:, :, ::2], 0))  # strided


@pytest.mark.parametrize("dtypes", [(np.float32,) * 3, (np.float64,) * 3,
                                    (np.float32, np.float64, np.float32)])
def test_add_relu_grad_is_the_sum_of_the_masked_gradient_bit_for_bit(dtypes):
    """A ResNet block's input gradient, body's plus shortcut's: ``a + relu_backward(dout, y)`` in
    one pass (the kernel on one dtype, split over the pool), the twin otherwise (mixed dtypes, a
    strided view)."""
    rng = np.random.default_rng(1)
    shape = (3, 4, 50, 70)  # large: split over the pool
    a, dout = (rng.standard_normal(shape).astype(t) for t in dtypes[:2])
    y = np.maximum(rng.standard_normal(shape), 0).astype(dtypes[2])  # a ReLU's output: zeros too
    dtype = np.dtype(dtypes[0])
    got = A.add_relu_grad(a, dout, y, dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.add(a, np.where(y > 0, dout, 0), dtype=dtype))
    view = (slice(None), slice(None), slice(None, None, 2))
    np.testing.assert_array_equal(A.add_relu_grad(a[view], dout[view], y[view], dtype),
                                  np.add(a[view], np.where(y[view] > 0, dout[view], 0),
                                         dtype=dtype))
