"""layers: the layer protocol, gradients in float64, config round trips, seeds and validation."""

import json
import re

import numpy as np
import pytest
from conftest import tolerance

from cnn_im2col.conv import winograd
from cnn_im2col.gradcheck import check_layer
from cnn_im2col.layers import (
    LAYERS,
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    HardSigmoid,
    HardSwish,
    Identity,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    ReLU6,
    Sigmoid,
    Softmax,
    Tanh,
)

F64 = np.float64


def distinct_values(shape, seed=0):
    """Standard-normal-sized values with no ties (max pooling has a unique winner per window)."""
    size = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(size) / size - 0.5).reshape(shape) * 4


def randomise_params(layer, seed=1):
    rng = np.random.default_rng(seed)
    for value in layer.params.values():
        value[...] = rng.standard_normal(value.shape)


@pytest.mark.parametrize(
    "layer, x_shape",
    [
        (Conv2D(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), dtype=F64, seed=0), (2, 2, 6, 5)),
        (
            Conv2D(
                2,
                3,
                (3, 2),
                stride=(1, 2),
                padding=(0, 1),
                bias="untied",
                input_size=(5, 6),
                dtype=F64,
                seed=0,
            ),
            (2, 2, 5, 6),
        ),
        (Conv2D(2, 3, 2, bias=None, padding="same", dtype=F64, seed=0), (2, 2, 4, 5)),
        (Dense(6, 4, dtype=F64, seed=0), (3, 6)),
        (Dense(6, 4, bias=False, dtype=F64, seed=0), (3, 6)),
        (MaxPool2D(2), (2, 3, 6, 5)),
        (MaxPool2D((3, 2), stride=1, padding=(1, 1)), (2, 2, 5, 5)),  # overlapping windows
        (AvgPool2D(2), (2, 3, 6, 5)),
        (
            AvgPool2D(3, stride=2, padding=1, trainable_scale=True, channels=3, dtype=F64),
            (2, 3, 7, 6),
        ),
        (Flatten(), (2, 3, 4, 5)),
        (Flatten("F"), (2, 3, 4, 5)),
        (ReLU(), (3, 7)),
        (Sigmoid(), (3, 7)),
        (Tanh(), (2, 3, 4, 4)),
        (Softmax(), (3, 7)),
        (Dropout(0.5), (3, 7)),  # the identity when not training
    ],
)
def test_gradcheck_float64(layer, x_shape):
    randomise_params(layer)
    x = distinct_values(x_shape)
    errors = check_layer(layer, x)
    assert set(errors) == {"x", *layer.params}


def test_dropout_training_masks_and_rescales():
    layer = Dropout(0.25, seed=3)
    x = np.ones((400, 50), dtype=np.float32)
    y = layer.forward(x, training=True)
    kept = y != 0
    assert 0.72 < kept.mean() < 0.78
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    dx = layer.backward(np.full_like(x, 2.0))
    np.testing.assert_array_equal(dx, np.where(kept, 2 / 0.75, 0).astype(np.float32))
    assert layer.forward(x) is not None and np.array_equal(layer.forward(x), x)


def test_same_seed_same_weights_and_config_round_trip():
    layer = Conv2D(3, 8, (3, 2), stride=(2, 1), padding=1, bias="untied", input_size=(9, 8), seed=7)
    config = json.loads(json.dumps(layer.config()))  # JSON-able
    twin = Conv2D.from_config(config)
    assert repr(twin) == repr(layer)
    for name in layer.params:
        np.testing.assert_array_equal(twin.params[name], layer.params[name])
    other = Conv2D(3, 8, (3, 2), stride=(2, 1), padding=1, bias="untied", input_size=(9, 8), seed=8)
    assert not np.array_equal(other.params["weight"], layer.params["weight"])


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_layer_round_trips_its_config(name):
    examples = {
        "Conv2D": (1, 2, 3),
        "Dense": (4, 2),
        "MaxPool2D": (2,),
        "AvgPool2D": (2,),
        "Dropout": (0.1,),
        "BatchNorm2D": (3,),
        "Normalization": (3,),
        "AdaptiveAvgPool2D": (2,),
        "AdaptiveMaxPool2D": ((2, 3),),
        "ConstantPad2D": ((0, 1, 2, 3), -0.5),
        "ZeroPad2D": (1,),
    }
    layer = LAYERS[name](*examples.get(name, ()))
    assert repr(LAYERS[name].from_config(json.loads(json.dumps(layer.config())))) == repr(layer)


