"""ONNX export and import: a :class:`~cnn_im2col.model.Sequential` out to any ONNX runtime, and a
chain-shaped ONNX graph (such as ``torch.onnx.export`` of an ``nn.Sequential``) in as a ``Sequential``.

Public API
----------
- :func:`export` ``(model, path, input_shape)`` — write ``model`` as an ONNX file (opset 17,
  IR version 8), atomically. ``input_shape`` is per sample, e.g. (C, H, W); the batch axis is
  dynamic (``"N"``). The model is checked with ``onnx.checker.check_model`` before it is written.
- :func:`to_onnx` ``(model, input_shape)`` — the same, as an ``onnx.ModelProto`` in memory.
- :func:`load` ``(path) -> Sequential`` and :func:`from_onnx` ``(proto) -> Sequential`` — import.

How each layer is written (``_EXPORTERS``: layer class -> function)
-------------------------------------------------------------------
==============================  ===============================================================
Conv2D                          ``Conv`` (``pads`` = [top, left, bottom, right], so ``"same"`` and
                                asymmetric padding are explicit; ``dilations`` and ``group`` are the
                                layer's ``dilation`` and ``groups``, weight (O, C/groups, KH, KW) as
                                is); tied bias: Conv's ``B``; untied bias (O, OH, OW): ``Conv`` +
                                ``Add``; no bias: ``Conv`` without B
MaxPool2D                       ``MaxPool`` (padding is -inf in both)
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
Dropout                         ``Dropout`` with its ratio and no ``training_mode``: the identity
Sequential (nested)             its layers, in line; initializer names ``"{i}.{j}.weight"``
==============================  ===============================================================

Initializers are named as :meth:`Sequential.state_dict` names the arrays. A layer whose parameters
have another dtype than the tensor arriving gets a ``Cast`` first, as the engine casts its input.

What is read (``_IMPORTERS``: op type -> function)
--------------------------------------------------
A chain: one graph input, one output, and every node taking the previous node's output (plus
initializers, ``Constant`` nodes or ``Identity`` nodes of those). ``Conv`` (any ``group`` dividing the output channels, any
``dilations``; symmetric pads or the pads of ``"same"``; ``auto_pad`` NOTSET, VALID, SAME_UPPER, and
SAME_LOWER for odd kernel spans), ``Conv`` + ``Add`` of a constant (a bias: (O, 1, 1) tied,
(O, OH, OW) untied), ``Relu``, ``Sigmoid``, ``Tanh``, ``MaxPool`` / ``AveragePool`` (ceil_mode 0,
dilations 1, symmetric pads of at most half the window; ``count_include_pad`` 0 or 1), an
``AveragePool`` + ``Mul`` by a (C, 1, 1) constant (the learned scale), ``BatchNormalization`` in
inference form only (``training_mode`` 0, one output; constant scale, B, mean and var of shape (C,)):
a ``BatchNorm2D`` with ``affine=True`` (a scale of ones stays trainable), eps = ``epsilon``, momentum
= 1 - ``momentum``, the running statistics from mean and var and ``num_batches_tracked`` 0 (ONNX does
not carry it); ``GlobalAveragePool`` followed by ``Flatten(axis=1)`` or ``Reshape`` to (N, -1) (a
``GlobalAvgPool2D``), ``Flatten(axis=1)``,
``Reshape`` to (N, -1), ``Transpose`` [0, 1, 3, 2] + ``Flatten`` (Flatten order "F"), ``Gemm``
(transA 0), ``MatMul`` (+ ``Add``), ``Softmax`` over axis 1, ``Dropout``, ``Identity`` (dropped).
Initializers become the layers' parameters, in their dtype (float32 or float64). Anything else is
a ``ValueError`` naming the node, its operator and what is supported; an unreadable file is a
``ValueError`` naming the file. Files are parsed by the ``onnx`` package (protobuf), never unpickled.

The ``onnx`` package is an optional dependency (``pip install "cnn-im2col[onnx]"``); it is imported
on first use, with an ImportError that says so if it is missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__
from . import functional as F
from ._files import atomic_write
from .layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from .model import Sequential
from .shapes import float_dtype, resolve_padding

__all__ = ["OPSET", "export", "from_onnx", "load", "to_onnx"]

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17 (onnx 1.12): readable by every runtime that runs opset 17
INPUT, OUTPUT = "input", "output"


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:  # pragma: no cover - the test environment has it
        raise ImportError("cnn_im2col.onnx needs the onnx package: pip install \"cnn-im2col[onnx]\" "
                          "(or pip install onnx)") from None
    return onnx


# ============================================================================================
# export
# ============================================================================================


class _Graph:
    """The nodes and initializers of the graph being written, and the tensor flowing down the chain.

    ``force``: the one float dtype of every tensor and parameter (``export(dtype=...)``), or None
    to keep each layer's own.
    """

    def __init__(self, onnx: Any, dtype: np.dtype, force: np.dtype | None) -> None:
        self.onnx, self.nodes, self.initializers = onnx, [], []
        self.tensor, self.dtype = INPUT, dtype  # the chain's current tensor and its element type
        self.force = force

    def constant(self, name: str, value: np.ndarray, keep_dtype: bool = False) -> str:
        value = np.array(value, order="C")  # (a copy; 0-d stays 0-d)
        if self.force is not None and not keep_dtype:
            value = value.astype(self.force)
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def add(self, op: str, *extra_inputs: str, name: str, **attributes: Any) -> str:
        """Append ``op(current tensor, *extra_inputs)``; its output becomes the current tensor."""
        output = f"{name}:{op.lower()}"
        self.nodes.append(self.onnx.helper.make_node(op, [self.tensor, *extra_inputs], [output],
                                                     name=f"{name}:{op}", **attributes))
        self.tensor = output
        return output

    def cast_to(self, dtype: np.dtype, name: str) -> None:
        """A ``Cast`` if the current tensor is not ``dtype`` (a layer casts its input to its own dtype)."""
        dtype = np.dtype(self.force if self.force is not None else dtype)
        if dtype != self.dtype:
            self.add("Cast", name=name, to=self.onnx.helper.np_dtype_to_tensor_dtype(dtype))
            self.dtype = dtype


def _pads_onnx(top: int, bottom: int, left: int, right: int) -> list[int]:
    return [top, left, bottom, right]  # ONNX: all the begins, then all the ends


def _span(kernel: tuple, dilation: tuple) -> tuple[int, int]:
    """The extent of a dilated kernel, ``dil*(k - 1) + 1``: what ``"same"`` pads (as PyTorch)."""
    return (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)


def _export_conv(g: _Graph, layer: Conv2D, name: str, in_shape: tuple) -> None:
    weight = layer.params["weight"]
    g.cast_to(weight.dtype, name)
    dilation = tuple(layer.dilation)
    pads = resolve_padding(layer.padding, _span(layer.kernel_size, dilation), layer.stride, repr(layer))
    inputs = [g.constant(f"{name}.weight", weight)]
    if layer.bias_mode == "tied":
        inputs.append(g.constant(f"{name}.bias", layer.params["bias"]))
    g.add("Conv", *inputs, name=name, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
          pads=_pads_onnx(*pads), dilations=list(dilation), group=int(layer.groups))
    if layer.bias_mode == "untied":  # one bias per output neuron, (O, OH, OW): broadcast over N
        g.add("Add", g.constant(f"{name}.bias", layer.params["bias"]), name=name)


def _pool_attributes(layer: Any) -> dict:
    ph, pw = layer.padding
    return {"kernel_shape": list(layer.kernel_size), "strides": list(layer.stride),
            "pads": _pads_onnx(ph, ph, pw, pw), "ceil_mode": 0}


def _export_max_pool(g: _Graph, layer: MaxPool2D, name: str, in_shape: tuple) -> None:
    g.add("MaxPool", name=name, dilations=[1, 1], **_pool_attributes(layer))


def _export_avg_pool(g: _Graph, layer: AvgPool2D, name: str, in_shape: tuple) -> None:
    scale = layer.params.get("weight")
    if scale is not None:
        g.cast_to(scale.dtype, name)
    # count_include_pad=1: the divisor is KH*KW, zero padding counted (the default, PyTorch's);
    # 0: only the window's cells inside the image
    g.add("AveragePool", name=name, count_include_pad=int(layer.count_include_pad), **_pool_attributes(layer))
    if scale is not None:
        # Eq. 8.22: window sum * scale[c] = window mean * (scale[c] * KH * KW); with count_include_pad
        # False the engine scales a border window's sum by KH*KW / (cells inside) first: the same product
        area = layer.kernel_size[0] * layer.kernel_size[1]
        g.add("Mul", g.constant(f"{name}.scale", (scale * area).reshape(-1, 1, 1)), name=name)


def _export_batch_norm(g: _Graph, layer: BatchNorm2D, name: str, in_shape: tuple) -> None:
    if not layer.track_running_stats:
        # in eval mode it normalises with each batch's own statistics: not ONNX's (inference) operator
        raise ValueError(f"cnn_im2col.onnx.export: layer {name} {layer!r}: track_running_stats=False normalises "
                         f"with the batch's statistics even at inference, which ONNX's BatchNormalization "
                         f"(running statistics) cannot express; exportable: track_running_stats=True")
    dtype = layer.buffers["running_mean"].dtype
    g.cast_to(dtype, name)
    ones, zeros = np.ones(layer.num_features, dtype), np.zeros(layer.num_features, dtype)
    weight, bias = (layer.params["weight"], layer.params["bias"]) if layer.affine else (ones, zeros)
    # names: the state_dict's where there is one; affine=False's constant gamma = 1, beta = 0 otherwise
    suffix = "" if layer.affine else ":constant"
    inputs = [g.constant(f"{name}.weight{suffix}", weight), g.constant(f"{name}.bias{suffix}", bias),
              g.constant(f"{name}.running_mean", layer.buffers["running_mean"]),
              g.constant(f"{name}.running_var", layer.buffers["running_var"])]
    # ONNX's momentum weighs the running value (1 - PyTorch's), as torch.onnx writes it; momentum=None
    # (PyTorch's cumulative average) has no ONNX counterpart: the attribute is left at its default
    momentum = {} if layer.momentum is None else {"momentum": 1.0 - layer.momentum}
    g.add("BatchNormalization", *inputs, name=name, epsilon=layer.eps, **momentum)


def _export_global_avg_pool(g: _Graph, layer: GlobalAvgPool2D, name: str, in_shape: tuple) -> None:
    g.add("GlobalAveragePool", name=name)  # (N, C, 1, 1)
    g.add("Flatten", name=name, axis=1)  # (N, C), as the layer's output


def _export_flatten(g: _Graph, layer: Flatten, name: str, in_shape: tuple) -> None:
    if layer.order == "F" and len(in_shape) == 3:  # (C, H, W): each map's columns become contiguous
        g.add("Transpose", name=name, perm=[0, 1, 3, 2])
    g.add("Flatten", name=name, axis=1)


def _export_dense(g: _Graph, layer: Dense, name: str, in_shape: tuple) -> None:
    weight = layer.params["weight"]
    g.cast_to(weight.dtype, name)
    inputs = [g.constant(f"{name}.weight", weight)]
    if "bias" in layer.params:
        inputs.append(g.constant(f"{name}.bias", layer.params["bias"]))
    g.add("Gemm", *inputs, name=name, transB=1)


def _export_activation(op: str) -> Callable:
    def export_activation(g: _Graph, layer: Any, name: str, in_shape: tuple) -> None:
        g.add(op, name=name, **({"axis": 1} if op == "Softmax" else {}))

    return export_activation


def _export_dropout(g: _Graph, layer: Dropout, name: str, in_shape: tuple) -> None:
    # no training_mode input: false, so every runtime runs it as the identity (inference)
    ratio = g.constant(f"{name}.ratio", np.array(layer.p, dtype=np.float64), keep_dtype=True)  # p exactly
    g.add("Dropout", ratio, name=name)


def _export_sequential(g: _Graph, layer: Sequential, name: str, in_shape: tuple) -> None:
    _export_chain(g, layer, f"{name}.", in_shape)


#: layer class -> ``exporter(graph, layer, name, per-sample input shape)``; exact classes only (a
#: subclass may compute something else)
_EXPORTERS: dict[type, Callable[[_Graph, Any, str, tuple], None]] = {
    Conv2D: _export_conv,
    MaxPool2D: _export_max_pool,
    AvgPool2D: _export_avg_pool,
    Flatten: _export_flatten,
    Dense: _export_dense,
    ReLU: _export_activation("Relu"),
    Sigmoid: _export_activation("Sigmoid"),
    Tanh: _export_activation("Tanh"),
    Softmax: _export_activation("Softmax"),
    Dropout: _export_dropout,
    BatchNorm2D: _export_batch_norm,
    GlobalAvgPool2D: _export_global_avg_pool,
    Sequential: _export_sequential,
}


def _export_chain(g: _Graph, model: Sequential, prefix: str, input_shape: tuple) -> None:
    shapes = [input_shape, *model.check_shapes(input_shape)]
    for i, layer in enumerate(model.layers):
        exporter = _EXPORTERS.get(type(layer))
        if exporter is None:
            known = ", ".join(cls.__name__ for cls in _EXPORTERS)
            raise ValueError(f"cnn_im2col.onnx.export: layer {prefix}{i} {layer!r} ({type(layer).__name__}) "
                             f"cannot be exported to ONNX; exportable layers: {known}")
        exporter(g, layer, f"{prefix}{i}", shapes[i])


def _first_dtype(model: Sequential) -> np.dtype:
    """The dtype the model's first parameterised layer casts its input to (float32 if none)."""
    for value in model.params.values():
        return value.dtype
    return np.dtype(np.float32)


