"""``Dense``: the fully connected layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..arrays import gemm
from ..init import he_normal, make_rng
from ..shapes import as_float_array, check_dout, check_int
from .base import Layer, _dtype_name


class Dense(Layer):
    """Fully connected: y = x @ weight.T + bias. Weight (out_features, in_features), He-initialised.

    Input (N, in_features) -> output (N, out_features).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: Any = np.float32,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        name = "Dense"
        in_features = check_int(in_features, "in_features", name, minimum=1)
        out_features = check_int(out_features, "out_features", name, minimum=1)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"{name}: bias must be True or False, got {bias!r}")
        dtype_name = _dtype_name(dtype, name)
        if seed is not None:
            seed = check_int(seed, "seed", name, minimum=0)
        self._remember(
            in_features=in_features,
            out_features=out_features,
            bias=bool(bias),
            dtype=dtype_name,
            seed=seed,
        )
        self.in_features, self.out_features = in_features, out_features
        self.params["weight"] = he_normal(
            (out_features, in_features), in_features, make_rng(seed), dtype_name
        )
        if bias:
            self.params["bias"] = np.zeros(out_features, dtype=dtype_name)
        self._zero_grads()

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(input_shape) != (self.in_features,):
            raise ValueError(
                f"{self!r}: input must be ({self.in_features},) features per sample, "
                f"got {tuple(input_shape)}"
            )
        return (self.out_features,)

    def check_input(self, x: Any) -> np.ndarray:
        return as_float_array(x, "x", repr(self), ndim=2, dtype=self.params["weight"].dtype)

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def _make_plan(self, shape: tuple[int, ...]) -> bool:
        if len(shape) != 2 or shape[1] != self.in_features:
            raise ValueError(f"{self!r}: x must have shape (N, {self.in_features}), got {shape}")
        return True

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.plan(x.shape)
        x = x.astype(self.params["weight"].dtype, copy=False)
        self._cache = x
        out = gemm(x, self.params["weight"].T)
        if "bias" in self.params:
            out += self.params["bias"]
        return out

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray | None:
        """Fill ``grads``; return dx, or None with ``input_grad=False`` (not computed)."""
        x = self._cached()
        dout = check_dout(dout, (x.shape[0], self.out_features), x.dtype, repr(self))
        self.grads["weight"] = gemm(dout.T, x)
        if "bias" in self.params:
            self.grads["bias"] = dout.sum(axis=0)
        return gemm(dout, self.params["weight"]) if input_grad else None