def test_repr_shows_only_non_default_arguments():
    assert repr(Conv2D(1, 20, 5)) == "Conv2D(1, 20, 5)"
    assert repr(Conv2D(1, 20, (5, 3), stride=2, padding=1, bias=None, dtype="float64")) == (
        "Conv2D(1, 20, (5, 3), stride=2, padding=1, bias=None, dtype='float64')"
    )
    assert repr(MaxPool2D(3, stride=1)) == "MaxPool2D(3, stride=1)"
    assert (
        repr(AvgPool2D(2, trainable_scale=True, channels=4))
        == "AvgPool2D(2, trainable_scale=True, channels=4)"
    )
    assert repr(Dense(640, 100)) == "Dense(640, 100)"
    assert repr(Dropout(0.3)) == "Dropout(p=0.3)"
    assert repr(Flatten("F")) == "Flatten(order='F')"


def test_he_initialisation_scale():
    weight = Conv2D(16, 64, 3, seed=0).params["weight"]
    assert weight.dtype == np.float32
    np.testing.assert_allclose(weight.std(), np.sqrt(2 / (16 * 9)), rtol=0.05)
    assert not Conv2D(16, 64, 3, seed=0).params["bias"].any()


def test_output_shape_matches_forward():
    x = np.zeros((2, 3, 11, 9), dtype=np.float32)
    for layer in (
        Conv2D(3, 4, (3, 2), stride=(2, 3), padding=(1, 2)),
        MaxPool2D(3, 2, 1),
        AvgPool2D((2, 3)),
        Conv2D(3, 5, 4, padding="same"),
        Flatten(),
        ReLU(),
    ):
        assert layer.forward(x).shape[1:] == layer.output_shape(x.shape[1:])


def test_flatten_f_is_the_column_stacking_of_eq_8_26():
    x = np.arange(2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2, 3, 3)
    y = Flatten("F").forward(x)
    expected = np.concatenate([x[:, c].transpose(0, 2, 1).reshape(2, -1) for c in range(2)], axis=1)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(
        y[0, :3], x[0, 0, :, 0]
    )  # the first column of the first map comes first


def test_dtype_policy():
    conv = Conv2D(1, 2, 2)
    assert (
        conv.forward(np.ones((1, 1, 4, 4))).dtype == np.float32
    )  # input cast to the layer's dtype
    assert (
        MaxPool2D(2).forward(np.ones((1, 1, 4, 4))).dtype == np.float64
    )  # no parameters: dtype kept
    assert ReLU().forward(np.arange(4, dtype=np.int16).reshape(2, 2)).dtype == np.float32


