"""The one operator table: for each layer class, the ONNX operators it is written as, the function
that writes it and the functions that read it back. :mod:`.export` and :mod:`.importer` both read
:data:`OPERATORS` (through :data:`EXPORTERS` and :data:`IMPORTERS`); a new operator is one row here
and its two functions: the exporter in :mod:`.exporters` (which lists how each layer is written),
the importer in :mod:`.node_importers` (which lists what is read).

With the table, the writing that goes through it by layer class: :func:`write_chain` (a chain's
layers, each by its row's exporter) and the exporters of the layers that hold layers, which write
their children so:

==============================  ===============================================================
Sequential (nested)             its layers, in line; initializer names ``"{i}.{j}.weight"``
Residual                        the body and the shortcut from the same tensor (the identity: the
                                tensor itself), then ``Add``; names ``"{i}.body.{j}.weight"``
Concat                          each branch from the same tensor, then ``Concat(axis=1)``
Gate                            the gate from the tensor, then ``Mul(tensor, gate)``
==============================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..containers import Concat, Gate, Residual
from ..layers import (
    AdaptiveAvgPool2D,
    AdaptiveMaxPool2D,
    AvgPool2D,
    BatchNorm2D,
    ConstantPad2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    HardSigmoid,
    HardSwish,
    Identity,
    LeakyReLU,
    MaxPool2D,
    Normalization,
    ReLU,
    ReLU6,
    Sigmoid,
    Softmax,
    Tanh,
    ZeroPad2D,
)
from ..model import Sequential
from .exporters import (
    export_activation,
    export_adaptive,
    export_avg_pool,
    export_batch_norm,
    export_conv,
    export_dense,
    export_dropout,
    export_flatten,
    export_global_avg_pool,
    export_hard_sigmoid,
    export_leaky_relu,
    export_max_pool,
    export_normalization,
    export_pad,
    export_relu6,
)
from .graph import Graph, Reader
from .node_importers import (
    import_activation,
    import_batch_norm,
    import_clip,
    import_conv,
    import_dropout,
    import_flatten,
    import_gemm,
    import_global_avg_pool,
    import_global_max_pool,
    import_hard_sigmoid,
    import_identity,
    import_leaky_relu,
    import_matmul,
    import_pad,
    import_pool,
    import_reshape,
    import_softmax,
    import_transpose,
)

# ============================================================================================
# the exporters that write through the table: a nested Sequential, the containers
# ============================================================================================


def _write_child(g: Graph, child: Any, name: str, in_shape: tuple) -> tuple[str, np.dtype]:
    """Write one child of a container from the current tensor: (its output tensor, dtype)."""
    if isinstance(child, Sequential):
        write_chain(g, child, f"{name}.", in_shape)
    else:
        _exporter(child, name)(g, child, name, in_shape)
    return g.tensor, g.dtype


def _export_residual(g: Graph, layer: Residual, name: str, in_shape: tuple) -> None:
    """``Add(body(x), shortcut(x))``, the shortcut being ``x`` itself when it is the identity."""
    start = (g.tensor, g.dtype)
    body = _write_child(g, layer.body, f"{name}.body", in_shape)
    shortcut = start
    if layer.shortcut is not None:
        g.tensor, g.dtype = start
        shortcut = _write_child(g, layer.shortcut, f"{name}.shortcut", in_shape)
    g.join("Add", [body, shortcut], name)


def _export_concat(g: Graph, layer: Concat, name: str, in_shape: tuple) -> None:
    """``Concat(axis=1)`` of the branches, each written from the block's input."""
    start, outputs = (g.tensor, g.dtype), []
    for i, branch in enumerate(layer.branches):
        g.tensor, g.dtype = start
        outputs.append(_write_child(g, branch, f"{name}.branches.{i}", in_shape))
    g.join("Concat", outputs, name, axis=1)


def _export_gate(g: Graph, layer: Gate, name: str, in_shape: tuple) -> None:
    """``Mul(x, gate(x))``, the gate's output broadcast over ``x``."""
    start = (g.tensor, g.dtype)
    gate = _write_child(g, layer.gate, f"{name}.gate", in_shape)
    g.join("Mul", [start, gate], name)


def _export_sequential(g: Graph, layer: Sequential, name: str, in_shape: tuple) -> None:
    write_chain(g, layer, f"{name}.", in_shape)


# ============================================================================================
# the table
# ============================================================================================


@dataclass(frozen=True)
class Operator:
    """One row of the table.

    ``layer``: the layer class (exact: a subclass may compute something else), or None for an
    operator that computes nothing (``Identity``). ``written``: the ONNX operators its exporter
    writes, in order (some only for some settings: a ``Cast`` first, an ``Add`` for an untied
    bias, ...). ``exporter(graph, layer, name, per-sample input shape)`` appends its nodes.
    ``importers``: op type -> ``importer(reader, node)``, for each operator that starts the layer
    in a file; it appends the layer (and may consume the next node, e.g. a bias ``Add``).
    """

    layer: type | None
    written: tuple[str, ...]
    exporter: Callable[[Graph, Any, str, tuple], None] | None
    importers: dict[str, Callable[[Reader, Any], None]]


