"""Thin stateful layers over the engine: they hold parameters, gradients and the forward cache.

The layer protocol (all a user's layer needs, inside ``Sequential`` too):

- ``forward(x, training=False) -> y`` and ``backward(dout) -> dx``;
- ``params`` / ``grads``: dicts of arrays with the same keys and shapes (``"weight"``, ``"bias"``);
  ``backward`` overwrites ``grads`` in place of accumulating;
- ``output_shape(input_shape)``: per-sample shapes, without the batch axis, e.g. (C, H, W);
- ``config()`` (JSON-able constructor arguments) and ``from_config(config)``.

Shapes are NCHW; weights use PyTorch's layouts, Conv2D (O, C, KH, KW) and Dense
(out_features, in_features), so weights copy across both ways.

Validate once, plan once. The built-in layers split ``forward`` in two: ``check_input(x)`` is the
boundary check that gives users clear errors (numeric, dimensions, dtype, NaN/Inf), and ``run(x,
training)`` the internal path, which trusts that ``x`` is a float array made by the engine. ``run``
looks up the layer's plan for ``x.shape``: what the layer works out once per input shape and keeps
(``plan(shape)``: a convolution's geometry and strategy, ``conv.ConvPlan``; a pool's geometry; for
the others, that the shape fits). The first time a shape is seen, the plan is made with one call
into ``shapes.py``, which raises the same errors the boundary would; after that a forward pass
calls no validation at all. ``forward = run(check_input(x))``; ``Sequential`` checks its input once
(its first step's ``forward``) and runs every later step unchecked (``blocks.py``). The plan is
where a later speed issue keeps what else belongs to one input shape (workspace buffers, the
algorithm measured fastest): a layer keys it by input shape and makes it on first use.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from .activations import (
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
from .arrays import gemm
from .conv import ALGORITHMS, ConvPlan, choose, conv2d_backward, conv2d_output_shape, winograd
from .init import he_normal, make_rng
from .normalization import batch_norm2d, batch_norm2d_backward
from .padding import constant_pad2d, constant_pad2d_backward
from .pooling import (
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
from .shapes import (
    all_finite,
    as_float_array,
    check_choice,
    check_dout,
    check_float,
    check_int,
    check_nchw,
    conv_geometry,
    finite_scans_on,
    float_dtype,
    non_finite,
    pair,
    pool_geometry,
    pool_plan,
)


class Layer:
    """Base class: bookkeeping shared by every layer (repr, config, plans, the
    backward-before-forward check)."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._cache: Any = None
        # input shape (a Conv2D also (shape, "frozen")) -> plan (see the module docstring)
        self._plans: dict[Any, Any] = {}

    # --- protocol --------------------------------------------------------------------------
    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: Any) -> np.ndarray:
        raise NotImplementedError

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        return cls(**config)

    __call__ = forward

    # --- the built-in layers' split of forward (module docstring) -----------------------------
    def check_input(self, x: Any) -> np.ndarray:
        """The boundary check of ``forward``: ``x`` as a float array, NaN/Inf refused."""
        return as_float_array(x, "x", repr(self))

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """``forward`` on input already checked (by ``check_input``, or made by the engine)."""
        raise NotImplementedError

    def plan(self, shape: tuple[int, ...]) -> Any:
        """This layer's plan for inputs of ``shape`` (N, ...), made on first use and kept."""
        plan = self._plans.get(shape)
        if plan is None:
            plan = self._plans[shape] = self._make_plan(shape)
        return plan

    def _make_plan(self, shape: tuple[int, ...]) -> Any:
        return True  # nothing to work out: every shape fits

    # --- helpers ---------------------------------------------------------------------------
    def _remember(self, **config: Any) -> None:
        """Store the constructor arguments (JSON-able) for config() and repr()."""
        self._config = config
        self._repr: str | None = None

    def _cached(self) -> Any:
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward() called before forward(); run forward first")
        return self._cache

    def _zero_grads(self) -> None:
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}

    def __repr__(self) -> str:
        # every forward/backward names its layer in error messages, and inspect.signature is slow:
        # the configuration never changes after __init__, so the text is made once
        text = self.__dict__.get("_repr")
        if text is None:
            text = self._repr = self._make_repr()
        return text

    def _make_repr(self) -> str:
        parameters = inspect.signature(type(self).__init__).parameters
        parts = []
        for name, value in self._config.items():
            default = parameters[name].default
            value = tuple(value) if isinstance(value, list) else value  # config keeps JSON lists
            if default is inspect.Parameter.empty:
                parts.append(repr(value))
            elif name == "dtype" and np.dtype(value) == np.dtype(default):
                continue
            elif value != default:
                parts.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _dtype_name(dtype: Any, owner: str) -> str:
    return float_dtype(dtype, "dtype", owner).name