@pytest.mark.parametrize(
    "layer",
    [
        Conv2D(1, 2, 2),
        Dense(2, 2),
        MaxPool2D(2),
        AvgPool2D(2),
        Flatten(),
        ReLU(),
        Softmax(),
        Dropout(0.5),
    ],
)
def test_backward_before_forward_is_a_clear_error(layer):
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
        layer.backward(np.ones((1, 2)))


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: Conv2D(0, 2, 3), ValueError, r"Conv2D: in_channels must be an int >= 1, got 0"),
        (
            lambda: Conv2D(1, 2.5, 3),
            TypeError,
            r"Conv2D: out_channels must be an int >= 1, got 2.5",
        ),
        (
            lambda: Conv2D(1, 2, True),
            TypeError,
            r"Conv2D: kernel_size must be an int >= 1 or a pair of them, got True",
        ),
        (
            lambda: Conv2D(1, 2, 3, stride=0),
            ValueError,
            r"Conv2D: stride must be an int >= 1 .* got 0",
        ),
        (
            lambda: Conv2D(1, 2, 3, padding=-1),
            ValueError,
            r"Conv2D: padding must be an int >= 0 .* got -1",
        ),
        (
            lambda: Conv2D(1, 2, 3, padding="full"),
            ValueError,
            r"Conv2D: padding must be one of \('valid', 'same'\)",
        ),
        (
            lambda: Conv2D(1, 2, 3, bias="shared"),
            ValueError,
            r"Conv2D: bias must be one of \('tied', 'untied', None\), got 'shared'",
        ),
        (
            lambda: Conv2D(1, 2, 3, bias="untied"),
            ValueError,
            r"Conv2D: bias='untied' .* needs input_size=\(H, W\)",
        ),
        (
            lambda: Conv2D(1, 2, 5, input_size=(3, 3)),
            ValueError,
            r"kernel size \(5, 5\) is larger than the padded input \(3, 3\)",
        ),
        (
            lambda: Conv2D(1, 2, 3, dtype=np.int32),
            TypeError,
            r"Conv2D: dtype must be float32 or float64",
        ),
        (lambda: Dense(0, 2), ValueError, r"Dense: in_features must be an int >= 1, got 0"),
        (
            lambda: Dense(2, 2, bias="yes"),
            TypeError,
            r"Dense: bias must be True or False, got 'yes'",
        ),
        (
            lambda: MaxPool2D(2, padding=2),
            ValueError,
            r"MaxPool2D: padding must be at most half the window",
        ),
        (lambda: AvgPool2D(2, stride=0), ValueError, r"AvgPool2D: stride must be an int >= 1"),
        (
            lambda: AvgPool2D(2, trainable_scale=True),
            ValueError,
            r"AvgPool2D: trainable_scale=True .* needs channels=",
        ),
        (lambda: Flatten("A"), ValueError, r"Flatten: order must be one of \('C', 'F'\), got 'A'"),
        (
            lambda: Dropout(1.0),
            ValueError,
            r"Dropout: p must be a finite number in \[0.0, 1.0\), got 1.0",
        ),
        (
            lambda: Dropout(-0.1),
            ValueError,
            r"Dropout: p must be a finite number in \[0.0, 1.0\), got -0.1",
        ),
    ],
)
def test_constructor_errors_name_the_argument(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize(
    "layer, x, error, message",
    [
        (
            Conv2D(3, 2, 3),
            np.zeros((1, 1, 5, 5)),
            ValueError,
            r"Conv2D\(3, 2, 3\): x must have 3 channels \(shape \(N, 3, H, W\)\), got shape \(1, "
            r"1, 5, 5\)",
        ),
        (
            Conv2D(1, 2, 3),
            np.zeros((5, 5)),
            ValueError,
            r"Conv2D\(1, 2, 3\): x must be 4-D, got 2-D",
        ),
        (
            Conv2D(1, 2, 7),
            np.zeros((1, 1, 5, 5)),
            ValueError,
            r"kernel size \(7, 7\) is larger than the padded input",
        ),
        (
            Conv2D(1, 2, 3, bias="untied", input_size=6),
            np.zeros((1, 1, 5, 5)),
            ValueError,
            r"x must be \(6, 6\) pixels \(input_size\), got shape \(1, 1, 5, 5\)",
        ),
        (
            Conv2D(1, 2, 3),
            np.array([[[["a"]]]]),
            TypeError,
            r"Conv2D\(1, 2, 3\): x must be a real numeric array",
        ),
        (Conv2D(1, 2, 1), np.full((1, 1, 2, 2), np.inf), ValueError, r"x contains NaN or Inf"),
        (
            Dense(4, 2),
            np.zeros((3, 5)),
            ValueError,
            r"Dense\(4, 2\): x must have shape \(N, 4\), got \(3, 5\)",
        ),
        (
            MaxPool2D(3),
            np.zeros((1, 1, 2, 2)),
            ValueError,
            r"MaxPool2D\(3\): pooling window size \(3, 3\) is larger",
        ),
        (
            AvgPool2D(2, trainable_scale=True, channels=2),
            np.zeros((1, 3, 4, 4)),
            ValueError,
            r"x must have 2 channels",
        ),
        (
            Flatten(),
            np.zeros(3),
            ValueError,
            r"Flatten\(\): x must be \(N, ...\) with at least 2 dimensions",
        ),
        (ReLU(), np.zeros((0, 3)), ValueError, r"ReLU\(\): x must not be empty"),
    ],
)
def test_forward_errors_name_the_layer(layer, x, error, message):
    with pytest.raises(error, match=message):
        layer.forward(x)


@pytest.mark.parametrize("conv", [Conv2D(3, 4, 3, padding=1, seed=0),  # im2col or direct
                                  Conv2D(8, 8, 3, padding=1, groups=8, seed=0),  # depthwise
                                  Conv2D(8, 16, 1, seed=0)])  # pointwise
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_conv2d_scans_each_batch_slice_and_refuses_a_non_finite_x_leaving_its_state(conv, bad):
    """Conv2D.forward scans x slice by slice with the convolution: a NaN or Inf in any one sample
    (the last, a middle one) is refused with check_input's message, and the layer keeps the cache
    of its last good forward (a backward still gives that forward's gradients)."""
    from cnn_im2col.shapes import NonFiniteError, finite_scans_skipped

    rng = np.random.default_rng(0)
    c = conv.in_channels
    x = rng.standard_normal((9, c, 6, 6)).astype(np.float32)
    out = conv.forward(x, training=True)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    expected = conv.backward(dout)
    for sample in (x.shape[0] - 1, x.shape[0] // 2):
        bad_x = rng.standard_normal(x.shape).astype(np.float32)
        bad_x[sample, c - 1, 5, 0] = bad
        with pytest.raises(NonFiniteError, match=re.escape(f"{conv!r}: x contains NaN or Inf")):
            conv.forward(bad_x, training=True)
        np.testing.assert_array_equal(conv.backward(dout), expected)
    with finite_scans_skipped():  # inside a stack, which checks its own input: no scan here
        conv.forward(bad_x)


def test_output_shape_errors_name_the_layer():
    with pytest.raises(
        ValueError,
        match=r"Dense\(640, 100\): input must be \(640,\) features per sample, got \(500,\)",
    ):
        Dense(640, 100).output_shape((500,))
    with pytest.raises(
        ValueError, match=r"Conv2D\(20, 40, 5\): input must be \(20, H, W\) .* got \(10, 12, 12\)"
    ):
        Conv2D(20, 40, 5).output_shape((10, 12, 12))


# --------------------------------------------------------------------------- BatchNorm2D,
# GlobalAvgPool2D, AvgPool2D


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck_float64(affine, training):
    layer = BatchNorm2D(3, affine=affine, dtype=F64)
    randomise_params(layer)
    layer.buffers["running_mean"][:] = [0.5, -1.0, 2.0]
    layer.buffers["running_var"][:] = [0.3, 2.0, 1.5]
    errors = check_layer(layer, distinct_values((2, 3, 3, 2)) * 3 + 1, training=training)
    assert set(errors) == ({"x", "weight", "bias"} if affine else {"x"})


def test_global_avg_pool_gradcheck_and_shapes():
    layer = GlobalAvgPool2D()
    assert layer.output_shape((4, 5, 6)) == (4,)
    check_layer(layer, distinct_values((2, 4, 3, 5)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine, momentum", [(True, 0.1), (False, 0.5), (True, None)])
def test_batch_norm_matches_torch_over_several_steps(dtype, affine, momentum):
    torch = pytest.importorskip("torch")
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    rtol, atol = tolerance(dtype)
    ours = BatchNorm2D(3, eps=1e-3, momentum=momentum, affine=affine, dtype=dtype)
    theirs = torch.nn.BatchNorm2d(3, eps=1e-3, momentum=momentum, affine=affine).to(tdtype)
    rng = np.random.default_rng(0)
    if affine:
        w, b = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)
        ours.params["weight"][:], ours.params["bias"][:] = w, b
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(w))
            theirs.bias.copy_(torch.tensor(b))
    for _ in range(4):  # training steps: outputs, all gradients, running statistics
        x = (rng.standard_normal((4, 3, 5, 3)) * 2 + 1).astype(dtype)
        dout = rng.standard_normal(x.shape).astype(dtype)
        tx = torch.tensor(x, requires_grad=True)
        ty = theirs(tx)
        ty.backward(torch.tensor(dout))
        np.testing.assert_allclose(ours.forward(x, training=True), ty.detach().numpy(), rtol, atol)
        np.testing.assert_allclose(ours.backward(dout), tx.grad.numpy(), rtol, atol)
        if affine:
            np.testing.assert_allclose(
                ours.grads["weight"], theirs.weight.grad.numpy(), rtol, atol * 100
            )
            np.testing.assert_allclose(
                ours.grads["bias"], theirs.bias.grad.numpy(), rtol, atol * 100
            )
            theirs.zero_grad()
        for key in ("running_mean", "running_var"):
            np.testing.assert_allclose(ours.buffers[key], getattr(theirs, key).numpy(), rtol, atol)
        assert ours.buffers["num_batches_tracked"] == theirs.num_batches_tracked.item()
    theirs.eval()
    x = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    ty.backward(torch.tensor(dout))
    before = {k: v.copy() for k, v in ours.buffers.items()}
    np.testing.assert_allclose(ours.forward(x), ty.detach().numpy(), rtol, atol)
    np.testing.assert_allclose(ours.backward(dout), tx.grad.numpy(), rtol, atol)
    for key, value in before.items():  # eval leaves the statistics alone
        np.testing.assert_array_equal(ours.buffers[key], value)


def test_batch_norm_without_running_stats_uses_the_batch_in_eval_too():
    torch = pytest.importorskip("torch")
    layer = BatchNorm2D(2, track_running_stats=False, dtype=F64)
    assert layer.buffers == {}
    theirs = torch.nn.BatchNorm2d(2, track_running_stats=False).double().eval()
    x = np.random.default_rng(1).standard_normal((3, 2, 4, 4)) * 3
    expected = theirs(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.forward(x, training=True), expected, rtol=1e-12, atol=1e-12)
    check_layer(layer, x[:, :, :2, :2].copy())


def test_batch_norm_buffers_are_updated_in_place():
    layer = BatchNorm2D(2)
    arrays = dict(layer.buffers)
    layer.forward(np.random.default_rng(0).standard_normal((2, 2, 3, 3)), training=True)
    assert all(layer.buffers[k] is arrays[k] for k in arrays)
    assert (
        layer.buffers["num_batches_tracked"].dtype == np.int64
        and layer.buffers["num_batches_tracked"].shape == ()
    )
    assert int(layer.buffers["num_batches_tracked"]) == 1
    assert not np.array_equal(layer.buffers["running_mean"], np.zeros(2))


@pytest.mark.parametrize(
    "make, x, training, message",
    [
        (
            lambda: BatchNorm2D(3),
            np.ones((2, 2, 3, 3)),
            True,
            r"BatchNorm2D\(3\): x must have 3 channels \(shape \(N, 3, H, W\)\), got shape \(2, "
            r"2, 3, 3\)",
        ),
        (
            lambda: BatchNorm2D(3),
            np.ones((2, 3, 3)),
            False,
            r"BatchNorm2D\(3\): x must be 4-D, got 3-D",
        ),
        (
            lambda: BatchNorm2D(2),
            np.ones((1, 2, 1, 1)),
            True,
            (
                r"BatchNorm2D\(2\): batch statistics need more than 1 value per channel \(N\*H\*W "
                r">= 2\), "
                r"got x of shape \(1, 2, 1, 1\)"
            ),
        ),
    ],
)
def test_batch_norm_forward_errors(make, x, training, message):
    with pytest.raises(ValueError, match=message):
        make().forward(x, training=training)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (
            lambda: BatchNorm2D(0),
            ValueError,
            r"BatchNorm2D: num_features must be an int >= 1, got 0",
        ),
        (
            lambda: BatchNorm2D(2, eps=0),
            ValueError,
            r"BatchNorm2D: eps must be a finite number in \(0.0, inf\], got 0.0",
        ),
        (
            lambda: BatchNorm2D(2, momentum=1.5),
            ValueError,
            r"BatchNorm2D: momentum must be a finite number in \[0.0, 1.0\], got 1.5",
        ),
        (
            lambda: BatchNorm2D(2, affine="no"),
            TypeError,
            r"BatchNorm2D: affine must be True or False, got 'no'",
        ),
        (
            lambda: BatchNorm2D(2, track_running_stats=1),
            TypeError,
            r"BatchNorm2D: track_running_stats must be True or False, got 1",
        ),
        (
            lambda: AvgPool2D(2, count_include_pad="no"),
            TypeError,
            r"AvgPool2D: count_include_pad must be True or False, got 'no'",
        ),
    ],
)
def test_new_layer_constructor_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_new_layers_output_shape_errors():
    with pytest.raises(
        ValueError, match=r"BatchNorm2D\(4\): input must be \(4, H, W\), got \(3, 5, 5\)"
    ):
        BatchNorm2D(4).output_shape((3, 5, 5))
    with pytest.raises(
        ValueError, match=r"GlobalAvgPool2D\(\): input must be \(C, H, W\), got \(10,\)"
    ):
        GlobalAvgPool2D().output_shape((10,))


