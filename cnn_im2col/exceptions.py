"""The exceptions with which training stops early: raised by the loop (:mod:`cnn_im2col.training`)
and re-exported by :mod:`cnn_im2col.model`, so they live below both."""

from __future__ import annotations

__all__ = ["TrainingDiverged", "TrainingInterrupted"]


class TrainingDiverged(FloatingPointError):
    """The loss or a gradient of a batch was NaN or Inf, or the optimizer step made a parameter
    NaN/Inf. The step was NOT applied: the parameters are those from before that batch (an
    optimizer's internal state, such as momentum, may have advanced in the last case).

    Attributes: ``epoch`` and ``batch`` (1-based), ``loss`` (the bad value), ``lr``.
    """

    def __init__(self, message: str, epoch: int, batch: int, loss: float, lr: float | None) -> None:
        super().__init__(message)
        self.epoch, self.batch, self.loss, self.lr = epoch, batch, loss, lr


class TrainingInterrupted(Exception):
    """``fit`` stopped because ``should_stop()`` returned True after a batch.

    Attributes: ``epoch`` and ``batch`` (1-based: the last batch completed), ``batches`` (per
    epoch), ``checkpoint`` (the path written, or None) and ``history`` so far.
    """

    def __init__(self, message: str, epoch: int, batch: int, batches: int, checkpoint: str | None,
                 history: dict) -> None:
        super().__init__(message)
        self.epoch, self.batch, self.batches = epoch, batch, batches
        self.checkpoint, self.history = checkpoint, history
