"""Named networks for (C, H, W) images (MNIST's (1, 28, 28) by default), and the
``--model NAME|FILE.json`` lookup of the command. Each takes ``input_shape`` and ``classes`` and
adapts its first convolution, its flatten size and its last layer to them.

- ``default``: :func:`default_model`, two conv-pool groups and two dense layers (Fig. 8.11 style);
- ``lenet``: :func:`lenet`, the network of ``benchmarks/bench_train.py`` (PyTorch's twin there);
- ``vgg-bn``: :func:`vgg_bn`, 3x3 convolutions with BatchNorm2D and ReLU, 32-pool-64-64-pool,
  then a dense head; for Fashion-MNIST.
- ``resnet20``: :func:`resnet20`, He et al. 2016's CIFAR ResNet: 3 stages of 3 basic blocks
  (16, 32, 64 channels) with projection shortcuts where the shape changes.
- ``mobilenetv2``: :func:`mobilenetv2`, Sandler et al. 2018's inverted residuals with a width
  multiplier, strides adapted to small images as for CIFAR.

``build(spec, seed, input_shape, classes)`` takes one of those names or the path of a JSON file
holding ``Sequential.config()`` (``{"layers": [{"class": ..., "config": ...}, ...]}``, built as it
is; layers without a seed draw theirs from ``seed`` through ``init.manual_seed``).
``TRAIN_DEFAULTS`` holds the settings the ``train`` command uses for an architecture when a flag is
not given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import init
from .containers import Residual
from .layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    ReLU6,
)
from .model import Sequential

__all__ = [
    "ARCHITECTURES",
    "TRAIN_DEFAULTS",
    "build",
    "default_model",
    "lenet",
    "mobilenetv2",
    "read_spec",
    "resnet20",
    "vgg_bn",
]


def _seeds(seed: int, count: int) -> list[int]:
    return [int(v) for v in np.random.SeedSequence(seed).generate_state(count)]


def _after_two_pools(size: int, kernel: int, pad: int) -> int:
    """The side of a map after two (kernel, pad) convolutions, each followed by a 2x2 pool."""
    for _ in range(2):
        size = (size + 2 * pad - kernel + 1) // 2
    return size


def _check_image(input_shape: Any, classes: Any, name: str) -> tuple[int, int, int, int]:
    if len(tuple(input_shape)) != 3:
        raise ValueError(
            f"{name}: the network takes images (C, H, W), got input_shape {tuple(input_shape)}"
        )
    c, h, w = (int(v) for v in input_shape)
    if min(c, h, w) < 1 or min(h, w) < 4 or int(classes) < 2:
        raise ValueError(
            f"{name}: needs images of at least 4x4 and at least 2 classes, got "
            f"input_shape {(c, h, w)} and {classes} classes"
        )
    return c, h, w, int(classes)


def _lenet_style(
    widths: tuple[int, int],
    hidden: int,
    seeds: list[int],
    dtype: Any,
    input_shape: Any,
    classes: int,
    dropout: tuple[float, int] | None,
    name: str,
) -> Sequential:
    """Conv(C->w0, 5) ReLU MaxPool(2) Conv(w0->w1, 5) ReLU MaxPool(2) Flatten Dense(->hidden)
    ReLU [Dropout] Dense(hidden->classes), sized for ``input_shape``; images smaller than 16x16
    get 'same'-padded convolutions."""
    c, h, w, k = _check_image(input_shape, classes, name)
    pad = 0 if min(h, w) >= 16 else 2
    side = _after_two_pools(h, 5, pad), _after_two_pools(w, 5, pad)
    layers = [
        Conv2D(c, widths[0], 5, padding=pad, dtype=dtype, seed=seeds[0]),
        ReLU(),
        MaxPool2D(2),
        Conv2D(widths[0], widths[1], 5, padding=pad, dtype=dtype, seed=seeds[1]),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(widths[1] * side[0] * side[1], hidden, dtype=dtype, seed=seeds[2]),
        ReLU(),
    ]
    if dropout is not None:
        layers.append(Dropout(dropout[0], seed=dropout[1]))
    layers.append(Dense(hidden, k, dtype=dtype, seed=seeds[-1]))
    return Sequential(layers)


def default_model(
    seed: int = 0, dtype: Any = np.float32, input_shape: Any = (1, 28, 28), classes: int = 10
) -> Sequential:
    """Conv(C->32, 5) ReLU MaxPool(2) Conv(32->64, 5) ReLU MaxPool(2) Flatten Dense(->256) ReLU
    Dropout(0.4) Dense(256->classes); for (1, 28, 28): Dense(1024->256). Images smaller than
    16x16 get 'same'-padded convolutions. Every layer's seed is derived from ``seed``."""
    s = _seeds(seed, 5)
    return _lenet_style(
        (32, 64), 256, [s[0], s[1], s[2], s[4]], dtype, input_shape, classes, (0.4, s[3]), "default"
    )


