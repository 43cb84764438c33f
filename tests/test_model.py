"""Tests for cnn_im2col.model: Sequential as a container (the layer protocol, params and buffers,
shapes and summary), evaluate and predict, model files, its bad inputs and the inputs it accepts.
The training loop's tests are in test_training.py, the checkpoint format's in test_checkpoint.py."""

import json
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
from small_nets import (
    assert_same_buffers,
    assert_same_params,
    bn_net,
    data,
    fit,
    small_net,
)

from cnn_im2col import losses, optim
from cnn_im2col.gradcheck import check_layer
from cnn_im2col.layers import (
    AvgPool2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from cnn_im2col.losses import MeanSquaredError, SoftmaxCrossEntropy
from cnn_im2col.model import Sequential
from cnn_im2col.optim import SGD
from cnn_im2col.shapes import NonFiniteError

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
    model = Sequential(
        [
            Conv2D(2, 3, 3, padding=1, bias="tied", dtype=f64, seed=1),  # (3, 7, 7)
            Tanh(),
            Conv2D(3, 3, 2, bias="untied", input_size=(7, 7), dtype=f64, seed=2),  # (3, 6, 6)
            ReLU(),
            MaxPool2D(2),  # (3, 3, 3)
            Conv2D(3, 2, 2, stride=1, bias=None, dtype=f64, seed=3),  # (2, 2, 2)
            Sigmoid(),
            AvgPool2D(2, stride=1, trainable_scale=True, channels=2, dtype=f64),  # (2, 1, 1)
            Flatten(order),
            Dense(2, 5, dtype=f64, seed=4),
            Dropout(0.5, seed=5),  # eval mode: the identity
            Tanh(),
            Dense(5, 4, dtype=f64, seed=6),
            Softmax(),
        ]
    )
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
    with pytest.raises(
        ValueError,
        match=r"layer 0 Conv2D\(1, 4, 3, seed=0\) cannot take the input of "
        r"shape \(3, 8, 8\)",
    ):
        model.check_shapes((3, 8, 8))
    # pooling window larger than its input
    model = Sequential([Conv2D(1, 2, 5, seed=0), MaxPool2D(5)])
    with pytest.raises(ValueError, match=r"layer 1 MaxPool2D\(5\).*layer 0 Conv2D.*\(2, 4, 4\)"):
        model.check_shapes((1, 8, 8))
    with pytest.raises(TypeError, match="input_shape"):
        model.check_shapes((1, 8.0, 8))


def test_summary_totals_equal_a_hand_count():
    model = Sequential(
        [
            Conv2D(1, 6, 5, seed=0),  # 6*1*5*5 + 6 = 156
            ReLU(),
            AvgPool2D(2, trainable_scale=True, channels=6),  # 6
            Conv2D(
                6, 16, 5, bias="untied", input_size=(12, 12), seed=1
            ),  # 16*6*25 + 16*8*8 = 2400 + 1024
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(16 * 4 * 4, 10, seed=2),  # 256*10 + 10 = 2570
        ]
    )
    hand = 156 + 6 + (2400 + 1024) + 2570
    text = model.summary((1, 28, 28))
    assert f"Total params: {hand:,}" in text
    assert model.num_params() == hand
    lines = text.splitlines()
    assert any(
        "Conv2D(6, 16, 5" in line and "(16, 8, 8)" in line and "3,424" in line for line in lines
    )
    assert any("(10,)" in line and "2,570" in line for line in lines)
    with pytest.raises(ValueError, match="layer 0"):
        model.summary((1, 3, 3))


# ------------------------------------------------------------------------------------------
# evaluate and predict
# ------------------------------------------------------------------------------------------


def test_predict_gives_the_outputs_and_predict_proba_the_probabilities():
    x, y = data(30)
    model = small_net()
    logits = model.forward(x)
    np.testing.assert_array_equal(model.predict(x, batch_size=7), logits)
    p = model.predict_proba(x, batch_size=7)
    assert p.shape == (30, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(p.argmax(1), logits.argmax(1))
    result = model.evaluate(x, y, batch_size=7)
    ce = SoftmaxCrossEntropy()
    assert result["loss"] == pytest.approx(ce.forward(logits, y), rel=1e-5)
    assert result["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))


def test_predict_and_evaluate_with_a_softmax_output_layer():
    x, y = data(12)
    base = small_net()
    model = Sequential([*base.layers, Softmax()])
    probs = model.predict_proba(x)
    np.testing.assert_array_equal(probs, model.predict(x))  # the outputs are the probabilities
    np.testing.assert_allclose(probs, base.predict_proba(x), rtol=1e-5, atol=1e-7)
    nll = -np.mean(np.log(probs[np.arange(12), y]))
    assert model.evaluate(x, y)["loss"] == pytest.approx(nll, rel=1e-5)


def primer_network(seed=0):
    """The primer's sigmoid + quadratic-cost network: (1, 6, 6) -> 3 sigmoid outputs."""
    return Sequential(
        [Conv2D(1, 2, 3, seed=seed), Sigmoid(), Flatten(), Dense(32, 3, seed=seed + 1), Sigmoid()]
    )


def test_predict_of_a_sigmoid_quadratic_cost_network_is_its_forward():
    x = np.random.default_rng(0).random((9, 1, 6, 6)).astype(np.float32)
    model = primer_network()
    np.testing.assert_array_equal(model.predict(x, batch_size=4), model.forward(x))
    with pytest.raises(ValueError, match=r"predict_proba: .*3 outputs are independent Sigmoid"):
        model.predict_proba(x)


def test_evaluate_of_a_regression_network_reports_its_loss_and_no_accuracy():
    rng = np.random.default_rng(1)
    x = rng.random((20, 1, 6, 6)).astype(np.float32)
    targets = rng.random((20, 3)).astype(np.float32)  # not probability rows: a regression
    model = primer_network()
    mse = MeanSquaredError()
    before = model.evaluate(x, targets)  # no fit yet: float targets default to the squared error
    assert set(before) == {"loss"}
    assert before["loss"] == pytest.approx(mse.forward(model.forward(x), targets), rel=1e-5)
    history = fit(model, x, targets, epochs=3, batch_size=5, optimizer=SGD(0.5), loss=mse)
    assert history["accuracy"] == [None, None, None]
    after = model.evaluate(x, targets)  # the loss of fit
    assert set(after) == {"loss"}
    assert after["loss"] == pytest.approx(mse.forward(model.forward(x), targets), rel=1e-5)


def test_evaluate_after_fit_uses_the_loss_it_was_trained_with():
    x, y = data(20)
    model = small_net()
    onehot = np.eye(10, dtype=np.float32)[y]
    fit(model, x, onehot, epochs=1, batch_size=10, optimizer=SGD(0.01), loss=MeanSquaredError())
    result = model.evaluate(x, onehot)
    assert result["loss"] == pytest.approx(
        MeanSquaredError().forward(model.forward(x), onehot), rel=1e-5
    )
    assert result["accuracy"] == pytest.approx(np.mean(model.forward(x).argmax(1) == y))


def test_a_one_output_network_thresholds_instead_of_taking_an_argmax():
    rng = np.random.default_rng(2)
    x = rng.random((40, 1, 6, 6)).astype(np.float32)
    y = (rng.random((40, 1)) > 0.5).astype(np.float32)
    model = Sequential([Flatten(), Dense(36, 1, seed=0), Sigmoid()])
    p = model.forward(x)
    result = model.evaluate(x, y, loss=MeanSquaredError())
    assert result["accuracy"] == pytest.approx(np.mean((p > 0.5) == (y > 0.5)))
    proba = model.predict_proba(x)
    np.testing.assert_allclose(proba, np.hstack([1 - p, p]))
    logits = Sequential([Flatten(), Dense(36, 1, seed=0)])  # no Sigmoid: threshold 0 on logits
    z = logits.forward(x)
    acc = logits.evaluate(x, y, loss=MeanSquaredError())["accuracy"]
    assert acc == pytest.approx(np.mean((z > 0) == (y > 0.5)))


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
    model = Sequential(
        [
            Conv2D(1, 2, 3, padding="same", bias="untied", input_size=(6, 6), dtype=f64, seed=1),
            Tanh(),
            AvgPool2D(2, trainable_scale=True, channels=2, dtype=f64),
            Sigmoid(),
            Flatten("F"),
            Dense(18, 3, bias=False, dtype=f64, seed=2),
            Dropout(0.1, seed=3),
            Softmax(),
        ]
    )
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


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda a: _set_header(a, lambda h: h["layers"][1].update({"class": "Swish"})),
            r"layer 1 has unknown class 'Swish'; known classes: AdaptiveAvgPool2D, "
            r"AdaptiveMaxPool2D, AvgPool2D",
        ),
        (lambda a: a.pop("param:4.bias"), r"missing parameters \['4.bias'\]"),
        (
            lambda a: a.update({"param:9.weight": np.zeros(3, np.float32)}),
            r"unexpected parameters \['9.weight'\]",
        ),
        (
            lambda a: a.update({"param:0.weight": np.zeros((4, 1, 2, 2), np.float32)}),
            r"'0.weight' has shape \(4, 1, 2, 2\), the architecture needs \(4, 1, 3, 3\)",
        ),
        (lambda a: a.update({"param:0.bias": np.zeros(4, np.int32)}), "must be float"),
        (lambda a: a.update({"junk": np.zeros(1)}), r"unknown entries \['junk'\]"),
        (
            lambda a: _set_header(a, lambda h: h.update({"version": 99})),
            "version 99 is not supported",
        ),
        (
            lambda a: _set_header(
                a, lambda h: h["layers"][0]["config"].update({"kernel_size": -3})
            ),
            r"layer 0 \(Conv2D\) has a bad config",
        ),
        (lambda a: a.pop("__model__"), "not a cnn-im2col model file"),
        (
            lambda a: a.update({"__model__": np.frombuffer(b"{not json", dtype=np.uint8)}),
            "not valid JSON",
        ),
    ],
)
def test_load_rejects_bad_files_naming_them(tmp_path, change, match):
    model = small_net()
    model.save(tmp_path / "good.npz")
    bad = _rewrite(tmp_path / "good.npz", tmp_path / "bad.npz", change)
    with pytest.raises(ValueError, match=match) as info:
        Sequential.load(bad)
    assert str(bad) in str(info.value)


