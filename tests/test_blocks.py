"""blocks: a fused stack computes exactly what the same layers compute one by one (outputs, every
layer's grads, the input gradient); which layers make which step is tests/test_planning.py's."""

import numpy as np
import pytest
from conftest import tolerance
from hypothesis import given
from hypothesis import strategies as st
from small_nets import MyReLU, lenet

from cnn_im2col import blocks, conv, inference_blocks
from cnn_im2col.containers import Residual
from cnn_im2col.conv import winograd
from cnn_im2col.gradcheck import check_layer
from cnn_im2col.layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    ReLU,
)
from cnn_im2col.model import Sequential
from cnn_im2col.planning import plan


def unfused(layers, x, dout, training=True):
    """Every layer's own forward and backward, one after the other."""
    for layer in layers:
        x = layer.forward(x, training=training)
    out = x
    for layer in reversed(layers):
        dout = layer.backward(dout)
    return out, dout, [{k: v.copy() for k, v in layer.grads.items()} for layer in layers]


@st.composite
def stacks(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**16))
    bias = draw(st.sampled_from(["tied", "untied", None]))
    first = draw(st.sampled_from(["conv", "pool"]))
    layers = (
        [Conv2D(2, 4, 3, padding=1, bias=bias, input_size=(6, 6), dtype=dtype, seed=seed)]
        if first == "conv"
        else [AvgPool2D(1)]
    )
    channels = 4 if first == "conv" else 2
    layers += [
        ReLU(),
        MaxPool2D(2, stride=draw(st.sampled_from([1, 2]))),
        Conv2D(channels, 2, 2, dilation=2, dtype=dtype, seed=seed + 1),
        ReLU(),
        Flatten(),
    ]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((draw(st.integers(1, 3)), 2, 6, 6)).astype(dtype)
    if draw(st.booleans()):  # many ties
        x = rng.integers(-2, 3, x.shape).astype(dtype)
    return layers, x, rng


@given(case=stacks())
def test_fused_stack_equals_its_layers_one_by_one(case):
    layers, x, rng = case
    rtol, atol = tolerance(x.dtype)
    model = Sequential(layers)
    out = model.forward(x, training=True)
    dout = rng.standard_normal(out.shape).astype(x.dtype)
    dx = model.backward(dout)
    fused_grads = [{k: v.copy() for k, v in layer.grads.items()} for layer in layers]
    ref_out, ref_dx, ref_grads = unfused(layers, x, dout)
    np.testing.assert_allclose(out, ref_out, rtol, atol)
    np.testing.assert_allclose(dx, ref_dx, rtol, atol)
    for got, want in zip(fused_grads, ref_grads):
        assert got.keys() == want.keys()
        for key in got:
            np.testing.assert_allclose(got[key], want[key], rtol, atol)
    np.testing.assert_allclose(model.forward(x), ref_out, rtol, atol)  # inference too


def test_fused_stack_gradcheck_float64_and_input_grad_false():
    model = Sequential(lenet(np.float64))
    x = np.random.default_rng(0).standard_normal((2, 1, 14, 14))
    check_layer(model, x)
    model.forward(x, training=True)
    assert model.backward(np.ones((2, 3)), input_grad=False) is None
    two = Sequential(
        [Conv2D(1, 2, 3, dtype=np.float64, seed=0), ReLU()]
    )  # one fused block, first and last
    two.forward(x, training=True)
    assert two.backward(np.ones((2, 2, 12, 12)), input_grad=False) is None
    assert two[0].grads["weight"].shape == (2, 1, 3, 3)


def test_users_layers_and_the_protocol_keep_working():
    class Scale:
        """A user's layer that is not a Layer subclass."""

        params, grads = {}, {}

        def forward(self, x, training=False):
            return 2 * x

        def backward(self, dout):
            return 2 * dout

        def output_shape(self, shape):
            return shape

    layers = [
        Conv2D(1, 2, 3, dtype=np.float64, seed=0),
        Scale(),
        ReLU(),
        MaxPool2D(2),
        MyReLU(),
        Flatten(),
    ]
    model = Sequential(layers)
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8))
    check_layer(model, x)
    out = model.forward(x, training=True)
    dout = np.ones_like(out)
    dx = model.backward(dout)
    ref_out, ref_dx, _ = unfused(layers, x, dout)
    np.testing.assert_allclose(out, ref_out)
    np.testing.assert_allclose(dx, ref_dx)


