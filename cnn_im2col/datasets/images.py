"""Image files: decoding (Pillow), and folders of images sorted into one folder per class.

Decoding
--------
``decode_image(path, image_size=None, channels=None)`` reads one PNG, JPEG, BMP or WebP file
(Pillow is only allowed those four decoders, whatever the file's name) into uint8 ``(H, W)``
(grayscale) or ``(H, W, 3)`` (RGB):

- EXIF orientation is applied (a phone's portrait photo comes out upright); an animated WebP
  gives its first frame.
- Channels: with ``channels=None`` an image keeps its nature: grayscale modes ("1", "L", "LA",
  "I", "I;16", ...) give one channel, every other mode (RGB, RGBA, palette, CMYK, ...) gives RGB.
  ``channels=1`` converts to grayscale (Pillow's ITU-R 601-2 luma), ``channels=3`` to RGB. Alpha
  is dropped, not composited. 16-bit grayscale is scaled to 8 bits (/ 257).
- ``image_size=(H, W)`` resizes (bilinear, antialiased when shrinking; the aspect ratio is not
  kept). Without it nothing is resized.
- ``MAX_PIXELS`` (4096 x 4096 = 16,777,216) is the most pixels an image may declare; a larger
  one is refused before it is decoded, as a possible decompression bomb. Pillow's own
  ``DecompressionBombWarning`` and ``DecompressionBombError`` (its ``Image.MAX_IMAGE_PIXELS``)
  are turned into the same ``ValueError``.
- A file Pillow cannot identify, or a truncated or corrupt one, is a ``ValueError`` naming it.

``decode_files(paths, image_size, channels)`` decodes a list into uint8 ``(N, C, H, W)``. The
channel rule for a data set: with ``channels=None``, ``C = 1`` if every image is grayscale, else
``C = 3`` (grayscale images are repeated into R = G = B). Without ``image_size`` every image must
have the size of the first; the first that differs is a ``ValueError`` naming it, its size and
the expected one. ``load_images`` is the same as float32 in [0, 1], for prediction.

Image folders
-------------
``open_image_folder(directory, ...)`` reads either layout as a ``Dataset`` (kind "image-folder"):

- ``DIR/train/<class>/*`` and ``DIR/test/<class>/*``: the two sets of class folders must be the
  same (else a ``ValueError`` listing the differences);
- ``DIR/<class>/*``: a test split is held out per class (stratified): ``round(n * test_fraction)``
  of each class's ``n`` images (at most ``n - 1``), drawn by ``numpy.random.default_rng(seed)``,
  classes taken in name order. The same files, fraction and seed give the same split.

Classes are the subfolders in name order (label = index); hidden entries (names starting with
".") are ignored. Inside a class folder, files with the extensions ``IMAGE_SUFFIXES`` (any case)
are images; any other file or subfolder is skipped, counted in ``Dataset.skipped`` and in one
``UserWarning`` (so a stray ``notes.txt`` or ``Thumbs.db`` does not stop training; a file named
like an image that does not decode as one does). A class folder with no images is a
``ValueError``.

Decoded images are cached (see ``cache.py``) in ``cache_root()/decoded/<key>.npz``, or in
``cache_dir`` if given, keyed by the files' relative names, sizes and modification times and
by ``image_size`` and ``channels``: a second load reads one ``.npz`` and decodes nothing;
touching, adding, removing or renaming a file decodes again. The data folder is only ever read.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .cache import cache_root, files_key, read_cached, write_cached
from .dataset import Dataset, as_path, to_unit_float

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
FORMAT_NAMES = "PNG, JPEG, BMP or WebP"
MAX_PIXELS = 4096 * 4096
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


class _Refused(ValueError):
    """An image refused by our own checks (its message already names the file)."""


# --- one image ---------------------------------------------------------------------------------


def _check_size(option: object) -> tuple[int, int] | None:
    """``image_size`` as ``(H, W)`` of positive ints, or None; TypeError/ValueError otherwise."""
    if option is None:
        return None
    if (not isinstance(option, (tuple, list)) or len(option) != 2
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool)
                       for n in option)):
        raise TypeError(f"image_size must be None or (H, W), two ints, got {option!r}")
    if min(option) < 1:
        raise ValueError(f"image_size must be positive, got {tuple(option)}")
    return int(option[0]), int(option[1])


def _check_channels(channels: object) -> int | None:
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"channels must be None (grayscale if every image is), 1 or 3, "
                         f"got {channels!r}")
    return channels  # type: ignore[return-value]


def _eight_bit(image: Image.Image, channels: int | None) -> Image.Image:
    """``image`` as mode "L" or "RGB" (see the module docstring for the rule)."""
    if image.mode in _SIXTEEN_BIT_MODES:  # Pillow's convert("L") would clip 16-bit values
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
    gray = image.mode in _GRAY_MODES
    target = channels if channels is not None else (1 if gray else 3)
    if target == 1:
        return image if image.mode == "L" else image.convert("L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # converting straight to RGB would warn
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_image(path: str | os.PathLike, image_size: tuple[int, int] | None = None,
                 channels: int | None = None) -> np.ndarray:
    """One image file as uint8 ``(H, W)`` (grayscale) or ``(H, W, 3)`` (RGB).

    See the module docstring for the rules. ``ValueError`` naming the file if it is not a
    readable PNG, JPEG, BMP or WebP image, or declares more than ``MAX_PIXELS`` pixels.
    """
    path = as_path(path, "path", "decode_image")
    image_size = _check_size(image_size)
    channels = _check_channels(channels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=PILLOW_FORMATS) as opened:
                width, height = opened.size
                if width * height > MAX_PIXELS:
                    raise _Refused(f"{path}: {width}x{height} = {width * height} pixels exceeds "
                                   f"the limit of {MAX_PIXELS} pixels per image (a possible "
                                   f"decompression bomb); refusing to decode it")
                upright = ImageOps.exif_transpose(opened)
                pixels = _eight_bit(upright, channels)
                if image_size is not None and pixels.size != (image_size[1], image_size[0]):
                    pixels = pixels.resize((image_size[1], image_size[0]),
                                           Image.Resampling.BILINEAR)
                return np.array(pixels, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{path}: refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ValueError(f"{path}: cannot be read as a {FORMAT_NAMES} image (Pillow cannot "
                         f"identify it: another format, or corrupt from the start)") from None
    except _Refused as exc:
        raise ValueError(str(exc)) from None
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types on bad data
        raise ValueError(f"{path}: truncated or corrupt image ({type(exc).__name__}: "
                         f"{exc})") from None


def decode_files(paths: Sequence[Path], image_size: tuple[int, int] | None = None,
                 channels: int | None = None) -> np.ndarray:
    """Decode ``paths`` into uint8 ``(N, C, H, W)`` by the data-set channel rule (module
    docstring). ``ValueError`` naming the first file whose size differs from the first file's
    (without ``image_size``), or any file that does not decode."""
    if not paths:
        raise ValueError("decode_files: no image files given")
    decoded = []
    for path in paths:  # sizes checked as we go: a mismatch stops before the rest is decoded
        pixels = decode_image(path, image_size, channels)
        first = decoded[0].shape[:2] if decoded else pixels.shape[:2]
        if pixels.shape[:2] != first:
            raise ValueError(
                f"{path}: image is {pixels.shape[0]}x{pixels.shape[1]} (height x width) but "
                f"{paths[0]} is {first[0]}x{first[1]}; images of different sizes must be resized "
                f"on purpose: give image_size=(H, W) (--image-size H W)")
        decoded.append(pixels)
    if channels is None:
        channels = 1 if all(pixels.ndim == 2 for pixels in decoded) else 3
    images = np.empty((len(decoded), channels, *first), dtype=np.uint8)
    for i, pixels in enumerate(decoded):
        images[i] = pixels if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # gray: R = G = B
    return images


def load_images(paths: Sequence[str | os.PathLike], *, image_size: tuple[int, int] | None = None,
                channels: int | None = None) -> np.ndarray:
    """Image files as float32 ``(N, C, H, W)`` in [0, 1], e.g. for ``predict``: pass the model's
    ``channels`` and ``image_size`` so the images match what it was trained on."""
    files = [as_path(path, "paths[]", "load_images") for path in paths]
    return to_unit_float(decode_files(files, _check_size(image_size), _check_channels(channels)))


# --- folders of classes -----------------------------------------------------------------------


def class_folders(directory: Path) -> list[Path]:
    """The non-hidden subfolders of ``directory``, in name order."""
    return sorted(entry for entry in directory.iterdir()
                  if entry.is_dir() and not entry.name.startswith("."))


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(images, skipped)``: the files of ``folder`` with an image extension, and every other
    non-hidden entry, each in name order."""
    images, skipped = [], []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            images.append(entry)
        else:
            skipped.append(entry)
    return images, skipped


