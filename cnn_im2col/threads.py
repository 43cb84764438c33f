"""How many threads the engine uses, and the one pool that runs them.

One pool owns the cores: ``n`` threads, the calling one and ``n - 1`` Python workers (``_Worker``:
a thread handed each map by a lock), each running whole blocks of a layer on a slice of the batch
(a convolution's im2col -> GEMM -> bias/ReLU epilogue; a pooling or activation pass) while that
slice is in its core's cache. The Numba kernels they call are serial and release the GIL
(``nogil``), and while the engine computes NumPy's BLAS runs on 1 thread (:func:`engine_blas`), so
each GEMM runs on the worker that called it. Nothing else computes: no OpenBLAS worker is woken (so
none spins), and no kernel is a parallel Numba loop (Numba starts no threads). The one exception is
a small batch, whose maps run serially (``batch_maps``) while the other cores idle: there a Dense
layer's product with a large weight takes OpenBLAS's own threads for its duration
(``idle_cores_blas``, ``arrays.gemm``), as handing it to the pool's Python workers costs more than
it saves, and a session's single sample lends the first worker a compiled loop that takes half of
each convolution without the GIL (``lend_worker``, ``conv/sample_split.py``). Outside the
engine the BLAS has the threads the user gave it: a user's own ``a @ b`` keeps its speed.

Why (measured on the 2-core machine of ``benchmarks/``, with a probe described in
``benchmarks/README.md``): LeNet's conv2 im2col + its 3 GEMMs took 7.8 ms with one 2-thread BLAS
call on the whole batch and 3.7 ms as 2 workers x half the batch with single-threaded GEMMs. The
design it replaces (a Numba pool and an OpenBLAS pool taking turns) depended on whether NumPy was
imported before the engine (OpenBLAS's idle workers spin unless ``OPENBLAS_THREAD_TIMEOUT`` was set
before NumPy loaded it); with a single-threaded BLAS the import order no longer matters.

- ``set_num_threads(n, wait_policy)``: ``n`` workers (default: the cores this process may use);
  ``n == 1`` runs everything in the calling thread. ``wait_policy`` ("active", the default, or
  "passive") says whether the cores are kept awake while the pool works (below).
- ``engine_blas()``: the context in which the BLAS runs on 1 thread: every ``parallel_map``, and
  ``Sequential``'s forward, backward, fit, predict and evaluate as a whole; on leaving, the BLAS
  gets back its threads (threadpoolctl's per-library calls).
- ``parallel_map(fn, items)``: ``[fn(item) for item in items]`` on the pool, in order. Called from
  inside a worker (nested), it runs serially there, so it can never deadlock the pool.
- ``batch_maps(samples)``: the context in which this thread's maps run serially
  (``serial_maps``) for a batch too small to pay for the hand-offs (training steps, predict, a
  session's run).
- ``cores_idle()`` / ``idle_cores_blas()``: whether this thread runs a small batch serially inside
  the engine, and the context that gives the BLAS the pool's threads meanwhile.
- ``split(count, parts)``: ``count`` items as at most ``parts`` contiguous slices.
- ``lend_worker(loop, stop)``: the first worker runs a compiled ``loop`` (it returns by itself
  once idle) for a small batch run serially; a parallel map or a resize calls ``stop`` and waits
  for the loop before using the workers.

**Keeping the cores awake** (the active wait policy, as OpenMP's ``OMP_WAIT_POLICY=active``):
where an idle core halts at once, waking a thread that sleeps on it is slow, and a map wakes
threads often: the workers at its start, and whichever thread waits for the GIL at each hand-off
between the caller's and a worker's Python. On the 2-core KVM guests of ``benchmarks/`` (whose
kernel halts an idle vCPU at once, ``haltpoll.guest_halt_poll_ns=0``) a wake-up across cores took
55-63 us, against 4.6 us for the same hand-off on one core. So once a map has run in parallel,
and until the outermost engine call returns, one spinner per core keeps each core busy: a
compiled loop, without the GIL, that only calls ``sched_yield``, so that any thread of any process
that wants the core takes it at once. Each is pinned to its core: unpinned, two could share one
core and leave the pool's threads to share the other. 0.5 ms after the engine call returns (by
the clock, however loaded the machine), each sleeps until the next parallel map. Measured
(2026-12-04, Intel Xeon, 2 threads, the two policies alternated in one process): a LeNet training
step at batch 64 5.26 -> 4.83 ms, ResNet-20's 128 -> 118.5 ms. Only on Linux, and only when the
pool has every core this process may use (spinning on cores that the pool may not run on would
burn them for nothing).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import numbers
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numba as nb
import numpy as np
import threadpoolctl

from . import allocator

__all__ = ["SPINNER_NAME", "WAIT_POLICIES", "default_num_threads", "engine_blas", "get_num_threads",
           "parallel_map", "batch_maps", "serial_maps", "cores_idle", "idle_cores_blas",
           "lend_worker", "set_num_threads", "split", "thread_info", "uses_engine_blas",
           "SAMPLES_PER_THREAD", "SPIN_TAIL_NS"]

WAIT_POLICIES = ("active", "passive")

_state: dict[str, Any] = {"n": None, "pool": None, "warm": False, "wait_policy": "active",
                          "spin_cores": []}
_lock = threading.Lock()
# held by the thread whose map the pool's workers are running: a map called meanwhile from another
# of the user's threads runs in that thread, serially, as a map called from inside a worker does
_pool_free = threading.Lock()
_FORKED: list[Any] = []  # the pool in a forked child until its first parallel map starts workers
_in_worker = threading.local()  # .active: True on the pool's own threads
# .on: True on a thread running a parallel map's part (the caller and the workers), where resizing
# the pool would wait for that very map
_in_map = threading.local()
# the worker lent to a compiled loop (``lend_worker``), with the function that asks the loop to end,
# until the loop is seen to have ended or is reclaimed (``_reclaim``)
_lent: list[tuple["_Worker", Callable[[], None]]] = []
# the BLAS libraries threadpoolctl found, made once (after Numba's warm-up, see set_num_threads);
# selecting them at every engine call cost 9-14 us of a batch-1 session's run, measured
# 2026-12-05, Intel Xeon, vgg-bn 458 -> 449 us, MobileNetV2 x0.5 1297 -> 1283, alternated in one
# process
_blas_libs: list[Any] | None = None
_blas_threads: list[tuple[Callable[[], int], Callable[[int], Any]]] = []  # (get, set) of each
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


class _Worker:
    """One of the pool's threads. It sleeps on its ``go`` lock; ``start(job)`` hands it ``job`` (a
    map's ``drain``, which catches its own exceptions) and wakes it, and ``wait()`` returns when the
    job is done. Two locks and no futures: with ``concurrent.futures``' pool (a Future, a work
    item and a queue a hand-off, about 93 maps a step) ResNet-20's training step at batch 64 took
    101.9 against 98.0 ms alternated in one process (1.5-1.8% in two earlier runs), 99.2 against
    95.6 in 6 alternated fresh processes (2026-12-06, Intel Xeon, 2 threads), and an empty two-item
    map 17-60 against 9-11 us: after its part that pool's worker ran Python (the future's result,
    its condition, the queue) while the caller wanted the GIL back; this one sleeps at once. What
    remains of a hand-off is the wake-up across cores (6 us with the cores kept awake) and the GIL,
    which the caller holds until its own first kernel."""

    __slots__ = ("go", "done", "job", "thread")

    def __init__(self, name: str) -> None:
        self.go, self.done = threading.Lock(), threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.job: Callable[[], None] | None = None
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        _in_worker.active = True  # a map called from a job runs serially here
        while True:
            self.go.acquire()
            job = self.job
            if job is None:  # stop()
                return
            _in_map.on = True
            try:
                job()
            finally:
                _in_map.on = False
                self.done.release()

    def start(self, job: Callable[[], None]) -> None:
        self.job = job
        self.go.release()

    def wait(self) -> None:
        """Return when the job is done, even if the wait is interrupted (a KeyboardInterrupt),
        which is then raised: a job left running would release ``done`` into the next map."""
        interrupted: BaseException | None = None
        while True:
            try:
                self.done.acquire()
                break
            except BaseException as exc:  # noqa: BLE001 - re-raised once the job is done
                interrupted = exc
        self.job = None  # drop the map's closure (its items and results) now
        if interrupted is not None:
            raise interrupted

    def stop(self) -> None:
        self.job = None
        self.go.release()
        self.thread.join()


def _start_workers(count: int) -> list[_Worker]:
    return [_Worker(f"cnn_im2col_{i}") for i in range(count)]


def _started(pool: list[_Worker]) -> list[_Worker]:
    """With ``_pool_free`` held: ``pool``, or, in a forked child whose pool is still ``_FORKED``,
    the workers started now (``_forget_workers``)."""
    if pool is _FORKED:
        pool = _state["pool"] = _start_workers(_state["n"] - 1)
    return pool


def _forget_workers() -> None:
    """In a forked child: the parent's workers are not there (only the forking thread is); the
    child's first parallel map starts new ones (a child that never maps starts none)."""
    _lent.clear()
    if _state["pool"] is not None:
        _state["pool"] = _FORKED


