"""threads: one pool owns the cores (n workers, single-threaded BLAS), whatever the import order;
parallel_map and split; results do not depend on the thread count; no oversubscription."""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import threadpoolctl
from bad_input import INT1, ROW_FIELDS, check_bad_input, rows

from cnn_im2col import functional as F
from cnn_im2col import threads


def blas_threads():
    return [info["num_threads"] for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"]


@pytest.fixture(autouse=True)
def restore_default():
    yield
    threads.set_num_threads(wait_policy="passive")  # ends any spinner a test made
    threads.set_num_threads(wait_policy="active")  # the default, its cores recomputed


def test_the_engine_sets_the_blas_threads_through_the_libraries_own_functions():
    """OpenBLAS's thread count is read and set through its C functions (what threadpoolctl calls),
    which threadpoolctl then sees; a controller without them (another BLAS, another
    threadpoolctl) is driven through its methods."""
    threads.set_num_threads(2)
    for lib, (get, set_) in zip(threads._blas_libs, threads._blas_threads):
        before = lib.num_threads
        assert get() == before
        if lib.internal_api == "openblas" and lib.threading_layer != "openmp":
            assert not hasattr(set_, "__self__")  # the C function, not the controller's method
        set_(3)
        assert lib.num_threads == get() == 3
        set_(before)
        assert lib.num_threads == before

    class Controller:  # a BLAS threadpoolctl knows only by its methods
        internal_api, threading_layer, num_threads = "mkl", "intel", 4

        def set_num_threads(self, n):
            self.num_threads = n

    other = Controller()
    get, set_ = threads._thread_functions(other)
    set_(1)
    assert get() == other.num_threads == 1


@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_set_num_threads_sizes_the_pool_and_the_blas_runs_on_one_thread_only_inside(n):
    users = blas_threads()
    result = threads.set_num_threads(n)
    assert result == {"n": n, "blas": 1, "wait_policy": "active"}
    assert threads.get_num_threads() == n
    assert blas_threads() == users  # outside the engine: the user's setting, untouched
    info = threads.thread_info()
    assert info["n"] == n
    seen = set()
    inside = []
    threads.parallel_map(lambda i: seen.add(threading.get_ident()) or inside.append(
        blas_threads()), list(range(64)))
    assert len(seen) <= n
    assert all(set(b) == {1} for b in inside)  # inside: one BLAS thread
    assert blas_threads() == users  # and given back
    if n == 1:
        assert seen == {threading.get_ident()}  # one thread: the caller's own


def test_default_is_every_core_of_this_process():
    assert threads.set_num_threads()["n"] == threads.default_num_threads()
    assert threads.get_num_threads() == threads.default_num_threads()


def test_parallel_map_keeps_order_raises_and_nests_without_deadlock():
    threads.set_num_threads(2)
    assert threads.parallel_map(lambda i: i * i, list(range(10))) == [i * i for i in range(10)]

    def fails(i):
        if i == 3:
            raise KeyError("three")
        return i

    with pytest.raises(KeyError, match="three"):
        threads.parallel_map(fails, list(range(6)))
    # a worker that maps again runs its items itself (serially): every worker may do so at once
    nested = threads.parallel_map(
        lambda i: sum(threads.parallel_map(lambda j: i * j, list(range(4)))),
        list(range(8)))
    assert nested == [6 * i for i in range(8)]


def test_a_small_batch_runs_its_maps_in_the_calling_thread(monkeypatch):
    """Below SAMPLES_PER_THREAD samples a thread a batch's maps (a training step's, predict's, a
    session's) run in the calling thread; from there they share the pool, as before."""
    from cnn_im2col import architectures
    from cnn_im2col.losses import SoftmaxCrossEntropy
    from cnn_im2col.optim import SGD
    from cnn_im2col.session import InferenceSession

    threads.set_num_threads(2)
    seen = set()
    real = threads._parallel_map

    def noting(fn, items):
        return real(lambda item: seen.add(threading.get_ident()) or fn(item), items)

    monkeypatch.setattr(threads, "_parallel_map", noting)
    small = 2 * threads.SAMPLES_PER_THREAD - 1
    with threads.batch_maps(small):
        threads.parallel_map(lambda i: i, list(range(8)))
    assert seen == {threading.get_ident()}
    model = architectures.resnet20(input_shape=(3, 8, 8))
    x = np.random.default_rng(0).random((small, 3, 8, 8), dtype=np.float32)
    model.predict(x)
    InferenceSession(model).run(x)
    model.fit(x, np.arange(small) % 10, epochs=1, batch_size=small, loss=SoftmaxCrossEntropy(),
              optimizer=SGD(0.01), progress=False, log=None)
    assert seen == {threading.get_ident()}
    with threads.batch_maps(2 * threads.SAMPLES_PER_THREAD):
        threads.parallel_map(lambda i: __import__("time").sleep(0.01), list(range(8)))
    assert len(seen) == 2  # the worker took items too


def test_only_a_small_batch_run_serially_inside_the_engine_leaves_cores_idle():
    """``cores_idle`` (a large product may then take OpenBLAS's threads): a small batch's serial
    maps, inside the engine, with 2+ threads; not a large batch, not a pool worker (the other
    cores work), not outside the engine, not with one thread. ``idle_cores_blas`` gives the BLAS
    the pool's threads and then 1 again, which the engine gives back to the user on leaving."""
    def blas():
        return [lib.num_threads for lib in threads._blas_libs]

    threads.set_num_threads(2)
    try:
        with threads.batch_maps(1):
            assert not threads.cores_idle()  # outside the engine: the user's BLAS is untouched
        with threads.engine_blas():
            assert not threads.cores_idle()
            with threads.batch_maps(2 * threads.SAMPLES_PER_THREAD):
                assert not threads.cores_idle()
            with threads.batch_maps(1):
                assert threads.cores_idle()
                assert threads.parallel_map(lambda _: threads.cores_idle(), [0, 1]) == [True, True]
                with threads.idle_cores_blas():
                    assert blas() == [2] * len(blas())
                assert blas() == [1] * len(blas())
            assert not threads.cores_idle()
            seen = threads.parallel_map(lambda _: threads.cores_idle(), list(range(4)))
            assert seen == [False] * 4  # the pool's workers: the cores are busy
            with threads.serial_maps():
                assert not threads.cores_idle()  # serial for another reason: nothing said
        threads.set_num_threads(1)
        with threads.engine_blas(), threads.batch_maps(1):
            assert not threads.cores_idle()
    finally:
        threads.set_num_threads()


@pytest.mark.parametrize("count, parts", [(1, 1), (1, 4), (7, 2), (64, 3), (10, 10), (5, 1)])
def test_split_covers_the_range_in_near_equal_slices(count, parts):
    slices = threads.split(count, parts)
    assert len(slices) == min(count, parts)
    covered = [i for s in slices for i in range(s.start, s.stop)]
    assert covered == list(range(count))
    sizes = [s.stop - s.start for s in slices]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        threads.set_num_threads(n)
        out, cache = F.conv2d_forward(x, w, b, 1, 1, dilation=(1, 2), groups=2, relu=True)
        pooled, pcache = F.max_pool2d_forward(out, 2)
        dpool = F.max_pool2d_backward(np.ones_like(pooled), pcache)
        outs.append((out, pooled, *F.conv2d_backward(dpool, cache), F.relu(x),
                     F.gemm(x.reshape(5, -1),
                          x.reshape(5, -1).T)))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad, error",
                         [(0, ValueError), (-1, ValueError), ("2", TypeError), (True, TypeError),
                          (1.5, TypeError)])
