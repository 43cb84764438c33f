"""The IDX file format of MNIST, and directories holding the four MNIST-format files.

- ``read_idx(path)`` / ``write_idx(path, array)``: one IDX file, raw or ``.gz``.
- ``load_idx_dataset(directory)``: the four standard files (MNIST, Fashion-MNIST, ...) as
  ``(x_train, y_train), (x_test, y_test)``: images ``(N, 1, H, W)`` float32 in [0, 1] (the uint8
  pixel / 255), labels ``(N,)`` int64.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from math import prod
from pathlib import Path

import numpy as np

from .._files import atomic_write
from .dataset import as_path, to_unit_float

Split = tuple[np.ndarray, np.ndarray]


#: IDX type code (third magic byte) -> element dtype on disk (IDX is big-endian).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}
_ALLOWED_IDX = "uint8, int8, int16, int32, float32 or float64"


def _read_file_bytes(path: Path, owner: str) -> bytes:
    """The bytes of ``path``, gunzipped if its name ends in ``.gz``.

    Raises ``FileNotFoundError`` if it does not exist, ``ValueError`` for broken gzip data.
    """
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise ValueError(f"{owner}: {path}: gzip data is truncated (the stream ends "
                         f"early)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise ValueError(f"{owner}: {path}: not valid gzip data ({exc})") from None


def _parse_idx_header(data: bytes, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """Check the magic number ``00 00 <type> <ndim>`` and read the dims:
    ``(dtype, shape, offset)``."""
    if len(data) < 4:
        raise ValueError(f"read_idx: {path}: truncated: {len(data)} bytes, an IDX header needs at "
                         f"least 4")
    zero1, zero2, code, ndim = data[:4]
    if zero1 != 0 or zero2 != 0:
        raise ValueError(
            f"read_idx: {path}: bad magic number {data[:4].hex(' ')}: the first two bytes must be "
            f"00 00 (is it an IDX file?)"
        )
    if code not in _IDX_DTYPES:
        allowed = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(f"read_idx: {path}: bad magic number {data[:4].hex(' ')}: type code "
                         f"0x{code:02X} is not one of {allowed}")
    if ndim == 0:
        raise ValueError(f"read_idx: {path}: bad magic number {data[:4].hex(' ')}: ndim is 0, "
                         f"must be >= 1")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ValueError(f"read_idx: {path}: truncated header: {ndim} dimensions need {offset} "
                         f"bytes, the file has {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    return _IDX_DTYPES[code], shape, offset


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw, or gzipped if the name ends in ``.gz``) into a native-endian array.

    The shape is the file's dims, e.g. ``(60000, 28, 28)`` uint8 for ``train-images-idx3-ubyte``
    and ``(60000,)`` uint8 for ``train-labels-idx1-ubyte``. The result is a fresh writable array.

    Raises ``FileNotFoundError`` if the file is missing and ``ValueError`` naming the file if it is
    not a well-formed IDX file: bad magic number, truncated or over-long payload (the length must
    be exactly the product of the dims times the item size), or broken gzip data.
    """
    path = as_path(path, "path", "read_idx")
    data = _read_file_bytes(path, "read_idx")
    dtype, shape, offset = _parse_idx_header(data, path)
    expected = prod(shape) * dtype.itemsize
    got = len(data) - offset
    if got != expected:
        problem = "truncated" if got < expected else "too long"
        raise ValueError(
            f"read_idx: {path}: {problem}: the header declares shape {shape} of {dtype.name} "
            f"({expected} payload bytes), the file has {got} payload bytes"
        )
    array = np.frombuffer(data, dtype=dtype, count=prod(shape), offset=offset).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # always a copy: writable, native byte order


def idx_bytes(array: np.ndarray, owner: str = "write_idx") -> bytes:
    """The IDX serialisation of ``array``: magic, big-endian uint32 dims, big-endian payload."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{owner}: array must be a numpy ndarray, got {type(array).__name__}")
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"{owner}: array dtype must be {_ALLOWED_IDX}, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"{owner}: array must have 1 to 255 dimensions, got shape {array.shape}")
    if max(array.shape) >= 2**32:
        raise ValueError(f"{owner}: every dimension must be < 2**32, got shape {array.shape}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(_IDX_DTYPES[code], copy=False).tobytes(order="C")


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` (uint8, int8, int16, int32, float32 or float64; 1 to 255 dims) as an IDX
    file.

    Gzipped if the name ends in ``.gz`` (deterministic: no timestamp, no file name in the header).
    The write is atomic: the file is either the old one or the complete new one.
    """
    path = as_path(path, "path", "write_idx")
    data = idx_bytes(array)
    with atomic_write(path, "wb") as handle:
        if path.suffix == ".gz":
            with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) as gz:
                gz.write(data)
        else:
            handle.write(data)


# --- directories of MNIST-format files ------------------------------------------------------

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def find_idx_file(directory: Path, name: str) -> Path | None:
    """``directory/name`` if it exists, else ``directory/name.gz`` if that exists, else None."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def check_idx_split(images: np.ndarray, labels: np.ndarray, images_name: str,
                    labels_name: str) -> None:
    """Images must be uint8 ``(N, H, W)``, labels integer ``(N,)`` with the same ``N``."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{images_name}: images must be uint8 of shape (N, H, W), "
                         f"got {images.dtype} of shape {images.shape}")
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise ValueError(f"{labels_name}: labels must be integers of shape (N,), "
                         f"got {labels.dtype} of shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images_name} holds {images.shape[0]} images but {labels_name} holds "
                         f"{labels.shape[0]} labels; the counts must agree")


def as_splits(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
              y_test: np.ndarray) -> tuple[Split, Split]:
    """uint8 images and integer labels -> ``((x, y), (x, y))``, float32 NCHW and int64."""
    return ((to_unit_float(x_train), y_train.astype(np.int64)),
            (to_unit_float(x_test), y_test.astype(np.int64)))


def load_idx_dataset(directory: str | os.PathLike) -> tuple[Split, Split]:
    """Load the four standard MNIST-format files (raw or ``.gz``; raw wins if both exist).

    Returns ``(x_train, y_train), (x_test, y_test)``: images ``(N, 1, H, W)`` float32 in [0, 1]
    (uint8 / 255), labels ``(N,)`` int64. Works for any data set in the MNIST layout, e.g.
    Fashion-MNIST. Raises ``FileNotFoundError`` listing missing files and ``ValueError`` if the
    image and label counts disagree, the images are not uint8 ``(N, H, W)`` or the train and
    test images differ in size.
    """
    directory = as_path(directory, "directory", "load_idx_dataset")
    if not directory.is_dir():
        raise FileNotFoundError(f"load_idx_dataset: directory {str(directory)!r} does not exist")
    paths = [find_idx_file(directory, name) for name in IDX_NAMES]
    missing = [name for name, path in zip(IDX_NAMES, paths) if path is None]
    if missing:
        raise FileNotFoundError(f"load_idx_dataset: {directory} lacks {', '.join(missing)} "
                                f"(raw or .gz); it must hold all of {', '.join(IDX_NAMES)}")
    arrays = [read_idx(path) for path in paths]
    check_idx_split(arrays[0], arrays[1], str(paths[0]), str(paths[1]))
    check_idx_split(arrays[2], arrays[3], str(paths[2]), str(paths[3]))
    if arrays[0].shape[1:] != arrays[2].shape[1:]:
        raise ValueError(f"load_idx_dataset: train images are {arrays[0].shape[1:]} but test "
                         f"images are {arrays[2].shape[1:]} ({paths[0]}, {paths[2]}); they must "
                         f"agree")
    return as_splits(*arrays)