def lend_worker(loop: Callable[[], None], stop: Callable[[], None]) -> bool:
    """Start the pool's first worker on ``loop``, a compiled loop that waits for work spinning
    without the GIL and returns by itself once idle (``conv/sample_split.py``'s), for a small
    batch whose maps run serially in this thread (``batch_maps``): its worker idles otherwise.
    ``stop()`` asks the loop to return soon; a parallel map or a resize calls it and waits for the
    loop before using the workers (``_reclaim``). Returns whether the worker runs ``loop`` now:
    False with one thread, under the passive wait policy (the loop spins), from inside a map or
    a worker, or while another of the user's threads maps; True without starting another if the
    worker still runs the loop lent before."""
    if (_state["n"] is None or _state["n"] < 2 or _state["wait_policy"] != "active"
            or getattr(_in_map, "on", False)
            or (getattr(_in_worker, "active", False)
                and not getattr(_in_worker, "cores_idle", False))):
        return False
    if not _pool_free.acquire(blocking=False):
        return False
    try:
        pool = _state["pool"]
        if pool is None:
            return False
        pool = _started(pool)
        if _lent:
            worker = _lent[0][0]
            if not worker.done.acquire(blocking=False):
                return True  # still in the loop lent before
            worker.job = None
            _lent.clear()
        worker = pool[0]
        worker.start(loop)
        _lent.append((worker, stop))
        return True
    finally:
        _pool_free.release()


