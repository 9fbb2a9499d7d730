"""Appearance of a synthetic face, painted on the (u, v) grid of ``face3d``: skin, eyes (sclera,
iris, pupil, lids, lashes), brows, nose, lips, mouth interior, scalp hair and beard, make-up; then
lit (wrap-Lambert diffuse with a subsurface tint at the terminator, cast shadows from a shadow map,
hemispheric ambient with ambient occlusion, Blinn-Phong specular) and rasterised through the camera.

Painting happens in (u, v), so a feature stays on its landmarks however the face is deformed or
posed. Static maps (``static_maps``) are computed once from the mean face: frontal coordinates of
every texel and signed distances (mm) to the eye, lip and brow outlines drawn through the mean
landmarks. Per face, ``paint`` turns a ``Look`` (colours, thicknesses, make-up ...) into albedo,
specular and hair maps, and ``render_head`` shades and draws the head.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import face3d as f3
from ._channels import by_channel, mix
from .targets import fit_curve

__all__ = ["Look", "sample_look", "static_maps", "paint", "shade", "render_head", "HeadRender",
           "SKIN_TONES", "HAIR_COLORS", "IRIS_COLORS"]

H, W = f3.UV_H, f3.UV_W

# ---------------------------------------------------------------------------------------------
# Palettes (sRGB in [0, 1])
# ---------------------------------------------------------------------------------------------

# Skin reflectance from very light to very dark (roughly Fitzpatrick I..VI), interpolated by a
# continuous tone parameter in [0, 1].
SKIN_TONES = np.array([
    [0.96, 0.84, 0.76], [0.93, 0.76, 0.65], [0.87, 0.68, 0.55], [0.80, 0.59, 0.45],
    [0.70, 0.49, 0.35], [0.58, 0.39, 0.27], [0.45, 0.30, 0.21], [0.33, 0.22, 0.16],
    [0.24, 0.16, 0.12]])
HAIR_COLORS = np.array([
    [0.09, 0.075, 0.065], [0.14, 0.10, 0.07], [0.22, 0.15, 0.09], [0.33, 0.22, 0.13],
    [0.50, 0.36, 0.22], [0.72, 0.58, 0.38], [0.85, 0.76, 0.58], [0.45, 0.18, 0.08],
    [0.55, 0.53, 0.50], [0.82, 0.81, 0.78]])
HAIR_WEIGHTS = np.array([0.26, 0.2, 0.16, 0.1, 0.07, 0.05, 0.03, 0.04, 0.05, 0.04])
IRIS_COLORS = np.array([
    [0.20, 0.11, 0.05], [0.33, 0.20, 0.09], [0.45, 0.33, 0.16], [0.36, 0.42, 0.24],
    [0.34, 0.47, 0.62], [0.45, 0.52, 0.58], [0.12, 0.07, 0.04]])
IRIS_WEIGHTS = np.array([0.3, 0.22, 0.1, 0.08, 0.12, 0.06, 0.12])
LIPSTICKS = np.array([
    [0.62, 0.05, 0.10], [0.80, 0.15, 0.25], [0.50, 0.08, 0.20], [0.75, 0.35, 0.35],
    [0.35, 0.05, 0.08], [0.85, 0.40, 0.50], [0.55, 0.25, 0.20], [0.30, 0.10, 0.30]])
SHADOWS = np.array([
    [0.45, 0.30, 0.25], [0.30, 0.20, 0.35], [0.20, 0.25, 0.45], [0.55, 0.45, 0.30],
    [0.25, 0.35, 0.25], [0.15, 0.12, 0.12], [0.60, 0.35, 0.45], [0.70, 0.55, 0.35]])


def srgb_to_linear(c):
    return np.asarray(c, np.float32) ** 2.0           # gamma 2: cheap and close to sRGB


# ---------------------------------------------------------------------------------------------
# Static maps from the mean face
# ---------------------------------------------------------------------------------------------

_MM = 0.125                                            # frontal canvas resolution for outlines
_FX0, _FY1, _FW, _FH = -80.0, 45.0, 160.0, 180.0


def _frontal_px(pts):
    pts = np.asarray(pts, np.float64)
    return np.stack([(pts[..., 0] - _FX0) / _MM - 0.5, (_FY1 - pts[..., 1]) / _MM - 0.5], -1)


def _sdf(polygon_mm, closed=True):
    """Signed distance (mm, > 0 inside) to a closed polygon, or unsigned distance to an open
    polyline, on the frontal canvas."""
    shape = (int(_FH / _MM), int(_FW / _MM))
    img = np.zeros(shape, np.uint8)
    p = np.round(_frontal_px(polygon_mm) * 16).astype(np.int32)[None]
    if closed:
        cv2.fillPoly(img, p, 255, cv2.LINE_8, 4)
        inside = cv2.distanceTransform(img, cv2.DIST_L2, 5)
        outside = cv2.distanceTransform(255 - img, cv2.DIST_L2, 5)
        return ((inside - outside) * _MM).astype(np.float32)
    cv2.polylines(img, p, False, 255, 1, cv2.LINE_8, 4)
    return (cv2.distanceTransform(255 - img, cv2.DIST_L2, 5) * _MM).astype(np.float32)


@dataclass
class Feature:
    """A texture window (rows v0:v1, columns u0:u1) with mean coordinates and named maps."""
    win: tuple
    X: np.ndarray                  # [h, w, 3] mean surface points
    maps: dict

    @property
    def sl(self):
        v0, v1, u0, u1 = self.win
        return slice(v0, v1), slice(u0, u1)


def _window(mask, pad=2):
    vs, us = np.nonzero(mask)
    return (max(int(vs.min()) - pad, 0), min(int(vs.max()) + 1 + pad, H),
            max(int(us.min()) - pad, 0), min(int(us.max()) + 1 + pad, W))


@dataclass
class StaticMaps:
    """Fixed per-texel data computed once from the mean face."""
    X: np.ndarray          # [H, W, 3] float32 mean surface points (face frame)
    theta: np.ndarray      # [W] azimuth of each texture column (radians)
    front: np.ndarray      # [H, W] 1 on the face front, 0 behind
    regions: dict          # name -> [H, W] float32 soft region weights (cheeks, nose, under_eye ...)
    eyes: dict             # side -> Feature(e: signed distance to the opening, up / lo: distance to
                           #   the upper / lower lid margin)
    mouth: Feature         # lips: signed distance to the outer lip outline, gap: to the inner one
    brows: dict            # side -> Feature(d: height above the brow landmark curve, s: 0 outer .. 1 inner)
    nose: Feature          # nostril weight


def _curve(idx, closed):
    return fit_curve(f3.MEAN_2D[list(idx)], closed, 12)


def _gauss2(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((np.abs(x) - cx) / sx) ** 2 + ((y - cy) / sy) ** 2)).astype(np.float32)


def look_up(canvas, X):
    """Values of a frontal-canvas map at the frontal (x, y) of mean points X [..., 3]."""
    return f3.lookup(canvas, _frontal_px(X[..., :2]), border=cv2.BORDER_REPLICATE)


@functools.lru_cache(maxsize=1)
def static_maps():
    m = f3.mean_model()
    X = m.P.astype(np.float32)
    x, y, z = X[..., 0], X[..., 1], X[..., 2]
    front = np.clip((z + 55.0) / 20.0, 0, 1).astype(np.float32)
    th = f3.theta_of_u(np.arange(W)).astype(np.float32)

    def feature(mask, canvases):
        win = _window(mask)
        v0, v1, u0, u1 = win
        Xw = X[v0:v1, u0:u1]
        px = _frontal_px(Xw[..., :2])
        maps = {k: f3.lookup(c, px, border=cv2.BORDER_REPLICATE) if c is not None else None
                for k, c in canvases.items()}
        return Feature(win=win, X=Xw, maps=maps)

    onface = (front > 0.5)
    eyes = {}
    for side, idx in ((-1, list(range(36, 42))), (1, list(range(42, 48)))):
        up = idx[0:4] if side < 0 else idx[3::-1]
        lo = [idx[3], idx[4], idx[5], idx[0]] if side < 0 else [idx[0], idx[5], idx[4], idx[3]]
        cx = f3.MEAN_2D[idx, 0].mean()
        mask = onface & (np.abs(x - cx) < 20) & (y > -14) & (y < 15)
        eyes[side] = feature(mask, {"e": _sdf(_curve(idx, True)), "up": _sdf(_curve(up, False), False),
                                    "lo": _sdf(_curve(lo, False), False)})
    mouth = feature(onface & (np.abs(x) < 40) & (y < -52) & (y > -95),
                    {"lips": _sdf(_curve(range(48, 60), True)), "gap": _sdf(_curve(range(60, 68), True))})
    brows = {}
    for side, idx in ((-1, [17, 18, 19, 20, 21]), (1, [26, 25, 24, 23, 22])):
        c = _curve(idx, False)                                        # outer -> inner
        order = np.argsort(c[:, 0])
        xs, ys = c[order, 0], c[order, 1]
        s_of_x = np.linspace(0, 1, len(c))[order]
        mask = onface & (side * x > 0) & (x >= xs.min() - 4) & (x <= xs.max() + 3) & (y > 0) & (y < 40)
        F = feature(mask, {})
        F.maps["d"] = (F.X[..., 1] - np.interp(F.X[..., 0], xs, ys)).astype(np.float32)
        F.maps["s"] = np.interp(F.X[..., 0], xs, s_of_x).astype(np.float32)
        F.maps["s"][(F.X[..., 0] < xs.min()) | (F.X[..., 0] > xs.max())] = -1.0
        brows[side] = F
    nose = feature(onface & (np.abs(x) < 20) & (y < -38) & (y > -56), {})
    ax = np.abs(nose.X[..., 0])
    nose.maps["nostril"] = np.exp(-0.5 * (((ax - 6.2) / 2.1) ** 2 + ((nose.X[..., 1] + 47.2) / 1.2) ** 2)).astype(np.float32)
    regions = {
        "cheeks": _gauss2(x, y, 38, -38, 13, 11) * front,
        "nose": _gauss2(x, y, 0, -38, 8, 9) * front,
        "ears": ((np.abs(x) > 62) & (np.abs(y + 20) < 35) & (z < -70)).astype(np.float32),
        "under_eye": _gauss2(x, y, 30, -8, 9, 3.5) * front,
        "blush": _gauss2(x, y, 40, -33, 12, 9) * front,
        "t_zone": (_gauss2(x, y, 0, 40, 14, 25) + _gauss2(x, y, 0, -30, 8, 12)) * front,
    }
    # wrinkle lines (distance-based profiles): nasolabial folds, forehead lines, crow's feet
    for side in (-1, 1):
        fold = _sdf(np.array([(side * 15.5, -42.0), (side * 22.0, -52.0), (side * 27.0, -62.0), (side * 32.5, -72.0)]), False)
        regions[f"nasolabial_{side}"] = np.exp(-0.5 * (look_up(fold, X) / 1.1) ** 2).astype(np.float32) * front
        crow = np.zeros_like(x)
        for k, a in enumerate((-25.0, 0.0, 25.0)):
            ang = math.radians(a)
            cx_, cy_ = side * (50.0 + 4 * math.cos(ang)), 1.0 + 6.0 * math.sin(ang)
            along = (side * (x - cx_)) * math.cos(ang) + (y - cy_) * math.sin(ang)
            across = -(side * (x - cx_)) * math.sin(ang) + (y - cy_) * math.cos(ang)
            crow = np.maximum(crow, np.exp(-0.5 * (across / 0.6) ** 2) * np.exp(-0.5 * (along / 4.0) ** 2))
        regions[f"crow_{side}"] = (crow * front * (side * x > 0)).astype(np.float32)
    fl = np.zeros_like(x)
    for yy in (36.0, 43.0, 50.0):
        fl = np.maximum(fl, np.exp(-0.5 * ((y - yy - 1.5 * np.cos(x / 18.0)) / 0.7) ** 2))
    regions["forehead_lines"] = (fl * np.exp(-0.5 * (x / 30.0) ** 4) * front).astype(np.float32)
    regions["red"] = regions["cheeks"] + 0.8 * regions["nose"] + 0.5 * regions["ears"]
    regions["spec"] = 1.0 + 0.5 * regions["t_zone"]
    for c, k in enumerate((0.8, 1.0, 0.9)):                          # darker, bluer under the eyes
        regions[f"under_eye_{c}"] = 1.0 - 0.1 * k * regions["under_eye"]
    hair_col = np.interp(np.abs(np.degrees(th)), [0, 60, 85, 100, 180], [0.8, 1.0, 0.8, 0.9, 1.1])
    regions["hair_volume_col"] = hair_col[None, :].astype(np.float32)
    return StaticMaps(X=X, theta=th, front=front, regions=regions, eyes=eyes, mouth=mouth, brows=brows, nose=nose)


# ---------------------------------------------------------------------------------------------
# The look of one face
# ---------------------------------------------------------------------------------------------

@dataclass
class Look:
    """Sampled appearance of one face (colours sRGB in [0, 1], lengths in mm)."""
    skin: np.ndarray
    redness: float
    skin_noise: float
    freckles: float
    moles: int
    hair_style: str                  # bald, buzz, short, medium, long
    hair: np.ndarray
    hair_volume: float
    hairline: float                  # forehead height offset (+ = higher)
    recession: float                 # temple recession 0..1
    fringe: float                    # bangs: 0 none .. 1 down to the brows
    fringe_side: float               # -1 .. 1 sweep of the fringe
    ears_covered: bool
    beard: str                       # none, stubble, mustache, goatee, full
    beard_density: float
    brow: np.ndarray
    brow_thick: float
    brow_density: float
    iris: np.ndarray
    pupil_mm: float
    gaze: tuple                      # (yaw, pitch) degrees relative to the head
    sclera: np.ndarray
    lip: np.ndarray
    skin_spec: float
    makeup: dict = field(default_factory=dict)   # lipstick, gloss, shadow, liner, wing, mascara, blush, foundation


def _pick(rng, table, weights=None):
    i = rng.choice(len(table), p=None if weights is None else weights / weights.sum())
    return np.array(table[i], np.float64)


def sample_look(rng, heavy_makeup=False):
    """Draw a Look. heavy_makeup forces strong lipstick / eye make-up (WFLW's make-up attribute)."""
    tone = rng.uniform(0, 1) ** 1.1
    t = tone * (len(SKIN_TONES) - 1)
    i = min(int(t), len(SKIN_TONES) - 2)
    skin = SKIN_TONES[i] * (1 - (t - i)) + SKIN_TONES[i + 1] * (t - i)
    skin = np.clip(skin * (1 + rng.normal(0, [0.03, 0.035, 0.05])) * rng.uniform(0.94, 1.04), 0.05, 1)
    feminine = heavy_makeup or rng.random() < 0.5
    # hair
    if feminine:
        style = rng.choice(["short", "medium", "long", "long", "long", "buzz"], p=[0.15, 0.25, 0.2, 0.2, 0.17, 0.03])
    else:
        style = rng.choice(["bald", "buzz", "short", "medium", "long"], p=[0.1, 0.2, 0.45, 0.17, 0.08])
    w = HAIR_WEIGHTS.copy()
    if tone > 0.45:
        w = w * np.array([3.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.2, 0.8, 0.8])
    hair = _pick(rng, HAIR_COLORS, w) * rng.uniform(0.85, 1.15, 3) ** 0.3
    if rng.random() < 0.03:                                       # dyed
        hair = rng.uniform(0.1, 0.7, 3)
    volume = {"bald": 0.0, "buzz": 1.5, "short": rng.uniform(5, 12), "medium": rng.uniform(9, 20),
              "long": rng.uniform(10, 22)}[style]
    beard = "none"
    if not feminine and rng.random() < 0.45:
        beard = rng.choice(["stubble", "mustache", "goatee", "full"], p=[0.45, 0.12, 0.13, 0.3])
    brow = np.clip(hair * rng.uniform(0.45, 0.8), 0.02, 1) if hair.mean() > 0.15 else hair * rng.uniform(0.7, 1.1)
    lip = skin * np.array([0.82, 0.55, 0.55]) * rng.uniform(0.85, 1.05)
    lip[0] = min(1.0, lip[0] * rng.uniform(1.0, 1.15))
    makeup = {}
    light = feminine and not heavy_makeup and rng.random() < 0.45
    if heavy_makeup or light:
        s = (lambda lo, hi: rng.uniform(lo, hi)) if heavy_makeup else (lambda lo, hi: rng.uniform(0, 0.3))
        makeup = dict(lipstick=(_pick(rng, LIPSTICKS), s(0.6, 1.0)), gloss=rng.uniform(0, 1),
                      shadow=(_pick(rng, SHADOWS), s(0.3, 0.9)), liner=s(0.4, 1.0),
                      wing=rng.uniform(0, 1) * (heavy_makeup or rng.random() < 0.3), mascara=s(0.4, 1.0),
                      blush=(np.array([0.9, 0.45, 0.45]) * rng.uniform(0.8, 1.1), s(0.2, 0.6)),
                      foundation=s(0.3, 0.8))
        if heavy_makeup:                                          # at least two strong components
            keep = rng.permutation(["lipstick", "shadow", "liner", "blush"])[:rng.integers(2, 5)]
            for k in ("lipstick", "shadow", "blush"):
                if k not in keep:
                    makeup[k] = (makeup[k][0], makeup[k][1] * 0.2)
            if "liner" not in keep:
                makeup["liner"] *= 0.2
    return Look(
        skin=skin, redness=rng.uniform(0, 0.7) * (1.2 - tone), skin_noise=rng.uniform(0.4, 1.2),
        freckles=rng.uniform(0.3, 1.0) if (tone < 0.35 and rng.random() < 0.2) else 0.0,
        moles=int(rng.poisson(1.0)), hair_style=str(style), hair=hair, hair_volume=float(volume),
        hairline=rng.normal(0, 6) - (8 if (not feminine and rng.random() < 0.3) else 0),
        recession=rng.uniform(0, 1) ** 2 * (0.3 if feminine else 1.0),
        fringe=(rng.uniform(0.3, 1.1) if (style in ("medium", "long", "short") and rng.random() < (0.35 if feminine else 0.12)) else 0.0),
        fringe_side=rng.uniform(-1, 1), ears_covered=bool(style in ("medium", "long") and rng.random() < 0.75),
        beard=str(beard), beard_density=rng.uniform(0.4, 1.0), brow=brow,
        brow_thick=rng.uniform(0.8, 1.5) * (0.85 if feminine else 1.05), brow_density=rng.uniform(0.65, 1.0),
        iris=_pick(rng, IRIS_COLORS, IRIS_WEIGHTS * (np.array([1, 1, 1, 0.3, 0.2, 0.3, 2]) if tone > 0.45 else 1)) * rng.uniform(0.8, 1.2),
        pupil_mm=rng.uniform(1.6, 3.2), gaze=(rng.normal(0, 8), rng.normal(0, 5)),
        sclera=np.array([0.80, 0.76, 0.72]) * rng.uniform(0.82, 1.0), lip=np.clip(lip, 0.03, 1),
        skin_spec=rng.uniform(0.03, 0.1), makeup=makeup)


# ---------------------------------------------------------------------------------------------
# Painting
# ---------------------------------------------------------------------------------------------

_BANK_SIZE = 12


@functools.lru_cache(maxsize=64)
def _noise_bank(shape, cells, interp):
    """A fixed bank of smooth noise fields (made once from a fixed seed): per-image noise is a
    random signed, flipped mix of two of them, much cheaper than drawing and resizing a new one."""
    g = np.random.default_rng([7919, shape[0], shape[1], cells[0], cells[1], interp])
    small = g.standard_normal((_BANK_SIZE, cells[0], cells[1])).astype(np.float32)
    return np.stack([cv2.resize(s, (shape[1], shape[0]), interpolation=interp) for s in small])


def _noise(rng, shape, cells, interp=cv2.INTER_CUBIC):
    """Smooth noise ~ N(0, 1)-ish of the given shape with (cells_h, cells_w) features."""
    bank = _noise_bank(tuple(shape), tuple(int(c) for c in cells), int(interp))
    i, j = rng.choice(_BANK_SIZE, 2, replace=False)
    a = float(rng.uniform(0.3, 0.95))
    fa, fb = bank[i], bank[j]
    if rng.random() < 0.5:
        fa = fa[::-1]
    if rng.random() < 0.5:
        fb = fb[:, ::-1]
    return (a * fa + (math.sqrt(1 - a * a) * (1 if rng.random() < 0.5 else -1)) * fb).astype(np.float32)


def _octaves(rng, shape, amps, base=(5, 8)):
    """Sum of noise octaves: amps[k] * noise with base * 2^(2k) cells (each octave 4x finer)."""
    out = None
    ch, cw = base
    for k, a in enumerate(amps):
        n = _noise(rng, shape, (ch * 4 ** k, cw * 4 ** k), cv2.INTER_CUBIC if k < 2 else cv2.INTER_LINEAR)
        out = a * n if out is None else out + a * n
    return out


def _sstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _mix(dst, col, a):
    """dst <- dst (1 - a) + col a, in place; a [..] broadcast over the colour axis."""
    mix(dst, col, a)


@dataclass
class Painted:
    albedo: np.ndarray       # [H, W, 3] float32, linear
    spec: np.ndarray         # [H, W] specular strength
    power: np.ndarray        # [H, W] specular exponent
    sss: np.ndarray          # [H, W] 1 for skin (subsurface wrap), 0 otherwise
    hair_alpha: np.ndarray   # [H, W] scalp hair, fringe and beard coverage
    hair_height: np.ndarray  # [H, W] mm of hair volume over the skin


def _hair_cap(look, theta):
    """Height (face-frame y, mm) above which the scalp is hair, per texture column (azimuth)."""
    a = np.abs(np.degrees(theta))
    # front hairline ~66 mm above the eyes, temples, sideburn in front of the ear, over the ear,
    # behind the ear, down to the nape
    cap = np.interp(a, [0, 25, 45, 62, 74, 82, 88, 96, 104, 112, 130, 180],
                    [66, 64, 58, 48, 25, -12, -5, 14, 12, -10, -42, -58])
    cap = cap - look.hairline * np.interp(a, [0, 60, 80], [1, 1, 0])
    cap = cap + look.recession * 16 * np.exp(-0.5 * ((a - 42) / 12) ** 2)
    if look.ears_covered:
        cap = np.minimum(cap, np.interp(a, [70, 80, 90, 125, 140], [60, 0, -45, -45, -60]))
    if look.hair_style == "bald":
        cap = cap + np.interp(a, [0, 90, 120, 180], [300, 300, 25, 10])   # hair left at the back
    return cap.astype(np.float32)


def paint(look, P, lm3d, rng, st=None, expression=None):
    """Albedo, specular and hair maps of one face.

    look  Look; P [H, W, 3] the face's deformed surface; lm3d [68, 3] its landmarks (face frame)
    rng   np.random.Generator (noise); expression: the expression coefficients (wrinkles)
    """
    st = st or static_maps()
    X, R = st.X, st.regions
    x, y = X[..., 0], X[..., 1]
    mk = look.makeup
    found = mk.get("foundation", 0.0)
    # --- skin: tone x blotches and grain x regional redness ---
    skin = srgb_to_linear(look.skin)
    var = (1.0 - 0.6 * found) * look.skin_noise
    shade = _octaves(rng, (H, W), (0.07 * var, 0.045 * var, 0.03 * var))
    shade += 1.0
    r = look.redness * (1 - 0.5 * found)
    alb = np.empty((H, W, 3), np.float32)
    for c, tint in enumerate((0.10, -0.07, -0.06)):
        alb[..., c] = (skin[c] * shade) * (1.0 + (tint * r) * R["red"]) * R[f"under_eye_{c}"]
    # expression and age lines: darker creases where the skin folds
    ex = expression or {}
    age = look.skin_noise - 0.4                                             # 0 .. 0.8
    crease = np.zeros((H, W), np.float32)
    for side, tag in ((-1, "R"), (1, "L")):
        smile = max(ex.get("smile_" + tag, 0.0), 0.0) + 0.5 * max(ex.get("sneer", 0.0), 0.0)
        crease += (0.08 + 0.12 * age + 0.25 * min(smile, 1.5)) * R[f"nasolabial_{side}"]
        crease += (0.1 * age + 0.25 * max(ex.get("squint", 0.0), 0.0) + 0.15 * smile) * R[f"crow_{side}"]
    brow_up = max(ex.get("brow_raise_L", 0.0), 0.0) + max(ex.get("brow_raise_R", 0.0), 0.0)
    crease += (0.08 * age + 0.18 * min(brow_up, 2.0)) * R["forehead_lines"]
    by_channel(lambda c, k: c * k, alb, 1.0 - np.minimum(crease, 0.6), out=alb)
    if look.freckles > 0:
        spots = (rng.random((H, W), dtype=np.float32) < 0.015 * look.freckles) * (R["cheeks"] + R["nose"])
        spots = np.clip(cv2.GaussianBlur(spots.astype(np.float32), (0, 0), 0.7) * 3.0, 0, 0.5)
        by_channel(lambda c, k: c * (1.0 - spots * k), alb, np.array([0.3, 0.45, 0.5], np.float32), out=alb)
    fv0, fv1 = st.eyes[-1].win[0], st.mouth.win[1]
    for _ in range(look.moles):
        cu, cv_ = rng.uniform(st.brows[-1].win[2], st.brows[1].win[3]), rng.uniform(fv0, fv1)
        cv2.circle(alb, (int(cu), int(cv_)), int(rng.integers(1, 3)), tuple((skin * 0.35).tolist()), -1, cv2.LINE_AA)
    if "blush" in mk:
        col, s = mk["blush"]
        _mix(alb, srgb_to_linear(col) * float(skin.mean() / 0.3) ** 0.5 * 0.6, 0.5 * s * R["blush"])
    spec = (look.skin_spec * (1 - 0.6 * found)) * R["spec"]
    power = np.full((H, W), 14.0, np.float32)
    # --- scalp hair and beard: coverage and volume ---
    hair_lin = srgb_to_linear(look.hair)
    cap = _hair_cap(look, st.theta)[None, :]
    wave = _noise(rng, (H, W), (6, 16)) * 3.0
    fine = _noise(rng, (H, W), (40, 256), cv2.INTER_LINEAR) * 0.9
    dist = y - cap + wave                                                    # > 0 inside the hair
    if look.fringe > 0:                                                     # bangs over the forehead
        fx = x - 25 * look.fringe_side
        kind = int(abs(look.fringe_side) * 100) % 3                         # straight, swept, parted
        if kind == 0:
            low = 66 - look.fringe * (48 + 6 * np.cos(fx / 28.0)) + 8 * (np.abs(fx) / 45) ** 2
        elif kind == 1:
            low = 66 - look.fringe * 46 + 0.45 * look.fringe * np.sign(look.fringe_side) * x + 6 * (x / 45) ** 2
        else:
            low = 66 - look.fringe * 40 + 0.6 * look.fringe * np.maximum(22 - np.abs(x), 0) + 5 * (x / 45) ** 2
        ok = (st.front > 0.5) & (np.abs(x) < 58)
        dist = np.maximum(dist, np.where(ok, y - low + wave, -99.0))
    hair_alpha = _sstep((dist + fine) / 3.5 + 0.5) * (0.75 if look.hair_style == "buzz" else 1.0)
    vol = (look.hair_volume * (1 + 0.25 * _noise(rng, (H, W), (5, 8)))) * R["hair_volume_col"]
    hair_height = _sstep(dist / 12.0 + 0.15) * np.maximum(vol, 0)
    if look.beard != "none":
        ax = np.abs(x)
        jaw = (y < np.interp(ax, [0, 20, 35, 55, 70], [-78, -76, -60, -35, -5])) & (y > -135) & (X[..., 2] > -95)
        must = (y < -50.5) & (y > -66) & (ax < 27) & (X[..., 2] > -40)
        goatee = (ax < np.interp(y, [-135, -110, -80, -74], [12, 20, 16, 10])) & (y < -74) & (y > -135)
        region = {"stubble": jaw | must, "mustache": must, "goatee": goatee | must, "full": jaw | must}[look.beard]
        region = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 2.0)
        mv0, mv1 = st.mouth.sl
        region[mv0, mv1] *= 1 - _sstep(st.mouth.maps["lips"] / 0.8 + 0.5)   # not on the lips
        if look.beard == "stubble":
            d = look.beard_density * region * (0.55 + 0.45 * (rng.random((H, W), dtype=np.float32) > 0.5))
            _mix(alb, hair_lin * 0.5, 0.45 * d)
        else:
            a = np.clip(1.3 * region * look.beard_density * (0.8 + 0.25 * _noise(rng, (H, W), (80, 128))), 0, 1)
            hair_alpha = np.maximum(hair_alpha, a)
            hair_height = np.maximum(hair_height, a * (1.0 + (3.0 + 6.0 * look.beard_density) * (look.beard == "full")))
    # hair albedo: strands along the meridians (down the head), lighter and darker locks
    strands = np.clip(1.0 + 0.25 * _noise(rng, (H, W), (24, 256), cv2.INTER_LINEAR)
                      + 0.15 * _noise(rng, (H, W), (80, 512), cv2.INTER_LINEAR), 0.3, 2.0)
    hair_spec = 0.06 * strands * strands
    # --- face features, each in its own window ---
    _paint_brows(look, st, alb, spec, rng)
    _paint_eyes(look, st, alb, spec, power, P, lm3d)
    _paint_mouth(look, st, alb, spec, power, P, lm3d)
    ns = st.nose.sl
    by_channel(lambda c, k: c * k, alb[ns], 1.0 - 0.88 * st.nose.maps["nostril"], out=alb[ns])
    # hair goes over everything painted so far
    alb = by_channel(lambda c, h: c * (1 - hair_alpha) + (h * strands) * hair_alpha, alb, hair_lin)
    spec = spec * (1 - hair_alpha) + hair_spec * hair_alpha
    power = power * (1 - hair_alpha) + 8.0 * hair_alpha
    return Painted(albedo=alb, spec=spec.astype(np.float32), power=power, sss=(1.0 - hair_alpha).astype(np.float32),
                   hair_alpha=hair_alpha.astype(np.float32), hair_height=hair_height.astype(np.float32))