def test_batch_norm_config_round_trip_and_repr():
    layer = BatchNorm2D(8, eps=1e-3, momentum=None, affine=False, dtype=F64)
    assert repr(layer) == "BatchNorm2D(8, eps=0.001, momentum=None, affine=False, dtype='float64')"
    twin = BatchNorm2D.from_config(json.loads(json.dumps(layer.config())))
    assert (
        repr(twin) == repr(layer) and twin.params == {} and set(twin.buffers) == set(layer.buffers)
    )


@pytest.mark.parametrize("scaled", [False, True])
def test_avg_pool_count_include_pad_false_matches_torch_and_round_trips(scaled):
    torch = pytest.importorskip("torch")
    layer = AvgPool2D(
        3,
        2,
        1,
        count_include_pad=False,
        trainable_scale=scaled,
        channels=2 if scaled else None,
        dtype=F64,
    )
    x = distinct_values((2, 2, 5, 6))
    expected = torch.nn.functional.avg_pool2d(
        torch.tensor(x), 3, 2, 1, count_include_pad=False
    ).numpy()
    np.testing.assert_allclose(
        layer.forward(x), expected, rtol=1e-12, atol=1e-12
    )  # the initial scale: the mean
    assert layer.config()["count_include_pad"] is False
    assert "count_include_pad=False" in repr(layer)
    assert repr(AvgPool2D.from_config(json.loads(json.dumps(layer.config())))) == repr(layer)
    check_layer(layer, x)


