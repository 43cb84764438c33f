"""layers.activation: ReLU6, HardSigmoid, HardSwish, LeakyReLU (and Identity) against PyTorch,
kinks included, and the gradient check."""

import numpy as np
import pytest

from cnn_im2col.layers import HardSigmoid, HardSwish, Identity, LeakyReLU, ReLU6

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
