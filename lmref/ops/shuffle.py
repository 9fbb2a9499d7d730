"""Channel/space rearrangements: pixel_shuffle, pixel_unshuffle, channel_shuffle (torch semantics).

Pure reshapes and transposes, so results are bit-exact copies of the input values.
"""

from ..trace import op
from ._check import check_array, positive_int as _positive_int

__all__ = ["pixel_shuffle", "pixel_unshuffle", "channel_shuffle"]


@op
def pixel_shuffle(x, upscale_factor):
    """``torch.nn.functional.pixel_shuffle``: [B, C*r*r, H, W] -> [B, C, H*r, W*r] with
    out[b, c, h*r + i, w*r + j] = x[b, c*r*r + i*r + j, h, w]."""
    check_array(x, "x", ndim=4)
    r = _positive_int(upscale_factor, "upscale_factor")
    B, Crr, H, W = x.shape
    if Crr % (r * r):
        raise ValueError(f"pixel_shuffle: channels {Crr} not divisible by upscale_factor^2 = {r * r}")
    C = Crr // (r * r)
    x = x.reshape(B, C, r, r, H, W)                 # [B, C*r*r, H, W] -> [B, C, r(i), r(j), H, W]
    x = x.transpose(0, 1, 4, 2, 5, 3)               # -> [B, C, H, r(i), W, r(j)]
    return x.reshape(B, C, H * r, W * r)            # -> [B, C, H*r, W*r]


@op
def pixel_unshuffle(x, downscale_factor):
    """``torch.nn.functional.pixel_unshuffle`` (inverse of :func:`pixel_shuffle`):
    [B, C, H, W] -> [B, C*r*r, H/r, W/r] with out[b, c*r*r + i*r + j, h, w] = x[b, c, h*r + i, w*r + j]."""
    check_array(x, "x", ndim=4)
    r = _positive_int(downscale_factor, "downscale_factor")
    B, C, H, W = x.shape
    if H % r or W % r:
        raise ValueError(f"pixel_unshuffle: spatial size {H}x{W} not divisible by downscale_factor {r}")
    x = x.reshape(B, C, H // r, r, W // r, r)       # [B, C, H, W] -> [B, C, H/r, r(i), W/r, r(j)]
    x = x.transpose(0, 1, 3, 5, 2, 4)               # -> [B, C, r(i), r(j), H/r, W/r]
    return x.reshape(B, C * r * r, H // r, W // r)  # -> [B, C*r*r, H/r, W/r]


@op
def channel_shuffle(x, groups):
    """``torch.nn.functional.channel_shuffle`` (ShuffleNet): [B, C, H, W] -> [B, C, H, W] with the
    channels viewed as [groups, C/groups] and transposed: out channel k*groups + g = in channel
    g*(C/groups) + k."""
    check_array(x, "x", ndim=4)
    g = _positive_int(groups, "groups")
    B, C, H, W = x.shape
    if C % g:
        raise ValueError(f"channel_shuffle: channels {C} not divisible by groups {g}")
    x = x.reshape(B, g, C // g, H, W)               # [B, C, H, W] -> [B, g, C/g, H, W]
    x = x.transpose(0, 2, 1, 3, 4)                  # -> [B, C/g, g, H, W]
    return x.reshape(B, C, H, W)
