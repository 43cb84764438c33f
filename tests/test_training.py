"""Tests for cnn_im2col.training, the loop of ``Sequential.fit``: learning, history and log lines,
callbacks, checkpoints written during training, interruption and bit-identical resume, and where
the loop's public names live. The divergence guard is tested in test_divergence.py, the checks of
fit's arguments (its bad inputs included) in test_fit_arguments.py."""

import json
import math

import numpy as np
import pytest
from small_nets import (
    assert_same_buffers,
    assert_same_params,
    bn_net,
    data,
    fit,
    small,
    small_net,
    snapshot,
)

import cnn_im2col
from cnn_im2col import callbacks, training
from cnn_im2col import model as model_module
from cnn_im2col.augment import RandomShift
from cnn_im2col.exceptions import TrainingInterrupted
from cnn_im2col.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid
from cnn_im2col.losses import MeanSquaredError, SoftmaxCrossEntropy
from cnn_im2col.model import Sequential
from cnn_im2col.optim import SGD, Adam, CosineAnnealingLR
from cnn_im2col.shapes import NonFiniteError


class Recorder(callbacks.Callback):
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


def test_callback_instances_get_every_hook_in_order_and_can_stop():
    model, x, y = small()
    rec = Recorder()
    seen = []
    history = model.fit(
        x,
        y,
        epochs=5,
        batch_size=4,
        optimizer=SGD(0.1),
        loss=SoftmaxCrossEntropy(),
        seed=0,
        progress=False,
        log=None,
        callbacks=[rec, lambda m, logs: seen.append(logs["epoch"])],
    )
    assert history["epoch"] == [1, 2] and seen == [1, 2]
    assert rec.events == [
        ("begin", 0, 0),
        ("batch", 0, 0, 4),
        ("batch", 0, 1, 8),
        ("batch", 0, 2, 10),
        ("batches end", 0),
        ("end", 0, 1, 1),
        ("begin", 1, 0),
        ("batch", 1, 0, 4),
        ("batch", 1, 1, 8),
        ("batch", 1, 2, 10),
        ("batches end", 1),
        ("end", 1, 2, 2),
    ]


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
# fit: learning, history, logs, callbacks
# ------------------------------------------------------------------------------------------


def test_overfits_a_tiny_batch_to_100_percent():
    x, y = data(16)
    model = Sequential(
        [
            Conv2D(1, 8, 3, seed=1),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(8 * 3 * 3, 32, seed=2),
            ReLU(),
            Dense(32, 10, seed=3),
        ]
    )
    history = fit(model, x, y, epochs=60, batch_size=16, optimizer=Adam(1e-2))
    assert history["accuracy"][-1] == 1.0
    assert history["loss"][-1] < history["loss"][0] / 10
    assert model.evaluate(x, y)["accuracy"] == 1.0
    assert (model.predict_proba(x).argmax(1) == y).all()


