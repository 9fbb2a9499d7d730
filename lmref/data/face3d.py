"""The 3D face model behind the synthetic generator: a head surface with the 68 iBUG landmarks on
it, identity and expression deformations, pose, a pinhole camera, a triangle rasteriser and the
300W rule for the jaw line.

Frames and units (millimetres throughout):

* face frame: origin at the midpoint between the outer eye corners, x to the image right in a frontal
  view (the subject's left), y up, z out of the face toward the camera.
* the head surface is a radial function around ``CENTER`` (face frame (0, -25, -88): behind the nose,
  inside the skull), stored on a (u, v) texture grid of UV_H x UV_W texels: texel (v, u) is the
  direction (theta, phi) from CENTER, theta = 0 out of the face, theta > 0 toward +x, phi > 0 up.
  The grid is denser at the face than at the back of the head (``theta_of_u``, ``phi_of_v``).
  Textures and geometry share this parametrisation: a landmark is a fixed (u, v), its 3D position is
  the surface point there, before and after any deformation, and everything painted on the face
  (eyes, lips, brows, make-up, hair) is painted in (u, v) (``paint``).
* view frame: the face frame turned by the head pose (yaw about y, then pitch about x, then roll
  about z) around CENTER; a pinhole camera ``distance`` mm out on the +z axis looks back at the head;
  image x to the right, image y down, pixel centres at integer coordinates.

The mean face (``mean_model()``, built once per process): a lofted head of superelliptic horizontal
cross-sections whose frontal outline follows an average 300W face (``MEAN_2D``: eye corners 88 mm
apart, face 145 mm wide, 121 mm from eye level to chin), a frontal relief height field on top of it
(nose with tip, wings and nostrils, eye sockets and eyeballs, brow ridge, cheekbones, lips,
philtrum, nasolabial folds, chin), then ears on the sides. Inner landmarks are the surface points
under their MEAN_2D position; each jaw point has a "ring" of surface points from its anatomical
position (near the ear / along the jaw) toward the face centre (``contour_on_silhouette``).

Deformations (``deform``): linear displacement fields (``IDENTITY_MODES`` such as jaw width, nose
length, eye size; ``EXPRESSION_MODES`` such as smile, blink, brow raise, pucker), a jaw rotation
about the temporomandibular axis, and an anisotropic scale. The landmarks move with the surface
because they are points of it.
"""
from __future__ import annotations

import functools
import math
import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "UV_W", "UV_H", "CENTER", "MEAN_2D", "theta_of_u", "phi_of_v", "u_of_theta", "v_of_phi",
    "uv_of_point", "sample_map", "lookup", "MeanModel", "mean_model", "LABEL_2D", "label_model", "uv_mesh",
    "rotation", "Camera",
    "rasterize", "barycentric", "surface_normals", "contour_on_silhouette", "IDENTITY_MODES",
    "EXPRESSION_MODES", "mode_set", "deform",
]

# ---------------------------------------------------------------------------------------------
# (u, v) parametrisation of directions around CENTER
# ---------------------------------------------------------------------------------------------

UV_W, UV_H = 512, 320                     # texture / surface grid (u across, v down)
CENTER = np.array([0.0, -25.0, -88.0])     # centre of the radial parametrisation, face frame (mm)

# theta(s) = A s + B s^7 on s in [-1, 1]: |theta| < 75 deg gets 3/4 of the columns (0.32 deg/texel at
# the front, 3 deg/texel at the back); phi(t) = A t + B t^5: |phi| < 65 deg gets 4/5 of the rows.
_TA, _TB = math.radians(82.67894268), math.radians(97.32105732)
_PA, _PB = math.radians(75.1795393), math.radians(14.8204607)


def theta_of_u(u):
    """Azimuth (radians) of texture column coordinate u (texel centres at 0..UV_W-1; u = -0.5 and
    UV_W - 0.5 are both the back meridian, theta = -pi and pi)."""
    s = 2.0 * (np.asarray(u, np.float64) + 0.5) / UV_W - 1.0
    return _TA * s + _TB * s ** 7


def phi_of_v(v):
    """Elevation (radians) of texture row coordinate v (v = -0.5 top pole, UV_H - 0.5 bottom pole)."""
    t = 1.0 - 2.0 * (np.asarray(v, np.float64) + 0.5) / UV_H
    return _PA * t + _PB * t ** 5


_S_TABLE = np.linspace(-1.0, 1.0, 8193)
_THETA_TABLE = _TA * _S_TABLE + _TB * _S_TABLE ** 7
_PHI_TABLE = _PA * _S_TABLE + _PB * _S_TABLE ** 5


def u_of_theta(theta):
    """Inverse of ``theta_of_u`` (theta wrapped into [-pi, pi))."""
    th = (np.asarray(theta, np.float64) + np.pi) % (2 * np.pi) - np.pi
    s = np.interp(th, _THETA_TABLE, _S_TABLE)
    return (s + 1.0) * UV_W / 2.0 - 0.5


def v_of_phi(phi):
    """Inverse of ``phi_of_v``."""
    t = np.interp(np.asarray(phi, np.float64), _PHI_TABLE, _S_TABLE)
    return (1.0 - t) * UV_H / 2.0 - 0.5


