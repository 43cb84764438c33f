"""How many threads the engine uses, and the one pool that runs them.

One pool owns the cores: ``n`` threads, the calling one and ``n - 1`` Python workers
(``concurrent.futures.ThreadPoolExecutor``), each running whole blocks of a layer on a slice of the
batch (a convolution's im2col -> GEMM -> bias/ReLU epilogue; a pooling or activation pass) while
that slice is in its core's cache. The Numba kernels they call are serial and release the GIL
(``nogil``), and while the engine computes NumPy's BLAS runs on 1 thread (:func:`engine_blas`), so
each GEMM runs on the worker that called it. Nothing else computes: no OpenBLAS worker is woken (so
none spins), and no kernel is a parallel Numba loop (Numba starts no threads). Outside the engine
the BLAS has the threads the user gave it: a user's own ``a @ b`` keeps its speed.

Why (measured on the 2-core machine of ``benchmarks/``, with a probe described in
``benchmarks/README.md``): LeNet's conv2 im2col + its 3 GEMMs took 7.8 ms with one 2-thread BLAS
call on the whole batch and 3.7 ms as 2 workers x half the batch with single-threaded GEMMs. The
design it replaces (a Numba pool and an OpenBLAS pool taking turns) depended on whether NumPy was
imported before the engine (OpenBLAS's idle workers spin unless ``OPENBLAS_THREAD_TIMEOUT`` was set
before NumPy loaded it); with a single-threaded BLAS the import order no longer matters.

- ``set_num_threads(n)``: ``n`` workers (default: the cores this process may use); ``n == 1`` runs
  everything in the calling thread.
- ``engine_blas()``: the context in which the BLAS runs on 1 thread: every ``parallel_map``, and
  ``Sequential``'s forward, backward, fit, predict and evaluate as a whole; on leaving, the BLAS
  gets back its threads (threadpoolctl's per-library calls).
- ``parallel_map(fn, items)``: ``[fn(item) for item in items]`` on the pool, in order. Called from
  inside a worker (nested), it runs serially there, so it can never deadlock the pool.
- ``split(count, parts)``: ``count`` items as at most ``parts`` contiguous slices.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba as nb
import numpy as np
import threadpoolctl

from .shapes import check_int

__all__ = ["default_num_threads", "engine_blas", "get_num_threads", "parallel_map",
           "set_num_threads", "split", "thread_info", "uses_engine_blas"]

_state: dict[str, Any] = {"n": None, "pool": None, "warm": False}
_lock = threading.Lock()
_in_worker = threading.local()  # .active: True on the pool's own threads
_controller: threadpoolctl.ThreadpoolController | None = None
# engine_blas: how many engine calls are under way (nested ones count), and the BLAS threads each
# library had before the outermost one
_blas: dict[str, Any] = {"depth": 0, "saved": []}
_blas_lock = threading.Lock()
_inside = threading.local()  # .depth: 1 while this thread is inside engine_blas (a fast check)


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

    Returns ``{"n", "blas"}``: the pool's threads and the BLAS's while the engine computes
    (always 1: each GEMM runs on the worker that calls it; see :func:`engine_blas`).
    """
    n = default_num_threads() if n is None else check_int(n, "n", "set_num_threads", minimum=1)
    global _controller
    with _lock:
        _warm_numba()
        if _controller is None:
            _controller = threadpoolctl.ThreadpoolController()
        if _state["n"] != n:
            old = _state["pool"]
            _state["pool"] = (ThreadPoolExecutor(n - 1, thread_name_prefix="cnn_im2col",
                                                 initializer=_mark_worker)
                              if n > 1 else None)
            _state["n"] = n
            if old is not None:
                old.shutdown(wait=True)
    return {"n": n, "blas": 1}


@contextlib.contextmanager
def engine_blas() -> Iterator[None]:
    """While the engine computes, NumPy's BLAS runs on 1 thread (each GEMM on the worker that
    calls it, so no OpenBLAS worker wakes and none spins beside the pool); on leaving the
    outermost call, every BLAS gets back the threads it had, so the user's own ``a @ b`` keeps
    its speed. Nested calls (a fit, its forward passes, their pool maps) set nothing more;
    entering and leaving costs a few microseconds."""
    if getattr(_inside, "depth", 0):  # this thread is inside already: nothing to set or undo
        yield
        return
    get_num_threads()  # the controller exists (made after Numba's warm-up, see set_num_threads)
    with _blas_lock:
        if _blas["depth"] == 0:
            libs = _controller.select(user_api="blas").lib_controllers
            _blas["saved"] = [(lib, lib.num_threads) for lib in libs]
            for lib, threads in _blas["saved"]:
                if threads != 1:
                    lib.set_num_threads(1)
        _blas["depth"] += 1
    _inside.depth = 1
    try:
        yield
    finally:
        _inside.depth = 0
        with _blas_lock:
            _blas["depth"] -= 1
            if _blas["depth"] == 0:
                for lib, threads in _blas["saved"]:
                    if threads != 1:
                        lib.set_num_threads(threads)


def uses_engine_blas(method: Callable) -> Callable:
    """``method`` run inside :func:`engine_blas` (for the model's public entry points)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with engine_blas():
            return method(*args, **kwargs)

    return wrapper


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
    if getattr(_inside, "depth", 0):  # the usual case, inside a model's call: no context to enter
        return _parallel_map(fn, items)
    with engine_blas():
        return _parallel_map(fn, items)


def _parallel_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
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
    """What is in force: ``n`` (the pool's threads), ``blas`` (the BLAS's threads while the engine
    computes: 1), ``blas_outside`` (the BLAS's threads right now, outside the engine: the user's
    setting), cores."""
    get_num_threads()
    with engine_blas():
        inside = [info["num_threads"] for info in threadpoolctl.threadpool_info()
                  if info.get("user_api") == "blas"]
    outside = [info["num_threads"] for info in threadpoolctl.threadpool_info()
               if info.get("user_api") == "blas"]
    return {
        "n": _state["n"],
        "pool": "one pool: n workers x single-threaded BLAS",
        "blas": inside[0] if inside else None,
        "blas_outside": outside[0] if outside else None,
        "cores": default_num_threads(),
    }


set_num_threads()