def test_load_rejects_npy_object_arrays_and_non_paths(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros(3))
    with pytest.raises(
        ValueError,
        match=r"m\.npy: a \.npy file \(a single array\), "
        r"not a cnn-im2col model file",
    ):
        Sequential.load(tmp_path / "m.npy")
    with pytest.raises(
        TypeError, match=r"Sequential\.load: path must be a str or os\.PathLike, got 3"
    ):
        Sequential.load(3)
    small_net().save(tmp_path / "good.npz")
    bad = _rewrite(
        tmp_path / "good.npz",
        tmp_path / "obj.npz",
        lambda a: a.update({"param:0.bias": np.array([None] * 4, dtype=object)}),
    )
    with np.load(bad, allow_pickle=True) as npz:
        assert npz["param:0.bias"].dtype == object
    with pytest.raises(
        ValueError, match=r"obj\.npz: entry 'param:0\.bias' cannot be read \(Object arrays"
    ):
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
    model = Sequential(
        [Conv2D(1, 4, 3, seed=0), ReLU(), MaxPool2D(2), Flatten(), inner, Dense(16, 10, seed=3)]
    )
    assert (
        "4.0.weight" in model.params
        and model.params["4.0.weight"] is inner.layers[0].params["weight"]
    )
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


@pytest.mark.parametrize("first", ["conv", "dense", "relu"])
def test_backward_without_input_grad_fills_the_same_gradients(first):
    rng = np.random.default_rng(0)
    head = {
        "conv": [Conv2D(1, 2, 3, seed=0), Flatten()],
        "dense": [Dense(36, 18, seed=0)],
        "relu": [ReLU(), Flatten()],
    }[first]
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
    with (
        np.errstate(over="ignore", invalid="ignore"),
        pytest.raises(NonFiniteError, match="Sequential.forward: the output contains"),
    ):
        model.forward(x)
    with pytest.raises(NonFiniteError, match=r"Dense\(2, 2, seed=0\): x contains NaN or Inf"):
        model.forward(np.array([[np.nan, 1.0]], np.float32))  # the input itself is still checked
    model.forward(np.full((1, 2), 1e-31, np.float32))
    with (
        np.errstate(over="ignore", invalid="ignore"),
        pytest.raises(
            NonFiniteError,
            match="Sequential.backward: the input gradient contains NaN or Inf although "
            "dout was finite",
        ),
    ):
        model.backward(np.full((1, 2), 1e30, np.float32))  # 1e30 * 1e30 overflows on the way back


