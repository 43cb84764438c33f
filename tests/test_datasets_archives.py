"""Tests for cnn_im2col.datasets.archives: every member checked before anything is extracted."""

from __future__ import annotations

import io
import tarfile

import pytest

from cnn_im2col.datasets.archives import extract_tar


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"data") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_special(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    tar.addfile(info)


UNSAFE = {
    "absolute path": (lambda tar: add_file(tar, "/tmp/cnn-im2col-evil"), "absolute path"),
    "drive letter": (lambda tar: add_file(tar, "C:/evil"), "absolute path"),
    "dot-dot": (lambda tar: add_file(tar, "ok/../../evil"), "contains '..'"),
    "symbolic link": (lambda tar: add_special(tar, "ok/link", tarfile.SYMTYPE, "/etc/passwd"),
                      "is a symbolic link"),
    "hard link": (lambda tar: add_special(tar, "ok/hard", tarfile.LNKTYPE, "ok/a.bin"),
                  "is a hard link"),
    "character device": (lambda tar: add_special(tar, "ok/dev", tarfile.CHRTYPE), "is a device"),
    "fifo": (lambda tar: add_special(tar, "ok/fifo", tarfile.FIFOTYPE), "is a FIFO"),
}


@pytest.mark.parametrize("what", sorted(UNSAFE))
def test_one_unsafe_member_refuses_the_whole_archive(tmp_path, what):
    add, message = UNSAFE[what]
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_file(tar, "ok/a.bin")  # a safe member first: it must not be extracted either
        add(tar)
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(ValueError, match=message) as info:
        extract_tar(archive, target)
    assert str(archive) in str(info.value)
    assert list(target.iterdir()) == []


def test_a_safe_archive_is_extracted(tmp_path):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        add_file(tar, "top/x.bin", b"x" * 10)
        add_file(tar, "top/sub/y.txt", b"y")
    target = tmp_path / "target"
    target.mkdir()
    assert extract_tar(archive, target) == ["top/x.bin", "top/sub/y.txt"]
    assert (target / "top" / "x.bin").read_bytes() == b"x" * 10
    assert (target / "top" / "sub" / "y.txt").read_bytes() == b"y"


def test_a_file_that_is_not_a_tar_archive_is_a_value_error(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"\x1f\x8b" + bytes(50))
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(ValueError, match="not a readable tar archive"):
        extract_tar(archive, target)
