"""Tests for cnn_im2col.datasets.cifar: CIFAR-10/100 binary files written by the tests, and
load_cifar10 fetching a small archive the tests build (its SHA-256 swapped into the pins)."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
from datasets_helpers import cifar_records, snapshot, write_cifar10, write_cifar100

from cnn_im2col.datasets import cifar, load_cifar10, open_cifar10_dir, open_cifar100_dir


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """No test reads or writes the real user cache or a $CNN_IM2COL_DATA of the machine."""
    monkeypatch.setenv("CNN_IM2COL_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.delenv("CNN_IM2COL_DATA", raising=False)


def as_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(x * 255).astype(np.uint8)


# --- reading the binary files ------------------------------------------------------------------


def test_cifar10_folder_is_read_as_chw_images_and_labels(tmp_path):
    written = write_cifar10(tmp_path / "c10")
    data = open_cifar10_dir(tmp_path / "c10")
    assert data.kind == "cifar10"
    assert data.x_train.shape == (15, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    np.testing.assert_array_equal(as_uint8(data.x_train), written["x_train"])
    np.testing.assert_array_equal(as_uint8(data.x_test), written["x_test"])
    np.testing.assert_array_equal(data.y_train, written["y_train"])
    np.testing.assert_array_equal(data.y_test, written["y_test"])
    assert data.classes[:3] == ("airplane", "automobile", "bird") and len(data.classes) == 10


def test_cifar_record_layout_is_label_then_red_green_blue_planes(tmp_path):
    record = bytes([7]) + bytes([10] * 1024 + [20] * 1024 + [30] * 1024)
    (tmp_path / "one.bin").write_bytes(record)
    images, labels = cifar.read_cifar_records(tmp_path / "one.bin", label_bytes=1)
    assert images.shape == (1, 3, 32, 32) and labels.tolist() == [[7]]
    assert images[0, :, 5, 9].tolist() == [10, 20, 30]


def test_cifar10_class_names_come_from_the_meta_file(tmp_path):
    names = [f"kind {k}" for k in range(10)]
    write_cifar10(tmp_path, names=names)
    assert open_cifar10_dir(tmp_path).classes == tuple(names)
    (tmp_path / "batches.meta.txt").unlink()  # without it: the canonical names
    assert open_cifar10_dir(tmp_path).classes == cifar.CIFAR10_CLASSES


def test_cifar100_folder_uses_the_fine_labels(tmp_path):
    written = write_cifar100(tmp_path / "c100")
    data = open_cifar100_dir(tmp_path / "c100")
    assert data.kind == "cifar100" and len(data.classes) == 100 and data.classes[3] == "fine3"
    np.testing.assert_array_equal(data.y_train, written["y_train"])
    np.testing.assert_array_equal(data.y_test, written["y_test"])
    np.testing.assert_array_equal(as_uint8(data.x_test), written["x_test"])


@pytest.mark.parametrize("extra", [-1, 1, 3072, -3072])
def test_a_file_that_is_not_whole_records_is_refused(tmp_path, extra):
    write_cifar10(tmp_path)
    victim = tmp_path / "data_batch_3.bin"
    data = victim.read_bytes()
    victim.write_bytes(data[:extra] if extra < 0 else data + bytes(extra))
    with pytest.raises(ValueError, match="not a whole number of 3073-byte CIFAR records") as info:
        open_cifar10_dir(tmp_path)
    assert str(victim) in str(info.value)


def test_a_cifar100_file_that_is_not_whole_records_is_refused(tmp_path):
    write_cifar100(tmp_path)
    (tmp_path / "test.bin").write_bytes((tmp_path / "test.bin").read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"test\.bin: .*3074-byte CIFAR records"):
        open_cifar100_dir(tmp_path)


def test_an_empty_batch_file_is_refused(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "test_batch.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"test_batch\.bin: 0 bytes"):
        open_cifar10_dir(tmp_path)


def test_a_label_without_a_class_name_is_refused(tmp_path):
    write_cifar10(tmp_path, names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"record \d+ has label \d+, but .*batches\.meta\.txt "
                                         r"names only 3 classes"):
        open_cifar10_dir(tmp_path)


def test_missing_batch_files_are_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_4.bin").unlink()
    with pytest.raises(FileNotFoundError, match="lacks data_batch_4.bin"):
        open_cifar10_dir(tmp_path)


def test_find_looks_in_the_folder_and_its_canonical_subfolder(tmp_path):
    assert cifar.find_cifar10_dir(tmp_path) is None
    write_cifar10(tmp_path / "cifar-10-batches-bin")
    assert cifar.find_cifar10_dir(tmp_path) == tmp_path / "cifar-10-batches-bin"
    write_cifar100(tmp_path / "cifar-100-binary")
    assert cifar.find_cifar100_dir(tmp_path) == tmp_path / "cifar-100-binary"


# --- load_cifar10: a small archive built here ------------------------------------------------


def build_archive(path: Path, source: Path, prefix: str = "cifar-10-batches-bin") -> str:
    """``source``'s files as ``prefix/<name>`` in a tar.gz at ``path``; its SHA-256."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source, arcname=prefix)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def archive(tmp_path, monkeypatch):
    """A small CIFAR-10 tar.gz served at a file:// URL, its SHA-256 pinned."""
    written = write_cifar10(tmp_path / "source")
    served = tmp_path / "server" / "cifar-10-binary.tar.gz"
    served.parent.mkdir()
    digest = build_archive(served, tmp_path / "source")
    monkeypatch.setitem(cifar._SHA256, cifar.CIFAR10_ARCHIVE, digest)
    monkeypatch.setattr(cifar, "CIFAR10_URLS", [served.as_uri()])
    return served, written