def test_a_stack_nested_in_a_residual_leaves_the_checks_to_the_outermost(monkeypatch):
    """A Residual's body is a Sequential run inside its parent: its output and input gradient are
    not scanned (the outermost stack scans its own), and an overflow inside it is still reported,
    at the outermost stack's output and input gradient."""
    from cnn_im2col import model as model_module
    from cnn_im2col.containers import Residual

    inner = Dense(2, 2, seed=0)
    model = Sequential([Dense(2, 2, seed=1), Residual(Sequential([inner, Dense(2, 2, seed=2)]))])
    scanned = []
    real = model_module.is_finite
    monkeypatch.setattr(model_module, "is_finite", lambda a: scanned.append(a.shape) or real(a))
    x = np.full((3, 2), 0.5, np.float32)
    model.forward(x, training=True)
    model.backward(np.ones((3, 2), np.float32))
    assert scanned == [(3, 2), (3, 2)]  # the outermost's output, then its input gradient
    inner.params["weight"][...] = 1e30  # overflows float32 inside the body, forward and backward
    with (
        np.errstate(over="ignore", invalid="ignore"),
        pytest.raises(NonFiniteError, match="Sequential.forward: the output contains"),
    ):
        model.forward(np.full((3, 2), 1e30, np.float32))
    model.forward(x)
    with (
        np.errstate(over="ignore", invalid="ignore"),
        pytest.raises(NonFiniteError, match="Sequential.backward: the input gradient contains"),
    ):
        model.backward(np.full((3, 2), 1e30, np.float32))


