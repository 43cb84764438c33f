"""layers.normalization: BatchNorm2D against PyTorch in both modes, its buffers, errors and
config; Normalization's statistics."""

import json

import numpy as np
import pytest
from conftest import tolerance

from cnn_im2col.gradcheck import check_layer
from cnn_im2col.layers import BatchNorm2D
from layers.cases import F64, distinct_values, randomise_params


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck_float64(affine, training):
    layer = BatchNorm2D(3, affine=affine, dtype=F64)
    randomise_params(layer)
    layer.buffers["running_mean"][:] = [0.5, -1.0, 2.0]
    layer.buffers["running_var"][:] = [0.3, 2.0, 1.5]
    errors = check_layer(layer, distinct_values((2, 3, 3, 2)) * 3 + 1, training=training)
    assert set(errors) == ({"x", "weight", "bias"} if affine else {"x"})


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


def test_batch_norm_config_round_trip_and_repr():
    layer = BatchNorm2D(8, eps=1e-3, momentum=None, affine=False, dtype=F64)
    assert repr(layer) == "BatchNorm2D(8, eps=0.001, momentum=None, affine=False, dtype='float64')"
    twin = BatchNorm2D.from_config(json.loads(json.dumps(layer.config())))
    assert (
        repr(twin) == repr(layer) and twin.params == {} and set(twin.buffers) == set(layer.buffers)
    )


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
