"""CIFAR-10 and CIFAR-100 in their binary versions, and ``load_cifar10`` (fetch, verify, cache).

The binary files (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version, suitable for C
programs") are sequences of fixed-size records, each a label and a 32x32 colour image stored
channel by channel (1024 red, 1024 green, 1024 blue bytes, each plane row-major: CHW):

- CIFAR-10 (folder ``cifar-10-batches-bin``): ``data_batch_1.bin`` .. ``data_batch_5.bin``
  (training, 10,000 records each) and ``test_batch.bin`` (10,000); a record is 1 label byte + 3072
  pixel bytes (3073 bytes). ``batches.meta.txt`` names the classes, one a line (blank lines
  ignored); without it the ten canonical names are used.
- CIFAR-100 (folder ``cifar-100-binary``): ``train.bin`` (50,000) and ``test.bin`` (10,000); a
  record is 2 label bytes (coarse, fine) + 3072 pixel bytes (3074 bytes). The labels used are the
  fine ones, named by ``fine_label_names.txt`` (required).

``open_cifar10_dir`` / ``open_cifar100_dir`` read a folder as a ``Dataset`` (images
``(N, 3, 32, 32)`` float32 in [0, 1]); ``find_cifar10_dir`` / ``find_cifar100_dir`` say whether a
folder (or its ``cifar-10-batches-bin`` / ``cifar-100-binary`` subfolder) holds one.

Where ``load_cifar10`` finds CIFAR-10
-------------------------------------
The directory is ``cifar10_directory(data_dir)``: ``data_dir``, else ``$CNN_IM2COL_DATA``, else
``cache_root()/cifar-10`` (``$CNN_IM2COL_CACHE`` or the per-user cache). If it (or its
``cifar-10-batches-bin`` subfolder) holds the files, they are read as they are. Otherwise the
canonical archive ``cifar-10-binary.tar.gz`` is taken from the directory itself (a copy the user
put there) or downloaded from ``CIFAR10_URLS`` into a temporary folder; its SHA-256 is checked
against the pinned ``_SHA256``, every member is checked before anything is extracted
(``archives.extract_tar``: no absolute paths, no ``..``, no links or devices), the files are
read and checked, and only then is ``cifar-10-batches-bin`` moved into the directory (one
rename). A failure leaves nothing behind and says where to put the files by hand.

Tests swap ``CIFAR10_URLS`` and ``_SHA256``.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import tempfile
from pathlib import Path

import numpy as np

from .archives import extract_tar
from .cache import cache_root
from .dataset import Dataset, as_path, to_unit_float
from .downloads import Log, check_sha256, download, sha256_file, stderr_log

IMAGE_SHAPE = (3, 32, 32)
PIXEL_BYTES = 3 * 32 * 32

CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST = "test_batch.bin"
CIFAR10_META = "batches.meta.txt"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")

CIFAR100_FOLDER = "cifar-100-binary"
CIFAR100_TRAIN = "train.bin"
CIFAR100_TEST = "test.bin"
CIFAR100_META = "fine_label_names.txt"

CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_URLS = ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]
CIFAR10_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
DOWNLOAD_TIMEOUT_S = 10.0  # per connection / per stalled read

#: SHA-256 of the canonical archive (170,052,171 bytes; its MD5 c32a1d4ab5d03f1284b67883e8d87530
#: is the one the CIFAR page publishes).
_SHA256 = {
    CIFAR10_ARCHIVE: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
}


# --- reading the binary files ----------------------------------------------------------------


def read_cifar_records(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """The records of one binary file: images uint8 ``(N, 3, 32, 32)`` and labels uint8
    ``(N, label_bytes)``. ``ValueError`` naming the file if its size is not a whole, non-zero
    number of ``label_bytes + 3072``-byte records."""
    record = label_bytes + PIXEL_BYTES
    size = path.stat().st_size
    if size == 0 or size % record:
        layout = f"{label_bytes} label byte{'s' if label_bytes > 1 else ''} + {PIXEL_BYTES} pixels"
        raise ValueError(f"{path}: {size} bytes is not a whole number of {record}-byte CIFAR "
                         f"records ({layout}); is the file truncated?")
    data = np.fromfile(path, dtype=np.uint8).reshape(-1, record)
    images = np.ascontiguousarray(data[:, label_bytes:]).reshape(-1, *IMAGE_SHAPE)
    return images, np.ascontiguousarray(data[:, :label_bytes])


def read_class_names(path: Path) -> tuple[str, ...]:
    """The non-blank lines of a CIFAR names file, stripped; ``ValueError`` if there are none."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text file of class names ({exc})") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise ValueError(f"{path}: holds no class names (expected one name a line)")
    return names