# --------------------------------------------------------------------------- buffers (BatchNorm2D)


def test_buffers_are_keyed_like_params_and_saved(tmp_path):
    model = bn_net()
    assert sorted(model.buffers) == sorted(
        f"{i}.{k}" for i in (1, 5) for k in ("running_mean", "running_var", "num_batches_tracked")
    )
    x, y = data(16)
    fit(model, x, y, epochs=1)
    assert int(model.buffers["1.num_batches_tracked"]) == 2
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz")
    assert_same_buffers(loaded, model)
    assert_same_params(loaded, model)
    np.testing.assert_array_equal(
        loaded.predict(x), model.predict(x)
    )  # eval mode uses the running statistics


def test_buffers_mismatch_is_a_clear_error(tmp_path):
    model = bn_net()
    path = tmp_path / "m.npz"
    model.save(path)
    arrays = dict(np.load(path))
    del arrays["buffer:1.running_var"]
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(
        ValueError,
        match=r"missing.npz: the buffers do not match the architecture: "
        r"missing buffers \['1.running_var'\], "
        r"unexpected buffers \[\]",
    ):
        Sequential.load(tmp_path / "missing.npz")
    arrays = dict(np.load(path))
    arrays["buffer:1.num_batches_tracked"] = np.array(1.5)
    np.savez(tmp_path / "kind.npz", **arrays)
    with pytest.raises(
        ValueError,
        match=r"kind.npz: buffer '1.num_batches_tracked' is float64 of "
        r"shape \(\), the architecture needs int64 of shape \(\)",
    ):
        Sequential.load(tmp_path / "kind.npz")
    arrays = dict(np.load(path))
    arrays["buffer:5.running_mean"] = np.full(6, np.nan, np.float32)
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(ValueError, match=r"nan.npz: buffer '5.running_mean' contains NaN or Inf"):
        Sequential.load(tmp_path / "nan.npz")


