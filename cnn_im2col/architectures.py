"""Named networks for (1, 28, 28) images, and the ``--model NAME|FILE.json`` lookup of the command.

- ``default``: :func:`default_model`, two conv-pool groups and two dense layers (Fig. 8.11 style);
- ``lenet``: :func:`lenet`, the network of ``benchmarks/bench_train.py`` (PyTorch's twin there);
- ``vgg-bn``: :func:`vgg_bn`, 3x3 convolutions with BatchNorm2D and ReLU, 32-pool-64-64-pool,
  then a dense head; for Fashion-MNIST.

``build(spec, seed)`` takes one of those names or the path of a JSON file holding
``Sequential.config()`` (``{"layers": [{"class": ..., "config": ...}, ...]}``; its layers carry
their own seeds, so ``seed`` does not apply to it). ``TRAIN_DEFAULTS`` holds the settings the
``train`` command uses for an architecture when a flag is not given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from .model import Sequential

__all__ = ["ARCHITECTURES", "TRAIN_DEFAULTS", "build", "default_model", "lenet", "vgg_bn"]


def _seeds(seed: int, count: int) -> list[int]:
    return [int(v) for v in np.random.SeedSequence(seed).generate_state(count)]


def default_model(seed: int = 0, dtype: Any = np.float32) -> Sequential:
    """Conv(1->32, 5) ReLU MaxPool(2) Conv(32->64, 5) ReLU MaxPool(2) Flatten Dense(1024->256) ReLU
    Dropout(0.4) Dense(256->10), for (1, 28, 28) inputs. Every layer's seed is derived from
    ``seed``."""
    s = _seeds(seed, 5)
    return Sequential([
        Conv2D(1, 32, 5, dtype=dtype, seed=s[0]), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, 5, dtype=dtype, seed=s[1]), ReLU(), MaxPool2D(2),
        Flatten(),
        Dense(64 * 4 * 4, 256, dtype=dtype, seed=s[2]), ReLU(), Dropout(0.4, seed=s[3]),
        Dense(256, 10, dtype=dtype, seed=s[4]),
    ])


def lenet(seed: int = 0, dtype: Any = np.float32) -> Sequential:
    """The benchmark network: Conv(1->20, 5) ReLU MaxPool(2) Conv(20->40, 5) ReLU MaxPool(2) Flatten
    Dense(640->100) ReLU Dense(100->10), for (1, 28, 28) inputs."""
    s = _seeds(seed, 4)
    return Sequential([
        Conv2D(1, 20, 5, dtype=dtype, seed=s[0]), ReLU(), MaxPool2D(2),
        Conv2D(20, 40, 5, dtype=dtype, seed=s[1]), ReLU(), MaxPool2D(2),
        Flatten(),
        Dense(40 * 4 * 4, 100, dtype=dtype, seed=s[2]), ReLU(),
        Dense(100, 10, dtype=dtype, seed=s[3]),
    ])


def vgg_bn(seed: int = 0, dtype: Any = np.float32) -> Sequential:
    """A small VGG for (1, 28, 28), each convolution 3x3 'same' without bias (BatchNorm's shift
    replaces it) followed by BatchNorm2D and ReLU: Conv(1->32), MaxPool(2) -> 14x14, Conv(32->64),
    Conv(64->64), MaxPool(2) -> 7x7, Flatten, Dense(3136->256) ReLU Dropout(0.4) Dense(256->10).

    One convolution, not two, at 28x28: a second 32->32 one there took 40% of a training step
    (measured 170 of 434 ms per batch of 128) for the least gain."""
    s = _seeds(seed, 6)
    layers: list[Any] = []
    for k, (cin, cout, pool) in enumerate([(1, 32, True), (32, 64, False), (64, 64, True)]):
        layers += [Conv2D(cin, cout, 3, padding="same", bias=None, dtype=dtype, seed=s[k]),
                   BatchNorm2D(cout, dtype=dtype), ReLU()]
        if pool:
            layers.append(MaxPool2D(2))
    layers += [Flatten(), Dense(64 * 7 * 7, 256, dtype=dtype, seed=s[3]), ReLU(),
               Dropout(0.4, seed=s[4]),
               Dense(256, 10, dtype=dtype, seed=s[5])]
    return Sequential(layers)


ARCHITECTURES: dict[str, Callable[..., Sequential]] = {"default": default_model, "lenet": lenet,
                                                       "vgg-bn": vgg_bn}

#: Settings of ``cnn-im2col train`` per architecture where they differ from the command's defaults.
#: vgg-bn on Fashion-MNIST (Adam 2e-3, cosine, batch 128, seed 0; loaded 2-core machine), test
#: accuracy: 8 epochs shift 1 -> 92.02%, 8 epochs shift 0 -> 92.21%, 10 epochs shift 1 -> 92.30%
#: (1152 s); quiet machine: 15 epochs shift 1 -> 93.18% (validation 93.78%), 12 min 28 s wall.
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {"vgg-bn": {"epochs": 15, "shift": 1}}


def build(spec: str, seed: int = 0) -> Sequential:
    """The network named ``spec`` (a key of ``ARCHITECTURES``), or the one described by the JSON
    file at ``spec`` (``Sequential.config()``). Raises ValueError naming the choices or the file."""
    if not isinstance(spec, str):
        raise TypeError(f"model must be a name or the path of a .json file, got {spec!r}")
    if spec in ARCHITECTURES:
        return ARCHITECTURES[spec](seed)
    path = Path(spec)
    if path.suffix.lower() != ".json":
        raise ValueError(f"model must be one of {sorted(ARCHITECTURES)} or a .json file holding "
                         f"Sequential.config(), got {spec!r}")
    if not path.is_file():
        raise FileNotFoundError(
            f"{spec}: no such model file (a .json file holding Sequential.config())")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{spec}: not a JSON file: {exc}") from None
    return Sequential.from_config(config, source=spec)
