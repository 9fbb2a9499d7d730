"""MobileViT unfold / fold: feature map [B, C, H, W] <-> patches [B, C, P, N].

Layout (timm ``MobileVitV2Block.forward``, cvnets ``unfolding_pytorch``; both agree): a patch is
ph x pw pixels, P = ph*pw with in-patch index p = i*pw + j for pixel (i, j) of the patch (row-major),
and N = (H/ph)(W/pw) with patch index n = a*(W/pw) + b for patch (a, b) (row-major):

    patches[b, c, i*pw + j, a*nw + b'] = x[b, c, a*ph + i, b'*pw + j]        (nh = H/ph, nw = W/pw)

This equals ``F.unfold(x, kernel_size=(ph, pw), stride=(ph, pw)).reshape(B, C, P, N)`` (cvnets'
default path) and fold equals ``F.fold`` with the same kernel and stride (non-overlapping patches,
so nothing is summed).

Two equivalent implementations, same numbers bit for bit (pure data movement):

* default: timm's form, one reshape to 6-D [B, C, nh, ph, nw, pw], one 6-D permute to
  [B, C, ph, pw, nh, nw], reshape to [B, C, P, N].
* ``rank5=True``: the TFLite-friendly rewrite of the ICME 2024 low-power landmark paper (section
  2.2.2: tflite-runtime <= 2.11 has no 6-D transpose, so the 6-D tensor is split along one axis, each
  slice squeezed, permuted in 5-D with ``permute(0, 1, 3, 2, 4)``, unsqueezed, and concatenated). The
  paper's code keeps 6-D reshape/split/concat and only makes the permute 5-D; here the same
  split/squeeze/permute/unsqueeze/concat recipe is arranged so that **no intermediate tensor has
  rank > 5**: split the pw axis of a 5-D [B, C, H, nw, pw] view, permute each slice as
  [B, C, nh, ph, nw] -> [B, C, ph, nh, nw], flatten (nh, nw) to N before unsqueezing, concatenate
  along the new pw axis of a 5-D [B, C, ph, pw, N]. Unlike the paper's code it does not assume square
  patches or a square patch grid. Every intermediate passes through :func:`_rank5`, which raises if
  the rank exceeds :data:`MAX_RANK` (tests replace it to record every intermediate shape).
"""
import numpy as np

from ..trace import op
from ._check import check_array, positive_int as _positive_int

__all__ = ["unfold_patches", "fold_patches"]

MAX_RANK = 5


def _rank5(t):
    """Identity on an intermediate tensor of the rank-5 path; raises if its rank exceeds MAX_RANK."""
    if t.ndim > MAX_RANK:
        raise RuntimeError(f"rank-5 unfold/fold produced a rank-{t.ndim} tensor of shape {t.shape}")
    return t


def _check_rank5_flag(rank5):
    if not isinstance(rank5, (bool, np.bool_)):
        raise TypeError(f"rank5: expected a bool, got {rank5!r}")
    return bool(rank5)


def _unfold_rank5(x, ph, pw):
    """[B, C, H, W] -> [B, C, ph*pw, N] with every intermediate of rank <= 5."""
    B, C, H, W = x.shape
    nh, nw = H // ph, W // pw
    t = _rank5(x.reshape(B, C, H, nw, pw))                 # [B, C, H, W] -> [B, C, H, nw, pw]
    parts = []
    for t_j in np.split(t, pw, axis=4):                    # pw x [B, C, H, nw, 1]: column j of every patch
        t_j = _rank5(_rank5(t_j).squeeze(4))               # -> [B, C, H, nw]
        t_j = _rank5(t_j.reshape(B, C, nh, ph, nw))        # -> [B, C, nh, ph, nw]
        t_j = _rank5(t_j.transpose(0, 1, 3, 2, 4))         # -> [B, C, ph, nh, nw] (the paper's 5-D permute)
        t_j = _rank5(t_j.reshape(B, C, ph, nh * nw))       # -> [B, C, ph, N]
        parts.append(_rank5(t_j[:, :, :, None, :]))        # unsqueeze(3): -> [B, C, ph, 1, N]
    t = _rank5(np.concatenate(parts, axis=3))              # -> [B, C, ph, pw, N]
    return _rank5(t.reshape(B, C, ph * pw, nh * nw))       # -> [B, C, P, N]