# ------------------------------------------------------------------------------------------
# bad inputs: the battery's rows for Sequential (machinery: bad_input.py)
# ------------------------------------------------------------------------------------------

BAD_INPUTS = {
    # ---- constructor
    "Sequential([])": (
        lambda t: Sequential([]),
        ValueError,
        r"Sequential: layers",
        r"empty",
        r"must not be empty",
    ),
    "Sequential('abc')": (
        lambda t: Sequential("abc"),
        TypeError,
        r"Sequential: layers",
        r"got str",
        r"a list of layers",
    ),
    "Sequential([Conv2D]) (a class)": (
        lambda t: Sequential([Conv2D]),
        TypeError,
        r"Sequential: layer 0",
        r"the class Conv2D",
        r"layer protocol",
    ),
    "Sequential([3])": (
        lambda t: Sequential([3]),
        TypeError,
        r"Sequential: layer 0",
        r"got 3",
        r"layer protocol",
    ),
    # ---- evaluate / predict / check_shapes
    "evaluate y of another length": (
        lambda t: tiny_model().evaluate(XM, YM[:3]),
        ValueError,
        r"Sequential\.evaluate: x",
        r"y has 3 rows",
        r"must match",
    ),
    "evaluate batch_size=0": (
        lambda t: tiny_model().evaluate(XM, YM, batch_size=0),
        ValueError,
        r"Sequential\.evaluate: batch_size",
        r"got 0",
        INT1,
    ),
    "evaluate label out of range": (
        lambda t: tiny_model().evaluate(XM, YM + 3),
        ValueError,
        r"Sequential\.evaluate: y labels",
        r"got 3 at index 0",
        r"\[0, 3\)",
    ),
    "evaluate NaN x": (
        lambda t: tiny_model().evaluate(with_value(XM, np.nan), YM),
        ValueError,
        r"Sequential\.evaluate: x",
        *FINITE,
    ),
    "evaluate loss='mse'": (
        lambda t: tiny_model().evaluate(XM, YM, loss="mse"),
        TypeError,
        r"Sequential\.evaluate: loss",
        r"got 'mse'",
        r"forward\(pred, target\)",
    ),
    "evaluate loss=MeanSquaredError (the class)": (
        lambda t: tiny_model().evaluate(XM, YM, loss=losses.MeanSquaredError),
        TypeError,
        r"Sequential\.evaluate: loss",
        r"MeanSquaredError",
        r"instan",
    ),
    "predict images smaller than the kernel": (
        lambda t: tiny_model().predict(XM[:, :, :2, :2]),
        ValueError,
        r"Sequential: layer 0 Conv2D",
        r"padded input \(2, 2\)",
        r"must fit inside",
    ),
    "predict string x": (
        lambda t: tiny_model().predict(XM.astype(str)),
        TypeError,
        r"Sequential\.predict: x",
        r"<U",
        REAL,
    ),
    "predict batch_size=-1": (
        lambda t: tiny_model().predict(XM, batch_size=-1),
        ValueError,
        r"Sequential\.predict: batch_size",
        r"got -1",
        INT1,
    ),
    "predict empty batch": (
        lambda t: tiny_model().predict(XM[:0]),
        ValueError,
        r"Sequential\.predict: x",
        r"\(0, 1, 6, 6\)",
        r"must not be empty",
    ),
    "predict 1-D x": (
        lambda t: tiny_model().predict(np.ones(5)),
        ValueError,
        r"Sequential\.predict: x",
        r"got shape \(5,\)",
        r"at least 2 dimensions",
    ),
    "predict wrong channel count": (
        lambda t: tiny_model().predict(np.ones((2, 3, 6, 6))),
        ValueError,
        r"Sequential: layer 0 Conv2D",
        r"shape \(3, 6, 6\)",
        r"\(1, H, W\)",
    ),
    "check_shapes with a float size": (
        lambda t: tiny_model().check_shapes((1, 6.0, 6)),
        TypeError,
        r"Sequential: input_shape",
        r"got \(1, 6\.0, 6\)",
        r"a tuple of ints >= 1",
    ),
    # ---- load
    "load a missing file": (
        lambda t: Sequential.load(t / "absent.npz"),
        FileNotFoundError,
        r"absent\.npz",
        r"no such",
        r"model file",
    ),
    "load a directory": (
        lambda t: Sequential.load(t),
        FileNotFoundError,
        r"/\S+: no such",
        r"no such",
        r"model file",
    ),
    "load a text file": (
        lambda t: (t / "m.npz").write_text("hello") and Sequential.load(t / "m.npz"),
        ValueError,
        r"m\.npz",
        r"not a cnn-im2col model file",
        r"\.npz",
    ),
    "load a raw pickle": (
        lambda t: Sequential.load(pickle_file(t, "m.npz")),
        ValueError,
        r"m\.npz",
        r"pickled",
        r"not a cnn-im2col model file",
    ),
    "load an npz with an object __model__": (
        lambda t: Sequential.load(
            npz_with(t, "m.npz", __model__=np.array([Payload(t / "pwned")], dtype=object))
        ),
        ValueError,
        r"m\.npz",
        r"Object arrays",
        r"'__model__'",
    ),
    "load an npz without __model__": (
        lambda t: Sequential.load(npz_with(t, "m.npz", a=np.zeros(2))),
        ValueError,
        r"m\.npz",
        r"no '__model__' entry",
        r"cnn-im2col model file",
    ),
    "load a parameter of the wrong shape": (
        lambda t: Sequential.load(
            model_file_with(t, "m.npz", **{"param:0.weight": np.zeros((2, 1, 2, 2))})
        ),
        ValueError,
        r"m\.npz: parameter '0\.weight'",
        r"shape \(2, 1, 2, 2\)",
        r"needs \(2, 1, 3, 3\)",
    ),
    "load an integer parameter": (
        lambda t: Sequential.load(
            model_file_with(t, "m.npz", **{"param:0.bias": np.zeros(2, np.int64)})
        ),
        ValueError,
        r"m\.npz: parameter '0\.bias'",
        r"dtype int64",
        r"must be float",
    ),
    "load a NaN parameter": (
        lambda t: Sequential.load(
            model_file_with(t, "m.npz", **{"param:0.bias": np.full(2, np.nan, np.float32)})
        ),
        ValueError,
        r"m\.npz: parameter '0\.bias'",
        r"NaN or Inf",
        r"contains",
    ),
    "load a missing parameter": (
        lambda t: Sequential.load(
            model_file_with(
                t, "m.npz", **{"param:0.bias": np.zeros(2, np.float32), "param:9.x": np.zeros(1)}
            )
        ),
        ValueError,
        r"m\.npz",
        r"unexpected parameters \['9\.x'\]",
        r"do not match the architecture",
    ),
    "load an object parameter": (
        lambda t: Sequential.load(
            model_file_with(
                t, "m.npz", **{"param:0.bias": np.array([Payload(t / "pwned")] * 2, dtype=object)}
            )
        ),
        ValueError,
        r"m\.npz",
        r"0\.bias",
        r"[Oo]bject",
    ),
    "load a .npy file": (
        lambda t: (np.save(t / "m.npy", np.zeros(3)), Sequential.load(t / "m.npy")),
        ValueError,
        r"m\.npy",
        r"\.npy|single array",
        r"\.npz",
    ),
    "load an npz whose __model__ is not a .npy": (
        lambda t: Sequential.load(
            zip_with(t, "m.npz", __model__=pickle.dumps(Payload(t / "pwned")))
        ),
        ValueError,
        r"m\.npz",
        r"__model__",
        r"not",
    ),
    "load(3)": (
        lambda t: Sequential.load(3),
        TypeError,
        r"Sequential\.load: path",
        r"got 3",
        r"str or os\.PathLike",
    ),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)


