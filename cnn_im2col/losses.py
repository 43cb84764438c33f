"""Loss functions: a fused, numerically stable softmax cross-entropy and the quadratic cost.

Loss protocol (what :class:`~cnn_im2col.model.Sequential` and
:func:`~cnn_im2col.gradcheck.check_loss` rely on)::

    loss.forward(pred, target) -> float     # the mean loss over the batch, a Python float
    loss.backward() -> dpred                # dL/dpred, same shape and dtype as pred
    loss.config() -> dict                   # JSON-able; type(loss).from_config(config) rebuilds it
    loss.sample_losses() -> (N,) float64    # optional: each sample's loss (for sample weights)

``backward()`` uses what the last ``forward()`` cached; calling it first raises ``RuntimeError``.
Both losses average over the batch like PyTorch's defaults (``reduction="mean"``), so the
learning rate does not have to change with the batch size.

Targets
-------
Both losses accept either integer class labels of shape ``(N,)`` (values in ``[0, K)``, any integer
dtype, or floats holding whole numbers) or a dense target of the same shape as ``pred``. For
:class:`SoftmaxCrossEntropy` a dense target must hold probability rows (non-negative, each row
summing to 1, e.g. one-hot or label-smoothed). For :class:`MeanSquaredError` integer labels are
one-hot encoded first, which is the primer's setting (sigmoid outputs against one-hot digits).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .shapes import as_float_array

__all__ = ["MeanSquaredError", "SoftmaxCrossEntropy"]


def _labels(target: Any, n: int, k: int, owner: str) -> np.ndarray:
    """Validate 1-D class labels for a batch of ``n`` rows and ``k`` classes; return them as "
    "intp."""
    kind = target.dtype.kind
    if kind == "b" or kind not in "iuf":
        raise TypeError(
            f"{owner}: target labels must be integers in [0, {k}) (an integer array of shape "
            f"({n},)), got dtype {target.dtype}"
        )
    if target.shape[0] != n:
        raise ValueError(
            f"{owner}: target has {target.shape[0]} labels (shape {target.shape}) but pred/logits "
            f"has batch size {n}; they must match"
        )
    if n == 0:
        raise ValueError(f"{owner}: target must not be empty, got shape {target.shape}")
    if kind == "f":
        bad = ~np.isfinite(target) | (target != np.round(target))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{owner}: target labels must be whole numbers in [0, {k}), got "
                f"{target[i].item()!r} at index {i}"
            )
    bad = (target < 0) | (target >= k)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{owner}: target labels must be in [0, {k}) for {k} classes, got {target[i].item()!r} "
            f"at index {i}"
        )
    return target.astype(np.intp)


def _as_target_array(target: Any, owner: str) -> np.ndarray:
    """Turn ``target`` into an ndarray, rejecting non-numeric kinds with TypeError."""
    if not isinstance(target, np.ndarray):
        try:
            target = np.asarray(target)
        except (ValueError, TypeError) as exc:
            raise TypeError(
                f"{owner}: target must be a numeric array, got {type(target).__name__}: {exc}"
            ) from None
    if target.dtype.kind not in "biuf":
        raise TypeError(
            f"{owner}: target must be a real numeric array (integer labels or float rows), got "
            f"dtype {target.dtype}"
        )
    return target


