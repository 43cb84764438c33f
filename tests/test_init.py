"""Tests for cnn_im2col.init: make_rng, fans, distributions, determinism, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bad_input import INT0, INT1, ROW_FIELDS, check_bad_input, rows
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_im2col import init
from cnn_im2col.init import (
    compute_fans,
    glorot_normal,
    glorot_uniform,
    he_normal,
    he_uniform,
    make_rng,
)

# ---------------------------------------------------------------------------------------------
# make_rng
# ---------------------------------------------------------------------------------------------


def test_make_rng_int_seed_is_reproducible():
    a, b = make_rng(42), make_rng(42)
    np.testing.assert_array_equal(a.standard_normal(5), b.standard_normal(5))
    assert not np.array_equal(make_rng(1).standard_normal(5), make_rng(2).standard_normal(5))
    np.testing.assert_array_equal(make_rng(np.int64(7)).random(3), make_rng(7).random(3))


def test_make_rng_generator_passthrough_and_none():
    gen = np.random.default_rng(0)
    assert make_rng(gen) is gen
    assert isinstance(make_rng(None), np.random.Generator)
    assert isinstance(make_rng(), np.random.Generator)


@pytest.mark.parametrize("seed", [1.0, "1", True, np.random.RandomState(0), [1], np.float64(3.0)])
def test_make_rng_rejects_other_types(seed):
    with pytest.raises(TypeError,
                       match=r"make_rng: seed must be None, an int >= 0 or a "
                             r"numpy.random.Generator, got"):
        make_rng(seed)


def test_make_rng_rejects_negative():
    with pytest.raises(ValueError, match=r"make_rng: seed must be an int >= 0, got -1"):
        make_rng(-1)


# ---------------------------------------------------------------------------------------------
# fans
# ---------------------------------------------------------------------------------------------

def test_compute_fans():
    assert compute_fans((64, 32, 3, 5)) == (32 * 15, 64 * 15)  # conv (O, C, KH, KW)
    assert compute_fans((10, 784)) == (784, 10)  # dense (out, in)
    assert compute_fans((7,)) == (7, 7)
    assert compute_fans(7) == (7, 7)
    assert compute_fans([4, 2, 3]) == (6, 12)


# ---------------------------------------------------------------------------------------------
# distributions
# ---------------------------------------------------------------------------------------------

INITS = {
    "he_normal": lambda shape, fi, fo, rng, dtype: he_normal(shape, fi, rng, dtype),
    "he_uniform": lambda shape, fi, fo, rng, dtype: he_uniform(shape, fi, rng, dtype),
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
}


def expected_std(name, fan_in, fan_out):
    return math.sqrt(2 / fan_in) if name.startswith("he") else math.sqrt(2 / (fan_in + fan_out))


@pytest.mark.parametrize("name", sorted(INITS))
def test_statistics_conv_shape(name):
    shape = (256, 64, 3, 3)
    fan_in, fan_out = 64 * 9, 256 * 9
    w = INITS[name](shape, fan_in, fan_out, make_rng(0), np.float64)
    assert w.shape == shape and w.dtype == np.float64
    std = expected_std(name, fan_in, fan_out)
    assert abs(w.mean()) < 0.01 * std
    assert w.std() == pytest.approx(std, rel=0.01)
    if name.endswith("uniform"):
        limit = math.sqrt(3) * std
        assert np.abs(w).max() <= limit
        assert np.abs(w).max() > 0.99 * limit
    else:
        # normal, not truncated: some samples beyond 3 sigma (expected ~0.27% of 147456)
        assert np.count_nonzero(np.abs(w) > 3 * std) > 100


@pytest.mark.parametrize("name", sorted(INITS))
def test_default_fans_from_shape(name):
    shape = (32, 16, 5, 5)
    a = INITS[name](shape, None, None, make_rng(3), np.float64)
    b = INITS[name](shape, 16 * 25, 32 * 25, make_rng(3), np.float64)
    np.testing.assert_array_equal(a, b)


def test_explicit_formulas_against_generator():
    shape = (4, 3)
    g = np.random.default_rng(5)
    np.testing.assert_array_equal(he_normal(shape, 3, make_rng(5), np.float64),
                                  g.standard_normal(shape) * math.sqrt(2 / 3))
    g = np.random.default_rng(5)
    np.testing.assert_array_equal(
        glorot_uniform(shape, 3, 4, make_rng(5), np.float64),
        g.uniform(-math.sqrt(6 / 7), math.sqrt(6 / 7), shape)
    )


@settings(deadline=None, max_examples=40)
@given(
    name=st.sampled_from(sorted(INITS)),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple),
    seed=st.integers(0, 2**63),
    dtype=st.sampled_from([np.float32, np.float64, "float32", np.dtype("float64")]),
)
def test_same_seed_same_numbers_and_dtype(name, shape, seed, dtype):
    a = INITS[name](shape, None, None, make_rng(seed), dtype)
    b = INITS[name](shape, None, None, seed, dtype)  # an int seed is accepted directly
    assert a.dtype == np.dtype(dtype) and a.shape == shape
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all()


@pytest.mark.parametrize("name", sorted(INITS))
def test_float32_is_float64_rounded(name):
    w64 = INITS[name]((8, 4, 3, 3), None, None, 11, np.float64)
    w32 = INITS[name]((8, 4, 3, 3), None, None, 11, np.float32)
    np.testing.assert_array_equal(w32, w64.astype(np.float32))


def test_generator_state_advances():
    rng = make_rng(0)
    a = he_uniform((5,), 5, rng)
    b = he_uniform((5,), 5, rng)
    assert not np.array_equal(a, b)
    assert a.dtype == np.float32  # default dtype


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (lambda: he_normal((3, 0), None, 0), ValueError,
         r"he_normal: shape must be an int >= 1 or a non-empty tuple of them, got \(3, 0\)"),
        (lambda: he_normal((), None, 0), TypeError, r"he_normal: shape must be .*got \(\)"),
        (lambda: he_uniform((3, 2.0), None, 0), TypeError,
         r"he_uniform: shape must be .*got \(3, 2.0\)"),
        (lambda: he_uniform("3", None, 0), TypeError, r"he_uniform: shape must be .*got '3'"),
        (lambda: he_normal((3, 2), 0, 0), ValueError,
         r"he_normal: fan_in must be an int >= 1, got 0"),
        (lambda: he_normal((3, 2), 2.5, 0), TypeError,
         r"he_normal: fan_in must be an int >= 1, got 2.5 \(float\)"),
        (lambda: glorot_normal((3, 2), 2, -1, 0), ValueError,
         r"glorot_normal: fan_out must be an int >= 1, got -1"),
        (lambda: glorot_uniform((3, 2), None, None, None), TypeError,
         r"glorot_uniform: rng must be a numpy.random.Generator or an int seed >= 0, got None "
         r"\(NoneType\)"),
        (lambda: glorot_uniform((3, 2), None, None, np.random.RandomState(0)), TypeError,
         r"glorot_uniform: rng must be .*\(RandomState\)"),
        (lambda: he_normal((3, 2), None, -5), TypeError, r"he_normal: rng must be .*got -5"),
        (lambda: he_normal((3, 2), None, 0, np.float16), TypeError,
         r"he_normal: dtype must be float32 or float64"),
        (lambda: he_normal((3, 2), None, 0, int), TypeError,
         r"he_normal: dtype must be float32 or float64"),
        (lambda: compute_fans((2, -1)), ValueError, r"compute_fans: shape must be .*got \(2, -1\)"),
    ],
)
def test_validation(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


# ------------------------------------------------------------------------------------------
# bad inputs: the battery's rows for init (machinery: bad_input.py)
# ------------------------------------------------------------------------------------------

BAD_INPUTS = {
    "make_rng(-1)": (lambda t: init.make_rng(-1), ValueError, r"make_rng: seed", r"got -1", INT0),
    "make_rng(1.5)": (lambda t: init.make_rng(1.5), TypeError, r"make_rng: seed", r"got 1\.5",
                      r"None, an int >= 0 or a numpy\.random\.Generator"),
    "make_rng(RandomState)": (lambda t: init.make_rng(np.random.RandomState(0)), TypeError,
                              r"make_rng: seed",
                              r"RandomState", r"numpy\.random\.Generator"),
    "he_normal shape (0, 3)": (lambda t: init.he_normal((0, 3), None, 0), ValueError,
                               r"he_normal: shape",
                               r"got \(0, 3\)", r"an int >= 1 or a non-empty tuple"),
    "he_normal fan_in=0": (lambda t: init.he_normal((2, 3), 0, 0), ValueError, r"he_normal: fan_in",
                           r"got 0", INT1),
    "he_normal rng=None": (lambda t: init.he_normal((2, 3), None, None), TypeError,
                           r"he_normal: rng", r"got None",
                           r"a numpy\.random\.Generator or an int seed"),
    "glorot_uniform dtype=int": (lambda t: init.glorot_uniform((2, 3), None, None, 0, dtype=int),
                                 TypeError,
                                 r"glorot_uniform: dtype", r"int", r"float32 or float64"),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)


def test_manual_seed_governs_every_layer_built_without_a_seed():
    from cnn_im2col import Sequential, manual_seed
    from cnn_im2col.layers import Conv2D, Dense, Dropout

    config = {"layers": [{"class": "Conv2D", "config": {"in_channels": 1, "out_channels": 2,
                                                         "kernel_size": 3}},
                         {"class": "Flatten", "config": {}},
                         {"class": "Dense", "config": {"in_features": 8, "out_features": 3}}]}
    try:
        runs = []
        for seed in (5, 5, 6):
            manual_seed(seed)
            model = Sequential.from_config(config)
            dropout = Dropout(0.5)
            runs.append((model.params, dropout.rng.random(4)))
        for key in runs[0][0]:
            np.testing.assert_array_equal(runs[0][0][key], runs[1][0][key])
            if key.endswith("weight"):  # biases start at zero whatever the seed
                assert not np.array_equal(runs[0][0][key], runs[2][0][key])
        np.testing.assert_array_equal(runs[0][1], runs[1][1])
        # an explicit seed still wins, whatever the global seed
        manual_seed(7)
        a = Dense(4, 2, seed=1).params["weight"]
        manual_seed(8)
        np.testing.assert_array_equal(a, Dense(4, 2, seed=1).params["weight"])
        assert Conv2D(1, 1, 3).config()["seed"] is None  # the config still says "unseeded"
    finally:
        manual_seed(None)
    # without a global seed, unseeded layers differ
    assert not np.array_equal(Dense(4, 2).params["weight"], Dense(4, 2).params["weight"])
    with pytest.raises(ValueError, match=r"manual_seed: seed must be an int >= 0, got -1"):
        manual_seed(-1)
