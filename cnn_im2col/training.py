"""The training loop.

Public API
----------
- :class:`Trainer` — the training half of a model, in the way of Keras's trainer: ``fit`` (its
  arguments are documented there, once), ``save_checkpoint`` / ``load_checkpoint``, and
  ``trained_loss``. :class:`~cnn_im2col.model.Sequential` inherits it; the loop knows only the
  layer protocol (``forward``, ``backward``, ``params``, ``grads``, ``buffers``) and the host's
  input checks.
- :class:`TrainingRun` — one ``fit`` call: its position, history and callbacks
  (:mod:`cnn_im2col.callbacks`); :meth:`TrainingRun.train_step` is the one place a batch is
  trained. The divergence guard (:class:`~cnn_im2col.divergence.DivergenceGuard`) checks every
  step before it is applied: a batch whose loss or gradient is NaN/Inf raises
  :class:`~cnn_im2col.exceptions.TrainingDiverged` naming the epoch and the batch, and
  ``should_stop()`` returning True after a batch raises
  :class:`~cnn_im2col.exceptions.TrainingInterrupted` (the checkpoint, if any, written first).

Reproducibility
---------------
``fit(seed=s)`` draws the order of epoch ``e`` from ``default_rng([s, e])`` and the augmentation of
batch ``b`` of epoch ``e`` from ``default_rng([s, e, b])``; layers with their own generators
(``Dropout``) advance them batch by batch and the checkpoint stores their states. So the same seed
gives the same weights, and training resumed from a checkpoint written mid-epoch (or at an epoch
end) ends with exactly the weights of an uninterrupted run. ``seed=None`` draws a seed from the OS
and records it in the history (``history["seed"]``).

Data-parallel (``comm``: an mpi4py communicator of size K > 1; see :mod:`cnn_im2col.distributed`):
every rank passes the same data; each global batch (``batch_size``) is augmented whole on every rank
with the key above and split into K contiguous shares; the gradients, weighted by each share's size,
are summed by one Allreduce per step, so every rank applies the global mean gradient. The result is
single-process training up to the order of float summation. Layer generators (Dropout) are keyed per
sample: every step draws from ``[s, e, b, index of the generator]`` as if for the whole global
batch, and each rank keeps its rows (:class:`~cnn_im2col.distributed.SampleKeyedGenerator`), so with
dropout too the result does not depend on K (it differs from one process without ``comm``, whose
generators run on from batch to batch), and a resumed run needs no generator state. Only rank 0
shows progress, logs and writes the checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from . import checkpoint as _checkpoint
from . import distributed as _dist
from ._files import path_text
from .callbacks import (
    Callback,
    Checkpointing,
    EpochLog,
    FunctionCallbacks,
    ProgressBar,
    wants_stop,
)
from .checkpoint import HISTORY_KEYS, Position
from .divergence import DivergenceGuard, NonFiniteStep
from .exceptions import TrainingDiverged, TrainingInterrupted
from .fit_arguments import OWNER, checked_fit_arguments, checked_seed
from .metrics import Accuracy, accuracy_for
from .shapes import as_float_array, is_finite
from .threads import uses_engine_blas

__all__ = ["Trainer", "TrainingRun"]


def _print(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _augmented(xb: Any, shape: tuple[int, ...], owner: str) -> np.ndarray:
    """Check what ``augment`` returned: a finite batch of the shape it was given (a NaN from it
    would otherwise surface as a divergence of training)."""
    xb = as_float_array(xb, "the batch returned by augment", owner)
    if xb.shape != shape:
        raise ValueError(
            f"{owner}: augment must return a batch of the shape it was given, {shape}, got "
            f"{xb.shape}"
        )
    return xb


def fresh_loss(loss: Any) -> Any:
    """A new loss of the same kind, so validation does not overwrite the training loss's cache."""
    try:
        return type(loss).from_config(loss.config())
    except Exception:  # noqa: BLE001 - a custom loss without config: reuse it
        return loss


