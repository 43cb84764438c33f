"""Where one convolution's forward+backward spends its time, stage by stage, on each algorithm that
computes it (im2col, and for a 3x3 or 5x5 kernel Winograd's F(4x4, 3x3) or F(2x2, 5x5)): the
profile behind ``algorithm="auto"`` and behind the engine's optimisations.

Each round times one call of the layer's forward (keeping what backward needs) and backward per
algorithm, the algorithms alternated, with the engine's leaf operations wrapped
(``_common.StageProfiler``: exclusive times). Reported: the median over rounds of each stage's
milliseconds per call; "Python and the rest" is the median total minus those. On one engine
thread by default, so that the stages add up to wall time.

    python benchmarks/profile_conv.py                        # bench_layers' padded 3x3 layer
    python benchmarks/profile_conv.py --shape 64 64 64 14    # N C K H (= W), 3x3, pad 1
    python benchmarks/profile_conv.py --shape 64 20 40 12 --kernel 5 --padding 0   # LeNet's conv2
    python benchmarks/profile_conv.py --stride 2 --name profile-conv-stride2  # bench_cnn_layers'
                                                                               # strided case
    python benchmarks/profile_conv.py --quick                # tiny, seconds (what the tests run)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# NumPy first, as a user's script
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

ALGORITHMS = ("im2col", "winograd")
STAGES = [
    "im2col",
    "col2im",
    "layout+bias",
    "input transform",
    "input adjoint",
    "output transform",
    "output adjoint",
    "weight transform",
    "GEMM",
]


def _transform_stage(name: str) -> str:
    """The stage of a Winograd transform: its direction and which side of the products it is."""
    side = "input" if name.startswith("winograd_input") else "output"
    return f"{side} adjoint" if name.endswith("_adjoint") else f"{side} transform"


def targets():
    """(owner, attribute, stage) for StageProfiler. winograd.slice_forward / slice_backward
    themselves are only their 36 batched GEMMs (and the arrays for them) once their kernels are
    wrapped."""
    from cnn_im2col.conv import im2col as I
    from cnn_im2col.conv import winograd as W
    from cnn_im2col.conv import winograd_kernels as K

    return [
        (I, "unfold_t", "im2col"),
        (I, "fold_t", "col2im"),
        (I, "grouped_matmul", "GEMM"),
        (I, "weight_grad", "GEMM"),
        *[(I, name, "layout+bias") for name in ("cm_to_nchw", "nchw_to_cm", "bias_relu_inplace")],
        *[
            (K, f"{name}_{variant}", _transform_stage(name))
            for variant in K.VARIANTS.values()
            for name in K.TRANSFORMS
        ],
        (K, "winograd_weight", "weight transform"),
        (K, "winograd_weight_adjoint", "weight transform"),
        (W, "slice_forward", "GEMM"),
        (W, "slice_backward", "GEMM"),
    ]


def profile(
    shape: tuple[int, int, int, int], kernel: int, padding: int, rounds: int, threads: int,
    stride: int = 1,
) -> dict:
    from cnn_im2col import functional as F
    from cnn_im2col import threads as T
    from cnn_im2col.conv import winograd as W

    T.set_num_threads(threads)
    C.keep_freed_memory()  # reuse freed memory, as a training loop reaches by itself (see _common)
    # each stage a call of its own, so that it can be timed: a training step's Winograd forward
    # runs them fused and its backward in one compiled call (``conv/winograd_fused.py``)
    W._FUSED = W._ONE_CALL_BACKWARD = False
    n, c, k, h = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    weight = (rng.standard_normal((k, c, kernel, kernel)) * 0.1).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    side = (h + 2 * padding - kernel) // stride + 1
    dout = rng.standard_normal((n, k, side, side), dtype=np.float32)
    fits = W.supports((kernel, kernel), (stride, stride), (1, 1), 1)
    algorithms = ALGORITHMS if fits else ALGORITHMS[:1]

    def call(algorithm: str) -> None:
        _, cache = F.conv2d_forward(x, weight, bias, stride, padding, algorithm=algorithm)
        F.conv2d_backward(dout, cache)

    for algorithm in algorithms:  # compile, and reach glibc's steady state
        call(algorithm)
        call(algorithm)
    per_round: dict[str, list[tuple[float, dict[str, float]]]] = {a: [] for a in algorithms}
    prof = C.StageProfiler()
    with prof.patch(targets()):
        for _ in range(rounds):
            for algorithm in algorithms:
                prof.reset()
                start = time.perf_counter()
                call(algorithm)
                per_round[algorithm].append((time.perf_counter() - start, dict(prof.seconds)))
    result = {}
    for algorithm, runs in per_round.items():
        total = statistics.median(t for t, _ in runs)
        stages = {
            s: 1e3 * statistics.median(seconds.get(s, 0.0) for _, seconds in runs) for s in STAGES
        }
        stages["Python and the rest"] = max(0.0, 1e3 * total - sum(stages.values()))
        stages["total"] = 1e3 * total
        result[algorithm] = stages
    return {"missing_targets": prof.missing, "ms_per_call": result}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shape",
        type=int,
        nargs=4,
        metavar=("N", "C", "K", "H"),
        default=None,
        help="batch, input channels, output channels, height (= width); default 32 32 64 32",
    )
    parser.add_argument(
        "--kernel", type=int, default=3, help="kernel size (default 3; Winograd for 3 and 5)"
    )
    parser.add_argument("--padding", type=int, default=1, help="padding (default 1)")
    parser.add_argument("--stride", type=int, default=1, help="stride (default 1; im2col only >1)")
    parser.add_argument("--rounds", type=int, default=None, help="alternated rounds (default 15)")
    parser.add_argument("--threads", type=int, default=1, help="engine threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="a tiny layer, 3 rounds")
    parser.add_argument(
        "--out", type=Path, default=None, help="results directory (default benchmarks/results)"
    )
    parser.add_argument(
        "--name", default=None, help="results file stem (default profile-conv[-quick])"
    )
    args = parser.parse_args(argv)
    C.check_out_dir(parser, args.out)
    shape = tuple(args.shape or ((2, 16, 16, 8) if args.quick else (32, 32, 64, 32)))
    rounds = args.rounds or (3 if args.quick else 15)
    machine = C.machine_info()
    data = {
        "benchmark": "profile-conv",
        "quick": args.quick,
        "machine": machine,
        "shape": dict(zip("NCKH", shape)),
        "kernel": args.kernel,
        "padding": args.padding,
        "stride": args.stride,
        "rounds": rounds,
        "threads": args.threads,
        **profile(shape, args.kernel, args.padding, rounds, args.threads, args.stride),
    }
    ms = data["ms_per_call"]
    rows = [
        [stage, *[ms[a][stage] for a in ms]]
        for stage in ms["im2col"]
        if any(ms[a][stage] > 0 for a in ms)
    ]  # a stage that no algorithm here has is left out
    if "winograd" in ms:
        rows.append(
            ["winograd / im2col, total", None, ms["winograd"]["total"] / ms["im2col"]["total"]]
        )
    n, c, k, h = shape
    md = [
        f"# Convolution profile{' (quick)' if args.quick else ''}",
        "",
        f"Machine: {C.machine_line(machine)}.",
        "",
        (
            f"Conv2D {c} -> {k}, {args.kernel}x{args.kernel}, stride {args.stride}, pad "
            f"{args.padding}, on "
            f"{n}x{c}x{h}x{h} "
            "float32: forward (keeping what backward "
            f"needs) + backward, {args.threads} engine thread(s); median ms per call over "
            f"{rounds} alternated "
            "rounds, exclusive times of the engine's wrapped operations (Winograd's GEMM row: its "
            "36 batched "
            "products and their arrays)."
        ),
        "",
        C.markdown_table(["stage", *[f"{a} ms" for a in ms]], rows),
        "",
    ]
    C.publish(
        args.name or ("profile-conv-quick" if args.quick else "profile-conv"),
        C.finite_or_none(data),
        "\n".join(md),
        args.out,
    )
    return data


if __name__ == "__main__":
    main()
