"""Training benchmark: one MNIST epoch of LeNet, this engine vs PyTorch, alternated in one run.

The network: Conv2D(1, 20, 5), ReLU, MaxPool2D(2), Conv2D(20, 40, 5), ReLU, MaxPool2D(2), Flatten,
Dense(640, 100), ReLU, Dense(100, 10); SGD lr 0.05, momentum 0.9, batch 64, one epoch over the
first 50,000 MNIST training images (shuffled), then inference on the 10,000 test images (batch
1000). PyTorch trains the same network from the same initial weights on the same arrays.

Each measurement runs in its own process (so peak RSS is that framework's alone and the thread pools
never meet), alternating ``ours, torch, ours, torch, ...``; the table shows medians and the ratios.
JIT compilation is excluded (one untimed warm-up batch first; its time is reported). After its
epoch, each of our workers also profiles a number of batches: where a batch spends its time (im2col,
GEMM, col2im, layout+bias, pooling, activations, validation, loss, optimizer, Python overhead).

    python benchmarks/bench_train.py                 # full run -> benchmarks/results/train.{json,md}
    python benchmarks/bench_train.py --quick         # tiny synthetic data, seconds (the tests)
    python benchmarks/bench_train.py --profile-only  # just the per-batch breakdown of this engine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

BATCH = 64
TORCH_ONE = "torch, 1 thread"  # an extra reference when the engine has more than one thread
LR, MOMENTUM = 0.05, 0.9
STAGES = ["im2col", "GEMM", "col2im", "layout+bias", "pooling", "activations", "validation", "loss",
          "optimizer", "conv/dense inline"]


# --------------------------------------------------------------------------------------------
# Data and network
# --------------------------------------------------------------------------------------------


def load_data(quick: bool, train_count: int, test_count: int):
    """(x_train, y_train, x_test, y_test, source): MNIST, or tiny synthetic data with ``quick``."""
    if not quick:
        try:
            from cnn_im2col.datasets import load_mnist

            (x_train, y_train), (x_test, y_test) = load_mnist(progress=False, log=lambda m: None)
            return (np.ascontiguousarray(x_train[:train_count]), y_train[:train_count],
                    np.ascontiguousarray(x_test[:test_count]), y_test[:test_count], "MNIST")
        except Exception as exc:  # noqa: BLE001 - no data set: say so and measure on synthetic data
            print(f"MNIST unavailable ({exc}); using synthetic data of the same shape", file=sys.stderr)
    rng = np.random.default_rng(0)
    x_train = rng.random((train_count, 1, 28, 28), dtype=np.float32)
    x_test = rng.random((test_count, 1, 28, 28), dtype=np.float32)
    return (x_train, rng.integers(0, 10, train_count), x_test, rng.integers(0, 10, test_count), "synthetic")


def our_network(seed: int = 0):
    from cnn_im2col import layers as L

    return [L.Conv2D(1, 20, 5, seed=seed), L.ReLU(), L.MaxPool2D(2),
            L.Conv2D(20, 40, 5, seed=seed + 1), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
            L.Dense(640, 100, seed=seed + 2), L.ReLU(), L.Dense(100, 10, seed=seed + 3)]


class Ours:
    """The engine's training step: forward, fused softmax cross-entropy, backward, SGD."""

    def __init__(self, seed: int = 0) -> None:
        from cnn_im2col.losses import SoftmaxCrossEntropy
        from cnn_im2col.optim import SGD

        self.layers = our_network(seed)
        self.loss = SoftmaxCrossEntropy()
        self.opt = SGD(LR, momentum=MOMENTUM)
        self.params = {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    def forward(self, x, training):
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    def step(self, xb, yb) -> float:
        value = self.loss.forward(self.forward(xb, True), yb)
        d = self.loss.backward()
        for layer in reversed(self.layers):
            d = layer.backward(d)
        grads = {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()}
        self.opt.step(self.params, grads)
        return value

    def predict(self, x):
        return self.forward(x, False)


class Torch:
    """The same network in PyTorch, starting from our initial weights."""

    def __init__(self, torch, seed: int = 0) -> None:
        nn = torch.nn
        self.torch = torch
        self.net = nn.Sequential(nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(20, 40, 5), nn.ReLU(),
                                 nn.MaxPool2d(2), nn.Flatten(), nn.Linear(640, 100), nn.ReLU(), nn.Linear(100, 10))
        ours = our_network(seed)
        with torch.no_grad():
            for theirs, mine in zip([m for m in self.net if hasattr(m, "weight")],
                                    [m for m in ours if "weight" in m.params]):
                theirs.weight.copy_(torch.from_numpy(mine.params["weight"]))
                theirs.bias.copy_(torch.from_numpy(mine.params["bias"]))
        self.loss = nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=LR, momentum=MOMENTUM)

    def step(self, xb, yb) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.net(self.torch.from_numpy(xb)), self.torch.from_numpy(yb))
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def predict(self, x):
        with self.torch.no_grad():
            return self.net(self.torch.from_numpy(x)).numpy()