def test_bad_thread_counts_are_named(bad, error):
    with pytest.raises(error, match="set_num_threads: n must be an int >= 1"):
        threads.set_num_threads(bad)


PROBE = """
import os, sys, threading, time, json
if sys.argv[1] == "numpy-first":
    import numpy
import cnn_im2col.threads as T
import numpy as np, numba, numba.np.ufunc.parallel, threadpoolctl
from cnn_im2col import functional as F
x = np.ones((2, 3, 6, 6), np.float32)
F.avg_pool2d_forward(x, 2)
F.conv2d_backward(np.ones((2, 1, 4, 4), np.float32),
                  F.conv2d_forward(x, np.ones((1, 3, 3, 3), np.float32))[1])
a = np.ones((512, 512))
me = threading.get_native_id()
tick_ns = 1e9 / os.sysconf("SC_CLK_TCK")
schedstat = os.path.exists(f"/proc/self/task/{me}/schedstat")
def others_cpu_ns():  # CPU time the process's other threads have used so far, ns
    total = 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) == me:
            continue
        try:  # schedstat's first field: ns on a CPU; without it, stat's utime + stime in ticks
            if schedstat:
                with open(f"/proc/self/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            else:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) * tick_ns
        except OSError:  # the thread ended
            continue
    return total
blas_before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
w = np.ones((8, 3, 3, 3), np.float32)
x = np.ones((16, 3, 32, 32), np.float32)
window = 0.02
others_ns = 0
for _ in range(5):
    F.conv2d_forward(x, w)  # the engine's GEMMs; then 20 ms in which nothing of ours should run
    time.sleep(0.003)  # but the spinners' tail (about 0.5 ms of yields; see threads.py)
    before = others_cpu_ns()
    time.sleep(window)
    others_ns += others_cpu_ns() - before
print(json.dumps({"numba_threads_started": numba.np.ufunc.parallel._is_initialized,
                  "info": T.thread_info(), "others_ms": others_ns / 1e6,
                  "windows_ms": 5 * window * 1e3,
                  "blas": [i["num_threads"] for i in threadpoolctl.threadpool_info()
                           if i["user_api"] == "blas"], "blas_before": blas_before}))
"""


