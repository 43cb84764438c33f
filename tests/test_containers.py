"""Residual, Concat and Gate: gradients (float64 finite differences), PyTorch's numbers and
state_dict keys, files, errors, training inside Sequential, the summary's nesting."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_im2col import (
    SGD,
    Adam,
    AdaptiveAvgPool2D,
    BatchNorm2D,
    Concat,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Gate,
    GlobalAvgPool2D,
    HardSigmoid,
    MaxPool2D,
    ReLU,
    Residual,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    TrainingInterrupted,
    blocks,
    manual_seed,
)
from cnn_im2col.gradcheck import check_layer

F64 = np.float64


def basic_block(cin, cout, stride, dtype=np.float32):
    """ResNet's basic block (He et al. 2016) without its final ReLU."""
    body = Sequential([
        Conv2D(cin, cout, 3, stride=stride, padding=1, bias=None, dtype=dtype),
        BatchNorm2D(cout, dtype=dtype), ReLU(),
        Conv2D(cout, cout, 3, padding=1, bias=None, dtype=dtype), BatchNorm2D(cout, dtype=dtype),
    ])
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = Sequential([Conv2D(cin, cout, 1, stride=stride, bias=None, dtype=dtype),
                               BatchNorm2D(cout, dtype=dtype)])
    return Residual(body, shortcut)


def fire(cin, squeeze, expand, dtype=np.float32):
    """SqueezeNet's fire module: a 1x1 squeeze, then 1x1 and 3x3 expansions concatenated."""
    return Sequential([
        Conv2D(cin, squeeze, 1, dtype=dtype), ReLU(),
        Concat([Sequential([Conv2D(squeeze, expand, 1, dtype=dtype), ReLU()]),
                Sequential([Conv2D(squeeze, expand, 3, padding=1, dtype=dtype), ReLU()])]),
    ])


def squeeze_excitation(channels, squeeze, dtype=np.float32, last=HardSigmoid):
    return Gate(Sequential([AdaptiveAvgPool2D(1), Conv2D(channels, squeeze, 1, dtype=dtype), ReLU(),
                            Conv2D(squeeze, channels, 1, dtype=dtype), last()]))


def small_net(dtype=np.float32, classes=5):
    return Sequential([
        Conv2D(3, 8, 3, padding=1, dtype=dtype), ReLU(),
        basic_block(8, 8, 1, dtype), ReLU(),
        basic_block(8, 16, 2, dtype), ReLU(),
        fire(16, 4, 8, dtype),
        squeeze_excitation(16, 4, dtype),
        AdaptiveAvgPool2D(1), Flatten(), Dense(16, classes, dtype=dtype),
    ])


def relative_error(ours, theirs):
    """The largest difference relative to the largest value (elementwise relative errors blow up
    where a gradient cancels to nearly 0)."""
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-300))


