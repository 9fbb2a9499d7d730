"""Training targets, in NumPy so they can be inspected: STAR's Gaussian point heatmaps, STAR's
boundary (edge) maps, and the normalised coordinates direct-regression models learn.

Conventions (STAR, see architectures.md §2.5 and §2.7):

* Landmarks are in crop pixel coordinates with pixel centres at integers (pixel i covers
  [i - 0.5, i + 0.5]); on a 256-pixel crop they range over [-0.5, 255.5].
* Point heatmaps: one map per landmark, a Gaussian of sigma 1.5 px, peak 1, drawn at full
  resolution on a window of half-size 3 sigma around the rounded position (no sub-pixel offset),
  then bilinearly resized by 1/4 (align_corners=False, torch's rule) to 64 x 64.
* Edge maps: one map per boundary of the layout: the boundary's landmarks densified by an
  interpolating cubic spline (5 samples per segment), drawn as an anti-aliased polyline of
  thickness 1 on a 4x supersampled canvas, area-resized back, scaled to [0, 1], then resized by 1/4
  like the point maps. STAR densifies with scipy's ``splprep(s=0)``; ``fit_curve`` here is our own
  implementation of the same interpolating spline (not-a-knot ends for open curves, periodic for
  closed ones, chord-length parameters), so scipy is not needed at run time.
* Regression targets: (x, y) mapped to [-1, 1] by x_n = (2x + 1) / W - 1 (STAR's ``_norm_points``,
  align_corners=False) and clamped, flattened to [2N] as (x0, y0, x1, y1, ...).
"""
from __future__ import annotations


import cv2
import numpy as np

from ..landmarks import get as get_layout

__all__ = ["fit_curve", "point_heatmaps", "edge_maps", "point_heatmaps_reference", "edge_maps_reference",
           "resize_quarter", "normalize_points",
           "denormalize_points", "regression_target", "HEATMAP_SIGMA", "HEATMAP_SCALE"]

HEATMAP_SIGMA = 1.5      # px at the input resolution (STAR encoder_default)
HEATMAP_SCALE = 0.25     # heatmap size / input size (stride 4)


def _check_points(points, n=None, name="points"):
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"{name}: expected shape [N, 2], got {pts.shape}")
    if n is not None and pts.shape[0] != n:
        raise ValueError(f"{name}: expected {n} points for this layout, got {pts.shape[0]}")
    if not np.all(np.isfinite(pts)):
        raise ValueError(f"{name}: contains NaN or inf")
    return pts


# ---------------------------------------------------------------------------------------------
# Interpolating cubic spline (the curve scipy.interpolate.splprep(s=0, k=3) fits)
# ---------------------------------------------------------------------------------------------

def _spline_second_derivatives(u, y, closed):
    """Second derivatives M at the knots of the interpolating cubic spline through (u_i, y_i).
    Open curves: not-a-knot ends (the third derivative is continuous at the second and the
    second-to-last knot, which is what FITPACK's interpolating spline with knots at the interior data
    parameters amounts to). Closed curves: y_0 == y_n and periodic first and second derivatives.
    u [n+1], y [n+1, D] -> M [n+1, D]"""
    h = np.diff(u)                                        # [n]
    n = len(h)
    rhs_slope = np.diff(y, axis=0) / h[:, None]           # [n, D]
    if closed:
        # unknowns M_0 .. M_{n-1} (M_n = M_0); continuity of y' at every knot, indices mod n
        A = np.zeros((n, n))
        b = np.zeros((n, y.shape[1]))
        for i in range(n):
            hp, hn = h[i - 1], h[i]                       # segment before / after knot i
            A[i, (i - 1) % n] += hp / 6
            A[i, i] += (hp + hn) / 3
            A[i, (i + 1) % n] += hn / 6
            b[i] = rhs_slope[i] - rhs_slope[i - 1]
        M = np.linalg.solve(A, b)
        return np.concatenate([M, M[:1]], 0)
    A = np.zeros((n + 1, n + 1))
    b = np.zeros((n + 1, y.shape[1]))
    for i in range(1, n):
        A[i, i - 1], A[i, i], A[i, i + 1] = h[i - 1] / 6, (h[i - 1] + h[i]) / 3, h[i] / 6
        b[i] = rhs_slope[i] - rhs_slope[i - 1]
    # not-a-knot: (M1 - M0)/h0 = (M2 - M1)/h1 and the same at the other end
    A[0, 0], A[0, 1], A[0, 2] = 1 / h[0], -1 / h[0] - 1 / h[1], 1 / h[1]
    A[n, n - 2], A[n, n - 1], A[n, n] = 1 / h[n - 2], -1 / h[n - 2] - 1 / h[n - 1], 1 / h[n - 1]
    return np.linalg.solve(A, b)


