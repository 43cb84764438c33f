"""inference_blocks: each fused step made only for inference computes what its layers compute one
by one (bit for bit, or to rounding where its kernel sums in another order), is made by
``predict`` and not by training, and refuses training and backward."""

import numpy as np
import pytest
from conftest import tolerance

from cnn_im2col.layers import Conv2D, Dense, Flatten, GlobalAvgPool2D, ReLU
from cnn_im2col.model import Sequential


# ------------------------------------------------------- inference: Conv2D -> clipped activation
@pytest.mark.parametrize("activation", ["ReLU6", "HardSigmoid", "HardSwish"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("strategy",
                         ["im2col", "winograd", "depthwise", "pointwise", "direct", "tiled"])
def test_predict_fuses_a_clipped_activation_into_each_convolution_slice_bit_for_bit(
        activation, dtype, strategy):
    """predict applies ReLU6 / HardSigmoid / HardSwish in place to each slice its convolution
    wrote: the same numbers as the layers one by one (forward, unfused), bit for bit."""
    from cnn_im2col import layers

    conv = {  # (layer, input shape): one per strategy that "auto" picks
        "im2col": (Conv2D(5, 8, 3, padding=1, dtype=dtype, seed=0), (5, 5, 12, 12)),
        "tiled": (Conv2D(5, 8, 3, stride=(2, 1), padding=1, dtype=dtype, seed=0), (5, 5, 12, 12)),
        "direct": (Conv2D(3, 8, 3, stride=2, padding=1, dtype=dtype, seed=0), (5, 3, 12, 12)),
        "winograd": (Conv2D(8, 8, 3, padding=1, dtype=dtype, seed=0), (4, 8, 16, 16)),
        "depthwise": (Conv2D(8, 8, 3, padding=1, groups=8, dtype=dtype, seed=0), (5, 8, 9, 9)),
        "pointwise": (Conv2D(8, 16, 1, dtype=dtype, seed=0), (5, 8, 7, 7)),
    }[strategy]
    layer, shape = conv
    model = Sequential([layer, getattr(layers, activation)()])
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype) * 4  # both kinks reached
    assert layer.plan(shape).strategy.__name__.endswith(strategy)
    np.testing.assert_array_equal(model.predict(x), model.forward(x))
    steps, _ = model._inference
    assert [s.kind for s in steps] == ["conv_activation"]
    assert [s.kind for s in model._planned_steps()] == ["layer", "layer"]  # training: unfused
    with pytest.raises(RuntimeError, match=r"ConvActivation\(.*\) is an inference step"):
        steps[0].run(x, True)
    with pytest.raises(RuntimeError, match=r"is an inference step: it has no backward"):
        steps[0].backward(np.zeros(1))


@pytest.mark.parametrize("activation", ["ReLU6", "HardSigmoid", "HardSwish"])
def test_a_dense_layer_and_its_clipped_activation_run_as_one_step_bit_for_bit(activation):
    from cnn_im2col import layers

    model = Sequential([Dense(6, 5, seed=0), getattr(layers, activation)(), Dense(5, 2, seed=1)])
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32) * 4  # kinks reached
    np.testing.assert_array_equal(model.predict(x), model.forward(x))
    assert [s.kind for s in model._inference[0]] == ["dense_activation", "layer"]


