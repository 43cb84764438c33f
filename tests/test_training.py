"""Tests for cnn_im2col.training beyond those of Sequential.fit in test_model.py / test_robustness.py:
the Callback hooks, and where the public names live."""

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

import cnn_im2col
from cnn_im2col import losses, optim, training
from cnn_im2col import model as model_module
from cnn_im2col.layers import Dense, Flatten, ReLU
from cnn_im2col.losses import SoftmaxCrossEntropy
from cnn_im2col.model import Sequential
from cnn_im2col.optim import SGD


class Recorder(training.Callback):
    def __init__(self):
        self.events = []

    def on_epoch_begin(self, trainer, epoch, first_batch):
        self.events.append(("begin", epoch, first_batch))

    def on_batch_end(self, trainer, epoch, batch, spent):
        self.events.append(("batch", epoch, batch, trainer.position.sums[2]))

    def on_batches_end(self, trainer, epoch):
        self.events.append(("batches end", epoch))

    def on_epoch_end(self, trainer, epoch, logs):
        self.events.append(("end", epoch, logs["epoch"], len(trainer.history["loss"])))
        return epoch == 1  # stop after the second epoch


def small():
    rng = np.random.default_rng(0)
    x, y = rng.random((10, 6)), rng.integers(0, 3, 10)
    return Sequential([Dense(6, 8, dtype=np.float64, seed=0), ReLU(), Dense(8, 3, dtype=np.float64, seed=1)]), x, y


def test_callback_instances_get_every_hook_in_order_and_can_stop():
    model, x, y = small()
    rec = Recorder()
    seen = []
    history = model.fit(x, y, epochs=5, batch_size=4, optimizer=SGD(0.1), loss=SoftmaxCrossEntropy(), seed=0,
                        progress=False, log=None, callbacks=[rec, lambda m, logs: seen.append(logs["epoch"])])
    assert history["epoch"] == [1, 2] and seen == [1, 2]
    assert rec.events == [
        ("begin", 0, 0), ("batch", 0, 0, 4), ("batch", 0, 1, 8), ("batch", 0, 2, 10), ("batches end", 0),
        ("end", 0, 1, 1),
        ("begin", 1, 0), ("batch", 1, 0, 4), ("batch", 1, 1, 8), ("batch", 1, 2, 10), ("batches end", 1),
        ("end", 1, 2, 2),
    ]


def test_a_callback_that_is_neither_callable_nor_a_callback_is_refused():
    model, x, y = small()
    with pytest.raises(TypeError, match=r"callbacks must be callables cb\(model, logs\) or training\.Callback "
                                        r"instances, got 'no'"):
        model.fit(x, y, epochs=1, batch_size=4, optimizer=SGD(0.1), loss=SoftmaxCrossEntropy(), callbacks=["no"])


def test_public_names_are_the_same_objects_everywhere():
    assert model_module.TrainingDiverged is training.TrainingDiverged is cnn_im2col.TrainingDiverged
    assert model_module.TrainingInterrupted is training.TrainingInterrupted is cnn_im2col.TrainingInterrupted
    assert model_module.RandomShift is cnn_im2col.RandomShift
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = model_module.Nope


