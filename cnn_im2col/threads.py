"""How many threads the engine uses: Numba's kernels and the BLAS behind NumPy's GEMMs.

A training step alternates between the two pools: a Numba kernel (im2col, col2im, pooling, ...),
then a GEMM in OpenBLAS (or whichever BLAS NumPy has), then a kernel again. They never run at the
same moment, since both are called one after the other from the Python thread, so the danger is not
two busy pools but the *idle* threads of one pool burning the cores that the other pool needs:

- Numba's default threading layer here is GNU OpenMP, whose workers spin after every parallel
  region (``GOMP_SPINCOUNT``) before they sleep. Every GEMM that follows a kernel then shares the
  cores with spinning threads: measured on the 2-core machine of ``benchmarks/``, a LeNet training
  step took 3-7x longer with the ``omp`` layer than with ``workqueue``, whose idle workers sleep.
  So, unless ``NUMBA_THREADING_LAYER`` is set, importing this module selects ``workqueue``
  (before any parallel kernel runs; Numba fixes the layer at the first launch).
- OpenBLAS's threads spin (yielding) for a while after each GEMM, and a multi-threaded GEMM stalls
  whenever one of its threads is not scheduled. This engine's GEMMs are small (at most a few hundred
  MFLOP per batch), so a second BLAS thread gains little on an idle machine and costs a lot on a busy
  one: measured, 2 BLAS threads made the step ~2x slower than 1 while other processes loaded the
  machine, and Numba kernels with 1 or 2 threads did the same within noise.

Hence the default: the Numba kernels get every core (``n``) and BLAS gets half of them
(``max(1, n // 2)``: one thread on a 2-core machine). At any moment at most ``n`` threads are busy:
the pools take turns. ``set_num_threads(n)`` applies the same split to ``n``; ``blas=`` overrides it.
``NUMBA_NUM_THREADS`` (read by Numba at start-up) caps the Numba side.

The workqueue layer does not allow two Python threads to launch parallel kernels at the same time
(Numba aborts); run one engine per process, or set ``NUMBA_THREADING_LAYER=omp`` (and
``OMP_WAIT_POLICY=PASSIVE``) before starting Python if you need that.

Numba's thread count is per Python thread (a thread that never called ``set_num_threads`` uses
Numba's default); the BLAS limit is process-wide.
"""

from __future__ import annotations

import os
from typing import Any

import numba
import numpy as np
import threadpoolctl

from .shapes import check_int

__all__ = ["default_num_threads", "get_num_threads", "set_num_threads", "thread_info"]

DEFAULT_LAYER = "workqueue"


def _select_layer() -> None:
    """Use ``workqueue`` unless the user chose a layer (environment or numba.config)."""
    if os.environ.get("NUMBA_THREADING_LAYER") is None and numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = DEFAULT_LAYER


_select_layer()

from . import _kernels  # after the layer is chosen (importing it launches nothing)

_state: dict[str, Any] = {"n": None, "numba": None, "blas": None, "pool_started": False}
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

    Numba kernels get ``n`` threads (at most ``NUMBA_NUM_THREADS``); the BLAS gets ``blas`` threads,
    by default ``max(1, n // 2)`` (see the module docstring for the measurements behind it).
    Returns ``{"n", "numba", "blas"}``, the counts now in force.
    """
    owner = "set_num_threads"
    n = default_num_threads() if n is None else check_int(n, "n", owner, minimum=1)
    blas = max(1, n // 2) if blas is None else check_int(blas, "blas", owner, minimum=1)
    numba_threads = min(n, numba.config.NUMBA_NUM_THREADS)
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
    """What is in force: ``n``, Numba threads and threading layer, BLAS threads (per library), cores."""
    get_num_threads()
    blas_threads = [info["num_threads"] for info in threadpoolctl.threadpool_info()
                    if info.get("user_api") == "blas"]
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet: the layer that will be used
        layer = numba.config.THREADING_LAYER
    return {
        "n": _state["n"],
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
