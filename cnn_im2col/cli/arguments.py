"""The command line of ``cnn-im2col``: :func:`build_parser`, the five subcommands and their flags
(whose help states the defaults of :mod:`.settings`), and ``_number``, the argparse ``type`` of a
bounded number. Errors from bad flags are argparse's (exit 2)."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from .._version import __version__
from ..architectures import ARCHITECTURES
from .errors import PROG
from .settings import CHECKPOINT, DEFAULTS, LEARNING_RATES


def _number(convert: Any, low: float, strict: bool, allowed: str) -> Any:
    """An argparse ``type``: ``convert(text)``, finite and above ``low`` (or equal, unless
    ``strict``)."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if not (np.isfinite(value) and (value > low if strict else value >= low)):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    return parse


_positive_int = _number(int, 0, True, "an integer >= 1")
_non_negative_int = _number(int, 0, False, "an integer >= 0")
_positive_float = _number(float, 0, True, "a finite number > 0")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="A CNN engine in NumPy: im2col + GEMM convolutions."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{train,evaluate,predict,bench,export}")
    sub.required = True

    d = DEFAULTS
    train = sub.add_parser(
        "train",
        help="train a network on MNIST or on the data set of --data-dir",
        description="Train on MNIST (downloaded and cached on first use), or on the data set in "
        "--data-dir (MNIST-format IDX files, CIFAR-10/100 binary files, or an image folder), and "
        "report the accuracy on its test images.",
    )
    train.add_argument(
        "--model",
        metavar="NAME|FILE.json",
        help=f"the network: {', '.join(ARCHITECTURES)}, or a .json file holding "
        f"Sequential.config() (default {d['model']})",
    )
    train.add_argument(
        "--epochs",
        type=_positive_int,
        help=f"passes over the training images (default {d['epochs']})",
    )
    train.add_argument(
        "--batch-size", type=_positive_int, help=f"images per step (default {d['batch_size']})"
    )
    train.add_argument(
        "--lr",
        type=_positive_float,
        help="peak learning rate of the cosine schedule (default "
        + ", ".join(f"{k} {v:g}" for k, v in LEARNING_RATES.items())
        + ")",
    )
    train.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        help=f"adam, or sgd (momentum 0.9, Nesterov) (default {d['optimizer']})",
    )
    train.add_argument(
        "--seed",
        type=_non_negative_int,
        help=f"seed of weights, order, augmentation, dropout (default {d['seed']})",
    )
    train.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the data set: a folder of the four MNIST-format IDX files, CIFAR-10's or "
        "CIFAR-100's binary files, or images in DIR/train/<class>/ and DIR/test/<class>/ (or "
        "DIR/<class>/, a test split held out); nothing is ever written there (default: MNIST "
        "from $CNN_IM2COL_DATA or the per-user cache, fetched on first use)",
    )
    train.add_argument(
        "--image-size",
        type=_positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="resize image-folder images to H x W (default: no resizing; images of different "
        "sizes are an error)",
    )
    train.add_argument(
        "--test-fraction",
        type=_number(float, 0, True, "a number in (0, 1)"),
        metavar="F",
        help=f"for a single DIR/<class>/ image tree: the fraction of each class held out as the "
        f"test set, chosen by --seed (default {d['test_fraction']})",
    )
    train.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        help="augmentation: mirror each image left-right with probability 0.5 (default: on "
        "for colour images and for --model resnet20, off for other models on grayscale data "
        "such as digits)",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="train into an --out folder that holds a finished run, replacing its files",
    )
    train.add_argument(
        "--limit", type=_positive_int, metavar="N", help="use only the first N training images"
    )
    train.add_argument(
        "--val-split",
        type=_non_negative_int,
        metavar="N",
        help="hold out the last N training images for validation; 0 for none "
        "(default min(5000, N/10))",
    )
    train.add_argument(
        "--shift",
        type=_non_negative_int,
        metavar="PX",
        help=f"augmentation: move each image by up to PX pixels each way; 0 for none "
        f"(default {d['shift']})",
    )
    train.add_argument("--out", metavar="DIR", help=f"output directory (default {d['out']})")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress bars (there are none where stderr is not a terminal)")
    train.add_argument(
        "--resume",
        metavar="DIR",
        help=f"continue the run whose {CHECKPOINT} is in DIR, with its settings; with --epochs N, "
        f"extend a finished run to N epochs (a new cosine cycle over the added ones)",
    )
    train.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="threads of the engine's pool (default: every core; under MPI, the cores of "
        "the node / the ranks on it)",
    )

    evaluate = sub.add_parser(
        "evaluate",
        help="test accuracy, loss and confusion matrix of a saved model",
        description="Evaluate a saved model on the test images of MNIST or of --data-dir.",
    )
    evaluate.add_argument(
        "model",
        metavar="MODEL",
        help="a model written by train (model.npz or checkpoint.npz), or an ONNX file (.onnx)",
    )
    evaluate.add_argument("--data-dir", metavar="DIR", help="as for train")
    evaluate.add_argument(
        "--image-size", type=_positive_int, nargs=2, metavar=("H", "W"), help="as for train"
    )
    evaluate.add_argument(
        "--batch-size",
        type=_positive_int,
        default=256,
        help="images per forward pass (default 256)",
    )

    predict = sub.add_parser(
        "predict",
        help="classify image files with a trained model",
        description="Print the most probable class of each image file (PNG, JPEG, BMP, WebP), "
        "one line per image: its path, the class name and its probability.",
    )
    predict.add_argument(
        "model", metavar="MODEL", help="a model written by train (model.npz) or an ONNX file"
    )
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    predict.add_argument(
        "--top", type=_positive_int, default=1, metavar="K", help="the K most probable classes"
    )
    predict.add_argument(
        "--resize",
        action="store_true",
        help="resize images to the model's input size (default: a different size is an error)",
    )
    predict.add_argument("--json", action="store_true", help="print one JSON document instead")

    bench = sub.add_parser(
        "bench",
        help="time the forward and backward pass of every layer",
        description="Time each layer of the default network (or MODEL.npz) on random "
        "(N, 1, 28, 28) batches.",
    )
    bench.add_argument(
        "model", metavar="MODEL.npz", nargs="?", help="a saved model (default: the default network)"
    )
    bench.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULTS["batch_size"],
        help=f"images per batch (default {DEFAULTS['batch_size']})",
    )
    bench.add_argument(
        "--batches", type=_positive_int, default=20, help="timed batches (default 20)"
    )

    export = sub.add_parser(
        "export",
        help="write a saved model as an ONNX file",
        description="Write MODEL.npz as ONNX (opset 17, dynamic batch axis) and, if "
        "onnxruntime is installed, check it against the engine on random inputs.",
    )
    export.add_argument(
        "model", metavar="MODEL.npz", help="a model written by train (model.npz or checkpoint.npz)"
    )
    export.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    export.add_argument(
        "--input-shape",
        type=_positive_int,
        nargs="+",
        metavar="D",
        help="the shape of one input sample, e.g. 1 28 28 (default: the model's own: the "
        "shape it was trained on, recorded by train, or stated by a first Conv2D's input_size or "
        "a first Dense's in_features)",
    )
    return parser
