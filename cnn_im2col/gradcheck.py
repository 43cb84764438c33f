"""Finite-difference gradient checks in float64, used by the whole test suite.

- :func:`numerical_gradient` — central differences of a scalar ``f()`` with respect to an array
  ``x``, perturbing ``x`` in place one element at a time (any strides, any memory order) and
  restoring it bit for bit.
- :func:`directional_derivative_check` — compares ``<analytic, v>`` with
  ``(f(x + eps v) - f(x - eps v)) / (2 eps)`` along one random unit vector ``v``: two evaluations
  of ``f`` however big ``x`` is.
- :func:`check_layer` — any object with the layer protocol (``forward(x, training)``,
  ``backward(dout) -> dx``, ``params`` / ``grads`` dicts). It uses the scalar loss
  ``L = sum(forward(x) * R)`` for a fixed random ``R``, so ``backward(R)`` returns ``dL/dx`` and
  fills ``dL/dparam``; each is compared with the finite differences.
- :func:`check_loss` — the loss protocol (``forward(pred, target) -> float``,
  ``backward() -> dpred``).
- :func:`check_function` — a stateless ``forward(x) -> y`` / ``backward(dout) -> dx`` pair.

Comparison: an element passes if ``|a - n| <= max(atol, rtol * max(|a|, |n|))`` where ``a`` is the
analytic and ``n`` the numerical value; its relative error is
``|a - n| / max(|a|, |n|, atol / rtol)``, so an array passes exactly when its max relative error is
<= ``rtol``. The checks return these max relative errors per array and raise
:class:`GradientCheckError` (an ``AssertionError``) naming each failing array with its max absolute
and relative errors and where they occur.

Everything must be float64 (``x``, the parameters, ``pred``): finite differences in float32 are too
noisy to say anything, so float32 is a ``TypeError`` rather than a flaky check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .init import make_rng
from .shapes import check_float

__all__ = [
    "GradientCheckError",
    "check_function",
    "check_layer",
    "check_loss",
    "directional_derivative_check",
    "numerical_gradient",
]


class GradientCheckError(AssertionError):
    """An analytic gradient disagrees with finite differences. ``errors`` maps array name -> max rel
    error."""

    def __init__(self, message: str, errors: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.errors = dict(errors or {})


def _require_float64(x: Any, name: str, owner: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{owner}: {name} must be a float64 ndarray, got {type(x).__name__}")
    if x.dtype != np.float64:
        raise TypeError(
            f"{owner}: {name} must be float64 for a gradient check, got dtype {x.dtype}")
    return x


def _tolerances(eps: float, rtol: float, atol: float, owner: str) -> tuple[float, float, float]:
    return (
        check_float(eps, "eps", owner, low=0.0, low_open=True),
        check_float(rtol, "rtol", owner, low=0.0, low_open=True),
        check_float(atol, "atol", owner, low=0.0),
    )


def numerical_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of the scalar ``f()`` with respect to ``x`` (float64, writeable).

    ``g[i] = (f() with x[i] += eps  -  f() with x[i] -= eps) / (2 eps)``; ``x`` is modified in
    place one element at a time and always restored exactly (also if ``f`` raises). ``f`` must read
    ``x`` itself (not a copy). Costs ``2 * x.size`` calls of ``f``. Returns a C-ordered array of
    ``x``'s shape.
    """
    owner = "numerical_gradient"
    _require_float64(x, "x", owner)
    if not x.flags.writeable:
        raise ValueError(
            f"{owner}: x must be writeable (it is perturbed in place), got a read-only array")
    eps = check_float(eps, "eps", owner, low=0.0, low_open=True)
    grad = np.zeros(x.shape, dtype=np.float64)
    for idx in np.ndindex(*x.shape):
        old = x[idx]
        try:
            x[idx] = old + eps
            fp = float(f())
            x[idx] = old - eps
            fm = float(f())
        finally:
            x[idx] = old
        grad[idx] = (fp - fm) / (2.0 * eps)
    return grad


def _direction(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(shape)
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def _directional(f: Callable[[], float], x: np.ndarray, v: np.ndarray, eps: float) -> float:
    saved = x.copy()
    try:
        np.add(saved, eps * v, out=x)
        fp = float(f())
        np.subtract(saved, eps * v, out=x)
        fm = float(f())
    finally:
        np.copyto(x, saved)
    return (fp - fm) / (2.0 * eps)


def _rel(err: np.ndarray, a: np.ndarray, n: np.ndarray, floor: float) -> np.ndarray:
    """``err / max(|a|, |n|, floor)``; 0 where the scale is 0 (then ``a == n == 0`` and
    ``err == 0``)."""
    scale = np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)
    return err / np.where(scale == 0, 1.0, scale)


