"""Data-parallel scaling benchmark: 1 process on 1 thread, 1 process on 2 threads, 2 MPI ranks on
1 thread each, training the ``cnn-im2col train`` network (architectures.default_model: two
conv-pool groups and two dense layers, 317,066 parameters) on MNIST with Adam, batch 128, shifts of
up to 2 pixels.

Every configuration runs in its own launch (``python bench_mpi.py --worker`` or ``mpiexec -n 2
python -m mpi4py bench_mpi.py --worker``), alternated ``1x1, 1x2, 2x1, 1x1, ...`` for ``--rounds``.
A worker first trains one untimed warm-up epoch on 512 images (Numba's JIT, MPI's first messages),
then ``--epochs`` timed epochs from the same seed, and evaluates on the test images. It reports:

- seconds per epoch (``fit``'s history) and samples/s; test accuracy (the same seed and global batch
  give the same accuracy on 1 or 2 ranks, up to float summation order and dropout masks);
- for 2 ranks, the time each step spends in the gradient Allreduce (including waiting for the
  slower rank), and a microbenchmark after training: the Allreduce of the gradient buffer
  (317,070 float32 = 1.27 MB) and of 8 bytes (the latency), medians of repeated calls.

    python benchmarks/bench_mpi.py                  # full run -> benchmarks/results/mpi.{json,md}
    python benchmarks/bench_mpi.py --quick          # tiny synthetic data, seconds (the tests)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# cnn_im2col before NumPy: then its thread pools can share the cores (see cnn_im2col.threads)
import cnn_im2col

# isort: split
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

HERE = Path(__file__).resolve()
BATCH = 128
CONFIGS = [  # (name, ranks, threads per rank)
    ("1 process x 1 thread", 1, 1),
    ("1 process x 2 threads", 1, 2),
    ("2 ranks x 1 thread", 2, 1),
]


# --------------------------------------------------------------------------------------------
# worker
# --------------------------------------------------------------------------------------------


def load_data(quick: bool, train: int, test: int):
    if quick:
        rng = np.random.default_rng(0)
        x = rng.random((train + test, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, train + test)
        return (x[:train], y[:train]), (x[train:], y[train:]), "synthetic"
    from cnn_im2col.datasets import load_mnist

    (x_train, y_train), (x_test, y_test) = load_mnist(progress=False, log=lambda m: None)
    return (x_train[:train], y_train[:train]), (x_test[:test], y_test[:test]), "MNIST"


def median_call(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def worker(args: argparse.Namespace) -> dict | None:
    from cnn_im2col import Adam, RandomShift, SoftmaxCrossEntropy, distributed
    from cnn_im2col.architectures import default_model

    comm = distributed.detect_comm()
    cnn_im2col.set_num_threads(args.threads)
    rank = 0 if comm is None else comm.Get_rank()
    (x, y), (xt, yt), source = load_data(args.quick, args.train, args.test)

    # instrument the step's collective: time spent in it, waiting for the slower rank included
    spent: list[float] = []
    original = distributed.DataParallel.allreduce_gradients

    def timed(self, *a, **k):
        t = time.perf_counter()
        try:
            return original(self, *a, **k)
        finally:
            spent.append(time.perf_counter() - t)

    distributed.DataParallel.allreduce_gradients = timed

    def train(model, xs, ys, epochs):
        return model.fit(xs, ys, epochs=epochs, batch_size=BATCH, optimizer=Adam(2e-3),
                         loss=SoftmaxCrossEntropy(),
                         seed=args.seed, augment=RandomShift(2), progress=False, log=None,
                         comm=comm)

    train(default_model(args.seed), x[:4 * BATCH], y[:4 * BATCH],
          1)  # untimed: JIT and first messages
    spent.clear()
    model = default_model(args.seed)
    history = train(model, x, y, args.epochs)
    steps = args.epochs * -(-x.shape[0] // BATCH)
    test = model.evaluate(xt, yt, batch_size=256) if rank == 0 else None

    micro = None
    if comm is not None:
        from mpi4py import MPI

        buffer = np.zeros(sum(p.size for p in model.params.values()) + 4, dtype=np.float32)
        tiny = np.zeros(2, dtype=np.float32)
        comm.Barrier()
        big = median_call(lambda: comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM),
                          args.micro_calls)
        comm.Barrier()
        small = median_call(lambda: comm.Allreduce(MPI.IN_PLACE, tiny, op=MPI.SUM),
                            10 * args.micro_calls)
        micro = {"buffer_bytes": int(buffer.nbytes), "allreduce_buffer_s": big,
                 "allreduce_8_bytes_s": small}
    if rank != 0:
        return None
    return {
        "ranks": 1 if comm is None else comm.Get_size(), "threads": cnn_im2col.get_num_threads(),
        "data": source, "train_images": int(x.shape[0]), "steps": steps,
        "epoch_seconds": history["seconds"], "samples_per_s": history["samples_per_s"],
        "train_accuracy": history["accuracy"][-1], "test_accuracy": test["accuracy"],
        "allreduce_step_s": statistics.median(spent) if spent else None,
        "allreduce_step_mean_s": statistics.fmean(spent) if spent else None,
        "micro": micro,
    }


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------


def launch(args: argparse.Namespace, ranks: int, threads: int) -> dict:
    worker_args = [str(HERE), "--worker", "--threads", str(threads), "--epochs", str(args.epochs),
                   "--train", str(args.train), "--test", str(args.test), "--seed", str(args.seed),
                   "--micro-calls", str(args.micro_calls)] + (["--quick"] if args.quick else [])
    if ranks == 1:
        command = [sys.executable, *worker_args]
    else:
        mpiexec = Path(sys.executable).with_name("mpiexec")
        command = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", str(ranks),
                   sys.executable, "-m",
                   "mpi4py", *worker_args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parents[1]),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ring_model(bytes_per_step: int, ranks: int, latency_s: float, bandwidth_bps: float) -> float:
    """Seconds of a ring allreduce: 2 (K-1) messages of S/K bytes each way around the ring."""
    return 2 * (ranks - 1) * (latency_s + bytes_per_step / ranks / bandwidth_bps)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny synthetic data (seconds)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="launches per configuration (alternated)")
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs per launch")
    parser.add_argument("--train", type=int, default=None, help="training images (default 60000)")
    parser.add_argument("--test", type=int, default=None, help="test images (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--micro-calls", type=int, default=None,
                        help="Allreduce calls timed after training")
    parser.add_argument("--timeout", type=float, default=7200)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    C.check_out_dir(parser, args.out)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 2)
    args.epochs = args.epochs or (1 if quick else 2)
    args.train = args.train or (256 if quick else 60000)
    args.test = args.test or (64 if quick else 10000)
    args.micro_calls = args.micro_calls or (5 if quick else 50)
    if args.worker:
        result = worker(args)
        if result is not None:
            print(json.dumps(C.finite_or_none(result)))
        return result or {}

    machine = C.machine_info()
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in CONFIGS}
    for _ in range(args.rounds):
        for name, ranks, threads in CONFIGS:
            runs[name].append(launch(args, ranks, threads))
            print(f"{name}: {runs[name][-1]['epoch_seconds']}", file=sys.stderr, flush=True)

    def epoch_s(name):  # median over every timed epoch of every launch
        return statistics.median(s for r in runs[name] for s in r["epoch_seconds"])

    base = epoch_s(CONFIGS[0][0])
    rows, summary = [], {}
    for name, ranks, threads in CONFIGS:
        seconds = epoch_s(name)
        speedup = base / seconds
        cores = ranks * threads
        acc = statistics.median(r["test_accuracy"] for r in runs[name])
        ar = [r["allreduce_step_s"] for r in runs[name] if r["allreduce_step_s"] is not None]
        steps = runs[name][0]["steps"] / args.epochs
        summary[name] = {"epoch_s": seconds, "speedup": speedup, "efficiency": speedup / cores,
                         "test_accuracy": acc, "step_s": seconds / steps,
                         "allreduce_step_s": statistics.median(ar) if ar else None}
        rows.append([name, seconds, args.train / seconds, speedup, speedup / cores,
                     1e3 * seconds / steps,
                     1e3 * summary[name]["allreduce_step_s"] if ar else "-", f"{100 * acc:.2f}%"])
    micro = [r["micro"] for r in runs[CONFIGS[2][0]] if r["micro"]]
    micro_summary = None
    if micro:
        big = statistics.median(m["allreduce_buffer_s"] for m in micro)
        small = statistics.median(m["allreduce_8_bytes_s"] for m in micro)
        nbytes = micro[0]["buffer_bytes"]
        # two ranks: the ring sends 2 (K-1) = 2 messages of S/2 bytes: t = 2 alpha + S / B
        alpha = small / 2
        bandwidth = nbytes / max(big - 2 * alpha, 1e-12)
        micro_summary = {"buffer_bytes": nbytes, "allreduce_buffer_s": big,
                         "allreduce_8_bytes_s": small,
                         "alpha_s": alpha, "bandwidth_bytes_per_s": bandwidth}

    heads = ["configuration", "s/epoch", "samples/s", "speedup vs 1x1",
             "efficiency (speedup / cores)",
             "ms/step", "allreduce ms/step (incl. wait)", "test accuracy"]
    md = [f"# Data-parallel scaling ({'quick, synthetic' if quick else 'MNIST'})", "",
          f"Machine: {C.machine_line(machine)}.", "",
          (f"{args.train} training images, batch {BATCH}, {args.epochs} timed epoch(s) per launch "
           f"after a warm-up, {args.rounds} launch(es) per configuration, alternated; medians."),
          "",
          C.markdown_table(heads, rows)]
    if micro_summary:
        md += ["", (f"Allreduce of the gradient buffer ({nbytes:,} bytes) on 2 ranks: "
               f"{1e3 * micro_summary['allreduce_buffer_s']:.3f} ms; of 8 bytes: "
               f"{1e6 * micro_summary['allreduce_8_bytes_s']:.1f} us (latency alpha ~ "
               f"{1e6 * micro_summary['alpha_s']:.1f} us per message, shared-memory bandwidth ~ "
               f"{micro_summary['bandwidth_bytes_per_s'] / 1e9:.2f} GB/s).")]
    data = C.finite_or_none({"benchmark": "mpi", "quick": quick, "machine": machine, "batch": BATCH,
                             "epochs": args.epochs, "rounds": args.rounds,
                             "train_images": args.train,
                             "summary": summary, "allreduce": micro_summary, "runs": runs})
    name = args.name or ("mpi-quick" if quick else "mpi")
    C.publish(name, data, "\n".join(md), args.out)
    return data


if __name__ == "__main__":
    main()
