"""Datasets: data folders, the IDX format, MNIST, CIFAR, image folders and minibatches.

Every loader returns images as ``(N, C, H, W)`` float32 in [0, 1] (the uint8 pixel / 255) and
labels as ``(N,)`` int64.
"""

from __future__ import annotations

from .batches import iterate_minibatches
from .cifar import load_cifar10, open_cifar10_dir, open_cifar100_dir
from .dataset import Dataset
from .idx import IDX_NAMES, load_idx_dataset, read_idx, write_idx
from .mnist import load_mnist, mnist_directory

__all__ = [
    "IDX_NAMES",
    "Dataset",
    "iterate_minibatches",
    "load_cifar10",
    "load_idx_dataset",
    "load_mnist",
    "mnist_directory",
    "open_cifar100_dir",
    "open_cifar10_dir",
    "read_idx",
    "write_idx",
]
