"""Tests for cnn_im2col.datasets.idx: IDX files (raw and .gz) and directories of the four
MNIST-format files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from datasets_helpers import assert_dataset_equals, small_mnist, write_idx_dir

from cnn_im2col.datasets import IDX_NAMES, load_idx_dataset, read_idx, write_idx

# ------------------------------------------------------------------------------------------
# IDX files
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(5, 28, 28), (9,), (2, 3, 4, 5)])
def test_idx_round_trip_uint8(tmp_path, suffix, shape):
    array = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path / f"data-idx{len(shape)}-ubyte{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    else:
        assert path.read_bytes()[:4] == bytes([0, 0, 0x08, len(shape)])


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64, ">i4",
                                   ">f8"])
def test_idx_round_trip_other_dtypes(tmp_path, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    write_idx(tmp_path / "x.idx", array)
    back = read_idx(tmp_path / "x.idx")
    assert back.dtype.isnative and back.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_the_standard_one(tmp_path):
    labels = np.array([5, 0, 4], dtype=np.uint8)
    write_idx(tmp_path / "l", labels)
    assert (tmp_path / "l").read_bytes() == bytes.fromhex(
        "00000801 00000003 05 00 04".replace(" ", ""))


def test_write_idx_gz_is_deterministic(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


@pytest.mark.parametrize("array, error", [
    (np.zeros(3, dtype=np.int64), TypeError),
    (np.zeros(3, dtype=bool), TypeError),
    ([1, 2, 3], TypeError),
    (np.array(7, dtype=np.uint8), ValueError),
])
def test_write_idx_rejects(tmp_path, array, error):
    with pytest.raises(error, match="write_idx"):
        write_idx(tmp_path / "x", array)
    assert not (tmp_path / "x").exists()


def write_bytes(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


GOOD_HEADER = bytes([0, 0, 0x08, 3]) + b"".join(n.to_bytes(4, "big") for n in (2, 3, 3))  # 18 bytes


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("data, message", [
    (b"\x01\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc", "bad magic"),
    (b"\x00\x00\x07\x01" + (3).to_bytes(4, "big") + b"abc", "bad magic"),
    (b"\x00\x00\x08\x00", "bad magic"),
    (b"\x00\x00", "truncated"),
    (bytes([0, 0, 0x08, 3]) + (2).to_bytes(4, "big"), "truncated header"),
    (GOOD_HEADER + bytes(17), "truncated"),
    (GOOD_HEADER + bytes(19), "too long"),
    (GOOD_HEADER + bytes(24), "too long"),  # payload of a (2, 3, 4) array under (2, 3, 3) dims
    (GOOD_HEADER, "truncated"),
])
def test_read_idx_rejects_malformed(tmp_path, suffix, data, message):
    path = write_bytes(tmp_path, f"train-images-idx3-ubyte{suffix}", data)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_wrong_dims_message_names_shape(tmp_path):
    path = write_bytes(tmp_path, "x-idx3-ubyte", GOOD_HEADER + bytes(24))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 3\).*18 payload bytes.*24"):
        read_idx(path)


def test_read_idx_rejects_corrupt_gzip(tmp_path):
    array = np.arange(1000, dtype=np.uint8)
    good = tmp_path / "good.gz"
    write_idx(good, array)
    blob = bytearray(good.read_bytes())
    cases = {
        "not-gzip.gz": GOOD_HEADER + bytes(18),            # a raw file named .gz
        "truncated.gz": bytes(blob[: len(blob) // 2]),     # the stream stops early
        "flipped.gz": bytes(blob[:20]) + bytes(b ^ 0xFF for b in blob[20:30]) + bytes(blob[30:]),
        "bad-crc.gz": bytes(blob[:-8]) + bytes(4) + bytes(blob[-4:]),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match="gzip") as info:
            read_idx(path)
        assert str(path) in str(info.value), name


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope-idx1-ubyte"):
        read_idx(tmp_path / "nope-idx1-ubyte")


# ------------------------------------------------------------------------------------------
# load_idx_dataset
# ------------------------------------------------------------------------------------------


def test_load_idx_dataset(tmp_path):
    rng = np.random.default_rng(2)
    (trx, try_), _, (tex, tey) = small_mnist(rng, n_train=6, n_test=5)
    trx[0, 0, 0], trx[0, 0, 1] = 0, 255
    write_idx_dir(tmp_path, (trx, try_, tex, tey))
    (x_train, y_train), (x_test, y_test) = result = load_idx_dataset(tmp_path)
    assert x_train.shape == (6, 1, 28, 28) and x_test.shape == (5, 1, 28, 28)
    assert x_train[0, 0, 0, 0] == 0.0 and x_train[0, 0, 0, 1] == 1.0
    np.testing.assert_allclose(x_train[:, 0], trx / np.float32(255), rtol=0, atol=0)
    assert_dataset_equals(result, (trx, try_, tex, tey))
    assert y_train.dtype == y_test.dtype == np.int64


def test_load_idx_dataset_prefers_raw_over_gz(tmp_path):
    rng = np.random.default_rng(3)
    (trx, try_), _, (tex, tey) = small_mnist(rng, n_train=2, n_test=2)
    write_idx_dir(tmp_path, (trx, try_, tex, tey), gz=(False,) * 4)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([9, 9], dtype=np.uint8))
    (_, _), (_, y_test) = load_idx_dataset(tmp_path)
    np.testing.assert_array_equal(y_test, tey)


def test_load_idx_dataset_count_mismatch(tmp_path):
    rng = np.random.default_rng(4)
    (trx, try_), _, (tex, tey) = small_mnist(rng, n_train=6, n_test=5)
    write_idx_dir(tmp_path, (trx, try_[:5], tex, tey))
    with pytest.raises(ValueError, match="6 images.*5 labels") as info:
        load_idx_dataset(tmp_path)
    assert "train-labels-idx1-ubyte" in str(info.value)


def test_load_idx_dataset_rejects_bad_arrays(tmp_path):
    rng = np.random.default_rng(5)
    (trx, try_), _, (tex, tey) = small_mnist(rng, n_train=3, n_test=3)
    write_idx_dir(tmp_path, (trx.astype(np.float32), try_, tex, tey))
    with pytest.raises(ValueError, match="must be uint8"):
        load_idx_dataset(tmp_path)
    write_idx_dir(tmp_path, (trx, try_, tex[:, :20], tey))
    with pytest.raises(ValueError, match="train images are"):
        load_idx_dataset(tmp_path)


def test_load_idx_dataset_missing_files(tmp_path):
    write_idx(tmp_path / IDX_NAMES[0], np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_idx_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_idx_dataset(tmp_path / "absent")
