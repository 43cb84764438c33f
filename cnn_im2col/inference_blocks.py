"""The fused steps made only for inference (``planning.inference_plan``): no backward follows, so
each keeps nothing and may write its output in place, and the helpers that run a stack's steps at
inference (``infer_step``, ``infer_with_skip``: a Residual's shortcut joined in its body's last
step). They are ``blocks.py``'s ``_Block`` objects: the original layers, their parameters, a
``forward`` checked where input enters, ``run(x, training)`` refusing ``training=True``.

- ``ConvActivation`` (Conv2D -> ReLU6, HardSigmoid or HardSwish), at inference only: each batch
  slice goes through the activation's kernel in place, on the worker that computed it, while it is
  in that core's cache, instead of in a pass of its own over the whole output.
- ``DenseActivation`` (Dense -> ReLU, ReLU6, HardSigmoid or HardSwish), at inference only: the
  activation applied in place to the product's fresh output, one step instead of two.
- ``ConvGlobalPool`` (a 1x1 Conv2D [-> ReLU, ReLU6, HardSigmoid or HardSwish] -> GlobalAvgPool2D,
  a MobileNet's head), at inference only: each batch slice multiplied as channels-last rows and
  averaged over its pixels while the product is in cache (``pointwise.forward_pooled``); the
  convolution's (N, O, H, W) output is never written.
- ``GlobalPoolDense`` (GlobalAvgPool2D [-> Flatten] -> Dense, a ResNet's head), at inference
  only: the maps averaged and multiplied in one compiled call (``pooled_dense``), not a pool and
  a product in NumPy.
- ``InvertedResidual`` (MobileNetV2's block: [Conv2D 1x1 -> ReLU6 ->] Conv2D 3x3 depthwise ->
  ReLU6 -> Conv2D 1x1), at inference only: the kernels of ``conv/inverted_residual.py`` (per
  sample plane by plane, the expanded maps never leaving the core's cache; or channels-last rows
  of a batch slice around two BLAS products), with a Residual's identity shortcut added inside;
  the steps it is made of where its layers take other strategies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import blocks, pooled_dense
from .activations import IN_PLACE_KERNELS, add_into, add_relu
from .blocks import FROZEN, LayerStep, Step, _Block
from .containers import Concat, Gate, Residual
from .conv import depthwise, inverted_residual, pointwise
from .layers import Conv2D, Dense, HardSigmoid, HardSwish, ReLU, ReLU6
from .shapes import WindowGeometry, as_float_array


class ConvActivation(_Block):
    """Inference only: Conv2D -> ReLU6 / HardSigmoid / HardSwish, the activation's kernel run in
    place on each batch slice by the worker that computed it (the same numbers as the two layers,
    without the activation's own pass over memory). No backward: ``planning.inference_plan``
    makes it only for ``infer``, which has none."""

    kind = "conv_activation"
    FUSED = (ReLU6, HardSigmoid, HardSwish)

    def __init__(self, conv: Conv2D, activation: Any, first: int) -> None:
        super().__init__((conv, activation), first)
        self.conv, self.kernel = conv, IN_PLACE_KERNELS[type(activation).__name__]

    def run(self, x: np.ndarray, training: bool) -> np.ndarray:
        if training:
            raise RuntimeError(f"{self!r} is an inference step: it keeps nothing for backward")
        out, _ = blocks.conv_forward(self.conv, x, False, then=self.activate, relu=False)
        return out

    def activate(self, s: slice, y: np.ndarray) -> None:
        """The convolution's hook: the activation in place on its batch slice ``y``."""
        self.kernel(y.reshape(-1))  # the slice is C-contiguous: a view

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray | None:
        raise RuntimeError(f"{self!r} is an inference step: it has no backward")


class DenseActivation(_Block):
    """Inference only: Dense -> ReLU / ReLU6 / HardSigmoid / HardSwish, the activation applied in
    place to the layer's output, which ``Dense.run`` makes fresh (the same numbers as the two
    layers, one step and no second array). No backward, as ``ConvActivation``."""

    kind = "dense_activation"
    FUSED = (ReLU, *ConvActivation.FUSED)

    def __init__(self, dense: Dense, activation: Any, first: int) -> None:
        super().__init__((dense, activation), first)
        self.dense = dense
        self.kernel = IN_PLACE_KERNELS.get(type(activation).__name__)

    def run(self, x: np.ndarray, training: bool) -> np.ndarray:
        if training:
            raise RuntimeError(f"{self!r} is an inference step: it keeps nothing for backward")
        out = self.dense.run(x, False)  # (N, out_features), C-contiguous, not shared
        if self.kernel is None:  # ReLU: NumPy's maximum, as the ReLU layer (NaN stays NaN)
            np.maximum(out, 0, out=out)
        else:
            self.kernel(out.reshape(-1))
        return out

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray | None:
        raise RuntimeError(f"{self!r} is an inference step: it has no backward")


class ConvGlobalPool(_Block):
    """Inference only: a pointwise Conv2D [-> ReLU / ReLU6 / HardSigmoid / HardSwish] ->
    GlobalAvgPool2D, a MobileNet's head, as one step (``pointwise.forward_pooled``): each batch
    slice multiplied as channels-last rows and averaged over its pixels while the product is in
    the core's cache, so the (N, O, H, W) map is never written, transposed back to NCHW, activated
    and read again by the pool (the layers' numbers to rounding: the pixels summed in another
    order). Where the convolution takes another strategy for the input, or has an untied bias,
    the layers one by one. No backward, as ``ConvActivation``."""

    kind = "conv_global_pool"
    FUSED = (ReLU, *ConvActivation.FUSED)

    def __init__(self, layers: tuple[Any, ...], first: int) -> None:
        super().__init__(tuple(layers), first)
        self.conv = layers[0]
        self.activation = type(layers[1]).__name__ if len(layers) == 3 else None

    def fused(self, shape: tuple[int, ...], frozen: bool = False) -> bool:
        """Whether inputs of ``shape`` (N, C, H, W) run the fused kernel: the convolution's plan
        is pointwise, its bias tied or none."""
        bias = self.conv.params.get("bias")
        return (self.conv.plan(shape, frozen).strategy is pointwise
                and (bias is None or bias.ndim == 1))

    def rows_weight(self, frozen: bool) -> np.ndarray:
        """``pointwise.pooled_weight`` of the convolution's weight; inside ``folds_frozen``, made
        once for this weight array and kept on the layer (as ``frozen_transform``)."""
        weight = self.conv.params["weight"]
        if not frozen:
            return pointwise.pooled_weight(weight)
        kept = self.conv.__dict__.get("_frozen_pooled_weight")
        if kept is None or kept[0] is not weight:
            kept = self.conv._frozen_pooled_weight = (weight, pointwise.pooled_weight(weight))
        return kept[1]

    def run(self, x: np.ndarray, training: bool) -> np.ndarray:
        if training:
            raise RuntimeError(f"{self!r} is an inference step: it keeps nothing for backward")
        frozen = bool(getattr(FROZEN, "on", False))
        if not self.fused(x.shape, frozen):
            out = blocks.conv_forward(self.conv, x, False, relu=False)[0]
            for layer in self.layers[1:]:
                out = layer.run(out, False)
            return out
        dtype = self.conv.params["weight"].dtype
        return pointwise.forward_pooled(np.ascontiguousarray(x, dtype=dtype),
                                        self.rows_weight(frozen), self.conv.conv_bias(),
                                        self.activation)

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray | None:
        raise RuntimeError(f"{self!r} is an inference step: it has no backward")


class GlobalPoolDense(_Block):
    """Inference only: GlobalAvgPool2D [-> Flatten] -> Dense, a ResNet's head (``layers``, 2 or
    3 of them; a Flatten of (N, C) changes nothing), as one compiled call (``pooled_dense``: each
    sample's maps averaged and multiplied while in cache, the layers' numbers to rounding). A head
    too large to pay (``pooled_dense.fits``) runs its layers one after the other. No backward, as
    ``ConvActivation``."""

    kind = "global_pool_dense"

    def __init__(self, layers: tuple[Any, ...], first: int) -> None:
        super().__init__(tuple(layers), first)
        self.dense = layers[-1]

    def run(self, x: np.ndarray, training: bool) -> np.ndarray:
        if training:
            raise RuntimeError(f"{self!r} is an inference step: it keeps nothing for backward")
        n, c = x.shape[:2]
        if c != self.dense.in_features or not pooled_dense.fits(n, c, self.dense.out_features):
            for layer in self.layers:  # (their own errors for a shape they cannot take)
                x = layer.run(x, False)
            return x
        self.layers[0].plan(x.shape)  # the pool's own check of the input's shape
        return pooled_dense.pooled_dense(x, self.dense.params["weight"],
                                         self.dense.params.get("bias"))

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray | None:
        raise RuntimeError(f"{self!r} is an inference step: it has no backward")


class InvertedResidual(_Block):
    """Inference only: MobileNetV2's block, [Conv2D 1x1 -> ReLU6 ->] Conv2D 3x3 depthwise -> ReLU6
    -> Conv2D 1x1 (``layers``, 5 or 3 of them), as one step. For an input shape where its three
    convolutions take the pointwise and depthwise strategies, with tied biases or none and one
    dtype, it runs the fused kernels of ``conv/inverted_residual.py`` (the numbers of the layers
    one by one to rounding); otherwise its ``parts``: ``ConvActivation`` steps and the projection
    alone. ``skip`` (a Residual's identity shortcut) is added to the output, inside the kernel
    where it can. No backward: ``planning.plan`` makes it only for inference."""

    kind = "inverted_residual"

    def __init__(self, layers: tuple[Any, ...], first: int) -> None:
        super().__init__(tuple(layers), first)
        convs = self.layers[::2]
        self.expand = convs[0] if len(convs) == 3 else None
        self.depthwise, self.project = convs[-2], convs[-1]
        self.parts: list[Step] = [ConvActivation(*self.layers[i : i + 2], first + i)
                                  for i in range(0, len(self.layers) - 1, 2)]
        self.parts.append(LayerStep(self.project, self.last))
        self._fused: dict[tuple[int, ...], bool] = {}  # input shape -> whether the kernel runs it
        self._frozen_weights: inverted_residual.BlockWeights | None = None

    def kernel_plan(self, shape: tuple[int, ...]
                    ) -> tuple[inverted_residual.BlockWeights, WindowGeometry] | None:
        """For inputs of ``shape``: the fused kernels' weights and geometry (``run_kernels``'s),
        or None where the block runs its parts (a session's program binds them once)."""
        g = self.kernel_geometry(shape)
        return None if g is None else (self._weights(), g)

    def kernel_geometry(self, shape: tuple[int, ...]) -> WindowGeometry | None:
        """``kernel_plan``'s geometry alone, without making the weights (which, inside
        ``folds_frozen``, are made once: not before the folds are)."""
        return self.geometry(shape) if self._fuses(shape) else None

    def _fuses(self, shape: tuple[int, ...]) -> bool:
        """Whether the fused kernels run inputs of ``shape`` (worked out once a shape)."""
        fused = self._fused.get(shape)
        if fused is None:
            fused = self._fused[shape] = self._kernels_apply(shape)
        return fused

    def _kernels_apply(self, shape: tuple[int, ...]) -> bool:
        convs = [c for c in (self.expand, self.depthwise, self.project) if c is not None]
        if (any(c.bias_mode == "untied" for c in convs)
                or len({c.params["weight"].dtype for c in convs}) > 1):
            return False
        if self.expand is not None:
            if self.expand.plan(shape).strategy is not pointwise:
                return False
            shape = (shape[0], self.expand.out_channels, *shape[2:])
        middle = self.depthwise.plan(shape)
        g = middle.geometry
        return (middle.strategy is depthwise
                and inverted_residual.supports(self.depthwise.params["weight"].shape)
                and self.project.plan((shape[0], shape[1], g.oh, g.ow)).strategy is pointwise)

    def forward(self, x: Any, training: bool, skip: np.ndarray | None = None) -> np.ndarray:
        return self.run(self.check_input(x), training, skip)

    def infer(self, x: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
        return self.run(x, False, skip)

    def run(self, x: np.ndarray, training: bool, skip: np.ndarray | None = None) -> np.ndarray:
        """The block's output, plus ``skip`` if given (of the output's shape, else ValueError):
        inside the kernel where it has the weights' dtype and is C-contiguous, else in a pass of
        its own."""
        if training:
            raise RuntimeError(f"{self!r} is an inference step: it keeps nothing for backward")
        g = self.geometry(x.shape)
        if skip is not None and skip.shape != (x.shape[0], self.project.out_channels, g.oh, g.ow):
            raise ValueError(f"{self!r}: skip must have the output's shape "
                             f"{(x.shape[0], self.project.out_channels, g.oh, g.ow)}, got "
                             f"{skip.shape}")
        if not self._fuses(x.shape):
            for part in self.parts:
                x = part.run(x, False)
            return x if skip is None else add_skip(x, skip, False)
        return self.run_kernels(x, self._weights(), g, skip)

    def geometry(self, shape: tuple[int, ...]) -> WindowGeometry:
        """The depthwise layer's geometry for block inputs of ``shape``."""
        hidden = shape if self.expand is None else (shape[0], self.expand.out_channels,
                                                    *shape[2:])
        return self.depthwise.plan(hidden).geometry

    @staticmethod
    def run_kernels(x: np.ndarray, weights: inverted_residual.BlockWeights, g: WindowGeometry,
                    skip: np.ndarray | None, x_last: bool = False, out_last: bool = False
                    ) -> np.ndarray:
        """The fused kernels on ``x`` (converted to the weights' dtype, C-contiguous), plus
        ``skip`` (of the output's shape): inside them where it has the weights' dtype and is
        C-contiguous, else after them. ``x_last``, ``out_last``: ``inverted_residual.forward``'s
        channels-last input and output (and skip)."""
        dtype = weights.depthwise.dtype
        inner = skip is None or (skip.dtype == dtype and skip.flags.c_contiguous)
        y = inverted_residual.forward(np.ascontiguousarray(x, dtype=dtype), weights, g,
                                      skip if inner else None, x_last, out_last)
        return y if inner else add_skip(y, skip, False)

    def _weights(self) -> inverted_residual.BlockWeights:
        """The kernels' copies of the weights: made on every call, as the layers' parameters may
        have changed in place, except inside ``folds_frozen`` (a session's private network, which
        nothing changes), where they are made once."""
        frozen = getattr(FROZEN, "on", False)
        if frozen and self._frozen_weights is not None:
            return self._frozen_weights
        expand = None if self.expand is None else (self.expand.params["weight"],
                                                   self.expand.conv_bias())
        weights = inverted_residual.block_weights(
            expand, (self.depthwise.params["weight"], self.depthwise.conv_bias()),
            (self.project.params["weight"], self.project.conv_bias()))
        self._frozen_weights = weights if frozen else None
        return weights

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray | None:
        raise RuntimeError(f"{self!r} is an inference step: it has no backward")


InferenceStep = (Step | ConvActivation | DenseActivation | ConvGlobalPool | GlobalPoolDense
                 | InvertedResidual)


def infer_with_skip(step: InferenceStep, x: np.ndarray, skip: np.ndarray, relu: bool, first: bool
                    ) -> np.ndarray:
    """A stack's last ``step`` at inference with a Residual's shortcut ``skip`` added to its
    output (then ReLU if ``relu``, a ResNet block's): inside ``InvertedResidual``'s kernels (no
    ReLU there); for a Conv2D alone (exact class, ``skip`` of its output's shape and dtype,
    C-contiguous), in each batch slice right after the convolution wrote it, on the worker that
    has it in cache (its ``then``), so the join is no pass of its own over memory; else after the
    step, in NumPy's result dtype. ``first``: the step is the stack's first, and ``x`` is checked
    here as its ``forward`` would check it."""
    if isinstance(step, InvertedResidual) and not relu:
        return step.infer(step.check_input(x) if first else x, skip=skip)
    if isinstance(step, LayerStep) and type(step.layer) is Conv2D:
        conv = step.layer
        x = conv.check_input(x) if first else x
        g = conv.plan(x.shape).geometry
        if joins_in_slices(skip, (x.shape[0], conv.out_channels, g.oh, g.ow),
                           conv.params["weight"].dtype):

            def join(s: slice, y: np.ndarray) -> None:
                add_into(y, skip[s], relu)

            return blocks.conv_forward(conv, x, False, then=join, relu=False)[0]
        y = step.infer(x)
    else:
        y = infer_step(step, x, first)
    return add_skip(y, skip, relu)


def joins_in_slices(skip: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Whether a Residual's shortcut ``skip`` can be added to a convolution's output of ``shape``
    and ``dtype`` slice by slice as it is written: C-contiguous, of that shape and dtype."""
    return skip.shape == shape and skip.dtype == dtype and skip.flags.c_contiguous


def add_skip(y: np.ndarray, skip: np.ndarray, relu: bool) -> np.ndarray:
    """y + skip (then ReLU if ``relu``) in a new array of NumPy's result dtype: a join after its
    step."""
    return add_relu(y, skip) if relu else np.add(y, skip, dtype=np.result_type(y, skip))


def infer_step(step: InferenceStep, x: np.ndarray, first: bool) -> np.ndarray:
    """``step`` at inference. The ``first`` of a stack is checked where ``x`` enters, as its
    ``forward`` checks it (the NaN/Inf scan was done): a layer alone through its own ``forward``,
    a fused block by ``check_input`` and then its inference path."""
    if not first:
        return step.infer(x)
    if isinstance(step, LayerStep):
        if type(step.layer) in (Residual, Concat, Gate):  # checked as its forward checks, then
            # its own inference, its bodies folded (as where it is not first, and in a program)
            return step.layer.infer(as_float_array(x, "x", type(step.layer).__name__))
        return step.forward(x, False)
    return step.infer(step.check_input(x))
