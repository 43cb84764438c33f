"""Tests for cnn_im2col.model: Sequential, its training loop, files, checkpoints, RandomShift."""

import json
import math
import pickle

import numpy as np
import pytest
from bad_input import (
    FINITE,
    INT1,
    REAL,
    ROW_FIELDS,
    XM,
    YM,
    Payload,
    check_bad_input,
    model_file_with,
    npz_with,
    pickle_file,
    rows,
    tiny_model,
    with_value,
    zip_with,
)
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import losses, optim
from cnn_im2col.gradcheck import check_layer
from cnn_im2col.layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from cnn_im2col.losses import MeanSquaredError, SoftmaxCrossEntropy
from cnn_im2col.model import (
    RandomShift,
    Sequential,
    TrainingDiverged,
    TrainingInterrupted,
)
from cnn_im2col.optim import SGD, Adam, CosineAnnealingLR
from cnn_im2col.shapes import NonFiniteError


def small_net(seed=0, dropout=0.0, dtype=np.float32):
    """(1, 8, 8) -> 10 classes; every layer seeded."""
    return Sequential([
        Conv2D(1, 4, 3, dtype=dtype, seed=seed), ReLU(), MaxPool2D(2),
        Flatten(),
        Dense(4 * 3 * 3, 16, dtype=dtype, seed=seed + 1), ReLU(), Dropout(dropout, seed=seed + 2),
        Dense(16, 10, dtype=dtype, seed=seed + 3),
    ])


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


# ------------------------------------------------------------------------------------------
# layer protocol, params, forward/backward
# ------------------------------------------------------------------------------------------


def test_params_and_grads_are_the_layers_own_arrays():
    model = small_net()
    assert list(model.params) == ["0.weight", "0.bias", "4.weight", "4.bias", "7.weight", "7.bias"]
    assert model.params["4.weight"] is model.layers[4].params["weight"]
    x, y = data()
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(x, training=True), y)
    dx = model.backward(loss.backward())
    assert dx.shape == x.shape
    assert model.grads.keys() == model.params.keys()
    assert model.grads["7.bias"] is model.layers[7].grads["bias"]
    before = model.layers[0].params["weight"].copy()
    SGD(0.1).step(model.params, model.grads)  # in place: the layer sees it
    assert not np.array_equal(model.layers[0].params["weight"], before)
    assert model.params["0.weight"] is model.layers[0].params["weight"]


def test_constructor_validation():
    with pytest.raises(ValueError, match="must not be empty"):
        Sequential([])
    with pytest.raises(TypeError, match="layer 1 must follow the layer protocol"):
        Sequential([ReLU(), "relu"])
    with pytest.raises(TypeError, match="instantiate"):
        Sequential([ReLU, ReLU()])
    with pytest.raises(TypeError, match="list of layers"):
        Sequential(ReLU())


@pytest.mark.parametrize("order", ["C", "F"])
def test_whole_network_gradcheck_every_layer_kind(order):
    """One float64 network with every layer kind; dx and every parameter by finite differences."""
    f64 = np.float64
    model = Sequential([
        Conv2D(2, 3, 3, padding=1, bias="tied", dtype=f64, seed=1),   # (3, 7, 7)
        Tanh(),
        Conv2D(3, 3, 2, bias="untied", input_size=(7, 7), dtype=f64, seed=2),  # (3, 6, 6)
        ReLU(),
        MaxPool2D(2),                                                 # (3, 3, 3)
        Conv2D(3, 2, 2, stride=1, bias=None, dtype=f64, seed=3),      # (2, 2, 2)
        Sigmoid(),
        AvgPool2D(2, stride=1, trainable_scale=True, channels=2, dtype=f64),  # (2, 1, 1)
        Flatten(order),
        Dense(2, 5, dtype=f64, seed=4),
        Dropout(0.5, seed=5),  # eval mode: the identity
        Tanh(),
        Dense(5, 4, dtype=f64, seed=6),
        Softmax(),
    ])
    x = np.random.default_rng(7).standard_normal((2, 2, 7, 7))
    assert model.output_shape((2, 7, 7)) == (4,)
    errors = check_layer(model, x, seed=3)
    assert set(errors) == {"x", *model.params}
    assert max(errors.values()) < 1e-5


def test_flatten_orders_differ_but_both_are_consistent():
    x = np.arange(2 * 2 * 2 * 3, dtype=np.float64).reshape(2, 2, 2, 3)
    c = Sequential([Flatten("C")]).forward(x)
    f = Sequential([Flatten("F")]).forward(x)
    assert not np.array_equal(c, f)
    np.testing.assert_array_equal(f[0, :2], [x[0, 0, 0, 0], x[0, 0, 1, 0]])  # columns stacked


# ------------------------------------------------------------------------------------------
# shapes and summary
# ------------------------------------------------------------------------------------------


def test_check_shapes_lists_every_output():
    shapes = small_net().check_shapes((1, 8, 8))
    assert shapes == [(4, 6, 6), (4, 6, 6), (4, 3, 3), (36,), (16,), (16,), (16,), (10,)]


