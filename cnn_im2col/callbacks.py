"""The training loop's callbacks, in the way of Keras's: hooks the loop calls with the
:class:`~cnn_im2col.training.TrainingRun` (model, optimizer, position, history).

- :class:`Callback` — the hooks: ``on_epoch_begin``, ``on_batch_end``, ``on_batches_end``,
  ``on_epoch_end`` (returns True to stop), ``on_interrupt``.
- The loop's own collaborators: :class:`ProgressBar`, :class:`EpochLog`, :class:`Checkpointing`,
  :class:`FunctionCallbacks` (the user's ``cb(model, logs)`` functions).
- Keras's :class:`EarlyStopping` and :class:`ReduceLROnPlateau`.

Every callback stops training one way: by returning True from ``on_epoch_end`` (a function
callback likewise); None or False goes on, anything else is a TypeError.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from .checkpoint import HISTORY_KEYS, Position
from .shapes import check_choice, check_int

__all__ = [
    "Callback",
    "Checkpointing",
    "EarlyStopping",
    "EpochLog",
    "FunctionCallbacks",
    "ProgressBar",
    "ReduceLROnPlateau",
    "wants_stop",
]

#: Who names itself in the callbacks' errors.
OWNER = "Sequential.fit"


class Callback:
    """Hooks of the loop; each gets the :class:`TrainingRun` (model, optimizer, position, "
    "history)."""

    def on_epoch_begin(self, trainer: Any, epoch: int, first_batch: int) -> None:
        """Before batch ``first_batch`` (0-based; > 0 when resuming mid-epoch) of ``epoch``
        (0-based)."""

    def on_batch_end(self, trainer: Any, epoch: int, batch: int, spent: float) -> None:
        """After the step of ``batch``; ``trainer.position.sums`` includes it; ``spent``: seconds in
        the epoch."""

    def on_batches_end(self, trainer: Any, epoch: int) -> None:
        """After the last batch of the epoch, or when a batch raised (always called)."""

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict) -> bool | None:
        """After validation and the history update; True stops training after this epoch."""
        return None

    def on_interrupt(self, trainer: Any, epoch: int, batch: int, spent: float) -> None:
        """``should_stop`` asked to stop after ``batch`` (0-based) of ``epoch``."""


class ProgressBar(Callback):
    """A tqdm bar per epoch on stderr: loss, accuracy and samples/s so far."""

    def __init__(self, epochs: int, batches: int) -> None:
        from tqdm.auto import tqdm

        self._tqdm, self.epochs, self.batches, self.bar = tqdm, epochs, batches, None

    def on_epoch_begin(self, trainer: Any, epoch: int, first_batch: int) -> None:
        self.bar = self._tqdm(
            total=self.batches,
            initial=first_batch,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def on_batch_end(self, trainer: Any, epoch: int, batch: int, spent: float) -> None:
        sums = trainer.position.sums
        self.bar.update(1)
        accuracy = "" if trainer.accuracy is None else f" acc={sums[1] / sums[2]:.4f}"
        self.bar.set_postfix_str(
            f"loss={sums[0] / sums[2]:.4f}{accuracy} {sums[2] / max(spent, 1e-9):.0f} samples/s",
            refresh=False,
        )

    def on_batches_end(self, trainer: Any, epoch: int) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochLog(Callback):
    """One line per epoch (loss, accuracy, validation, lr, seconds, samples/s) sent to ``log``.
    ``lr`` is the rate the epoch's first batch trained with, and ``-> x`` the last batch's when a
    per-batch schedule moved it within the epoch."""

    def __init__(self, log: Callable[[str], None], epochs: int) -> None:
        self.log, self.epochs = log, epochs

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict) -> None:
        line = f"epoch {epoch + 1}/{self.epochs}: loss {logs['loss']:.4f}"
        if logs["accuracy"] is not None:
            line += f", accuracy {logs['accuracy']:.4f}"
        if logs["val_loss"] is not None:
            line += f", val_loss {logs['val_loss']:.4f}"
        if logs["val_accuracy"] is not None:
            line += f", val_accuracy {logs['val_accuracy']:.4f}"
        for name in trainer.metrics:
            line += f", {name} {logs[name]:.4g}"
            if logs["val_" + name] is not None:
                line += f", val_{name} {logs['val_' + name]:.4g}"
        lr = f"{logs['lr']:.3g}"
        if f"{logs['last_lr']:.3g}" not in (lr, "nan"):  # a schedule moved it within the epoch
            lr += f" -> {logs['last_lr']:.3g}"
        line += f", lr {lr}, {logs['seconds']:.1f} s, {logs['samples_per_s']:.0f} samples/s"
        self.log(line)


class Checkpointing(Callback):
    """Writes the checkpoint (:func:`cnn_im2col.checkpoint.save_checkpoint`, atomic) at every epoch
    end and on an interrupt."""

    def __init__(self, path: str, extra: dict | None) -> None:
        self.path, self.extra = path, extra

    def _save(
        self, trainer: Any, epoch: int, batch: int, sums: list, spent: float, lr0: float
    ) -> None:
        pos = trainer.position
        state = Position(pos.run, epoch, batch, list(sums), spent, lr0, trainer.history).state(
            trainer.model._generator_states()
        )
        trainer.model.save_checkpoint(
            self.path, trainer.optimizer, scheduler=trainer.scheduler, state=state, extra=self.extra
        )

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict) -> None:
        self._save(trainer, epoch + 1, 0, [0.0, 0, 0], 0.0, float(trainer.optimizer.lr))

    def on_interrupt(self, trainer: Any, epoch: int, batch: int, spent: float) -> None:
        pos = trainer.position
        self._save(trainer, epoch, batch + 1, pos.sums, spent, pos.lr_at_epoch_start)


