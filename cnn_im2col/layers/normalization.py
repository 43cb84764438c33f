"""The normalisation layers: ``BatchNorm2D`` (batch statistics, running statistics as buffers)
and ``Normalization`` (fixed per-channel statistics, set by ``adapt``). Batch normalisation's
functional pair and kernels are ``cnn_im2col.normalization``'s."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..normalization import batch_norm2d, batch_norm2d_backward
from ..shapes import as_float_array, check_dout, check_float, check_int, check_nchw
from .base import Layer, _dtype_name


class BatchNorm2D(Layer):
    """Batch normalisation per channel of (N, C, H, W), PyTorch's ``BatchNorm2d`` in both modes.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``. Training (``forward(x, training=True)``):
    mean and BIASED variance of the batch over (N, H, W); with ``track_running_stats`` the running
    statistics become ``(1 - momentum) * running + momentum * batch`` with the UNBIASED batch
    variance (``momentum=None``: the cumulative average, factor 1 / num_batches_tracked). Eval: the
    running statistics, or the batch's when ``track_running_stats=False``.

    ``params``: ``weight`` (C,) = 1 and ``bias`` (C,) = 0 if ``affine``. ``buffers`` (PyTorch's
    names, saved in model files and checkpoints, not trained): ``running_mean`` (C,) = 0,
    ``running_var`` (C,) = 1, ``num_batches_tracked`` (int64, 0-d); empty without
    ``track_running_stats``. Data-parallel training normalises with each rank's own batch (as
    PyTorch DDP without SyncBatchNorm).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        name = "BatchNorm2D"
        num_features = check_int(num_features, "num_features", name, minimum=1)
        eps = check_float(eps, "eps", name, low=0.0, low_open=True)
        if momentum is not None:
            momentum = check_float(momentum, "momentum", name, low=0.0, high=1.0)
        for flag, value in (("affine", affine), ("track_running_stats", track_running_stats)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name}: {flag} must be True or False, got {value!r}")
        dtype_name = _dtype_name(dtype, name)
        self._remember(
            num_features=num_features,
            eps=eps,
            momentum=momentum,
            affine=bool(affine),
            track_running_stats=bool(track_running_stats),
            dtype=dtype_name,
        )
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        if affine:
            self.params["weight"] = np.ones(num_features, dtype=dtype_name)
            self.params["bias"] = np.zeros(num_features, dtype=dtype_name)
        self.buffers: dict[str, np.ndarray] = {}
        if track_running_stats:
            self.buffers = {
                "running_mean": np.zeros(num_features, dtype=dtype_name),
                "running_var": np.ones(num_features, dtype=dtype_name),
                "num_batches_tracked": np.array(0, dtype=np.int64),
            }
        self._dtype = np.dtype(dtype_name)
        self._zero_grads()

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3 or input_shape[0] != self.num_features:
            raise ValueError(
                f"{self!r}: input must be ({self.num_features}, H, W), got {tuple(input_shape)}"
            )
        return tuple(input_shape)

    def check_input(self, x: Any) -> np.ndarray:
        return as_float_array(x, "x", repr(self), ndim=4, dtype=self._dtype)

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def _make_plan(self, shape: tuple[int, ...]) -> bool:
        check_nchw(shape, self.num_features, repr(self))
        return True

    def run(self, x: np.ndarray, training: bool = False, relu: bool = False,
            skip: np.ndarray | None = None) -> np.ndarray:
        """``forward`` on checked input. ``skip`` (of the output's shape and this layer's dtype,
        C-contiguous): added to the output in the same pass (a Residual's shortcut, where its
        body ends here: ``blocks.run_joined``). ``relu=True``: ReLU of the output in the same
        pass (a fused BatchNorm2D -> ReLU, ``blocks.BatchNormReLU``, or a Residual -> ReLU), and
        ``backward`` then takes the gradient of that output (the ReLU's derivative applied
        inside)."""
        owner = repr(self)
        self.plan(x.shape)
        use_batch = training or not self.track_running_stats
        if use_batch and x.shape[0] * x.shape[2] * x.shape[3] < 2:
            raise ValueError(
                f"{owner}: batch statistics need more than 1 value per channel (N*H*W >= 2), "
                f"got x of shape {x.shape}"
            )
        mean = var = None
        if not use_batch:
            mean = self.buffers["running_mean"].astype(np.float64)
            var = self.buffers["running_var"].astype(np.float64)
            if (var < 0).any():
                raise ValueError(f"{owner}: var must be >= 0, got min {var.min()}")
        x = np.ascontiguousarray(x, dtype=self._dtype)
        out, self._cache, mean, var = batch_norm2d(
            x, self.params.get("weight"), self.params.get("bias"), mean, var, self.eps, owner, relu,
            skip
        )
        if training and self.track_running_stats:
            self._update_running(mean, var, x.shape[0] * x.shape[2] * x.shape[3])
        return out

    def _update_running(self, mean: np.ndarray, var: np.ndarray, count: int) -> None:
        """In place (the arrays are the ones model files and state_dict hold)."""
        tracked = self.buffers["num_batches_tracked"]
        tracked += 1
        factor = 1.0 / float(tracked) if self.momentum is None else self.momentum
        for key, batch in (("running_mean", mean), ("running_var", var * (count / (count - 1)))):
            running = self.buffers[key]
            running[...] = (1.0 - factor) * running + factor * batch

    def backward(self, dout: Any) -> np.ndarray:
        dx, dweight, dbias = batch_norm2d_backward(dout, self._cached())
        if self.affine:
            self.grads["weight"], self.grads["bias"] = dweight, dbias
        return dx


