"""How many threads the engine uses: Numba's kernels and the BLAS behind NumPy's GEMMs.

A training step alternates between two thread pools: a Numba kernel (im2col, col2im, pooling, ...),
then a GEMM in OpenBLAS, then a kernel again. Both are called one after the other from the Python
thread, so they never compute at the same moment; the danger is the *idle* threads of one pool
spinning on the cores that the other pool needs:

- Numba's default threading layer here is GNU OpenMP, whose workers spin after every parallel
  region. Measured on the 2-core machine of ``benchmarks/`` (LeNet step, both pools at 2 threads):
  76-82 ms with ``omp`` vs 25 ms with ``workqueue``, whose idle workers sleep. So, unless
  ``NUMBA_THREADING_LAYER`` is set, importing this module selects ``workqueue`` (before any
  parallel kernel runs: Numba fixes the layer at the first launch).
- OpenBLAS's idle workers spin too, for ``2**OPENBLAS_THREAD_TIMEOUT`` CPU cycles (default 2**28,
  about 0.1 s: longer than the gap between two GEMMs, so in practice they never stop). Sampled from
  ``/proc`` during LeNet training with Numba 1 + BLAS 2 threads: the OpenBLAS worker was runnable
  100% of the time, 2.6 runnable threads on average on 2 cores. This module therefore sets
  ``OPENBLAS_THREAD_TIMEOUT=4`` (the minimum: workers sleep at once) when it is imported before
  NumPy, because OpenBLAS reads it only when NumPy loads it (it stays in ``os.environ``, so child
  processes inherit it; a value the user set is kept). Then the pools take turns and
  each can have every core: Numba n + BLAS n threads, 1.8 runnable threads on average on 2 cores,
  and a LeNet step measured 20-22 ms against 31-34 ms with the split below.

Hence two policies, chosen at import (``thread_info()["policy"]`` says which is in force):

- ``"shared"`` -- OpenBLAS's workers sleep when idle (this module set the timeout before NumPy
  loaded OpenBLAS, or the user set one of at most 10): Numba ``n`` threads and BLAS ``n``; the
  pools take turns on the same ``n`` cores.
- ``"split"`` -- otherwise (NumPy was imported first, or another BLAS): the pools split the cores
  between them so that spinning workers never meet a busy pool: BLAS ``max(1, n // 2)``, Numba the
  rest (at least 1). Import ``cnn_im2col`` before NumPy (the command line and the benchmarks do)
  to get ``"shared"``.

``n`` defaults to the cores this process may use. On a machine that other processes keep busy,
fewer threads are faster: a parallel GEMM stalls whenever one of its threads is not scheduled
(measured with two busy processes on the 2 cores: 49 ms per LeNet step with 1 thread, 91 ms with
2), so use ``set_num_threads(1)`` (``--threads 1``) there. ``set_num_threads(n, blas=b)`` sets the
BLAS count by hand; ``NUMBA_NUM_THREADS`` (read by Numba at start-up) caps the Numba side.

The workqueue layer does not allow two Python threads to launch parallel kernels at the same time
(Numba aborts); run one engine per process, or set ``NUMBA_THREADING_LAYER=omp`` (and
``OMP_WAIT_POLICY=PASSIVE``) before starting Python if you need that.

Numba's thread count is per Python thread (a thread that never called ``set_num_threads`` uses
Numba's default); the BLAS limit is process-wide.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# Before NumPy loads OpenBLAS, which reads this once (the module docstring has the measurements).
# A value already in the environment is the user's, taken as set before NumPy loaded.
_TIMEOUT_KNOWN = "numpy" not in sys.modules or "OPENBLAS_THREAD_TIMEOUT" in os.environ
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numba  # after the OpenBLAS setting above
import numpy as np
import threadpoolctl

from .shapes import check_int

__all__ = ["default_num_threads", "get_num_threads", "policy", "set_num_threads", "thread_info"]

DEFAULT_LAYER = "workqueue"


def _select_layer() -> None:
    """Use ``workqueue`` unless the user chose a layer (environment or numba.config)."""
    if os.environ.get("NUMBA_THREADING_LAYER") is None and numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = DEFAULT_LAYER


_select_layer()

from . import _kernels  # after the layer is chosen (importing it launches nothing)

_state: dict[str, Any] = {"n": None, "numba": None, "blas": None, "pool_started": False, "policy": None}
_controller: threadpoolctl.ThreadpoolController | None = None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_num_threads() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    return max(1, _cores())


def _blas_controller() -> threadpoolctl.ThreadpoolController:
    global _controller
    if _controller is None:
        _controller = threadpoolctl.ThreadpoolController()
    return _controller


def _blas_workers_sleep() -> bool:
    """True if NumPy's BLAS is an OpenBLAS whose idle workers sleep (almost) at once: it was
    loaded after ``OPENBLAS_THREAD_TIMEOUT`` was set, to at most 10 (2**10 cycles, under 1 us)."""
    if not _TIMEOUT_KNOWN:
        return False
    try:
        timeout = int(os.environ.get("OPENBLAS_THREAD_TIMEOUT", ""))
    except ValueError:
        return False
    if not 1 <= timeout <= 10:  # OpenBLAS ignores values < 1 and raises 1-3 to 4
        return False
    numpy_blas = [lib for lib in _blas_controller().lib_controllers if lib.user_api == "blas"]
    return bool(numpy_blas) and all(lib.internal_api == "openblas" for lib in numpy_blas)


def policy() -> str:
    """``"shared"`` (the pools take turns on all ``n`` threads) or ``"split"`` (they divide them)."""
    if _state["policy"] is None:
        _state["policy"] = "shared" if _blas_workers_sleep() else "split"
    return _state["policy"]


def _start_pool() -> None:
    """Run one tiny parallel kernel. Measured: the first parallel kernel a process runs (with the
    workqueue layer) puts OpenBLAS back to its default thread count, so a BLAS limit set before it
    would be lost; after it, limits stick."""
    if not _state.get("pool_started"):
        one = np.ones(1)
        _kernels.relu_backward(one, one, np.empty(1))
        _state["pool_started"] = True


def set_num_threads(n: int | None = None, blas: int | None = None) -> dict[str, int]:
    """Let the engine use ``n`` threads (default: every core this process may use).

    Under the ``"shared"`` policy the Numba kernels and the BLAS each get ``n`` (they take turns);
    under ``"split"`` the BLAS gets ``max(1, n // 2)`` and Numba the rest (the module docstring has
    the measurements behind both). ``blas`` sets the BLAS count by hand (under ``"split"`` Numba
    then gets ``max(1, n - blas)``). Numba's count is capped at ``NUMBA_NUM_THREADS``.
    Returns ``{"n", "numba", "blas"}``, the counts in force.
    """
    owner = "set_num_threads"
    n = default_num_threads() if n is None else check_int(n, "n", owner, minimum=1)
    shared = policy() == "shared"
    if blas is None:
        blas = n if shared else max(1, n // 2)
    else:
        blas = check_int(blas, "blas", owner, minimum=1)
    numba_threads = min(n if shared else max(1, n - blas), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(numba_threads)
    _start_pool()
    _blas_controller().select(user_api="blas").limit(limits=blas)
    _state.update(n=n, numba=numba_threads, blas=blas)
    return {"n": n, "numba": numba_threads, "blas": blas}


def get_num_threads() -> int:
    """The thread count last given to ``set_num_threads`` (the default split if never called)."""
    if _state["n"] is None:
        set_num_threads()
    return int(_state["n"])


def thread_info() -> dict[str, Any]:
    """What is in force: ``n``, the policy, Numba threads and threading layer, BLAS threads, cores."""
    get_num_threads()
    blas_threads = [info["num_threads"] for info in threadpoolctl.threadpool_info()
                    if info.get("user_api") == "blas"]
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet: the layer that will be used
        layer = numba.config.THREADING_LAYER
    return {
        "n": _state["n"],
        "policy": policy(),
        "numba": numba.get_num_threads(),
        "threading_layer": layer,
        "blas": blas_threads[0] if blas_threads else None,
        "cores": default_num_threads(),
    }


_USER_LIMITS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def _apply_default() -> None:
    """At import: the default split, unless the environment already limits the BLAS threads."""
    if any(os.environ.get(name) for name in _USER_LIMITS):
        _state.update(n=default_num_threads(), numba=numba.get_num_threads(), blas=None)
        return
    set_num_threads()


_apply_default()
