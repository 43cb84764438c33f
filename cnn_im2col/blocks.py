"""The steps ``Sequential`` runs: one layer, or a fused block of adjacent built-in layers.

A fused block is an object, as PyTorch's fused modules (``torch.ao.nn.intrinsic``) are: it holds
the original layers, uses their parameters (and fills the convolution's ``grads``), keeps its own
cache and calls the engine's strategy code itself. The layers stay in ``Sequential.layers``, so
``params``, ``grads`` and ``state_dict`` keys do not change.

- ``ConvReLU`` (Conv2D -> ReLU): the ReLU is applied in the convolution's epilogue (with the bias,
  while the GEMM's result is in cache), and its derivative in the first pass of the convolution's
  backward.
- ``ConvReLUPool`` (Conv2D -> ReLU -> MaxPool2D): as ``ConvReLU``, and each batch slice is pooled
  by the worker that computed it, right after its epilogue, while it is in that core's cache;
  backward, the pool's gradient of a slice is routed by the worker that then turns it into the
  convolution's gradients (on the im2col path straight into its backward layout), one hand-off to
  the pool per direction instead of two, no pass over memory that another core wrote.
- ``ReLUPool`` (ReLU -> MaxPool2D, a ReLU not already fused into a convolution): ReLU of the pool,
  in the pool's pass (identical outputs and gradients: ReLU is monotone; ties go to the first
  maximum).
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
- ``BatchNormReLU`` (BatchNorm2D -> ReLU): the ReLU in the normalisation's output pass, its
  derivative inside the normalisation's backward (a BatchNorm2D after a Conv2D is folded into it
  at inference, so this step is mostly training's).
- ``ResidualReLU`` (Residual -> ReLU): ReLU(body + shortcut) in the join's one pass, and the
  ReLU's derivative applied once before the block's backward.
- ``LayerStep``: any other layer, alone.

Which layers make which step is ``planning.py``'s (``plan``; at inference ``inference_plan``,
which first folds each Conv2D -> BatchNorm2D pair into one convolution). Only these exact classes
are fused (a subclass may change ``forward``), so users' layers and the layer protocol work as
before. A layer inside a block is not run by itself: its own ``forward`` cache is left as it was,
and its ``backward`` alone says it has not run.

Every step has ``forward(x, training)`` (checks ``x`` where it enters, as its first layer's
``forward`` does), ``run(x, training)`` (the unchecked internal path, for the steps after the
first: each layer's plan for the input shape, see ``layers/``), ``infer(x)`` (``run`` with no
backward to follow) and ``backward(dout, input_grad=True)``; ``first``/``last`` (the layers'
indices) and ``kind`` say what it covers. A fused block's ``check_input`` is its ``forward``'s
check, so that a first step can be checked and then take its inference path.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

import numpy as np

from . import pooled_dense
from .activations import IN_PLACE_KERNELS, add_into, add_relu
from .containers import Concat, Gate, Residual
from .conv import (
    ConvCache,
    conv2d_backward,
    depthwise,
    direct,
    inverted_residual,
    pointwise,
    tiled,
    winograd,
)
from .layers import (
    LAYERS,
    BatchNorm2D,
    Conv2D,
    Dense,
    HardSigmoid,
    HardSwish,
    MaxPool2D,
    ReLU,
    ReLU6,
)
from .pooling import (
    MaxPoolCache,
    max_pool2d,
    max_pool2d_backward,
    max_pool2d_buffers,
    max_pool2d_grad_cm_into,
    max_pool2d_grad_into,
    max_pool2d_into,
    max_pool2d_values,
    max_pool2d_values_into,
)
from .shapes import WindowGeometry, as_float_array, check_dout

# the layers whose unchecked ``run`` a step may call: exactly these classes (a subclass may change
# ``forward``, so it is run through ``forward``, as a user's layer is)
_BUILT_IN = frozenset(LAYERS.values())

# .on: True inside ``planning.folds_frozen()`` (per thread), where nothing changes the network (a
# session's private copy): the steps keep the plans, transforms and weights they make from it
FROZEN = threading.local()


class LayerStep:
    """One layer on its own: a built-in one runs unchecked inside the stack, any other through its
    public ``forward``."""

    kind = "layer"

    def __init__(self, layer: Any, index: int) -> None:
        self.layer, self.first, self.last = layer, index, index
        self._unchecked = type(layer) in _BUILT_IN

    def forward(self, x: Any, training: bool) -> np.ndarray:
        return self.layer.forward(x, training=training)

    def run(self, x: np.ndarray, training: bool) -> np.ndarray:
        if self._unchecked:
            return self.layer.run(x, training)
        return self.layer.forward(x, training=training)

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray | None:
        """``input_grad=False`` only for a layer whose ``backward`` accepts it."""
        if not input_grad:
            return self.layer.backward(dout, input_grad=False)
        return self.layer.backward(dout)

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Inference with no backward to follow: a MaxPool2D's maxima without their argmax (exact
        class: a user's subclass may have changed ``forward``), a Conv2D's ``_conv_forward`` (in
        a session, its frozen plan, as a fused one's), a container's own ``infer`` (its bodies
        folded too), else ``run``."""
        if type(self.layer) is MaxPool2D:
            return max_pool2d_values(np.ascontiguousarray(x), self.layer.plan(x.shape))
        if type(self.layer) is Conv2D:
            return _conv_forward(self.layer, x, False, relu=False)[0]
        infer = getattr(self.layer, "infer", None)
        return infer(x) if infer is not None else self.run(x, False)


