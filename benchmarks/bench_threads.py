"""Does the engine's speed depend on leaving the user's BLAS threads alone?

The engine runs NumPy's BLAS on one thread only while it computes (``threads.engine_blas``) and
gives the BLAS its threads back after. This compares a LeNet training step (batch 64, MNIST-sized
random data) in two kinds of fresh process, alternated:

- ``polite``: the defaults a user gets (the BLAS keeps its threads outside the engine);
- ``pinned``: the BLAS limited to one thread for the whole process before the engine starts,
  as the engine itself did before.

Each process times ``--steps`` steps after a warm-up and reports the median step. The medians of
the processes of each kind and their ratio are printed and written to
``benchmarks/results/threads.json``. A user's own 1500x1500 matmul is timed in both, too.

    python3 benchmarks/bench_threads.py [--rounds 5] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402 - benchmarks/ must be on sys.path first

WORKER = """
import sys, time, json
import numpy as np
kind, steps = sys.argv[1], int(sys.argv[2])
if kind == "pinned":
    import threadpoolctl
    threadpoolctl.threadpool_limits(1, user_api="blas")
from cnn_im2col.architectures import lenet
from cnn_im2col.losses import SoftmaxCrossEntropy
from cnn_im2col.optim import SGD
rng = np.random.default_rng(0)
x = rng.random((64, 1, 28, 28), dtype=np.float32)
y = rng.integers(0, 10, 64)
model, loss, opt = lenet(0), SoftmaxCrossEntropy(), SGD(0.01, momentum=0.9)
def step():
    loss.forward(model.forward(x, training=True), y)
    model.backward(loss.backward(), input_grad=False)
    opt.step(model.params, model.grads)
for _ in range(5):
    step()
times = []
for _ in range(steps):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
a = rng.random((1500, 1500))
a @ a
t = time.perf_counter(); a @ a; matmul = time.perf_counter() - t
print(json.dumps({"step_ms": 1e3 * sorted(times)[len(times) // 2], "matmul_s": matmul}))
"""


def run(kind: str, steps: int) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, kind, str(steps)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "threads.json"))
    args = parser.parse_args()
    C.check_out_file(parser, args.out)
    results: dict[str, list[dict]] = {"polite": [], "pinned": []}
    for r in range(args.rounds):
        for kind in (("polite", "pinned") if r % 2 == 0 else ("pinned", "polite")):
            results[kind].append(run(kind, args.steps))
    summary = {kind: {"step_ms": statistics.median(r["step_ms"] for r in runs),
                      "matmul_s": statistics.median(r["matmul_s"] for r in runs)}
               for kind, runs in results.items()}
    summary["step_ratio_polite_over_pinned"] = (summary["polite"]["step_ms"]
                                                / summary["pinned"]["step_ms"])
    summary["matmul_ratio_polite_over_pinned"] = (summary["polite"]["matmul_s"]
                                                  / summary["pinned"]["matmul_s"])
    summary["rounds"], summary["steps"] = args.rounds, args.steps
    summary["date"] = time.strftime("%Y-%m-%d %H:%M")
    print(json.dumps(summary, indent=2))
    from cnn_im2col._files import atomic_write  # after the timed processes: imports nothing early

    with atomic_write(args.out, "w") as handle:
        json.dump({**summary, "runs": results}, handle, indent=2)


if __name__ == "__main__":
    main()
