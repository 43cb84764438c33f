"""architectures: the named networks and the ``--model NAME|FILE.json`` lookup."""

import json

import numpy as np
import pytest

from cnn_im2col import architectures as A
from cnn_im2col.layers import BatchNorm2D, Conv2D
from cnn_im2col.model import Sequential


@pytest.mark.parametrize("name", sorted(A.ARCHITECTURES))
def test_every_architecture_maps_28x28_images_to_10_classes_deterministically(name):
    model = A.build(name, seed=3)
    assert model.check_shapes((1, 28, 28))[-1] == (10,)
    twin = A.build(name, seed=3)
    assert all(np.array_equal(v, twin.params[k]) for k, v in model.params.items())
    other = A.build(name, seed=4)
    assert any(not np.array_equal(v, other.params[k]) for k, v in model.params.items())
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    assert model.forward(x, training=True).shape == (2, 10)


def test_lenet_is_the_benchmark_network():
    convs = [layer for layer in A.lenet() if isinstance(layer, Conv2D)]
    assert [layer.params["weight"].shape for layer in convs] == [(20, 1, 5, 5), (40, 20, 5, 5)]
    assert A.lenet().num_params() == 20 * 26 + 40 * 501 + 641 * 100 + 101 * 10


def test_vgg_bn_has_3x3_convolutions_each_followed_by_batch_norm():
    layers = A.vgg_bn().layers
    for i, layer in enumerate(layers):
        if isinstance(layer, Conv2D):
            assert (layer.kernel_size == (3, 3) and layer.padding == "same"
                    and "bias" not in layer.params)
            assert isinstance(layers[i + 1], BatchNorm2D)
            assert layers[i + 1].num_features == layer.out_channels


def test_default_model_is_the_command_default():
    from cnn_im2col import cli

    assert cli.default_model is A.default_model
    assert repr(A.build("default")) == repr(A.default_model(0))


def test_build_reads_a_json_config(tmp_path):
    model = A.vgg_bn(seed=1)
    path = tmp_path / "net.json"
    path.write_text(json.dumps(model.config()))
    rebuilt = A.build(str(path), seed=99)  # the file's layers carry their own seeds
    assert repr(rebuilt) == repr(model)
    assert all(np.array_equal(v, rebuilt.params[k]) for k, v in model.params.items())
    assert isinstance(rebuilt, Sequential)


def test_build_errors(tmp_path):
    with pytest.raises(ValueError, match=r"model must be one of \['default', 'lenet', 'vgg-bn'\] "
                                         r"or a \.json file holding Sequential.config\(\), "
                                         r"got 'vgg'"):
        A.build("vgg")
    with pytest.raises(FileNotFoundError, match=r"nowhere.json: no such model file"):
        A.build(str(tmp_path / "nowhere.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad.json: not a JSON file"):
        A.build(str(bad))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"layers": [{"class": "Nope", "config": {}}]}))
    with pytest.raises(ValueError, match=r"wrong.json"):
        A.build(str(wrong))
    with pytest.raises(TypeError, match=r"model must be a name or the path of a .json file, got 3"):
        A.build(3)