class _Block:
    """What the fused blocks share: their layers, indices, cache and repr."""

    kind = ""

    def __init__(self, layers: tuple[Any, ...], first: int) -> None:
        self.layers, self.first, self.last = layers, first, first + len(layers) - 1
        self._cache: Any = None

    def _cached(self) -> Any:
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward() called before forward(); run forward first")
        return self._cache

    def check_input(self, x: Any) -> np.ndarray:
        """The check where input enters the block: its first layer's."""
        return self.layers[0].check_input(x)

    def forward(self, x: Any, training: bool) -> np.ndarray:
        """``run`` on input checked where it enters (``check_input``)."""
        return self.run(self.check_input(x), training)

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.run(x, False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(layer) for layer in self.layers)})"


def _conv_forward(
    conv: Conv2D, x: np.ndarray, training: bool, then: Any = None, relu: bool = True
) -> tuple[np.ndarray, ConvCache]:
    """``conv``'s strategy (its plan for ``x.shape``) with the ReLU fused (``relu``), ``then`` per
    slice. Inside ``planning.folds_frozen`` (a session, whose weights never change) the plan is
    the frozen one (``Conv2D.plan``) and a Winograd weight is transformed once and kept
    (``frozen_transform``)."""
    frozen = bool(getattr(FROZEN, "on", False))
    plan = conv.plan(x.shape, frozen)
    weight = conv.params["weight"]
    extra = {}
    if plan.strategy is winograd and frozen:
        extra["transformed"] = frozen_transform(conv, weight)
    elif plan.strategy is tiled and frozen:
        extra["layout"] = frozen_tile_layout(conv, plan.geometry, image=x.shape[2:])
    return conv.strategy_forward(x, plan, training, then, relu, **extra)


def frozen_transform(conv: Conv2D, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``winograd.transform_weight(weight)`` and its products' layout, made at the first call for
    this weight array and kept on the layer: only for a network nothing can change
    (``folds_frozen``), as onnxruntime packs a session's weights once. Measured 2026-12-04, Intel
    Xeon: 0.73-0.75 ms of each ResNet-20 prediction at batch 64 (16 transforms on the calling
    thread; 64x64x3x3: 0.059 ms)."""
    kept = conv.__dict__.get("_frozen_transform")
    if kept is None or kept[0] is not weight:
        u = winograd.transform_weight(weight)
        kept = conv._frozen_transform = (weight, (u, winograd.products_layout(u)))
    return kept[1]


def frozen_tile_layout(conv: Conv2D, g: WindowGeometry, x_last: bool = False,
                       image: tuple[int, ...] | None = None) -> tiled.TileLayout:
    """``tiled.tile_layout`` of the layer's weight and bias for geometry ``g`` (and an input
    channels-last if ``x_last``, of (H, W) ``image``), made at the first call for these arrays and
    kept on the layer, as ``frozen_transform`` keeps Winograd's: only for a network nothing can
    change (``folds_frozen``). Measured 2026-12-05, Intel Xeon: 30-40 us of a strided 32 -> 64
    layer's 80-95 at batch 1."""
    weight, bias = conv.params["weight"], conv.params.get("bias")
    kept = conv.__dict__.setdefault("_frozen_tile_layouts", {})
    key = (g, x_last, None if image is None else tuple(image))
    entry = kept.get(key)
    if entry is None or entry[0] is not weight or entry[1] is not bias:
        layout = tiled.tile_layout(weight, conv.conv_bias(), g, x_last, key[2])
        entry = kept[key] = (weight, bias, layout)
    return entry[2]


def _fill_conv_grads(
    conv: Conv2D, grads: tuple[np.ndarray | None, np.ndarray, np.ndarray | None]
) -> np.ndarray | None:
    dx, dweight, dbias = grads
    conv.grads["weight"] = dweight
    if dbias is not None:
        conv.grads["bias"] = dbias
    return dx


