"""How many threads the engine uses: Numba's kernels and the BLAS behind NumPy's GEMMs.

A training step alternates between the two pools: a Numba kernel (im2col, col2im, pooling, ...),
then a GEMM in OpenBLAS (or whichever BLAS NumPy has), then a kernel again. They never run at the
same moment, since both are called one after the other from the Python thread, so the danger is not
two busy pools but the *idle* threads of one pool burning the cores that the other pool needs:

- Numba's default threading layer here is GNU OpenMP, whose workers spin after every parallel
  region (``GOMP_SPINCOUNT``) before they sleep, on the cores the next GEMM needs. Measured on the
  2-core machine of ``benchmarks/`` (LeNet training step, both pools at 2 threads): 76-82 ms with
  ``omp`` vs 25 ms with ``workqueue`` (whose idle workers sleep) on a quiet machine, and 3-7x
  worse again while other processes loaded it. So, unless ``NUMBA_THREADING_LAYER`` is set,
  importing this module selects ``workqueue`` (before any parallel kernel runs: Numba fixes the
  layer at the first launch).
- With ``workqueue``, the split still matters. Measured (ms per LeNet batch, Numba/BLAS threads):
  quiet machine, 1/1: 26-31, 2/1: 27-31, 1/2: 22-25, 2/2: 22-26; machine loaded by other
  processes (load average 3-7 on 2 cores), 1/1: 27-44, 2/1: 25-44, 1/2: 51-236, 2/2: 50-232.
  A multi-threaded GEMM stalls whenever one of its threads is not scheduled, and these GEMMs are
  short (a few ms), so a second BLAS thread gains ~18% on an idle machine and loses 2-5x on a busy
  one; a second Numba thread gains nothing measurable on LeNet (kernel launches cost ~25-35 us).

Hence the default: ``n`` = the cores this process may use, split between the pools so that together
they use ``n`` threads, never twice as many: BLAS ``max(1, n // 2)``, Numba the rest (at least 1).
On 2 cores that is 1 + 1, the robust choice measured above. ``set_num_threads(n)`` applies the
same split to ``n``; ``blas=`` moves the split (e.g. ``set_num_threads(2, blas=2)`` on a machine
you know is idle). ``NUMBA_NUM_THREADS`` (read by Numba at start-up) caps the Numba side.

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

    The BLAS gets ``blas`` threads, by default ``max(1, n // 2)``, and the Numba kernels the rest,
    ``max(1, n - blas)`` (at most ``NUMBA_NUM_THREADS``): together ``n`` (the module docstring has
    the measurements behind the split). Returns ``{"n", "numba", "blas"}``, the counts in force.
    """
    owner = "set_num_threads"
    n = default_num_threads() if n is None else check_int(n, "n", owner, minimum=1)
    blas = max(1, n // 2) if blas is None else check_int(blas, "blas", owner, minimum=1)
    numba_threads = min(max(1, n - blas), numba.config.NUMBA_NUM_THREADS)
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
