"""The ``train`` command.

``cnn-im2col train`` with no flags trains ``architectures.default_model`` (two conv-pool groups and
two dense layers, Fig. 8.11 style; ``--model`` picks another of ``architectures.ARCHITECTURES`` or
a JSON file holding ``Sequential.config()``, and an architecture may bring its own defaults,
``TRAIN_DEFAULTS``) with Adam, a per-batch cosine learning-rate schedule and random shifts of up to
``--shift`` pixels, holding out the last ``--val-split`` training images for validation, and
reports the accuracy on the 10,000 test images. It writes, atomically, to ``--out``:

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
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .. import distributed as _dist
from .._version import __version__
from ..architectures import build as build_model
from ..architectures import read_spec
from ..augment import Compose, RandomFlip, RandomShift
from ..exceptions import TrainingDiverged, TrainingInterrupted
from ..layers import Normalization
from ..losses import SoftmaxCrossEntropy
from ..model import Sequential
from ..optim import SGD, Adam, CosineAnnealingLR
from ..reports import plot_history, write_json
from ..threads import set_num_threads
from .data import load_data_once, split_validation
from .errors import PROG, CLIError
from .settings import CHECKPOINT, resolve_settings

#: Data set kinds of MNIST's format (grayscale digits or clothes in [0, 1]): not standardised.
MNIST_KINDS = ("idx", "mnist")


class StopRequest:
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


def _interactive(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (its ``isatty``; False where it has none or it fails)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):  # no isatty, or a closed stream
        return False


def _train(args: argparse.Namespace, comm: Any) -> int:
    t_start = time.perf_counter()
    rank, world_size = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())

    def say(*parts: Any, **kwargs: Any) -> None:  # only rank 0 talks
        if rank == 0:
            print(*parts, **{"flush": True, **kwargs})

    # bars only where someone watches: a log file or a pipe gets the one-line epoch summaries alone
    # (as tqdm's own default, disable=None, and Keras's progress bar in a non-interactive stream)
    progress = not args.no_progress and rank == 0 and _interactive(sys.stderr)
    settings, ckpt = resolve_settings(args)
    if ckpt is None:
        read_spec(settings["model"])  # a bad --model fails before anything is read or written
    out = Path(settings["out"])
    _check_out(out, resuming=ckpt is not None, overwrite=args.overwrite)

    t_data = time.perf_counter()
    dataset = load_data_once(args.data_dir, progress, comm, settings)
    say(dataset.describe())  # the first line: what is trained on
    (x_fit, y_fit), validation, n_val = split_validation(dataset.x_train, dataset.y_train, settings)
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

    stop = StopRequest(verbose=rank == 0)
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