def test_check_shapes_names_both_layers_and_shapes():
    model = Sequential([Conv2D(1, 4, 3, seed=0), ReLU(), Flatten(), Dense(10, 5, seed=1)])
    with pytest.raises(ValueError) as info:
        model.check_shapes((1, 8, 8))
    message = str(info.value)
    assert "layer 3 Dense(10, 5, seed=1)" in message
    assert "layer 2 Flatten()" in message
    assert "(144,)" in message
    with pytest.raises(ValueError, match=r"layer 0 Conv2D\(1, 4, 3, seed=0\) cannot take the input of shape \(3, 8, 8\)"):
        model.check_shapes((3, 8, 8))
    # pooling window larger than its input
    model = Sequential([Conv2D(1, 2, 5, seed=0), MaxPool2D(5)])
    with pytest.raises(ValueError, match=r"layer 1 MaxPool2D\(5\).*layer 0 Conv2D.*\(2, 4, 4\)"):
        model.check_shapes((1, 8, 8))
    with pytest.raises(TypeError, match="input_shape"):
        model.check_shapes((1, 8.0, 8))


def test_summary_totals_equal_a_hand_count():
    model = Sequential([
        Conv2D(1, 6, 5, seed=0),           # 6*1*5*5 + 6 = 156
        ReLU(), AvgPool2D(2, trainable_scale=True, channels=6),  # 6
        Conv2D(6, 16, 5, bias="untied", input_size=(12, 12), seed=1),  # 16*6*25 + 16*8*8 = 2400 + 1024
        ReLU(), MaxPool2D(2),
        Flatten(),
        Dense(16 * 4 * 4, 10, seed=2),     # 256*10 + 10 = 2570
    ])
    hand = 156 + 6 + (2400 + 1024) + 2570
    text = model.summary((1, 28, 28))
    assert f"Total params: {hand:,}" in text
    assert model.num_params() == hand
    lines = text.splitlines()
    assert any("Conv2D(6, 16, 5" in line and "(16, 8, 8)" in line and "3,424" in line for line in lines)
    assert any("(10,)" in line and "2,570" in line for line in lines)
    with pytest.raises(ValueError, match="layer 0"):
        model.summary((1, 3, 3))


# ------------------------------------------------------------------------------------------
# fit
# ------------------------------------------------------------------------------------------


def test_overfits_a_tiny_batch_to_100_percent():
    x, y = data(16)
    model = Sequential([
        Conv2D(1, 8, 3, seed=1), ReLU(), MaxPool2D(2), Flatten(),
        Dense(8 * 3 * 3, 32, seed=2), ReLU(), Dense(32, 10, seed=3),
    ])
    history = fit(model, x, y, epochs=60, batch_size=16, optimizer=Adam(1e-2))
    assert history["accuracy"][-1] == 1.0
    assert history["loss"][-1] < history["loss"][0] / 10
    assert model.evaluate(x, y)["accuracy"] == 1.0
    assert (model.predict(x).argmax(1) == y).all()


def test_same_seed_same_weights_different_seed_different():
    x, y = data(40)
    runs = []
    for seed in (3, 3, 4):
        model = small_net(seed=0, dropout=0.3)
        opt = Adam(1e-2)
        sched = CosineAnnealingLR(opt, t_max=3 * 5)
        fit(model, x, y, epochs=3, optimizer=opt, scheduler=sched, scheduler_interval="batch",
            augment=RandomShift(1), seed=seed)
        runs.append(snapshot(model))
    assert_same_params(runs[0], runs[1])
    assert any(not np.array_equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_history_and_log_lines(capsys):
    x, y = data(20)
    xv, yv = data(6, seed=1)
    model = small_net()
    history = model.fit(x, y, epochs=2, batch_size=8, optimizer=Adam(1e-3), loss=SoftmaxCrossEntropy(),
                        validation_data=(xv, yv), seed=1, progress=False)
    for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "samples_per_s"):
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
    history = fit(small_net(), x, y, epochs=4, optimizer=opt, scheduler=sched,
                  callbacks=[lambda model, logs: seen.append(logs["epoch"]) or logs["epoch"] < 2])
    assert seen == [1, 2] and history["epoch"] == [1, 2]
    assert history["lr"] == [pytest.approx(0.1), pytest.approx(0.1 * (1 + math.cos(math.pi / 4)) / 2)]


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
    ({"x": np.zeros((0, 1, 8, 8), np.float32), "y": np.zeros(0, np.int64)}, ValueError, "must not be empty"),
    ({"x": np.full((16, 1, 8, 8), np.nan, np.float32)}, ValueError, "NaN or Inf"),
    ({"x": np.zeros((16, 1, 10, 10), np.float32)}, ValueError, "layer 4 Dense"),
    ({"x": np.zeros(16, np.float32)}, ValueError, "at least 2 dimensions"),
    ({"optimizer": "adam"}, TypeError, "optimizer must have step"),
    ({"loss": "ce"}, TypeError, "loss must have forward"),
    ({"scheduler": 3}, TypeError, "scheduler must have step"),
    ({"scheduler_interval": "step"}, ValueError, "scheduler_interval"),
    ({"seed": -1}, ValueError, "seed"),
    ({"validation_data": (np.zeros((4, 1, 8, 8), np.float32),)}, TypeError, "validation_data must be a pair"),
    ({"validation_data": (np.zeros((4, 1, 7, 7), np.float32), np.zeros(4, np.int64))}, ValueError,
     "validation x must have per-sample shape"),
    ({"validation_data": (np.zeros((4, 1, 8, 8), np.float32), np.full(4, 12))}, ValueError,
     r"validation y labels must be in \[0, 10\)"),
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