def _check_labels(labels: np.ndarray, names: tuple[str, ...], path: Path, names_from: str) -> None:
    if labels.size and int(labels.max()) >= len(names):
        record = int(np.argmax(labels >= len(names)))
        raise ValueError(f"{path}: record {record} has label {int(labels[record])}, but "
                         f"{names_from} names only {len(names)} classes (labels 0.."
                         f"{len(names) - 1})")


def _require(directory: Path, names: tuple[str, ...], kind: str) -> None:
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} looks like {kind} but lacks {', '.join(missing)}; "
                                f"it must hold all of {', '.join(names)}")


def _holds_any(directory: Path, names: tuple[str, ...]) -> bool:
    return any((directory / name).is_file() for name in names)


def find_cifar10_dir(directory: Path) -> Path | None:
    """``directory`` or its ``cifar-10-batches-bin`` subfolder, whichever holds any CIFAR-10 batch
    file; None if neither does."""
    for candidate in (directory, directory / CIFAR10_FOLDER):
        if _holds_any(candidate, (*CIFAR10_TRAIN, CIFAR10_TEST)):
            return candidate
    return None


def find_cifar100_dir(directory: Path) -> Path | None:
    """``directory`` or its ``cifar-100-binary`` subfolder, whichever holds ``train.bin`` or
    ``test.bin``; None if neither does."""
    for candidate in (directory, directory / CIFAR100_FOLDER):
        if _holds_any(candidate, (CIFAR100_TRAIN, CIFAR100_TEST)):
            return candidate
    return None


def open_cifar10_dir(directory: str | os.PathLike) -> Dataset:
    """CIFAR-10's binary files in ``directory`` as a ``Dataset`` (kind "cifar10").

    ``FileNotFoundError`` naming the missing batch files; ``ValueError`` naming the file for a
    size that is not a whole number of 3073-byte records or a label without a class name.
    """
    directory = as_path(directory, "directory", "open_cifar10_dir")
    _require(directory, (*CIFAR10_TRAIN, CIFAR10_TEST), "CIFAR-10's binary version")
    meta = directory / CIFAR10_META
    names = read_class_names(meta) if meta.is_file() else CIFAR10_CLASSES
    names_from = str(meta) if meta.is_file() else "CIFAR-10's canonical class list"
    splits = []
    for files in (CIFAR10_TRAIN, (CIFAR10_TEST,)):
        parts = []
        for name in files:
            images, labels = read_cifar_records(directory / name, label_bytes=1)
            _check_labels(labels[:, 0], names, directory / name, names_from)
            parts.append((images, labels[:, 0]))
        splits.append((np.concatenate([p[0] for p in parts]),
                       np.concatenate([p[1] for p in parts])))
    return _dataset("cifar10", splits, names, directory)


def open_cifar100_dir(directory: str | os.PathLike) -> Dataset:
    """CIFAR-100's binary files in ``directory`` as a ``Dataset`` (kind "cifar100", the 100 fine
    labels). ``FileNotFoundError`` naming missing files; ``ValueError`` as for CIFAR-10 (records
    of 3074 bytes)."""
    directory = as_path(directory, "directory", "open_cifar100_dir")
    _require(directory, (CIFAR100_TRAIN, CIFAR100_TEST, CIFAR100_META),
             "CIFAR-100's binary version")
    names = read_class_names(directory / CIFAR100_META)
    splits = []
    for name in (CIFAR100_TRAIN, CIFAR100_TEST):
        images, labels = read_cifar_records(directory / name, label_bytes=2)
        _check_labels(labels[:, 1], names, directory / name, str(directory / CIFAR100_META))
        splits.append((images, labels[:, 1]))
    return _dataset("cifar100", splits, names, directory)


def _dataset(kind: str, splits: list[tuple[np.ndarray, np.ndarray]], names: tuple[str, ...],
             directory: Path) -> Dataset:
    (x_train, y_train), (x_test, y_test) = splits
    return Dataset(kind=kind, x_train=to_unit_float(x_train), y_train=y_train.astype(np.int64),
                   x_test=to_unit_float(x_test), y_test=y_test.astype(np.int64),
                   classes=names, source=directory)


# --- load_cifar10: fetch, verify, extract, cache ---------------------------------------------


