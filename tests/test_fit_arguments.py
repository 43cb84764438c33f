"""Tests for cnn_im2col.fit_arguments, the checks of ``Sequential.fit``'s arguments: every bad
argument refused up front, before anything is trained, with a message naming it (the battery's
rows for fit among them), and ``validation_split``'s hold-out of the last samples."""

import re

import numpy as np
import pytest
from bad_input import (
    FINITE,
    INT0,
    INT1,
    REAL,
    ROW_FIELDS,
    XM,
    YM,
    bad_labels,
    check_bad_input,
    fit_tiny,
    rows,
    with_value,
)
from hypothesis import given
from small_nets import assert_same_params, data, fit, small, small_net, snapshot

from cnn_im2col import losses, optim
from cnn_im2col.layers import Dense, Flatten
from cnn_im2col.losses import MeanSquaredError, SoftmaxCrossEntropy
from cnn_im2col.model import Sequential
from cnn_im2col.optim import SGD, CosineAnnealingLR


def test_a_callback_that_is_neither_callable_nor_a_callback_is_refused():
    model, x, y = small()
    with pytest.raises(
        TypeError,
        match=r"callbacks must be callables cb\(model, logs\) or callbacks\.Callback "
        r"instances, got 'no'",
    ):
        model.fit(
            x,
            y,
            epochs=1,
            batch_size=4,
            optimizer=SGD(0.1),
            loss=SoftmaxCrossEntropy(),
            callbacks=["no"],
        )


BAD_FIT = [
    ({"y": np.zeros(15, dtype=np.int64)}, ValueError, "x has 16 samples but y has 15"),
    ({"y": np.full(16, 10)}, ValueError, r"labels must be in \[0, 10\).*got 10 at index 0"),
    ({"y": np.full(16, -1)}, ValueError, r"labels must be in \[0, 10\)"),
    ({"y": np.zeros(16, dtype=np.float32)}, TypeError, "labels must be integers"),
    ({"y": np.zeros((16, 3), dtype=np.float32)}, ValueError, "targets must have shape"),
    ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
    ({"batch_size": 2.5}, TypeError, "batch_size"),
    ({"epochs": 0}, ValueError, "epochs must be an int >= 1"),
    (
        {"x": np.zeros((0, 1, 8, 8), np.float32), "y": np.zeros(0, np.int64)},
        ValueError,
        "must not be empty",
    ),
    ({"x": np.full((16, 1, 8, 8), np.nan, np.float32)}, ValueError, "NaN or Inf"),
    ({"x": np.zeros((16, 1, 10, 10), np.float32)}, ValueError, "layer 4 Dense"),
    ({"x": np.zeros(16, np.float32)}, ValueError, "at least 2 dimensions"),
    ({"optimizer": "adam"}, TypeError, "optimizer must have step"),
    ({"loss": "ce"}, TypeError, "loss must have forward"),
    ({"scheduler": 3}, TypeError, "scheduler must have step"),
    ({"scheduler_interval": "step"}, ValueError, "scheduler_interval"),
    ({"seed": -1}, ValueError, "seed"),
    (
        {"validation_data": (np.zeros((4, 1, 8, 8), np.float32),)},
        TypeError,
        "validation_data must be a pair",
    ),
    (
        {"validation_data": (np.zeros((4, 1, 7, 7), np.float32), np.zeros(4, np.int64))},
        ValueError,
        "validation x must have per-sample shape",
    ),
    (
        {"validation_data": (np.zeros((4, 1, 8, 8), np.float32), np.full(4, 12))},
        ValueError,
        r"validation y labels must be in \[0, 10\)",
    ),
    ({"augment": 2}, TypeError, "augment must be a callable"),
]


