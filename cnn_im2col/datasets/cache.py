"""Where the engine caches data (never in a data folder), and the cache of decoded images.

- ``cache_root()``: ``$CNN_IM2COL_CACHE`` if set, else ``platformdirs.user_cache_dir("cnn-im2col")``
  (on Linux ``~/.cache/cnn-im2col``). MNIST is cached in ``mnist/``, CIFAR-10 in ``cifar-10/``,
  decoded image folders in ``decoded/``.
- ``files_key(root, files, settings)``: a hex key for a list of files: the SHA-256 of their names
  relative to ``root``, sizes and modification times (ns), and ``settings`` (e.g. the image size).
  Touching, adding, removing or renaming a file changes the key.
- ``read_cached(path, count)`` / ``write_cached(path, images)``: a ``uint8 (N, C, H, W)`` array in
  an ``.npz``, read with ``allow_pickle=False``, written atomically.

Stale entries (of files since changed) are not pruned; deleting ``decoded/`` is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs

from .._files import atomic_write

CACHE_ENV = "CNN_IM2COL_CACHE"
CACHE_FORMAT = 1  # part of every key: bump it when the decoded arrays change meaning


def cache_root() -> Path:
    """``$CNN_IM2COL_CACHE``, else the per-user cache directory of cnn-im2col (may not exist)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    return Path(platformdirs.user_cache_dir("cnn-im2col"))


def files_key(root: Path, files: Sequence[Path], settings: dict[str, Any]) -> str:
    """The hex SHA-256 of ``files``' paths relative to ``root`` (POSIX form, in the given order),
    their sizes and modification times in ns, and the JSON of ``settings``."""
    entries = []
    for path in files:
        stat = path.stat()
        entries.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    blob = json.dumps({"format": CACHE_FORMAT, "settings": settings, "files": entries},
                      sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_cached(path: Path, count: int) -> np.ndarray | None:
    """The ``uint8 (count, C, H, W)`` images cached at ``path`` (C is 1 or 3), or None if there is
    no such file or it is not a valid entry (a broken entry is a miss: it is decoded again)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            images = npz["images"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
    valid = (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
             and images.shape[0] == count and images.shape[1] in (1, 3))
    return images if valid else None


def write_cached(path: Path, images: np.ndarray) -> None:
    """Write ``images`` (uint8 ``(N, C, H, W)``) to ``path`` atomically (uncompressed: it loads in
    milliseconds); the cache's own directory is created if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        np.savez(handle, images=images)
