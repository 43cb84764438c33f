"""session: an InferenceSession serves predict's outputs from a private, frozen copy."""

import numpy as np
import pytest
from small_nets import bn_net, data, fit

from cnn_im2col import architectures
from cnn_im2col.layers import Conv2D, Dense, Layer, ReLU
from cnn_im2col.model import Sequential
from cnn_im2col.session import InferenceSession
from cnn_im2col.shapes import NonFiniteError


def _trained_bn_net():
    model = bn_net()
    x, y = data(32)
    fit(model, x, y, epochs=1)  # running statistics and parameters away from their defaults
    return model, x


@pytest.mark.parametrize("net", ["bn_net", "resnet20", "mobilenetv2"])
def test_run_gives_predicts_outputs(net):
    if net == "bn_net":
        model, x = _trained_bn_net()
        shape = (1, 8, 8)
    else:
        model = getattr(architectures, net)(input_shape=(3, 16, 16))
        # running statistics that are not the identity, in the nested blocks too
        rng = np.random.default_rng(0)
        for key, value in model.buffers.items():
            if key.endswith("running_var"):
                value[...] = rng.uniform(0.5, 2.0, value.shape)
            elif key.endswith("running_mean"):
                value[...] = rng.normal(0, 0.1, value.shape)
        x = rng.random((5, 3, 16, 16), dtype=np.float32)
        shape = (3, 16, 16)
    session = InferenceSession(model, shape)
    expected = model.predict(x, batch_size=2)
    got = session.run(x, batch_size=2)
    assert got.dtype == expected.dtype
    # the same steps and folds; a session's 3x3 convolutions take Winograd at any batch (its
    # weights transformed once), predict's im2col below 512 output pixels: ~1e-5 of the scale
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(session.run(x[:1]), model.predict(x[:1]), rtol=1e-4,
                               atol=1e-4 * scale)  # one batch


def test_the_session_is_a_snapshot_that_training_does_not_change():
    model, x = _trained_bn_net()
    session = InferenceSession(model)  # fit taught the model its input shape
    before = model.predict(x)
    np.testing.assert_array_equal(session.run(x), before)
    # the original changed every way predict would notice: in place by hand, and by training
    model.params["0.weight"][...] *= -1.5
    model.buffers["1.running_var"][...] += 3.0
    fit(model, *data(32, seed=1), epochs=1)
    assert not np.array_equal(model.predict(x), before)
    np.testing.assert_array_equal(session.run(x), before)
    arrays = [*model.params.values(), *model.buffers.values()]
    mine = [*session._net.params.values(), *session._net.buffers.values()]
    assert not any(np.shares_memory(a, b) for a in arrays for b in mine)


def test_folds_are_made_once_and_not_compared_again(monkeypatch):
    from cnn_im2col import planning

    model, x = _trained_bn_net()
    session = InferenceSession(model)
    calls = []
    real = planning.Fold._sources
    monkeypatch.setattr(planning.Fold, "_sources", lambda self: calls.append(1) or real(self))
    session.run(x)
    assert len(calls) == 2  # the two pairs folded at the first run
    session.run(x)
    session.run(x[:3])
    assert len(calls) == 2  # and never looked at again
    model.predict(x)
    assert len(calls) == 4  # predict compares its own pairs on every call
    model.predict(x)
    assert len(calls) == 6


def test_winograd_weights_are_transformed_once_per_session_and_on_every_predict(monkeypatch):
    """A session transforms each Winograd convolution's weight at its first run and keeps it;
    predict, whose network may change, transforms on every call (where it takes Winograd: above
    512 output pixels a map). Both give the same numbers to Winograd's rounding."""
    from cnn_im2col.conv import winograd

    model = architectures.resnet20(input_shape=(3, 16, 16))
    x = np.random.default_rng(1).random((4, 3, 16, 16), dtype=np.float32)
    session = InferenceSession(model, (3, 16, 16))
    calls = []
    real = winograd.transform_weight
    monkeypatch.setattr(winograd, "transform_weight", lambda w: calls.append(w.shape) or real(w))
    first = session.run(x)
    made = len(calls)
    assert made > 0  # ResNet-20's 16x16 stage takes Winograd at this batch
    np.testing.assert_array_equal(session.run(x), first)
    np.testing.assert_allclose(session.run(x[:3]), first[:3], 1e-5, 1e-5)  # another batch's
    assert len(calls) == made  # kept, for the new batch size too
    scale = float(np.abs(first).max())  # predict keeps im2col on the 8x8 maps (256 pixels)
    np.testing.assert_allclose(model.predict(x), first, rtol=1e-4, atol=1e-4 * scale)
    per_call = len(calls) - made
    assert 0 < per_call < made  # the 16x16 stage's transforms, again on every call
    model.predict(x)
    assert len(calls) == made + 2 * per_call


