"""The images a command runs on: MNIST (fetched into the user cache on first use) or the data set
in ``--data-dir`` (``load_data``); under MPI rank 0 loads first and the other ranks read its cache
(``load_data_once``); ``split_validation`` holds out the last ``--val-split`` training images for
validation."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..datasets import Dataset, load_mnist, mnist_directory, open_data_dir
from .errors import CLIError
from .settings import DEFAULTS


def load_data(data_dir: str | None, progress: bool, settings: dict | None = None) -> Dataset:
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


def load_data_once(data_dir: str | None, progress: bool, comm: Any, settings: dict) -> Dataset:
    """``load_data``; under MPI rank 0 goes first (it downloads and caches MNIST, or decodes
    and caches an image folder, if needed), then the others read the cache, so K ranks never
    fetch or decode the same files at once."""
    if comm is None:
        return load_data(data_dir, progress, settings)
    failure = None
    if comm.Get_rank() == 0:
        try:
            data = load_data(data_dir, progress, settings)
        except Exception as exc:
            comm.bcast(f"rank 0 could not load the data: {exc}", root=0)
            raise
        comm.bcast(None, root=0)
        return data
    failure = comm.bcast(None, root=0)
    if failure is not None:
        raise CLIError(failure)
    return load_data(data_dir, False, settings)


def split_validation(x: np.ndarray, y: np.ndarray, settings: dict) -> tuple:
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
