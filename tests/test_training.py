"""Tests for cnn_im2col.training, the loop of ``Sequential.fit``: learning, history and log lines,
callbacks, the validation of its arguments (its bad inputs included), the divergence guard (a
NaN/Inf loss or an overflowing step stops it, the step not applied, the last good checkpoint kept),
checkpoints written during training, interruption and bit-identical resume, and where the loop's
public names live."""

import json
import math
import re
import warnings
from pathlib import Path

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
from small_nets import (
    assert_same_buffers,
    assert_same_params,
    bn_net,
    data,
    fit,
    small_net,
    snapshot,
)

import cnn_im2col
from cnn_im2col import callbacks, losses, optim, training
from cnn_im2col import model as model_module
from cnn_im2col.augment import RandomShift
from cnn_im2col.exceptions import TrainingDiverged, TrainingInterrupted
from cnn_im2col.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid
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


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ------------------------------------------------------------------------------------------
# fit: learning, history, logs, callbacks, validation up front
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
# the divergence guard: a NaN/Inf loss or an overflowing step stops fit, the step not applied
# ------------------------------------------------------------------------------------------


class NaNOnCall(SoftmaxCrossEntropy):
    """SoftmaxCrossEntropy whose ``k``-th forward returns NaN; remembers the params at that call."""

    def __init__(self, model, k):
        super().__init__()
        self.model, self.k, self.calls, self.params_then = model, k, 0, None

    def forward(self, pred, target):
        self.calls += 1
        value = super().forward(pred, target)
        if self.calls == self.k:
            self.params_then = snapshot(self.model)
            return math.nan
        return value


def test_divergence_names_epoch_and_batch_and_skips_the_step():
    x, y = data(24)
    model = small_net()
    loss = NaNOnCall(model, k=5)  # 3 batches per epoch: epoch 2, batch 2
    with pytest.raises(TrainingDiverged) as info:
        fit(model, x, y, epochs=3, loss=loss, optimizer=SGD(0.1))
    err = info.value
    assert isinstance(err, FloatingPointError)
    assert (err.epoch, err.batch) == (2, 2) and math.isnan(err.loss) and err.lr == 0.1
    assert "epoch 2/3, batch 2/3" in str(err) and "learning rate (0.1)" in str(err)
    assert "not applied" in str(err)
    assert_same_params(model, loss.params_then)


class NaNOnCallKeepingBuffers(NaNOnCall):
    """NaNOnCall that also remembers the buffers as the failing step found them (after the forward
    of the call before: only a forward moves them)."""

    def forward(self, pred, target):
        if self.calls + 1 == self.k - 1:
            self.buffers_then = {k: v.copy() for k, v in self.model.buffers.items()}
        return super().forward(pred, target)


def test_divergence_puts_the_batchnorm_running_statistics_back():
    """The step reported as not applied leaves nothing behind: its forward had already moved
    BatchNorm2D's running statistics (and the batch count), and they are restored."""
    x, y = data(24)
    model = Sequential(
        [Conv2D(1, 4, 3, seed=0), BatchNorm2D(4), ReLU(), Flatten(), Dense(4 * 6 * 6, 10, seed=1)]
    )
    loss = NaNOnCallKeepingBuffers(model, k=5)
    with pytest.raises(TrainingDiverged, match="not applied"):
        fit(model, x, y, epochs=3, loss=loss, optimizer=SGD(0.1))
    assert model.buffers.keys() == loss.buffers_then.keys() and loss.buffers_then
    for key, value in model.buffers.items():
        np.testing.assert_array_equal(value, loss.buffers_then[key], err_msg=key)
    assert int(model.buffers["1.num_batches_tracked"]) == 4  # the 4 applied steps, not the 5th


def test_real_divergence_with_a_huge_learning_rate():
    x, y = data(64)
    model = Sequential([Conv2D(1, 4, 3, seed=1), ReLU(), Flatten(), Dense(144, 10, seed=2)])
    with pytest.raises(TrainingDiverged, match=r"epoch \d+/50, batch \d+/4.*learning rate \(50\)"):
        fit(model, x, y, epochs=50, batch_size=16, optimizer=SGD(50.0), loss=MeanSquaredError())
    assert all(np.isfinite(p).all() for p in model.params.values())


def test_an_optimizer_step_that_overflows_is_undone_and_reported(tmp_path):
    x, y = data(8)
    model = Sequential([Flatten(), Dense(64, 10, seed=0)])
    optimizer = SGD(0.01)
    at_end = {}

    def huge_lr_after_epoch_1(m, logs):
        at_end[logs["epoch"]] = snapshot(m)
        optimizer.lr = 1e38  # lr * gradient overflows float32

    with pytest.raises(
        TrainingDiverged,
        match=r"epoch 2/3, batch 1/1: the optimizer step made 1\.weight non-finite",
    ):
        fit(
            model,
            x * 100,
            y,
            epochs=3,
            batch_size=8,
            optimizer=optimizer,
            checkpoint=tmp_path / "c.npz",
            callbacks=[huge_lr_after_epoch_1],
        )
    assert_same_params(model, at_end[1])  # restored
    ckpt = Sequential.load_checkpoint(tmp_path / "c.npz")
    assert (ckpt.state["epoch"], ckpt.state["batch"]) == (1, 0)
    assert_same_params(ckpt.model, at_end[1])