def rand(shape, seed=0, dtype=F64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(
    "make",
    [
        lambda: basic_block(4, 4, 1, F64),
        lambda: basic_block(3, 6, 2, F64),
        lambda: fire(4, 3, 2, F64),
        lambda: squeeze_excitation(4, 2, F64, last=Sigmoid),
        lambda: Gate(Conv2D(3, 3, 3, padding=1, dtype=F64)),  # a gate of the input's own shape
        lambda: Residual(Sequential([Conv2D(3, 3, 3, padding=1, dtype=F64), ReLU(),
                                     MaxPool2D(3, 1, 1)])),  # a fused block inside the body
    ],
    ids=["identity-shortcut", "projection", "fire", "se", "gate-full", "fused-body"],
)
def test_gradients_float64(make, training):
    manual_seed(3)
    block = make()
    randomize(block)
    x = rand((2, block_in_channels(block), 6, 6), seed=1)
    errors = check_layer(block, x, training=training)
    assert max(errors.values()) < 1e-5
    assert set(errors) == {"x", *block.params}


@pytest.mark.parametrize("stride, cout", [(1, 4), (2, 6)], ids=["identity", "projection"])
def test_a_basic_block_then_relu_gradient_checks_with_the_join_in_its_last_batch_norm(stride,
                                                                                      cout):
    """Residual -> ReLU whose body ends in a BatchNorm2D: the shortcut added and the ReLU taken in
    that normalisation's output pass, its derivative inside its backward (and, for an identity
    shortcut, in the final sum): float64 finite differences through the whole."""
    manual_seed(5)
    net = Sequential([basic_block(4, cout, stride, F64), ReLU()])
    randomize(net)
    x = rand((2, 4, 6, 6), seed=2)
    net.forward(x, training=True)
    assert net.layers[0]._cache[-1]  # joined in the body
    errors = check_layer(net, x, training=True)
    assert max(errors.values()) < 1e-5


@pytest.mark.parametrize("dtype", [np.float32, F64])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("stride, cout", [(1, 8), (2, 12)], ids=["identity", "projection"])
def test_the_join_in_the_body_gives_the_bits_of_the_join_after_it(monkeypatch, dtype, relu,
                                                                   stride, cout):
    """A Residual (-> ReLU) whose body ends in a BatchNorm2D adds the shortcut there: outputs,
    input gradient and every parameter's gradient equal, bit for bit, those of the body run whole
    and joined after it (``joins_skip`` refused), in training and in evaluation."""
    def run(joins):
        if not joins:
            monkeypatch.setattr(Sequential, "joins_skip", lambda self, skip: False)
        manual_seed(1)
        net = Sequential([basic_block(8, cout, stride, dtype)] + ([ReLU()] if relu else []))
        randomize(net)
        x = rand((4, 8, 12, 12), seed=3, dtype=dtype)
        out = net.forward(x, training=True)
        dx = net.backward(rand(out.shape, seed=4, dtype=dtype))
        evaluated = net.forward(x)
        monkeypatch.undo()
        return out, dx, evaluated, {k: v.copy() for k, v in net.grads.items()}, net

    out, dx, evaluated, grads, net = run(True)
    assert net.layers[0]._cache[-1]
    assert [s.kind for s in net._steps] == (["residual_relu"] if relu else ["layer"])
    out2, dx2, evaluated2, grads2, net2 = run(False)
    assert not net2.layers[0]._cache[-1]
    for a, b in [(out, out2), (dx, dx2), (evaluated, evaluated2)]:
        assert a.dtype == b.dtype == dtype
        np.testing.assert_array_equal(a, b)
    assert grads.keys() == grads2.keys()
    for key in grads:
        np.testing.assert_array_equal(grads[key], grads2[key])


@pytest.mark.parametrize("dtype", [np.float32, F64])
@pytest.mark.parametrize("algorithm", ["winograd", "im2col"])
def test_an_identity_shortcuts_gradient_is_added_where_the_bodys_first_convolution_writes_dx(
        monkeypatch, algorithm, dtype):
    """Residual -> ReLU with an identity shortcut: its gradient through the ReLU is handed to the
    body's first Conv2D (``shortcut=``), which adds it as it writes its input gradient (Winograd:
    in its input transform's adjoint; im2col: after it); the block's input gradient and every
    parameter's gradient equal, bit for bit, those of the body's backward and the sum after it
    (a body whose class replaced ``backward``, and may not take ``shortcut``, is never handed
    it)."""
    from cnn_im2col.conv import winograd

    class OwnBackward(Sequential):
        def backward(self, dout, input_grad=True):
            return super().backward(dout, input_grad)

    def run(fused):
        handed = []
        backward = winograd.backward
        monkeypatch.setattr(winograd, "backward", lambda *a, **k: (
            handed.append(k.get("shortcut") is not None), backward(*a, **k))[1])
        manual_seed(4)
        body = (Sequential if fused else OwnBackward)([
            Conv2D(8, 8, 3, padding=1, bias=None, algorithm=algorithm, dtype=dtype),
            BatchNorm2D(8, dtype=dtype), ReLU(),
            Conv2D(8, 8, 3, padding=1, bias=None, dtype=dtype), BatchNorm2D(8, dtype=dtype)])
        net = Sequential([Residual(body), ReLU()])
        randomize(net)
        x = rand((4, 8, 12, 12), seed=5, dtype=dtype)
        out = net.forward(x, training=True)
        dx = net.backward(rand(out.shape, seed=6, dtype=dtype))
        monkeypatch.undo()
        return dx, {k: v.copy() for k, v in net.grads.items()}, handed

    dx, grads, handed = run(True)
    assert handed == ([False, True] if algorithm == "winograd" else [False])
    dx2, grads2, handed2 = run(False)
    assert not any(handed2)
    assert dx.dtype == dx2.dtype == dtype
    np.testing.assert_array_equal(dx, dx2)
    for key in grads:
        np.testing.assert_array_equal(grads[key], grads2[key])


def test_a_body_that_cannot_join_the_shortcut_adds_it_after():
    """The join stays after the body where its last step is not a BatchNorm2D, or where the
    shortcut's output is not in the normalisation's dtype; the numbers are the same formula."""
    manual_seed(2)
    x = rand((2, 4, 6, 6), dtype=np.float32)
    conv_last = Residual(Sequential([Conv2D(4, 4, 3, padding=1), ReLU(),
                                     Conv2D(4, 4, 3, padding=1)]))
    y = Sequential([conv_last, ReLU()]).forward(x, training=True)
    assert not conv_last._cache[-1]
    np.testing.assert_array_equal(y, np.maximum(conv_last.body.forward(x) + x, 0))
    other_dtype = Residual(Sequential([Conv2D(4, 4, 3, padding=1, dtype=F64),
                                       BatchNorm2D(4, dtype=np.float32)]))
    y = other_dtype.forward(x.astype(F64), training=True)
    assert not other_dtype._cache[-1] and y.dtype == F64


def randomize(layer, seed=7):
    """Random biases and BatchNorm affine parameters: zero biases after a ReLU that output zeros put
    the next ReLU exactly on its kink, where finite differences see half a derivative."""
    rng = np.random.default_rng(seed)
    for value in layer.params.values():
        value += 0.3 * rng.standard_normal(value.shape)


def block_in_channels(block):
    from cnn_im2col.containers import leaves
    return next(leaf for _, leaf in leaves(block) if isinstance(leaf, Conv2D)).in_channels


def test_a_whole_network_gradient_checks_and_fuses_inside_bodies():
    manual_seed(0)
    body = Sequential([Conv2D(2, 2, 3, padding=1, dtype=F64), ReLU(), MaxPool2D(2),
                       Conv2D(2, 2, 3, padding=1, dtype=F64)])
    net = Sequential([Residual(body, Sequential([MaxPool2D(2)])), ReLU(), Flatten(),
                      Dense(2 * 3 * 3, 3, dtype=F64)])
    randomize(net)
    check_layer(net, rand((2, 2, 6, 6)), directional=True)
    net.forward(rand((2, 2, 6, 6)))
    assert [s.kind for s in body._steps] == ["conv_relu_pool", "layer"]


# ------------------------------------------------------------------------------- PyTorch
def torch_modules():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class TorchResidual(nn.Module):
        def __init__(self, body, shortcut=None):
            super().__init__()
            self.body = body
            if shortcut is not None:
                self.shortcut = shortcut
            self.has_shortcut = shortcut is not None

        def forward(self, x):
            return self.body(x) + (self.shortcut(x) if self.has_shortcut else x)

    class TorchConcat(nn.Module):
        def __init__(self, branches):
            super().__init__()
            self.branches = nn.ModuleList(branches)

        def forward(self, x):
            return torch.cat([b(x) for b in self.branches], dim=1)

    class TorchGate(nn.Module):
        def __init__(self, gate):
            super().__init__()
            self.gate = gate

        def forward(self, x):
            return x * self.gate(x)

    def basic(cin, cout, stride):
        body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                             nn.BatchNorm2d(cout))
        shortcut = None
        if stride != 1 or cin != cout:
            shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                     nn.BatchNorm2d(cout))
        return TorchResidual(body, shortcut)

    def fire(cin, squeeze, expand):
        return nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU(), TorchConcat([
            nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())]))

    def se(channels, squeeze):
        return TorchGate(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, squeeze, 1),
                                       nn.ReLU(), nn.Conv2d(squeeze, channels, 1),
                                       nn.Hardsigmoid()))

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), basic(8, 8, 1), nn.ReLU(),
                        basic(8, 16, 2), nn.ReLU(), fire(16, 4, 8), se(16, 4),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    return torch, net


