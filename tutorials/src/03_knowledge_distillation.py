# %% [markdown]
# # 3. Knowledge distillation, measured
#
# A small *student* network learns from the labels **and** from a larger, already trained *teacher*.
# This notebook trains teachers and students from scratch on the synthetic faces of
# `lmref.data.synthetic` and measures what distillation buys, with the three methods of the
# project's papers:
#
# | method | paper | what the student imitates |
# | --- | --- | --- |
# | **RBD** (response-based) | compact KD report (300W), eq. 2 | the teacher's predicted coordinates: $L = \lVert y - P_S\rVert^2 + \lambda \lVert P_T - P_S\rVert^2$ |
# | **CKD** (convolutional, two phases) | compact KD report, eq. 3 | phase 1: the teacher's last conv features through a temporary conv regressor $R$, $\lVert F_T - R(F_S)\rVert^2$; phase 2: retrain the FC on the labels |
# | **L_KD** | ICME 2024 low-power entry, eq. 3 | the teacher's backbone features (through a 1×1 adapter) and its fused heatmaps, on top of the student's own STAR + AWing loss |
#
# RBD and CKD distil a regression network (Stud5 student, ResNet teacher, grayscale, 68 points);
# L_KD distils a heatmap network (MobileViT-v2 + AAM head, 51 inner points). Every number below is
# measured in this notebook: learning curves, test NME with and without KD with error bars over
# training seeds, CED curves, and which face attributes the student improves on.
#
# The models and images are shrunk (64×64 inputs, narrow networks, a few thousand training steps)
# so that everything runs on a 2-core laptop CPU in minutes; the absolute NMEs are therefore far
# from the papers'. `LMREF_TUTORIAL_SMALL=1` shrinks it further to a smoke test (the test suite).

# %%
import os
import sys
import tempfile
import time
from pathlib import Path

try:
    import lmref
except ImportError:                         # run from tutorials/ without `pip install -e .`
    sys.path.insert(0, os.path.abspath(".."))
    import lmref

import matplotlib.pyplot as plt
import numpy as np
import torch

from lmref import landmarks, metrics
from lmref.data import synthetic
from torch_impl import data as tdata
from torch_impl.train import TrainConfig, train

SMALL = os.environ.get("LMREF_TUTORIAL_SMALL", "0") == "1"
torch.set_num_threads(2)
# sizes: training faces (split 10:1 into train / val), test faces, epochs, seeds per student setting
if SMALL:
    NUM_TRAIN, NUM_TEST, EPOCHS_REG, EPOCHS_AAM, SEEDS = 66, 40, 2, 1, [0, 1]
else:
    NUM_TRAIN, NUM_TEST, EPOCHS_REG, EPOCHS_AAM, SEEDS = 1100, 500, 12, 6, [0, 1, 2]
RENDER, SIZE = 128, 64                       # synthetic image side, model input side
runs_dir = Path(tempfile.mkdtemp(prefix="lmref_tutorial3_"))
common = dict(num_train=NUM_TRAIN, num_test=NUM_TEST, input_size=SIZE, progress=False, export=True,
              data={"render_size": RENDER})
t_start = time.time()
print(f"{NUM_TRAIN} training faces, {NUM_TEST} test faces, seeds {SEEDS}; runs in {runs_dir}")

# %% [markdown]
# ## 1. The data
#
# The synthetic generator draws faces with exact 68-point iBUG landmarks and the six WFLW attribute
# labels (large pose, expression, illumination, make-up, occlusion, blur). Splits are generated
# once and cached (`~/.cache/lmref`, or `$LMREF_CACHE`). The trainer crops each face around its
# landmarks and applies STAR's augmentation (flip, rotation, scale, shift, occlusion, blur, ...).

# %%
train_pool = synthetic.load_split("train", n=NUM_TRAIN, size=RENDER)
test_split = synthetic.load_split("test", n=NUM_TEST, size=RENDER)
attributes = test_split.attributes.astype(bool)                     # [NUM_TEST, 6]
print("test faces with each attribute:",
      {a: int(n) for a, n in zip(synthetic.ATTRIBUTES, attributes.sum(0))})

