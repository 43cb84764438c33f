"""layers.padding: ConstantPad2D and ZeroPad2D against PyTorch, the gradient check and their
errors."""

import numpy as np
import pytest


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
