"""Optimizers (SGD with momentum / Nesterov / weight decay, Adam) and learning-rate schedules.

Optimizer protocol::

    opt.step(params, grads)      # params, grads: {name: ndarray}, same keys and shapes
    opt.lr                       # read / write (schedules write it)
    opt.state_dict() -> dict     # {str: ndarray | float | int}: hyper-parameters, step, buffers
    opt.load_state_dict(d)       # resume bit-identically

``step`` updates every array of ``params`` **in place** (the layers keep holding the same arrays)
and never writes to ``grads``. Per-parameter state (momentum buffers, Adam moments) is keyed by the
parameter's name (e.g. ``"0.weight"``), created at its first step, in the parameter's dtype. All
arithmetic is whole-array NumPy with ``out=`` into buffers the optimizer owns, so a step allocates
nothing after the first one; Adam's dozen passes are one compiled pass where the arrays allow it
(``_adam_kernel``: the same operations in the same order and dtype, so the same bits). Gradients
are not checked for NaN/Inf (that would cost a pass over every array per step); a non-finite
gradient produces non-finite parameters.

Weight decay is PyTorch's (coupled) L2 regularisation, ``g <- g + weight_decay * w``: the gradient
of ``(weight_decay / 2) * ||w||**2`` added to the cost, as in the regularisation the primer's
Discussion points to (Nielsen's ``lambda / n`` is ``weight_decay`` here).

``state_dict()`` is flat so it can be stored in an ``.npz`` next to the model: scalar keys
(``"lr"``, ``"step"`` and the hyper-parameters; ``nesterov`` as 0/1) plus one array per parameter
and slot, keyed ``"<slot>:<param name>"`` (``"momentum_buffer:0.weight"``, ``"exp_avg:0.weight"``,
``"exp_avg_sq:0.weight"``, and Adam's per-parameter ``"step:0.weight"`` int). Loading restores the
hyper-parameters too, like PyTorch. 0-d arrays (what ``np.load`` gives back) are accepted for
scalars.

Schedules (:class:`StepLR`, :class:`CosineAnnealingLR`) follow PyTorch: constructing one sets
``optimizer.lr`` to its value at epoch 0 (the optimizer's lr at that moment is the ``base_lr``), and
each ``step()`` advances one epoch and writes the new lr into the optimizer. Call ``step()`` once
per epoch, after that epoch's optimizer steps. Calling it once per batch works too: ``step_size``,
``t_max`` and ``warmup`` are then counted in batches. Both use PyTorch's closed-form formulas (not
the recursive ones), so the sequence never drifts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numba as nb
import numpy as np

from . import threads as _threads
from .arrays import flat_slices
from .shapes import check_float, check_int

__all__ = ["SGD", "Adam", "CosineAnnealingLR", "LRScheduler", "Optimizer", "StepLR"]


def _scalar(value: Any, key: str, owner: str) -> Any:
    """A Python scalar from a number or a 0-d / size-1 array (as ``np.load`` returns them)."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(
                f"{owner}.load_state_dict: {key!r} must be a scalar, got array of shape "
                f"{value.shape}")
        value = value.reshape(()).item()
    elif isinstance(value, np.generic):
        value = value.item()
    return value


