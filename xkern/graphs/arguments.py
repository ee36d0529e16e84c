"""Argument checks shared by the graph constructions and diagnostics."""
import numbers

import numpy as np


def count(value, name, minimum=1):
    """value as an int >= minimum, else TypeError / ValueError naming the argument."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def generator(seed):
    """numpy Generator from None, an int, a SeedSequence or a Generator (returned as is)."""
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise TypeError(f"seed must be None, an int, a SeedSequence or a Generator, got {seed!r}") from None
