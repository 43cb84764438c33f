"""ONNX export and import: a :class:`~cnn_im2col.model.Sequential` out to any ONNX runtime, and a
chain-shaped ONNX graph (such as ``torch.onnx.export`` of an ``nn.Sequential``) in as a
``Sequential``.

Public API
----------
- :func:`export` ``(model, path, input_shape)`` — write ``model`` as an ONNX file (opset 17,
  IR version 8), atomically. ``input_shape`` is per sample, e.g. (C, H, W); the batch axis is
  dynamic (``"N"``). The model is checked with ``onnx.checker.check_model`` before it is written.
- :func:`to_onnx` ``(model, input_shape)`` — the same, as an ``onnx.ModelProto`` in memory.
- :func:`load` ``(path) -> Sequential`` and :func:`from_onnx` ``(proto) -> Sequential`` — import.

Modules: :mod:`.operators` (the one table: each layer class, its ONNX operators, the function
writing it and the functions reading it), :mod:`.exporters` (those writing functions: layer ->
nodes), :mod:`.node_importers` (those reading functions: nodes -> layer), :mod:`.graph` (the graph
being written and the chain being read, which those functions work in), :mod:`.export` (a model
out), :mod:`.importer` (a model in). The ``onnx`` package is an optional dependency
(``pip install "cnn-im2col[onnx]"``); it is imported on first use (:func:`onnx_package`), with an
ImportError that says so if it is missing, so ``import cnn_im2col.onnx`` works without it.
"""

from .export import IR_VERSION, OPSET, export, to_onnx
from .graph import onnx_package
from .importer import from_onnx, load

__all__ = ["IR_VERSION", "OPSET", "export", "from_onnx", "load", "onnx_package", "to_onnx"]
