"""Crop geometry: face boxes, square crops with a margin, the affine map image -> crop and its exact
inverse, and applying them to images and landmarks.

Coordinates are pixel coordinates with pixel centres at integers (pixel (i, j) is centred at
x = j, y = i), the convention of ``cv2.warpAffine`` and of STAR's labels. A crop of size S maps the
box centre to ((S - 1) / 2, (S - 1) / 2) and the box side to S pixels, so a point at the box edge
lands on the crop's outer pixel boundary (-0.5 or S - 0.5).

An affine map is a 2x3 float64 matrix M: [x', y'] = M @ [x, y, 1].

    box = landmark_box(points)                       # [x0, y0, x1, y1]
    M = crop_matrix(box, 256, margin=1.25)           # image -> crop
    crop = warp_image(image, M, 256)
    pts_crop = apply_affine(points, M)
    pts_back = apply_affine(pts_crop, invert_affine(M))   # == points to ~1e-12 px
"""
from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["landmark_box", "square_box", "crop_matrix", "similarity_matrix", "invert_affine",
           "compose_affine", "apply_affine", "warp_image", "flip_matrix", "flip_landmarks"]


def _points(points, name="points"):
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"{name}: expected shape [N, 2], got {pts.shape}")
    return pts


def _affine(M, name="M"):
    A = np.asarray(M, dtype=np.float64)
    if A.shape == (3, 3):
        if not np.allclose(A[2], [0, 0, 1]):
            raise ValueError(f"{name}: a 3x3 matrix must have last row [0, 0, 1] (affine), got {A[2]}")
        A = A[:2]
    if A.shape != (2, 3):
        raise ValueError(f"{name}: expected a 2x3 (or 3x3 affine) matrix, got shape {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name}: contains NaN or inf")
    return A


def landmark_box(points, occluded=None):
    """Bounding box [x0, y0, x1, y1] of the landmarks (of the visible ones if ``occluded`` is given
    and not all points are occluded)."""
    pts = _points(points)
    if len(pts) == 0:
        raise ValueError("points: need at least one landmark")
    if occluded is not None:
        occ = np.asarray(occluded, bool)
        if occ.shape != (len(pts),):
            raise ValueError(f"occluded: expected shape [{len(pts)}], got {occ.shape}")
        if not occ.all():
            pts = pts[~occ]
    if not np.all(np.isfinite(pts)):
        raise ValueError("points: contains NaN or inf")
    return np.concatenate([pts.min(0), pts.max(0)])


def _box(box):
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise ValueError(f"box: expected 4 finite numbers [x0, y0, x1, y1], got {box!r}")
    if b[2] < b[0] or b[3] < b[1]:
        raise ValueError(f"box: need x1 >= x0 and y1 >= y0, got {b.tolist()}")
    return b


def square_box(box, margin=1.25, shift=(0.0, 0.0)):
    """Square box around ``box``: side = margin * max(width, height), same centre shifted by
    ``shift`` * side. -> (cx, cy, side)"""
    b = _box(box)
    side = float(margin) * max(b[2] - b[0], b[3] - b[1])
    if not side > 0:
        raise ValueError(f"box {b.tolist()} with margin {margin} has no size")
    cx = 0.5 * (b[0] + b[2]) + shift[0] * side
    cy = 0.5 * (b[1] + b[3]) + shift[1] * side
    return cx, cy, side


