"""Heatmap ops: soft-argmax decoding (STAR / DSNT), the AAM head's E2P transform and fusion, argmax
with the HRNet quarter-pixel refinement, STAR's normalised-to-pixel rule, and decoding heatmaps
(Lite-HRNet's, or any [B, K, h, w] maps) to input-pixel landmarks.

Coordinate conventions
* soft_argmax returns (x, y) in [-1, 1] on STAR's grid X_j = 2j/(w-1) - 1, Y_i = 2i/(h-1) - 1: the
  centres of the first and last heatmap pixels sit exactly at -1 and +1
  (``STAR:lib/dataset/decoder/decoder_default.py`` ``_make_grid``).
* argmax_subpixel returns heatmap-pixel coordinates (x = column, y = row).
* normalized_to_pixels maps [-1, 1] to input pixels with STAR's align_corners=False rule
  x = ((x̂ + 1) W - 1) / 2 (``STAR:evaluate.py`` ``denorm_points``).
"""
import numbers

import numpy as np

from ..trace import op
from ._check import check_array, check_same_dtype
from .activation import relu

__all__ = ["soft_argmax", "e2p", "aam_fusion", "argmax_subpixel", "normalized_to_pixels", "decode_heatmaps"]

SOFT_ARGMAX_METHODS = ("star", "softmax")


def _grid(n, dtype):
    """STAR's grid along one axis, 2k/(n-1) - 1 for k = 0..n-1, as torch's arange / (n - 1) * 2 - 1 in ``dtype``."""
    dt = np.dtype(dtype).type
    return np.arange(n, dtype=dtype) / dt(n - 1) * dt(2) - dt(1)


@op
def soft_argmax(heatmaps, method="star", beta=1.0):
    """Heatmaps [B, N, h, w] (h, w >= 2) -> (x, y) [B, N, 2] in [-1, 1] on the grid X_j = 2j/(w-1) - 1,
    Y_i = 2i/(h-1) - 1. "star" (STAR's ``get_coords_from_heatmap``, ``beta`` must be 1): the expectation
    of the map itself, x = sum X_j H(i,j) / S with S = max(sum H, 1e-6) (no softmax, no ReLU: STAR's
    fused maps are non-negative). "softmax" (DSNT): the expectation under softmax(beta * H) over h*w."""
    check_array(heatmaps, "heatmaps", ndim=4)
    if method not in SOFT_ARGMAX_METHODS:
        raise ValueError(f"soft_argmax: method must be one of {SOFT_ARGMAX_METHODS}, got {method!r}")
    if not isinstance(beta, numbers.Real) or isinstance(beta, bool) or not np.isfinite(beta):
        raise TypeError(f"soft_argmax: beta must be a finite number, got {beta!r}")
    if method == "star" and beta != 1.0:
        raise ValueError("soft_argmax: beta only applies to method='softmax'")
    h, w = heatmaps.shape[2:]
    if h < 2 or w < 2:
        raise ValueError(f"soft_argmax: heatmaps must be at least 2x2 (the grid divides by h-1, w-1), got {h}x{w}")
    dt = heatmaps.dtype.type
    xx = _grid(w, heatmaps.dtype)[None, None, None, :]          # X_j: [1, 1, 1, w]
    yy = _grid(h, heatmaps.dtype)[None, None, :, None]          # Y_i: [1, 1, h, 1]
    if method == "softmax":
        p = _softmax_over_map(heatmaps, beta)                  # [B, N, h, w], each map sums to 1
        return np.stack([(xx * p).sum(axis=(2, 3)), (yy * p).sum(axis=(2, 3))], axis=-1)
    total = np.maximum(heatmaps.sum(axis=(2, 3)), dt(1e-6))    # S: [B, N]
    x = (xx * heatmaps).sum(axis=(2, 3)) / total               # [B, N, h, w] -> [B, N]
    y = (yy * heatmaps).sum(axis=(2, 3)) / total
    return np.stack([x, y], axis=-1)                           # -> [B, N, 2] (x, y)


def _softmax_over_map(heatmaps, beta):
    """softmax(beta * H) over all h*w pixels of each map: [B, N, h, w] -> [B, N, h, w]."""
    B, N, h, w = heatmaps.shape
    dt = heatmaps.dtype.type
    logits = dt(beta) * heatmaps.reshape(B, N, h * w)      # [B, N, h*w]
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).reshape(B, N, h, w)


