"""The worked examples of the mathematics the engine implements, pinned with their numbers.

An intuitive CNN primer (feature maps, valid/full correlation, backpropagation for a feature
map, sigmoid + quadratic cost) and chapter 8 of Hagan et al.'s *Neural Network Design* (2nd ed.;
convolution as the weight-sharing matrix of Eq. 8.12, padding, stride, pooling) work these cases
by hand; the engine must reproduce them exactly. docs/architecture.md ("The mathematics")
describes both.
"""

import numpy as np
import scipy.signal

from cnn_im2col import functional as F
from cnn_im2col.layers import AvgPool2D, Conv2D, Flatten, MaxPool2D, Sigmoid

A_PREV = np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])
W = np.array([[10.0, 20], [30, 40]])


def conv_with(weight, bias=0.0, **kwargs):
    """A float64 Conv2D(1, O, ...) whose weights are set by hand."""
    weight = np.asarray(weight, dtype=np.float64)
    weight = weight.reshape((-1, 1) + weight.shape[-2:])
    layer = Conv2D(1, weight.shape[0], weight.shape[-2:], dtype=np.float64, **kwargs)
    layer.params["weight"][...] = weight
    if "bias" in layer.params:
        layer.params["bias"][...] = bias
    return layer


def test_appendix_b_stacked_channels():
    """Two feature maps and two filters: the 3-D correlation equals the sum of 2-D ones."""
    maps = np.array([[[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[9, 8, 7], [6, 5, 4], [3, 2, 1]]],
                    dtype=np.float64)
    filters = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], dtype=np.float64)
    layer = Conv2D(2, 1, 2, dtype=np.float64)
    layer.params["weight"][0] = filters
    out = layer.forward(maps[None])
    np.testing.assert_array_equal(out[0, 0], [[212, 196], [164, 148]])  # result1 + result2
    np.testing.assert_array_equal(
        scipy.signal.correlate2d(maps[0], filters[0],
                                 "valid") + scipy.signal.correlate2d(maps[1], filters[1], "valid"),
        out[0, 0])


def test_feature_map_3x3_input_2x2_kernel_and_its_three_gradients():
    """The primer's FeatureMap: z = correlate2d(a_prev, w, "valid") + b, a = sigmoid(z), and
    db = sum(dZ), dW = correlate2d(a_prev, dZ, "valid"), dA_prev = convolve2d(w, dZ, "full")."""
    w = W / 100
    conv, act = conv_with(w, bias=0.1), Sigmoid()
    z = conv.forward(A_PREV[None, None])
    np.testing.assert_allclose(z[0, 0], [[3.8, 4.8], [6.8, 7.8]])  # Appendix A's 370... /100 + 0.1
    a = act.forward(z)
    da = np.array([[[[0.5, -1.0], [2.0, 0.25]]]])
    dz = act.backward(da)
    np.testing.assert_allclose(dz, da * a * (1 - a))  # dC/db components: sigma'(z) * dC/da
    da_prev = conv.backward(dz)
    dz2 = dz[0, 0]
    np.testing.assert_allclose(conv.grads["bias"], [dz2.sum()])
    np.testing.assert_allclose(conv.grads["weight"][0, 0],
                               scipy.signal.correlate2d(A_PREV, dz2, "valid"))
    np.testing.assert_allclose(da_prev[0, 0], scipy.signal.convolve2d(w, dz2, "full"))


