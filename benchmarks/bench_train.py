"""Training benchmark: one MNIST epoch of LeNet, this engine vs PyTorch, alternated in one run.

The network: Conv2D(1, 20, 5), ReLU, MaxPool2D(2), Conv2D(20, 40, 5), ReLU, MaxPool2D(2), Flatten,
Dense(640, 100), ReLU, Dense(100, 10); SGD lr 0.05, momentum 0.9, batch 64, one epoch over the
first 50,000 MNIST training images (shuffled), then inference on the 10,000 test images (batch
1000). PyTorch trains the same network from the same initial weights on the same arrays.

This engine trains with ``Sequential.fit`` and infers with ``Sequential.predict``, as users do;
PyTorch with the usual loop. Each worker imports NumPy first, as a user's script does; the engine
is also run with ``cnn_im2col`` imported first and after PyTorch has trained a batch in the same
process (``--orders``), to show that its speed does not depend on either.

The GEMM floor: a worker that never imports the engine runs NumPy's ``np.matmul`` (its BLAS with
its default threads) on the GEMMs of one training step as im2col lowers it (``step_gemms``), and
the table gives the floor per epoch and the fraction of it the engine's epoch reaches (floor /
epoch). The engine's default now computes conv2 with Winograd's F(2x2, 5x5), 36 smaller products
with 2.8x fewer multiply-adds; the floor stays im2col's (a direct convolution's work). Each
measurement runs in its own process (so peak RSS is that framework's alone and the thread pools
never meet), alternating ``ours, torch, ours, torch, ...``;
the table shows medians and the ratios. JIT compilation is excluded (one untimed warm-up batch
first; its time is reported). While a worker trains, the driver samples how many of its threads
are runnable (``/proc``): more than the cores would be oversubscription. After its epoch, each of
our workers also profiles a number of batches: where a batch spends its time (im2col, GEMM, col2im,
layout+bias, pooling, activations, validation, loss, optimizer, Python overhead).

    python benchmarks/bench_train.py                 # full run -> results/train.{json,md}
    python benchmarks/bench_train.py --quick         # tiny synthetic data, seconds (the tests)
    python benchmarks/bench_train.py --profile-only  # just the per-batch breakdown of this engine

The profile (``--profile-threads``, default 1) attributes a batch's time to stages on one thread,
so the stages add up to the batch; with more threads they add up over the pool's threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ORDERS = ("numpy", "cnn_im2col", "torch")  # what a worker imports (and runs) first


def _first_import(argv: list[str]) -> str:
    """The worker's ``--first`` (read before the imports below, which it decides); NumPy by "
    "default."""
    if "--first" in argv and argv.index("--first") + 1 < len(argv):
        return argv[argv.index("--first") + 1]
    return "numpy"


if _first_import(sys.argv) == "cnn_im2col":
    import cnn_im2col  # noqa: F401

# isort: split
import numpy as np  # noqa: E402 - after the optional first import that --first asks for

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402 - the benchmarks' shared helpers, found beside this file

BATCH = 64
TORCH_ONE = "torch, 1 thread"  # an extra reference when the engine has more than one thread
LR, MOMENTUM = 0.05, 0.9
STAGES = [
    "im2col",
    "GEMM",
    "col2im",
    "layout+bias",
    "Winograd transforms",
    "pooling",
    "activations",
    "validation",
    "loss",
    "optimizer",
    "conv/dense inline",
]


# --------------------------------------------------------------------------------------------
# Data and network
# --------------------------------------------------------------------------------------------


