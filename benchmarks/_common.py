"""Shared helpers of the benchmark scripts: timing, memory, stage profiling, tables, JSON.

Nothing here knows about a particular benchmark. The scripts (``bench_layers.py``,
``bench_train.py``) import it as a sibling module.

- Timing: ``alternate`` runs several implementations round-robin (a, b, c, a, b, c, ...) so that a
  change of load on a shared machine hits all of them alike; results are medians.
- Allocator: ``keep_freed_memory`` lets glibc reuse freed buffers, as it does in a training loop,
  before layer timings (fresh mappings are page-faulted in on every call otherwise).
- Memory: ``peak_extra_bytes`` resets the kernel's resident-set high-water mark
  (``/proc/self/clear_refs``), runs a call and reads ``VmHWM`` back: the peak extra resident memory
  of that call, for NumPy, Numba and PyTorch alike. ``configure_malloc`` first makes glibc serve
  every allocation above 64 KiB with its own mmap, so a freed buffer leaves the resident set at once
  and is not silently reused from the heap by the next call (which would hide it); it also makes
  large allocations slower (a fresh mapping each time), so timings are taken before it is called.
  Where ``/proc`` lacks these files, ``tracemalloc`` (NumPy buffers only) is the fallback.
  Training's peak RSS (``peak_rss_bytes``) is measured with the default allocator, as users run.
- Threads: ``RunnableThreads`` samples, from the driver process, how many threads of a worker are
  running or waiting for a core (state R in ``/proc/PID/task/*/stat``): more than the cores means
  oversubscription (for example idle pool workers spinning while the other pool computes).
- Profiling: ``StageProfiler`` wraps named functions of the engine and attributes every call's
  *exclusive* time (minus the time of wrapped functions it calls) to a stage; what no wrapper
  covers is the Python overhead.
- Output: ``check_out_dir`` refuses an ``--out`` folder the results could not be written to, as
  soon as the arguments are parsed; ``publish`` writes them there at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import inspect
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def median_ms(seconds: Sequence[float]) -> float:
    return 1e3 * statistics.median(seconds)


def alternate(runners: dict[str, Callable[[], Any]], rounds: int,
              warmup: int = 1) -> dict[str, list[float]]:
    """Time each runner ``rounds`` times, round-robin; ``warmup`` untimed rounds first.

    Returns ``{name: [seconds, ...]}``. Interleaving keeps the ratios honest on a machine whose
    load changes (other processes): every implementation sees the same mix of quiet and busy.
    """
    for _ in range(warmup):
        for fn in runners.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def gflops(flop: float, seconds: float) -> float:
    return flop / seconds / 1e9 if seconds > 0 else float("nan")


def gemm_rate(m: int, k: int, n: int, dtype: Any = np.float32, rounds: int = 7) -> dict[str, float]:
    """This machine's GEMM rate for an (m x k) @ (k x n) ``np.matmul`` (the BLAS NumPy uses), now.
    """
    rng = np.random.default_rng(0)
    a = rng.random((m, k), dtype=np.float32).astype(dtype)
    b = rng.random((k, n), dtype=np.float32).astype(dtype)
    out = np.empty((m, n), dtype=dtype)
    times = alternate({"gemm": lambda: np.matmul(a, b, out=out)}, rounds)["gemm"]
    seconds = statistics.median(times)
    return {"m": m, "k": k, "n": n, "ms": 1e3 * seconds, "gflops": gflops(2.0 * m * k * n, seconds)}


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def configure_malloc(threshold: int = 64 * 1024) -> bool:
    """glibc: serve allocations above ``threshold`` bytes with mmap (and stop the threshold from
    adapting), so the resident set follows what is really in use. False if not glibc."""
    return _mallopt((_M_MMAP_THRESHOLD, threshold))


def keep_freed_memory() -> bool:
    """glibc: serve allocations up to 256 MiB from the heap and never give it back, so that a freed
    buffer is reused by the next call instead of being mapped afresh and page-faulted in (in this
    virtual machine, measured: LeNet's conv1 forward 6.6 ms with three fresh 3-4 MiB arrays per
    call, 1.2 ms for its parts on reused arrays). A training loop reaches that steady state by
    itself (glibc adapts its thresholds: measured 18-51 page faults per LeNet batch, none with this
    setting, at no measurable difference in ms per batch); timing one layer call after another does
    not. False if not glibc."""
    return _mallopt((_M_MMAP_THRESHOLD, 256 * 2**20), (_M_TRIM_THRESHOLD, 2**30))


def _mallopt(*settings: tuple[int, int]) -> bool:
    """glibc's ``mallopt(param, value)`` for each pair; False if not glibc or a setting is refused.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all(libc.mallopt(param, value) for param, value in settings)
    except (OSError, AttributeError):
        return False