@pytest.mark.parametrize(("change", "match"), [
    ({"optimizer": SGD}, r"optimizer must be an instance, got the class SGD \(instantiate it"),
    ({"loss": SoftmaxCrossEntropy}, r"loss must be an instance, got the class SoftmaxCrossEntropy"),
    ({"scheduler": CosineAnnealingLR}, r"scheduler must be an instance, got the class CosineAnnealingLR"),
    ({"checkpoint": 3}, r"checkpoint must be a str or os.PathLike, got 3"),
    ({"checkpoint_extra": {"f": object()}}, r"checkpoint_extra must be a JSON-able dict"),
])
def test_fit_refuses_classes_and_bad_checkpoint_arguments(change, match):
    x, y = data(16)
    with pytest.raises(TypeError, match=match):
        fit(small_net(), x, y, **change)
    with pytest.raises(TypeError, match="loss must be an instance"):
        small_net().evaluate(x, y, loss=MeanSquaredError)


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
    model = Sequential([Conv2D(1, 4, 3, seed=0), BatchNorm2D(4), ReLU(), Flatten(), Dense(4 * 6 * 6, 10, seed=1)])
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

    with pytest.raises(TrainingDiverged, match=r"epoch 2/3, batch 1/1: the optimizer step made 1\.weight non-finite"):
        fit(model, x * 100, y, epochs=3, batch_size=8, optimizer=optimizer, checkpoint=tmp_path / "c.npz",
            callbacks=[huge_lr_after_epoch_1])
    assert_same_params(model, at_end[1])  # restored
    ckpt = Sequential.load_checkpoint(tmp_path / "c.npz")
    assert (ckpt.state["epoch"], ckpt.state["batch"]) == (1, 0)
    assert_same_params(ckpt.model, at_end[1])


# ------------------------------------------------------------------------------------------
# evaluate and predict
# ------------------------------------------------------------------------------------------


