"""The commands on a saved model: ``evaluate`` (test accuracy, loss and confusion matrix),
``predict`` (the most probable classes of image files), ``bench`` (the time of every layer) and
``export`` (an ONNX file, checked against onnxruntime when it is installed). :func:`load_model`
reads a ``.onnx`` file through ``cnn_im2col.onnx.load``, anything else through
``Sequential.load``."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from .. import onnx
from ..architectures import default_model
from ..image_predictions import predict_images
from ..model import Sequential
from ..reports import confusion_matrix, format_confusion, format_profile, profile_layers
from .data import load_data
from .errors import PROG, CLIError
from .settings import DEFAULTS

# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


def _onnx_module() -> Any:
    """:mod:`cnn_im2col.onnx`, once the onnx package it needs is found; a CLIError if it is not."""
    try:
        onnx.onnx_package()
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    return onnx


def load_model(path: str) -> Sequential:
    """A ``.onnx`` file through ``cnn_im2col.onnx.load``, anything else through
    ``Sequential.load``."""
    if path.lower().endswith(".onnx"):
        return _onnx_module().load(path)
    return Sequential.load(path)


def cmd_evaluate(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    dataset = load_data(args.data_dir, True, {**DEFAULTS, "image_size": args.image_size})
    x_test, y_test = dataset.x_test, dataset.y_test
    metrics = model.evaluate(x_test, y_test, batch_size=args.batch_size)
    outputs = model.predict(x_test, batch_size=args.batch_size)  # class scores (N, K)
    pred = outputs.argmax(axis=1)
    m = confusion_matrix(y_test, pred, outputs.shape[1])
    correct = int(np.trace(m))
    print(f"{args.model}: {x_test.shape[0]} test images")
    print(
        f"test loss {metrics['loss']:.4f}, accuracy {100 * metrics['accuracy']:.2f}% "
        f"({correct}/{x_test.shape[0]})"
    )
    print(format_confusion(m))
    return 0


# --------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    results = predict_images(model, args.images, top=args.top, resize=args.resize)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    for result in results:
        ranked = ", ".join(f"{name} {p:.4f}" for name, p in result.top)
        print(f"{result.path}: {ranked}")
    return 0


# --------------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    model = Sequential.load(args.model) if args.model else default_model(0)
    rng = np.random.default_rng(0)
    shape = (1, 28, 28)
    x = rng.random((args.batch_size, *shape), dtype=np.float32)
    out = model.check_shapes(shape)[-1]
    y = rng.integers(0, out[0], args.batch_size)
    t = time.perf_counter()
    result = profile_layers(model, x, y, args.batches)
    print(
        f"batch of {args.batch_size} images {shape}, mean of {args.batches} batches after a "
        f"warm-up ({time.perf_counter() - t:.1f} s in all)"
    )
    print(format_profile(model, result, args.batch_size))
    return 0


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def onnxruntime_difference(
    path: str, model: Sequential, input_shape: tuple[int, ...], n: int = 8
) -> float | None:
    """Largest |onnxruntime - engine| over ``n`` random inputs in [0, 1), or None without
    onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return None
    dtype = next(iter(model.params.values()), np.zeros(0, np.float32)).dtype
    x = np.random.default_rng(0).random((n, *input_shape)).astype(dtype)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, {session.get_inputs()[0].name: x})
    return float(np.max(np.abs(theirs.astype(np.float64) - model.forward(x).astype(np.float64))))


def cmd_export(args: argparse.Namespace) -> int:
    onnx = _onnx_module()
    model = Sequential.load(args.model)
    shape = tuple(args.input_shape) if args.input_shape else model.input_shape
    if shape is None:
        raise CLIError(
            f"{args.model}: the model does not say the shape of its input; give it with "
            f"--input-shape (e.g. --input-shape 1 28 28 for a model of '{PROG} train')"
        )
    onnx.export(model, args.out, shape)
    out_shape = model.output_shape(shape)
    print(
        f"wrote {args.out}: ONNX opset {onnx.OPSET}, input (N, {', '.join(map(str, shape))}), "
        f"output (N, {', '.join(map(str, out_shape))})"
    )
    try:
        difference = onnxruntime_difference(args.out, model, shape)
    except Exception as exc:  # noqa: BLE001 - the file is written; a runtime that cannot run it is news, not a crash
        print(f"onnxruntime could not run it: {' '.join(str(exc).split())}")
        return 1
    if difference is None:
        print("onnxruntime is not installed: not checked")
    else:
        print(f"onnxruntime vs the engine on 8 random inputs: largest difference {difference:.3g}")
    return 0