def release_free_memory() -> None:
    """glibc: give the pages of free heap chunks back to the system (``malloc_trim``), so that a
    call reusing such a chunk touches fresh pages and shows up in the resident set."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kib(*keys: str) -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in keys:
                values[name] = int(rest.split()[0])
    return values


def _hwm_supported() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM" in _status_kib("VmHWM")
    except OSError:
        return False


def peak_extra_bytes(fn: Callable[[], Any]) -> tuple[int, str]:
    """Peak extra memory of one call of ``fn``: ``(bytes, method)``; method ``"rss"`` or
    ``"tracemalloc"``."""
    gc.collect()
    release_free_memory()
    if _hwm_supported():
        base = _status_kib("VmRSS")["VmRSS"]
        result = fn()
        peak = _status_kib("VmHWM")["VmHWM"]
        del result
        return max(0, peak - base) * 1024, "rss"
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak, "tracemalloc"


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --------------------------------------------------------------------------------------------
# Stage profiling
# --------------------------------------------------------------------------------------------


class StageProfiler:
    """Attribute the time of wrapped functions to stages, exclusive of nested wrapped calls.

    >>> prof = StageProfiler()
    >>> with prof.patch([(module, "unfold", "im2col"), (SomeClass, "forward", "loss")]):
    ...     run()
    >>> prof.seconds  # {"im2col": ..., "loss": ...}

    Targets that do not exist are skipped (listed in ``missing``), so one list fits engine versions.
    A staticmethod or a plain function stored on a class is re-wrapped as what it was.
    Each thread has its own stack of nested calls; with several threads (the engine's pool) the
    stages' seconds add up over the threads (thread-seconds, not wall time).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.missing: list[str] = []
        # .stack: [start, time spent in nested wrapped calls] frames
        self._local = threading.local()

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def _wrap(self, fn: Callable, stage: str) -> Callable:
        local, seconds, calls = self._local, self.seconds, self.calls
        clock, lock = time.perf_counter, threading.Lock()

        def wrapped(*args, **kwargs):
            stack = local.__dict__.setdefault("stack", [])
            frame = [clock(), 0.0]
            stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                stack.pop()
                elapsed = clock() - frame[0]
                with lock:
                    seconds[stage] += elapsed - frame[1]
                    calls[stage] += 1
                if stack:
                    stack[-1][1] += elapsed

        wrapped.__wrapped__ = fn
        return wrapped

    @contextlib.contextmanager
    def patch(self, targets: Iterable[tuple[Any, str, str]]):
        saved = []
        try:
            for owner, name, stage in targets:
                try:
                    raw = inspect.getattr_static(owner, name)
                except AttributeError:
                    self.missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
                    continue
                if isinstance(raw, staticmethod):
                    replacement: Any = staticmethod(self._wrap(raw.__func__, stage))
                else:
                    replacement = self._wrap(getattr(owner,
                                                     name) if not isinstance(owner, type) else raw,
                                             stage)
                own = name in vars(owner)  # inherited class attributes are shadowed, then deleted
                saved.append((owner, name, raw, own))
                setattr(owner, name, replacement)
            yield self
        finally:
            for owner, name, raw, own in reversed(saved):
                if own:
                    setattr(owner, name, raw)
                else:
                    delattr(owner, name)


def breakdown(stage_seconds: dict[str, float], total_seconds: float, batches: int,
              order: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{stage: {"ms_per_batch", "percent"}}`` in ``order``, plus ``"python overhead"`` (the rest).
    """
    result = {}
    covered = 0.0
    for stage in order:
        s = stage_seconds.get(stage, 0.0)
        covered += s
        result[stage] = {"ms_per_batch": 1e3 * s / batches, "percent": 100.0 * s / total_seconds}
    rest = max(0.0, total_seconds - covered)
    result["python overhead"] = {"ms_per_batch": 1e3 * rest / batches,
                                 "percent": 100.0 * rest / total_seconds}
    result["total"] = {"ms_per_batch": 1e3 * total_seconds / batches, "percent": 100.0}
    return result


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` significant digits, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value == 0 or abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(cell) for cell in row) + " |")
    return "\n".join(lines)


def check_out_dir(parser: argparse.ArgumentParser, out: str | Path | None,
                  option: str = "--out") -> None:
    """Refuse ``out``, the folder a script writes its results to at the end, if they could not be
    written there (it does not exist, is not a folder, or is not writable): ``parser.error``, so
    the usage and a message naming ``option``, the path and what it takes, exit status 2 and no
    traceback, right after the arguments are parsed rather than from ``publish`` after minutes of
    timing. None (the script's default folder) passes."""
    if out is None:
        return
    path = Path(out)
    if not path.exists():
        problem = "does not exist"
    elif not path.is_dir():
        problem = "is not a folder"
    elif not os.access(path, os.W_OK | os.X_OK):
        problem = "is not writable"
    else:
        return
    parser.error(f"{option} {str(out)!r} {problem}: it takes an existing writable folder")


def check_out_file(parser: argparse.ArgumentParser, out: str | Path,
                   option: str = "--out") -> None:
    """Refuse ``out``, the file a script writes its results to at the end, if it could not be
    written there (its folder does not exist or is not writable, or it is a folder), as
    ``check_out_dir`` refuses a folder: ``parser.error`` right after the arguments are parsed."""
    path = Path(out)
    folder = path.parent
    if path.is_dir():
        problem = "is a folder"
    elif not folder.is_dir():
        problem = f"is in a folder that does not exist ({str(folder)!r})"
    elif not os.access(folder, os.W_OK | os.X_OK):
        problem = f"is in a folder that is not writable ({str(folder)!r})"
    else:
        return
    parser.error(f"{option} {str(out)!r} {problem}: it takes a file path in an existing writable "
                 f"folder")


def publish(name: str, data: dict, markdown: str,
            directory: Path | None = None) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` atomically, print the table, say where it went."""
    # imported here, not at the top: a PyTorch-only run never loads the engine
    from cnn_im2col._files import atomic_write

    directory = RESULTS_DIR if directory is None else Path(directory)
    paths = []
    for suffix, text in ((".json",
                          json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"),
                         (".md", markdown.rstrip() + "\n")):
        path = directory / f"{name}{suffix}"
        with atomic_write(path, "w") as handle:
            handle.write(text)
        paths.append(path)
    print(markdown)
    print(f"\nwrote {paths[0]} and {paths[1]}", file=sys.stderr)
    return paths[0], paths[1]


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN/Inf: map them to None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, np.generic):
        return finite_or_none(value.item())
    return value


# --------------------------------------------------------------------------------------------
# Machine and optional PyTorch
# --------------------------------------------------------------------------------------------


def import_torch(enabled: bool = True):
    """``torch`` if it imports (and ``enabled``), else None: PyTorch is for comparison only."""
    if not enabled:
        return None
    try:
        import torch
    except Exception:  # noqa: BLE001 - any failure to import means "no torch column"
        return None
    return torch


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


# environment variables that choose OpenBLAS's kernel instead of its own detection
BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _overrides(info: dict) -> str:
    forced = info.get("blas_overrides") or {}
    return " forced by " + ", ".join(
        f"{k}={v}" for k, v in forced.items()) if forced else " detected"


def machine_info(torch: Any = None) -> dict:
    """What the numbers were measured on: CPU, cores, memory, versions, threads, BLAS, load."""
    import numba
    import threadpoolctl

    from cnn_im2col import allocator, threads

    found = [info for info in threadpoolctl.threadpool_info() if info.get("user_api") == "blas"]
    found.sort(key=lambda info: "numpy" not in str(info.get("filepath",
                                                            "")))  # NumPy's own BLAS first
    blas = [{k: info.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer",
                                      "architecture",
                                      "filepath")} for info in found]
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "threads": threads.thread_info(),
        "allocator": allocator.settings(),
        "blas": blas,
        # set by some machines' images to force an older kernel (OpenBLAS reads them when it loads)
        "blas_overrides": {k: v for k, v in sorted(os.environ.items()) if k in BLAS_OVERRIDES},
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": None,
    }
    if torch is not None:
        info["torch"] = {"version": torch.__version__, "num_threads": torch.get_num_threads()}
    return info


def machine_line(info: dict) -> str:
    """One line describing the machine, for the README and the tables."""
    threads = info["threads"]
    blas = info["blas"][0] if info["blas"] else {}
    line = (
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; Python {info['python']}, "
        f"NumPy {info['numpy']} ({blas.get('internal_api', '?')} {blas.get('version', '')}, "
        f"{blas.get('architecture') or '?'} kernel{_overrides(info)}), "
        f"Numba {info['numba']}; threads: pool {threads['n']}, BLAS {threads['blas']}")
    if "allocator" in info:  # results written before the heap's thresholds have no entry
        line += "; heap: " + ("the engine's thresholds" if info["allocator"]["configured"]
                              else info["allocator"]["reason"])
    if info.get("torch"):
        line += f"; PyTorch {info['torch']['version']} ({info['torch']['num_threads']} threads)"
    if info.get("load_average"):
        line += f"; load average at start {info['load_average'][0]:.2f}"
    return line


def run_json_subprocess(args: Sequence[str], env: dict[str, str] | None = None,
                        timeout: float = 1800,
                        sample_threads: bool = False) -> dict:
    """Run ``python args...`` and parse the last stdout line as JSON (the worker's result).

    ``sample_threads``: while it runs, sample its runnable threads (``RunnableThreads``); the
    samples go into the result as ``"runnable_samples"`` ([unix time, count] pairs).
    """
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            env=env)
    sampler = RunnableThreads(proc.pid) if sample_threads and RunnableThreads.supported() else None
    if sampler is not None:
        sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    finally:
        samples = sampler.stop() if sampler is not None else None
    if proc.returncode != 0:
        raise RuntimeError(f"worker {' '.join(args)} failed ({proc.returncode}):\n{stderr[-4000:]}")
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"worker {' '.join(args)} printed nothing; stderr:\n{stderr[-4000:]}")
    result = json.loads(lines[-1])
    if samples is not None:
        result["runnable_samples"] = samples
    return result


# the engine's spinner threads' name: cnn_im2col.threads.SPINNER_NAME (not imported: a driver or a
# PyTorch worker does not load the engine; a test holds the two equal)
SPINNER_NAME = "cnn_im2col-spin"


class RunnableThreads:
    """Sample how many threads of process ``pid`` are running or runnable (state R), every
    ``interval`` seconds, from a background thread of this process (so the measured process is
    not disturbed beyond the reads of its ``/proc`` files, about 1% of a core). The engine's
    spinners (its active wait policy, ``cnn_im2col/threads.py``) are left out: they only yield."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def supported() -> bool:
        return os.path.isdir("/proc/self/task")

    def count(self) -> int | None:
        """Threads of the process in state R now; None once it has exited."""
        try:
            tids = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return None
        running = 0
        for tid in tids:
            try:
                with open(f"/proc/{self.pid}/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:  # the thread ended
                continue
            # "TID (command name) STATE ...": the engine's spinners (threads.SPINNER_NAME) only
            # yield their core to any thread that wants it, so they are not counted
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            running += stat[stat.rindex(")") + 2] == "R" and name != SPINNER_NAME
        return running

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            count = self.count()
            if count is None:
                return
            self.samples.append([time.time(), count])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[list[float]]:
        self._stop.set()
        self._thread.join()
        return self.samples


def runnable_summary(samples: Sequence[Sequence[float]], start: float, end: float,
                     cores: int) -> dict | None:
    """Mean and maximum runnable threads between unix times ``start`` and ``end``, and the share of
    samples with more runnable threads than ``cores`` (oversubscribed)."""
    counts = [count for when, count in samples if start <= when <= end]
    if not counts:
        return None
    return {"samples": len(counts), "mean": statistics.fmean(counts), "max": max(counts),
            "over_cores": sum(count > cores for count in counts) / len(counts)}
