"""The checks of ``fit``'s arguments: every one validated once, before anything is trained.

Public API
----------
- :func:`checked_fit_arguments` — validates the arguments of
  :meth:`~cnn_im2col.training.Trainer.fit` (a TypeError or ValueError naming the argument, the
  value received and what is allowed), holds out ``validation_split``, and returns what the loop
  needs: epochs, batch size, x, y, the validation pair, the callbacks, the checkpoint path and
  each training sample's weight (``sample_weight`` times its class's ``class_weight``).
- :func:`checked_seed` — ``fit``'s seed, or one drawn from the OS when it is None.
- :func:`check_loss` — that a loss is a loss object (``fit`` and ``evaluate``).
- :data:`OWNER` — the name ``fit``'s errors start with.

The model's own checks (its inputs and targets, the whole stack's shapes, a loss that fits its
output) belong to the host (:class:`~cnn_im2col.model.Sequential`): they are called through the
model given, and this module never imports the model or the loop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._files import path_text
from .callbacks import Callback
from .shapes import as_float_array, check_choice, check_int

__all__ = ["OWNER", "check_loss", "checked_fit_arguments", "checked_seed"]

OWNER = "Sequential.fit"


def _not_a_class(value: Any, name: str, owner: str, example: str) -> None:
    if isinstance(value, type):
        raise TypeError(
            f"{owner}: {name} must be an instance, got the class {value.__name__} "
            f"(instantiate it, e.g. {example})"
        )


def check_loss(loss: Any, owner: str) -> None:
    """TypeError unless ``loss`` is a loss object (``forward(pred, target)``, ``backward()``)."""
    _not_a_class(loss, "loss", owner, "SoftmaxCrossEntropy()")
    if not (hasattr(loss, "forward") and hasattr(loss, "backward")):
        raise TypeError(
            f"{owner}: loss must have forward(pred, target) and backward() "
            f"(e.g. losses.SoftmaxCrossEntropy()), got {loss!r}"
        )


def checked_seed(seed: Any, owner: str) -> int:
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
    return check_int(seed, "seed", owner, minimum=0)


def checked_fit_arguments(
    model: Any,
    x: Any,
    y: Any,
    *,
    epochs: Any,
    batch_size: Any,
    optimizer: Any,
    loss: Any,
    validation_data: Any,
    validation_split: Any,
    sample_weight: Any,
    class_weight: Any,
    shuffle: Any,
    scheduler: Any,
    scheduler_interval: Any,
    augment: Any,
    callbacks: Any,
    checkpoint: Any,
    checkpoint_extra: Any,
    should_stop: Any,
) -> tuple:
    """Validate ``fit``'s arguments (TypeError/ValueError naming the argument); return ``(epochs,
    batch_size, x, y, validation pair or None, callbacks as a list, checkpoint path or None,
    each training sample's weight or None)``."""
    owner = OWNER
    epochs = check_int(epochs, "epochs", owner, minimum=1)
    batch_size = check_int(batch_size, "batch_size", owner, minimum=1)
    check_choice(scheduler_interval, "scheduler_interval", ("epoch", "batch"), owner)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"{owner}: shuffle must be True or False, got {shuffle!r}")
    _not_a_class(optimizer, "optimizer", owner, "Adam(1e-3)")
    if not (hasattr(optimizer, "step") and hasattr(optimizer, "lr")):
        raise TypeError(
            f"{owner}: optimizer must have step(params, grads) and lr (e.g. optim.Adam), "
            f"got {type(optimizer).__name__}"
        )
    check_loss(loss, owner)
    _not_a_class(scheduler, "scheduler", owner, "CosineAnnealingLR(optimizer, t_max=10)")
    if scheduler is not None and not hasattr(scheduler, "step"):
        raise TypeError(
            f"{owner}: scheduler must have step() (e.g. optim.CosineAnnealingLR), "
            f"got {type(scheduler).__name__}"
        )
    bound = getattr(scheduler, "optimizer", optimizer)
    if bound is not optimizer:
        raise ValueError(
            f"{owner}: scheduler {type(scheduler).__name__} was built on another "
            f"optimizer ({type(bound).__name__} at {id(bound):#x}), not on the one "
            f"given to fit ({type(optimizer).__name__} at {id(optimizer):#x}), so the "
            f"learning rate would never change; build it on fit's optimizer"
        )
    if augment is not None and not callable(augment):
        raise TypeError(
            f"{owner}: augment must be a callable augment(x, rng) -> x, got {augment!r}"
        )
    callbacks = list(callbacks)
    for cb in callbacks:
        if not callable(cb) and not isinstance(cb, Callback):
            raise TypeError(
                f"{owner}: callbacks must be callables cb(model, logs) or callbacks.Callback "
                f"instances, got {cb!r}"
            )
    if should_stop is not None and not callable(should_stop):
        raise TypeError(
            f"{owner}: should_stop must be a callable returning bool, got {should_stop!r}"
        )
    if checkpoint is not None:
        checkpoint = path_text(checkpoint, owner, "checkpoint")
        if not (hasattr(optimizer, "state_dict") and hasattr(optimizer, "config")):
            raise TypeError(
                f"{owner}: checkpointing needs an optimizer with state_dict() and config() "
                f"(optim.SGD, optim.Adam), got {type(optimizer).__name__}"
            )
    if checkpoint_extra is not None:
        try:
            json.dumps(dict(checkpoint_extra))
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{owner}: checkpoint_extra must be a JSON-able dict, got {checkpoint_extra!r} "
                f"({exc})"
            ) from None

    model._check_loss_fits(loss, owner)
    x = model._check_inputs(x, owner)
    out_shape = model.check_shapes(x.shape[1:])[-1]
    y = model._check_targets(y, x.shape[0], out_shape, owner)
    weights = _sample_weights(sample_weight, class_weight, y, loss, owner)
    if augment is not None and hasattr(augment, "check"):
        augment.check(x.shape[1:], owner)
    val = None
    if (
        isinstance(validation_split, (bool, np.bool_))
        or not isinstance(validation_split, (int, float))
        or not 0.0 <= validation_split < 1.0
    ):
        raise ValueError(
            f"{owner}: validation_split must be a number in [0, 1), got {validation_split!r}"
        )
    if validation_split:
        if validation_data is not None:
            raise ValueError(f"{owner}: give validation_data or validation_split, not both")
        held = int(x.shape[0] * validation_split)
        if held < 1 or held == x.shape[0]:
            raise ValueError(
                f"{owner}: validation_split={validation_split} of {x.shape[0]} samples "
                f"holds out {held}; it must leave at least one sample on each side"
            )
        x, y, validation_data = x[:-held], y[:-held], (x[-held:], y[-held:])
        weights = None if weights is None else weights[:-held]
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError(
                f"{owner}: validation_data must be a pair (x_val, y_val), got "
                f"{type(validation_data).__name__}"
            )
        xv = as_float_array(validation_data[0], "validation x", owner)
        if xv.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"{owner}: validation x must have per-sample shape {x.shape[1:]} like x, "
                f"got {xv.shape[1:]} (shape {xv.shape})"
            )
        yv = model._check_targets(
            validation_data[1], xv.shape[0], out_shape, owner, name="validation y"
        )
        val = (xv, yv)
    model._learn_input_shape(x.shape[1:])  # every argument checked: the model learns the shape
    return epochs, batch_size, x, y, val, callbacks, checkpoint, weights


