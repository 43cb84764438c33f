"""Tests for cnn_im2col.gradcheck: the checks pass on correct gradients and provably fail on wrong
ones."""

from __future__ import annotations

import numpy as np
import pytest
from bad_input import ROW_FIELDS, check_bad_input, rows
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_im2col.gradcheck import (
    GradientCheckError,
    check_function,
    check_layer,
    check_loss,
    directional_derivative_check,
    numerical_gradient,
)
from cnn_im2col.layers import ReLU
from cnn_im2col.losses import MeanSquaredError, SoftmaxCrossEntropy

# ---------------------------------------------------------------------------------------------
# tiny float64 test layers (the layer protocol), correct and deliberately wrong
# ---------------------------------------------------------------------------------------------


class Affine:
    """y = x @ W.T + b, x (N, I), W (O, I), b (O,). ``bug`` selects a deliberate mistake."""

    def __init__(self, in_features, out_features, seed=0, bug=None, dtype=np.float64):
        rng = np.random.default_rng(seed)
        self.params = {
            "weight": rng.standard_normal((out_features, in_features)).astype(dtype),
            "bias": rng.standard_normal(out_features).astype(dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.bug = bug
        self.x = None

    def forward(self, x, training=False):
        self.x = x
        return x @ self.params["weight"].T + self.params["bias"]

    def backward(self, dout):
        w = self.params["weight"]
        dw = dout.T @ self.x
        db = dout.sum(axis=0)
        dx = dout @ w
        if self.bug == "weight_scale":
            dw = 2 * dw
        elif self.bug == "bias_missing_sum":
            db = dout[0].copy()
        elif self.bug == "dx_transposed_weight":
            dx = dout @ np.flip(w, axis=0)
        elif self.bug == "one_element":
            dw = dw.copy()
            dw[1, 2] += 1e-3
        # write into the layer's own buffers (as real layers may), the check must copy them
        self.grads["weight"][...] = dw
        self.grads["bias"][...] = db
        return dx


class Tanh:
    """Parameter-free elementwise layer."""

    def __init__(self):
        self.params = {}
        self.grads = {}

    def forward(self, x, training=False):
        self.y = np.tanh(x)
        return self.y

    def backward(self, dout):
        return dout * (1 - self.y**2)


class Scale:
    """y = s * x with a scalar-shaped parameter (0-d array)."""

    def __init__(self):
        self.params = {"s": np.array(1.7)}
        self.grads = {"s": np.array(0.0)}

    def forward(self, x, training=False):
        self.x = x
        return self.params["s"] * x

    def backward(self, dout):
        self.grads["s"] = np.array(np.sum(dout * self.x))
        return dout * self.params["s"]


# ---------------------------------------------------------------------------------------------
# numerical_gradient
# ---------------------------------------------------------------------------------------------

def test_numerical_gradient_polynomial():
    x = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.5]])
    g = numerical_gradient(lambda: float(np.sum(x**3) + np.sum(x[0] * x[1])), x)
    expected = 3 * x**2 + np.vstack([x[1], x[0]])
    np.testing.assert_allclose(g, expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("layout", ["C", "F", "strided", "negative_stride", "0-d"])
def test_numerical_gradient_any_strides_restores_exactly(layout):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 8))
    if layout == "C":
        x = base.copy()
    elif layout == "F":
        x = np.asfortranarray(base)
    elif layout == "strided":
        x = base[::2, 1::3]
    elif layout == "negative_stride":
        x = base[::-1, ::-2]
    else:
        x = np.array(0.7)
    before = base.copy()
    x_before = x.copy()
    c = rng.standard_normal(x.shape)
    g = numerical_gradient(lambda: float(np.sum(c * np.sin(x))), x)
    np.testing.assert_allclose(g, c * np.cos(x_before), rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(base, before)
    assert g.shape == x.shape and g.flags.c_contiguous


def test_numerical_gradient_restores_when_f_raises():
    x = np.arange(4.0)
    calls = []

    def f():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return float(np.sum(x))

    with pytest.raises(RuntimeError, match="boom"):
        numerical_gradient(f, x)
    np.testing.assert_array_equal(x, np.arange(4.0))


@pytest.mark.parametrize(
    "x, exc, pattern",
    [
        (np.zeros(3, np.float32), TypeError,
         r"numerical_gradient: x must be float64 for a gradient check, got dtype float32"),
        ([1.0, 2.0], TypeError, r"numerical_gradient: x must be a float64 ndarray, got list"),
        (np.broadcast_to(np.zeros(1), (3,)), ValueError,
         r"numerical_gradient: x must be writeable"),
    ],
)
def test_numerical_gradient_validation(x, exc, pattern):
    with pytest.raises(exc, match=pattern):
        numerical_gradient(lambda: 0.0, x)


def test_numerical_gradient_eps_validation():
    with pytest.raises(ValueError,
                       match=r"numerical_gradient: eps must be a finite number in \(0.0, "
                             r"inf\], got 0.0"):
        numerical_gradient(lambda: 0.0, np.zeros(2), eps=0.0)


# ---------------------------------------------------------------------------------------------
# directional_derivative_check
# ---------------------------------------------------------------------------------------------

def test_directional_check_passes_and_fails():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((50, 40))
    x = rng.standard_normal((50, 40))
    x0 = x.copy()

    def f():
        return float(np.sum(a * x**2))

    rel = directional_derivative_check(f, x, 2 * a * x)
    assert rel < 1e-7
    np.testing.assert_array_equal(x, x0)
    with pytest.raises(GradientCheckError,
                       match=r"gradient check failed for 'w' along a random direction.*"
                             r"relative error") as info:
        directional_derivative_check(f, x, 2.01 * a * x, rng=3, name="w")
    assert info.value.errors["w"] > 1e-3
    assert isinstance(info.value, AssertionError)
    np.testing.assert_array_equal(x, x0)


def test_directional_check_is_deterministic_by_default():
    x = np.random.default_rng(2).standard_normal(10)
    g = 1.001 * np.cos(x)
    errors = []
    for _ in range(2):
        with pytest.raises(GradientCheckError) as info:
            directional_derivative_check(lambda: float(np.sum(np.sin(x))), x, g)
        errors.append(info.value.errors["x"])
    assert errors[0] == errors[1]


def test_directional_check_validation():
    x = np.zeros(3)
    with pytest.raises(ValueError, match=r"analytic_grad has shape \(4,\) but x has shape \(3,\)"):
        directional_derivative_check(lambda: 0.0, x, np.zeros(4))
    with pytest.raises(TypeError,
                       match=r"x must be float64 for a gradient check, got dtype float32"):
        directional_derivative_check(lambda: 0.0, x.astype(np.float32), np.zeros(3))
    with pytest.raises(ValueError, match=r"rtol must be a finite number in \(0.0, inf\], got 0.0"):
        directional_derivative_check(lambda: 0.0, x, np.zeros(3), rtol=0)


# ---------------------------------------------------------------------------------------------
# check_layer
# ---------------------------------------------------------------------------------------------

@settings(deadline=None, max_examples=25)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**32 - 1),
       st.booleans())