def _reclaim() -> None:
    """With ``_pool_free`` held: end the loop a worker was lent to, if any, and wait for it."""
    while _lent:
        worker, stop = _lent.pop()
        stop()
        worker.wait()


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


def set_num_threads(n: int | None = None, wait_policy: str | None = None) -> dict[str, Any]:
    """Let the engine use ``n`` threads (default: every core this process may use).

    ``wait_policy``: "active" (the default) keeps the cores awake while the pool works, so that
    handing work between threads does not wait for a core to wake (see the module's docstring);
    "passive" lets idle cores sleep at once. None keeps the current policy.

    Returns ``{"n", "blas", "wait_policy"}``: the pool's threads, the BLAS's while the engine
    computes (always 1: each GEMM runs on the worker that calls it; see :func:`engine_blas`), and
    the wait policy.
    """
    owner = "set_num_threads"
    if n is None:
        n = default_num_threads()
    elif isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{owner}: n must be an int >= 1, got {n!r} ({type(n).__name__})")
    elif n < 1:
        raise ValueError(f"{owner}: n must be an int >= 1, got {n}")
    n = int(n)
    if wait_policy is not None and wait_policy not in WAIT_POLICIES:
        raise ValueError(f"{owner}: wait_policy must be one of {WAIT_POLICIES}, got "
                         f"{wait_policy!r}")
    global _blas_libs
    with _lock:
        _warm_numba()
        if _blas_libs is None:
            _blas_libs = threadpoolctl.ThreadpoolController().select(
                user_api="blas").lib_controllers
            _blas_threads[:] = [_thread_functions(lib) for lib in _blas_libs]
        if wait_policy is not None and wait_policy != _state["wait_policy"]:
            _stop_spinners()
            _state["wait_policy"] = wait_policy
        if _state["n"] != n:
            if getattr(_in_map, "on", False):
                raise RuntimeError(f"{owner}: the pool cannot change size from inside one of its "
                                   f"parallel maps (n {_state['n']} -> {n}); call it between "
                                   f"the engine's calls")
            _stop_spinners()
            with _pool_free:  # no map is running on the old workers
                _reclaim()
                old = _state["pool"]
                _state["pool"] = _start_workers(n - 1) if n > 1 else None
                _state["n"] = n
            for worker in old or ():
                worker.stop()
        _state["spin_cores"] = _cores_to_keep_awake(n, _state["wait_policy"])
    return {"n": n, "blas": 1, "wait_policy": _state["wait_policy"]}


# --------------------------------------------------------------------------- the active wait policy

