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
# The models and images are shrunk (64×64 inputs, 96×96 for the AAM models, narrow networks, a few thousand training steps)
# so that everything runs on a 2-core laptop CPU in minutes; the absolute NMEs are therefore far
# from the papers'. `LMREF_TUTORIAL_SMALL=1` shrinks it further to a smoke test (the test suite).

# %%
import contextlib
import io
import json
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

from lmref import landmarks, metrics, viz
from lmref.data import synthetic
from torch_impl import data as tdata
from torch_impl.train import TrainConfig, train

SMALL = os.environ.get("LMREF_TUTORIAL_SMALL", "0") == "1"
plt.rcParams.update(viz.NOTEBOOK_RC)   # figure and text sizes readable on HiDPI screens
# One torch thread: these tensors are small, and torch's thread pool on cores that are also busy
# with anything else can make a step 10-50x slower instead of faster.
torch.set_num_threads(1)
# training faces (split 10:1 into train / val), test faces, synthetic image side, model input side,
# epochs and training seeds of the regression students and of the heatmap students, batch size
# (the AAM models get their own input side: see section 3)
if SMALL:
    NUM_TRAIN, NUM_TEST, RENDER, SIZE, BATCH = 34, 16, 64, 32, 8
    EPOCHS_REG, SEEDS_REG, EPOCHS_AAM, SEEDS_AAM, SIZE_AAM = 2, [0, 1], 1, [0], 32
else:
    NUM_TRAIN, NUM_TEST, RENDER, SIZE, BATCH = 550, 250, 128, 64, 16
    EPOCHS_REG, SEEDS_REG, EPOCHS_AAM, SEEDS_AAM, SIZE_AAM = 8, [0, 1, 2], 5, [0], 96
WORKERS = 2                                  # processes generating the synthetic faces (first run only)
runs_dir = Path(tempfile.mkdtemp(prefix="lmref_tutorial3_"))
common = dict(num_train=NUM_TRAIN, num_test=NUM_TEST, input_size=SIZE, batch_size=BATCH, augment=True,
              progress=False, num_threads=1, data={"render_size": RENDER, "workers": WORKERS})
t_start = time.time()
print(f"{NUM_TRAIN} training faces, {NUM_TEST} test faces at {SIZE}x{SIZE}")

# %% [markdown]
# ## 1. The data
#
# The synthetic generator draws faces with exact 68-point iBUG landmarks and the six WFLW attribute
# labels (large pose, expression, illumination, make-up, occlusion, blur). Splits are generated
# once and cached (`~/.cache/lmref`, or `$LMREF_CACHE`). The trainer crops each face around its
# landmarks and applies STAR's augmentation (flip, rotation, scale, shift, occlusion, blur, ...),
# the recipe of the ICME 2024 entry, to every model here.

# %%
train_pool = synthetic.load_split("train", n=NUM_TRAIN, size=RENDER, workers=WORKERS)
test_split = synthetic.load_split("test", n=NUM_TEST, size=RENDER, workers=WORKERS)
attributes = test_split.attributes.astype(bool)                     # [NUM_TEST, 6]
print("test faces with each attribute:",
      {a: int(n) for a, n in zip(synthetic.ATTRIBUTES, attributes.sum(0))})

