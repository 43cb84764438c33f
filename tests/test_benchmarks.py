"""The benchmark scripts run at tiny sizes and write well-formed JSON (no timing is asserted), the
shared helpers do what they say, and Numba's cache is reused from NUMBA_CACHE_DIR."""

import argparse
import json
import math
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import _common as C  # noqa: E402 - benchmarks/ must be on sys.path first


def run_script(script, *args, env=None):
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                          text=True,
                          timeout=600, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_bench_layers_quick_writes_well_formed_json(tmp_path):
    proc = run_script("bench_layers.py", "--quick", "--no-compile", "--out", str(tmp_path))
    data = json.loads((tmp_path / "layers-quick.json").read_text())
    assert (tmp_path / "layers-quick.md").read_text().startswith("# Layer benchmark")
    assert "| case | mode |" in proc.stdout
    assert data["benchmark"] == "layers" and data["quick"] is True
    assert data["machine"]["cores"] >= 1 and data["threads"] >= 1
    assert {r["kind"] for r in data["results"]} == {"conv", "max", "avg", "net", "vgg"}
    assert any(r["shape"]["dilation"] > 1 and r["shape"]["groups"] > 1 for r in data["results"])
    for result in data["results"]:
        assert set(result["modes"]) == {"forward", "forward+backward"}
        plain = (result["shape"]["dilation"], result["shape"]["groups"]) == (1, 1)
        expected = (
            {"numba"} if result["kind"] == "net" else {"numba", "im2col"} if result["kind"] == "vgg"
            else {"ref", "numpy", "numba"} if plain
            else {"numpy", "numba"})  # the primer's reference knows neither dilation nor groups
        if "Winograd" in result["case"]:  # the default took Winograd: im2col is timed beside it
            expected.add("im2col")
        for entry in result["modes"].values():
            impls = set(entry["median_ms"])
            assert expected <= impls <= expected | {"torch"}
            assert all(is_number(v) and v > 0 for v in entry["median_ms"].values())
            assert all(is_number(v) and v >= 0 for v in entry["peak_extra_bytes"].values())
            assert set(entry["speedup_numba_vs"]) == impls - {"numba"}
            if result["kind"] == "conv":
                assert is_number(
                    entry["gflops"]["numba"]) and is_number(entry["fraction_of_gemm_rate"]["numba"])
        if result["kind"] == "conv":
            assert is_number(result["gemm"]["gflops"])


def test_bench_train_quick_writes_well_formed_json(tmp_path):
    run_script("bench_train.py", "--quick", "--out", str(tmp_path))
    data = json.loads((tmp_path / "train-quick.json").read_text())
    assert (tmp_path / "train-quick.md").read_text().startswith("# Training benchmark")
    assert data["benchmark"] == "train" and data["data"] == "synthetic"
    frameworks = set(data["summary"])
    assert "ours" in frameworks and frameworks <= {"ours", "torch", "torch, 1 thread"}
    for summary in data["summary"].values():
        for key in ("epoch_s", "samples_per_s", "ms_per_batch", "inference_s", "peak_rss_bytes"):
            assert is_number(summary[key]) and summary[key] > 0
    ratio_keys = {"epoch_time_ours_over_torch", "inference_time_ours_over_torch",
                  "peak_rss_ours_over_torch"}
    if "torch" in frameworks:
        assert set(
            data["ratios"]) == ratio_keys and all(is_number(v) for v in data["ratios"].values())
    if "torch, 1 thread" in frameworks:
        assert set(data["ratios_vs_torch_one_thread"]) == ratio_keys
    for f, summary in data["summary"].items():
        mean = summary["runnable_threads_mean"]
        assert mean is None or (is_number(mean) and mean >= 0)
        if f == "ours" and C.RunnableThreads.supported():
            run = data["runs"]["ours"][0]
            assert run["runnable_threads"] is None or run["runnable_threads"]["samples"] >= 1
    run = data["runs"]["ours"][0]
    # NumPy first, as a user's script
    assert run["first"] == "numpy" and run["threads"]["blas"] == 1
    floor = data["gemm_floor"]
    assert floor["step_s"] > 0 and floor["mflop_per_step"] == pytest.approx(590, rel=0.01)
    assert set(
        floor["fraction_of_floor"]) == {"ours"} and is_number(floor["fraction_of_floor"]["ours"])
    stages = data["profile"]["stages"]
    assert {"im2col", "GEMM", "col2im", "pooling", "activations", "python overhead",
            "total"} <= set(stages)
    covered = sum(v["ms_per_batch"] for k, v in stages.items() if k != "total")
    assert covered == pytest.approx(stages["total"]["ms_per_batch"], rel=1e-6)