def _input_size(input_size: Any, owner: str) -> list[int] | None:
    return None if input_size is None else list(pair(input_size, "input_size", owner))


class Conv2D(Layer):
    """A convolution layer: cross-correlation of C input maps with O kernels, plus a bias.

    Weight (O, C/groups, KH, KW), He-initialised from ``seed``. ``bias``: ``"tied"`` -> shape (O,),
    one per feature map; ``"untied"`` -> shape (O, OH, OW), one per output neuron (Fig. 8.1), which
    needs ``input_size`` (H, W); ``None`` -> no bias. ``padding``: int, (ph, pw), ``"valid"`` or
    ``"same"`` (``ceil(H / stride)`` outputs: with a stride, ONNX's SAME_UPPER, the extra cell at
    the bottom/right). ``dilation``: int or (dy, dx), the distance between kernel cells;
    ``groups``: the channels split into that many independent convolutions (``groups ==
    in_channels`` is a depthwise convolution), both with PyTorch's meaning; ``groups`` must divide
    ``in_channels`` and ``out_channels``. ``algorithm``: how the convolution becomes GEMMs,
    ``"im2col"``, ``"winograd"`` (F(4x4, 3x3) or F(2x2, 5x5): a 3x3 or 5x5 kernel, stride 1,
    dilation 1, any groups) or ``"auto"`` (Winograd where it applies and pays, see
    ``conv.choose``); the numbers agree to rounding. Input (N, C, H, W) -> output
    (N, O, OH, OW).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        bias: str | None = "tied",
        input_size: Any = None,
        dtype: Any = np.float32,
        seed: int | None = None,
        dilation: Any = 1,
        groups: int = 1,
        algorithm: str = "auto",
    ) -> None:
        super().__init__()
        name = "Conv2D"
        in_channels = check_int(in_channels, "in_channels", name, minimum=1)
        out_channels = check_int(out_channels, "out_channels", name, minimum=1)
        kernel = pair(kernel_size, "kernel_size", name)
        steps = pair(stride, "stride", name)
        dil = pair(dilation, "dilation", name)
        groups = check_int(groups, "groups", name, minimum=1)
        for what, count in (("in_channels", in_channels), ("out_channels", out_channels)):
            if count % groups:
                raise ValueError(
                    f"{name}: groups must divide {what}; got groups={groups} and {what}={count}"
                )
        if isinstance(padding, str):
            check_choice(padding, "padding", ("valid", "same"), name)
            pad_config: Any = padding
        else:
            pad_config = list(pair(padding, "padding", name, minimum=0))
        check_choice(bias, "bias", ("tied", "untied", None), name)
        check_choice(algorithm, "algorithm", ALGORITHMS, name)
        if algorithm == "winograd" and not winograd.supports(kernel, steps, dil, groups):
            raise ValueError(
                f"{name}: algorithm='winograd' needs kernel_size 3 or 5, stride 1 and dilation "
                f"1; got kernel_size {kernel}, stride {steps}, dilation {dil}"
            )
        size = _input_size(input_size, name)
        if bias == "untied" and size is None:
            raise ValueError(
                f"{name}: bias='untied' has one bias per output neuron, so it needs "
                "input_size=(H, W); got input_size=None"
            )
        dtype_name = _dtype_name(dtype, name)
        if seed is not None:
            seed = check_int(seed, "seed", name, minimum=0)
        self._remember(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=_compact(kernel),
            stride=_compact(steps),
            padding=_compact(pad_config),
            bias=bias,
            input_size=size,
            dtype=dtype_name,
            seed=seed,
            dilation=_compact(dil),
            groups=groups,
            algorithm=algorithm,
        )
        self.kernel_size, self.stride, self.padding = kernel, steps, pad_config
        self.dilation, self.groups, self.algorithm = dil, groups, algorithm
        self.in_channels, self.out_channels, self.bias_mode, self.input_size = (
            in_channels,
            out_channels,
            bias,
            size,
        )

        rng = make_rng(seed)
        fan_in = in_channels // groups * kernel[0] * kernel[1]
        self.params["weight"] = he_normal(
            (out_channels, in_channels // groups, *kernel), fan_in, rng, dtype_name
        )
        if size is not None:  # fail now, not at the first batch, if the kernel cannot fit
            out_shape = self.output_shape((in_channels, *size))
        if bias == "tied":
            self.params["bias"] = np.zeros(out_channels, dtype=dtype_name)
        elif bias == "untied":
            self.params["bias"] = np.zeros(out_shape, dtype=dtype_name)
        self._zero_grads()

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = conv2d_output_shape(
            tuple(input_shape),
            self.params["weight"].shape,
            self.stride,
            self.padding,
            repr(self),
            self.dilation,
            self.groups,
        )
        if self.input_size is not None and list(input_shape[1:]) != self.input_size:
            raise ValueError(
                f"{self!r}: input size must be {tuple(self.input_size)} (input_size), "
                f"got {tuple(input_shape[1:])}"
            )
        return shape

    def check_input(self, x: Any, finite: bool = True) -> np.ndarray:
        """The boundary check; ``finite=False`` leaves the NaN/Inf scan to the caller."""
        return as_float_array(x, "x", repr(self), ndim=4, dtype=self.params["weight"].dtype,
                              finite=finite)

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        """``check_input`` then ``run``, but the NaN/Inf scan of ``x`` rides with the convolution:
        each batch slice is scanned by the thread that has just read it, while it is in its cache,
        and a non-finite ``x`` is refused as ``check_input`` refuses it once the slices are done
        (the layer's state as it was). A scan of its own was a pass over memory: 0.6-0.7 of 4.0
        ms, with the dout scan, of a 32x96x32x32 depthwise stride-2 layer's step (Intel Xeon)."""
        if not finite_scans_on():  # inside a stack that checks its own input
            return self.run(self.check_input(x), training)
        x = np.ascontiguousarray(self.check_input(x, finite=False))
        finite: list[bool] = []

        def scan(s: slice, _out: np.ndarray) -> None:
            finite.append(bool(all_finite(x[s].reshape(-1))))

        previous = self._cache
        out = self.run(x, training, then=scan)
        if not all(finite):
            self._cache = previous
            raise non_finite("x", repr(self))
        return out

    def run(self, x: np.ndarray, training: bool = False,
            then: Callable[[slice, np.ndarray], None] | None = None) -> np.ndarray:
        """``forward`` on ``x`` already checked; ``then(s, out[s])`` after each batch slice is
        written (the strategies' hook)."""
        plan = self.plan(x.shape)
        weight = self.params["weight"]
        # at inference the im2col matrix is not kept (it is the layer's largest array); backward
        # still works after forward(training=False): it rebuilds it from x
        out, self._cache = plan.strategy.forward(
            np.ascontiguousarray(x, dtype=weight.dtype),
            weight,
            self.conv_bias(),
            plan.geometry,
            groups=self.groups,
            owner=repr(self),
            keep=bool(training),
            then=then,
        )
        return out

    def conv_bias(self) -> np.ndarray | None:
        """The bias as the strategies take it: None, or C-contiguous in the weight's dtype."""
        bias = self.params.get("bias")
        return (
            None if bias is None else np.ascontiguousarray(bias, dtype=self.params["weight"].dtype)
        )

    def plan(self, shape: tuple[int, ...], frozen: bool = False) -> ConvPlan:
        """This layer's plan for inputs of ``shape``, made on first use and kept; ``frozen``: the
        plan of a session's copy, whose weight is transformed once and never trained
        (``conv.choose``)."""
        key = (shape, "frozen") if frozen else shape
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._make_plan(shape, frozen)
        return plan

    def _make_plan(self, shape: tuple[int, ...], frozen: bool = False) -> ConvPlan:
        """The geometry for this input shape and the strategy that runs it (``conv.choose``)."""
        owner = repr(self)
        if (
            self.input_size is not None
            and len(shape) == 4
            and shape[1] == self.in_channels
            and list(shape[2:]) != self.input_size
        ):
            raise ValueError(
                f"{owner}: x must be {tuple(self.input_size)} pixels (input_size), "
                f"got shape {shape}"
            )
        g = conv_geometry(
            shape,
            self.in_channels,
            self.kernel_size,
            self.stride,
            self.dilation,
            self.padding,
            owner,
        )
        strategy = choose(
            self.algorithm,
            "numba",
            self.params["weight"].shape,
            g,
            self.groups,
            shape[1],
            shape[0],
            owner,
            frozen,
        )
        return ConvPlan(g, strategy)

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray | None:
        """Fill ``grads``; return dx, or None with ``input_grad=False`` (not computed: a first
        layer's input gradient is never used in training)."""
        dx, dweight, dbias = conv2d_backward(dout, self._cached(), input_grad=input_grad)
        self.grads["weight"] = dweight
        if dbias is not None:
            self.grads["bias"] = dbias
        return dx


class Dense(Layer):
    """Fully connected: y = x @ weight.T + bias. Weight (out_features, in_features), He-initialised.

    Input (N, in_features) -> output (N, out_features).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: Any = np.float32,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        name = "Dense"
        in_features = check_int(in_features, "in_features", name, minimum=1)
        out_features = check_int(out_features, "out_features", name, minimum=1)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"{name}: bias must be True or False, got {bias!r}")
        dtype_name = _dtype_name(dtype, name)
        if seed is not None:
            seed = check_int(seed, "seed", name, minimum=0)
        self._remember(
            in_features=in_features,
            out_features=out_features,
            bias=bool(bias),
            dtype=dtype_name,
            seed=seed,
        )
        self.in_features, self.out_features = in_features, out_features
        self.params["weight"] = he_normal(
            (out_features, in_features), in_features, make_rng(seed), dtype_name
        )
        if bias:
            self.params["bias"] = np.zeros(out_features, dtype=dtype_name)
        self._zero_grads()

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(input_shape) != (self.in_features,):
            raise ValueError(
                f"{self!r}: input must be ({self.in_features},) features per sample, "
                f"got {tuple(input_shape)}"
            )
        return (self.out_features,)

    def check_input(self, x: Any) -> np.ndarray:
        return as_float_array(x, "x", repr(self), ndim=2, dtype=self.params["weight"].dtype)

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def _make_plan(self, shape: tuple[int, ...]) -> bool:
        if len(shape) != 2 or shape[1] != self.in_features:
            raise ValueError(f"{self!r}: x must have shape (N, {self.in_features}), got {shape}")
        return True

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.plan(x.shape)
        x = x.astype(self.params["weight"].dtype, copy=False)
        self._cache = x
        out = gemm(x, self.params["weight"].T)
        if "bias" in self.params:
            out += self.params["bias"]
        return out

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray | None:
        """Fill ``grads``; return dx, or None with ``input_grad=False`` (not computed)."""
        x = self._cached()
        dout = check_dout(dout, (x.shape[0], self.out_features), x.dtype, repr(self))
        self.grads["weight"] = gemm(dout.T, x)
        if "bias" in self.params:
            self.grads["bias"] = dout.sum(axis=0)
        return gemm(dout, self.params["weight"]) if input_grad else None


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


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W). ``order="C"``: row-major per sample, as PyTorch's ``flatten``.

    ``order="F"``: the column stacking of Eq. 8.26, each feature map's columns stacked top to
    bottom, first map to last.
    """

    def __init__(self, order: str = "C") -> None:
        super().__init__()
        check_choice(order, "order", ("C", "F"), "Flatten")
        self.order = order
        self._remember(order=order)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(input_shape)),)

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if x.ndim < 2:
            raise ValueError(
                f"{self!r}: x must be (N, ...) with at least 2 dimensions, got shape {x.shape}"
            )
        self._cache = x.shape
        if self.order == "F" and x.ndim == 4:
            x = x.transpose(0, 1, 3, 2)  # each map's columns become contiguous runs
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: Any) -> np.ndarray:
        shape = self._cached()
        dout = as_float_array(dout, "dout", repr(self))
        if dout.shape != (shape[0], int(np.prod(shape[1:]))):
            raise ValueError(
                f"{self!r}: dout must have shape {(shape[0], int(np.prod(shape[1:])))}, "
                f"got {dout.shape}"
            )
        if self.order == "F" and len(shape) == 4:
            n, c, h, w = shape
            return dout.reshape(n, c, w, h).transpose(0, 1, 3, 2)
        return dout.reshape(shape)


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


