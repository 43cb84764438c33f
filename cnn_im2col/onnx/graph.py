"""The two contexts of the operator table's functions: the exporters write into a :class:`Graph`
(the nodes and initializers of the graph being written, and the tensor flowing down the chain),
the importers read from a :class:`Reader` (the chain of nodes being read, and the layers made of
it); the drivers (:func:`.export.to_onnx`, :func:`.importer.from_onnx`) build them. With them,
what writing and reading share: the metadata key of the class names, a dilated kernel's span,
loading arrays into a layer's parameters, and the folding of a zero ``Pad`` into the ``Conv`` or
``AveragePool`` after it (:func:`fold_zero_pad`), which the Reader does as it appends a layer.

The third-party ``onnx`` package is imported on first use (:func:`onnx_package`), so ``import
cnn_im2col`` works without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..layers import AvgPool2D, ConstantPad2D, Conv2D, ZeroPad2D
from ..shapes import resolve_padding

#: The metadata key under which an exported model carries its class names (a JSON list).
CLASS_NAMES_KEY = "class_names"


def onnx_package() -> Any:
    """The third-party ``onnx`` package, imported on first use; an ImportError saying how to
    install it if it is missing (it is an optional dependency)."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - the test environment has it
        raise ImportError(
            'cnn_im2col.onnx needs the onnx package: pip install "cnn-im2col[onnx]" '
            "(or pip install onnx)"
        ) from None
    return onnx


# ============================================================================================
# the contexts: what an exporter writes into, what an importer reads from
# ============================================================================================


class Graph:
    """The nodes and initializers of the graph being written, and the tensor flowing down the chain.

    ``force``: the one float dtype of every tensor and parameter (``export(dtype=...)``), or None
    to keep each layer's own.
    """

    def __init__(self, onnx: Any, tensor: str, dtype: np.dtype, force: np.dtype | None) -> None:
        self.onnx, self.nodes, self.initializers = onnx, [], []
        self.tensor, self.dtype = tensor, dtype  # the chain's current tensor and its element type
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
        self.nodes.append(
            self.onnx.helper.make_node(
                op, [self.tensor, *extra_inputs], [output], name=f"{name}:{op}", **attributes
            )
        )
        self.tensor = output
        return output

    def join(self, op: str, tensors: list[tuple[str, np.dtype]], name: str, **attributes: Any
             ) -> None:
        """Append ``op`` of several computed tensors (each (name, dtype)), cast first to their
        common dtype as NumPy would promote them; its output becomes the current tensor."""
        dtype = np.dtype(self.force) if self.force is not None else np.result_type(
            *(d for _, d in tensors))
        inputs = []
        for i, (tensor, tensor_dtype) in enumerate(tensors):
            if tensor_dtype != dtype:
                self.tensor, self.dtype = tensor, tensor_dtype
                self.cast_to(dtype, f"{name}.{i}")
                tensor = self.tensor
            inputs.append(tensor)
        output = f"{name}:{op.lower()}"
        self.nodes.append(
            self.onnx.helper.make_node(op, inputs, [output], name=f"{name}:{op}", **attributes)
        )
        self.tensor, self.dtype = output, dtype

    def cast_to(self, dtype: np.dtype, name: str) -> None:
        """A ``Cast`` if the current tensor is not ``dtype`` (a layer casts its input to its own
        dtype)."""
        dtype = np.dtype(self.force if self.force is not None else dtype)
        if dtype != self.dtype:
            self.add("Cast", name=name, to=self.onnx.helper.np_dtype_to_tensor_dtype(dtype))
            self.dtype = dtype


@dataclass
class Reader:
    """The chain being read: its nodes in order, a cursor, the constants and the tensor's known
    shape."""

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
                raise self.fail(
                    node,
                    f"attribute {attribute.name!r} is not supported",
                    f"{', '.join(allowed) or 'no attributes'}",
                )
            value = self.onnx.helper.get_attribute_value(attribute)
            values[attribute.name] = value.decode() if isinstance(value, bytes) else value
        return values

    def constant(
        self, node: Any, index: int, what: str, required: bool = True
    ) -> np.ndarray | None:
        """Input ``index`` of ``node`` as an array: it must be an initializer or a Constant."""
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            if required:
                raise self.fail(
                    node, f"its {what} (input {index}) is missing", f"a constant {what}"
                )
            return None
        if name not in self.constants:
            raise self.fail(
                node,
                f"its {what} {name!r} is computed in the graph, not a constant",
                f"a {what} given as an initializer or a Constant node",
            )
        return self.constants[name]

    def fuse(self, op: str) -> tuple[Any, np.ndarray] | None:
        """If the next node is ``op`` of the current tensor and one constant, consume it:
        (node, constant)."""
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
        if self.layers and type(self.layers[-1]) in (ConstantPad2D, ZeroPad2D):
            folded = fold_zero_pad(self.layers[-1], layer)
            if folded is not None:  # a Pad before a Conv or AveragePool: one layer, same numbers
                self.layers[-1] = folded
                return
        self.layers.append(layer)


# ============================================================================================
# shared by both directions
# ============================================================================================


def window_span(kernel: tuple, dilation: tuple) -> tuple[int, int]:
    """The extent of a dilated kernel, ``dil*(k - 1) + 1``: what ``"same"`` pads (as PyTorch)."""
    return (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)


def load_into(layer: Any, **arrays: np.ndarray) -> Any:
    for name, value in arrays.items():
        np.copyto(layer.params[name], value.reshape(layer.params[name].shape), casting="same_kind")
    return layer


def fold_zero_pad(pad: ConstantPad2D, layer: Any) -> Any:
    """``layer`` with the zeros of ``pad`` (just before it) as its own padding, where that
    computes the same numbers: a ``Conv2D`` whose padding then is symmetric or stride-1
    ``"same"``; an ``AvgPool2D`` without padding or ceil_mode, whose divisor then counts the pad
    (``count_include_pad``), if the padding is symmetric and at most half the window. Else None."""
    if pad.value != 0.0:
        return None
    if type(layer) is Conv2D and layer.bias_mode != "untied" and not (
            layer.padding == "same" and layer.stride != (1, 1)):
        span = window_span(layer.kernel_size, layer.dilation)
        own = resolve_padding(layer.padding, span, layer.stride)
        top, bottom, left, right = (a + b for a, b in zip(pad.pads, own))
        if (top, left) == (bottom, right):
            padding: Any = [top, left]
        elif layer.stride == (1, 1) and (top, bottom, left, right) == resolve_padding(
                "same", span, (1, 1)):
            padding = "same"
        else:
            return None
        folded = Conv2D.from_config({**layer.config(), "padding": padding})
    elif type(layer) is AvgPool2D and tuple(layer.padding) == (0, 0) and not layer.ceil_mode:
        top, bottom, left, right = pad.pads
        if (top, left) != (bottom, right):
            return None
        try:  # padding more than half the window is refused: keep the two layers then
            folded = AvgPool2D.from_config(
                {**layer.config(), "padding": [top, left], "count_include_pad": True})
        except ValueError:
            return None
    else:
        return None
    return load_into(folded, **layer.params)