def test_predict_gives_probabilities_and_evaluate_matches():
    x, y = data(30)
    model = small_net()
    p = model.predict(x, batch_size=7)
    assert p.shape == (30, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    logits = model.forward(x)
    np.testing.assert_array_equal(p.argmax(1), logits.argmax(1))
    result = model.evaluate(x, y, batch_size=7)
    ce = SoftmaxCrossEntropy()
    assert result["loss"] == pytest.approx(ce.forward(logits, y), rel=1e-5)
    assert result["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))


def test_predict_and_evaluate_with_a_softmax_output_layer():
    x, y = data(12)
    base = small_net()
    model = Sequential([*base.layers, Softmax()])
    probs = model.predict(x)
    np.testing.assert_allclose(probs, base.predict(x), rtol=1e-5, atol=1e-7)
    nll = -np.mean(np.log(probs[np.arange(12), y]))
    assert model.evaluate(x, y)["loss"] == pytest.approx(nll, rel=1e-5)


def test_evaluate_and_predict_validate():
    x, y = data(8)
    model = small_net()
    with pytest.raises(ValueError, match="x has 8 samples but y has 3"):
        model.evaluate(x, y[:3])
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(x, batch_size=0)
    with pytest.raises(ValueError, match="layer 0 Conv2D"):
        model.predict(np.zeros((2, 2, 8, 8), np.float32))


# ------------------------------------------------------------------------------------------
# save / load
# ------------------------------------------------------------------------------------------


def test_save_load_gives_identical_predictions(tmp_path):
    x, y = data(16)
    model = small_net(dropout=0.2)
    fit(model, x, y, epochs=2)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = Sequential.load(path)
    assert repr(loaded) == repr(model)
    assert_same_params(loaded, model)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    with np.load(path, allow_pickle=False) as npz:  # the format: plain arrays + JSON
        header = json.loads(npz["__model__"].tobytes())
        assert header["format"] == "cnn-im2col.Sequential" and header["version"] == 1
        assert [entry["class"] for entry in header["layers"]][:3] == ["Conv2D", "ReLU", "MaxPool2D"]
        assert "param:0.weight" in npz.files
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary left behind


def test_save_load_float64_and_every_layer_kind(tmp_path):
    f64 = np.float64
    model = Sequential([
        Conv2D(1, 2, 3, padding="same", bias="untied", input_size=(6, 6), dtype=f64, seed=1), Tanh(),
        AvgPool2D(2, trainable_scale=True, channels=2, dtype=f64), Sigmoid(), Flatten("F"),
        Dense(18, 3, bias=False, dtype=f64, seed=2), Dropout(0.1, seed=3), Softmax(),
    ])
    model.layers[2].params["weight"][:] = [0.3, 0.7]
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz")
    x = np.random.default_rng(0).random((3, 1, 6, 6))
    assert loaded.params["2.weight"].dtype == np.float64
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def _rewrite(path, out, change):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    np.savez(out, **arrays)
    return out


def _set_header(arrays, edit):
    header = json.loads(arrays["__model__"].tobytes())
    edit(header)
    arrays["__model__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)


@pytest.mark.parametrize(("change", "match"), [
    (lambda a: _set_header(a, lambda h: h["layers"][1].update({"class": "Swish"})),
     r"layer 1 has unknown class 'Swish'; known classes: AvgPool2D"),
    (lambda a: a.pop("param:4.bias"), r"missing parameters \['4.bias'\]"),
    (lambda a: a.update({"param:9.weight": np.zeros(3, np.float32)}), r"unexpected parameters \['9.weight'\]"),
    (lambda a: a.update({"param:0.weight": np.zeros((4, 1, 2, 2), np.float32)}),
     r"'0.weight' has shape \(4, 1, 2, 2\), the architecture needs \(4, 1, 3, 3\)"),
    (lambda a: a.update({"param:0.bias": np.zeros(4, np.int32)}), "must be float"),
    (lambda a: a.update({"junk": np.zeros(1)}), r"unknown entries \['junk'\]"),
    (lambda a: _set_header(a, lambda h: h.update({"version": 99})), "version 99 is not supported"),
    (lambda a: _set_header(a, lambda h: h["layers"][0]["config"].update({"kernel_size": -3})),
     r"layer 0 \(Conv2D\) has a bad config"),
    (lambda a: a.pop("__model__"), "not a cnn-im2col model file"),
    (lambda a: a.update({"__model__": np.frombuffer(b"{not json", dtype=np.uint8)}), "not valid JSON"),
])
def test_load_rejects_bad_files_naming_them(tmp_path, change, match):
    model = small_net()
    model.save(tmp_path / "good.npz")
    bad = _rewrite(tmp_path / "good.npz", tmp_path / "bad.npz", change)
    with pytest.raises(ValueError, match=match) as info:
        Sequential.load(bad)
    assert str(bad) in str(info.value)


def test_load_rejects_npy_object_arrays_and_non_paths(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"m\.npy: a \.npy file \(a single array\), not a cnn-im2col model file"):
        Sequential.load(tmp_path / "m.npy")
    with pytest.raises(TypeError, match=r"Sequential\.load: path must be a str or os\.PathLike, got 3"):
        Sequential.load(3)
    small_net().save(tmp_path / "good.npz")
    bad = _rewrite(tmp_path / "good.npz", tmp_path / "obj.npz",
                   lambda a: a.update({"param:0.bias": np.array([None] * 4, dtype=object)}))
    with np.load(bad, allow_pickle=True) as npz:
        assert npz["param:0.bias"].dtype == object
    with pytest.raises(ValueError, match=r"obj\.npz: entry 'param:0\.bias' cannot be read \(Object arrays"):
        Sequential.load(bad)


def test_load_rejects_non_npz_and_missing_files(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match=f"{junk}.*not a cnn-im2col model file"):
        Sequential.load(junk)
    with pytest.raises(FileNotFoundError, match="no such model file"):
        Sequential.load(tmp_path / "absent.npz")


def test_nested_sequential_saves_loads_and_resumes(tmp_path):
    inner = Sequential([Dense(36, 16, seed=1), ReLU(), Dropout(0.5, seed=2)])
    model = Sequential([Conv2D(1, 4, 3, seed=0), ReLU(), MaxPool2D(2), Flatten(), inner, Dense(16, 10, seed=3)])
    assert "4.0.weight" in model.params and model.params["4.0.weight"] is inner.layers[0].params["weight"]
    assert list(model._generators()) == ["4.2.rng"]
    x, y = data(16)
    fit(model, x, y, epochs=1)
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert isinstance(loaded.layers[4], Sequential)


def test_load_custom_layers():
    class Double(ReLU):
        def forward(self, x, training=False):
            return 2 * np.asarray(x)

    model = Sequential([Flatten(), Double()])
    config = model.config()
    with pytest.raises(ValueError, match="unknown class 'Double'"):
        Sequential.from_config(config)
    rebuilt = Sequential.from_config(config, custom_layers={"Double": Double})
    np.testing.assert_array_equal(rebuilt.forward(np.ones((1, 2, 2))), 2 * np.ones((1, 4)))


# ------------------------------------------------------------------------------------------
# checkpoints and bit-identical resume
# ------------------------------------------------------------------------------------------


def _training_setup(optimizer_kind="adam"):
    model = small_net(seed=5, dropout=0.3)
    opt = Adam(5e-3) if optimizer_kind == "adam" else SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    sched = CosineAnnealingLR(opt, t_max=3 * 4, warmup=2)
    return model, opt, sched


def _run(model, opt, sched, x, y, xv, yv, **kwargs):
    return fit(model, x, y, epochs=3, batch_size=8, optimizer=opt, scheduler=sched, scheduler_interval="batch",
               augment=RandomShift(2), validation_data=(xv, yv), seed=11, **kwargs)


@pytest.mark.parametrize(("optimizer_kind", "stop_after"), [("adam", 6), ("sgd", 4), ("adam", 1), ("adam", 12)])
def test_resume_after_interrupt_is_bit_identical(tmp_path, optimizer_kind, stop_after):
    """Stop after ``stop_after`` batches (4 per epoch: mid-epoch, at an epoch end, at the very end)."""
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
        _run(model, opt, sched, x, y, xv, yv, checkpoint=path, should_stop=should_stop,
             checkpoint_extra={"note": "hi"})
    epoch, batch = divmod(stop_after - 1, 4)
    assert (info.value.epoch, info.value.batch) == (epoch + 1, batch + 1)
    assert info.value.checkpoint == str(path)

    # a fresh process would only have the file
    ckpt = Sequential.load_checkpoint(path)
    assert ckpt.extra == {"note": "hi"}
    assert type(ckpt.optimizer) is type(opt)
    assert ckpt.optimizer.lr == opt.lr and ckpt.scheduler.last_epoch == sched.last_epoch
    assert_same_params(ckpt.model, model)
    history = _run(ckpt.model, ckpt.optimizer, ckpt.scheduler, x, y, xv, yv, resume=ckpt.state, checkpoint=path)
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


# ------------------------------------------------------------------------------------------
# RandomShift
# ------------------------------------------------------------------------------------------


def test_random_shift_moves_whole_images():
    rng = np.random.default_rng(0)
    x = np.zeros((50, 2, 9, 9), np.float32)
    x[:, :, 2:7, 2:7] = rng.random((50, 2, 5, 5))  # a 2-pixel empty border: nothing falls off
    out = RandomShift(2)(x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == x.dtype and out.flags.c_contiguous
    shifts = set()
    for i in range(50):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(np.roll(x[i], (dy, dx), axis=(1, 2)), out[i])]
        assert found, i
        shifts.add(found[0])
    assert len(shifts) > 10  # both axes, several values
    np.testing.assert_allclose(out.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)), rtol=1e-6)
    again = RandomShift(2)(x, np.random.default_rng(1))
    np.testing.assert_array_equal(again, out)
    assert RandomShift(0)(x, rng) is x


def test_random_shift_fills_and_validates():
    x = np.ones((1, 1, 4, 4), np.float32)
    out = RandomShift(3, fill=0.0)(x, np.random.default_rng(2))
    assert out.sum() < 16 or np.array_equal(out, x)
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift(-1)
    with pytest.raises(TypeError, match="max_shift"):
        RandomShift(1.5)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        RandomShift(1)(np.ones((4, 4)), np.random.default_rng(0))


@pytest.mark.parametrize("first", ["conv", "dense", "relu"])
def test_backward_without_input_grad_fills_the_same_gradients(first):
    rng = np.random.default_rng(0)
    head = {"conv": [Conv2D(1, 2, 3, seed=0), Flatten()], "dense": [Dense(36, 18, seed=0)],
            "relu": [ReLU(), Flatten()]}[first]
    features = {"conv": 32, "dense": 18, "relu": 36}[first]
    model = Sequential([*head, Dense(features, 3, seed=1)])
    x = rng.standard_normal((4, 36) if first == "dense" else (4, 1, 6, 6)).astype(np.float32)
    dout = rng.standard_normal((4, 3)).astype(np.float32)
    model.forward(x, training=True)
    dx = model.backward(dout)
    full = {k: v.copy() for k, v in model.grads.items()}
    model.forward(x, training=True)
    result = model.backward(dout, input_grad=False)
    if first == "relu":  # not a layer that can skip it: computed and returned as usual
        np.testing.assert_array_equal(result, dx)
    else:
        assert result is None
    assert dx.shape == x.shape
    for key, value in model.grads.items():
        np.testing.assert_array_equal(value, full[key])


def test_an_overflow_inside_the_stack_is_reported_at_its_output():
    """Layers after the first skip the NaN/Inf scan of their input; the stack checks its output."""
    dense = Dense(2, 2, seed=0)
    dense.params["weight"][...] = 1e30
    model = Sequential([Dense(2, 2, seed=0), dense])
    model[0].params["weight"][...] = 1e30
    x = np.ones((1, 2), np.float32)  # finite, but 1e30 * 1e30 overflows float32 in the second layer
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(NonFiniteError,
                                                                      match="Sequential.forward: the output contains"):
        model.forward(x)
    with pytest.raises(NonFiniteError, match=r"Dense\(2, 2, seed=0\): x contains NaN or Inf"):
        model.forward(np.array([[np.nan, 1.0]], np.float32))  # the input itself is still checked
    model.forward(np.full((1, 2), 1e-31, np.float32))
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(
            NonFiniteError, match="Sequential.backward: the input gradient contains NaN or Inf although dout was finite"):
        model.backward(np.full((1, 2), 1e30, np.float32))  # 1e30 * 1e30 overflows on the way back


@pytest.mark.parametrize("augment, error, message", [
    (lambda x, rng: x * np.nan, NonFiniteError, "Sequential.fit: the batch returned by augment contains NaN or Inf"),
    (lambda x, rng: x[:, :, :-1], ValueError,
     r"augment must return a batch of the shape it was given, \(4, 1, 6, 6\), got \(4, 1, 5, 6\)"),
    (lambda x, rng: "not an array", TypeError, "Sequential.fit: the batch returned by augment must be a real numeric"),
])
def test_a_broken_augmentation_is_named_not_reported_as_a_divergence(augment, error, message):
    rng = np.random.default_rng(0)
    model = Sequential([Conv2D(1, 2, 3, seed=0), Flatten(), Dense(32, 3, seed=1)])
    x = rng.standard_normal((8, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    with pytest.raises(error, match=message):
        model.fit(x, y, epochs=1, batch_size=4, optimizer=SGD(0.1), loss=SoftmaxCrossEntropy(), augment=augment,
                  progress=False, log=None)


# --------------------------------------------------------------------------- buffers (BatchNorm2D)


def bn_net(seed=0):
    """(1, 8, 8) -> 10 classes with BatchNorm2D (buffers) and a GlobalAvgPool2D head."""
    return Sequential([
        Conv2D(1, 4, 3, padding=1, bias=None, seed=seed), BatchNorm2D(4), ReLU(), MaxPool2D(2),
        Conv2D(4, 6, 3, padding=1, seed=seed + 1), BatchNorm2D(6, momentum=None), ReLU(), GlobalAvgPool2D(),
        Dense(6, 10, seed=seed + 2),
    ])


def assert_same_buffers(a, b):
    assert set(a.buffers) == set(b.buffers)
    for key, value in a.buffers.items():
        assert value.dtype == b.buffers[key].dtype, key
        np.testing.assert_array_equal(value, b.buffers[key], err_msg=key)


def test_buffers_are_keyed_like_params_and_saved(tmp_path):
    model = bn_net()
    assert sorted(model.buffers) == sorted(f"{i}.{k}" for i in (1, 5)
                                           for k in ("running_mean", "running_var", "num_batches_tracked"))
    x, y = data(16)
    fit(model, x, y, epochs=1)
    assert int(model.buffers["1.num_batches_tracked"]) == 2
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz")
    assert_same_buffers(loaded, model)
    assert_same_params(loaded, model)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))  # eval mode uses the running statistics


def test_buffers_mismatch_is_a_clear_error(tmp_path):
    model = bn_net()
    path = tmp_path / "m.npz"
    model.save(path)
    arrays = dict(np.load(path))
    del arrays["buffer:1.running_var"]
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(ValueError, match=r"missing.npz: the buffers do not match the architecture: missing buffers "
                                         r"\['1.running_var'\], unexpected buffers \[\]"):
        Sequential.load(tmp_path / "missing.npz")
    arrays = dict(np.load(path))
    arrays["buffer:1.num_batches_tracked"] = np.array(1.5)
    np.savez(tmp_path / "kind.npz", **arrays)
    with pytest.raises(ValueError, match=r"kind.npz: buffer '1.num_batches_tracked' is float64 of shape \(\), the "
                                         r"architecture needs int64 of shape \(\)"):
        Sequential.load(tmp_path / "kind.npz")
    arrays = dict(np.load(path))
    arrays["buffer:5.running_mean"] = np.full(6, np.nan, np.float32)
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(ValueError, match=r"nan.npz: buffer '5.running_mean' contains NaN or Inf"):
        Sequential.load(tmp_path / "nan.npz")


@pytest.mark.parametrize("stop_after", [3, 4])
def test_resume_with_batch_norm_is_bit_identical(tmp_path, stop_after):
    """Running statistics travel in the checkpoint: the resumed run ends with the same weights AND buffers."""
    x, y = data(30, seed=1)

    def run(model, opt, **kwargs):
        return fit(model, x, y, epochs=2, batch_size=8, optimizer=opt, augment=RandomShift(1), seed=3, **kwargs)

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


def test_load_state_dict_of_a_torch_model_with_batch_norm_and_global_pooling():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    theirs = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6, momentum=None), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))
    x = torch.rand(8, 1, 8, 8)
    theirs.train()
    theirs(x)
    theirs(x * 2)  # running statistics and counters away from their initial values
    theirs.eval()
    ours = Sequential([*bn_net().layers[:8], Flatten(), Dense(6, 10)])  # torch's indices: GAP is 2 layers there
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert int(ours.buffers["5.num_batches_tracked"]) == 2
    np.testing.assert_allclose(ours.forward(x.numpy()), theirs(x).detach().numpy(), rtol=1e-5, atol=1e-6)