class Identity(Layer):
    """y = x (PyTorch's ``nn.Identity``): a placeholder, e.g. where a network has no layer."""

    def __init__(self) -> None:
        super().__init__()
        self._remember()

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._cache = (x.shape, x.dtype)
        return x

    def backward(self, dout: Any) -> np.ndarray:
        shape, dtype = self._cached()
        return check_dout(dout, shape, dtype, repr(self))


class Dropout(Layer):
    """Inverted dropout: while training, zero each element with probability ``p`` and scale the
    survivors by 1/(1-p); at inference, the identity. The mask is drawn from a Generator seeded by
    ``seed``, so a seeded run is reproducible."""

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        p = check_float(p, "p", "Dropout", low=0.0, high=1.0, high_open=True)
        if seed is not None:
            seed = check_int(seed, "seed", "Dropout", minimum=0)
        self.p = p
        self.rng = make_rng(seed)
        self._remember(p=p, seed=seed)

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if not training or self.p == 0.0:
            # the identity: a read-only view of ones, no allocation; backward still checks shapes
            self._cache = np.broadcast_to(np.ones(1, dtype=x.dtype), x.shape)
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        self._cache = mask
        return x * mask

    def backward(self, dout: Any) -> np.ndarray:
        mask = self._cached()
        dout = as_float_array(dout, "dout", repr(self))
        if dout.shape != mask.shape:
            raise ValueError(
                f"{self!r}: dout must have the output's shape {mask.shape}, got {dout.shape}"
            )
        return dout * mask


