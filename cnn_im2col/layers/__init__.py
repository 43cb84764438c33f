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

One module per family of layers: ``base`` (``Layer``, the helpers the layers share), ``conv``
(``Conv2D``), ``dense`` (``Dense``), ``pooling`` (max, average, adaptive and global pooling),
``activation`` (the element-wise activations), ``normalization`` (``BatchNorm2D``,
``Normalization``), ``padding`` (``ConstantPad2D``, ``ZeroPad2D``) and ``passthrough``
(``Flatten``, ``Identity``, ``Dropout``). Every public name is re-exported here: import layers
from ``cnn_im2col.layers``. ``LAYERS`` maps each built-in layer's class name to its class (model
files name their layers by it).
"""

from __future__ import annotations

from .activation import HardSigmoid, HardSwish, LeakyReLU, ReLU, ReLU6, Sigmoid, Softmax, Tanh
from .base import Layer
from .conv import Conv2D
from .dense import Dense
from .normalization import BatchNorm2D, Normalization
from .padding import ConstantPad2D, ZeroPad2D
from .passthrough import Dropout, Flatten, Identity
from .pooling import AdaptiveAvgPool2D, AdaptiveMaxPool2D, AvgPool2D, GlobalAvgPool2D, MaxPool2D

__all__ = [
    "LAYERS",
    "AdaptiveAvgPool2D",
    "AdaptiveMaxPool2D",
    "AvgPool2D",
    "BatchNorm2D",
    "ConstantPad2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2D",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "Layer",
    "LeakyReLU",
    "MaxPool2D",
    "Normalization",
    "ReLU",
    "ReLU6",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "ZeroPad2D",
]


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
