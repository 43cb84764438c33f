"""The C heap (glibc only), set for the engine's large, short-lived arrays: two thresholds once,
and no block mmapped on its own while the engine computes.

A training step allocates and frees the same few hundred arrays of 0.1-10 MB, step after step: the
activations, the im2col matrices and Winograd's V kept for backward, the gradients. glibc's
``malloc`` serves a block above its *mmap threshold* (128 KiB at start, raised as large blocks are
freed, to at most 32 MiB) by a fresh ``mmap``, and gives the free top of its heap back to the
kernel once it exceeds the *trim threshold* (twice the mmap threshold). Either way, the next step
writes to pages the kernel must fault in and zero again. Measured (2026-12-04, Intel Xeon KVM guest,
2 threads): a ResNet-20 training step at batch 64 took 3,600-4,000 page faults and 45-52 ms of
kernel time (thread-summed); with the mmap threshold fixed at glibc's own ceiling (32 MiB) and the
trim threshold at 64 MiB, 65-135 faults, and the step 119-125 -> 112-117 ms (alternated
processes); ResNet-20's batch-64 inference session 31-34 -> 28.5-29 ms; peak RSS 392 -> 393-402
MiB (PyTorch's 592-602). The heap then keeps up to 64 MiB of freed pages for the next step.

Blocks above the mmap threshold (32 MiB at most, glibc's limit) always get an ``mmap`` of their
own, faulted in anew at every allocation: MobileNetV2 x0.5's expanded maps at batch 32 (32 x 96 x
64 x 64 float32, 50 MB, a dozen a step) took 150,000-170,000 faults a step (without NumPy's
huge-page advice; 5,000-8,000 with it) and 110 ms of kernel time on one thread. So while the engine
computes (``engine_heap``, from the outermost engine call to its return, ``threads.engine_blas``)
no block gets an mmap of its own (``M_MMAP_MAX`` 0) and the heap is not trimmed (a step frees
hundreds of MB at once): every block comes from the heap and is reused there. Measured
(2026-12-05, Intel Xeon, 2 threads, alternated processes, ``CNN_IM2COL_ALLOCATOR=system`` against
the default): that step 629-719 -> 553-601 ms, 7,300-8,300 -> 170-700 faults a step, peak RSS
1,325-1,334 -> 1,309-1,364 MiB (PyTorch's 2,060-2,111); ResNet-20's step 118-122 -> 111-112 ms.
Between engine calls glibc's defaults return (the thresholds above apart): a user's own large
array, allocated and freed there, goes back to the kernel as before.

``configure()`` runs when this module is imported, first thing in ``cnn_im2col``'s own import
(``threads`` imports it), as NumPy, on import, advises the kernel to back its large arrays with
huge pages. It changes nothing where the user has spoken: with ``CNN_IM2COL_ALLOCATOR=system``,
or when glibc's own variables (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_MAX_``, ``GLIBC_TUNABLES``) are set; nor on a C library other than glibc.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["ENVIRONMENT", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "configure", "engine_heap",
           "settings"]

#: ``mallopt`` values: glibc's ceiling for its dynamic mmap threshold, and twice that (its rule)
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
#: the variable that leaves the allocator alone ("system"), and glibc's own, which win over ours
ENVIRONMENT = "CNN_IM2COL_ALLOCATOR"
_GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_",
                    "GLIBC_TUNABLES")
_CHOICES = ("engine", "system")
# mallopt's parameter numbers (malloc.h), and glibc's default M_MMAP_MAX (DEFAULT_MMAP_MAX)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_GLIBC_MMAP_MAX = 65536

_state: dict[str, object] = {"configured": False, "reason": "not configured yet"}
_mallopt: list = []  # the C library's mallopt while configure's thresholds hold, else empty


def configure() -> bool:
    """Set the two thresholds, unless the environment or the platform says not to (the module
    docstring). Returns whether they are set; ``settings()`` says why not. Idempotent."""
    choice = os.environ.get(ENVIRONMENT, "engine").strip().lower() or "engine"
    if choice not in _CHOICES:
        raise ValueError(
            f"cnn_im2col: the environment variable {ENVIRONMENT} must be one of {_CHOICES}; "
            f"got {os.environ[ENVIRONMENT]!r}"
        )
    reason = None
    _mallopt.clear()
    if choice == "system":
        reason = f"{ENVIRONMENT}=system"
    elif any(name in os.environ for name in _GLIBC_VARIABLES):
        reason = "glibc's own malloc variables are set: " + ", ".join(
            name for name in _GLIBC_VARIABLES if name in os.environ)
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        reason = f"not glibc ({platform.system()}, {platform.libc_ver()[0] or 'unknown libc'})"
    if reason is None:
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the process's own C library
        if mallopt is None:
            reason = "the C library has no mallopt"
        elif not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                  and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
            reason = "mallopt refused the thresholds"
        else:
            _mallopt[:] = [mallopt]
    _state["configured"] = reason is None
    _state["reason"] = reason or (f"mmap threshold {MMAP_THRESHOLD} bytes, trim threshold "
                                  f"{TRIM_THRESHOLD} bytes")
    return reason is None


def engine_heap(computing: bool) -> None:
    """``computing``: the outermost engine call starts (no block gets an mmap of its own until
    it returns), else it has returned (glibc's default again). Nothing where ``configure`` set
    nothing. Called by ``threads.engine_blas`` under its lock."""
    if _mallopt:
        _mallopt[0](_M_MMAP_MAX, 0 if computing else _GLIBC_MMAP_MAX)
        _mallopt[0](_M_TRIM_THRESHOLD, -1 if computing else TRIM_THRESHOLD)  # -1: never trim


def settings() -> dict[str, object]:
    """``{"configured": bool, "reason": str}``: whether ``configure`` set the thresholds, and which
    (or why it did not)."""
    return dict(_state)


configure()