def lenet(
    seed: int = 0, dtype: Any = np.float32, input_shape: Any = (1, 28, 28), classes: int = 10
) -> Sequential:
    """The benchmark network: Conv(C->20, 5) ReLU MaxPool(2) Conv(20->40, 5) ReLU MaxPool(2)
    Flatten Dense(->100) ReLU Dense(100->classes); for (1, 28, 28): Dense(640->100). Images
    smaller than 16x16 get 'same'-padded convolutions."""
    s = _seeds(seed, 4)
    return _lenet_style((20, 40), 100, s, dtype, input_shape, classes, None, "lenet")


def vgg_bn(
    seed: int = 0, dtype: Any = np.float32, input_shape: Any = (1, 28, 28), classes: int = 10
) -> Sequential:
    """A small VGG, each convolution 3x3 'same' without bias (BatchNorm's shift replaces it)
    followed by BatchNorm2D and ReLU: Conv(C->32), MaxPool(2), Conv(32->64), Conv(64->64),
    MaxPool(2), Flatten, Dense(->256) ReLU Dropout(0.4) Dense(256->classes); for (1, 28, 28):
    14x14, then 7x7 and Dense(3136->256).

    One convolution, not two, at full size: a second 32->32 one at 28x28 took 40% of a training
    step (measured 170 of 434 ms per batch of 128) for the least gain."""
    c, h, w, k = _check_image(input_shape, classes, "vgg-bn")
    s = _seeds(seed, 6)
    layers: list[Any] = []
    for i, (cin, cout, pool) in enumerate([(c, 32, True), (32, 64, False), (64, 64, True)]):
        layers += [
            Conv2D(cin, cout, 3, padding="same", bias=None, dtype=dtype, seed=s[i]),
            BatchNorm2D(cout, dtype=dtype),
            ReLU(),
        ]
        if pool:
            layers.append(MaxPool2D(2))
    layers += [
        Flatten(),
        Dense(64 * (h // 4) * (w // 4), 256, dtype=dtype, seed=s[3]),
        ReLU(),
        Dropout(0.4, seed=s[4]),
        Dense(256, k, dtype=dtype, seed=s[5]),
    ]
    return Sequential(layers)


def _conv_bn(
    cin: int, cout: int, kernel: int, stride: int, seed: int, dtype: Any, groups: int = 1
) -> list[Any]:
    """A convolution without bias ('same'-style padding kernel // 2) and its BatchNorm2D."""
    return [
        Conv2D(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=None,
               dtype=dtype, seed=seed),
        BatchNorm2D(cout, dtype=dtype),
    ]


def basic_block(cin: int, cout: int, stride: int, seeds: list[int], dtype: Any) -> Residual:
    """ResNet's basic block without its final ReLU: conv3x3(stride)-BN-ReLU-conv3x3-BN, plus the
    input (identity) or, where the shape changes, a projection: conv1x1(stride)-BN (option B)."""
    body = Sequential([*_conv_bn(cin, cout, 3, stride, seeds[0], dtype), ReLU(),
                       *_conv_bn(cout, cout, 3, 1, seeds[1], dtype)])
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = Sequential(_conv_bn(cin, cout, 1, stride, seeds[2], dtype))
    return Residual(body, shortcut)


def resnet20(
    seed: int = 0, dtype: Any = np.float32, input_shape: Any = (3, 32, 32), classes: int = 10
) -> Sequential:
    """He et al. 2016's ResNet-20 for small images: conv3x3(C->16)-BN-ReLU, then 3 stages of 3
    basic blocks (16, 32, 64 channels; the first block of stages 2 and 3 halves the map with a
    stride-2 convolution and a 1x1 projection shortcut), each block followed by ReLU, then global
    average pooling and Dense(64->classes). 0.27 M parameters; for (1, 28, 28): maps 28, 14, 7."""
    c, _, _, k = _check_image(input_shape, classes, "resnet20")
    s = iter(_seeds(seed, 2 + 9 * 3))
    layers: list[Any] = [*_conv_bn(c, 16, 3, 1, next(s), dtype), ReLU()]
    cin = 16
    for stage, cout in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            layers += [basic_block(cin, cout, stride, [next(s), next(s), next(s)], dtype), ReLU()]
            cin = cout
    layers += [GlobalAvgPool2D(), Dense(64, k, dtype=dtype, seed=next(s))]
    return Sequential(layers, input_shape=input_shape)


def _divisible(value: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: the nearest multiple of ``divisor``, never 10% below."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def inverted_residual(
    cin: int, cout: int, stride: int, expand: int, seeds: list[int], dtype: Any
) -> Any:
    """MobileNetV2's block: 1x1 expansion (x ``expand``)-BN-ReLU6 (none when ``expand`` is 1),
    3x3 depthwise (stride)-BN-ReLU6, 1x1 projection-BN (linear); a ``Residual`` around it when the
    stride is 1 and the channels stay, else the ``Sequential`` alone."""
    hidden = cin * expand
    layers: list[Any] = []
    if expand != 1:
        layers += [*_conv_bn(cin, hidden, 1, 1, seeds[0], dtype), ReLU6()]
    layers += [*_conv_bn(hidden, hidden, 3, stride, seeds[1], dtype, groups=hidden), ReLU6(),
               *_conv_bn(hidden, cout, 1, 1, seeds[2], dtype)]
    body = Sequential(layers)
    return Residual(body) if stride == 1 and cin == cout else body


#: MobileNetV2's stages (expansion t, channels c, blocks n, stride s), torchvision's, with the
#: strides of the first two stages set to 1 for small images (as CIFAR versions do)
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                      (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenetv2(
    seed: int = 0, dtype: Any = np.float32, input_shape: Any = (3, 32, 32), classes: int = 10,
    width: float = 0.5,
) -> Sequential:
    """Sandler et al. 2018's MobileNetV2 with the width multiplier ``width`` (channels rounded as
    torchvision does), for small images: conv3x3(C->32w, stride 1)-BN-ReLU6, the inverted
    residual stages of ``MOBILENETV2_STAGES`` (maps 28 -> 14 -> 7 -> 4 for (1, 28, 28)),
    conv1x1(->1280)-BN-ReLU6, global average pooling, Dropout(0.2), Dense(1280->classes)."""
    c, _, _, k = _check_image(input_shape, classes, "mobilenetv2")
    if not isinstance(width, (int, float)) or not 0 < width <= 4:
        raise ValueError(f"mobilenetv2: width must be in (0, 4], got {width!r}")
    s = iter(_seeds(seed, 4 + 3 * sum(n for _, _, n, _ in MOBILENETV2_STAGES)))
    cin = _divisible(32 * width)
    layers: list[Any] = [*_conv_bn(c, cin, 3, 1, next(s), dtype), ReLU6()]
    for expand, channels, blocks, stride in MOBILENETV2_STAGES:
        cout = _divisible(channels * width)
        for block in range(blocks):
            layers.append(inverted_residual(cin, cout, stride if block == 0 else 1, expand,
                                            [next(s), next(s), next(s)], dtype))
            cin = cout
    last = _divisible(1280 * max(1.0, width))
    layers += [*_conv_bn(cin, last, 1, 1, next(s), dtype), ReLU6(), GlobalAvgPool2D(),
               Dropout(0.2, seed=next(s)), Dense(last, k, dtype=dtype, seed=next(s))]
    return Sequential(layers, input_shape=input_shape)


ARCHITECTURES: dict[str, Callable[..., Sequential]] = {
    "default": default_model,
    "lenet": lenet,
    "vgg-bn": vgg_bn,
    "resnet20": resnet20,
    "mobilenetv2": mobilenetv2,
}

#: Settings of ``cnn-im2col train`` per architecture where they differ from the command's defaults.
#: vgg-bn on Fashion-MNIST (Adam 2e-3, cosine, batch 128, seed 0; loaded 2-core machine), test
#: accuracy: 8 epochs shift 1 -> 92.02%, 8 epochs shift 0 -> 92.21%, 10 epochs shift 1 -> 92.30%
#: (1152 s); quiet machine: 15 epochs shift 1 -> 93.18% (validation 93.78%), 12 min 28 s wall.
# resnet20: He et al.'s recipe (SGD 0.1, momentum, weight decay; shifts and left-right flips, on
# grayscale data too: --no-flip for digits) on a 20-epoch cosine; measured 2026-12-03 on
# Fashion-MNIST (AMD EPYC, 2 cores): 94.27% test in 39 min 34 s; 2026-12-04 with these defaults,
# a slower day: 94.27% (validation 94.70%) in 44 min 7 s
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "vgg-bn": {"epochs": 15, "shift": 1},
    "resnet20": {"epochs": 20, "optimizer": "sgd", "lr": 0.1, "flip": True},
}


def read_spec(spec: str) -> dict | None:
    """Check ``spec`` without building anything: None for a name of ``ARCHITECTURES``, the
    parsed config of a JSON file; ValueError / FileNotFoundError naming the choices or the
    file."""
    if not isinstance(spec, str):
        raise TypeError(f"model must be a name or the path of a .json file, got {spec!r}")
    if spec in ARCHITECTURES:
        return None
    path = Path(spec)
    if path.suffix.lower() != ".json":
        raise ValueError(
            f"model must be one of {sorted(ARCHITECTURES)} or a .json file holding "
            f"Sequential.config(), got {spec!r}"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"{spec}: no such model file (a .json file holding Sequential.config())"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{spec}: not a JSON file: {exc}") from None


def build(
    spec: str, seed: int = 0, input_shape: Any = (1, 28, 28), classes: int = 10
) -> Sequential:
    """The network named ``spec`` (a key of ``ARCHITECTURES``) for ``input_shape`` images and
    ``classes`` classes, or the one described by the JSON file at ``spec``
    (``Sequential.config()``, built as it is under ``manual_seed(seed)``). Raises ValueError
    naming the choices or the file."""
    config = read_spec(spec)
    if config is None:
        return ARCHITECTURES[spec](seed, input_shape=input_shape, classes=classes)
    previous = init.global_seed_state()
    init.manual_seed(seed)  # layers without a seed of their own draw it from the run's
    try:
        return Sequential.from_config(config, source=spec)
    finally:
        init.restore_global_seed(previous)
