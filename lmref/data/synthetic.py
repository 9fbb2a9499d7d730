"""Synthetic face photographs with exact 68-point iBUG landmarks, per-point occlusion flags and the
six WFLW attribute labels, from a seeded NumPy + OpenCV renderer.

    from lmref.data import synthetic
    s = synthetic.generate(seed=0, index=7)          # one Sample: image [256, 256, 3] uint8 RGB,
    s.landmarks, s.occluded, s.attributes            # [68, 2] float64, [68] bool, [6] uint8
    train = synthetic.load_split("train", n=2000)    # cached on disk, identical on every machine
    python -m lmref.data.synthetic --out DIR --n 200 --seed 0     # 300W layout + contact sheet

How a face is made (``face3d``, ``paint``, ``scene``): a 3D head (mean shape from average 300W
proportions, identity and expression deformations) is posed (yaw up to +-60, pitch +-30, roll
+-30 degrees) and seen by a pinhole camera; skin, eyes, brows, lips, hair, beard and make-up are
painted on its surface and lit (key + fill + sky light, wrap diffuse, cast shadows, specular,
ambient occlusion);
it is drawn over a textured background with neck, shoulders and hanging hair, then glasses, masks,
hands or objects may cover it, and the camera adds white balance, tone, blur, noise, resampling, JPEG
and grayscale. The head is rendered at ``ss`` times the output size and area-downsampled.

Landmarks are the projections of fixed surface points, so they sit exactly on the painted features.
The jaw points follow the 300W convention: on the side turned away they move to the visible face
boundary (``face3d.contour_on_silhouette``). Landmarks are in output pixels, pixel centres at
integers. ``occluded[k]`` is True when point k is hidden by hair, glasses, a mask, a hand or an
object, by the face itself (e.g. the far nostril at large yaw), or lies outside the image.

Attribute labels (WFLW order ``ATTRIBUTES``): pose = |yaw| >= 40 or |pitch| >= 25 degrees;
expression = an exaggerated expression was drawn; illumination = extreme lighting was drawn;
make-up = heavy make-up was drawn; occlusion = at least 10 % of the points are hidden by hair or
objects (self-occlusion not counted); blur = strong defocus or motion blur was drawn.

Versions: ``VERSION`` (5) is the newest renderer; ``generate`` and ``load_split`` draw
``DEFAULT_VERSION`` (2) unless given ``version=``, because the shipped models, the experiments and
the teachers were trained on version 2 (``torch_impl.experiments.DATA_VERSION`` pins it there).
Version 3 (``lmref.data.photo``) draws every version-2 parameter first, so sample i has the same
pose, shape and framing in both, and renders it as a photograph: seen from farther away (1-4 m, so
the jaw points move: less perspective), auto exposure, coloured light, darker brows, oilier skin,
out-of-focus backgrounds, in-camera sharpening and JPEG (``python -m benchmarks.realism`` measures
how photographic each version looks). Version 4 draws and renders exactly version 3's images, and
labels them in 300-W's convention: its points are the surface points under ``face3d.LABEL_2D``
(MEAN_2D moved to where dlib's 300-W predictor places them on version-3 faces: brows higher,
mouth corners and eyes closer in, the jaw wider and its ends higher) instead of under MEAN_2D, around
which the face is still drawn; hands and objects still aim at the version-3 points. Version 5 is
version 4 with the identity space's spread brought to real faces' (``SPREAD_V5``): the same draws,
every face shape half as far from the mean head except in eye spacing and jaw width.

Determinism: every sample has its own generator seeded by (seed, split, index), nothing else is
random, and files are written with OpenCV's PNG encoder, so the same version, seed and package
versions give byte-identical images. Cached splits are keyed by VERSION; loading one re-renders its
first sample and rebuilds the cache if the landmarks disagree (a generator changed without a
version bump). (NumPy and OpenCV versions, or CPU-specific SIMD
paths for transcendental functions, can in principle change a pixel by one level; the cache keys
and a content hash in the cache make such a difference visible rather than silent.)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import face3d as f3
from . import paint as pt
from ._channels import by_channel
from . import photo
from . import scene as sc

__all__ = ["VERSION", "VERSIONS", "DEFAULT_VERSION", "ATTRIBUTES", "SPLITS", "Sample", "generate", "draw", "render", "sample_params",
           "load_split", "SyntheticSplit", "write_300w_layout", "contact_sheet", "main"]

VERSION = 5           # the newest renderer: bump whenever the images or labels of a (seed, split, index) change
VERSIONS = (2, 3, 4, 5)  # the renderers ``generate(version=...)`` can draw, each byte for byte as it was
DEFAULT_VERSION = 2   # what generate / load_split draw unless asked: the data the shipped models, the
                      # experiments and the teachers were trained on (moves on when they are retrained)
ATTRIBUTES = ("pose", "expression", "illumination", "make-up", "occlusion", "blur")   # WFLW order
# probability that a sample is drawn with each attribute (independently)
ATTRIBUTE_RATES = {"pose": 0.2, "expression": 0.25, "illumination": 0.2, "make-up": 0.2,
                   "occlusion": 0.25, "blur": 0.15}
# Version 5: the identity space's spread brought to real faces'. Version 4's identity coefficients (N(0, 1) per
# mode, clipped at 2.5) and anisotropic scale (sd 6, 5, 8 %) give its frontal, neutral faces coefficients of
# variation of 10-15 % in the face's height, the nose's length and width, the lower face's height and the mouth's
# width, each over the outer eye corners' distance; anthropometry of adult faces (Farkas, Anthropometry of the
# Head and Face, 1994) gives 4-7 % for these measurements. Version 5 scales every identity coefficient's and the
# scale's deviation by SPREAD_V5 (the same draws: sample i is version 4's face, less extreme), except the modes in
# SPREAD_V5_KEEP, whose version-4 spread was already about the anthropometric one: 3.7-8.4 % then
# (python -m benchmarks.realism --spread --version 5).
SPREAD_V5 = 0.5
SPREAD_V5_KEEP = ("eye_spacing", "jaw_width")
SPLIT_CODES = {"train": 1, "test": 2, "val": 3}
SPLITS = ("train", "test") + tuple(f"test_{a.replace('-', '')}" for a in ATTRIBUTES)
DEFAULT_SIZES = {"train": 10000, "test": 2000, "val": 1000}


@dataclass
class Sample:
    image: np.ndarray          # [S, S, 3] uint8 RGB
    landmarks: np.ndarray      # [68, 2] float64, pixel centres at integers
    occluded: np.ndarray       # [68] bool
    attributes: np.ndarray     # [6] uint8, ATTRIBUTES order
    pose: np.ndarray           # [3] yaw, pitch, roll (degrees)
    box: np.ndarray            # [4] x0, y0, x1, y1 of the landmarks
    info: dict = field(default_factory=dict)


def _rng(seed, split, index):
    """The generator of one sample. VERSION is not part of the seed: it names the renderer (and keys
    the cache), so a new version draws the same parameters where the sampler did not change."""
    if split not in SPLIT_CODES:
        raise ValueError(f"split: expected one of {sorted(SPLIT_CODES)}, got {split!r}")
    return np.random.default_rng(np.random.SeedSequence([0x6C6D7266, int(seed), SPLIT_CODES[split], int(index)]))


# ---------------------------------------------------------------------------------------------
# Sampling the parameters of one photograph
# ---------------------------------------------------------------------------------------------

EXPRESSIONS = {
    # name: (coefficients, jaw opening range in degrees)
    "neutral": ({"lips_part": -1.0}, (0, 0)),
    "smile": ({"smile_L": 0.8, "smile_R": 0.8, "lips_part": -1.0, "squint": 0.3}, (0, 0)),
    "talk": ({"lips_part": 0.2}, (2, 7)),
    "slight_sad": ({"frown": 0.5, "lips_part": -1.0}, (0, 0)),
    # exaggerated (WFLW "expression")
    "laugh": ({"smile_L": 1.1, "smile_R": 1.1, "lips_part": 1.0, "squint": 0.7}, (8, 18)),
    "big_smile": ({"smile_L": 1.3, "smile_R": 1.3, "lips_part": 0.6, "squint": 0.5, "cheeks": 0.5}, (3, 8)),
    "surprise": ({"brow_raise_L": 1.1, "brow_raise_R": 1.1, "eye_open": 1.5, "lips_part": 0.6}, (12, 22)),
    "scream": ({"lips_part": 1.5, "stretch": 0.8, "brow_lower": 0.8, "squint": 0.6}, (20, 28)),
    "anger": ({"brow_lower": 1.3, "frown": 0.6, "lips_part": -1.0, "sneer": 0.5, "squint": 0.4}, (0, 0)),
    "disgust": ({"sneer": 1.3, "brow_lower": 0.7, "frown": 0.6, "lips_part": -0.3, "squint": 0.5}, (0, 3)),
    "sad": ({"frown": 1.2, "brow_raise_L": 0.4, "brow_raise_R": 0.4, "lips_part": -1.0}, (0, 0)),
    "kiss": ({"pucker": 1.3, "lips_part": -0.8}, (0, 0)),
    "wink": ({"blink_L": 1.0, "smile_L": 0.9, "smile_R": 0.4, "lips_part": -1.0}, (0, 0)),
    "eyes_closed": ({"blink_L": 1.0, "blink_R": 1.0, "lips_part": -1.0}, (0, 3)),
    "yawn": ({"lips_part": 1.6, "squint": 0.8, "blink_L": 0.5, "blink_R": 0.5}, (22, 28)),
    "puff": ({"cheek_puff": 1.2, "lips_part": -1.0}, (0, 0)),
    "smirk": ({"smile_R": 1.2, "mouth_side": -0.8, "lips_part": -1.0}, (0, 0)),
}
MILD = ("neutral", "smile", "talk", "slight_sad")
STRONG = tuple(k for k in EXPRESSIONS if k not in MILD)


def sample_params(rng, version=DEFAULT_VERSION):
    """Everything random about one photograph, as a dict (see ``render``)."""
    want = {a: bool(rng.random() < r) for a, r in ATTRIBUTE_RATES.items()}
    p = {"want": want}
    # head pose
    if want["pose"]:
        if rng.random() < 0.65:
            yaw, pitch = rng.choice([-1, 1]) * rng.uniform(40, 60), rng.normal(0, 10)
        else:
            yaw, pitch = rng.normal(0, 20), rng.choice([-1, 1]) * rng.uniform(25, 30)
        roll = rng.normal(0, 12)
    else:
        yaw, pitch, roll = rng.normal(0, 16), rng.normal(0, 8), rng.normal(0, 9)
        yaw, pitch = float(np.clip(yaw, -38, 38)), float(np.clip(pitch, -23, 23))
    p["pose"] = (float(np.clip(yaw, -60, 60)), float(np.clip(pitch, -30, 30)), float(np.clip(roll, -30, 30)))
    # identity and expression
    p["identity"] = {k: float(np.clip(rng.normal(0, 1.0), -2.5, 2.5)) for k in f3.IDENTITY_MODES}
    p["scale"] = (float(rng.normal(1, 0.06)), float(rng.normal(1, 0.05)), float(rng.normal(1, 0.08)))
    if version >= 5:                                   # real faces' spread (SPREAD_V5); the same draws
        p["identity"] = {k: c if k in SPREAD_V5_KEEP else SPREAD_V5 * c for k, c in p["identity"].items()}
        p["scale"] = tuple(1 + SPREAD_V5 * (c - 1) for c in p["scale"])
    name = str(rng.choice(STRONG) if want["expression"] else rng.choice(MILD, p=[0.45, 0.3, 0.15, 0.1]))
    coeffs, jaw_range = EXPRESSIONS[name]
    k = rng.uniform(0.8, 1.2) if want["expression"] else rng.uniform(0.3, 1.0)
    expr = {m: (c * k if m != "lips_part" else c) for m, c in coeffs.items()}
    for m in ("smile_L", "smile_R", "brow_raise_L", "brow_raise_R", "squint", "frown", "mouth_side"):
        expr[m] = expr.get(m, 0.0) + rng.normal(0, 0.12)                         # a little of everything
    expr["lips_part"] = float(np.clip(expr.get("lips_part", -1.0) + rng.normal(0, 0.1), -1.0, 2.0))
    p["expression"] = (name, {m: float(v) for m, v in expr.items()})
    p["jaw"] = float(rng.uniform(*jaw_range)) if jaw_range[1] > 0 else 0.0
    # appearance
    p["look"] = pt.sample_look(rng, heavy_makeup=want["make-up"])
    # light (view frame)
    p["light"] = _sample_light(rng, want["illumination"])
    # camera framing
    p["distance"] = float(rng.uniform(450, 2500))
    p["face_frac"] = float(rng.uniform(0.40, 0.62))
    p["center"] = tuple(float(v) for v in rng.normal(0, 0.04, 2))
    p["body"] = (float(0.35 * p["pose"][0] + rng.normal(0, 8)), float(0.3 * p["pose"][2] + rng.normal(0, 3)))
    # accessories and occluders
    p["occluders"] = _sample_occluders(rng, want["occlusion"], p["look"])
    # blur
    if want["blur"]:
        p["blur"] = ("gauss", float(rng.uniform(1.5, 3.5))) if rng.random() < 0.6 else ("motion", float(rng.uniform(7, 15)))
    else:
        p["blur"] = None
    p["gray"] = bool(rng.random() < 0.07)
    if version >= 3:                                   # drawn after everything v2 draws: same faces
        p["look"] = photo.adjust_look(p["look"], rng)
        p["cast"] = photo.light_cast(rng)
        p["distance"] = photo.camera_distance(rng)     # v3: photographs' perspective (moves the jaw points)
    return p


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def _sample_light(rng, extreme):
    temp = rng.normal(0, 0.06)
    white = np.array([1.0 + temp, 1.0, 1.0 - temp])
    if not extreme:
        az, el = rng.uniform(-50, 50), rng.uniform(-10, 50)
        d = _unit([math.sin(math.radians(az)) * math.cos(math.radians(el)), math.sin(math.radians(el)),
                   math.cos(math.radians(az)) * math.cos(math.radians(el))])
        key = rng.uniform(0.55, 0.95)
        amb = rng.uniform(0.22, 0.45)
        sky = _unit(white * (1 + rng.normal(0, 0.05, 3)))
        fill = _unit([-d[0], rng.uniform(-0.2, 0.3), 0.8])
        return pt.Light(direction=d, color=white * key, ambient=sky * amb * math.sqrt(3) * 0.58,
                        sky=rng.uniform(0.2, 0.6), fill=fill, fill_color=white * rng.uniform(0.0, 0.2),
                        exposure=float(rng.uniform(0.8, 1.25)))
    kind = rng.choice(["side", "dark", "bright", "color", "back", "top"])
    az, el = rng.choice([-1, 1]) * rng.uniform(55, 95), rng.uniform(-15, 35)
    if kind == "top":
        az, el = rng.uniform(-30, 30), rng.uniform(60, 80)
    if kind == "back":
        az = rng.choice([-1, 1]) * rng.uniform(110, 150)
    d = _unit([math.sin(math.radians(az)) * math.cos(math.radians(el)), math.sin(math.radians(el)),
               math.cos(math.radians(az)) * math.cos(math.radians(el))])
    color = white.copy()
    if kind == "color":
        color = np.array(sc._rand_color(rng, (0.5, 1.0), (0.8, 1.0)), np.float64) ** 0.5 * 1.2
    key = rng.uniform(0.9, 1.5)
    amb = rng.uniform(0.02, 0.12)
    exposure = {"dark": rng.uniform(0.18, 0.4), "bright": rng.uniform(1.8, 3.0)}.get(kind, rng.uniform(0.8, 1.3))
    return pt.Light(direction=d, color=color * key, ambient=color * amb / max(color.max(), 1e-3),
                    sky=0.5, fill=None, fill_color=None, exposure=float(exposure))


def _sample_occluders(rng, strong, look):
    occ = []
    if strong:
        kinds = rng.choice(["hand", "object", "sunglasses", "mask", "hair_lock", "hand2"],
                           size=int(rng.integers(1, 3)), replace=False,
                           p=[0.3, 0.25, 0.15, 0.15, 0.1, 0.05])
        occ = [str(k) for k in kinds]
    else:
        if rng.random() < 0.15:
            occ.append("glasses")
        if look.hair_style == "long" and rng.random() < 0.15:
            occ.append("hair_lock")
    return occ


# ---------------------------------------------------------------------------------------------
# Rendering one photograph
# ---------------------------------------------------------------------------------------------

def _framed_camera(R, lm_fn, distance, size, face_frac, center):
    """Camera whose landmark box has its larger side = face_frac * size, centred at
    (0.5 + center) * size. lm_fn(cam) -> landmark image positions."""
    cam = f3.Camera(R, focal=1000.0, distance=distance, cx=0.0, cy=0.0)
    xy = lm_fn(cam)
    lo, hi = xy.min(0), xy.max(0)
    s = face_frac * size / max(hi - lo)
    mid = 0.5 * (lo + hi) * s
    target = (0.5 + np.asarray(center)) * size - 0.5
    return f3.Camera(R, focal=1000.0 * s, distance=distance, cx=float(target[0] - mid[0]), cy=float(target[1] - mid[1]))


def _scaled(cam, k):
    """The same view at k times the resolution (pixel centres: x_k = k x + (k - 1) / 2)."""
    return f3.Camera(cam.R, cam.focal * k, cam.distance, cam.cx * k + (k - 1) / 2, cam.cy * k + (k - 1) / 2)


def _mask_layer(rng, st):
    """A surgical / cloth face mask in texture space: (alpha [H, W], colour (linear), pleats [H, W])."""
    X = st.X
    x, y, z = X[..., 0], X[..., 1], X[..., 2]
    top = -14.0 - 6.0 * (np.abs(x) / 60.0) ** 2
    region = (y < top) & (y > -150) & (np.abs(x) < 75) & (z > -85)
    a = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 1.2)
    col = np.array(sc._rand_color(rng, (0.0, 0.5), (0.3, 0.95)), np.float32)
    if rng.random() < 0.4:
        col = np.array([0.55, 0.7, 0.85], np.float32) ** 2 * rng.uniform(0.8, 1.1)
    pleats = 1.0 - 0.12 * (np.sin((y + 40) * 0.5) > 0.6) * (np.abs(x) < 40)
    return a, col, pleats


def _shape(params, model):
    """Deformed surface and its 3D landmarks."""
    coeffs = dict(params["identity"])
    for m, c in params["expression"][1].items():
        coeffs[m] = coeffs.get(m, 0.0) + c
    P = f3.deform(model, coeffs, params["jaw"], params["scale"])
    return P, f3.sample_map(P, model.landmark_uv)


def _appearance(params, P, lm3d, st, model):
    """Painted maps, with the face mask if any. -> (Painted, covering alpha [H, W], surface with
    hair / mask volume)"""
    rng = params["rng"]
    painted = pt.paint(params["look"], P, lm3d, rng, st, params["expression"][1])
    cover_alpha, height = painted.hair_alpha, painted.hair_height
    if "mask" in params["occluders"]:
        ma, mcol, pleats = _mask_layer(rng, st)
        painted.albedo = by_channel(lambda al, mc: al * (1 - ma) + (mc * pleats) * ma, painted.albedo, mcol)
        painted.spec = painted.spec * (1 - ma) + 0.02 * ma
        painted.sss = painted.sss * (1 - ma)
        r = np.linalg.norm(P - f3.CENTER, axis=-1).astype(np.float32)
        tent = np.maximum(cv2.GaussianBlur(r, (0, 0), 6.0) + 3.0, r + 2.0) - r      # stretched over the nose
        height = np.maximum(height, ma * tent)
        cover_alpha = np.maximum(cover_alpha, ma)
    return painted, cover_alpha, by_channel(lambda p, n: p + n * height, P, model.normals)   # volume along the normals


def _head(params, painted, P_render, R, cam2, S2, model):
    """Shade (with cast shadows) and rasterise the head. -> HeadRender"""
    light = params["light"]
    soft = 2.0 if params["want"]["illumination"] else float(params["rng"].uniform(2.5, 8.0))
    N = f3.surface_normals(P_render)
    shadow = pt.shadow_map(P_render, R, light.direction, N=N, soft=soft)
    return pt.render_head(P_render, pt.shade(painted, P_render, R, light, shadow=shadow, N=N), cam2, S2, model)


def _behind(params, cam, P_render, size, version=2):
    """Background, neck and shoulders, long hair, at the output size (they are smooth). -> linear RGB"""
    rng, look, light = params["rng"], params["look"], params["light"]
    back = sc.background(rng, size)
    if version >= 3:
        back = photo.depth_of_field(rng, back)
    by, br = params["body"]
    body_R = f3.rotation(by, 0.0, br)
    body_t = np.array([0.0, -152.0, 2.0]) + rng.normal(0, [4.0, 6.0, 6.0])          # base of the neck
    body_t[:2] = f3.rotation(0, 0, 0.5 * params["pose"][2])[:2, :2] @ body_t[:2]
    bcol, balpha, _ = sc.render_body(rng, cam, body_R, body_t, pt.srgb_to_linear(look.skin), light, size,
                                     shoulder=rng.uniform(170, 215))
    back = by_channel(lambda b, c: b * (1 - balpha) + c, back, bcol)
    if look.hair_style in ("long", "medium") and look.hair_volume > 0:
        length = rng.uniform(110, 300) if look.hair_style == "long" else rng.uniform(40, 100)
        ccol, calpha = sc.hair_curtain(rng, cam, P_render, pt.srgb_to_linear(look.hair), light, size, length,
                                       rng.uniform(3, 30), body_R @ np.array([0.0, -1.0, 0.0]))
        back = by_channel(lambda b, c: b * (1 - calpha) + c * calpha, back, ccol)
    return back


def _in_front(params, canvas, head, cam2, P_render, lm3d, xy2):
    """Glasses, hair locks, hands and objects over the face (in place on the canvas).
    -> alpha [S2, S2] of everything that hides what is behind it"""
    rng, look, light = params["rng"], params["look"], params["light"]
    S2 = canvas.shape[0]
    front_alpha = np.zeros((S2, S2), np.float32)
    face_px = float(np.max(xy2.max(0) - xy2.min(0)))
    for kind in params["occluders"]:
        if kind in ("glasses", "sunglasses"):
            col, a, lens = sc.glasses(rng, cam2, lm3d, head.depth, S2, sun=(kind == "sunglasses"))
            by_channel(lambda v, c: v * (1 - a) + c, canvas, col, out=canvas)
            front_alpha = np.maximum(front_alpha, a if kind == "sunglasses" else np.where(lens < 0.5, a, 0))
        elif kind == "hair_lock":
            col, a = sc.hair_lock(rng, cam2, P_render, pt.srgb_to_linear(look.hair), light, S2,
                                  rng.choice([-1, 1]), rng.uniform(18, 40))
            by_channel(lambda v, c: v * (1 - a) + c * a, canvas, col, out=canvas)
            front_alpha = np.maximum(front_alpha, a)
        elif kind in ("hand", "hand2", "object"):
            target = xy2[rng.choice([8, 57, 33, 30, 36, 45, 48, 54, 2, 14, 19, 24])]
            off = rng.normal(0, 0.12, 2) * face_px
            if kind == "object":
                col, a = sc.object_occluder(rng, target + off, face_px * rng.uniform(0.35, 0.8), light, S2)
            else:                                                   # the hand reaches toward the nose
                ang = math.degrees(math.atan2(target[0] - xy2[30][0], -(target[1] - xy2[30][1]) + 1e-6)) + rng.normal(180, 30)
                skin = pt.srgb_to_linear(look.skin if rng.random() < 0.8 else pt.sample_look(rng).skin)
                reach = np.array([math.sin(math.radians(ang)), -math.cos(math.radians(ang))])
                col, a = sc.hand(rng, target + off * 0.5 - 0.25 * face_px * reach, face_px * rng.uniform(0.8, 1.15),
                                 ang, skin, light, S2)
            sc.cast_shadow(canvas, a, rng.normal(0, 0.03, 2) * face_px + [0, 0.03 * face_px], 0.02 * face_px,
                           rng.uniform(0.2, 0.5), head.alpha)
            by_channel(lambda v, c: v * (1 - a) + c * a, canvas, col, out=canvas)
            front_alpha = np.maximum(front_alpha, a)
    return front_alpha


def _occlusion(xy, depth, xy2, lm_uv, front_alpha, cover_alpha, head, size):
    """Per-point flags: (external [68] hidden by hair / mask / objects, self [68] hidden by the face
    itself, outside [68] out of the image)."""
    S2 = head.depth.shape[0]
    outside = ~((xy[:, 0] >= -0.5) & (xy[:, 0] <= size - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= size - 0.5))
    ext = f3.lookup(front_alpha, xy2, border=cv2.BORDER_REPLICATE) > 0.5
    ext |= f3.sample_map(cover_alpha, lm_uv) > 0.5
    zbuf = cv2.erode(head.depth, np.ones((3, 3), np.uint8))               # nearest surface around the point
    ix = np.clip(np.round(xy2).astype(int), 0, S2 - 1)
    self_occ = depth > zbuf[ix[:, 1], ix[:, 0]] + 4.0
    self_occ[:17] = False                                                   # the jaw points are on the outline
    return ext, self_occ, outside


def _labels(P, model, cam, ss):
    """The 68 points of surface P seen by cam, with the 300W jaw rule. -> (xy [68, 2], depth [68],
    (u, v) [68, 2] of the surface points used, xy at ss x the size [68, 2])"""
    xy, depth, ring_idx = f3.contour_on_silhouette(P, model, cam)
    lm_uv = model.landmark_uv.copy()
    lm_uv[:17] = model.ring_uv[np.arange(17), ring_idx]                     # the jaw points used
    return xy, depth, lm_uv, xy * ss + (ss - 1) / 2


def render(params, size=256, ss=2, version=DEFAULT_VERSION):
    """Render sampled parameters (``sample_params`` plus ``rng``) to a Sample."""
    model, st = f3.mean_model(), pt.static_maps()
    yaw, pitch, roll = params["pose"]
    R = f3.rotation(yaw, pitch, roll)
    P, lm3d = _shape(params, model)
    # camera framing the landmark box; the head is drawn at ss x the output size
    cam = _framed_camera(R, lambda c: f3.contour_on_silhouette(P, model, c)[0], params["distance"], size,
                         params["face_frac"], params["center"])
    cam2, S2 = _scaled(cam, ss), size * ss
    xy, depth, lm_uv, xy2 = _labels(P, model, cam, ss)
    painted, cover_alpha, P_render = _appearance(params, P, lm3d, st, model)
    head = _head(params, painted, P_render, R, cam2, S2, model)
    back = _behind(params, cam, P_render, size, version)
    canvas = cv2.resize(back, (S2, S2), interpolation=cv2.INTER_LINEAR) if ss > 1 else back
    canvas = by_channel(lambda v, c: v * (1 - head.alpha) + c, canvas, head.color)
    front_alpha = _in_front(params, canvas, head, cam2, P_render, lm3d, xy2)
    if version >= 4:                     # the same image, labelled in 300-W's convention (face3d.LABEL_2D)
        xy, depth, lm_uv, xy2 = _labels(P, f3.label_model(), cam, ss)
    img_lin = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA) if ss > 1 else canvas
    if version >= 3:
        face = cv2.resize(head.alpha, (size, size), interpolation=cv2.INTER_AREA) if ss > 1 else head.alpha
        img_lin = photo.auto_exposure(params["rng"], img_lin, face, params["cast"][1], params["want"]["illumination"])
    image, cam_info = sc.camera_effects(params["rng"], img_lin, params["blur"], params["gray"])
    if version >= 3:
        image, more = photo.finish(params["rng"], image, bool(cam_info.get("gray")))
        cam_info.update(more, light=params["cast"][0])
    ext, self_occ, outside = _occlusion(xy, depth, xy2, lm_uv, front_alpha, cover_alpha, head, size)
    attrs = {
        "pose": abs(yaw) >= 40 or abs(pitch) >= 25,
        "expression": params["want"]["expression"],
        "illumination": params["want"]["illumination"],
        "make-up": params["want"]["make-up"],
        "occlusion": float(ext.mean()) >= 0.10,
        "blur": params["blur"] is not None,
    }
    look = params["look"]
    info = {"expression": params["expression"][0], "occluders": list(params["occluders"]), "hair": look.hair_style,
            "beard": look.beard, "camera": cam_info, "self_occluded": self_occ.tolist(),
            "external_occluded": ext.tolist(), "distance": params["distance"]}
    return Sample(image=image, landmarks=xy.astype(np.float64), occluded=ext | self_occ | outside,
                  attributes=np.array([attrs[a] for a in ATTRIBUTES], np.uint8),
                  pose=np.array(params["pose"]), box=np.concatenate([xy.min(0), xy.max(0)]), info=info)


def generate(seed=0, index=0, size=256, split="train", ss=2, version=DEFAULT_VERSION):
    """The sample with this (seed, split, index): the same on every call and every machine.
    version: the renderer (``VERSIONS``, default ``DEFAULT_VERSION``); each stays reproducible."""
    if not (isinstance(size, (int, np.integer)) and size >= 32):
        raise ValueError(f"size: expected an int >= 32, got {size!r}")
    if not (isinstance(ss, (int, np.integer)) and 1 <= ss <= 4):
        raise ValueError(f"ss: expected an int in 1..4, got {ss!r}")
    if version not in VERSIONS:
        raise ValueError(f"version: expected one of {VERSIONS}, got {version!r}")
    return render(draw(seed, index, split, version), int(size), int(ss), version)


def draw(seed=0, index=0, split="train", version=DEFAULT_VERSION):
    """The parameters of sample (seed, split, index) without rendering it: ``sample_params`` from the sample's
    own generator, which is kept under "rng" (``render`` goes on drawing from it)."""
    rng = _rng(seed, split, index)
    params = sample_params(rng, version)
    params["rng"] = rng
    return params


# ---------------------------------------------------------------------------------------------
# Writing a dataset in the 300W layout, contact sheets
# ---------------------------------------------------------------------------------------------

def _names(n):
    return [f"{i:06d}" for i in range(n)]


def write_300w_layout(out_dir, samples, names=None):
    """Write samples as ``NAME.png`` + ``NAME.pts`` (1-based, as 300W) plus ``meta.npz`` holding the
    exact landmarks, occlusion flags, attributes, poses and boxes (no pickle), and
    ``attributes.txt`` (one line per image: name, then the six WFLW attribute flags)."""
    from .readers import write_image, write_pts
    os.makedirs(out_dir, exist_ok=True)
    samples = list(samples)
    names = names or _names(len(samples))
    for name, s in zip(names, samples):
        write_image(os.path.join(out_dir, name + ".png"), s.image)
        write_pts(os.path.join(out_dir, name + ".pts"), s.landmarks)
    np.savez(os.path.join(out_dir, "meta.npz"), names=np.array(names, dtype=str),
             landmarks=np.stack([s.landmarks for s in samples]), occluded=np.stack([s.occluded for s in samples]),
             attributes=np.stack([s.attributes for s in samples]), pose=np.stack([s.pose for s in samples]),
             boxes=np.stack([s.box for s in samples]), attribute_names=np.array(ATTRIBUTES, dtype=str))
    with open(os.path.join(out_dir, "attributes.txt"), "w", encoding="utf-8", newline="\n") as fh:
        fh.write("# name " + " ".join(ATTRIBUTES) + "\n")
        for name, s in zip(names, samples):
            fh.write(name + " " + " ".join(str(int(a)) for a in s.attributes) + "\n")
    return names


def draw_landmarks(image, landmarks, occluded=None, scale=2, radius=2):
    """Image upscaled by ``scale`` with landmarks drawn (green visible, red occluded). -> uint8 RGB"""
    img = cv2.resize(np.asarray(image), None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    occ = np.zeros(len(landmarks), bool) if occluded is None else np.asarray(occluded, bool)
    for (x, y), o in zip(np.asarray(landmarks), occ):
        c = (255, 40, 40) if o else (40, 255, 40)
        p = (int(round(((x + 0.5) * scale - 0.5) * 16)), int(round(((y + 0.5) * scale - 0.5) * 16)))
        cv2.circle(img, p, radius * 16, c, -1, cv2.LINE_AA, 4)
    return img


def contact_sheet(samples, cols=6, scale=2, labels=True):
    """Grid of samples with their landmarks and attribute letters (P E I M O B). -> uint8 RGB"""
    tiles = []
    for s in samples:
        t = draw_landmarks(s.image, s.landmarks, s.occluded, scale)
        if labels:
            tag = "".join("PEIMOB"[j] if s.attributes[j] else "." for j in range(6))
            cv2.putText(t, tag, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(t, tag, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(t)
    if not tiles:
        raise ValueError("contact_sheet: no samples")
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    sheet = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = t
    return sheet


# ---------------------------------------------------------------------------------------------
# Fixed, cached splits
# ---------------------------------------------------------------------------------------------

def default_cache_dir():
    """$LMREF_CACHE, else ~/.cache/lmref"""
    return os.environ.get("LMREF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lmref")


def _generate_many(seed, split, indices, size, workers=1, pool=None, version=DEFAULT_VERSION):
    """Samples for the given indices, in order (each depends only on its own seed, so the result
    does not depend on the number of worker processes)."""
    if pool is not None:
        return pool.starmap(generate, [(seed, i, size, split, 2, version) for i in indices], chunksize=8)
    if workers <= 1:
        return [generate(seed, i, size, split, version=version) for i in indices]
    import multiprocessing as mp
    with mp.get_context("spawn").Pool(workers) as p:
        return _generate_many(seed, split, indices, size, pool=p, version=version)


def _dir_hash(root, names):
    h = hashlib.sha256()
    for name in names:
        for ext in (".png", ".pts"):
            with open(os.path.join(root, name + ext), "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


class SyntheticSplit:
    """A generated split on disk (300W layout + meta.npz). Indexing returns Samples (images are read
    from disk on demand); ``landmarks``, ``occluded``, ``attributes``, ``pose``, ``boxes`` are arrays
    over the whole split."""

    def __init__(self, root, indices=None, name=None):
        self.root = root
        with np.load(os.path.join(root, "meta.npz"), allow_pickle=False) as z:
            meta = {k: z[k] for k in z.files}
        keep = np.arange(len(meta["names"])) if indices is None else np.asarray(indices, np.int64)
        self.names = [str(n) for n in meta["names"][keep]]
        self.landmarks = meta["landmarks"][keep]
        self.occluded = meta["occluded"][keep]
        self.attributes = meta["attributes"][keep]
        self.pose = meta["pose"][keep]
        self.boxes = meta["boxes"][keep]
        self.source_indices = keep
        self.name = name or os.path.basename(root)
        with open(os.path.join(root, "manifest.json"), encoding="utf-8") as fh:
            self.manifest = json.load(fh)

    def __len__(self):
        return len(self.names)

    def image(self, i):
        from .readers import read_image
        return read_image(os.path.join(self.root, self.names[i] + ".png"))

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a split of {len(self)}")
        i = i % len(self)
        return Sample(image=self.image(i), landmarks=self.landmarks[i], occluded=self.occluded[i],
                      attributes=self.attributes[i], pose=self.pose[i], box=self.boxes[i],
                      info={"name": self.names[i]})

    def subset(self, attribute):
        """The samples with a WFLW attribute flag set (e.g. 'pose', 'make-up' or 'makeup')."""
        key = {a.replace("-", ""): a for a in ATTRIBUTES}.get(attribute.replace("-", ""))
        if key is None:
            raise ValueError(f"attribute: expected one of {ATTRIBUTES}, got {attribute!r}")
        j = ATTRIBUTES.index(key)
        idx = np.nonzero(self.attributes[:, j])[0]
        return SyntheticSplit(self.root, self.source_indices[idx], f"{self.name}/{key}")

    def counts(self):
        """Number of samples with each attribute."""
        return {a: int(self.attributes[:, j].sum()) for j, a in enumerate(ATTRIBUTES)}


def load_split(split="train", n=None, seed=0, size=256, cache_dir=None, workers=1, verbose=False, version=DEFAULT_VERSION,
               _rebuild=True):
    """A fixed split, generated on first use and cached under ``cache_dir`` (default
    ``default_cache_dir()``) in a directory keyed by version, split, seed, size and n.

    split: 'train', 'test', 'val', or 'test_<attribute>' (pose, expression, illumination, makeup,
    occlusion, blur): the test samples with that WFLW attribute, like WFLW's test subsets.
    n: number of samples of the base split (default DEFAULT_SIZES).
    version: the renderer (``VERSIONS``; default ``DEFAULT_VERSION``); each version has its own cache.
    -> SyntheticSplit"""
    attr = None
    base = split
    if split.startswith("test_"):
        base, attr = "test", split[5:]
    if base not in SPLIT_CODES:
        raise ValueError(f"split: expected one of {SPLITS + ('val',)}, got {split!r}")
    n = DEFAULT_SIZES[base] if n is None else int(n)
    if n <= 0:
        raise ValueError(f"n: expected > 0, got {n}")
    if version not in VERSIONS:
        raise ValueError(f"version: expected one of {VERSIONS}, got {version!r}")
    root = os.path.join(cache_dir or default_cache_dir(), "synthetic", f"v{version}",
                        f"{base}-seed{seed}-n{n}-{size}px")
    if not os.path.exists(os.path.join(root, "manifest.json")):
        t0 = time.perf_counter()
        tmp = root + f".tmp{os.getpid()}"
        names = _names(n)
        pool = None
        if workers > 1:
            import multiprocessing as mp
            pool = mp.get_context("spawn").Pool(workers)
        try:
            for start in range(0, n, 256):              # in chunks, so memory stays small
                idx = list(range(start, min(n, start + 256)))
                samples = _generate_many(seed, base, idx, size, pool=pool, version=version)
                write_300w_layout(tmp + "/part", samples, [names[i] for i in idx])
                _merge_part(tmp, tmp + "/part", start == 0)
                if verbose:
                    print(f"{base}: {idx[-1] + 1}/{n} ({(time.perf_counter() - t0) / (idx[-1] + 1) * 1e3:.0f} ms/image)",
                          file=sys.stderr)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
        manifest = {"version": version, "split": base, "seed": seed, "n": n, "size": size,
                    "sha256": _dir_hash(tmp, names), "numpy": np.__version__, "opencv": cv2.__version__,
                    "seconds": round(time.perf_counter() - t0, 1)}
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1)
        try:
            os.replace(tmp, root)
        except OSError:                      # another process finished first: use theirs
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    out = SyntheticSplit(root, name=f"{base}")
    probe = generate(seed, 0, size, base, version=version)
    if not np.allclose(probe.landmarks, out.landmarks[0], atol=1e-6):
        if not _rebuild:                     # rebuilt just now and still different: never loop
            raise RuntimeError(f"{root}: a freshly rendered split does not match this process's generator "
                               f"(face 0's landmarks differ): the renderer is not deterministic here")
        import shutil
        import warnings
        warnings.warn(f"{root}: cached split does not match this generator (stale cache of version "
                      f"{version}); rebuilding it", RuntimeWarning, stacklevel=2)
        shutil.rmtree(root, ignore_errors=True)
        return load_split(split, n, seed, size, cache_dir, workers, verbose, version, _rebuild=False)
    return out.subset(attr) if attr else out


def _merge_part(dst, part, first):
    """Move a written chunk into the split directory and append its metadata."""
    import shutil
    os.makedirs(dst, exist_ok=True)
    with np.load(os.path.join(part, "meta.npz"), allow_pickle=False) as z:
        chunk = {k: z[k] for k in z.files}
    meta_path = os.path.join(dst, "meta.npz")
    if not first:
        with np.load(meta_path, allow_pickle=False) as z:
            old = {k: z[k] for k in z.files}
        for k in ("names", "landmarks", "occluded", "attributes", "pose", "boxes"):
            chunk[k] = np.concatenate([old[k], chunk[k]])
    for fn in os.listdir(part):
        if fn.endswith((".png", ".pts")):
            os.replace(os.path.join(part, fn), os.path.join(dst, fn))
    np.savez(meta_path, **chunk)
    lines = []
    with open(os.path.join(part, "attributes.txt"), encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    mode = "w" if first else "a"
    with open(os.path.join(dst, "attributes.txt"), mode, encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(lines if first else lines[1:]) + "\n")
    shutil.rmtree(part)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lmref.data.synthetic",
                                 description="Write synthetic faces in the 300W layout (image + .pts) with a contact sheet.")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--n", type=int, default=200, help="number of images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="train", choices=sorted(SPLIT_CODES))
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--start", type=int, default=0, help="first sample index")
    ap.add_argument("--workers", type=int, default=1, help="processes (the output does not depend on it)")
    ap.add_argument("--version", type=int, default=DEFAULT_VERSION, choices=VERSIONS,
                    help=f"renderer version (default {DEFAULT_VERSION}; newest {VERSION})")
    ap.add_argument("--sheet", type=int, default=36, help="samples on the contact sheet (0: none)")
    args = ap.parse_args(argv)
    if args.n <= 0:
        ap.error("--n must be positive")
    t0 = time.perf_counter()
    idx = list(range(args.start, args.start + args.n))
    samples = _generate_many(args.seed, args.split, idx, args.size, args.workers, version=args.version)
    dt = time.perf_counter() - t0
    names = [f"{i:06d}" for i in idx]
    write_300w_layout(args.out, samples, names)
    if args.sheet > 0:
        from .readers import write_image
        write_image(os.path.join(args.out, "contact_sheet.png"), contact_sheet(samples[:args.sheet]))
    att = np.stack([s.attributes for s in samples])
    print(f"wrote {args.n} images + .pts to {args.out} in {dt:.1f} s "
          f"({args.n / dt:.1f} images/s with {args.workers} process(es))")
    print("attribute counts: " + ", ".join(f"{a} {int(att[:, j].sum())}" for j, a in enumerate(ATTRIBUTES)))
    occ = np.stack([s.occluded for s in samples])
    print(f"occluded points: {occ.mean() * 100:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
