"""planning: which layers make which step (``plan``, exact classes only), and at inference
(``inference_plan``) each Conv2D -> BatchNorm2D pair folded into one convolution, refolded whenever
any of the pair's arrays changed, and each Dropout left out."""

import numpy as np
import pytest
from small_nets import MyReLU, lenet

from cnn_im2col.containers import Residual
from cnn_im2col.layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    ReLU6,
    Tanh,
)
from cnn_im2col.model import Sequential
from cnn_im2col.planning import plan


def test_plan_fuses_conv_relu_pool_conv_relu_and_relu_pool_of_exact_types_only():
    kinds = [(s.first, s.last, s.kind) for s in plan(lenet())]
    assert kinds == [
        (0, 2, "conv_relu_pool"),
        (3, 5, "conv_relu_pool"),
        (6, 6, "layer"),
        (7, 7, "layer"),
        (8, 8, "layer"),
        (9, 9, "layer"),
    ]
    kinds = [
        (s.first, s.last, s.kind)
        for s in plan(
            [Conv2D(1, 1, 1), ReLU(), Conv2D(1, 1, 1), ReLU(), MaxPool2D(2), MaxPool2D(1)]
        )
    ]
    assert kinds == [(0, 1, "conv_relu"), (2, 4, "conv_relu_pool"), (5, 5, "layer")]
    layers = [AvgPool2D(2), ReLU(), MaxPool2D(2), Conv2D(1, 1, 1), MyReLU(), ReLU(), Tanh()]
    kinds = [(s.first, s.last, s.kind) for s in plan(layers)]
    assert kinds == [
        (0, 0, "layer"),
        (1, 2, "relu_pool"),
        (3, 3, "layer"),
        (4, 4, "layer"),
        (5, 5, "layer"),
        (6, 6, "layer"),
    ]


def test_only_an_unstrided_ungrouped_1x1_convolution_makes_a_head():
    for layer in (Conv2D(4, 4, 3, padding=1), Conv2D(4, 4, 1, stride=2),
                  Conv2D(4, 4, 1, groups=2)):
        model = Sequential([layer, ReLU6(), GlobalAvgPool2D()])
        assert "conv_global_pool" not in [step.kind for step in model.inference_steps()[0]]
    model = Sequential([Conv2D(4, 4, 1), ReLU6(), Flatten()])
    assert [s.kind for s in model.inference_steps()[0]] == ["conv_activation", "layer"]


# ------------------------------------------------------------------ inference: Conv2D -> BN folded
@pytest.mark.parametrize("name", ["vgg-bn", "resnet20", "mobilenetv2"])
def test_predict_folds_batch_norm_into_the_convolution_and_equals_forward(name):
    """predict (no backward follows) runs each Conv2D -> BatchNorm2D pair as one convolution; in
    float64 its outputs equal forward(training=False)'s to rounding, after training steps too (the
    fold is redone whenever the pair's arrays have changed)."""
    from cnn_im2col import SGD, SoftmaxCrossEntropy
    from cnn_im2col.architectures import build

    model = build(name, seed=2, input_shape=(3, 16, 16), classes=4)
    model = Sequential.from_config(_as_float64(model.config()))  # the same layers, in float64
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 16, 16))
    y = rng.integers(0, 4, 6)
    for round_ in range(2):
        for key, value in model.buffers.items():
            if key.endswith("running_var"):
                value[...] = rng.uniform(0.5, 2.0, value.shape)
            elif key.endswith("running_mean"):
                value[...] = rng.normal(0, 0.5, value.shape)
        np.testing.assert_allclose(model.predict(x), model.forward(x), rtol=1e-10, atol=1e-12)
        model.fit(x, y, epochs=1, batch_size=3, optimizer=SGD(0.01), loss=SoftmaxCrossEntropy(),
                  progress=False, log=None)
    steps, folds = model._inference
    if name == "vgg-bn":
        assert len(folds) == 3 and [s.kind for s in steps[:2]] == ["conv_relu_pool", "conv_relu"]
    else:
        # the stem (and MobileNetV2's last 1x1); the blocks fold inside their own stacks
        assert len(folds) == {"resnet20": 1, "mobilenetv2": 2}[name]
        nested = [leaf for leaf in model.layers if isinstance(leaf, (Residual, Sequential))]
        body = nested[0].body if isinstance(nested[0], Residual) else nested[0]
        assert body._inference[1]  # folded in the body too


