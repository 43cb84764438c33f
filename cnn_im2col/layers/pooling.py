"""The pooling layers: max and average pooling over windows, adaptive pooling to a fixed output
size, global average pooling. Their kernels and functional pairs are ``cnn_im2col.pooling``'s."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..pooling import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_max_pool2d,
    adaptive_max_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
)
from ..shapes import (
    as_float_array,
    check_dout,
    check_int,
    check_nchw,
    pair,
    pool_geometry,
    pool_plan,
)
from .base import Layer, _compact, _dtype_name


class _Pool2D(Layer):
    ceil_mode = False
    dilation = (1, 1)

    def _setup(self, name: str, kernel_size: Any, stride: Any, padding: Any,
               ceil_mode: Any = False, dilation: Any = 1) -> None:
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise TypeError(f"{name}: ceil_mode must be True or False, got {ceil_mode!r}")
        self.ceil_mode = bool(ceil_mode)
        self.dilation = pair(dilation, "dilation", name)
        kernel = pair(kernel_size, "kernel_size", name)
        steps = kernel if stride is None else pair(stride, "stride", name)
        pads = pair(padding, "padding", name, minimum=0)
        if pads[0] > kernel[0] // 2 or pads[1] > kernel[1] // 2:
            raise ValueError(
                f"{name}: padding must be at most half the window "
                f"({kernel[0] // 2}, {kernel[1] // 2}) for kernel_size {kernel}, got {pads}"
            )
        self.kernel_size, self.stride, self.padding = kernel, steps, pads

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ValueError(f"{self!r}: input must be (C, H, W), got {tuple(input_shape)}")
        g = pool_geometry(input_shape[1], input_shape[2], self.kernel_size, self.stride,
                          self.padding, repr(self), self.ceil_mode, self.dilation)
        return (input_shape[0], g.oh, g.ow)

    def check_input(self, x: Any) -> np.ndarray:
        return as_float_array(x, "x", repr(self), ndim=4)

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def _make_plan(self, shape: tuple[int, ...]) -> Any:
        """The pooling geometry for this input shape (a ``WindowGeometry``)."""
        channels = getattr(self, "channels", None)
        return pool_plan(shape, channels, self.kernel_size, self.stride, self.padding, repr(self),
                         self.ceil_mode, self.dilation)


class MaxPool2D(_Pool2D):
    """Max pooling over each feature map (Eq. 8.24); ``stride`` defaults to the window.

    Overlapping windows (stride < kernel_size, like the primer's stride-1 ``MaxPoolingMap``) are
    allowed; their gradients accumulate. Padding counts as -inf and is at most half the window.
    Ties: the gradient goes to the first maximum in window scan order (row-major).
    ``ceil_mode=True``: the output size rounds up (PyTorch's), the last windows overhanging the
    input; ``dilation``: the window's cells that many pixels apart (PyTorch's).
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, dilation: Any = 1) -> None:
        super().__init__()
        self._setup("MaxPool2D", kernel_size, stride, padding, ceil_mode, dilation)
        self._remember(
            kernel_size=_compact(self.kernel_size),
            stride=None if stride is None else _compact(self.stride),
            padding=_compact(self.padding),
            ceil_mode=self.ceil_mode,
            dilation=_compact(self.dilation),
        )

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        out, self._cache = max_pool2d(np.ascontiguousarray(x), self.plan(x.shape), owner=repr(self))
        return out

    def backward(self, dout: Any) -> np.ndarray:
        return max_pool2d_backward(dout, self._cached())