def _spline_eval(u, y, M, t):
    """Evaluate the spline with knots u, values y, second derivatives M at parameters t."""
    i = np.clip(np.searchsorted(u, t, side="right") - 1, 0, len(u) - 2)
    h = (u[i + 1] - u[i])[:, None]
    a = (u[i + 1] - t)[:, None] / h
    c = (t - u[i])[:, None] / h
    return a * y[i] + c * y[i + 1] + ((a ** 3 - a) * M[i] + (c ** 3 - c) * M[i + 1]) * h * h / 6


def fit_curve(points, closed=False, density=5):
    """Densify a landmark boundary as STAR's ``_fit_curve`` does: an interpolating cubic spline with
    chord-length parameters, sampled ``density`` times per segment (closed curves: over the closing
    segment too, without repeating the first point; open curves: plus the last point).
    Fewer than 4 points (after closing), or repeated consecutive points, return the points unchanged
    (STAR falls back to the raw points when splprep fails).

    points [N, 2] -> [M, 2]"""
    pts = _check_points(points)
    if closed:
        pts = np.concatenate([pts, pts[:1]], 0)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    if len(pts) < 4 or np.any(seg <= 1e-9 * max(1.0, seg.max(initial=0.0))):
        return _check_points(points).copy()
    u = np.concatenate([[0.0], np.cumsum(seg)])
    u = u / u[-1]
    M = _spline_second_derivatives(u, pts, closed)
    t = np.concatenate([np.linspace(u[i], u[i + 1], density, endpoint=False) for i in range(len(u) - 1)])
    if not closed:
        t = np.concatenate([t, u[-1:]])
    return _spline_eval(u, pts, M, t)


# ---------------------------------------------------------------------------------------------
# Resizing by 1/4 with torch's bilinear rule
# ---------------------------------------------------------------------------------------------

def resize_quarter(maps, scale=HEATMAP_SCALE):
    """Bilinear resize of [C, H, W] maps to [C, int(H*scale), int(W*scale)] with torch's
    ``F.interpolate(size=..., mode='bilinear', align_corners=False)`` index rule (the output size is
    given, so the ratio is in/out): src = (dst + 0.5) * in/out - 0.5, clamped at 0."""
    maps = np.asarray(maps)
    C, H, W = maps.shape
    oh, ow = int(H * scale), int(W * scale)

    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        l1 = src - i0
        return i0, i1, 1.0 - l1, l1

    y0, y1, wy0, wy1 = axis(H, oh)
    x0, x1, wx0, wx1 = axis(W, ow)
    dt = maps.dtype
    rows = maps[:, y0, :] * wy0[None, :, None].astype(dt) + maps[:, y1, :] * wy1[None, :, None].astype(dt)
    return rows[:, :, x0] * wx0.astype(dt) + rows[:, :, x1] * wx1.astype(dt)        # [C, oh, ow]


# ---------------------------------------------------------------------------------------------
# Point heatmaps and edge maps
# ---------------------------------------------------------------------------------------------