ds = tdata.LandmarkDataset(train_pool, augment_cfg=tdata.AugmentConfig(size=SIZE), channels=3)
fig, axes = plt.subplots(2, 6, figsize=(10.5, 4.3), layout="constrained")
for k, ax in enumerate(axes.flat):
    s = ds.sample(k // 2, seed=None if k % 2 == 0 else 100 + k)     # each face plain, then augmented
    img = np.clip(s["image"].transpose(1, 2, 0) * 0.5 + 0.5, 0, 1)   # undo the (x - 0.5) / 0.5 normalisation
    ax.imshow(img)
    ax.plot(s["landmarks"][:, 0], s["landmarks"][:, 1], ".", ms=2.5, color="lime")
    ax.set_title("crop" if k % 2 == 0 else "augmented")
    ax.axis("off")
fig.suptitle(f"training crops at {SIZE}x{SIZE} with their 68 landmarks")
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
# Trained from scratch, these small regressors want a higher backbone learning rate than the
# ICME recipe's 2e-4 (which fine-tunes an ImageNet backbone): 1e-3 for every layer.
REG_TEACHER = {"arch": "resnet", "model": {"layers": [2, 2, 2, 2], "block": "basic", "stem_width": 32, "in_chans": 1},
               "lr_backbone": 1e-3, "lr_head": 1e-3}
REG_STUDENT = {"arch": "stud5", "model": {"channels": [16, 32, 64, 128, 128], "in_chans": 1},
               "lr_backbone": 1e-3, "lr_head": 1e-3}


def run(name, spec, epochs, seed=0, **kw):
    """Train one model with torch_impl.train -> its summary: history (per epoch: train loss, val
    NME), test NME per face, path of the exported weights."""
    cfg = TrainConfig(**{**common, "lr_schedule": "cosine", **spec, **kw}, epochs=epochs, seed=seed,
                      out_dir=str(runs_dir / f"{name}_s{seed}"))
    with contextlib.redirect_stdout(io.StringIO()):                    # the trainer's per-epoch lines
        summary = train(cfg)
    print(f"{name:20s} seed {seed}: test NME {summary['test']['nme']:.4f}")
    return summary


def n_params(summary):
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
reg_runs = {m: [run(f"stud5_{m.replace(' ', '')}", REG_STUDENT, EPOCHS_REG, seed, **kw) for seed in SEEDS_REG]
            for m, kw in REG_METHODS.items()}

# %% [markdown]
# ## 3. L_KD: a MobileViT-v2 AAM student learns from a larger heatmap network
#
# The ICME 2024 entry distils a MobileViT-v2 ×0.5 student (1.14 M parameters with its AAM head)
# from a SwinV2 teacher with the same AAM head. A SwinV2 does not train in minutes on a CPU, so
# the teacher here is the AAM head on the ResNet of section 2 (as a colour model). L_KD does not care
# what the teacher is: it needs its backbone features (a 1×1 adapter maps the student's channels to
# the teacher's when they differ; here both have 256) and its fused heatmaps.
#
# An AAM student costs several times a Stud5 per step, so it is trained with one seed per setting;
# its error bars below come from the test faces instead (paired over faces, see section 5).
#
# Two changes from the paper's recipe make these from-scratch CPU runs learn at all, the same ones
# `python -m torch_impl.experiments icme` uses (`CPU_AAM_RECIPE`): the input is 96×96 (at 64×64
# MobileViT-v2's stride-32 map is 2×2, too coarse for the head), and the loss weights STAR's term
# ×10 and the AWing terms ×1 (STAR's own weights are 1 / 10 / 10): the point and edge targets are a
# pixel wide, and with their weight the point maps stay flat and the soft-argmax landmarks do not move.

# %%
from torch_impl.experiments import CPU_AAM_RECIPE

AAM_COMMON = {**CPU_AAM_RECIPE, "input_size": SIZE_AAM, "warmup_steps": 20}
AAM_TEACHER = {"arch": "aam", "model": {"backbone": "resnet", "layout": "inner51",
                                        "backbone_config": {**REG_TEACHER["model"], "in_chans": 3}}, **AAM_COMMON}
AAM_STUDENT = {"arch": "aam", "model": {"backbone": "mobilevitv2", "layout": "inner51",
                                        "backbone_config": {"width_multiplier": 0.5}}, **AAM_COMMON}
aam_teacher = run("aam_teacher", AAM_TEACHER, EPOCHS_AAM)
AAM_METHODS = {
    "no KD": {},
    "L_KD": {"distill": {"kind": "lkd", "teacher": aam_teacher["weights"], "feat_weight": 1.0, "heat_weight": 1.0}},
}
aam_runs = {m: [run(f"aam_student_{m.replace(' ', '')}", AAM_STUDENT, EPOCHS_AAM, seed, **kw) for seed in SEEDS_AAM]
            for m, kw in AAM_METHODS.items()}
print(f"all training: {(time.time() - t_start) / 60:.1f} min")

# %% [markdown]
# ## 4. Learning curves
#
# Validation NME after every epoch (inter-ocular normalisation; the regression models use the 68
# iBUG points, the AAM models the 51 inner points), mean over seeds with the min–max band. CKD's
# curve starts late: in phase 1 the student has no trained FC layer, hence no landmarks to
# validate; its curve begins when phase 2 retrains the FC.

# %%
FAMILIES = (("Stud5 (regression, 68 points)", reg_runs, reg_teacher),
            ("MobileViT-v2 x0.5 + AAM (51 points)", aam_runs, aam_teacher))


def curve(summaries):
    v = np.array([[h["val_nme"] if h.get("phase") in (None, 2) else np.nan for h in s["history"]]
                  for s in summaries])                                 # [seeds, epochs]
    return np.arange(1, v.shape[1] + 1), v


fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2), layout="constrained")
for ax, (title, runs_, teacher) in zip(axes, FAMILIES):
    ep, v = curve([teacher])
    ax.plot(ep, v[0], "k--", lw=1, label="teacher")
    for k, (m, summaries) in enumerate(runs_.items()):
        ep, v = curve(summaries)
        seen = ~np.isnan(v).all(0)
        ax.plot(ep[seen], np.nanmean(v[:, seen], 0), "-o", ms=3, color=f"C{k}", label=m)
        if len(summaries) > 1:
            ax.fill_between(ep[seen], np.nanmin(v[:, seen], 0), np.nanmax(v[:, seen], 0), color=f"C{k}", alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NME")
    ax.set_title(title)
    viz.legend_outside(ax, side="below")
    ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## 5. Test NME with and without KD
#
# Two kinds of error bar, each the honest one for its experiment:
#
# * **several seeds** (Stud5): the bar is the mean test NME over seeds, the error bar ± one standard
#   deviation between seeds, the dots the individual seeds. The Δ against "no KD" is paired by
#   seed — seed s of every setting starts from the same initial weights and sees the same batches
#   with the same augmentation (the trainer makes everything random a function of the seed) — and
#   carries the standard error of the paired differences over seeds;
# * **one seed** (AAM): the error bar is the standard error of the mean NME over the test faces, and
#   the Δ is paired over faces (same face, with and without KD). This measures how sure we are
#   about *this* trained model on this test set, not how much another training run would vary.

# %%
def nme_matrix(summaries):
    return np.array([s["test_nme_per_image"] for s in summaries])     # [seeds, faces]


def mean_and_error(summaries, mask=None):
    """Mean test NME and its error bar: sd over seeds (several seeds) or SE over faces (one seed)."""
    e = nme_matrix(summaries)[:, mask if mask is not None else slice(None)]
    if len(e) > 1:
        return e.mean(), e.mean(1).std(ddof=1)
    return e.mean(), e[0].std(ddof=1) / np.sqrt(e.shape[1])


def paired_delta(kd, base, mask=None):
    """Mean NME change of ``kd`` against ``base`` and its standard error, paired by seed (several
    seeds) or by face (one seed)."""
    d = nme_matrix(kd) - nme_matrix(base)                             # [seeds, faces]
    d = d[:, mask if mask is not None else slice(None)]
    per_unit = d.mean(1) if len(d) > 1 else d[0]                      # seeds, or faces
    return per_unit.mean(), per_unit.std(ddof=1) / np.sqrt(len(per_unit))


fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0), layout="constrained")
print(f"{'model':44s} {'test NME':>16s} {'Δ vs no KD':>20s}  {'params':>9s}")
for ax, (title, runs_, teacher) in zip(axes, FAMILIES):
    print(f"{title + ': teacher':44s} {teacher['test']['nme']:8.4f}{'':8s} {'':>20s}  {n_params(teacher):9,d}")
    for k, (m, summaries) in enumerate(runs_.items()):
        mean, err = mean_and_error(summaries)
        ax.bar(k, mean, yerr=err, color=f"C{k}", alpha=0.7, capsize=6)
        if len(summaries) > 1:
            ax.plot(np.full(len(summaries), k), nme_matrix(summaries).mean(1), "k.", ms=6)
        delta = "" if m == "no KD" else "{:+.4f} ± {:.4f}".format(*paired_delta(summaries, runs_["no KD"]))
        print(f"{title + ': ' + m:44s} {mean:8.4f} ± {err:.4f} {delta:>20s}  {n_params(summaries[0]):9,d}")
    ax.axhline(teacher["test"]["nme"], color="k", ls="--", lw=1, label="teacher")
    ax.set_xticks(range(len(runs_)), list(runs_))
    ax.set_ylabel("test NME")
    seeds = len(next(iter(runs_.values())))
    ax.set_title(f"{title}\n" + (f"{seeds} seeds, ± sd over seeds" if seeds > 1 else "1 seed, ± SE over test faces"),
                 fontsize=10)
    lo = min(teacher["test"]["nme"], min(nme_matrix(s).mean(1).min() for s in runs_.values()))
    ax.set_ylim(0.8 * lo, None)
    viz.legend_outside(ax, side="below")
