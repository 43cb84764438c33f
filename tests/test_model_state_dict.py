"""Tests for Sequential.state_dict / load_state_dict (cnn_im2col.model; the loading,
cnn_im2col.state_dicts): PyTorch's key names, both directions with a PyTorch nn.Sequential of the
same structure (when torch is importable; fixed arrays otherwise), strict and non-strict loading,
and every error."""

import numpy as np
import pytest
from small_nets import bn_net

from cnn_im2col.layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Tanh,
)
from cnn_im2col.model import Sequential
from cnn_im2col.state_dicts import IncompatibleKeys


def lenet(dtype=np.float32):
    """(1, 12, 12) -> 10; the structure of `torch_lenet`, layer for layer."""
    return Sequential([
        Conv2D(1, 4, 3, padding=1, dtype=dtype, seed=0), ReLU(), MaxPool2D(2),
        Conv2D(4, 6, 3, dtype=dtype, seed=1), Tanh(), AvgPool2D(2),
        Flatten(), Dense(24, 16, dtype=dtype, seed=2), ReLU(), Dropout(0.5),
        Dense(16, 10, dtype=dtype, seed=3),
    ])


def torch_lenet(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(24, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 10),
    ).eval()


KEYS = ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "10.weight", "10.bias"]


def test_keys_are_pytorch_nn_sequential_names_and_values_are_copies():
    model = lenet()
    state = model.state_dict()
    assert list(state) == KEYS
    assert state["0.weight"].shape == (4, 1, 3, 3) and state["7.weight"].shape == (16, 24)
    state["0.weight"][...] = 0  # a snapshot: changing it leaves the model alone
    assert np.any(model.layers[0].params["weight"] != 0)


def test_untied_bias_scale_buffers_and_nesting_have_documented_names():
    conv = Conv2D(2, 3, 3, bias="untied", input_size=(5, 5))
    pool = AvgPool2D(3, trainable_scale=True, channels=3)
    norm = ReLU()
    norm.buffers = {"running_mean": np.zeros(3, np.float32),
                    "num_batches_tracked": np.array(0, np.int64)}
    model = Sequential([conv, pool, norm, Sequential([Flatten(), Dense(3, 2)])])
    state = model.state_dict()
    assert {k: v.shape for k, v in state.items()} == {
        "0.weight": (3, 2, 3, 3), "0.bias": (3, 3, 3), "1.weight": (3,), "2.running_mean": (3,),
        "2.num_batches_tracked": (), "3.1.weight": (2, 3), "3.1.bias": (2,)}
    state["2.running_mean"] = np.arange(3)
    state["2.num_batches_tracked"] = np.array(7)
    state["1.weight"] = np.full(3, 0.5)  # the name params uses too (Eq. 8.22's weight)
    assert model.load_state_dict(state) == IncompatibleKeys([], [])
    np.testing.assert_array_equal(norm.buffers["running_mean"], [0, 1, 2])
    assert norm.buffers["running_mean"].dtype == np.float32
    assert (norm.buffers["num_batches_tracked"] == 7
            and norm.buffers["num_batches_tracked"].dtype == np.int64)
    np.testing.assert_array_equal(pool.params["weight"], 0.5)
    assert set(model.state_dict()) >= set(model.params)  # one name per array


def fixed_state(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {k: v.shape for k, v in lenet().state_dict().items()}
    return {k: rng.standard_normal(s) for k, s in shapes.items()}  # float64: cast on load


def test_round_trip_with_fixed_arrays_casts_to_the_layer_dtype():
    state = fixed_state()
    model = lenet()
    model.load_state_dict(state)
    for key, value in model.state_dict().items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, state[key].astype(np.float32))
    # the arrays are written in place: an optimizer's references stay valid
    weight = model.layers[0].params["weight"]
    model.load_state_dict(fixed_state(1))
    assert model.layers[0].params["weight"] is weight
    # a float64 model from float32 arrays
    model64 = lenet(np.float64)
    model64.load_state_dict(model.state_dict())
    assert all(v.dtype == np.float64 for v in model64.state_dict().values())
    x = np.random.default_rng(2).random((3, 1, 12, 12))
    np.testing.assert_allclose(model64.forward(x), model.forward(x.astype(np.float32)), rtol=1e-4,
                               atol=1e-5)


