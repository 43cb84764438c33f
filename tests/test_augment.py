"""Tests for cnn_im2col.augment: RandomShift."""

from __future__ import annotations

import pytest
from bad_input import INT0, NOT_NUMBERS, ROW_FIELDS, bad_int, check_bad_input, rows
from hypothesis import strategies as st

from cnn_im2col.augment import RandomShift

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