#: Every operator both directions know, in the order the import error lists them.
OPERATORS: tuple[Operator, ...] = (
    Operator(Conv2D, ("Conv", "Add"), export_conv, {"Conv": import_conv}),
    Operator(ReLU, ("Relu",), export_activation("Relu"), {"Relu": import_activation(ReLU)}),
    Operator(
        Sigmoid,
        ("Sigmoid",),
        export_activation("Sigmoid"),
        {"Sigmoid": import_activation(Sigmoid)},
    ),
    Operator(Tanh, ("Tanh",), export_activation("Tanh"), {"Tanh": import_activation(Tanh)}),
    Operator(MaxPool2D, ("MaxPool",), export_max_pool, {"MaxPool": import_pool}),
    Operator(AvgPool2D, ("AveragePool", "Mul"), export_avg_pool, {"AveragePool": import_pool}),
    Operator(
        Flatten,
        ("Transpose", "Flatten"),
        export_flatten,
        {"Flatten": import_flatten, "Reshape": import_reshape, "Transpose": import_transpose},
    ),
    Operator(Dense, ("Gemm",), export_dense, {"Gemm": import_gemm, "MatMul": import_matmul}),
    Operator(Softmax, ("Softmax",), export_activation("Softmax"), {"Softmax": import_softmax}),
    Operator(Dropout, ("Dropout",), export_dropout, {"Dropout": import_dropout}),
    Operator(ReLU6, ("Clip",), export_relu6, {"Clip": import_clip}),
    Operator(
        HardSigmoid, ("HardSigmoid",), export_hard_sigmoid, {"HardSigmoid": import_hard_sigmoid}
    ),
    Operator(
        HardSwish,
        ("HardSwish",),
        export_activation("HardSwish"),
        {"HardSwish": import_activation(HardSwish)},
    ),
    Operator(LeakyReLU, ("LeakyRelu",), export_leaky_relu, {"LeakyRelu": import_leaky_relu}),
    Operator(Identity, ("Identity",), export_activation("Identity"), {}),
    Operator(Normalization, ("BatchNormalization",), export_normalization, {}),
    Operator(None, (), None, {"Identity": import_identity}),
    Operator(
        BatchNorm2D,
        ("BatchNormalization",),
        export_batch_norm,
        {"BatchNormalization": import_batch_norm},
    ),
    Operator(
        GlobalAvgPool2D,
        ("GlobalAveragePool", "Flatten"),
        export_global_avg_pool,
        {"GlobalAveragePool": import_global_avg_pool},
    ),
    Operator(
        AdaptiveAvgPool2D,
        ("GlobalAveragePool", "AveragePool"),
        export_adaptive("GlobalAveragePool", "AveragePool"),
        {},
    ),
    Operator(
        AdaptiveMaxPool2D,
        ("GlobalMaxPool", "MaxPool"),
        export_adaptive("GlobalMaxPool", "MaxPool"),
        {"GlobalMaxPool": import_global_max_pool},
    ),
    Operator(ConstantPad2D, ("Pad",), export_pad, {"Pad": import_pad}),
    Operator(ZeroPad2D, ("Pad",), export_pad, {}),
    Operator(Sequential, (), _export_sequential, {}),  # nested: its layers, in line
    # containers: their children from the same tensor, then the join; read back by the importer's
    # walk of the graph (forks and joins), not by a row
    Operator(Residual, ("Add",), _export_residual, {}),
    Operator(Concat, ("Concat",), _export_concat, {}),
    Operator(Gate, ("Mul",), _export_gate, {}),
)

#: layer class -> exporter, read by :func:`write_chain`
EXPORTERS: dict[type, Callable[[Graph, Any, str, tuple], None]] = {
    op.layer: op.exporter for op in OPERATORS if op.layer is not None and op.exporter is not None
}
#: op type -> importer, read by :func:`.importer.from_onnx`
IMPORTERS: dict[str, Callable[[Reader, Any], None]] = {
    op_type: importer for op in OPERATORS for op_type, importer in op.importers.items()
}


def write_chain(g: Graph, model: Sequential, prefix: str, input_shape: tuple) -> None:
    """Append the nodes of every layer of ``model`` (names ``prefix + index``), each through its
    row's exporter; a layer without one is a ValueError naming it and the exportable layers."""
    shapes = [input_shape, *model.check_shapes(input_shape)]
    for i, layer in enumerate(model.layers):
        _exporter(layer, f"{prefix}{i}")(g, layer, f"{prefix}{i}", shapes[i])


def _exporter(layer: Any, name: str) -> Callable[[Graph, Any, str, tuple], None]:
    """The exporter of ``layer``'s row; a layer without one is a ValueError naming it and the
    exportable layers."""
    exporter = EXPORTERS.get(type(layer))
    if exporter is None:
        known = ", ".join(cls.__name__ for cls in EXPORTERS)
        raise ValueError(
            f"cnn_im2col.onnx.export: layer {name} {layer!r} ({type(layer).__name__}) "
            f"cannot be exported to ONNX; exportable layers: {known}"
        )
    return exporter
