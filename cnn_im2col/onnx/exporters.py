"""The exporters: for each layer class, the function that appends its ONNX nodes and initializers
to a :class:`~.graph.Graph` (``exporter(graph, layer, name, per-sample input shape)``), the one
its row of the operator table (:mod:`.operators`) names. A nested ``Sequential`` and the
containers write their children through the table, so their exporters are in :mod:`.operators`.

How each layer is written
-------------------------
==============================  ===============================================================
Conv2D                          ``Conv`` (``pads`` = [top, left, bottom, right], so ``"same"`` and
                                asymmetric padding are explicit; ``dilations`` and ``group`` are the
                                layer's ``dilation`` and ``groups``, weight (O, C/groups, KH, KW) as
                                is); tied bias: Conv's ``B``; untied bias (O, OH, OW): ``Conv`` +
                                ``Add``; no bias: ``Conv`` without B
MaxPool2D                       ``MaxPool`` (padding is -inf in both), with ``ceil_mode`` and
                                ``dilations``
AvgPool2D                       ``AveragePool``; ``count_include_pad`` is the attribute that carries
                                the engine's divisor: 1 (the default) divides by KH*KW with the zero
                                padding counted, 0 by the cells inside the image;
                                learned scale (Eq. 8.22, window sum times ``scale[c]``): then a
                                ``Mul`` by ``scale * KH * KW`` of shape (C, 1, 1)
BatchNorm2D                     ``BatchNormalization`` in inference form: the running statistics as
                                ``input_mean`` / ``input_var``, ``epsilon`` = eps, ``momentum`` =
                                1 - PyTorch's momentum (as ``torch.onnx`` writes it; left at its
                                default for ``momentum=None``); ``affine=False``: scale 1, B 0.
                                ``track_running_stats=False`` is refused: it normalises with the
                                batch's statistics at inference too, which this operator cannot say
GlobalAvgPool2D                 ``GlobalAveragePool`` (N, C, 1, 1), then ``Flatten(axis=1)``: (N, C)
Flatten                         ``Flatten(axis=1)``; ``order="F"`` (Eq. 8.26): ``Transpose`` with
                                perm [0, 1, 3, 2] first, so each map's columns are contiguous
Dense                           ``Gemm`` with ``transB=1`` (weight (out, in), as PyTorch's)
ReLU, Sigmoid, Tanh, Softmax    ``Relu``, ``Sigmoid``, ``Tanh``, ``Softmax(axis=1)``
ReLU6                           ``Clip`` with constant min 0 and max 6 (as torch.onnx writes it)
HardSigmoid, HardSwish          ``HardSigmoid`` (alpha 1/6, beta 1/2), ``HardSwish``
LeakyReLU                       ``LeakyRelu`` (alpha = negative_slope)
Identity                        ``Identity``
Normalization                   ``BatchNormalization``: scale 1, B 0, the mean, var std**2 - eps
Dropout                         ``Dropout`` with its ratio and no ``training_mode``: the identity
AdaptiveAvgPool2D               ``GlobalAveragePool`` for output (1, 1); ``AveragePool`` with
                                kernel = stride = (H / OH, W / OW) where those divide; else refused
AdaptiveMaxPool2D               ``GlobalMaxPool`` for output (1, 1); ``MaxPool`` with kernel =
                                stride = (H / OH, W / OW) where those divide; else refused
ConstantPad2D, ZeroPad2D        ``Pad`` (mode constant; pads and value as initializers)
==============================  ===============================================================

Initializers are named as :meth:`Sequential.state_dict` names the arrays. A layer whose parameters
have another dtype than the tensor arriving gets a ``Cast`` first, as the engine casts its input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..layers import (
    AvgPool2D,
    BatchNorm2D,
    ConstantPad2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    HardSigmoid,
    LeakyReLU,
    MaxPool2D,
    Normalization,
    ReLU6,
)
from ..shapes import resolve_padding
from .graph import Graph, window_span


def _pads_onnx(top: int, bottom: int, left: int, right: int) -> list[int]:
    return [top, left, bottom, right]  # ONNX: all the begins, then all the ends


def export_conv(g: Graph, layer: Conv2D, name: str, in_shape: tuple) -> None:
    weight = layer.params["weight"]
    g.cast_to(weight.dtype, name)
    dilation = tuple(layer.dilation)
    pads = resolve_padding(
        layer.padding, window_span(layer.kernel_size, dilation), layer.stride, repr(layer),
        size=tuple(in_shape[-2:]),
    )
    inputs = [g.constant(f"{name}.weight", weight)]
    if layer.bias_mode == "tied":
        inputs.append(g.constant(f"{name}.bias", layer.params["bias"]))
    g.add(
        "Conv",
        *inputs,
        name=name,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        pads=_pads_onnx(*pads),
        dilations=list(dilation),
        group=int(layer.groups),
    )
    if layer.bias_mode == "untied":  # one bias per output neuron, (O, OH, OW): broadcast over N
        g.add("Add", g.constant(f"{name}.bias", layer.params["bias"]), name=name)


def _pool_attributes(layer: Any) -> dict:
    ph, pw = layer.padding
    return {
        "kernel_shape": list(layer.kernel_size),
        "strides": list(layer.stride),
        "pads": _pads_onnx(ph, ph, pw, pw),
        "ceil_mode": int(layer.ceil_mode),
    }


def export_max_pool(g: Graph, layer: MaxPool2D, name: str, in_shape: tuple) -> None:
    g.add("MaxPool", name=name, dilations=list(layer.dilation), **_pool_attributes(layer))


def export_avg_pool(g: Graph, layer: AvgPool2D, name: str, in_shape: tuple) -> None:
    scale = layer.params.get("weight")
    if scale is not None:
        g.cast_to(scale.dtype, name)
    # count_include_pad=1: the divisor is KH*KW, zero padding counted (the default, PyTorch's);
    # 0: only the window's cells inside the image
    g.add(
        "AveragePool",
        name=name,
        count_include_pad=int(layer.count_include_pad),
        **_pool_attributes(layer),
    )
    if scale is not None:
        # Eq. 8.22: window sum * scale[c] = window mean * (scale[c] * KH * KW); with
        # count_include_pad False the engine scales a border window's sum by KH*KW / (cells
        # inside) first: the same product
        area = layer.kernel_size[0] * layer.kernel_size[1]
        g.add("Mul", g.constant(f"{name}.scale", (scale * area).reshape(-1, 1, 1)), name=name)


def export_normalization(g: Graph, layer: Normalization, name: str, in_shape: tuple) -> None:
    """(x - mean) / std as ONNX's inference BatchNormalization: scale 1, shift 0, the mean, and
    a variance std**2 - epsilon, so that sqrt(var + epsilon) is std (to float rounding); it
    imports back as a BatchNorm2D with the same numbers."""
    if len(in_shape) < 2:
        raise ValueError(
            f"cnn_im2col.onnx.export: layer {name} {layer!r}: ONNX's "
            f"BatchNormalization needs (N, C, ...) inputs, got per-sample "
            f"{in_shape}"
        )
    dtype = layer.buffers["mean"].dtype
    g.cast_to(dtype, name)
    epsilon = 1e-12
    std = layer.buffers["std"].astype(np.float64)
    inputs = [
        g.constant(f"{name}.scale:constant", np.ones(layer.channels, dtype)),
        g.constant(f"{name}.shift:constant", np.zeros(layer.channels, dtype)),
        g.constant(f"{name}.mean", layer.buffers["mean"]),
        g.constant(f"{name}.variance", (std * std - epsilon).astype(dtype)),
    ]
    g.add("BatchNormalization", *inputs, name=name, epsilon=epsilon)


def export_batch_norm(g: Graph, layer: BatchNorm2D, name: str, in_shape: tuple) -> None:
    if not layer.track_running_stats:
        # in eval mode it normalises with each batch's own statistics: not ONNX's (inference)
        # operator
        raise ValueError(
            f"cnn_im2col.onnx.export: layer {name} {layer!r}: track_running_stats=False normalises "
            f"with the batch's statistics even at inference, which ONNX's BatchNormalization "
            f"(running statistics) cannot express; exportable: track_running_stats=True"
        )
    dtype = layer.buffers["running_mean"].dtype
    g.cast_to(dtype, name)
    ones, zeros = np.ones(layer.num_features, dtype), np.zeros(layer.num_features, dtype)
    weight, bias = (layer.params["weight"], layer.params["bias"]) if layer.affine else (ones, zeros)
    # names: the state_dict's where there is one; affine=False's constant gamma = 1, beta = 0
    # otherwise
    suffix = "" if layer.affine else ":constant"
    inputs = [
        g.constant(f"{name}.weight{suffix}", weight),
        g.constant(f"{name}.bias{suffix}", bias),
        g.constant(f"{name}.running_mean", layer.buffers["running_mean"]),
        g.constant(f"{name}.running_var", layer.buffers["running_var"]),
    ]
    # ONNX's momentum weighs the running value (1 - PyTorch's), as torch.onnx writes it;
    # momentum=None (PyTorch's cumulative average) has no ONNX counterpart: the attribute is left
    # at its default
    momentum = {} if layer.momentum is None else {"momentum": 1.0 - layer.momentum}
    g.add("BatchNormalization", *inputs, name=name, epsilon=layer.eps, **momentum)


def export_global_avg_pool(g: Graph, layer: GlobalAvgPool2D, name: str, in_shape: tuple) -> None:
    g.add("GlobalAveragePool", name=name)  # (N, C, 1, 1)
    g.add("Flatten", name=name, axis=1)  # (N, C), as the layer's output


def export_adaptive(global_op: str, window_op: str) -> Callable:
    """The exporter of an adaptive pool: ``global_op`` for output (1, 1); ``window_op`` with kernel
    and stride (H / OH, W / OW) where those divide (the same windows); other sizes have no ONNX
    operator."""

    def export(g: Graph, layer: Any, name: str, in_shape: tuple) -> None:
        _, height, width = in_shape
        out_h, out_w = layer.output_size
        if (out_h, out_w) == (1, 1):
            g.add(global_op, name=name)
        elif height % out_h == 0 and width % out_w == 0:
            window = [height // out_h, width // out_w]
            g.add(window_op, name=name, kernel_shape=window, strides=window)
        else:
            raise ValueError(
                f"cnn_im2col.onnx.export: layer {name} {layer!r} pools {height}x{width} to "
                f"{out_h}x{out_w}, windows of different sizes that no ONNX operator computes; "
                f"exportable: output (1, 1), or sizes that divide the input's"
            )

    return export


def export_pad(g: Graph, layer: ConstantPad2D, name: str, in_shape: tuple) -> None:
    """``Pad`` (mode constant) with the pads and the value as initializers (opset 11 and on)."""
    top, bottom, left, right = layer.pads
    pads = g.constant(f"{name}.pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64),
                      keep_dtype=True)
    value = g.constant(f"{name}.value", np.array(layer.value, dtype=g.dtype))
    g.add("Pad", pads, value, name=name, mode="constant")


def export_flatten(g: Graph, layer: Flatten, name: str, in_shape: tuple) -> None:
    if layer.order == "F" and len(in_shape) == 3:  # (C, H, W): each map's columns become contiguous
        g.add("Transpose", name=name, perm=[0, 1, 3, 2])
    g.add("Flatten", name=name, axis=1)


def export_dense(g: Graph, layer: Dense, name: str, in_shape: tuple) -> None:
    weight = layer.params["weight"]
    g.cast_to(weight.dtype, name)
    inputs = [g.constant(f"{name}.weight", weight)]
    if "bias" in layer.params:
        inputs.append(g.constant(f"{name}.bias", layer.params["bias"]))
    g.add("Gemm", *inputs, name=name, transB=1)


def export_activation(op: str) -> Callable:
    def export_activation(g: Graph, layer: Any, name: str, in_shape: tuple) -> None:
        g.add(op, name=name, **({"axis": 1} if op == "Softmax" else {}))

    return export_activation


def export_relu6(g: Graph, layer: ReLU6, name: str, in_shape: tuple) -> None:
    """``Clip(x, 0, 6)``, as torch.onnx writes ReLU6 (min and max are inputs from opset 11)."""
    low = g.constant(f"{name}.min", np.array(0.0, dtype=g.dtype))
    high = g.constant(f"{name}.max", np.array(6.0, dtype=g.dtype))
    g.add("Clip", low, high, name=name)


def export_hard_sigmoid(g: Graph, layer: HardSigmoid, name: str, in_shape: tuple) -> None:
    g.add("HardSigmoid", name=name, alpha=1.0 / 6.0, beta=0.5)


def export_leaky_relu(g: Graph, layer: LeakyReLU, name: str, in_shape: tuple) -> None:
    g.add("LeakyRelu", name=name, alpha=float(layer.negative_slope))


def export_dropout(g: Graph, layer: Dropout, name: str, in_shape: tuple) -> None:
    # no training_mode input: false, so every runtime runs it as the identity (inference)
    ratio = g.constant(
        f"{name}.ratio", np.array(layer.p, dtype=np.float64), keep_dtype=True
    )  # p exactly
    g.add("Dropout", ratio, name=name)
