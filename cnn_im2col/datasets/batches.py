"""Minibatches: ``iterate_minibatches(x, y, batch_size, shuffle=True, rng=None)`` yields
``(xb, yb)`` batches along axis 0."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..shapes import check_int


def _as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """``rng`` itself if it is a Generator, else a new one seeded with the int ``rng`` (or
    unseeded)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is not None and (isinstance(rng, (bool, np.bool_))
                            or not isinstance(rng, (int, np.integer))):
        raise TypeError(f"iterate_minibatches: rng must be a numpy.random.Generator, an int seed "
                        f"or None, got {rng!r} ({type(rng).__name__})")
    return np.random.default_rng(rng)


def iterate_minibatches(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = True,
                        rng: np.random.Generator | int | None = None
                        ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x[idx], y[idx])`` batches of ``batch_size`` along axis 0; the last may be smaller.

    ``x`` is e.g. ``(N, C, H, W)`` and ``y`` ``(N,)``; every sample appears exactly once per pass.
    With ``shuffle`` the order is a permutation drawn from ``rng`` (a ``numpy.random.Generator``,
    or a seed for one; ``None`` draws a fresh unseeded one); without it batches are views in order.
    """
    batch_size = check_int(batch_size, "batch_size", "iterate_minibatches", minimum=1)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"iterate_minibatches: shuffle must be True or False, got {shuffle!r}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"iterate_minibatches: x and y must have the same length along axis 0, "
                         f"got shapes {x.shape} and {y.shape}")
    n = x.shape[0]
    if not shuffle:
        for start in range(0, n, batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
        return
    order = _as_generator(rng).permutation(n)
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        yield x[index], y[index]