def _sample_weights(
    sample_weight: Any, class_weight: Any, y: np.ndarray, loss: Any, owner: str
) -> np.ndarray | None:
    """Each sample's weight, float64 (N,): ``sample_weight`` times its class's ``class_weight``
    (classes it does not name weigh 1, as in Keras), or None without either."""
    if sample_weight is None and class_weight is None:
        return None
    if not callable(getattr(loss, "sample_losses", None)):
        raise TypeError(
            f"{owner}: sample_weight and class_weight need a loss with sample_losses() "
            f"(losses.SoftmaxCrossEntropy, losses.MeanSquaredError), got {loss!r}"
        )
    weights = np.ones(y.shape[0])
    if sample_weight is not None:
        try:
            given = np.asarray(sample_weight, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"{owner}: sample_weight must be an array of numbers, got {sample_weight!r}"
            ) from None
        if given.shape != (y.shape[0],):
            raise ValueError(
                f"{owner}: sample_weight must have one weight per sample, shape ({y.shape[0]},), "
                f"got shape {given.shape}"
            )
        if not (np.isfinite(given).all() and (given >= 0).all()):
            raise ValueError(f"{owner}: sample_weight must be finite and >= 0")
        weights *= given
    if class_weight is not None:
        if not isinstance(class_weight, Mapping):
            raise TypeError(
                f"{owner}: class_weight must be a dict {{class: weight}}, got {class_weight!r}"
            )
        labels = y if y.ndim == 1 else (y.argmax(axis=1) if y.ndim == 2 else None)
        if labels is None or y.ndim == 2 and y.shape[1] < 2:
            raise ValueError(f"{owner}: class_weight needs class labels or probability rows")
        classes = int(labels.max()) + 1 if y.ndim == 1 else y.shape[1]
        for cls, weight in class_weight.items():
            if isinstance(cls, (bool, np.bool_)) or not isinstance(cls, (int, np.integer)):
                raise TypeError(f"{owner}: class_weight keys must be class indices, got {cls!r}")
            if (
                isinstance(weight, (bool, np.bool_))
                or not isinstance(weight, (int, float))
                or not (math.isfinite(weight) and weight >= 0)
            ):
                raise ValueError(
                    f"{owner}: class_weight[{cls}] must be a finite number >= 0, got {weight!r}"
                )
            if cls < 0 or (y.ndim == 2 and cls >= classes):
                raise ValueError(
                    f"{owner}: class_weight names class {cls}, outside 0..{classes - 1}"
                )
            weights[labels == cls] *= float(weight)
    return weights
