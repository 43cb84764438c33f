"""The package's public API: everything in ``__all__`` imports."""


import cnn_im2col


def test_public_names_import():
    for name in cnn_im2col.__all__:
        assert getattr(cnn_im2col, name) is not None, name


def test_quickstart_api_example_runs():
    """The README's Python example, at a tiny size."""
    import numpy as np

    from cnn_im2col import (
        SGD,
        Conv2D,
        Dense,
        Flatten,
        MaxPool2D,
        ReLU,
        Sequential,
        SoftmaxCrossEntropy,
    )

    rng = np.random.default_rng(0)
    x, y = rng.random((32, 1, 12, 12), dtype=np.float32), rng.integers(0, 3, 32)
    model = Sequential([Conv2D(1, 4, 3, seed=0), ReLU(), MaxPool2D(2), Flatten(),
                        Dense(4 * 5 * 5, 3, seed=1)])
    history = model.fit(x, y, epochs=2, batch_size=8, optimizer=SGD(0.1, momentum=0.9),
                        loss=SoftmaxCrossEntropy(), seed=0, progress=False)
    assert len(history["loss"]) == 2
    assert set(model.evaluate(x, y)) >= {"loss", "accuracy"}




def test_the_onnx_functions_come_with_the_package_and_the_onnx_package_only_on_use():
    import subprocess
    import sys

    code = ("import sys, cnn_im2col; assert callable(cnn_im2col.onnx.export) and "
            "callable(cnn_im2col.onnx.load); print('onnx' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def _documented_order() -> list[str]:
    """docs/architecture.md's list of the package's modules, top to bottom: file paths relative
    to the package, and packages whose modules are one unit (``datasets/``)."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text()
    block = text.split("## The layers of the package")[1].split("```")[1]
    return [m.group(1) for m in re.finditer(r"^  (\S+)", block, re.M)]


def _relative_imports(path, package) -> list[str]:
    """The package's modules that ``path`` imports (anywhere in it: a lazy import is still a
    circle), as paths relative to the package."""
    import ast

    here = path.parent.relative_to(package).parts
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.ImportFrom) and node.level):
            continue
        base = "/".join(here[: len(here) - (node.level - 1)] + tuple(
            node.module.split(".") if node.module else ()))
        base = base + "/" if base else ""
        modules = [base + alias.name for alias in node.names
                   if (package / (base + alias.name + ".py")).exists()
                   or (package / base / alias.name / "__init__.py").exists()]
        if not modules and node.module:  # names from a module, or from a package's __init__
            modules = [base.rstrip("/")]
        for module in modules:
            for candidate in (module + ".py", module + "/__init__.py"):
                if (package / candidate).exists():
                    found.append(candidate)
    return found


def test_imports_run_one_way_down_the_documented_list_of_modules():
    """Every module is in docs/architecture.md's list, and imports only modules above it there
    (or in its own unit; a package's ``__init__`` its own modules), so the list is the true order
    and the package has no circles."""
    from pathlib import Path

    package = Path(cnn_im2col.__file__).parent
    order = _documented_order()

    def unit(relative: str) -> str:
        return next((name for name in order if name.endswith("/") and relative.startswith(name)),
                    relative)

    wrong = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative in ("__init__.py", "__main__.py"):
            continue
        mine = unit(relative)
        if mine not in order:
            wrong.append(f"{relative} is not in the list")
            continue
        for target in _relative_imports(path, package):
            theirs = unit(target)
            own_package = relative.endswith("/__init__.py") and target.startswith(
                relative[: -len("__init__.py")])
            if theirs == mine or own_package or target == "__init__.py":
                continue
            if theirs not in order or order.index(theirs) > order.index(mine):
                wrong.append(f"{relative} imports {target}, listed below it")
    assert not wrong, wrong