def _gaussian_window(img, pt, sigma):
    """STAR ``_circle``: write a peak-1 Gaussian on a (2*3sigma+1)-wide window whose corner is
    int(pt - 3 sigma) (truncation toward zero, as Python's int()). In place on img [H, W]."""
    tmp = sigma * 3
    ul = [int(pt[0] - tmp), int(pt[1] - tmp)]
    br = [int(pt[0] + tmp + 1), int(pt[1] + tmp + 1)]
    H, W = img.shape
    if ul[0] > W - 1 or ul[1] > H - 1 or br[0] - 1 < 0 or br[1] - 1 < 0:
        return
    size = 2 * tmp + 1
    x = np.arange(0, size, 1, np.float32)
    y = x[:, None]
    c = size // 2
    g = np.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * sigma ** 2))
    gx = max(0, -ul[0]), min(br[0], W) - ul[0]
    gy = max(0, -ul[1]), min(br[1], H) - ul[1]
    ix = max(0, ul[0]), min(br[0], W)
    iy = max(0, ul[1]), min(br[1], H)
    img[iy[0]:iy[1], ix[0]:ix[1]] = g[gy[0]:gy[1], gx[0]:gx[1]]


def point_heatmaps_reference(points, size=256, sigma=HEATMAP_SIGMA, scale=HEATMAP_SCALE):
    """STAR's point maps the way STAR computes them: a full-resolution [N, size, size] stack, then
    the 1/4 bilinear resize. Slow; ``point_heatmaps`` gives the same numbers."""
    pts = _check_points(points)
    maps = np.zeros((len(pts), size, size), np.float32)
    for k, p in enumerate(np.clip(pts, 0, size - 1)):
        _gaussian_window(maps[k], p, sigma)
    return resize_quarter(maps, scale).astype(np.float32)


def _axis_profiles(coord, size, sigma, n_out):
    """1-D factor of STAR's windowed Gaussian along one axis after the 1/4 resize: the window is
    [int(c - 3 sigma), int(c + 3 sigma + 1)) with the peak at window start + int(3 sigma) (size // 2
    of the 2*3sigma+1 window), and output pixel i averages input pixels 4i+1 and 4i+2 (torch's
    bilinear rule at ratio 4). coord [N] -> [N, n_out]"""
    tmp = sigma * 3
    lo = np.trunc(coord - tmp).astype(np.int64)                  # Python int(): toward zero
    hi = np.trunc(coord + tmp + 1).astype(np.int64)
    peak = lo + int((2 * tmp + 1) // 2)
    x = np.arange(size)[None, :]
    g = np.exp(-((x - peak[:, None]).astype(np.float32) ** 2) / np.float32(2 * sigma ** 2))
    g = np.where((x >= lo[:, None]) & (x < hi[:, None]), g, np.float32(0))   # [N, size]
    # resize by ratio in/out with torch's align_corners=False rule
    r = size / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * r - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), size - 1)
    i1 = np.minimum(i0 + 1, size - 1)
    l1 = (src - i0).astype(np.float32)
    return g[:, i0] * (1 - l1) + g[:, i1] * l1


def point_heatmaps(points, size=256, sigma=HEATMAP_SIGMA, scale=HEATMAP_SCALE):
    """STAR point-map targets. points [N, 2] in crop pixels -> [N, size*scale, size*scale] float32.

    Each point is clamped into [0, size-1] (as STAR's encoder does), given a peak-1 Gaussian of
    ``sigma`` on STAR's (2*3sigma+1)-wide window, and the stack is resized by ``scale`` with torch's
    bilinear rule. The window Gaussian and the resize are both separable, so each map is computed
    as the outer product of two 1-D profiles (equal to ``point_heatmaps_reference`` up to float32
    rounding)."""
    pts = _check_points(points)
    if not (isinstance(size, (int, np.integer)) and size > 0):
        raise ValueError(f"size: expected a positive int, got {size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma: expected > 0, got {sigma!r}")
    n_out = int(size * scale)
    p = np.clip(pts, 0, size - 1)
    ax = _axis_profiles(p[:, 0], size, sigma, n_out)               # [N, n_out] along x
    ay = _axis_profiles(p[:, 1], size, sigma, n_out)               # [N, n_out] along y
    return (ay[:, :, None] * ax[:, None, :]).astype(np.float32)    # [N, n_out, n_out]


