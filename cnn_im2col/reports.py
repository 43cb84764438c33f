"""What the commands report about a network and a run, apart from the commands themselves:
``metrics.json`` (:func:`write_json`), the loss and accuracy curves (:func:`plot_history`,
``curves.png``), the confusion matrix of ``evaluate`` (:func:`confusion_matrix`,
:func:`format_confusion`) and the per-layer profile of ``bench`` (:func:`profile_layers`,
:func:`format_profile`). Files are written atomically, only where the caller says.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._files import atomic_write
from .losses import SoftmaxCrossEntropy
from .model import Sequential
from .optim import Adam

# --------------------------------------------------------------------------------------------
# a run: metrics.json and curves.png
# --------------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_json(path: Path, obj: Any) -> None:
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=2, default=_json_default)
        handle.write("\n")


def plot_history(history: dict, path: str | Path, title: str = "") -> None:
    """Plot ``fit``'s history as a PNG at ``path`` (written atomically; its folder must exist):
    one panel per metric (loss, accuracy where it applies, ``fit``'s extra metrics), training and
    validation per epoch. Uses matplotlib's Agg canvas, never the global backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(history, dict) or not isinstance(history.get("epoch"), list):
        raise TypeError(f"plot_history: history must be the dict fit returns (with an 'epoch' "
                        f"list), got {type(history).__name__}")
    epochs = history["epoch"]
    metrics = [key for key, values in history.items()
               if key not in ("epoch", "lr", "seconds", "samples_per_s", "seed")
               and not key.startswith("val_") and isinstance(values, list)
               and any(v is not None for v in values)]
    fig = Figure(figsize=(5 * max(len(metrics), 1), 4), dpi=100)
    FigureCanvasAgg(fig)
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        for prefix, style, label in (("", "o-", "training"), ("val_", "s-", "validation")):
            points = [(e, v) for e, v in zip(epochs, history.get(prefix + metric, []))
                      if v is not None]
            if points:
                ax.plot([e for e, _ in points], [v for _, v in points], style,
                        label=f"{label} {metric}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(True, alpha=0.3)
        ax.legend()
        if epochs:
            ax.set_xticks(list(epochs))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png")


# --------------------------------------------------------------------------------------------
# evaluate: the confusion matrix
# --------------------------------------------------------------------------------------------


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """``m[t, p]``: how many images of true class ``t`` were predicted as ``p``."""
    m = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def format_confusion(m: np.ndarray) -> str:
    width = max(5, len(str(int(m.max()))) + 1)
    k = m.shape[0]
    lines = [
        "rows: true class, columns: predicted class",
        "true\\pred" + "".join(f"{p:>{width}}" for p in range(k)) + f"{'recall':>9}",
    ]
    for t in range(k):
        total = int(m[t].sum())
        recall = f"{100 * m[t, t] / total:8.2f}%" if total else f"{'-':>9}"
        lines.append(f"{t:>9}" + "".join(f"{int(v):>{width}}" for v in m[t]) + recall)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# bench: the time of every layer
# --------------------------------------------------------------------------------------------


def profile_layers(model: Sequential, x: np.ndarray, y: np.ndarray, batches: int) -> dict:
    """Mean seconds per batch of every layer's forward and backward, the loss, the optimizer step,
    and the whole step (after one untimed warm-up step)."""
    loss = SoftmaxCrossEntropy()
    optimizer = Adam(1e-4)
    n_layers = len(model.layers)
    times = np.zeros((n_layers, 2))
    other = {"loss": 0.0, "step": 0.0, "total": 0.0}
    for run in range(batches + 1):
        if run == 1:
            times[:] = 0
            other = dict.fromkeys(other, 0.0)
        t0 = time.perf_counter()
        a = x
        for i, layer in enumerate(model.layers):
            t = time.perf_counter()
            a = layer.forward(a, training=True)
            times[i, 0] += time.perf_counter() - t
        t = time.perf_counter()
        loss.forward(a, y)
        d = loss.backward()
        other["loss"] += time.perf_counter() - t
        for i in range(n_layers - 1, -1, -1):
            t = time.perf_counter()
            d = model.layers[i].backward(d)
            times[i, 1] += time.perf_counter() - t
        t = time.perf_counter()
        optimizer.step(model.params, model.grads)
        other["step"] += time.perf_counter() - t
        other["total"] += time.perf_counter() - t0
    return {"layers": times / batches, **{k: v / batches for k, v in other.items()}}


def format_profile(model: Sequential, result: dict, batch_size: int) -> str:
    """The table of :func:`profile_layers`' ``result``: a row per layer (forward and backward ms),
    their sum, then the loss, the optimizer step and the whole step with its images per second."""
    width = max(len(repr(layer)) for layer in model.layers)
    lines = [f"{'#':>2}  {'layer':<{width}}  {'forward ms':>10}  {'backward ms':>11}"]
    for i, (layer, (fwd, bwd)) in enumerate(zip(model.layers, result["layers"])):
        lines.append(f"{i:>2}  {layer!r:<{width}}  {1e3 * fwd:>10.2f}  {1e3 * bwd:>11.2f}")
    fwd, bwd = result["layers"].sum(axis=0)
    lines.append(f"{'':>2}  {'all layers':<{width}}  {1e3 * fwd:>10.2f}  {1e3 * bwd:>11.2f}")
    lines.append(
        f"loss {1e3 * result['loss']:.2f} ms, optimizer step {1e3 * result['step']:.2f} ms, "
        f"whole step {1e3 * result['total']:.2f} ms: {batch_size / result['total']:.0f} images/s"
    )
    return "\n".join(lines)