def run_probe(order, **env_changes):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_THREADING_LAYER", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                        "MKL_NUM_THREADS",
                        "OPENBLAS_THREAD_TIMEOUT")}
    env.update(env_changes)
    proc = subprocess.run([sys.executable, "-c", PROBE, order], capture_output=True, text=True,
                          env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
@pytest.mark.parametrize("order", ["cnn_im2col-first", "numpy-first"])
def test_import_order_does_not_matter_and_no_idle_worker_spins(order):
    """Whichever is imported first, the BLAS keeps the user's threads outside the engine (a
    polite neighbour), the pool has every core, Numba never started a thread pool of its own (no
    kernel is a parallel loop), and after the engine's GEMMs (and the spinners' short tail) no
    other thread of the process is running: no OpenBLAS worker was woken, so none spins, and the
    spinners sleep."""
    result = run_probe(order)
    assert result["numba_threads_started"] is False
    assert result["info"]["spinners"] == (result["info"]["cores"] if result["info"]["cores"] > 1
                                          else 0)
    assert result["blas"] == result["blas_before"]
    if threads.default_num_threads() > 1:
        assert max(result["blas_before"]) > 1  # the import did not pin the user's BLAS
    assert result["info"]["n"] == threads.default_num_threads()
    # the CPU time the other threads used in the windows after the GEMMs: a woken OpenBLAS worker
    # spins through them (a core's worth, or at least half of one beside the suite's other test
    # process); a thread of ours on its way to sleep uses a fraction of a millisecond. Counting the
    # samples in which another thread was in state R, as this test did, also counted threads
    # runnable but waiting for a core on a loaded machine (29% of the samples in one CI run)
    assert result["others_ms"] <= 0.25 * result["windows_ms"], result


LOAD_PROBE = """
import os, threading, time, json
import numpy as np
import cnn_im2col
from cnn_im2col import layers as L
from cnn_im2col.model import Sequential
from cnn_im2col.losses import SoftmaxCrossEntropy
net = Sequential([L.Conv2D(1, 8, 5, seed=0), L.ReLU(), L.MaxPool2D(2),
                  L.Conv2D(8, 16, 3, padding=1, seed=1), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                  L.Dense(16 * 6 * 6, 64, seed=2), L.ReLU(), L.Dense(64, 10, seed=3)])
loss = SoftmaxCrossEntropy()
x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
y = np.arange(64) % 10
stop = threading.Event()
counts = []
def sample():
    me = threading.get_native_id()
    while not stop.is_set():
        running = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            running += (int(tid) != me and tid not in spinners
                        and stat[stat.rindex(")") + 2] == "R")
        counts.append(running)
        time.sleep(0.0005)
net.backward(loss.backward() if loss.forward(net.forward(x, True), y) else None)  # warm up (JIT)
from cnn_im2col import threads as T
spinners = {str(thread.native_id) for thread, _ in T._spinners}  # they yield to any thread
sampler = threading.Thread(target=sample)
sampler.start()
end = time.perf_counter() + 1.5
while time.perf_counter() < end:
    loss.forward(net.forward(x, training=True), y)
    net.backward(loss.backward(), input_grad=False)
stop.set()
sampler.join()
print(json.dumps({"samples": len(counts), "mean": sum(counts) / len(counts),
                  "cores": len(os.sched_getaffinity(0)),
                  "over": sum(c > len(os.sched_getaffinity(0)) for c in counts) / len(counts)}))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_training_does_not_oversubscribe_the_cores():
    """Runnable threads of a training process, sampled from /proc (NumPy imported first), stay at or
    under the core count on average; above it only in rare instants (the caller handing out work).
    The spinners of the active wait policy are left out: they only yield (see the next test)."""
    proc = subprocess.run([sys.executable, "-c", LOAD_PROBE], capture_output=True, text=True,
                          timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["samples"] > 100
    assert result["mean"] <= result["cores"], result
    assert result["over"] < 0.1, result


def test_workers_run_under_the_callers_numpy_error_state():
    import time

    threads.set_num_threads(2)

    def state(_):
        time.sleep(0.01)  # long enough that the worker takes items too
        return threading.get_ident(), np.geterr()["over"]

    for mode in ("ignore", "raise"):
        with np.errstate(over=mode):
            seen = threads.parallel_map(state, list(range(8)))
        assert len({ident for ident, _ in seen}) == 2  # both threads worked
        assert {over for _, over in seen} == {mode}


def thread_state(thread):
    """The thread's state letter in /proc: R running or runnable, S sleeping."""
    with open(f"/proc/self/task/{thread.native_id}/stat") as f:
        stat = f.read()
    return stat[stat.rindex(")") + 2]


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or threads.default_num_threads() < 2,
                    reason="needs Linux /proc and 2 cores")
