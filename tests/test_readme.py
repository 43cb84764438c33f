"""The README and the pages of docs/ say what is true: their Python blocks run, their links resolve.

- Every fenced ``python`` block of a page runs, in the order of the page, in one namespace per page,
  in a fresh interpreter whose working directory is a temporary one (so nothing is written into the
  repository).
  A block that imports an optional package (``torch``, ``onnx``, ``onnxruntime``, ``mpi4py``), or
  says ``# needs: PACKAGE``, is skipped where that package is not installed; later blocks of the
  page must not need it.
- Every relative link of those pages names a file of the repository, and a ``#fragment`` names a
  heading of the page it points to (GitHub's anchors). Nothing points outside the repository.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [
    ROOT / "README.md",
    ROOT / "benchmarks" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
RUNNABLE = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPTIONAL = ("torch", "onnx", "onnxruntime", "mpi4py")

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<img[^>]*src=\"([^\"]+)\"")
IMPORT = re.compile(r"^\s*(?:import|from)\s+(\w+)|#\s*needs:\s*(\w+)", re.M)


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(first line number, code)`` of every fenced python block of a markdown file."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        if match.group(1) == "python":
            line = text.count("\n", 0, match.start(2)) + 1
            blocks.append((line, match.group(2)))
    return blocks


def without_code(text: str) -> str:
    """The markdown outside fenced blocks and inline code spans (links in code are not links)."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated heading numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        text = re.sub(r"`", "", heading.group(1)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


# Runs in a fresh interpreter: each page's blocks share one namespace, as a reader's session would,
# and nothing they import or start (torch, MPI) stays in the test process. Tracebacks name the
# page and its own line numbers.
DRIVER = """
import json, sys
page, blocks = sys.argv[1], json.loads(sys.argv[2])
namespace = {"__name__": "__main__"}
for line, code in blocks:
    exec(compile("\\n" * (line - 1) + code, page, "exec"), namespace)
"""


@pytest.mark.parametrize("page", RUNNABLE, ids=name)
def test_python_blocks_run_in_order(page, tmp_path):
    blocks = python_blocks(page)
    if not blocks:
        pytest.skip(f"{name(page)} has no python block")
    if any("load_mnist(" in code for _, code in blocks):
        from cnn_im2col.datasets import load_mnist

        try:  # the per-user cache (or $CNN_IM2COL_DATA), fetched once, as tests/cli/ does
            load_mnist(progress=False, log=lambda message: None)
        except ConnectionError as exc:
            pytest.skip(f"MNIST not cached and no source reachable: {exc}")
    runnable, skipped = [], []
    for line, code in blocks:
        needed = {module or marked for module, marked in IMPORT.findall(code)}
        missing = sorted(m for m in needed if m in OPTIONAL and importlib.util.find_spec(m) is None)
        if missing:
            skipped.append(f"line {line} (needs {', '.join(missing)})")
        else:
            runnable.append((line, code))
    before = sorted(p.name for p in ROOT.iterdir())
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(page), json.dumps(runnable)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"{name(page)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert sorted(p.name for p in ROOT.iterdir()) == before  # the blocks wrote only into tmp_path
    if skipped:
        print(f"{name(page)}: skipped blocks at " + "; ".join(skipped))


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_links_resolve_inside_the_repository(page):
    text = without_code(page.read_text(encoding="utf-8"))
    problems = []
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path_part, _, fragment = target.partition("#")
        if path_part.startswith("/"):
            problems.append(f"{target}: an absolute path")
            continue
        resolved = (page.parent / path_part).resolve() if path_part else page
        if ROOT not in resolved.parents and resolved != ROOT:
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading #{fragment} in {name(resolved)}")
    assert not problems, f"{name(page)}: " + "; ".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_no_reference_outside_the_repository(page):
    """Not even in prose or code: a clone has no shared folder and no build machine's paths."""
    text = page.read_text(encoding="utf-8")
    for outside in ("../shared", "/work/", "DESIGN.md", "shared folder"):
        assert outside not in text, f"{name(page)} mentions {outside!r}"


def test_quickstart_is_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = text.split("## Quickstart", 1)[1]
    block = FENCE.search(quickstart)
    assert block.group(1) == "bash"
    assert block.group(2).splitlines() == [
        "python3 -m pip install . && cnn-im2col train",
        'python3 -m pip install ".[dev]" && python3 -m pytest',
    ]
