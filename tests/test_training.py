"""Tests for cnn_im2col.training beyond those of Sequential.fit in test_model.py / test_robustness.py:
the Callback hooks, and where the public names live."""

import numpy as np
import pytest

import cnn_im2col
from cnn_im2col import model as model_module
from cnn_im2col import training
from cnn_im2col.layers import Dense, ReLU
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


def test_the_model_module_does_not_re_export_the_loops_names():
    assert training.TrainingDiverged is cnn_im2col.TrainingDiverged
    assert training.TrainingInterrupted is cnn_im2col.TrainingInterrupted
    for name in ("TrainingDiverged", "TrainingInterrupted", "RandomShift", "Checkpoint"):
        assert not hasattr(model_module, name), name


def test_imports_run_one_way_the_model_inherits_the_loop_which_never_imports_the_model():
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

    assert "training" in module_level_imports(model_module)
    assert not every_import(training) & {"model", "cli", "onnx"}
    assert not every_import(model_module) & {"distributed", "cli", "onnx", "checkpoint"}
    assert issubclass(Sequential, training.Trainer)
    assert Sequential.fit is training.Trainer.fit  # an ordinary method, not one patched in


# ------------------------------------------------------------------------------------------
# one convention for stopping; Keras's EarlyStopping and ReduceLROnPlateau
# ------------------------------------------------------------------------------------------


def test_functions_and_callback_instances_stop_the_same_way_by_returning_true():
    model, x, y = small()
    args = {"epochs": 5, "batch_size": 4, "optimizer": SGD(0.1), "loss": SoftmaxCrossEntropy(),
            "seed": 0, "progress": False, "log": None}
    history = model.fit(x, y, callbacks=[lambda m, logs: logs["epoch"] == 3], **args)
    assert history["epoch"] == [1, 2, 3]
    history = small()[0].fit(x, y, callbacks=[lambda m, logs: False], **args)  # False goes on
    assert history["epoch"] == [1, 2, 3, 4, 5]
    with pytest.raises(TypeError, match=r"returned 'stop'; a callback returns True to stop"):
        small()[0].fit(x, y, callbacks=[lambda m, logs: "stop"], **args)


def early_stopping_run(callback, epochs=12, lr=0.5):
    rng = np.random.default_rng(3)
    x, y = rng.random((30, 6)), rng.integers(0, 3, 30)
    xv, yv = rng.random((12, 6)), rng.integers(0, 3, 12)  # labels unrelated to x: val_loss rises
    model = Sequential([Dense(6, 32, dtype=np.float64, seed=0), ReLU(),
                        Dense(32, 3, dtype=np.float64, seed=1)])
    history = model.fit(x, y, epochs=epochs, batch_size=5, optimizer=SGD(lr, momentum=0.9),
                        loss=SoftmaxCrossEntropy(), validation_data=(xv, yv), seed=0,
                        progress=False, log=None, callbacks=[callback])
    return model, history, (xv, yv)


def test_early_stopping_waits_patience_epochs_and_restores_the_best_weights():
    stopper = training.EarlyStopping("val_loss", patience=2, restore_best=True)
    model, history, (xv, yv) = early_stopping_run(stopper)
    losses = history["val_loss"]
    best = int(np.argmin(losses))
    assert len(losses) == best + 1 + 3 or len(losses) == 12  # stopped patience+1 epochs after it
    assert all(v >= losses[best] for v in losses[best + 1:])
    assert stopper.best_epoch == best + 1
    assert model.evaluate(xv, yv)["loss"] == pytest.approx(losses[best], rel=1e-12)
    with pytest.raises(ValueError, match=r"EarlyStopping: monitor must be one of"):
        training.EarlyStopping("val_acc")
    with pytest.raises(ValueError, match=r"monitor 'val_accuracy' has no value"):
        small()[0].fit(*small()[1:], epochs=2, batch_size=4, optimizer=SGD(0.1),
                       loss=SoftmaxCrossEntropy(), progress=False, log=None,
                       callbacks=[training.EarlyStopping("val_accuracy")])