def to_onnx(model: Sequential, input_shape: Any, dtype: Any = None) -> Any:
    """``model`` as a checked ``onnx.ModelProto``; ``input_shape`` per sample, e.g. (1, 28, 28).

    Graph input ``"input"`` (N, *input_shape), output ``"output"`` (N, *output shape), N dynamic.
    ``dtype=None``: every layer computes in its own dtype, as in the engine (the input has the first
    parameterised layer's); ``dtype="float32"`` (or float64): everything in that one dtype. Note that
    onnxruntime's CPU provider has no float64 ``Conv``: export a float64 model with ``dtype="float32"``
    to run it there.
    """
    onnx = _onnx()
    owner = "cnn_im2col.onnx.export"
    if not isinstance(model, Sequential):
        raise TypeError(f"{owner}: model must be a Sequential, got {type(model).__name__}")
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise TypeError(f"{owner}: input_shape must be the per-sample shape, e.g. (C, H, W), got {input_shape!r}")
    input_shape = tuple(input_shape)
    output_shape = model.output_shape(input_shape)  # checks input_shape and every layer's fit
    input_shape = tuple(int(s) for s in input_shape)
    force = None if dtype is None else float_dtype(dtype, "dtype", owner)
    input_dtype = force if force is not None else _first_dtype(model)
    g = _Graph(onnx, input_dtype, force)
    _export_chain(g, model, "", input_shape)
    g.add("Identity", name="output")  # a fixed output name, whatever the last layer was
    g.nodes[-1].output[0] = OUTPUT
    h = onnx.helper
    graph = h.make_graph(
        g.nodes, "cnn_im2col.Sequential",
        [h.make_tensor_value_info(INPUT, h.np_dtype_to_tensor_dtype(input_dtype), ["N", *input_shape])],
        [h.make_tensor_value_info(OUTPUT, h.np_dtype_to_tensor_dtype(g.dtype), ["N", *output_shape])],
        initializer=g.initializers)
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                         producer_name="cnn-im2col", producer_version=__version__,
                         doc_string=repr(model))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model: Sequential, path: str | os.PathLike, input_shape: Any, dtype: Any = None) -> None:
    """Write ``model`` to ``path`` as ONNX (see :func:`to_onnx`), atomically."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"cnn_im2col.onnx.export: path must be a str or os.PathLike, got {path!r}")
    data = to_onnx(model, input_shape, dtype).SerializeToString()
    with atomic_write(path, "wb") as handle:
        handle.write(data)


# ============================================================================================
# import
# ============================================================================================


@dataclass
class _Reader:
    """The chain being read: its nodes in order, a cursor, the constants and the tensor's known shape."""

    onnx: Any
    source: str
    nodes: list  # the chain, in order (Constant nodes excluded)
    constants: dict[str, np.ndarray]
    opset: int
    shape: tuple[int, ...] | None  # per-sample shape of the current tensor, None if unknown
    position: int = 0
    layers: list = field(default_factory=list)

    def label(self, node: Any) -> str:
        name = f" {node.name!r}" if node.name else ""
        return f"{self.source}: node{name} ({node.op_type})"

    def fail(self, node: Any, what: str, supported: str) -> ValueError:
        return ValueError(f"{self.label(node)}: {what}; supported: {supported}")

    def attributes(self, node: Any, allowed: dict[str, Any]) -> dict[str, Any]:
        """The node's attributes with ``allowed``'s defaults; any other attribute is refused."""
        values = dict(allowed)
        for attribute in node.attribute:
            if attribute.name not in allowed:
                raise self.fail(node, f"attribute {attribute.name!r} is not supported",
                                f"{', '.join(allowed) or 'no attributes'}")
            value = self.onnx.helper.get_attribute_value(attribute)
            values[attribute.name] = value.decode() if isinstance(value, bytes) else value
        return values

    def constant(self, node: Any, index: int, what: str, required: bool = True) -> np.ndarray | None:
        """Input ``index`` of ``node`` as an array: it must be an initializer or a Constant."""
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            if required:
                raise self.fail(node, f"its {what} (input {index}) is missing", f"a constant {what}")
            return None
        if name not in self.constants:
            raise self.fail(node, f"its {what} {name!r} is computed in the graph, not a constant",
                            f"a {what} given as an initializer or a Constant node")
        return self.constants[name]

    def fuse(self, op: str) -> tuple[Any, np.ndarray] | None:
        """If the next node is ``op`` of the current tensor and one constant, consume it: (node, constant)."""
        if self.position >= len(self.nodes):
            return None
        node = self.nodes[self.position]
        if node.op_type != op or len(node.input) != 2:
            return None
        other = [name for name in node.input if name in self.constants]
        if len(other) != 1 or node.attribute:
            return None
        self.position += 1
        return node, self.constants[other[0]]

    def add_layer(self, node: Any, layer: Any) -> None:
        if self.shape is not None:
            try:
                self.shape = tuple(int(s) for s in layer.output_shape(self.shape))
            except ValueError as exc:
                raise ValueError(f"{self.label(node)}: {exc}") from None
        self.layers.append(layer)