def holds_class_folders(directory: Path) -> bool:
    """Whether some subfolder of ``directory`` directly holds an image file."""
    return any(list_images(folder)[0] for folder in class_folders(directory))


def _read_classes(root: Path, names: list[str]) -> tuple[list[list[Path]], list[Path]]:
    """The image files of ``root/<name>`` for each class name, and every skipped entry; a
    ``ValueError`` for a class folder without images."""
    per_class, skipped = [], []
    for name in names:
        images, others = list_images(root / name)
        if not images:
            note = f" ({len(others)} other entries skipped)" if others else ""
            raise ValueError(f"{root / name}: empty class folder: it holds no {FORMAT_NAMES} "
                             f"images{note}")
        per_class.append(images)
        skipped.extend(others)
    return per_class, skipped


def _held_out(per_class: list[list[Path]], test_fraction: float, seed: int) -> list[np.ndarray]:
    """For each class, a boolean mask over its files: True = test (see the module docstring)."""
    rng = np.random.default_rng(seed)
    masks = []
    for files in per_class:
        n = len(files)
        n_test = min(int(round(n * test_fraction)), n - 1)
        mask = np.zeros(n, dtype=bool)
        mask[rng.permutation(n)[:n_test]] = True
        masks.append(mask)
    return masks


def _decoded(directory: Path, files: list[Path], image_size: tuple[int, int] | None,
             channels: int | None, cache_dir: Path | None) -> np.ndarray:
    """``decode_files(files)``, read from / written to the cache unless ``cache_dir`` is None."""
    if cache_dir is None:
        return decode_files(files, image_size, channels)
    key = files_key(directory, files, {"image_size": image_size, "channels": channels})
    entry = cache_dir / f"{key}.npz"
    images = read_cached(entry, len(files))
    if images is not None and (image_size is None or images.shape[2:] == image_size) and (
            channels is None or images.shape[1] == channels):
        return images
    images = decode_files(files, image_size, channels)
    try:
        write_cached(entry, images)
    except OSError as exc:  # a cache that cannot be written costs time, not the result
        warnings.warn(f"could not cache the decoded images of {directory} in {entry}: {exc}",
                      stacklevel=3)
    return images