def test_both_directions_with_pytorch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch_lenet(torch)
    x = np.random.default_rng(0).random((4, 1, 12, 12), dtype=np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()

    # PyTorch -> engine: the tensors themselves, no conversion by the caller
    model = lenet()
    assert model.load_state_dict(net.state_dict()) == IncompatibleKeys([], [])
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-4, atol=1e-5)

    # engine -> PyTorch
    trained = lenet()
    trained.load_state_dict(fixed_state(3))
    other = torch_lenet(torch)
    result = other.load_state_dict(
        {k: torch.from_numpy(v) for k, v in trained.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    with torch.no_grad():
        np.testing.assert_allclose(other(torch.from_numpy(x)).numpy(), trained.forward(x),
                                   rtol=1e-4, atol=1e-5)


def grouped_net():
    """(4, 9, 9) -> 5: grouped + dilated, depthwise and BatchNorm, layer for layer as
    `torch_grouped_net`."""
    return Sequential([
        Conv2D(4, 6, 3, padding=2, dilation=2, groups=2, seed=0), BatchNorm2D(6), ReLU(),
        Conv2D(6, 6, 3, padding=(1, 2), dilation=(1, 2), groups=6, bias=None, seed=1), ReLU(),
        Conv2D(6, 4, 1, groups=2, seed=2), Flatten(), Dense(324, 5, seed=3)])


def torch_grouped_net(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=(1, 2), dilation=(1, 2), groups=6, bias=False), nn.ReLU(),
        nn.Conv2d(6, 4, 1, groups=2), nn.Flatten(), nn.Linear(324, 5)).eval()


def test_grouped_and_dilated_conv_weights_are_pytorch_shaped():
    shapes = {k: v.shape for k, v in grouped_net().state_dict().items()}
    assert shapes["0.weight"] == (6, 2, 3,
                                  3) and shapes["3.weight"] == (
                                      6, 1, 3, 3) and "3.bias" not in shapes
    assert shapes["5.weight"] == (4, 3, 1, 1) and shapes["1.running_var"] == (6,)
    with pytest.raises(ValueError,
                       match=r"key '0.weight': expected shape \(6, 2, 3, 3\), received "
                             r"\(6, 4, 3, 3\)"):
        grouped_net().load_state_dict({**grouped_net().state_dict(),
                                       "0.weight": np.zeros((6, 4, 3, 3))})


def test_grouped_and_dilated_conv_both_directions_with_pytorch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch_grouped_net(torch)
    x = np.random.default_rng(0).random((3, 4, 9, 9), dtype=np.float32)
    net.train()
    net(torch.from_numpy(x))  # running statistics away from their initial values
    net.eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    model = grouped_net()
    assert model.load_state_dict(net.state_dict()) == IncompatibleKeys([], [])
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-4, atol=1e-5)
    # engine -> PyTorch, after a training step of the engine's own
    model.forward(x * 2, training=True)
    other = torch_grouped_net(torch)
    result = other.load_state_dict(
        {k: torch.from_numpy(np.asarray(v)) for k, v in model.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    with torch.no_grad():
        np.testing.assert_allclose(other(torch.from_numpy(x)).numpy(), model.forward(x), rtol=1e-4,
                                   atol=1e-5)


def test_load_state_dict_of_a_torch_model_with_batch_norm_and_global_pooling():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)  # the weights and x: the same test every run
    nn = torch.nn
    theirs = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6, momentum=None),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 10),
    )
    x = torch.rand(8, 1, 8, 8)
    theirs.train()
    theirs(x)
    theirs(x * 2)  # running statistics and counters away from their initial values
    theirs.eval()
    ours = Sequential(
        [*bn_net().layers[:8], Flatten(), Dense(6, 10)]
    )  # torch's indices: GAP is 2 layers there
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert int(ours.buffers["5.num_batches_tracked"]) == 2
    np.testing.assert_allclose(
        ours.forward(x.numpy()), theirs(x).detach().numpy(), rtol=1e-5, atol=1e-6
    )


def test_non_strict_loads_what_matches_and_returns_the_rest():
    model = lenet()
    before = model.state_dict()
    state = fixed_state()
    del state["10.weight"], state["10.bias"]
    state["11.weight"] = np.zeros(3)
    result = model.load_state_dict(state, strict=False)
    assert result == IncompatibleKeys(["10.weight", "10.bias"], ["11.weight"])
    assert result.missing_keys == ["10.weight",
                                   "10.bias"] and result.unexpected_keys == ["11.weight"]
    after = model.state_dict()
    np.testing.assert_array_equal(after["0.weight"], state["0.weight"].astype(np.float32))
    np.testing.assert_array_equal(after["10.weight"], before["10.weight"])


def test_strict_errors_name_every_key_with_both_shapes_and_load_nothing():
    model = lenet()
    before = model.state_dict()
    state = fixed_state()
    del state["3.bias"]
    state["0.weight"] = np.zeros((4, 1, 5, 5))
    state["extra.weight"] = np.zeros((2, 2))
    with pytest.raises(ValueError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    assert message.startswith("Sequential.load_state_dict: the state does not fit this model")
    assert "missing key '3.bias' (expected shape (6,))" in message
    assert "unexpected key 'extra.weight' (received shape (2, 2))" in message
    assert "key '0.weight': expected shape (4, 1, 3, 3), received (4, 1, 5, 5)" in message
    for key, value in model.state_dict().items():  # nothing half-loaded
        np.testing.assert_array_equal(value, before[key])
    # as in PyTorch, a wrong shape is an error even when not strict
    with pytest.raises(ValueError,
                       match=r"key '0.weight': expected shape \(4, 1, 3, 3\), received "
                             r"\(4, 1, 5, 5\)"):
        model.load_state_dict(state, strict=False)


def test_bad_values_and_arguments():
    model = Sequential([Dense(2, 1)])
    with pytest.raises(ValueError, match=r"key '0.weight': expected numbers, received dtype <U1"):
        model.load_state_dict({"0.weight": np.array([["a", "b"]]), "0.bias": np.zeros(1)})
    with pytest.raises(ValueError, match=r"key '0.bias': contains NaN or Inf"):
        model.load_state_dict({"0.weight": np.zeros((1, 2)), "0.bias": np.array([np.nan])})
    with pytest.raises(ValueError, match=r"key '0.weight': cannot be read as an array"):
        model.load_state_dict({"0.weight": [[1.0], [1.0, 2.0]], "0.bias": np.zeros(1)})
    with pytest.raises(TypeError, match=r"state must be a mapping \{name: array\}, got list"):
        model.load_state_dict([np.zeros((1, 2))])
    with pytest.raises(TypeError, match="strict must be True or False, got 'yes'"):
        model.load_state_dict({}, strict="yes")
    # lists convert: anything np.asarray takes
    model.load_state_dict({"0.weight": [[1, 2]], "0.bias": [3]})
    np.testing.assert_array_equal(model.forward(np.ones((1, 2), np.float32)), [[6.0]])
