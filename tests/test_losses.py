"""Tests for cnn_im2col.losses: values vs direct float64 formulas, stability, gradients, validation.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from bad_input import (
    FINITE,
    LOGITS,
    REAL,
    ROW_FIELDS,
    all_of,
    bad_labels,
    check_bad_input,
    rows,
    with_value,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax

from cnn_im2col import losses
from cnn_im2col.gradcheck import check_loss
from cnn_im2col.losses import MeanSquaredError, SoftmaxCrossEntropy


def log_softmax_ref(z: np.ndarray) -> np.ndarray:
    """Direct float64 log-softmax: z - log(sum(exp(z))) with the max shift written out."""
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


@st.composite
def logits_and_labels(draw, max_n=6, max_k=7, scale=10.0):
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, max_k))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k)) * draw(st.sampled_from([0.1, 1.0, scale]))
    y = rng.integers(0, k, size=n)
    return z, y


# ---------------------------------------------------------------------------------------------
# SoftmaxCrossEntropy: values
# ---------------------------------------------------------------------------------------------

@settings(deadline=None, max_examples=60)
@given(logits_and_labels())
def test_cross_entropy_matches_log_softmax_reference(data):
    z, y = data
    loss = SoftmaxCrossEntropy()
    value = loss.forward(z, y)
    expected = -log_softmax_ref(z)[np.arange(len(y)), y].mean()
    assert isinstance(value, float)
    np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(value, -log_softmax(z, axis=1)[np.arange(len(y)), y].mean(),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loss.probabilities, np.exp(log_softmax(z, axis=1)), rtol=1e-12,
                               atol=1e-15)


@settings(deadline=None, max_examples=40)
@given(logits_and_labels())
def test_cross_entropy_one_hot_equals_labels(data):
    z, y = data
    onehot = np.eye(z.shape[1])[y]
    a, b = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    assert a.forward(z, y) == pytest.approx(b.forward(z, onehot), rel=1e-13, abs=1e-13)
    np.testing.assert_allclose(a.backward(), b.backward(), rtol=1e-13, atol=1e-15)


@settings(deadline=None, max_examples=40)
@given(logits_and_labels(), st.integers(0, 2**32 - 1))
def test_cross_entropy_probability_rows(data, seed):
    z, _ = data
    t = np.random.default_rng(seed).dirichlet(np.ones(z.shape[1]), size=z.shape[0])
    loss = SoftmaxCrossEntropy()
    expected = -(t * log_softmax(z, axis=1)).sum(axis=1).mean()
    np.testing.assert_allclose(loss.forward(z, t), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loss.backward(), (np.exp(log_softmax(z, axis=1)) - t) / len(z),
                               rtol=1e-10, atol=1e-15)


@settings(deadline=None, max_examples=40)
@given(logits_and_labels())
def test_cross_entropy_backward_formula(data):
    z, y = data
    loss = SoftmaxCrossEntropy()
    loss.forward(z, y)
    d = loss.backward()
    expected = (np.exp(log_softmax_ref(z)) - np.eye(z.shape[1])[y]) / len(y)
    assert d.dtype == np.float64 and d.shape == z.shape
    np.testing.assert_allclose(d, expected, rtol=1e-10, atol=1e-15)
    # rows of (softmax - onehot) sum to 0
    np.testing.assert_allclose(d.sum(axis=1), 0.0, atol=1e-15)


def test_cross_entropy_known_values():
    loss = SoftmaxCrossEntropy()
    assert loss.forward(np.zeros((2, 4)), [0, 3]) == pytest.approx(np.log(4), rel=1e-15)
    z = np.array([[1.0, 2.0, 3.0]])
    assert loss.forward(z, [2]) == pytest.approx(np.log(np.exp(1) + np.exp(2) + np.exp(3)) - 3,
                                                 rel=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_extreme_logits_exact_without_warnings(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-1e4, -1e4, -1e4]], dtype=dtype)
    y = np.array([1, 2, 0])
    loss = SoftmaxCrossEntropy()
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        value = loss.forward(z, y)
        d = loss.backward()
        onehot_value = SoftmaxCrossEntropy().forward(z, np.eye(3, dtype=dtype)[y])
    # row 0: -log softmax = 2e4; row 1: log 2; row 2: log 3
    expected = (2e4 + np.log(2) + np.log(3)) / 3
    assert np.isfinite(value) and np.isfinite(d).all()
    assert value == pytest.approx(expected, rel=1e-6 if dtype == np.float32 else 1e-15)
    assert onehot_value == pytest.approx(expected, rel=1e-6 if dtype == np.float32 else 1e-15)
    assert d.dtype == dtype
    expected_d = np.array([[1, -1, 0], [0, 0.5, -0.5], [1 / 3 - 1, 1 / 3, 1 / 3]]) / 3
    np.testing.assert_allclose(d, expected_d, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(loss.probabilities[0], [1, 0, 0])


def test_cross_entropy_float32_keeps_dtype_and_agrees_with_float64():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((8, 10)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    loss = SoftmaxCrossEntropy()
    value = loss.forward(z, y)
    d = loss.backward()
    assert d.dtype == np.float32 and loss.probabilities.dtype == np.float32
    ref = SoftmaxCrossEntropy()
    assert value == pytest.approx(ref.forward(z.astype(np.float64), y), rel=1e-6)
    np.testing.assert_allclose(d, ref.backward(), rtol=1e-5, atol=1e-7)


def test_cross_entropy_accepts_integer_dtypes_lists_and_whole_float_labels():
    z = np.random.default_rng(2).standard_normal((3, 4))
    expected = SoftmaxCrossEntropy().forward(z, np.array([0, 3, 1]))
    for y in ([0, 3, 1], np.array([0, 3, 1], dtype=np.uint8), np.array([0.0, 3.0, 1.0]), (0, 3, 1)):
        assert SoftmaxCrossEntropy().forward(z, y) == expected


def test_cross_entropy_strided_and_fortran_inputs():
    rng = np.random.default_rng(3)
    big = rng.standard_normal((10, 12))
    z = big[::2, 1::2]
    y = rng.integers(0, z.shape[1], z.shape[0])
    a, b, c = SoftmaxCrossEntropy(), SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    va, vb, vc = a.forward(z, y), b.forward(np.ascontiguousarray(z),
                                            y), c.forward(np.asfortranarray(z), y)
    assert va == pytest.approx(vb, rel=1e-15) and vc == pytest.approx(vb, rel=1e-15)
    np.testing.assert_allclose(a.backward(), b.backward(), rtol=1e-15)
    np.testing.assert_allclose(c.backward(), b.backward(), rtol=1e-15)


def test_cross_entropy_does_not_modify_inputs_and_backward_is_repeatable():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((4, 5))
    t = rng.dirichlet(np.ones(5), 4)
    z0, t0 = z.copy(), t.copy()
    loss = SoftmaxCrossEntropy()
    loss.forward(z, t)
    d1 = loss.backward()
    d1[:] = 0  # the caller owns the returned array
    d2 = loss.backward()
    np.testing.assert_array_equal(z, z0)
    np.testing.assert_array_equal(t, t0)
    assert np.abs(d2).sum() > 0


# ---------------------------------------------------------------------------------------------
# MeanSquaredError: values
# ---------------------------------------------------------------------------------------------

@settings(deadline=None, max_examples=60)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.integers(0, 2**32 - 1))
def test_mse_matches_direct_formula(shape, seed):
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal(shape)
    target = rng.standard_normal(shape)
    loss = MeanSquaredError()
    value = loss.forward(pred, target)
    np.testing.assert_allclose(value, np.mean((pred - target) ** 2), rtol=1e-13)
    d = loss.backward()
    assert d.shape == pred.shape and d.dtype == np.float64
    np.testing.assert_allclose(d, 2 * (pred - target) / pred.size, rtol=1e-13)


def test_mse_relation_to_primer_quadratic_cost():
    # The primer's C = 1/(2N) sum_n ||a_n - y_n||^2 equals (K / 2) * mean over all elements.
    rng = np.random.default_rng(5)
    a, y = rng.random((6, 10)), rng.random((6, 10))
    primer = np.sum((a - y) ** 2) / (2 * 6)
    assert MeanSquaredError().forward(a, y) * 10 / 2 == pytest.approx(primer, rel=1e-13)


def test_mse_integer_labels_are_one_hot():
    rng = np.random.default_rng(6)
    pred = rng.random((4, 3))
    labels = np.array([2, 0, 1, 1])
    a, b = MeanSquaredError(), MeanSquaredError()
    assert a.forward(pred, labels) == b.forward(pred, np.eye(3)[labels])
    np.testing.assert_array_equal(a.backward(), b.backward())


def test_mse_float32():
    rng = np.random.default_rng(7)
    pred = rng.random((5, 3)).astype(np.float32)
    target = rng.random((5, 3))
    loss = MeanSquaredError()
    value = loss.forward(pred, target)
    assert loss.backward().dtype == np.float32
    assert value == pytest.approx(
        np.mean((pred.astype(np.float64) - target.astype(np.float32)) ** 2), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# gradient checks (float64)
# ---------------------------------------------------------------------------------------------

@settings(deadline=None, max_examples=25)
@given(logits_and_labels(max_n=4, max_k=5, scale=5.0), st.booleans())
def test_cross_entropy_gradcheck(data, one_hot):
    z, y = data
    target = np.eye(z.shape[1])[y] if one_hot else y
    errors = check_loss(SoftmaxCrossEntropy(), z, target)
    assert errors["pred"] <= 1e-5


@settings(deadline=None, max_examples=15)
@given(logits_and_labels(max_n=4, max_k=5), st.integers(0, 2**32 - 1))
def test_cross_entropy_gradcheck_probability_rows(data, seed):
    z, _ = data
    t = np.random.default_rng(seed).dirichlet(np.ones(z.shape[1]), size=z.shape[0])
    check_loss(SoftmaxCrossEntropy(), z, t)


@settings(deadline=None, max_examples=25)
@given(logits_and_labels(max_n=4, max_k=5), st.sampled_from(["labels", "one_hot", "dense"]))
def test_mse_gradcheck(data, kind):
    z, y = data
    if kind == "labels":
        target = y
    elif kind == "one_hot":
        target = np.eye(z.shape[1])[y]
    else:
        target = np.random.default_rng(0).standard_normal(z.shape)
    check_loss(MeanSquaredError(), z, target)


def test_mse_gradcheck_4d():
    rng = np.random.default_rng(8)
    check_loss(MeanSquaredError(), rng.standard_normal((2, 3, 4, 2)),
               rng.standard_normal((2, 3, 4, 2)))


# ---------------------------------------------------------------------------------------------
# protocol: backward before forward, config, repr
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [SoftmaxCrossEntropy, MeanSquaredError])
def test_backward_before_forward(cls):
    with pytest.raises(RuntimeError,
                       match=rf"{cls.__name__}: backward\(\) called before forward\(\)"):
        cls().backward()


@pytest.mark.parametrize("cls", [SoftmaxCrossEntropy, MeanSquaredError])
def test_config_repr_roundtrip(cls):
    loss = cls()
    config = loss.config()
    assert json.loads(json.dumps(config)) == {"name": cls.__name__}
    assert isinstance(cls.from_config(config), cls)
    assert repr(loss) == f"{cls.__name__}()"
    with pytest.raises(ValueError, match="from_config"):
        cls.from_config({"name": "Other"})


def test_call_is_forward():
    z = np.random.default_rng(9).standard_normal((2, 3))
    assert SoftmaxCrossEntropy()(z, [0, 1]) == SoftmaxCrossEntropy().forward(z, [0, 1])


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------

Z = np.zeros((3, 4))


@pytest.mark.parametrize(
    "logits, target, exc, pattern",
    [
        (np.zeros(4), [0], ValueError,
         r"SoftmaxCrossEntropy: logits must be 2-D, got 1-D array of shape \(4,\)"),
        (np.zeros((2, 3, 4)), [0, 1], ValueError,
         r"logits must be 2-D, got 3-D array of shape \(2, 3, 4\)"),
        (np.zeros((0, 4)), np.zeros(0, int), ValueError,
         r"logits must not be empty, got shape \(0, 4\)"),
        (np.zeros((3, 0)), [0, 0, 0], ValueError, r"logits must not be empty, got shape \(3, 0\)"),
        (np.array([[np.nan, 0.0]]), [0], ValueError, r"logits contains NaN or Inf"),
        (np.array([[np.inf, 0.0]]), [0], ValueError, r"logits contains NaN or Inf"),
        (np.array([["a", "b"]]), [0], TypeError,
         r"logits must be a real numeric array.*got dtype <U1"),
        (np.zeros((1, 2), complex), [0], TypeError,
         r"logits must be a real numeric array.*complex128"),
        (np.zeros((1, 2), object), [0], TypeError, r"logits must be a real numeric array.*object"),
        (Z, [0, 1], ValueError,
         r"target has 2 labels \(shape \(2,\)\) but pred/logits has batch size 3"),
        (Z, [0, 1, 4], ValueError,
         r"target labels must be in \[0, 4\) for 4 classes, got 4 at index 2"),
        (Z, [0, -1, 2], ValueError,
         r"target labels must be in \[0, 4\) for 4 classes, got -1 at index 1"),
        (Z, [0, 1.5, 2], ValueError,
         r"target labels must be whole numbers in \[0, 4\), got 1.5 at index 1"),
        (Z, [0, np.nan, 2], ValueError,
         r"target labels must be whole numbers in \[0, 4\), got nan at index 1"),
        (Z, np.array([True, False, True]), TypeError,
         r"target labels must be integers in \[0, 4\).*got dtype bool"),
        (Z, np.array(["0", "1", "2"]), TypeError,
         r"target must be a real numeric array.*got dtype <U1"),
        (Z, np.array([0, 1, 2], dtype=object), TypeError,
         r"target must be a real numeric array.*got dtype object"),
        (Z, np.array([0, 1, 2], dtype=complex), TypeError,
         r"target must be a real numeric array.*complex128"),
        (Z, np.zeros((3, 5)), ValueError,
         r"target rows must have the shape of logits \(3, 4\), got shape \(3, 5\)"),
        (Z, np.zeros((3, 4, 1)), ValueError,
         r"target must be labels of shape \(3,\) or probability rows of shape \(3, 4\), got 3-D "
         r"array of shape \(3, 4, 1\)"),
        (Z, np.int64(1), ValueError, r"got 0-D array of shape \(\)"),
        (Z, np.full((3, 4), 0.5), ValueError,
         r"target rows must be probabilities summing to 1.*got row 0 summing to 2.0"),
        (Z, np.array([[1.5, -0.5, 0, 0]] * 3), ValueError,
         r"non-negative.*got -0.5 at index \(0, 1\)"),
        (Z, np.full((3, 4), np.nan), ValueError, r"target contains NaN or Inf"),
    ],
)
def test_cross_entropy_validation(logits, target, exc, pattern):
    with pytest.raises(exc, match=pattern):
        SoftmaxCrossEntropy().forward(logits, target)


@pytest.mark.parametrize(
    "pred, target, exc, pattern",
    [
        (np.zeros((3, 4)), np.zeros((3, 5)), ValueError,
         r"MeanSquaredError: target must have the shape of pred \(3, 4\) or labels of shape "
         r"\(3,\), got shape \(3, 5\)"),
        (np.zeros((2, 3, 4)), np.zeros((2, 3)), ValueError,
         r"MeanSquaredError: target must have the shape of pred \(2, 3, 4\), got shape \(2, 3\)"),
        (np.zeros(0), np.zeros(0), ValueError,
         r"MeanSquaredError: pred must not be empty, got shape \(0,\)"),
        (np.zeros((2, 2)), np.array([[0, np.inf], [0, 0]]), ValueError,
         r"MeanSquaredError: target contains NaN or Inf"),
        (np.array([[np.nan]]), np.zeros((1, 1)), ValueError,
         r"MeanSquaredError: pred contains NaN or Inf"),
        (np.zeros((2, 3)), [0, 3], ValueError,
         r"MeanSquaredError: target labels must be in \[0, 3\).*got 3 at index 1"),
        (np.zeros((2, 3)), [0, 1, 2], ValueError, r"target has 3 labels.*batch size 2"),
        (np.zeros((2, 3), complex), np.zeros((2, 3)), TypeError,
         r"MeanSquaredError: pred must be a real numeric array"),
        (np.zeros((2, 3)), np.zeros((2, 3), object), TypeError,
         r"MeanSquaredError: target must be a real numeric"),
        (np.zeros((2, 3)), [[0, 1], [2]], TypeError,
         r"MeanSquaredError: target must be a numeric array"),
    ],
)
def test_mse_validation(pred, target, exc, pattern):
    with pytest.raises(exc, match=pattern):
        MeanSquaredError().forward(pred, target)


def test_failed_forward_keeps_previous_state_usable():
    loss = SoftmaxCrossEntropy()
    z = np.random.default_rng(10).standard_normal((2, 3))
    loss.forward(z, [0, 1])
    d = loss.backward()
    with pytest.raises(ValueError):
        loss.forward(z, [0, 7])
    np.testing.assert_array_equal(loss.backward(), d)


# ------------------------------------------------------------------------------------------
# bad inputs: the battery's rows for losses (machinery: bad_input.py)
# ------------------------------------------------------------------------------------------

BAD_INPUTS = {
    "SoftmaxCrossEntropy 1-D logits": (
        lambda t: losses.SoftmaxCrossEntropy().forward(np.zeros(3), [0]), ValueError,
        r"SoftmaxCrossEntropy: logits", r"1-D array", r"must be 2-D"),
    "SoftmaxCrossEntropy label == K": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [0, 1, 4]),
        ValueError, r"SoftmaxCrossEntropy: target", r"got 4 at index 2",
        r"\[0, 4\) for 4 classes"),
    "SoftmaxCrossEntropy negative label": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [0, -1, 2]),
        ValueError, r"SoftmaxCrossEntropy: target", r"got -1 at index 1",
        r"\[0, 4\)"),
    "SoftmaxCrossEntropy label 1.5": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [0, 1.5, 2]),
        ValueError, r"SoftmaxCrossEntropy: target", r"got 1\.5 at index 1",
        r"whole numbers in \[0, 4\)"),
    "SoftmaxCrossEntropy NaN label": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [0, math.nan, 2]),
        ValueError, r"SoftmaxCrossEntropy: target", r"got nan at index 1",
        r"whole numbers"),
    "SoftmaxCrossEntropy too few labels": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [0, 1]),
        ValueError, r"SoftmaxCrossEntropy: target", r"has 2 labels",
        r"batch size 3; they must match"),
    "SoftmaxCrossEntropy bool labels": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [True, False, True]),
        TypeError, r"SoftmaxCrossEntropy: target", r"dtype bool",
        r"integers in \[0, 4\)"),
    "SoftmaxCrossEntropy string labels": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, ["a", "b", "c"]),
        TypeError, r"SoftmaxCrossEntropy: target", r"dtype <U1",
        r"real numeric array"),
    "SoftmaxCrossEntropy object labels": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [0, 1, None]),
        TypeError, r"SoftmaxCrossEntropy: target", r"dtype object",
        r"real numeric array"),
    "SoftmaxCrossEntropy NaN logits": (
        lambda t: losses.SoftmaxCrossEntropy().forward(with_value(LOGITS, np.nan), [0, 1, 2]),
        ValueError,
        r"SoftmaxCrossEntropy: logits", *FINITE),
    "SoftmaxCrossEntropy complex logits": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS.astype(complex), [0, 1, 2]),
        TypeError,
        r"SoftmaxCrossEntropy: logits", r"complex128", REAL),
    "SoftmaxCrossEntropy rows not summing to 1": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, np.full((3, 4), 0.5)), ValueError,
        r"SoftmaxCrossEntropy: target rows", r"row 0 summing to 2\.0", r"summing to 1"),
    "SoftmaxCrossEntropy negative probabilities": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [[1.5, -0.5, 0, 0]] * 3), ValueError,
        r"SoftmaxCrossEntropy: target rows", r"got -0\.5 at index \(0, 1\)", r"non-negative"),
    "SoftmaxCrossEntropy rows of the wrong shape": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, np.full((3, 5), 0.2)), ValueError,
        r"SoftmaxCrossEntropy: target rows", r"got shape \(3, 5\)", r"shape of logits \(3, 4\)"),
    "SoftmaxCrossEntropy 3-D target": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, np.zeros((3, 4, 1))),
        ValueError, r"SoftmaxCrossEntropy: target", r"3-D array",
        r"labels of shape \(3,\) or probability rows"),
    "SoftmaxCrossEntropy empty batch": (
        lambda t: losses.SoftmaxCrossEntropy().forward(np.zeros((0, 4)), np.zeros(0, int)),
        ValueError,
        r"SoftmaxCrossEntropy: logits", r"\(0, 4\)", r"must not be empty"),
    "MeanSquaredError target of the wrong shape": (
        lambda t: losses.MeanSquaredError().forward(LOGITS, np.zeros((3, 5))), ValueError,
        r"MeanSquaredError: target", r"got shape \(3, 5\)", r"shape of pred \(3, 4\)"),
    "MeanSquaredError object pred": (
        lambda t: losses.MeanSquaredError().forward(LOGITS.astype(object), LOGITS),
        TypeError, r"MeanSquaredError: pred", r"object", REAL),
    "MeanSquaredError label out of range": (
        lambda t: losses.MeanSquaredError().forward(LOGITS, [0, 1, 9]),
        ValueError, r"MeanSquaredError: target", r"got 9 at index 2",
        r"\[0, 4\)"),
    "MeanSquaredError Inf target": (
        lambda t: losses.MeanSquaredError().forward(LOGITS, np.full((3, 4), np.inf)),
        ValueError, r"MeanSquaredError: target", *FINITE),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)


@given(bad_labels(), st.sampled_from([losses.SoftmaxCrossEntropy, losses.MeanSquaredError]))
def test_random_bad_labels_for_the_losses(case, loss_class):
    n, k, labels, pattern = case
    logits = np.random.default_rng(0).standard_normal((n, k))
    with pytest.raises(ValueError, match=all_of(loss_class.__name__ + r": target", pattern)):
        loss_class().forward(logits, labels)


@pytest.mark.parametrize("loss_class", [SoftmaxCrossEntropy, MeanSquaredError])
@pytest.mark.parametrize("dense", [False, True])
def test_sample_losses_average_to_the_loss(loss_class, dense):
    rng = np.random.default_rng(3)
    pred = rng.standard_normal((7, 4)) * 3
    labels = rng.integers(0, 4, 7)
    target = np.eye(4)[labels] if dense else labels
    loss = loss_class()
    value = loss.forward(pred, target)
    per_sample = loss.sample_losses()
    assert per_sample.shape == (7,) and per_sample.dtype == np.float64
    assert per_sample.mean() == pytest.approx(value, rel=1e-12)
    one = loss_class()
    assert one.forward(pred[2:3], target[2:3]) == pytest.approx(per_sample[2], rel=1e-12)
    with pytest.raises(RuntimeError, match="backward\\(\\) called before forward\\(\\)|forward"):
        loss_class().sample_losses()
