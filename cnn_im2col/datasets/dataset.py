"""The ``Dataset`` every data-folder reader returns, and the conversions all readers share.

A ``Dataset`` holds images as ``(N, C, H, W)`` float32 in [0, 1] (the uint8 pixel / 255) and
labels as ``(N,)`` int64 indices into ``classes``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The kinds of data folder ``open_data_dir`` recognises, in the order it tries them ("mnist":
#: a folder holding ``mnist.npz``, the cache ``load_mnist`` writes).
KINDS = ("idx", "mnist", "cifar10", "cifar100", "image-folder")
_SHOWN_CLASSES = 10  # describe() names at most this many classes


def as_path(path: object, name: str, owner: str) -> Path:
    """``path`` as a ``Path``; a TypeError naming ``owner`` and ``name`` if it is not a str or
    PathLike."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{owner}: {name} must be a path (str or os.PathLike), "
                        f"got {path!r} ({type(path).__name__})")
    return Path(path)


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W)`` -> float32 ``(N, 1, H, W)``, or uint8 ``(N, C, H, W)`` -> float32
    ``(N, C, H, W)``, in [0, 1] (pixel / 255)."""
    x = images.astype(np.float32)
    x /= np.float32(255)
    if images.ndim == 3:
        return x.reshape(images.shape[0], 1, *images.shape[1:])
    return x


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image data set read from a data folder.

    - ``kind``: one of ``KINDS`` ("idx", "mnist", "cifar10", "cifar100", "image-folder").
    - ``x_train`` ``(N, C, H, W)`` and ``x_test`` ``(M, C, H, W)``: float32 in [0, 1].
    - ``y_train`` ``(N,)`` and ``y_test`` ``(M,)``: int64 in ``0 .. len(classes) - 1``.
    - ``classes``: the class names, index = label.
    - ``source``: the folder (or archive directory) the data came from.
    - ``details``: a short note for ``describe`` (e.g. how the test split was chosen).
    - ``skipped``: how many non-image files were left out (image folders only).
    """

    kind: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: Path
    details: str = ""
    skipped: int = 0

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(int(n) for n in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return self.image_shape[0]

    def splits(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """``(x_train, y_train), (x_test, y_test)``: the form ``load_mnist`` returns."""
        return (self.x_train, self.y_train), (self.x_test, self.y_test)

    def describe(self) -> str:
        """One line: kind, folder, counts, image shape and classes, e.g. ``image-folder
        /data/pets: 40 train + 10 test images of 3x32x32, 2 classes: cat, dog``."""
        c, h, w = self.image_shape
        names = ", ".join(self.classes[:_SHOWN_CLASSES])
        if len(self.classes) > _SHOWN_CLASSES:
            names += f", ... (+{len(self.classes) - _SHOWN_CLASSES} more)"
        line = (f"{self.kind} {self.source}: {len(self.y_train)} train + {len(self.y_test)} test "
                f"images of {c}x{h}x{w}, {len(self.classes)} classes: {names}")
        if self.details:
            line += f"; {self.details}"
        if self.skipped:
            line += f"; {self.skipped} non-image file{'s' if self.skipped != 1 else ''} skipped"
        return line