def load_data(quick: bool, train_count: int, test_count: int):
    """(x_train, y_train, x_test, y_test, source): MNIST, or tiny synthetic data with ``quick``."""
    if not quick:
        try:
            from cnn_im2col.datasets import load_mnist

            (x_train, y_train), (x_test, y_test) = load_mnist(progress=False, log=lambda m: None)
            return (
                np.ascontiguousarray(x_train[:train_count]),
                y_train[:train_count],
                np.ascontiguousarray(x_test[:test_count]),
                y_test[:test_count],
                "MNIST",
            )
        except Exception as exc:  # noqa: BLE001 - no data set: say so and measure on synthetic data
            print(
                f"MNIST unavailable ({exc}); using synthetic data of the same shape",
                file=sys.stderr,
            )
    rng = np.random.default_rng(0)
    x_train = rng.random((train_count, 1, 28, 28), dtype=np.float32)
    x_test = rng.random((test_count, 1, 28, 28), dtype=np.float32)
    return (
        x_train,
        rng.integers(0, 10, train_count),
        x_test,
        rng.integers(0, 10, test_count),
        "synthetic",
    )


def our_network(seed: int = 0):
    from cnn_im2col import layers as L

    return [
        L.Conv2D(1, 20, 5, seed=seed),
        L.ReLU(),
        L.MaxPool2D(2),
        L.Conv2D(20, 40, 5, seed=seed + 1),
        L.ReLU(),
        L.MaxPool2D(2),
        L.Flatten(),
        L.Dense(640, 100, seed=seed + 2),
        L.ReLU(),
        L.Dense(100, 10, seed=seed + 3),
    ]


class Ours:
    """The engine as users train it: ``Sequential.fit`` (SGD with momentum, softmax "
    "cross-entropy)."""

    def __init__(self, seed: int = 0) -> None:
        # from the submodules: older engine versions (profiled for comparison) lack the re-exports
        from cnn_im2col.model import Sequential
        from cnn_im2col.optim import SGD

        self.model = Sequential(our_network(seed))
        self.opt = SGD(LR, momentum=MOMENTUM)

    def train(self, x, y, seed: int) -> float:
        """One epoch over (x, y) in shuffled batches; the mean training loss."""
        from cnn_im2col.losses import SoftmaxCrossEntropy

        history = self.model.fit(
            x,
            y,
            epochs=1,
            batch_size=BATCH,
            optimizer=self.opt,
            loss=SoftmaxCrossEntropy(),
            seed=seed,
            progress=False,
            log=None,
        )
        return history["loss"][0]

    def predict(self, x, batch: int):
        return self.model.predict(x, batch_size=batch)


class Torch:
    """The same network in PyTorch, starting from our initial weights."""

    def __init__(self, torch, seed: int = 0) -> None:
        nn = torch.nn
        self.torch = torch
        self.net = nn.Sequential(
            nn.Conv2d(1, 20, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 40, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(640, 100),
            nn.ReLU(),
            nn.Linear(100, 10),
        )
        ours = our_network(seed)
        with torch.no_grad():
            for theirs, mine in zip(
                [m for m in self.net if hasattr(m, "weight")],
                [m for m in ours if "weight" in m.params],
            ):
                theirs.weight.copy_(torch.from_numpy(mine.params["weight"]))
                theirs.bias.copy_(torch.from_numpy(mine.params["bias"]))
        self.loss = nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=LR, momentum=MOMENTUM)

    def train(self, x, y, seed: int) -> float:
        """One epoch over (x, y) in shuffled batches; the mean training loss."""
        order = np.random.default_rng(seed).permutation(x.shape[0])
        total = 0.0
        for b in range(0, x.shape[0], BATCH):
            idx = order[b : b + BATCH]
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss(self.net(self.torch.from_numpy(x[idx])), self.torch.from_numpy(y[idx]))
            loss.backward()
            self.opt.step()
            total += float(loss.detach()) * idx.size
        return total / x.shape[0]

    def predict(self, x, batch: int):
        with self.torch.no_grad():
            return np.concatenate(
                [
                    self.net(self.torch.from_numpy(x[b : b + batch])).numpy()
                    for b in range(0, x.shape[0], batch)
                ]
            )


# --------------------------------------------------------------------------------------------
# Worker: one framework, one epoch, in its own process
# --------------------------------------------------------------------------------------------