def lookup(img, xy, border=cv2.BORDER_CONSTANT, interpolation=cv2.INTER_LINEAR):
    """Bilinear lookup of an image at any number of points xy [..., 2] (pixel centres at integers)
    with cv2.remap (which needs 2-D maps under 32767 a side). -> [...] or [..., C]"""
    xy = np.asarray(xy, np.float32)
    shape = xy.shape[:-1]
    flat = xy.reshape(-1, 2)
    n = flat.shape[0]
    cols = 1024
    rows = -(-n // cols)
    pad = np.full((rows * cols, 2), -1e4, np.float32)
    pad[:n] = flat
    pad = pad.reshape(rows, cols, 2)
    out = cv2.remap(img, pad[..., 0], pad[..., 1], interpolation, borderMode=border)
    out = out.reshape(rows * cols, *img.shape[2:])[:n]
    return out.reshape(*shape, *img.shape[2:])


def directions(theta, phi):
    """Unit vectors (x, y, z) for azimuth theta, elevation phi: [...] -> [..., 3]."""
    cp = np.cos(phi)
    return np.stack([cp * np.sin(theta), np.sin(phi) * np.ones_like(theta), cp * np.cos(theta)], -1)


def uv_of_point(p):
    """(u, v) of the direction of face-frame points p [..., 3] seen from CENTER."""
    d = np.asarray(p, np.float64) - CENTER
    theta = np.arctan2(d[..., 0], d[..., 2])
    phi = np.arctan2(d[..., 1], np.hypot(d[..., 0], d[..., 2]))
    return np.stack([u_of_theta(theta), v_of_phi(phi)], -1)


def sample_map(m, uv, wrap=True):
    """Bilinear sample of a texture-grid map m [UV_H, UV_W, C] (or [UV_H, UV_W]) at (u, v) points
    [..., 2] (texel centres at integers); u wraps around the back meridian. -> [..., C]"""
    m = np.asarray(m)
    uv = np.asarray(uv, np.float64)
    squeeze = m.ndim == 2
    if squeeze:
        m = m[..., None]
    H, W = m.shape[:2]
    u = uv[..., 0] % W if wrap else np.clip(uv[..., 0], 0, W - 1)
    v = np.clip(uv[..., 1], 0, H - 1)
    u0 = np.floor(u).astype(np.int64)
    v0 = np.minimum(np.floor(v).astype(np.int64), H - 2)
    fu, fv = (u - u0)[..., None], (v - v0)[..., None]
    u1 = (u0 + 1) % W if wrap else np.minimum(u0 + 1, W - 1)
    out = ((1 - fv) * ((1 - fu) * m[v0, u0 % W] + fu * m[v0, u1])
           + fv * ((1 - fu) * m[v0 + 1, u0 % W] + fu * m[v0 + 1, u1]))
    return out[..., 0] if squeeze else out


# ---------------------------------------------------------------------------------------------
# The mean 2D face (frontal, face frame, mm)
# ---------------------------------------------------------------------------------------------

# An average frontal 300W face, symmetric, scaled to an outer-eye-corner distance of 87.6 mm (adult
# mean exocanthal width ~ 88-90 mm): face outline width ~ 145 mm at eye level, eye level to chin
# 121 mm, nose length (27 -> 33) 52 mm, nose width 29 mm, mouth width 57 mm. Subject's right side
# (x < 0) is listed; the left side is its mirror image through the flip permutation.
_RIGHT_2D = {
    0: (-72.5, -1.5), 1: (-72.0, -21.0), 2: (-69.5, -40.5), 3: (-65.0, -60.0), 4: (-57.5, -78.0),
    5: (-46.0, -94.0), 6: (-32.0, -107.5), 7: (-16.0, -118.0), 8: (0.0, -121.5),
    17: (-58.0, 13.5), 18: (-49.5, 21.0), 19: (-37.5, 23.0), 20: (-25.0, 21.0), 21: (-13.0, 16.0),
    27: (0.0, 2.0), 28: (0.0, -11.0), 29: (0.0, -24.0), 30: (0.0, -37.0),
    31: (-14.3, -44.9), 32: (-7.5, -47.8), 33: (0.0, -50.0),
    36: (-43.8, 0.8), 37: (-36.2, 5.4), 38: (-26.8, 5.2), 39: (-18.9, -0.9), 40: (-27.6, -2.6),
    41: (-36.8, -2.5),
    48: (-28.7, -68.3), 49: (-18.3, -64.0), 50: (-7.6, -62.2), 51: (0.0, -64.0),
    57: (0.0, -84.6), 58: (-8.3, -83.8), 59: (-18.7, -79.0),
    60: (-24.2, -68.9), 61: (-7.7, -68.5), 62: (0.0, -69.2), 66: (0.0, -74.9), 67: (-7.9, -74.0),
}
_FLIP68 = (16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20,
           19, 18, 17, 27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36,
           41, 40, 54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65)


def _mean_2d(right=_RIGHT_2D):
    """[68, 2] from the subject's right side, mirrored (x negated) to the left."""
    pts = np.full((68, 2), np.nan)
    for k, (x, y) in right.items():
        pts[k] = (x, y)
        pts[_FLIP68[k]] = (-x, y)
    assert not np.isnan(pts).any()
    return pts


MEAN_2D = _mean_2d()      # [68, 2] (x, y) face frame, mm

# 300-W's labelling convention on these faces (renderer version 4): where dlib's 68-point predictor, trained
# on 300-W, puts each point on version-3 faces relative to the point under MEAN_2D, in mm of the face frame
# (x toward the face's left, y up; subject's right side listed, the left mirrored), measured by
#     python -m benchmarks.realism --convention --n 1500 --json benchmarks/results/label_convention.json
# on the 701 near-frontal faces among the first 1,500 of the *training* split that dlib's HOG finds (each
# mapped into the face frame by its labels' similarity; averaged, made symmetric, the common shift of the
# inner points removed). dlib places the jaw's upper ends 3-4 mm higher and its sides 2 mm farther out, the
# brows 2-3 mm closer to the midline and up to 2 mm higher, the eyes' outer corners 2 mm in, the mouth's
# corners 3 mm in and 2.6 mm lower. The face is still drawn around MEAN_2D; only the labels move.
_LABEL_OFFSET_300W = {
    0: (-0.1, 3.7), 1: (-0.2, 3.5), 2: (-0.7, 3.2), 3: (-1.2, 3.0), 4: (-1.6, 1.7), 5: (-2.1, 0.9),
    6: (-2.0, 0.2), 7: (-2.0, -0.6), 8: (0.0, 0.4), 17: (2.0, 1.9), 18: (2.7, 1.5), 19: (2.8, 1.1),
    20: (2.3, 0.8), 21: (1.5, 0.4), 27: (0.0, -0.3), 28: (0.0, 0.4), 29: (0.0, 1.2), 30: (0.0, 1.6),
    31: (1.6, 0.1), 32: (0.8, 0.6), 33: (0.0, 0.9), 36: (2.2, -0.2), 37: (1.7, -0.2), 38: (1.2, -0.2),
    39: (0.6, -0.1), 40: (1.3, -0.9), 41: (1.9, -0.8), 48: (3.2, -2.6), 49: (1.8, -1.2),
    50: (0.4, -0.3), 51: (0.0, 0.4), 57: (0.0, 0.7), 58: (0.4, 0.7), 59: (1.2, -0.7), 60: (3.0, -2.3),
    61: (0.5, 0.7), 62: (0.0, 0.9), 66: (0.0, -0.9), 67: (0.5, -0.5),
}
LABEL_2D = MEAN_2D + _mean_2d(_LABEL_OFFSET_300W)    # [68, 2] version 4's labels, face frame, mm


# ---------------------------------------------------------------------------------------------
# Base head: lofted superelliptic cross-sections
# ---------------------------------------------------------------------------------------------

# Horizontal cross-section at height y (face frame): |x / W|^n + |(z - zc) / D|^n = 1 with
# zc = (Zf + Zb) / 2, D = (Zf - Zb) / 2, exponent n = nf in front of zc and 2 behind. W follows the
# frontal face outline (MEAN_2D contour) below the eyes and a skull of breadth ~ 147 mm above;
# Zf is the midline profile without nose, lips and chin relief; Zb the back of the head and neck.
_Y = np.array([120, 118, 114, 110, 104, 96, 88, 78, 66, 54, 42, 30, 10, -5, -20, -40, -60, -78,
               -94, -107, -116, -121.5, -123.5])
_W = np.array([0.5, 15.4, 26.4, 33.7, 41.8, 50.0, 56.2, 62.2, 67.4, 70.8, 72.8, 73.5, 73.5, 73.2,
               72.6, 70.2, 65.6, 58.2, 47.5, 35.0, 23.0, 11.0, 0.5])
_ZF = np.array([-96.0, -75.0, -60.1, -50.2, -39.1, -28.0, -19.5, -11.4, -4.3, 0.4, 3.1, 4.0, 4.0,
                1.0, -1.0, -2.0, -3.0, -5.0, -4.0, -6.0, -10.0, -16.0, -24.0])
_ZB = np.array([-96.0, -116.5, -131.2, -140.9, -151.8, -162.6, -170.9, -178.9, -185.8, -190.5,
                -193.1, -194.0, -190.0, -185.0, -178.0, -166.0, -150.0, -132.0, -112.0, -90.0,
                -70.0, -50.0, -36.0])
_NF = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.9, 2.9, 2.8, 2.6,
                2.4, 2.2, 2.0, 2.0, 2.0, 2.0, 2.0])