def test_active_wait_spins_one_thread_per_core_while_the_pool_works_then_sleeps():
    """Under the active policy a parallel map wakes one spinner per core, each pinned to its core;
    they spin (only yielding) until the outermost engine call returns, then sleep after their
    short tail. A single-item map wakes none, and the passive policy makes none."""
    import time

    # the spinners' loop compiled (or loaded from Numba's cache) here first: on a cold cache the
    # spinners would otherwise spend their first half second compiling, one waiting on the other
    threads._spin(np.array([0, 1], dtype=np.int64), 0)
    threads.set_num_threads(wait_policy="passive")
    threads.set_num_threads(wait_policy="active")  # a fresh start: no spinner made yet
    assert threads.thread_info()["spinners"] == 0
    threads.parallel_map(lambda i: i, [0])  # one item: run by the caller, no spinner
    assert threads.thread_info()["spinners"] == 0
    states = []

    def look(i):
        time.sleep(0.02)  # the spinners had time to start
        if i == 0:
            states.extend(thread_state(thread) for thread, _ in threads._spinners)

    with threads.engine_blas():
        threads.parallel_map(look, [0, 1])
        time.sleep(0.01)  # still inside the engine: the cores are kept awake
        inside = [thread_state(thread) for thread, _ in threads._spinners]
    cores = sorted(os.sched_getaffinity(0))
    assert threads.thread_info()["spinners"] == len(cores)
    assert states == ["R"] * len(cores) and inside == ["R"] * len(cores)
    assert [os.sched_getaffinity(thread.native_id) for thread, _ in threads._spinners] == [
        {cpu} for cpu in cores]
    deadline = time.perf_counter() + 2.0
    while time.perf_counter() < deadline and any(
            thread_state(thread) == "R" for thread, _ in threads._spinners):
        time.sleep(0.001)
    assert all(thread_state(thread) == "S" for thread, _ in threads._spinners)  # asleep
    made = [thread for thread, _ in threads._spinners]
    threads.set_num_threads(wait_policy="passive")  # ends them
    assert threads.thread_info()["spinners"] == 0 and not any(t.is_alive() for t in made)
    threads.parallel_map(lambda i: i, [0, 1, 2])
    assert threads.thread_info() | {"wait_policy": "passive", "spinners": 0} == \
        threads.thread_info()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the spinners are Linux's")