def directional_derivative_check(f: Callable[[], float], x: np.ndarray, analytic_grad: np.ndarray,
                                 rng: Any = None, eps: float = 1e-6, rtol: float = 1e-5,
                                 atol: float = 1e-7, name: str = "x") -> float:
    """Check ``analytic_grad`` (of ``f`` w.r.t. ``x``) along one random unit direction ``v``.

    Compares ``a = <analytic_grad, v>`` with ``n = (f(x + eps v) - f(x - eps v)) / (2 eps)``; ``x``
    is restored exactly afterwards. ``rng``: Generator / int seed; ``None`` means seed 0 (a test
    helper should be deterministic). Returns the relative error
    ``|a - n| / max(|a|, |n|, atol / rtol)``; raises :class:`GradientCheckError` if it exceeds
    ``rtol``.
    """
    owner = "directional_derivative_check"
    _require_float64(x, "x", owner)
    if not x.flags.writeable:
        raise ValueError(
            f"{owner}: x must be writeable (it is perturbed in place), got a read-only array")
    analytic_grad = np.asarray(analytic_grad, dtype=np.float64)
    if analytic_grad.shape != x.shape:
        raise ValueError(
            f"{owner}: analytic_grad has shape {analytic_grad.shape} but x has shape {x.shape}")
    eps, rtol, atol = _tolerances(eps, rtol, atol, owner)
    v = _direction(x.shape, make_rng(0 if rng is None else rng))
    n = _directional(f, x, v, eps)
    a = float(np.sum(analytic_grad * v))
    err = abs(a - n)
    rel = float(_rel(np.array(err), np.array(a), np.array(n), atol / rtol))
    if rel > rtol:
        raise GradientCheckError(
            f"gradient check failed for {name!r} along a random direction: analytic <grad, v> = "
            f"{a:.10g}, numerical = {n:.10g}, abs error {err:.3g}, relative error {rel:.3g} "
            f"(rtol={rtol:g}, atol={atol:g}, eps={eps:g})",
            {name: rel},
        )
    return rel


def _compare(name: str, analytic: np.ndarray, numeric: np.ndarray, rtol: float,
             atol: float) -> tuple[float, str | None]:
    """Max relative error of one array, and a failure description if it exceeds rtol."""
    err = np.abs(analytic - numeric)
    rel = _rel(err, analytic, numeric, atol / rtol)
    max_rel = float(rel.max()) if rel.size else 0.0
    if max_rel <= rtol:
        return max_rel, None
    i_abs = np.unravel_index(int(np.argmax(err)), err.shape)
    i_rel = np.unravel_index(int(np.argmax(rel)), rel.shape)

    def at(i: tuple) -> str:
        index = tuple(int(j) for j in i)
        return f"at index {index} (analytic {analytic[i]:.8g}, numerical {numeric[i]:.8g})"

    bad = int(np.count_nonzero(rel > rtol))
    return max_rel, (
        f"{name!r}: max abs error {float(err[i_abs]):.3g} {at(i_abs)}; max relative error "
        f"{max_rel:.3g} {at(i_rel)}; {bad} of {rel.size} elements out of tolerance"
    )


def _run_checks(f: Callable[[], float], arrays: dict[str, np.ndarray],
                analytic: dict[str, np.ndarray],
                eps: float, rtol: float, atol: float, directional: bool, rng: np.random.Generator,
                owner: str) -> dict[str, float]:
    errors: dict[str, float] = {}
    failures: list[str] = []
    for name, arr in arrays.items():
        if directional:
            v = _direction(arr.shape, rng)
            n = _directional(f, arr, v, eps)
            a = float(np.sum(analytic[name] * v))
            err = abs(a - n)
            rel = float(_rel(np.array(err), np.array(a), np.array(n), atol / rtol))
            failure = None if rel <= rtol else (
                f"{name!r} along a random unit direction v: analytic <grad, v> = {a:.10g}, "
                f"numerical {n:.10g}; abs error {err:.3g}, relative error {rel:.3g}"
            )
        else:
            numeric = numerical_gradient(f, arr, eps)
            rel, failure = _compare(name, analytic[name], numeric, rtol, atol)
        errors[name] = rel
        if failure:
            failures.append(failure)
    if failures:
        raise GradientCheckError(
            f"{owner}: gradient check failed (rtol={rtol:g}, atol={atol:g}, eps={eps:g}):\n  "
            + "\n  ".join(failures),
            errors,
        )
    return errors