def test_conv2d_dilation_and_groups_follow_pytorch_layout_config_and_repr():
    layer = Conv2D(4, 6, 3, padding="same", dilation=2, groups=2, seed=0)
    assert layer.params["weight"].shape == (6, 2, 3, 3)  # (O, C/groups, KH, KW), as PyTorch
    assert layer.output_shape((4, 9, 9)) == (6, 9, 9)
    assert layer.forward(np.ones((1, 4, 9, 9), np.float32)).shape == (1, 6, 9, 9)
    config = json.loads(json.dumps(layer.config()))
    assert config["dilation"] == 2 and config["groups"] == 2
    assert repr(layer) == "Conv2D(4, 6, 3, padding='same', seed=0, dilation=2, groups=2)"
    assert repr(Conv2D.from_config(config)) == repr(layer)
    assert (
        repr(Conv2D(4, 6, 3, seed=0)) == "Conv2D(4, 6, 3, seed=0)"
    )  # the defaults stay out of the repr
    assert Conv2D(2, 2, 3, dilation=(1, 2)).config()["dilation"] == [1, 2]


def test_conv2d_algorithm_is_a_choice_that_changes_only_the_rounding():
    """The same layer as im2col and as Winograd: outputs and gradients agree, "auto" takes Winograd
    here (16 channels, 8 samples of 8x8), the choice is in the config and, when not the default,
    the repr."""
    x = np.random.default_rng(0).standard_normal((8, 16, 8, 8)).astype(np.float32)
    results = {}
    for algorithm in ("im2col", "winograd", "auto"):
        layer = Conv2D(16, 16, 3, padding=1, seed=0, algorithm=algorithm)
        out = layer.forward(x, training=True)
        dx = layer.backward(np.cos(out))
        results[algorithm] = (out, dx, layer.grads["weight"], layer.grads["bias"])
        assert isinstance(layer._cache, winograd.WinogradCache) == (algorithm != "im2col")
        assert Conv2D.from_config(json.loads(json.dumps(layer.config()))).algorithm == algorithm
    assert repr(Conv2D(16, 16, 3, algorithm="im2col")) == "Conv2D(16, 16, 3, algorithm='im2col')"
    assert repr(Conv2D(16, 16, 3)) == "Conv2D(16, 16, 3)"
    for a, b, c in zip(*results.values()):
        np.testing.assert_allclose(a, b, 1e-4, 1e-4)
        np.testing.assert_array_equal(b, c)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dilation": 2, "padding": 1},
        {"groups": 3},
        {"groups": 6, "padding": "same"},
        {"dilation": (2, 1), "groups": 2, "stride": 2, "bias": None},
    ],
)
def test_dilated_and_grouped_conv2d_layer_equals_torch(kwargs):
    torch = pytest.importorskip("torch")
    layer = Conv2D(6, 12, 3, dtype=np.float64, seed=1, **kwargs)
    if "bias" in layer.params:
        layer.params["bias"][:] = np.linspace(-1, 1, 12)
    t = torch.nn.Conv2d(
        6, 12, 3, dtype=torch.float64, **{**kwargs, "bias": kwargs.get("bias", "tied") is not None}
    )
    with torch.no_grad():
        t.weight.copy_(torch.tensor(layer.params["weight"]))
        if t.bias is not None:
            t.bias.copy_(torch.tensor(layer.params["bias"]))
    x = np.random.default_rng(2).standard_normal((2, 6, 8, 7))
    tx = torch.tensor(x, requires_grad=True)
    t_out = t(tx)
    out = layer.forward(x, training=True)
    np.testing.assert_allclose(out, t_out.detach().numpy(), 1e-10, 1e-10)
    dout = np.random.default_rng(3).standard_normal(out.shape)
    t_out.backward(torch.tensor(dout))
    np.testing.assert_allclose(layer.backward(dout), tx.grad.numpy(), 1e-10, 1e-10)
    np.testing.assert_allclose(layer.grads["weight"], t.weight.grad.numpy(), 1e-10, 1e-10)
    if t.bias is not None:
        np.testing.assert_allclose(layer.grads["bias"], t.bias.grad.numpy(), 1e-10, 1e-10)


