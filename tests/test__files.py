"""atomic_write: the target is the old complete file or the new complete one, never half of one."""

import os
import stat
import subprocess
import sys

import pytest

from cnn_im2col._files import atomic_write


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "sub" / "model.npz"
    target.parent.mkdir()
    with atomic_write(target) as handle:
        handle.write(b"first")
    with atomic_write(target) as handle:
        handle.write(b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.npz"]


def test_a_missing_folder_is_an_error_and_is_never_made(tmp_path):
    target = tmp_path / "nowhere" / "model.npz"
    with pytest.raises(FileNotFoundError, match=r"model.npz: the folder .*nowhere does not exist"):
        with atomic_write(target) as handle:
            handle.write(b"x")
    assert not target.parent.exists()


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as handle:
        handle.write("half of the new")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f") as handle:
            handle.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644


def test_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError,
                       match="mode must be 'wb' or 'w', got 'a'"), atomic_write(
                           tmp_path / "f", "a"):
        pass


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "model.npz"
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait(timeout=60)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # its writer was killed mid-write
        orphan = tmp_path / f".model.npz.{finished.pid}.k2j3h4.tmp"
        in_progress = tmp_path / f".model.npz.{alive.pid}.x8y7z6.tmp"  # another process is writing
        # a different target's: not ours to judge
        other = tmp_path / f".other.npz.{finished.pid}.abcdef.tmp"
        for path in (orphan, in_progress, other):
            path.write_bytes(b"partial")
        with atomic_write(target) as handle:
            handle.write(b"complete")
        assert sorted(
            p.name for p in tmp_path.iterdir()) == sorted([target.name, in_progress.name,
                                                           other.name])
    finally:
        alive.kill()
        alive.wait(timeout=60)
