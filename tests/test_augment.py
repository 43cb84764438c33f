"""Tests for cnn_im2col.augment: RandomShift against a pixel-by-pixel twin (shapes, dtypes,
bounds), its draws (per image, uniform, decided by the generator alone), the generator ``fit``
hands an augmentation, and its bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from bad_input import INT0, NOT_NUMBERS, ROW_FIELDS, bad_int, check_bad_input, rows
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col.augment import RandomShift
from cnn_im2col.layers import Dense, Flatten
from cnn_im2col.losses import SoftmaxCrossEntropy
from cnn_im2col.model import Sequential
from cnn_im2col.optim import SGD

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


def shifted(image, dy, dx, fill):
    """The slow twin: ``image`` (C, H, W) moved down by ``dy`` and right by ``dx`` rows and
    columns, the pixels moved in set to ``fill``."""
    out = np.full_like(image, fill)
    _, h, w = image.shape
    for r in range(h):
        for c in range(w):
            if 0 <= r - dy < h and 0 <= c - dx < w:
                out[:, r, c] = image[:, r - dy, c - dx]
    return out


def shifts_of(x, out, max_shift, fill):
    """For each image, the shifts ``(dy, dx)`` in ``-max_shift..max_shift`` that turn ``x[i]``
    into ``out[i]`` (empty when none does)."""
    span = range(-max_shift, max_shift + 1)
    return [{(dy, dx) for dy in span for dx in span
             if np.array_equal(shifted(x[i], dy, dx, fill), out[i])} for i in range(len(x))]


@given(n=st.integers(1, 5), c=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7),
       max_shift=st.integers(0, 9), fill=st.sampled_from([0.0, -1.0, 2.5]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_every_image_is_its_input_moved_by_at_most_max_shift(n, c, h, w, max_shift, fill, dtype,
                                                             seed):
    """Any batch shape, shifts larger than the image included: the output has the input's shape
    and dtype, and each image is its input moved as a whole (every channel alike) by some
    (dy, dx) within the bounds, the pixels moved in equal to ``fill``; the input is not
    changed."""
    x = np.random.default_rng(seed).random((n, c, h, w)).astype(dtype) + 1  # never equal to fill
    before = x.copy()
    out = RandomShift(max_shift, fill=fill)(x, np.random.default_rng(seed + 1))
    assert out.shape == x.shape and out.dtype == x.dtype and out.flags.c_contiguous
    np.testing.assert_array_equal(x, before)
    assert all(shifts_of(x, out, max_shift, fill)), "an image that is no shift of its input"


def test_shifts_are_drawn_per_image_uniformly_over_the_whole_range():
    """Each image has its own shift; over many images every value of -s..s occurs on both axes,
    and nothing beyond."""
    x = np.random.default_rng(0).random((400, 1, 9, 9)) + 1
    out = RandomShift(2, fill=0.0)(x, np.random.default_rng(3))
    found = shifts_of(x, out, 4, 0.0)  # searched up to 4: shifts of 3 or 4 would show
    assert all(len(shifts) == 1 for shifts in found)  # distinct pixel values: one shift each
    shifts = [next(iter(s)) for s in found]
    assert {dy for dy, _ in shifts} == {-2, -1, 0, 1, 2}
    assert {dx for _, dx in shifts} == {-2, -1, 0, 1, 2}
    assert len(set(shifts)) == 25
    counts = np.bincount([dy + 2 for dy, _ in shifts], minlength=5)
    assert counts.min() > 400 / 5 / 2  # roughly uniform: none drawn less than half as often


def test_an_images_shift_depends_on_the_generator_and_its_place_not_on_the_other_images():
    rng = np.random.default_rng(1)
    x = rng.random((8, 2, 6, 6)) + 1
    other = x.copy()
    other[[0, 3, 7]] = rng.random((3, 2, 6, 6)) + 1  # the other images changed
    a = RandomShift(2)(x, np.random.default_rng(9))
    b = RandomShift(2)(other, np.random.default_rng(9))
    for i in (1, 2, 4, 5, 6):
        np.testing.assert_array_equal(a[i], b[i], err_msg=str(i))
    assert shifts_of(x, a, 2, 0.0) == shifts_of(other, b, 2, 0.0)


def test_the_generator_alone_decides_the_shifts():
    x = np.random.default_rng(0).random((50, 1, 8, 8)) + 1
    shift = RandomShift(3)
    np.random.seed(0)
    first = shift(x, np.random.default_rng(42))
    np.random.seed(1)  # numpy's global state plays no part
    np.testing.assert_array_equal(shift(x, np.random.default_rng(42)), first)
    assert not np.array_equal(shift(x, np.random.default_rng(43)), first)
    rng = np.random.default_rng(42)
    shift(x, rng)
    assert not np.array_equal(shift(x, rng), first)  # the generator advances: a new draw


def test_fit_hands_augment_a_generator_keyed_by_seed_epoch_and_batch():
    """``fit(augment=aug, seed=s)`` calls ``aug(x, default_rng([s, epoch, batch]))`` (0-based), so
    a run's augmentation is the same however it is interrupted and resumed."""
    calls = []

    def recording(x, rng):
        calls.append(rng.integers(0, 2**62))
        return x

    x = np.random.default_rng(0).random((10, 1, 6, 6)).astype(np.float32)
    y = np.arange(10) % 3
    model = Sequential([Flatten(), Dense(36, 3, seed=0)])
    model.fit(x, y, epochs=2, batch_size=4, optimizer=SGD(0.1), loss=SoftmaxCrossEntropy(), seed=7,
              augment=recording, progress=False, log=None)
    expected = [np.random.default_rng([7, epoch, batch]).integers(0, 2**62)
                for epoch in range(2) for batch in range(3)]
    assert calls == expected


