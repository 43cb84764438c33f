"""Accuracy that follows the task: which kind of accuracy a network's outputs and targets allow.

- Class labels ``(N,)`` with ``K >= 2`` outputs, or probability rows ``(N, K)`` as targets:
  **argmax** accuracy (the largest output is the predicted class).
- One output ``(N, 1)`` with 0/1 targets: **threshold** accuracy. The output is read as a
  probability (threshold 0.5) when the network ends with ``Sigmoid`` or ``Softmax``, and as a
  logit (threshold 0) otherwise.
- Anything else (regression targets): no accuracy; ``evaluate`` and ``fit`` report the loss only.

More metrics are asked for by ``metrics=`` in ``fit`` and ``evaluate``: the names of
:data:`NAMED` or callables ``fn(y_true, y_pred) -> float`` (the batch's mean, Keras's argument
order); each is averaged over the samples, and ``fit`` records it per epoch under its name (and
``val_`` + its name for the validation data).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = ["NAMED", "Accuracy", "accuracy_for", "resolve", "wants_accuracy"]


class Accuracy(NamedTuple):
    """How to count correct predictions: ``kind`` is ``"argmax"`` or ``"threshold"``;
    ``threshold`` is the cut for one-output networks (0.5 on probabilities, 0 on logits)."""

    kind: str
    threshold: float = 0.0

    def correct(self, out: np.ndarray, y: np.ndarray) -> int:
        """How many of the batch's outputs ``out`` (N, K) predict their target ``y``."""
        if self.kind == "threshold":
            return int(np.count_nonzero((out[:, 0] > self.threshold) == (y[:, 0] > 0.5)))
        labels = y if y.ndim == 1 else y.argmax(axis=1)
        return int(np.count_nonzero(out.argmax(axis=1) == labels))


def _probability_rows(y: np.ndarray) -> bool:
    return bool((y >= 0).all() and np.allclose(y.sum(axis=1), 1.0, atol=1e-3))


def accuracy_for(
    out_shape: tuple[int, ...], y: np.ndarray, outputs_probabilities: bool
) -> Accuracy | None:
    """The accuracy that means something for per-sample outputs ``out_shape`` and checked targets
    ``y`` (labels (N,) or targets (N, *out_shape)), or None (a regression network).
    ``outputs_probabilities``: whether the last layer squashes to [0, 1] (Sigmoid, Softmax)."""
    if len(out_shape) != 1:
        return None
    classes = out_shape[0]
    if y.ndim == 1:
        return Accuracy("argmax") if classes >= 2 else None
    if y.ndim != 2 or y.shape[0] == 0:
        return None
    if classes >= 2:
        return Accuracy("argmax") if _probability_rows(y) else None
    if np.isin(y, (0.0, 1.0)).all():
        return Accuracy("threshold", 0.5 if outputs_probabilities else 0.0)
    return None


def _mean_squared_error(y: np.ndarray, out: np.ndarray) -> float:
    target = np.eye(out.shape[1], dtype=out.dtype)[y] if y.ndim == 1 else y
    return float(np.mean((out.astype(np.float64) - target) ** 2))


def _mean_absolute_error(y: np.ndarray, out: np.ndarray) -> float:
    target = np.eye(out.shape[1], dtype=out.dtype)[y] if y.ndim == 1 else y
    return float(np.mean(np.abs(out.astype(np.float64) - target)))


def _top5_accuracy(y: np.ndarray, out: np.ndarray) -> float:
    labels = y if y.ndim == 1 else y.argmax(axis=1)
    top = np.argpartition(out, -5, axis=1)[:, -5:]
    return float(np.mean((top == labels[:, None]).any(axis=1)))


#: Metrics by name: ``fn(y_true, y_pred) -> batch mean`` (Keras's argument order). "accuracy"
#: is the task's accuracy (above) and is resolved per task.
NAMED = {"mse": _mean_squared_error, "mae": _mean_absolute_error, "top5_accuracy": _top5_accuracy}


def resolve(
    metrics: Any, out_shape: tuple[int, ...], y: np.ndarray, owner: str
) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """``metrics`` (names of :data:`NAMED`, ``"accuracy"``, or callables ``fn(y_true, y_pred)``
    returning the batch's mean) as ``{name: fn}``; ``"accuracy"`` is left out (the loop counts
    it), after checking that an accuracy applies. TypeError / ValueError naming the metric."""
    if isinstance(metrics, Mapping):  # already resolved: {name: fn}
        return {str(name): fn for name, fn in metrics.items()}
    if isinstance(metrics, (str, bytes)) or callable(metrics):
        metrics = [metrics]
    try:
        items = list(metrics)
    except TypeError:
        raise TypeError(
            f"{owner}: metrics must be a list of names or callables, got {metrics!r}"
        ) from None
    resolved: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}
    for item in items:
        if isinstance(item, str):
            if item == "accuracy":
                continue
            if item not in NAMED:
                raise ValueError(
                    f"{owner}: unknown metric {item!r}; known: "
                    f"{', '.join(['accuracy', *sorted(NAMED)])} or a callable "
                    f"fn(y_true, y_pred)"
                )
            if item == "top5_accuracy" and (len(out_shape) != 1 or out_shape[0] < 5):
                raise ValueError(
                    f"{owner}: metric 'top5_accuracy' needs at least 5 class scores, "
                    f"the network outputs {tuple(out_shape)}"
                )
            resolved[item] = NAMED[item]
        elif callable(item):
            name = getattr(item, "__name__", type(item).__name__)
            resolved[name] = item
        else:
            raise TypeError(
                f"{owner}: metrics must be names or callables fn(y_true, y_pred), got {item!r}"
            )
    for name in resolved:
        if name in (
            "loss",
            "epoch",
            "lr",
            "seconds",
            "samples_per_s",
            "accuracy",
        ) or name.startswith("val_"):
            raise ValueError(
                f"{owner}: metric name {name!r} is taken by the history; rename the function"
            )
    return resolved


def wants_accuracy(metrics: Any) -> bool:
    """Whether ``metrics`` names ``"accuracy"`` explicitly."""
    if isinstance(metrics, str):
        return metrics == "accuracy"
    return isinstance(metrics, (list, tuple)) and "accuracy" in metrics
