"""Fused blocks: adjacent built-in layers that ``Sequential`` runs as one pass.

- ``Conv2D -> ReLU``: the ReLU is applied in the convolution's epilogue (with the bias, while the
  GEMM's result is in cache), and its derivative in the first pass of the convolution's backward.
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

from .layers import Conv2D, MaxPool2D, ReLU


class Step(NamedTuple):
    """Layers ``first .. last`` (inclusive) run as one step of kind ``"layer"``, ``"conv_relu"`` or
    ``"relu_pool"``."""

    first: int
    last: int
    kind: str


def plan(layers: list[Any]) -> list[Step]:
    """The steps of a stack, left to right, greedily fusing the pairs listed in the module docstring."""
    steps, i = [], 0
    while i < len(layers):
        here = type(layers[i])
        after = type(layers[i + 1]) if i + 1 < len(layers) else None
        if here is Conv2D and after is ReLU:
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
    if step.kind == "relu_pool":
        layers[step.first]._cache = None  # not run: its backward alone would raise
        return layers[step.last]._forward(x, training, relu=True)
    return layers[step.first].forward(x, training=training)


def backward(layers: list[Any], step: Step, dout: Any, input_grad: bool = True) -> np.ndarray | None:
    """Run one step backward; ``input_grad=False`` only for a step whose first layer accepts it."""
    if step.kind == "conv_relu":
        return layers[step.first].backward(dout, input_grad=input_grad)
    if step.kind == "relu_pool":
        return layers[step.last].backward(dout)
    if not input_grad:
        return layers[step.first].backward(dout, input_grad=False)
    return layers[step.first].backward(dout)
