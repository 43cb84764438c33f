"""Shared test configuration: hypothesis profiles and array strategies.

Numba compiles on first call (then caches), so no hypothesis example may have a deadline.
CI (CI=true) uses a derandomised profile: the same examples every run, no flaky surprises.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# the battery's shared checks (bad_input.py) report their failing asserts like test modules do
pytest.register_assert_rewrite("bad_input")

settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=40, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", deadline=None, max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def tolerance(dtype):
    """(rtol, atol) for comparing a fast path with its reference in ``dtype``."""
    return (1e-4, 1e-4) if np.dtype(dtype) == np.float32 else (1e-10, 1e-10)


def in_memory_order(array, order):
    """The same values laid out C-ordered, F-ordered or as a non-contiguous strided view."""
    if order == "C":
        return np.ascontiguousarray(array)
    if order == "F":
        return np.asfortranarray(array)
    doubled = np.repeat(array, 2, axis=-1)  # every other column: a view with a step of 2
    return doubled[..., ::2]


def synthetic_digits(n, seed):
    """(n, 28, 28) uint8 images and labels: class k is a bright 6x6 square at a class-dependent
    place on a noisy background. Learnable in a few steps; a stand-in for MNIST in CLI tests."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = 3 + 7 * (k // 4), 3 + 7 * (k % 4)
        images[i, r:r + 6, c:c + 6] = 255
    return images, labels


@pytest.fixture(scope="module")
def monkeypatch_module():
    """A monkeypatch undone at the module's end: for hypothesis tests (a function-scoped fixture
    would not be reset between the examples)."""
    with pytest.MonkeyPatch.context() as patch:
        yield patch