def test_a_spinners_tail_is_a_time_not_a_count_of_yields():
    """Once the pool's flag clears, a spinner yields for ``tail_ns`` of the monotonic clock, then
    returns (on a loaded machine a count of yields stretched over seconds); the stop flag ends it
    at once."""
    import time

    flags = np.zeros(2, dtype=np.int64)
    threads._spin(flags, 0)  # compiled first
    for tail_ns in (200_000, 2_000_000):
        start = time.monotonic_ns()
        yields = threads._spin(flags, tail_ns)
        assert time.monotonic_ns() - start >= tail_ns and yields >= 1
    assert threads._spin(np.array([1, 1], dtype=np.int64), 10**12) == 0  # told to end


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs Linux affinity")
def test_spinners_only_when_the_pool_has_every_core_and_the_policy_is_active():
    cores = sorted(os.sched_getaffinity(0))
    everyone = cores if len(cores) >= 2 else []
    assert threads._cores_to_keep_awake(len(cores), "active") == everyone
    assert threads._cores_to_keep_awake(len(cores) + 3, "active") == everyone
    assert threads._cores_to_keep_awake(len(cores) - 1, "active") == []  # cores the pool lacks
    assert threads._cores_to_keep_awake(len(cores), "passive") == []


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or threads.default_num_threads() < 2,
                    reason="needs Linux affinity and 2 cores")
def test_a_spinner_that_cannot_run_warns_once_and_the_pool_goes_on(monkeypatch):
    def broken(flags, tail):
        raise RuntimeError("no sched_yield here")

    monkeypatch.setattr(threads, "_spin", broken)
    threads.set_num_threads(wait_policy="passive")
    threads.set_num_threads(wait_policy="active")
    with pytest.warns(RuntimeWarning, match="the active wait policy cannot run here"):
        assert threads.parallel_map(lambda i: i + 1, [0, 1, 2]) == [1, 2, 3]
        for thread, _ in threads._spinners:
            thread.join(timeout=10)
    assert threads.thread_info()["spinners"] == len(threads._spinners)  # made, and ended
    assert not any(thread.is_alive() for thread, _ in threads._spinners)
    assert threads._state["spin_cores"] == []  # none is made again in this process
    assert threads.parallel_map(lambda i: i * 2, [1, 2]) == [2, 4]


@pytest.mark.parametrize("policy", ["active", "passive"])
def test_results_do_not_depend_on_the_wait_policy(policy):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 3, 12, 12)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    threads.set_num_threads(1)
    expected = F.conv2d_forward(x, w, None, 1, 1)[0]
    threads.set_num_threads(2, wait_policy=policy)
    np.testing.assert_allclose(F.conv2d_forward(x, w, None, 1, 1)[0], expected, rtol=1e-5,
                               atol=1e-5)
    assert threads.thread_info()["wait_policy"] == policy


# ------------------------------------------------------------------------------------------
# bad inputs: the battery's rows for threads (machinery: bad_input.py)
# ------------------------------------------------------------------------------------------

BAD_INPUTS = {
    "set_num_threads(0)": (lambda t: threads.set_num_threads(0), ValueError, r"set_num_threads: n",
                           r"got 0", INT1),
    "set_num_threads(1.5)": (lambda t: threads.set_num_threads(1.5), TypeError,
                             r"set_num_threads: n", r"got 1\.5",
                             INT1),
    "set_num_threads(wait_policy='spin')": (
        lambda t: threads.set_num_threads(2, wait_policy="spin"), ValueError,
        r"set_num_threads: wait_policy", r"got 'spin'", r"one of \('active', 'passive'\)"),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)


