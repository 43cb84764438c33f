"""ONNX export: a :class:`~cnn_im2col.model.Sequential` as an ONNX model (opset 17, IR version 8)
that any ONNX runtime runs.

:func:`to_onnx` builds the ``onnx.ModelProto``: graph input ``"input"`` (N, *input_shape), output
``"output"``, the batch axis N dynamic; each layer is written by its row of the operator table
(:mod:`.operators`), and the model is checked with ``onnx.checker.check_model`` before it is
returned. :func:`export` writes it to a file, atomically.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .._files import atomic_write
from .._version import __version__
from ..model import Sequential
from ..shapes import float_dtype
from .graph import CLASS_NAMES_KEY, Graph, onnx_package
from .operators import write_chain

OPSET = 17
IR_VERSION = (
    8  # the IR version of opset 17 (onnx 1.12): readable by every runtime that runs opset 17
)
INPUT, OUTPUT = "input", "output"


def _first_dtype(model: Sequential) -> np.dtype:
    """The dtype the model's first parameterised layer casts its input to (float32 if none)."""
    for value in model.params.values():
        return value.dtype
    return np.dtype(np.float32)


def to_onnx(model: Sequential, input_shape: Any = None, dtype: Any = None) -> Any:
    """``model`` as a checked ``onnx.ModelProto``; ``input_shape`` per sample, e.g. (1, 28, 28)
    (None: the model's own ``input_shape``). The model's class names, if it has them, go into
    the metadata (``"class_names"``, a JSON list).

    Graph input ``"input"`` (N, *input_shape), output ``"output"`` (N, *output shape), N dynamic.
    ``dtype=None``: every layer computes in its own dtype, as in the engine (the input has the
    first parameterised layer's); ``dtype="float32"`` (or float64): everything in that one dtype.
    Note that onnxruntime's CPU provider has no float64 ``Conv``: export a float64 model with
    ``dtype="float32"`` to run it there.
    """
    onnx = onnx_package()
    owner = "cnn_im2col.onnx.export"
    if not isinstance(model, Sequential):
        raise TypeError(f"{owner}: model must be a Sequential, got {type(model).__name__}")
    input_shape = model.input_shape_or(input_shape, owner)
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise TypeError(
            f"{owner}: input_shape must be the per-sample shape, e.g. (C, H, W), "
            f"got {input_shape!r}"
        )
    input_shape = tuple(input_shape)
    output_shape = model.output_shape(input_shape)  # checks input_shape and every layer's fit
    input_shape = tuple(int(s) for s in input_shape)
    force = None if dtype is None else float_dtype(dtype, "dtype", owner)
    input_dtype = force if force is not None else _first_dtype(model)
    g = Graph(onnx, INPUT, input_dtype, force)
    write_chain(g, model, "", input_shape)
    g.add("Identity", name="output")  # a fixed output name, whatever the last layer was
    g.nodes[-1].output[0] = OUTPUT
    h = onnx.helper
    graph = h.make_graph(
        g.nodes,
        "cnn_im2col.Sequential",
        [
            h.make_tensor_value_info(
                INPUT, h.np_dtype_to_tensor_dtype(input_dtype), ["N", *input_shape]
            )
        ],
        [
            h.make_tensor_value_info(
                OUTPUT, h.np_dtype_to_tensor_dtype(g.dtype), ["N", *output_shape]
            )
        ],
        initializer=g.initializers,
    )
    proto = h.make_model(
        graph,
        opset_imports=[h.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="cnn-im2col",
        producer_version=__version__,
        doc_string=repr(model),
    )
    if model.class_names is not None:  # what the predict command names the classes by
        h.set_model_props(proto, {CLASS_NAMES_KEY: json.dumps(list(model.class_names))})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model: Sequential, path: str | os.PathLike, input_shape: Any = None,
           dtype: Any = None) -> None:
    """Write ``model`` to ``path`` as ONNX (see :func:`to_onnx`), atomically."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"cnn_im2col.onnx.export: path must be a str or os.PathLike, got {path!r}")
    data = to_onnx(model, input_shape, dtype).SerializeToString()
    with atomic_write(path, "wb") as handle:
        handle.write(data)