def test_dilated_grouped_conv2d_layer_gradcheck_float64():
    layer = Conv2D(
        4, 4, (2, 3), padding=(1, 2), dilation=(2, 1), groups=4, dtype=np.float64, seed=0
    )
    check_layer(layer, np.random.default_rng(0).standard_normal((2, 4, 6, 5)))


def test_normalization_standardises_each_channel_with_the_statistics_it_adapted_to(tmp_path):
    from cnn_im2col.gradcheck import check_layer
    from cnn_im2col.layers import Normalization
    from cnn_im2col.model import Sequential

    rng = np.random.default_rng(0)
    x = rng.random((6, 3, 4, 5)) * np.array([1.0, 5.0, 0.1])[None, :, None, None] + 2.0
    layer = Normalization(3, dtype=np.float64).adapt(x)
    np.testing.assert_allclose(layer.buffers["mean"], x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(layer.buffers["std"], x.std(axis=(0, 2, 3)))
    y = layer.forward(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1, rtol=1e-12)
    check_layer(layer, x)  # float64 finite differences of backward
    constant = Normalization(1).adapt(np.full((2, 1, 3, 3), 0.5, np.float32))
    np.testing.assert_array_equal(constant.forward(np.full((1, 1, 3, 3), 0.5, np.float32)), 0)
    model = Sequential([layer])  # buffers travel in model files and state_dict
    assert set(model.state_dict()) == {"0.mean", "0.std"}
    model.save(tmp_path / "n.npz")
    np.testing.assert_array_equal(Sequential.load(tmp_path / "n.npz").forward(x), y)
    with pytest.raises(
        ValueError, match=r"Normalization\(3\): x must be \(N, 3, \.\.\.\), got shape"
    ):
        Normalization(3).forward(np.zeros((2, 2, 4, 4)))


NEW_ACTIVATIONS = {  # layer factory -> PyTorch's module name and arguments
    "ReLU6": (lambda: ReLU6(), "ReLU6", {}),
    "HardSigmoid": (lambda: HardSigmoid(), "Hardsigmoid", {}),
    "HardSwish": (lambda: HardSwish(), "Hardswish", {}),
    "LeakyReLU": (lambda: LeakyReLU(0.1), "LeakyReLU", {"negative_slope": 0.1}),
    "Identity": (lambda: Identity(), "Identity", {}),
}


def kinky_input(seed=0, shape=(2, 3, 5, 6)):
    """float64 values over -8..8 avoiding the kinks (-3, 0, 3, 6) by more than a finite step."""
    x = np.random.default_rng(seed).uniform(-8, 8, shape)
    for kink in (-3.0, 0.0, 3.0, 6.0):
        near = np.abs(x - kink) < 1e-3
        x[near] += 2e-3
    return x


@pytest.mark.parametrize("name", sorted(NEW_ACTIVATIONS))
def test_new_activations_pass_the_float64_gradient_check(name):
    from cnn_im2col.gradcheck import check_layer

    check_layer(NEW_ACTIVATIONS[name][0](), kinky_input())


@pytest.mark.parametrize("name", sorted(NEW_ACTIVATIONS))
def test_new_activations_match_pytorch_forward_and_backward_kinks_included(name):
    torch = pytest.importorskip("torch")
    factory, torch_name, kwargs = NEW_ACTIVATIONS[name]
    x = np.concatenate([kinky_input(1).ravel(), [-3.0, 0.0, 3.0, 6.0, -6.0]]).reshape(1, -1)
    dout = np.random.default_rng(2).standard_normal(x.shape)
    layer = factory()
    ours = layer.forward(x)
    dx = layer.backward(dout)
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(torch.nn, torch_name)(**kwargs)(tx)
    ty.backward(torch.tensor(dout))
    # 1e-7: PyTorch's Hardsigmoid rounds its 1/6 to single precision even in float64 (1.2e-8 off)
    np.testing.assert_allclose(ours, ty.detach().numpy(), rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-7, atol=1e-7)


def test_leaky_relu_refuses_a_slope_that_is_not_positive():
    with pytest.raises(ValueError, match=r"LeakyReLU: negative_slope must be"):
        LeakyReLU(0.0)
    assert LeakyReLU(0.2).config() == {"negative_slope": 0.2}


@pytest.mark.parametrize("size, out", [((7, 5), (3, 2)), ((8, 8), (4, 4)), ((5, 6), (1, 1)),
                                       ((4, 4), (6, 5))])
def test_adaptive_average_pooling_is_pytorchs_and_passes_the_gradient_check(size, out):
    from cnn_im2col.gradcheck import check_layer
    from cnn_im2col.layers import AdaptiveAvgPool2D

    x = np.random.default_rng(0).standard_normal((2, 3, *size))
    layer = AdaptiveAvgPool2D(out)
    y = layer.forward(x)
    assert y.shape == (2, 3, *out) and layer.output_shape((3, *size)) == (3, *out)
    check_layer(AdaptiveAvgPool2D(out), x)
    if out == (1, 1):
        np.testing.assert_allclose(y[:, :, 0, 0], x.mean(axis=(2, 3)))
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.AdaptiveAvgPool2d(out)(tx)
    dout = np.random.default_rng(1).standard_normal(y.shape)
    ty.backward(torch.tensor(dout))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.backward(dout), tx.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size, stride, kernel, dilation", [
    ((7, 8), 2, 3, 1), ((9, 4), (3, 2), (5, 2), 1), ((5, 6), 2, 3, 2), ((8, 8), 4, 2, 1)])