class Scale(Layer):
    """A user's layer that can be saved: y = x * factor."""

    def __init__(self, factor=2.0):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x, training=False):
        return np.asarray(x) * self.factor

    def backward(self, dout):
        return dout * self.factor

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def config(self):
        return {"factor": self.factor}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class Unsaveable:
    """A user's layer that follows the layer protocol but has no config: it cannot be saved."""

    params, grads = {}, {}

    def forward(self, x, training=False):
        return np.asarray(x) * 3.0

    def backward(self, dout):
        return dout * 3.0

    def output_shape(self, input_shape):
        return tuple(input_shape)


def test_a_users_layer_is_copied_when_it_can_be_saved():
    model = Sequential([Conv2D(1, 2, 3, seed=0), Scale(3.0), ReLU()], input_shape=(1, 5, 5))
    x = data(4, size=5)[0]
    np.testing.assert_array_equal(InferenceSession(model).run(x), model.predict(x))
    model = Sequential([Conv2D(1, 2, 3, seed=0), Unsaveable()], input_shape=(1, 5, 5))
    with pytest.raises(TypeError, match=r"InferenceSession: the network cannot be copied .*"
                                        r"Unsaveable.*cannot be saved"):
        InferenceSession(model)


def test_bad_input_is_refused_with_what_was_expected():
    model, x = _trained_bn_net()
    session = InferenceSession(model)
    assert repr(session) == "InferenceSession(input_shape=(1, 8, 8), output_shape=(10,), 9 layers)"
    with pytest.raises(ValueError, match=r"InferenceSession.run: x must have shape \(N, 1, 8, 8\) "
                                         r"\(the session's input shape\), got \(2, 1, 9, 8\)"):
        session.run(np.zeros((2, 1, 9, 8), np.float32))
    with pytest.raises(ValueError, match=r"shape \(N, 1, 8, 8\).*got \(1, 8, 8\)"):
        session.run(x[0])
    with pytest.raises(ValueError, match="InferenceSession.run: x holds integers from 255 to 255"):
        session.run(np.full((1, 1, 8, 8), 255, np.uint8))
    bad = x[:2].copy()
    bad[1, 0, 3, 3] = np.nan
    with pytest.raises(NonFiniteError, match="InferenceSession.run: x contains NaN"):
        session.run(bad)
    with pytest.raises(TypeError, match="InferenceSession.run: x must be a real numeric array"):
        session.run(np.array([["a"]]))
    with pytest.raises(ValueError, match="batch_size"):
        session.run(x, batch_size=0)
    overflowing = Sequential([Dense(1, 1)], input_shape=(1,))
    overflowing.params["0.weight"][...] = 3e38
    with np.errstate(over="ignore"), pytest.raises(
            NonFiniteError, match="InferenceSession.run: the output contains NaN or Inf"):
        InferenceSession(overflowing).run(np.full((2, 1), 10.0, np.float32))


def test_bad_construction_is_refused():
    with pytest.raises(TypeError, match="InferenceSession: model must be a Sequential, got Conv2D"):
        InferenceSession(Conv2D(1, 2, 3))
    model = Sequential([Conv2D(1, 2, 3), ReLU()])
    with pytest.raises(ValueError, match=r"does not know its input shape.*input_shape=\(C, H, W\)"):
        InferenceSession(model)
    with pytest.raises(ValueError, match="positive sizes"):
        InferenceSession(model, (1, 0, 5))
    with pytest.raises(TypeError, match="sequence of ints"):
        InferenceSession(model, "1x5x5")
    with pytest.raises(ValueError, match=r"layer 0"):  # the shapes, checked once, up front
        InferenceSession(model, (3, 5, 5))