# _SPIN[0]: 1 while the pool is at work (from a map that ran in parallel to the end of the
# outermost engine call); _SPIN[1]: 1 tells the spinners to end
_SPIN = np.zeros(2, dtype=np.int64)
# how long a spinner keeps yielding after _SPIN[0] clears before it sleeps, in ns of the monotonic
# clock, so that a user's own loop (forward, a loss in NumPy, backward) keeps its cores awake
# between the engine's calls. A time, not a count of yields: on a loaded machine every yield lets
# another process run for its slice, and 3,000 yields (0.5 ms on an idle core) stretched over
# seconds, the spinners runnable all along
SPIN_TAIL_NS = 500_000
_spinners: list[tuple[threading.Thread, threading.Event]] = []
# a spinner's name in /proc/PID/task/TID/comm (what ``top -H`` shows; the benchmarks' samplers of
# runnable threads leave these out, as they only yield): at most 15 characters
SPINNER_NAME = "cnn_im2col-spin"
_sched_yield = nb.types.ExternalFunction("sched_yield", nb.types.int32())
_clock_gettime = nb.types.ExternalFunction("clock_gettime",
                                           nb.types.int32(nb.types.int32, nb.types.voidptr))
_CLOCK_MONOTONIC = 1  # Linux's clockid (the spinners run on Linux only)


@nb.njit(cache=True, nogil=True)
def _spin(flags, tail_ns):
    """Give the core away (``sched_yield``) in a loop while ``flags[0]``, and for ``tail_ns`` more
    nanoseconds (the monotonic clock) after it clears; return at once when ``flags[1]``. Returns
    the yields made. The calls after every read keep the compiler from hoisting the reads out of
    the loop (the callees could have written them)."""
    now = np.zeros(2, dtype=np.int64)  # (tv_sec, tv_nsec): clock_gettime's timespec
    _clock_gettime(_CLOCK_MONOTONIC, now.ctypes.data)
    last_busy = now[0] * 1_000_000_000 + now[1]
    yields = 0
    while flags[1] == 0:
        _clock_gettime(_CLOCK_MONOTONIC, now.ctypes.data)
        t = now[0] * 1_000_000_000 + now[1]
        if flags[0]:
            last_busy = t
        elif t - last_busy >= tail_ns:
            break
        _sched_yield()
        yields += 1
    return yields


def _spinner(cpu: int, wake: threading.Event) -> None:
    """One spinner's life: on its core, spin from each wake-up to the end of the pool's work. If
    the loop cannot run here (it failed to compile or load), warn once and let the cores sleep:
    the policy only saves time, the results never depend on it."""
    with contextlib.suppress(OSError):  # named even if it cannot be pinned, and the reverse
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
            comm.write(SPINNER_NAME)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {cpu})  # this thread only (Linux: 0 is the calling thread)
    try:
        while not _SPIN[1]:
            wake.wait()
            wake.clear()  # before spinning: a wake-up from now on is not lost
            _spin(_SPIN, SPIN_TAIL_NS)
    except Exception as exc:  # noqa: BLE001 - reported as a warning, the engine goes on
        if _state["spin_cores"]:
            _state["spin_cores"] = []  # no more spinners in this process
            warnings.warn(f"cnn_im2col: the active wait policy cannot run here "
                          f"({type(exc).__name__}: {exc}); the pool's cores will sleep between "
                          f"hand-offs", RuntimeWarning, stacklevel=1)


def _cores_to_keep_awake(n: int, policy: str) -> list[int]:
    """The cores the spinners are pinned to, one each: every core of this process's affinity when
    the policy is active, on Linux, and the pool of ``n`` threads has them all; else none."""
    if policy != "active" or not sys.platform.startswith("linux"):
        return []
    cores = sorted(os.sched_getaffinity(0))
    return cores if 2 <= len(cores) <= n else []


def _keep_cores_awake() -> None:
    """Called by a map that runs in parallel: wake the spinners (made on the first call) unless
    they are awake already or there are none to make (``_cores_to_keep_awake``)."""
    if _SPIN[0] or not _state["spin_cores"]:
        return
    if not _spinners:
        with _lock:
            if not _spinners:
                _SPIN[1] = 0
                for cpu in _state["spin_cores"]:
                    wake = threading.Event()
                    thread = threading.Thread(target=_spinner, args=(cpu, wake), daemon=True,
                                              name=f"cnn_im2col-spinner-{cpu}")
                    thread.start()
                    _spinners.append((thread, wake))
    _SPIN[0] = 1
    for _, wake in _spinners:
        wake.set()


def _let_cores_sleep() -> None:
    """The outermost engine call returned: the spinners sleep after their tail."""
    _SPIN[0] = 0


