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
- ``BatchNormReLU`` (BatchNorm2D -> ReLU): the ReLU in the normalisation's output pass, its
  derivative inside the normalisation's backward (a BatchNorm2D after a Conv2D is folded into it
  at inference, so this step is mostly training's).
- ``ResidualReLU`` (Residual -> ReLU): ReLU(body + shortcut) in the join's one pass, and the
  ReLU's derivative applied once before the block's backward.
- ``LayerStep``: any other layer, alone.

The steps made only for inference (no backward) are ``inference_blocks.py``'s.

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

from .containers import Residual
from .conv import (
    ConvCache,
    conv2d_backward,
    direct,
    tiled,
    winograd,
)
from .layers import (
    LAYERS,
    BatchNorm2D,
    Conv2D,
    MaxPool2D,
    ReLU,
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
        class: a user's subclass may have changed ``forward``), a Conv2D's ``conv_forward`` (in
        a session, its frozen plan, as a fused one's), a container's own ``infer`` (its bodies
        folded too), else ``run``."""
        if type(self.layer) is MaxPool2D:
            return max_pool2d_values(np.ascontiguousarray(x), self.layer.plan(x.shape))
        if type(self.layer) is Conv2D:
            return conv_forward(self.layer, x, False, relu=False)[0]
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


def conv_forward(
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
        out, self._cache = conv_forward(self.conv, x, training)
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

        _, conv_cache = conv_forward(self.conv, x, training, then=pool_slice)
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

        conv_forward(self.conv, x, False, then=pool_slice)
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


Step = LayerStep | ConvReLU | ConvReLUPool | ReLUPool | ResidualReLU | BatchNormReLU


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
