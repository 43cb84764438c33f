"""Build the tutorial notebooks from their sources in ``src/``, execute them, save them.

    python notebooks/_build.py            # all four
    python notebooks/_build.py 01 03      # only those whose name starts with 01 or 03

Each notebook is written with its outputs (so it reads well on a repository page) and without
per-cell timing metadata (so re-running it changes only what really changed). The test suite
(``tests/test_notebooks.py``) executes the committed ``.ipynb`` files again, in memory.

A source is a Python file in "percent" format: ``# %%`` starts a code cell and
``# %% [markdown]`` a markdown cell whose text is one raw triple-quoted string (``r"..."`` with
three quotes, so LaTeX backslashes are written once). So the code of every notebook can be read,
linted and diffed as ordinary Python.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"


def load_cells(path: Path) -> list[tuple[str, str]]:
    """The cells of a percent-format source: a list of ("md" | "code", text) pairs."""
    cells: list[tuple[str, str]] = []
    kind, lines = None, []
    for line in path.read_text().splitlines() + ["# %%"]:
        if line.startswith("# %%"):
            text = "\n".join(lines).strip("\n")
            if kind == "md":
                text = text.removeprefix("r")
                if not (text.startswith('"""') and text.endswith('"""')):
                    raise ValueError(f"{path.name}: a markdown cell must be one (raw) "
                                     f"triple-quoted string")
                text = text[3:-3].strip("\n")
            if kind is not None and text:
                cells.append((kind, text))
            kind, lines = ("md" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    return cells


def make_notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                 "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in cells:
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(source))
    for i, cell in enumerate(nb.cells):  # stable ids: rebuilding does not churn the diff
        cell["id"] = f"cell-{i:02d}"
    return nb


def build(source: Path) -> None:
    nb = make_notebook(load_cells(source))
    client = NotebookClient(nb, timeout=240, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(HERE)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    path = HERE / f"{source.stem}.ipynb"
    nbformat.write(nb, path)
    print(f"{path.name}: executed in {seconds:.1f} s, {path.stat().st_size / 1024:.0f} KB")


def main(argv: list[str]) -> None:
    sources = sorted(SOURCES.glob("[0-9]*.py"))
    for source in sources:
        if not argv or any(source.stem.startswith(a) for a in argv):
            build(source)


if __name__ == "__main__":
    main(sys.argv[1:])
