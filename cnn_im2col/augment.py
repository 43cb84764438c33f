"""Data augmentation for image batches: :class:`RandomShift` (a random crop of the zero-padded
image, torchvision's ``RandomCrop(padding=...)``), :class:`RandomFlip`, :class:`Compose`.

An augmentation is a callable ``aug(x, rng) -> x`` taking a batch ``(N, C, H, W)`` and a
``numpy.random.Generator`` and returning a new batch of the same shape; ``fit(augment=...)`` calls
it on every training batch with a generator keyed by (seed, epoch, batch). An augmentation may also
have ``check(sample_shape, owner)``, which ``fit`` calls before the first step to refuse settings
that cannot work for the data (e.g. a shift larger than the image).
"""

from __future__ import annotations

import numbers

import numpy as np

from .shapes import check_int

__all__ = ["Compose", "RandomFlip", "RandomShift"]


class RandomShift:
    """Move each image by ``(dy, dx)``, each drawn uniformly from ``-max_shift .. max_shift``.

    Pixels shifted in are ``fill`` (0: the black MNIST background). ``aug(x, rng)`` takes a batch
    ``(N, C, H, W)`` and a Generator and returns a new array; ``max_shift=0`` returns ``x``.
    """

    def __init__(self, max_shift: int = 2, fill: float = 0.0) -> None:
        self.max_shift = check_int(max_shift, "max_shift", "RandomShift", minimum=0)
        if isinstance(fill, (bool, np.bool_)) or not isinstance(fill, numbers.Real):
            raise TypeError(f"RandomShift: fill must be a number, got {fill!r}")
        self.fill = float(fill)

    def check(self, sample_shape: tuple[int, ...], owner: str) -> None:
        """ValueError unless the images ``sample_shape`` (C, H, W) can take the shift: at most
        half the smaller side (a larger shift moves most of the image out of the frame)."""
        if len(sample_shape) != 3:
            raise ValueError(
                f"{owner}: {self!r} shifts images (C, H, W), but the samples are "
                f"{tuple(sample_shape)}"
            )
        limit = min(sample_shape[1:]) // 2
        if self.max_shift > limit:
            raise ValueError(
                f"{owner}: {self!r} is too large for {sample_shape[1]}x"
                f"{sample_shape[2]} images: max_shift must be at most half the "
                f"smaller side, {limit}"
            )

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if x.ndim != 4:
            raise ValueError(f"RandomShift: x must be (N, C, H, W), got shape {x.shape}")
        s = self.max_shift
        if s == 0:
            return x
        n, c, h, w = x.shape
        padded = np.full((n, c, h + 2 * s, w + 2 * s), self.fill, dtype=x.dtype)
        padded[:, :, s : s + h, s : s + w] = x
        # windows[n, c, i, j] is the (h, w) crop starting at row i, column j of the padded image
        windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
        offsets = rng.integers(0, 2 * s + 1, size=(2, n))  # crop at s+dy moves the image by -dy
        return np.ascontiguousarray(windows[np.arange(n), :, offsets[0], offsets[1]])

    def config(self) -> dict:
        return {"max_shift": self.max_shift, "fill": self.fill}

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift}, fill={self.fill})"


class RandomFlip:
    """Mirror each image left to right with probability ``p`` (torchvision's
    ``RandomHorizontalFlip``): for photographs, whose classes do not depend on handedness; not for
    digits or text. ``aug(x, rng)`` draws one uniform number per image from ``rng``."""

    def __init__(self, p: float = 0.5) -> None:
        if (
            isinstance(p, (bool, np.bool_))
            or not isinstance(p, numbers.Real)
            or not 0.0 <= p <= 1.0
        ):
            raise ValueError(f"RandomFlip: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def check(self, sample_shape: tuple[int, ...], owner: str) -> None:
        if len(sample_shape) != 3:
            raise ValueError(
                f"{owner}: {self!r} flips images (C, H, W), but the samples are "
                f"{tuple(sample_shape)}"
            )

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if x.ndim != 4:
            raise ValueError(f"RandomFlip: x must be (N, C, H, W), got shape {x.shape}")
        flip = rng.random(x.shape[0]) < self.p
        out = np.array(x, copy=True)
        out[flip] = x[flip, :, :, ::-1]
        return out

    def config(self) -> dict:
        return {"p": self.p}

    def __repr__(self) -> str:
        return f"RandomFlip(p={self.p})"


class Compose:
    """Several augmentations applied in order, each with its own generator spawned from the
    batch's (so adding one does not change the draws of the others)."""

    def __init__(self, augmentations: list) -> None:
        self.augmentations = list(augmentations)
        for aug in self.augmentations:
            if not callable(aug):
                raise TypeError(
                    f"Compose: every augmentation must be callable aug(x, rng), got {aug!r}"
                )

    def check(self, sample_shape: tuple[int, ...], owner: str) -> None:
        for aug in self.augmentations:
            if hasattr(aug, "check"):
                aug.check(sample_shape, owner)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for aug, child in zip(self.augmentations, rng.spawn(len(self.augmentations))):
            x = aug(x, child)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.augmentations!r})"