def test_same_seed_same_weights_different_seed_different():
    x, y = data(40)
    runs = []
    for seed in (3, 3, 4):
        model = small_net(seed=0, dropout=0.3)
        opt = Adam(1e-2)
        sched = CosineAnnealingLR(opt, t_max=3 * 5)
        fit(
            model,
            x,
            y,
            epochs=3,
            optimizer=opt,
            scheduler=sched,
            scheduler_interval="batch",
            augment=RandomShift(1),
            seed=seed,
        )
        runs.append(snapshot(model))
    assert_same_params(runs[0], runs[1])
    assert any(not np.array_equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_history_and_log_lines(capsys):
    x, y = data(20)
    xv, yv = data(6, seed=1)
    model = small_net()
    history = model.fit(
        x,
        y,
        epochs=2,
        batch_size=8,
        optimizer=Adam(1e-3),
        loss=SoftmaxCrossEntropy(),
        validation_data=(xv, yv),
        seed=1,
        progress=False,
    )
    for key in (
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "seconds",
        "samples_per_s",
    ):
        assert len(history[key]) == 2, key
    assert history["epoch"] == [1, 2] and history["seed"] == 1
    assert all(0 <= a <= 1 for a in history["accuracy"] + history["val_accuracy"])
    assert history["val_loss"][-1] == pytest.approx(model.evaluate(xv, yv)["loss"])
    json.dumps(history)
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and "val_accuracy" in lines[0] and "samples/s" in lines[0]
    assert out.err == ""  # progress=False: no bar
    history = fit(small_net(), x, y, epochs=1)
    assert history["val_loss"] == [None] and history["val_accuracy"] == [None]


def test_progress_bar_goes_to_stderr(capsys):
    x, y = data(16)
    fit(small_net(), x, y, epochs=1, progress=True)
    assert "epoch 1/1" in capsys.readouterr().err


def test_callbacks_can_stop_and_epoch_scheduler_steps():
    x, y = data(16)
    seen = []
    opt = SGD(0.1)
    sched = CosineAnnealingLR(opt, t_max=4)
    history = fit(
        small_net(),
        x,
        y,
        epochs=4,
        optimizer=opt,
        scheduler=sched,
        callbacks=[lambda model, logs: seen.append(logs["epoch"]) or logs["epoch"] >= 2],
    )
    assert seen == [1, 2] and history["epoch"] == [1, 2]
    assert history["lr"] == [
        pytest.approx(0.1),
        pytest.approx(0.1 * (1 + math.cos(math.pi / 4)) / 2),
    ]


def test_fit_accepts_dense_targets_with_mse():
    x, y = data(16)
    target = np.eye(10, dtype=np.float32)[y]
    model = Sequential([Flatten(), Dense(64, 10, seed=0), Sigmoid()])
    history = fit(model, x, target, epochs=3, loss=MeanSquaredError(), optimizer=SGD(1.0))
    assert history["loss"][-1] < history["loss"][0]


@pytest.mark.parametrize(
    "augment, error, message",
    [
        (
            lambda x, rng: x * np.nan,
            NonFiniteError,
            "Sequential.fit: the batch returned by augment contains NaN or Inf",
        ),
        (
            lambda x, rng: x[:, :, :-1],
            ValueError,
            r"augment must return a batch of the shape it was given, \(4, 1, 6, 6\), got \(4, 1, "
            r"5, 6\)",
        ),
        (
            lambda x, rng: "not an array",
            TypeError,
            "Sequential.fit: the batch returned by augment must be a real numeric",
        ),
    ],
)
def test_a_broken_augmentation_is_named_not_reported_as_a_divergence(augment, error, message):
    rng = np.random.default_rng(0)
    model = Sequential([Conv2D(1, 2, 3, seed=0), Flatten(), Dense(32, 3, seed=1)])
    x = rng.standard_normal((8, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    with pytest.raises(error, match=message):
        model.fit(
            x,
            y,
            epochs=1,
            batch_size=4,
            optimizer=SGD(0.1),
            loss=SoftmaxCrossEntropy(),
            augment=augment,
            progress=False,
            log=None,
        )


# ------------------------------------------------------------------------------------------
# checkpoints during fit, interruption and bit-identical resume
# ------------------------------------------------------------------------------------------


def _training_setup(optimizer_kind="adam"):
    model = small_net(seed=5, dropout=0.3)
    opt = (
        Adam(5e-3)
        if optimizer_kind == "adam"
        else SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    )
    sched = CosineAnnealingLR(opt, t_max=3 * 4, warmup=2)
    return model, opt, sched


def _run(model, opt, sched, x, y, xv, yv, **kwargs):
    return fit(
        model,
        x,
        y,
        epochs=3,
        batch_size=8,
        optimizer=opt,
        scheduler=sched,
        scheduler_interval="batch",
        augment=RandomShift(2),
        validation_data=(xv, yv),
        seed=11,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("optimizer_kind", "stop_after"), [("adam", 6), ("sgd", 4), ("adam", 1), ("adam", 12)]
)
def test_resume_after_interrupt_is_bit_identical(tmp_path, optimizer_kind, stop_after):
    """Stop after ``stop_after`` batches (4 per epoch: mid-epoch, at an epoch end, at the very
    end)."""
    x, y = data(30, seed=1)
    xv, yv = data(8, seed=2)
    reference = _training_setup(optimizer_kind)
    full_history = _run(*reference, x, y, xv, yv)

    model, opt, sched = _training_setup(optimizer_kind)
    path = tmp_path / "ckpt.npz"
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] == stop_after

    with pytest.raises(TrainingInterrupted) as info:
        _run(
            model,
            opt,
            sched,
            x,
            y,
            xv,
            yv,
            checkpoint=path,
            should_stop=should_stop,
            checkpoint_extra={"note": "hi"},
        )
    epoch, batch = divmod(stop_after - 1, 4)
    assert (info.value.epoch, info.value.batch) == (epoch + 1, batch + 1)
    assert info.value.checkpoint == str(path)

    # a fresh process would only have the file
    ckpt = Sequential.load_checkpoint(path)
    assert ckpt.extra == {"note": "hi"}
    assert type(ckpt.optimizer) is type(opt)
    assert ckpt.optimizer.lr == opt.lr and ckpt.scheduler.last_epoch == sched.last_epoch
    assert_same_params(ckpt.model, model)
    history = _run(
        ckpt.model, ckpt.optimizer, ckpt.scheduler, x, y, xv, yv, resume=ckpt.state, checkpoint=path
    )
    assert_same_params(ckpt.model, reference[0])
    for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert history[key] == pytest.approx(full_history[key], rel=1e-12), key
    # the checkpoint is also a plain model file
    assert_same_params(Sequential.load(path), reference[0])


def test_resume_refuses_different_settings(tmp_path):
    x, y = data(16)
    model, opt, _ = _training_setup()
    path = tmp_path / "c.npz"
    with pytest.raises(TrainingInterrupted):
        fit(model, x, y, epochs=2, optimizer=opt, checkpoint=path, should_stop=lambda: True)
    ckpt = Sequential.load_checkpoint(path)
    with pytest.raises(ValueError, match=r"batch_size 4 \(checkpoint: 8\)"):
        fit(ckpt.model, x, y, epochs=2, batch_size=4, optimizer=ckpt.optimizer, resume=ckpt.state)
    with pytest.raises(ValueError, match="seed 1 differs"):
        fit(ckpt.model, x, y, epochs=2, optimizer=ckpt.optimizer, resume=ckpt.state, seed=1)
    with pytest.raises(ValueError, match="not a checkpoint"):
        small_net().save(tmp_path / "m.npz")
        Sequential.load_checkpoint(tmp_path / "m.npz")


@pytest.mark.parametrize("stop_after", [3, 4])
def test_resume_with_batch_norm_is_bit_identical(tmp_path, stop_after):
    """Running statistics travel in the checkpoint: the resumed run ends with the same weights AND
    buffers."""
    x, y = data(30, seed=1)

    def run(model, opt, **kwargs):
        return fit(
            model,
            x,
            y,
            epochs=2,
            batch_size=8,
            optimizer=opt,
            augment=RandomShift(1),
            seed=3,
            **kwargs,
        )

    reference = bn_net(seed=2)
    run(reference, Adam(5e-3))
    model = bn_net(seed=2)
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] == stop_after

    path = tmp_path / "ckpt.npz"
    with pytest.raises(TrainingInterrupted):
        run(model, Adam(5e-3), checkpoint=path, should_stop=should_stop)
    ckpt = Sequential.load_checkpoint(path)
    assert_same_buffers(ckpt.model, model)
    run(ckpt.model, ckpt.optimizer, resume=ckpt.state)
    assert_same_params(ckpt.model, reference)
    assert_same_buffers(ckpt.model, reference)


# ------------------------------------------------------------------------------------------
# one convention for stopping; Keras's EarlyStopping and ReduceLROnPlateau
# ------------------------------------------------------------------------------------------


def test_functions_and_callback_instances_stop_the_same_way_by_returning_true():
    model, x, y = small()
    args = {
        "epochs": 5,
        "batch_size": 4,
        "optimizer": SGD(0.1),
        "loss": SoftmaxCrossEntropy(),
        "seed": 0,
        "progress": False,
        "log": None,
    }
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
    model = Sequential(
        [Dense(6, 32, dtype=np.float64, seed=0), ReLU(), Dense(32, 3, dtype=np.float64, seed=1)]
    )
    history = model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=5,
        optimizer=SGD(lr, momentum=0.9),
        loss=SoftmaxCrossEntropy(),
        validation_data=(xv, yv),
        seed=0,
        progress=False,
        log=None,
        callbacks=[callback],
    )
    return model, history, (xv, yv)