def test_a_relu_fused_into_a_pool_says_so_if_its_backward_is_called_alone():
    model = Sequential([AvgPool2D(1), ReLU(), MaxPool2D(2)])
    model.forward(np.ones((1, 1, 4, 4)))
    with pytest.raises(RuntimeError, match=r"ReLU\(\): backward\(\) called before forward\(\)"):
        model[1].backward(np.ones((1, 1, 4, 4)))


@st.composite
def conv_relu_pools(draw, winograd_conv=False):
    """Conv2D -> ReLU -> MaxPool2D of any stride, padding, dilation, groups (depthwise included),
    bias mode and dtype, with pools that tile, overlap or pad; batches of several slices.
    ``winograd_conv``: 3x3 or 5x5, stride 1, dilation 1 (what Winograd computes), not depthwise
    (its own kernels)."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**16))
    groups = draw(st.sampled_from([1, 2] if winograd_conv else [1, 2, 4]))
    in_channels = groups * (2 if winograd_conv else draw(st.integers(1, 2)))
    out_channels = (
        groups
        if draw(st.booleans()) and groups == in_channels
        else groups * draw(st.integers(1, 3))
    )
    size = draw(st.integers(5, 9))
    if winograd_conv:
        kernel, stride, dilation = draw(st.sampled_from([3, 5])), 1, 1
    else:
        kernel, stride, dilation = [draw(st.integers(1, n)) for n in (3, 2, 2)]
    conv = Conv2D(
        in_channels,
        out_channels,
        kernel,
        stride=stride,
        padding=draw(st.integers(0, 1)),
        dilation=dilation,
        groups=groups,
        bias=draw(st.sampled_from(["tied", "untied", None])),
        input_size=(size, size),
        dtype=dtype,
        seed=seed,
    )
    oh = conv.output_shape((in_channels, size, size))[1]
    kernel = draw(st.integers(1, min(3, oh)))
    pool = MaxPool2D(
        kernel, stride=draw(st.integers(1, kernel)), padding=draw(st.integers(0, kernel // 2))
    )
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((draw(st.integers(1, 9)), in_channels, size, size)).astype(dtype)
    if draw(st.booleans()):  # many ties, and zeros at the ReLU
        x = rng.integers(-1, 2, x.shape).astype(dtype)
    return [conv, ReLU(), pool, Flatten()], x, rng


@pytest.mark.parametrize("strategy", ["any", "winograd"])
@given(data=st.data(), training=st.booleans())
def test_fused_conv_relu_pool_equals_its_layers_one_by_one(strategy, data, training):
    with pytest.MonkeyPatch.context() as patch:
        if strategy == "winograd":  # "auto" takes it at any size and channel count
            patch.setattr(conv, "_FEW_CHANNELS_DIRECT", False)
            patch.setattr(conv, "AUTO_MIN_CHANNELS", 1)
            patch.setattr(conv, "AUTO_MIN_SIDE", 1)
            patch.setattr(conv, "AUTO_MIN_PIXELS", 1)
        case = data.draw(conv_relu_pools(winograd_conv=strategy == "winograd"))
        check_fused_conv_relu_pool(case, training)
    # which algorithm ran: Winograd when forced, im2col (or the depthwise or few-channel direct
    # kernels) at these small channel counts otherwise
    assert isinstance(case[0][0]._cache, winograd.WinogradCache) == (strategy == "winograd")


def check_fused_conv_relu_pool(case, training):
    layers, x, rng = case
    assert [s.kind for s in plan(layers)] == ["conv_relu_pool", "layer"]
    rtol, atol = tolerance(x.dtype)
    model = Sequential(layers)
    out = model.forward(x, training=training)  # backward after an inference forward rebuilds im2col
    dout = rng.standard_normal(out.shape).astype(x.dtype)
    dx = model.backward(dout)
    fused_grads = [{k: v.copy() for k, v in layer.grads.items()} for layer in layers]
    ref_out, ref_dx, ref_grads = unfused(layers, x, dout, training=training)
    np.testing.assert_array_equal(out, ref_out)  # the same kernels on the same values: bit for bit
    np.testing.assert_allclose(dx, ref_dx, rtol, atol)
    for got, want in zip(fused_grads, ref_grads):
        assert got.keys() == want.keys()
        for key in got:
            np.testing.assert_allclose(got[key], want[key], rtol, atol)


def test_fused_conv_relu_pool_gradcheck_float64_and_bad_dout():
    model = Sequential(
        [
            Conv2D(2, 3, 3, padding=1, dtype=np.float64, seed=0),
            ReLU(),
            MaxPool2D(3, stride=2, padding=1),
        ]
    )
    x = np.random.default_rng(2).standard_normal((3, 2, 7, 7))
    check_layer(model, x)
    out = model.forward(x, training=True)
    with pytest.raises(
        ValueError, match=r"MaxPool2D\(3, stride=2, padding=1\): dout must have the output's shape"
    ):
        model.backward(np.ones((3, 3, 1, 1)))
    with pytest.raises(ValueError, match=r"MaxPool2D.*finite|MaxPool2D.*NaN"):
        model.backward(np.full(out.shape, np.nan))
    with pytest.raises(ValueError, match=r"MaxPool2D\(5\).*window"):
        Sequential([Conv2D(1, 1, 3, seed=0), ReLU(), MaxPool2D(5)]).forward(np.ones((1, 1, 6, 6)))


# ------------------------------------------------------------------------ validate once, plan once


def count_calls_into_shapes(monkeypatch):
    """Wrap every function of ``shapes`` where another module of the package imported it; return
    the list that the wrappers append each call's name to (calls inside ``shapes`` not counted)."""
    import inspect
    import sys

    from cnn_im2col import shapes

    calls = []
    for module in list(sys.modules.values()):
        if not getattr(module, "__name__", "").startswith("cnn_im2col") or module is shapes:
            continue
        for name, value in list(vars(module).items()):
            if inspect.isfunction(value) and value.__module__ == shapes.__name__:

                def counted(*args, _function=value, **kwargs):
                    calls.append(_function.__name__)
                    return _function(*args, **kwargs)

                monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("training", [True, False])
