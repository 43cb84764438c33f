"""Classify image files with a trained model: what ``cnn-im2col predict`` prints.

:func:`predict_images` decodes each file (Pillow, through :mod:`cnn_im2col.datasets`) to the
model's input: its channels (1: grayscale, 3: RGB) and its size. An image of another size is an
error naming the file, unless ``resize=True`` asks for it to be resized. The pixels are scaled to
[0, 1] as in training; a model trained by the command starts with its own ``Normalization``
layer, so the training set's mean and standard deviation are applied inside the model, exactly as
in training. The class probabilities are ``Sequential.predict_proba``'s; the class names are the
model's (``class_names``, kept in model files and ONNX metadata), or the class indices.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .datasets import decode_image
from .shapes import check_int

__all__ = ["ImagePrediction", "predict_images"]


@dataclass(frozen=True)
class ImagePrediction:
    """One file's result: ``top`` holds ``(class name, probability)`` pairs, most probable
    first."""

    path: str
    top: tuple[tuple[str, float], ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "top": [{"class": name, "probability": p} for name, p in self.top],
        }


def _model_image_shape(model: Any, owner: str) -> tuple[int, int, int]:
    shape = model.input_shape
    if shape is None or len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(
            f"{owner}: the model must take images (1 or 3 channels, H, W); its input "
            f"shape is {'unknown' if shape is None else tuple(shape)} (a model "
            f"trained by 'cnn-im2col train' records it)"
        )
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _decoded(path: str, shape: tuple[int, int, int], resize: bool) -> np.ndarray:
    """One file as a (C, H, W) float32 image in [0, 1] of the model's shape."""
    c, h, w = shape
    pixels = decode_image(path, image_size=(h, w) if resize else None, channels=c)
    if pixels.shape[:2] != (h, w):
        raise ValueError(
            f"{path}: image is {pixels.shape[0]}x{pixels.shape[1]} (height x width) "
            f"but the model takes {h}x{w}; give --resize (resize=True) to resize it"
        )
    image = pixels.reshape(h, w, c).transpose(2, 0, 1).astype(np.float32)
    image /= np.float32(255)
    return image


def predict_images(
    model: Any,
    paths: Sequence[str | os.PathLike],
    top: int = 1,
    resize: bool = False,
    batch_size: int = 64,
) -> list[ImagePrediction]:
    """The ``top`` most probable classes of each image file in ``paths``, in order. Every file
    is decoded before any is classified, so a bad file fails the call before work is done."""
    owner = "predict_images"
    top = check_int(top, "top", owner, minimum=1)
    batch_size = check_int(batch_size, "batch_size", owner, minimum=1)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError(f"{owner}: no image files given")
    shape = _model_image_shape(model, owner)
    x = np.stack([_decoded(path, shape, resize) for path in paths])
    probabilities = model.predict_proba(x, batch_size=batch_size)
    classes = probabilities.shape[1]
    names = model.class_names or tuple(str(k) for k in range(classes))
    if len(names) != classes:
        raise ValueError(
            f"{owner}: the model names {len(names)} classes but outputs {classes} probabilities"
        )
    results = []
    for path, row in zip(paths, probabilities):
        order = np.argsort(-row, kind="stable")[:top]
        results.append(ImagePrediction(path, tuple((names[k], float(row[k])) for k in order)))
    return results