@pytest.mark.parametrize(("change", "error", "match"), BAD_FIT)
def test_fit_validates_up_front(change, error, match):
    x, y = data(16)
    model = small_net()
    before = snapshot(model)
    args = {"x": x, "y": y}
    args.update(change)
    with pytest.raises(error, match=match):
        fit(model, args.pop("x"), args.pop("y"), **args)
    assert_same_params(model, before)  # nothing was trained


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"optimizer": SGD}, r"optimizer must be an instance, got the class SGD \(instantiate it"),
        (
            {"loss": SoftmaxCrossEntropy},
            r"loss must be an instance, got the class SoftmaxCrossEntropy",
        ),
        (
            {"scheduler": CosineAnnealingLR},
            r"scheduler must be an instance, got the class CosineAnnealingLR",
        ),
        ({"checkpoint": 3}, r"checkpoint must be a str or os.PathLike, got 3"),
        ({"checkpoint_extra": {"f": object()}}, r"checkpoint_extra must be a JSON-able dict"),
    ],
)
def test_fit_refuses_classes_and_bad_checkpoint_arguments(change, match):
    x, y = data(16)
    with pytest.raises(TypeError, match=match):
        fit(small_net(), x, y, **change)
    with pytest.raises(TypeError, match="loss must be an instance"):
        small_net().evaluate(x, y, loss=MeanSquaredError)


# ------------------------------------------------------------------------------------------
# bad inputs: the battery's rows for Sequential.fit (machinery: bad_input.py)
# ------------------------------------------------------------------------------------------

