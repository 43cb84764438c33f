"""The padding layers, ``ConstantPad2D`` and ``ZeroPad2D``, over ``cnn_im2col.padding``'s
functional pair."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..padding import constant_pad2d, constant_pad2d_backward
from ..shapes import as_float_array, check_dout, check_float, check_int
from .base import Layer


class ConstantPad2D(Layer):
    """Pads the last two axes of (N, C, H, W) with ``value`` (PyTorch's ``ConstantPad2d``, ONNX's
    ``Pad``): for padding a convolution or pool cannot say itself, such as TensorFlow's "SAME"
    (an extra row at the bottom only). ``padding``: int (all four sides) or (left, right, top,
    bottom), PyTorch's order; each at least 0. Output (N, C, top + H + bottom, left + W + right).
    """

    def __init__(self, padding: Any, value: float = 0.0) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(padding, (list, tuple)):
            if len(padding) != 4:
                raise ValueError(f"{name}: padding must be an int or 4 ints (left, right, top, "
                                 f"bottom), got {padding!r}")
            sides = tuple(check_int(p, "padding", name, minimum=0) for p in padding)
        else:
            sides = (check_int(padding, "padding", name, minimum=0),) * 4
        self.padding = sides  # (left, right, top, bottom)
        left, right, top, bottom = sides
        self.pads = (top, bottom, left, right)  # the engine's order
        self.value = check_float(value, "value", name)
        config: dict[str, Any] = {"padding": sides[0] if len(set(sides)) == 1 else list(sides)}
        if type(self) is ConstantPad2D:
            config["value"] = self.value
        self._remember(**config)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ValueError(f"{self!r}: input must be (C, H, W), got {tuple(input_shape)}")
        top, bottom, left, right = self.pads
        c, height, width = input_shape
        return (c, top + height + bottom, left + width + right)

    def check_input(self, x: Any) -> np.ndarray:
        return as_float_array(x, "x", repr(self), ndim=4)

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        out = constant_pad2d(x, self.pads, self.value)
        self._cache = (out.shape, out.dtype)
        return out

    def backward(self, dout: Any) -> np.ndarray:
        shape, dtype = self._cached()
        return constant_pad2d_backward(check_dout(dout, shape, dtype, repr(self)), self.pads)


class ZeroPad2D(ConstantPad2D):
    """:class:`ConstantPad2D` with zeros (PyTorch's ``ZeroPad2d``, Keras's ``ZeroPadding2D``)."""

    def __init__(self, padding: Any) -> None:
        super().__init__(padding, 0.0)