def _float_dtype(reader: _Reader, node: Any, array: np.ndarray, what: str) -> np.dtype:
    if array.dtype not in (np.float32, np.float64):
        raise reader.fail(node, f"its {what} is {array.dtype}", "float32 or float64 parameters")
    return array.dtype


def _load_into(layer: Any, **arrays: np.ndarray) -> Any:
    for name, value in arrays.items():
        np.copyto(layer.params[name], value.reshape(layer.params[name].shape), casting="same_kind")
    return layer


def _window(reader: _Reader, node: Any, attrs: dict, kernel_rank: int, dilated: bool = False) -> tuple:
    """(kernel, stride, (top, bottom, left, right), dilation) from the Conv/pool attributes, 2-D only;
    a dilation other than 1 only where ``dilated`` (Conv)."""
    kernel = attrs["kernel_shape"]
    if kernel is None or len(kernel) != kernel_rank:
        raise reader.fail(node, f"kernel_shape {kernel} is not two-dimensional", "2-D (NCHW) windows")
    kernel = tuple(int(k) for k in kernel)
    stride = tuple(int(s) for s in (attrs["strides"] or (1, 1)))
    dilations = tuple(int(d) for d in (attrs["dilations"] or (1, 1)))
    if len(dilations) != 2 or min(dilations) < 1:
        raise reader.fail(node, f"dilations {list(dilations)}", "2 dilations of at least 1")
    if not dilated and dilations != (1, 1):
        raise reader.fail(node, f"dilations {list(dilations)}", "dilations 1 for pooling (dilated Conv is read)")
    pads = tuple(int(p) for p in (attrs["pads"] or (0, 0, 0, 0)))
    if len(stride) != 2 or len(pads) != 4:
        raise reader.fail(node, f"strides {list(stride)} / pads {list(pads)}", "2-D strides and 4 pads")
    top, left, bottom, right = pads
    return kernel, stride, (top, bottom, left, right), dilations


