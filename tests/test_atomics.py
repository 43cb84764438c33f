"""atomics: the shared words' loads, stores and compare-and-swap do what they say on one thread,
and two threads counting through compare-and-swap in compiled loops, without the GIL, lose no
increment; bad types are refused when the kernel compiles."""

import threading

import numba as nb
import numpy as np
import pytest
from numba.core.errors import TypingError

from cnn_im2col.atomics import compare_exchange, load_acquire, pointer, spin_pause, store_release


@nb.njit(nogil=True)
def _one_thread(words):
    store_release(words, 3, 41)
    seen = load_acquire(words, 3)
    swapped = compare_exchange(words, 3, 41, 42)
    refused = compare_exchange(words, 3, 41, 99)
    spin_pause()
    return seen, swapped, refused, load_acquire(words, 3)


def test_loads_stores_and_compare_exchange_on_one_thread():
    words = np.zeros(8, np.int64)
    assert _one_thread(words) == (41, True, False, 42)
    assert words.tolist() == [0, 0, 0, 42, 0, 0, 0, 0]


@nb.njit(nogil=True)
def _count(words, times):
    """Add 1 to words[0] ``times`` times through compare-and-swap."""
    for _ in range(times):
        while True:
            old = load_acquire(words, 0)
            if compare_exchange(words, 0, old, old + 1):
                break
            spin_pause()


def test_two_threads_counting_through_compare_exchange_lose_no_increment():
    """Both threads run compiled without the GIL (nogil), so their swaps really interleave; a
    plain ``+=`` would lose some of 2 x 200,000."""
    words = np.zeros(16, np.int64)
    _count(words, 1)
    words[0] = 0
    workers = [threading.Thread(target=_count, args=(words, 200_000)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert words[0] == 400_000


@nb.njit
def _view(address, n):
    return nb.carray(pointer(address), (n,), np.float32)


def test_an_address_is_a_pointer_again():
    data = np.arange(6, dtype=np.float32)
    view = _view(data.ctypes.data, 6)
    np.testing.assert_array_equal(view, data)
    view[2] = -1
    assert data[2] == -1


def test_the_words_must_be_int64():
    @nb.njit
    def load_float(words):
        return load_acquire(words, 0)

    with pytest.raises((TypingError, TypeError), match="int64 array"):
        load_float(np.zeros(2, np.float64))
