"""Input checks shared by the ops: bad input raises a clear error, never returns a wrong answer."""
import numbers

import numpy as np

FLOATS = (np.float32, np.float64)


def check_array(x, name="x", ndim=None, min_ndim=None):
    """Return ``x`` if it is a float32/float64 ndarray of the given rank, else raise."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.type not in FLOATS:
        raise TypeError(f"{name}: expected float32 or float64, got {x.dtype}")
    if ndim is not None and x.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise ValueError(f"{name}: expected rank {ndim}, got shape {x.shape}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name}: expected rank >= {min_ndim}, got shape {x.shape}")
    return x


def check_same_dtype(*pairs):
    """pairs of (name, array-or-None): all arrays must share one dtype."""
    arrays = [(n, a) for n, a in pairs if a is not None]
    dt = arrays[0][1].dtype
    for n, a in arrays[1:]:
        if a.dtype != dt:
            raise TypeError(f"{n}: dtype {a.dtype} differs from {arrays[0][0]}'s {dt}")


def pair(v, name="value"):
    """int or (int, int) -> (int, int), as torch accepts both."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v), int(v)
    if not isinstance(v, (tuple, list)) or not all(
            isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in v):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {v!r}")
    if len(v) != 2:
        raise ValueError(f"{name}: expected an int or a pair, got {tuple(v)}")
    return int(v[0]), int(v[1])


def positive_int(v, name):
    """An int >= 1 (not a bool), else TypeError / ValueError naming the argument."""
    if not isinstance(v, numbers.Integral) or isinstance(v, bool):
        raise TypeError(f"{name}: expected an int, got {v!r}")
    if v < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {v}")
    return int(v)