def _cache_folder(directory: Path, cache_dir: str | os.PathLike | None, use_cache: bool
                  ) -> Path | None:
    if not use_cache:
        return None
    folder = (cache_root() / "decoded" if cache_dir is None
              else as_path(cache_dir, "cache_dir", "open_image_folder"))
    if folder.resolve().is_relative_to(directory.resolve()):
        raise ValueError(f"cache_dir {folder} is inside the data folder {directory}; the data "
                         f"folder is never written to: choose another cache_dir")
    return folder


def open_image_folder(directory: str | os.PathLike, *, image_size: tuple[int, int] | None = None,
                      channels: int | None = None, test_fraction: float = 0.2, seed: int = 0,
                      cache_dir: str | os.PathLike | None = None, use_cache: bool = True
                      ) -> Dataset:
    """An image folder (``DIR/train/<class>``, ``DIR/test/<class>`` or ``DIR/<class>``) as a
    ``Dataset`` of kind "image-folder"; see the module docstring for every rule.

    ``test_fraction`` (in (0, 1)) and ``seed`` choose the held-out split of the one-tree layout
    and are unused with train/ and test/. ``cache_dir`` replaces ``cache_root()/decoded``;
    ``use_cache=False`` decodes every time and writes nothing.
    """
    directory = as_path(directory, "directory", "open_image_folder")
    image_size = _check_size(image_size)
    channels = _check_channels(channels)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not (
            0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    cache_folder = _cache_folder(directory, cache_dir, use_cache)
    train_root, test_root = directory / "train", directory / "test"
    if train_root.is_dir() and test_root.is_dir():
        names = [folder.name for folder in class_folders(train_root)]
        test_names = [folder.name for folder in class_folders(test_root)]
        if set(names) != set(test_names):
            only_train = sorted(set(names) - set(test_names)) or ["-"]
            only_test = sorted(set(test_names) - set(names)) or ["-"]
            raise ValueError(f"{directory}: the class folders of train/ and test/ differ (only "
                             f"in train/: {', '.join(only_train)}; only in test/: "
                             f"{', '.join(only_test)}); both must hold the same classes")
        if not names:
            raise ValueError(f"{train_root}: no class folders (expected train/<class>/<images> "
                             f"and test/<class>/<images>)")
        train_files, skipped = _read_classes(train_root, names)
        test_files, test_skipped = _read_classes(test_root, names)
        skipped += test_skipped
        details = "train/ and test/ folders"
    else:
        names = [folder.name for folder in class_folders(directory)]
        if not names:
            raise ValueError(f"{directory}: no class folders (expected <class>/<images>)")
        per_class, skipped = _read_classes(directory, names)
        masks = _held_out(per_class, float(test_fraction), int(seed))
        train_files = [[f for f, test in zip(files, mask) if not test]
                       for files, mask in zip(per_class, masks)]
        test_files = [[f for f, test in zip(files, mask) if test]
                      for files, mask in zip(per_class, masks)]
        if not any(test_files):
            raise ValueError(f"{directory}: too few images to hold out a test split of "
                             f"{test_fraction:g} per class; add images or raise test_fraction")
        details = f"test split: {test_fraction:g} of each class held out (seed {seed})"
    if skipped:
        what = (f"entries that are not {FORMAT_NAMES} files" if len(skipped) > 1
                else f"entry that is not a {FORMAT_NAMES} file")
        warnings.warn(f"{directory}: skipped {len(skipped)} {what} (by extension), e.g. "
                      f"{skipped[0]}", UserWarning, stacklevel=2)
    if image_size is not None:
        details += f"; resized to {image_size[0]}x{image_size[1]}"
    flat = [f for files in train_files for f in files] + [f for files in test_files for f in files]
    images = _decoded(directory, flat, image_size, channels, cache_folder)
    y_train, y_test = (np.concatenate([np.full(len(files), k, np.int64)
                                       for k, files in enumerate(split)])
                       for split in (train_files, test_files))
    x = to_unit_float(images)
    # the folders list the images class by class: the training set comes shuffled (by ``seed``),
    # so that a held-out tail (--val-split, validation_split) or a --limit head mixes the classes
    order = np.random.default_rng([int(seed), 1]).permutation(len(y_train))
    return Dataset(kind="image-folder", x_train=x[:len(y_train)][order], y_train=y_train[order],
                   x_test=x[len(y_train):], y_test=y_test, classes=tuple(names),
                   source=directory, details=details, skipped=len(skipped))
