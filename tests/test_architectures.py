"""architectures: the named networks and the ``--model NAME|FILE.json`` lookup."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cnn_im2col import architectures as A
from cnn_im2col.containers import Residual, leaves
from cnn_im2col.layers import (
    BatchNorm2D,
    Conv2D,
)
from cnn_im2col.model import Sequential

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from torch_twins import torch_twin  # noqa: E402 - the PyTorch twins the benchmarks use too


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
    from cnn_im2col.cli import commands

    assert commands.default_model is A.default_model
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
    with pytest.raises(ValueError, match=r"model must be one of \['default', 'lenet', "
                                         r"'mobilenetv2', 'resnet20', 'vgg-bn'\] "
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


# ------------------------------------------------------------------------- residual networks
def test_resnet20_is_he_et_al_s_cifar_network():
    model = A.resnet20(input_shape=(3, 32, 32))
    assert model.num_params() == 272_474  # the paper's 0.27M (projection shortcuts: option B)
    blocks = [layer for layer in model if isinstance(layer, Residual)]
    assert len(blocks) == 9
    assert [b.shortcut is not None for b in blocks] == [False] * 3 + [True, False, False] * 2
    assert model.check_shapes((3, 32, 32))[-3] == (64, 8, 8)
    convs = [leaf for _, leaf in leaves(model) if isinstance(leaf, Conv2D)]
    assert len(convs) == 19 + 2 and all("bias" not in c.params for c in convs)  # 19 + 2 projections


def test_mobilenetv2_has_inverted_residuals_and_a_width_multiplier():
    half = A.mobilenetv2(input_shape=(1, 28, 28), width=0.5)
    full = A.mobilenetv2(input_shape=(3, 28, 28), width=1.0)
    # the full-width network's convolutions and BatchNorms are torchvision's mobilenet_v2 (2.22M
    # parameters besides its 1000-class head), here with a 10-class one
    assert full.num_params() == 2_223_872 + 1280 * 10 + 10
    assert half.num_params() < full.num_params() / 2
    residuals = [layer for layer in full if isinstance(layer, Residual)]
    assert len(residuals) == 10  # torchvision's: the blocks with stride 1 and equal channels
    depthwise = [leaf for _, leaf in leaves(full)
                 if isinstance(leaf, Conv2D) and leaf.groups == leaf.in_channels > 1]
    assert len(depthwise) == 17
    assert full.check_shapes((3, 28, 28))[-4] == (1280, 4, 4)
    with pytest.raises(ValueError, match=r"mobilenetv2: width must be in \(0, 4\], got 0"):
        A.mobilenetv2(width=0)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_residual_architectures_equal_pytorch_twins(name):
    torch = pytest.importorskip("torch")
    ours = A.ARCHITECTURES[name](seed=1, dtype=np.float64, input_shape=(3, 16, 16))
    rng = np.random.default_rng(0)
    for key, value in ours.buffers.items():  # running statistics away from (0, 1)
        if key.endswith(("running_mean", "running_var")):
            value[...] = rng.uniform(0.5, 1.5, value.shape)
    theirs = torch_twin(ours, torch).double()
    theirs.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in
                            ours.state_dict().items()}, strict=True)
    theirs.eval()
    x = rng.standard_normal((2, 3, 16, 16))
    expected = theirs(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours.predict(x), expected, rtol=1e-9, atol=1e-9)