def test_check_layer_passes_correct_affine(n, i, o, seed, directional):
    x = np.random.default_rng(seed).standard_normal((n, i))
    errors = check_layer(Affine(i, o, seed=seed), x, seed=seed, directional=directional)
    assert set(errors) == {"x", "weight", "bias"}
    assert all(0 <= e <= 1e-5 for e in errors.values())


@pytest.mark.parametrize(
    "bug, name",
    [("weight_scale", "weight"), ("bias_missing_sum", "bias"), ("dx_transposed_weight", "x"),
     ("one_element", "weight")],
)
@pytest.mark.parametrize("directional", [False, True])
def test_check_layer_catches_wrong_gradients(bug, name, directional):
    x = np.random.default_rng(0).standard_normal((4, 3))
    with pytest.raises(GradientCheckError) as info:
        check_layer(Affine(3, 5, bug=bug), x, directional=directional)
    message = str(info.value)
    assert f"'{name}'" in message
    assert info.value.errors[name] > 1e-5
    others = {k: v for k, v in info.value.errors.items() if k != name}
    assert all(v <= 1e-5 for v in others.values())  # only the wrong array is blamed
    if directional:
        assert "along a random unit direction" in message
    else:
        assert ("max abs error" in message and "max relative error" in message
                and "at index (" in message)
        assert f"'{name}': max abs error" in message


def test_check_layer_message_pinpoints_single_wrong_element():
    x = np.random.default_rng(0).standard_normal((4, 3))
    with pytest.raises(GradientCheckError,
                       match=r"'weight': max abs error 0.001 at index \(1, 2\).*"
                             r"1 of 15 elements out of tolerance"):
        check_layer(Affine(3, 5, bug="one_element"), x)


def test_check_layer_parameter_free_and_0d_param():
    x = np.random.default_rng(3).standard_normal((2, 3, 4))
    assert set(check_layer(Tanh(), x)) == {"x"}
    assert set(check_layer(Scale(), x)) == {"x", "s"}