def _catmull_rom(xk, yk, x):
    """C1 Catmull-Rom interpolation through knots (xk increasing, non-uniform allowed) at x."""
    xk, yk = np.asarray(xk, float), np.asarray(yk, float)
    m = np.gradient(yk, xk)                                   # knot slopes (non-uniform differences)
    i = np.clip(np.searchsorted(xk, x) - 1, 0, len(xk) - 2)
    h = xk[i + 1] - xk[i]
    t = np.clip((x - xk[i]) / h, 0, 1)
    t2, t3 = t * t, t * t * t
    return ((2 * t3 - 3 * t2 + 1) * yk[i] + (t3 - 2 * t2 + t) * h * m[i]
            + (-2 * t3 + 3 * t2) * yk[i + 1] + (t3 - t2) * h * m[i + 1])


_YFINE = np.linspace(_Y[-1], _Y[0], 2049)                     # smooth tables on a fine grid
_WF, _ZFF, _ZBF, _NFF = (_catmull_rom(_Y[::-1], t[::-1], _YFINE) for t in (_W, _ZF, _ZB, _NF))


def _tables(y):
    """Cross-section parameters at heights y: (W, zc, D, nf)."""
    W = np.interp(y, _YFINE, _WF)
    zf = np.interp(y, _YFINE, _ZFF)
    zb = np.interp(y, _YFINE, _ZBF)
    nf = np.interp(y, _YFINE, _NFF)
    return np.maximum(W, 0.5), 0.5 * (zf + zb), np.maximum(0.5 * (zf - zb), 0.5), nf


def _section_value(p):
    """Implicit function of the lofted head: < 0 inside. p [..., 3] face frame."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    W, zc, D, nf = _tables(y)
    n = np.where(z > zc, nf, 2.0)
    val = np.abs(x / W) ** n + np.abs((z - zc) / D) ** n - 1.0
    return np.where((y > _Y[0]) | (y < _Y[-1]), 1.0, val)


def _relief_value(canvas):
    """Implicit function of the head with a frontal relief: in front of the cross-section centre the
    surface is the height field z = z_front(x, y) + h(x, y), h read from the relief canvas."""
    def fn(p):
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        W, zc, D, nf = _tables(y)
        ax = np.minimum(np.abs(x) / W, 1.0)
        z_front = zc + D * (1.0 - ax ** nf) ** (1.0 / nf)
        h = lookup(canvas, _to_canvas(p[..., :2]))
        front = (z > zc) & (np.abs(x) < W) & (y <= _Y[0]) & (y >= _Y[-1])
        return np.where(front, z - (z_front + h), _section_value(p))
    return fn


def _radial_surface(fn, dirs, r0=50.0, r_max=230.0, step=10.0, iters=20):
    """Radius along each direction (from CENTER) where the implicit fn turns positive going outward
    (the surface is star-shaped around CENTER): march out from r0 (inside everywhere) in steps, then
    bisect. dirs [..., 3] -> [...]"""
    inside_last = np.full(dirs.shape[:-1], r0)
    for r in np.arange(r0 + step, r_max, step):
        inside_last = np.where(fn(CENTER + r * dirs) < 0, r, inside_last)
    lo, hi = inside_last, inside_last + step
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        inside = fn(CENTER + mid[..., None] * dirs) < 0
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------------------------
# Rasteriser (painter's algorithm with OpenCV, attributes by barycentric interpolation)
# ---------------------------------------------------------------------------------------------

def rasterize(xy, depth, tris, size, cull=True, out_ids=None, id_offset=0, needed=None):
    """Draw triangles far-to-near into a triangle-id image.

    xy    [V, 2] image coordinates (pixel centres at integers)
    depth [V] distance from the camera (larger = farther)
    tris  [T, 3] vertex indices, ordered so that a triangle facing the camera has positive signed
          area (b - a) x (c - a) in image coordinates (y down)
    size  (H, W); out_ids: an existing int32 id image to draw over; id_offset added to the ids.
    needed: optional bool [H, W], the only pixels the caller reads: triangles whose bounding box
          (+3 px) misses all of them are not drawn (the ids there may then differ; those read do not).
    -> (ids [H, W] int32, -1 = empty, else id_offset + triangle index; kept triangle mask [T])
    """
    H, W = size
    ids = np.full((H, W), -1, np.int32) if out_ids is None else out_ids
    a, b, c = xy[tris[:, 0]], xy[tris[:, 1]], xy[tris[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    keep = area > 0 if cull else np.abs(area) > 0
    lo, hi = np.minimum(np.minimum(a, b), c), np.maximum(np.maximum(a, b), c)
    keep &= (hi[:, 0] >= -1) & (hi[:, 1] >= -1) & (lo[:, 0] <= W) & (lo[:, 1] <= H)
    idx = np.nonzero(keep)[0]
    d = depth[tris[idx]]                                          # [K, 3]
    mean = (d[:, 0] + d[:, 1]) + d[:, 2] if d.dtype == np.float64 else None
    mean = d.mean(1) if mean is None else mean / 3                # as .mean(1), without its slow 3-wide reduction
    order = idx[np.argsort(-mean, kind="stable")]
    if needed is not None:
        order = order[_touches(needed, lo[order], hi[order])]
    fixed = np.round(np.stack([a[order], b[order], c[order]], 1) * 16).astype(np.int32)    # 4 fractional bits
    fill = cv2.fillConvexPoly
    for poly, t in zip(fixed, (order + id_offset).tolist()):      # one OpenCV call per triangle: the cost
        fill(ids, poly, t, cv2.LINE_8, 4)
    return ids, keep


def _touches(needed, lo, hi, margin=3):
    """Which boxes [lo, hi] (image coordinates [K, 2], grown by margin px) contain a needed pixel. -> [K] bool"""
    H, W = needed.shape
    sat = np.zeros((H + 1, W + 1), np.int64)                      # summed-area table
    sat[1:, 1:] = needed.astype(np.int64).cumsum(0).cumsum(1)
    x0 = np.clip(np.floor(lo[:, 0]).astype(np.int64) - margin, 0, W)
    y0 = np.clip(np.floor(lo[:, 1]).astype(np.int64) - margin, 0, H)
    x1 = np.clip(np.ceil(hi[:, 0]).astype(np.int64) + margin + 1, 0, W)
    y1 = np.clip(np.ceil(hi[:, 1]).astype(np.int64) + margin + 1, 0, H)
    return (sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]) > 0


def barycentric(ids, xy, tris, id_offset=0):
    """Per covered pixel: (rows, cols, triangle index, l1, l2) with the point = a + l1 (b - a) +
    l2 (c - a) for the triangle's screen vertices, clipped into the triangle."""
    rows, cols = np.nonzero(ids >= id_offset) if id_offset else np.nonzero(ids >= 0)
    t = ids[rows, cols] - id_offset
    a, b, c = xy[tris[t, 0]], xy[tris[t, 1]], xy[tris[t, 2]]
    e1, e2 = b - a, c - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    px, py = cols - a[:, 0], rows - a[:, 1]
    l1 = (px * e2[:, 1] - py * e2[:, 0]) / det
    l2 = (py * e1[:, 0] - px * e1[:, 1]) / det
    l1, l2 = np.clip(l1, 0, 1), np.clip(l2, 0, 1)
    s = np.maximum(l1 + l2, 1.0)
    l1, l2 = l1 / s, l2 / s
    return rows, cols, t, l1, l2


