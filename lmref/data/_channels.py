"""Colour arithmetic one channel at a time, for the synthetic renderer's speed.

NumPy evaluates ``img * a[..., None]`` (img [H, W, 3], a [H, W]) or ``img * rgb`` (rgb [3]) with an
inner loop over the 3-wide last axis: one short loop per pixel, 5-10 times slower than the same
arithmetic on whole [H, W] planes. ``by_channel`` evaluates an expression plane by plane instead.
Every element goes through the same operations in the same order with the same dtypes, so the
result is bit for bit the broadcast one (the renders are pinned byte for byte by
tests/test_data_versions.py): a [3] vector enters as 1-element arrays ``v[k:k + 1]`` (not
scalars, so NumPy 1.x's value-based casting promotes exactly as it does for the whole vector) and
maps enter whole.
"""
import numpy as np

__all__ = ["by_channel", "mix"]


def _plane(a, k, C):
    """Channel k of an argument: [..., C] image -> [...] plane, [C] vector -> [1], else itself."""
    if isinstance(a, np.ndarray) and a.ndim >= 1 and a.shape[-1] == C:
        return a[k:k + 1] if a.ndim == 1 else a[..., k]
    return a


def by_channel(fn, *args, C=3, out=None):
    """fn(*args) with [..., C] images and [C] vectors taken channel by channel; maps ([...], to
    broadcast over the channels; pass them without [..., None]) and scalars are passed whole.
    out: write into this [..., C] array (may be one of args: each plane is read before written).
    -> [..., C] C-contiguous (or out)"""
    planes = [fn(*(_plane(a, k, C) for a in args)) for k in range(C)]
    if out is None:
        return np.stack(planes, -1)
    for k, p in enumerate(planes):
        out[..., k] = p
    return out


def mix(dst, col, a):
    """dst <- dst (1 - a) + col a in place, channel by channel. dst [..., 3] (a view is fine),
    col [3] or [..., 3], a [...] (the broadcast ``a[..., None]`` bit for bit)."""
    keep = 1.0 - a
    col = np.asarray(col, np.float32)
    for k in range(dst.shape[-1]):
        d = dst[..., k]
        d *= keep
        d += _plane(col, k, dst.shape[-1]) * a