def test_early_stopping_waits_patience_epochs_and_restores_the_best_weights():
    stopper = callbacks.EarlyStopping("val_loss", patience=2, restore_best=True)
    model, history, (xv, yv) = early_stopping_run(stopper)
    losses = history["val_loss"]
    best = int(np.argmin(losses))
    assert len(losses) == best + 1 + 3 or len(losses) == 12  # stopped patience+1 epochs after it
    assert all(v >= losses[best] for v in losses[best + 1 :])
    assert stopper.best_epoch == best + 1
    assert model.evaluate(xv, yv)["loss"] == pytest.approx(losses[best], rel=1e-12)
    with pytest.raises(ValueError, match=r"EarlyStopping: monitor must be one of"):
        callbacks.EarlyStopping("val_acc")
    with pytest.raises(ValueError, match=r"monitor 'val_accuracy' has no value"):
        small()[0].fit(
            *small()[1:],
            epochs=2,
            batch_size=4,
            optimizer=SGD(0.1),
            loss=SoftmaxCrossEntropy(),
            progress=False,
            log=None,
            callbacks=[callbacks.EarlyStopping("val_accuracy")],
        )


def test_reduce_lr_on_plateau_divides_the_rate_after_patience_epochs():
    plateau = callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=1, min_lr=0.01)
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