def _auto_pad(reader: _Reader, node: Any, attrs: dict, kernel: tuple, stride: tuple,
              pads: tuple, allow_same: bool) -> tuple:
    mode = attrs.get("auto_pad", "NOTSET") or "NOTSET"
    if mode == "NOTSET":
        return pads
    if mode == "VALID":
        return (0, 0, 0, 0)
    odd = kernel[0] % 2 == 1 and kernel[1] % 2 == 1
    if allow_same and stride == (1, 1) and (mode == "SAME_UPPER" or (mode == "SAME_LOWER" and odd)):
        return resolve_padding("same", kernel, stride)
    raise reader.fail(node, f"auto_pad {mode!r} (stride {list(stride)}, kernel {list(kernel)})",
                      "NOTSET, VALID, and for Conv with stride 1 SAME_UPPER (SAME_LOWER for odd kernels)")


def _import_conv(reader: _Reader, node: Any) -> None:
    attrs = reader.attributes(node, {"auto_pad": "NOTSET", "dilations": None, "group": 1,
                                     "kernel_shape": None, "pads": None, "strides": None})
    weight = reader.constant(node, 1, "weight")
    dtype = _float_dtype(reader, node, weight, "weight")
    if weight.ndim != 4:
        raise reader.fail(node, f"its weight has shape {weight.shape}", "2-D convolutions, weight (O, C, KH, KW)")
    groups = int(attrs["group"])
    out_channels = weight.shape[0]
    if groups < 1 or out_channels % groups:
        raise reader.fail(node, f"group {groups} with a weight of shape {weight.shape}",
                          "a group count of at least 1 that divides the output channels (weight's first axis)")
    if attrs["kernel_shape"] is None:
        attrs["kernel_shape"] = list(weight.shape[2:])
    kernel, stride, pads, dilation = _window(reader, node, attrs, 2, dilated=True)
    if kernel != weight.shape[2:]:
        raise reader.fail(node, f"kernel_shape {list(kernel)} differs from the weight's {weight.shape}",
                          "a kernel_shape equal to the weight's (KH, KW)")
    span = _span(kernel, dilation)  # what auto_pad and "same" pad: the dilated kernel's extent
    pads = _auto_pad(reader, node, attrs, span, stride, pads, allow_same=True)
    top, bottom, left, right = pads
    if (top, left) == (bottom, right):
        padding: Any = (top, left)
    elif stride == (1, 1) and pads == resolve_padding("same", span, stride):
        padding = "same"
    else:
        raise reader.fail(node, f"asymmetric pads [top, left, bottom, right] = {[top, left, bottom, right]}",
                          "symmetric pads, or the pads of 'same' (stride 1, extra row/column at the end)")
    in_channels = weight.shape[1] * groups  # the weight is (O, C/groups, KH, KW)
    bias = reader.constant(node, 2, "bias", required=False)
    bias_mode: str | None = "tied" if bias is not None else None
    input_size = None
    if bias is None and (fused := reader.fuse("Add")) is not None:  # Conv + Add: a bias added afterwards
        add_node, bias = fused
        out_hw = None
        if reader.shape is not None:
            out_hw = F.conv2d_output_shape(reader.shape, weight.shape, stride, padding, reader.label(node),
                                           dilation, groups)[1:]
        shape = bias.shape[1:] if bias.ndim == 4 and bias.shape[0] == 1 else bias.shape
        if shape == (out_channels, 1, 1):  # broadcast over N, H, W: one per map
            bias_mode = "tied"
        elif out_hw is not None and shape == (out_channels, *out_hw):
            bias_mode, input_size = "untied", reader.shape[1:]
        else:
            raise reader.fail(add_node, f"adds a constant of shape {bias.shape} to the output of a Conv with "
                              f"{out_channels} maps" + ("" if out_hw else " (input size unknown)"),
                              f"a bias of shape ({out_channels}, 1, 1) (tied) or ({out_channels}, OH, OW) "
                              f"(untied, with a known input size)")
    layer = Conv2D(in_channels, out_channels, kernel, stride, padding, bias=bias_mode,
                   input_size=input_size, dtype=dtype, dilation=dilation, groups=groups)
    arrays = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    reader.add_layer(node, _load_into(layer, **arrays))


