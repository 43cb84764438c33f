"""``Conv2D``: the convolution layer; the strategy that computes it is chosen per input shape
by ``cnn_im2col.conv.choose`` and kept in the layer's plan."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..conv import ALGORITHMS, ConvPlan, choose, conv2d_backward, conv2d_output_shape, winograd
from ..init import he_normal, make_rng
from ..shapes import (
    SliceScans,
    as_float_array,
    check_choice,
    check_int,
    conv_geometry,
    finite_scans_on,
    non_finite,
    pair,
)
from .base import Layer, _compact, _dtype_name, _input_size


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
        scans = SliceScans(x)
        previous = self._cache
        out = self.run(x, training, then=lambda s, _out: scans.scan(s))
        if not scans.finite():
            self._cache = previous
            raise non_finite("x", repr(self))
        return out

    def run(self, x: np.ndarray, training: bool = False,
            then: Callable[[slice, np.ndarray], None] | None = None) -> np.ndarray:
        """``forward`` on ``x`` already checked; ``then(s, out[s])`` after each batch slice is
        written (the strategies' hook)."""
        out, self._cache = self.strategy_forward(x, self.plan(x.shape), training, then)
        return out

    def strategy_forward(self, x: np.ndarray, plan: ConvPlan, training: bool,
                         then: Callable[[slice, np.ndarray], None] | None = None,
                         relu: bool = False, **extra: Any) -> tuple[np.ndarray, Any]:
        """``plan``'s strategy on checked ``x`` with this layer's weight and bias: (output, the
        cache its backward takes). ``relu``: fused; ``extra``: what a session's caller made once
        for the strategy (``transformed``, ``layout``)."""
        weight = self.params["weight"]
        # at inference the im2col matrix is not kept (it is the layer's largest array); backward
        # still works after forward(training=False): it rebuilds it from x
        return plan.strategy.forward(
            np.ascontiguousarray(x, dtype=weight.dtype),
            weight,
            self.conv_bias(),
            plan.geometry,
            groups=self.groups,
            owner=repr(self),
            keep=bool(training),
            relu=relu,
            then=then,
            **extra,
        )

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

    def backward(self, dout: Any, input_grad: bool = True, *,
                 shortcut: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray | None:
        """Fill ``grads``; return dx, or None with ``input_grad=False`` (not computed: a first
        layer's input gradient is never used in training). ``shortcut=(g, out)``: dx plus g where
        out > 0 (``conv2d_backward``'s: a residual block's identity shortcut, through its ReLU)."""
        dx, dweight, dbias = conv2d_backward(dout, self._cached(), input_grad=input_grad,
                                             shortcut=shortcut)
        self.grads["weight"] = dweight
        if dbias is not None:
            self.grads["bias"] = dbias
        return dx
