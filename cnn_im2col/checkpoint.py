"""Checkpoints: a model file plus the optimizer and ``fit``'s position, for resuming.

A checkpoint is a model file (see :mod:`cnn_im2col.model_files`) plus ``"optim:{key}"`` arrays (the
optimizer's ``state_dict``) and ``"__training__"`` (JSON: optimizer and scheduler configuration and
state, ``fit``'s position, and the caller's ``extra``). :func:`save_checkpoint` and
:func:`load_checkpoint` write and read whole checkpoints; :class:`Position` is where ``fit`` is:
epoch, batch, seed, the partial sums of the epoch, the history so far, and the states of the
layers' random generators. It knows nothing of the model class or of the loop; the loop uses it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import model_files
from . import optim as _optim
from ._files import json_array, npz_entry, npz_json

__all__ = [
    "HISTORY_KEYS",
    "Checkpoint",
    "Position",
    "load_checkpoint",
    "new_history",
    "save_checkpoint",
]

# the names the model file reserves for a checkpoint's entries: a model reader skips them
OPTIM_PREFIX, TRAINING_KEY = model_files.RESERVED

#: The per-epoch lists of ``fit``'s history, in order.
HISTORY_KEYS = (
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
    "samples_per_s",
)


def new_history(history: Any = None) -> dict[str, list]:
    """Empty per-epoch lists, or copies of those in ``history`` (a mapping: its lists, those of
    ``fit``'s extra metrics included; other keys dropped)."""
    fresh: dict[str, list] = {key: [] for key in HISTORY_KEYS}
    if isinstance(history, Mapping):
        for key in HISTORY_KEYS:
            fresh[key] = list(history.get(key, []))
        for key, value in history.items():  # the lists of fit's extra metrics
            if key not in fresh and isinstance(key, str) and isinstance(value, list):
                fresh[key] = list(value)
    return fresh


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` (and ``Sequential.load_checkpoint``) returns.

    ``model`` holds the saved weights; ``optimizer`` (rebuilt from its config with its state loaded)
    and ``scheduler`` (or None) continue where they stopped; ``state`` is ``fit``'s position, to
    pass as ``fit(..., resume=state)``; ``extra`` is whatever JSON the caller stored.
    """

    model: Any
    optimizer: Any
    scheduler: Any
    state: dict
    extra: dict = field(default_factory=dict)


def save_checkpoint(
    path: str,
    model: Any,
    optimizer: Any,
    scheduler: Any = None,
    state: Mapping | None = None,
    extra: Mapping | None = None,
) -> None:
    """Write ``model``'s file plus the optimizer's and scheduler's state and ``fit``'s position
    (``state``), atomically. ``extra`` is any JSON-able dict stored beside them (the command keeps
    its arguments there)."""
    arrays = model_files.model_arrays(model)
    arrays.update(training_arrays(optimizer, scheduler, state, extra))
    model_files.write_arrays(path, arrays)


def load_checkpoint(path: str, build: Callable[[dict, str], Any]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; ``build(header, path)`` makes the
    model from its config (see :func:`cnn_im2col.model_files.read_model`)."""
    with model_files.open_npz(path) as npz:
        model = model_files.read_model(npz, path, build)
        optimizer, scheduler, state, extra = read_training(npz, path)
    return Checkpoint(model, optimizer, scheduler, state, extra)


def training_arrays(
    optimizer: Any,
    scheduler: Any = None,
    state: Mapping | None = None,
    extra: Mapping | None = None,
) -> dict[str, np.ndarray]:
    """The entries a checkpoint adds to a model file: the optimizer's arrays and ``__training__``.
    """
    if not hasattr(optimizer, "state_dict") or not hasattr(optimizer, "config"):
        raise TypeError(
            "save_checkpoint: optimizer must have state_dict() and config(), got "
            f"{type(optimizer).__name__}"
        )
    arrays, scalars = {}, {}
    for key, value in optimizer.state_dict().items():
        if isinstance(value, np.ndarray):
            arrays[OPTIM_PREFIX + key] = value
        else:
            scalars[key] = value
    training = {
        "optimizer": optimizer.config(),
        "optimizer_scalars": scalars,
        "scheduler": None
        if scheduler is None
        else {"config": scheduler.config(), "state": scheduler.state_dict()},
        "state": dict(state or {}),
        "extra": dict(extra or {}),
    }
    arrays[TRAINING_KEY] = json_array(training)
    return arrays


def read_training(npz: Any, path_text: str) -> tuple[Any, Any, dict, dict]:
    """``(optimizer, scheduler, state, extra)`` from an open checkpoint ``npz``; ValueError naming
    ``path_text`` if it is a plain model file or its training state is broken."""
    if TRAINING_KEY not in npz.files:
        raise ValueError(
            f"{path_text}: a model file, not a checkpoint (no optimizer or training state)"
        )
    training = npz_json(npz, TRAINING_KEY, path_text)
    optim_arrays = {
        key[len(OPTIM_PREFIX) :]: npz_entry(npz, key, path_text)
        for key in npz.files
        if key.startswith(OPTIM_PREFIX)
    }
    try:
        opt_config = dict(training["optimizer"])
        name = opt_config.get("name")
        if name not in ("SGD", "Adam"):
            raise ValueError(f"unknown optimizer {name!r}")
        optimizer = getattr(_optim, name).from_config(opt_config)
        optimizer.load_state_dict({**training["optimizer_scalars"], **optim_arrays})
        scheduler = None
        if training.get("scheduler"):
            sched_config = dict(training["scheduler"]["config"])
            sched_name = sched_config.pop("name")
            if sched_name not in ("StepLR", "CosineAnnealingLR"):
                raise ValueError(f"unknown scheduler {sched_name!r}")
            scheduler = getattr(_optim, sched_name)(optimizer, **sched_config)
            scheduler.load_state_dict(training["scheduler"]["state"])
        state = dict(training.get("state") or {})
        extra = dict(training.get("extra") or {})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path_text}: the checkpoint's training state is broken: {exc}") from None
    return optimizer, scheduler, state, extra


@dataclass
class Position:
    """Where ``fit`` is: about to run batch ``batch`` (0-based) of epoch ``epoch`` (0-based), with
    the epoch's partial sums ``sums`` = [loss x count, correct, count] and ``elapsed`` training
    seconds spent in it, the learning rate at the epoch's start, and the history of the finished
    epochs.

    ``run`` holds what must not change across a resume: n, batch_size, epochs, shuffle, seed.
    """

    run: dict
    epoch: int = 0
    batch: int = 0
    sums: list = field(default_factory=lambda: [0.0, 0, 0])
    elapsed: float = 0.0
    lr_at_epoch_start: float = math.nan
    history: dict = field(default_factory=new_history)
    generators: dict = field(default_factory=dict)

    def state(self, generators: Mapping | None = None) -> dict:
        """The JSON-able ``state`` a checkpoint stores (``fit(resume=state)`` reads it back)."""
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "seed": self.run["seed"],
            "n": self.run["n"],
            "batch_size": self.run["batch_size"],
            "epochs": self.run["epochs"],
            "shuffle": self.run["shuffle"],
            "sums": list(self.sums),
            "elapsed": self.elapsed,
            "lr_at_epoch_start": self.lr_at_epoch_start,
            "history": self.history,
            "generators": dict(generators or {}),
        }

    @classmethod
    def resumed(cls, resume: Any, run: dict, seed_given: bool, lr: float, owner: str) -> Position:
        """The position stored in a checkpoint's ``state``, checked against this run (``run``: n,
        batch_size, epochs, shuffle, seed; ``seed_given``: whether the caller chose the seed).
        Everything must match, except that a finished run may be given more ``epochs``: it goes
        on to them exactly as a run asked for that many at the start, when the optimizer's
        schedule does not depend on the number of epochs."""
        if not isinstance(resume, Mapping):
            raise TypeError(
                f"{owner}: resume must be the state of a checkpoint (a dict), got "
                f"{type(resume).__name__}"
            )
        try:
            epoch, batch = int(resume["epoch"]), int(resume["batch"])
            saved = {
                "n": int(resume["n"]),
                "batch_size": int(resume["batch_size"]),
                "epochs": int(resume["epochs"]),
                "shuffle": bool(resume["shuffle"]),
            }
            seed_value = int(resume["seed"])
            sums = [
                float(resume["sums"][0]),
                int(resume["sums"][1]),
                int(resume["sums"][2]),
                *(float(v) for v in resume["sums"][3:]),
            ]
            elapsed = float(resume["elapsed"])
            lr0 = float(resume.get("lr_at_epoch_start", lr))
            history = new_history(resume.get("history"))
            generators = dict(resume.get("generators", {}))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{owner}: resume is not a valid checkpoint state ({exc!r})") from None
        # a finished run may be extended to more epochs: the epochs after it draw their order and
        # augmentation from (seed, epoch) alone, as they would have in a longer run
        extends = epoch == saved["epochs"] and batch == 0 and run["epochs"] > saved["epochs"]
        diff = [
            f"{k} {run[k]} (checkpoint: {saved[k]})"
            for k in saved
            if run[k] != saved[k] and not (k == "epochs" and extends)
        ]
        if diff:
            raise ValueError(
                f"{owner}: cannot resume: this run differs from the checkpointed one in "
                f"{', '.join(diff)}; resume with the same data and settings"
            )
        if seed_given and int(run["seed"]) != seed_value:
            raise ValueError(
                f"{owner}: cannot resume: seed {run['seed']} differs from the checkpoint's seed "
                f"{seed_value}"
            )
        if not 0 <= epoch <= run["epochs"]:
            raise ValueError(f"{owner}: resume epoch {epoch} is outside 0..{run['epochs']}")
        return cls(
            {**run, "seed": seed_value}, epoch, batch, sums, elapsed, lr0, history, generators
        )