class BatchNorm2D(Layer):
    """Batch normalisation per channel of (N, C, H, W), PyTorch's ``BatchNorm2d`` in both modes.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``. Training (``forward(x, training=True)``):
    mean and BIASED variance of the batch over (N, H, W); with ``track_running_stats`` the running
    statistics become ``(1 - momentum) * running + momentum * batch`` with the UNBIASED batch
    variance (``momentum=None``: the cumulative average, factor 1 / num_batches_tracked). Eval: the
    running statistics, or the batch's when ``track_running_stats=False``.

    ``params``: ``weight`` (C,) = 1 and ``bias`` (C,) = 0 if ``affine``. ``buffers`` (PyTorch's
    names, saved in model files and checkpoints, not trained): ``running_mean`` (C,) = 0,
    ``running_var`` (C,) = 1, ``num_batches_tracked`` (int64, 0-d); empty without
    ``track_running_stats``. Data-parallel training normalises with each rank's own batch (as
    PyTorch DDP without SyncBatchNorm).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        name = "BatchNorm2D"
        num_features = check_int(num_features, "num_features", name, minimum=1)
        eps = check_float(eps, "eps", name, low=0.0, low_open=True)
        if momentum is not None:
            momentum = check_float(momentum, "momentum", name, low=0.0, high=1.0)
        for flag, value in (("affine", affine), ("track_running_stats", track_running_stats)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name}: {flag} must be True or False, got {value!r}")
        dtype_name = _dtype_name(dtype, name)
        self._remember(
            num_features=num_features,
            eps=eps,
            momentum=momentum,
            affine=bool(affine),
            track_running_stats=bool(track_running_stats),
            dtype=dtype_name,
        )
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        if affine:
            self.params["weight"] = np.ones(num_features, dtype=dtype_name)
            self.params["bias"] = np.zeros(num_features, dtype=dtype_name)
        self.buffers: dict[str, np.ndarray] = {}
        if track_running_stats:
            self.buffers = {
                "running_mean": np.zeros(num_features, dtype=dtype_name),
                "running_var": np.ones(num_features, dtype=dtype_name),
                "num_batches_tracked": np.array(0, dtype=np.int64),
            }
        self._dtype = np.dtype(dtype_name)
        self._zero_grads()

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3 or input_shape[0] != self.num_features:
            raise ValueError(
                f"{self!r}: input must be ({self.num_features}, H, W), got {tuple(input_shape)}"
            )
        return tuple(input_shape)

    def check_input(self, x: Any) -> np.ndarray:
        return as_float_array(x, "x", repr(self), ndim=4, dtype=self._dtype)

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def _make_plan(self, shape: tuple[int, ...]) -> bool:
        check_nchw(shape, self.num_features, repr(self))
        return True

    def run(self, x: np.ndarray, training: bool = False, relu: bool = False) -> np.ndarray:
        """``forward`` on checked input; ``relu=True``: ReLU of the output in the same pass (a
        fused BatchNorm2D -> ReLU, ``blocks.BatchNormReLU``), and ``backward`` then takes the
        gradient after the ReLU."""
        owner = repr(self)
        self.plan(x.shape)
        use_batch = training or not self.track_running_stats
        if use_batch and x.shape[0] * x.shape[2] * x.shape[3] < 2:
            raise ValueError(
                f"{owner}: batch statistics need more than 1 value per channel (N*H*W >= 2), "
                f"got x of shape {x.shape}"
            )
        mean = var = None
        if not use_batch:
            mean = self.buffers["running_mean"].astype(np.float64)
            var = self.buffers["running_var"].astype(np.float64)
            if (var < 0).any():
                raise ValueError(f"{owner}: var must be >= 0, got min {var.min()}")
        x = np.ascontiguousarray(x, dtype=self._dtype)
        out, self._cache, mean, var = batch_norm2d(
            x, self.params.get("weight"), self.params.get("bias"), mean, var, self.eps, owner, relu
        )
        if training and self.track_running_stats:
            self._update_running(mean, var, x.shape[0] * x.shape[2] * x.shape[3])
        return out

    def _update_running(self, mean: np.ndarray, var: np.ndarray, count: int) -> None:
        """In place (the arrays are the ones model files and state_dict hold)."""
        tracked = self.buffers["num_batches_tracked"]
        tracked += 1
        factor = 1.0 / float(tracked) if self.momentum is None else self.momentum
        for key, batch in (("running_mean", mean), ("running_var", var * (count / (count - 1)))):
            running = self.buffers[key]
            running[...] = (1.0 - factor) * running + factor * batch

    def backward(self, dout: Any) -> np.ndarray:
        dx, dweight, dbias = batch_norm2d_backward(dout, self._cached())
        if self.affine:
            self.grads["weight"], self.grads["bias"] = dweight, dbias
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


class Normalization(Layer):
    """Per-channel standardisation, Keras's ``Normalization``: ``y = (x - mean) / std`` over axis
    1 of (N, C, ...) inputs, with ``mean`` and ``std`` (shape (C,)) as ``buffers`` (saved in
    model files and ``state_dict``, not trained). :meth:`adapt` sets them from training data, so
    a model that starts with this layer takes raw [0, 1] images and applies exactly the
    statistics it was trained with (``cnn-im2col train`` puts one first). Initially mean 0,
    std 1: the identity."""

    def __init__(self, channels: int, dtype: Any = np.float32) -> None:
        super().__init__()
        name = "Normalization"
        channels = check_int(channels, "channels", name, minimum=1)
        dtype_name = _dtype_name(dtype, name)
        self._remember(channels=channels, dtype=dtype_name)
        self.channels, self._dtype = channels, np.dtype(dtype_name)
        self.buffers = {"mean": np.zeros(channels, dtype_name),
                        "std": np.ones(channels, dtype_name)}

    def adapt(self, x: Any) -> Normalization:
        """Set ``mean`` and ``std`` to those of each channel of ``x`` (N, C, ...) (population
        std; a channel with std 0 keeps std 1); returns the layer."""
        x = self.check_input(x)
        axes = (0, *range(2, x.ndim))
        mean = x.mean(axis=axes, dtype=np.float64)
        std = x.std(axis=axes, dtype=np.float64)
        self.buffers["mean"][...] = mean
        self.buffers["std"][...] = np.where(std > 0, std, 1.0)
        return self

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if not input_shape or input_shape[0] != self.channels:
            raise ValueError(f"{self!r}: input must have {self.channels} channels first, got "
                             f"{tuple(input_shape)}")
        return tuple(input_shape)

    def check_input(self, x: Any) -> np.ndarray:
        x = as_float_array(x, "x", repr(self), dtype=self._dtype)
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise ValueError(f"{self!r}: x must be (N, {self.channels}, ...), got shape {x.shape}")
        return x

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def _scale(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        shape = (1, self.channels) + (1,) * (ndim - 2)
        return self.buffers["mean"].reshape(shape), self.buffers["std"].reshape(shape)

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        mean, std = self._scale(x.ndim)
        self._cache = x.shape
        return (x - mean) / std

    def backward(self, dout: Any) -> np.ndarray:
        shape = self._cached()
        dout = check_dout(dout, shape, self._dtype, repr(self))
        return dout / self._scale(len(shape))[1]


def _compact(value: Any) -> Any:
    """(3, 3) -> 3 and (2, 1) -> [2, 1]: the JSON-able form of a pair argument."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and value[0] == value[1]:
        return value[0]
    return list(value) if isinstance(value, tuple) else value


LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (
        Conv2D,
        Dense,
        MaxPool2D,
        AvgPool2D,
        Flatten,
        ReLU,
        Sigmoid,
        Tanh,
        Softmax,
        Dropout,
        BatchNorm2D,
        GlobalAvgPool2D,
        Normalization,
        ReLU6,
        HardSigmoid,
        HardSwish,
        LeakyReLU,
        Identity,
        AdaptiveAvgPool2D,
        AdaptiveMaxPool2D,
        ConstantPad2D,
        ZeroPad2D,
    )
}
