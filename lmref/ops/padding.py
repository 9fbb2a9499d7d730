"""Padding: ``pad`` with torch's modes "constant", "reflect" and "replicate".

Source: ``torch.nn.functional.pad`` (the pad tuple runs from the last dimension backwards:
(left, right) of the last, then (top, bottom) of the one before, ...) and its CPU kernels
(``aten/src/ATen/native/PadNd.cpp``, ``ReflectionPad.cpp``, ``ReplicationPadding.cpp``).
"""
import numbers

import numpy as np

from ..trace import op
from ._check import check_array

__all__ = ["pad"]

PAD_MODES = ("constant", "reflect", "replicate")


def _pad_args(x, pad, mode, value):
    """Checks; returns [(before, after)] for every dimension of x, first to last."""
    check_array(x)
    if mode not in PAD_MODES:
        raise ValueError(f"pad: mode must be one of {PAD_MODES}, got {mode!r}")
    if (not isinstance(pad, (tuple, list)) or len(pad) % 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pad)):
        raise TypeError(f"pad: expected a tuple of an even number of ints, got {pad!r}")
    k = len(pad) // 2                                            # dimensions padded, from the last
    if k > x.ndim:
        raise ValueError(f"pad: {len(pad)} values pad {k} dimensions, x {x.shape} has {x.ndim}")
    if mode != "constant":
        if not 1 <= k <= 3 or x.ndim not in (k + 1, k + 2):
            raise ValueError(f"pad: {mode} pads the last 1-3 dimensions of an input with 1 or 2 more "
                             f"(batch, channel), got pad {tuple(pad)} for x {x.shape}")
        if value is not None:
            raise ValueError(f"pad: value is only for mode='constant', got {value!r}")
    widths = [(0, 0)] * (x.ndim - k) + [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in reversed(range(k))]
    for n, (a, b) in zip(x.shape, widths):
        if mode != "constant" and min(a, b) < 0:
            raise ValueError(f"pad: {mode} padding must be >= 0, got {tuple(pad)}")
        if mode == "reflect" and max(a, b) >= n:
            raise ValueError(f"pad: reflect padding {tuple(pad)} must be smaller than the padded size {n} "
                             f"(x {x.shape})")
        if mode == "replicate" and max(a, b) > 0 and n == 0:
            raise ValueError(f"pad: cannot replicate an empty dimension of x {x.shape}")
        if n + a + b < 0:
            raise ValueError(f"pad: padding {tuple(pad)} leaves a negative size for x {x.shape}")
    return widths


@op
def pad(x, pad, mode="constant", value=None):
    """``torch.nn.functional.pad``: x [*] -> [*] with dimension d grown by before_d + after_d.

    pad = (before_last, after_last, before_second_last, after_second_last, ...), ints.
    "constant":  the new border holds ``value`` (None: 0); a negative width crops instead.
    "reflect":   mirrored about the edge pixel, which is not repeated: [a b c d], 2 -> [c b | a b c d];
                 each width must be smaller than that size.
    "replicate": the edge pixel repeated: [a b c d], 2 -> [a a | a b c d].
    reflect / replicate pad the last 1-3 dimensions of an input with 1 or 2 more (as torch), widths >= 0.
    """
    widths = _pad_args(x, pad, mode, value)
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")                 # numpy's "reflect" leaves the edge out too
    if mode == "replicate":
        return np.pad(x, widths, mode="edge")
    grown = [(max(a, 0), max(b, 0)) for a, b in widths]          # negative widths crop after padding
    y = np.pad(x, grown, mode="constant", constant_values=x.dtype.type(0 if value is None else value))
    crop = tuple(slice(max(-a, 0), y.shape[i] - max(-b, 0)) for i, (a, b) in enumerate(widths))
    return np.ascontiguousarray(y[crop])