def test_raw_integer_pixels_are_refused_with_the_fix():
    model = Sequential([Dense(4, 3, seed=0)])
    x = np.full((6, 4), 255, dtype=np.uint8)
    with pytest.raises(
        ValueError,
        match=r"x holds integers from 255 to 255 \(dtype uint8\).*"
        r"pass x / 255",
    ):
        model.fit(
            x,
            np.zeros(6, np.int64),
            epochs=1,
            batch_size=3,
            optimizer=SGD(0.1),
            loss=SoftmaxCrossEntropy(),
            progress=False,
            log=None,
        )
    with pytest.raises(ValueError, match=r"Sequential.predict: x holds integers"):
        model.predict(x)
    np.testing.assert_array_equal(
        model.predict(np.ones((2, 4), np.uint8)), model.predict(np.ones((2, 4), np.float32))
    )  # 0/1 pass


def test_a_softmax_output_fed_to_softmax_cross_entropy_is_refused():
    from cnn_im2col.layers import Softmax

    model, x, y = small()
    model = Sequential([*model.layers, Softmax()])
    with pytest.raises(
        ValueError,
        match=r"ends with Softmax and SoftmaxCrossEntropy applies the "
        r"softmax itself",
    ):
        model.fit(
            x,
            y,
            epochs=1,
            batch_size=4,
            optimizer=SGD(0.1),
            loss=SoftmaxCrossEntropy(),
            progress=False,
            log=None,
        )
    with pytest.raises(ValueError, match=r"Sequential.evaluate: the network ends with Softmax"):
        model.evaluate(x, y, loss=SoftmaxCrossEntropy())


def test_the_epoch_line_shows_where_a_per_batch_schedule_took_the_rate():
    from cnn_im2col.optim import CosineAnnealingLR

    model, x, y = small()
    opt = SGD(0.002)
    lines = []
    model.fit(
        x,
        y,
        epochs=1,
        batch_size=4,
        optimizer=opt,
        loss=SoftmaxCrossEntropy(),
        scheduler=CosineAnnealingLR(opt, t_max=3),
        scheduler_interval="batch",
        progress=False,
        log=lines.append,
    )
    last = 0.002 * (1 + np.cos(np.pi * 2 / 3)) / 2  # the third (last) batch's rate
    assert f"lr 0.002 -> {last:.3g}," in lines[0]
    model.fit(
        x,
        y,
        epochs=1,
        batch_size=4,
        optimizer=SGD(0.1),
        loss=SoftmaxCrossEntropy(),
        progress=False,
        log=lines.append,
    )
    assert ", lr 0.1, " in lines[1]  # a constant rate is printed once


def test_metrics_by_name_and_callable_are_recorded_per_epoch_and_resume_exactly(tmp_path):
    model, x, y = small()
    xv, yv = x[:4], y[:4]

    def worst_logit(y_true, y_pred):
        return float(np.max(y_pred))

    args = {
        "epochs": 3,
        "batch_size": 4,
        "loss": SoftmaxCrossEntropy(),
        "seed": 0,
        "progress": False,
        "log": None,
        "validation_data": (xv, yv),
    }
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
            x, np.random.default_rng(0).random((10, 2)), metrics=["accuracy"]
        )
    # a run interrupted mid-epoch and resumed ends with the same metric history
    from cnn_im2col.exceptions import TrainingInterrupted

    calls = []
    interrupted, _, _ = small()
    with pytest.raises(TrainingInterrupted):
        interrupted.fit(
            x,
            y,
            optimizer=SGD(0.1),
            metrics=["mse"],
            checkpoint=tmp_path / "c.npz",
            should_stop=lambda: calls.append(1) or len(calls) == 4,
            **args,
        )
    ckpt = Sequential.load_checkpoint(tmp_path / "c.npz")
    resumed = ckpt.model.fit(
        x, y, optimizer=ckpt.optimizer, metrics=["mse"], resume=ckpt.state, **args
    )
    straight = small()[0].fit(x, y, optimizer=SGD(0.1), metrics=["mse"], **args)
    assert resumed["mse"] == pytest.approx(straight["mse"], rel=1e-12)
    assert resumed["val_mse"] == pytest.approx(straight["val_mse"], rel=1e-12)