def _fold_rank5(patches, out_h, out_w, ph, pw):
    """[B, C, ph*pw, N] -> [B, C, out_h, out_w] with every intermediate of rank <= 5."""
    B, C, P, N = patches.shape
    nh, nw = out_h // ph, out_w // pw
    t = _rank5(patches.reshape(B, C, ph, pw, N))           # [B, C, P, N] -> [B, C, ph, pw, N]
    parts = []
    for t_j in np.split(t, pw, axis=3):                    # pw x [B, C, ph, 1, N]
        t_j = _rank5(_rank5(t_j).squeeze(3))               # -> [B, C, ph, N]
        t_j = _rank5(t_j.reshape(B, C, ph, nh, nw))        # -> [B, C, ph, nh, nw]
        t_j = _rank5(t_j.transpose(0, 1, 3, 2, 4))         # -> [B, C, nh, ph, nw]
        t_j = _rank5(t_j.reshape(B, C, out_h, nw))         # -> [B, C, H, nw]
        parts.append(_rank5(t_j[..., None]))               # unsqueeze(4): -> [B, C, H, nw, 1]
    t = _rank5(np.concatenate(parts, axis=4))              # -> [B, C, H, nw, pw]
    return _rank5(t.reshape(B, C, out_h, out_w))           # -> [B, C, H, W]


@op
def unfold_patches(x, patch_h, patch_w, rank5=False):
    """Feature map to patches, [B, C, H, W] -> [B, C, P, N] as the module docstring lays them out (H, W
    multiples of the patch size); ``rank5=True``: the rewrite with no tensor of rank > 5."""
    check_array(x, "x", ndim=4)
    ph, pw = _positive_int(patch_h, "patch_h"), _positive_int(patch_w, "patch_w")
    B, C, H, W = x.shape
    if H % ph or W % pw:
        raise ValueError(f"unfold_patches: feature map {H}x{W} is not a multiple of the patch size {ph}x{pw}")
    if _check_rank5_flag(rank5):
        return _unfold_rank5(x, ph, pw)
    nh, nw = H // ph, W // pw
    x = x.reshape(B, C, nh, ph, nw, pw)                    # [B, C, H, W] -> [B, C, nh, ph, nw, pw]
    x = x.transpose(0, 1, 3, 5, 2, 4)                      # -> [B, C, ph, pw, nh, nw]
    return x.reshape(B, C, ph * pw, nh * nw)               # -> [B, C, P, N]


@op
def fold_patches(patches, out_h, out_w, patch_h, patch_w, rank5=False):
    """Patches to feature map, [B, C, P, N] -> [B, C, out_h, out_w]: the exact inverse of
    :func:`unfold_patches` (P must be patch_h*patch_w and N must be (out_h/patch_h)(out_w/patch_w))."""
    check_array(patches, "patches", ndim=4)
    ph, pw = _positive_int(patch_h, "patch_h"), _positive_int(patch_w, "patch_w")
    H, W = _positive_int(out_h, "out_h"), _positive_int(out_w, "out_w")
    B, C, P, N = patches.shape
    if H % ph or W % pw:
        raise ValueError(f"fold_patches: output {H}x{W} is not a multiple of the patch size {ph}x{pw}")
    nh, nw = H // ph, W // pw
    if P != ph * pw or N != nh * nw:
        raise ValueError(f"fold_patches: patches of shape {patches.shape} do not fit patch size {ph}x{pw} "
                         f"and output {H}x{W} (expected P = {ph * pw}, N = {nh * nw})")
    if _check_rank5_flag(rank5):
        return _fold_rank5(patches, H, W, ph, pw)
    x = patches.reshape(B, C, ph, pw, nh, nw)              # [B, C, P, N] -> [B, C, ph, pw, nh, nw]
    x = x.transpose(0, 1, 4, 2, 5, 3)                      # -> [B, C, nh, ph, nw, pw]
    return x.reshape(B, C, H, W)                           # -> [B, C, H, W]
