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


@nb.njit(cache=True, nogil=True)
def _add_relu_kernel(a, b, out):
    """``out = max(a + b, 0)`` over flat arrays of one dtype."""
    zero = out.dtype.type(0)
    for i in range(out.shape[0]):
        v = a[i] + b[i]
        out[i] = v if v > zero else zero


def add_relu(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ReLU(a + b) in one pass (a residual block's join and the ReLU after it), in NumPy's dtype
    of the sum; arrays of different dtypes or layouts take the NumPy formula (``add_relu_numpy``,
    the twin)."""
    if (a.dtype != b.dtype or a.dtype.char not in "fd" or a.shape != b.shape
            or not (a.flags.c_contiguous and b.flags.c_contiguous)):
        return add_relu_numpy(a, b)
    out = np.empty_like(a)
    flat_a, flat_b, flat_out = a.reshape(-1), b.reshape(-1), out.reshape(-1)

    def work(s: slice) -> None:
        _add_relu_kernel(flat_a[s], flat_b[s], flat_out[s])

    _threads.parallel_map(work, flat_slices(flat_out.size))
    return out


def add_into(out: np.ndarray, b: np.ndarray, relu: bool) -> None:
    """``out += b``, then ReLU if ``relu``, in place and serially: one batch slice, on the worker
    that has it in cache (a Residual's join in its body's last convolution, ``blocks``). ``out``
    and ``b`` C-contiguous, of one float dtype and shape."""
    if relu:
        flat = out.reshape(-1)
        _add_relu_kernel(flat, b.reshape(-1), flat)
    else:
        np.add(out, b, out=out)


def add_relu_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    y = np.add(a, b, dtype=np.result_type(a, b))
    return np.maximum(y, 0, out=y)


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


@nb.njit(cache=True, nogil=True)
def _add_relu_grad_kernel(a, dout, y, out):
    """``out = a + (dout where y > 0 else 0)`` over flat arrays of one dtype."""
    zero = out.dtype.type(0)
    for i in range(out.shape[0]):
        out[i] = a[i] + (dout[i] if y[i] > zero else zero)


def add_relu_grad(a: np.ndarray, dout: np.ndarray, y: np.ndarray, dtype: np.dtype
                  ) -> np.ndarray:
    """``a + relu_backward(dout, y)`` in one pass, into a new array of ``dtype`` (a ResNet block's
    input gradient: its body's plus its identity shortcut's, which is the gradient after the ReLU
    that follows the block, never stored); where all three are C-contiguous arrays of ``dtype``
    and one shape, else ``relu_backward`` and NumPy's add (the twin)."""
    if not (a.dtype == dout.dtype == y.dtype == dtype and dtype.char in "fd"
            and a.shape == dout.shape == y.shape
            and a.flags.c_contiguous and dout.flags.c_contiguous and y.flags.c_contiguous):
        return np.add(a, relu_backward(dout, y), dtype=dtype)
    out = np.empty_like(a)
    flat_a, flat_d, flat_y = a.reshape(-1), dout.reshape(-1), y.reshape(-1)
    flat_out = out.reshape(-1)

    def work(s: slice) -> None:
        _add_relu_grad_kernel(flat_a[s], flat_d[s], flat_y[s], flat_out[s])

    _threads.parallel_map(work, flat_slices(flat_out.size))
    return out


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


# ---------------------------------------------------------------- MobileNet's clipped activations
# Numba kernels, one pass over flat arrays on the pool, each with its NumPy formula as its twin
# (``*_numpy``, which the tests hold them equal to, and which takes what the kernels do not: mixed
# dtypes or non-contiguous arrays). The constants are in the arrays' dtype, as NumPy's arithmetic
# on a float32 array with Python numbers, so both give the same roundings.


@nb.njit(cache=True, nogil=True)
def _relu6_kernel(x, out):
    zero, six = x.dtype.type(0), x.dtype.type(6)
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = zero if v < zero else (six if v > six else v)


@nb.njit(cache=True, nogil=True)
def _relu6_backward_kernel(dout, y, dx):
    zero, six = y.dtype.type(0), y.dtype.type(6)
    for i in range(dx.shape[0]):
        dx[i] = dout[i] if zero < y[i] < six else zero


@nb.njit(cache=True, nogil=True)
def _hard_sigmoid_kernel(x, out):
    zero, three, six = x.dtype.type(0), x.dtype.type(3), x.dtype.type(6)
    for i in range(x.shape[0]):
        v = x[i] + three
        out[i] = (zero if v < zero else (six if v > six else v)) / six


@nb.njit(cache=True, nogil=True)
def _hard_sigmoid_backward_kernel(dout, y, dx):
    zero, one, six = y.dtype.type(0), y.dtype.type(1), y.dtype.type(6)
    for i in range(dx.shape[0]):
        dx[i] = dout[i] / six if zero < y[i] < one else zero


@nb.njit(cache=True, nogil=True)
def _hard_swish_kernel(x, out):
    zero, three, six = x.dtype.type(0), x.dtype.type(3), x.dtype.type(6)
    for i in range(x.shape[0]):
        u = x[i]
        v = u + three
        out[i] = u * (zero if v < zero else (six if v > six else v)) / six


@nb.njit(cache=True, nogil=True)
def _hard_swish_backward_kernel(dout, x, dx):
    zero, half, one, three = x.dtype.type(0), x.dtype.type(0.5), x.dtype.type(1), x.dtype.type(3)
    for i in range(dx.shape[0]):
        u = x[i]
        slope = zero if u <= -three else (u / three + half if u < three else one)
        dx[i] = dout[i] * slope


# In place, ``y = f(y)`` on one flat array: what a fused inference step runs on the slice its
# convolution just wrote. (The two-array kernels above called with the same array twice ran 10x
# slower: the compiler cannot vectorise a loop whose input and output may overlap.)


@nb.njit(cache=True, nogil=True)
def _relu6_in_place(y):
    zero, six = y.dtype.type(0), y.dtype.type(6)
    for i in range(y.shape[0]):
        v = y[i]
        y[i] = zero if v < zero else (six if v > six else v)


@nb.njit(cache=True, nogil=True)
def _hard_sigmoid_in_place(y):
    zero, three, six = y.dtype.type(0), y.dtype.type(3), y.dtype.type(6)
    for i in range(y.shape[0]):
        v = y[i] + three
        y[i] = (zero if v < zero else (six if v > six else v)) / six


@nb.njit(cache=True, nogil=True)
def _hard_swish_in_place(y):
    zero, three, six = y.dtype.type(0), y.dtype.type(3), y.dtype.type(6)
    for i in range(y.shape[0]):
        u = y[i]
        v = u + three
        y[i] = u * (zero if v < zero else (six if v > six else v)) / six


#: The in-place kernels by layer name (flat C-contiguous float32/float64 arrays).
IN_PLACE_KERNELS = {
    "ReLU6": _relu6_in_place,
    "HardSigmoid": _hard_sigmoid_in_place,
    "HardSwish": _hard_swish_in_place,
}


def _flat_map(kernel, *arrays: np.ndarray) -> np.ndarray | None:
    """``kernel(*flat arrays, flat out)`` over flat slices on the pool, out shaped as the first
    array; None where the kernels do not apply (arrays of different dtypes, shapes or layouts)."""
    first = arrays[0]
    if first.dtype.char not in "fd" or any(
        a.dtype != first.dtype or a.shape != first.shape or not a.flags.c_contiguous
        for a in arrays
    ):
        return None
    out = np.empty_like(first)
    flats, flat_out = [a.reshape(-1) for a in arrays], out.reshape(-1)

    def work(s: slice) -> None:
        kernel(*(f[s] for f in flats), flat_out[s])

    _threads.parallel_map(work, flat_slices(flat_out.size))
    return out


def relu6(x: np.ndarray) -> np.ndarray:
    """min(max(x, 0), 6) (MobileNet's clipped ReLU)."""
    out = _flat_map(_relu6_kernel, x)
    return relu6_numpy(x) if out is None else out


def relu6_numpy(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 6).astype(x.dtype, copy=False)


def relu6_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``dout`` where 0 < y < 6 (PyTorch's convention at both kinks: 0)."""
    dx = _flat_map(_relu6_backward_kernel, dout, y)
    return relu6_backward_numpy(dout, y) if dx is None else dx


def relu6_backward_numpy(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.where((y > 0) & (y < 6), dout, 0).astype(dout.dtype, copy=False)


def hard_sigmoid(x: np.ndarray) -> np.ndarray:
    """relu6(x + 3) / 6, PyTorch's ``Hardsigmoid`` (ONNX's HardSigmoid with alpha 1/6, beta 1/2)."""
    out = _flat_map(_hard_sigmoid_kernel, x)
    return hard_sigmoid_numpy(x) if out is None else out


def hard_sigmoid_numpy(x: np.ndarray) -> np.ndarray:
    return (np.clip(x + 3, 0, 6) / 6).astype(x.dtype, copy=False)


def hard_sigmoid_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``dout / 6`` where 0 < y < 1 (-3 < x < 3), else 0."""
    dx = _flat_map(_hard_sigmoid_backward_kernel, dout, y)
    return hard_sigmoid_backward_numpy(dout, y) if dx is None else dx


def hard_sigmoid_backward_numpy(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.where((y > 0) & (y < 1), dout / 6, 0).astype(dout.dtype, copy=False)


def hard_swish(x: np.ndarray) -> np.ndarray:
    """x * relu6(x + 3) / 6, PyTorch's ``Hardswish`` (MobileNetV3)."""
    out = _flat_map(_hard_swish_kernel, x)
    return hard_swish_numpy(x) if out is None else out


def hard_swish_numpy(x: np.ndarray) -> np.ndarray:
    return (x * np.clip(x + 3, 0, 6) / 6).astype(x.dtype, copy=False)


def hard_swish_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """From the INPUT x (the output does not determine it): 0 up to -3, ``x / 3 + 1/2`` below 3,
    1 from 3 on (PyTorch's convention at the kinks)."""
    dx = _flat_map(_hard_swish_backward_kernel, dout, x)
    return hard_swish_backward_numpy(dout, x) if dx is None else dx


def hard_swish_backward_numpy(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
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
