"""Accuracy that follows the task: which kind of accuracy a network's outputs and targets allow.

- Class labels ``(N,)`` with ``K >= 2`` outputs, or probability rows ``(N, K)`` as targets:
  **argmax** accuracy (the largest output is the predicted class).
- One output ``(N, 1)`` with 0/1 targets: **threshold** accuracy. The output is read as a
  probability (threshold 0.5) when the network ends with ``Sigmoid`` or ``Softmax``, and as a
  logit (threshold 0) otherwise.
- Anything else (regression targets): no accuracy; ``evaluate`` and ``fit`` report the loss only.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Accuracy", "accuracy_for"]


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


def accuracy_for(out_shape: tuple[int, ...], y: np.ndarray, outputs_probabilities: bool
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
