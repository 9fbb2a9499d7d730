"""How far the shipped models' test NME moves with the numpy and OpenCV versions that render the
synthetic test split (issue 18; the numbers behind torch_impl.ship.OTHER_RENDER_RTOL).

    python .ci/measure_renders.py                          # the five pairs below, about 15 min on 2 cores
    python .ci/measure_renders.py --pairs 2.2.6:4.11.0.86  # one pair

For each numpy:opencv-python-headless pair, a virtual environment with only those two packages renders
the test split the shipped models use (500 faces, 128 px, seed 0) and the 2-face train split
``torch_impl.ship`` builds alongside, into a cache of its own. Then this interpreter (which has torch)
measures every shipped model on each render as it is stored. The cache's probe, which re-renders
sample 0 with *this* machine's versions, is bypassed for that: a numpy 1.x render has landmarks up to
0.02 px away from a numpy 2.x one and would otherwise be rebuilt. Prints a Markdown table: per render
its sha256, and each model's NME and its deviation from the render its manifest names.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

PAIRS = ["2.2.6:4.11.0.86", "2.4.6:4.14.0.94", "2.4.6:4.10.0.84", "1.26.4:4.10.0.84", "1.24.4:4.8.1.78"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RENDER = f"""
import sys
sys.path.insert(0, {ROOT!r})
from lmref.data import synthetic
synthetic.load_split("test", n=500, size=128)
synthetic.load_split("train", n=2, size=128)
"""


def render(pair, work):
    """A venv with numpy and opencv-python-headless at ``pair``, rendering into a cache of its own."""
    np_v, cv_v = pair.split(":")
    tag = f"numpy{np_v}-opencv{cv_v}"                                 # no ':' (venv refuses it)
    venv, cache = os.path.join(work, f"venv-{tag}"), os.path.join(work, f"cache-{tag}")
    if not os.path.exists(os.path.join(venv, "bin", "python")):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", f"numpy=={np_v}",
                        f"opencv-python-headless=={cv_v}"], check=True)
    subprocess.run([os.path.join(venv, "bin", "python"), "-c", RENDER], check=True,
                   env={**os.environ, "LMREF_CACHE": cache})
    return cache


def measure_one():
    """In a subprocess with LMREF_CACHE set: every shipped model on that cache's render -> JSON."""
    import types

    import numpy as np

    from lmref.data import synthetic
    root = os.path.join(os.environ["LMREF_CACHE"], "synthetic", f"v{synthetic.DEFAULT_VERSION}")   # what load_split draws

    def stored(seed, index, size=256, split="train", ss=2):        # the probe reads the stored labels
        d = os.path.join(root, f"{split}-seed{seed}-n{500 if split == 'test' else 2}-{size}px")
        return types.SimpleNamespace(landmarks=np.load(os.path.join(d, "meta.npz"))["landmarks"][index])

    synthetic.generate = stored
    from lmref.detect import shipped_models
    from lmref.weights import load
    from torch_impl import ship
    out = {"split": synthetic.load_split("test", n=500, size=128).manifest, "models": {}}
    for name, path in sorted(shipped_models().items()):
        nme, _, _ = ship.measure(path)
        training = load(path)[1]["training"]
        out["models"][name] = {"nme": float(nme.mean()), "stated": training["test"]["nme"],
                               "stated_sha256": (training.get("test_split") or {}).get("sha256")}
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", nargs="+", default=PAIRS, metavar="NUMPY:OPENCV")
    ap.add_argument("--work", default=None, help="keep venvs and caches here (default: a temporary directory)")
    ap.add_argument("--measure-one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure_one:
        return measure_one()
    work = args.work or tempfile.mkdtemp(prefix="lmref-renders-")
    rows = []
    for pair in args.pairs:
        cache = render(pair, work)
        r = subprocess.run([sys.executable, __file__, "--measure-one"], check=True, capture_output=True, text=True,
                           env={**os.environ, "LMREF_CACHE": cache}, cwd=ROOT)
        rows.append((pair, json.loads(r.stdout.strip().splitlines()[-1])))
    names = sorted(rows[0][1]["models"])
    print("| numpy | OpenCV | render sha256 | " + " | ".join(names) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in names) + " |")
    for pair, res in rows:
        sp, cells = res["split"], []
        for n in names:
            m = res["models"][n]
            rel = (m["nme"] - m["stated"]) / m["stated"]
            same = " (the manifest's render)" if m["stated_sha256"] == sp["sha256"] else ""
            cells.append(f"{m['nme']:.6f} ({100 * rel:+.3f}%){same}")
        print(f"| {sp['numpy']} | {sp['opencv']} | {sp['sha256'][:12]} | " + " | ".join(cells) + " |")
    print(f"\nvenvs and caches in {work}")


if __name__ == "__main__":
    sys.exit(main())