def _e2p_matrix(matrix, num_edges):
    """STAR's E2P weight: [N, E] or the registered buffer's [N, E, 1, 1] -> [N, E]."""
    check_array(matrix, "matrix", ndim=(2, 4))
    if matrix.ndim == 4 and matrix.shape[2:] != (1, 1):
        raise ValueError(f"matrix: expected [N, E] or [N, E, 1, 1], got shape {matrix.shape}")
    if matrix.shape[1] != num_edges:
        raise ValueError(f"matrix: shape {matrix.shape} does not match {num_edges} edge maps")
    return matrix.reshape(matrix.shape[0], num_edges)


@op
def e2p(edge_maps, matrix, bias=None):
    """STAR's E2P transform (``E2HTransform``, ``STAR:lib/backbone/stackedHGNetV1.py``), a fixed 1x1
    convolution from edge maps to point maps: E2P(E)_p = sum_e M[p, e] E_e + b_p, M[p, e] = 1 iff landmark
    p lies on edge e. edge_maps [B, E, h, w], M [N, E] (or STAR's buffer [N, E, 1, 1]), b [N] (1 for
    landmarks on no edge; None = 0) -> [B, N, h, w]."""
    check_array(edge_maps, "edge_maps", ndim=4)
    B, E, h, w = edge_maps.shape
    m = _e2p_matrix(matrix, E)                                 # [N, E]
    n_points = m.shape[0]
    if bias is not None and check_array(bias, "bias").shape != (n_points,):
        raise ValueError(f"bias: expected shape ({n_points},), got {bias.shape}")
    check_same_dtype(("edge_maps", edge_maps), ("matrix", m), ("bias", bias))
    out = (m @ edge_maps.reshape(B, E, h * w)).reshape(B, n_points, h, w)   # [B, E, h, w] -> [B, N, h, w]
    return out if bias is None else out + bias[:, None, None]


@op
def aam_fusion(heatmaps, point_maps, edge_maps, matrix, bias=None):
    """The AAM head's fusion (STAR ``StackedHGNetV1.forward``): mask = E2P(E) * P, fused = mask * H.
    heatmaps H and point_maps P [B, N, h, w], edge_maps E [B, E, h, w], matrix / bias as in
    :func:`e2p` -> fused heatmaps [B, N, h, w]."""
    check_array(heatmaps, "heatmaps", ndim=4)
    check_array(point_maps, "point_maps", ndim=4)
    if point_maps.shape != heatmaps.shape:
        raise ValueError(f"point_maps: shape {point_maps.shape} differs from heatmaps' {heatmaps.shape}")
    edges_to_points = e2p(edge_maps, matrix, bias)             # [B, E, h, w] -> [B, N', h, w]
    check_same_dtype(("heatmaps", heatmaps), ("point_maps", point_maps), ("edge_maps", edge_maps))
    if edges_to_points.shape != heatmaps.shape:
        raise ValueError(f"edge_maps {edge_maps.shape} and matrix give {edges_to_points.shape[1]} points "
                         f"(shape {edges_to_points.shape}), heatmaps have shape {heatmaps.shape}")
    mask = edges_to_points * point_maps                        # [B, N, h, w]
    return mask * heatmaps                                     # [B, N, h, w]