def test_imports_run_one_way_the_loop_imports_the_model_and_not_the_reverse():
    import ast
    from pathlib import Path

    def module_level_imports(module):
        tree = ast.parse(Path(module.__file__).read_text())
        return {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}

    def every_import(module):  # inside functions too: a lazy import is still a circle
        tree = ast.parse(Path(module.__file__).read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                found.add(node.module or "")
                found.update(alias.name for alias in node.names if not node.module)
        return found

    assert "model" in module_level_imports(training)
    assert not every_import(model_module) & {"training", "distributed", "cli", "onnx"}
    assert Sequential._loop is training.fit  # the loop installed itself


# ------------------------------------------------------------------------------------------
# bad inputs: the battery's rows for the training loop (Sequential.fit) (machinery: bad_input.py)
# ------------------------------------------------------------------------------------------

BAD_INPUTS = {
    "fit epochs=0": (lambda t: fit_tiny(epochs=0), ValueError, r"Sequential\.fit: epochs", r"got 0", INT1),
    "fit epochs=-1": (lambda t: fit_tiny(epochs=-1), ValueError, r"Sequential\.fit: epochs", r"got -1", INT1),
    "fit epochs=1.5": (lambda t: fit_tiny(epochs=1.5), TypeError, r"Sequential\.fit: epochs", r"got 1\.5", INT1),
    "fit batch_size=0": (lambda t: fit_tiny(batch_size=0), ValueError, r"Sequential\.fit: batch_size", r"got 0", INT1),
    "fit batch_size=True": (lambda t: fit_tiny(batch_size=True), TypeError, r"Sequential\.fit: batch_size", r"got True",
                            INT1),
    "fit x and y of different lengths": (lambda t: fit_tiny(y=YM[:4]), ValueError, r"Sequential\.fit: x", r"y has 4 rows",
                                         r"x has 5 samples .* must match"),
    "fit label == number of classes": (lambda t: fit_tiny(y=np.array([0, 1, 3, 0, 1])), ValueError,
                                       r"Sequential\.fit: y labels", r"got 3 at index 2",
                                       r"\[0, 3\) for the network's 3 outputs"),
    "fit negative label": (lambda t: fit_tiny(y=np.array([0, 1, -1, 0, 1])), ValueError, r"Sequential\.fit: y labels",
                           r"got -1 at index 2", r"\[0, 3\)"),
    "fit non-integer labels": (lambda t: fit_tiny(y=np.array([0, 1, 1.5, 0, 1])), TypeError,
                               r"Sequential\.fit: y labels", r"dtype float64", r"must be integers"),
    "fit string labels": (lambda t: fit_tiny(y=np.array(list("abcde"))), TypeError, r"Sequential\.fit: y", r"dtype <U1",
                          r"integer class labels"),
    "fit bool labels": (lambda t: fit_tiny(y=np.ones(5, bool)), TypeError, r"Sequential\.fit: y", r"dtype bool",
                        r"integer class labels"),
    "fit y=None": (lambda t: fit_tiny(y=None), TypeError, r"Sequential\.fit: y", r"dtype object", r"integer class labels"),
    "fit scalar y": (lambda t: fit_tiny(y=3), ValueError, r"Sequential\.fit: x", r"y has a scalar", r"must match"),
    "fit labels of shape (N, 1)": (lambda t: fit_tiny(y=YM[:, None]), ValueError, r"Sequential\.fit: y targets",
                                   r"got \(5, 1\)", r"shape \(N, \*\(3,\)\)"),
    "fit x with NaN": (lambda t: fit_tiny(x=with_value(XM, np.nan, (3, 0, 2, 2))), ValueError, r"Sequential\.fit: x",
                       *FINITE),
    "fit x with Inf": (lambda t: fit_tiny(x=with_value(XM, np.inf)), ValueError, r"Sequential\.fit: x", *FINITE),
    "fit empty batch": (lambda t: fit_tiny(x=XM[:0], y=YM[:0]), ValueError, r"Sequential\.fit: x",
                        r"got shape \(0, 1, 6, 6\)", r"must not be empty"),
    "fit object x": (lambda t: fit_tiny(x=XM.astype(object)), TypeError, r"Sequential\.fit: x", r"dtype object", REAL),
    "fit complex x": (lambda t: fit_tiny(x=XM.astype(complex)), TypeError, r"Sequential\.fit: x", r"complex128", REAL),
    "fit wrong channel count": (lambda t: fit_tiny(x=np.repeat(XM, 2, axis=1)), ValueError,
                                r"Sequential: layer 0 Conv2D\(1, 2, 3", r"input of shape \(2, 6, 6\)",
                                r"input must be \(1, H, W\)"),
    "fit 3-D x": (lambda t: fit_tiny(x=XM[:, 0]), ValueError, r"Sequential: layer 0 Conv2D", r"shape \(6, 6\)",
                  r"input must be \(1, H, W\)"),
    "fit images smaller than the kernel": (lambda t: fit_tiny(x=XM[:, :, :2, :2]), ValueError,
                                           r"Sequential: layer 0 Conv2D", r"padded input \(2, 2\)",
                                           r"must fit inside"),
    "fit scheduler_interval='step'": (lambda t: fit_tiny(scheduler_interval="step"), ValueError,
                                      r"Sequential\.fit: scheduler_interval", r"got 'step'",
                                      r"one of \('epoch', 'batch'\)"),
    "fit optimizer=None": (lambda t: fit_tiny(optimizer=None), TypeError, r"Sequential\.fit: optimizer",
                           r"got NoneType", r"step\(params, grads\) and lr"),
    "fit loss=None": (lambda t: fit_tiny(loss=None), TypeError, r"Sequential\.fit: loss", r"got None",
                      r"forward\(pred, target\) and backward\(\)"),
    "fit validation images of another size": (lambda t: fit_tiny(validation_data=(XM[:, :, :5], YM)), ValueError,
                                              r"Sequential\.fit: validation x", r"got \(1, 5, 6\)",
                                              r"per-sample shape \(1, 6, 6\)"),
    "fit validation label out of range": (lambda t: fit_tiny(validation_data=(XM, YM + 5)), ValueError,
                                          r"Sequential\.fit: validation y labels", r"got 5 at index 0", r"\[0, 3\)"),
    "fit validation_data not a pair": (lambda t: fit_tiny(validation_data=XM), TypeError,
                                       r"Sequential\.fit: validation_data", r"got ndarray", r"a pair"),
    "fit seed=-1": (lambda t: fit_tiny(seed=-1), ValueError, r"Sequential\.fit: seed", r"got -1", INT0),
    "fit shuffle='yes'": (lambda t: fit_tiny(shuffle="yes"), TypeError, r"Sequential\.fit: shuffle", r"got 'yes'",
                          r"True or False"),
    "fit augment=3": (lambda t: fit_tiny(augment=3), TypeError, r"Sequential\.fit: augment", r"got 3", r"a callable"),
    "fit callbacks=[3]": (lambda t: fit_tiny(callbacks=[3]), TypeError, r"Sequential\.fit: callbacks", r"got 3",
                          r"callables"),
    "fit should_stop=3": (lambda t: fit_tiny(should_stop=3), TypeError, r"Sequential\.fit: should_stop", r"got 3",
                          r"a callable"),
    "fit scheduler=3": (lambda t: fit_tiny(scheduler=3), TypeError, r"Sequential\.fit: scheduler", r"got int",
                        r"must have step\(\)"),
    "fit resume='x'": (lambda t: fit_tiny(resume="x"), TypeError, r"Sequential\.fit: resume", r"got str", r"a dict"),
    "fit resume={}": (lambda t: fit_tiny(resume={}), ValueError, r"Sequential\.fit: resume", r"KeyError\('epoch'\)",
                      r"valid checkpoint state"),
    "fit optimizer=SGD (the class)": (
        lambda t: fit_tiny(optimizer=optim.SGD), TypeError, r"Sequential\.fit: optimizer", r"SGD", r"instan"),
    "fit loss=SoftmaxCrossEntropy (the class)": (
        lambda t: fit_tiny(loss=losses.SoftmaxCrossEntropy), TypeError, r"Sequential\.fit: loss",
        r"SoftmaxCrossEntropy", r"instan"),
    "fit checkpoint=3": (
        lambda t: fit_tiny(checkpoint=3), TypeError, r"Sequential\.fit: checkpoint", r"got 3",
        r"str or os\.PathLike"),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)


@given(bad_labels())
def test_random_bad_labels_for_fit_and_evaluate(case):
    n, k, labels, _ = case
    net = Sequential([Flatten(), Dense(4, k, seed=0)])
    x = np.random.default_rng(1).random((n, 1, 2, 2)).astype(np.float32)
    for call, owner in ((lambda: net.fit(x, labels, epochs=1, batch_size=2, optimizer=optim.SGD(0.1),
                                         loss=losses.SoftmaxCrossEntropy(), progress=False, log=None),
                         "Sequential.fit"),
                        (lambda: net.evaluate(x, labels), "Sequential.evaluate")):
        with pytest.raises((TypeError, ValueError), match=re.escape(owner) + r": (x|y)"):
            call()