def test_the_fold_is_redone_when_any_of_its_arrays_changes_and_only_then():
    model = Sequential([Conv2D(2, 3, 3, padding=1, dtype=np.float64, seed=0),
                        BatchNorm2D(3, dtype=np.float64), ReLU()])
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5))
    model.predict(x)
    fold = model._inference[1][0]
    folded = fold.folded.params["weight"].copy()
    model.predict(x)
    np.testing.assert_array_equal(fold.folded.params["weight"], folded)  # nothing changed
    arrays = [model.params["0.weight"], model.params["0.bias"], model.params["1.weight"],
              model.params["1.bias"], model.buffers["1.running_mean"],
              model.buffers["1.running_var"]]
    for array in arrays:  # changed in place, as an optimizer or a user does
        array[...] = array * 1.5 + 0.25
        np.testing.assert_allclose(model.predict(x), model.forward(x), rtol=1e-12, atol=1e-12)
    model.layers[1].eps = 0.5
    np.testing.assert_allclose(model.predict(x), model.forward(x), rtol=1e-12, atol=1e-12)
    model.params["0.weight"][1, 0, 2, 1] += 1e-9  # one element, a little: refolded
    np.testing.assert_allclose(model.predict(x), model.forward(x), rtol=1e-12, atol=1e-12)
    model.buffers["1.running_var"][0] = -1.0
    for _ in range(2):  # a fold that failed is tried again, never used stale
        with pytest.raises(ValueError, match=r"BatchNorm2D\(3.*\): var must be >= 0"):
            model.predict(x)
    model.buffers["1.running_var"][0] = 2.0
    np.testing.assert_allclose(model.predict(x), model.forward(x), rtol=1e-12, atol=1e-12)


def test_a_fold_of_mixed_dtypes_is_refreshed_too():
    model = Sequential([Conv2D(2, 3, 3, padding=1, seed=0), BatchNorm2D(3, dtype=np.float64)])
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    for scale in (1.0, 2.0):
        model.buffers["1.running_var"][...] = scale
        np.testing.assert_allclose(model.predict(x), model.forward(x), rtol=1e-5, atol=1e-6)


def _as_float64(config):
    """A model config with every layer in float64."""
    if isinstance(config, dict):
        return {k: ("float64" if k == "dtype" else _as_float64(v)) for k, v in config.items()}
    if isinstance(config, list):
        return [_as_float64(v) for v in config]
    return config


@pytest.mark.parametrize("bias, affine, track", [("tied", True, True), (None, False, True),
                                                 ("tied", True, False)])
def test_fold_cases_bias_affine_and_batch_statistics(bias, affine, track):
    rng = np.random.default_rng(1)
    conv = Conv2D(3, 5, 3, padding=1, bias=bias, dtype=np.float64, seed=0)
    norm = BatchNorm2D(5, affine=affine, track_running_stats=track, dtype=np.float64)
    if affine:
        norm.params["weight"][...] = rng.uniform(0.5, 2, 5)
        norm.params["bias"][...] = rng.normal(size=5)
    if bias:
        conv.params["bias"][...] = rng.normal(size=5)
    if track:
        norm.buffers["running_mean"][...] = rng.normal(size=5)
        norm.buffers["running_var"][...] = rng.uniform(0.5, 2, 5)
    model = Sequential([conv, norm, ReLU(), MaxPool2D(2)])
    x = rng.standard_normal((4, 3, 8, 8))
    np.testing.assert_allclose(model.predict(x), model.forward(x), rtol=1e-10, atol=1e-12)
    assert len(model._inference[1]) == (1 if track else 0)  # batch statistics do not fold
    if track:
        norm.buffers["running_var"][0] = -1.0
        with pytest.raises(ValueError, match=r"BatchNorm2D\(5.*var must be >= 0"):
            model.predict(x)


def test_a_stack_of_dropouts_alone_keeps_one_step_and_predicts_its_input():
    model = Sequential([Dropout(0.3), Dropout(0.2)])
    x = np.random.default_rng(2).standard_normal((3, 4))
    np.testing.assert_array_equal(model.predict(x), x)
    assert [s.kind for s in model._inference[0]] == ["layer"]