plt.show()

# %% [markdown]
# ## 6. CED curves
#
# The cumulative error distribution: the fraction of test faces whose NME is below x. A method that
# only helps the easy faces moves the left part; one that fixes failures lifts the right part.
# Curves pool the faces of all seeds. (The usual threshold is NME 0.08–0.1; these small, briefly
# trained models are drawn up to 0.3.)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.6), layout="constrained")
thr = 0.3
for ax, (title, runs_, teacher) in zip(axes, FAMILIES):
    x, y = metrics.ced(np.array(teacher["test_nme_per_image"]), thr=thr, step=1e-3)
    ax.plot(x, y, "k--", lw=1, label="teacher")
    for k, (m, summaries) in enumerate(runs_.items()):
        pooled = nme_matrix(summaries).ravel()
        x, y = metrics.ced(pooled, thr=thr, step=1e-3)
        fr, auc = metrics.fr_auc(pooled, thr=thr, step=1e-3)
        ax.plot(x, y, color=f"C{k}", label=f"{m}: AUC@{thr} {auc:.3f}, FR@{thr} {fr:.1%}")
    ax.set_xlabel("NME")
    ax.set_ylabel("fraction of test faces")
    ax.set_title(title)
    viz.legend_outside(ax, side="below", ncol=1)
    ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## 7. Where does the student improve?