def test_reduce_lr_on_plateau_divides_the_rate_after_patience_epochs():
    plateau = training.ReduceLROnPlateau("val_loss", factor=0.5, patience=1, min_lr=0.01)
    _, history, _ = early_stopping_run(plateau, epochs=10)
    lrs, losses = history["lr"], history["val_loss"]
    # the rate an epoch starts with follows the rule applied to the losses before it
    expected, best, wait = [0.5], None, 0
    for value in losses[:-1]:
        lr = expected[-1]
        if best is None or value < best:
            best, wait = value, 0
        else:
            wait += 1
            if wait > 1:
                lr, wait = max(lr * 0.5, 0.01), 0
        expected.append(lr)
    assert lrs == pytest.approx(expected)
    assert min(lrs) < 0.5


def test_a_scheduler_built_on_another_optimizer_is_refused_before_training():
    from cnn_im2col.optim import StepLR

    model, x, y = small()
    with pytest.raises(ValueError, match=r"scheduler StepLR was built on another optimizer"):
        model.fit(x, y, epochs=1, batch_size=4, optimizer=SGD(0.1), loss=SoftmaxCrossEntropy(),
                  scheduler=StepLR(SGD(0.1), step_size=1), progress=False, log=None)


def test_raw_integer_pixels_are_refused_with_the_fix():
    model = Sequential([Dense(4, 3, seed=0)])
    x = np.full((6, 4), 255, dtype=np.uint8)
    with pytest.raises(ValueError, match=r"x holds integers from 255 to 255 \(dtype uint8\).*"
                                         r"pass x / 255"):
        model.fit(x, np.zeros(6, np.int64), epochs=1, batch_size=3, optimizer=SGD(0.1),
                  loss=SoftmaxCrossEntropy(), progress=False, log=None)
    with pytest.raises(ValueError, match=r"Sequential.predict: x holds integers"):
        model.predict(x)
    np.testing.assert_array_equal(model.predict(np.ones((2, 4), np.uint8)),
                                  model.predict(np.ones((2, 4), np.float32)))  # 0/1 pass


def test_a_shift_larger_than_half_the_image_is_refused_before_training():
    from cnn_im2col.augment import RandomShift
    from cnn_im2col.layers import Flatten

    model = Sequential([Flatten(), Dense(28 * 28, 3, seed=0)])
    x = np.zeros((4, 1, 28, 28), np.float32)
    with pytest.raises(ValueError, match=r"RandomShift\(max_shift=30, fill=0.0\) is too large for "
                                         r"28x28 images: max_shift must be at most half"):
        model.fit(x, np.zeros(4, np.int64), epochs=1, batch_size=2, optimizer=SGD(0.1),
                  loss=SoftmaxCrossEntropy(), augment=RandomShift(30), progress=False, log=None)


def test_a_softmax_output_fed_to_softmax_cross_entropy_is_refused():
    from cnn_im2col.layers import Softmax

    model, x, y = small()
    model = Sequential([*model.layers, Softmax()])
    with pytest.raises(ValueError, match=r"ends with Softmax and SoftmaxCrossEntropy applies the "
                                         r"softmax itself"):
        model.fit(x, y, epochs=1, batch_size=4, optimizer=SGD(0.1), loss=SoftmaxCrossEntropy(),
                  progress=False, log=None)
    with pytest.raises(ValueError, match=r"Sequential.evaluate: the network ends with Softmax"):
        model.evaluate(x, y, loss=SoftmaxCrossEntropy())


def test_the_epoch_line_shows_where_a_per_batch_schedule_took_the_rate():
    from cnn_im2col.optim import CosineAnnealingLR

    model, x, y = small()
    opt = SGD(0.002)
    lines = []
    model.fit(x, y, epochs=1, batch_size=4, optimizer=opt, loss=SoftmaxCrossEntropy(),
              scheduler=CosineAnnealingLR(opt, t_max=3), scheduler_interval="batch",
              progress=False, log=lines.append)
    last = 0.002 * (1 + np.cos(np.pi * 2 / 3)) / 2  # the third (last) batch's rate
    assert f"lr 0.002 -> {last:.3g}," in lines[0]
    model.fit(x, y, epochs=1, batch_size=4, optimizer=SGD(0.1), loss=SoftmaxCrossEntropy(),
              progress=False, log=lines.append)
    assert ", lr 0.1, " in lines[1]  # a constant rate is printed once


