"""Weight initialisers (He / Glorot), seeded only through ``numpy.random.Generator``.

Fans, for the layouts of this package (the same as PyTorch's):

- Dense weight ``(out_features, in_features)``: ``fan_in = in_features``, ``fan_out =
  out_features``.
- Conv2D weight ``(O, C, KH, KW)``: ``fan_in = C * KH * KW`` (the inputs of one output neuron,
  the length of one im2col row), ``fan_out = O * KH * KW``.

:func:`compute_fans` derives them from a weight shape; every initialiser also accepts
``fan_in=None`` / ``fan_out=None`` to mean "derive it from ``shape``".

The numbers are drawn in float64 and then rounded to ``dtype``, so a float32 and a float64 model
built from the same seed hold the same weights up to float32 rounding, and the same seed always
gives the same numbers. ``rng`` must be a ``Generator`` (used, advancing its state) or an int seed
>= 0; ``None`` is refused so that no weight is ever drawn from an unseeded source by accident
(``make_rng(None)`` is the explicit way to ask for a generator the caller did not seed).

One seed governs a run: after :func:`manual_seed` (PyTorch's ``torch.manual_seed``, Keras's
``set_random_seed``), every ``make_rng(None)`` -- a layer built without ``seed=``, a ``Dropout``
without one, a model rebuilt from a config whose layers carry no seed -- draws a child of that
seed, in the order they are made. So the same script (or ``cnn-im2col train --seed S --model
FILE.json``) gives the same weights. ``manual_seed(None)`` goes back to OS entropy.

==================  ==================================  =====================================
initialiser         distribution                        use with
==================  ==================================  =====================================
``he_normal``       N(0, 2 / fan_in) (not truncated)     ReLU (He et al. 2015; PyTorch's
                                                        ``kaiming_normal_``)
``he_uniform``      U(-sqrt(6 / fan_in), +sqrt(...))     ReLU
``glorot_normal``   N(0, 2 / (fan_in + fan_out))        sigmoid, tanh, linear (Glorot &
                                                        Bengio 2010; ``xavier_normal_``)
``glorot_uniform``  U(-sqrt(6 / (fan_in + fan_out)), +)  sigmoid, tanh, linear
==================  ==================================  =====================================
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .shapes import check_int, float_dtype

__all__ = [
    "compute_fans",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "make_rng",
    "manual_seed",
]

#: The global seed's sequence (None: OS entropy); each unseeded generator spawns the next child.
_global_seed: np.random.SeedSequence | None = None


def manual_seed(seed: int | None) -> None:
    """Seed every generator made without a seed from now on (see the module docstring);
    ``None`` goes back to fresh OS entropy for each."""
    global _global_seed
    if seed is None:
        _global_seed = None
        return
    _global_seed = np.random.SeedSequence(check_int(seed, "seed", "manual_seed", minimum=0))


def global_seed_state() -> np.random.SeedSequence | None:
    """What :func:`manual_seed` set (to put it back with :func:`restore_global_seed`)."""
    return _global_seed


def restore_global_seed(state: np.random.SeedSequence | None) -> None:
    """Put back a state :func:`global_seed_state` returned."""
    global _global_seed
    _global_seed = state


def make_rng(seed: Any = None) -> np.random.Generator:
    """A ``numpy.random.Generator`` from ``None`` (the next child of :func:`manual_seed`'s seed, or
    fresh OS entropy without one), an int seed >= 0, or a Generator (returned as is, not copied).
    Anything else (float, bool, str, legacy ``RandomState``) is a TypeError.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        if _global_seed is not None:
            return np.random.default_rng(_global_seed.spawn(1)[0])
        return np.random.default_rng()
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"make_rng: seed must be None, an int >= 0 or a numpy.random.Generator, "
            f"got {seed!r} ({type(seed).__name__})"
        )
    if seed < 0:
        raise ValueError(f"make_rng: seed must be an int >= 0, got {seed}")
    return np.random.default_rng(int(seed))


