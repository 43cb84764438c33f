"""Tests for cnn_im2col.augment: RandomShift."""

from __future__ import annotations

import numpy as np
import pytest
from bad_input import INT0, NOT_NUMBERS, ROW_FIELDS, bad_int, check_bad_input, rows
from hypothesis import strategies as st

from cnn_im2col.augment import RandomShift

# ------------------------------------------------------------------------------------------
# RandomShift: what it does to a batch
# ------------------------------------------------------------------------------------------


def test_random_shift_moves_whole_images():
    rng = np.random.default_rng(0)
    x = np.zeros((50, 2, 9, 9), np.float32)
    x[:, :, 2:7, 2:7] = rng.random((50, 2, 5, 5))  # a 2-pixel empty border: nothing falls off
    out = RandomShift(2)(x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == x.dtype and out.flags.c_contiguous
    shifts = set()
    for i in range(50):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(np.roll(x[i], (dy, dx), axis=(1, 2)), out[i])]
        assert found, i
        shifts.add(found[0])
    assert len(shifts) > 10  # both axes, several values
    np.testing.assert_allclose(out.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)), rtol=1e-6)
    again = RandomShift(2)(x, np.random.default_rng(1))
    np.testing.assert_array_equal(again, out)
    assert RandomShift(0)(x, rng) is x


def test_random_shift_fills_and_validates():
    x = np.ones((1, 1, 4, 4), np.float32)
    out = RandomShift(3, fill=0.0)(x, np.random.default_rng(2))
    assert out.sum() < 16 or np.array_equal(out, x)
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift(-1)
    with pytest.raises(TypeError, match="max_shift"):
        RandomShift(1.5)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        RandomShift(1)(np.ones((4, 4)), np.random.default_rng(0))


# ------------------------------------------------------------------------------------------
# bad inputs: the battery's rows for augmentations (machinery: bad_input.py)
# ------------------------------------------------------------------------------------------

BAD_INPUTS = {
    "RandomShift max_shift=-1": (lambda t: RandomShift(-1), ValueError, r"RandomShift: max_shift", r"got -1", INT0),
    "RandomShift fill='x'": (lambda t: RandomShift(1, fill="x"), TypeError, r"RandomShift: fill", r"got 'x'",
                             r"a number"),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)


# constructor -> (factory, valid keyword arguments, {argument: strategy of values it must refuse});
# test_errors.py draws a random invalid argument for a random constructor of this table and others
CONSTRUCTORS = {
    "RandomShift": (RandomShift, {}, {"max_shift": bad_int(0), "fill": st.one_of(st.booleans(), NOT_NUMBERS)}),
}
