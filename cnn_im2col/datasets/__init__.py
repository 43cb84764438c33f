"""Datasets: what a data folder holds, and the readers of each kind.

``open_data_dir(path, ...)`` recognises a data folder and reads it as a ``Dataset``
(``dataset.py``): images ``(N, C, H, W)`` float32 in [0, 1], labels ``(N,)`` int64, class names,
and ``describe()``, a one-line summary to print first. It tries, in this order (``LAYOUTS``):

1. "idx": the four MNIST-format IDX files, raw or ``.gz`` (MNIST, Fashion-MNIST, ...);
   ``idx.py``. Their classes are named by the label values ("0", "1", ...).
2. "mnist": ``mnist.npz``, the cache ``load_mnist`` writes (read with ``allow_pickle=False`` and
   checked, never fetched); ``mnist.py``. Classes "0" .. "9".
3. "cifar10": CIFAR-10's binary version, in the folder or its ``cifar-10-batches-bin``
   subfolder; ``cifar.py``.
4. "cifar100": CIFAR-100's binary version (fine labels), in the folder or its
   ``cifar-100-binary`` subfolder; ``cifar.py``.
5. "image-folder": ``train/<class>/*`` + ``test/<class>/*``, or ``<class>/*`` with a held-out
   test split (``test_fraction``, ``seed``); PNG, JPEG, BMP or WebP; ``images.py``.

A folder that holds none of these is a ``ValueError`` naming it and listing the layouts; a
missing folder is a ``FileNotFoundError``. A data folder is only ever read: decoded images are
cached under ``cache.cache_root()`` (``$CNN_IM2COL_CACHE`` or the user cache), never beside the
data.

The other modules: ``mnist.py`` (``load_mnist``: MNIST fetched, verified and cached),
``cifar.py`` (``load_cifar10`` likewise), ``normalization.py`` (per-channel ``channel_stats`` /
``normalize``), ``batches.py`` (``iterate_minibatches``), ``archives.py`` (safe tar extraction),
``downloads.py`` and ``cache.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .batches import iterate_minibatches
from .cifar import (
    find_cifar10_dir,
    find_cifar100_dir,
    load_cifar10,
    open_cifar10_dir,
    open_cifar100_dir,
)
from .dataset import KINDS, Dataset, as_path
from .idx import IDX_NAMES, as_splits, find_idx_file, load_idx_dataset, read_idx, write_idx
from .images import (
    IMAGE_SUFFIXES,
    decode_image,
    holds_class_folders,
    load_images,
    open_image_folder,
)
from .mnist import NPZ_NAME, load_mnist, mnist_directory, read_mnist_npz
from .normalization import channel_stats, normalize

#: What ``open_data_dir`` accepts, as its error message lists it.
LAYOUTS = (
    "MNIST-format IDX files: train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz)",
    "mnist.npz, the MNIST cache that load_mnist writes",
    "CIFAR-10 binary version: data_batch_1.bin .. data_batch_5.bin, test_batch.bin, "
    "batches.meta.txt (here or in cifar-10-batches-bin/)",
    "CIFAR-100 binary version: train.bin, test.bin, fine_label_names.txt "
    "(here or in cifar-100-binary/)",
    "an image folder: train/<class>/<images> and test/<class>/<images>, or <class>/<images> "
    "(PNG, JPEG, BMP or WebP)",
)

__all__ = [
    "IDX_NAMES",
    "IMAGE_SUFFIXES",
    "KINDS",
    "LAYOUTS",
    "Dataset",
    "channel_stats",
    "decode_image",
    "detect_layout",
    "iterate_minibatches",
    "load_cifar10",
    "load_idx_dataset",
    "load_images",
    "load_mnist",
    "mnist_directory",
    "normalize",
    "open_cifar100_dir",
    "open_cifar10_dir",
    "open_data_dir",
    "open_image_folder",
    "read_idx",
    "write_idx",
]


def _open_idx_dir(directory: Path) -> Dataset:
    (x_train, y_train), (x_test, y_test) = load_idx_dataset(directory)
    count = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    return Dataset(kind="idx", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   classes=tuple(str(label) for label in range(count)), source=directory)


def _open_mnist_npz(directory: Path) -> Dataset:
    (x_train, y_train), (x_test, y_test) = as_splits(*read_mnist_npz(directory / NPZ_NAME))
    return Dataset(kind="mnist", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   classes=tuple(str(label) for label in range(10)), source=directory)


def detect_layout(path: str | os.PathLike) -> tuple[str, Path]:
    """``(kind, folder)``: which of ``KINDS`` the data folder ``path`` holds and the folder that
    holds it (``path`` or its ``cifar-10-batches-bin`` / ``cifar-100-binary`` subfolder), without
    reading the data. ``FileNotFoundError`` if ``path`` does not exist, ``ValueError`` naming it
    and listing ``LAYOUTS`` if it holds none of them."""
    directory = as_path(path, "path", "open_data_dir")
    if not directory.exists():
        raise FileNotFoundError(f"data folder {directory} does not exist")
    if not directory.is_dir():
        raise ValueError(f"data folder {directory} is a file; it must be a directory, the folder "
                         f"that holds the data")
    if any(find_idx_file(directory, name) for name in IDX_NAMES):
        return "idx", directory
    if (directory / NPZ_NAME).is_file():
        return "mnist", directory
    if (cifar10 := find_cifar10_dir(directory)) is not None:
        return "cifar10", cifar10
    if (cifar100 := find_cifar100_dir(directory)) is not None:
        return "cifar100", cifar100
    split = (directory / "train").is_dir() and (directory / "test").is_dir()
    if split or holds_class_folders(directory):
        return "image-folder", directory
    layouts = "\n".join(f"  - {layout}" for layout in LAYOUTS)
    raise ValueError(f"data folder {directory} holds no data set this engine reads; it accepts:"
                     f"\n{layouts}")


def open_data_dir(path: str | os.PathLike, *, image_size: tuple[int, int] | None = None,
                  channels: int | None = None, test_fraction: float = 0.2, seed: int = 0,
                  cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> Dataset:
    """Recognise the data folder ``path`` (``detect_layout``) and read it as a ``Dataset``.

    ``image_size=(H, W)`` (resize), ``channels`` (None: grayscale if every image is, else RGB;
    or 1 / 3), ``test_fraction`` and ``seed`` (the held-out split of a one-tree image folder),
    ``cache_dir`` and ``use_cache`` (the decoded-image cache) apply to image folders only. For
    the other kinds ``image_size`` and ``channels`` must stay None (``ValueError`` otherwise: the
    data would not be what was asked for).
    """
    kind, folder = detect_layout(path)
    if kind == "image-folder":
        return open_image_folder(folder, image_size=image_size, channels=channels,
                                 test_fraction=test_fraction, seed=seed, cache_dir=cache_dir,
                                 use_cache=use_cache)
    asked = [name for name, value in (("image_size", image_size), ("channels", channels))
             if value is not None]
    if asked:
        raise ValueError(f"{' and '.join(asked)} apply to image folders only; {folder} holds "
                         f"{kind} data, read as it is")
    if kind == "idx":
        return _open_idx_dir(folder)
    if kind == "mnist":
        return _open_mnist_npz(folder)
    if kind == "cifar10":
        return open_cifar10_dir(folder)
    return open_cifar100_dir(folder)
