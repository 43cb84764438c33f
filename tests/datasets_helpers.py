"""Helpers shared by the datasets tests: tiny MNIST-format arrays and the checks of what a loader
returns."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cnn_im2col.datasets import IDX_NAMES, write_idx


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def idx_digest(tmp_path: Path, array: np.ndarray) -> str:
    """SHA-256 of ``array`` written as a raw IDX file (via the public writer)."""
    path = tmp_path / f"digest-{array.dtype}-{array.size}.idx"
    write_idx(path, array)
    digest = sha256_of(path.read_bytes())
    path.unlink()
    return digest


def small_mnist(rng: np.random.Generator, n_train=7, n_valid=3, n_test=4):
    """uint8 images (n, 28, 28) and uint8 labels for a tiny fake MNIST."""
    def split(n):
        return (rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
                rng.integers(0, 10, size=n, dtype=np.uint8))
    return split(n_train), split(n_valid), split(n_test)


def write_idx_dir(directory: Path, arrays, gz=(False, True, False, True)) -> None:
    for name, array, zipped in zip(IDX_NAMES, arrays, gz):
        write_idx(directory / (name + (".gz" if zipped else "")), array)


def assert_dataset_equals(result, expected_uint8):
    (x_train, y_train), (x_test, y_test) = result
    ex_train, ey_train, ex_test, ey_test = expected_uint8
    for x, ex in ((x_train, ex_train), (x_test, ex_test)):
        assert x.dtype == np.float32 and x.shape == (ex.shape[0], 1, *ex.shape[1:])
        np.testing.assert_array_equal(np.rint(x[:, 0] * 255).astype(np.uint8), ex)
        assert 0.0 <= x.min() and x.max() <= 1.0
    for y, ey in ((y_train, ey_train), (y_test, ey_test)):
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, ey)


def cache_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []
