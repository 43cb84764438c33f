"""PyTorch modules of the same structure and ``state_dict`` names as the engine's layers, for the
benchmarks and tests that compare the two (torchvision does not load with the CPU torch used here;
its ResNet and MobileNetV2 are these layers in this order). ``torch_twin(layer, torch)`` maps
``Sequential``, ``Residual``, ``Conv2D``, ``BatchNorm2D``, ``Dense``, ``ReLU``, ``ReLU6``,
``GlobalAvgPool2D``, ``Flatten`` and ``Dropout`` (the architectures' layers)."""

from __future__ import annotations

from typing import Any


def torch_twin(layer: Any, torch: Any) -> Any:
    """The ``torch.nn.Module`` mirroring ``layer`` (its own initial weights: load ours with
    ``load_state_dict(..., strict=True)`` for the same numbers)."""
    from cnn_im2col.containers import Residual
    from cnn_im2col.layers import (
        BatchNorm2D,
        Conv2D,
        Dense,
        Dropout,
        Flatten,
        GlobalAvgPool2D,
        ReLU,
        ReLU6,
    )
    from cnn_im2col.model import Sequential

    nn = torch.nn

    class ResidualTwin(nn.Module):
        def __init__(self, body: Any, shortcut: Any) -> None:
            super().__init__()
            self.body = body
            self.shortcut = shortcut

        def forward(self, x: Any) -> Any:
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    class GlobalAvgPoolTwin(nn.Module):
        def forward(self, x: Any) -> Any:
            return x.mean(dim=(2, 3))

    if isinstance(layer, Sequential):
        return nn.Sequential(*[torch_twin(child, torch) for child in layer])
    if isinstance(layer, Residual):
        shortcut = None if layer.shortcut is None else torch_twin(layer.shortcut, torch)
        return ResidualTwin(torch_twin(layer.body, torch), shortcut)
    if isinstance(layer, Conv2D):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                         layer.stride, layer.padding, groups=layer.groups,
                         bias="bias" in layer.params)
    if isinstance(layer, BatchNorm2D):
        return nn.BatchNorm2d(layer.num_features)
    if isinstance(layer, Dense):
        return nn.Linear(layer.in_features, layer.out_features)
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.p)
    simple = {ReLU: nn.ReLU, ReLU6: nn.ReLU6, GlobalAvgPool2D: GlobalAvgPoolTwin,
              Flatten: nn.Flatten}
    return simple[type(layer)]()
