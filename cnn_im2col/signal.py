"""``correlate2d`` / ``convolve2d`` with scipy.signal's modes, computed through im2col.

The primer builds its feature maps from ``scipy.signal.correlate2d`` (forward, weight gradient)
and ``convolve2d`` (activation gradient, ``mode="full"``). These two functions give the same
shapes and values as scipy's (with the default zero fill), but each is one im2col and one
matrix-vector product, the engine's own machinery. Appendix A of the primer in numbers::

    >>> values = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    >>> correlate2d(values, [[10, 20], [30, 40]], mode="valid")
    array([[370., 470.],
           [670., 770.]])

Convolution is correlation with the kernel rotated 180 degrees, exactly so in ``"full"`` and
``"valid"`` modes. In ``"same"`` mode both crop the full result around its centre, and for an even
kernel dimension the centre falls between two pixels: like scipy, correlation keeps the later one
and convolution the earlier one, so there the two differ by a one-pixel shift. Inputs are real
2-D arrays; integer inputs are computed in float64 (exact for integers below 2**53).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .im2col import unfold
from .shapes import as_float_array, check_choice, resolve_padding, window_geometry

MODES = ("full", "valid", "same")


def correlate2d(in1: Any, in2: Any, mode: str = "full") -> np.ndarray:
    """Cross-correlate 2-D ``in1`` with 2-D ``in2``; ``mode`` is ``"full"``, ``"valid"`` or
    ``"same"``.

    Output shape: full (H1+H2-1, W1+W2-1); valid (|H1-H2|+1, |W1-W2|+1) (one input must be at
    least as large as the other in both dimensions); same (H1, W1).
    """
    a, k = _inputs(in1, in2, mode, "correlate2d")
    if mode == "same":
        full = _correlate(a, k, (k.shape[0] - 1, k.shape[1] - 1))
        top, left = k.shape[0] // 2, k.shape[1] // 2
        return full[top : top + a.shape[0], left : left + a.shape[1]].copy()
    return convolve2d(a, k[::-1, ::-1], mode)


def convolve2d(in1: Any, in2: Any, mode: str = "full") -> np.ndarray:
    """Convolve 2-D ``in1`` with 2-D ``in2`` (``in2`` rotated 180 degrees, then correlated).

    Modes and shapes as ``correlate2d``. Convolution commutes, so in ``"valid"`` mode the larger
    input plays the image, as in scipy.
    """
    a, k = _inputs(in1, in2, mode, "convolve2d")
    if mode == "valid":
        if k.shape[0] >= a.shape[0] and k.shape[1] >= a.shape[1]:
            a, k = k, a
        return _correlate(a, k[::-1, ::-1], (0, 0))
    full = _correlate(a, k[::-1, ::-1], (k.shape[0] - 1, k.shape[1] - 1))
    if mode == "full":
        return full
    top, left = (k.shape[0] - 1) // 2, (k.shape[1] - 1) // 2
    return full[top : top + a.shape[0], left : left + a.shape[1]].copy()


def _inputs(in1: Any, in2: Any, mode: str, owner: str) -> tuple[np.ndarray, np.ndarray]:
    check_choice(mode, "mode", MODES, owner)
    a = as_float_array(in1, "in1", owner, ndim=2, dtype=_dtype(in1, in2))
    k = as_float_array(in2, "in2", owner, ndim=2, dtype=a.dtype)
    if mode == "valid":
        a_contains_k = a.shape[0] >= k.shape[0] and a.shape[1] >= k.shape[1]
        k_contains_a = k.shape[0] >= a.shape[0] and k.shape[1] >= a.shape[1]
        if not (a_contains_k or k_contains_a):
            raise ValueError(
                f"{owner}: in 'valid' mode one input must be at least as large as the other "
                f"in both dimensions, got shapes {a.shape} and {k.shape}"
            )
    return a, k


def _dtype(in1: Any, in2: Any) -> np.dtype:
    """float32 only when both inputs are float32; float64 otherwise (integers stay exact)."""
    both32 = all(getattr(v, "dtype", None) == np.float32 for v in (in1, in2))
    return np.dtype(np.float32) if both32 else np.dtype(np.float64)


def _correlate(image: np.ndarray, kernel: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    """Stride-1 correlation of an (H, W) image with zero padding: im2col, then one GEMV."""
    kh, kw = kernel.shape
    pads = resolve_padding(padding, (kh, kw), (1, 1))
    g = window_geometry(image.shape[0], image.shape[1], (kh, kw), (1, 1), pads)
    cols = unfold(np.ascontiguousarray(image)[None, None], g)  # (OH*OW, KH*KW)
    return (cols @ np.ascontiguousarray(kernel).ravel()).reshape(g.oh, g.ow)