class TrainingRun:
    """One ``fit`` call's state: the model, optimizer, scheduler, position and history, the
    callbacks, and (data-parallel) the :class:`~cnn_im2col.distributed.DataParallel` helper."""

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        scheduler_interval: str,
        loss: Any,
        position: Position,
        callbacks: list[Callback],
        should_stop: Callable[[], bool] | None,
        checkpoint: str | None,
        parallel: _dist.DataParallel | None,
    ) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.scheduler_interval, self.loss, self.position = scheduler_interval, loss, position
        self.history = position.history
        self.callbacks, self.should_stop, self.checkpoint = callbacks, should_stop, checkpoint
        self.parallel = parallel
        self.guard = DivergenceGuard()
        self.accuracy: Accuracy | None = None  # set by fit: what "accuracy" means for this task
        self.last_lr = math.nan  # the learning rate of the last batch trained
        self.weights: np.ndarray | None = None  # set by fit: each training sample's weight
        self.batch_weights: np.ndarray | None = None  # the current batch's
        self.metrics: dict[str, Callable] = {}  # set by fit: the extra metrics by name

    def _correct(self, out: np.ndarray, yb: np.ndarray) -> int:
        return 0 if self.accuracy is None else self.accuracy.correct(out, yb)

    def _metric_sums(self, out: np.ndarray, yb: np.ndarray) -> list[float]:
        """Each of ``fit``'s extra metrics on a batch, times its size (summed over the epoch)."""
        return [float(fn(yb, out)) * out.shape[0] for fn in self.metrics.values()]

    # --- one step ----------------------------------------------------------------------------
    def _diverged(self, exc: NonFiniteStep, epoch: int, b: int, batches: int) -> TrainingDiverged:
        epochs = self.position.run["epochs"]
        lr = float(self.optimizer.lr) if hasattr(self.optimizer, "lr") else None
        lr_text = f"{lr:.3g}" if lr is not None else "?"
        return TrainingDiverged(
            f"training diverged at epoch {epoch + 1}/{epochs}, batch {b + 1}/{batches}: "
            f"{exc.what}. This step was not applied. The learning rate ({lr_text}) is "
            f"probably too high; try one 3-10x smaller",
            epoch + 1,
            b + 1,
            exc.value,
            lr,
        )

    def train_step(
        self, xb: np.ndarray, yb: np.ndarray, key: list[int]
    ) -> tuple[float, int, int, bool, list[float]]:
        """Train on one (global) batch: forward, loss, backward, (data-parallel: the gradients'
        allreduce), the divergence guard's checks, the optimizer's update. Return (loss x count,
        correct, count, stop requested, each metric x count). ``key`` ([seed, epoch, batch])
        seeds the layers' random draws when data-parallel."""
        if self.parallel is not None:
            return self._parallel_step(xb, yb, key)
        out, value, grads = self.guard.forward_backward(
            self.model, xb, yb, self.loss, weights=self.batch_weights
        )
        self.guard.apply(self.model, self.optimizer, grads, value)
        return (
            value * xb.shape[0],
            self._correct(out, yb),
            xb.shape[0],
            False,
            self._metric_sums(out, yb),
        )

    def _parallel_step(
        self, xb: np.ndarray, yb: np.ndarray, key: list[int]
    ) -> tuple[float, int, int, bool, list[float]]:
        dp = self.parallel
        lo, hi = dp.share(xb.shape[0])
        count = hi - lo
        loss_sum, correct, failure = 0.0, 0, None
        metric_sums = [0.0] * len(self.metrics)
        if count:
            try:
                with dp.keyed_generators(self.model, key, lo):
                    weights = None if self.batch_weights is None else self.batch_weights[lo:hi]
                    out, value, grads = self.guard.forward_backward(
                        self.model,
                        xb[lo:hi],
                        yb[lo:hi],
                        self.loss,
                        check_grads=False,
                        weights=weights,
                    )
                loss_sum, correct = value * count, self._correct(out, yb[lo:hi])
                metric_sums = self._metric_sums(out, yb[lo:hi])
            except NonFiniteStep as exc:
                failure, grads = exc, self.model.grads
        else:
            grads = self.model.grads  # no sample in this rank's share: it contributes zeros
        stop = self.should_stop is not None and bool(
            self.should_stop()
        )  # any rank's request stops all
        total = xb.shape[0]
        grads, totals = dp.allreduce_gradients(
            grads, count, total, [loss_sum, correct, failure is not None, stop, *metric_sums]
        )
        loss_sum, correct, failed_ranks, stop_ranks = totals[:4]
        metric_sums = totals[4:]
        if failed_ranks or not is_finite(dp.buffer):
            self.guard.restore_buffers(self.model)  # this rank's forward moved them too
            if failure is None:
                failure = NonFiniteStep(
                    "the loss or a gradient on another rank is not finite"
                    if failed_ranks
                    else "the sum of the ranks' gradients is not finite",
                    math.nan,
                )
            raise failure
        self.guard.apply(self.model, self.optimizer, grads, loss_sum / total)
        dp.broadcast_buffers(self.model)
        return loss_sum, round(correct), total, bool(stop_ranks), metric_sums

    # --- epochs --------------------------------------------------------------------------------
    def run(
        self,
        x: np.ndarray,
        y: np.ndarray,
        val: tuple | None,
        batch_size: int,
        shuffle: bool,
        augment: Any,
        resumed: bool,
    ) -> None:
        pos, run = self.position, self.position.run
        n, epochs, seed = run["n"], run["epochs"], run["seed"]
        batches = math.ceil(n / batch_size)
        start_epoch, start_batch = pos.epoch, pos.batch
        for epoch in range(start_epoch, epochs):
            first = start_batch if epoch == start_epoch else 0
            pos.epoch, pos.batch = epoch, first
            if epoch != start_epoch or not resumed:
                pos.lr_at_epoch_start = float(self.optimizer.lr)
            if first == 0:
                pos.sums, pos.elapsed = [0.0, 0, 0] + [0.0] * len(self.metrics), 0.0
            order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else None
            for cb in self.callbacks:
                cb.on_epoch_begin(self, epoch, first)
            t_epoch = time.perf_counter()
            t_mark = t_epoch
            try:
                for b in range(first, batches):
                    index = (
                        order[b * batch_size : (b + 1) * batch_size]
                        if shuffle
                        else slice(b * batch_size, (b + 1) * batch_size)
                    )
                    xb, yb = x[index], y[index]
                    self.batch_weights = None if self.weights is None else self.weights[index]
                    if augment is not None:
                        xb = _augmented(
                            augment(xb, np.random.default_rng([seed, epoch, b])), xb.shape, OWNER
                        )
                    self.last_lr = float(self.optimizer.lr)  # the rate this batch trains with
                    try:
                        loss_sum, correct, count, stop, metric_sums = self.train_step(
                            xb, yb, [seed, epoch, b]
                        )
                    except NonFiniteStep as exc:
                        raise self._diverged(exc, epoch, b, batches) from None
                    if self.scheduler is not None and self.scheduler_interval == "batch":
                        self.scheduler.step()
                    pos.sums[0] += loss_sum
                    pos.sums[1] += correct
                    pos.sums[2] += count
                    for k, value in enumerate(metric_sums):
                        pos.sums[3 + k] += value
                    pos.batch = b + 1
                    now = time.perf_counter()
                    for cb in self.callbacks:
                        cb.on_batch_end(self, epoch, b, pos.elapsed + (now - t_epoch))
                    t_mark = now
                    if self.parallel is None:
                        stop = self.should_stop is not None and self.should_stop()
                    if stop:
                        self._interrupt(epoch, b, batches, pos.elapsed + (t_mark - t_epoch))
            finally:
                for cb in self.callbacks:
                    cb.on_batches_end(self, epoch)
            if self._end_epoch(epoch, val, batch_size, pos.elapsed + (t_mark - t_epoch), t_epoch):
                break

    def _interrupt(self, epoch: int, b: int, batches: int, spent: float) -> None:
        for cb in self.callbacks:
            cb.on_interrupt(self, epoch, b, spent)
        if self.parallel is not None:
            # no rank leaves (and maybe aborts the job) before rank 0 has written
            self.parallel.comm.Barrier()
        epochs = self.position.run["epochs"]
        msg = f"training stopped after epoch {epoch + 1}/{epochs}, batch {b + 1}/{batches}"
        if self.checkpoint is not None:
            msg += f"; checkpoint written to {self.checkpoint}"
        raise TrainingInterrupted(msg, epoch + 1, b + 1, batches, self.checkpoint, self.history)

    def _end_epoch(
        self, epoch: int, val: tuple | None, batch_size: int, train_seconds: float, t_epoch: float
    ) -> bool:
        """Scheduler, validation, history, callbacks; True if a callback stops training."""
        pos = self.position
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            self.scheduler.step()
        val_metrics = None
        if val is not None:
            val_metrics = self._validate(val, batch_size)
        seconds = pos.elapsed + (time.perf_counter() - t_epoch)
        if self.parallel is not None:  # every rank reports rank 0's times, so histories agree
            seconds, train_seconds = self.parallel.from_root([seconds, train_seconds])
        count = max(pos.sums[2], 1)
        logs = {
            "epoch": epoch + 1,
            "loss": pos.sums[0] / count,
            "accuracy": None if self.accuracy is None else pos.sums[1] / count,
            "val_loss": None if val_metrics is None else val_metrics["loss"],
            "val_accuracy": None if val_metrics is None else val_metrics.get("accuracy"),
            "lr": pos.lr_at_epoch_start,
            "last_lr": self.last_lr,
            "seconds": seconds,
            "samples_per_s": pos.sums[2] / max(train_seconds, 1e-9),
        }
        for k, name in enumerate(self.metrics):
            logs[name] = pos.sums[3 + k] / count
            logs["val_" + name] = None if val_metrics is None else val_metrics[name]
        for key in (*HISTORY_KEYS, *self.metrics, *("val_" + name for name in self.metrics)):
            self.history.setdefault(key, []).append(logs[key])
        stop = False
        for cb in self.callbacks:
            stop |= wants_stop(cb.on_epoch_end(self, epoch, logs), repr(cb))
        if self.parallel is not None:
            stop = self.parallel.any(stop)
        return stop

    def _validate(self, val: tuple, batch_size: int) -> dict:
        """``model.evaluate`` on the validation data; data-parallel, each rank its share, summed."""
        loss = fresh_loss(self.loss)
        eval_batch = max(256, batch_size)
        metrics = self.metrics
        if self.parallel is None:
            return self.model.evaluate(
                val[0], val[1], batch_size=eval_batch, loss=loss, metrics=metrics
            )
        lo, hi = self.parallel.share(val[0].shape[0])
        keys = ["loss", "accuracy", *self.metrics]
        sums = [0.0] * len(keys)
        if hi > lo:
            part = self.model.evaluate(
                val[0][lo:hi], val[1][lo:hi], batch_size=eval_batch, loss=loss, metrics=metrics
            )
            sums = [part.get(key, 0.0) * (hi - lo) for key in keys]
        total = self.parallel.sum(sums)
        result = {key: value / val[0].shape[0] for key, value in zip(keys, total)}
        if self.accuracy is None:
            del result["accuracy"]
        return result


