"""Data augmentation for image batches: :class:`RandomShift`.

An augmentation is a callable ``aug(x, rng) -> x`` taking a batch ``(N, C, H, W)`` and a
``numpy.random.Generator`` and returning a new batch of the same shape; ``fit(augment=...)`` calls
it on every training batch with a generator keyed by (seed, epoch, batch).
"""

from __future__ import annotations

import numbers

import numpy as np

from .shapes import check_int

__all__ = ["RandomShift"]


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

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if x.ndim != 4:
            raise ValueError(f"RandomShift: x must be (N, C, H, W), got shape {x.shape}")
        s = self.max_shift
        if s == 0:
            return x
        n, c, h, w = x.shape
        padded = np.full((n, c, h + 2 * s, w + 2 * s), self.fill, dtype=x.dtype)
        padded[:, :, s:s + h, s:s + w] = x
        # windows[n, c, i, j] is the (h, w) crop starting at row i, column j of the padded image
        windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
        offsets = rng.integers(0, 2 * s + 1, size=(2, n))  # crop at s+dy moves the image by -dy
        return np.ascontiguousarray(windows[np.arange(n), :, offsets[0], offsets[1]])

    def config(self) -> dict:
        return {"max_shift": self.max_shift, "fill": self.fill}

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift}, fill={self.fill})"
