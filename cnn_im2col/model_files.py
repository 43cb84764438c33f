"""The model file: one ``.npz`` holding a network's architecture and arrays.

A model file (read with ``allow_pickle=False``, written atomically) holds

- ``"__model__"``: UTF-8 JSON as a uint8 array,
  ``{"format": "cnn-im2col.Sequential", "version": 1, "layers": [{"class": ..., "config": ...}]}``;
- ``"param:{index}.{name}"``: every parameter array, in its dtype;
- ``"buffer:{index}.{name}"``: every buffer (state that is saved but not trained, e.g.
  ``BatchNorm2D``'s running statistics), in its dtype.

Formats built on it add entries under their own names: a checkpoint
(:mod:`cnn_im2col.checkpoint`) adds the optimizer's arrays and the training state, under the
names listed in :data:`RESERVED`. A model reader skips those, so a checkpoint reads as a model.

This module knows the file, not the model class: it takes any object with ``config()``,
``params`` and ``buffers``, and is given the function that builds a model from a config.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from ._files import atomic_write, json_array, npz_entry, npz_json

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "RESERVED",
    "model_arrays",
    "open_npz",
    "read_model",
    "write_arrays",
]

FORMAT = "cnn-im2col.Sequential"
FORMAT_VERSION = 1
MODEL_KEY = "__model__"
PARAM_PREFIX = "param:"
BUFFER_PREFIX = "buffer:"
#: Entry names (or prefixes) that formats built on the model file use; a model reader skips them.
RESERVED = ("optim:", "__training__")


def model_arrays(model: Any) -> dict[str, np.ndarray]:
    """Every entry of ``model``'s file: the architecture as JSON, its parameters and buffers."""
    header = {"format": FORMAT, "version": FORMAT_VERSION, **model.config()}
    arrays = {MODEL_KEY: json_array(header)}
    for key, value in model.params.items():
        arrays[PARAM_PREFIX + key] = np.ascontiguousarray(value)
    for key, value in model.buffers.items():  # not ascontiguousarray: it makes a 0-d counter 1-d
        arrays[BUFFER_PREFIX + key] = np.asarray(value, order="C")
    return arrays


def write_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as one ``.npz``, atomically."""
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)


def open_npz(path_text: str) -> Any:
    """Open a model file (or checkpoint) for reading; ValueError naming the file if it is none."""
    if not os.path.isfile(path_text):
        raise FileNotFoundError(f"{path_text}: no such model file")
    with open(path_text, "rb") as handle:
        magic = handle.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise ValueError(
            f"{path_text}: a .npy file (a single array), not a cnn-im2col model file (.npz)"
        )
    if magic.startswith(b"\x80"):  # np.load would advise allow_pickle=True: never here
        raise ValueError(
            f"{path_text}: a pickled file, not a cnn-im2col model file (model files are "
            f".npz archives and are never unpickled)"
        )
    if not magic.startswith(b"PK"):  # not a zip archive: np.load would try to unpickle it
        raise ValueError(
            f"{path_text}: not a cnn-im2col model file: a model file is an .npz (zip) "
            f"archive, and this file is not one"
        )
    try:
        npz = np.load(path_text, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path_text}: not a cnn-im2col model file (.npz): {exc}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{path_text}: a .npy file (a single array), "  # noqa: TRY004 - a bad file
            "not a cnn-im2col model file (.npz)"
        )
    return npz


def read_model(npz: Any, path: str, build: Callable[[dict, str], Any]) -> Any:
    """The model stored in an open model file: ``build(header, path)`` makes it from its config,
    then every parameter and buffer is checked (names, shapes, kinds, finite) and copied in."""
    files = set(npz.files)
    if MODEL_KEY not in files:
        raise ValueError(f"{path}: not a cnn-im2col model file: it has no {MODEL_KEY!r} entry")
    header = npz_json(npz, MODEL_KEY, path)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else header
        raise ValueError(f"{path}: not a cnn-im2col model file (format {found!r})")
    version = header.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ValueError(
            f"{path}: model format version {version!r} is not supported (this version "
            f"reads 1..{FORMAT_VERSION}); upgrade cnn-im2col"
        )
    model = build(header, str(path))
    expected = model.params
    stored = {key[len(PARAM_PREFIX) :] for key in files if key.startswith(PARAM_PREFIX)}
    unknown = sorted(
        key
        for key in files
        if not key.startswith((PARAM_PREFIX, BUFFER_PREFIX, *RESERVED)) and key != MODEL_KEY
    )
    missing = sorted(set(expected) - stored)
    extra = sorted(stored - set(expected))
    if missing or extra or unknown:
        raise ValueError(
            f"{path}: the arrays do not match the architecture: missing parameters "
            f"{missing}, unexpected parameters {extra}, unknown entries {unknown}"
        )
    for key, target in expected.items():
        value = npz_entry(npz, PARAM_PREFIX + key, path)
        if value.shape != target.shape:
            raise ValueError(
                f"{path}: parameter {key!r} has shape {value.shape}, the architecture "
                f"needs {target.shape}"
            )
        if value.dtype.kind != "f":
            raise ValueError(f"{path}: parameter {key!r} has dtype {value.dtype}, it must be float")
        if not np.isfinite(value).all():
            raise ValueError(f"{path}: parameter {key!r} contains NaN or Inf")
        np.copyto(target, value, casting="same_kind")
    _read_buffers(model.buffers, npz, files, path)
    return model


def _read_buffers(expected: dict[str, np.ndarray], npz: Any, files: set, path: str) -> None:
    """Copy the file's ``buffer:`` arrays into the model's, checking names, shapes and kinds."""
    stored = {key[len(BUFFER_PREFIX) :] for key in files if key.startswith(BUFFER_PREFIX)}
    missing, extra = sorted(set(expected) - stored), sorted(stored - set(expected))
    if missing or extra:
        raise ValueError(
            f"{path}: the buffers do not match the architecture: missing buffers "
            f"{missing}, unexpected buffers {extra}"
        )
    for key, target in expected.items():
        value = npz_entry(npz, BUFFER_PREFIX + key, path)
        if value.shape != target.shape or value.dtype.kind != target.dtype.kind:
            raise ValueError(
                f"{path}: buffer {key!r} is {value.dtype} of shape {value.shape}, the "
                f"architecture needs {target.dtype} of shape {target.shape}"
            )
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"{path}: buffer {key!r} contains NaN or Inf")
        np.copyto(target, value, casting="same_kind")
