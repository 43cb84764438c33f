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
    directory.mkdir(parents=True, exist_ok=True)  # writers never make folders
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


# --- CIFAR binary files and image folders, written by the tests ------------------------------


def cifar_records(labels, seed: int = 0, label_bytes: int = 1) -> tuple[bytes, np.ndarray]:
    """CIFAR records for ``labels`` (one int, or a (coarse, fine) pair each for CIFAR-100): the
    bytes and the uint8 images (N, 3, 32, 32) they hold."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    rows = []
    for label, image in zip(labels, images):
        head = bytes([label]) if label_bytes == 1 else bytes(label)
        rows.append(head + image.tobytes())
    return b"".join(rows), images


def write_cifar10(directory: Path, per_batch: int = 3, names=None) -> dict:
    """A small CIFAR-10 folder: 5 training batches of ``per_batch`` records and a test batch of
    ``per_batch + 1``; the images and labels written, as uint8 arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        labels = [(i + k) % 10 for k in range(per_batch)]
        data, images = cifar_records(labels, seed=i)
        (directory / f"data_batch_{i}.bin").write_bytes(data)
        train_x.append(images)
        train_y += labels
    test_labels = [9 - k for k in range(per_batch + 1)]
    data, test_images = cifar_records(test_labels, seed=99)
    (directory / "test_batch.bin").write_bytes(data)
    names = names if names is not None else ["airplane", "automobile", "bird", "cat", "deer",
                                             "dog", "frog", "horse", "ship", "truck"]
    (directory / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    return {"x_train": np.concatenate(train_x), "y_train": np.array(train_y),
            "x_test": test_images, "y_test": np.array(test_labels)}


def write_cifar100(directory: Path, n_train: int = 6, n_test: int = 4) -> dict:
    """A small CIFAR-100 folder: train.bin, test.bin (coarse, fine label bytes) and the names."""
    directory.mkdir(parents=True, exist_ok=True)
    result = {}
    for name, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        labels = [(k % 20, (7 * k + seed) % 100) for k in range(n)]
        data, images = cifar_records(labels, seed=seed, label_bytes=2)
        (directory / f"{name}.bin").write_bytes(data)
        result[f"x_{name}"], result[f"y_{name}"] = images, np.array([f for _, f in labels])
    (directory / "fine_label_names.txt").write_text("\n".join(f"fine{k}" for k in range(100)))
    (directory / "coarse_label_names.txt").write_text("\n".join(f"coarse{k}" for k in range(20)))
    return result


def pattern_image(size=(8, 10), color: bool = True, seed: int = 0) -> np.ndarray:
    """A uint8 test picture (H, W, 3) or (H, W)."""
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if color else size
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def save_image(path: Path, pixels: np.ndarray, fmt: str | None = None, **options) -> Path:
    """Write ``pixels`` with Pillow (format from the suffix unless ``fmt``); lossless WebP."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    if (fmt or path.suffix.lower().lstrip(".")).upper() == "WEBP":
        options.setdefault("lossless", True)
    image.save(path, format=fmt, **options)
    return path


def make_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 5, size=(8, 10),
                      color: bool = True, suffix: str = ".png") -> dict[str, list[Path]]:
    """``root/<class>/<i><suffix>`` images; the paths per class."""
    paths = {}
    for k, name in enumerate(classes):
        paths[name] = [save_image(root / name / f"{i:03d}{suffix}",
                                  pattern_image(size, color, seed=100 * k + i))
                       for i in range(per_class)]
    return paths


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``directory`` with its size and mtime (ns): to show nothing changed."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*"))}
