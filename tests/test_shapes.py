"""shapes: the argument checks every public entry point relies on."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_im2col.shapes import (
    NonFiniteError,
    as_float_array,
    check_choice,
    check_float,
    check_int,
    conv_output_size,
    finite_scans_skipped,
    float_dtype,
    is_finite,
    pair,
    resolve_padding,
    window_geometry,
)


def test_pair_accepts_ints_and_pairs():
    assert pair(3, "k") == (3, 3)
    assert pair((2, 1), "k") == (2, 1)
    assert pair([4, 5], "k") == (4, 5)
    assert pair(np.int64(2), "k") == (2, 2)
    assert pair(0, "padding", minimum=0) == (0, 0)


@pytest.mark.parametrize(
    "value, error, message",
    [
        (0, ValueError, r"L: k must be an int >= 1 or a pair of them, got 0"),
        ((1, 2, 3), ValueError, r"got \(1, 2, 3\) \(length 3\)"),
        (2.0, TypeError, r"got 2.0"),
        (True, TypeError, r"got True"),
        ((2, "a"), TypeError, r"got \(2, 'a'\)"),
        (None, TypeError, r"got None"),
    ],
)
def test_pair_rejects(value, error, message):
    with pytest.raises(error, match=message):
        pair(value, "k", "L")


def test_check_int_and_float():
    assert check_int(np.int32(4), "n", minimum=1) == 4
    with pytest.raises(TypeError, match=r"Owner: n must be an int >= 1, got True \(bool\)"):
        check_int(True, "n", "Owner", minimum=1)
    with pytest.raises(ValueError, match=r"n must be an int >= 1, got 0"):
        check_int(0, "n", minimum=1)
    assert check_float(0.5, "p", low=0, high=1, high_open=True) == 0.5
    for bad in (1.0, float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match=r"Dropout: p must be a finite number in \[0.0, 1.0\)"):
            check_float(bad, "p", "Dropout", low=0.0, high=1.0, high_open=True)
    with pytest.raises(TypeError, match="p must be a real number, got '0.5'"):
        check_float("0.5", "p")


def test_check_choice_compares_type_and_value():
    assert check_choice("same", "padding", ("valid", "same")) == "same"
    assert check_choice(None, "bias", ("tied", None)) is None
    with pytest.raises(ValueError, match=r"bias must be one of \('tied', None\), got 0"):
        check_choice(0, "bias", ("tied", None))


def test_conv_output_size_is_eq_8_18():
    assert conv_output_size(28, 5, 1, 0) == 24
    assert conv_output_size(15, 3, 2, 1) == 8  # Exercise E8.7 (i)
    assert conv_output_size(4, 2, 2, 0) == 2  # Fig. 8.3
    assert conv_output_size(5, 2, 1, 0, 1) == 5  # asymmetric: "same" with an even kernel


def test_resolve_padding():
    assert resolve_padding("valid", (3, 3), (1, 1)) == (0, 0, 0, 0)
    assert resolve_padding("same", (3, 3), (1, 1)) == (1, 1, 1, 1)  # Exercise E8.7 (ii)
    assert resolve_padding("same", (4, 1), (1, 1)) == (1, 2, 0, 0)
    assert resolve_padding((1, 2), (3, 3), (2, 2)) == (1, 1, 2, 2)
    # strided: ceil(H / s) outputs, the extra cell at the end (ONNX's SAME_UPPER, TF's "SAME")
    assert resolve_padding("same", (3, 3), (2, 2), size=(7, 8)) == (1, 1, 0, 1)
    assert resolve_padding("same", (1, 1), (2, 2), size=(5, 5)) == (0, 0, 0, 0)
    assert resolve_padding("same", (5, 2), (3, 2), size=(9, 4)) == (1, 1, 0, 0)
    with pytest.raises(ValueError, match=r"Conv2D: padding='same' with stride \(1, 2\) depends"):
        resolve_padding("same", (3, 3), (1, 2), "Conv2D")


def test_window_geometry_rejects_a_kernel_larger_than_the_padded_input():
    g = window_geometry(5, 6, (3, 2), (1, 2), (1, 1, 0, 0))
    assert (g.oh, g.ow) == (5, 3)
    with pytest.raises(
        ValueError, match=r"X: kernel size \(8, 2\) is larger than the padded input \(7, 6\)"
    ):
        window_geometry(5, 6, (8, 2), (1, 1), (1, 1, 0, 0), "X")


def test_float_dtype():
    assert float_dtype("float64") == np.float64
    assert float_dtype(np.float32) == np.float32
    for bad in (np.int32, "complex128", "banana", np.float16, None):
        with pytest.raises(TypeError, match="dtype must be float32 or float64"):
            float_dtype(bad)


def test_as_float_array_converts_and_rejects():
    assert as_float_array(np.arange(4, dtype=np.uint8), "x").dtype == np.float32
    assert as_float_array(np.ones(2, dtype=np.float16), "x").dtype == np.float32
    assert as_float_array([True, False], "x").dtype == np.float32
    x64 = np.ones(3)
    assert as_float_array(x64, "x") is x64  # no needless copy
    with pytest.raises(TypeError, match="L: x must be a real numeric array .* got dtype <U1"):
        as_float_array(np.array(["a"]), "x", "L")
    with pytest.raises(TypeError, match="x must be a numeric array"):
        as_float_array([[1, 2], [3]], "x")
    with pytest.raises(ValueError, match=r"x must not be empty, got shape \(0, 3\)"):
        as_float_array(np.zeros((0, 3)), "x")
    with pytest.raises(ValueError, match=r"x must be 4-D, got 2-D array of shape \(2, 2\)"):
        as_float_array(np.zeros((2, 2)), "x", ndim=4)
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        as_float_array([1.0, np.inf], "x")


def test_finite_scans_skipped_only_inside_the_block_and_only_in_its_thread():
    import threading

    bad = np.array([1.0, np.nan])
    seen_in_other_thread = []
    with finite_scans_skipped():
        assert as_float_array(bad, "x", "t") is bad  # not scanned
        with finite_scans_skipped():  # nested blocks restore the outer state
            pass
        as_float_array(bad, "x", "t")

        def other():
            try:
                as_float_array(bad, "x", "t")
            except NonFiniteError:
                seen_in_other_thread.append(True)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen_in_other_thread == [True]
    with pytest.raises(NonFiniteError, match="t: x contains NaN or Inf"):
        as_float_array(bad, "x", "t")


@given(
    dtype=st.sampled_from([np.float32, np.float64]),
    size=st.integers(0, 300),
    bad=st.sampled_from([None, np.nan, np.inf, -np.inf]),
    where=st.floats(0, 1),
    huge=st.booleans(),
    strided=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_finite_check_equals_numpys(dtype, size, bad, where, huge, strided, seed):
    """shapes.is_finite (the compiled scan of every input check and of the training guard) says
    what np.isfinite(...).all() says: NaN and +-Inf anywhere, the largest finite values (whose
    sum overflows) still finite."""
    a = np.random.default_rng(seed).standard_normal(2 * size).astype(dtype)
    if huge:
        a[::3] = np.finfo(dtype).max
    if bad is not None and size:
        a[int(where * (2 * size - 1))] = bad
    view = a[::2] if strided else a
    assert is_finite(view) == bool(np.isfinite(view).all())


@settings(deadline=None, max_examples=60)
@given(
    dtype=st.sampled_from([np.float32, np.float64]),
    size=st.integers(1, 200),
    bad=st.sampled_from([None, np.nan, np.inf, -np.inf]),
    where=st.floats(0, 1),
    threads_wanted=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_finite_check_split_over_the_pool_equals_the_one_pass(dtype, size, bad, where,
                                                              threads_wanted, seed):
    """Above its threshold the scan is split over the pool's threads: the same answer as one pass
    wherever the bad value lies (the threshold lowered here so that small arrays are split)."""
    from cnn_im2col import shapes, threads

    a = np.random.default_rng(seed).standard_normal(size).astype(dtype)
    if bad is not None:
        a[int(where * (size - 1))] = bad
    old_threshold, old_threads = shapes._PARALLEL_SCAN, threads.get_num_threads()
    try:
        shapes._PARALLEL_SCAN = 1
        threads.set_num_threads(threads_wanted)
        assert is_finite(a) == bool(np.isfinite(a).all()) == (bad is None)
    finally:
        shapes._PARALLEL_SCAN = old_threshold
        threads.set_num_threads(old_threads)


def test_finite_check_of_a_large_array_is_split_and_exact():
    from cnn_im2col import shapes

    a = np.ones(shapes._PARALLEL_SCAN + 17, np.float32)
    assert is_finite(a)
    for where in (0, a.size // 2 - 1, a.size // 2, a.size - 1):
        a[where] = np.nan
        assert not is_finite(a)
        a[where] = 1.0