#
# The synthetic test faces carry WFLW's six attribute labels. For each attribute subset: the mean
# NME change of each KD method against its student without KD, relative to that student's NME on
# the subset (negative = the distilled student is better), with ± one standard error (paired as in
# section 5).

# %%
subsets = {"all": np.ones(len(attributes), bool),
           **{a: attributes[:, k] for k, a in enumerate(synthetic.ATTRIBUTES) if attributes[:, k].sum() > 1}}
kd_methods = [("Stud5", reg_runs, m) for m in ("RBD", "CKD")] + [("AAM", aam_runs, "L_KD")]
width = 0.8 / len(kd_methods)
fig, ax = plt.subplots(figsize=(10.5, 3.8), layout="constrained")
print(f"{'subset':13s} {'faces':>5s}  " + "  ".join(f"{f + ' ' + m + ' (Δ NME)':>22s}" for f, _, m in kd_methods))
rows = {name: [] for name in subsets}
for k, (family, runs_, m) in enumerate(kd_methods):
    rel, rel_se = [], []
    for name, mask in subsets.items():
        d, se = paired_delta(runs_[m], runs_["no KD"], mask)
        base = nme_matrix(runs_["no KD"])[:, mask].mean()
        rel.append(100 * d / base)
        rel_se.append(100 * se / base)
        rows[name].append(f"{d:+.4f} ± {se:.4f}")
    ax.bar(np.arange(len(subsets)) + (k - (len(kd_methods) - 1) / 2) * width, rel, width, yerr=rel_se,
           capsize=3, label=f"{family}: {m}", color=f"C{k + 1}")
