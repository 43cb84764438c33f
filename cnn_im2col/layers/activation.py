"""The element-wise activation layers (ReLU, Sigmoid, Tanh, Softmax, ReLU6, HardSigmoid,
HardSwish, LeakyReLU) over the functional pairs of ``cnn_im2col.activations``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..activations import (
    hard_sigmoid,
    hard_sigmoid_backward,
    hard_swish,
    hard_swish_backward,
    leaky_relu,
    leaky_relu_backward,
    relu,
    relu6,
    relu6_backward,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    softmax,
    softmax_backward,
    tanh,
    tanh_backward,
)
from ..shapes import check_dout, check_float
from .base import Layer


class _Activation(Layer):
    """Element-wise activation; backward uses the cached output y."""

    _forward = staticmethod(relu)
    _backward = staticmethod(relu_backward)

    def __init__(self) -> None:
        super().__init__()
        self._remember()

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        y = self._forward(x)
        self._cache = y
        return y

    def backward(self, dout: Any) -> np.ndarray:
        y = self._cached()
        dout = check_dout(dout, y.shape, y.dtype, repr(self))
        return self._backward(dout, y)


class ReLU(_Activation):
    """max(x, 0). Its derivative at 0 is taken as 0, as in PyTorch."""


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)), computed without overflow for any finite x."""

    _forward = staticmethod(sigmoid)
    _backward = staticmethod(sigmoid_backward)


class Tanh(_Activation):
    _forward = staticmethod(tanh)
    _backward = staticmethod(tanh_backward)


class Softmax(_Activation):
    """Softmax over the class axis (axis 1). To train a classifier, prefer raw logits with the
    fused ``losses.SoftmaxCrossEntropy``; this layer is for networks that output probabilities."""

    _forward = staticmethod(softmax)
    _backward = staticmethod(softmax_backward)

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if x.ndim < 2:
            raise ValueError(f"{self!r}: x must be (N, classes, ...), got shape {x.shape}")
        return super().run(x, training)


class ReLU6(_Activation):
    """min(max(x, 0), 6), MobileNetV2's activation (PyTorch's ``ReLU6``, ONNX's ``Clip(0, 6)``)."""

    _forward = staticmethod(relu6)
    _backward = staticmethod(relu6_backward)


class HardSigmoid(_Activation):
    """relu6(x + 3) / 6 (PyTorch's ``Hardsigmoid``; ONNX's ``HardSigmoid`` with alpha 1/6, beta
    1/2), the gate of squeeze-and-excitation blocks in MobileNetV3."""

    _forward = staticmethod(hard_sigmoid)
    _backward = staticmethod(hard_sigmoid_backward)


class HardSwish(_Activation):
    """x * relu6(x + 3) / 6 (PyTorch's ``Hardswish``, ONNX's ``HardSwish``), MobileNetV3's
    activation. Its backward needs the input, which it keeps instead of the output."""

    _forward = staticmethod(hard_swish)
    _backward = staticmethod(hard_swish_backward)

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._cache = x  # the derivative is a function of x, not of y
        return hard_swish(x)


class LeakyReLU(_Activation):
    """x where x > 0, else ``negative_slope * x`` (PyTorch's ``LeakyReLU``, ONNX's
    ``LeakyRelu``); ``negative_slope`` > 0 (a slope of 0 is ``ReLU``)."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        Layer.__init__(self)
        self.negative_slope = check_float(
            negative_slope, "negative_slope", "LeakyReLU", low=0.0, low_open=True
        )
        self._remember(negative_slope=self.negative_slope)

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        y = leaky_relu(x, self.negative_slope)
        self._cache = y
        return y

    def backward(self, dout: Any) -> np.ndarray:
        y = self._cached()
        dout = check_dout(dout, y.shape, y.dtype, repr(self))
        return leaky_relu_backward(dout, y, self.negative_slope)