def similarity_matrix(center, side, out_size, angle_deg=0.0, scale=1.0, shift=(0.0, 0.0)):
    """Image -> crop map that takes a square of ``side`` pixels centred at ``center`` to an out_size
    crop, the crop's content turned ``angle_deg`` counter-clockwise as displayed (the convention of
    cv2.getRotationMatrix2D) and scaled by ``scale`` about the crop centre, then moved by ``shift``
    crop pixels. -> 2x3"""
    if not (isinstance(out_size, (int, np.integer)) and out_size > 0):
        raise ValueError(f"out_size: expected a positive int, got {out_size!r}")
    if not (side > 0 and scale > 0):
        raise ValueError(f"side and scale must be > 0, got {side}, {scale}")
    s = float(scale) * out_size / float(side)
    a = math.radians(angle_deg)
    # y points down in the image, so a counter-clockwise turn on screen is R(-a) in (x, y)
    c, si = math.cos(a) * s, math.sin(a) * s
    A = np.array([[c, si], [-si, c]])
    t = (out_size - 1) / 2.0 + np.asarray(shift, float) - A @ np.asarray(center, float)
    return np.concatenate([A, t[:, None]], 1)


def crop_matrix(box, out_size, margin=1.25, angle_deg=0.0, scale=1.0, shift=(0.0, 0.0)):
    """Image -> crop affine for a square crop around a face box with a margin (``square_box``),
    optionally rotated / scaled / shifted about the crop centre (augmentation). -> 2x3"""
    cx, cy, side = square_box(box, margin)
    return similarity_matrix((cx, cy), side, out_size, angle_deg, scale, shift)


def invert_affine(M):
    """Exact inverse of a 2x3 affine map (solved in float64). -> 2x3"""
    A = _affine(M)
    L = A[:, :2]
    det = L[0, 0] * L[1, 1] - L[0, 1] * L[1, 0]
    if abs(det) < 1e-12 * max(1.0, np.abs(L).max() ** 2):
        raise ValueError(f"M: singular affine map (det {det:.3g}) has no inverse")
    Li = np.array([[L[1, 1], -L[0, 1]], [-L[1, 0], L[0, 0]]]) / det
    return np.concatenate([Li, (-Li @ A[:, 2])[:, None]], 1)


def compose_affine(*Ms):
    """compose_affine(A, B, C) = the map x -> A(B(C(x))). -> 2x3"""
    out = np.eye(3)
    for M in Ms:
        out = out @ np.vstack([_affine(M), [0, 0, 1]])
    return out[:2]


def apply_affine(points, M):
    """Map points [..., 2] with a 2x3 affine: -> [..., 2] float64"""
    A = _affine(M)
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape[-1:] != (2,):
        raise ValueError(f"points: expected [..., 2], got shape {pts.shape}")
    return pts @ A[:, :2].T + A[:, 2]


def warp_image(image, M, out_size, border_value=0, interpolation=cv2.INTER_LINEAR):
    """Resample an image [H, W] or [H, W, C] (any channel count) into an out_size x out_size crop
    with the image -> crop map M (cv2.warpAffine, pixel centres at integers)."""
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise ValueError(f"image: expected [H, W] or [H, W, C], got shape {img.shape}")
    A = _affine(M)
    size = (int(out_size), int(out_size)) if np.isscalar(out_size) else (int(out_size[1]), int(out_size[0]))
    if img.ndim == 3 and img.shape[2] > 4:                  # OpenCV warps at most 4 channels at a time
        return np.concatenate([warp_image(img[..., i:i + 4], A, out_size, border_value, interpolation)
                               .reshape(size[1], size[0], -1) for i in range(0, img.shape[2], 4)], -1)
    out = cv2.warpAffine(img, A, size, flags=interpolation, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=border_value)
    if img.ndim == 3 and out.ndim == 2:
        out = out[..., None]
    return out


def flip_matrix(width):
    """Horizontal mirror of an image ``width`` pixels wide: x -> (width - 1) - x. -> 2x3"""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def flip_landmarks(points, width, perm):
    """Mirror landmarks with their image: x -> (width - 1) - x and reorder so that new point k is old
    point perm[k] (a layout's ``flip``). points [N, 2] -> [N, 2]"""
    pts = _points(points)
    perm = np.asarray(perm)
    if sorted(perm.tolist()) != list(range(len(pts))):
        raise ValueError(f"perm: expected a permutation of 0..{len(pts) - 1}")
    return apply_affine(pts, flip_matrix(width))[perm]