def _polyline_4x(img, curve, closed, thickness=1, scale=4, origin=(0, 0)):
    """STAR ``_polylines``: draw on a 4x canvas (points at (p * 4 + 0.5) truncated), INTER_AREA back.
    ``origin`` (multiples of nothing in particular, integers): img covers pixels from there, so a
    window of the full map can be drawn alone with the same result."""
    h, w = img.shape
    big = cv2.resize(img, (w * scale, h * scale), interpolation=cv2.INTER_AREA)
    p = (curve * scale + 0.5).astype(np.int32) - np.array(origin, np.int32) * scale
    cv2.polylines(big, [p], closed, 255, thickness * scale, cv2.LINE_AA)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)


def edge_maps_reference(points, layout, size=256, scale=HEATMAP_SCALE, density=5):
    """STAR's edge maps computed as STAR does (full 4x canvas per edge). Slow; see ``edge_maps``."""
    lay = get_layout(layout)
    pts = _check_points(points, lay.num_points)
    maps = np.zeros((lay.num_edges, size, size), np.float32)
    for e, (_, indices, closed) in enumerate(lay.edges):
        curve = np.clip(fit_curve(pts[list(indices)], closed, density), 0, size - 1)
        maps[e] = _polyline_4x(np.zeros((size, size), np.float32), curve, closed)
    return resize_quarter(maps / 255.0, scale).astype(np.float32)


def edge_maps(points, layout, size=256, scale=HEATMAP_SCALE, density=5):
    """STAR edge-map targets: one map per boundary (edge) of the layout.
    points [N, 2] crop pixels -> [E, size*scale, size*scale] float32 in [0, 1].

    Same numbers as ``edge_maps_reference``; each curve is drawn only on the window around it
    (aligned to 4 input pixels, so the 4x drawing, the area resize and the 1/4 resize are all local
    to it), which is much faster than STAR's full 1024 x 1024 canvas per edge."""
    lay = get_layout(layout)
    pts = _check_points(points, lay.num_points)
    step = int(round(1 / scale))
    if abs(step * scale - 1) > 1e-9 or size % step:
        return edge_maps_reference(points, layout, size, scale, density)
    n_out = size // step
    out = np.zeros((lay.num_edges, n_out, n_out), np.float32)
    for e, (_, indices, closed) in enumerate(lay.edges):
        curve = np.clip(fit_curve(pts[list(indices)], closed, density), 0, size - 1)
        lo = np.floor(curve.min(0)) - 4                          # the stroke reaches < 2 px out
        hi = np.ceil(curve.max(0)) + 5
        x0, y0 = (np.maximum(lo, 0) // step * step).astype(int)
        x1, y1 = np.minimum(-(-hi // step) * step, size).astype(int)
        win = _polyline_4x(np.zeros((y1 - y0, x1 - x0), np.float32), curve, closed, origin=(x0, y0))
        # 1/4 bilinear resize of the window: output pixel i averages input 4i+1 and 4i+2
        win = win / 255.0
        rows = 0.5 * (win[1::step] + win[2::step])
        out[e, y0 // step:y1 // step, x0 // step:x1 // step] = 0.5 * (rows[:, 1::step] + rows[:, 2::step])
    return out


# ---------------------------------------------------------------------------------------------
# Normalised coordinates (regression targets, STAR labels)
# ---------------------------------------------------------------------------------------------

def normalize_points(points, width, height, clamp=True):
    """Crop pixels -> [-1, 1]: x_n = (2x + 1) / W - 1 (align_corners=False), clamped like STAR."""
    pts = np.asarray(points, np.float64)
    out = (2.0 * pts + 1.0) / np.array([width, height], np.float64) - 1.0
    return np.clip(out, -1.0, 1.0) if clamp else out


def denormalize_points(points, width, height):
    """Inverse of ``normalize_points`` (without the clamp): x = ((x_n + 1) W - 1) / 2."""
    pts = np.asarray(points, np.float64)
    return ((pts + 1.0) * np.array([width, height], np.float64) - 1.0) / 2.0


def regression_target(points, width, height):
    """Direct-regression target: normalised (x, y) flattened to [2N] float32 as (x0, y0, x1, ...)."""
    return normalize_points(points, width, height, clamp=False).reshape(-1).astype(np.float32)