# ------------------------------------ inference: a pointwise Conv2D -> activation -> global pool
@pytest.mark.parametrize("activation", [None, "ReLU", "ReLU6", "HardSigmoid", "HardSwish"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_pointwise_head_and_its_global_pool_run_as_one_step(monkeypatch, activation, dtype):
    """predict runs Conv2D 1x1 [-> activation] -> GlobalAvgPool2D (a MobileNet's head) as one
    step, through ``pointwise.forward_pooled``: the layers' numbers to rounding (the pixels are
    summed in another order); training keeps the layers; the step refuses training and
    backward, and as a first step checks its input as the convolution does."""
    from cnn_im2col import layers
    from cnn_im2col.conv import pointwise

    calls = []
    pooled = pointwise.forward_pooled
    monkeypatch.setattr(pointwise, "forward_pooled",
                        lambda *a, **k: calls.append(1) or pooled(*a, **k))
    middle = [] if activation is None else [getattr(layers, activation)()]
    model = Sequential([Conv2D(6, 9, 1, dtype=dtype, seed=0), *middle, GlobalAvgPool2D(),
                        Dense(9, 3, dtype=dtype, seed=1)])
    x = (np.random.default_rng(0).standard_normal((5, 6, 3, 4)) * 3).astype(dtype)
    np.testing.assert_allclose(model.predict(x), model.forward(x), *tolerance(dtype))
    steps, _ = model._inference
    assert [s.kind for s in steps] == ["conv_global_pool", "layer"] and calls == [1]
    assert "conv_global_pool" not in [s.kind for s in model._planned_steps()]  # training
    with pytest.raises(RuntimeError, match=r"ConvGlobalPool\(.*\) is an inference step"):
        steps[0].run(x, True)
    with pytest.raises(RuntimeError, match=r"is an inference step: it has no backward"):
        steps[0].backward(np.zeros(1))
    with pytest.raises(ValueError, match=r"Conv2D\(6, 9, 1.*channels"):
        model.predict(x[:, :2])


# ------------------------------------------------ inference: a global pool -> Dense (ResNet's head)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("flatten", [False, True])
def test_a_global_pool_and_its_dense_layer_run_as_one_step(monkeypatch, dtype, first, flatten):
    """predict runs GlobalAvgPool2D [-> Flatten] -> Dense (a ResNet's head) as one step, through
    ``pooled_dense``: the layers' numbers to rounding; training keeps the layers; the step refuses
    training and backward; as a first step it checks its input as the pool does."""
    from cnn_im2col import pooled_dense

    calls = []
    kernel = pooled_dense.pooled_dense
    monkeypatch.setattr(pooled_dense, "pooled_dense",
                        lambda *a, **k: calls.append(1) or kernel(*a, **k))
    body = [] if first else [Conv2D(3, 6, 3, padding=1, dtype=dtype, seed=0), ReLU()]
    channels = 3 if first else 6
    model = Sequential([*body, GlobalAvgPool2D(), *([Flatten()] if flatten else []),
                        Dense(channels, 4, dtype=dtype, seed=1)])
    model.layers[-1].params["bias"][...] = np.arange(4) - 1.5
    x = (np.random.default_rng(0).standard_normal((5, 3, 4, 5)) * 3).astype(dtype)
    np.testing.assert_allclose(model.predict(x), model.forward(x), *tolerance(dtype))
    steps, _ = model._inference
    assert steps[-1].kind == "global_pool_dense" and calls == [1]
    assert "global_pool_dense" not in [s.kind for s in model._planned_steps()]  # training
    with pytest.raises(RuntimeError, match=r"GlobalPoolDense\(.*\) is an inference step"):
        steps[-1].run(x, True)
    with pytest.raises(RuntimeError, match=r"is an inference step: it has no backward"):
        steps[-1].backward(np.zeros(1))
    if first:
        with pytest.raises(ValueError, match=r"GlobalAvgPool2D\(\): input must be \(C, H, W\)"):
            model.predict(x[0])
        with pytest.raises(ValueError, match=r"Dense\(3, 4.*must be \(3,\) features.*got \(2,\)"):
            model.predict(x[:, :2])


def test_a_head_too_large_for_the_kernel_runs_its_layers_bit_for_bit(monkeypatch):
    from cnn_im2col import pooled_dense

    monkeypatch.setattr(pooled_dense, "MAX_MACS", 2 * 6 * 4 - 1)  # below a batch of 2
    model = Sequential([Conv2D(3, 6, 3, seed=0), GlobalAvgPool2D(), Flatten(), Dense(6, 4, seed=1)])
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), model.forward(x))
    assert model._inference[0][-1].kind == "global_pool_dense"
    np.testing.assert_allclose(model.predict(x[:1]), model.forward(x[:1]), *tolerance(np.float32))


def test_the_global_pool_and_dense_step_equals_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 16, 8, 8)).astype(np.float32)
    model = Sequential([GlobalAvgPool2D(), Dense(16, 10, seed=2)])
    model.layers[1].params["bias"][...] = rng.standard_normal(10)
    linear = torch.nn.Linear(16, 10)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(model.layers[1].params["weight"]))
        linear.bias.copy_(torch.from_numpy(model.layers[1].params["bias"]))
        expected = linear(torch.nn.AdaptiveAvgPool2d(1)(torch.from_numpy(x)).flatten(1)).numpy()
    np.testing.assert_allclose(model.predict(x), expected, *tolerance(np.float32))
    assert model._inference[0][0].kind == "global_pool_dense"


@pytest.mark.parametrize("layer, fused", [
    (Conv2D(4, 5, 1, seed=0), True),
    (Conv2D(4, 5, 1, padding=1, seed=0), False),  # padded: the layers one by one
    (Conv2D(4, 5, 1, bias="untied", input_size=(3, 3), seed=0), False),
])
def test_a_head_whose_convolution_is_not_plainly_pointwise_runs_its_layers(monkeypatch, layer,
                                                                           fused):
    from cnn_im2col.conv import pointwise

    calls = []
    pooled = pointwise.forward_pooled
    monkeypatch.setattr(pointwise, "forward_pooled",
                        lambda *a, **k: calls.append(1) or pooled(*a, **k))
    if layer.bias_mode == "untied":
        layer.params["bias"][...] = np.random.default_rng(2).standard_normal((5, 3, 3))
    model = Sequential([layer, ReLU(), GlobalAvgPool2D()])
    x = np.random.default_rng(1).standard_normal((3, 4, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), model.forward(x), *tolerance(np.float32))
    assert model._inference[0][0].kind == "conv_global_pool"
    assert calls == ([1] if fused else [])
