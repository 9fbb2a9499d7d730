"""Image-space parts of a synthetic photograph: background, neck and shoulders, hair hanging from the
head, glasses, hands and objects in front of the face, and the camera (white balance, exposure,
blur, noise, resampling, JPEG, grayscale).

All drawing is in linear RGB float32 on the supersampled canvas (``ss`` times the output size);
``finish`` converts to the output image. Every function takes an ``np.random.Generator`` and uses
nothing else random.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from . import face3d as f3
from ._channels import by_channel

__all__ = ["background", "render_body", "hair_curtain", "glasses", "hand", "object_occluder",
           "camera_effects", "to_uint8"]


def _noise(rng, shape, cells, interp=cv2.INTER_CUBIC):
    """Smooth noise of the given shape with (cells_h, cells_w) features (see paint._noise)."""
    from .paint import _noise as bank_noise
    return bank_noise(rng, shape, cells, interp)


def _sstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _mean3(img):
    """img.mean(-1) of a float32 [..., 3] image, bit for bit (sum left to right, then / 3: a float32
    quotient is correctly rounded whether NumPy divides in float32 or in float64), without the slow
    3-wide reduction."""
    assert img.dtype == np.float32 and img.shape[-1] == 3
    return ((img[..., 0] + img[..., 1]) + img[..., 2]) / np.float32(3)


def _rand_color(rng, sat=(0.0, 0.7), val=(0.1, 0.95)):
    """A random colour (linear RGB) from hue/saturation/value ranges."""
    h = rng.uniform(0, 360)
    s, v = rng.uniform(*sat), rng.uniform(*val)
    hsv = np.array([[[h / 2, s * 255, v * 255]]], np.uint8)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] / 255.0
    return (rgb.astype(np.float32)) ** 2.0


# ---------------------------------------------------------------------------------------------
# Background
# ---------------------------------------------------------------------------------------------

def _octave_noise(rng, S):
    """Multi-octave noise field [S, S] with unit-ish amplitude."""
    return sum(a * _noise(rng, (S, S), (max(2, S // c), max(2, S // c)))
               for a, c in ((0.55, 48), (0.3, 12), (0.2, 3)))


def background(rng, size):
    """A textured, usually blurred scene behind the head: indoor walls and furniture, outdoor sky,
    ground and buildings, studio gradients, clutter of shapes. Drawn as a label map of shapes, each
    label with its own colour, texture contrast and optional stripes, over one shared noise field.
    -> [size, size, 3] linear float32"""
    S = size
    kind = rng.choice(["indoor", "outdoor", "studio", "clutter", "texture"], p=[0.32, 0.18, 0.12, 0.28, 0.1])
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S
    lab = np.zeros((S, S), np.int32)
    colors = [_rand_color(rng, (0, 0.5), (0.15, 0.9))]
    amps = [rng.uniform(0.05, 0.3) if kind != "texture" else rng.uniform(0.5, 1.0)]
    if kind == "outdoor":
        horizon = rng.uniform(0.25, 0.75)
        edge = (horizon + 0.06 * _noise(rng, (1, S), (1, 6))[0] + 0.02 * _noise(rng, (1, S), (1, 40))[0]) * S
        lab[np.arange(S)[:, None] > edge[None, :]] = 1
        colors[0] = _rand_color(rng, (0.2, 0.6), (0.7, 1.0)) * np.array([0.7, 0.85, 1.25], np.float32)
        amps[0] = 0.04
        colors.append(np.array([0.06, 0.16, 0.04], np.float32) * rng.uniform(0.5, 2.0) if rng.random() < 0.6
                      else _rand_color(rng, (0.1, 0.5), (0.2, 0.6)))
        amps.append(rng.uniform(0.4, 0.9))
        for _ in range(rng.integers(0, 5)):                       # buildings, trees, poles
            x0, w = rng.uniform(-0.1, 1.0) * S, rng.uniform(0.03, 0.4) * S
            top = rng.uniform(0.0, horizon) * S
            cv2.rectangle(lab, (int(x0), int(top)), (int(x0 + w), S), len(colors), -1)
            colors.append(_rand_color(rng, (0, 0.5), (0.1, 0.8)))
            amps.append(rng.uniform(0.05, 0.5))
    elif kind != "studio":
        n = {"indoor": rng.integers(2, 8), "clutter": rng.integers(8, 35), "texture": rng.integers(0, 3)}[kind]
        for _ in range(n):
            k = len(colors)
            t = rng.random()
            if kind == "indoor" or t < 0.4:                        # walls, doors, frames, furniture
                x0, y0 = rng.uniform(-0.2, 1.0, 2) * S
                w, h = rng.uniform(0.05, 0.8, 2) * S
                cv2.rectangle(lab, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), k, -1)
            elif t < 0.7:
                c = tuple(int(v) for v in rng.uniform(0, 1, 2) * S)
                cv2.ellipse(lab, c, tuple(int(v) for v in rng.uniform(0.02, 0.3, 2) * S), rng.uniform(0, 180), 0, 360, k, -1)
            elif t < 0.85:
                cv2.fillPoly(lab, [(rng.uniform(-0.1, 1.1, (rng.integers(3, 7), 2)) * S).astype(np.int32)], k)
            else:
                p1, p2 = (tuple(int(v) for v in rng.uniform(0, 1, 2) * S) for _ in range(2))
                cv2.line(lab, p1, p2, k, int(rng.integers(1, max(2, S // 30))))
            colors.append(_rand_color(rng))
            amps.append(rng.uniform(0.03, 0.6))
    colors, amps = np.array(colors, np.float32), np.array(amps, np.float32)
    tex = _octave_noise(rng, S)
    shade = 1.0 + amps[lab] * tex
    img = np.stack([colors[:, k][lab] * shade for k in range(3)], -1)     # colors[lab] * shade[..., None]
    if kind != "outdoor" and len(colors) > 1:                      # some shapes striped or checked
        a, period = rng.uniform(0, math.pi), rng.uniform(0.015, 0.08)
        stripes = np.sin((xx * math.cos(a) + yy * math.sin(a)) * 2 * math.pi / period) > 0
        striped = rng.random(len(colors)) < 0.2
        k = np.where(striped[lab] & stripes, 0.65, 1.0).astype(np.float32)
        by_channel(lambda c: c * k, img, out=img)
    if kind == "studio":
        c2 = _rand_color(rng, (0, 0.4), (0.05, 0.7))
        r = np.sqrt((xx - rng.uniform(0.3, 0.7)) ** 2 + (yy - rng.uniform(0.2, 0.6)) ** 2)
        k = _sstep(r / rng.uniform(0.5, 1.2))
        img = by_channel(lambda c, d: c + d * k, img, c2 - colors[0])
    g = rng.uniform(-0.6, 0.6, 2).astype(np.float32)                # light falloff across the scene
    k = 1 + g[0] * (xx - 0.5) + g[1] * (yy - 0.5)
    by_channel(lambda c: c * k, img, out=img)
    if rng.random() < 0.3:                                          # out-of-focus highlights
        spots = np.zeros((S, S), np.float32)
        for _ in range(rng.integers(3, 15)):
            cv2.circle(spots, tuple(int(v) for v in rng.uniform(0, 1, 2) * S), int(rng.uniform(0.01, 0.05) * S),
                       float(rng.uniform(0.2, 0.8)), -1, cv2.LINE_AA)
        by_channel(lambda c, h: c + spots * h, img, _rand_color(rng, (0, 0.5), (0.5, 1.0)), out=img)
    sigma = rng.choice([0.0, rng.uniform(0.4, 1.5), rng.uniform(1.5, 5.0)], p=[0.3, 0.4, 0.3]) * S / 256
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), float(sigma))
    return np.ascontiguousarray(np.clip(img, 0, 1.5), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Neck and shoulders
# ---------------------------------------------------------------------------------------------

def _grid_tris(rows, cols, wrap):
    i, j = np.meshgrid(np.arange(rows - 1), np.arange(cols if wrap else cols - 1), indexing="ij")
    j1 = (j + 1) % cols
    a, b = (i * cols + j).ravel(), (i * cols + j1).ravel()
    c, d = ((i + 1) * cols + j).ravel(), ((i + 1) * cols + j1).ravel()
    return np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])


def body_mesh(cam, body_R, body_t, neck_r=(58.0, 54.0), shoulder=200.0, depth=110.0):
    """Neck (top ring inside the head under the jaw, bottom ring on the shoulders) and torso.

    cam: the head camera; body_R: 3x3 rotation of the body in the view frame; body_t: the base of
    the neck in the view frame, mm. -> (view-frame vertices [V, 3], normals [V, 3], triangles
    [T, 3], per-vertex material 0 skin / 1 clothing, per-vertex (s, t) texture coords)"""
    na = 32
    a = np.linspace(0, 2 * np.pi, na, endpoint=False)
    ring = np.stack([np.sin(a), np.zeros_like(a), np.cos(a)], 1)                 # around +y
    # neck: from inside the head (face frame, under the jaw) down to the body
    top = np.array([0.0, -88.0, -72.0]) + ring * np.array([0.82 * neck_r[0], 0, 0.82 * neck_r[1]])
    top_v = cam.view(top)
    bot = body_t + (ring * np.array([neck_r[0], 0, neck_r[1]])) @ body_R.T
    nt = 6
    t = np.linspace(0, 1, nt)[:, None, None]
    neck = top_v[None] * (1 - t) + bot[None] * t                                  # [nt, na, 3]
    neck_n = np.broadcast_to((ring @ body_R.T)[None], neck.shape)
    # torso: superelliptic cross-sections, wide almost at once (trapezius), sloping to the shoulders
    hs = np.array([0.0, -8, -20, -38, -60, -90, -140, -260, -420])
    k = shoulder / 200.0
    wx = np.array([neck_r[0], 100, 150, 185, 200, 205, 205, 200, 195]) * np.r_[1, [k] * 8]
    wz = np.array([neck_r[1], 75, 92, 102, 108, 110, 110, 108, 105]) * np.r_[1, [depth / 110.0] * 8]
    p = 2.8
    sa, ca = np.sin(a), np.cos(a)
    ex = np.sign(sa) * np.abs(sa) ** (2 / p)
    ez = np.sign(ca) * np.abs(ca) ** (2 / p)
    xs = wx[:, None] * ex[None]
    drop = 42.0 * np.clip(np.abs(xs) / 200.0, 0, 1) ** 1.6                       # shoulders slope down
    yd = hs[:, None] - drop * (hs[:, None] > -200)
    torso = np.stack([xs, yd, wz[:, None] * ez[None]], -1)                        # body frame
    nx = np.sign(ex) * np.abs(ex) ** (p - 1) / wx[:, None]
    nz = np.sign(ez) * np.abs(ez) ** (p - 1) / wz[:, None]
    ny = np.where(hs[:, None] > -60, 1.2, 0.1) / 200.0 * np.ones_like(nx)         # tops face up
    tn = np.stack([nx, ny, nz], -1)
    tn /= np.linalg.norm(tn, axis=-1, keepdims=True)
    torso_v = body_t + torso @ body_R.T
    torso_n = tn @ body_R.T
    V = np.concatenate([neck.reshape(-1, 3), torso_v.reshape(-1, 3)])
    N = np.concatenate([neck_n.reshape(-1, 3), torso_n.reshape(-1, 3)])
    tris = np.concatenate([_grid_tris(nt, na, True), _grid_tris(len(hs), na, True) + nt * na])
    mat = np.concatenate([np.zeros(nt * na), np.ones(len(hs) * na)])
    st = np.concatenate([np.stack(np.broadcast_arrays(a[None] / (2 * np.pi), t[..., 0] * 0.2), -1).reshape(-1, 2),
                         np.stack(np.broadcast_arrays(a[None] / (2 * np.pi), 0.2 - hs[:, None] / 420), -1).reshape(-1, 2)])
    return V, N, tris, mat, st


def render_body(rng, cam, body_R, body_t, skin_lin, light, size, neckline=None, shoulder=200.0):
    """Neck and torso: -> (colour [S, S, 3] linear, alpha [S, S], depth [S, S])"""
    V, N, tris, mat, st = body_mesh(cam, body_R, body_t, shoulder=shoulder)
    depth = cam.distance - V[:, 2]
    xy = np.stack([cam.cx + cam.focal * V[:, 0] / depth, cam.cy - cam.focal * V[:, 1] / depth], -1)
    ids, _ = f3.rasterize(xy, depth, tris, (size, size), cull=False)
    rows, cols, t, l1, l2 = f3.barycentric(ids, xy, tris)
    color = np.zeros((size, size, 3), np.float32)
    dep = np.full((size, size), np.inf, np.float32)
    if len(rows) == 0:
        return color, np.zeros((size, size), np.float32), dep
    tri = tris[t]
    w0 = 1 - l1 - l2

    def interp(a):                                        # w0 a[i0] + l1 a[i1] + l2 a[i2], per column
        return by_channel(lambda a0, a1, a2: w0 * a0 + l1 * a1 + l2 * a2, a[tri[:, 0]], a[tri[:, 1]], a[tri[:, 2]],
                          C=a.shape[1])

    n = interp(N)
    length = np.sqrt((n[:, 0] * n[:, 0] + n[:, 1] * n[:, 1]) + n[:, 2] * n[:, 2])   # np.linalg.norm(n, axis=1)
    back = n[:, 2] / length < 0
    n = by_channel(lambda v: np.where(back, -(v / length), v / length), n)   # two-sided (the mesh is not culled)
    m = interp(mat[:, None])[:, 0]
    s_t = interp(st)
    dep[rows, cols] = interp(depth[:, None])[:, 0]
    # clothing: colour, weave, and an optional neckline where the chest skin shows
    cloth = _rand_color(rng, (0, 0.8), (0.05, 0.8))
    weave = 1.0 + 0.08 * np.sin(s_t[:, 0] * rng.uniform(200, 900)) * np.sin(s_t[:, 1] * rng.uniform(100, 600))
    if rng.random() < 0.3:
        weave *= 0.75 + 0.25 * (np.sin(s_t[:, 1] * rng.uniform(20, 80)) > 0)
    # a U-shaped neckline in front (a = 0 is the front of the body)
    da = np.abs(((s_t[:, 0] + 0.5) % 1.0) - 0.5)                           # 0 front .. 0.5 back
    depth_v = rng.uniform(0.0, 0.12) if neckline is None else neckline
    width = rng.uniform(0.07, 0.14)
    skin_chest = s_t[:, 1] < 0.2 + depth_v * np.sqrt(np.clip(1 - (da / width) ** 2, 0, 1))
    is_skin = (m < 0.5) | skin_chest
    alb = by_channel(lambda sk, cl: np.where(is_skin, sk * 0.92, cl * weave), skin_lin, cloth)
    ndl = np.clip(n @ light.direction, 0, 1)
    up = 0.75 + 0.25 * n[:, 1]
    under_chin = np.where(m < 0.5, 0.45 + 0.55 * np.clip(s_t[:, 1] / 0.2, 0, 1), 1.0)  # neck shadowed by the jaw
    col = by_channel(lambda a, kc, ac: a * ((ndl * kc) * under_chin + (ac * up) * under_chin), alb, light.color, light.ambient)
    color[rows, cols] = col * light.exposure
    return color, (ids >= 0).astype(np.float32), dep


# ---------------------------------------------------------------------------------------------
# Hair hanging from the head (behind it), and a lock falling in front of the face
# ---------------------------------------------------------------------------------------------

def _strand_texture(rng, size, angle_deg, hair_lin):
    """Hair strands running along angle_deg (image degrees from +y), linear colour [S, S, 3]."""
    S = size
    n = _noise(rng, (S, S), (4, max(8, S // 2)), cv2.INTER_LINEAR) * 0.12 \
        + _noise(rng, (S, S), (3, max(4, S // 10)), cv2.INTER_CUBIC) * 0.12 \
        + _noise(rng, (S, S), (2, 3), cv2.INTER_CUBIC) * 0.15
    M = cv2.getRotationMatrix2D((S / 2, S / 2), float(angle_deg), 1.0)
    n = cv2.warpAffine(n, M, (S, S), borderMode=cv2.BORDER_REFLECT)
    k = np.clip(1.0 + n, 0.4, 1.8)
    return by_channel(lambda h: h * k, hair_lin)


def _volume_shade(mask, light, base_strength=0.5):
    """Round-looking light on a flat hair mass: brighter inside, darker at the outline."""
    m8 = (mask > 0.5).astype(np.uint8)
    d = cv2.distanceTransform(m8, cv2.DIST_L2, 3)
    d = np.sqrt(np.clip(d / max(float(d.max()), 1.0) * 2.5, 0, 1))
    return (light.color.mean() * base_strength * (0.35 + 0.65 * d) + light.ambient.mean() * (0.6 + 0.4 * d))


def hair_curtain(rng, cam, P_hair, hair_lin, light, size, length, flare, body_down):
    """Long hair behind the head, hanging from the sides and back of the hair surface down onto the
    shoulders, with an uneven lower edge. P_hair: the head surface with hair volume; body_down: unit
    'down' of the body, view frame. -> (colour [S, S, 3] linear, alpha [S, S])"""
    n = 96
    th = np.radians(np.linspace(62, 298, n))
    th = np.where(th > np.pi, th - 2 * np.pi, th)
    uv = np.stack([f3.u_of_theta(th), np.full_like(th, f3.v_of_phi(math.radians(-8.0)))], -1)
    top = cam.view(f3.sample_map(P_hair, uv))                            # [n, 3] view frame
    out = top - cam.view(f3.CENTER[None])
    out[:, 1] = 0
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)
    ang = np.abs(np.degrees(np.arctan2(np.sin(th), np.cos(th))))
    clumps = 1.0 + 0.12 * _noise(rng, (1, n), (1, 12))[0] + 0.05 * rng.standard_normal(n)
    L = length * np.interp(ang, [60, 110, 180], [1.0, 1.0, 0.92]) * clumps
    mid = top + body_down[None] * (0.45 * L[:, None]) + out * (0.5 * flare)
    bot = top + body_down[None] * L[:, None] + out * flare
    mask = np.zeros((size, size), np.float32)

    def proj(p):
        d = cam.distance - p[:, 2]
        return np.stack([cam.cx + cam.focal * p[:, 0] / d, cam.cy - cam.focal * p[:, 1] / d], -1)

    tp, mp, bp = proj(top), proj(mid), proj(bot)
    for a_, b_ in ((tp, mp), (mp, bp)):
        for i in range(n - 1):
            quad = np.array([a_[i], a_[i + 1], b_[i + 1], b_[i]])
            cv2.fillConvexPoly(mask, np.round(quad * 16).astype(np.int32), 1.0, cv2.LINE_AA, 4)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.6, size / 500))
    down2 = proj(top[:1] + body_down[None] * 100)[0] - tp[0]
    angle = math.degrees(math.atan2(down2[0], down2[1]))
    tex = _strand_texture(rng, size, -angle, hair_lin)
    shade = _volume_shade(mask, light) * light.exposure
    # sheen: a soft band of highlight across the strands, strongest on dark hair
    yy = np.arange(size, dtype=np.float32)[:, None]
    band_y = float(tp[:, 1].mean() + rng.uniform(0.15, 0.5) * (bp[:, 1].mean() - tp[:, 1].mean()))
    band = np.exp(-0.5 * ((yy - band_y) / (0.06 * size)) ** 2) * np.ones((1, size), np.float32)
    sheen = (0.05 + 0.1 * rng.random()) * band * np.clip(_mean3(tex) / max(hair_lin.mean(), 1e-4), 0, 2)
    sheen = sheen * light.color.mean() * light.exposure
    col = by_channel(lambda t, w: t * shade + sheen * w, tex, np.array([1.0, 0.97, 0.92], np.float32))
    return col.astype(np.float32), mask.astype(np.float32)


def hair_lock(rng, cam, P_hair, hair_lin, light, size, side, width_mm):
    """A lock of hair from the temple down past the jaw on one side, in front of the face.
    -> (colour, alpha)"""
    s = 1.0 if side > 0 else -1.0
    th0 = math.radians(s * rng.uniform(45, 70))
    pts = []
    for k, (dth, phi, out) in enumerate([(0, 28, 4), (6, 5, 6), (10, -25, 10), (12, -50, 16), (14, -75, 24)]):
        th = th0 + math.radians(s * dth)
        uv = np.array([[f3.u_of_theta(th), f3.v_of_phi(math.radians(phi))]])
        p = f3.sample_map(P_hair, uv)[0]
        d = p - f3.CENTER
        d[1] = 0
        pts.append(p + out * d / np.linalg.norm(d))
    pts = np.array(pts)
    xy, depth = cam.project(pts)
    curve = np.array([xy[0] * (1 - t) ** 3 + 3 * xy[1] * t * (1 - t) ** 2 + 3 * xy[3] * t * t * (1 - t) + xy[4] * t ** 3
                      for t in np.linspace(0, 1, 24)])
    px_per_mm = cam.focal / cam.distance
    mask = np.zeros((size, size), np.float32)
    wid = width_mm * px_per_mm
    for i in range(len(curve) - 1):
        w = max(1, int(wid * (0.6 + 0.6 * math.sin(math.pi * i / len(curve)))))
        cv2.line(mask, tuple(np.round(curve[i] * 16).astype(int)), tuple(np.round(curve[i + 1] * 16).astype(int)), 1.0, w, cv2.LINE_AA, 4)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, size / 500))
    d = curve[-1] - curve[0]
    tex = _strand_texture(rng, size, -math.degrees(math.atan2(d[0], d[1])), hair_lin)
    shade = _volume_shade(mask, light, 0.7) * light.exposure
    return by_channel(lambda t: t * shade, tex).astype(np.float32), mask


# ---------------------------------------------------------------------------------------------
# Glasses
# ---------------------------------------------------------------------------------------------

def glasses(rng, cam, lm3d, head_depth, size, sun):
    """Spectacles (sun: dark lenses) in front of the eyes, temples back to the ears, hidden where the
    head is nearer the camera. -> (colour [S, S, 3] linear premultiplied, alpha [S, S], lens mask)"""
    frame_col = rng.choice([0, 1, 2, 3], p=[0.45, 0.2, 0.2, 0.15])
    frame = [np.array([0.01, 0.01, 0.01]), np.array([0.08, 0.04, 0.02]), np.array([0.5, 0.45, 0.35]),
             _rand_color(rng, (0.4, 0.9), (0.2, 0.8))][frame_col].astype(np.float32)
    thick_mm = rng.uniform(1.0, 4.5) if not sun else rng.uniform(1.5, 5.0)
    hw, hh = rng.uniform(22, 28), rng.uniform(15, 22) if not sun else rng.uniform(20, 27)
    expo = rng.uniform(2.2, 5.0)
    color = np.zeros((size, size, 3), np.float32)
    alpha = np.zeros((size, size), np.float32)
    lens_mask = np.zeros((size, size), np.float32)
    px_per_mm = cam.focal / cam.distance
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    ex = np.sign(np.cos(t)) * np.abs(np.cos(t)) ** (2 / expo)
    ey = np.sign(np.sin(t)) * np.abs(np.sin(t)) ** (2 / expo)
    rims = []
    for side, idx in ((-1, slice(36, 42)), (1, slice(42, 48))):
        c = lm3d[idx].mean(0) + np.array([side * 1.5, 1.0 if not sun else 2.5, 13.0])
        rim = c + np.stack([hw * ex, hh * ey - 0.15 * hh * (ex * side > 0.3), -4.0 * ex ** 2], -1)
        rims.append(rim)
        xy, dep = cam.project(rim)
        poly = np.round(xy * 16).astype(np.int32)
        lm = np.zeros((size, size), np.float32)
        cv2.fillPoly(lm, [poly], 1.0, cv2.LINE_AA, 4)
        vis = _visible(xy, dep, head_depth)
        lm *= cv2.dilate(_visible_mask(xy, vis, size, px_per_mm * hw), np.ones((3, 3)))
        lens_mask = np.maximum(lens_mask, lm)
    tint = (np.array([0.02, 0.02, 0.025]) * rng.uniform(0.3, 3.0)) if sun else np.array([0.9, 0.92, 0.95])
    a_lens = rng.uniform(0.85, 0.97) if sun else rng.uniform(0.03, 0.12)
    by_channel(lambda c, t: c + (lens_mask * a_lens) * t, color, tint.astype(np.float32), out=color)
    alpha = np.maximum(alpha, lens_mask * a_lens)
    if not sun and rng.random() < 0.5:                                  # a reflection on the lenses
        refl = _sstep(_noise(rng, (size, size), (3, 3)) * 0.8) * lens_mask * rng.uniform(0.05, 0.25)
        by_channel(lambda c: c + refl * 0.8, color, out=color)
        alpha = np.maximum(alpha, refl)
    # frame: both rims, the bridge, the temples to the ears
    segments = [np.concatenate([r, r[:1]]) for r in rims]
    bridge = np.array([rims[0][0] + [0, 3, 0], (rims[0][0] + rims[1][32]) / 2 + [0, 5, 3], rims[1][32] + [0, 3, 0]])
    segments.append(bridge)
    for side, r in ((-1, rims[0]), (1, rims[1])):
        outer = r[32] if side < 0 else r[0]
        ear = np.array([side * 74.0, outer[1] - 2.0, -85.0])
        segments.append(np.linspace(outer, ear, 20))
    fr = np.zeros((size, size), np.float32)
    w = max(1, int(round(thick_mm * px_per_mm)))
    for seg in segments:
        xy, dep = cam.project(seg)
        vis = _visible(xy, dep, head_depth)
        for i in range(len(seg) - 1):
            if vis[i] and vis[i + 1]:
                cv2.line(fr, tuple(np.round(xy[i] * 16).astype(int)), tuple(np.round(xy[i + 1] * 16).astype(int)), 1.0, w, cv2.LINE_AA, 4)
    color = by_channel(lambda c, f: c * (1 - fr) + fr * f, color, frame)
    alpha = np.maximum(alpha, fr)
    return color, alpha, lens_mask


def _visible(xy, depth, head_depth, tol=3.0):
    """Per point: not behind the head surface (head_depth: [S, S] distance map, inf = empty)."""
    S = head_depth.shape[0]
    ix = np.clip(np.round(xy[:, 0]).astype(int), 0, S - 1)
    iy = np.clip(np.round(xy[:, 1]).astype(int), 0, S - 1)
    return depth <= head_depth[iy, ix] + tol


def _visible_mask(xy, vis, size, radius):
    m = np.zeros((size, size), np.float32)
    if vis.all():
        m[:] = 1.0
        return m
    for (x, y), v in zip(xy, vis):
        if v:
            cv2.circle(m, (int(x), int(y)), max(1, int(radius * 0.6)), 1.0, -1)
    return m


# ---------------------------------------------------------------------------------------------
# Hands and objects in front of the face
# ---------------------------------------------------------------------------------------------

def _shade_mask(mask, light, base, bump=1.0):
    """Round-looking shading of a flat shape from its distance to the outline."""
    m8 = (mask > 0.5).astype(np.uint8)
    d = cv2.distanceTransform(m8, cv2.DIST_L2, 3)
    d = d / max(float(d.max()), 1.0)
    roundness = np.sqrt(np.clip(d * 2.0, 0, 1)) * bump + (1 - bump)
    shade = (light.color.mean() * (0.35 + 0.65 * roundness) + light.ambient.mean()) * light.exposure
    return by_channel(lambda b: b * shade, base)


def hand(rng, center, scale_px, angle_deg, skin_lin, light, size):
    """A hand (palm, four fingers, thumb) pointing along angle_deg, palm centred at center.
    scale_px: hand length in pixels. -> (colour [S, S, 3], alpha [S, S])"""
    L = scale_px
    mask = np.zeros((size, size), np.float32)
    lines = np.zeros((size, size), np.float32)
    a = math.radians(angle_deg)
    fwd, side = np.array([math.sin(a), -math.cos(a)]), np.array([math.cos(a), math.sin(a)])
    c = np.asarray(center, np.float64)
    axes = (int(0.2 * L), int(0.24 * L))
    cv2.ellipse(mask, (int(c[0] * 16), int(c[1] * 16)), (axes[0] * 16, axes[1] * 16), angle_deg, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
    curl = rng.uniform(0.3, 1.0)                                          # 1 open hand, 0.3 fist-like
    spread = rng.uniform(3, 12)
    width = max(2, int(0.085 * L))
    tips = []
    for k, (off, ln) in enumerate([(-1.5, 0.40), (-0.5, 0.46), (0.5, 0.44), (1.5, 0.36)]):
        base = c + fwd * 0.18 * L + side * off * 0.095 * L
        d = math.radians(off * spread)
        direction = fwd * math.cos(d) + side * math.sin(d)
        tip = base + direction * ln * L * curl
        tips.append(tip)
        cv2.line(mask, tuple(np.round(base * 16).astype(int)), tuple(np.round(tip * 16).astype(int)), 1.0, width, cv2.LINE_AA, 4)
        cv2.line(lines, tuple(np.round((base + side * 0.5 * width) * 16).astype(int)),
                 tuple(np.round((tip + side * 0.5 * width) * 16).astype(int)), 1.0, 1, cv2.LINE_AA, 4)
    th_dir = -side * math.cos(0.9) + fwd * math.sin(0.9)
    if rng.random() < 0.5:
        th_dir = side * math.cos(0.9) + fwd * math.sin(0.9)
    tb = c + th_dir * 0.1 * L
    cv2.line(mask, tuple(np.round(tb * 16).astype(int)), tuple(np.round((tb + th_dir * 0.3 * L) * 16).astype(int)),
             1.0, int(width * 1.15), cv2.LINE_AA, 4)
    # wrist / forearm leaving the picture
    cv2.line(mask, tuple(np.round(c * 16).astype(int)), tuple(np.round((c - fwd * 1.5 * L) * 16).astype(int)),
             1.0, int(0.32 * L), cv2.LINE_AA, 4)
    tone = skin_lin * rng.uniform(0.85, 1.1)
    col = _shade_mask(mask, light, tone.astype(np.float32))
    k = 1 - 0.35 * lines * mask
    by_channel(lambda c: c * k, col, out=col)
    for tip in tips:                                                     # nails
        cv2.circle(col, tuple(np.round((tip - fwd * 0.03 * L) * 16).astype(int)), max(1, width // 3) * 16,
                   tuple((tone * 1.25 * light.color.mean()).tolist()), -1, cv2.LINE_AA, 4)
    return col.astype(np.float32), np.clip(mask, 0, 1)


def object_occluder(rng, center, scale_px, light, size):
    """A random object (phone, cup, microphone, ball, card, leaf, blob) centred at center.
    -> (colour, alpha)"""
    kind = rng.choice(["phone", "cup", "mic", "ball", "card", "leaf", "blob"])
    S = size
    mask = np.zeros((S, S), np.float32)
    c = np.asarray(center, np.float64)
    L = scale_px
    ang = rng.uniform(-40, 40)
    base = _rand_color(rng, (0.0, 0.9), (0.05, 0.9))
    detail = np.zeros((S, S), np.float32)
    if kind in ("phone", "card"):
        w, h = (0.35 * L, 0.7 * L) if kind == "phone" else (0.9 * L, 0.6 * L)
        box = cv2.boxPoints(((float(c[0]), float(c[1])), (float(w), float(h)), float(ang)))
        cv2.fillConvexPoly(mask, np.round(box * 16).astype(np.int32), 1.0, cv2.LINE_AA, 4)
        if kind == "phone":
            base = np.array([0.01, 0.01, 0.012], np.float32) * rng.uniform(1, 4)
            inner = cv2.boxPoints(((float(c[0]), float(c[1])), (float(w * 0.88), float(h * 0.9)), float(ang)))
            cv2.fillConvexPoly(detail, np.round(inner * 16).astype(np.int32), 1.0, cv2.LINE_AA, 4)
        else:
            base = np.array([0.8, 0.78, 0.7], np.float32) * rng.uniform(0.6, 1.1)
            for k in range(int(rng.integers(3, 9))):
                y0 = -0.35 + 0.7 * k / 8
                p1 = c + np.array([-0.35 * w, y0 * h])
                p2 = c + np.array([rng.uniform(0, 0.35) * w, y0 * h])
                cv2.line(detail, tuple(np.round(p1).astype(int)), tuple(np.round(p2).astype(int)), 1.0, max(1, int(L / 40)), cv2.LINE_AA)
    elif kind == "cup":
        box = cv2.boxPoints(((float(c[0]), float(c[1])), (float(0.55 * L), float(0.7 * L)), float(ang * 0.3)))
        cv2.fillConvexPoly(mask, np.round(box * 16).astype(np.int32), 1.0, cv2.LINE_AA, 4)
        cv2.ellipse(mask, (int(c[0] + 0.35 * L), int(c[1])), (int(0.15 * L), int(0.2 * L)), 0, 0, 360, 1.0, max(2, int(L / 14)), cv2.LINE_AA)
    elif kind == "mic":
        tip = c + np.array([math.sin(math.radians(ang)), -math.cos(math.radians(ang))]) * 0.4 * L
        cv2.line(mask, tuple(np.round(c).astype(int)), tuple(np.round(c + (c - tip) * 2.5).astype(int)), 1.0, max(2, int(0.18 * L)), cv2.LINE_AA)
        cv2.circle(mask, tuple(np.round(tip).astype(int)), int(0.2 * L), 1.0, -1, cv2.LINE_AA)
        base = np.array([0.02, 0.02, 0.02], np.float32) * rng.uniform(1, 8)
    elif kind == "ball":
        cv2.circle(mask, tuple(np.round(c).astype(int)), int(0.4 * L), 1.0, -1, cv2.LINE_AA)
    elif kind == "leaf":
        base = np.array([0.05, 0.2, 0.03], np.float32) * rng.uniform(0.5, 1.8)
        for _ in range(int(rng.integers(1, 5))):
            cc = c + rng.normal(0, 0.25 * L, 2)
            cv2.ellipse(mask, tuple(np.round(cc).astype(int)), (int(0.35 * L), int(0.12 * L)), rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
    else:
        p = c + rng.normal(0, 0.35 * L, (int(rng.integers(5, 9)), 2))
        hull = cv2.convexHull(np.round(p * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1.0, cv2.LINE_AA, 4)
    col = _shade_mask(mask, light, base, bump=0.8 if kind in ("ball", "cup", "mic", "blob") else 0.2)
    if kind == "phone":
        col = by_channel(lambda c, b: c * (1 - detail) + (detail * b) * 0.5, col, base)
    if kind == "card":
        col = by_channel(lambda c: c * (1 - 0.8 * detail), col)
    tex = 1.0 + 0.1 * _noise(rng, (S, S), (max(2, S // 16), max(2, S // 16)))
    return by_channel(lambda c: c * tex, col).astype(np.float32), np.clip(mask, 0, 1)


def cast_shadow(canvas, mask, offset, blur, strength, where=None):
    """Darken canvas under a blurred, shifted copy of an occluder's mask (in place)."""
    M = np.float32([[1, 0, offset[0]], [0, 1, offset[1]]])
    sh = cv2.warpAffine(mask, M, (mask.shape[1], mask.shape[0]))
    sh = cv2.GaussianBlur(sh, (0, 0), max(blur, 0.5)) * strength
    if where is not None:
        sh = sh * where
    k = 1 - sh
    by_channel(lambda c: c * k, canvas, out=canvas)


