"""Per-channel normalisation: statistics from the training set, applied identically everywhere.

``mean, std = channel_stats(x_train)`` once, on the training images only; then
``normalize(x, mean, std)`` on the training images, the test images and every image given to
``predict``. ``mean`` and ``std`` are float32 ``(C,)`` arrays: store them in the model file beside
the class names, and apply them in ``predict`` before the forward pass, so that prediction sees
exactly the inputs that training saw.

A channel that is constant over the training set (std 0, e.g. a blank border channel) gets
``std = 1``: it is only centred, never divided by ~0.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 1024  # images per step: float64 temporaries stay small (1024 x 3 x 32 x 32 x 8 B = 25 MB)
_MIN_STD = 1e-6


def _check_images(x: np.ndarray, owner: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{owner}: x must be a numpy array, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"{owner}: x must be (N, C, H, W) images with N >= 1, got shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"{owner}: x must be floating point (e.g. float32 in [0, 1]), "
                        f"got {x.dtype}")
    return x


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(mean, std)`` of images ``x`` ``(N, C, H, W)``: float32 ``(C,)`` each.

    Computed in float64 in two passes over chunks of images (the mean, then the mean squared
    deviation: no catastrophic cancellation, no float64 copy of ``x``). The std is the population
    one (divided by N*H*W); a std below 1e-6 is replaced by 1 (see the module docstring).
    """
    x = _check_images(x, "channel_stats")
    count = x.shape[0] * x.shape[2] * x.shape[3]
    total = np.zeros(x.shape[1])
    for start in range(0, x.shape[0], _CHUNK):
        total += x[start:start + _CHUNK].sum(axis=(0, 2, 3), dtype=np.float64)
    mean = total / count
    squares = np.zeros(x.shape[1])
    for start in range(0, x.shape[0], _CHUNK):
        deviation = x[start:start + _CHUNK].astype(np.float64) - mean[None, :, None, None]
        squares += np.square(deviation).sum(axis=(0, 2, 3))
    std = np.sqrt(squares / count)
    std[std < _MIN_STD] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per channel: a new float32 array of ``x``'s shape ``(N, C, H, W)``.

    ``mean`` and ``std`` are ``(C,)`` (as ``channel_stats`` returns them); ``std`` must be
    positive and finite. ``ValueError`` naming the argument otherwise.
    """
    x = _check_images(x, "normalize")
    channels = x.shape[1]
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    for name, value in (("mean", mean), ("std", std)):
        if value.shape != (channels,):
            raise ValueError(f"normalize: {name} must have shape ({channels},) for images of "
                             f"{channels} channels, got shape {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"normalize: {name} must be finite, got {value.tolist()}")
    if not np.all(std > 0):
        raise ValueError(f"normalize: std must be positive, got {std.tolist()}")
    out = x.astype(np.float32)  # a copy: the caller's array is left as it was
    out -= mean[None, :, None, None]
    out /= std[None, :, None, None]
    return out