def test_check_layer_strided_input_is_seen_and_restored():
    base = np.random.default_rng(4).standard_normal((8, 6))
    x = base[::2, ::2]
    before = base.copy()
    layer = Affine(3, 2)
    check_layer(layer, x)
    assert layer.x is x  # the layer saw the caller's (strided) array itself
    np.testing.assert_array_equal(base, before)
    for k, original in Affine(3, 2).params.items():  # same seed: the values before the check
        np.testing.assert_array_equal(layer.params[k], original)


def test_check_layer_read_only_input_is_copied():
    x = np.random.default_rng(5).standard_normal((2, 3))
    x.flags.writeable = False
    check_layer(Affine(3, 2), x)


def test_check_layer_requires_float64():
    x = np.zeros((2, 3))
    with pytest.raises(TypeError,
                       match=r"check_layer\(Affine\): x must be float64 for a gradient check, got "
                             r"dtype float32"):
        check_layer(Affine(3, 2), x.astype(np.float32))
    with pytest.raises(TypeError,
                       match=r"check_layer\(Affine\): params\['weight'\] must be float64.*float32"):
        check_layer(Affine(3, 2, dtype=np.float32), x)


def test_check_layer_protocol_violations():
    class WrongShape(Affine):
        def backward(self, dout):
            super().backward(dout)
            return dout

    class MissingGrad(Affine):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads = {"weight": self.grads["weight"]}
            return dx

    x = np.zeros((2, 3))
    with pytest.raises(GradientCheckError, match=r"backward returned dx of shape \(2, 4\); "
                                                 r"expected x's shape \(2, 3\)"):
        check_layer(WrongShape(3, 4), x)
    with pytest.raises(GradientCheckError, match=r"grads has keys \['weight'\] but params has "
                                                 r"keys \['bias', 'weight'\]"):
        check_layer(MissingGrad(3, 4), x)


def test_check_layer_tolerance_controls_outcome():
    x = np.random.default_rng(6).standard_normal((4, 3))
    with pytest.raises(GradientCheckError):
        check_layer(Affine(3, 5, bug="one_element"), x)
    errors = check_layer(Affine(3, 5, bug="one_element"), x, rtol=0.1, atol=0.01)
    assert errors["weight"] <= 0.1


def test_check_layer_seed_is_deterministic():
    x = np.random.default_rng(7).standard_normal((3, 3))
    assert check_layer(Affine(3, 2), x, seed=5) == check_layer(Affine(3, 2), x, seed=5)


# ---------------------------------------------------------------------------------------------
# check_function and check_loss
# ---------------------------------------------------------------------------------------------

def test_check_function_stateless_pair():
    cache = {}

    def forward(x):
        cache["x"] = x
        return np.maximum(x, 0) ** 2

    def backward(dout):
        return dout * 2 * np.maximum(cache["x"], 0)

    x = np.random.default_rng(8).standard_normal((3, 4)) + 0.01  # away from the kink
    assert set(check_function(forward, backward, x)) == {"x"}
    with pytest.raises(GradientCheckError, match=r"'x': max abs error"):
        check_function(forward, lambda d: 3 * backward(d), x)


def test_check_loss_correct_and_wrong():
    rng = np.random.default_rng(9)
    z = rng.standard_normal((4, 5))
    y = rng.integers(0, 5, 4)
    assert check_loss(SoftmaxCrossEntropy(), z, y)["pred"] <= 1e-5
    assert check_loss(MeanSquaredError(), z, y, directional=True)["pred"] <= 1e-5

    class SumNotMean(SoftmaxCrossEntropy):
        def backward(self):
            return super().backward() * 4  # forgot to divide by N

    with pytest.raises(GradientCheckError,
                       match=r"(?s)check_loss\(SumNotMean\).*'pred': max abs error"):
        check_loss(SumNotMean(), z, y)
    with pytest.raises(TypeError, match=r"check_loss\(MeanSquaredError\): pred must be float64"):
        check_loss(MeanSquaredError(), z.astype(np.float32), y)


# ------------------------------------------------------------------------------------------
# bad inputs: the battery's rows for gradcheck (machinery: bad_input.py)
# ------------------------------------------------------------------------------------------

BAD_INPUTS = {
    "check_layer with float32 x": (lambda t: check_layer(ReLU(), np.ones((2, 2), np.float32)),
                                   TypeError,
                                   r"check_layer\(ReLU\): x", r"float32", r"float64"),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)
