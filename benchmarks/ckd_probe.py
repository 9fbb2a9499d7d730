"""Why CKD's student stays at the mean shape: a least-squares probe of its frozen features.

    python -m benchmarks.ckd_probe                      # the kd experiment's seed-0 runs
    python -m benchmarks.ckd_probe --runs stud5 stud5_ckd --n-train 6400

CKD (paper 002) trains the student's conv layers to imitate the teacher's last conv map (phase 1),
then freezes them and trains the FC on the labels (phase 2). In ``python -m torch_impl.experiments
kd`` that student ends at the mean shape whatever the phase schedule (``kd_sweep.md``). Either the
frozen features carry no landmark information, or phase 2 fails to read it. A probe separates the
two: the best linear read-out of the frozen, globally pooled features (the FC's input), fitted in
closed form (ridge least squares, with a bias) on augmented training crops, scored on the test split.

Rows: each run's own FC (what the experiment reports), the probe of its features, the probe of the
teacher's pooled features, of a randomly initialised Stud5 (features that learned nothing), and an
intercept-only probe (one constant answer in the crop: the mean shape a stuck FC converges to).
The runs are read from ``--work`` (``runs/experiments/kd/<run>-s<seed>/*.safetensors``, left there by
``python -m torch_impl.experiments kd``); nothing is trained here.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pooled_features(model, images, batch=256):
    """Global-average-pooled last conv map [M, C] of a model with ``forward_features``."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            f = model.forward_features(images[i:i + batch])          # [b, C, h, w]
            out.append(f.mean(dim=(2, 3)).double())                  # [b, C]
    return torch.cat(out).numpy()


def ridge_fit(feats, targets, ridge):
    """Closed-form ridge regression with an unpenalised bias: (W [C, K], b [K]) minimising
    |F W + b - T|^2 + ridge * M * |W|^2 on standardised features (M = number of rows)."""
    mu, sd = feats.mean(0), feats.std(0)
    sd = np.where(sd > 1e-6 * sd.max(initial=0.0), sd, np.inf)       # constant (dead) channels get weight 0
    z = (feats - mu) / sd                                            # [M, C]
    t_mu = targets.mean(0)
    gram = z.T @ z + ridge * len(z) * np.eye(z.shape[1])             # [C, C]
    w = np.linalg.solve(gram, z.T @ (targets - t_mu)) / sd[:, None]  # back to raw feature units
    return w, t_mu - mu @ w


def probe_nme(train_f, train_t, test_f, gt, layout, ridge, size):
    """Test NME [M] of the ridge read-out fitted on (train_f, train_t normalised coordinates)."""
    from lmref import metrics
    from torch_impl.train import denormalize_points
    w, b = ridge_fit(train_f, train_t, ridge)
    pred = torch.from_numpy(test_f @ w + b).reshape(len(test_f), -1, 2)
    return metrics.nme(denormalize_points(pred, size, size).double().numpy(), gt, layout)


def explained(train_f, train_t, test_f, test_t, ridge):
    """R^2 on the test crops of the ridge read-out of the teacher's pooled features ``*_t`` from another
    model's ``*_f``: the share of the teacher features' variance (summed over channels) that a linear map
    of these features recovers (what CKD's 1x1 regressor can at best do with them, after pooling)."""
    w, b = ridge_fit(train_f, train_t, ridge)
    resid = test_t - (test_f @ w + b)
    return np.array(1.0 - (resid ** 2).sum() / ((test_t - test_t.mean(0)) ** 2).sum())


