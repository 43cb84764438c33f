"""Tests for data-parallel training (cnn_im2col.distributed, fit(comm=...), ``train`` under MPI).

The MPI tests launch real MPI: ``mpiexec -n 2 python -m mpi4py tests/mpi_scenarios.py ...`` (the
mpiexec beside ``sys.executable``, as the ``mpich`` wheel installs it), each a few seconds on tiny
data, every one under a timeout so that a hang fails the test instead of stalling CI. They are
skipped (with the reason) only when mpi4py is not installed; the ``dev`` extra installs it.
"""

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_digits

from cnn_im2col import Adam, Dense, Sequential, SoftmaxCrossEntropy
from cnn_im2col import distributed as dist
from cnn_im2col.datasets import write_idx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# seconds for a whole launch (2 Python processes importing numba, on a loaded machine)
LAUNCH_TIMEOUT = 300


def _mpiexec() -> str | None:
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _mpi_missing() -> str | None:
    try:
        import importlib.util

        if importlib.util.find_spec("mpi4py") is None:
            return "mpi4py is not installed (pip install '.[mpi]')"
    except ImportError:
        return "mpi4py is not installed (pip install '.[mpi]')"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=_mpi_missing() or "")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for name in dist.MPI_ENVIRONMENT:  # a pytest run under mpiexec must not confuse the children
        env.pop(name, None)
    return env


def _launch(*args: str, ranks: int = 2) -> list[str]:
    mpiexec = _mpiexec()
    if mpiexec is None:
        pytest.fail("mpi4py is installed but no mpiexec was found beside python or on PATH "
                    "(pip install mpich, or the system's MPI)")
    return [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py", *args]


def run_scenario(name: str, out: Path, ranks: int = 2) -> dict:
    proc = subprocess.run(_launch(str(HERE / "mpi_scenarios.py"), name, str(out), ranks=ranks),
                          check=False,
                          env=_env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "result.json").read_text())