class ConvReLU(_Block):
    """Conv2D -> ReLU: the ReLU in the convolution's epilogue and its derivative in the first pass
    of its backward."""

    kind = "conv_relu"

    def __init__(self, conv: Conv2D, relu: ReLU, first: int) -> None:
        super().__init__((conv, relu), first)
        self.conv = conv

    def run(self, x: np.ndarray, training: bool) -> np.ndarray:
        out, self._cache = _conv_forward(self.conv, x, training)
        return out

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray | None:
        return _fill_conv_grads(
            self.conv, conv2d_backward(dout, self._cached(), input_grad=input_grad)
        )


class _ConvReLUPoolCache(NamedTuple):
    conv: ConvCache
    y_shape: tuple[int, int, int, int]  # the convolution's output, never kept whole
    geometry: WindowGeometry  # the pool's
    argmax: np.ndarray
    pooled: np.ndarray  # the output: its sign is the fused ReLU's derivative at each winner


def pools_2x2(pool_g: WindowGeometry, conv_g: WindowGeometry) -> bool:
    """Whether a pool of geometry ``pool_g`` over the conv's output (``conv_g``) is a plain 2x2 max
    pool of stride 2: no padding, no dilation, the output's sides halved (rounded down)."""
    return (pool_g[:8] == (2, 2, 2, 2, 0, 0, 0, 0) and (pool_g.dy, pool_g.dx) == (1, 1)
            and (pool_g.oh, pool_g.ow) == (conv_g.oh // 2, conv_g.ow // 2))


class ConvReLUPool(_Block):
    """Conv2D -> ReLU -> MaxPool2D, each batch slice pooled by the worker that computed it."""

    kind = "conv_relu_pool"

    def __init__(self, conv: Conv2D, relu: ReLU, pool: MaxPool2D, first: int) -> None:
        super().__init__((conv, relu, pool), first)
        self.conv, self.pool = conv, pool

    def run(self, x: np.ndarray, training: bool) -> np.ndarray:
        g = self.conv.plan(x.shape).geometry
        y_shape = (x.shape[0], self.conv.out_channels, g.oh, g.ow)
        pool_g = self.pool.plan(y_shape)
        pooled, argmax = max_pool2d_buffers(y_shape, self.conv.params["weight"].dtype, pool_g)

        def pool_slice(s: slice, y: np.ndarray) -> None:
            max_pool2d_into(y, pool_g, False, pooled[s], argmax[s])

        _, conv_cache = _conv_forward(self.conv, x, training, then=pool_slice)
        self._cache = _ConvReLUPoolCache(conv_cache, y_shape, pool_g, argmax, pooled)
        return pooled

    def infer(self, x: np.ndarray) -> np.ndarray:
        """With no backward to follow, a direct convolution (a few-channel first layer) pooled
        2x2 with stride 2 takes ``direct.forward_relu_pool2``: the convolution's output is never
        written and no argmax is kept. Measured 2026-12-04, Intel Xeon, 2 threads, vgg-bn's stem
        (3 -> 32, 32x32) at batch 64: 1.80 -> 1.27 ms. Other convolutions pool each slice as
        ``run`` does, without the argmax (``max_pool2d_values_into``)."""
        plan = self.conv.plan(x.shape)
        g = plan.geometry
        pool_g = self.pool.plan((x.shape[0], self.conv.out_channels, g.oh, g.ow))
        weight = self.conv.params["weight"]
        if plan.strategy is direct and pools_2x2(pool_g, g):
            return direct.forward_relu_pool2(np.ascontiguousarray(x, dtype=weight.dtype), weight,
                                             self.conv.conv_bias(), g)
        pooled = np.empty((x.shape[0], self.conv.out_channels, pool_g.oh, pool_g.ow),
                          dtype=weight.dtype)

        def pool_slice(s: slice, y: np.ndarray) -> None:
            max_pool2d_values_into(y, pool_g, False, pooled[s])

        _conv_forward(self.conv, x, False, then=pool_slice)
        return pooled

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray | None:
        """The pool's gradient of each slice, routed by the worker that then computes the
        convolution's: on the im2col path straight into the convolution's backward layout
        (``dz_into``), so the gradient of the convolution's (N, C, H, W) output is never written;
        elsewhere as that gradient (``dout_of``)."""
        cache = self._cached()
        g, argmax, pooled = cache.geometry, cache.argmax, cache.pooled
        dpool = np.ascontiguousarray(check_dout(dout, pooled.shape, pooled.dtype, repr(self.pool)))

        def dout_of(s: slice) -> np.ndarray:
            dy = np.empty((s.stop - s.start, *cache.y_shape[1:]), dtype=pooled.dtype)
            max_pool2d_grad_into(dpool[s], argmax[s], dpool[s], False, g, dy)
            return dy

        def dz_into(s: slice, d_t: np.ndarray, bias_grad: np.ndarray) -> None:
            max_pool2d_grad_cm_into(dpool[s], argmax[s], pooled[s], d_t, bias_grad)

        grads = conv2d_backward(
            None, cache.conv, input_grad=input_grad, dout_of=dout_of, dz_into=dz_into
        )
        return _fill_conv_grads(self.conv, grads)


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
        out, _ = _conv_forward(self.conv, x, False, then=self.activate, relu=False)
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
            out = _conv_forward(self.conv, x, False, relu=False)[0]
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


class BatchNormReLU(_Block):
    """BatchNorm2D -> ReLU: ReLU in the normalisation's output pass; backward, its derivative
    inside the normalisation's backward kernel."""

    kind = "batch_norm_relu"

    def __init__(self, norm: BatchNorm2D, relu: ReLU, first: int) -> None:
        super().__init__((norm, relu), first)
        self.norm = norm

    def run(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._cache = True  # the norm keeps what backward needs
        return self.norm.run(x, training, relu=True)

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray:
        self._cached()
        return self.norm.backward(dout)


class ResidualReLU(_Block):
    """Residual -> ReLU (ResNet's block and the activation after it): ReLU(body + shortcut) in
    the join's one pass, which is the body's last batch norm's output pass where it ends in one
    (``run_joined``); backward, the block's backward given the output, whose sign is the ReLU's
    derivative (``Residual.backward``'s ``relu_out``)."""

    kind = "residual_relu"

    def __init__(self, residual: Residual, relu: ReLU, first: int) -> None:
        super().__init__((residual, relu), first)
        self.residual = residual

    def check_input(self, x: Any) -> np.ndarray:
        return as_float_array(x, "x", "Residual")

    def run(self, x: np.ndarray, training: bool) -> np.ndarray:
        y = self.residual.run(x, training, relu=True)
        self._cache = y
        return y

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.residual.infer(x, relu=True)

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray:
        y = self._cached()
        dout = check_dout(dout, y.shape, y.dtype, repr(self.layers[1]))
        return self.residual.backward(dout, relu_out=y)


class ReLUPool(_Block):
    """ReLU -> MaxPool2D: the pool of ReLU(x) in the pool's one pass."""

    kind = "relu_pool"

    def __init__(self, relu: ReLU, pool: MaxPool2D, first: int) -> None:
        super().__init__((relu, pool), first)
        self.pool = pool

    def check_input(self, x: Any) -> np.ndarray:
        return self.pool.check_input(x)  # the pool's: the ReLU takes any shape

    def run(self, x: np.ndarray, training: bool) -> np.ndarray:
        out, self._cache = max_pool2d(
            np.ascontiguousarray(x), self.pool.plan(x.shape), owner=repr(self.pool), relu=True
        )
        return out

    def infer(self, x: np.ndarray) -> np.ndarray:
        """With no backward to follow: the maxima without their argmax, nothing kept."""
        return max_pool2d_values(np.ascontiguousarray(x), self.pool.plan(x.shape), relu=True)

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray:
        cache: MaxPoolCache = self._cached()
        return max_pool2d_backward(dout, cache)


Step = (LayerStep | ConvReLU | ConvReLUPool | ReLUPool | ConvActivation | DenseActivation
        | ConvGlobalPool | GlobalPoolDense | InvertedResidual | ResidualReLU | BatchNormReLU)


def joins_in_training(steps: list[Step], skip: np.ndarray) -> bool:
    """Whether a stack of ``steps`` (a Residual's body) can add the shortcut's output ``skip`` in
    its last step's output pass, in training or not (``run_joined``): a BatchNorm2D (exact class)
    after another step, ``skip`` C-contiguous in its dtype (ResNet's body, Conv2D -> BatchNorm2D
    -> ReLU -> Conv2D -> BatchNorm2D). There the join is no pass of its own over memory, and with
    a ReLU after the block the normalisation's backward takes its derivative from the block's
    output."""
    last = steps[-1]
    return (len(steps) >= 2 and isinstance(last, LayerStep) and type(last.layer) is BatchNorm2D
            and skip.dtype == last.layer._dtype and skip.flags.c_contiguous)


def run_joined(step: Step, x: np.ndarray, training: bool, skip: np.ndarray, relu: bool
               ) -> np.ndarray:
    """A stack's last ``step`` (``joins_in_training`` held) on ``x``: its output plus ``skip``,
    then ReLU if ``relu``, in its one output pass."""
    return step.layer.run(x, training, relu=relu, skip=skip)


def infer_with_skip(step: Step, x: np.ndarray, skip: np.ndarray, relu: bool, first: bool
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

            return _conv_forward(conv, x, False, then=join, relu=False)[0]
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


def infer_step(step: Step, x: np.ndarray, first: bool) -> np.ndarray:
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