def test_a_forward_pass_visits_the_validation_module_at_most_once_per_layer(monkeypatch, training):
    from cnn_im2col.architectures import default_model

    model = default_model(seed=0)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    calls = count_calls_into_shapes(monkeypatch)
    model.forward(x, training=training)
    assert calls.count("as_float_array") == 1  # x, where it enters
    assert len(calls) <= len(model.layers), calls


def test_a_second_forward_of_the_same_shape_does_not_recompute_geometry(monkeypatch):
    from cnn_im2col.architectures import default_model

    model = default_model(seed=0)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    first = model.forward(x, training=True)
    calls = count_calls_into_shapes(monkeypatch)
    second = model.forward(x, training=True)
    # the input's one check, and the scan of the output for an overflow inside the network (a
    # stack asks whether it is the outermost, which scans)
    assert sorted(calls) == ["as_float_array", "finite_scans_on", "finite_scans_skipped",
                             "is_finite"]
    np.testing.assert_array_equal(model.forward(x), model.forward(x))
    assert first.shape == second.shape
    calls.clear()
    model.forward(x[:2])  # a new batch size: a new plan for each layer that keeps one
    assert 0 < len(calls) <= len(model.layers)


def test_a_layer_alone_checks_its_input_and_a_new_shape_gets_a_new_plan():
    conv = Conv2D(2, 3, 3)
    with pytest.raises(ValueError, match=r"Conv2D\(2, 3, 3\): x must have 2 channels"):
        conv.forward(np.ones((1, 1, 5, 5)))
    with pytest.raises(ValueError, match=r"Conv2D\(2, 3, 3\): x contains NaN or Inf"):
        conv.forward(np.full((1, 2, 5, 5), np.nan))
    assert conv.forward(np.ones((1, 2, 5, 5))).shape == (1, 3, 3, 3)
    assert conv.forward(np.ones((2, 2, 6, 6))).shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"Conv2D\(2, 3, 3\): kernel size \(3, 3\) is larger"):
        conv.forward(np.ones((1, 2, 2, 2)))
    model = Sequential([Flatten(), Dense(4, 2)])
    with pytest.raises(
        ValueError, match=r"Dense\(4, 2\): x must have shape \(N, 4\), got \(1, 9\)"
    ):
        model.forward(np.ones((1, 1, 3, 3)))


# ---------------------------------------------------------------- Residual -> ReLU, one pass
def assert_fused_equals_plain(fused, plain, x, rng, rtol=0.0, atol=0.0):
    """A model of fused steps against the same model unfused, in training and at inference: the
    outputs bit for bit, the input and parameter gradients (of a ``rng``-drawn dout) within
    ``rtol``/``atol`` (0: bit for bit too), the running statistics bit for bit."""
    for training in (True, False):
        out = fused.forward(x, training=training)
        np.testing.assert_array_equal(out, plain.forward(x, training=training))
        dout = rng.standard_normal(out.shape).astype(x.dtype)
        np.testing.assert_allclose(fused.backward(dout), plain.backward(dout), rtol, atol)
        for key, grad in plain.grads.items():
            np.testing.assert_allclose(fused.grads[key], grad, rtol, atol)
        for key, value in plain.buffers.items():
            np.testing.assert_array_equal(fused.buffers[key], value)