def _import_pool(reader: _Reader, node: Any) -> None:
    average = node.op_type == "AveragePool"
    allowed = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None, "kernel_shape": None,
               "pads": None, "strides": None}
    allowed.update({"count_include_pad": 0} if average else {"storage_order": 0})
    attrs = reader.attributes(node, allowed)
    if attrs["ceil_mode"] != 0:
        raise reader.fail(node, f"ceil_mode {attrs['ceil_mode']}", "ceil_mode 0 (output size rounded down)")
    kernel, stride, pads, _ = _window(reader, node, attrs, 2)
    top, bottom, left, right = _auto_pad(reader, node, attrs, kernel, stride, pads, allow_same=False)
    if (top, left) != (bottom, right):
        raise reader.fail(node, f"asymmetric pads [top, left, bottom, right] = {[top, left, bottom, right]}",
                          "symmetric pads of at most half the window")
    # count_include_pad 0 (ONNX's default): the divisor counts only the cells inside the image
    include_pad = bool(attrs["count_include_pad"]) if average else True
    try:
        if not average:
            layer: Any = MaxPool2D(kernel, stride, (top, left))
        elif (fused := reader.fuse("Mul")) is not None:  # AveragePool + Mul: a learned scale per map
            mul_node, factor = fused
            channels = factor.shape[-3] if factor.ndim >= 3 else 0
            if factor.ndim not in (3, 4) or factor.shape[-2:] != (1, 1) or factor.size != channels:
                raise reader.fail(mul_node, f"multiplies the average pool by a constant of shape {factor.shape}",
                                  "a scale of shape (C, 1, 1), one per feature map")
            dtype = _float_dtype(reader, mul_node, factor, "scale")
            layer = AvgPool2D(kernel, stride, (top, left), trainable_scale=True, channels=channels, dtype=dtype,
                              count_include_pad=include_pad)
            _load_into(layer, weight=factor.reshape(-1) / (kernel[0] * kernel[1]))
        else:
            layer = AvgPool2D(kernel, stride, (top, left), count_include_pad=include_pad)
    except ValueError as exc:  # e.g. padding more than half the window
        raise reader.fail(node, str(exc), "symmetric pads of at most half the window") from None
    reader.add_layer(node, layer)