def _stop_spinners() -> None:
    """End the spinners (a new thread count or policy makes its own at the next parallel map)."""
    _SPIN[0] = 0
    _SPIN[1] = 1
    for thread, wake in _spinners:
        wake.set()
        thread.join()
    _spinners.clear()


def _forget_spinners() -> None:
    """In a forked child: the spinners were the parent's threads; new ones are made when needed."""
    _spinners.clear()
    _SPIN[:] = 0


def _after_fork_in_child() -> None:
    _forget_spinners()
    _forget_workers()
    global _pool_free
    _pool_free = threading.Lock()  # the parent's may have been held by a thread not copied


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _EngineCall:
    """One entry into the engine (``engine_blas``): a class rather than a generator, so that
    entering and leaving cost two method calls."""

    __slots__ = ("outermost",)

    def __enter__(self) -> None:
        # this thread is inside already: nothing to set or undo
        self.outermost = not getattr(_inside, "depth", 0)
        if self.outermost:
            _enter_engine()

    def __exit__(self, *exc: object) -> None:
        if self.outermost:
            _leave_engine()


def engine_blas() -> contextlib.AbstractContextManager:
    """While the engine computes, NumPy's BLAS runs on 1 thread (each GEMM on the worker that
    calls it, so no OpenBLAS worker wakes and none spins beside the pool); on leaving the
    outermost call, every BLAS gets back the threads it had, so the user's own ``a @ b`` keeps
    its speed. Nested calls (a fit, its forward passes, their pool maps) set nothing more;
    entering and leaving costs a few microseconds. The outermost call also keeps the engine's
    large arrays on the C heap while it runs (``allocator.engine_heap``)."""
    return _EngineCall()


def _enter_engine() -> None:
    get_num_threads()  # the BLAS libraries are found (after Numba's warm-up: set_num_threads)
    with _blas_lock:
        if _blas["depth"] == 0:
            allocator.engine_heap(True)
            _blas["saved"] = [(set_threads, get_threads()) for get_threads, set_threads
                              in _blas_threads]
            for set_threads, threads in _blas["saved"]:
                if threads != 1:
                    set_threads(1)
        _blas["depth"] += 1
    _inside.depth = 1


def _leave_engine() -> None:
    _inside.depth = 0
    with _blas_lock:
        _blas["depth"] -= 1
        if _blas["depth"] == 0:
            _let_cores_sleep()
            allocator.engine_heap(False)
            for set_threads, threads in _blas["saved"]:
                if threads != 1:
                    set_threads(threads)


def _thread_functions(lib: Any) -> tuple[Callable[[], int], Callable[[int], Any]]:
    """(get, set) of a BLAS library's thread count: for OpenBLAS built on its own threads (not
    OpenMP, whose limit is per thread), its C functions themselves, found as threadpoolctl finds
    them (the names carry the build's prefix and suffix); else the controller's methods. Through
    threadpoolctl's Python, each entry and exit of the engine cost 25-30 us of a batch-1
    session's run (the code cold after the network's kernels), about 3% of ResNet-20's."""
    get_symbol = getattr(lib, "_get_symbol", None)  # threadpoolctl's own lookup, if it has it
    if (get_symbol is not None and lib.internal_api == "openblas"
            and lib.threading_layer != "openmp"):
        get, set_ = get_symbol("openblas_get_num_threads"), get_symbol("openblas_set_num_threads")
        if get is not None and set_ is not None:
            return get, set_
    return (lambda: lib.num_threads), lib.set_num_threads


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


# the fewest samples a thread for a batch's maps to pay for their hand-offs: a smaller batch runs
# its maps in the calling thread (``batch_maps``). Measured 2026-12-04, Intel Xeon, 2 threads
# against 1, ResNet-20 (3x32x32): a training step at batch 2 14.7 against 8.6 ms, 4 19.1 / 15.2,
# 8 26.0 / 23.8, 16 41.3 / 46.0; predict at batch 2 5.0 / 3.2, 4 6.4 / 5.1, 8 9.0 / 9.0, 16 12.6
# / 16.5; vgg-bn's step at 4 5.67 / 4.86, 8 7.16 / 7.48 (a hand-off costs 20-60 us on these
# KVM guests, more than a layer of a few samples)
SAMPLES_PER_THREAD = 4


