"""The tutorial notebooks run clean, top to bottom, and the committed copies are current.

Each notebook is executed in memory with nbclient (the committed ``.ipynb`` is read, never
rewritten): any exception, including a failed ``assert`` inside a notebook, fails its test.
The notebooks check their own claims with asserts, so running them is a test of the engine
against the numbers of the spec as well.

The committed notebooks are built from ``notebooks/src/*.py`` by ``notebooks/_build.py``; the
last tests check that every code cell of a committed notebook matches its source and that it
was committed executed (outputs shown on the repository page) and small.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = [
    "01_convolution_as_matrix_multiplication",
    "02_backpropagation_through_feature_maps",
    "03_template_matching",
    "04_training_mnist",
]
NOTEBOOKS = [NOTEBOOK_DIR / f"{name}.ipynb" for name in EXPECTED]
CELL_TIMEOUT = 240  # seconds per cell
MAX_BYTES = 400 * 1024  # committed size: outputs included, no huge embedded images


def _ids(path: Path) -> str:
    return path.stem


def _load_builder():
    spec = importlib.util.spec_from_file_location("notebook_build", NOTEBOOK_DIR / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_tutorial_is_there():
    found = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert found == EXPECTED
    sources = sorted(p.stem for p in (NOTEBOOK_DIR / "src").glob("[0-9][0-9]_*.py"))
    assert sources == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_clean(path: Path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, on the first error
    seconds = time.perf_counter() - start
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.outputs if out.output_type == "error"]
    assert not errors
    print(f"{path.name}: {seconds:.1f} s")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_committed_notebook_matches_its_source_and_is_executed(path: Path):
    builder = _load_builder()
    expected = builder.make_notebook(builder.load_cells(NOTEBOOK_DIR / "src" / f"{path.stem}.py"))
    nb = nbformat.read(path, as_version=4)
    cells = [(c.cell_type, c.source) for c in nb.cells]
    assert cells == [(c.cell_type, c.source) for c in expected.cells], (
        f"{path.name} differs from src/{path.stem}.py: rebuild it with "
        f"`python notebooks/_build.py {path.stem[:2]}`")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), (
        f"{path.name} must be committed executed, top to bottom")
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert path.stat().st_size <= MAX_BYTES, f"{path.name} is {path.stat().st_size / 1024:.0f} KB"