def load_crops(cfg, layout, n_train, seed):
    """(train images, train normalised targets [n, 2N], test images, test gt crop pixels [M, N, 2])."""
    from torch_impl.train import load_batch, make_datasets, normalize_points, sample_seed
    train_ds, _, test_ds = make_datasets(cfg)
    n = min(n_train, len(train_ds))
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(train_ds), n, replace=False)
    xs, ys = [], []
    for i in range(0, n, 512):
        chunk = idx[i:i + 512]
        b = load_batch(train_ds, chunk, [sample_seed(seed, 0, j) for j in chunk], cfg, "cpu", layout)
        xs.append(b["image"])
        ys.append(normalize_points(b["landmarks"], cfg.input_size, cfg.input_size).reshape(len(chunk), -1))
    test = load_batch(test_ds, range(len(test_ds)), None, cfg, "cpu", layout)
    return torch.cat(xs), torch.cat(ys).double().numpy(), test["image"], test["landmarks"].double().numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", default=["stud5", "stud5_rbd", "stud5_ckd", "stud5_ckd_own"],
                    help="run names of the kd experiment (directories <run>-s<seed> under --work)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=os.path.join(ROOT, "runs", "experiments", "kd"))
    ap.add_argument("--n-train", type=int, default=6400,
                    help="augmented training crops the probe is fitted on (default: one CKD phase's samples)")
    ap.add_argument("--ridge", type=float, default=1e-3, help="ridge penalty on standardised features")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "ckd_probe"),
                    help="writes OUT.md and OUT.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from lmref import metrics
    from torch_impl.data import convert_layout
    from torch_impl.models import build
    from torch_impl.train import config_from_dict, evaluate, load_teacher, make_datasets, model_layout

    t0 = time.time()
    found = {}
    for run in args.runs:
        d = os.path.join(args.work, f"{run}-s{args.seed}")
        files = sorted(glob.glob(os.path.join(d, "*.safetensors")))
        if not files or not os.path.exists(os.path.join(d, "config.json")):
            raise SystemExit(f"ckd_probe: error: {d} has no finished run (run python -m torch_impl.experiments kd)")
        found[run] = (files[0], json.load(open(os.path.join(d, "config.json"))))
    cfg = config_from_dict(next(iter(found.values()))[1])
    layout = model_layout(cfg)
    teacher_path = next((c.get("distill", {}).get("teacher") for _, c in found.values()
                         if c.get("distill", {}).get("teacher")), None)
    X, T, X_test, gt = load_crops(cfg, layout, args.n_train, args.seed)
    print(f"{len(X)} training crops, {len(X_test)} test crops in {time.time() - t0:.0f} s")

    test_ds = make_datasets(cfg)[2]
    torch.manual_seed(args.seed)
    random = build(cfg.arch, cfg.model).eval()                       # torch_impl's initialisation, seeded
    models = {run: load_teacher(path) for run, (path, _) in found.items()}
    models["random Stud5 (untrained)"] = random
    paths = {run: path for run, (path, _) in found.items()}
    if teacher_path:
        models["teacher (ResNet-50)"] = load_teacher(teacher_path)
        paths["teacher (ResNet-50)"] = teacher_path
    # reruns skip the forwards: one cache per crop set, an entry per weight file (path, size and time)
    ident = {name: (f"{p}|{os.path.getsize(p)}|{os.path.getmtime(p)}" if name in paths
                    else f"random {cfg.arch} seed {args.seed}") for name, p in [(n, paths.get(n)) for n in models]}
    cache = os.path.join(args.work, f"ckd_probe_features_s{args.seed}_n{len(X)}.npz")
    stored = dict(np.load(cache)) if os.path.exists(cache) else {}
    feats = {}
    for name, m in models.items():
        k = ident[name]
        if f"{k}/train" not in stored:
            stored[f"{k}/train"], stored[f"{k}/test"] = pooled_features(m, X), pooled_features(m, X_test)
        feats[name] = stored[f"{k}/train"], stored[f"{k}/test"]
    np.savez(cache, **stored)
    print(f"features of {len(models)} models in {time.time() - t0:.0f} s (cached in {cache})")
    rows = {"intercept only (one constant answer)": {
        "probe": probe_nme(np.zeros((len(X), 1)), T, np.zeros((len(X_test), 1)), gt, layout, args.ridge,
                           cfg.input_size)}}
    for name, model in models.items():
        (f_train, f_test), row = feats[name], {}
        if not name.startswith("random"):
            row["own FC"] = evaluate(model, test_ds, cfg, "cpu", layout)["nme"]
        row["probe"] = probe_nme(f_train, T, f_test, gt, layout, args.ridge, cfg.input_size)
        if teacher_path and not name.startswith("teacher"):
            t_train, t_test = feats["teacher (ResNet-50)"]
            k = len(f_train) * 5 // 6                                    # hold out a sixth of the crops
            row["teacher R2 aug"] = explained(f_train[:k], t_train[:k], f_train[k:], t_train[k:], args.ridge)
            row["teacher R2"] = explained(f_train, t_train, f_test, t_test, args.ridge)
        rows[name] = row
        print(f"{name:26s} " + "   ".join(f"{k} {np.mean(v):.4f}" for k, v in row.items()))
    if teacher_path:                                                  # what phase 1's loss is up against
        with torch.no_grad():
            f_t = models["teacher (ResNet-50)"].forward_features(X[:1024]).double().numpy()   # [1024, C, h, w]
        floor = float(((f_t - f_t.mean(axis=0, keepdims=True)) ** 2).mean())
        phase1 = {run: [e["train_loss"] for e in json.load(open(os.path.join(args.work, f"{run}-s{args.seed}",
                                                                             "result.json")))["history"]
                        if e.get("phase") == 1] for run in found if "ckd" in run}
        print(f"teacher map variance around its per-cell mean {floor:.4f}; phase-1 train loss {phase1}")
    else:
        floor, phase1 = None, {}
    train_ds = make_datasets(cfg)[0]
    train_pts = convert_layout(train_ds.records.landmarks[train_ds.indices], "ibug68", layout)   # [M, 68, 2]
    test_pts = convert_layout(test_ds.records.landmarks[test_ds.indices], "ibug68", layout)
    anchor = metrics.nme(metrics.mean_shape_prediction(test_pts.astype(np.float64),
                                                       train=train_pts.astype(np.float64)),
                         test_pts.astype(np.float64), layout).mean()
    seconds = time.time() - t0
    write(args, rows, anchor, len(X), len(X_test), seconds, floor, phase1)


