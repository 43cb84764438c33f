"""Datasets: data folders, the IDX format, MNIST, CIFAR, image folders and minibatches.

Every loader returns images as ``(N, C, H, W)`` float32 in [0, 1] (the uint8 pixel / 255) and
labels as ``(N,)`` int64.
"""

from __future__ import annotations

from .batches import iterate_minibatches
from .cifar import load_cifar10, open_cifar10_dir, open_cifar100_dir
from .dataset import Dataset
from .idx import IDX_NAMES, load_idx_dataset, read_idx, write_idx
from .images import IMAGE_SUFFIXES, decode_image, load_images, open_image_folder
from .mnist import load_mnist, mnist_directory
from .normalization import channel_stats, normalize

__all__ = [
    "IDX_NAMES",
    "IMAGE_SUFFIXES",
    "Dataset",
    "channel_stats",
    "decode_image",
    "iterate_minibatches",
    "load_cifar10",
    "load_idx_dataset",
    "load_images",
    "load_mnist",
    "mnist_directory",
    "normalize",
    "open_cifar100_dir",
    "open_cifar10_dir",
    "open_image_folder",
    "read_idx",
    "write_idx",
]
