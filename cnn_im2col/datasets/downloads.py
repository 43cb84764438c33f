"""Fetching files: a streamed HTTP(S)/file:// download with a progress bar, SHA-256 checks, and the
default one-line logger of the loaders."""

from __future__ import annotations

import hashlib
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def download(url: str, dest: Path, progress: bool, timeout: float) -> None:
    """Stream ``url`` into ``dest`` with a tqdm bar (on stderr, if ``progress``). ``timeout``
    bounds the connection and every stalled read, so a dead server costs seconds, not minutes."""
    request = urllib.request.Request(url, headers={"User-Agent": "cnn-im2col"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with dest.open("wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=dest.name,
                                          disable=not progress, file=sys.stderr,
                                          leave=False) as bar:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(digest: str, expected: str, what: str) -> None:
    """Raise ``ValueError`` (expected vs got) unless ``digest == expected``."""
    if digest != expected:
        raise ValueError(f"SHA-256 mismatch for {what}: expected {expected}, got {digest}; "
                         f"the file was rejected")