BAD_INPUTS = {
    "fit epochs=0": (
        lambda t: fit_tiny(epochs=0),
        ValueError,
        r"Sequential\.fit: epochs",
        r"got 0",
        INT1,
    ),
    "fit epochs=-1": (
        lambda t: fit_tiny(epochs=-1),
        ValueError,
        r"Sequential\.fit: epochs",
        r"got -1",
        INT1,
    ),
    "fit epochs=1.5": (
        lambda t: fit_tiny(epochs=1.5),
        TypeError,
        r"Sequential\.fit: epochs",
        r"got 1\.5",
        INT1,
    ),
    "fit batch_size=0": (
        lambda t: fit_tiny(batch_size=0),
        ValueError,
        r"Sequential\.fit: batch_size",
        r"got 0",
        INT1,
    ),
    "fit batch_size=True": (
        lambda t: fit_tiny(batch_size=True),
        TypeError,
        r"Sequential\.fit: batch_size",
        r"got True",
        INT1,
    ),
    "fit x and y of different lengths": (
        lambda t: fit_tiny(y=YM[:4]),
        ValueError,
        r"Sequential\.fit: x",
        r"y has 4 rows",
        r"x has 5 samples .* must match",
    ),
    "fit label == number of classes": (
        lambda t: fit_tiny(y=np.array([0, 1, 3, 0, 1])),
        ValueError,
        r"Sequential\.fit: y labels",
        r"got 3 at index 2",
        r"\[0, 3\) for the network's 3 outputs",
    ),
    "fit negative label": (
        lambda t: fit_tiny(y=np.array([0, 1, -1, 0, 1])),
        ValueError,
        r"Sequential\.fit: y labels",
        r"got -1 at index 2",
        r"\[0, 3\)",
    ),
    "fit non-integer labels": (
        lambda t: fit_tiny(y=np.array([0, 1, 1.5, 0, 1])),
        TypeError,
        r"Sequential\.fit: y labels",
        r"dtype float64",
        r"must be integers",
    ),
    "fit string labels": (
        lambda t: fit_tiny(y=np.array(list("abcde"))),
        TypeError,
        r"Sequential\.fit: y",
        r"dtype <U1",
        r"integer class labels",
    ),
    "fit bool labels": (
        lambda t: fit_tiny(y=np.ones(5, bool)),
        TypeError,
        r"Sequential\.fit: y",
        r"dtype bool",
        r"integer class labels",
    ),
    "fit y=None": (
        lambda t: fit_tiny(y=None),
        TypeError,
        r"Sequential\.fit: y",
        r"dtype object",
        r"integer class labels",
    ),
    "fit scalar y": (
        lambda t: fit_tiny(y=3),
        ValueError,
        r"Sequential\.fit: x",
        r"y has a scalar",
        r"must match",
    ),
    "fit labels of shape (N, 1)": (
        lambda t: fit_tiny(y=YM[:, None]),
        ValueError,
        r"Sequential\.fit: y targets",
        r"got \(5, 1\)",
        r"shape \(N, \*\(3,\)\)",
    ),
    "fit x with NaN": (
        lambda t: fit_tiny(x=with_value(XM, np.nan, (3, 0, 2, 2))),
        ValueError,
        r"Sequential\.fit: x",
        *FINITE,
    ),
    "fit x with Inf": (
        lambda t: fit_tiny(x=with_value(XM, np.inf)),
        ValueError,
        r"Sequential\.fit: x",
        *FINITE,
    ),
    "fit empty batch": (
        lambda t: fit_tiny(x=XM[:0], y=YM[:0]),
        ValueError,
        r"Sequential\.fit: x",
        r"got shape \(0, 1, 6, 6\)",
        r"must not be empty",
    ),
    "fit object x": (
        lambda t: fit_tiny(x=XM.astype(object)),
        TypeError,
        r"Sequential\.fit: x",
        r"dtype object",
        REAL,
    ),
    "fit complex x": (
        lambda t: fit_tiny(x=XM.astype(complex)),
        TypeError,
        r"Sequential\.fit: x",
        r"complex128",
        REAL,
    ),
    "fit wrong channel count": (
        lambda t: fit_tiny(x=np.repeat(XM, 2, axis=1)),
        ValueError,
        r"Sequential: layer 0 Conv2D\(1, 2, 3",
        r"input of shape \(2, 6, 6\)",
        r"input must be \(1, H, W\)",
    ),
    "fit 3-D x": (
        lambda t: fit_tiny(x=XM[:, 0]),
        ValueError,
        r"Sequential: layer 0 Conv2D",
        r"shape \(6, 6\)",
        r"input must be \(1, H, W\)",
    ),
    "fit images smaller than the kernel": (
        lambda t: fit_tiny(x=XM[:, :, :2, :2]),
        ValueError,
        r"Sequential: layer 0 Conv2D",
        r"padded input \(2, 2\)",
        r"must fit inside",
    ),
    "fit scheduler_interval='step'": (
        lambda t: fit_tiny(scheduler_interval="step"),
        ValueError,
        r"Sequential\.fit: scheduler_interval",
        r"got 'step'",
        r"one of \('epoch', 'batch'\)",
    ),
    "fit optimizer=None": (
        lambda t: fit_tiny(optimizer=None),
        TypeError,
        r"Sequential\.fit: optimizer",
        r"got NoneType",
        r"step\(params, grads\) and lr",
    ),
    "fit loss=None": (
        lambda t: fit_tiny(loss=None),
        TypeError,
        r"Sequential\.fit: loss",
        r"got None",
        r"forward\(pred, target\) and backward\(\)",
    ),
    "fit validation images of another size": (
        lambda t: fit_tiny(validation_data=(XM[:, :, :5], YM)),
        ValueError,
        r"Sequential\.fit: validation x",
        r"got \(1, 5, 6\)",
        r"per-sample shape \(1, 6, 6\)",
    ),
    "fit validation label out of range": (
        lambda t: fit_tiny(validation_data=(XM, YM + 5)),
        ValueError,
        r"Sequential\.fit: validation y labels",
        r"got 5 at index 0",
        r"\[0, 3\)",
    ),
    "fit validation_data not a pair": (
        lambda t: fit_tiny(validation_data=XM),
        TypeError,
        r"Sequential\.fit: validation_data",
        r"got ndarray",
        r"a pair",
    ),
    "fit seed=-1": (
        lambda t: fit_tiny(seed=-1),
        ValueError,
        r"Sequential\.fit: seed",
        r"got -1",
        INT0,
    ),
    "fit shuffle='yes'": (
        lambda t: fit_tiny(shuffle="yes"),
        TypeError,
        r"Sequential\.fit: shuffle",
        r"got 'yes'",
        r"True or False",
    ),
    "fit augment=3": (
        lambda t: fit_tiny(augment=3),
        TypeError,
        r"Sequential\.fit: augment",
        r"got 3",
        r"a callable",
    ),
    "fit callbacks=[3]": (
        lambda t: fit_tiny(callbacks=[3]),
        TypeError,
        r"Sequential\.fit: callbacks",
        r"got 3",
        r"callables",
    ),
    "fit should_stop=3": (
        lambda t: fit_tiny(should_stop=3),
        TypeError,
        r"Sequential\.fit: should_stop",
        r"got 3",
        r"a callable",
    ),
    "fit scheduler=3": (
        lambda t: fit_tiny(scheduler=3),
        TypeError,
        r"Sequential\.fit: scheduler",
        r"got int",
        r"must have step\(\)",
    ),
    "fit resume='x'": (
        lambda t: fit_tiny(resume="x"),
        TypeError,
        r"Sequential\.fit: resume",
        r"got str",
        r"a dict",
    ),
    "fit resume={}": (
        lambda t: fit_tiny(resume={}),
        ValueError,
        r"Sequential\.fit: resume",
        r"KeyError\('epoch'\)",
        r"valid checkpoint state",
    ),
    "fit optimizer=SGD (the class)": (
        lambda t: fit_tiny(optimizer=optim.SGD),
        TypeError,
        r"Sequential\.fit: optimizer",
        r"SGD",
        r"instan",
    ),
    "fit loss=SoftmaxCrossEntropy (the class)": (
        lambda t: fit_tiny(loss=losses.SoftmaxCrossEntropy),
        TypeError,
        r"Sequential\.fit: loss",
        r"SoftmaxCrossEntropy",
        r"instan",
    ),
    "fit checkpoint=3": (
        lambda t: fit_tiny(checkpoint=3),
        TypeError,
        r"Sequential\.fit: checkpoint",
        r"got 3",
        r"str or os\.PathLike",
    ),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)