class Trainer:
    """The training half of a model (Keras's ``Model`` inherits its trainer the same way).

    The host class provides the layer protocol (``forward``, ``backward``, ``params``,
    ``grads``, ``buffers``), its input checks (``_check_inputs``, ``_check_targets``,
    ``check_shapes``), the states of its random generators, and ``_builder`` for reading model
    files; :class:`~cnn_im2col.model.Sequential` is that class.
    """

    #: The loss object of the last ``fit`` (``evaluate`` uses it when given none), or None.
    trained_loss: Any = None

    fresh_loss = staticmethod(fresh_loss)

    @uses_engine_blas
    def fit(
        self,
        x: Any,
        y: Any,
        *,
        epochs: int,
        batch_size: int,
        optimizer: Any,
        loss: Any,
        validation_data: tuple[Any, Any] | None = None,
        validation_split: float = 0.0,
        metrics: Any = (),
        sample_weight: Any = None,
        class_weight: Any = None,
        seed: int | None = None,
        progress: bool = True,
        shuffle: bool = True,
        scheduler: Any = None,
        scheduler_interval: str = "epoch",
        augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        callbacks: Iterable[Any] = (),
        checkpoint: Any = None,
        checkpoint_extra: dict | None = None,
        resume: Mapping | None = None,
        should_stop: Callable[[], bool] | None = None,
        log: Callable[[str], None] | None = _print,
        comm: Any = None,
    ) -> dict[str, list]:
        """Train with minibatches; return the history (per-epoch lists).

        - ``x`` (N, ...) and ``y``: labels ``(N,)`` in ``[0, K)`` or targets shaped like the
          output; validated up front (lengths, label range, NaN/Inf in ``x``, the whole stack's
          shapes).
        - ``epochs``, ``batch_size``: ints >= 1; ``shuffle``: a new order every epoch.
        - ``optimizer``: ``step(params, grads)`` and ``lr`` (``optim.SGD``, ``optim.Adam``);
          ``loss``: ``forward(pred, target) -> float`` / ``backward()`` (``losses.*``). The
          loss is kept as ``trained_loss`` for ``evaluate``.
        - ``validation_data``: ``(x_val, y_val)``, evaluated after every epoch;
          ``validation_split``: instead, the fraction in [0, 1) of ``x, y`` held out for it: the
          LAST samples, taken before any shuffling (as Keras does).
        - ``metrics``: more metrics than the loss and the task's accuracy, by name (``"mse"``,
          ``"mae"``, ``"top5_accuracy"``) or as callables ``fn(y_true, y_pred) -> batch mean``;
          each is recorded per epoch under its name (and ``val_`` + name). See
          :mod:`cnn_im2col.metrics`.
        - ``sample_weight`` (N,): each sample's weight in the loss; ``class_weight``: ``{class:
          weight}`` for each sample of that class (both as Keras's: the loss is the mean of the
          weighted sample losses, and is what the history records); validation is unweighted.
        - ``seed``: the order of epoch ``e`` comes from ``default_rng([seed, e])`` and the
          augmentation of its batch ``b`` from ``default_rng([seed, e, b])`` (None: drawn from
          the OS and recorded in the history).
        - ``scheduler``: stepped after every epoch (``scheduler_interval="epoch"``) or every batch
          (``"batch"``; then its periods count batches).
        - ``augment(xb, rng) -> xb``: applied to each training batch (e.g. :class:`RandomShift`).
        - ``callbacks``: each called as ``cb(model, logs)`` after every epoch (logs: that epoch's
          metrics); returning True stops training after that epoch. A :class:`Callback`
          instance (e.g. :class:`EarlyStopping`, :class:`ReduceLROnPlateau`) gets the loop's
          hooks instead, and its ``on_epoch_end`` stops training the same way.
        - ``checkpoint``: path of a checkpoint written (atomically) at every epoch end and when
          ``should_stop`` stops training; ``checkpoint_extra``: JSON stored in it.
        - ``resume``: the ``state`` of :meth:`load_checkpoint` (use its optimizer and scheduler
          too).
        - ``should_stop()``: polled after every batch; if True, the checkpoint is written and
          :class:`TrainingInterrupted` raised.
        - ``progress``: a tqdm bar per epoch (loss, accuracy, samples/s); ``log``: where the
          one-line epoch summaries go (default stdout; None for silence).
        - ``comm``: an mpi4py communicator; of size K > 1, training is data-parallel (every rank
          passes the same ``x, y``; ``batch_size`` is the global batch; rank 0 prints and writes
          the checkpoint; every rank returns the same history). See the module docstring.

        History keys: epoch, loss, accuracy (None where no accuracy applies, see
        :mod:`cnn_im2col.metrics`), val_loss, val_accuracy (None without validation data), lr
        (at the epoch's start), seconds (the epoch, validation included), samples_per_s
        (training samples per second), plus ``"seed"`` (the seed used).

        A batch whose loss or gradient is NaN/Inf raises :class:`TrainingDiverged` (a
        ``FloatingPointError``) naming the epoch and batch, before the step is applied.
        """
        owner = OWNER
        parallel = (
            _dist.DataParallel(comm)
            if comm is not None and _dist.world_size(comm, owner) > 1
            else None
        )
        try:
            args = checked_fit_arguments(
                self,
                x,
                y,
                epochs=epochs,
                batch_size=batch_size,
                optimizer=optimizer,
                loss=loss,
                validation_data=validation_data,
                validation_split=validation_split,
                sample_weight=sample_weight,
                class_weight=class_weight,
                shuffle=shuffle,
                scheduler=scheduler,
                scheduler_interval=scheduler_interval,
                augment=augment,
                callbacks=callbacks,
                checkpoint=checkpoint,
                checkpoint_extra=checkpoint_extra,
                should_stop=should_stop,
            )
        except (TypeError, ValueError) as exc:
            if parallel is None:
                raise
            with contextlib.suppress(
                ValueError
            ):  # the other ranks learn of it and raise; this one raises its own
                parallel.agree({"error": f"{type(exc).__name__}: {exc}"}, owner)
            raise
        epochs, batch_size, x, y, val, callbacks, checkpoint, weights = args
        seed_value = checked_seed(seed, owner)
        if parallel is not None:
            if seed is None:
                seed_value = parallel.from_root_object(seed_value)
            parallel.agree(
                _dist.fingerprint(
                    self,
                    x,
                    y,
                    val,
                    epochs=epochs,
                    batch_size=batch_size,
                    shuffle=shuffle,
                    seed=seed_value,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    scheduler_interval=scheduler_interval,
                    loss=loss,
                    augment=augment,
                    resume=resume,
                ),
                owner,
            )
        n = x.shape[0]
        run = {
            "n": n,
            "batch_size": batch_size,
            "epochs": epochs,
            "shuffle": bool(shuffle),
            "seed": seed_value,
        }
        position = Position(run, lr_at_epoch_start=float(optimizer.lr))
        if resume is not None:
            position = Position.resumed(resume, run, seed is not None, float(optimizer.lr), owner)
            self._set_generator_states(position.generators, owner)
        history_seed = position.run["seed"]
        if parallel is not None:
            parallel.broadcast_state(self, optimizer, scheduler)

        writer = parallel is None or parallel.rank == 0
        batches = math.ceil(n / batch_size)
        steps: list[Callback] = []
        if progress and writer:
            steps.append(ProgressBar(epochs, batches))
        if log is not None and writer:
            steps.append(EpochLog(log, epochs))
        steps.extend(cb for cb in callbacks if isinstance(cb, Callback))
        steps.append(FunctionCallbacks([cb for cb in callbacks if not isinstance(cb, Callback)]))
        if checkpoint is not None and writer:
            # last: it saves what the user's callbacks left (EarlyStopping's restored weights,
            # ReduceLROnPlateau's rate)
            steps.append(Checkpointing(checkpoint, checkpoint_extra))
        training_run = TrainingRun(
            self,
            optimizer,
            scheduler,
            scheduler_interval,
            loss,
            position,
            steps,
            should_stop,
            checkpoint,
            parallel,
        )
        out_shape = self.check_shapes(x.shape[1:])[-1]
        training_run.accuracy = accuracy_for(out_shape, y, self._outputs_probabilities())
        training_run.metrics = self._metrics(metrics, out_shape, y, training_run.accuracy, owner)
        self.trained_loss = loss
        training_run.weights = weights
        training_run.run(x, y, val, batch_size, bool(shuffle), augment, resume is not None)
        result = dict(training_run.history)
        result["seed"] = history_seed
        return result

    def save_checkpoint(
        self,
        path: str | os.PathLike,
        optimizer: Any,
        scheduler: Any = None,
        state: Mapping | None = None,
        extra: Mapping | None = None,
    ) -> None:
        """Model + optimizer state + scheduler state + ``fit``'s position (``state``), atomically
        (:func:`cnn_im2col.checkpoint.save_checkpoint`). ``extra``: any JSON-able dict."""
        _checkpoint.save_checkpoint(
            path_text(path, "save_checkpoint"), self, optimizer, scheduler, state, extra
        )

    @classmethod
    def load_checkpoint(
        cls, path: str | os.PathLike, custom_layers: Mapping[str, type] | None = None
    ) -> _checkpoint.Checkpoint:
        """Read a checkpoint written by :meth:`save_checkpoint` (e.g. by ``fit(checkpoint=...)``):
        the model, its optimizer and scheduler, ``fit``'s position and the stored ``extra``."""
        return _checkpoint.load_checkpoint(
            path_text(path, "Sequential.load_checkpoint"), cls._builder(custom_layers)
        )
