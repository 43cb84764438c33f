"""Constant padding: the ``ConstantPad2D`` / ``ZeroPad2D`` layers' functional pair (the border a
window may need in front of it, e.g. TensorFlow-style asymmetric padding, or ONNX's ``Pad``)."""

from __future__ import annotations

import numpy as np


def constant_pad2d(x: np.ndarray, pads: tuple[int, int, int, int], value: float) -> np.ndarray:
    """(N, C, H, W) -> (N, C, top + H + bottom, left + W + right), the border filled with
    ``value``; ``pads`` = (top, bottom, left, right)."""
    top, bottom, left, right = pads
    n, c, height, width = x.shape
    out = np.full((n, c, top + height + bottom, left + width + right), value, dtype=x.dtype)
    out[:, :, top:top + height, left:left + width] = x
    return out


def constant_pad2d_backward(dout: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    """The gradient of :func:`constant_pad2d`: ``dout`` without its border."""
    top, bottom, left, right = pads
    height, width = dout.shape[2] - top - bottom, dout.shape[3] - left - right
    return np.ascontiguousarray(dout[:, :, top:top + height, left:left + width])