ds = tdata.LandmarkDataset(train_pool, augment_cfg=tdata.AugmentConfig(size=SIZE), channels=3)
fig, axes = plt.subplots(2, 6, figsize=(12, 4.3))
for k, ax in enumerate(axes.flat):
    s = ds.sample(k // 2, seed=None if k % 2 == 0 else 100 + k)     # each face plain, then augmented
    img = np.clip(s["image"].transpose(1, 2, 0) * 0.5 + 0.5, 0, 1)   # undo the (x - 0.5) / 0.5 normalisation
    ax.imshow(img)
    ax.plot(s["landmarks"][:, 0], s["landmarks"][:, 1], ".", ms=2.5, color="lime")
    ax.set_title("crop" if k % 2 == 0 else "augmented", fontsize=8)
    ax.axis("off")
plt.suptitle(f"training crops at {SIZE}x{SIZE} with their 68 landmarks", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. RBD and CKD: Stud5 learns from a ResNet
#
# The compact-KD report pairs a ResNet-50 teacher (23.8 M parameters) with Stud5, five 3×3 conv
# blocks and one FC layer (4.0 M), both grayscale, regressing the 136 coordinates directly.
# Here both are scaled down: a ResNet with basic blocks [2, 2, 2, 2] at width 32 as the teacher
# and a Stud5 at a quarter of the width as the student.
#
# First the teacher, trained once:

# %%
REG_TEACHER = {"arch": "resnet", "model": {"layers": [2, 2, 2, 2], "block": "basic", "stem_width": 32, "in_chans": 1}}
REG_STUDENT = {"arch": "stud5", "model": {"channels": [16, 32, 64, 128, 128], "in_chans": 1}}


def run(name, spec, epochs, seed=0, **kw):
    """Train one model with torch_impl.train and return its summary (history, test NME per face, weights)."""
    cfg = TrainConfig(**spec, **common, epochs=epochs, seed=seed, out_dir=str(runs_dir / f"{name}_s{seed}"),
                      lr_schedule="cosine", **kw)
    summary = train(cfg)
    print(f"{name:20s} seed {seed}: test NME {summary['test']['nme']:.4f}")
    return summary


def params(summary):
    """Parameters of an exported model (BatchNorm running statistics are not parameters)."""
    tensors, _ = lmref.weights.load(summary["weights"])
    return sum(v.size for k, v in tensors.items() if not k.endswith(("running_mean", "running_var")))


reg_teacher = run("resnet_teacher", REG_TEACHER, EPOCHS_REG)

# %% [markdown]
# Then the student three ways — alone, with RBD (λ = 1), with CKD (half the epochs for phase 1,
# half for phase 2) — each with several training seeds, so that the comparison carries its own
# error bars: the spread between seeds is what a difference has to beat.

# %%
REG_METHODS = {
    "no KD": {},
    "RBD": {"distill": {"kind": "rbd", "teacher": reg_teacher["weights"], "rbd_lambda": 1.0}},
    "CKD": {"distill": {"kind": "ckd", "teacher": reg_teacher["weights"]}},
}
reg_runs = {m: [run(f"stud5_{m.replace(' ', '')}", REG_STUDENT, EPOCHS_REG, seed, **kw) for seed in SEEDS]
            for m, kw in REG_METHODS.items()}

# %% [markdown]
# ## 3. L_KD: a MobileViT-v2 AAM student learns from a wider one
#
# The ICME 2024 entry distils a MobileViT-v2 ×0.5 student (1.14 M parameters with its AAM head)
# from a SwinV2 teacher. A SwinV2 does not train in minutes on a CPU, so here the teacher is a
# MobileViT-v2 ×1.0 with the same AAM head; L_KD needs no change for that (its 1×1 adapter maps the
# student's 256 feature channels to the teacher's 512).

# %%
AAM_TEACHER = {"arch": "aam", "model": {"backbone_config": {"width_multiplier": 1.0}, "layout": "inner51"}}
AAM_STUDENT = {"arch": "aam", "model": {"backbone_config": {"width_multiplier": 0.5}, "layout": "inner51"}}
aam_teacher = run("aam_teacher", AAM_TEACHER, EPOCHS_AAM)
AAM_METHODS = {
    "no KD": {},
    "L_KD": {"distill": {"kind": "lkd", "teacher": aam_teacher["weights"], "feat_weight": 1.0, "heat_weight": 1.0}},
}
aam_runs = {m: [run(f"aam_student_{m.replace(' ', '')}", AAM_STUDENT, EPOCHS_AAM, seed, **kw) for seed in SEEDS]
            for m, kw in AAM_METHODS.items()}
print(f"all training: {(time.time() - t_start) / 60:.1f} min")

# %% [markdown]
# ## 4. Learning curves
#
# Validation NME after every epoch (inter-ocular normalisation), mean over seeds with the min–max
# band. CKD's curve starts late: in phase 1 the student has no trained FC layer, so it has no
# landmarks to validate; its curve begins when phase 2 retrains the FC.

# %%
def curve(summaries):
    v = np.array([[h["val_nme"] if h.get("phase") in (None, 2) else np.nan for h in s["history"]]
                  for s in summaries])                                 # [seeds, epochs]
    return np.arange(1, v.shape[1] + 1), v


fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for ax, runs_, teacher, title in ((axes[0], reg_runs, reg_teacher, "Stud5 (regression)"),
                                  (axes[1], aam_runs, aam_teacher, "MobileViT-v2 x0.5 + AAM (heatmaps)")):
    ep, v = curve([teacher])
    ax.plot(ep, v[0], "k--", lw=1, label="teacher")
    for k, (m, summaries) in enumerate(runs_.items()):
        ep, v = curve(summaries)
        ax.plot(ep, np.nanmean(v, 0), "-o", ms=3, color=f"C{k}", label=m)
        ax.fill_between(ep, np.nanmin(v, 0), np.nanmax(v, 0), color=f"C{k}", alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NME")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Test NME with and without KD
#
# Each student setting was trained with every seed; the bar is the mean test NME over seeds, the
# error bar ± one standard deviation between seeds, the dots the individual seeds. The teacher is
# the dashed line. The Δ column is the change against the student without KD, with the standard
# error of that difference.

# %%
def test_nmes(summaries):
    return np.array([s["test"]["nme"] for s in summaries])           # [seeds]


fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
print(f"{'model':30s} {'test NME (mean ± sd over seeds)':>32s} {'Δ vs no KD':>18s}  params")
for ax, runs_, teacher, title in ((axes[0], reg_runs, reg_teacher, "Stud5 (regression)"),
                                  (axes[1], aam_runs, aam_teacher, "MobileViT-v2 x0.5 + AAM")):
    base = test_nmes(runs_["no KD"])
    print(f"{title + ' teacher':30s} {teacher['test']['nme']:20.4f}{'':12s} {'':>18s}  {params(teacher):,}")
    for k, (m, summaries) in enumerate(runs_.items()):
        v = test_nmes(summaries)
        ax.bar(k, v.mean(), yerr=v.std(ddof=1) if len(v) > 1 else 0, color=f"C{k}", alpha=0.7, capsize=6)
        ax.plot(np.full(len(v), k), v, "k.", ms=6)
        d = v - base
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        delta = "" if m == "no KD" else f"{d.mean():+.4f} ± {se:.4f}"
        print(f"{title + ' ' + m:30s} {v.mean():20.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f} {delta:>18s}  "
              f"{params(summaries[0]):,}")
    ax.axhline(teacher["test"]["nme"], color="k", ls="--", lw=1, label="teacher")
    ax.set_xticks(range(len(runs_)), list(runs_))
    ax.set_ylabel("test NME")
    lo = min(teacher["test"]["nme"], min(test_nmes(s).min() for s in runs_.values()))
    ax.set_ylim(lo * 0.8, None)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The differences are paired by seed: seed s of every setting starts from the same initial
# weights and sees the batches in the same order with the same augmentation (the trainer makes
# everything random a function of the seed), so a difference that keeps its sign over all seeds
# is the method's, not the initialisation's.
#
# ## 6. CED curves
#
# The cumulative error distribution: the fraction of test faces whose NME is below x. A method that
# only helps the easy faces moves the left part; one that fixes failures lifts the right part.
# Curves pool the faces of all seeds.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
thr = 0.3
for ax, runs_, teacher, title in ((axes[0], reg_runs, reg_teacher, "Stud5 (regression)"),
                                  (axes[1], aam_runs, aam_teacher, "MobileViT-v2 x0.5 + AAM")):
    x, y = metrics.ced(np.array(teacher["test_nme_per_image"]), thr=thr, step=1e-3)
    ax.plot(x, y, "k--", lw=1, label="teacher")
    for k, (m, summaries) in enumerate(runs_.items()):
        pooled = np.concatenate([s["test_nme_per_image"] for s in summaries])
        x, y = metrics.ced(pooled, thr=thr, step=1e-3)
        fr, auc = metrics.fr_auc(pooled, thr=thr, step=1e-3)
        ax.plot(x, y, color=f"C{k}", label=f"{m}: AUC@{thr} {auc:.3f}, FR@{thr} {fr:.1%}")
    ax.set_xlabel("NME")
    ax.set_ylabel("fraction of test faces")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 7. Where does the student improve?
#
# The synthetic test faces carry WFLW's six attribute labels. For each attribute subset, the mean
# NME change of each KD method against the same seed's student without KD (negative = better),
# with ± one standard error over seeds:

# %%
subsets = {"all": np.ones(len(attributes), bool),
           **{a: attributes[:, k] for k, a in enumerate(synthetic.ATTRIBUTES) if attributes[:, k].any()}}
names, masks = list(subsets), list(subsets.values())


def per_subset(summaries):
    e = np.array([s["test_nme_per_image"] for s in summaries])       # [seeds, faces]
    return np.array([[e_s[m].mean() for m in masks] for e_s in e])    # [seeds, subsets]


fig, ax = plt.subplots(figsize=(11, 3.6))
kd_methods = [("Stud5", reg_runs, m) for m in ("RBD", "CKD")] + [("AAM", aam_runs, "L_KD")]
width = 0.8 / len(kd_methods)
print(f"{'subset':13s} {'faces':>5s}  " + "  ".join(f"{f + ' ' + m:>20s}" for f, _, m in kd_methods))
table = []
for k, (family, runs_, m) in enumerate(kd_methods):
    d = per_subset(runs_[m]) - per_subset(runs_["no KD"])            # [seeds, subsets], paired by seed
    mean = d.mean(0)
    se = d.std(0, ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.zeros_like(mean)
    rel = mean / per_subset(runs_["no KD"]).mean(0)                   # relative change
    ax.bar(np.arange(len(names)) + (k - (len(kd_methods) - 1) / 2) * width, 100 * rel, width,
           yerr=100 * se / per_subset(runs_["no KD"]).mean(0), capsize=3, label=f"{family}: {m}", color=f"C{k + 1}")
    table.append((mean, se))
for j, n in enumerate(names):
    print(f"{n:13s} {masks[j].sum():5d}  " + "  ".join(f"{t[0][j]:+9.4f} ± {t[1][j]:.4f}" for t in table))
ax.axhline(0, color="k", lw=0.8)
ax.set_xticks(range(len(names)), [f"{n}\n({m.sum()})" for n, m in zip(names, masks)])
ax.set_ylabel("NME change vs no KD (%)")
ax.set_title("negative = the distilled student is better on that subset", fontsize=10)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 8. What to take from it
#
# * Distillation is measured here the way it should be everywhere: same data, same budget, same
#   seeds with and without the teacher, and the spread between seeds next to the difference.
#   A gain smaller than that spread is not a gain.
# * RBD only changes the target the student regresses (a mix of the label and the teacher's
#   answer); CKD changes what the conv layers learn (the teacher's feature map) and then fits only
#   the FC, so it lives or dies by how much of the teacher's representation the small conv stack
#   can copy. L_KD gives the heatmap student two extra dense targets, features and fused heatmaps.
# * The numbers above are from tiny models after a few minutes of CPU training; run the configs in
#   `configs/` (`stud5_rbd.toml`, `stud5_ckd.toml`, `icme_student_kd.toml`) for the papers' settings.

# %%
import shutil

shutil.rmtree(runs_dir)             # checkpoints and exported weights of all runs
print(f"notebook total: {(time.time() - t_start) / 60:.1f} min")
