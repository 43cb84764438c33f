"""The divergence guard: a training step run so that a NaN/Inf never lands in the model.

Public API
----------
- :class:`DivergenceGuard` — runs a step's forward, loss and backward
  (:meth:`~DivergenceGuard.forward_backward`) and its optimizer update
  (:meth:`~DivergenceGuard.apply`): a NaN/Inf loss or gradient stops the step before the update,
  an update that makes a parameter NaN/Inf is undone, and either way the layers' buffers
  (BatchNorm2D's running statistics) are put back as they were before the step.
- :class:`NonFiniteStep` — what the guard raises then: what was not finite (``what``) and the loss
  (``value``). The loop (:class:`~cnn_im2col.training.TrainingRun`) turns it into
  :class:`~cnn_im2col.exceptions.TrainingDiverged`, naming the epoch and the batch.

It knows only the layer protocol (``forward``, ``backward``, ``params``, ``grads``, ``buffers``),
a loss's ``forward`` / ``backward`` (and ``sample_losses`` for weighted samples) and an
optimizer's ``step``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .shapes import NonFiniteError, is_finite
from .threads import batch_maps

__all__ = ["DivergenceGuard", "NonFiniteStep"]


class NonFiniteStep(Exception):
    def __init__(self, what: str, value: float) -> None:
        super().__init__(what)
        self.what, self.value = what, value


class DivergenceGuard:
    """Runs a step's forward/backward and its optimizer update so that a NaN/Inf never lands in the
    model: a non-finite loss or gradient raises ``NonFiniteStep`` before the update, and an update
    that makes a parameter non-finite is undone (the parameters are copied back from ``backup``).
    Either way the layers' buffers (BatchNorm2D's running statistics, which the step's forward
    already moved) are put back as they were before the step (``restore_buffers``), so a step
    reported as not applied left nothing of itself behind."""

    def __init__(self) -> None:
        self.backup: dict[str, np.ndarray] = {}  # the parameters before the current step
        self.buffer_backup: dict[
            str, np.ndarray
        ] = {}  # the buffers before the current step's forward

    @staticmethod
    def _keep(store: dict[str, np.ndarray], arrays: dict[str, np.ndarray]) -> None:
        """Copy ``arrays`` into ``store``, reusing its arrays where shape and dtype still match."""
        for key, a in arrays.items():
            kept = store.get(key)
            if kept is None or kept.shape != a.shape or kept.dtype != a.dtype:
                store[key] = np.array(a, copy=True)
            else:
                np.copyto(kept, a)

    def restore_buffers(self, model: Any) -> None:
        """Put the buffers back as ``forward_backward`` found them (in place: model files and
        state_dict hold these arrays)."""
        for key, a in model.buffers.items():
            np.copyto(a, self.buffer_backup[key])

    def forward_backward(
        self,
        model: Any,
        xb: np.ndarray,
        yb: np.ndarray,
        loss: Any,
        check_grads: bool = True,
        weights: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float, dict]:
        """Forward, loss, backward; raise ``NonFiniteStep`` if the loss or (``check_grads``) a
        gradient is NaN/Inf, with the buffers restored. ``weights`` (N,): each sample's loss is
        weighed (the loss is ``mean(weights * loss.sample_losses())`` and each row of its gradient
        is scaled by its weight), as Keras's ``sample_weight``."""
        self._keep(self.buffer_backup, model.buffers)
        try:
            try:
                # reported below as a divergence; a small batch's maps in the calling thread
                with np.errstate(over="ignore", invalid="ignore"), batch_maps(xb.shape[0]):
                    out = model.forward(xb, training=True)
                    value = float(loss.forward(out, yb))
                    if weights is not None:
                        value = float(np.mean(weights * loss.sample_losses()))
                    if not math.isfinite(value):
                        raise NonFiniteStep(f"the loss is {value}", value)
                    dout = loss.backward()
                    if weights is not None:
                        shape = (-1,) + (1,) * (dout.ndim - 1)
                        dout = dout * weights.reshape(shape).astype(dout.dtype)
                    model.backward(dout, input_grad=False)
            except NonFiniteError as exc:
                # the layers and losses refuse non-finite inputs: an activation or a gradient
                # overflowed
                raise NonFiniteStep(f"a value overflowed ({exc})", math.nan) from None
            grads = model.grads
            if check_grads:
                for key, g in grads.items():
                    if not is_finite(g):
                        raise NonFiniteStep(
                            f"the gradient of {key} is not finite (loss {value:.6g})", value
                        )
        except NonFiniteStep:
            self.restore_buffers(model)
            raise
        return out, value, grads

    def apply(self, model: Any, optimizer: Any, grads: dict, value: float) -> None:
        """``optimizer.step``; if it makes a parameter NaN/Inf, put every parameter and buffer back
        as it was and raise ``NonFiniteStep`` (the optimizer's own state, e.g. momentum, has
        advanced)."""
        params = model.params
        self._keep(self.backup, params)
        with np.errstate(over="ignore", invalid="ignore"):  # reported below as a divergence
            optimizer.step(params, grads)
            bad = next((key for key, p in params.items() if not is_finite(p)), None)
        if bad is not None:
            for key, p in params.items():
                np.copyto(p, self.backup[key])
            self.restore_buffers(model)
            raise NonFiniteStep(
                f"the optimizer step made {bad} non-finite (loss {value:.6g}; the parameters were "
                f"restored to before the step)",
                value,
            )