# --------------------------------------------------------------------------------------------
# Worker: one framework, one epoch, in its own process
# --------------------------------------------------------------------------------------------


def profile_targets():
    """(owner, attribute, stage) for StageProfiler: the engine's leaf operations. Names that an
    engine version lacks are skipped (so the same list profiles older checkouts)."""
    import cnn_im2col.losses as LS
    from cnn_im2col import _kernels as K
    from cnn_im2col import functional as F
    from cnn_im2col import im2col as I
    from cnn_im2col import layers as L
    from cnn_im2col.losses import SoftmaxCrossEntropy
    from cnn_im2col.optim import SGD

    return [(F, "unfold", "im2col"), (F, "unfold_t", "im2col"), (F, "fold", "col2im"), (F, "fold_t", "col2im"),
            (F, "gemm", "GEMM"), (K, "cnhw_to_nchw", "layout+bias"), (K, "nchw_to_cnhw", "layout+bias"),
            *[(K, name, "pooling") for name in ("max_pool_forward", "max_pool_forward_valid", "max_pool_forward_2x2",
                                               "max_pool_backward", "max_pool_backward_tiled", "sum_pool_forward",
                                               "sum_pool_backward")],
            (L.ReLU, "_forward", "activations"), (L.ReLU, "_backward", "activations"),
            *[(module, "as_float_array", "validation") for module in (F, L, I, LS)],
            (SoftmaxCrossEntropy, "forward", "loss"), (SoftmaxCrossEntropy, "backward", "loss"),
            (SGD, "step", "optimizer"),
            # what conv/dense do themselves besides the wrapped calls: in an engine that writes its
            # GEMMs and layout changes inline (the original one), that is where they are
            *[(F, name, "conv/dense inline") for name in ("conv2d_forward", "conv2d_backward")],
            *[(L.Dense, name, "conv/dense inline") for name in ("forward", "backward")]]