@pytest.mark.parametrize("training", [False, True])
def test_equal_to_pytorch_forward_backward_and_state_dict_both_ways(training):
    torch, theirs = torch_modules()
    manual_seed(0)
    ours = small_net(F64)
    theirs = theirs.double()
    # ours -> theirs, strictly (every key of the same structure, no extra)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()},
                           strict=True)
    theirs.train(training)
    x = rand((4, 3, 12, 12), seed=5)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = theirs(xt)
    y = ours.forward(x, training=training)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    r = rand(y.shape, seed=6)
    yt.backward(torch.from_numpy(r))
    dx = ours.backward(r)
    # PyTorch 2.13's Hardsigmoid backward multiplies by 1/6 rounded to float32 even in float64 (a
    # relative 3e-8 below it); ours is 1/6 in the input's precision
    assert relative_error(dx, xt.grad.numpy()) < 1e-7
    grads = ours.grads
    for name, p in theirs.named_parameters():
        assert relative_error(grads[name], p.grad.numpy()) < 1e-7, name
    # theirs -> ours: running statistics included
    other = small_net(F64)
    other.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()}, strict=True)
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[key], value.numpy(), err_msg=key)


# ------------------------------------------------------------------------------- files, config
def net_with_dropout():
    manual_seed(1)
    net = Sequential([*small_net().layers[:-1], Dropout(0.3, seed=4), Dense(16, 5)])
    assert isinstance(net.layers[-3], Flatten)
    return net