# ---------------------------------------------------------------------------------------------
# Camera
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _grain_bank(S, C):
    g = np.random.default_rng([104729, S, C])
    return g.standard_normal((8, S, S, C)).astype(np.float32)


def _grain(rng, S, C):
    """Per-pixel sensor noise ~ N(0, 1): a fixed bank of fields, rolled and flipped at random."""
    f = _grain_bank(S, C)[rng.integers(8)]
    f = np.roll(f, (int(rng.integers(S)), int(rng.integers(S))), axis=(0, 1))
    return f[::-1] if rng.random() < 0.5 else f


def to_uint8(lin):
    """Linear colour -> sRGB-ish uint8 (gamma 2)."""
    return (np.sqrt(np.clip(lin, 0, 1)) * 255.0 + 0.5).astype(np.uint8)


def jpeg_roundtrip(rgb, quality):
    """An RGB uint8 image [S, S, 3] saved as a JPEG of this quality (OpenCV's encoder) and read back."""
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def camera_effects(rng, img_lin, blur=None, gray=None):
    """Camera pipeline on a linear image [S, S, 3]: white balance, tone curve, optics blur (blur =
    (kind, amount) or None for the mild default), sensor noise, resampling, JPEG, grayscale.
    -> (uint8 RGB image, dict of what was applied)"""
    S = img_lin.shape[0]
    info = {}
    wb = np.clip(rng.normal(1.0, 0.05, 3), 0.85, 1.15).astype(np.float32)
    img = by_channel(lambda c, w: c * w, img_lin, wb)
    srgb = np.sqrt(np.clip(img, 0, 1))
    contrast = rng.uniform(0.85, 1.2)
    srgb = np.clip(0.5 + (srgb - 0.5) * contrast, 0, 1)
    sat = rng.uniform(0.7, 1.25)
    g = _mean3(srgb)
    srgb = by_channel(lambda c: np.clip(g + (c - g) * sat, 0, 1), srgb)
    if rng.random() < 0.3:                                                  # vignetting
        yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S - 0.5
        k = 1 - rng.uniform(0.1, 0.4) * (xx * xx + yy * yy) * 2
        by_channel(lambda c: c * k, srgb, out=srgb)
    # optics
    if blur is None:
        sigma = rng.choice([0.0, rng.uniform(0.3, 0.9)], p=[0.5, 0.5]) * S / 256
        if sigma > 0.2:
            srgb = cv2.GaussianBlur(srgb, (0, 0), float(sigma))
        info["blur"] = ("gauss", float(sigma))
    else:
        kind, amount = blur
        if kind == "gauss":
            srgb = cv2.GaussianBlur(srgb, (0, 0), float(amount * S / 256))
        else:
            n = max(3, int(round(amount * S / 256)) | 1)                   # odd: no half-pixel shift
            k = np.zeros((n, n), np.float32)
            a = rng.uniform(0, math.pi)
            c = (n - 1) / 2
            cv2.line(k, (int(round(c - c * math.cos(a))), int(round(c - c * math.sin(a)))),
                     (int(round(c + c * math.cos(a))), int(round(c + c * math.sin(a)))), 1.0, 1, cv2.LINE_AA)
            srgb = cv2.filter2D(srgb, -1, k / k.sum())
        info["blur"] = (kind, float(amount))
    # sensor noise (stronger in the dark)
    sigma_n = rng.uniform(0.0, 0.02) * (1.0 + 1.5 * (1.0 - float(srgb.mean())))
    if sigma_n > 0.002:
        lum = _grain(rng, S, 1) * sigma_n
        chroma = _grain(rng, S, 3) * (sigma_n * 0.4)
        srgb = srgb + lum + chroma
    out = (np.clip(srgb, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    if rng.random() < 0.15:                                                 # low resolution
        f = rng.uniform(0.35, 0.7)
        small = cv2.resize(out, (max(8, int(S * f)), max(8, int(S * f))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (S, S), interpolation=cv2.INTER_LINEAR)
        info["lowres"] = float(f)
    if rng.random() < 0.65:
        q = int(rng.integers(25, 96))
        out = jpeg_roundtrip(out, q)
        info["jpeg"] = q
    if gray if gray is not None else rng.random() < 0.07:
        gimg = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
        out = np.repeat(gimg[..., None], 3, axis=-1)
        info["gray"] = True
    return np.ascontiguousarray(out), info
