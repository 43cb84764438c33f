"""Image-decoding benchmark: how fast a folder of PNGs becomes a ``Dataset``, cold and cached.

A folder of ``--images`` RGB PNGs of ``--size`` x ``--size`` pixels (10 classes, random pixels,
so the PNGs barely compress, as photos do not either) is generated in a temporary directory.
Three ways of opening it with ``cnn_im2col.datasets.open_image_folder`` are alternated
(``_common.alternate``: one of each per round, so a change of load on a shared machine hits all
three alike), each timed end to end as a user pays it (listing, stat, decoding, float
conversion, split):

- ``no cache``: ``use_cache=False``, every image decoded with Pillow;
- ``cold``: an empty cache folder, so the images are decoded and the cache entry written;
- ``cached``: the entry exists: one ``.npz`` read, nothing decoded.

The table gives the median images/s of each.

    python benchmarks/bench_decode.py           # 2,000 PNGs of 32x32 -> benchmarks/results/decode.*
    python benchmarks/bench_decode.py --quick   # 100 PNGs, one round (the tests)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

from cnn_im2col.datasets import open_image_folder  # noqa: E402

CLASSES = 10


def make_folder(root: Path, count: int, size: int, seed: int = 0) -> None:
    """``count`` RGB PNGs of ``size`` x ``size`` random pixels in ``root/class<k>/``."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="100 images, one round")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    C.check_out_dir(parser, args.out)
    if args.quick:
        args.images, args.rounds = 100, 1
    name = "decode-quick" if args.quick else "decode"
    with tempfile.TemporaryDirectory(prefix="cnn-im2col-bench-decode-") as scratch:
        data_dir, caches = Path(scratch) / "data", Path(scratch) / "caches"
        make_folder(data_dir, args.images, args.size)
        warm = caches / "warm"
        open_image_folder(data_dir, cache_dir=warm)  # the entry "cached" reads

        def cold() -> None:
            shutil.rmtree(caches / "cold", ignore_errors=True)
            open_image_folder(data_dir, cache_dir=caches / "cold")

        runners = {
            "no cache": lambda: open_image_folder(data_dir, use_cache=False),
            "cold": cold,
            "cached": lambda: open_image_folder(data_dir, cache_dir=warm),
        }
        seconds = C.alternate(runners, rounds=args.rounds, warmup=1)
    rates = {label: args.images / (C.median_ms(times) / 1000) for label, times in seconds.items()}
    info = C.machine_info()
    data = {
        "benchmark": "decode",
        "quick": args.quick,
        "images": args.images,
        "size": args.size,
        "rounds": args.rounds,
        "machine": info,
        "median_ms": {label: C.median_ms(times) for label, times in seconds.items()},
        "images_per_second": rates,
    }
    rows = [(label, C.median_ms(seconds[label]), rates[label]) for label in runners]
    markdown = (f"# Decode benchmark: {args.images} PNGs of {args.size}x{args.size} RGB\n\n"
                f"{C.machine_line(info)}\n\n"
                + C.markdown_table(["way", "median ms", "images/s"], rows))
    C.publish(name, C.finite_or_none(data), markdown, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
