"""The C heap's thresholds (cnn_im2col/allocator.py), each case in a fresh interpreter: they are
set once, when the package is imported."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the thresholds are glibc's",
)

# Rounds of forty 1 MiB arrays, written and freed, as a training step's activations are; the
# page faults of the rounds after the first (the pages touched: 40 MiB a round).
_ROUNDS = """
import json, resource, sys
import numpy as np
import cnn_im2col

def round_():
    arrays = [np.ones(2**18, dtype=np.float32) for _ in range(40)]
    del arrays

round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    round_()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults": faults, "settings": cnn_im2col.allocator.settings()}))
"""


# Rounds of four 40 MiB arrays (above any mmap threshold glibc allows), inside an engine call or
# between engine calls: the faults of the rounds after the first of each.
_LARGE = """
import json, resource
import numpy as np
import cnn_im2col
from cnn_im2col.threads import engine_blas

def faults(inside):
    def round_():
        arrays = [np.ones(10 * 2**20, dtype=np.float32) for _ in range(4)]
        del arrays
    def rounds():
        round_()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            round_()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    if inside:
        with engine_blas():
            return rounds()
    return rounds()

from numpy._core import multiarray
multiarray._set_madvise_hugepage(False)  # count 4 KiB pages, whatever the kernel's THP setting
print(json.dumps({"inside": faults(True), "outside": faults(False)}))
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("CNN_IM2COL_ALLOCATOR", "MALLOC_MMAP_THRESHOLD_",
                          "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**clean, **env}, timeout=120)


@glibc
def test_the_heap_keeps_its_pages_from_round_to_round():
    run = _run(_ROUNDS)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["settings"]["configured"], result
    pages = 4 * 40 * 2**20 // 4096
    assert result["faults"] < pages // 10, result  # glibc's defaults: about one a page


@glibc
def test_large_arrays_reuse_the_heap_while_the_engine_computes_and_only_then():
    """Inside an engine call a 40 MiB block comes from the heap and keeps its pages; between
    engine calls it is mmapped and given back on free, as glibc does by default."""
    run = _run(_LARGE)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    pages = 3 * 4 * 40 * 2**20 // 4096
    assert result["inside"] < pages // 10, result
    assert result["outside"] > pages // 2, result


@glibc
def test_system_leaves_the_allocator_alone():
    result = json.loads(_run(_ROUNDS, CNN_IM2COL_ALLOCATOR="system").stdout)
    assert result["settings"] == {"configured": False, "reason": "CNN_IM2COL_ALLOCATOR=system"}
    # what the thresholds are for: glibc's defaults give each round's pages back to the kernel
    assert result["faults"] > 4 * 40 * 2**20 // 4096 // 2, result


@glibc
def test_glibc_variables_win():
    result = json.loads(_run(_ROUNDS, MALLOC_TRIM_THRESHOLD_="131072").stdout)
    assert not result["settings"]["configured"]
    assert "MALLOC_TRIM_THRESHOLD_" in result["settings"]["reason"]


def test_an_unknown_choice_is_a_clear_error():
    run = _run("import cnn_im2col", CNN_IM2COL_ALLOCATOR="fast")
    assert run.returncode != 0
    assert ("ValueError: cnn_im2col: the environment variable CNN_IM2COL_ALLOCATOR must be one of "
            "('engine', 'system'); got 'fast'") in run.stderr
