"""threads: the thread counts of Numba kernels and BLAS (the two policies), the threading layer,
the defaults, and that idle BLAS workers sleep when the pools share the cores."""

import json
import os
import subprocess
import sys

import numba
import numpy as np
import pytest
import threadpoolctl

from cnn_im2col import functional as F
from cnn_im2col import threads


def blas_threads():
    return [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]


@pytest.fixture(autouse=True)
def restore_default():
    yield
    threads.set_num_threads()


def test_set_num_threads_sets_numba_and_blas():
    assert threads.set_num_threads(1) == {"n": 1, "numba": 1, "blas": 1}
    assert threads.get_num_threads() == 1
    assert numba.get_num_threads() == 1
    assert set(blas_threads()) == {1}
    info = threads.thread_info()
    assert (info["n"], info["numba"], info["blas"]) == (1, 1, 1)


def expected(n, policy):
    """The counts each policy gives for ``n`` threads."""
    if policy == "shared":  # the pools take turns: each may use all n
        return {"n": n, "numba": min(n, numba.config.NUMBA_NUM_THREADS), "blas": n}
    blas = max(1, n // 2)  # the pools divide the n threads between them
    return {"n": n, "numba": min(max(1, n - blas), numba.config.NUMBA_NUM_THREADS), "blas": blas}


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
def test_set_num_threads_follows_the_policy_in_force(n):
    result = threads.set_num_threads(n)
    assert result == expected(n, threads.policy())
    assert numba.get_num_threads() == result["numba"] and set(blas_threads()) == {result["blas"]}
    if threads.policy() == "split":
        assert result["numba"] + result["blas"] <= max(n, 2)


def test_default_is_every_core_of_this_process():
    assert threads.set_num_threads() == expected(threads.default_num_threads(), threads.policy())
    assert threads.get_num_threads() == threads.default_num_threads()


def test_blas_count_can_be_given():
    numba_threads = 2 if threads.policy() == "shared" else 1
    assert threads.set_num_threads(2, blas=2) == {"n": 2, "numba": min(numba_threads, numba.config.NUMBA_NUM_THREADS),
                                                  "blas": 2}
    assert set(blas_threads()) == {2}


def test_more_threads_than_numba_has_are_capped():
    result = threads.set_num_threads(4 * numba.config.NUMBA_NUM_THREADS)
    assert result["numba"] == numba.config.NUMBA_NUM_THREADS


def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    outs = []
    for n in (1, threads.default_num_threads()):
        threads.set_num_threads(n)
        out, cache = F.conv2d_forward(x, w, None, 1, 1)
        outs.append((out, *F.conv2d_backward(np.ones_like(out), cache)[:2]))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError), ("2", TypeError), (True, TypeError),
                                        (1.5, TypeError)])
def test_bad_thread_counts_are_named(bad, error):
    with pytest.raises(error, match="set_num_threads: n must be an int >= 1"):
        threads.set_num_threads(bad)
    with pytest.raises(error, match="set_num_threads: blas must be an int >= 1"):
        threads.set_num_threads(1, blas=bad)


PROBE = """
import cnn_im2col.threads as T
import json, numpy as np, numba, threadpoolctl
from cnn_im2col import functional as F
x = np.ones((2, 3, 6, 6), np.float32)
o, c = F.max_pool2d_forward(x, 2)          # the first parallel kernels of this process
F.conv2d_backward(np.ones((2, 1, 4, 4), np.float32), F.conv2d_forward(x, np.ones((1, 3, 3, 3), np.float32))[1])
print(json.dumps({"layer": numba.threading_layer(), "info": T.thread_info(),
                  "blas": [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]}))
"""


def run_probe(**env_changes):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_THREADING_LAYER", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(env_changes)
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fresh_process_uses_workqueue_and_keeps_the_blas_limit_after_the_first_kernel():
    """The first parallel kernel of a process resets OpenBLAS's thread count; the default split must
    survive it (it is applied after a warm-up kernel), and idle Numba workers must not spin."""
    result = run_probe()
    assert result["layer"] == "workqueue"
    assert result["info"]["policy"] == "shared"  # the probe imports cnn_im2col before NumPy
    counts = expected(threads.default_num_threads(), "shared")
    assert set(result["blas"]) == {counts["blas"]}
    assert result["info"]["numba"] == counts["numba"]


def test_the_users_choice_of_layer_and_blas_threads_is_respected():
    result = run_probe(NUMBA_THREADING_LAYER="workqueue", OPENBLAS_NUM_THREADS="2")
    assert result["layer"] == "workqueue"
    assert set(result["blas"]) == {2}


SPIN_PROBE = """
import os, sys, threading, time, json
if sys.argv[1] == "numpy-first":
    import numpy
import cnn_im2col.threads as T
import numpy as np
T.set_num_threads(2, blas=2)
a = np.ones((512, 512))
me = threading.get_native_id()
def others_running():  # threads of this process, other than this one, in state R (running)
    count = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended
            continue
        count += int(tid) != me and stat[stat.rindex(")") + 2] == "R"
    return count
busy = samples = 0
for _ in range(5):
    a @ a  # a GEMM on 2 BLAS threads; then 20 ms in which nothing else of ours should run
    end = time.perf_counter() + 0.02
    while time.perf_counter() < end:
        samples += 1
        busy += others_running() > 0
print(json.dumps({"policy": T.policy(), "samples": samples, "busy": busy}))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
@pytest.mark.parametrize("order, policy", [("cnn_im2col-first", "shared"), ("numpy-first", "split")])
def test_idle_blas_workers_sleep_under_the_shared_policy_only(order, policy):
    """After a GEMM, OpenBLAS's worker sleeps at once if cnn_im2col was imported before NumPy (so the
    Numba kernels that follow have the cores to themselves); imported after NumPy, the worker spins
    on (OpenBLAS's default), which is why that case gets the "split" policy."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS",
                                                              "OMP_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", SPIN_PROBE, order], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["policy"] == policy and result["samples"] > 50
    if policy == "shared":
        assert result["busy"] == 0, result
    else:  # the control: the same probe does see a spinning worker
        assert result["busy"] > result["samples"] // 2, result