class AvgPool2D(_Pool2D):
    """Average pooling; ``stride`` defaults to the window.

    ``count_include_pad=True`` (PyTorch's default): zero padding counts toward the divisor
    (always KH*KW); ``False``: the divisor is the number of window cells inside the image.
    With ``trainable_scale=True`` it is Eq. 8.22: the window sum times one learned weight per
    feature map (``params["weight"]``, shape (channels,), initialised to 1/(KH*KW) so it starts
    as the mean); that needs ``channels``. With both, a border window's sum is first scaled by
    KH*KW / (cells inside), so the initial weight still gives PyTorch's
    ``count_include_pad=False`` mean; interior windows are Eq. 8.22 unchanged.
    ``ceil_mode=True``: the output size rounds up (PyTorch's); a window overhanging the padded
    input divides by the cells it covers of it.
    """

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        trainable_scale: bool = False,
        channels: int | None = None,
        dtype: Any = np.float32,
        count_include_pad: bool = True,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        name = "AvgPool2D"
        self._setup(name, kernel_size, stride, padding, ceil_mode)
        if not isinstance(count_include_pad, (bool, np.bool_)):
            raise TypeError(
                f"{name}: count_include_pad must be True or False, got {count_include_pad!r}"
            )
        self.count_include_pad = bool(count_include_pad)
        if not isinstance(trainable_scale, (bool, np.bool_)):
            raise TypeError(
                f"{name}: trainable_scale must be True or False, got {trainable_scale!r}"
            )
        dtype_name = _dtype_name(dtype, name)
        if trainable_scale:
            if channels is None:
                raise ValueError(
                    f"{name}: trainable_scale=True learns one weight per feature map, so it "
                    "needs channels=<number of feature maps>; got channels=None"
                )
            channels = check_int(channels, "channels", name, minimum=1)
            area = self.kernel_size[0] * self.kernel_size[1]
            self.params["weight"] = np.full(channels, 1.0 / area, dtype=dtype_name)
        elif channels is not None:
            channels = check_int(channels, "channels", name, minimum=1)
        self.channels = channels
        self._remember(
            kernel_size=_compact(self.kernel_size),
            stride=None if stride is None else _compact(self.stride),
            padding=_compact(self.padding),
            trainable_scale=bool(trainable_scale),
            channels=channels,
            dtype=dtype_name,
            count_include_pad=self.count_include_pad,
            ceil_mode=self.ceil_mode,
        )
        self._zero_grads()

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = super().output_shape(input_shape)
        if self.channels is not None and input_shape[0] != self.channels:
            raise ValueError(
                f"{self!r}: input must have {self.channels} channels, got {tuple(input_shape)}"
            )
        return shape

    def check_input(self, x: Any) -> np.ndarray:
        scale = self.params.get("weight")
        return as_float_array(
            x, "x", repr(self), ndim=4, dtype=None if scale is None else scale.dtype
        )

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        g = self.plan(x.shape)
        scale = self.params.get("weight")
        x = np.ascontiguousarray(x, dtype=None if scale is None else scale.dtype)
        out, self._cache = avg_pool2d(
            x, g, scale, owner=repr(self), count_include_pad=self.count_include_pad
        )
        return out

    def backward(self, dout: Any) -> np.ndarray:
        dx, dscale = avg_pool2d_backward(dout, self._cached())
        if dscale is not None:
            self.grads["weight"] = dscale
        return dx


class _AdaptivePool2D(Layer):
    """Pooling to a fixed output size over PyTorch's adaptive windows: output cell (i, j) pools
    rows ``floor(i H / OH) .. ceil((i + 1) H / OH)`` and the same for columns, so any input size
    gives (N, C, OH, OW). ``output_size``: int or (OH, OW). A subclass names its functional pair
    (whose cache starts with the input's shape and dtype and the windows' rows and columns)."""

    _forward = staticmethod(adaptive_avg_pool2d)
    _backward = staticmethod(adaptive_avg_pool2d_backward)

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = pair(output_size, "output_size", type(self).__name__)
        self._remember(output_size=_compact(self.output_size))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ValueError(f"{self!r}: input must be (C, H, W), got {tuple(input_shape)}")
        return (input_shape[0], *self.output_size)

    def check_input(self, x: Any) -> np.ndarray:
        return as_float_array(x, "x", repr(self), ndim=4)

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        out, self._cache = self._forward(x, self.output_size)
        return out

    def backward(self, dout: Any) -> np.ndarray:
        cache = self._cached()
        shape, dtype, rows, cols = cache[:4]
        dout = check_dout(dout, (shape[0], shape[1], len(rows), len(cols)), dtype, repr(self))
        return self._backward(dout, cache)


class AdaptiveAvgPool2D(_AdaptivePool2D):
    """Average pooling to a fixed output size (PyTorch's ``AdaptiveAvgPool2d``): each output cell
    averages its window (``_AdaptivePool2D``'s). ``output_size``: int or (OH, OW)."""


class AdaptiveMaxPool2D(_AdaptivePool2D):
    """Max pooling to a fixed output size (PyTorch's ``AdaptiveMaxPool2d``, the windows of
    :class:`AdaptiveAvgPool2D`); ``AdaptiveMaxPool2D(1)`` is ONNX's ``GlobalMaxPool``. Ties go to
    the first cell of a window in row-major order, as in PyTorch. ``output_size``: int or
    (OH, OW)."""

    _forward = staticmethod(adaptive_max_pool2d)
    _backward = staticmethod(adaptive_max_pool2d_backward)


class GlobalAvgPool2D(Layer):
    """The mean of each feature map: (N, C, H, W) -> (N, C), no parameters."""

    def __init__(self) -> None:
        super().__init__()
        self._remember()

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ValueError(f"{self!r}: input must be (C, H, W), got {tuple(input_shape)}")
        return (input_shape[0],)

    def check_input(self, x: Any) -> np.ndarray:
        return as_float_array(x, "x", repr(self), ndim=4)

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def _make_plan(self, shape: tuple[int, ...]) -> bool:
        check_nchw(shape, None, repr(self))
        return True

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.plan(x.shape)
        out, self._cache = global_avg_pool2d(x, owner=repr(self))
        return out

    def backward(self, dout: Any) -> np.ndarray:
        return global_avg_pool2d_backward(dout, self._cached())