def test_validation_split_holds_out_the_last_samples_as_keras_does():
    rng = np.random.default_rng(4)
    x, y = rng.random((20, 6)), rng.integers(0, 3, 20)
    args = {"epochs": 2, "batch_size": 4, "loss": SoftmaxCrossEntropy(), "seed": 0,
            "progress": False, "log": None}
    split, _, _ = small()
    explicit, _, _ = small()
    a = split.fit(x, y, optimizer=SGD(0.1), validation_split=0.25, **args)
    b = explicit.fit(x[:15], y[:15], optimizer=SGD(0.1), validation_data=(x[15:], y[15:]), **args)
    assert a["val_loss"] == b["val_loss"] and a["loss"] == b["loss"]
    for bad, message in ((1.0, r"validation_split must be a number in \[0, 1\), got 1.0"),
                         (0.01, r"holds out 0; it must leave at least one sample")):
        with pytest.raises(ValueError, match=message):
            small()[0].fit(x, y, optimizer=SGD(0.1), validation_split=bad, **args)
    with pytest.raises(ValueError, match="validation_data or validation_split, not both"):
        small()[0].fit(x, y, optimizer=SGD(0.1), validation_split=0.5, validation_data=(x, y), **args)


def test_metrics_by_name_and_callable_are_recorded_per_epoch_and_resume_exactly(tmp_path):
    model, x, y = small()
    xv, yv = x[:4], y[:4]

    def worst_logit(y_true, y_pred):
        return float(np.max(y_pred))

    args = {"epochs": 3, "batch_size": 4, "loss": SoftmaxCrossEntropy(), "seed": 0,
            "progress": False, "log": None, "validation_data": (xv, yv)}
    history = model.fit(x, y, optimizer=SGD(0.1), metrics=["accuracy", "mse", worst_logit], **args)
    for key in ("mse", "val_mse", "worst_logit", "val_worst_logit"):
        assert len(history[key]) == 3, key
    result = model.evaluate(xv, yv, metrics=["mse", worst_logit])
    assert result["mse"] == pytest.approx(history["val_mse"][-1])
    assert result["worst_logit"] == pytest.approx(float(np.max(model.predict(xv))))
    onehot = np.eye(3)[yv]
    assert result["mse"] == pytest.approx(np.mean((model.predict(xv) - onehot) ** 2))
    with pytest.raises(ValueError, match=r"unknown metric 'f1'; known: accuracy, mae, mse"):
        model.evaluate(xv, yv, metrics=["f1"])
    with pytest.raises(ValueError, match=r"metric 'accuracy' does not apply"):
        Sequential([Dense(6, 2, dtype=np.float64, seed=0)]).evaluate(
            x, np.random.default_rng(0).random((10, 2)), metrics=["accuracy"])
    # a run interrupted mid-epoch and resumed ends with the same metric history
    from cnn_im2col.exceptions import TrainingInterrupted

    calls = []
    interrupted, _, _ = small()
    with pytest.raises(TrainingInterrupted):
        interrupted.fit(x, y, optimizer=SGD(0.1), metrics=["mse"], checkpoint=tmp_path / "c.npz",
                        should_stop=lambda: calls.append(1) or len(calls) == 4, **args)
    ckpt = Sequential.load_checkpoint(tmp_path / "c.npz")
    resumed = ckpt.model.fit(x, y, optimizer=ckpt.optimizer, metrics=["mse"], resume=ckpt.state,
                             **args)
    straight = small()[0].fit(x, y, optimizer=SGD(0.1), metrics=["mse"], **args)
    assert resumed["mse"] == pytest.approx(straight["mse"], rel=1e-12)
    assert resumed["val_mse"] == pytest.approx(straight["val_mse"], rel=1e-12)