class _Loss:
    """Shared plumbing: config, repr and the backward-before-forward guard."""

    def __init__(self) -> None:
        self._cache: tuple | None = None

    def _require_forward(self) -> tuple:
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}: backward() called before forward(); call forward(pred, "
                "target) first"
            )
        return self._cache

    def config(self) -> dict:
        """JSON-able description; ``type(self).from_config(config)`` rebuilds an equal loss."""
        return {"name": type(self).__name__}

    @classmethod
    def from_config(cls, config: dict) -> _Loss:
        name = config.get("name", cls.__name__) if isinstance(config, dict) else None
        if name != cls.__name__:
            raise ValueError(
                f"{cls.__name__}.from_config: config must be {{'name': {cls.__name__!r}}}, "
                f"got {config!r}"
            )
        return cls()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def sample_losses(self) -> np.ndarray:
        """The last ``forward``'s loss of each sample, float64 ``(N,)``: its mean is the value
        ``forward`` returned (``fit(sample_weight=...)`` weighs these)."""
        self._require_forward()
        return self._per_sample

    def __call__(self, pred: Any, target: Any) -> float:
        return self.forward(pred, target)

    def forward(self, pred: Any, target: Any) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class SoftmaxCrossEntropy(_Loss):
    """Softmax followed by cross-entropy, fused:
    ``L = -(1/N) sum_n sum_k t[n,k] log softmax(z)[n,k]``.

    ``forward(logits, target)``: ``logits`` is ``(N, K)`` float32/float64 (other real dtypes are
    converted to float32); ``target`` is integer labels ``(N,)`` in ``[0, K)`` or probability rows
    ``(N, K)``. The log-softmax is computed with the log-sum-exp shift (``z - max(z)``), so logits
    of any finite magnitude (e.g. +-1e4) give the exact loss without overflow, NaN or warnings;
    terms that underflow to 0 in ``exp`` are exactly 0 in the result. Returns the batch mean as a
    float (accumulated in float64).

    ``backward()`` returns ``dL/dlogits = (softmax(z) * sum_k t - t) / N`` in the logits' dtype,
    which is ``(softmax(z) - onehot) / N`` for labels and for probability rows.

    After ``forward``, ``self.probabilities`` holds ``softmax(logits)`` (``(N, K)``, logits' dtype),
    e.g. for accuracy: ``(loss.probabilities.argmax(1) == labels).mean()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.probabilities: np.ndarray | None = None

    def forward(self, logits: Any, target: Any) -> float:
        owner = type(self).__name__
        logits = as_float_array(logits, "logits", owner, ndim=2)
        n, k = logits.shape
        target = _as_target_array(target, owner)
        if target.ndim == 1:
            labels = _labels(target, n, k, owner)
            dense = None
        elif target.ndim == 2:
            if target.shape != logits.shape:
                raise ValueError(
                    f"{owner}: target rows must have the shape of logits {logits.shape}, got shape "
                    f"{target.shape}"
                )
            dense = np.array(as_float_array(target, "target", owner, ndim=2, dtype=logits.dtype))
            tol = 1e-6 if logits.dtype == np.float64 else 1e-3
            if (dense < 0).any():
                idx = np.unravel_index(int(np.argmax(dense < 0)), dense.shape)
                raise ValueError(
                    f"{owner}: target rows must be probabilities (non-negative, rows summing to "
                    f"1), got {dense[idx].item()!r} at index {tuple(int(i) for i in idx)}"
                )
            sums = dense.sum(axis=1, dtype=np.float64)
            bad = np.abs(sums - 1.0) > tol
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"{owner}: target rows must be probabilities summing to 1 (within {tol:g}), "
                    f"got row {i} summing to {float(sums[i])!r}"
                )
            labels = None
        else:
            raise ValueError(
                f"{owner}: target must be labels of shape ({n},) or probability rows of shape "
                f"({n}, {k}), got {target.ndim}-D array of shape {target.shape}"
            )

        shifted = logits - logits.max(axis=1, keepdims=True)  # new array, <= 0, max entry exactly 0
        with np.errstate(under="ignore"):  # exp(-large) -> 0 is the correctly rounded answer
            exp = np.exp(shifted)
        sumexp = exp.sum(axis=1, keepdims=True)  # in [1, K]: never 0, never overflows
        log_z = np.log(sumexp)
        exp /= sumexp
        self.probabilities = exp
        if labels is not None:
            per_sample = -(shifted[np.arange(n), labels] - log_z[:, 0]).astype(np.float64)
        else:
            shifted -= log_z  # log-softmax, finite
            per_sample = -np.sum(dense * shifted, axis=1, dtype=np.float64)
        total = np.sum(per_sample)
        self._per_sample = per_sample
        self._cache = (labels, dense, n)
        return float(total / n)

    def backward(self) -> np.ndarray:
        labels, dense, n = self._require_forward()
        p = self.probabilities
        if labels is not None:
            grad = p.copy()
            grad[np.arange(n), labels] -= 1
        else:
            grad = p * dense.sum(axis=1, keepdims=True)
            grad -= dense
        grad /= n
        return grad


class MeanSquaredError(_Loss):
    """The primer's quadratic cost, normalised like PyTorch's ``MSELoss()``: the mean over all
    elements.

    ``L = mean((pred - target)**2)`` over every element of ``pred`` (batch and features alike), and
    ``backward()`` returns ``dL/dpred = 2 (pred - target) / pred.size`` in ``pred``'s dtype.

    The primer (after Nielsen) uses ``C = 1/(2N) sum_n ||a_n - y_n||**2`` whose gradient per sample
    is ``a - y``; for ``pred`` of shape ``(N, K)`` that is ``C = (K / 2) * L``, so the two differ
    only by the constant factor ``K/2`` (fold it into the learning rate to reproduce the primer).

    ``pred`` may have any shape ``(N, ...)``; ``target`` has the same shape, or, for a 2-D ``pred``
    of shape ``(N, K)``, integer class labels ``(N,)`` in ``[0, K)`` which are one-hot encoded.
    """

    def forward(self, pred: Any, target: Any) -> float:
        owner = type(self).__name__
        pred = as_float_array(pred, "pred", owner)
        target = _as_target_array(target, owner)
        if pred.ndim == 2 and target.ndim == 1:
            n, k = pred.shape
            labels = _labels(target, n, k, owner)
            dense = np.zeros(pred.shape, dtype=pred.dtype)
            dense[np.arange(n), labels] = 1
        elif target.shape == pred.shape:
            dense = as_float_array(target, "target", owner, dtype=pred.dtype)
        else:
            extra = f" or labels of shape ({pred.shape[0]},)" if pred.ndim == 2 else ""
            raise ValueError(
                f"{owner}: target must have the shape of pred {pred.shape}{extra}, got shape "
                f"{target.shape}"
            )
        diff = pred - dense
        self._per_sample = np.mean(
            np.square(diff, dtype=np.float64).reshape(diff.shape[0], -1), axis=1
        )
        self._cache = (diff,)
        return float(np.sum(np.square(diff), dtype=np.float64) / diff.size)

    def backward(self) -> np.ndarray:
        (diff,) = self._require_forward()
        return diff * diff.dtype.type(2.0 / diff.size)