def step_gemms(batch: int = BATCH) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The (A shape, B shape) of every GEMM in one LeNet training step lowered by im2col (the first
    layer computes no input gradient): conv1 24x24 outputs of 1x5x5, conv2 8x8 of 20x5x5, Dense
    640->100 and 100->10; forward, weight gradient, input gradient. (By default the engine computes
    conv2 with Winograd instead: fewer multiply-adds than these.)"""
    p1, p2 = batch * 24 * 24, batch * 8 * 8
    return [
        ((20, 25), (25, p1)),
        ((20, p1), (p1, 25)),  # conv1: forward, dW
        ((40, 500), (500, p2)),
        ((40, p2), (p2, 500)),
        ((500, 40), (40, p2)),  # conv2: fwd, dW, dcols
        ((batch, 640), (640, 100)),
        ((100, batch), (batch, 640)),
        ((batch, 100), (100, 640)),  # dense1
        ((batch, 100), (100, 10)),
        ((10, batch), (batch, 100)),
        ((batch, 10), (10, 100)),
    ]  # dense2


def gemm_floor(rounds: int = 200) -> dict:
    """Median seconds of NumPy's matmul on one step's GEMMs (``step_gemms``), its BLAS at default
    threads: the floor of a training step. Run in a process that never imports the engine."""
    rng = np.random.default_rng(0)
    pairs = [
        (rng.random(a, dtype=np.float32), rng.random(b, dtype=np.float32)) for a, b in step_gemms()
    ]
    outs = [np.empty((a.shape[0], b.shape[1]), np.float32) for a, b in pairs]
    flop = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in pairs)

    def step():
        for (a, b), out in zip(pairs, outs):
            np.matmul(a, b, out=out)

    for _ in range(5):
        step()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"step_s": median, "mflop_per_step": flop / 1e6, "gflop_s": flop / median / 1e9}


def profile_targets():
    """(owner, attribute, stage) for StageProfiler: the engine's leaf operations. Names that an
    engine version lacks are skipped (so the same list profiles older checkouts)."""
    import importlib

    import cnn_im2col.losses as LS
    import cnn_im2col.model as M
    from cnn_im2col import im2col as I
    from cnn_im2col import layers as L
    from cnn_im2col.losses import SoftmaxCrossEntropy
    from cnn_im2col.optim import SGD

    def module(name: str):
        """An engine module, or None in an engine version without it (its targets are skipped)."""
        try:
            return importlib.import_module(f"cnn_im2col.{name}")
        except ImportError:
            return None

    A, CV, N, P = module("arrays"), module("conv"), module("normalization"), module("pooling")
    CI, D, W = module("conv.im2col"), module("conv.depthwise"), module("conv.winograd")
    WK = module("conv.winograd_kernels") or W  # an engine version before its own module: W's

    def layer_modules(*names: str) -> list:
        """The modules of the layers package that validate (an engine version before the package:
        its one module, layers.py)."""
        return [m for m in (module(f"layers.{name}") for name in names) if m is not None] or [L]

    LV = layer_modules("base", "conv", "dense", "pooling", "passthrough", "normalization",
                       "padding")  # the layers' as_float_array
    LD = layer_modules("dense", "pooling", "activation", "passthrough", "normalization",
                       "padding")  # the layers' check_dout
    return [
        (I, "unfold", "im2col"),
        (CI, "unfold_t", "im2col"),
        (I, "fold", "col2im"),
        (CI, "fold_t", "col2im"),
        (A, "gemm", "GEMM"),
        (CI, "grouped_matmul", "GEMM"),
        (CI, "weight_grad", "GEMM"),
        *[(CI, name, "layout+bias") for name in ("cm_to_nchw", "nchw_to_cm", "bias_relu_inplace")],
        *[
            (P, name, "pooling")
            for name in (
                "max_pool_forward",
                "max_pool_forward_valid",
                "max_pool_forward_2x2",
                "max_pool_backward",
                "max_pool_backward_tiled",
                "max_pool_backward_cm",
                "sum_pool_forward",
                "sum_pool_backward",
            )
        ],
        *[
            (WK, f"{name}_{variant}", "Winograd transforms")
            for variant in getattr(WK, "VARIANTS", {}).values()
            for name in WK.TRANSFORMS
        ],
        (WK, "winograd_weight", "Winograd transforms"),
        (WK, "winograd_weight_adjoint", "Winograd transforms"),
        (W, "slice_forward", "GEMM"),
        (W, "slice_backward", "GEMM"),  # kernels wrapped: the 36 products
        (L.ReLU, "_forward", "activations"),
        (L.ReLU, "_backward", "activations"),
        *[(module, "as_float_array", "validation") for module in (CV, P, N, *LV, I, LS, M)],
        *[(module, "check_dout", "validation") for module in (CV, P, N, *LD)],
        (M, "_finite", "validation"),
        (SoftmaxCrossEntropy, "forward", "loss"),
        (SoftmaxCrossEntropy, "backward", "loss"),
        (SGD, "step", "optimizer"),
        # what conv/dense do themselves besides the wrapped calls: each strategy's forward and
        # backward (slicing, allocations, the bias sums) and Dense's own lines
        *[
            (module, name, "conv/dense inline")
            for module in (CI, D, W)
            for name in ("forward", "backward")
        ],
        *[(L.Dense, name, "conv/dense inline") for name in ("forward", "backward")],
    ]


def profile_batches(model: Ours, x, y, batches: int, threads: int | None = 1) -> dict:
    """The per-stage breakdown of ``batches`` training batches, on ``threads`` engine threads."""
    try:
        from cnn_im2col import threads as T

        before = T.get_num_threads()
        T.set_num_threads(threads)
    except (ImportError, AttributeError):  # an engine version without threads.py
        T = before = None
    prof = C.StageProfiler()
    batches = max(1, min(batches, x.shape[0] // BATCH))
    order = np.random.default_rng(1).permutation(x.shape[0])[: batches * BATCH]
    xs, ys = x[order], y[order]
    with prof.patch(profile_targets()):
        start = time.perf_counter()
        model.train(xs, ys, seed=1)
        total = time.perf_counter() - start
    result = C.breakdown(prof.seconds, total, batches, STAGES)
    if T is not None:
        T.set_num_threads(before)
    return {
        "batches": batches,
        "threads": threads,
        "stages": result,
        "missing_targets": prof.missing,
    }


def worker(framework: str, args) -> dict:
    if framework == "floor":
        return {"framework": "floor", **gemm_floor(20 if args.quick else 200)}
    torch_first = None
    if framework == "ours" and args.first == "torch":  # PyTorch has trained a batch in this process
        torch_first = Torch(C.import_torch())
        rng = np.random.default_rng(0)
        torch_first.train(
            rng.random((BATCH, 1, 28, 28), dtype=np.float32), np.arange(BATCH) % 10, seed=0
        )
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
        torch.set_num_threads(
            args.torch_threads or (thread_info["n"] if thread_info else os.cpu_count())
        )
        model = Torch(torch)
        thread_info = {"torch": torch.get_num_threads()}
    else:
        model = Ours()
    start = time.perf_counter()  # warm-up batch: JIT compile or cache load, untimed in the epoch
    model.train(x_train[:BATCH], y_train[:BATCH], seed=args.seed)
    warmup_s = time.perf_counter() - start

    n = x_train.shape[0]
    epoch_wall = [time.time()]
    start = time.perf_counter()
    mean_loss = model.train(x_train, y_train, seed=args.seed)
    epoch_s = time.perf_counter() - start
    epoch_wall.append(time.time())

    start = time.perf_counter()
    logits = model.predict(x_test, args.infer_batch)
    infer_s = time.perf_counter() - start
    correct = int((np.asarray(logits).argmax(axis=1) == y_test).sum())
    result = {
        "framework": framework,
        "first": args.first,
        "data": source,
        "train_images": n,
        "test_images": int(x_test.shape[0]),
        "threads": thread_info,
        "warmup_batch_s": warmup_s,
        "epoch_s": epoch_s,
        "samples_per_s": n / epoch_s,
        "ms_per_batch": 1e3 * epoch_s / -(-n // BATCH),
        "inference_s": infer_s,
        "epoch_wall": epoch_wall,
        "test_accuracy": correct / x_test.shape[0],
        "epoch_mean_loss": mean_loss,
        "peak_rss_bytes": C.peak_rss_bytes(),
        "rss_after_data_bytes": rss_data,
    }
    if framework == "ours" and args.profile_batches:
        result["profile"] = profile_batches(
            model, x_train, y_train, args.profile_batches, args.profile_threads
        )
    return result


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def our_label(first: str) -> str:
    return "ours" if first == "numpy" else f"ours, {first} first"


def worker_args(args, label: str) -> list[str]:
    first = next((f for f in ORDERS if label == our_label(f)), None)
    framework = "ours" if first else "floor" if label == "floor" else "torch"
    out = [
        str(Path(__file__).resolve()),
        "--worker",
        framework,
        "--first",
        first or "numpy",
        "--train",
        str(args.train),
        "--test",
        str(args.test),
        "--infer-batch",
        str(args.infer_batch),
        "--profile-batches",
        str(args.profile_batches if label == "ours" else 0),
        "--profile-threads",
        str(args.profile_threads),
        "--seed",
        str(args.seed),
    ]
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
    keys = (
        "epoch_s",
        "samples_per_s",
        "ms_per_batch",
        "inference_s",
        "peak_rss_bytes",
        "warmup_batch_s",
        "test_accuracy",
    )
    summary = {k: statistics.median(r[k] for r in runs) for k in keys}
    threads = [r["runnable_threads"] for r in runs if r.get("runnable_threads")]
    summary["runnable_threads_mean"] = (
        statistics.median(t["mean"] for t in threads) if threads else None
    )
    summary["runnable_over_cores"] = (
        statistics.median(t["over_cores"] for t in threads) if threads else None
    )
    return summary


def profile_table(profile: dict) -> str:
    rows = [[stage, v["ms_per_batch"], v["percent"]] for stage, v in profile["stages"].items()]
    return C.markdown_table(["stage", "ms per batch", "% of batch"], rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny synthetic data (seconds)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="epochs per framework (alternated)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="engine threads (default: all cores)"
    )
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="PyTorch threads (default: the engine's)"
    )
    parser.add_argument("--train", type=int, default=None, help="training images (default 50000)")
    parser.add_argument("--test", type=int, default=None, help="test images (default 10000)")
    parser.add_argument("--infer-batch", type=int, default=1000)
    parser.add_argument(
        "--profile-batches", type=int, default=None, help="batches profiled after an epoch"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument(
        "--no-torch-one-thread",
        action="store_true",
        help="skip the extra PyTorch reference with 1 thread",
    )
    parser.add_argument(
        "--profile-threads", type=int, default=1, help="engine threads while profiling (default 1)"
    )
    parser.add_argument(
        "--profile-only", action="store_true", help="only the per-batch breakdown, in-process"
    )
    parser.add_argument(
        "--orders",
        default=None,
        help="what the engine's workers import first, comma-separated from numpy,cnn_im2col,torch "
        "(default: all three; --quick: numpy)",
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the GEMM floor")
    parser.add_argument("--first", choices=ORDERS, default="numpy", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=("ours", "torch", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    C.check_out_dir(parser, args.out)
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
        model.train(x[:BATCH], y[:BATCH].astype(np.int64), seed=args.seed)
        prof = profile_batches(
            model, x, y.astype(np.int64), args.profile_batches, args.profile_threads
        )
        print(f"profile: {prof['batches']} batches, {args.profile_threads} thread(s)")
        print(profile_table(prof))
        return prof

    torch = C.import_torch(not args.no_torch)
    rounds = args.rounds or (1 if args.quick else 2)
    from cnn_im2col import threads

    threads.set_num_threads(args.threads)
    orders = [
        o for o in (args.orders or ("numpy" if args.quick else ",".join(ORDERS))).split(",") if o
    ]
    bad = [o for o in orders if o not in ORDERS] + (
        ["torch (not installed)"] if "torch" in orders and torch is None else []
    )
    if bad or "numpy" not in orders:
        parser.error(
            f"--orders: each of {ORDERS} (torch only if installed), numpy included; got "
            f"{args.orders!r}"
        )
    frameworks = [our_label(o) for o in orders] + (["torch"] if torch is not None else [])
    if torch is not None and not args.no_torch_one_thread and threads.get_num_threads() > 1:
        frameworks.append(TORCH_ONE)
    floor = None
    machine = C.machine_info(torch)
    runs: dict[str, list[dict]] = {f: [] for f in frameworks}
    for r in range(rounds):
        for f in frameworks:
            result = C.run_json_subprocess(worker_args(args, f), sample_threads=True)
            samples = result.pop("runnable_samples", None)
            result["runnable_threads"] = (
                C.runnable_summary(samples, *result["epoch_wall"], machine["cores"])
                if samples
                else None
            )
            runs[f].append(result)
            print(
                f"  round {r + 1}/{rounds} {f}: epoch {result['epoch_s']:.2f} s, inference "
                f"{result['inference_s']:.2f} s, peak RSS {result['peak_rss_bytes'] / 2**20:.0f} "
                "MiB",
                file=sys.stderr,
                flush=True,
            )
        if not args.no_floor:  # alternated with the epochs, like them
            result = C.run_json_subprocess(worker_args(args, "floor"))
            floor = [*(floor or []), result]
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    summary = {f: summarise(runs[f]) for f in frameworks}
    floor_summary = None
    if floor:
        step_s = statistics.median(r["step_s"] for r in floor)
        batches = -(-args.train // BATCH)
        floor_summary = {
            "step_s": step_s,
            "epoch_s": step_s * batches,
            "mflop_per_step": floor[0]["mflop_per_step"],
            "gflop_s": statistics.median(r["gflop_s"] for r in floor),
            "fraction_of_floor": {
                f: step_s * batches / summary[f]["epoch_s"]
                for f in frameworks
                if f.startswith("ours")
            },
        }
    ratios = None
    if "torch" in summary:
        o, t = summary["ours"], summary["torch"]
        ratios = {
            "epoch_time_ours_over_torch": o["epoch_s"] / t["epoch_s"],
            "inference_time_ours_over_torch": o["inference_s"] / t["inference_s"],
            "peak_rss_ours_over_torch": o["peak_rss_bytes"] / t["peak_rss_bytes"],
        }
    profiles = [r["profile"] for r in runs["ours"] if "profile" in r]
    profile = None
    if profiles:  # the median of each stage over rounds
        profile = {
            "batches": profiles[0]["batches"],
            "stages": {
                stage: {
                    k: statistics.median(p["stages"][stage][k] for p in profiles)
                    for k in ("ms_per_batch", "percent")
                }
                for stage in profiles[0]["stages"]
            },
        }

    data_source = runs["ours"][0]["data"]
    heads = [
        "framework",
        "threads",
        "epoch s",
        "samples/s",
        "ms/batch",
        "inference s (10k)" if not args.quick else f"inference s ({args.test})",
        "peak RSS MiB",
        "test acc.",
        "warm-up batch s",
        "runnable threads (mean)",
        "samples > cores",
    ]
    rows = []
    for f in frameworks:
        s = summary[f]
        th = runs[f][0]["threads"]
        th_text = (
            f"torch {th['torch']}"
            if not f.startswith("ours")
            else f"pool {th['n']}, BLAS {th['blas']}"
            if th and "pool" in th
            else f"Numba {th['numba']} + BLAS {th['blas']} ({th.get('policy', 'split')})"
            if th
            else "?"
        )
        over = s["runnable_over_cores"]
        rows.append(
            [
                f,
                th_text,
                s["epoch_s"],
                s["samples_per_s"],
                s["ms_per_batch"],
                s["inference_s"],
                s["peak_rss_bytes"] / 2**20,
                s["test_accuracy"],
                s["warmup_batch_s"],
                s["runnable_threads_mean"],
                None if over is None else f"{100 * over:.1f}%",
            ]
        )
    md = [
        f"# Training benchmark{' (quick)' if args.quick else ''}",
        "",
        f"Machine: {C.machine_line(machine)}.",
        "",
        (
            f"One epoch of LeNet (batch {BATCH}, SGD lr {LR}, momentum {MOMENTUM}) on "
            f"{args.train:,} {data_source} "
            f"images, inference on {args.test:,} (batch {args.infer_batch}); medians of {rounds} "
            "alternated "
            "run(s) per framework, each in its own process."
        ),
        "",
        C.markdown_table(heads, rows),
        "",
        (
            "Runnable threads: how many of the worker's threads were running or waiting for a "
            "core during the "
            "epoch (sampled from /proc every 5 ms; mean), and the share of samples with more "
            "than the machine's "
            f"{machine['cores']} cores (oversubscription)."
        ),
        "",
    ]
    if TORCH_ONE in summary:
        o, t = summary["ours"], summary[TORCH_ONE]
        ratios_one = {
            "epoch_time_ours_over_torch": o["epoch_s"] / t["epoch_s"],
            "inference_time_ours_over_torch": o["inference_s"] / t["inference_s"],
            "peak_rss_ours_over_torch": o["peak_rss_bytes"] / t["peak_rss_bytes"],
        }
    else:
        ratios_one = None
    if floor_summary:
        md += [
            (
                f"GEMM floor: NumPy's matmul on the {len(step_gemms())} GEMMs of one step "
                f"({floor_summary['mflop_per_step']:.0f} MFLOP), in a process without the engine, "
                "default BLAS "
                f"threads: {1e3 * floor_summary['step_s']:.2f} ms per step "
                f"({floor_summary['gflop_s']:.0f} GFLOP/s), {floor_summary['epoch_s']:.2f} s per "
                "epoch."
            ),
            "",
            C.markdown_table(
                ["engine run", "epoch s", "fraction of the GEMM floor (floor / epoch)"],
                [
                    [f, summary[f]["epoch_s"], v]
                    for f, v in floor_summary["fraction_of_floor"].items()
                ],
            ),
            "",
        ]
    if ratios:
        heads_r = ["ratio (ours / torch)", "torch, same threads"] + (
            ["torch, 1 thread"] if ratios_one else []
        )
        md += [
            C.markdown_table(
                heads_r,
                [
                    [label, ratios[key]] + ([ratios_one[key]] if ratios_one else [])
                    for label, key in (
                        ("epoch time", "epoch_time_ours_over_torch"),
                        ("inference time", "inference_time_ours_over_torch"),
                        ("peak RSS", "peak_rss_ours_over_torch"),
                    )
                ],
            ),
            "",
        ]
    if profile:
        md += [
            (
                f"Where one training batch of this engine spends its time ({profile['batches']} "
                "profiled batches "
                f"after the epoch, {args.profile_threads} engine thread(s); exclusive times of "
                "the wrapped engine "
                "functions, the rest is Python overhead):"
            ),
            "",
            profile_table(profile),
            "",
        ]
    markdown = "\n".join(md)
    data = C.finite_or_none(
        {
            "benchmark": "train",
            "quick": args.quick,
            "machine": machine,
            "data": data_source,
            "rounds": rounds,
            "summary": summary,
            "ratios": ratios,
            "gemm_floor": floor_summary,
            "ratios_vs_torch_one_thread": ratios_one,
            "profile": profile,
            "runs": runs,
        }
    )
    name = args.name or ("train-quick" if args.quick else "train")
    C.publish(name, data, markdown, args.out)
    return data


if __name__ == "__main__":
    main()