def _float32_value(value: float) -> float:
    """A float attribute (stored as float32) as the decimal it was written from: 1e-5, not 9.99999974e-06."""
    return float(str(np.float32(value)))


def _import_batch_norm(reader: _Reader, node: Any) -> None:
    attrs = reader.attributes(node, {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0})
    extra = [name for name in node.output[1:] if name]
    if attrs["training_mode"] != 0 or extra:
        raise reader.fail(node, f"training mode (training_mode {attrs['training_mode']}, outputs "
                          f"{list(node.output)})", "inference: training_mode 0 and one output (Y)")
    arrays = {what: reader.constant(node, index, what)
              for index, what in enumerate(("scale", "bias", "mean", "var"), start=1)}
    dtype = _float_dtype(reader, node, arrays["mean"], "mean")
    for what, value in arrays.items():
        _float_dtype(reader, node, value, what)
        if value.ndim != 1 or value.shape != arrays["scale"].shape:
            shapes = {k: v.shape for k, v in arrays.items()}
            raise reader.fail(node, f"its inputs have shapes {shapes}", "scale, bias, mean and var of shape (C,)")
    momentum = 1.0 - _float32_value(attrs["momentum"])  # ONNX weighs the running value: PyTorch's 1 - m
    # affine=True even for gamma = 1, beta = 0: the same numbers, and the parameters stay trainable
    layer = BatchNorm2D(arrays["scale"].shape[0], eps=_float32_value(attrs["epsilon"]),
                        momentum=float(f"{momentum:.12g}"), dtype=dtype)
    _load_into(layer, weight=arrays["scale"], bias=arrays["bias"])
    np.copyto(layer.buffers["running_mean"], arrays["mean"], casting="same_kind")
    np.copyto(layer.buffers["running_var"], arrays["var"], casting="same_kind")
    reader.add_layer(node, layer)


def _import_global_avg_pool(reader: _Reader, node: Any) -> None:
    """``GlobalAveragePool`` + ``Flatten`` / ``Reshape`` to (N, -1): the (N, C) of GlobalAvgPool2D."""
    reader.attributes(node, {})
    following = reader.nodes[reader.position] if reader.position < len(reader.nodes) else None
    if following is None or following.op_type not in ("Flatten", "Reshape"):
        raise reader.fail(node, "not followed by Flatten / Reshape" + (
            "" if following is None else f" (followed by {following.op_type})"),
            "GlobalAveragePool followed by Flatten(axis=1) or Reshape to (N, -1) (GlobalAvgPool2D)")
    if reader.shape is not None:
        if len(reader.shape) != 3:
            raise reader.fail(node, f"input of per-sample shape {reader.shape}", "(C, H, W) input")
        reader.shape = (reader.shape[0], 1, 1)
    reader.position += 1
    (_import_flatten if following.op_type == "Flatten" else _import_reshape)(reader, following)  # checks it
    reader.layers[-1] = GlobalAvgPool2D()  # the Flatten of (C, 1, 1) is the pool's (N, C) already


def _import_activation(cls: type) -> Callable:
    def import_activation(reader: _Reader, node: Any) -> None:
        reader.attributes(node, {})
        reader.add_layer(node, cls())

    return import_activation


def _import_softmax(reader: _Reader, node: Any) -> None:
    default = -1 if reader.opset >= 13 else 1
    axis = reader.attributes(node, {"axis": default})["axis"]
    rank = None if reader.shape is None else len(reader.shape) + 1
    if rank is not None and axis < 0:
        axis += rank
    # before opset 13, Softmax flattened every axis from `axis` on: the same as the engine's only in 2-D
    if axis == 1 and (reader.opset >= 13 or rank == 2):
        reader.add_layer(node, Softmax())
        return
    raise reader.fail(node, f"axis {axis} (input rank {rank or 'unknown'}, opset {reader.opset})",
                      "a softmax over axis 1, the classes")


def _import_flatten(reader: _Reader, node: Any, order: str = "C") -> None:
    axis = reader.attributes(node, {"axis": 1})["axis"]
    if axis < 0 and reader.shape is not None:
        axis += len(reader.shape) + 1
    if axis != 1:
        raise reader.fail(node, f"axis {axis}", "axis 1: (N, ...) -> (N, -1)")
    reader.add_layer(node, Flatten(order))


def _import_reshape(reader: _Reader, node: Any, order: str = "C") -> None:
    if reader.attributes(node, {"allowzero": 0})["allowzero"] != 0:
        raise reader.fail(node, "allowzero 1", "allowzero 0")
    target = [int(v) for v in np.asarray(reader.constant(node, 1, "shape")).reshape(-1)]
    features = None if reader.shape is None else int(np.prod(reader.shape))
    if len(target) == 2 and (target[1] == -1 and target[0] >= 0 or
                             target[0] in (-1, 0) and features is not None and target[1] == features):
        reader.add_layer(node, Flatten(order))
        return
    raise reader.fail(node, f"shape {target} (features per sample: {features or 'unknown'})",
                      "a reshape to (N, -1): shape [0, -1], [N, -1] or [-1, features]")


def _import_transpose(reader: _Reader, node: Any) -> None:
    perm = reader.attributes(node, {"perm": None})["perm"]
    following = reader.nodes[reader.position] if reader.position < len(reader.nodes) else None
    if list(perm or []) == [0, 1, 3, 2] and following is not None and following.op_type in ("Flatten", "Reshape"):
        reader.position += 1  # Transpose + Flatten: Flatten(order="F"), the column stacking of Eq. 8.26
        (_import_flatten if following.op_type == "Flatten" else _import_reshape)(reader, following, "F")
        return
    raise reader.fail(node, f"perm {perm}" + ("" if following is None else f" followed by {following.op_type}"),
                      "perm [0, 1, 3, 2] right before Flatten / Reshape to (N, -1) (Flatten order 'F')")


