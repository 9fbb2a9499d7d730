"""Readers (and writers) for the public landmark formats.

Every reader returns ``Annotation`` records with landmarks as float64 [N, 2] (x, y) in **0-based
pixel-centre coordinates** (the top-left pixel's centre is (0, 0)), and raises ``FormatError``
(a ValueError) naming the file and line of anything malformed.

300W / iBUG ``.pts`` (68 points)::

    version: 1
    n_points:  68
    {
    x y          (68 lines)
    }

  The iBUG annotations were made in Matlab, so their coordinates are **1-based**: the top-left
  pixel's centre is (1, 1). ``read_pts`` subtracts 1 by default (``one_based=True``) and
  ``write_pts`` adds it back, so files round-trip exactly. (Some pipelines, e.g. PIPNet's, read .pts
  without the shift; the difference is one pixel.)

WFLW annotation lines (``list_98pt_rect_attr_*.txt``), 207 whitespace-separated fields::

    x0 y0 x1 y1 ... x97 y97   (196 floats)   x_min y_min x_max y_max (box)
    pose expression illumination make-up occlusion blur (0/1)   image/relative/path.jpg

  Coordinates are used as given (WFLW's are treated as 0-based, as STAR and PIPNet do).

COFW (29 points with occlusion flags). The dataset ships as Matlab files (``COFW_train_color.mat``:
``phisTr`` [N, 87] = 29 x, 29 y, 29 occlusion flags, 1-based; ``bboxesTr`` [N, 4] = x, y, w, h).
Export it once to either of these forms (see ``write_cofw_txt`` / ``write_cofw_npz``):

* text, one face per line: ``path x1 y1 ... x29 y29 o1 ... o29 [x0 y0 x1 y1]`` (58 coordinates as
  (x, y) pairs, 29 flags 0/1 with 1 = occluded, an optional box); ``#`` starts a comment line.
* ``.npz`` (read with ``allow_pickle=False``): ``landmarks`` [N, 29, 2], ``occluded`` [N, 29],
  one of ``paths`` [N] (str) or ``images`` [N, H, W(, 3)] uint8, optionally ``boxes`` [N, 4]
  (x0, y0, x1, y1) and ``one_based`` (bool scalar).

  Both default to ``one_based=True`` (the .mat coordinates), subtracting 1.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["FormatError", "Annotation", "read_image", "write_image", "read_pts", "write_pts",
           "read_300w_dir", "parse_wflw_line", "read_wflw", "WFLW_ATTRIBUTES", "read_cofw_txt",
           "write_cofw_txt", "read_cofw_npz", "write_cofw_npz", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "make-up", "occlusion", "blur")


class FormatError(ValueError):
    """A landmark file that does not follow its format; the message names the file and line."""

    def __init__(self, path, line, msg):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {msg}")
        self.path, self.line = path, line


@dataclass
class Annotation:
    """One annotated face. ``image`` is set when the source holds pixels, else ``path`` is."""
    landmarks: np.ndarray                  # [N, 2] float64, 0-based pixel centres
    path: str | None = None
    box: np.ndarray | None = None          # [4] x0, y0, x1, y1
    occluded: np.ndarray | None = None     # [N] bool
    attributes: np.ndarray | None = None   # [6] uint8 (WFLW order)
    image: np.ndarray | None = field(default=None, repr=False)

    def load_image(self):
        """The face's image as RGB uint8."""
        if self.image is not None:
            return self.image
        if self.path is None:
            raise ValueError("annotation has neither an image nor a path")
        return read_image(self.path)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

def read_image(path):
    """Read an image file as RGB uint8 [H, W, 3] (grayscale files are expanded to 3 channels)."""
    img = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{path}: cannot read image (missing or not an image)")
    return img[..., ::-1].copy()


