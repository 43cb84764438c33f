"""Tests for cnn_im2col.divergence, the divergence guard of ``Sequential.fit``: a NaN/Inf loss or
an overflowing step stops training, the step not applied (the parameters and BatchNorm2D's running
statistics as they were before it), the epoch, the batch and the learning rate named, and the last
good checkpoint kept."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from small_nets import assert_same_params, data, fit, small_net, snapshot

from cnn_im2col import losses
from cnn_im2col.exceptions import TrainingDiverged
from cnn_im2col.layers import BatchNorm2D, Conv2D, Dense, Flatten, ReLU
from cnn_im2col.losses import MeanSquaredError, SoftmaxCrossEntropy
from cnn_im2col.model import Sequential
from cnn_im2col.optim import SGD


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


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


def test_divergence_leaves_the_last_epoch_checkpoint(tmp_path):
    x, y = data(24)
    model = small_net()
    path = tmp_path / "c.npz"
    loss = NaNOnCall(model, k=5)  # epoch 2, batch 2
    with pytest.raises(TrainingDiverged):
        fit(model, x, y, epochs=3, loss=loss, optimizer=SGD(0.1), checkpoint=path)
    ckpt = Sequential.load_checkpoint(path)
    assert (ckpt.state["epoch"], ckpt.state["batch"]) == (1, 0)