# ------------------------------------------------------------------------------------------
# accepted inputs: integer and float16 images converted; memory order never changes the result
# ------------------------------------------------------------------------------------------


def test_sequential_accepts_uint8_and_fortran_images_and_gives_the_same_answers():
    # binary uint8 images (0/1): integers beyond [0, 1] are raw pixels, refused by test_training
    a = np.random.default_rng(0).integers(0, 2, size=(6, 1, 6, 6)).astype(np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    reference = tiny_model().predict(a.astype(np.float32))
    for xv in (
        a,
        np.asfortranarray(a),
        a.astype(np.float16),
        np.repeat(a, 2, axis=-1)[..., ::2],
        a.astype(np.int32),
    ):
        np.testing.assert_allclose(tiny_model().predict(xv), reference, rtol=1e-6, atol=1e-7)
        assert tiny_model().evaluate(xv, y)["loss"] == pytest.approx(
            tiny_model().evaluate(a.astype(np.float32), y)["loss"], rel=1e-6
        )
    settings = {
        "epochs": 2,
        "batch_size": 4,
        "loss": losses.SoftmaxCrossEntropy(),
        "seed": 0,
        "progress": False,
        "log": None,
    }
    net = tiny_model()
    net.fit(
        a, y.astype(np.uint8), optimizer=optim.Adam(1e-3), **settings
    )  # uint8 images and labels
    assert all(np.isfinite(p).all() for p in net.params.values())
    trained = []
    xf = (a / 255).astype(np.float32)
    for xv in (
        xf,
        np.asfortranarray(xf),
        np.repeat(xf, 2, axis=-1)[..., ::2],
        xf.astype(np.float64),
    ):
        net = tiny_model()
        net.fit(xv, y, optimizer=optim.Adam(1e-2), **settings)
        trained.append(net.params)
    for params in trained[1:]:
        for key in params:
            np.testing.assert_allclose(
                params[key], trained[0][key], rtol=1e-5, atol=1e-6, err_msg=key
            )


@pytest.mark.parametrize("content", [b"just some text\n", b"\x80\x04\x95 a pickle", b""])
def test_loading_a_file_that_is_not_an_npz_says_so_and_never_mentions_pickles(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    for load in (Sequential.load, Sequential.load_checkpoint):
        with pytest.raises(ValueError, match=r"notes.txt: .*not a cnn-im2col model file") as info:
            load(path)
        assert "allow_pickle" not in str(info.value)


def test_summary_takes_the_input_shape_from_the_model_when_it_knows_it(tmp_path):
    x, y = data(8)
    model = small_net()
    with pytest.raises(ValueError, match=r"summary: this model does not know its input shape"):
        model.summary()
    fit(model, x, y, epochs=1)  # fit learns the shape it trains on ...
    assert model.input_shape == (1, 8, 8)
    assert model.summary() == model.summary((1, 8, 8))
    model.save(tmp_path / "m.npz")  # ... and the model file keeps it
    assert Sequential.load(tmp_path / "m.npz").input_shape == (1, 8, 8)
    stated = Sequential([ReLU(), Dense(6, 2, seed=0)])  # a first Dense states it
    assert stated.input_shape == (6,) and "Total params: 14" in stated.summary()
    given = Sequential([Flatten(), Dense(12, 2, seed=0)], input_shape=(3, 2, 2))
    assert given.config()["input_shape"] == [3, 2, 2]
    assert Sequential.from_config(given.config()).input_shape == (3, 2, 2)
    with pytest.raises(ValueError, match=r"layer 1 Dense\(12, 2, seed=0\) cannot take"):
        Sequential([Flatten(), Dense(12, 2, seed=0)], input_shape=(3, 2, 3))