def residual_net(relu_cls, dtype):
    body = Sequential([Conv2D(4, 4, 3, padding=1, dtype=dtype, seed=1), ReLU(),
                       Conv2D(4, 4, 3, padding=1, dtype=dtype, seed=2)])
    projection = Residual(Sequential([Conv2D(4, 6, 3, stride=2, padding=1, dtype=dtype, seed=3)]),
                          Sequential([Conv2D(4, 6, 1, stride=2, dtype=dtype, seed=4)]))
    return Sequential([Conv2D(3, 4, 3, padding=1, dtype=dtype, seed=0), relu_cls(),
                       Residual(body), relu_cls(), projection, relu_cls(), Flatten()])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_residual_and_its_relu_run_as_one_pass_with_the_layers_numbers(dtype):
    fused, plain = residual_net(ReLU, dtype), residual_net(MyReLU, dtype)
    assert [s.kind for s in fused._planned_steps()] == [
        "conv_relu", "residual_relu", "residual_relu", "layer"]
    assert "residual_relu" not in [s.kind for s in plain._planned_steps()]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, 8, 8)).astype(dtype)
    assert_fused_equals_plain(fused, plain, x, rng)  # bit for bit
    np.testing.assert_array_equal(fused.predict(x), plain.predict(x))
    assert [s.kind for s in fused._inference[0]] == [
        "conv_relu", "residual_relu", "residual_relu", "layer"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu_cls", [ReLU, MyReLU])
@pytest.mark.parametrize("strategy", ["auto", "winograd"])
def test_predict_joins_a_residual_in_its_last_convolution_slice_by_slice(
        monkeypatch, dtype, relu_cls, strategy):
    """At inference a Residual hands its shortcut (x, or the projection's output) and its ReLU to
    the body, whose last Conv2D adds it to each batch slice as it is written (``then``): no join
    of its own, the same numbers as forward bit for bit, the identity and the projection block,
    a body of one step (checked where it enters) and of two, with the ReLU (ResidualReLU) and
    without (a user's ReLU after it)."""
    from cnn_im2col import activations

    if strategy == "winograd":  # "auto" takes it at any size and channel count
        monkeypatch.setattr(conv, "_FEW_CHANNELS_DIRECT", False)
        monkeypatch.setattr(conv, "AUTO_MIN_CHANNELS", 1)
        monkeypatch.setattr(conv, "AUTO_MIN_SIDE", 1)
        monkeypatch.setattr(conv, "AUTO_MIN_PIXELS", 1)
    joins = []
    add_into = activations.add_into
    monkeypatch.setattr(inference_blocks, "add_into",
                        lambda y, b, r: joins.append(r) or add_into(y, b, r))
    monkeypatch.setattr(inference_blocks, "add_relu", None)  # the join after the step: not taken
    model = residual_net(relu_cls, dtype)
    x = np.random.default_rng(4).standard_normal((5, 3, 8, 8)).astype(dtype)
    got = model.predict(x)
    np.testing.assert_array_equal(got, model.forward(x))
    assert joins and set(joins) == {relu_cls is ReLU}  # each slice of both blocks, in the conv
    with pytest.raises(ValueError, match=r"Conv2D\(3, 4, 3, padding=1.*channels"):
        model.predict(x[:, :2])


def test_a_shortcut_of_another_dtype_or_layout_is_joined_after_the_last_step():
    conv_layer = Conv2D(3, 3, 3, padding=1, seed=0)
    x = np.random.default_rng(5).standard_normal((2, 3, 5, 5)).astype(np.float32)
    y = conv_layer.forward(x)
    for skip in (x.astype(np.float64), np.repeat(x, 2, axis=-1)[..., ::2]):
        for relu in (False, True):
            got = inference_blocks.infer_with_skip(blocks.LayerStep(conv_layer, 0), x, skip, relu,
                                                   True)
            want = np.add(y, skip, dtype=np.result_type(y, skip))
            np.testing.assert_array_equal(got, np.maximum(want, 0) if relu else want)
            assert got.dtype == np.result_type(y, skip)


def test_a_fused_residual_relu_passes_the_gradient_check_and_checks_dout():
    model = residual_net(ReLU, np.float64)
    check_layer(model, np.random.default_rng(1).standard_normal((2, 3, 6, 6)))
    step = model._planned_steps()[1]
    step.run(np.ones((2, 4, 6, 6)), True)
    with pytest.raises(ValueError,
                       match=r"ReLU\(\): dout must have the output's shape \(2, 4, 6, 6\)"):
        step.backward(np.ones((2, 4, 6, 5)))


# ------------------------------------------------------------- BatchNorm2D -> ReLU, one pass
def norm_net(relu_cls, dtype, affine=True):
    return Sequential([Conv2D(3, 4, 3, padding=1, dtype=dtype, seed=0),
                       BatchNorm2D(4, affine=affine, dtype=dtype), relu_cls(),
                       Conv2D(4, 4, 3, dtype=dtype, seed=1), Flatten()])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_a_batch_norm_and_its_relu_run_as_one_pass_with_the_layers_numbers(dtype, affine):
    fused, plain = norm_net(ReLU, dtype, affine), norm_net(MyReLU, dtype, affine)
    assert [s.kind for s in fused._planned_steps()] == [
        "layer", "batch_norm_relu", "layer", "layer"]
    rtol, atol = (1e-6, 1e-6) if dtype == np.float32 else (1e-13, 1e-13)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 6, 6)).astype(dtype)
    assert_fused_equals_plain(fused, plain, x, rng, rtol, atol)