def profile_batches(model: Ours, x, y, batches: int) -> dict:
    prof = C.StageProfiler()
    rng = np.random.default_rng(1)
    order = rng.permutation(x.shape[0])
    batches = max(1, min(batches, x.shape[0] // BATCH))
    with prof.patch(profile_targets()):
        start = time.perf_counter()
        for b in range(batches):
            idx = order[b * BATCH:(b + 1) * BATCH]
            model.step(x[idx], y[idx])
        total = time.perf_counter() - start
    result = C.breakdown(prof.seconds, total, batches, STAGES)
    return {"batches": batches, "stages": result, "missing_targets": prof.missing}


def worker(framework: str, args) -> dict:
    x_train, y_train, x_test, y_test, source = load_data(args.quick, args.train, args.test)
    y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)
    rss_data = C.peak_rss_bytes()
    try:
        from cnn_im2col import threads
        threads.set_num_threads(args.threads)
        thread_info = threads.thread_info()
    except ImportError:  # an engine version without the threads module
        thread_info = None
    if framework == "torch":
        torch = C.import_torch()
        torch.set_num_threads(args.torch_threads or (thread_info["n"] if thread_info else os.cpu_count()))
        model = Torch(torch)
        thread_info = {"torch": torch.get_num_threads()}
    else:
        model = Ours()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(x_train.shape[0])

    start = time.perf_counter()  # warm-up batch: JIT compile or cache load, untimed in the epoch
    model.step(x_train[order[:BATCH]], y_train[order[:BATCH]])
    warmup_s = time.perf_counter() - start

    order = rng.permutation(x_train.shape[0])
    n = x_train.shape[0]
    losses = []
    start = time.perf_counter()
    for b in range(0, n, BATCH):
        idx = order[b:b + BATCH]
        losses.append(model.step(x_train[idx], y_train[idx]))
    epoch_s = time.perf_counter() - start

    start = time.perf_counter()
    correct = 0
    for b in range(0, x_test.shape[0], args.infer_batch):
        logits = model.predict(x_test[b:b + args.infer_batch])
        correct += int((np.asarray(logits).argmax(axis=1) == y_test[b:b + args.infer_batch]).sum())
    infer_s = time.perf_counter() - start
    result = {
        "framework": framework, "data": source, "train_images": n, "test_images": int(x_test.shape[0]),
        "threads": thread_info, "warmup_batch_s": warmup_s, "epoch_s": epoch_s, "samples_per_s": n / epoch_s,
        "ms_per_batch": 1e3 * epoch_s / len(losses), "inference_s": infer_s,
        "test_accuracy": correct / x_test.shape[0], "final_loss": float(np.mean(losses[-50:])),
        "peak_rss_bytes": C.peak_rss_bytes(), "rss_after_data_bytes": rss_data,
    }
    if framework == "ours" and args.profile_batches:
        result["profile"] = profile_batches(model, x_train, y_train, args.profile_batches)
    return result


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def worker_args(args, label: str) -> list[str]:
    framework = "ours" if label == "ours" else "torch"
    out = [str(Path(__file__).resolve()), "--worker", framework, "--train", str(args.train), "--test", str(args.test),
           "--infer-batch", str(args.infer_batch), "--profile-batches", str(args.profile_batches),
           "--seed", str(args.seed)]
    if args.threads:
        out += ["--threads", str(args.threads)]
    if label == TORCH_ONE:
        out += ["--torch-threads", "1"]
    elif args.torch_threads:
        out += ["--torch-threads", str(args.torch_threads)]
    if args.quick:
        out.append("--quick")
    return out


def summarise(runs: list[dict]) -> dict:
    keys = ("epoch_s", "samples_per_s", "ms_per_batch", "inference_s", "peak_rss_bytes", "warmup_batch_s",
            "test_accuracy")
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def profile_table(profile: dict) -> str:
    rows = [[stage, v["ms_per_batch"], v["percent"]] for stage, v in profile["stages"].items()]
    return C.markdown_table(["stage", "ms per batch", "% of batch"], rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny synthetic data (seconds)")
    parser.add_argument("--rounds", type=int, default=None, help="epochs per framework (alternated)")
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: all cores)")
    parser.add_argument("--torch-threads", type=int, default=None, help="PyTorch threads (default: the engine's)")
    parser.add_argument("--train", type=int, default=None, help="training images (default 50000)")
    parser.add_argument("--test", type=int, default=None, help="test images (default 10000)")
    parser.add_argument("--infer-batch", type=int, default=1000)
    parser.add_argument("--profile-batches", type=int, default=None, help="batches profiled after an epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-torch-one-thread", action="store_true",
                        help="skip the extra PyTorch reference with 1 thread")
    parser.add_argument("--profile-only", action="store_true", help="only the per-batch breakdown, in-process")
    parser.add_argument("--worker", choices=("ours", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    args.train = args.train or (512 if args.quick else 50_000)
    args.test = args.test or (256 if args.quick else 10_000)
    args.infer_batch = min(args.infer_batch, args.test)
    if args.profile_batches is None:
        args.profile_batches = 4 if args.quick else 200

    if args.worker:
        print(json.dumps(C.finite_or_none(worker(args.worker, args))))
        return {}
    if args.profile_only:
        try:
            from cnn_im2col import threads
            threads.set_num_threads(args.threads)
        except (ImportError, AttributeError):  # profiling an engine version without threads.py
            pass
        x, y, _, _, _ = load_data(args.quick, max(args.train, BATCH * 8), BATCH)
        model = Ours()
        model.step(x[:BATCH], y[:BATCH].astype(np.int64))
        prof = profile_batches(model, x, y.astype(np.int64), args.profile_batches)
        print(profile_table(prof))
        return prof

    torch = C.import_torch(not args.no_torch)
    rounds = args.rounds or (1 if args.quick else 2)
    from cnn_im2col import threads

    threads.set_num_threads(args.threads)
    frameworks = ["ours", "torch"] if torch is not None else ["ours"]
    if torch is not None and not args.no_torch_one_thread and threads.get_num_threads() > 1:
        frameworks.append(TORCH_ONE)
    machine = C.machine_info(torch)
    runs: dict[str, list[dict]] = {f: [] for f in frameworks}
    for r in range(rounds):
        for f in frameworks:
            result = C.run_json_subprocess(worker_args(args, f))
            runs[f].append(result)
            print(f"  round {r + 1}/{rounds} {f}: epoch {result['epoch_s']:.2f} s, inference "
                  f"{result['inference_s']:.2f} s, peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB",
                  file=sys.stderr, flush=True)
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    summary = {f: summarise(runs[f]) for f in frameworks}
    ratios = None
    if "torch" in summary:
        o, t = summary["ours"], summary["torch"]
        ratios = {"epoch_time_ours_over_torch": o["epoch_s"] / t["epoch_s"],
                  "inference_time_ours_over_torch": o["inference_s"] / t["inference_s"],
                  "peak_rss_ours_over_torch": o["peak_rss_bytes"] / t["peak_rss_bytes"]}
    profiles = [r["profile"] for r in runs["ours"] if "profile" in r]
    profile = None
    if profiles:  # the median of each stage over rounds
        profile = {"batches": profiles[0]["batches"], "stages": {
            stage: {k: statistics.median(p["stages"][stage][k] for p in profiles) for k in ("ms_per_batch", "percent")}
            for stage in profiles[0]["stages"]}}

    data_source = runs["ours"][0]["data"]
    heads = ["framework", "threads", "epoch s", "samples/s", "ms/batch", "inference s (10k)" if not args.quick
             else f"inference s ({args.test})", "peak RSS MiB", "test acc.", "warm-up batch s"]
    rows = []
    for f in frameworks:
        s = summary[f]
        th = runs[f][0]["threads"]
        th_text = (f"torch {th['torch']}" if f != "ours" else
                   f"Numba {th['numba']} + BLAS {th['blas']}" if th else "?")
        rows.append([f, th_text, s["epoch_s"], s["samples_per_s"], s["ms_per_batch"], s["inference_s"],
                     s["peak_rss_bytes"] / 2**20, s["test_accuracy"], s["warmup_batch_s"]])
    md = [f"# Training benchmark{' (quick)' if args.quick else ''}", "",
          f"Machine: {C.machine_line(machine)}.", "",
          (f"One epoch of LeNet (batch {BATCH}, SGD lr {LR}, momentum {MOMENTUM}) on {args.train:,} {data_source} "
          f"images, inference on {args.test:,} (batch {args.infer_batch}); medians of {rounds} alternated "
          "run(s) per framework, each in its own process."), "",
          C.markdown_table(heads, rows), ""]
    if TORCH_ONE in summary:
        o, t = summary["ours"], summary[TORCH_ONE]
        ratios_one = {"epoch_time_ours_over_torch": o["epoch_s"] / t["epoch_s"],
                      "inference_time_ours_over_torch": o["inference_s"] / t["inference_s"],
                      "peak_rss_ours_over_torch": o["peak_rss_bytes"] / t["peak_rss_bytes"]}
    else:
        ratios_one = None
    if ratios:
        heads_r = ["ratio (ours / torch)", "torch, same threads"] + (["torch, 1 thread"] if ratios_one else [])
        md += [C.markdown_table(heads_r, [
            [label, ratios[key]] + ([ratios_one[key]] if ratios_one else [])
            for label, key in (("epoch time", "epoch_time_ours_over_torch"),
                               ("inference time", "inference_time_ours_over_torch"),
                               ("peak RSS", "peak_rss_ours_over_torch"))]), ""]
    if profile:
        md += [(f"Where one training batch of this engine spends its time ({profile['batches']} profiled batches "
               "after the epoch; exclusive times of the wrapped engine functions, the rest is Python overhead):"), "",
               profile_table(profile), ""]
    markdown = "\n".join(md)
    data = C.finite_or_none({"benchmark": "train", "quick": args.quick, "machine": machine, "data": data_source,
                             "rounds": rounds, "summary": summary, "ratios": ratios,
                             "ratios_vs_torch_one_thread": ratios_one, "profile": profile,
                             "runs": runs})
    name = args.name or ("train-quick" if args.quick else "train")
    C.publish(name, data, markdown, args.out)
    return data


if __name__ == "__main__":
    main()