def test_strided_same_padding_is_ceil_of_size_over_stride_with_the_extra_cell_at_the_end(
        size, stride, kernel, dilation):
    """Conv2D(padding="same", stride > 1): ONNX's SAME_UPPER, equal to padding the input by hand
    (the extra row/column at the bottom/right) and a valid convolution; gradient-checked."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, *size))
    layer = Conv2D(3, 4, kernel, stride=stride, padding="same", dilation=dilation,
                   dtype=np.float64, seed=1)
    s = (stride, stride) if isinstance(stride, int) else stride
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    pads = []
    for n, kk, ss in zip(size, k, s):
        span = dilation * (kk - 1) + 1
        total = max((-(-n // ss) - 1) * ss + span - n, 0)
        pads.append((total // 2, total - total // 2))
    valid = Conv2D(3, 4, kernel, stride=stride, dilation=dilation, dtype=np.float64)
    valid.params["weight"][...] = layer.params["weight"]
    valid.params["bias"][...] = layer.params["bias"]
    expected = valid.forward(np.pad(x, ((0, 0), (0, 0), *pads)))
    y = layer.forward(x)
    assert y.shape[2:] == (-(-size[0] // s[0]), -(-size[1] // s[1]))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert layer.output_shape((3, *size)) == y.shape[1:]
    check_layer(layer, x[:1].copy())


@pytest.mark.parametrize("size, out", [((7, 5), (3, 2)), ((8, 8), (4, 4)), ((5, 6), (1, 1)),
                                       ((4, 4), (6, 5))])
def test_adaptive_max_pooling_is_pytorchs_ties_included_and_passes_the_gradient_check(size, out):
    from cnn_im2col.gradcheck import check_layer
    from cnn_im2col.layers import AdaptiveMaxPool2D

    rng = np.random.default_rng(0)
    check_layer(AdaptiveMaxPool2D(out), rng.standard_normal((2, 3, *size)))
    x = rng.integers(-2, 3, (2, 3, *size)).astype(np.float64)  # many ties: the first one wins
    layer = AdaptiveMaxPool2D(out)
    y = layer.forward(x)
    assert y.shape == (2, 3, *out) and layer.output_shape((3, *size)) == (3, *out)
    dout = rng.standard_normal(y.shape)
    dx = layer.backward(dout)
    # the slow twin: every window by hand, its first maximum in row-major order
    rows = [((i * size[0]) // out[0], -((-(i + 1) * size[0]) // out[0])) for i in range(out[0])]
    cols = [((j * size[1]) // out[1], -((-(j + 1) * size[1]) // out[1])) for j in range(out[1])]
    twin_dx = np.zeros_like(x)
    for n, c in np.ndindex(2, 3):
        for i, (r0, r1) in enumerate(rows):
            for j, (c0, c1) in enumerate(cols):
                window = x[n, c, r0:r1, c0:c1]
                assert y[n, c, i, j] == window.max()
                r, k = divmod(int(np.argmax(window)), c1 - c0)
                twin_dx[n, c, r0 + r, c0 + k] += dout[n, c, i, j]
    np.testing.assert_array_equal(dx, twin_dx)
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.AdaptiveMaxPool2d(out)(tx)
    ty.backward(torch.tensor(dout))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding, value", [(1, 0.0), ((0, 1, 2, 0), 0.0), ((2, 0, 0, 3), -1.5)])
def test_constant_padding_is_pytorchs_and_passes_the_gradient_check(padding, value):
    from cnn_im2col.gradcheck import check_layer
    from cnn_im2col.layers import ConstantPad2D, ZeroPad2D

    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    layer = ZeroPad2D(padding) if value == 0.0 else ConstantPad2D(padding, value)
    check_layer(layer, x)
    y = layer.forward(x)
    left, right, top, bottom = (padding,) * 4 if isinstance(padding, int) else padding
    assert y.shape == (2, 3, 4 + top + bottom, 5 + left + right)
    assert layer.output_shape((3, 4, 5)) == y.shape[1:]
    dout = np.random.default_rng(1).standard_normal(y.shape)
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.ConstantPad2d(padding, value)(tx)
    ty.backward(torch.tensor(dout))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(layer.backward(dout), tx.grad.numpy())


def test_padding_layers_refuse_bad_arguments_and_inputs():
    from cnn_im2col.layers import ConstantPad2D, ZeroPad2D

    with pytest.raises(ValueError, match=r"ZeroPad2D: padding must be an int or 4 ints \(left, "
                                         r"right, top, bottom\), got \(1, 2\)"):
        ZeroPad2D((1, 2))
    with pytest.raises(ValueError, match=r"ConstantPad2D: padding must be .*>= 0.*got -1"):
        ConstantPad2D((0, -1, 0, 0))
    with pytest.raises(ValueError, match=r"ConstantPad2D: value must be a finite number"):
        ConstantPad2D(1, float("-inf"))
    with pytest.raises(ValueError, match=r"ZeroPad2D\(1\): x must be 4-D"):
        ZeroPad2D(1).forward(np.zeros((2, 3, 4)))
