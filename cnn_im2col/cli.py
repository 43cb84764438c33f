"""The ``cnn-im2col`` command: ``train`` a LeNet-style network on MNIST, ``evaluate`` a saved model
(``.npz`` or ``.onnx``), ``bench`` the time of every layer, ``export`` a model to ONNX.

``cnn-im2col train`` with no flags trains :func:`default_model` (two conv-pool groups and two dense
layers, Fig. 8.11 style; ``--model`` picks another of ``architectures.ARCHITECTURES`` or a JSON file
holding ``Sequential.config()``, and an architecture may bring its own defaults, ``TRAIN_DEFAULTS``)
with Adam, a per-batch cosine learning-rate schedule and random shifts of up to ``--shift`` pixels,
holding out the last ``--val-split`` training images for validation, and reports the accuracy on
the 10,000 test images. It writes, atomically, to ``--out``:

- ``model.npz``: the trained model (``Sequential.load``);
- ``metrics.json``: history, test accuracy and loss, times, throughput, the settings;
- ``curves.png``: loss and accuracy per epoch, training and validation;
- ``checkpoint.npz``: model, optimizer, scheduler and position, rewritten at every epoch end.

Ctrl-C (SIGINT) or SIGTERM: the current batch finishes, ``checkpoint.npz`` is written with the
position inside the epoch, and the command exits with 130 / 143. ``cnn-im2col train --resume OUT``
continues with the settings of the interrupted run and ends with exactly the weights of an
uninterrupted run. A second Ctrl-C aborts at once (the last epoch-end checkpoint stays). A diverging
run (NaN/Inf loss) stops with exit code 2, leaving the last epoch-end checkpoint.

Under MPI (``mpiexec -n K python -m mpi4py -m cnn_im2col train ...``, or ``mpiexec -n K cnn-im2col
train``, or Slurm's ``srun``), ``train`` detects the launcher and trains data-parallel on K ranks
(:mod:`cnn_im2col.distributed`): the same global batch and the same results as one process, each
rank on (cores of its node) / (ranks on its node) threads unless ``--threads`` says otherwise. Only
rank 0 prints and writes; ``metrics.json`` records ``world_size``; Ctrl-C, SIGTERM and ``--resume``
work as above (a signal to any rank stops every rank after the same batch).

Errors from bad flags are argparse's (exit 2); errors from the package are one line on stderr,
exit 2, no traceback (under MPI the failing rank then aborts the job, so no rank waits forever).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import distributed as _dist
from . import onnx
from ._version import __version__
from .architectures import ARCHITECTURES, TRAIN_DEFAULTS, default_model, read_spec
from .architectures import build as build_model
from .augment import Compose, RandomFlip, RandomShift
from .datasets import Dataset, load_mnist, mnist_directory, open_data_dir
from .exceptions import TrainingDiverged, TrainingInterrupted
from .image_predictions import predict_images
from .layers import Normalization
from .losses import SoftmaxCrossEntropy
from .model import Sequential
from .optim import SGD, Adam, CosineAnnealingLR
from .reports import (
    confusion_matrix,
    format_confusion,
    format_profile,
    plot_history,
    profile_layers,
    write_json,
)
from .threads import set_num_threads

PROG = "cnn-im2col"

#: The settings ``cnn-im2col train`` uses when a flag is not given. Measured on the 2-core machine
#: (engine of fdc6e86, first-run JIT included): 8 epochs -> 99.40% on the 10,000 test images in
#: 578 s with other processes loading both cores (~71 s/epoch), ~400 s when quieter (~47 s/epoch);
#: 7 epochs gave 99.37% in 356 s. Adam beat SGD with Nesterov momentum (99.34%) at 8 epochs. With
#: the shared thread policy (cnn_im2col.threads), the same 99.40% in 269 s (30-33 s/epoch, cold JIT
#: included).
DEFAULTS: dict[str, Any] = {
    "epochs": 8,
    "batch_size": 128,
    "lr": None,  # per optimizer: LEARNING_RATES
    "optimizer": "adam",
    "seed": 0,
    "limit": None,
    "val_split": None,  # min(5000, N // 10) of the N training images
    "shift": 2,
    "flip": None,  # mirror images left-right: None = on for colour (3-channel) data, off for gray
    "image_size": None,  # [H, W]: resize image-folder data to it (else sizes must agree)
    "test_fraction": 0.2,  # held out of a single DIR/<class> image tree as the test set
    "out": "runs/mnist",
    # architectures.ARCHITECTURES, or a .json file; TRAIN_DEFAULTS per architecture
    "model": "default",
}
LEARNING_RATES = {"adam": 2e-3, "sgd": 0.05}
#: Flags that define a run: with --resume they must be absent or equal to the checkpoint's.
RUN_FLAGS = (
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "seed",
    "limit",
    "val_split",
    "shift",
    "model",
    "flip",
    "image_size",
    "test_fraction",
)
CHECKPOINT = "checkpoint.npz"
#: Data set kinds of MNIST's format (grayscale digits or clothes in [0, 1]): not standardised.
MNIST_KINDS = ("idx", "mnist")


class CLIError(Exception):
    """A problem to report as one line and exit code 2."""


# --------------------------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------------------------


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
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
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


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


class _StopRequest:
    """Signal handlers for SIGINT/SIGTERM: the first asks training to stop after the current batch;
    a second SIGINT raises KeyboardInterrupt at once."""

    def __init__(self, verbose: bool = True) -> None:
        self.signum: int | None = None
        self.verbose = verbose  # False on MPI ranks other than 0: one message per job
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        if not self.verbose:
            return
        name = signal.Signals(signum).name
        print(
            f"\n{PROG}: {name} received: finishing the current batch, then writing a checkpoint "
            f"(Ctrl-C again to abort without it)",
            file=sys.stderr,
            flush=True,
        )

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def extra_callbacks() -> list:
    """Extra ``fit`` callbacks (``cb(model, logs)``); empty. A seam for tests and embedding."""
    return []


def _resolve_settings(args: argparse.Namespace) -> tuple[dict, Any]:
    """The run's settings: flags over defaults, or (with --resume) the checkpoint's, plus the
    checkpoint."""
    given = {key: getattr(args, key) for key in RUN_FLAGS if getattr(args, key) is not None}
    if args.resume is None:
        settings = {key: DEFAULTS[key] for key in RUN_FLAGS}
        settings.update(TRAIN_DEFAULTS.get(given.get("model", DEFAULTS["model"]), {}))
        settings.update(given)
        settings["out"] = args.out if args.out is not None else DEFAULTS["out"]
        if settings["lr"] is None:
            settings["lr"] = LEARNING_RATES[settings["optimizer"]]
        return settings, None
    path = Path(args.resume) / CHECKPOINT
    if not path.is_file():
        raise CLIError(
            f"--resume {args.resume}: there is no {CHECKPOINT} in it "
            f"(is it a train --out directory?)"
        )
    ckpt = Sequential.load_checkpoint(path)
    saved = ckpt.extra.get("settings")
    if isinstance(saved, dict):  # settings a run of an earlier version did not record: defaults
        saved = {
            key: DEFAULTS[key] for key in ("model", "flip", "image_size", "test_fraction")
        } | saved
    if not isinstance(saved, dict) or any(key not in saved for key in RUN_FLAGS):
        raise CLIError(
            f"{path}: no training settings stored in it; was it written by '{PROG} train'?"
        )
    finished = int(ckpt.state.get("epoch", 0)) >= int(saved["epochs"])
    extending = finished and given.get("epochs", saved["epochs"]) > saved["epochs"]
    different = [
        f"--{key.replace('_', '-')} {value} (the run used {saved[key]})"
        for key, value in given.items()
        if value != saved[key] and not (key == "epochs" and extending)
    ]
    if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
        different.append(f"--out {args.out} (resuming writes to {args.resume})")
    if different:
        raise CLIError(
            "--resume continues a run with its own settings; drop or fix: " + "; ".join(different)
        )
    settings = {key: saved[key] for key in RUN_FLAGS}
    if extending:  # a finished run, extended: the learning rate restarts (see _train)
        settings["epochs"] = given["epochs"]
        settings["extended_from"] = saved["epochs"]
    settings["out"] = str(args.resume)
    if args.data_dir is None:  # the data the run used, unless told otherwise
        args.data_dir = ckpt.extra.get("data_dir")
    return settings, ckpt


def _check_out(out: Path, resuming: bool, overwrite: bool) -> None:
    """Before anything is read: ``out`` must be a folder (or not exist yet), and a finished run in
    it is replaced only with ``--overwrite``."""
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} exists and is not a directory")
    if not resuming and (out / CHECKPOINT).is_file():
        if _unfinished(out / CHECKPOINT):
            raise CLIError(
                f"{out} holds an interrupted run ({CHECKPOINT}); continue it with --resume {out}, "
                f"or choose another --out (or delete {out / CHECKPOINT} to start afresh)"
            )
        if not overwrite:
            raise CLIError(
                f"{out} holds a finished run; give --overwrite to replace it, or choose another "
                f"--out"
            )


def _make_out(out: Path) -> None:
    """The folder the user asked for, and a probe file in it: an --out that cannot be written
    fails before training, not after the first epoch."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise CLIError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


