"""Atomic file writes (a reader sees the old complete file or the new complete file, never half of
one), and JSON/array entries of ``.npz`` files."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np


def path_text(path: Any, owner: str, name: str = "path") -> str:
    """``path`` (str or os.PathLike) as a str; TypeError naming ``owner`` and ``name`` otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"{owner}: {name} must be a str or os.PathLike, got {path!r} ({type(path).__name__})"
        )
    return os.fspath(path)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit fsync it and ``os.replace`` it into
    place. The folder must exist: a missing one is a FileNotFoundError naming it, not created.

    If the block raises (or the process dies), ``path`` is untouched and the temporary file is
    removed. A SIGKILL can leave the temporary file (``.NAME.PID.random.tmp``) behind, never a
    partial ``path``; the next write of ``path`` removes those whose process no longer exists.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    if not target.parent.is_dir():  # never make folders the caller did not ask for
        raise FileNotFoundError(f"{target}: the folder {target.parent} does not exist")
    _remove_orphans(target)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
    )
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _remove_orphans(target: Path) -> None:
    """Delete the temporary files of earlier writes of ``target`` whose writer process is gone
    (killed mid-write); a live writer's file (another process writing the same path) is kept."""
    prefix = f".{target.name}."
    for leftover in target.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid_text = leftover.name[len(prefix) :].split(".", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except (
        PermissionError,
        OverflowError,
    ):  # someone else's process / not a real pid: keep the file
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- JSON and arrays inside .npz files (model files and checkpoints) ----------------------------


def json_array(obj: Any) -> np.ndarray:
    """``obj`` as UTF-8 JSON in a 1-D uint8 array (an ``.npz`` entry readable without pickle)."""
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)


def npz_entry(npz: Any, key: str, path: str) -> np.ndarray:
    """``npz[key]`` as an ndarray, or a ValueError naming the file and the entry (object arrays,
    which would need pickle, members that are not .npy data, corrupt members)."""
    try:
        value = npz[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{path}: entry {key!r} cannot be read ({exc})") from None
    if not isinstance(value, np.ndarray):
        raise ValueError(
            f"{path}: entry {key!r} is not a .npy array (got {type(value).__name__}); "  # noqa: TRY004 - a bad file
            f"not a cnn-im2col model file"
        )
    return value


def npz_json(npz: Any, key: str, path: str) -> Any:
    """The JSON stored by :func:`json_array` at ``npz[key]``; a ValueError naming the file if
    broken."""
    raw = npz_entry(npz, key, path)
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"{key!r} must be a 1-D uint8 array, got {raw.dtype} {raw.shape}")
        return json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: {key!r} is not valid JSON ({exc})") from None