@op
def argmax_subpixel(heatmaps):
    """Heatmaps [B, N, h, w] -> (coords [B, N, 2] as heatmap-pixel (x, y), maxvals [B, N]).

    HRNet's ``get_max_preds`` + ``get_final_preds`` post-processing (``lib/core/inference.py`` of
    deep-high-resolution-net; mmpose 0.x ``keypoints_from_heatmaps(post_process='default')`` is the
    same): (x, y) = position of the maximum (first one on ties, row-major), then, only when
    1 < x < w-1 and 1 < y < h-1 (both strict, as upstream), each coordinate moves a quarter pixel
    toward its higher neighbour:

        x += 0.25 * sign(H[y, x+1] - H[y, x-1]),   y += 0.25 * sign(H[y+1, x] - H[y-1, x])

    Differs from upstream in one way: HRNet sets the coordinates of a map whose maximum is <= 0 to
    (0, 0) (mmpose to (-1, -1)); here the argmax position is always returned and ``maxvals`` lets the
    caller apply such a threshold.
    """
    check_array(heatmaps, "heatmaps", ndim=4)
    B, N, h, w = heatmaps.shape
    if h < 1 or w < 1:
        raise ValueError(f"argmax_subpixel: empty heatmaps of shape {heatmaps.shape}")
    flat = heatmaps.reshape(B, N, h * w)                       # [B, N, h*w]
    idx = flat.argmax(axis=-1)                                 # [B, N]
    maxvals = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    y, x = idx // w, idx % w                                   # [B, N] integer row, column

    def at(yy, xx):                                            # H[b, n, yy, xx], indices clipped
        yy, xx = np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)
        return np.take_along_axis(flat, (yy * w + xx)[..., None], axis=-1)[..., 0]

    inside = (x > 1) & (x < w - 1) & (y > 1) & (y < h - 1)
    dx = np.sign(at(y, x + 1) - at(y, x - 1))
    dy = np.sign(at(y + 1, x) - at(y - 1, x))
    dt = heatmaps.dtype.type
    coords = np.stack([x, y], axis=-1).astype(heatmaps.dtype)  # [B, N, 2]
    coords += np.where(inside[..., None], np.stack([dx, dy], axis=-1) * dt(0.25), dt(0))
    return coords, maxvals


def normalized_to_pixels(coords, width, height):
    """STAR's ``denorm_points`` (not traced): coords [..., 2] (x̂, ŷ) in [-1, 1] -> pixels [..., 2] of a
    width x height image, pixel i covering [i-0.5, i+0.5]: x = ((x̂ + 1) * width - 1) / 2 (y alike)."""
    check_array(coords, "coords", min_ndim=1)
    if coords.shape[-1] != 2:
        raise ValueError(f"coords: expected last dimension 2 (x, y), got shape {coords.shape}")
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not v > 0:
            raise ValueError(f"{name}: expected a positive number, got {v!r}")
    dt = coords.dtype.type
    size = np.array([width, height], dtype=coords.dtype)       # (W, H) per coordinate
    return ((coords + dt(1)) * size - dt(1)) / dt(2)


@op
def decode_heatmaps(heatmaps, method="argmax", input_size=None, beta=1.0):
    """Heatmaps [B, K, h, w] -> (landmarks [B, K, 2] as input-pixel (x, y), scores [B, K] = the maxima).

    "argmax": the maximum with HRNet's quarter-pixel shift toward the higher neighbour
      (``argmax_subpixel``, mmpose's default post-processing).
    "soft_argmax": the expectation of the ReLU'd, sum-normalised map (``soft_argmax`` "star" after
      ``relu``: an MSE-trained map has small negative values that would pull toward the centre).
    "soft_argmax_softmax": the expectation under softmax(beta H) (DSNT).
    Heatmap pixel (u, v) is input pixel (u W/w, v H/h), as mmpose maps them (its MSRA targets put
    landmark x at heatmap pixel round(x w/W)); input_size (H, W) defaults to 4x the heatmap size."""
    check_array(heatmaps, "heatmaps", ndim=4)
    B, K, h, w = heatmaps.shape
    H, W = input_size if input_size is not None else (4 * h, 4 * w)
    dt = heatmaps.dtype
    scores = heatmaps.reshape(B, K, h * w).max(axis=-1)                       # [B, K]
    if method == "argmax":
        uv, scores = argmax_subpixel(heatmaps)                                # [B, K, 2] heatmap pixels
    elif method in ("soft_argmax", "soft_argmax_softmax"):
        if method == "soft_argmax":
            xy = soft_argmax(relu(heatmaps), method="star")                   # [B, K, 2] in [-1, 1]
        else:
            xy = soft_argmax(heatmaps, method="softmax", beta=beta)
        uv = (xy + 1) * np.array([(w - 1) / 2, (h - 1) / 2], dtype=dt)        # X_j = 2j/(w-1) - 1 -> j
    else:
        raise ValueError(f"decode_heatmaps: method must be 'argmax', 'soft_argmax' or 'soft_argmax_softmax', "
                         f"got {method!r}")
    return uv * np.array([W / w, H / h], dtype=dt), scores