def _dense(reader: _Reader, node: Any, weight: np.ndarray, bias: np.ndarray | None) -> None:
    """A Dense layer from a weight (out, in) and an optional bias of out values."""
    dtype = _float_dtype(reader, node, weight, "weight")
    out_features, in_features = weight.shape
    if bias is not None and bias.size != out_features and bias.size != 1:
        raise reader.fail(node, f"bias of shape {bias.shape} for {out_features} outputs",
                          f"a bias of {out_features} values")
    layer = Dense(in_features, out_features, bias=bias is not None, dtype=dtype)
    arrays = {"weight": weight}
    if bias is not None:
        arrays["bias"] = np.broadcast_to(bias.reshape(-1), (out_features,))
    reader.add_layer(node, _load_into(layer, **arrays))


def _import_gemm(reader: _Reader, node: Any) -> None:
    attrs = reader.attributes(node, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
    if attrs["transA"] != 0:
        raise reader.fail(node, "transA 1", "transA 0 (the input as (N, features))")
    weight = reader.constant(node, 1, "weight")
    if weight.ndim != 2:
        raise reader.fail(node, f"its weight has shape {weight.shape}", "a 2-D weight")
    weight = (weight if attrs["transB"] else weight.T) * weight.dtype.type(attrs["alpha"])
    bias = reader.constant(node, 2, "bias", required=False)
    if bias is not None:
        bias = bias * bias.dtype.type(attrs["beta"])
    _dense(reader, node, weight, bias)


def _import_matmul(reader: _Reader, node: Any) -> None:
    reader.attributes(node, {})
    weight = reader.constant(node, 1, "weight")
    if weight.ndim != 2:
        raise reader.fail(node, f"its weight has shape {weight.shape}", "a 2-D weight (in, out)")
    fused = reader.fuse("Add")
    _dense(reader, node if fused is None else fused[0], weight.T, None if fused is None else fused[1])


def _import_dropout(reader: _Reader, node: Any) -> None:
    attrs = reader.attributes(node, {"seed": 0, "ratio": 0.5, "is_test": 0})
    ratio = reader.constant(node, 1, "ratio", required=False)
    training = reader.constant(node, 2, "training_mode", required=False)
    if training is not None and bool(np.asarray(training).reshape(-1)[0]):
        raise reader.fail(node, "training_mode true (dropout at inference)", "training_mode false or absent")
    p = float(np.asarray(ratio).reshape(-1)[0]) if ratio is not None else float(attrs["ratio"])
    try:
        layer = Dropout(p)
    except ValueError as exc:
        raise reader.fail(node, str(exc), "a ratio in [0, 1)") from None
    reader.add_layer(node, layer)


def _import_identity(reader: _Reader, node: Any) -> None:
    reader.attributes(node, {})  # nothing to compute: no layer


#: op type -> ``importer(reader, node)``, which appends layers (and may consume the next node)
_IMPORTERS: dict[str, Callable[[_Reader, Any], None]] = {
    "Conv": _import_conv,
    "Relu": _import_activation(ReLU),
    "Sigmoid": _import_activation(Sigmoid),
    "Tanh": _import_activation(Tanh),
    "MaxPool": _import_pool,
    "AveragePool": _import_pool,
    "Flatten": _import_flatten,
    "Reshape": _import_reshape,
    "Transpose": _import_transpose,
    "Gemm": _import_gemm,
    "MatMul": _import_matmul,
    "Softmax": _import_softmax,
    "Dropout": _import_dropout,
    "Identity": _import_identity,
    "BatchNormalization": _import_batch_norm,
    "GlobalAveragePool": _import_global_avg_pool,
}


def _constant_value(onnx: Any, node: Any, source: str) -> np.ndarray:
    """The value of a ``Constant`` node."""
    if len(node.attribute) == 1:
        attribute = node.attribute[0]
        if attribute.name == "value":
            return _tensor_array(onnx, attribute.t, f"{source}: node {node.name!r} (Constant)")
        if attribute.name in ("value_float", "value_floats", "value_int", "value_ints"):
            value = onnx.helper.get_attribute_value(attribute)
            return np.asarray(value, dtype=np.float32 if "float" in attribute.name else np.int64)
    names = [a.name for a in node.attribute]
    raise ValueError(f"{source}: node {node.name!r} (Constant): attributes {names} are not supported; supported: "
                     f"one of value, value_float(s), value_int(s)")


def _tensor_array(onnx: Any, tensor: Any, what: str) -> np.ndarray:
    try:
        return onnx.numpy_helper.to_array(tensor)
    except Exception as exc:  # noqa: BLE001 - unknown data type, data of the wrong size, ...
        raise ValueError(f"{what}: its data cannot be read ({type(exc).__name__}: {exc})") from None


def _per_sample_shape(value_info: Any) -> tuple[int, ...] | None:
    dims = value_info.type.tensor_type.shape.dim
    shape = tuple(d.dim_value for d in dims[1:])
    return shape if dims and all(s > 0 for s in shape) else None


def from_onnx(proto: Any, source: str = "ONNX model") -> Sequential:
    """A ``Sequential`` from an ``onnx.ModelProto`` of a chain-shaped graph (see the module docstring)."""
    onnx = _onnx()
    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ValueError(f"{source}: the model does not import the default ONNX operator set")
    constants = {}
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(f"{source}: initializer {tensor.name!r} is stored in an external file; supported: "
                             f"initializers inside the model file")
        constants[tensor.name] = _tensor_array(onnx, tensor, f"{source}: initializer {tensor.name!r}")
    inputs = [v for v in graph.input if v.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(f"{source}: the graph has inputs {[v.name for v in inputs]} and outputs "
                         f"{[v.name for v in graph.output]}; supported: one input and one output (a chain)")
    elem = inputs[0].type.tensor_type.elem_type
    if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        raise ValueError(f"{source}: the input {inputs[0].name!r} has element type "
                         f"{onnx.TensorProto.DataType.Name(elem)}; supported: FLOAT, DOUBLE")
    nodes = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(f"{source}: node {node.name!r} ({node.op_type}) is in the operator domain "
                             f"{node.domain!r}; supported: the default ONNX domain")
        if node.op_type == "Constant":
            constants[node.output[0]] = _constant_value(onnx, node, source)
        elif node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in constants:
            # a constant renamed (torch.onnx's TrainingMode.PRESERVE writes BatchNorm's scale this way)
            constants[node.output[0]] = constants[node.input[0]]
        else:
            nodes.append(node)
    chain = _chain(nodes, constants, inputs[0].name, graph.output[0].name, source)
    reader = _Reader(onnx, source, chain, constants, opset, _per_sample_shape(inputs[0]))
    while reader.position < len(chain):
        node = chain[reader.position]
        reader.position += 1
        importer = _IMPORTERS.get(node.op_type)
        if importer is None:
            raise reader.fail(node, "this operator cannot be imported", ", ".join(_IMPORTERS))
        try:
            importer(reader, node)
        except ValueError as exc:
            if str(exc).startswith(source):
                raise
            raise ValueError(f"{reader.label(node)}: {exc}") from None
        except (TypeError, KeyError, IndexError) as exc:  # a malformed node the checker let through
            raise ValueError(f"{reader.label(node)}: cannot be read ({type(exc).__name__}: {exc})") from None
    if not reader.layers:
        raise ValueError(f"{source}: the graph computes nothing (only Identity nodes): no layer to import")
    return Sequential(reader.layers)


def _chain(nodes: list, constants: dict, first: str, last: str, source: str) -> list:
    """The nodes in order from the input ``first`` to the output ``last``, each consuming the one
    before (plus constants); anything else (a branch, a node off the chain) is a ValueError."""
    consumers: dict[str, list] = {}
    produced = {first, *(name for node in nodes for name in node.output)}
    for node in nodes:
        for name in node.input:
            if name and name not in constants:
                consumers.setdefault(name, []).append(node)

    def label(node: Any) -> str:
        return f"node {node.name!r} ({node.op_type})" if node.name else f"a {node.op_type} node"

    chain, tensor = [], first
    while tensor != last:
        users = consumers.get(tensor, [])
        if len(users) != 1:
            what = ("no node reads it" if not users else
                    f"{len(users)} nodes read it ({', '.join(label(n) for n in users)}): a branch")
            raise ValueError(f"{source}: tensor {tensor!r}: {what}; supported: a chain, each node's output "
                             f"read by the next node only")
        node = users[0]
        computed = [name for name in node.input if name and name not in constants]
        unknown = [name for name in computed if name not in produced]
        if unknown:
            raise ValueError(f"{source}: {label(node)} reads {unknown}, which no node computes and no "
                             f"initializer or Constant holds")
        if computed != [tensor]:
            raise ValueError(f"{source}: {label(node)} reads the tensors {computed}: the graph branches and "
                             f"joins; supported: a chain, each node reading one computed tensor")
        for extra in node.output[1:]:  # e.g. Dropout's mask, MaxPool's indices
            if extra and (extra in consumers or extra == last):
                raise ValueError(f"{source}: {label(node)}: its second output {extra!r} is used; supported: "
                                 f"only the first output of each node")
        if node in chain:
            raise ValueError(f"{source}: {label(node)} is reached twice: the graph has a cycle")
        chain.append(node)
        tensor = node.output[0]
    if len(chain) != len(nodes):
        off = [label(n) for n in nodes if n not in chain]
        raise ValueError(f"{source}: {', '.join(off)} are not on the path from the input to the output; "
                         f"supported: a chain")
    return chain


def load(path: str | os.PathLike) -> Sequential:
    """Read an ONNX file as a ``Sequential`` (see :func:`from_onnx`); a file that is not a valid ONNX
    model (corrupt, truncated, not ONNX) is a ``ValueError`` naming it."""
    onnx = _onnx()
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"cnn_im2col.onnx.load: path must be a str or os.PathLike, got {path!r}")
    path_text = os.fspath(path)
    if not os.path.isfile(path_text):
        raise FileNotFoundError(f"{path_text}: no such ONNX file")
    with open(path_text, "rb") as handle:
        data = handle.read()
    try:
        proto = onnx.load_model_from_string(data)  # protobuf: data only, nothing executed
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, the checker's ValidationError, ...
        text = " ".join(str(exc).split())[:300]
        raise ValueError(f"{path_text}: not a valid ONNX model file ({type(exc).__name__}: {text})") from None
    if not proto.graph.node:
        raise ValueError(f"{path_text}: not a valid ONNX model file (its graph has no nodes)")
    return from_onnx(proto, path_text)