@given(dtype=st.sampled_from([np.float32, np.float64]), size=st.integers(0, 300), bad=st.sampled_from([None, np.nan, np.inf, -np.inf]),
       where=st.floats(0, 1), huge=st.booleans(), strided=st.booleans(), seed=st.integers(0, 2**16))
def test_finite_check_equals_numpys(dtype, size, bad, where, huge, strided, seed):
    """model._finite (the training guard's compiled scan) says what np.isfinite(...).all() says:
    NaN and +-Inf anywhere, the largest finite values (whose sum overflows) still finite."""
    from cnn_im2col.model import _finite

    a = np.random.default_rng(seed).standard_normal(2 * size).astype(dtype)
    if huge:
        a[::3] = np.finfo(dtype).max
    if bad is not None and size:
        a[int(where * (2 * size - 1))] = bad
    view = a[::2] if strided else a
    assert _finite(view) == bool(np.isfinite(view).all())


# ------------------------------------------------------------------------------------------
# bad inputs: the battery's rows for Sequential (machinery: bad_input.py)
# ------------------------------------------------------------------------------------------

BAD_INPUTS = {
    # ---- constructor
    "Sequential([])": (lambda t: Sequential([]), ValueError, r"Sequential: layers", r"empty", r"must not be empty"),
    "Sequential('abc')": (lambda t: Sequential("abc"), TypeError, r"Sequential: layers", r"got str",
                          r"a list of layers"),
    "Sequential([Conv2D]) (a class)": (lambda t: Sequential([Conv2D]), TypeError, r"Sequential: layer 0",
                                       r"the class Conv2D", r"layer protocol"),
    "Sequential([3])": (lambda t: Sequential([3]), TypeError, r"Sequential: layer 0", r"got 3", r"layer protocol"),
    # ---- evaluate / predict / check_shapes
    "evaluate y of another length": (lambda t: tiny_model().evaluate(XM, YM[:3]), ValueError,
                                     r"Sequential\.evaluate: x", r"y has 3 rows", r"must match"),
    "evaluate batch_size=0": (lambda t: tiny_model().evaluate(XM, YM, batch_size=0), ValueError,
                              r"Sequential\.evaluate: batch_size", r"got 0", INT1),
    "evaluate label out of range": (lambda t: tiny_model().evaluate(XM, YM + 3), ValueError,
                                    r"Sequential\.evaluate: y labels", r"got 3 at index 0", r"\[0, 3\)"),
    "evaluate NaN x": (lambda t: tiny_model().evaluate(with_value(XM, np.nan), YM), ValueError,
                       r"Sequential\.evaluate: x", *FINITE),
    "evaluate loss='mse'": (lambda t: tiny_model().evaluate(XM, YM, loss="mse"), TypeError,
                            r"Sequential\.evaluate: loss", r"got 'mse'", r"forward\(pred, target\)"),
    "evaluate loss=MeanSquaredError (the class)": (
        lambda t: tiny_model().evaluate(XM, YM, loss=losses.MeanSquaredError), TypeError,
        r"Sequential\.evaluate: loss", r"MeanSquaredError", r"instan"),
    "predict images smaller than the kernel": (lambda t: tiny_model().predict(XM[:, :, :2, :2]), ValueError,
                                               r"Sequential: layer 0 Conv2D", r"padded input \(2, 2\)",
                                               r"must fit inside"),
    "predict string x": (lambda t: tiny_model().predict(XM.astype(str)), TypeError, r"Sequential\.predict: x", r"<U",
                         REAL),
    "predict batch_size=-1": (lambda t: tiny_model().predict(XM, batch_size=-1), ValueError,
                              r"Sequential\.predict: batch_size", r"got -1", INT1),
    "predict empty batch": (lambda t: tiny_model().predict(XM[:0]), ValueError, r"Sequential\.predict: x",
                            r"\(0, 1, 6, 6\)", r"must not be empty"),
    "predict 1-D x": (lambda t: tiny_model().predict(np.ones(5)), ValueError, r"Sequential\.predict: x",
                      r"got shape \(5,\)", r"at least 2 dimensions"),
    "predict wrong channel count": (lambda t: tiny_model().predict(np.ones((2, 3, 6, 6))), ValueError,
                                    r"Sequential: layer 0 Conv2D", r"shape \(3, 6, 6\)", r"\(1, H, W\)"),
    "check_shapes with a float size": (lambda t: tiny_model().check_shapes((1, 6.0, 6)), TypeError,
                                       r"Sequential: input_shape", r"got \(1, 6\.0, 6\)", r"a tuple of ints >= 1"),
    # ---- load
    "load a missing file": (lambda t: Sequential.load(t / "absent.npz"), FileNotFoundError, r"absent\.npz",
                            r"no such", r"model file"),
    "load a directory": (lambda t: Sequential.load(t), FileNotFoundError, r"/\S+: no such", r"no such",
                         r"model file"),
    "load a text file": (lambda t: (t / "m.npz").write_text("hello") and Sequential.load(t / "m.npz"), ValueError,
                         r"m\.npz", r"not a cnn-im2col model file", r"\.npz"),
    "load a raw pickle": (lambda t: Sequential.load(pickle_file(t, "m.npz")), ValueError, r"m\.npz",
                          r"pickled", r"not a cnn-im2col model file"),
    "load an npz with an object __model__": (
        lambda t: Sequential.load(npz_with(t, "m.npz", __model__=np.array([Payload(t / "pwned")], dtype=object))),
        ValueError, r"m\.npz", r"Object arrays", r"'__model__'"),
    "load an npz without __model__": (lambda t: Sequential.load(npz_with(t, "m.npz", a=np.zeros(2))), ValueError,
                                      r"m\.npz", r"no '__model__' entry", r"cnn-im2col model file"),
    "load a parameter of the wrong shape": (
        lambda t: Sequential.load(model_file_with(t, "m.npz", **{"param:0.weight": np.zeros((2, 1, 2, 2))})),
        ValueError, r"m\.npz: parameter '0\.weight'", r"shape \(2, 1, 2, 2\)", r"needs \(2, 1, 3, 3\)"),
    "load an integer parameter": (
        lambda t: Sequential.load(model_file_with(t, "m.npz", **{"param:0.bias": np.zeros(2, np.int64)})),
        ValueError, r"m\.npz: parameter '0\.bias'", r"dtype int64", r"must be float"),
    "load a NaN parameter": (
        lambda t: Sequential.load(model_file_with(t, "m.npz", **{"param:0.bias": np.full(2, np.nan, np.float32)})),
        ValueError, r"m\.npz: parameter '0\.bias'", r"NaN or Inf", r"contains"),
    "load a missing parameter": (
        lambda t: Sequential.load(model_file_with(t, "m.npz", **{"param:0.bias": np.zeros(2, np.float32),
                                                                 "param:9.x": np.zeros(1)})),
        ValueError, r"m\.npz", r"unexpected parameters \['9\.x'\]", r"do not match the architecture"),
    "load an object parameter": (
        lambda t: Sequential.load(model_file_with(
            t, "m.npz", **{"param:0.bias": np.array([Payload(t / "pwned")] * 2, dtype=object)})),
        ValueError, r"m\.npz", r"0\.bias", r"[Oo]bject"),
    "load a .npy file": (
        lambda t: (np.save(t / "m.npy", np.zeros(3)), Sequential.load(t / "m.npy")), ValueError, r"m\.npy",
        r"\.npy|single array", r"\.npz"),
    "load an npz whose __model__ is not a .npy": (
        lambda t: Sequential.load(zip_with(t, "m.npz", __model__=pickle.dumps(Payload(t / "pwned")))),
        ValueError, r"m\.npz", r"__model__", r"not"),
    "load(3)": (
        lambda t: Sequential.load(3), TypeError, r"Sequential\.load: path", r"got 3", r"str or os\.PathLike"),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)