class Normalization(Layer):
    """Per-channel standardisation, Keras's ``Normalization``: ``y = (x - mean) / std`` over axis
    1 of (N, C, ...) inputs, with ``mean`` and ``std`` (shape (C,)) as ``buffers`` (saved in
    model files and ``state_dict``, not trained). :meth:`adapt` sets them from training data, so
    a model that starts with this layer takes raw [0, 1] images and applies exactly the
    statistics it was trained with (``cnn-im2col train`` puts one first). Initially mean 0,
    std 1: the identity."""

    def __init__(self, channels: int, dtype: Any = np.float32) -> None:
        super().__init__()
        name = "Normalization"
        channels = check_int(channels, "channels", name, minimum=1)
        dtype_name = _dtype_name(dtype, name)
        self._remember(channels=channels, dtype=dtype_name)
        self.channels, self._dtype = channels, np.dtype(dtype_name)
        self.buffers = {"mean": np.zeros(channels, dtype_name),
                        "std": np.ones(channels, dtype_name)}

    def adapt(self, x: Any) -> Normalization:
        """Set ``mean`` and ``std`` to those of each channel of ``x`` (N, C, ...) (population
        std; a channel with std 0 keeps std 1); returns the layer."""
        x = self.check_input(x)
        axes = (0, *range(2, x.ndim))
        mean = x.mean(axis=axes, dtype=np.float64)
        std = x.std(axis=axes, dtype=np.float64)
        self.buffers["mean"][...] = mean
        self.buffers["std"][...] = np.where(std > 0, std, 1.0)
        return self

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if not input_shape or input_shape[0] != self.channels:
            raise ValueError(f"{self!r}: input must have {self.channels} channels first, got "
                             f"{tuple(input_shape)}")
        return tuple(input_shape)

    def check_input(self, x: Any) -> np.ndarray:
        x = as_float_array(x, "x", repr(self), dtype=self._dtype)
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise ValueError(f"{self!r}: x must be (N, {self.channels}, ...), got shape {x.shape}")
        return x

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        return self.run(self.check_input(x), training)

    def _scale(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        shape = (1, self.channels) + (1,) * (ndim - 2)
        return self.buffers["mean"].reshape(shape), self.buffers["std"].reshape(shape)

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        mean, std = self._scale(x.ndim)
        self._cache = x.shape
        return (x - mean) / std

    def backward(self, dout: Any) -> np.ndarray:
        shape = self._cached()
        dout = check_dout(dout, shape, self._dtype, repr(self))
        return dout / self._scale(len(shape))[1]