def write_image(path, image):
    """Write an RGB (or gray) uint8 image; the format follows the extension (PNG is lossless and
    byte-deterministic)."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"image: expected uint8 [H, W] or [H, W, 3], got {img.dtype} {img.shape}")
    bgr = img[..., ::-1] if img.ndim == 3 else img
    if not cv2.imwrite(os.fspath(path), np.ascontiguousarray(bgr)):
        raise OSError(f"{path}: OpenCV could not write the image")


# ---------------------------------------------------------------------------------------------
# 300W .pts
# ---------------------------------------------------------------------------------------------

def _float(tok, path, line, what):
    try:
        v = float(tok)
    except ValueError:
        raise FormatError(path, line, f"{what}: {tok!r} is not a number") from None
    if not np.isfinite(v):
        raise FormatError(path, line, f"{what}: {tok!r} is not finite")
    return v


def read_pts(path, one_based=True):
    """Landmarks of a 300W / iBUG .pts file. -> [n_points, 2] float64 (0-based if one_based)."""
    path = os.fspath(path)
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    rows = [(i + 1, ln.strip()) for i, ln in enumerate(lines) if ln.strip()]
    it = iter(rows)

    def nxt(expect):
        try:
            return next(it)
        except StopIteration:
            raise FormatError(path, len(lines), f"unexpected end of file, expected {expect}") from None

    n = None
    num, text = nxt("'version: 1'")
    if text.lower().startswith("version"):
        num, text = nxt("'n_points: N'")
    key, _, val = text.partition(":")
    if key.strip().lower() != "n_points":
        raise FormatError(path, num, f"expected 'n_points: N', got {text!r}")
    try:
        n = int(val.strip())
    except ValueError:
        raise FormatError(path, num, f"n_points: {val.strip()!r} is not an integer") from None
    if n <= 0:
        raise FormatError(path, num, f"n_points must be positive, got {n}")
    num, text = nxt("'{'")
    if text != "{":
        raise FormatError(path, num, f"expected '{{', got {text!r}")
    pts = np.empty((n, 2))
    for k in range(n):
        num, text = nxt(f"point {k + 1} of {n}")
        if text == "}":
            raise FormatError(path, num, f"'}}' after {k} points, n_points says {n}")
        tok = text.split()
        if len(tok) != 2:
            raise FormatError(path, num, f"point {k + 1}: expected 'x y', got {text!r}")
        pts[k] = (_float(tok[0], path, num, f"point {k + 1} x"), _float(tok[1], path, num, f"point {k + 1} y"))
    num, text = nxt("'}'")
    if text != "}":
        raise FormatError(path, num, f"expected '}}' after {n} points, got {text!r}")
    for num, text in it:
        raise FormatError(path, num, f"unexpected content after '}}': {text!r}")
    return pts - 1.0 if one_based else pts


def write_pts(path, points, one_based=True):
    """Write landmarks [N, 2] (0-based) as a .pts file (1-based coordinates if one_based)."""
    pts = np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.all(np.isfinite(pts)):
        raise ValueError(f"points: expected finite [N, 2], got shape {pts.shape}")
    pts = pts + 1.0 if one_based else pts
    body = "\n".join(f"{x:.6f} {y:.6f}" for x, y in pts)
    with open(os.fspath(path), "w", encoding="utf-8", newline="\n") as fh:
        fh.write(f"version: 1\nn_points:  {len(pts)}\n{{\n{body}\n}}\n")


def read_300w_dir(root, one_based=True, recursive=True):
    """All images under ``root`` that have a .pts file of the same stem beside them, sorted by path.
    -> list of Annotation (path set, image loaded on demand)"""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: not a directory")
    out = []
    walker = os.walk(root) if recursive else [(root, [], os.listdir(root))]
    for dirpath, _, files in walker:
        names = set(files)
        for fn in sorted(files):
            stem, ext = os.path.splitext(fn)
            if ext.lower() in IMAGE_EXTENSIONS and stem + ".pts" in names:
                out.append(Annotation(landmarks=read_pts(os.path.join(dirpath, stem + ".pts"), one_based),
                                      path=os.path.join(dirpath, fn)))
    out.sort(key=lambda a: a.path)
    return out


# ---------------------------------------------------------------------------------------------
# WFLW
# ---------------------------------------------------------------------------------------------

def parse_wflw_line(line, path="<string>", lineno=None, image_root=None):
    """One WFLW annotation line -> Annotation (98 points, box, 6 attributes, image path)."""
    tok = line.split()
    if len(tok) != 207:
        raise FormatError(path, lineno, f"expected 207 fields (196 coordinates, 4 box, 6 attributes, "
                                        f"image name), got {len(tok)}")
    vals = [_float(t, path, lineno, f"field {i + 1}") for i, t in enumerate(tok[:206])]
    pts = np.array(vals[:196]).reshape(98, 2)
    box = np.array(vals[196:200])
    attrs = vals[200:206]
    for i, a in enumerate(attrs):
        if a not in (0.0, 1.0):
            raise FormatError(path, lineno, f"attribute {WFLW_ATTRIBUTES[i]}: expected 0 or 1, got {tok[200 + i]!r}")
    if box[2] < box[0] or box[3] < box[1]:
        raise FormatError(path, lineno, f"box {box.tolist()}: need x_max >= x_min and y_max >= y_min")
    img = tok[206]
    if image_root is not None:
        img = os.path.join(os.fspath(image_root), img)
    return Annotation(landmarks=pts, path=img, box=box, attributes=np.array(attrs, np.uint8))


def read_wflw(path, image_root=None):
    """All faces of a WFLW annotation file (blank lines skipped). -> list of Annotation"""
    path = os.fspath(path)
    out = []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                out.append(parse_wflw_line(line, path, i, image_root))
    return out


# ---------------------------------------------------------------------------------------------
# COFW (exported)
# ---------------------------------------------------------------------------------------------

def read_cofw_txt(path, one_based=True, image_root=None):
    """Faces of an exported COFW text file (see the module docstring). -> list of Annotation"""
    path = os.fspath(path)
    out = []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for i, line in enumerate(fh, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            tok = s.split()
            if len(tok) not in (88, 92):
                raise FormatError(path, i, f"expected 88 fields (path, 58 coordinates, 29 flags) or 92 "
                                           f"(plus a box), got {len(tok)}")
            vals = [_float(t, path, i, f"field {k + 2}") for k, t in enumerate(tok[1:])]
            pts = np.array(vals[:58]).reshape(29, 2)
            flags = vals[58:87]
            for k, v in enumerate(flags):
                if v not in (0.0, 1.0):
                    raise FormatError(path, i, f"occlusion flag of point {k + 1}: expected 0 or 1, got {tok[59 + k]!r}")
            box = None
            if len(tok) == 92:
                box = np.array(vals[87:91])
                if box[2] < box[0] or box[3] < box[1]:
                    raise FormatError(path, i, f"box {box.tolist()}: need x1 >= x0 and y1 >= y0")
                box = box - 1.0 if one_based else box
            img = tok[0] if image_root is None else os.path.join(os.fspath(image_root), tok[0])
            out.append(Annotation(landmarks=pts - 1.0 if one_based else pts, path=img, box=box,
                                  occluded=np.array(flags, bool)))
    return out


def write_cofw_txt(path, annotations, one_based=True):
    """Write Annotations (29 points, occlusion flags, optional box) in the COFW text form."""
    with open(os.fspath(path), "w", encoding="utf-8", newline="\n") as fh:
        for a in annotations:
            pts = np.asarray(a.landmarks, float) + (1.0 if one_based else 0.0)
            if pts.shape != (29, 2):
                raise ValueError(f"{a.path}: COFW needs 29 points, got {pts.shape}")
            occ = np.zeros(29, bool) if a.occluded is None else np.asarray(a.occluded, bool)
            fields = [a.path or "-"] + [f"{v:.6f}" for v in pts.reshape(-1)] + [str(int(o)) for o in occ]
            if a.box is not None:
                fields += [f"{v:.6f}" for v in np.asarray(a.box, float) + (1.0 if one_based else 0.0)]
            fh.write(" ".join(fields) + "\n")


def read_cofw_npz(path, one_based=None):
    """Faces of an exported COFW .npz (see the module docstring). one_based=None reads the file's
    ``one_based`` key (default True). -> list of Annotation"""
    path = os.fspath(path)
    try:
        return _read_cofw_npz(path, one_based)
    except ValueError as e:
        if isinstance(e, FormatError) or "allow_pickle" not in str(e):
            raise
        raise FormatError(path, None, f"holds object arrays, which cannot be read without pickle "
                                      f"(refused: {e})") from None


def _read_cofw_npz(path, one_based):
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        for k in ("landmarks", "occluded"):
            if k not in keys:
                raise FormatError(path, None, f"missing array {k!r} (have {sorted(keys)})")
        if ("paths" in keys) == ("images" in keys):
            raise FormatError(path, None, "need exactly one of 'paths' or 'images'")
        lm = np.asarray(z["landmarks"], np.float64)
        occ = np.asarray(z["occluded"])
        n = lm.shape[0] if lm.ndim == 3 else -1
        if lm.ndim != 3 or lm.shape[1:] != (29, 2):
            raise FormatError(path, None, f"landmarks: expected [N, 29, 2], got {lm.shape}")
        if occ.shape != (n, 29) or not np.isin(occ, (0, 1)).all():
            raise FormatError(path, None, f"occluded: expected [N, 29] of 0/1, got shape {occ.shape}")
        if not np.all(np.isfinite(lm)):
            raise FormatError(path, None, "landmarks: contains NaN or inf")
        if one_based is None:
            one_based = bool(z["one_based"]) if "one_based" in keys else True
        boxes = np.asarray(z["boxes"], np.float64) if "boxes" in keys else None
        if boxes is not None and boxes.shape != (n, 4):
            raise FormatError(path, None, f"boxes: expected [N, 4], got {boxes.shape}")
        paths = [str(p) for p in z["paths"]] if "paths" in keys else None
        images = z["images"] if "images" in keys else None
        if paths is not None and len(paths) != n:
            raise FormatError(path, None, f"paths: expected {n} entries, got {len(paths)}")
        if images is not None and (images.shape[0] != n or images.dtype != np.uint8 or images.ndim not in (3, 4)):
            raise FormatError(path, None, f"images: expected uint8 [N, H, W(, 3)], got {images.dtype} {images.shape}")
    off = 1.0 if one_based else 0.0
    out = []
    for i in range(n):
        img = None
        if images is not None:
            img = images[i] if images.ndim == 4 else np.repeat(images[i][..., None], 3, -1)
        out.append(Annotation(landmarks=lm[i] - off, path=None if paths is None else paths[i],
                              box=None if boxes is None else boxes[i] - off, occluded=occ[i].astype(bool),
                              image=img))
    return out


def write_cofw_npz(path, annotations, images=None, one_based=True):
    """Write Annotations in the COFW .npz form (paths, or ``images`` [N, H, W(, 3)] uint8)."""
    lm = np.stack([np.asarray(a.landmarks, float) for a in annotations]) + (1.0 if one_based else 0.0)
    occ = np.stack([np.zeros(29, bool) if a.occluded is None else np.asarray(a.occluded, bool) for a in annotations])
    arrays = dict(landmarks=lm, occluded=occ.astype(np.uint8), one_based=np.array(bool(one_based)))
    if images is not None:
        arrays["images"] = np.asarray(images, np.uint8)
    else:
        arrays["paths"] = np.array([a.path or "" for a in annotations], dtype=str)
    if all(a.box is not None for a in annotations):
        arrays["boxes"] = np.stack([np.asarray(a.box, float) for a in annotations]) + (1.0 if one_based else 0.0)
    np.savez(os.fspath(path), **arrays)