def test_load_cifar10_fetches_verifies_extracts_and_caches(archive, tmp_path):
    served, written = archive
    messages = []
    data = load_cifar10(progress=False, log=messages.append)
    target = tmp_path / "user-cache" / "cifar-10"
    assert data.source == target / "cifar-10-batches-bin"
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-batches-bin"]
    np.testing.assert_array_equal(as_uint8(data.x_train), written["x_train"])
    np.testing.assert_array_equal(data.y_test, written["y_test"])
    assert any("verified" in m for m in messages)
    served.unlink()  # the second call reads the cache only
    again = load_cifar10(progress=False, log=messages.append)
    np.testing.assert_array_equal(again.x_test, data.x_test)


def test_load_cifar10_reads_a_given_folder_as_it_is(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "mine")
    monkeypatch.setattr(cifar, "CIFAR10_URLS", [])
    before = snapshot(tmp_path / "mine")
    assert load_cifar10(tmp_path / "mine", progress=False, log=print).y_train.shape == (15,)
    monkeypatch.setenv("CNN_IM2COL_DATA", str(tmp_path / "mine"))
    assert load_cifar10(progress=False, log=print).y_test.shape == (4,)
    assert snapshot(tmp_path / "mine") == before


def test_an_archive_the_user_put_in_the_folder_is_checked_and_used(archive, tmp_path,
                                                                      monkeypatch):
    served, written = archive
    monkeypatch.setattr(cifar, "CIFAR10_URLS", [])
    target = tmp_path / "by-hand"
    target.mkdir()
    (target / "cifar-10-binary.tar.gz").write_bytes(served.read_bytes())
    data = load_cifar10(target, progress=False, log=lambda m: None)
    np.testing.assert_array_equal(data.y_train, written["y_train"])
    assert (target / "cifar-10-batches-bin" / "test_batch.bin").is_file()


def test_a_checksum_mismatch_rejects_the_archive_and_leaves_nothing(archive, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setitem(cifar._SHA256, cifar.CIFAR10_ARCHIVE, "0" * 64)
    target = tmp_path / "target"
    with pytest.raises(ValueError, match="SHA-256 mismatch") as info:
        load_cifar10(target, progress=False, log=lambda m: None)
    message = str(info.value)
    assert f"expected {'0' * 64}" in message and "nothing was written" in message
    assert not target.exists()


def test_unreachable_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "CIFAR10_URLS", [(tmp_path / "nowhere.tar.gz").as_uri()])
    target = tmp_path / "target"
    with pytest.raises(ConnectionError) as info:
        load_cifar10(target, progress=False, log=lambda m: None)
    message = str(info.value)
    assert "nowhere.tar.gz" in message
    assert str(target / "cifar-10-binary.tar.gz") in message
    assert str(target / "cifar-10-batches-bin") in message and "data_batch_1.bin" in message
    assert cifar._SHA256[cifar.CIFAR10_ARCHIVE] in message and "CNN_IM2COL_DATA" in message
    assert not target.exists()


def test_an_archive_with_a_corrupt_batch_is_not_kept(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "source")
    victim = tmp_path / "source" / "test_batch.bin"
    victim.write_bytes(victim.read_bytes()[:-1])
    served = tmp_path / "cifar-10-binary.tar.gz"
    monkeypatch.setitem(cifar._SHA256, cifar.CIFAR10_ARCHIVE,
                        build_archive(served, tmp_path / "source"))
    monkeypatch.setattr(cifar, "CIFAR10_URLS", [served.as_uri()])
    target = tmp_path / "target"
    with pytest.raises(ValueError, match=r"test_batch\.bin: .*not a whole number"):
        load_cifar10(target, progress=False, log=lambda m: None)
    assert not target.exists()


def test_an_archive_with_a_link_is_refused_before_anything_is_extracted(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "source")
    served = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(served, "w:gz") as tar:
        tar.add(tmp_path / "source", arcname="cifar-10-batches-bin")
        link = tarfile.TarInfo("cifar-10-batches-bin/readme.html")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    monkeypatch.setitem(cifar._SHA256, cifar.CIFAR10_ARCHIVE,
                        hashlib.sha256(served.read_bytes()).hexdigest())
    monkeypatch.setattr(cifar, "CIFAR10_URLS", [served.as_uri()])
    target = tmp_path / "target"
    with pytest.raises(ValueError, match="readme.html' is a symbolic link"):
        load_cifar10(target, progress=False, log=lambda m: None)
    assert not target.exists()


def test_records_helper_matches_the_reader(tmp_path):
    data, images = cifar_records([(1, 2), (3, 4)], label_bytes=2)
    (tmp_path / "x.bin").write_bytes(data)
    back, labels = cifar.read_cifar_records(tmp_path / "x.bin", label_bytes=2)
    np.testing.assert_array_equal(back, images)
    assert labels.tolist() == [[1, 2], [3, 4]] and len(data) == 2 * 3074
