"""ONNX import: a chain-shaped ONNX graph (such as ``torch.onnx.export`` of an ``nn.Sequential``)
as a :class:`~cnn_im2col.model.Sequential`.

What is read: a chain: one graph input, one output, and every node taking the previous node's
output (plus initializers, ``Constant`` nodes or ``Identity`` nodes of those), in the default ONNX
domain, FLOAT or DOUBLE input. Each node is read by the importer its operator has in the operator
table (:mod:`.operators`, which lists what each one accepts). Anything else is a ``ValueError``
naming the node, its operator and what is supported; an unreadable file is a ``ValueError`` naming
the file. Files are parsed by the ``onnx`` package (protobuf), never unpickled.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import numpy as np

from ..model import Sequential
from .operators import CLASS_NAMES_KEY, IMPORTERS, Reader, onnx_package


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
    raise ValueError(
        f"{source}: node {node.name!r} (Constant): attributes {names} are not supported; "
        f"supported: one of value, value_float(s), value_int(s)"
    )


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
    """A ``Sequential`` from an ``onnx.ModelProto`` of a chain-shaped graph (see the module
    docstring)."""
    onnx = onnx_package()
    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ValueError(f"{source}: the model does not import the default ONNX operator set")
    constants = {}
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(
                f"{source}: initializer {tensor.name!r} is stored in an external file; supported: "
                f"initializers inside the model file"
            )
        constants[tensor.name] = _tensor_array(
            onnx, tensor, f"{source}: initializer {tensor.name!r}"
        )
    inputs = [v for v in graph.input if v.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(
            f"{source}: the graph has inputs {[v.name for v in inputs]} and outputs "
            f"{[v.name for v in graph.output]}; supported: one input and one output (a chain)"
        )
    elem = inputs[0].type.tensor_type.elem_type
    if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        raise ValueError(
            f"{source}: the input {inputs[0].name!r} has element type "
            f"{onnx.TensorProto.DataType.Name(elem)}; supported: FLOAT, DOUBLE"
        )
    nodes = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(
                f"{source}: node {node.name!r} ({node.op_type}) is in the operator domain "
                f"{node.domain!r}; supported: the default ONNX domain"
            )
        if node.op_type == "Constant":
            constants[node.output[0]] = _constant_value(onnx, node, source)
        elif node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in constants:
            # a constant renamed (torch.onnx's TrainingMode.PRESERVE writes BatchNorm's scale
            # this way)
            constants[node.output[0]] = constants[node.input[0]]
        else:
            nodes.append(node)
    chain = _chain(nodes, constants, inputs[0].name, graph.output[0].name, source)
    reader = Reader(onnx, source, chain, constants, opset, _per_sample_shape(inputs[0]))
    while reader.position < len(chain):
        node = chain[reader.position]
        reader.position += 1
        importer = IMPORTERS.get(node.op_type)
        if importer is None:
            raise reader.fail(node, "this operator cannot be imported", ", ".join(IMPORTERS))
        try:
            importer(reader, node)
        except ValueError as exc:
            if str(exc).startswith(source):
                raise
            raise ValueError(f"{reader.label(node)}: {exc}") from None
        except (TypeError, KeyError, IndexError) as exc:  # a malformed node the checker let through
            raise ValueError(
                f"{reader.label(node)}: cannot be read ({type(exc).__name__}: {exc})"
            ) from None
    if not reader.layers:
        raise ValueError(
            f"{source}: the graph computes nothing (only Identity nodes): no layer to import"
        )
    model = Sequential(reader.layers)
    shape = _per_sample_shape(inputs[0])
    if shape is not None:
        with contextlib.suppress(ValueError):  # a shape the layers cannot take: leave it unknown
            model.check_shapes(shape)
            model._learn_input_shape(shape)
    names = {p.key: p.value for p in proto.metadata_props}.get(CLASS_NAMES_KEY)
    if names is not None:
        try:
            model.set_class_names(json.loads(names))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: metadata {CLASS_NAMES_KEY!r} is not a list of class "
                             f"names ({exc})") from None
    return model


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
            what = (
                "no node reads it"
                if not users
                else f"{len(users)} nodes read it ({', '.join(label(n) for n in users)}): a branch"
            )
            raise ValueError(
                f"{source}: tensor {tensor!r}: {what}; supported: a chain, each node's output "
                f"read by the next node only"
            )
        node = users[0]
        computed = [name for name in node.input if name and name not in constants]
        unknown = [name for name in computed if name not in produced]
        if unknown:
            raise ValueError(
                f"{source}: {label(node)} reads {unknown}, which no node computes and no "
                f"initializer or Constant holds"
            )
        if computed != [tensor]:
            raise ValueError(
                f"{source}: {label(node)} reads the tensors {computed}: the graph branches and "
                f"joins; supported: a chain, each node reading one computed tensor"
            )
        for extra in node.output[1:]:  # e.g. Dropout's mask, MaxPool's indices
            if extra and (extra in consumers or extra == last):
                raise ValueError(
                    f"{source}: {label(node)}: its second output {extra!r} is used; supported: "
                    f"only the first output of each node"
                )
        if node in chain:
            raise ValueError(f"{source}: {label(node)} is reached twice: the graph has a cycle")
        chain.append(node)
        tensor = node.output[0]
    if len(chain) != len(nodes):
        off = [label(n) for n in nodes if n not in chain]
        raise ValueError(
            f"{source}: {', '.join(off)} are not on the path from the input to the output; "
            f"supported: a chain"
        )
    return chain


def load(path: str | os.PathLike) -> Sequential:
    """Read an ONNX file as a ``Sequential`` (see :func:`from_onnx`); a file that is not a valid
    ONNX model (corrupt, truncated, not ONNX) is a ``ValueError`` naming it."""
    onnx = onnx_package()
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
        raise ValueError(
            f"{path_text}: not a valid ONNX model file ({type(exc).__name__}: {text})"
        ) from None
    if not proto.graph.node:
        raise ValueError(f"{path_text}: not a valid ONNX model file (its graph has no nodes)")
    return from_onnx(proto, path_text)