def batch_maps(samples: int) -> contextlib.AbstractContextManager:
    """The context for the maps of a batch of ``samples``: ``serial_maps`` below
    ``SAMPLES_PER_THREAD`` samples a thread (the pool's other threads then idle: see
    ``idle_cores_blas``), else nothing to change."""
    if samples < get_num_threads() * SAMPLES_PER_THREAD:
        return serial_maps(cores_idle=not getattr(_in_worker, "active", False))
    return contextlib.nullcontext()


class LocalFlag:
    """A block inside which the ``threading.local`` ``flags`` has its attribute ``name`` set to
    ``value`` (its value before, False where it had none, put back on leaving): the engine's
    one-flag blocks (scans skipped, folds frozen). A class rather than a generator context, since
    a session enters several on every call (cold after the network's kernels, a generator's cost
    a few us each; this one about 0.4 us warm)."""

    __slots__ = ("flags", "name", "value", "before")

    def __init__(self, flags: threading.local, name: str, value: Any) -> None:
        self.flags, self.name, self.value = flags, name, value

    def __enter__(self) -> None:
        self.before = getattr(self.flags, self.name, False)
        setattr(self.flags, self.name, self.value)

    def __exit__(self, *exc: object) -> None:
        setattr(self.flags, self.name, self.before)


class _SerialMaps:
    """``serial_maps``'s block (two flags, one of them the caller's), a class as ``LocalFlag``."""

    __slots__ = ("cores_idle", "before")

    def __init__(self, cores_idle: bool) -> None:
        self.cores_idle = cores_idle

    def __enter__(self) -> None:
        self.before = getattr(_in_worker, "active", False), getattr(_in_worker, "cores_idle", False)
        _in_worker.active = True
        _in_worker.cores_idle = self.cores_idle

    def __exit__(self, *exc: object) -> None:
        _in_worker.active, _in_worker.cores_idle = self.before


def serial_maps(cores_idle: bool = False) -> contextlib.AbstractContextManager:
    """Inside, this thread's ``parallel_map`` calls run their items in it, one after another, as a
    worker's own nested maps do: for work too small to pay for the hand-offs. ``cores_idle``: the
    pool's other threads have nothing to do meanwhile (a small batch, ``batch_maps``), so a large
    BLAS call of this thread may take their cores (``idle_cores_blas``)."""
    return _SerialMaps(cores_idle)


def cores_idle() -> bool:
    """Whether this thread runs a small batch serially while the pool's other cores idle
    (``batch_maps``), inside the engine, with a pool of more than one thread."""
    return (getattr(_in_worker, "cores_idle", False) and getattr(_inside, "depth", 0)
            and _state["n"] > 1)


@contextlib.contextmanager
def idle_cores_blas() -> Iterator[None]:
    """Inside, NumPy's BLAS runs on the pool's ``n`` threads (OpenBLAS's own workers, which wait
    for work spinning, without the GIL), then on 1 again: for one large product of a small batch
    run serially (``cores_idle``), whose other cores would idle. A hand-off to the pool's Python
    workers costs 15-60 us on these KVM guests (the GIL's wake-ups); OpenBLAS's costs a few. Only
    where ``cores_idle()``; the pool's maps never run meanwhile (the batch's maps are serial)."""
    for _, set_threads in _blas_threads:
        set_threads(_state["n"])
    try:
        yield
    finally:
        for _, set_threads in _blas_threads:
            set_threads(1)


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

    if not _pool_free.acquire(blocking=False):  # another thread of the user's is mapping on it
        return [fn(item) for item in items]
    pool = _started(pool)
    if _lent:
        try:
            _reclaim()
        except BaseException:
            _pool_free.release()
            raise
    was_worker = getattr(_in_worker, "active", False)
    started: list[_Worker] = []  # (whatever interrupts this, each started worker is waited for)
    _in_map.on = True
    try:
        _keep_cores_awake()
        for helper in pool[:len(items) - 1]:
            helper.start(drain)
            started.append(helper)
        drain()
    finally:
        _in_worker.active = was_worker
        _in_map.on = False
        try:
            for helper in started:
                helper.wait()
        finally:
            _pool_free.release()
    if errors:
        raise errors[0]
    return results


def thread_info() -> dict[str, Any]:
    """What is in force: ``n`` (the pool's threads), ``blas`` (the BLAS's threads while the engine
    computes: 1), ``blas_outside`` (the BLAS's threads right now, outside the engine: the user's
    setting), cores, ``wait_policy`` and ``spinners`` (the spinner threads made so far: one per
    core under the active policy once a map ran in parallel, else 0)."""
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
        "wait_policy": _state["wait_policy"],
        "spinners": len(_spinners),
    }


set_num_threads()