for name, mask in subsets.items():
    print(f"{name:13s} {mask.sum():5d}  " + "  ".join(f"{r:>22s}" for r in rows[name]))
ax.axhline(0, color="k", lw=0.8)
ax.set_xticks(range(len(subsets)), [f"{n}\n({m.sum()} faces)" for n, m in subsets.items()])
ax.set_ylabel("NME change vs no KD (%)")
ax.set_title("negative = the distilled student is better on that subset")
viz.legend_outside(ax)
plt.show()

# %% [markdown]
# ## 8. The full-size experiments, three seeds each
#
# The runs above take minutes. `python -m torch_impl.experiments icme` and `... kd` run the papers'
# comparisons at a larger (still CPU-sized) scale, three seeds per setting, and commit their numbers
# to `benchmarks/results/`. Here they are with their error bars (± one sd over seeds, dots = seeds);
# the tables and the exact settings are in `icme.md` and `kd.md` next to the JSON files.

# %%
RESULTS = Path(lmref.__file__).resolve().parents[1] / "benchmarks" / "results"
EXPERIMENTS = {"icme": ("ICME 2024: MobileViT-v2 x0.5 + AAM", "teacher",
                        {"student": "no KD", "student_kd": "L_KD"}),
               "kd": ("compact KD: Stud5", "resnet50", {"stud5": "no KD", "stud5_rbd": "RBD", "stud5_ckd": "CKD"})}
found = {name: RESULTS / f"{name}.json" for name in EXPERIMENTS if (RESULTS / f"{name}.json").exists()}
if not found:
    print(f"no experiment results in {RESULTS} (run python -m torch_impl.experiments icme / kd)")
else:
    fig, axes = plt.subplots(1, len(found), figsize=(5.2 * len(found), 3.8), squeeze=False, layout="constrained")
    for ax, (name, path) in zip(axes[0], found.items()):
        title, teacher, students = EXPERIMENTS[name]
        res = json.loads(path.read_text())
        t_nme = np.mean([r["test"]["nme"] for r in res["runs"][teacher]])
        for k, (run_name, label) in enumerate(students.items()):
            nmes = np.array([r["test"]["nme"] for r in res["runs"][run_name]])
            ax.bar(k, nmes.mean(), yerr=nmes.std(ddof=1), color=f"C{k}", alpha=0.7, capsize=6)
            ax.plot(np.full(len(nmes), k), nmes, "k.", ms=6)
            print(f"{name:5s} {label:6s} test NME {nmes.mean():.4f} ± {nmes.std(ddof=1):.4f} over seeds {res['seeds']}")
        ax.axhline(t_nme, color="k", ls="--", lw=1, label=f"teacher ({t_nme:.3f})")
        ax.set_xticks(range(len(students)), list(students.values()))
        ax.set_ylabel("test NME")
        ax.set_title(f"{title}\n{len(res['seeds'])} seeds, ± sd over seeds", fontsize=10)
        viz.legend_outside(ax, side="below")
    plt.show()

# %% [markdown]
# ## 9. What to take from it
#
# * Distillation is measured here the way it should be everywhere: same data, same budget, same
#   seeds with and without the teacher, and the uncertainty next to the difference. A gain smaller
#   than its error bar is not a gain.
# * RBD only changes the target the student regresses (a mix of the label and the teacher's
#   answer); CKD changes what the conv layers learn (the teacher's feature map) and then fits only
#   the FC, so it lives or dies by how much of the teacher's representation the small conv stack
#   can copy. L_KD gives the heatmap student two extra dense targets, features and fused heatmaps.
# * The numbers above are from tiny models after a few minutes of CPU training; the configs in
#   `configs/` (`stud5_rbd.toml`, `stud5_ckd.toml`, `icme_student_kd.toml`) run the papers' settings.

# %%
import shutil

shutil.rmtree(runs_dir)             # checkpoints and exported weights of all runs
print(f"notebook total: {(time.time() - t_start) / 60:.1f} min")
