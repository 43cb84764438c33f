"""Activations: relu / sigmoid / tanh / softmax and their backward passes, with ReLU's kernel.

Each takes and returns arrays of any shape; backward gets the forward OUTPUT y, which is all these
derivatives need (Eq. 8.52: dN = f'(N) * dA). Nothing here validates: the layers check their input
where it enters. Element-wise passes over big arrays run on the pool in flat slices.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from . import threads as _threads
from .arrays import flat_slices


@nb.njit(cache=True, nogil=True)
def relu_backward_kernel(dout, y, dx):
    """``dx = dout where y > 0 else 0``, over flat arrays of the same size."""
    for index in range(dx.shape[0]):
        dx[index] = dout[index] if y[index] > 0 else 0.0


def relu(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, dtype=x.dtype)
    flat_x, flat_out = np.ascontiguousarray(x).reshape(-1), out.reshape(-1)

    def work(s: slice) -> None:
        np.maximum(flat_x[s], 0, out=flat_out[s], dtype=x.dtype)

    _threads.parallel_map(work, flat_slices(flat_x.size))
    return out


def relu_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    if (
        dout.dtype == y.dtype
        and dout.dtype.char in "fd"
        and dout.shape == y.shape
        and dout.flags.c_contiguous
        and y.flags.c_contiguous
    ):
        dx = np.empty_like(dout)
        flat_d, flat_y, flat_dx = dout.reshape(-1), y.reshape(-1), dx.reshape(-1)

        def work(s: slice) -> None:
            relu_backward_kernel(flat_d[s], flat_y[s], flat_dx[s])  # one pass, no mask

        _threads.parallel_map(work, flat_slices(flat_dx.size))
        return dx
    return np.where(y > 0, dout, 0).astype(dout.dtype, copy=False)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) computed from exp(-|x|), so no overflow warning for any finite x."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def sigmoid_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    return dout * y * (1 - y)


def tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def tanh_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    return dout * (1 - y * y)


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Softmax along ``axis`` (the class axis), shifted by the max so that large logits cannot
    overflow."""
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(dout: np.ndarray, y: np.ndarray, axis: int = 1) -> np.ndarray:
    """Jacobian-vector product of softmax: y * (dout - <dout, y>)."""
    return y * (dout - (dout * y).sum(axis=axis, keepdims=True))


def relu6(x: np.ndarray) -> np.ndarray:
    """min(max(x, 0), 6) (MobileNet's clipped ReLU)."""
    return np.clip(x, 0, 6).astype(x.dtype, copy=False)


def relu6_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``dout`` where 0 < y < 6 (PyTorch's convention at both kinks: 0)."""
    return np.where((y > 0) & (y < 6), dout, 0).astype(dout.dtype, copy=False)


def hard_sigmoid(x: np.ndarray) -> np.ndarray:
    """relu6(x + 3) / 6, PyTorch's ``Hardsigmoid`` (ONNX's HardSigmoid with alpha 1/6, beta 1/2)."""
    return (np.clip(x + 3, 0, 6) / 6).astype(x.dtype, copy=False)


def hard_sigmoid_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``dout / 6`` where 0 < y < 1 (-3 < x < 3), else 0."""
    return np.where((y > 0) & (y < 1), dout / 6, 0).astype(dout.dtype, copy=False)


def hard_swish(x: np.ndarray) -> np.ndarray:
    """x * relu6(x + 3) / 6, PyTorch's ``Hardswish`` (MobileNetV3)."""
    return (x * np.clip(x + 3, 0, 6) / 6).astype(x.dtype, copy=False)


def hard_swish_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """From the INPUT x (the output does not determine it): 0 up to -3, ``x / 3 + 1/2`` below 3,
    1 from 3 on (PyTorch's convention at the kinks)."""
    slope = np.where(x <= -3, 0, np.where(x < 3, x / 3 + 0.5, 1))
    return (dout * slope).astype(dout.dtype, copy=False)


def leaky_relu(x: np.ndarray, negative_slope: float) -> np.ndarray:
    """x where x > 0, else ``negative_slope * x``."""
    return np.where(x > 0, x, x * x.dtype.type(negative_slope)).astype(x.dtype, copy=False)


def leaky_relu_backward(dout: np.ndarray, y: np.ndarray, negative_slope: float) -> np.ndarray:
    """``dout`` where y > 0 (x > 0; a slope > 0 keeps the sign), else ``negative_slope * dout``
    (PyTorch's convention at 0)."""
    return np.where(y > 0, dout, dout * dout.dtype.type(negative_slope)).astype(
        dout.dtype, copy=False
    )