def test_sample_and_class_weights_weigh_each_samples_loss_and_gradient():
    rng = np.random.default_rng(5)
    x, y = rng.random((12, 6)), rng.integers(0, 3, 12)
    weights = rng.random(12) * 2
    args = {"epochs": 1, "batch_size": 12, "loss": SoftmaxCrossEntropy(), "seed": 0,
            "shuffle": False, "progress": False, "log": None}
    weighted, _, _ = small()
    history = weighted.fit(x, y, optimizer=SGD(0.5), sample_weight=weights, **args)
    # the twin: the weighted loss and its gradient written out by hand, one SGD step
    twin, _, _ = small()
    out = twin.forward(x, training=True)
    ce = SoftmaxCrossEntropy()
    ce.forward(out, y)
    expected_loss = float(np.mean(weights * ce.sample_losses()))
    twin.backward(ce.backward() * weights[:, None])
    for key, p in twin.params.items():
        p -= 0.5 * twin.grads[key]
    assert history["loss"][0] == pytest.approx(expected_loss, rel=1e-12)
    for key in twin.params:
        np.testing.assert_allclose(weighted.params[key], twin.params[key], rtol=1e-12, atol=1e-15)
    # class_weight is the same as the sample weights it implies
    by_class, _, _ = small()
    by_class.fit(x, y, optimizer=SGD(0.5), class_weight={0: 2.0, 2: 0.5}, **args)
    by_sample, _, _ = small()
    by_sample.fit(x, y, optimizer=SGD(0.5), sample_weight=np.array([2.0, 1.0, 0.5])[y], **args)
    for key in by_class.params:
        np.testing.assert_allclose(by_class.params[key], by_sample.params[key], rtol=1e-12)
    with pytest.raises(ValueError, match=r"sample_weight must have one weight per sample"):
        small()[0].fit(x, y, optimizer=SGD(0.5), sample_weight=np.ones(3), **args)
    with pytest.raises(ValueError, match=r"class_weight\[1\] must be a finite number >= 0"):
        small()[0].fit(x, y, optimizer=SGD(0.5), class_weight={1: -1.0}, **args)


def test_a_finished_run_extended_to_more_epochs_equals_a_longer_run(tmp_path):
    from cnn_im2col.optim import StepLR

    x, y = small()[1:]
    args = {"batch_size": 4, "loss": SoftmaxCrossEntropy(), "seed": 3, "progress": False,
            "log": None}
    longer, _, _ = small()
    opt = SGD(0.1, momentum=0.9)
    full = longer.fit(x, y, epochs=5, optimizer=opt, scheduler=StepLR(opt, 2), **args)
    short, _, _ = small()
    opt = SGD(0.1, momentum=0.9)
    short.fit(x, y, epochs=3, optimizer=opt, scheduler=StepLR(opt, 2),
              checkpoint=tmp_path / "c.npz", **args)
    ckpt = Sequential.load_checkpoint(tmp_path / "c.npz")
    extended = ckpt.model.fit(x, y, epochs=5, optimizer=ckpt.optimizer,
                              scheduler=ckpt.scheduler, resume=ckpt.state, **args)
    assert extended["loss"] == full["loss"] and extended["epoch"] == [1, 2, 3, 4, 5]
    for key in longer.params:
        np.testing.assert_array_equal(ckpt.model.params[key], longer.params[key])
    with pytest.raises(ValueError, match=r"differs from the checkpointed one in epochs 2"):
        small()[0].fit(x, y, epochs=2, optimizer=ckpt.optimizer, resume=ckpt.state, **args)


def test_the_checkpoint_keeps_the_weights_early_stopping_restored(tmp_path):
    stopper = callbacks.EarlyStopping("val_loss", patience=0, restore_best=True)
    rng = np.random.default_rng(3)
    x, y = rng.random((30, 6)), rng.integers(0, 3, 30)
    xv, yv = rng.random((12, 6)), rng.integers(0, 3, 12)
    model = Sequential([Dense(6, 32, dtype=np.float64, seed=0), ReLU(),
                        Dense(32, 3, dtype=np.float64, seed=1)])
    model.fit(x, y, epochs=12, batch_size=5, optimizer=SGD(0.5, momentum=0.9),
              loss=SoftmaxCrossEntropy(), validation_data=(xv, yv), seed=0, progress=False,
              log=None, callbacks=[stopper], checkpoint=tmp_path / "c.npz")
    saved = Sequential.load_checkpoint(tmp_path / "c.npz").model
    for key, value in model.params.items():
        np.testing.assert_array_equal(saved.params[key], value)