# ------------------------------------------------------------------------------------------
# bad inputs: the battery's rows for augmentations (machinery: bad_input.py)
# ------------------------------------------------------------------------------------------

BAD_INPUTS = {
    "RandomShift max_shift=-1": (lambda t: RandomShift(-1), ValueError, r"RandomShift: max_shift",
                                 r"got -1", INT0),
    "RandomShift fill='x'": (lambda t: RandomShift(1, fill="x"), TypeError, r"RandomShift: fill",
                             r"got 'x'",
                             r"a number"),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)


# constructor -> (factory, valid keyword arguments, {argument: strategy of values it must refuse});
# test_errors.py draws a random invalid argument for a random constructor of this table and others
CONSTRUCTORS = {
    "RandomShift": (RandomShift, {},
                    {"max_shift": bad_int(0), "fill": st.one_of(st.booleans(), NOT_NUMBERS)}),
}


def test_random_flip_mirrors_the_images_it_draws_and_compose_keeps_each_draw_apart():
    from cnn_im2col.augment import Compose, RandomFlip, RandomShift

    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    x = np.concatenate([x] * 50)  # 100 images
    out = RandomFlip(0.5)(x, np.random.default_rng(0))
    flipped = np.array([np.array_equal(o, i[:, :, ::-1]) for o, i in zip(out, x)])
    kept = np.array([np.array_equal(o, i) for o, i in zip(out, x)])
    assert (flipped | kept).all() and 30 < flipped.sum() < 70
    expected = np.random.default_rng(0).random(100) < 0.5
    np.testing.assert_array_equal(flipped, expected)
    np.testing.assert_array_equal(RandomFlip(0.0)(x, np.random.default_rng(1)), x)
    both = Compose([RandomShift(1), RandomFlip()])
    a, b = both(x, np.random.default_rng(5)), both(x, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"RandomFlip: p must be a probability in \[0, 1\], got 2"):
        RandomFlip(2)
    with pytest.raises(ValueError, match=r"fit: RandomShift\(max_shift=3, fill=0.0\) is too large"):
        Compose([RandomShift(3), RandomFlip()]).check((3, 4, 5), "fit")