@given(bad_labels())
def test_random_bad_labels_for_fit_and_evaluate(case):
    n, k, labels, _ = case
    net = Sequential([Flatten(), Dense(4, k, seed=0)])
    x = np.random.default_rng(1).random((n, 1, 2, 2)).astype(np.float32)
    for call, owner in (
        (
            lambda: net.fit(
                x,
                labels,
                epochs=1,
                batch_size=2,
                optimizer=optim.SGD(0.1),
                loss=losses.SoftmaxCrossEntropy(),
                progress=False,
                log=None,
            ),
            "Sequential.fit",
        ),
        (lambda: net.evaluate(x, labels), "Sequential.evaluate"),
    ):
        with pytest.raises((TypeError, ValueError), match=re.escape(owner) + r": (x|y)"):
            call()


# ------------------------------------------------------------------------------------------
# refused before training; validation_split
# ------------------------------------------------------------------------------------------


def test_a_scheduler_built_on_another_optimizer_is_refused_before_training():
    from cnn_im2col.optim import StepLR

    model, x, y = small()
    with pytest.raises(ValueError, match=r"scheduler StepLR was built on another optimizer"):
        model.fit(
            x,
            y,
            epochs=1,
            batch_size=4,
            optimizer=SGD(0.1),
            loss=SoftmaxCrossEntropy(),
            scheduler=StepLR(SGD(0.1), step_size=1),
            progress=False,
            log=None,
        )


def test_a_shift_larger_than_half_the_image_is_refused_before_training():
    from cnn_im2col.augment import RandomShift
    from cnn_im2col.layers import Flatten

    model = Sequential([Flatten(), Dense(28 * 28, 3, seed=0)])
    x = np.zeros((4, 1, 28, 28), np.float32)
    with pytest.raises(
        ValueError,
        match=r"RandomShift\(max_shift=30, fill=0.0\) is too large for "
        r"28x28 images: max_shift must be at most half",
    ):
        model.fit(
            x,
            np.zeros(4, np.int64),
            epochs=1,
            batch_size=2,
            optimizer=SGD(0.1),
            loss=SoftmaxCrossEntropy(),
            augment=RandomShift(30),
            progress=False,
            log=None,
        )


def test_validation_split_holds_out_the_last_samples_as_keras_does():
    rng = np.random.default_rng(4)
    x, y = rng.random((20, 6)), rng.integers(0, 3, 20)
    args = {
        "epochs": 2,
        "batch_size": 4,
        "loss": SoftmaxCrossEntropy(),
        "seed": 0,
        "progress": False,
        "log": None,
    }
    split, _, _ = small()
    explicit, _, _ = small()
    a = split.fit(x, y, optimizer=SGD(0.1), validation_split=0.25, **args)
    b = explicit.fit(x[:15], y[:15], optimizer=SGD(0.1), validation_data=(x[15:], y[15:]), **args)
    assert a["val_loss"] == b["val_loss"] and a["loss"] == b["loss"]
    for bad, message in (
        (1.0, r"validation_split must be a number in \[0, 1\), got 1.0"),
        (0.01, r"holds out 0; it must leave at least one sample"),
    ):
        with pytest.raises(ValueError, match=message):
            small()[0].fit(x, y, optimizer=SGD(0.1), validation_split=bad, **args)
    with pytest.raises(ValueError, match="validation_data or validation_split, not both"):
        small()[0].fit(
            x, y, optimizer=SGD(0.1), validation_split=0.5, validation_data=(x, y), **args
        )