class BadLossAt(losses.SoftmaxCrossEntropy):
    """Cross-entropy whose ``k``-th forward returns ``value`` (NaN or +-Inf)."""

    def __init__(self, k, value):
        super().__init__()
        self.k, self.value, self.calls = k, value, 0

    def forward(self, pred, target):
        self.calls += 1
        result = super().forward(pred, target)
        return self.value if self.calls == self.k else result


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_divergence_names_epoch_batch_and_lr_and_keeps_the_last_good_checkpoint(tmp_path, bad):
    x, y = data(24)
    model = small_net(dropout=0.25)
    path = tmp_path / "ckpt.npz"
    at_epoch_end = {}

    def remember(m, logs):
        at_epoch_end[logs["epoch"]] = snapshot(m)

    with pytest.raises(
        TrainingDiverged, match=r"(?s)epoch 2/3, batch 2/3.*learning rate \(0\.05\).*smaller"
    ):
        model.fit(
            x,
            y,
            epochs=3,
            batch_size=8,
            optimizer=SGD(0.05, momentum=0.9),
            loss=BadLossAt(5, bad),
            seed=0,
            progress=False,
            log=None,
            checkpoint=path,
            callbacks=[remember],
        )
    assert list(at_epoch_end) == [1]
    ckpt = Sequential.load_checkpoint(path)
    assert (ckpt.state["epoch"], ckpt.state["batch"]) == (1, 0)
    assert_same_params(ckpt.model.params, at_epoch_end[1])  # the last good weights, exactly
    assert listing(tmp_path) == ["ckpt.npz"]  # nothing half-written beside it


def test_a_real_float32_overflow_is_a_divergence_not_a_crash(tmp_path):
    x, y = data(32)
    model = Sequential(
        [Flatten(), Dense(64, 10, seed=0)]
    )  # logits grow by lr * x per step: float32 overflows
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (overflow, invalid value) escapes
        with pytest.raises(
            TrainingDiverged, match=r"epoch \d+/40, batch \d+/4.*learning rate \(1e\+36\)"
        ):
            model.fit(
                x * 100,
                y,
                epochs=40,
                batch_size=8,
                optimizer=SGD(1e36),
                loss=losses.SoftmaxCrossEntropy(),
                seed=0,
                progress=False,
                log=None,
                checkpoint=tmp_path / "c.npz",
            )
    assert all(np.isfinite(p).all() for p in model.params.values())
    if (tmp_path / "c.npz").exists():
        ckpt = Sequential.load_checkpoint(tmp_path / "c.npz")
        assert all(np.isfinite(p).all() for p in ckpt.model.params.values())


def test_weights_that_overflow_in_the_optimizer_never_replace_the_last_good_checkpoint(tmp_path):
    x, y = data(8)
    model = Sequential([Flatten(), Dense(64, 10, seed=0)])
    optimizer = SGD(0.01)
    saved = {}

    def raise_lr_after_epoch_1(m, logs):
        saved[logs["epoch"]] = snapshot(m)
        optimizer.lr = 1e38  # lr * gradient overflows float32 in the next step

    with pytest.raises(TrainingDiverged, match=r"epoch 2/3, batch 1/1"):
        model.fit(
            x * 100,
            y,
            epochs=3,
            batch_size=8,
            optimizer=optimizer,
            loss=losses.SoftmaxCrossEntropy(),
            seed=0,
            progress=False,
            log=None,
            checkpoint=tmp_path / "c.npz",
            callbacks=[raise_lr_after_epoch_1],
        )
    ckpt = Sequential.load_checkpoint(
        tmp_path / "c.npz"
    )  # the epoch-1 state, never the overflowed one
    assert (ckpt.state["epoch"], ckpt.state["batch"]) == (1, 0)
    assert_same_params(ckpt.model.params, saved[1])


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


def test_divergence_leaves_the_last_epoch_checkpoint(tmp_path):
    x, y = data(24)
    model = small_net()
    path = tmp_path / "c.npz"
    loss = NaNOnCall(model, k=5)  # epoch 2, batch 2
    with pytest.raises(TrainingDiverged):
        fit(model, x, y, epochs=3, loss=loss, optimizer=SGD(0.1), checkpoint=path)
    ckpt = Sequential.load_checkpoint(path)
    assert (ckpt.state["epoch"], ckpt.state["batch"]) == (1, 0)


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
# bad inputs: the battery's rows for the training loop (Sequential.fit) (machinery: bad_input.py)
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