def write(args, rows, anchor, n_train, n_test, seconds, floor=None, phase1=None):
    summary = {name: {k: float(v.mean()) for k, v in r.items()} for name, r in rows.items()}
    result = {"runs": args.runs, "seed": args.seed, "n_train": n_train, "n_test": n_test, "ridge": args.ridge,
              "mean_shape_nme": float(anchor), "results": summary, "seconds": round(seconds, 1),
              "teacher_map_variance": floor, "phase1_train_loss": phase1}
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    lines = ["# CKD: a least-squares probe of the frozen features", "",
             f"`python -m benchmarks.ckd_probe --runs {' '.join(args.runs)} --seed {args.seed} --n-train "
             f"{args.n_train} --ridge {args.ridge}` ({seconds:.0f} s). Test NME (inter-ocular, 68 points) on "
             f"{n_test} test faces; the probe is a ridge least-squares read-out of the globally pooled last conv map "
             f"(the FC's input), fitted on {n_train} augmented training crops. Mean-shape baseline (the average "
             f"face in each face's own landmark box): {100 * anchor:.2f}%.", "",
             "The last columns: the share of the variance of the teacher's pooled features that a ridge "
             "read-out of these features recovers (R^2; CKD's phase 1 asks a 1x1 conv of the student's map to "
             "equal the teacher's), on augmented training crops held out of the fit (the distribution phase 1 "
             "trained on; fitted on the other five sixths) and on the un-augmented test crops.", "",
             "| features | its own FC | linear probe | teacher features recovered, R^2 (held-out augmented crops) "
             "| R^2 (test crops) |", "| --- | --- | --- | --- | --- |"]
    for name, r in summary.items():
        own = f"{100 * r['own FC']:.2f}%" if "own FC" in r else "-"
        r2 = [f"{r[k]:.3f}" if k in r else "-" for k in ("teacher R2 aug", "teacher R2")]
        lines.append(f"| {name} | {own} | {100 * r['probe']:.2f}% | {r2[0]} | {r2[1]} |")
    if floor is not None:
        lines += ["", f"Phase 1's loss, mean (F_T - R(F_S))^2 over the teacher's last map, has to beat {floor:.4f}: the "
                  f"variance of that map (1,024 augmented crops) around its mean over crops, which R's bias alone "
                  f"reaches with features that carry nothing. Mean train loss of each phase-1 epoch (the runs' "
                  f"result.json): " + "; ".join(f"{run} " + " / ".join(f"{v:.4f}" for v in vals)
                                                for run, vals in phase1.items()) + "."]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