def test_config_and_model_files_round_trip(tmp_path):
    net = net_with_dropout()
    x = rand((8, 3, 10, 10), dtype=np.float32)
    net.fit(x, np.arange(8) % 5, epochs=1, batch_size=4, optimizer=SGD(lr=0.01),
            loss=SoftmaxCrossEntropy(), progress=False, log=None)
    again = Sequential.from_config(net.config())
    assert again.config() == net.config()
    net.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    assert sorted(loaded.state_dict()) == sorted(net.state_dict())
    assert "7.gate.1.weight" in net.params and "4.shortcut.1.running_var" in net.buffers
    assert [k.split(".")[0] for k in net._generators()] == ["10"]  # Dropout's generator


def test_an_interrupted_nested_network_resumes_to_the_uninterrupted_weights(tmp_path):
    x = rand((24, 3, 10, 10), dtype=np.float32)
    y = np.arange(24) % 5
    settings = dict(epochs=2, batch_size=8, loss=SoftmaxCrossEntropy(), seed=3, progress=False,
                    log=None)
    whole = net_with_dropout()
    whole.fit(x, y, optimizer=Adam(1e-2), **settings)
    steps = []
    part = net_with_dropout()
    with pytest.raises(TrainingInterrupted):
        part.fit(x, y, optimizer=Adam(1e-2), checkpoint=tmp_path / "c.npz",
                 should_stop=lambda: steps.append(1) or len(steps) == 4, **settings)
    ckpt = Sequential.load_checkpoint(tmp_path / "c.npz")
    assert (ckpt.state["epoch"], ckpt.state["batch"]) == (1, 1)  # 1 epoch and 1 batch done
    ckpt.model.fit(x, y, optimizer=ckpt.optimizer, resume=ckpt.state, **settings)
    for key, value in whole.state_dict().items():
        np.testing.assert_array_equal(ckpt.model.state_dict()[key], value, err_msg=key)


def test_summary_shows_the_nesting_with_state_dict_paths():
    text = small_net().summary((3, 12, 12))
    lines = text.splitlines()
    assert any(line.split()[:2] == ["4.shortcut.0", "Conv2D(8,"] for line in lines)
    assert any(line.split()[:2] == ["6.2.branches.1.0", "Conv2D(4,"] for line in lines)
    assert any(line.split()[:2] == ["7.gate.4", "HardSigmoid()"] for line in lines)
    total = small_net().num_params()
    assert f"Total params: {total:,}" in text
    # the nested rows are indented under their container
    row = next(line for line in lines if line.startswith("4.body.0"))
    assert "    Conv2D(8, 16, 3" in row


class OneSampleGradient(ReLU):
    """A user's layer whose backward returns the gradient of the first sample only."""

    def backward(self, dout, input_grad=True):
        return super().backward(dout)[:1]


@pytest.mark.parametrize("make, owner, branch", [
    (lambda: Residual(OneSampleGradient()), "Residual", "body"),
    (lambda: Concat([ReLU(), OneSampleGradient()]), "Concat", "branch 1"),
    (lambda: Gate(OneSampleGradient()), "Gate", "gate"),
])
def test_a_branch_gradient_of_the_wrong_shape_is_refused_not_broadcast(make, owner, branch):
    """The join names the branch instead of broadcasting one sample's gradient over the batch."""
    block = make()
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 4)).astype(np.float32)
    y = block.forward(x, training=True)
    message = (rf"{owner}: the {branch}'s backward returned a gradient of shape \(1, 2, 4, 4\); "
               r"its input had shape \(3, 2, 4, 4\)")
    with pytest.raises(ValueError, match=message):
        block.backward(np.ones_like(y))


