"""The settings of a ``train`` run: ``DEFAULTS`` where a flag is not given (an architecture may
bring its own, ``architectures.TRAIN_DEFAULTS``), the ``RUN_FLAGS`` that define a run, and
``resolve_settings``: flags over defaults, or with ``--resume`` the settings of the interrupted
run, stored in its ``CHECKPOINT`` (``--resume OUT --epochs N`` extends a finished run instead)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..architectures import TRAIN_DEFAULTS
from ..model import Sequential
from .errors import PROG, CLIError

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


def resolve_settings(args: argparse.Namespace) -> tuple[dict, Any]:
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