class Optimizer:
    """Base class: validation of ``step`` arguments, lr, state_dict plumbing. Subclasses define
    ``_hyper_keys`` (scalar hyper-parameters other than lr), ``_slots`` (per-parameter state) and
    ``_update(name, p, g, state)``."""

    _hyper_keys: tuple[str, ...] = ()
    _slots: tuple[str, ...] = ()

    def __init__(self, lr: float) -> None:
        self._lr = check_float(lr, "lr", type(self).__name__, low=0.0, low_open=True)
        self.state: dict[str, dict[str, Any]] = {}
        self.step_count = 0
        self._scratch: dict[str, list[np.ndarray]] = {}

    # -- learning rate -------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate. Settable; 0 is allowed here (a schedule may anneal to 0), > 0 at
        construction."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_float(value, "lr", type(self).__name__, low=0.0)

    # -- stepping ------------------------------------------------------------------------------
    def _validate(self, params: Any, grads: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
        owner = f"{type(self).__name__}.step"
        for arg, value in (("params", params), ("grads", grads)):
            if not isinstance(value, Mapping):
                raise TypeError(
                    f"{owner}: {arg} must be a dict {{name: ndarray}}, got {type(value).__name__}")
        if params.keys() != grads.keys():
            missing = sorted(set(params) - set(grads))
            extra = sorted(set(grads) - set(params))
            raise ValueError(
                f"{owner}: params and grads must have the same keys; "
                f"missing from grads: {missing}, not in params: {extra}"
            )
        items = []
        for name, p in params.items():
            g = grads[name]
            if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
                what = f"dtype {p.dtype}" if isinstance(p, np.ndarray) else type(p).__name__
                raise TypeError(
                    f"{owner}: params[{name!r}] must be a float32/float64 ndarray, got {what}")
            if not p.flags.writeable:
                raise ValueError(
                    f"{owner}: params[{name!r}] is read-only; it must be updated in place")
            if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
                what = f"dtype {g.dtype}" if isinstance(g, np.ndarray) else type(g).__name__
                raise TypeError(f"{owner}: grads[{name!r}] must be a float ndarray, got {what}")
            if g.shape != p.shape:
                raise ValueError(
                    f"{owner}: grads[{name!r}] has shape {g.shape} but params[{name!r}] has "
                    f"shape {p.shape}"
                )
            for slot, buf in self.state.get(name, {}).items():
                if isinstance(buf, np.ndarray) and buf.shape != p.shape:
                    raise ValueError(
                        f"{owner}: state {slot!r} for {name!r} has shape {buf.shape} but "
                        f"params[{name!r}] has shape {p.shape} (was a state_dict from another "
                        f"model loaded?)"
                    )
            items.append((name, p, g))
        return items

    def _buffers(self, name: str, p: np.ndarray, count: int) -> list[np.ndarray]:
        """``count`` scratch arrays like ``p``, owned by the optimizer and reused across steps."""
        bufs = self._scratch.get(name)
        if bufs is None or bufs[0].shape != p.shape or bufs[0].dtype != p.dtype:
            bufs = self._scratch[name] = []
        while len(bufs) < count:
            bufs.append(np.empty_like(p))
        return bufs

    def step(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        """Update every array in ``params`` in place from ``grads`` (same keys, same shapes)."""
        items = self._validate(params, grads)
        for name, p, g in items:
            state = self.state.setdefault(name, {})
            for slot, buf in state.items():  # e.g. a float64 checkpoint resumed with float32 params
                if isinstance(buf, np.ndarray) and buf.dtype != p.dtype:
                    state[slot] = buf.astype(p.dtype)
            self._update(name, p, g, state)
        self.step_count += 1

    def _update(self, name: str, p: np.ndarray, g: np.ndarray,
                state: dict) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- hyper-parameters and checkpointing ----------------------------------------------------
    def _hyper(self) -> dict[str, float | int]:
        return {key: getattr(self, key) for key in self._hyper_keys}

    def _set_hyper(self, values: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray | float | int]:
        """Everything needed to resume bit-identically: lr, hyper-parameters, step count, buffers
        (copies)."""
        d: dict[str, np.ndarray | float | int] = {"lr": self._lr, "step": self.step_count}
        for key, value in self._hyper().items():
            d[key] = int(value) if isinstance(value, bool) else value
        for name, state in self.state.items():
            for slot, buf in state.items():
                d[f"{slot}:{name}"] = buf.copy() if isinstance(buf, np.ndarray) else buf
        return d

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (or its ``np.load``-ed copy). All or nothing."""
        owner = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"{owner}.load_state_dict: state_dict must be a dict, got "
                f"{type(state_dict).__name__}")
        scalar_keys = ("lr", "step", *self._hyper_keys)
        missing = [key for key in scalar_keys if key not in state_dict]
        unknown = [
            key for key in state_dict
            if key not in scalar_keys
            and not (isinstance(key, str) and ":" in key and key.split(":", 1)[0] in self._slots)
        ]
        if missing or unknown:
            raise ValueError(
                f"{owner}.load_state_dict: state_dict does not fit a {owner}: missing keys "
                f"{missing}, unexpected keys {unknown} (allowed: {list(scalar_keys)} and "
                f"'<slot>:<param name>' with slot in {list(self._slots)})"
            )
        scalars = {key: _scalar(state_dict[key], key, owner) for key in scalar_keys}
        lr = check_float(scalars.pop("lr"), "lr", owner, low=0.0)
        step = check_int(scalars.pop("step"), "step", owner, minimum=0)
        new_state: dict[str, dict[str, Any]] = {}
        for key, value in state_dict.items():
            if key in scalar_keys:
                continue
            slot, name = key.split(":", 1)
            if slot == "step":
                value = check_int(_scalar(value, key, owner), key, owner, minimum=1)
            else:
                if not isinstance(value, np.ndarray) or value.dtype not in (np.float32, np.float64):
                    what = f"dtype {value.dtype}" if isinstance(
                        value, np.ndarray) else type(value).__name__
                    raise TypeError(
                        f"{owner}.load_state_dict: {key!r} must be a float32/float64 "
                        f"ndarray, got {what}")
                value = value.copy()
            new_state.setdefault(name, {})[slot] = value
        for name, state in new_state.items():
            if set(state) != set(self._slots):
                raise ValueError(
                    f"{owner}.load_state_dict: parameter {name!r} has state {sorted(state)}; "
                    f"expected all of {sorted(self._slots)}"
                )
        self._set_hyper(scalars)  # validates; raises before anything below changes
        self._lr = lr
        self.step_count = step
        self.state = new_state
        self._scratch = {}

    def config(self) -> dict:
        """JSON-able constructor arguments; ``type(self).from_config(config)`` rebuilds the
        optimizer."""
        return {"name": type(self).__name__, "lr": self._lr, **self._config_extra()}

    def _config_extra(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> Optimizer:
        config = dict(config)
        name = config.pop("name", cls.__name__)
        if name != cls.__name__:
            raise ValueError(
                f"{cls.__name__}.from_config: config is for {name!r}, not {cls.__name__!r}")
        lr = config.get("lr")
        if isinstance(lr, (int, float, np.integer,
                           np.floating)) and not isinstance(lr, bool) and lr == 0:
            # a schedule may anneal lr to exactly 0 (the setter allows it; the constructor wants >
            # 0): the config of such an optimizer, e.g. in the last checkpoint of a run, must still
            # load
            optimizer = cls(**{**config, "lr": 1.0})
            optimizer.lr = 0.0
            return optimizer
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with PyTorch's ``torch.optim.SGD`` semantics (no dampening).

    Per parameter ``w`` with gradient ``g``::

        g = g + weight_decay * w                 # L2 regularisation (if weight_decay > 0)
        if momentum > 0:
            v = g            at the first step, else   v = momentum * v + g
            g = g + momentum * v   if nesterov   else   g = v
        w = w - lr * g

    ``lr > 0``; ``momentum`` in ``[0, 1)``; ``nesterov=True`` needs ``momentum > 0``;
    ``weight_decay >= 0``.
    """

    _hyper_keys = ("momentum", "nesterov", "weight_decay")
    _slots = ("momentum_buffer",)

    def __init__(self, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        self._set_hyper({"momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay})

    def _set_hyper(self, values: dict[str, Any]) -> None:
        owner = type(self).__name__
        momentum = check_float(values["momentum"], "momentum", owner, low=0.0, high=1.0,
                               high_open=True)
        nesterov = values["nesterov"]
        # a bool, or 0/1 as state_dict() stores it
        if not isinstance(nesterov, (bool, np.bool_, int, np.integer)) or nesterov not in (0, 1):
            raise TypeError(f"{owner}: nesterov must be True or False, got {nesterov!r}")
        nesterov = bool(nesterov)
        if nesterov and momentum == 0.0:
            raise ValueError(
                f"{owner}: nesterov=True requires momentum in (0, 1), got momentum={momentum!r}")
        weight_decay = check_float(values["weight_decay"], "weight_decay", owner, low=0.0)
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def _config_extra(self) -> dict:
        return {"momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, state: dict) -> None:
        mu, wd = self.momentum, self.weight_decay
        need = 2 if (self.nesterov and wd) else 1
        bufs = self._buffers(name, p, need)
        s = bufs[0]
        d = g
        if wd:
            np.multiply(p, wd, out=s)
            np.add(g, s, out=s)  # g + wd * w
            d = s
        if mu:
            v = state.get("momentum_buffer")
            if v is None:
                v = state["momentum_buffer"] = np.empty_like(p)
                np.copyto(v, d)
            else:
                np.multiply(v, mu, out=v)
                np.add(v, d, out=v)
            if self.nesterov:
                t = bufs[1] if d is s else s
                np.multiply(v, mu, out=t)
                np.add(d, t, out=t)  # g + mu * v
                d = t
            else:
                d = v
        u = d if any(d is b for b in bufs) else s
        np.multiply(d, self._lr, out=u)
        np.subtract(p, u, out=p)


# error_model="numpy": a division by zero gives inf / nan as NumPy's does, instead of a check that
# raises and keeps the loop from vectorising (measured 0.82 -> 0.18 ms for 317,066 float32
# parameters, one thread, Intel Xeon)
@nb.njit(cache=True, nogil=True, error_model="numpy")
def _adam_kernel(p, g, m, v, b1, c1, b2, c2, root, eps, step_size, wd, decay):
    """Adam's update of flat ``p`` (and its moments ``m``, ``v``) from ``g``, element by element,
    each operation of ``Adam._update_numpy`` in its order and in the arrays' dtype (the scalars
    come rounded to it; no fused multiply-add), so the very bits of its NumPy passes: ``c1 = 1 -
    b1``, ``c2 = 1 - b2``, ``root = sqrt(1 - b2**t)``, ``step_size = lr / (1 - b1**t)``, ``decay``
    whether ``wd`` applies."""
    for i in range(p.shape[0]):
        d = g[i] + p[i] * wd if decay else g[i]
        mi = m[i] * b1 + d * c1
        vi = v[i] * b2 + d * d * c2
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - mi / (np.sqrt(vi) / root + eps) * step_size


class Adam(Optimizer):
    """Adam with PyTorch's ``torch.optim.Adam`` semantics (L2 weight decay added to the gradient,
    not AdamW; no amsgrad).

    Per parameter, with its own step count ``t`` (1 at its first update)::

        g = g + weight_decay * w
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        w = w - (lr / (1 - beta1**t)) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    ``lr > 0``; ``betas`` a pair in ``[0, 1)``; ``eps > 0``; ``weight_decay >= 0``.
    """

    _hyper_keys = ("beta1", "beta2", "eps", "weight_decay")
    _slots = ("exp_avg", "exp_avg_sq", "step")

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        owner = type(self).__name__
        if not isinstance(betas, (tuple, list, np.ndarray)) or len(betas) != 2:
            raise TypeError(
                f"{owner}: betas must be a pair (beta1, beta2) in [0, 1), got {betas!r}")
        self._set_hyper({"beta1": betas[0], "beta2": betas[1], "eps": eps,
                         "weight_decay": weight_decay})

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    def _set_hyper(self, values: dict[str, Any]) -> None:
        owner = type(self).__name__
        beta1 = check_float(values["beta1"], "betas[0]", owner, low=0.0, high=1.0, high_open=True)
        beta2 = check_float(values["beta2"], "betas[1]", owner, low=0.0, high=1.0, high_open=True)
        eps = check_float(values["eps"], "eps", owner, low=0.0, low_open=True)
        weight_decay = check_float(values["weight_decay"], "weight_decay", owner, low=0.0)
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay

    def _config_extra(self) -> dict:
        return {"betas": [self.beta1, self.beta2], "eps": self.eps,
                "weight_decay": self.weight_decay}

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, state: dict) -> None:
        if "step" not in state:
            state["exp_avg"] = np.zeros_like(p)
            state["exp_avg_sq"] = np.zeros_like(p)
            state["step"] = 0
        m, v = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        if g.dtype == p.dtype and all(a.flags.c_contiguous for a in (p, g, m, v)):
            self._update_compiled(p, g, m, v, state["step"])
        else:
            self._update_numpy(name, p, g, m, v, state["step"])

    def _update_compiled(self, p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray,
                         k: int) -> None:
        """``_update_numpy``'s arithmetic in one pass a flat slice (``_adam_kernel``), on the pool
        for large parameters."""
        b1, b2 = self.beta1, self.beta2
        f = p.dtype.type  # each constant rounded to the arrays' dtype, as NumPy's scalars are
        constants = (f(b1), f(1.0 - b1), f(b2), f(1.0 - b2), f(math.sqrt(1.0 - b2 ** k)),
                     f(self.eps), f(self._lr / (1.0 - b1 ** k)), f(self.weight_decay),
                     bool(self.weight_decay))
        flat = [a.reshape(-1) for a in (p, g, m, v)]
        _threads.parallel_map(lambda s: _adam_kernel(*(a[s] for a in flat), *constants),
                              flat_slices(p.size))

    def _update_numpy(self, name: str, p: np.ndarray, g: np.ndarray, m: np.ndarray,
                      v: np.ndarray, k: int) -> None:
        """The update in whole-array NumPy passes: the compiled pass's slow twin, and the path of
        arrays it does not take (a gradient of another dtype, a non-contiguous array)."""
        b1, b2, wd = self.beta1, self.beta2, self.weight_decay
        s, t = self._buffers(name, p, 2)
        d = g
        if wd:
            np.multiply(p, wd, out=s)
            np.add(g, s, out=s)
            d = s
        np.multiply(m, b1, out=m)
        np.multiply(d, 1.0 - b1, out=t)
        np.add(m, t, out=m)
        np.multiply(v, b2, out=v)
        np.multiply(d, d, out=t)
        np.multiply(t, 1.0 - b2, out=t)
        np.add(v, t, out=v)
        step_size = self._lr / (1.0 - b1 ** k)
        np.sqrt(v, out=t)
        np.divide(t, math.sqrt(1.0 - b2 ** k), out=t)
        np.add(t, self.eps, out=t)
        np.divide(m, t, out=t)
        np.multiply(t, step_size, out=t)
        np.subtract(p, t, out=p)


class LRScheduler:
    """Base class of the epoch-based schedules: ``lr = formula(last_epoch)`` written into the
    optimizer."""

    _hyper_keys: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__}: optimizer must be an Optimizer (SGD, Adam), got "
                f"{type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        self.optimizer.lr = self.get_lr()

    def get_lr(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def lr(self) -> float:
        """The learning rate for the current epoch (what the optimizer holds)."""
        return self.get_lr()

    def step(self) -> float:
        """Advance one epoch, write the new lr into the optimizer and return it."""
        self.last_epoch += 1
        lr = self.get_lr()
        self.optimizer.lr = lr
        return lr

    def state_dict(self) -> dict[str, float | int]:
        d: dict[str, float | int] = {"last_epoch": self.last_epoch, "base_lr": self.base_lr}
        d.update({key: getattr(self, key) for key in self._hyper_keys})
        return d

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` and write the restored lr into the optimizer."""
        owner = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"{owner}.load_state_dict: state_dict must be a dict, got "
                f"{type(state_dict).__name__}")
        keys = ("last_epoch", "base_lr", *self._hyper_keys)
        if set(state_dict) != set(keys):
            raise ValueError(
                f"{owner}.load_state_dict: expected keys {sorted(keys)}, got "
                f"{sorted(map(str, state_dict))}"
            )
        values = {key: _scalar(state_dict[key], key, owner) for key in keys}
        last_epoch = check_int(values.pop("last_epoch"), "last_epoch", owner, minimum=0)
        base_lr = check_float(values.pop("base_lr"), "base_lr", owner, low=0.0)
        self._set_hyper(values)
        self.last_epoch, self.base_lr = last_epoch, base_lr
        self.optimizer.lr = self.get_lr()

    def _set_hyper(self, values: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": type(self).__name__,
                **{key: getattr(self, key) for key in self._hyper_keys}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyper_keys)
        return (f"{type(self).__name__}({args}, base_lr={self.base_lr!r}, "
                f"last_epoch={self.last_epoch})")


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (last_epoch // step_size)`` (PyTorch's closed form).

    ``step_size`` an int >= 1, ``gamma`` a number in ``(0, inf)`` (usually < 1).
    """

    _hyper_keys = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self._set_hyper({"step_size": step_size, "gamma": gamma})
        super().__init__(optimizer)

    def _set_hyper(self, values: dict[str, Any]) -> None:
        owner = type(self).__name__
        self.step_size = check_int(values["step_size"], "step_size", owner, minimum=1)
        self.gamma = check_float(values["gamma"], "gamma", owner, low=0.0, low_open=True)

    def get_lr(self) -> float:
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from ``base_lr`` to ``eta_min`` over ``t_max`` epochs, after an optional
    linear warmup.

    With ``e = last_epoch``::

        e <  warmup:  lr = base_lr * (e + 1) / (warmup + 1)
        e >= warmup:  lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * (e - warmup) / t_max)) / 2

    With ``warmup=0`` (the default) this is exactly PyTorch's closed form, including what happens
    after ``t_max``: the cosine continues (the lr rises again), so set ``t_max`` to the number of
    epochs. The warmup ramps up to ``base_lr`` without ever being 0; the cosine phase then starts at
    ``base_lr`` and reaches ``eta_min`` at epoch ``warmup + t_max``.
    """

    _hyper_keys = ("t_max", "eta_min", "warmup")

    def __init__(self, optimizer: Optimizer, t_max: int, eta_min: float = 0.0,
                 warmup: int = 0) -> None:
        self._set_hyper({"t_max": t_max, "eta_min": eta_min, "warmup": warmup})
        super().__init__(optimizer)

    def _set_hyper(self, values: dict[str, Any]) -> None:
        owner = type(self).__name__
        self.t_max = check_int(values["t_max"], "t_max", owner, minimum=1)
        self.eta_min = check_float(values["eta_min"], "eta_min", owner, low=0.0)
        self.warmup = check_int(values["warmup"], "warmup", owner, minimum=0)

    def get_lr(self) -> float:
        e = self.last_epoch
        if e < self.warmup:
            return self.base_lr * (e + 1) / (self.warmup + 1)
        t = e - self.warmup
        return self.eta_min + (
            self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.t_max)) / 2
