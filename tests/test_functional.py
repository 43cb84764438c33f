"""functional, the facade: its stateless pairs name bad input and convert integer input."""

import numpy as np
import pytest

from cnn_im2col import functional as F


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: F.conv2d_forward(np.zeros((1, 2, 5, 5)), np.zeros((3, 1, 2, 2))),
            ValueError,
            r"conv2d: x must have 1 channels \(shape \(N, 1, H, W\)\), got shape \(1, 2, 5, 5\)",
        ),
        (
            lambda: F.conv2d_forward(np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 2, 2)), np.zeros(2)),
            ValueError,
            r"bias must have shape \(3,\) \(tied\) or \(3, 4, 4\) \(untied",
        ),
        (
            lambda: F.conv2d_forward(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 7, 2))),
            ValueError,
            r"kernel size \(7, 2\) is larger than the padded input \(5, 5\)",
        ),
        (
            lambda: F.conv2d_forward(np.full((1, 1, 5, 5), np.nan), np.zeros((1, 1, 2, 2))),
            ValueError,
            r"conv2d: x contains NaN or Inf",
        ),
        (
            lambda: F.conv2d_backward(
                np.zeros((1, 1, 3, 3)),
                F.conv2d_forward(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 2, 2)))[1],
            ),
            ValueError,
            r"dout must have the output's shape \(1, 1, 4, 4\), got \(1, 1, 3, 3\)",
        ),
        (
            lambda: F.max_pool2d_forward(np.zeros((1, 1, 5, 5)), 2, padding=2),
            ValueError,
            r"max_pool2d: padding must be at most half the window \(1, 1\) for kernel_size "
            r"\(2, 2\), got \(2, 2\)",
        ),
        (
            lambda: F.max_pool2d_forward(np.zeros((1, 1, 2, 2)), 3),
            ValueError,
            r"pooling window size \(3, 3\) is larger than the padded input \(2, 2\)",
        ),
        (
            lambda: F.avg_pool2d_forward(np.zeros((1, 2, 4, 4)), 2, scale=np.ones(3)),
            ValueError,
            r"scale must have shape \(2,\), one weight per feature map, got \(3,\)",
        ),
        (
            lambda: F.conv2d_forward(np.zeros((1, 1, 5, 5), dtype=complex), np.zeros((1, 1, 2, 2))),
            TypeError,
            r"conv2d: x must be a real numeric array",
        ),
    ],
)
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_integer_and_float16_inputs_are_converted():
    weight = np.ones((1, 1, 2, 2), dtype=np.float32)
    for x in (
        np.arange(9, dtype=np.uint8).reshape(1, 1, 3, 3),
        np.arange(9, dtype=np.float16).reshape(1, 1, 3, 3),
    ):
        out, _ = F.conv2d_forward(x, weight)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out[0, 0], [[8, 12], [20, 24]])
