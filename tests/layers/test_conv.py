"""layers.conv: Conv2D's seeds and initialisation, its NaN/Inf scan, dilation, groups, algorithms
and "same" padding with a stride."""

import json
import re

import numpy as np
import pytest

from cnn_im2col.conv import winograd
from cnn_im2col.gradcheck import check_layer
from cnn_im2col.layers import Conv2D


def test_same_seed_same_weights_and_config_round_trip():
    layer = Conv2D(3, 8, (3, 2), stride=(2, 1), padding=1, bias="untied", input_size=(9, 8), seed=7)
    config = json.loads(json.dumps(layer.config()))  # JSON-able
    twin = Conv2D.from_config(config)
    assert repr(twin) == repr(layer)
    for name in layer.params:
        np.testing.assert_array_equal(twin.params[name], layer.params[name])
    other = Conv2D(3, 8, (3, 2), stride=(2, 1), padding=1, bias="untied", input_size=(9, 8), seed=8)
    assert not np.array_equal(other.params["weight"], layer.params["weight"])


def test_he_initialisation_scale():
    weight = Conv2D(16, 64, 3, seed=0).params["weight"]
    assert weight.dtype == np.float32
    np.testing.assert_allclose(weight.std(), np.sqrt(2 / (16 * 9)), rtol=0.05)
    assert not Conv2D(16, 64, 3, seed=0).params["bias"].any()


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


@pytest.mark.parametrize("conv", [Conv2D(3, 4, 3, padding=1, seed=0),  # im2col or direct
                                  Conv2D(8, 8, 3, padding=1, groups=8, seed=0),  # depthwise
                                  Conv2D(8, 8, 3, padding=1, groups=8, bias="untied",
                                         input_size=(6, 6), seed=0),  # depthwise, dout whole
                                  Conv2D(8, 16, 3, padding=1, seed=0),  # Winograd
                                  Conv2D(8, 16, 3, stride=2, padding=1, seed=0),  # tiled
                                  Conv2D(8, 16, 1, seed=0)])  # pointwise
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_conv2d_scans_dout_with_its_backward_and_refuses_a_non_finite_one(conv, bad):
    """Conv2D.backward scans dout slice by slice with the strategy: a NaN or Inf in any one sample
    (the last, a middle one) is refused with check_dout's message, the layer's gradients stay
    those of its last good backward, and the next backward gives the same gradients as before."""
    from cnn_im2col.shapes import NonFiniteError

    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, conv.in_channels, 6, 6)).astype(np.float32)
    out = conv.forward(x, training=True)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx = conv.backward(dout)
    grads = {name: grad.copy() for name, grad in conv.grads.items()}
    for sample in (out.shape[0] - 1, out.shape[0] // 2):
        bad_dout = dout.copy()
        bad_dout[sample, -1, -1, 0] = bad
        with pytest.raises(NonFiniteError,
                           match=re.escape(f"{conv!r}: dout contains NaN or Inf")):
            conv.backward(bad_dout)
        for name, grad in grads.items():
            np.testing.assert_array_equal(conv.grads[name], grad)
        np.testing.assert_array_equal(conv.backward(dout), dx)


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