# ---------------------------------------------------------------------------------------------
# Relief on the base head: nose, eye sockets, brow ridge, cheekbones, lips, chin (a frontal height
# field, mm along +z), and ears (along the side)
# ---------------------------------------------------------------------------------------------

_RELIEF_MM = 0.25                                # canvas resolution, mm per pixel
_RELIEF_X0, _RELIEF_Y1 = -80.0, 45.0             # canvas covers x in [-80, 80], y in [-135, 45]
_RELIEF_SHAPE = (int(180 / _RELIEF_MM), int(160 / _RELIEF_MM))


def _canvas_xy():
    H, W = _RELIEF_SHAPE
    x = _RELIEF_X0 + (np.arange(W) + 0.5) * _RELIEF_MM
    y = _RELIEF_Y1 - (np.arange(H) + 0.5) * _RELIEF_MM
    return np.meshgrid(x, y)


def _to_canvas(pts):
    """face-frame (x, y) mm -> canvas pixel coordinates"""
    pts = np.asarray(pts, np.float64)
    return np.stack([(pts[..., 0] - _RELIEF_X0) / _RELIEF_MM - 0.5,
                     (_RELIEF_Y1 - pts[..., 1]) / _RELIEF_MM - 0.5], -1)


def _gauss(x, y, cx, cy, sx, sy, mirror=True):
    ax = np.abs(x) if mirror else x
    return np.exp(-0.5 * (((ax - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _poly_relief(points, sigma_mm, closed=True, thickness_mm=None):
    """A filled polygon (or a stroked polyline) on the relief canvas, Gaussian-blurred: [H, W] in [0, 1]"""
    img = np.zeros(_RELIEF_SHAPE, np.float32)
    p = np.round(_to_canvas(points) * 16).astype(np.int32)[None]
    if thickness_mm is None:
        cv2.fillPoly(img, p, 1.0, cv2.LINE_AA, 4)
    else:
        cv2.polylines(img, p, closed, 1.0, max(1, int(round(thickness_mm / _RELIEF_MM))), cv2.LINE_AA, 4)
    s = sigma_mm / _RELIEF_MM
    return cv2.GaussianBlur(img, (0, 0), s) if s > 0 else img


def _relief_canvas():
    """Frontal relief height field (mm toward +z) on the canvas grid."""
    x, y = _canvas_xy()
    L = MEAN_2D
    # nose: a ridge from the glabella to the tip over the columella, union with the alar wings
    py = [16, 8, 2, -11, -24, -33, -37, -41, -45, -48, -50.5, -53, -56]
    pz = [0, 1.0, 3.0, 8.5, 15.0, 21.5, 24.5, 23.0, 17.0, 11.0, 6.0, 2.0, 0]
    wy = [16, 2, -11, -24, -33, -38, -43, -48, -53, -56]
    wx = [9.0, 6.5, 6.5, 7.5, 9.5, 11.5, 12.5, 11.0, 8.0, 6.0]
    prof = np.interp(-y, -np.array(py, float), pz)
    half = np.interp(-y, -np.array(wy, float), wx)
    t = np.clip(x / half, -1, 1)
    nose = prof * (1 - t * t) ** 1.3
    nose += 2.5 * _gauss(x, y, 0, -36.5, 4.5, 4.0, mirror=False)                 # rounded tip
    rho2 = ((np.abs(x) - 11.0) / 6.0) ** 2 + ((y + 44.5) / 4.8) ** 2
    alar = 4.5 * np.clip(1 - rho2, 0, 1) ** 1.2                                  # nostril wings
    k = 1.5                                                                      # smooth union
    nose = 0.5 * (nose + alar + np.sqrt((nose - alar) ** 2 + k * k) - k)
    nose -= 3.0 * _gauss(x, y, 6.0, -47.0, 2.4, 1.2)                             # nostrils
    h = nose
    # eyes: orbit hollow, brow ridge, eyeball under the lids
    h = h - 4.5 * _gauss(x, y, 30.0, 2.0, 13.0, 9.0) - 2.0 * _gauss(x, y, 27.0, 7.5, 9.0, 3.2)
    h = h + 3.5 * _gauss(x, y, 30.0, 17.0, 15.0, 5.0) + 1.5 * _gauss(x, y, 0.0, 13.0, 8.0, 5.0, False)
    h = h + 3.6 * _gauss(x, y, 31.3, 1.4, 8.0, 4.3)
    # cheekbones and cheeks
    h = h + 3.5 * _gauss(x, y, 45.0, -22.0, 12.0, 9.0) + 2.0 * _gauss(x, y, 33.0, -38.0, 10.0, 10.0)
    # mouth: dental arch, vermilion of both lips, the gap between them
    h = h + 5.0 * _gauss(x, y, 0.0, -67.0, 20.0, 12.0, False)
    upper = L[[48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60]]
    lower = L[[54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64]]
    inner = L[60:68]
    h = h + 3.0 * _poly_relief(upper, 1.3) + 3.5 * _poly_relief(lower, 1.5) - 1.0 * _poly_relief(inner, 1.0)
    # philtrum ridges and groove, nasolabial folds, mouth corners, mentolabial sulcus, chin
    for s in (-1, 1):
        h = h + 0.9 * _poly_relief([(s * 4.6, -50.5), (s * 6.4, -62.0)], 0.9, False, 0.8)
        h = h - 1.6 * _poly_relief([(s * 16, -43), (s * 24, -56), (s * 32, -71)], 2.0, False, 1.0)
    h = h - 0.8 * _gauss(x, y, 0, -56.0, 1.8, 4.0, False)
    h = h - 1.2 * _gauss(x, y, 30.5, -69.0, 2.5, 2.5)
    h = h - 2.5 * _gauss(x, y, 0, -88.5, 14.0, 3.5, False) + 5.0 * _gauss(x, y, 0, -104.0, 13.0, 9.0, False)
    return h.astype(np.float32)


def _ear_relief(P):
    """Outward height (mm, along the radius) of the ears, from base-surface points P [..., 3]."""
    out = np.zeros(P.shape[:-1])
    for s in (-1.0, 1.0):
        side = (s * P[..., 0]) > 45
        a, b = P[..., 2] - (-100.0), P[..., 1] - (-20.0)        # along z (back < 0) and y
        c, sn = math.cos(math.radians(14)), math.sin(math.radians(14))
        a, b = c * a + sn * b, -sn * a + c * b                   # the ear leans back at the top
        rho = np.sqrt((a / 16.0) ** 2 + (b / 30.0) ** 2)
        flap = np.clip((1.0 - rho) / 0.12, 0, 1) ** 0.7          # soft outline
        back = np.clip(0.5 - 0.5 * a / 16.0, 0, 1)               # 0 at the front attachment, 1 at the rim
        helix = np.exp(-0.5 * ((rho - 0.86) / 0.07) ** 2)        # rolled rim
        concha = np.exp(-0.5 * (((a - 3.0) / 6.0) ** 2 + ((b + 5.0) / 8.0) ** 2))
        hgt = flap * (4.0 + 11.0 * back ** 0.8) + 2.0 * helix * flap - 5.0 * concha * flap
        out += np.where(side, np.maximum(hgt, 0.0), 0.0)
    return out


# ---------------------------------------------------------------------------------------------
# Mesh over the (u, v) grid
# ---------------------------------------------------------------------------------------------

def _grid_stops(n, dense, step_dense, step_sparse):
    """Vertex positions 0 .. n on a texel axis: step_dense where dense(texel) else step_sparse."""
    stops, t = [], 0
    while t < n - 1:
        stops.append(t)
        t += step_dense if dense(t) else step_sparse
    stops.append(n - 1)
    return np.array(stops, np.float64)


def uv_mesh(step_dense=6, step_sparse=12):
    """Vertex (u, v) texel coordinates [V, 2] and triangles [T, 3] of the head mesh. Columns wrap:
    the last column sits at u = UV_W (the first column again, for texture lookups on a wrapped
    texture). Triangles have positive signed area on screen when they face the camera."""
    us = _grid_stops(UV_W + 1, lambda u: abs(theta_of_u(u)) < math.radians(85), step_dense, step_sparse)
    us[-1] = UV_W
    vs = _grid_stops(UV_H, lambda v: math.radians(-78) < phi_of_v(v) < math.radians(50), step_dense, step_sparse)
    uu, vv = np.meshgrid(us, vs)
    uv = np.stack([uu.ravel(), vv.ravel()], -1)
    nr, nc = len(vs), len(us)
    i, j = np.meshgrid(np.arange(nr - 1), np.arange(nc - 1), indexing="ij")
    a, b = (i * nc + j).ravel(), (i * nc + j + 1).ravel()
    c, d = ((i + 1) * nc + j).ravel(), ((i + 1) * nc + j + 1).ravel()
    tris = np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)]).astype(np.int64)
    return uv, tris


# ---------------------------------------------------------------------------------------------
# Pose and camera
# ---------------------------------------------------------------------------------------------

def rotation(yaw, pitch, roll):
    """Head rotation (degrees) as a 3x3 matrix acting on face-frame vectors: yaw > 0 turns the face
    toward the image right, pitch > 0 raises the face, roll > 0 tilts it counter-clockwise in the
    image. R = Rz(roll) Rx(pitch) Ry(yaw)."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    Ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    Rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    Rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return Rz @ Rx @ Ry


@dataclass
class Camera:
    """Pinhole camera looking at the head centre from ``distance`` mm along +z of the view frame.
    Image point of a face-frame point p: q = R (p - CENTER); x = cx + f q_x / (distance - q_z),
    y = cy - f q_y / (distance - q_z)."""
    R: np.ndarray            # 3x3 head rotation
    focal: float             # pixels
    distance: float          # mm, camera to CENTER
    cx: float
    cy: float

    def view(self, p):
        """face-frame points [..., 3] -> view-frame points [..., 3]"""
        return (np.asarray(p) - CENTER) @ self.R.T

    def project(self, p):
        """face-frame points [..., 3] -> (image xy [..., 2], depth [...] = distance to the camera plane)"""
        q = self.view(p)
        depth = self.distance - q[..., 2]
        x = self.cx + self.focal * q[..., 0] / depth
        y = self.cy - self.focal * q[..., 1] / depth
        return np.stack([x, y], -1), depth

    def eye(self):
        """Camera centre in the face frame."""
        return CENTER + self.R.T @ np.array([0.0, 0.0, self.distance])


# ---------------------------------------------------------------------------------------------
# The mean model
# ---------------------------------------------------------------------------------------------

# Depth guesses (face frame z, mm) used to pick the front-most surface point under each inner
# landmark, and 3D targets of the anatomical contour points (x, y from MEAN_2D; z near the ear for
# the upper contour, along the jaw line below). See ``_place_landmarks``.
_Z_GUESS = {17: -14, 18: -5, 19: 1, 20: 3, 21: 5, 27: 6, 28: 10, 29: 15, 30: 22, 31: 2, 32: 6,
            33: 8, 36: -8, 37: -2, 38: -1, 39: 0, 40: -1, 41: -2, 48: -6, 49: 4, 50: 8, 51: 9,
            57: 8, 58: 7, 59: 3, 60: -3, 61: 5, 62: 6, 66: 5, 67: 4}
_CONTOUR_Z = (-74.0, -72.0, -68.0, -62.0, -52.0, -40.0, -27.0, -16.0, -11.0)
FACE_CENTER_2D = np.array([0.0, -45.0])          # where the contour rings head to (frontal x, y)
RING_SAMPLES = 48


@dataclass
class MeanModel:
    """The mean head. Maps are on the (u, v) grid [UV_H, UV_W, ...]."""
    P: np.ndarray              # [H, W, 3] float64 surface points, face frame
    normals: np.ndarray        # [H, W, 3] float32 outward unit normals of P
    relief: np.ndarray         # [H, W] relief height added to the base head (mm)
    ao: np.ndarray             # [H, W] float32 ambient occlusion in [0, 1]
    landmark_uv: np.ndarray    # [68, 2] (u, v) of the 68 landmarks
    ring_uv: np.ndarray        # [17, RING_SAMPLES, 2] contour rings, ring_uv[k, 0] = landmark_uv[k]
    outward: np.ndarray        # [17, 3] face-frame outward direction of each contour point
    mesh_uv: np.ndarray        # [V, 2]
    mesh_tris: np.ndarray      # [T, 3]

    @property
    def landmarks(self):
        """[68, 3] mean landmark positions (face frame, mm)."""
        return sample_map(self.P, self.landmark_uv)


def _texel_dirs():
    th = theta_of_u(np.arange(UV_W))[None, :]
    ph = phi_of_v(np.arange(UV_H))[:, None]
    return directions(th + 0 * ph, ph + 0 * th)


def _newton_uv(Pmap, target_xy, uv0, iters=12):
    """(u, v) where the surface's (x, y) equals target_xy, starting from uv0 (Gauss-Newton)."""
    uv = uv0.copy()
    for _ in range(iters):
        p = sample_map(Pmap, uv)[..., :2]
        du = (sample_map(Pmap, uv + [0.5, 0])[..., :2] - sample_map(Pmap, uv - [0.5, 0])[..., :2])
        dv = (sample_map(Pmap, uv + [0, 0.5])[..., :2] - sample_map(Pmap, uv - [0, 0.5])[..., :2])
        J = np.stack([du, dv], -1)                                    # [N, 2 (xy), 2 (uv)]
        step = np.linalg.solve(J, (target_xy - p)[..., None])[..., 0]
        uv = uv + np.clip(step, -8, 8)
    return uv


def _place_landmarks(Pmap, pts2d=MEAN_2D):
    """Landmark (u, v): inner points under their ``pts2d`` position (front-most surface, found from a
    depth guess); contour points toward their 3D target from CENTER."""
    uv = np.zeros((68, 2))
    inner = np.array([k for k in range(17, 68) if k in _Z_GUESS or _FLIP68[k] in _Z_GUESS])
    zg = np.array([_Z_GUESS.get(k, _Z_GUESS.get(_FLIP68[k])) for k in inner], float)
    start = uv_of_point(np.concatenate([pts2d[inner], zg[:, None]], 1))
    uv[inner] = _newton_uv(Pmap, pts2d[inner], start)
    zc = np.array([_CONTOUR_Z[min(k, 16 - k)] for k in range(17)])
    uv[:17] = uv_of_point(np.concatenate([pts2d[:17], zc[:, None]], 1))
    return uv


def _outward(pts2d):
    """[17, 3] face-frame outward directions of the contour points (from FACE_CENTER_2D)."""
    out2d = pts2d[:17] - FACE_CENTER_2D
    return np.concatenate([out2d / np.linalg.norm(out2d, axis=1, keepdims=True), np.zeros((17, 1))], 1)


def _rings(Pmap, landmark_uv):
    """For each contour point, RING_SAMPLES (u, v) from the point toward the face centre."""
    f_uv = _newton_uv(Pmap, FACE_CENTER_2D[None], uv_of_point(np.array([[0.0, -45.0, 15.0]])))[0]
    t = np.linspace(0.0, 0.8, RING_SAMPLES)[None, :, None]
    a = landmark_uv[:17, None, :]
    return a + t * (f_uv[None, None, :] - a)


@functools.lru_cache(maxsize=1)
def mean_model():
    """Build (once per process, ~1 s) the mean head, its landmarks and mesh."""
    dirs = _texel_dirs()                                              # [H, W, 3]
    # the lofted head is smooth: solve it on a half-resolution grid and upsample
    half = directions(theta_of_u(np.arange(UV_W // 2) * 2 + 0.5)[None, :],
                      phi_of_v(np.arange(UV_H // 2) * 2 + 0.5)[:, None])
    R = cv2.resize(_radial_surface(_section_value, half), (UV_W, UV_H), interpolation=cv2.INTER_CUBIC)
    # the face: the lofted head plus the frontal relief height field, solved near the base radius
    canvas = _relief_canvas()
    front = np.broadcast_to(np.abs(theta_of_u(np.arange(UV_W)))[None, :] < math.radians(100), R.shape)
    lo, hi = R[front] - 12.0, R[front] + 40.0
    fn = _relief_value(canvas)
    d = dirs[front]
    for _ in range(18):
        mid = 0.5 * (lo + hi)
        inside = fn(CENTER + mid[:, None] * d) < 0
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    relief = np.zeros_like(R)
    relief[front] = 0.5 * (lo + hi) - R[front]
    Pmap = CENTER + (R + relief)[..., None] * dirs
    landmark_uv = _place_landmarks(Pmap)
    ring_uv = _rings(Pmap, landmark_uv)
    ear = _ear_relief(CENTER + R[..., None] * dirs)                    # ears after the contour is placed
    relief = relief + ear
    R = R + relief
    Pmap = CENTER + R[..., None] * dirs
    # ambient occlusion from concavity of the radius map
    Rf = R.astype(np.float32)
    cav = cv2.GaussianBlur(Rf, (0, 0), 5.0, borderType=cv2.BORDER_REPLICATE) - Rf
    ao = np.clip(1.0 - 0.09 * np.maximum(cav, 0), 0.35, 1.0).astype(np.float32)
    mesh_uv, mesh_tris = uv_mesh()
    return MeanModel(normals=surface_normals(Pmap), P=Pmap, relief=relief.astype(np.float32), ao=ao, landmark_uv=landmark_uv,
                     ring_uv=ring_uv, outward=_outward(MEAN_2D), mesh_uv=mesh_uv, mesh_tris=mesh_tris)


@functools.lru_cache(maxsize=1)
def label_model():
    """The mean head with its landmarks (and jaw rings) at ``LABEL_2D``, 300-W's labelling convention:
    what renderer version 4 labels with, while the face is still drawn around MEAN_2D (``mean_model``).
    The points are placed on the finished surface (mean_model places its own before the ears are added;
    the ears lie outside the face, where only the jaw rings' ends reach)."""
    m = mean_model()
    uv = _place_landmarks(m.P, LABEL_2D)
    return dataclasses.replace(m, landmark_uv=uv, ring_uv=_rings(m.P, uv), outward=_outward(LABEL_2D))


def surface_normals(P):
    """Outward unit normals of a surface map P [H, W, 3] (central differences, u wraps), float32."""
    P = np.asarray(P, np.float32)
    du, dv = [], []
    for k in range(3):                                     # one contiguous plane per coordinate
        p = np.ascontiguousarray(P[..., k])
        d = np.empty_like(p)
        d[:, 1:-1] = p[:, 2:] - p[:, :-2]
        d[:, 0] = p[:, 1] - p[:, -1]
        d[:, -1] = p[:, 0] - p[:, -2]
        du.append(d)
        d = np.empty_like(p)
        d[1:-1] = p[2:] - p[:-2]
        d[0], d[-1] = d[1], d[-2]
        dv.append(d)
    n = [dv[1] * du[2] - dv[2] * du[1],                    # dv x du points out of the head
         dv[2] * du[0] - dv[0] * du[2],
         dv[0] * du[1] - dv[1] * du[0]]
    norm = np.maximum(np.sqrt((n[0] * n[0] + n[1] * n[1]) + n[2] * n[2]), 1e-12)   # = sum(-1): left to right
    return np.stack([v / norm for v in n], -1)


def contour_on_silhouette(P, model, cam):
    """Image positions of the 68 landmarks for surface P seen by cam, with the 300W contour rule:
    each jaw point is the sample of its ring (from the anatomical point toward the face centre) that
    lies farthest out along the point's outward image direction - the anatomical point when that side
    faces the camera, the visible face boundary when it turns away.

    -> (xy [68, 2], depth [68], ring index chosen [17])"""
    X = sample_map(P, model.landmark_uv)                              # [68, 3]
    xy, depth = cam.project(X)
    ring = sample_map(P, model.ring_uv)                               # [17, S, 3]
    rxy, rdepth = cam.project(ring)
    o = cam.project(X[:17] + 5.0 * model.outward)[0] - xy[:17]        # outward image directions
    o = o / np.maximum(np.linalg.norm(o, axis=1, keepdims=True), 1e-9)
    score = np.einsum("ksc,kc->ks", rxy - xy[:17, None], o)
    best = np.argmax(score, axis=1)
    k = np.arange(17)
    xy[:17], depth[:17] = rxy[k, best], rdepth[k, best]
    return xy, depth, best


# ---------------------------------------------------------------------------------------------
# Identity and expression deformations: smooth displacement fields over the mean surface
# ---------------------------------------------------------------------------------------------

# Each linear mode is a displacement field D(p) (mm at coefficient 1) of the mean surface point p,
# written as region weight x displacement. Region weights are Gaussians in the frontal (x, y) plane
# (mirrored to both sides unless a side is given), faded out behind the face. Coefficients are
# sampled by the generator; the comments say what coefficient 1 does.

def _w(X, cx, cy, sx, sy, side=0):
    """Gaussian region weight over mean points X [..., 3]; side = 0 both (mirrored), -1 subject's
    right (x < 0) only, +1 left only."""
    x, y = X[..., 0], X[..., 1]
    if side == 0:
        ax = np.abs(x)
    else:
        ax = side * x
    g = np.exp(-0.5 * (((ax - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))
    if side != 0:
        g = g * np.clip(0.5 + side * x / 6.0, 0, 1)
    return g * np.clip((X[..., 2] + 70.0) / 25.0, 0, 1)


def _smooth01(t):
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


EYE_C = (31.3, 1.5)           # mean eye centre (|x|, y), mm


def _lid_close(X, side):
    """Vertical displacement (mm, <= 0) that closes one eye: the upper lid margin comes down onto the
    lower lid, the skin above follows and fades out toward the crease, the opening between the lids is
    compressed onto the lower lid line. side -1: subject's right eye, +1: left."""
    from .targets import fit_curve
    x, y = X[..., 0], X[..., 1]
    t = (side * x - EYE_C[0]) / 12.5                     # -1 .. 1 between the eye corners
    up_idx, lo_idx = ([36, 37, 38, 39], [39, 40, 41, 36]) if side < 0 else ([42, 43, 44, 45], [45, 46, 47, 42])
    lids = []
    for idx in (up_idx, lo_idx):                         # the lid margins through the mean landmarks
        c = fit_curve(MEAN_2D[idx], False, 8)
        o = np.argsort(c[:, 0])
        lids.append(np.interp(x, c[o, 0], c[o, 1]))
    upper, lower = lids
    gap = np.maximum(upper - lower, 0.0)
    w = np.where(y >= upper, np.exp(-0.5 * (np.maximum(y - upper - 1.0, 0) / 3.5) ** 2),
                 np.clip((y - lower) / np.maximum(gap, 1e-6), 0, 1))
    w = w * np.exp(-0.5 * np.maximum(np.abs(t) - 0.9, 0) ** 2 / 0.15 ** 2)
    return -gap * w * np.clip(0.5 + side * x / 6.0, 0, 1) * np.clip((X[..., 2] + 40.0) / 10.0, 0, 1)


def _mode_fields(X):
    """Linear modes as (name -> displacement field [..., 3]) over mean points X [..., 3]."""
    x, y, z = X[..., 0], X[..., 1], X[..., 2]
    sx = np.sign(x)
    one, zero = np.ones_like(x), np.zeros_like(x)
    V = lambda a, b, c: np.stack([a * one, b * one, c * one], -1)
    front = np.clip((z + 70.0) / 25.0, 0, 1)
    lower = _smooth01((-45.0 - y) / 45.0)
    eye_c = EYE_C
    lid = {s: _lid_close(X, s) for s in (-1, 1)}
    f = {}
    # --- identity (coefficients ~ N(0, 1)) ---
    f["jaw_width"] = V(0.09 * x * lower, zero, zero)                        # lower face 9 % wider
    f["face_length"] = V(zero, -7.0 * _smooth01((-40.0 - y) / 80.0), zero)  # chin 7 mm lower
    f["chin"] = _w(X, 0, -112, 16, 12)[..., None] * V(0, -2.5, 4.0)            # chin forward, down
    f["nose_length"] = (_w(X, 0, -35, 13, 16) * np.clip((4.0 - y) / 46.0, 0, 1))[..., None] * V(0, -4.5, 1.0)
    f["nose_width"] = (_w(X, 0, -42, 16, 7) * 0.2)[..., None] * V(x, 0, 0)
    f["nose_bridge"] = (_w(X, 0, -20, 7, 14))[..., None] * V(0, 0, 3.0)      # higher bridge
    f["eye_size"] = (_w(X, eye_c[0], eye_c[1], 9, 6) * 0.12)[..., None] * \
        np.stack([x - sx * eye_c[0], y - eye_c[1], zero], -1)
    f["eye_spacing"] = _w(X, eye_c[0], eye_c[1], 11, 9)[..., None] * V(3.0 * sx, 0, 0)
    f["eye_tilt"] = (_w(X, eye_c[0], eye_c[1], 10, 7) * 0.12 * (np.abs(x) - eye_c[0]))[..., None] * V(0, 1, 0)
    f["eye_open"] = V(zero, -0.25 * (lid[-1] + lid[1]), zero)              # lids 25 % wider apart
    f["brow_height"] = _w(X, 36, 18, 20, 6)[..., None] * V(0, 4.0, 0)
    f["brow_arch"] = _w(X, 38, 22, 8, 5)[..., None] * V(0, 3.0, 0)
    f["mouth_width"] = (_w(X, 0, -71, 30, 10) * 0.12)[..., None] * V(x, 0, 0)
    f["lip_thickness"] = (_w(X, 0, -72, 24, 9) * 0.25)[..., None] * np.stack([zero, y + 72.0, zero], -1)
    f["mouth_height"] = _w(X, 0, -71, 30, 12)[..., None] * V(0, -3.0, 0)
    f["cheeks"] = _w(X, 40, -48, 16, 16)[..., None] * np.stack([3.0 * sx, zero, 3.0 * one], -1)
    f["forehead"] = (_smooth01((y - 25.0) / 45.0) * front)[..., None] * V(0, 0, -5.0)   # sloping back
    # --- expression ---
    f["lips_part"] = np.stack([zero, zero, zero], -1)                        # filled below
    gap_c, half_gap = -72.05, 2.85                                           # mean mouth gap
    d = y - gap_c
    # linear across the gap, flat for 1.5 mm beyond each lip margin (so that texture-grid
    # interpolation at the margin landmarks sees the full displacement), then fading out
    prof = np.where(np.abs(d) < half_gap, d / half_gap,
                    np.sign(d) * np.exp(-0.5 * (np.maximum(np.abs(d) - half_gap - 1.5, 0) / 4.0) ** 2))
    f["lips_part"] = (prof * _w(X, 0, -71, 22, 40) * np.exp(-0.5 * (np.maximum(np.abs(x) - 22, 0) / 5.0) ** 2))[..., None] * V(0, half_gap, 0)
    for s, tag in ((-1, "R"), (1, "L")):
        f["smile_" + tag] = (_w(X, 29, -68, 9, 8, s)[..., None] * V(s * 4.5, 5.5, -3.0)
                             + _w(X, 17, -65, 7, 5, s)[..., None] * V(s * 1.5, 1.5, -1.0)
                             + _w(X, 38, -45, 12, 12, s)[..., None] * V(0, 3.0, 2.0)
                             + _w(X, 31, -3.5, 8, 2.5, s)[..., None] * V(0, 1.3, 0))
        f["blink_" + tag] = V(zero, lid[s], -0.08 * lid[s])                 # eye closed
        f["brow_raise_" + tag] = _w(X, 32, 21, 20, 8, s)[..., None] * V(0, 7.0, 0) \
            + V(zero, -0.15 * lid[s], zero)
    f["frown"] = _w(X, 29, -69, 8, 8)[..., None] * V(0, -5.0, -1.0) + _w(X, 0, -82, 12, 6)[..., None] * V(0, 0, 2.0)
    f["pucker"] = (_w(X, 0, -71, 22, 12))[..., None] * np.stack([-0.35 * x, zero, 6.0 * one], -1)
    f["stretch"] = (_w(X, 0, -71, 30, 10))[..., None] * np.stack([0.2 * x, -1.0 * one, -2.0 * one], -1)
    f["brow_lower"] = _w(X, 18, 18, 12, 7)[..., None] * np.stack([-3.0 * sx, -4.0 * one, one], -1)
    f["squint"] = V(zero, 0.3 * (lid[-1] + lid[1]), zero) + _w(X, 31, -4, 9, 2.5)[..., None] * V(0, 1.5, 0.5)
    f["sneer"] = _w(X, 9, -62, 8, 5)[..., None] * V(0, 3.0, 0.5) + _w(X, 12, -40, 6, 6)[..., None] * V(0, 1.5, 0)
    f["mouth_side"] = _w(X, 0, -71, 22, 14)[..., None] * V(5.0, 0, 0)
    f["cheek_puff"] = _w(X, 36, -62, 12, 12)[..., None] * np.stack([4.0 * sx, zero, 4.0 * one], -1)
    return f


IDENTITY_MODES = ("jaw_width", "face_length", "chin", "nose_length", "nose_width", "nose_bridge",
                  "eye_size", "eye_spacing", "eye_tilt", "eye_open", "brow_height", "brow_arch",
                  "mouth_width", "lip_thickness", "mouth_height", "cheeks", "forehead")
EXPRESSION_MODES = ("lips_part", "smile_R", "smile_L", "blink_R", "blink_L", "brow_raise_R",
                    "brow_raise_L", "frown", "pucker", "stretch", "brow_lower", "squint", "sneer",
                    "mouth_side", "cheek_puff")
JAW_PIVOT = np.array([0.0, -22.0, -82.0])       # temporomandibular joint axis (face frame, along x)


def _jaw_weight(X):
    """1 on the mandible (below the mouth line, lower lip, chin, jaw), 0 above; a sharp step across
    the mouth gap, a wide blend on the cheeks toward the ears."""
    x, y, z = X[..., 0], X[..., 1], X[..., 2]
    ax = np.abs(x)
    line = np.interp(ax, [0, 22, 29, 45, 80], [-72.05, -72.05, -69.5, -58, -28])   # mouth line
    width = np.interp(ax, [0, 22, 30, 50], [1.2, 1.2, 4.0, 16.0])
    w = _smooth01(0.5 - (y - line) / (2 * width))
    return w * np.clip((z + 125.0) / 30.0, 0, 1)


@dataclass
class ModeSet:
    """Displacement fields cut to their support: name -> (v0, v1, u0, u1, field [v1-v0, u1-u0, 3])."""
    fields: dict
    jaw: tuple                 # (v0, v1, u0, u1, weight [.., ..])
    cavity: tuple              # (v0, v1, u0, u1, weight): texels inside the mean mouth gap


def _crop(field, thr=1e-3):
    mag = np.abs(field).max(-1) if field.ndim == 3 else np.abs(field)
    vs, us = np.nonzero(mag > thr)
    v0, v1, u0, u1 = vs.min(), vs.max() + 1, us.min(), us.max() + 1
    return int(v0), int(v1), int(u0), int(u1), np.ascontiguousarray(field[v0:v1, u0:u1]).astype(np.float32)


@functools.lru_cache(maxsize=1)
def mode_set():
    m = mean_model()
    fields = {k: _crop(v) for k, v in _mode_fields(m.P).items()}
    jaw = _crop(_jaw_weight(m.P))
    x, y = m.P[..., 0], m.P[..., 1]
    gap_top = np.interp(np.abs(x), [0, 7.7, 24.2], [-69.2, -68.5, -68.9])
    gap_bot = np.interp(np.abs(x), [0, 7.9, 24.2], [-74.9, -74.0, -68.9])
    half = np.maximum(0.5 * (gap_top - gap_bot), 1e-3)
    t = np.clip(1.0 - np.abs(y - 0.5 * (gap_top + gap_bot)) / half, 0, 1)     # 1 mid-gap, 0 at the lips
    cav = np.sqrt(t) * (np.abs(x) < 24.2) * (m.P[..., 2] > -30)
    return ModeSet(fields=fields, jaw=jaw, cavity=_crop(cav.astype(np.float32), 1e-3))


def deform(model, coeffs, jaw_deg=0.0, scale=(1.0, 1.0, 1.0), modes=None):
    """Surface of one face: P = mean + sum_m c_m D_m, then the jaw rotated by jaw_deg (> 0 opens the
    mouth) about the TMJ axis, then scaled about the face centre by (sx, sy, sz).
    coeffs: dict mode name -> coefficient. -> P [UV_H, UV_W, 3] float64"""
    modes = modes or mode_set()
    P = model.P.astype(np.float32)
    for name, c in coeffs.items():
        if abs(c) < 0.01:
            continue
        if name not in modes.fields:
            raise KeyError(f"unknown deformation mode {name!r}")
        v0, v1, u0, u1, D = modes.fields[name]
        P[v0:v1, u0:u1] += c * D
    if jaw_deg != 0.0:
        v0, v1, u0, u1, w = modes.jaw
        a = math.radians(jaw_deg)
        Rj = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
        Pj = P[v0:v1, u0:u1]
        Q = np.empty(Pj.shape, np.float64)
        for k in range(3):                                 # per coordinate: the same float64 arithmetic
            Q[..., k] = Pj[..., k].astype(np.float64) - JAW_PIVOT[k]
        moved = Q @ Rj.T.astype(np.float32)
        shift = (JAW_PIVOT + np.array([0.0, 0.0, 0.12 * jaw_deg])).astype(np.float32)
        for k in range(3):
            Pj[..., k] += w * ((moved[..., k] + shift[k:k + 1]) - Pj[..., k])
    # the mouth gap recedes into a cavity as it opens (the mean gap is 5.7 mm at the centre)
    gap = np.linalg.norm(sample_map(P, model.landmark_uv[62]) - sample_map(P, model.landmark_uv[66]))
    v0, v1, u0, u1, w = modes.cavity
    P[v0:v1, u0:u1, 2] -= w * min(1.2 * gap, 30.0)
    if tuple(scale) != (1.0, 1.0, 1.0):
        c, k = np.array([0.0, -45.0, 0.0], np.float32), np.asarray(scale, np.float32)
        out = np.empty_like(P)
        for j in range(3):                                 # per coordinate (a 3-wide broadcast is slow)
            out[..., j] = (P[..., j] - c[j]) * k[j] + c[j]
        P = out
    return P