def test_feature_map_gradients_by_hand():
    """With dZ all ones the three gradients are sums anyone can check on paper."""
    conv = conv_with(W)
    conv.forward(A_PREV[None, None])
    da_prev = conv.backward(np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(conv.grads["bias"], [4])
    np.testing.assert_array_equal(conv.grads["weight"][0, 0],
                                  [[12, 16], [24, 28]])  # sums of 2x2 underlays
    np.testing.assert_array_equal(da_prev[0, 0], [[10, 30, 20], [40, 100, 60], [30, 70, 40]])
    # Eq. 8.45: the same as correlating the zero-padded dZ with the kernel rotated 180 degrees.
    np.testing.assert_array_equal(da_prev[0, 0],
                                  scipy.signal.correlate2d(np.ones((2, 2)), np.rot90(W, 2), "full"))


def test_primer_4x5_max_pooling_with_overlapping_windows():
    """MaxPoolingMap on the primer's 4x5 input with a 2x2 overlay sliding by 1."""
    x = np.array([[8, 0, 11, 1, 6], [10, 2, 4, 14, 17], [5, 16, 19, 15, 7], [12, 13, 9, 18, 3]],
                 dtype=np.float64)
    pool = MaxPool2D(2, stride=1)
    out = pool.forward(x[None, None])
    np.testing.assert_array_equal(out[0, 0], [[10, 11, 14, 17], [16, 19, 19, 17], [16, 19, 19, 18]])
    dx = pool.backward(np.ones_like(out))[0, 0]
    # Each position receives one unit of gradient per window it wins: 19 wins four windows.
    np.testing.assert_array_equal(dx, [[0, 0, 1, 0, 0], [1, 0, 0, 1, 2], [0, 2, 4, 0, 0],
                                       [0, 0, 0, 1, 0]])


def test_272_parameters_for_16_feature_maps_of_4x4_on_28x28():
    layer = Conv2D(1, 16, 4)
    assert layer.output_shape((1, 28, 28)) == (16, 25, 25)
    assert sum(p.size for p in layer.params.values()) == 17 * 16 == 272


def weight_sharing_matrix(w, image_shape):
    """Eq. 8.12: the matrix that maps vec(P) to vec(Z), vec stacking columns (Eq. 8.26)."""
    (rows, cols), (r, c) = image_shape, w.shape
    out_rows, out_cols = rows - r + 1, cols - c + 1
    matrix = np.zeros((out_rows * out_cols, rows * cols))
    for n in range(out_cols):  # column-major order of the output z_{m,n}
        for m in range(out_rows):
            for i in range(r):
                for j in range(c):
                    matrix[n * out_rows + m, (n + j) * rows + (m + i)] = w[i, j]
    return matrix


def test_eq_8_12_weight_sharing_matrix_times_vec_image_equals_the_layer():
    w = np.array([[1.0, 2], [3, 4]])  # w11=1, w12=2, w21=3, w22=4
    matrix = weight_sharing_matrix(w, (3, 3))
    np.testing.assert_array_equal(matrix, [  # Eq. 8.12, row for row
        [1, 3, 0, 2, 4, 0, 0, 0, 0],
        [0, 1, 3, 0, 2, 4, 0, 0, 0],
        [0, 0, 0, 1, 3, 0, 2, 4, 0],
        [0, 0, 0, 0, 1, 3, 0, 2, 4]])
    p = np.random.default_rng(0).standard_normal((3, 3))
    z = conv_with(w, bias=0.0).forward(p[None, None])
    np.testing.assert_allclose(matrix @ p.ravel(order="F"), z[0, 0].ravel(order="F"))
    # The same on a bigger case, 4 feature maps deep in the columns of a Flatten("F").
    p = np.random.default_rng(1).standard_normal((5, 6))
    w = np.random.default_rng(2).standard_normal((3, 2))
    z = conv_with(w, bias=0.0).forward(p[None, None])
    np.testing.assert_allclose(weight_sharing_matrix(w, p.shape) @ p.ravel(order="F"),
                               Flatten("F").forward(z)[0], atol=1e-12)


def test_output_sizes_eq_8_18_and_exercise_8_7():
    assert Conv2D(1, 1, 3, stride=2, padding=1).output_shape((1, 15, 15)) == (1, 8, 8)  # E8.7 (i)
    assert Conv2D(1, 1, 3,
                  padding=1).output_shape((1, 15, 15)) == (1, 15, 15)  # E8.7 (ii): padding 1
    assert Conv2D(1, 1, 2, stride=2).output_shape((1, 4, 4)) == (1, 2, 2)  # Fig. 8.3
    assert MaxPool2D(3).output_shape((1, 15, 15)) == (1, 5, 5)  # Fig. 8.8


def test_eq_8_22_average_pooling_with_a_weight_and_its_gradients():
    """z = w * (window sum); P8.3: dA = w spread over the window; P8.4: dw = sum(dZ * window sums).
    """
    v = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    pool = AvgPool2D(2, trainable_scale=True, channels=1, dtype=np.float64)
    np.testing.assert_array_equal(pool.forward(v)[0, 0],
                                  [[2.5, 4.5], [10.5, 12.5]])  # starts as the mean
    pool.params["weight"][...] = 2.0
    z = pool.forward(v)
    np.testing.assert_array_equal(z[0, 0], [[20, 36], [84, 100]])
    dz = np.array([[[[1.0, 0], [0, -1]]]])
    dv = pool.backward(dz)
    np.testing.assert_array_equal(dv[0, 0],
                                  [[2, 2, 0, 0], [2, 2, 0, 0], [0, 0, -2, -2], [0, 0, -2, -2]])
    np.testing.assert_array_equal(pool.grads["weight"], [10 - 50])  # 1*(0+1+4+5) - 1*(10+11+14+15)


def test_untied_bias_has_one_value_per_output_neuron():
    """Fig. 8.1: an untied bias has the output's shape, and its gradient is dZ itself (summed over
    N)."""
    layer = Conv2D(1, 1, 2, bias="untied", input_size=(3, 3), dtype=np.float64)
    layer.params["weight"][0, 0] = W
    layer.params["bias"][0] = [[1, 2], [3, 4]]
    z = layer.forward(A_PREV[None, None])
    np.testing.assert_array_equal(z[0, 0], [[371, 472], [673, 774]])
    dz = np.array([[[[1.0, 2], [3, 4]]], [[[5, 6], [7, 8]]]])
    layer.forward(np.stack([A_PREV, A_PREV])[:, None])
    layer.backward(dz)
    np.testing.assert_array_equal(layer.grads["bias"], [[[6, 8], [10, 12]]])


def test_functional_tied_bias_gradient_is_the_sum_over_the_map():
    """Eq. 8.36: db is the sum of dN over every neuron of the map (and every sample)."""
    _, cache = F.conv2d_forward(np.ones((2, 1, 3, 3)), np.ones((1, 1, 2, 2)), np.zeros(1))
    _, _, db = F.conv2d_backward(np.arange(8.0).reshape(2, 1, 2, 2), cache)
    np.testing.assert_array_equal(db, [28])
