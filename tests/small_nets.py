"""Small seeded networks and data shared by the model, training (fit's arguments and the divergence
guard too), checkpoint, blocks and planning tests, and the assertions that compare their weights. A
helper, not a test module."""

import numpy as np

from cnn_im2col.layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
)
from cnn_im2col.losses import SoftmaxCrossEntropy
from cnn_im2col.model import Sequential
from cnn_im2col.optim import Adam


class MyReLU(ReLU):
    """A user's subclass: it may change forward, so it is never fused."""


def lenet(dtype=np.float32):
    """The layers of a small LeNet, (1, 14, 14) -> 3, every layer seeded."""
    return [
        Conv2D(1, 4, 3, dtype=dtype, seed=0),
        ReLU(),
        MaxPool2D(2),
        Conv2D(4, 6, 3, padding=1, groups=2, dtype=dtype, seed=1),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(6 * 3 * 3, 5, dtype=dtype, seed=2),
        ReLU(),
        Dense(5, 3, dtype=dtype, seed=3),
    ]


def small_net(seed=0, dropout=0.0, dtype=np.float32):
    """(1, 8, 8) -> 10 classes; every layer seeded."""
    return Sequential([
        Conv2D(1, 4, 3, dtype=dtype, seed=seed), ReLU(), MaxPool2D(2),
        Flatten(),
        Dense(4 * 3 * 3, 16, dtype=dtype, seed=seed + 1), ReLU(), Dropout(dropout, seed=seed + 2),
        Dense(16, 10, dtype=dtype, seed=seed + 3),
    ])


def small():
    rng = np.random.default_rng(0)
    x, y = rng.random((10, 6)), rng.integers(0, 3, 10)
    return (
        Sequential(
            [Dense(6, 8, dtype=np.float64, seed=0), ReLU(), Dense(8, 3, dtype=np.float64, seed=1)]
        ),
        x,
        y,
    )


def data(n=16, seed=0, classes=10, size=8):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, size, size), dtype=np.float32), rng.integers(0, classes, n)


def fit(model, x, y, **kwargs):
    args = {"epochs": 2, "batch_size": 8, "optimizer": Adam(1e-2), "loss": SoftmaxCrossEntropy(),
            "seed": 0, "progress": False, "log": None}
    args.update(kwargs)
    return model.fit(x, y, **args)


def snapshot(model):
    return {k: v.copy() for k, v in model.params.items()}


def assert_same_params(a, b):
    a = a.params if isinstance(a, Sequential) else a
    b = b.params if isinstance(b, Sequential) else b
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def bn_net(seed=0):
    """(1, 8, 8) -> 10 classes with BatchNorm2D (buffers) and a GlobalAvgPool2D head."""
    return Sequential([
        Conv2D(1, 4, 3, padding=1, bias=None, seed=seed), BatchNorm2D(4), ReLU(), MaxPool2D(2),
        Conv2D(4, 6, 3, padding=1, seed=seed + 1), BatchNorm2D(6, momentum=None), ReLU(),
        GlobalAvgPool2D(),
        Dense(6, 10, seed=seed + 2),
    ])


def assert_same_buffers(a, b):
    assert set(a.buffers) == set(b.buffers)
    for key, value in a.buffers.items():
        assert value.dtype == b.buffers[key].dtype, key
        np.testing.assert_array_equal(value, b.buffers[key], err_msg=key)
