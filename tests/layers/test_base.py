"""layers.base: the layer protocol over every layer: gradients in float64, config round trips,
repr, output shapes, the dtype policy and validation."""

import json

import numpy as np
import pytest

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
    MaxPool2D,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from layers.cases import F64, distinct_values, randomise_params


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
