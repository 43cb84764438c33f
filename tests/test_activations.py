"""activations: every activation passes a float64 finite-difference check; sigmoid and softmax
stay exact for huge inputs."""

import numpy as np
import pytest

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