# every script that writes its results to --out DIR
OUT_DIR_SCRIPTS = ["bench_cnn_layers.py", "bench_decode.py", "bench_inference.py",
                   "bench_layers.py", "bench_mpi.py", "bench_networks.py", "bench_train.py",
                   "profile_conv.py", "onnx_conformance.py", "opinfo_samples.py"]


@pytest.mark.parametrize("script", OUT_DIR_SCRIPTS)
def test_a_missing_out_folder_stops_the_script_before_it_times_anything(script, tmp_path):
    """Not --quick: a full run would time for minutes before writing; the folder is checked first,
    and the error names the option, the path and what it takes (argparse's: usage, status 2)."""
    missing = tmp_path / "nowhere"
    proc = subprocess.run([sys.executable, str(BENCH / script), "--out", str(missing)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (f"error: --out '{missing}' does not exist: it takes an existing writable folder"
            in proc.stderr)
    assert proc.stderr.startswith("usage: ") and "Traceback" not in proc.stderr
    assert proc.stdout == "" and not missing.exists()


def test_check_out_dir_passes_a_writable_folder_or_none_and_refuses_a_file(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="bench")
    C.check_out_dir(parser, None)
    C.check_out_dir(parser, tmp_path)
    C.check_out_dir(parser, str(tmp_path))
    afile = tmp_path / "results.json"
    afile.write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        C.check_out_dir(parser, afile)
    assert exit_.value.code == 2
    assert (f"bench: error: --out '{afile}' is not a folder: it takes an existing writable folder"
            in capsys.readouterr().err)


def test_a_results_file_in_a_missing_folder_stops_the_threads_script_at_once(tmp_path):
    """bench_threads.py writes one file (``--out FILE``): a path it could not write is refused
    before its minutes of timing, as the folder scripts refuse theirs."""
    target = tmp_path / "nowhere" / "threads.json"
    proc = subprocess.run([sys.executable, str(BENCH / "bench_threads.py"), "--out", str(target)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (f"error: --out '{target}' is in a folder that does not exist "
            f"('{target.parent}'): it takes a file path in an existing writable folder"
            in proc.stderr)
    assert proc.stderr.startswith("usage: ") and "Traceback" not in proc.stderr
    assert proc.stdout == "" and not target.parent.exists()


def test_check_out_file_passes_a_path_in_a_writable_folder_and_refuses_a_folder(tmp_path,
                                                                                 capsys):
    parser = argparse.ArgumentParser(prog="bench")
    C.check_out_file(parser, tmp_path / "threads.json")
    C.check_out_file(parser, str(tmp_path / "threads.json"))
    with pytest.raises(SystemExit) as exit_:
        C.check_out_file(parser, tmp_path)
    assert exit_.value.code == 2
    assert (f"bench: error: --out '{tmp_path}' is a folder: it takes a file path in an existing "
            f"writable folder" in capsys.readouterr().err)


def test_stage_profiler_counts_exclusive_time_and_restores_targets():
    class Target:
        @staticmethod
        def outer():
            time.sleep(0.02)
            return Target.inner() + 1

        @staticmethod
        def inner():
            time.sleep(0.03)
            return 1

    original = Target.__dict__["outer"]
    prof = C.StageProfiler()
    with prof.patch([(Target, "outer", "a"), (Target, "inner", "b"), (Target, "absent", "c")]):
        assert Target.outer() == 2
    assert Target.__dict__["outer"] is original
    assert prof.missing == ["Target.absent"]
    assert 0.015 < prof.seconds["a"] < 0.029  # the nested 30 ms are not counted twice
    assert prof.seconds["b"] >= 0.025
    parts = C.breakdown(prof.seconds, 0.1, 2, ["a", "b"])
    assert parts["total"]["ms_per_batch"] == pytest.approx(50)
    assert sum(v["ms_per_batch"] for k, v in parts.items() if k != "total") == pytest.approx(50)


def test_output_helpers():
    assert C.finite_or_none({"a": [1.0, float("nan")],
                             "b": float("inf")}) == {"a": [1.0, None], "b": None}
    table = C.markdown_table(["x", "y"], [[1.23456, None], ["s", 12345.6]])
    assert table.splitlines() == ["| x | y |", "|---|---|", "| 1.23 | — |", "| s | 12,346 |"]
    size, method = C.peak_extra_bytes(lambda: bytearray(8 * 2**20))
    assert method in ("rss", "tracemalloc") and size > 0


def test_machine_line_names_the_blas_kernel_and_who_chose_it(monkeypatch):
    info = C.machine_info()
    info["blas"] = [{"internal_api": "openblas", "version": "0.3.31", "architecture": "SkylakeX"}]
    info["blas_overrides"] = {}
    assert "openblas 0.3.31, SkylakeX kernel detected" in C.machine_line(info)
    info["blas"][0]["architecture"] = "Haswell"
    info["blas_overrides"] = {"OPENBLAS_CORETYPE": "Haswell"}
    assert "Haswell kernel forced by OPENBLAS_CORETYPE=Haswell" in C.machine_line(info)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Zen")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    assert C.machine_info()["blas_overrides"] == {"OPENBLAS_CORETYPE": "Zen"}


def test_machine_line_says_how_the_heap_was_set():
    info = C.machine_info()
    info["allocator"] = {"configured": True, "reason": "mmap threshold ..."}
    assert "; heap: the engine's thresholds" in C.machine_line(info)
    info["allocator"] = {"configured": False, "reason": "CNN_IM2COL_ALLOCATOR=system"}
    assert "; heap: CNN_IM2COL_ALLOCATOR=system" in C.machine_line(info)


def test_jit_cache_is_reused_from_numba_cache_dir_with_a_read_only_package(tmp_path):
    """A copy of the package, made read-only, with NUMBA_CACHE_DIR set: the first process compiles
    and writes the cache there, the second loads everything from it (no compilation), and nothing
    is ever written into the package directory."""
    from bench_layers import COMPILE_PROBE

    package = tmp_path / "site" / "cnn_im2col"
    shutil.copytree(ROOT / "cnn_im2col", package, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [package, *package.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    cache = tmp_path / "numba-cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(package.parent),
               PYTHONDONTWRITEBYTECODE="1")
    probe = COMPILE_PROBE + "\nimport cnn_im2col; print(cnn_im2col.__file__, file=sys.stderr)\n"
    try:
        runs = []
        for _ in range(2):
            proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                  env=env,
                                  timeout=600, check=False,
                                  cwd=tmp_path)  # not the checkout: '' is on sys.path
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert str(package) in proc.stderr  # the read-only copy was the package imported
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        cold, cached = runs
        assert cold["cache_misses"] > 0
        # every kernel from the cache; one compiled only where another calls it (Winograd's
        # transforms inside its one-call backward) comes in with its caller, not on its own
        assert cached["cache_misses"] == 0 and 0 < cached["cache_hits"] <= cold["cache_misses"]
        assert any(cache.rglob("*.nbi"))
        assert not list(package.rglob("*.nbi")) and not list(package.rglob("*.nbc"))
    finally:
        for path in [package, *package.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.mark.skipif(not C.RunnableThreads.supported(), reason="needs Linux /proc")
def test_runnable_threads_sees_a_busy_process_and_summarises_a_window():
    busy = subprocess.Popen([sys.executable, "-c",
                             "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"])
    sampler = C.RunnableThreads(busy.pid, interval=0.01)
    sampler.start()
    time.sleep(0.5)
    samples = sampler.stop()
    busy.wait(timeout=60)
    assert len(samples) >= 5 and max(count for _, count in samples) == 1  # one thread, spinning
    summary = C.runnable_summary([[1.0, 1], [2.0, 3], [3.0, 2], [9.0, 4]], 1.0, 3.0, cores=2)
    assert summary == {"samples": 3, "mean": 2.0, "max": 3, "over_cores": pytest.approx(1 / 3)}
    assert C.runnable_summary(samples, 0.0, 0.0, cores=2) is None


@pytest.mark.skipif(not C.RunnableThreads.supported() or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux /proc and 2 cores")
def test_runnable_threads_leaves_out_the_engines_spinners():
    """While the engine keeps its cores awake, its spinners are runnable but only yield: the
    sampler counts the one thread that computes."""
    from cnn_im2col import threads

    assert C.SPINNER_NAME == threads.SPINNER_NAME
    busy = subprocess.Popen([sys.executable, "-c", (
        "import time\nfrom cnn_im2col import threads as T\nwith T.engine_blas():\n"
        "    T.parallel_map(lambda i: i, [0, 1])  # wakes the spinners\n"
        "    print(T.thread_info()['spinners'], flush=True)\n"
        "    end = time.time() + 1.5\n    while time.time() < end: pass\n")],
        stdout=subprocess.PIPE, text=True)
    assert int(busy.stdout.readline()) == len(os.sched_getaffinity(0))
    sampler = C.RunnableThreads(busy.pid, interval=0.01)
    sampler.start()
    time.sleep(0.5)
    samples = sampler.stop()
    busy.wait(timeout=60)
    assert len(samples) >= 5 and max(count for _, count in samples) == 1


def test_bench_mpi_quick_writes_well_formed_json(tmp_path):
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install '.[mpi]')")
    run_script("bench_mpi.py", "--quick", "--out", str(tmp_path))
    data = json.loads((tmp_path / "mpi-quick.json").read_text())
    assert data["benchmark"] == "mpi" and data["quick"] is True
    assert set(data["summary"]) == {"1 process x 1 thread", "1 process x 2 threads",
                                    "2 ranks x 1 thread"}
    for name, entry in data["summary"].items():
        assert is_number(entry["epoch_s"]) and entry["epoch_s"] > 0, name
        assert 0 <= entry["test_accuracy"] <= 1
    assert [r["ranks"] for r in data["runs"]["2 ranks x 1 thread"]] == [2]
    assert data["allreduce"]["buffer_bytes"] == 4 * (317_066 + 4)
    assert is_number(
        data["allreduce"]["allreduce_buffer_s"]) and data["allreduce"]["allreduce_buffer_s"] > 0


def test_profile_conv_quick_profiles_both_algorithms(tmp_path):
    run_script("profile_conv.py", "--quick", "--out", str(tmp_path))
    data = json.loads((tmp_path / "profile-conv-quick.json").read_text())
    assert (tmp_path / "profile-conv-quick.md").read_text().startswith("# Convolution profile")
    assert data["benchmark"] == "profile-conv" and data["missing_targets"] == []
    ms = data["ms_per_call"]
    assert set(ms) == {"im2col", "winograd"}
    for algorithm, stages in ms.items():
        assert all(is_number(v) and v >= 0 for v in stages.values())
        parts = sum(v for k, v in stages.items() if k != "total")
        assert parts == pytest.approx(stages["total"], rel=1e-6) or parts > stages["total"]
        ran = {"im2col": ("im2col", "col2im"),
               "winograd": ("input transform", "output adjoint")}[algorithm]
        idle = {"im2col": ("input transform", "output adjoint"),
                "winograd": ("im2col", "col2im")}[algorithm]
        assert all(stages[s] > 0 for s in ran) and all(stages[s] == 0 for s in idle)


def test_profile_conv_of_a_strided_layer_profiles_im2col_alone(tmp_path):
    run_script("profile_conv.py", "--quick", "--stride", "2", "--out", str(tmp_path))
    data = json.loads((tmp_path / "profile-conv-quick.json").read_text())
    assert data["stride"] == 2 and set(data["ms_per_call"]) == {"im2col"}
    assert "stride 2" in (tmp_path / "profile-conv-quick.md").read_text()
    assert data["ms_per_call"]["im2col"]["im2col"] > 0


def test_pytorch_opinfo_samples_are_never_wrong():
    """PyTorch's OpInfo samples of conv2d, the pools, batch_norm and adaptive_avg_pool2d through
    the layers in float64 (benchmarks/opinfo_samples.py): each passes or cannot be expressed."""
    pytest.importorskip("torch")
    pytest.importorskip("expecttest", reason="PyTorch's OpInfo database needs expecttest")
    import opinfo_samples

    results = opinfo_samples.run_all()
    assert [r for r in results if r["verdict"] == "wrong"] == []
    assert sum(r["verdict"] == "pass" for r in results) >= 603  # measured 2026-12-04 (165 at first)


def test_bench_inference_quick_compares_with_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    run_script("bench_inference.py", "--quick", "--out", str(tmp_path))
    data = json.loads((tmp_path / "inference.json").read_text())
    rows = data["results"]
    assert [(r["network"], r["batch"]) for r in rows] == [("vgg-bn", 1), ("vgg-bn", 64)]
    for r in rows:
        assert r["output_relative_error"] < 1e-4  # the same numbers as onnxruntime
        assert r["ms"]["ours"] > 0 and r["ms"]["session"] > 0 and r["ms"]["ort"] > 0
        assert is_number(r["ratio"]) and is_number(r["session_ratio"])


def test_bench_networks_quick_times_both_sides_and_their_memory(tmp_path):
    pytest.importorskip("torch")
    run_script("bench_networks.py", "--quick", "--out", str(tmp_path))
    data = json.loads((tmp_path / "networks.json").read_text())
    (row,) = data["results"]
    assert row["network"] == "resnet20" and is_number(row["ratio"])
    for side in ("ours", "torch"):
        assert row[side]["ms"] > 0
        assert row[side]["peak_rss"] >= row[side]["rss_after_imports"] > 0


def test_bench_cnn_layers_quick_times_both_sides(tmp_path):
    pytest.importorskip("torch")
    run_script("bench_cnn_layers.py", "--quick", "--out", str(tmp_path))
    data = json.loads((tmp_path / "cnn-layers.json").read_text())
    cases = [r["case"] for r in data["results"]]
    assert cases == ["BatchNorm2D, 2x4x6x6", "depthwise 3x3, 2x4x6x6"]
    for row in data["results"]:
        assert row["ms"]["ours"] > 0 and row["ms"]["torch"] > 0 and is_number(row["ratio"])
