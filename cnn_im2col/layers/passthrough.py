"""The layers without parameters that pass their input on: ``Flatten`` (the same values in
another shape), ``Identity`` (a placeholder) and ``Dropout`` (a scaled random mask while
training, the identity at inference)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..init import make_rng
from ..shapes import as_float_array, check_choice, check_dout, check_float, check_int
from .base import Layer


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W). ``order="C"``: row-major per sample, as PyTorch's ``flatten``.

    ``order="F"``: the column stacking of Eq. 8.26, each feature map's columns stacked top to
    bottom, first map to last.
    """

    def __init__(self, order: str = "C") -> None:
        super().__init__()
        check_choice(order, "order", ("C", "F"), "Flatten")
        self.order = order
        self._remember(order=order)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(input_shape)),)

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if x.ndim < 2:
            raise ValueError(
                f"{self!r}: x must be (N, ...) with at least 2 dimensions, got shape {x.shape}"
            )
        self._cache = x.shape
        if self.order == "F" and x.ndim == 4:
            x = x.transpose(0, 1, 3, 2)  # each map's columns become contiguous runs
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: Any) -> np.ndarray:
        shape = self._cached()
        dout = as_float_array(dout, "dout", repr(self))
        if dout.shape != (shape[0], int(np.prod(shape[1:]))):
            raise ValueError(
                f"{self!r}: dout must have shape {(shape[0], int(np.prod(shape[1:])))}, "
                f"got {dout.shape}"
            )
        if self.order == "F" and len(shape) == 4:
            n, c, h, w = shape
            return dout.reshape(n, c, w, h).transpose(0, 1, 3, 2)
        return dout.reshape(shape)


class Identity(Layer):
    """y = x (PyTorch's ``nn.Identity``): a placeholder, e.g. where a network has no layer."""

    def __init__(self) -> None:
        super().__init__()
        self._remember()

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._cache = (x.shape, x.dtype)
        return x

    def backward(self, dout: Any) -> np.ndarray:
        shape, dtype = self._cached()
        return check_dout(dout, shape, dtype, repr(self))


class Dropout(Layer):
    """Inverted dropout: while training, zero each element with probability ``p`` and scale the
    survivors by 1/(1-p); at inference, the identity. The mask is drawn from a Generator seeded by
    ``seed``, so a seeded run is reproducible."""

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        p = check_float(p, "p", "Dropout", low=0.0, high=1.0, high_open=True)
        if seed is not None:
            seed = check_int(seed, "seed", "Dropout", minimum=0)
        self.p = p
        self.rng = make_rng(seed)
        self._remember(p=p, seed=seed)

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if not training or self.p == 0.0:
            # the identity: a read-only view of ones, no allocation; backward still checks shapes
            self._cache = np.broadcast_to(np.ones(1, dtype=x.dtype), x.shape)
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        self._cache = mask
        return x * mask

    def backward(self, dout: Any) -> np.ndarray:
        mask = self._cached()
        dout = as_float_array(dout, "dout", repr(self))
        if dout.shape != mask.shape:
            raise ValueError(
                f"{self!r}: dout must have the output's shape {mask.shape}, got {dout.shape}"
            )
        return dout * mask
