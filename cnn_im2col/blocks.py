"""Fused blocks: adjacent built-in layers that ``Sequential`` runs as one pass.

- ``Conv2D -> ReLU``: the ReLU is applied in the convolution's epilogue (with the bias, while the
  GEMM's result is in cache), and its derivative in the first pass of the convolution's backward.
- ``Conv2D -> ReLU -> MaxPool2D``: as ``Conv2D -> ReLU``, and each batch slice is pooled by the
  worker that computed it, right after its epilogue, while it is in that core's cache; backward,
  the pool's gradient of a slice is routed by the worker that then turns it into the convolution's
  gradients (one hand-off to the pool per direction instead of two, no pass over memory that
  another core wrote).
- ``ReLU -> MaxPool2D`` (a ReLU not already fused into a convolution): ReLU of the pool, in the
  pool's pass (identical outputs and gradients: ReLU is monotone; ties go to the first maximum).

Only these exact classes are fused (a subclass may change ``forward``), so users' layers and the
layer protocol work as before: every layer keeps its ``params`` and ``grads`` (a fused block fills
the convolution's ``grads``; ReLU and MaxPool2D have none), and a layer that is not part of a
block runs its own ``forward``/``backward``. The ReLU of a ``Conv2D -> ReLU`` block keeps the
block's output as its cache (as if it had run); the ReLU of a ``ReLU -> MaxPool2D`` block is not
run, and its ``backward`` alone would say so.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import functional as F
from . import pooling as P
from .layers import Conv2D, MaxPool2D, ReLU
from .shapes import as_float_array, check_dout, pool_geometry


class Step(NamedTuple):
    """Layers ``first .. last`` (inclusive) run as one step of kind ``"layer"``, ``"conv_relu"``,
    ``"conv_relu_pool"`` or ``"relu_pool"``."""

    first: int
    last: int
    kind: str


def plan(layers: list[Any]) -> list[Step]:
    """The steps of a stack, left to right, greedily fusing the pairs listed in the module docstring."""
    steps, i = [], 0
    while i < len(layers):
        here = type(layers[i])
        after = type(layers[i + 1]) if i + 1 < len(layers) else None
        third = type(layers[i + 2]) if i + 2 < len(layers) else None
        if here is Conv2D and after is ReLU and third is MaxPool2D:
            steps.append(Step(i, i + 2, "conv_relu_pool"))
            i += 3
        elif here is Conv2D and after is ReLU:
            steps.append(Step(i, i + 1, "conv_relu"))
            i += 2
        elif here is ReLU and after is MaxPool2D:
            steps.append(Step(i, i + 1, "relu_pool"))
            i += 2
        else:
            steps.append(Step(i, i, "layer"))
            i += 1
    return steps


def forward(layers: list[Any], step: Step, x: Any, training: bool) -> np.ndarray:
    """Run one step forward."""
    if step.kind == "conv_relu":
        y = layers[step.first]._forward(x, training, relu=True)
        layers[step.last]._cache = y  # what ReLU.forward would have kept
        return y
    if step.kind == "conv_relu_pool":
        return _conv_relu_pool_forward(*layers[step.first:step.last + 1], x, training)
    if step.kind == "relu_pool":
        layers[step.first]._cache = None  # not run: its backward alone would raise
        return layers[step.last]._forward(x, training, relu=True)
    return layers[step.first].forward(x, training=training)


def _conv_relu_pool_forward(conv: Conv2D, relu: ReLU, pool: MaxPool2D, x: Any, training: bool) -> np.ndarray:
    """Conv2D -> ReLU -> MaxPool2D, each slice pooled by the worker that computed it. Every layer
    keeps the cache its own forward would have kept."""
    x = as_float_array(x, "x", repr(conv), ndim=4, dtype=conv.params["weight"].dtype, finite=False)
    conv_shape = (x.shape[0], *conv.output_shape(x.shape[1:]))
    g = pool_geometry(conv_shape[2], conv_shape[3], pool.kernel_size, pool.stride, pool.padding, repr(pool))
    pooled, argmax = P.max_pool2d_buffers(conv_shape, x.dtype, g)

    def pool_slice(s: slice, y: np.ndarray) -> None:
        P.max_pool2d_into(y, g, False, pooled[s], argmax[s])

    y = conv._forward(x, training, relu=True, then=pool_slice)
    relu._cache = y  # what ReLU.forward would have kept
    # the pooled values too: the fused backward's ReLU gate (the pool's own backward ignores them)
    pool._cache = P.MaxPoolCache(y.shape, g, "numba", repr(pool), argmax, y.dtype, pooled)
    return pooled


def backward(layers: list[Any], step: Step, dout: Any, input_grad: bool = True) -> np.ndarray | None:
    """Run one step backward; ``input_grad=False`` only for a step whose first layer accepts it."""
    if step.kind == "conv_relu":
        return layers[step.first].backward(dout, input_grad=input_grad)
    if step.kind == "conv_relu_pool":
        return _conv_relu_pool_backward(layers[step.first], layers[step.last], dout, input_grad)
    if step.kind == "relu_pool":
        return layers[step.last].backward(dout)
    if not input_grad:
        return layers[step.first].backward(dout, input_grad=False)
    return layers[step.first].backward(dout)


def _conv_relu_pool_backward(conv: Conv2D, pool: MaxPool2D, dout: Any, input_grad: bool) -> np.ndarray | None:
    """The pool's gradient of each slice, routed by the worker that then computes the convolution's:
    on the im2col path straight into the convolution's backward layout (``dz_into``), so the
    gradient of the convolution's (N, C, H, W) output is never written; elsewhere as that gradient
    (``dout_of``)."""
    cache = pool._cached()
    n, c = cache.x_shape[:2]
    g = cache.geometry
    dpool = np.ascontiguousarray(check_dout(dout, (n, c, g.oh, g.ow), cache.dtype, repr(pool)))
    gate = cache.pooled if conv._cached().out is not None else None  # the fused ReLU's derivative at the winners

    def dout_of(s: slice) -> np.ndarray:
        dy = np.empty((s.stop - s.start, *cache.x_shape[1:]), dtype=cache.dtype)
        P.max_pool2d_grad_into(dpool[s], cache.argmax[s], dpool[s], False, g, dy)
        return dy

    def dz_into(s: slice, d_t: np.ndarray, bias_grad: np.ndarray) -> None:
        P.max_pool2d_grad_cm_into(dpool[s], cache.argmax[s], None if gate is None else gate[s], d_t, bias_grad)

    return conv.backward(None, input_grad=input_grad, dout_of=dout_of, dz_into=dz_into)
