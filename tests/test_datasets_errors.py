"""The bad-input battery's rows for cnn_im2col.datasets (machinery: bad_input.py): IDX files,
IDX directories, the MNIST cache and minibatches; each bad file is built by a factory below."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
from bad_input import INT1, ROW_FIELDS, Payload, check_bad_input, npz_with, rows, zip_with

from cnn_im2col import datasets

# ------------------------------------------------------------------------------------------
# file factories: each takes the test's tmp_path and returns the path of a bad file
# ------------------------------------------------------------------------------------------

def idx_dir(tmp: Path, **replace) -> Path:
    """A tiny MNIST-format directory; ``replace`` maps a file name to raw bytes written instead."""
    d = tmp / "idx"
    d.mkdir(exist_ok=True)
    arrays = (np.zeros((3, 28, 28), np.uint8), np.array([1, 2, 3], np.uint8),
              np.zeros((2, 28, 28), np.uint8), np.array([4, 5], np.uint8))
    for name, array in zip(datasets.IDX_NAMES, arrays):
        datasets.write_idx(d / name, array)
    for name, data in replace.items():
        (d / datasets.IDX_NAMES[0]).unlink()
        (d / name).write_bytes(data)
    return d


def truncated_gz(tmp: Path) -> Path:
    path = tmp / "train-images-idx3-ubyte.gz"
    datasets.write_idx(path, np.arange(2000, dtype=np.uint8).reshape(2, 1000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def idx_header_disagrees(tmp: Path) -> Path:
    path = tmp / "train-labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 1]) + (10).to_bytes(4,
                                                            "big") + bytes(
                                                                7))  # 10 declared, 7 given
    return path


def mnist_cache(tmp: Path, **changes) -> Path:
    """A directory whose mnist.npz is a well-formed tiny MNIST cache, with ``changes`` applied."""
    d = tmp / "cache"
    d.mkdir(exist_ok=True)
    arrays = {"x_train": np.zeros((3, 28, 28), np.uint8), "y_train": np.array([1, 2, 3], np.uint8),
              "x_test": np.zeros((2, 28, 28), np.uint8), "y_test": np.array([4, 5], np.uint8)}
    arrays.update(changes)
    npz_with(d, "mnist.npz", **arrays)
    return d


def mnist_cache_pickle(tmp: Path, zipped: bool) -> Path:
    d = tmp / "cache"
    d.mkdir(exist_ok=True)
    data = pickle.dumps(Payload(tmp / "pwned"))
    (d / "mnist.npz").write_bytes(gzip.compress(data) if zipped else data)
    return d


def load_mnist(directory):
    return datasets.load_mnist(directory, progress=False, log=lambda message: None)



# ------------------------------------------------------------------------------------------
# the table: id -> (callable(tmp), exception, who, got, allowed)
# ------------------------------------------------------------------------------------------

BAD_INPUTS = {
    "read_idx a missing file": (lambda t: datasets.read_idx(t / "nope-idx1-ubyte"),
                                FileNotFoundError,
                                r"nope-idx1-ubyte", r"No such file", r"."),
    "read_idx(3)": (lambda t: datasets.read_idx(3), TypeError, r"read_idx: path", r"got 3",
                    r"str or os\.PathLike"),
    "read_idx a truncated .gz": (lambda t: datasets.read_idx(truncated_gz(t)), ValueError,
                                 r"read_idx: .*train-images-idx3-ubyte\.gz", r"truncated", r"gzip"),
    "read_idx header disagrees with the length": (
        lambda t: datasets.read_idx(idx_header_disagrees(t)), ValueError,
        r"read_idx: .*train-labels-idx1-ubyte",
        r"the file has 7 payload bytes", r"declares shape \(10,\)"),
    "write_idx an object array": (lambda t: datasets.write_idx(t / "w", np.array([None])),
                                  TypeError,
                                  r"write_idx: array", r"got object", r"uint8, int8, int16, int32"),
    "write_idx a 0-d array": (lambda t: datasets.write_idx(t / "w", np.array(3, np.uint8)),
                              ValueError,
                              r"write_idx: array", r"got shape \(\)", r"1 to 255 dimensions"),
    "write_idx(None, ...)": (lambda t: datasets.write_idx(None, np.zeros(2, np.uint8)), TypeError,
                             r"write_idx: path", r"got None", r"str or os\.PathLike"),
    "load_idx_dataset of a missing directory": (lambda t: datasets.load_idx_dataset(t / "absent"),
                                                FileNotFoundError,
                                                r"load_idx_dataset: directory", r"absent",
                                                r"does not exist"),
    "load_idx_dataset(None)": (lambda t: datasets.load_idx_dataset(None), TypeError,
                               r"load_idx_dataset: directory",
                               r"got None", r"str or os\.PathLike"),
    "load_idx_dataset without the train images": (
        lambda t: datasets.load_idx_dataset(idx_dir(t, other=b"")), FileNotFoundError,
        r"load_idx_dataset", r"lacks train-images-idx3-ubyte", r"must hold all of"),
    "load_idx_dataset with a truncated .gz": (
        lambda t: datasets.load_idx_dataset(idx_dir(t,
                                                    **{"train-images-idx3-ubyte.gz": truncated_gz(
            t).read_bytes()})), ValueError, r"read_idx: .*train-images-idx3-ubyte\.gz",
        r"truncated", r"gzip"),
    "load_mnist(data_dir=3)": (lambda t: datasets.load_mnist(3), TypeError, r"load_mnist: data_dir",
                               r"got 3",
                               r"a path \(str or os\.PathLike\) or None"),
    "load_mnist of a file": (lambda t: (t / "f").write_text("x") and load_mnist(t / "f"),
                             ValueError,
                             r"load_mnist: .*/f", r"it is a file", r"must be a directory"),
    "load_mnist with a pickled cache": (lambda t: load_mnist(mnist_cache_pickle(t, zipped=False)),
                                        ValueError,
                                        r"load_mnist: .*mnist\.npz", r"pickled",
                                        r"not a valid MNIST cache"),
    "load_mnist with a gzipped pickled cache": (
        lambda t: load_mnist(mnist_cache_pickle(t, zipped=True)),
        ValueError, r"load_mnist: .*mnist\.npz", r"pickled",
        r"not a valid MNIST cache"),
    "load_mnist with object arrays in the cache": (
        lambda t: load_mnist(mnist_cache(t,
                                         x_train=np.array([Payload(t / "pwned")], dtype=object))),
        ValueError,
        r"load_mnist: .*mnist\.npz", r"Object arrays", r"not a valid MNIST cache"),
    "load_mnist with a cache of non-.npy zip members": (
        lambda t: load_mnist(zip_with(t / "cache", "mnist.npz",
                                      **{k: pickle.dumps(Payload(t / "pwned")) for k in (
            "x_train.npy", "y_train", "x_test", "y_test")}).parent), ValueError,
        r"load_mnist: .*mnist\.npz",
        r"\['x_train', 'y_train', 'x_test', 'y_test'\] are not \.npy arrays",
        r"not a valid MNIST cache"),
    "load_mnist with float images in the cache": (
        lambda t: load_mnist(mnist_cache(t, x_train=np.zeros((3, 28, 28), np.float32))), ValueError,
        r"load_mnist: .*mnist\.npz\[x_train\]", r"got float32", r"uint8 of shape \(N, H, W\)"),
    "load_mnist with labels out of 0..9 in the cache": (
        lambda t: load_mnist(mnist_cache(t, y_test=np.array([4, 200], np.uint8))), ValueError,
        r"load_mnist: .*mnist\.npz\[y_test\]", r"got \[4, 200\]", r"in 0\.\.9"),
    "load_mnist with 20x20 images in the cache": (
        lambda t: load_mnist(mnist_cache(t, x_test=np.zeros((2, 20, 20), np.uint8))), ValueError,
        r"load_mnist: .*mnist\.npz\[x_test\]", r"\(2, 20, 20\)", r"must be 28x28"),
    "iterate_minibatches batch_size=0": (
        lambda t: list(datasets.iterate_minibatches(np.zeros((3, 1)), np.zeros(3), 0)), ValueError,
        r"iterate_minibatches: batch_size", r"got 0", INT1),
    "iterate_minibatches x and y of different lengths": (
        lambda t: list(datasets.iterate_minibatches(np.zeros((3, 1)), np.zeros(2), 2)), ValueError,
        r"iterate_minibatches: x and y", r"shapes \(3, 1\) and \(2,\)", r"the same length"),
    "iterate_minibatches shuffle='no'": (
        lambda t: list(datasets.iterate_minibatches(np.zeros((3, 1)), np.zeros(3), 2,
                                                    shuffle="no")), TypeError,
        r"iterate_minibatches: shuffle", r"got 'no'", r"True or False"),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)