def _shape(shape: Any, owner: str) -> tuple[int, ...]:
    """``int | tuple of ints``, each >= 1, as a tuple."""
    msg = f"{owner}: shape must be an int >= 1 or a non-empty tuple of them, got {shape!r}"
    if isinstance(shape, numbers.Integral) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or len(shape) == 0:
        raise TypeError(msg)
    for s in shape:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral):
            raise TypeError(msg)
        if s < 1:
            raise ValueError(msg)
    return tuple(int(s) for s in shape)


def compute_fans(shape: Any) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight: ``(in, out)`` for ``(out, in)``; ``(C*KH*KW, O*KH*KW)``
    for ``(O, C, KH, KW)`` (any number of trailing kernel axes); ``(n, n)`` for a 1-D shape
    ``(n,)``."""
    shape = _shape(shape, "compute_fans")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(value: Any, name: str, owner: str, default: int) -> int:
    return default if value is None else check_int(value, name, owner, minimum=1)


def _draw(
    kind: str, shape: tuple[int, ...], scale: float, rng: Any, dtype: Any, owner: str
) -> np.ndarray:
    dtype = float_dtype(dtype, "dtype", owner)
    if isinstance(rng, np.random.Generator):
        gen = rng
    elif isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)) and rng >= 0:
        gen = np.random.default_rng(int(rng))
    else:
        raise TypeError(
            f"{owner}: rng must be a numpy.random.Generator or an int seed >= 0, got {rng!r} "
            f"({type(rng).__name__}); use make_rng(seed) to build one"
        )
    if kind == "normal":
        values = gen.standard_normal(shape)
        values *= scale
    else:
        values = gen.uniform(-scale, scale, shape)
    return values.astype(dtype, copy=False)


def he_normal(shape: Any, fan_in: int | None, rng: Any, dtype: Any = np.float32) -> np.ndarray:
    """Samples of N(0, std**2) with ``std = sqrt(2 / fan_in)``."""
    shape = _shape(shape, "he_normal")
    fan_in = _fan(fan_in, "fan_in", "he_normal", compute_fans(shape)[0])
    return _draw("normal", shape, math.sqrt(2.0 / fan_in), rng, dtype, "he_normal")


def he_uniform(shape: Any, fan_in: int | None, rng: Any, dtype: Any = np.float32) -> np.ndarray:
    """Samples of U(-limit, limit) with ``limit = sqrt(6 / fan_in)`` (variance ``2 / fan_in``)."""
    shape = _shape(shape, "he_uniform")
    fan_in = _fan(fan_in, "fan_in", "he_uniform", compute_fans(shape)[0])
    return _draw("uniform", shape, math.sqrt(6.0 / fan_in), rng, dtype, "he_uniform")


def glorot_normal(
    shape: Any, fan_in: int | None, fan_out: int | None, rng: Any, dtype: Any = np.float32
) -> np.ndarray:
    """Samples of N(0, std**2) with ``std = sqrt(2 / (fan_in + fan_out))``."""
    shape = _shape(shape, "glorot_normal")
    default_in, default_out = compute_fans(shape)
    fan_in = _fan(fan_in, "fan_in", "glorot_normal", default_in)
    fan_out = _fan(fan_out, "fan_out", "glorot_normal", default_out)
    return _draw("normal", shape, math.sqrt(2.0 / (fan_in + fan_out)), rng, dtype, "glorot_normal")


def glorot_uniform(
    shape: Any, fan_in: int | None, fan_out: int | None, rng: Any, dtype: Any = np.float32
) -> np.ndarray:
    """Samples of U(-limit, limit) with ``limit = sqrt(6 / (fan_in + fan_out))``."""
    shape = _shape(shape, "glorot_uniform")
    default_in, default_out = compute_fans(shape)
    fan_in = _fan(fan_in, "fan_in", "glorot_uniform", default_in)
    fan_out = _fan(fan_out, "fan_out", "glorot_uniform", default_out)
    return _draw(
        "uniform", shape, math.sqrt(6.0 / (fan_in + fan_out)), rng, dtype, "glorot_uniform"
    )
