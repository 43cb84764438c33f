"""How many threads the engine uses, and the one pool that runs them.

One pool owns the cores: ``n`` threads, the calling one and ``n - 1`` Python workers
(``concurrent.futures.ThreadPoolExecutor``), each running whole blocks of a layer on a slice of the
batch (a convolution's im2col -> GEMM -> bias/ReLU epilogue; a pooling or activation pass) while
that slice is in its core's cache. The Numba kernels they call are serial and release the GIL
(``nogil``), and NumPy's BLAS is pinned to 1 thread, so each GEMM runs on the worker that called it.
Nothing else computes: no OpenBLAS worker is ever woken (so none spins), and no kernel is a parallel
Numba loop (Numba starts no threads).

Why (measured on the 2-core machine of ``benchmarks/``, ``/work/shared/probes/one_pool_probe.py``):
LeNet's conv2 im2col + its 3 GEMMs took 7.8 ms with one 2-thread BLAS call on the whole batch and
3.7 ms as 2 workers x half the batch with single-threaded GEMMs. The design it replaces (a Numba
pool and an OpenBLAS pool taking turns) depended on whether NumPy was imported before the engine
(OpenBLAS's idle workers spin unless ``OPENBLAS_THREAD_TIMEOUT`` was set before NumPy loaded it);
with a single-threaded BLAS the import order no longer matters.

- ``set_num_threads(n)``: ``n`` workers (default: the cores this process may use); ``n == 1`` runs
  everything in the calling thread. The BLAS limit of 1 is process-wide (threadpoolctl), so a
  user's own ``a @ b`` in the same process is single-threaded too.
- ``parallel_map(fn, items)``: ``[fn(item) for item in items]`` on the pool, in order. Called from
  inside a worker (nested), it runs serially there, so it can never deadlock the pool.
- ``split(count, parts)``: ``count`` items as at most ``parts`` contiguous slices.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba as nb
import numpy as np
import threadpoolctl

from .shapes import check_int

__all__ = ["default_num_threads", "get_num_threads", "parallel_map", "set_num_threads", "split",
           "thread_info"]

_state: dict[str, Any] = {"n": None, "pool": None, "warm": False}
_lock = threading.Lock()
_in_worker = threading.local()  # .active: True on the pool's own threads
_controller: threadpoolctl.ThreadpoolController | None = None


def default_num_threads() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _mark_worker() -> None:
    _in_worker.active = True


@nb.njit(cache=True, nogil=True)
def _first_kernel(a):
    """The tiny kernel ``_warm_numba`` runs: its own, so that the pool imports no engine module."""
    a[0] += 1.0


def _warm_numba() -> None:
    """Run one tiny kernel before limiting the BLAS. Measured: Numba's first kernel call of a
    process sets up its CPU target, which imports SciPy's BLAS bindings when SciPy is installed: a
    second OpenBLAS, loaded after the limit (with its default threads) unless a kernel ran first."""
    if not _state["warm"]:
        _first_kernel(np.zeros(1))
        _state["warm"] = True


def set_num_threads(n: int | None = None) -> dict[str, int]:
    """Let the engine use ``n`` threads (default: every core this process may use).

    Returns ``{"n", "blas"}``: the pool's threads and the BLAS's (always 1: each GEMM runs on the
    worker that calls it).
    """
    n = default_num_threads() if n is None else check_int(n, "n", "set_num_threads", minimum=1)
    global _controller
    with _lock:
        _warm_numba()
        if _controller is None:
            _controller = threadpoolctl.ThreadpoolController()
        _controller.select(user_api="blas").limit(limits=1)
        if _state["n"] != n:
            old = _state["pool"]
            _state["pool"] = (ThreadPoolExecutor(n - 1, thread_name_prefix="cnn_im2col",
                                                 initializer=_mark_worker)
                              if n > 1 else None)
            _state["n"] = n
            if old is not None:
                old.shutdown(wait=True)
    return {"n": n, "blas": 1}


def get_num_threads() -> int:
    """The pool's thread count (``set_num_threads``'s last ``n``)."""
    if _state["n"] is None:
        set_num_threads()
    return int(_state["n"])


def split(count: int, parts: int) -> list[slice]:
    """``range(count)`` as at most ``parts`` contiguous, non-empty slices of near-equal size."""
    parts = max(1, min(parts, count))
    size, extra = divmod(count, parts)
    slices, start = [], 0
    for i in range(parts):
        stop = start + size + (i < extra)
        slices.append(slice(start, stop))
        start = stop
    return slices


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[fn(item) for item in items]``, the items shared among the calling thread and the pool's
    ``n - 1`` workers (results in order; the first exception is raised). The caller works too
    instead of waiting, so at most ``n`` threads are ever runnable. Serial with one thread, one
    item, or when called from inside a worker (so a nested call never waits for the pool). The
    workers run under the caller's ``np.errstate`` (NumPy keeps it per thread)."""
    pool = _state["pool"]
    if pool is None or len(items) <= 1 or getattr(_in_worker, "active", False):
        return [fn(item) for item in items]
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []
    counter = itertools.count()  # next() on it is atomic under the GIL: each index is taken once
    floating = np.geterr()  # NumPy's error state is per thread: the workers take the caller's

    def drain() -> None:
        _in_worker.active = True  # the caller too, while it drains: nested maps run serially
        try:
            with np.errstate(**floating):
                while not errors:
                    i = next(counter)
                    if i >= len(items):
                        return
                    results[i] = fn(items[i])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller below
            errors.append(exc)

    helpers = [pool.submit(drain) for _ in range(min(_state["n"] - 1, len(items) - 1))]
    was_worker = getattr(_in_worker, "active", False)
    try:
        drain()
    finally:
        _in_worker.active = was_worker
        for helper in helpers:
            helper.result()
    if errors:
        raise errors[0]
    return results


def thread_info() -> dict[str, Any]:
    """What is in force: ``n`` (the pool's threads), BLAS threads, cores."""
    get_num_threads()
    blas_threads = [info["num_threads"] for info in threadpoolctl.threadpool_info()
                    if info.get("user_api") == "blas"]
    return {
        "n": _state["n"],
        "pool": "one pool: n workers x single-threaded BLAS",
        "blas": blas_threads[0] if blas_threads else None,
        "cores": default_num_threads(),
    }


set_num_threads()
