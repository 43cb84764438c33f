"""The base class of every layer, ``Layer``, and the helpers the layers share: a dtype's name,
an ``input_size`` argument, a pair argument in its JSON-able form. The layer protocol and
the split of ``forward`` into ``check_input`` and ``run`` are described in the package's
docstring.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from ..shapes import as_float_array, float_dtype, pair


class Layer:
    """Base class: bookkeeping shared by every layer (repr, config, plans, the
    backward-before-forward check)."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._cache: Any = None
        # input shape (a Conv2D also (shape, "frozen")) -> plan (see the package docstring)
        self._plans: dict[Any, Any] = {}

    # --- protocol --------------------------------------------------------------------------
    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: Any) -> np.ndarray:
        raise NotImplementedError

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        return cls(**config)

    __call__ = forward

    # --- the built-in layers' split of forward (package docstring) ----------------------------
    def check_input(self, x: Any) -> np.ndarray:
        """The boundary check of ``forward``: ``x`` as a float array, NaN/Inf refused."""
        return as_float_array(x, "x", repr(self))

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """``forward`` on input already checked (by ``check_input``, or made by the engine)."""
        raise NotImplementedError

    def plan(self, shape: tuple[int, ...]) -> Any:
        """This layer's plan for inputs of ``shape`` (N, ...), made on first use and kept."""
        plan = self._plans.get(shape)
        if plan is None:
            plan = self._plans[shape] = self._make_plan(shape)
        return plan

    def _make_plan(self, shape: tuple[int, ...]) -> Any:
        return True  # nothing to work out: every shape fits

    # --- helpers ---------------------------------------------------------------------------
    def _remember(self, **config: Any) -> None:
        """Store the constructor arguments (JSON-able) for config() and repr()."""
        self._config = config
        self._repr: str | None = None

    def _cached(self) -> Any:
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward() called before forward(); run forward first")
        return self._cache

    def _zero_grads(self) -> None:
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}

    def __repr__(self) -> str:
        # every forward/backward names its layer in error messages, and inspect.signature is slow:
        # the configuration never changes after __init__, so the text is made once
        text = self.__dict__.get("_repr")
        if text is None:
            text = self._repr = self._make_repr()
        return text

    def _make_repr(self) -> str:
        parameters = inspect.signature(type(self).__init__).parameters
        parts = []
        for name, value in self._config.items():
            default = parameters[name].default
            value = tuple(value) if isinstance(value, list) else value  # config keeps JSON lists
            if default is inspect.Parameter.empty:
                parts.append(repr(value))
            elif name == "dtype" and np.dtype(value) == np.dtype(default):
                continue
            elif value != default:
                parts.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _dtype_name(dtype: Any, owner: str) -> str:
    return float_dtype(dtype, "dtype", owner).name


def _input_size(input_size: Any, owner: str) -> list[int] | None:
    return None if input_size is None else list(pair(input_size, "input_size", owner))


def _compact(value: Any) -> Any:
    """(3, 3) -> 3 and (2, 1) -> [2, 1]: the JSON-able form of a pair argument."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and value[0] == value[1]:
        return value[0]
    return list(value) if isinstance(value, tuple) else value
