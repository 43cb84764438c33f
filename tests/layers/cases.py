"""What the layers' tests share: inputs without ties, random parameters."""

import numpy as np

F64 = np.float64


def distinct_values(shape, seed=0):
    """Standard-normal-sized values with no ties (max pooling has a unique winner per window)."""
    size = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(size) / size - 0.5).reshape(shape) * 4


def randomise_params(layer, seed=1):
    rng = np.random.default_rng(seed)
    for value in layer.params.values():
        value[...] = rng.standard_normal(value.shape)