def test_training_a_residual_network_lowers_its_loss():
    manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3, 8, 8)).astype(np.float32)
    y = (x[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64) + 2 * (x[:, 1].mean(axis=(1, 2)) > 0)
    net = Sequential([Conv2D(3, 8, 3, padding=1), ReLU(), basic_block(8, 8, 1), ReLU(),
                      basic_block(8, 16, 2), ReLU(), GlobalAvgPool2D(), Dense(16, 4)])
    before = net.evaluate(x, y, loss=SoftmaxCrossEntropy())["loss"]
    net.fit(x, y, epochs=15, batch_size=16, optimizer=SGD(lr=0.05, momentum=0.9),
            loss=SoftmaxCrossEntropy(), progress=False, log=None)
    after = net.evaluate(x, y, loss=SoftmaxCrossEntropy())
    assert after["loss"] < 0.5 * before and after["accuracy"] > 0.8


# ----------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: Residual(Conv2D(3, 4, 3, padding=1)),
         r"Residual: for an input of shape \(3, 8, 8\) the body gives \(4, 8, 8\) and the "
         r"identity shortcut \(3, 8, 8\).*projection shortcut"),
        (lambda: Residual(Conv2D(3, 4, 3, padding=1), Conv2D(3, 4, 1, stride=2)),
         r"Residual: .*body gives \(4, 8, 8\) and the shortcut \(4, 4, 4\)"),
        (lambda: Concat([Conv2D(3, 4, 3, padding=1), Conv2D(3, 4, 3)]),
         r"Concat: .*branches give \(4, 8, 8\), \(4, 6, 6\).*every axis but the first"),
        (lambda: Gate(Conv2D(3, 2, 1)),
         r"Gate: .*the gate gives \(2, 8, 8\).*broadcast"),
        (lambda: Residual(Conv2D(5, 5, 3, padding=1)),
         r"Residual: its body cannot take an input of shape \(3, 8, 8\): Conv2D\(5, 5, 3"),
    ],
)
def test_shapes_that_do_not_rejoin_are_refused_naming_both(make, pattern):
    block = make()
    with pytest.raises(ValueError, match=pattern):
        block.output_shape((3, 8, 8))
    with pytest.raises(ValueError, match=pattern):
        block.forward(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"Sequential: layer 0 Residual|Concat|Gate"):
        Sequential([block], input_shape=(3, 8, 8))


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda: Residual(ReLU), TypeError, r"Residual: body must be a layer.*the class ReLU"),
        (lambda: Residual(ReLU(), shortcut="conv"), TypeError, r"Residual: shortcut .*'conv'"),
        (lambda: Concat(ReLU()), TypeError, r"Concat: branches must be a list of layers"),
        (lambda: Concat([ReLU()]), ValueError, r"Concat: branches must hold at least 2 .* got 1"),
        (lambda: Gate(None), TypeError, r"Gate: gate must be a layer .* got None"),
    ],
)
def test_bad_children_are_refused(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_backward_before_forward_and_bad_configs():
    with pytest.raises(RuntimeError, match=r"Residual: backward\(\) called before forward"):
        Residual(ReLU()).backward(np.zeros((1, 1, 2, 2)))
    good = Sequential([Residual(Sequential([ReLU()]))]).config()
    bad = {"layers": [{"class": "Residual", "config": {"body": {"class": "Nope", "config": {}}}}]}
    with pytest.raises(ValueError, match=r"config: layer 0, body has unknown class 'Nope'"):
        Sequential.from_config(bad)
    bad = {"layers": [{"class": "Residual", "config": {"bod": good["layers"][0]}}]}
    with pytest.raises(ValueError, match=r"config: layer 0: Residual takes 'body' and 'shortcut', "
                                         r"got keys \['bod'\]"):
        Sequential.from_config(bad)
    with pytest.raises(TypeError, match=r"Residual.from_config needs build="):
        Residual.from_config(good["layers"][0]["config"])


def test_nan_input_is_refused_at_the_container():
    x = np.zeros((1, 2, 4, 4), np.float32)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"Residual: x contains NaN"):
        Residual(Sequential([ReLU()])).forward(x)


def test_the_steps_inside_a_body_are_fused_and_equal_to_the_layers_one_by_one():
    manual_seed(2)
    layers = [Conv2D(3, 4, 3, padding=1), ReLU(), MaxPool2D(2)]
    fused = Residual(Sequential(layers), Sequential([Conv2D(3, 4, 2, stride=2)]))
    x = rand((2, 3, 8, 8), dtype=np.float32)
    y = fused.forward(x, training=True)
    assert [type(s) for s in fused.body._steps] == [blocks.ConvReLUPool]
    h = x
    for layer in layers:
        h = layer.forward(h, training=True)
    np.testing.assert_allclose(y, h + fused.shortcut.layers[0].forward(x), rtol=1e-6, atol=1e-6)