def check_layer(layer: Any, x: np.ndarray, seed: int = 0, eps: float = 1e-6, rtol: float = 1e-5,
                atol: float = 1e-7, directional: bool = False,
                training: bool = False) -> dict[str, float]:
    """Gradient-check a layer's ``backward`` (``dx`` and every ``grads[name]``) in float64.

    ``L = sum(layer.forward(x, training) * R)`` with ``R`` standard normal from ``seed``; the
    analytic gradients are ``layer.backward(R)`` and ``layer.grads`` right after one forward at the
    unperturbed point. ``x`` is perturbed in place and restored (so its strides are what the layer
    sees); a read-only ``x`` is copied first. ``x`` and every parameter must be float64
    (``TypeError`` otherwise). With ``directional=True`` each array is checked along one random
    direction instead of element by element (two forwards per array instead of ``2 * size``).

    Returns ``{"x": max_rel_err, "<param>": max_rel_err, ...}``; raises :class:`GradientCheckError`
    listing every array out of tolerance.
    """
    owner = f"check_layer({type(layer).__name__})"
    eps, rtol, atol = _tolerances(eps, rtol, atol, owner)
    _require_float64(x, "x", owner)
    if not x.flags.writeable:
        x = x.copy()
    params = dict(getattr(layer, "params", {}) or {})
    for name, p in params.items():
        _require_float64(p, f"params[{name!r}]", owner)
    rng = make_rng(seed)

    y = layer.forward(x, training=training)
    if not isinstance(y, np.ndarray):
        raise GradientCheckError(f"{owner}: forward returned {type(y).__name__}, not an ndarray")
    r = rng.standard_normal(y.shape)
    dx = layer.backward(r.copy())
    grads = getattr(layer, "grads", {}) or {}
    if not isinstance(dx, np.ndarray) or dx.shape != x.shape:
        got = dx.shape if isinstance(dx, np.ndarray) else type(dx).__name__
        raise GradientCheckError(
            f"{owner}: backward returned dx of shape {got}; expected x's shape {x.shape}")
    if set(grads) != set(params):
        raise GradientCheckError(
            f"{owner}: grads has keys {sorted(grads)} but params has keys {sorted(params)}")
    analytic = {"x": np.array(dx, dtype=np.float64)}
    for name, p in params.items():
        g = grads[name]
        if not isinstance(g, np.ndarray) or g.shape != p.shape:
            got = g.shape if isinstance(g, np.ndarray) else type(g).__name__
            raise GradientCheckError(
                f"{owner}: grads[{name!r}] has shape {got}; expected {p.shape}")
        analytic[name] = np.array(g, dtype=np.float64)  # copy: the layer may reuse its buffers

    def loss() -> float:
        return float(np.sum(layer.forward(x, training=training) * r))

    return _run_checks(loss, {"x": x, **params}, analytic, eps, rtol, atol, directional, rng, owner)


def check_loss(loss: Any, pred: np.ndarray, target: Any, seed: int = 0, eps: float = 1e-6,
               rtol: float = 1e-5, atol: float = 1e-7,
               directional: bool = False) -> dict[str, float]:
    """Gradient-check ``loss.backward()`` against finite differences of
    ``loss.forward(pred, target)``.

    ``pred`` must be float64; it is perturbed in place and restored. Returns
    ``{"pred": max_rel_err}``; raises :class:`GradientCheckError` if out of tolerance. ``seed`` only
    matters with ``directional``.
    """
    owner = f"check_loss({type(loss).__name__})"
    eps, rtol, atol = _tolerances(eps, rtol, atol, owner)
    _require_float64(pred, "pred", owner)
    if not pred.flags.writeable:
        pred = pred.copy()
    loss.forward(pred, target)
    d = loss.backward()
    if not isinstance(d, np.ndarray) or d.shape != pred.shape:
        got = d.shape if isinstance(d, np.ndarray) else type(d).__name__
        raise GradientCheckError(
            f"{owner}: backward returned shape {got}; expected pred's shape {pred.shape}")
    analytic = {"pred": np.array(d, dtype=np.float64)}

    def f() -> float:
        return float(loss.forward(pred, target))

    return _run_checks(f, {"pred": pred}, analytic, eps, rtol, atol, directional, make_rng(seed),
                       owner)


class _FunctionLayer:
    """Adapts a stateless forward/backward pair to the layer protocol (no parameters)."""

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray],
                 backward: Callable[[np.ndarray], np.ndarray]) -> None:
        self._forward, self._backward = forward, backward
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self._forward(x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return self._backward(dout)


def check_function(forward: Callable[[np.ndarray], np.ndarray],
                   backward: Callable[[np.ndarray], np.ndarray],
                   x: np.ndarray, seed: int = 0, eps: float = 1e-6, rtol: float = 1e-5,
                   atol: float = 1e-7,
                   directional: bool = False) -> dict[str, float]:
    """Gradient-check a stateless pair: ``forward(x) -> y`` and ``backward(dout) -> dx``.

    ``backward`` is called once, right after ``forward(x)`` at the unperturbed ``x``, so it may
    use whatever that call cached (e.g. a closure over a ``cache`` variable). Same rules and return
    value as :func:`check_layer` (key ``"x"``).
    """
    return check_layer(_FunctionLayer(forward, backward), x, seed=seed, eps=eps, rtol=rtol,
                       atol=atol,
                       directional=directional)