def _paint_brows(look, st, alb, spec, rng):
    hair = srgb_to_linear(look.brow)
    for side in (-1, 1):
        F = st.brows[side]
        d, s = F.maps["d"], F.maps["s"]
        thick = look.brow_thick * np.interp(s, [0, 0.15, 0.6, 0.9, 1.0], [1.8, 3.0, 5.0, 5.5, 4.8])
        top, bot = 0.3 * thick, -0.7 * thick
        a = _sstep((top - d) / 0.8 + 0.5) * _sstep((d - bot) / 1.0 + 0.5)
        a *= _sstep((s + 0.02) / 0.1) * _sstep((1.03 - s) / 0.06) * (s >= -0.5)
        hairs = _noise(rng, a.shape, (max(2, a.shape[0] // 2), max(2, a.shape[1] // 5)), cv2.INTER_LINEAR)
        a = np.clip(a * look.brow_density * (0.85 + 0.3 * hairs), 0, 1)
        _mix(alb[F.sl], hair, a)
        spec[F.sl] *= 1.0 - 0.8 * a


def _paint_eyes(look, st, alb, spec, power, P, lm3d):
    mk = look.makeup
    sclera = srgb_to_linear(look.sclera)
    iris = srgb_to_linear(np.clip(look.iris, 0, 1))
    gy, gp = (math.radians(a) for a in look.gaze)
    gaze = np.array([math.sin(gy) * math.cos(gp), math.sin(gp), math.cos(gy) * math.cos(gp)], np.float32)
    liner, mascara = mk.get("liner", 0.0), mk.get("mascara", 0.0)
    for side, idx in ((-1, slice(36, 42)), (1, slice(42, 48))):
        F = st.eyes[side]
        sl = F.sl
        e, up, lo = F.maps["e"], F.maps["up"], F.maps["lo"]
        Pw = P[sl].astype(np.float32)
        fa = alb[sl]
        opening = _sstep(e / 0.4 + 0.5)
        above = (e < 0) & (F.X[..., 1] > lm3d[idx, 1].mean() * 0 + f3.EYE_C[1])
        # eyeball 11.5 mm behind the middle of the opening; iris and pupil = discs around the gaze
        c = lm3d[idx].mean(0)
        v = Pw - (c + np.array([0.0, -0.3, -11.5])).astype(np.float32)
        along = v @ gaze
        rho = np.sqrt(np.maximum((v * v).sum(-1) - along ** 2, 0))
        tr = rho / 5.9
        psi = np.arctan2(v[..., 1], v[..., 0] * side)
        fib = 1.0 + 0.2 * np.sin(psi * 23 + 3 * np.sin(psi * 7)) * np.sin(psi * 11 + 1.0)
        icol = iris * (fib * (0.7 + 0.6 * tr) * (1 - 0.6 * _sstep((tr - 0.8) / 0.2)))[..., None]
        a_iris = _sstep((1.0 - tr) / 0.08) * (along > 0)
        a_pupil = _sstep((look.pupil_mm - rho) / 0.3) * (along > 0)
        inner = lm3d[39 if side < 0 else 42]
        corner = np.exp(-0.5 * (np.linalg.norm(Pw[..., :2] - inner[:2].astype(np.float32), axis=-1) / 2.0) ** 2)
        col = np.empty(Pw.shape, np.float32)
        col[:] = sclera
        _mix(col, np.array([0.45, 0.12, 0.12]), 0.5 * corner)                    # caruncle
        col = col * (1 - a_iris[..., None]) + icol * a_iris[..., None]
        _mix(col, np.array([0.003, 0.003, 0.003]), a_pupil)
        col *= (0.4 + 0.6 * _sstep(e / 2.0))[..., None]                          # lid shadow
        # lid skin above: crease and eye shadow
        crease = np.exp(-0.5 * ((up - 7.0) / 1.0) ** 2) * above * _sstep((-e - 3) / 2)
        fa *= (1 - 0.25 * crease)[..., None]
        if "shadow" in mk:
            scol, s = mk["shadow"]
            _mix(fa, srgb_to_linear(scol), 0.85 * s * _sstep((9.0 - up) / 4.0) * above)
        _mix(fa, col, opening)
        spec[sl] = spec[sl] * (1 - opening) + 0.8 * opening
        power[sl] = power[sl] * (1 - opening) + 200.0 * opening
        # lash line with eyeliner (thicker outward, optional wing), lashes, lower lid rim
        outer = lm3d[36 if side < 0 else 45]
        t_out = np.clip((Pw[..., 0] - c[0]) / (outer[0] - c[0]), -1, 2)
        width = 0.6 + 0.3 * mascara + liner * (0.5 + 1.0 * np.clip(t_out, 0, 1))
        a_lash = _sstep((width - up) / 0.7 + 0.5) * (e < 0.5)
        if mk.get("wing", 0) > 0 and liner > 0.3:
            wing_y = outer[1] + (t_out - 1.0) * 6.0
            on = (t_out > 0.95) & (t_out < 1.0 + 0.4 * mk["wing"])
            a_lash = np.maximum(a_lash, on * _sstep((0.9 * liner - np.abs(Pw[..., 1] - wing_y)) / 0.3))
        lashes = _sstep((1.4 + 1.2 * mascara - up) / 0.8) * above * (t_out > -0.7)
        a_lash = np.clip(a_lash + (0.35 + 0.3 * mascara) * lashes, 0, 1)
        a_lo = 0.4 * _sstep((0.4 + 0.4 * liner - lo) / 0.6 + 0.5) * (e < 0.6)
        _mix(fa, np.array([0.05, 0.035, 0.035]), a_lo)
        _mix(fa, np.array([0.008, 0.007, 0.007]), a_lash)


def _paint_mouth(look, st, alb, spec, power, P, lm3d):
    mk = look.makeup
    F = st.mouth
    sl = F.sl
    fa = alb[sl]
    Pw = P[sl].astype(np.float32)
    a_lip = _sstep(F.maps["lips"] / 0.5 + 0.5)
    a_gap = _sstep(F.maps["gap"] / 0.35 + 0.5)
    xw = F.X[..., 0]
    lines = 1.0 + 0.1 * np.sin(xw * 4.1 + 2 * np.sin(xw * 1.3))
    col = srgb_to_linear(look.lip)[None, None, :] * (lines * (0.8 + 0.2 * _sstep(F.maps["lips"] / 1.5)))[..., None]
    spec_l = 0.1
    if "lipstick" in mk:
        lcol, s = mk["lipstick"]
        col = col * (1 - s) + srgb_to_linear(lcol) * s
        spec_l = 0.1 + 0.4 * mk.get("gloss", 0) * s
    _mix(fa, col, a_lip)
    spec[sl] = spec[sl] * (1 - a_lip) + spec_l * a_lip
    power[sl] = power[sl] * (1 - a_lip) + 35.0 * a_lip
    # mouth interior: dark, upper teeth under the upper lip, tongue low, by the deformed position
    ux, uy = lm3d[[60, 61, 62, 63, 64], 0], lm3d[[60, 61, 62, 63, 64], 1]
    ly = lm3d[[60, 67, 66, 65, 64], 1]
    o = np.argsort(ux)
    y_up = np.interp(Pw[..., 0], ux[o], uy[o])
    y_lo = np.interp(Pw[..., 0], ux[o], ly[o])
    opening = max(0.0, float(lm3d[62, 1] - lm3d[66, 1]))
    yy = Pw[..., 1]
    mid_x, half_w = 0.5 * (lm3d[60, 0] + lm3d[64, 0]), 0.5 * abs(lm3d[64, 0] - lm3d[60, 0])
    tx = (Pw[..., 0] - mid_x) / max(half_w, 1e-3)
    teeth = (yy > y_up - 8.5) & (np.abs(tx) < 0.8)
    gaps = 1 - 0.5 * np.abs(np.sin(Pw[..., 0] * math.pi / 8.0)) ** 12
    tooth = np.array([0.72, 0.68, 0.58], np.float32)[None, None, :] * (gaps * (1 - 0.5 * np.abs(tx)))[..., None]
    dark = np.array([0.03, 0.008, 0.008], np.float32)
    mcol = np.where(teeth[..., None], tooth, np.where((yy < y_lo + 0.35 * opening)[..., None],
                                                       np.array([0.3, 0.07, 0.07], np.float32), dark))
    mcol = mcol if opening > 1.5 else np.broadcast_to(dark, mcol.shape)
    _mix(fa, mcol, a_gap)
    spec[sl] = spec[sl] * (1 - a_gap) + 0.05 * a_gap


# ---------------------------------------------------------------------------------------------
# Lighting
# ---------------------------------------------------------------------------------------------

@dataclass
class Light:
    """Scene light in the view frame (x right, y up, z toward the camera)."""
    direction: np.ndarray            # unit vector toward the key light
    color: np.ndarray                # key light colour x intensity (linear)
    ambient: np.ndarray              # ambient colour x intensity (linear)
    sky: float = 0.35                # ambient from above vs below (0 uniform .. 1 only from above)
    fill: np.ndarray = None          # optional second light direction
    fill_color: np.ndarray = None
    exposure: float = 1.0


@functools.lru_cache(maxsize=1)
def _shadow_mesh():
    return f3.uv_mesh(step_dense=7, step_sparse=24)


def shadow_map(P, R, light_dir, N=None, grid=192, extent=150.0, bias=1.5, soft=3.0):
    """Cast shadows of the head on itself: rasterise a coarse mesh of P seen from the light
    (orthographic, along light_dir in the view frame), then compare every texel's distance to the
    light with the nearest surface on its light ray. The bias grows with the slope of the surface
    to the light (slope-scaled bias: a grazing surface changes depth fast across a shadow-map
    pixel). N: normals of P (computed if None). -> [H, W] float32, 1 = in shadow"""
    Lv = np.asarray(light_dir, np.float64)
    Lv = Lv / np.linalg.norm(Lv)
    up = np.array([0.0, 1.0, 0.0]) if abs(Lv[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(up, Lv)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(Lv, e1)
    # light space: (a, b) across the beam in grid pixels, d = distance travelled by the light
    B = np.stack([e1, -e2, -Lv]) @ R                        # face frame -> light space rows
    k = grid / (2 * extent)
    scale = np.array([k, k, 1.0])
    off = np.array([grid / 2 - 0.5, grid / 2 - 0.5, 0.0])
    muv, tris = _shadow_mesh()
    V = (f3.sample_map(P, muv) - f3.CENTER) @ B.T * scale + off
    # texels of the face window only (the scalp's own shadows are not worth their cost)
    st = static_maps()
    v0, v1, u0, u1 = st.eyes[-1].win[0] - 40, st.mouth.win[1] + 40, st.brows[-1].win[2] - 60, st.brows[1].win[3] + 60
    v0, u0, v1, u1 = max(v0, 0), max(u0, 0), min(v1, H), min(u1, W)
    Pw = np.asarray(P[v0:v1, u0:u1], np.float32)
    T = by_channel(lambda p, c: p - c, Pw, f3.CENTER.astype(np.float32)) @ B.T.astype(np.float32)
    tx, ty, tz = (T[..., j] * scale.astype(np.float32)[j:j + 1] + off.astype(np.float32)[j:j + 1] for j in range(3))
    # the shadow map is read only around the texels' light-space positions: skip the triangles
    # that cannot reach one of those pixels (the map where it is read stays the same)
    needed = np.zeros((grid, grid), bool)
    needed[np.clip(np.floor(ty), 0, grid - 1).astype(np.intp), np.clip(np.floor(tx), 0, grid - 1).astype(np.intp)] = True
    ids, _ = f3.rasterize(V[:, :2], V[:, 2], tris, (grid, grid), cull=True, needed=needed)   # surfaces facing the light
    coef = _affine_coefficients(V[:, :2], V[:, 2:3], tris)
    rows, cols = np.nonzero(ids >= 0)
    cf = coef[ids[rows, cols], 0]
    D = np.full((grid, grid), 1e6, np.float32)
    D[rows, cols] = cf[:, 0] * cols + cf[:, 1] * rows + cf[:, 2]
    d_occ = cv2.remap(D, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=1e6)
    N = f3.surface_normals(P) if N is None else N
    ndl = np.clip(N[v0:v1, u0:u1] @ (R.T @ Lv).astype(np.float32), 0.05, 1.0)
    slope = np.minimum(np.sqrt(1.0 - ndl * ndl) / ndl, 8.0)
    b = bias + 1.5 * (2 * extent / grid) * slope
    sh = np.clip((tz - d_occ - b) / soft, 0.0, 1.0) * _sstep((ndl - 0.05) / 0.2)   # no acne at grazing light
    out = np.zeros((H, W), np.float32)
    out[v0:v1, u0:u1] = cv2.GaussianBlur(sh, (0, 0), 1.0)  # soften the shadow-map pixels
    return out


def shade(painted, P, R, light, ao=None, shadow=None, N=None):
    """Lit colour (linear) of every texel of a painted surface P seen through head rotation R:

        colour = albedo * (key * diffuse * (0.55 + 0.45 ao) + ambient * ao * sky(n)) + key * specular * ao
        diffuse  = clamp((n.l + w) / (1 + w)) + skin terminator tint    (w: wrap, larger on skin)
        specular = ks * exp(-p (1 - n.h))                                (Blinn-Phong, n.h^p ~ exp(-p (1 - n.h)))

    -> [H, W, 3] float32"""
    N = f3.surface_normals(P) if N is None else N
    L = (R.T @ light.direction).astype(np.float32)                  # light in the face frame
    V = (R.T @ np.array([0.0, 0.0, 1.0])).astype(np.float32)         # toward the camera
    up = (R.T @ np.array([0.0, 1.0, 0.0])).astype(np.float32)
    Hv = (L + V) / np.linalg.norm(L + V)
    ndl = N @ L
    sss = painted.sss
    wrap = 0.18 + 0.22 * sss                                         # softer terminator on skin
    diff = np.clip((ndl + wrap) / (1.0 + wrap), 0.0, 1.0)
    ao_ = f3.mean_model().ao if ao is None else ao
    spec = painted.spec * np.exp(painted.power * (np.minimum(N @ Hv, 1.0) - 1.0)) * (ndl > 0) * ao_
    if shadow is not None:                                           # cast shadows dim the key light
        lit_frac = 1.0 - shadow
        diff *= lit_frac
        spec *= lit_frac
    amb = ao_ * ((1.0 - light.sky) + light.sky * (0.5 + 0.5 * (N @ up)))
    diff *= 0.55 + 0.45 * ao_
    term = sss * np.exp(-8.0 * ndl * ndl) * 0.22                     # subsurface red at the terminator
    kc, ac = light.color.astype(np.float32), light.ambient.astype(np.float32)
    fill = None
    if light.fill is not None:
        fill = np.clip(N @ (R.T @ light.fill).astype(np.float32), 0.0, 1.0)
    out = np.empty(P.shape, np.float32)
    for c, red in enumerate((1.0, 0.25, 0.15)):
        lit = diff * kc[c] + amb * ac[c] + term * (red * kc[c])
        if fill is not None:
            lit += fill * float(light.fill_color[c])
        out[..., c] = (painted.albedo[..., c] * lit + spec * kc[c]) * light.exposure
    return out


# ---------------------------------------------------------------------------------------------
# Rasterising the head
# ---------------------------------------------------------------------------------------------

@dataclass
class HeadRender:
    color: np.ndarray     # [S, S, 3] float32 linear colour (0 where empty)
    alpha: np.ndarray     # [S, S] float32 coverage (0/1 at this resolution)
    depth: np.ndarray     # [S, S] float32 distance to the camera plane (inf where empty)
    uv: np.ndarray        # [S, S, 2] float32 texture coordinates (-1 where empty)


def _affine_coefficients(xy, vals, tris):
    """Per triangle, the plane attr(x, y) = c0 x + c1 y + c2 through its three vertices, for each
    attribute column of vals [V, A]. -> [T, A, 3]"""
    a, b, c = xy[tris[:, 0]], xy[tris[:, 1]], xy[tris[:, 2]]
    e1, e2 = b - a, c - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    det = np.where(np.abs(det) < 1e-9, 1e-9, det)
    fa, fb, fc = vals[tris[:, 0]], vals[tris[:, 1]], vals[tris[:, 2]]
    d1, d2 = fb - fa, fc - fa                                             # [T, A]
    cx = (d1 * e2[:, 1:2] - d2 * e1[:, 1:2]) / det[:, None]
    cy = (d2 * e1[:, 0:1] - d1 * e2[:, 0:1]) / det[:, None]
    c0 = fa - cx * a[:, 0:1] - cy * a[:, 1:2]
    return np.stack([cx, cy, c0], -1)


def render_head(P, texture, cam, size, model=None):
    """Rasterise surface P (texture-grid map) with a lit texture [H, W, 3] (linear) through cam into
    a size x size image. -> HeadRender (depth: distance to the camera plane per pixel)"""
    m = model or f3.mean_model()
    Pv = f3.sample_map(P, m.mesh_uv)
    xy, depth = cam.project(Pv)
    ids, keep = f3.rasterize(xy, depth, m.mesh_tris, (size, size))
    coef = _affine_coefficients(xy, np.concatenate([m.mesh_uv, depth[:, None]], 1), m.mesh_tris).astype(np.float32)
    # every attribute a = c0 x + c1 y + c2 of the pixel's triangle (x = column, y = row), evaluated
    # on the rows the head covers; an extra last "triangle" (0, 0, empty value) fills the empty pixels
    covered = np.nonzero((ids >= 0).any(1))[0]
    r0, r1 = (int(covered[0]), int(covered[-1]) + 1) if len(covered) else (0, 0)
    t = ids[r0:r1]
    t = np.where(t >= 0, t, len(coef))                                     # [h, size]
    cols = np.arange(size, dtype=np.float32)[None, :]
    rows = np.arange(r0, r1, dtype=np.float32)[:, None]
    planes = []
    for k, empty in enumerate((-1.0, -1.0, np.inf)):                       # u, v, depth
        c = np.concatenate([coef[:, k], np.array([[0.0, 0.0, empty]], np.float32)])   # [T + 1, 3]
        full = np.full((size, size), empty, np.float32)
        full[r0:r1] = c[t, 0] * cols + c[t, 1] * rows + c[t, 2]
        planes.append(full)
    uv = np.stack(planes[:2], -1)
    dep = planes[2]
    tex = np.concatenate([texture, texture[:, :2]], 1)                    # wrap the back meridian
    color = cv2.remap(tex, planes[0], planes[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    alpha = (ids >= 0).astype(np.float32)
    return HeadRender(color=color, alpha=alpha, depth=dep, uv=uv)