# ------------------------------------------------------------------------------------------
# without MPI
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 5, 8, 13])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shares_cover_the_batch_once_in_order_and_differ_by_at_most_one(count, size):
    shares = [dist.share(count, r, size) for r in range(size)]
    assert shares[0][0] == 0 and shares[-1][1] == count
    assert all(a[1] == b[0] for a, b in itertools.pairwise(shares))
    sizes = [hi - lo for lo, hi in shares]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("features", [(1,), (3,), (2, 5)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sample_keyed_generator_gives_each_share_its_rows_of_the_global_draw(features, dtype):
    batch = 7
    whole = np.random.default_rng([3, 1]).random((batch, *features), dtype=dtype)
    for size in (2, 3):
        parts = []
        for r in range(size):
            lo, hi = dist.share(batch, r, size)
            gen = dist.SampleKeyedGenerator(np.random.PCG64(np.random.SeedSequence([3, 1])), lo)
            parts.append(gen.random((hi - lo, *features), dtype=dtype))
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_fit_refuses_a_comm_that_is_not_a_communicator():
    model = Sequential([Dense(4, 2, seed=0)])
    x, y = np.zeros((4, 4), np.float32), np.zeros(4, int)
    with pytest.raises(TypeError,
                       match=r"Sequential\.fit: comm must be an mpi4py communicator .* got object"):
        model.fit(x, y, epochs=1, batch_size=2, optimizer=Adam(1e-3), loss=SoftmaxCrossEntropy(),
                  comm=object())


def test_fingerprint_sees_data_model_and_settings():
    model = Sequential([Dense(4, 2, seed=0)])
    x, y = np.zeros((4, 4), np.float32), np.zeros(4, int)
    base = dist.fingerprint(model, x, y, None, epochs=1, optimizer=Adam(1e-3), resume=None)
    assert base == dist.fingerprint(Sequential([Dense(4, 2, seed=5)]), x.copy(), y.copy(), None,
                                    epochs=1,
                                    optimizer=Adam(1e-3),
                                    resume=None)  # layer seeds: rank 0's weights win
    x2 = x.copy()
    x2[1, 2] = 1
    assert dist.fingerprint(model, x2, y, None, epochs=1, optimizer=Adam(1e-3),
                            resume=None)["x"] != base["x"]
    other = dist.fingerprint(model, x, y, None, epochs=1, optimizer=Adam(2e-3), resume=None)
    assert other["optimizer"] != base["optimizer"]


def test_not_launched_by_mpi_means_no_communicator(monkeypatch):
    for name in dist.MPI_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    assert dist.detect_comm() is None


def test_python_dash_m_runs_the_command():
    proc = subprocess.run([sys.executable, "-m", "cnn_im2col", "--version"], check=False,
                          env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("cnn-im2col "), proc.stderr


# ------------------------------------------------------------------------------------------
# real MPI, 2 ranks
# ------------------------------------------------------------------------------------------


@needs_mpi
def test_two_ranks_train_like_one_process_and_refuse_mismatched_ranks(tmp_path):
    result = run_scenario("equivalence", tmp_path)
    for case in result["cases"]:
        # float64, 3 epochs of 6 steps, the last batch of each epoch uneven (5 samples: 3 + 2)
        assert case["error"] < 1e-8, case
        assert case["params_same_on_ranks"], case
        assert case.get("history_same_on_ranks", True), case
    assert {c["case"] for c in result["cases"]} >= {"tied MaxPool2D", "tied AvgPool2D",
                                                    "untied MaxPool2D",
                                                    "untied AvgPool2D", "batch_size 1",
                                                    "residual"}
    # rank 0 saw 4 of every 8 samples and 3 of the last 5 (batches of 8 over 45: 5 x 8 + 5), 3
    # epochs
    assert result["buffers"] == {"same_on_ranks": True, "updated": True, "seen": 3 * (5 * 4 + 3)}
    mismatch = result["mismatch"]
    prefix = ("ValueError: Sequential.fit: the 2 MPI ranks must train on the same data with the "
              "same model")
    for name in ("data length", "learning rate", "model"):
        assert all(m is not None and m.startswith(prefix) and m.endswith("no step was taken")
                   for m in mismatch[name]), (name, mismatch[name])
    assert "rank 1 has training samples 44 (rank 0: 45)" in mismatch["data length"][0]
    assert "rank 1 has optimizer.config.lr 0.02 (rank 0: 0.01)" in mismatch["learning rate"][1]
    assert 'rank 1 has model.0.config.bias null (rank 0: "tied")' in mismatch["model"][0]
    # a rank whose own arguments are bad raises its own error; the others are told which rank failed
    labels = mismatch["labels on one rank"]
    assert "rank 1 failed: ValueError: Sequential.fit: y labels must be in [0, 5)" in labels[0]
    assert labels[1] == ("ValueError: Sequential.fit: y labels must be in [0, 5) for the "
                         "network's 5 outputs, got 7 at index 3")


@needs_mpi
def test_batchnorm_keeps_per_rank_statistics_as_ddp_does(tmp_path):
    """The documented choice (docs/distributed.md): each rank normalises its share with its own
    statistics, so a step equals the mean of the halves' gradients, not one process's step."""
    result = run_scenario("batchnorm", tmp_path)
    assert result["error_vs_per_rank_statistics"] < 1e-12, result
    assert result["error_vs_one_process"] > 1e-6, result
    assert result["running_equal_rank_0"] and result["params_same_on_ranks"], result
    assert result["buffers_same_on_ranks"], result


@needs_mpi
def test_interrupted_two_rank_run_resumes_bit_identical(tmp_path):
    result = run_scenario("resume", tmp_path)
    # only rank 1 asked to stop, after its 8th step: both ranks stopped after epoch 2, batch 2
    assert result["interrupted"] == [[2, 2], [2, 2]]
    assert result["checkpoint_state"] == [1, 2]
    assert result["bit_identical"] == [True, True]
    assert result["history_equal"] == [True, True]


@needs_mpi
def test_a_killed_rank_ends_the_job_without_a_hang_and_keeps_the_checkpoint(tmp_path):
    proc = subprocess.Popen(_launch(str(HERE / "mpi_scenarios.py"), "kill", str(tmp_path)),
                            env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while not (
            tmp_path / "killed").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (tmp_path / "killed").exists(), "rank 1 never reached the step where it kills itself"
        output, _ = proc.communicate(timeout=30)  # the job must end within 30 s of the kill
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the job did not end within 30 s after rank 1 was killed")
    assert proc.returncode != 0, output
    ckpt = Sequential.load_checkpoint(tmp_path / "kill.npz")  # the epoch-1 checkpoint, intact
    assert (ckpt.state["epoch"], ckpt.state["batch"]) == (1, 0)


@needs_mpi
def test_train_command_under_mpiexec(tmp_path):
    d = tmp_path / "idx"
    d.mkdir()
    x, y = synthetic_digits(120, 0)
    xt, yt = synthetic_digits(30, 1)
    write_idx(d / "train-images-idx3-ubyte", x)
    write_idx(d / "train-labels-idx1-ubyte", y)
    write_idx(d / "t10k-images-idx3-ubyte", xt)
    write_idx(d / "t10k-labels-idx1-ubyte", yt)
    out = tmp_path / "run"
    proc = subprocess.run(_launch("-m", "cnn_im2col", "train", "--data-dir", str(d), "--val-split",
                                  "20",
                                  "--epochs", "1", "--batch-size", "32", "--no-progress", "--out",
                                  str(out)),
                          check=False, env=_env(), capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("test accuracy ") == 1  # rank 0 alone prints
    assert "MPI: 2 ranks, data-parallel" in proc.stdout and "threads per rank" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["history"]["epoch"] == [1]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "curves.png", "metrics.json",
                                                     "model.npz"]


@needs_mpi
def test_train_command_interrupted_on_one_rank_resumes_bit_identical(tmp_path):
    result = run_scenario("cli-resume", tmp_path)
    # SIGTERM reached rank 1 only: every rank stopped after the same batch and exits 143
    assert result["codes"] == [{"full": 0, "interrupted": 143, "resumed": 0}] * 2
    assert result["bit_identical"] and result["world_size"] == 2


@needs_mpi
def test_dropout_and_augmentation_do_not_depend_on_the_number_of_ranks(tmp_path):
    for ranks in (2, 3):  # 3 ranks: shares 3+3+2 of a batch of 8, 2+2+1 of the last
        assert run_scenario("dropout", tmp_path, ranks=ranks)["params_same_on_ranks"]
    two, three = np.load(tmp_path / "dropout-2.npz"), np.load(tmp_path / "dropout-3.npz")
    for key in two.files:
        assert np.max(np.abs(two[key] - three[key])) <= 1e-8 * np.max(np.abs(two[key])), key