# ------------------------------------------------------------------------------------------
# accepted inputs: integer and float16 images converted; memory order never changes the result
# ------------------------------------------------------------------------------------------


def test_sequential_accepts_uint8_and_fortran_images_and_gives_the_same_answers():
    a = np.random.default_rng(0).integers(0, 256, size=(6, 1, 6, 6)).astype(np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    reference = tiny_model().predict(a.astype(np.float32))
    for xv in (a, np.asfortranarray(a), a.astype(np.float16), np.repeat(a, 2, axis=-1)[..., ::2],
               a.astype(np.int32)):
        np.testing.assert_allclose(tiny_model().predict(xv), reference, rtol=1e-6, atol=1e-7)
        assert tiny_model().evaluate(xv, y)["loss"] == pytest.approx(tiny_model().evaluate(a.astype(np.float32), y)["loss"],
                                                                rel=1e-6)
    settings = {"epochs": 2, "batch_size": 4, "loss": losses.SoftmaxCrossEntropy(), "seed": 0,
                "progress": False, "log": None}
    net = tiny_model()
    net.fit(a, y.astype(np.uint8), optimizer=optim.Adam(1e-3), **settings)  # uint8 images and labels
    assert all(np.isfinite(p).all() for p in net.params.values())
    trained = []
    xf = (a / 255).astype(np.float32)
    for xv in (xf, np.asfortranarray(xf), np.repeat(xf, 2, axis=-1)[..., ::2], xf.astype(np.float64)):
        net = tiny_model()
        net.fit(xv, y, optimizer=optim.Adam(1e-2), **settings)
        trained.append(net.params)
    for params in trained[1:]:
        for key in params:
            np.testing.assert_allclose(params[key], trained[0][key], rtol=1e-5, atol=1e-6, err_msg=key)

