"""Datasets: data folders, the IDX format, MNIST, CIFAR, image folders and minibatches.

Every loader returns images as ``(N, C, H, W)`` float32 in [0, 1] (the uint8 pixel / 255) and
labels as ``(N,)`` int64.
"""

from __future__ import annotations

from .batches import iterate_minibatches
from .idx import IDX_NAMES, load_idx_dataset, read_idx, write_idx
from .mnist import load_mnist, mnist_directory

__all__ = [
    "IDX_NAMES",
    "iterate_minibatches",
    "load_idx_dataset",
    "load_mnist",
    "mnist_directory",
    "read_idx",
    "write_idx",
]