def wants_stop(result: Any, who: str) -> bool:
    """The one convention of every callback: return True to stop training after this epoch,
    None or False to go on; anything else is a TypeError (a typo must not pass silently)."""
    if result is None or isinstance(result, (bool, np.bool_)):
        return bool(result)
    raise TypeError(
        f"{OWNER}: callback {who} returned {result!r}; a callback returns True to stop "
        f"training after this epoch, None or False to go on"
    )


class FunctionCallbacks(Callback):
    """The user's ``cb(model, logs)`` functions, called after every epoch (all of them); any
    returning True stops training after that epoch, as a :class:`Callback` does."""

    def __init__(self, functions: list) -> None:
        self.functions = functions

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict) -> bool:
        stop = False
        for cb in self.functions:
            stop |= wants_stop(cb(trainer.model, dict(logs)), repr(cb))
        return stop


class _Monitor(Callback):
    """Shared by :class:`EarlyStopping` and :class:`ReduceLROnPlateau`: the monitored value of an
    epoch's logs and whether it improved on the best so far."""

    def __init__(
        self, monitor: str, mode: str, min_delta: float, patience: int, owner: str
    ) -> None:
        self.monitor = check_choice(
            monitor,
            "monitor",
            tuple(k for k in HISTORY_KEYS if k not in ("epoch", "lr", "seconds", "samples_per_s")),
            owner,
        )
        if mode == "auto":
            mode = "max" if monitor.endswith("accuracy") else "min"
        self.mode = check_choice(mode, "mode", ("min", "max"), owner)
        if (
            isinstance(min_delta, (bool, np.bool_))
            or not isinstance(min_delta, (int, float))
            or not min_delta >= 0
        ):
            raise ValueError(f"{owner}: min_delta must be a number >= 0, got {min_delta!r}")
        self.min_delta = float(min_delta)
        self.patience = check_int(patience, "patience", owner, minimum=0)
        self.owner = owner
        self.best: float | None = None
        self.wait = 0

    def _value(self, logs: dict) -> float:
        value = logs.get(self.monitor)
        if value is None:
            raise ValueError(
                f"{self.owner}: monitor {self.monitor!r} has no value in epoch "
                f"{logs['epoch']}'s logs (val_* needs validation data; accuracy needs "
                f"a task with an accuracy)"
            )
        return float(value)

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` (e.g. ``"val_loss"``, ``"val_accuracy"``) has not improved by more
    than ``min_delta`` for ``patience`` epochs, as Keras's ``EarlyStopping``. ``mode``: ``"min"``,
    ``"max"`` or ``"auto"`` (max for accuracies). ``restore_best``: when training stops (or ends),
    put back the parameters and buffers of the best epoch."""

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best: bool = False,
    ) -> None:
        super().__init__(monitor, mode, min_delta, patience, "EarlyStopping")
        if not isinstance(restore_best, (bool, np.bool_)):
            raise TypeError(
                f"EarlyStopping: restore_best must be True or False, got {restore_best!r}"
            )
        self.restore_best = bool(restore_best)
        self.best_epoch: int | None = None
        self._best_state: dict[str, np.ndarray] | None = None

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict) -> bool:
        value = self._value(logs)
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, logs["epoch"], 0
            if self.restore_best:
                self._best_state = trainer.model.state_dict()
            return False
        self.wait += 1
        stop = self.wait > self.patience
        last = logs["epoch"] == trainer.position.run["epochs"]
        if (stop or last) and self.restore_best and self._best_state is not None:
            trainer.model.load_state_dict(self._best_state)
        return stop


class ReduceLROnPlateau(_Monitor):
    """Multiply the optimizer's ``lr`` by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs, then wait ``cooldown`` epochs; never below ``min_lr`` (Keras's and
    PyTorch's ``ReduceLROnPlateau``). Use it instead of a scheduler, not beside one."""

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 0.0,
        mode: str = "auto",
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        super().__init__(monitor, mode, min_delta, patience, "ReduceLROnPlateau")
        if (
            isinstance(factor, (bool, np.bool_))
            or not isinstance(factor, (int, float))
            or not 0.0 < factor < 1.0
        ):
            raise ValueError(
                f"ReduceLROnPlateau: factor must be a number in (0, 1), got {factor!r}"
            )
        if (
            isinstance(min_lr, (bool, np.bool_))
            or not isinstance(min_lr, (int, float))
            or not min_lr >= 0
        ):
            raise ValueError(f"ReduceLROnPlateau: min_lr must be a number >= 0, got {min_lr!r}")
        self.factor, self.min_lr = float(factor), float(min_lr)
        self.cooldown = check_int(cooldown, "cooldown", "ReduceLROnPlateau", minimum=0)
        self._cooling = 0

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict) -> bool:
        value = self._value(logs)
        if self._cooling:
            self._cooling -= 1
        if self._improved(value):
            self.best, self.wait = value, 0
        elif not self._cooling:
            self.wait += 1
            if self.wait > self.patience:
                optimizer = trainer.optimizer
                optimizer.lr = max(float(optimizer.lr) * self.factor, self.min_lr)
                self.wait, self._cooling = 0, self.cooldown
        return False