def cifar10_directory(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory ``load_cifar10`` uses: ``data_dir``, else ``$CNN_IM2COL_DATA``, else
    ``cache_root() / "cifar-10"``. It need not exist yet."""
    if data_dir is not None:
        return as_path(data_dir, "data_dir", "load_cifar10")
    if os.environ.get("CNN_IM2COL_DATA"):
        return Path(os.environ["CNN_IM2COL_DATA"])
    return cache_root() / "cifar-10"


def _by_hand(directory: Path) -> str:
    return (f"To install CIFAR-10 by hand, download {CIFAR10_ARCHIVE} (the binary version on "
            f"{CIFAR10_PAGE}; SHA-256 {_SHA256[CIFAR10_ARCHIVE]}) and put it at "
            f"{directory / CIFAR10_ARCHIVE} (it is checked and extracted on the next call), or "
            f"extract it yourself so that {directory / CIFAR10_FOLDER} holds "
            f"{', '.join(CIFAR10_TRAIN)}, {CIFAR10_TEST} and {CIFAR10_META}; or pass data_dir= "
            f"(or set CNN_IM2COL_DATA to) a folder holding those files.")


def _install(archive: Path, directory: Path, what: str) -> Dataset:
    """Verify ``archive``, extract it next to ``directory/cifar-10-batches-bin``, read the files,
    then move the folder into place; the data set read."""
    check_sha256(sha256_file(archive), _SHA256[CIFAR10_ARCHIVE], what)
    with tempfile.TemporaryDirectory(prefix=".cnn-im2col-extract-", dir=directory) as scratch:
        extract_tar(archive, Path(scratch))
        extracted = Path(scratch) / CIFAR10_FOLDER
        if not extracted.is_dir():
            raise ValueError(f"{what}: the archive holds no {CIFAR10_FOLDER}/ folder")
        data = open_cifar10_dir(extracted)  # every file read and checked before it is kept
        os.replace(extracted, directory / CIFAR10_FOLDER)
    return dataclasses.replace(data, source=directory / CIFAR10_FOLDER)


def _fetch_cifar10(directory: Path, progress: bool, log: Log) -> Dataset:
    """Install CIFAR-10 into ``directory`` from a local archive or the first URL that works.

    Raises ``ValueError`` if any archive was rejected (and none accepted), else
    ``ConnectionError``; the message lists every attempt and says where to put the files.
    """
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    failures = []
    local = directory / CIFAR10_ARCHIVE
    if local.is_file():
        log(f"load_cifar10: checking {local}")
        try:
            return _install(local, directory, str(local))
        except (OSError, ValueError) as exc:
            failures.append((str(local), exc))
            log(f"load_cifar10: {local} was not used: {exc}")
    for url in CIFAR10_URLS:
        with tempfile.TemporaryDirectory(prefix="cnn-im2col-fetch-") as workdir:
            archive = Path(workdir) / CIFAR10_ARCHIVE
            try:
                log(f"load_cifar10: fetching {url}")
                download(url, archive, progress, DOWNLOAD_TIMEOUT_S)
                data = _install(archive, directory, url)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                failures.append((url, exc))
                log(f"load_cifar10: {url} failed ({type(exc).__name__}: {exc})")
                continue
        log(f"load_cifar10: CIFAR-10 verified (SHA-256) and cached in {data.source}")
        return data
    if created and not any(directory.iterdir()):
        directory.rmdir()
    rejected = any(isinstance(exc, ValueError) for _, exc in failures)
    error = ValueError if rejected else ConnectionError
    reasons = "\n".join(f"  - {where}: {type(exc).__name__}: {exc}" for where, exc in failures)
    raise error(f"load_cifar10: could not obtain CIFAR-10; nothing was written to {directory}.\n"
                f"{reasons}\n{_by_hand(directory)}")


def load_cifar10(data_dir: str | os.PathLike | None = None, progress: bool = True,
                 log: Log | None = None) -> Dataset:
    """CIFAR-10 as a ``Dataset`` (kind "cifar10"), fetched, verified and cached on first use.

    ``x_train`` (50000, 3, 32, 32) and ``x_test`` (10000, 3, 32, 32) float32 in [0, 1];
    ``y_train`` / ``y_test`` int64 in 0..9; ``classes`` from ``batches.meta.txt``. Where the data
    is looked for and how it is fetched: see the module docstring. ``progress`` shows a download
    bar; ``log`` receives one-line messages (default: stderr). ``dataset.splits()`` gives the
    ``(x_train, y_train), (x_test, y_test)`` form of ``load_mnist``.
    """
    log = stderr_log if log is None else log
    directory = cifar10_directory(data_dir)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"load_cifar10: {directory} must be a directory, it is a file")
    found = find_cifar10_dir(directory) if directory.is_dir() else None
    if found is not None:
        return open_cifar10_dir(found)
    log(f"load_cifar10: no CIFAR-10 files in {directory}; fetching CIFAR-10 (once, 170 MB)")
    return _fetch_cifar10(directory, progress, log)
