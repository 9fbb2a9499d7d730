"""How ``example.jpg`` was made: one face of the synthetic generator (``lmref.data.synthetic``),
framed wider than the training crops (the face box is a third of the picture), without the
occluders, strong pose, blur or extreme light that the benchmark draws on purpose, 480 x 480,
saved as a JPEG (quality 90) like a photograph, with its 68 ground-truth landmarks (iBUG order,
pixel centres at integers) in ``example_landmarks.json``. It is shipped as a file, so later changes to the
generator do not change it; run this module to make it again with the generator you have:

    python -m lmref.assets.make_example [--seed 64] [--out lmref/assets/example.jpg]
"""
import argparse
import json
import os

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "example.jpg")
EXAMPLE_LANDMARKS = os.path.join(HERE, "example_landmarks.json")


def make(seed=64, size=480):
    """-> (RGB uint8 image [size, size, 3], landmarks [68, 2]) of the example face."""
    from lmref.data import synthetic
    rng = np.random.default_rng([7, seed])
    p = synthetic.sample_params(rng)
    p["face_frac"] = 0.34
    p["rng"] = rng
    s = synthetic.render(p, size, 2)
    return s.image, s.landmarks


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lmref.assets.make_example", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=64)
    ap.add_argument("--out", default=EXAMPLE)
    args = ap.parse_args(argv)
    image, landmarks = make(args.seed)
    ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    with open(args.out, "wb") as f:
        f.write(data.tobytes())
    pts = os.path.join(os.path.dirname(os.path.abspath(args.out)), os.path.basename(EXAMPLE_LANDMARKS))
    with open(pts, "w") as f:
        json.dump({"image": os.path.basename(args.out), "layout": "ibug68", "seed": args.seed,
                   "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in landmarks]}, f)
    print(f"wrote {args.out} ({len(data) / 1e3:.0f} kB) and {pts}")


if __name__ == "__main__":
    main()