def test_a_fused_batch_norm_relu_passes_the_gradient_check():
    model = norm_net(ReLU, np.float64)
    x = np.random.default_rng(2).standard_normal((3, 3, 5, 5))
    check_layer(model, x)


def test_each_fused_step_checks_its_input_as_its_layers_would():
    """A fused step refuses bad input with the message of the layer whose check it fails (for
    ReLU -> MaxPool2D the pool's: a ReLU takes any shape)."""
    relu_pool = Sequential([ReLU(), MaxPool2D(2), Flatten()])
    conv_relu = Sequential([Conv2D(3, 4, 3), ReLU(), Flatten()])
    assert relu_pool._planned_steps()[0].kind == "relu_pool"
    assert conv_relu._planned_steps()[0].kind == "conv_relu"
    with pytest.raises(ValueError, match=r"MaxPool2D\(2\): x must be 4-D, got 3-D"):
        relu_pool.forward(np.ones((2, 3, 4)), training=True)
    with pytest.raises(ValueError, match=r"Conv2D\(3, 4, 3\): x must be 4-D, got 3-D"):
        conv_relu.forward(np.ones((2, 3, 4)), training=True)


# ------------------------------------------- inference: a pooled first layer, Dense -> activation
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pool", [2, 3])
@pytest.mark.parametrize("channels", [3, 5])
def test_predict_pools_a_direct_first_layer_from_its_sums_and_fuses_dense_activations(
        monkeypatch, dtype, pool, channels):
    """predict runs a first Conv2D -> ReLU -> MaxPool2D(2) of a few input channels through
    ``direct.forward_relu_pool2`` (any other pool, or a convolution of more channels, through the
    layers' kernels, pooled without an argmax), a Dense -> ReLU as one step, and leaves Dropout
    out: the same numbers as forward at inference, bit for bit."""
    from cnn_im2col.conv import direct
    from cnn_im2col.layers import Dropout

    calls = []
    pooled = direct.forward_relu_pool2
    monkeypatch.setattr(direct, "forward_relu_pool2",
                        lambda *args: calls.append(1) or pooled(*args))
    side = 11 // 2 if pool == 2 else (11 - 3) // 2 + 1
    model = Sequential([Conv2D(channels, 6, 3, padding=1, dtype=dtype, seed=0), ReLU(),
                        MaxPool2D(pool, stride=2), Flatten(),
                        Dense(6 * side * side, 7, dtype=dtype, seed=1), ReLU(), Dropout(0.5),
                        Dense(7, 3, dtype=dtype, seed=2)])
    x = np.random.default_rng(0).standard_normal((5, channels, 11, 11)).astype(dtype)
    np.testing.assert_array_equal(model.predict(x), model.forward(x, training=False))
    steps, _ = model._inference
    assert [s.kind for s in steps] == ["conv_relu_pool", "layer", "dense_activation", "layer"]
    assert len(calls) == (pool == 2 and channels == 3)
    with pytest.raises(ValueError, match=rf"Conv2D\({channels}, 6, 3, padding=1.*channels"):
        model.predict(x[:, :2])
    with pytest.raises(RuntimeError, match=r"DenseActivation\(.*\) is an inference step"):
        steps[2].run(np.ones((2, 6 * side * side), dtype), True)
    with pytest.raises(RuntimeError, match=r"is an inference step: it has no backward"):
        steps[2].backward(np.zeros(1))
