"""What version 3 of the synthetic renderer adds so that its faces read as photographs to models
trained on photographs (issue 16; measured by ``python -m benchmarks.realism``).

Version 2 draws every face, light and camera as before; version 3 draws these after them:

* ``adjust_look``: eyebrows as dark and dense as real ones (v2's were often lighter than the skin
  around them: a face detector and dlib's predictor lean on the brow-eye-nose pattern), as thick as
  v2's, and a specular multiplier for oily skin (the T-zone highlights of real photographs).
* ``camera_distance``: the camera 1-4 m from the head, as for the photographs the 300-W mean shape
  was measured on, instead of v2's 450-2500 mm: with less perspective the jaw points (50-75 mm
  behind the eye corners) are no longer pulled in toward the face centre. The only change of the
  landmarks: the same face, pose and framing.
* ``light_cast``: the colour of real light sources (tungsten, fluorescent, shade, sunset, LED
  colour) that a camera's white balance only partly removes.
* ``depth_of_field``: backgrounds out of focus as a portrait lens renders them (v2's were mostly sharp
  shapes), keeping the 1/f look of the texture underneath.
* ``auto_exposure``: a camera meters the scene: the face ends up near the middle grey a camera aims
  at (log-normal spread), so dark skin under dim light is no longer black on black.
* ``finish``: in-camera sharpening (unsharp mask) and a JPEG of a phone's or a web page's quality
  for almost every photo, as real photographs come.

Each function takes the sample's generator and draws from it, so a version-3 sample is as
reproducible as a version-2 one. Nothing here runs for version 2.

Measured (``benchmarks/results/realism.md``): the first version 3 (thicker brows, v2's camera
distances) raised dlib's 68-point NME on the first 500 test faces from v2's 0.0854 to 0.0914 (its
thicker brows grew toward the eyes and pulled dlib's eye and brow points up). On the first 100 test
faces, brows as thick as v2's took it 0.1121 -> 0.1027 and the 1-4 m camera to 0.0974 (jaw's
share of the NME 0.041 -> 0.036; inner points aligned, dlib's jaw is still wider and its upper end
higher than the labels). Issue 16's dlib target (<= 0.05) is not met.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .scene import jpeg_roundtrip

__all__ = ["adjust_look", "camera_distance", "light_cast", "depth_of_field", "auto_exposure", "finish", "CASTS",
           "DISTANCE_MM"]

# colour of the light relative to daylight (linear RGB, green = 1) and how often it is drawn
CASTS = {
    "daylight": ((1.0, 1.0, 1.0), 0.45),
    "tungsten": ((1.35, 1.0, 0.62), 0.15),
    "fluorescent": ((0.95, 1.0, 0.9), 0.1),
    "shade": ((0.85, 1.0, 1.18), 0.12),
    "sunset": ((1.3, 1.0, 0.75), 0.08),
    "led": (None, 0.1),                      # a saturated colour: drawn per photo
}


def adjust_look(look, rng):
    """Darker and denser eyebrows (as thick as version 2's: thicker ones reach toward the eyes and
    pull dlib's eye and brow points up, measured) and a skin specular multiplier (in place)."""
    look.brow = np.clip(look.brow * rng.uniform(0.45, 0.75), 0.01, 1.0)
    look.brow_density = float(rng.uniform(0.9, 1.0))
    look.skin_spec = float(look.skin_spec * rng.uniform(1.0, 2.2))
    return look


DISTANCE_MM = (1000.0, 4000.0)     # camera distance range of version 3 (log-uniform); version 2: 450-2500


def camera_distance(rng):
    """Camera-to-head distance (mm), log-uniform over ``DISTANCE_MM``: portraits and snapshots, no
    selfies. The 300-W mean shape (PIPNet's ``meanface.txt``) is a face seen with little perspective:
    the renderer's mean face projected from 1 m has its jaw 0.05 inter-ocular narrower than it (the
    jaw lies 50-75 mm behind the eye corners), from 450 mm 0.11 narrower and points 0 and 16 0.06
    lower; from 2.5 m 0.02. Version 2's 450-2500 mm made the jaw of an average face narrower and its
    upper end lower than the 300-W convention, the largest part of dlib's disagreement with its labels."""
    lo, hi = DISTANCE_MM
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def light_cast(rng):
    """(name, [3] linear RGB gain) of the light's colour; the camera's white balance later removes a
    random part of it (``auto_exposure``)."""
    names = list(CASTS)
    p = np.array([CASTS[n][1] for n in names])
    name = names[int(rng.choice(len(names), p=p / p.sum()))]
    gain = CASTS[name][0]
    if gain is None:
        hue = rng.uniform(0, 2 * math.pi)
        gain = 1.0 + 0.35 * np.array([math.cos(hue), math.cos(hue - 2.1), math.cos(hue + 2.1)])
    return name, np.asarray(gain, np.float32)


def depth_of_field(rng, back):
    """Blur a background [S, S, 3] (linear) as a lens focused on the face would: sigma 0 (40 %) or
    0.5-3.5 px per 256 px."""
    S = back.shape[0]
    if rng.random() < 0.4:
        return back
    return cv2.GaussianBlur(back, (0, 0), float(rng.uniform(0.5, 3.5) * S / 256))


def auto_exposure(rng, img_lin, face, cast, extreme):
    """Meter like a camera: scale the linear image [S, S, 3] so the face (weights face [S, S]) has a
    luminance near 0.18 (middle grey) times a log-normal factor, and leave 0-70 % of the light's
    colour cast uncorrected. Extreme-illumination photos keep most of their exposure."""
    w = face / max(float(face.sum()), 1e-6)
    lum = float((img_lin @ np.array([0.2126, 0.7152, 0.0722], np.float32) * w).sum())
    target = 0.18 * math.exp(rng.normal(0.0, 0.35))
    gain = float(np.clip(target / max(lum, 1e-4), 0.4, 6.0))
    if extreme:
        gain = gain ** 0.25
    keep = rng.uniform(0.0, 0.7)                                     # share of the cast left in
    tint = (cast ** keep / (cast ** keep)[1]).astype(np.float32)
    return img_lin * (gain * tint)


def finish(rng, out, gray=False):
    """In-camera sharpening and JPEG on a uint8 RGB image [S, S, 3] -> (image, info); a gray
    photo stays gray (equal channels)."""
    info = {}
    if rng.random() < 0.6:
        amount, sigma = rng.uniform(0.3, 1.0), rng.uniform(0.6, 1.2) * out.shape[0] / 256
        blur = cv2.GaussianBlur(out, (0, 0), float(sigma))
        out = cv2.addWeighted(out, 1.0 + amount, blur, -amount, 0)
        info["sharpen"] = float(amount)
    if rng.random() < 0.9:
        q = int(rng.integers(55, 96))
        out = jpeg_roundtrip(out, q)
        info["jpeg_v3"] = q
    if gray:
        out = np.repeat(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)
    return np.ascontiguousarray(out), info