def test_a_local_flag_is_set_inside_and_restored_on_leaving_even_by_an_exception():
    """``LocalFlag`` (finite_scans_skipped's and folds_frozen's block): the value inside, the one
    before (False where there was none) after, nested blocks each restoring their own, and only in
    the thread that entered."""
    flags = threading.local()
    seen = []
    with threads.LocalFlag(flags, "on", True):
        assert flags.on is True
        with threads.LocalFlag(flags, "on", "inner"):
            assert flags.on == "inner"
            other = threading.Thread(target=lambda: seen.append(getattr(flags, "on", None)))
            other.start()
            other.join()
        assert flags.on is True
    assert flags.on is False and seen == [None]
    with pytest.raises(RuntimeError):
        with threads.LocalFlag(flags, "on", True):
            raise RuntimeError("inside")
    assert flags.on is False


def test_maps_from_two_user_threads_at_once_give_each_its_own_results():
    """The pool serves one map at a time: a map called meanwhile from another of the user's
    threads runs in that thread (nothing is lost, nothing mixed, nothing waits for ever)."""
    threads.set_num_threads(2)
    out: dict[int, list[int]] = {}

    def user(k: int) -> None:
        with threads.engine_blas():
            for _ in range(200):
                out[k] = threads.parallel_map(lambda i: i * k + int(np.ones(2000).sum()),
                                              list(range(7)))

    users = [threading.Thread(target=user, args=(k,)) for k in (3, 5)]
    for thread in users:
        thread.start()
    for thread in users:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in users)
    assert out == {k: [i * k + 2000 for i in range(7)] for k in (3, 5)}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_maps_on_workers_of_its_own():
    """A child forked after the pool ran (a data loader's worker, say) gets new workers: its maps
    use both threads and return, where the parent's workers are not there to take them."""
    import multiprocessing

    threads.set_num_threads(2)
    threads.parallel_map(lambda i: i, list(range(4)))  # the parent's workers are up
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as child:
        seen = child.apply_async(_threads_a_map_uses).get(timeout=60)
    assert seen == 2


def _threads_a_map_uses() -> int:
    import time

    seen = set()
    threads.parallel_map(lambda i: seen.add(threading.get_ident()) or time.sleep(0.01),
                         list(range(8)))
    return len(seen)


@pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_kill"), reason="needs pthread_kill")
def test_a_keyboard_interrupt_while_the_caller_waits_leaves_the_pool_whole():
    """Ctrl-C reaching the caller while it waits for the worker's part: the map raises
    KeyboardInterrupt once that part is done, and the next maps use both threads again."""
    import signal
    import time

    threads.set_num_threads(2)
    caller = threading.main_thread().ident
    assert threading.get_ident() == caller

    def item(i):
        if threading.get_ident() == caller:
            time.sleep(0.02)  # long enough for the worker to take the other item
        else:  # the worker's part: the caller is waiting for it by now
            time.sleep(0.06)
            signal.pthread_kill(caller, signal.SIGINT)
            time.sleep(0.05)
        return i

    with pytest.raises(KeyboardInterrupt):
        threads.parallel_map(item, [0, 1])
    for _ in range(20):
        seen = set()
        assert threads.parallel_map(
            lambda i: seen.add(threading.get_ident()) or time.sleep(0.005) or i,
            list(range(4))) == [0, 1, 2, 3]
        assert len(seen) == 2


def test_resizing_the_pool_from_inside_a_map_is_refused_not_a_hang():
    """The map would wait for its own part: a clear error instead, from the caller's part and from
    a worker's; the same size is no change and passes."""
    import time

    threads.set_num_threads(2)

    def resize(i):
        time.sleep(0.01)  # both threads take a part
        threads.set_num_threads(2)  # no change: fine
        return threads.set_num_threads(1)

    with pytest.raises(RuntimeError, match=r"set_num_threads: the pool cannot change .*2 -> 1"):
        threads.parallel_map(resize, [0, 1])
    assert threads.get_num_threads() == 2
    assert threads.parallel_map(lambda i: i, [0, 1, 2]) == [0, 1, 2]
