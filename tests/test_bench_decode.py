"""benchmarks/bench_decode.py runs at a tiny size and writes well-formed JSON (no timing is
asserted)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def test_bench_decode_quick_writes_well_formed_json(tmp_path):
    # the package of this tree, whichever copy is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_decode.py"), "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600,
                          check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "decode-quick.json").read_text())
    assert data["benchmark"] == "decode" and data["quick"] is True and data["images"] == 100
    assert set(data["images_per_second"]) == {"no cache", "cold", "cached"}
    assert all(math.isfinite(v) and v > 0 for v in data["images_per_second"].values())
    assert (tmp_path / "decode-quick.md").read_text().startswith("# Decode benchmark")
    assert "| way | median ms | images/s |" in proc.stdout
