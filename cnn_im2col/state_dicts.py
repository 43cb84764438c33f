"""Loading PyTorch-style state dicts into a model: the checks and the copy behind
:meth:`cnn_im2col.model.Sequential.load_state_dict`, and what it returns.

A state dict is ``{name: array}`` with the names of ``Sequential.state_dict`` (PyTorch's
``nn.Sequential`` key names, the paths of :func:`cnn_im2col.containers.state_entries`); its
values are ndarrays or anything ``np.asarray`` converts (CPU torch tensors included; torch is
never imported).

Public API
----------
- :class:`IncompatibleKeys` — ``(missing_keys, unexpected_keys)``, as PyTorch's.
- :func:`load_state_dict` — ``load_state_dict(model, state, strict, owner)``: every value checked
  (keys, shapes, numbers, NaN/Inf) and then copied in place into ``model``'s arrays, or nothing
  copied and one error naming every problem; ``owner`` begins the messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = ["IncompatibleKeys", "load_state_dict"]


class IncompatibleKeys(NamedTuple):
    """What :meth:`Sequential.load_state_dict` returns, as PyTorch's: the model's keys absent from
    the state, and the state's keys the model does not have (both empty after a strict load)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _shape_of(value: Any) -> Any:
    try:
        return np.shape(value)
    except (TypeError, ValueError, RuntimeError):
        return f"<{type(value).__name__}>"


def load_state_dict(
    model: Any, state: Mapping[str, Any], strict: bool, owner: str
) -> IncompatibleKeys:
    """The body of :meth:`cnn_im2col.model.Sequential.load_state_dict` (see it for the rules):
    copy ``state`` into the arrays of ``model._state_entries()``, cast to each one's dtype, or
    raise naming every problem, ``owner`` first, with nothing copied. Returns the keys that did
    not match."""
    if not isinstance(state, Mapping):
        raise TypeError(
            f"{owner}: state must be a mapping {{name: array}}, got {type(state).__name__}"
        )
    if not isinstance(strict, (bool, np.bool_)):
        raise TypeError(f"{owner}: strict must be True or False, got {strict!r}")
    entries = model._state_entries()
    missing = [key for key in entries if key not in state]
    unexpected = [key for key in state if key not in entries]
    problems = []
    if strict:
        problems += [
            f"missing key {key!r} (expected shape {entries[key][0].shape})" for key in missing
        ]
        problems += [
            f"unexpected key {key!r} (received shape {_shape_of(state[key])})"
            for key in unexpected
        ]
    ready = []
    for key, (target, holder, name) in entries.items():
        if key not in state:
            continue
        try:
            value = np.asarray(state[key])
        except (
            TypeError,
            ValueError,
            RuntimeError,
        ) as exc:  # e.g. a CUDA tensor, a ragged list
            problems.append(f"key {key!r}: cannot be read as an array ({exc})")
            continue
        target_shape = np.shape(target)
        if value.shape != target_shape:
            problems.append(
                f"key {key!r}: expected shape {target_shape}, received {value.shape}"
            )
        elif value.dtype.kind not in "biuf":
            problems.append(f"key {key!r}: expected numbers, received dtype {value.dtype}")
        elif value.dtype.kind == "f" and not np.isfinite(value).all():
            problems.append(f"key {key!r}: contains NaN or Inf")
        else:
            ready.append((target, holder, name, value))
    if problems:
        raise ValueError(f"{owner}: the state does not fit this model: " + "; ".join(problems))
    for target, holder, name, value in ready:
        if isinstance(target, np.ndarray) and target.ndim > 0:
            np.copyto(target, value, casting="unsafe")  # in place: optimizers hold these arrays
        else:  # a scalar buffer (a count): keep its type
            holder[name] = np.asarray(value, dtype=np.asarray(target).dtype)
    return IncompatibleKeys(missing, unexpected)