def _unfinished(path: Path) -> bool:
    """Whether the checkpoint at ``path`` is of a run that has not finished all its epochs."""
    try:
        state = Sequential.load_checkpoint(path).state
        return int(state["epoch"]) < int(state["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # unreadable: nothing worth keeping


def _load_data(data_dir: str | None, progress: bool, settings: dict | None = None) -> Dataset:
    """MNIST (fetched into the user cache on first use) without ``data_dir``; else whatever data
    set the folder holds (:func:`cnn_im2col.datasets.open_data_dir`, which never writes there and
    refuses a folder holding none)."""
    settings = settings or DEFAULTS
    if data_dir is None:
        (x_train, y_train), (x_test, y_test) = load_mnist(None, progress=progress)
        return Dataset(
            "mnist",
            x_train,
            y_train,
            x_test,
            y_test,
            tuple(str(d) for d in range(10)),
            mnist_directory(),
        )
    image_size = settings.get("image_size")
    return open_data_dir(
        data_dir,
        image_size=None if image_size is None else tuple(image_size),
        test_fraction=settings.get("test_fraction") or DEFAULTS["test_fraction"],
        seed=settings.get("seed", 0),
    )


def _load_data_once(data_dir: str | None, progress: bool, comm: Any, settings: dict) -> Dataset:
    """``_load_data``; under MPI rank 0 goes first (it downloads and caches MNIST, or decodes
    and caches an image folder, if needed), then the others read the cache, so K ranks never
    fetch or decode the same files at once."""
    if comm is None:
        return _load_data(data_dir, progress, settings)
    failure = None
    if comm.Get_rank() == 0:
        try:
            data = _load_data(data_dir, progress, settings)
        except Exception as exc:
            comm.bcast(f"rank 0 could not load the data: {exc}", root=0)
            raise
        comm.bcast(None, root=0)
        return data
    failure = comm.bcast(None, root=0)
    if failure is not None:
        raise CLIError(failure)
    return _load_data(data_dir, False, settings)


def _split(x: np.ndarray, y: np.ndarray, settings: dict) -> tuple:
    if settings["limit"] is not None:
        x, y = x[: settings["limit"]], y[: settings["limit"]]
    n = x.shape[0]
    val = settings["val_split"]
    if val is None:
        val = min(5000, n // 10)
    if val >= n:
        raise CLIError(
            f"--val-split {val} must be smaller than the number of training images ({n})"
        )
    if val == 0:
        return (x, y), None, 0
    return (x[: n - val], y[: n - val]), (x[n - val :], y[n - val :]), val


def _make_optimizer(settings: dict, model: Sequential, steps: int) -> tuple[Any, Any]:
    if settings["optimizer"] == "adam":
        optimizer: Any = Adam(settings["lr"])
    else:
        optimizer = SGD(settings["lr"], momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = CosineAnnealingLR(optimizer, t_max=steps)
    return optimizer, scheduler


def _mpi_world() -> Any:
    """The MPI communicator when launched as several MPI ranks, else None."""
    try:
        return _dist.detect_comm()
    except ImportError as exc:
        raise CLIError(str(exc)) from None


def cmd_train(args: argparse.Namespace) -> int:
    comm = _mpi_world()
    try:
        return _train(args, comm)
    except (CLIError, ValueError, TypeError, OSError, FloatingPointError) as exc:
        if comm is None:
            raise
        # a rank that fails alone would leave the others waiting in a collective: report, then
        # abort all
        print(
            f"{PROG}: error (rank {comm.Get_rank()} of {comm.Get_size()}): "
            f"{' '.join(str(exc).split())}",
            file=sys.stderr,
            flush=True,
        )
        comm.Abort(2)
        raise  # pragma: no cover - Abort does not return


def _train(args: argparse.Namespace, comm: Any) -> int:
    t_start = time.perf_counter()
    rank, world_size = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())

    def say(*parts: Any, **kwargs: Any) -> None:  # only rank 0 talks
        if rank == 0:
            print(*parts, **{"flush": True, **kwargs})

    progress = not args.no_progress and rank == 0
    settings, ckpt = _resolve_settings(args)
    if ckpt is None:
        read_spec(settings["model"])  # a bad --model fails before anything is read or written
    out = Path(settings["out"])
    _check_out(out, resuming=ckpt is not None, overwrite=args.overwrite)

    t_data = time.perf_counter()
    dataset = _load_data_once(args.data_dir, progress, comm, settings)
    say(dataset.describe())  # the first line: what is trained on
    (x_fit, y_fit), validation, n_val = _split(dataset.x_train, dataset.y_train, settings)
    x_test, y_test = dataset.x_test, dataset.y_test
    data_seconds = time.perf_counter() - t_data
    if rank == 0:
        _make_out(out)

    threads_wanted = args.threads
    if threads_wanted is None and comm is not None:
        threads_wanted = _dist.threads_per_rank(comm)  # MPICH does not pin: share the node's cores
    if threads_wanted is not None:
        threads = set_num_threads(threads_wanted)
        say(
            "threads"
            + (" per rank" if comm is not None else "")
            + ": "
            + ", ".join(f"{k} {v}" for k, v in threads.items())
        )
    if comm is not None:
        say(
            f"MPI: {world_size} ranks, data-parallel "
            f"(each rank computes its share of every global batch)"
        )
    say(
        f"data: {x_fit.shape[0]} training, {n_val} validation, {x_test.shape[0]} test images "
        f"{tuple(x_fit.shape[1:])} ({data_seconds:.1f} s)"
    )
    if ckpt is None:
        network = build_model(
            settings["model"],
            settings["seed"],
            input_shape=dataset.image_shape,
            classes=len(dataset.classes),
        )
        layers = network.layers
        if dataset.kind not in MNIST_KINDS:
            # photographs: standardised by the training images' per-channel mean and std, kept
            # inside the model so that predict applies them; MNIST-format data stays in [0, 1],
            # which the default settings were tuned for
            layers = [Normalization(dataset.channels).adapt(x_fit), *layers]
        model = Sequential(layers, class_names=dataset.classes)

    batches = -(-x_fit.shape[0] // settings["batch_size"])
    if ckpt is None:
        optimizer, scheduler = _make_optimizer(settings, model, settings["epochs"] * batches)
        state = None
    else:
        model, optimizer, scheduler, state = ckpt.model, ckpt.optimizer, ckpt.scheduler, ckpt.state
        if "extended_from" in settings:
            # the finished run's cosine ended near 0: a new cycle over the added epochs, from the
            # run's peak rate (a warm restart, as SGDR); the epochs' order and augmentation are
            # those a longer run would have drawn, but its single cycle cannot be had afresh
            added = settings["epochs"] - settings["extended_from"]
            optimizer.lr = settings["lr"]
            scheduler = CosineAnnealingLR(optimizer, t_max=added * batches)
            say(
                f"extending the finished run from {settings['extended_from']} to "
                f"{settings['epochs']} epochs: a new cosine cycle from lr {settings['lr']:g} over "
                f"the {added} added epochs"
            )
        say(
            f"resuming {out / CHECKPOINT}: epoch {state.get('epoch', 0) + 1}, "
            f"batch {state.get('batch', 0) + 1}"
        )
    say(model.summary(x_fit.shape[1:]))
    flip = settings["flip"] if settings["flip"] is not None else dataset.channels == 3
    augmentations = ([RandomShift(settings["shift"])] if settings["shift"] else []) + (
        [RandomFlip()] if flip else []
    )
    opt_text = (
        "Adam"
        if settings["optimizer"] == "adam"
        else "SGD(momentum 0.9, Nesterov, weight decay 5e-4)"
    )
    plural = "s" if settings["epochs"] != 1 else ""
    say(
        f"training: {settings['epochs']} epoch{plural} x {batches} batches of "
        f"{settings['batch_size']}, {opt_text}, "
        f"lr {settings['lr']:g} with per-batch cosine decay, shifts up to {settings['shift']} px"
        f"{', random left-right flips' if flip else ''}, "
        f"seed {settings['seed']}" + (f", {world_size} MPI ranks" if comm is not None else "")
    )

    stop = _StopRequest(verbose=rank == 0)
    stop.install()
    checkpoint = out / CHECKPOINT
    try:
        if (
            stop.signum is not None and comm is None
        ):  # a signal during data loading: nothing to save yet
            # (under MPI fit stops every rank after the first batch instead: one rank alone must
            # not leave)
            return 128 + int(stop.signum)
        history = model.fit(
            x_fit,
            y_fit,
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            optimizer=optimizer,
            loss=SoftmaxCrossEntropy(),
            validation_data=validation,
            seed=settings["seed"],
            progress=progress,
            scheduler=scheduler,
            scheduler_interval="batch",
            augment=Compose(augmentations) if augmentations else None,
            callbacks=extra_callbacks(),
            checkpoint=checkpoint,
            checkpoint_extra={"settings": settings, "data_dir": args.data_dir},
            resume=state,
            should_stop=stop,
            comm=comm,
            log=say if rank == 0 else None,
        )
    except TrainingInterrupted as exc:
        signum = int(stop.signum) if stop.signum is not None else 0
        if comm is not None:  # exit with the signal any rank received
            from mpi4py import MPI

            signum = comm.allreduce(signum, op=MPI.MAX)
        signum = signum or int(signal.SIGINT)
        say(
            f"{PROG}: interrupted at epoch {exc.epoch}, batch {exc.batch}/{exc.batches}; "
            f"checkpoint saved to {checkpoint}.\nResume with: {PROG} train --resume {out}",
            file=sys.stderr,
        )
        if comm is not None:
            # python -m mpi4py aborts the job at the first non-zero exit: rank 0 has spoken
            comm.Barrier()
        return 128 + signum
    except TrainingDiverged as exc:
        last = ""
        if checkpoint.is_file():
            last = f" The last good checkpoint (end of epoch {exc.epoch - 1}) is {checkpoint}."
        raise CLIError(f"{exc}.{last}") from None
    finally:
        stop.restore()

    if rank != 0:
        return 0  # rank 0 evaluates and writes the files
    train_seconds = float(sum(history["seconds"]))
    t_test = time.perf_counter()
    test = model.evaluate(x_test, y_test, batch_size=256)
    test_seconds = time.perf_counter() - t_test
    model.save(out / "model.npz")
    total_seconds = time.perf_counter() - t_start
    samples = x_fit.shape[0] * len(history["epoch"])
    pure_train = sum(x_fit.shape[0] / r for r in history["samples_per_s"] if r)
    metrics = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "test_images": int(x_test.shape[0]),
        "train_images": int(x_fit.shape[0]),
        "validation_images": int(n_val),
        "epochs": len(history["epoch"]),
        "total_seconds": total_seconds,
        "train_seconds": train_seconds,
        "data_seconds": data_seconds,
        "test_seconds": test_seconds,
        "samples_per_s": samples / pure_train if pure_train else None,
        "resumed": ckpt is not None,
        "world_size": world_size,
        "history": history,
        "settings": settings,
        "arguments": {key: value for key, value in vars(args).items()},
        "model": model.config(),
        "parameters": model.num_params(),
        "version": __version__,
    }
    write_json(out / "metrics.json", metrics)
    plot_history(
        history,
        out / "curves.png",
        title=f"{dataset.kind}: test accuracy {100 * test['accuracy']:.2f}% after "
        f"{len(history['epoch'])} epochs",
    )
    correct = round(test["accuracy"] * x_test.shape[0])
    print(
        f"test accuracy {100 * test['accuracy']:.2f}% ({correct}/{x_test.shape[0]}), test loss "
        f"{test['loss']:.4f}; total time {total_seconds:.1f} s (training {train_seconds:.1f} s); "
        f"wrote {out / 'model.npz'}, metrics.json, curves.png",
        flush=True,
    )
    return 0


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
    dataset = _load_data(args.data_dir, True, {**DEFAULTS, "image_size": args.image_size})
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


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cnn-im2col``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "predict": cmd_predict,
        "bench": cmd_bench,
        "export": cmd_export,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print(f"\n{PROG}: aborted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `cnn-im2col evaluate m.npz | head`: not an error worth a message
        try:
            os.dup2(
                os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno()
            )  # no second error at exit
        except (OSError, ValueError):
            pass
        return 141
    except (CLIError, ValueError, TypeError, OSError, FloatingPointError) as exc:
        message = " ".join(str(exc).split()) if not isinstance(exc, CLIError) else str(exc)
        if (
            isinstance(exc, FileNotFoundError)
            and exc.filename
            and not str(exc).startswith(str(exc.filename))
        ):
            message = f"{exc.strerror}: {exc.filename}" if exc.strerror else message
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
