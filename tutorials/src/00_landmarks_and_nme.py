# %% [markdown]
# # 0. Landmarks, and how they are scored
#
# The other notebooks take apart landmark models. This one says what such a model is for, and how
# its answers are graded, so that the numbers in the other notebooks mean something:
#
# 1. what a **facial landmark** is;
# 2. the three **layouts** used here: 68 points (300W / iBUG), 51 (the inner 68, the ICME 2024
#    challenge), 98 (WFLW);
# 3. the **NME**, normalised by the distance between the outer eye corners;
# 4. what a **good NME** is, and the usual **failure threshold**;
# 5. the **mean-shape baseline**: the score of a "model" that ignores the image. Every NME in these
#    notebooks is shown next to it.
#
# It needs no PyTorch and runs in about a minute. `LMREF_TUTORIAL_SMALL=1` uses 16 faces instead of
# 500 (the test suite does).

# %%
import os
import sys

try:
    import lmref
except ImportError:                         # run from tutorials/ without `pip install -e .`
    sys.path.insert(0, os.path.abspath(".."))
    import lmref

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from lmref import landmarks, metrics, viz
from lmref.evaluate import evaluate
from lmref.data import synthetic
from lmref.detect import resolve_model
from lmref.weights import load_model

SMALL = os.environ.get("LMREF_TUTORIAL_SMALL", "0") == "1"
plt.rcParams.update(viz.NOTEBOOK_RC)        # readable figures on HiDPI screens
np.set_printoptions(precision=3, suppress=True, linewidth=110)


def say(text):
    """Show Markdown written from computed numbers (so the text cannot disagree with them)."""
    display(Markdown(text))

# %% [markdown]
# ## 1. What a landmark is
#
# A facial landmark is a named point of the face: the outer corner of the right eye, the tip of the
# nose, the left corner of the mouth. A landmark model gets a crop around one face and answers N
# points $(x, y)$ in pixels, **always in the same order**: in the 68-point markup point 36 is always
# the outer corner of the subject's right eye. "Right" and "left" are the *subject's*, so the right
# eye is on the left of a frontal photo.
#
# Here is a face from `lmref.data.synthetic`, the project's generator of faces with exact landmarks
# (real annotated datasets cannot be downloaded on the machines this project runs on), with its 68
# points coloured by face part:

# %%
sample = synthetic.generate(seed=7, index=1, split="test", size=256)
gt68 = sample.landmarks                                   # [68, 2] pixel coordinates (x, y), pixel centres at integers
ibug = landmarks.get("ibug68")
print("landmarks", gt68.shape, "  first three:", gt68[:3].round(1).tolist())

fig, ax = plt.subplots(figsize=(8, 5.6), layout="constrained")
viz.show(ax, sample.image, "68 iBUG landmarks, by face part")
for k, (part, idx) in enumerate(ibug.groups.items()):
    ax.scatter(*gt68[list(idx)].T, s=18, color=f"C{k}", label=f"{part} ({len(idx)})", zorder=3)
x0, y0, x1, y1 = sample.box
mid = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
for i in (8, 30, 36, 45, 48, 54):                         # a few points worth knowing by number
    away = (gt68[i] - mid) / np.linalg.norm(gt68[i] - mid)            # label outside the face, with a leader line
    ax.annotate(f"{i}: {ibug.point_names[i]}", gt68[i], xytext=gt68[i] + away * [95, 60], ha="center",
                color="white", fontsize=9, bbox={"fc": "black", "alpha": 0.6, "lw": 0, "pad": 2},
                arrowprops={"arrowstyle": "-", "color": "white", "lw": 0.8})
ax.set_xlim(x0 - 70, x1 + 70)
ax.set_ylim(y1 + 45, y0 - 45)
viz.legend_outside(ax)
plt.show()

# %% [markdown]
# ## 2. Three layouts: 68, 51 and 98 points
#
# Which points a model finds is fixed by the dataset it was trained on. `lmref.landmarks` holds the
# layouts with their point names, parts, boundaries and flip permutations:
#
# * **68 (iBUG / 300W)**, the classic markup above: 17 jaw points, 5 per eyebrow, 9 on the nose, 6
#   per eye, 20 on the lips;
# * **51 (inner)**: the 68 without the 17 jaw points, renumbered 0-50. The ICME 2024 low-power
#   challenge uses it, and so does the shipped `student` model (notebooks 2 and 4);
# * **98 (WFLW)**: a denser markup of the same parts plus the two pupils.
#
# Counted from the layouts themselves:

# %%
parts = ["contour", "right_eyebrow", "left_eyebrow", "nose_bridge", "nose_lower", "right_eye", "left_eye",
         "outer_lip", "inner_lip", "right_pupil", "left_pupil"]
shown = [landmarks.get(n) for n in ("ibug68", "inner51", "wflw98")]
rows = ["| part | " + " | ".join(f"{lay.name} ({lay.num_points})" for lay in shown) + " |",
        "| --- |" + " --- |" * len(shown)]
rows += [f"| {p} | " + " | ".join(str(len(lay.groups.get(p, ()))) for lay in shown) + " |" for p in parts]
rows.append("| outer eye corners (NME normaliser) | " + " | ".join(
    " and ".join(str(i) for i in lay.norm_indices["ocular"]) for lay in shown) + " |")
say("\n".join(rows))

# %% [markdown]
# The synthetic faces carry 68 points. The 51-point layout is a subset of them. For the 98-point
# layout, 90 of its points can be placed from the 68: WFLW's contour has a point between each two
# of iBUG's, each eyelid one more point, and the pupils sit at the eye centres. Its 8 lower-eyebrow
# points have no iBUG counterpart. The cell builds that correspondence from the point names (a
# drawing aid: real WFLW annotations are their own, not interpolated from 68):

# %%
wflw = landmarks.get("wflw98")
inner = landmarks.get("inner51")
gt51 = gt68[list(landmarks.INNER51_FROM_IBUG68)]


def wflw_from_ibug(p68):
    """[68, 2] -> [98, 2] WFLW points, NaN where the 68 say nothing (the lower eyebrow edges)."""
    p98 = np.full((98, 2), np.nan)
    p98[0:33:2] = p68[0:17]                                           # contour: every other point is iBUG's
    p98[1:33:2] = 0.5 * (p68[0:16] + p68[1:17])                       # ... and one in between
    p98[33:38], p98[42:47] = p68[17:22], p68[22:27]                   # upper eyebrow edges
    p98[51:60] = p68[27:36]                                           # nose
    p98[[60, 61, 63, 64, 65, 67]] = p68[36:42]                        # right eye: corners and lids
    p98[[68, 69, 71, 72, 73, 75]] = p68[42:48]                        # left eye
    p98[62], p98[66] = 0.5 * (p68[37] + p68[38]), 0.5 * (p68[40] + p68[41])   # eyelid midpoints
    p98[70], p98[74] = 0.5 * (p68[43] + p68[44]), 0.5 * (p68[46] + p68[47])
    p98[76:96] = p68[48:68]                                           # lips
    p98[96], p98[97] = p68[36:42].mean(0), p68[42:48].mean(0)          # pupils ~ eye centres
    return p98


p98 = wflw_from_ibug(gt68)
placed = ~np.isnan(p98[:, 0])
# the names agree where a point was copied: WFLW 60 is iBUG 36, both 'right_eye_outer'
assert wflw.point_names[60] == ibug.point_names[36] and wflw.point_names[72] == ibug.point_names[45]
fig, axes = plt.subplots(1, 3, figsize=(10.5, 4.0), layout="constrained")
for ax, lay, pts, title in ((axes[0], ibug, gt68, "68 (iBUG / 300W)"), (axes[1], inner, gt51, "51 (inner)"),
                            (axes[2], wflw, p98, f"98 (WFLW): {placed.sum()} placed from the 68")):
    viz.show(ax, sample.image, title)
    ok = ~np.isnan(pts[:, 0])
    viz.landmarks_on(ax, pts[ok], size=7)
    a, b = lay.norm_indices["ocular"]
    ax.plot(*pts[[a, b]].T, "o-", color="red", mfc="none", ms=9, mew=1.5, lw=1.2, label="outer eye corners")
    x0, y0, x1, y1 = sample.box
    ax.set_xlim(x0 - 15, x1 + 15)
    ax.set_ylim(y1 + 15, y0 - 15)
axes[0].legend(loc="lower left")
plt.show()
missing = [wflw.point_names[i] for i in np.flatnonzero(~placed)]
say(f"WFLW's 98 = 68 + {16} contour midpoints + {4} eyelid midpoints + {2} pupils + {len(missing)} "
    f"lower-eyebrow points ({', '.join(missing[:2])}, ...): {68 + 16 + 4 + 2 + len(missing)} points.")

# %% [markdown]
# ## 3. The normalised mean error (NME)
#
# A prediction $\hat p_1 \dots \hat p_N$ is compared with the ground truth $p_1 \dots p_N$ point by
# point. The Euclidean errors are averaged and divided by a length of the face, so that the score
# does not depend on how many pixels the face covers:
#
# $$ \mathrm{NME} = \frac{1}{N} \sum_{k=1}^{N} \frac{\lVert \hat p_k - p_k \rVert_2}{d},
#    \qquad d = \lVert p_{\text{right outer eye corner}} - p_{\text{left outer eye corner}} \rVert_2 $$
#
# This *inter-ocular* normaliser $d$ is measured on the ground truth: iBUG points 36 and 45, inner-51
# points 19 and 28, WFLW 60 and 72. The dataset NME is the mean over faces. Papers usually print it
# in percent (4.96 means 0.0496). Some report the inter-*pupil* distance instead (centres of the
# eyes, which is shorter, so the same errors give a larger NME), so check which one before comparing
# numbers. By hand, for a noisy "prediction", and with `lmref.metrics.nme`:

# %%
rng = np.random.default_rng(0)
pred68 = gt68 + rng.normal(0, 2.5, gt68.shape)                        # a made-up prediction, ~2.5 px off per axis
i, j = ibug.norm_indices["ocular"]                                    # 36, 45
d = np.linalg.norm(gt68[i] - gt68[j])                                 # inter-ocular distance, pixels
err = np.linalg.norm(pred68 - gt68, axis=1)                           # [68] per-point error, pixels
nme_hand = err.mean() / d
nme_lib = metrics.nme(pred68[None], gt68[None], "ibug68")[0]          # [B, N, 2] in, [B] out
print(f"d = {d:.1f} px, mean point error {err.mean():.2f} px -> NME {nme_hand:.4f}  (lmref.metrics.nme: {nme_lib:.4f})")
assert np.isclose(nme_hand, nme_lib)

fig, ax = plt.subplots(figsize=(6.4, 5.0), layout="constrained")
viz.show(ax, sample.image, "per-point errors (red) and the normaliser d (yellow)")
for p, q in zip(gt68, pred68):
    ax.plot([p[0], q[0]], [p[1], q[1]], "-", color="red", lw=1.2)
ax.scatter(*gt68.T, s=8, color="lime", label="ground truth", zorder=3)
ax.scatter(*pred68.T, s=8, color="red", label="prediction", zorder=3)
ax.annotate("", gt68[j], gt68[i], arrowprops={"arrowstyle": "<->", "color": "yellow", "lw": 1.5})
ax.text(*(0.5 * (gt68[i] + gt68[j]) + [0, -6]), f"d = {d:.0f} px", color="yellow", ha="center")
x0, y0, x1, y1 = sample.box
ax.set_xlim(x0 - 10, x1 + 10)
ax.set_ylim(y1 + 10, y0 - 10)
viz.legend_outside(ax)
plt.show()

# %% [markdown]
# ## 4. What is a good NME?
#
# On the real-photo benchmarks the papers behind this project report (Lite-HRNet Plus, Table 1;
# ICME 2024, its validation table), a *good* model scores about **0.04-0.07** (4-7 %): HRNetV2-W18
# 4.99 % on WFLW, the lightweight models 5.6-7.6 % on WFLW and 5.4-7.6 % on the 300W test set, the
# ICME student 4.96 % on its 51 points (validation). Hard faces score worse: the same HRNetV2-W18
# has 8.49 % on WFLW's large-pose subset.
#
# A face whose NME is above a threshold counts as a **failure**. The usual threshold is **0.1**
# (FR@0.1, "failure rate": WFLW and COFW in STAR, every dataset in PIPNet; STAR uses 0.05 for
# 300W). The **CED** curve plots the fraction of faces with NME ≤ x for x from 0 to the
# threshold, and **AUC@0.1** is the area under it divided by 0.1 (1.0 would be perfect).
#
# What do these values look like? The same face with predictions whose NME is exactly 0.02, 0.05,
# 0.1 and 0.2 (random errors, rescaled):

# %%
fig, axes = plt.subplots(1, 4, figsize=(10.5, 3.1), layout="constrained")
noise = rng.normal(0, 1, gt68.shape)
for ax, target in zip(axes, (0.02, 0.05, 0.1, 0.2)):
    unit = metrics.nme((gt68 + noise)[None], gt68[None], "ibug68")[0]
    guess = gt68 + noise * target / unit                              # NME scales linearly with the error
    got = metrics.nme(guess[None], gt68[None], "ibug68")[0]
    viz.show(ax, sample.image, f"NME {got:.2f} ({got * d:.1f} px / point)")
    ax.scatter(*gt68.T, s=5, color="lime")
    ax.scatter(*guess.T, s=5, color="red")
    x0, y0, x1, y1 = sample.box
    ax.set_xlim(x0 - 10, x1 + 10)
    ax.set_ylim(y1 + 10, y0 - 10)
plt.show()
say(f"On this face the eye corners are {d:.0f} px apart, so NME 0.05 means the points are off by "
    f"{0.05 * d:.1f} px on average and the failure threshold 0.1 by {0.1 * d:.1f} px.")

# %% [markdown]
# ## 5. The mean-shape baseline
#
# The simplest landmark "model" ignores the pixels: it answers the **average face**, placed in the
# face box it is given. Any trained model is given the same box, so it has to beat this to have
# learned anything from the image. In the other notebooks every NME is printed next to this one.
#
# By hand: express every face in units of its own landmark box (box centre at 0, longer side 1),
# average, and put the average back into each face's box. Each face here is predicted from the
# average of the *other* faces (leave-one-out), so no face helps to predict itself. The faces are
# the first 500 of the synthetic test split: `litehrnet_plus` was scored on these 500, the student
# and `stud5` on the first 2,000 (the same faces and more; see `lmref models`).

# %%
test = synthetic.load_split("test", n=16 if SMALL else 500, size=64 if SMALL else 128)
P = test.landmarks.astype(np.float64)                                 # [B, 68, 2]
lo, hi = P.min(1), P.max(1)                                           # landmark boxes [B, 2] each
centre, side = (lo + hi) / 2, (hi - lo).max(1)                        # [B, 2], [B]
unit = (P - centre[:, None]) / side[:, None, None]                    # [B, 68, 2] in box units
mean_others = (unit.sum(0) - unit) / (len(P) - 1)                     # leave-one-out average face
guess = centre[:, None] + mean_others * side[:, None, None]           # back into each face's box
base68 = metrics.nme(guess, P, "ibug68")
assert np.allclose(guess, metrics.mean_shape_prediction(P))           # the library function does the same
inner_idx = list(landmarks.INNER51_FROM_IBUG68)
base51 = metrics.nme(guess[:, inner_idx], P[:, inner_idx], "inner51")  # the same guess, scored on 51 points

fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained", gridspec_kw={"width_ratios": [1, 1.25]})
axes[0].scatter(*unit.reshape(-1, 2).T, s=1, color="gray", alpha=0.15, label=f"{len(P)} faces")
viz.landmarks_on(axes[0], metrics.mean_shape(P), ibug, color="C3", size=10, edge_color="C3", label="average face")
axes[0].set_xlim(-0.6, 0.6)
axes[0].set_ylim(0.6, -0.6)
axes[0].set_aspect("equal")
axes[0].set_title("faces in landmark-box units")
axes[0].legend(loc="lower left", markerscale=3)
viz.show(axes[1], sample.image, "the average face in this face's box")
axes[1].scatter(*gt68.T, s=8, color="lime", label="ground truth")
axes[1].scatter(*metrics.mean_shape_prediction(gt68[None], P)[0].T, s=8, color="C3", label="mean shape")
viz.legend_outside(axes[1])
plt.show()
say(f"Mean-shape baseline on these {len(P)} faces: NME **{base68.mean():.3f}** on 68 points, "
    f"**{base51.mean():.3f}** on the inner 51 (FR@0.1 {metrics.fr_auc(base68)[0]:.0%} and "
    f"{metrics.fr_auc(base51)[0]:.0%}). That is {base68.mean() / 0.05:.0f} times a good real-photo NME: "
    f"faces differ a lot in pose and expression.")

# %% [markdown]
# ### The shipped models against the baseline
#
# Each shipped model's manifest records its NME on these test faces; the student is also re-run
# here on some of them (`lmref.evaluate.evaluate`, the Python side of `lmref eval`, cropping each face
# around its ground-truth landmark box) to draw its CED curve next to the baseline's.

# %%
rows = ["| model | layout | test NME (manifest) | mean shape, same points | ratio | FR@0.1 | mean shape FR@0.1 |",
        "| --- | --- | --- | --- | --- | --- | --- |"]
for name in ("student", "stud5", "litehrnet_plus"):
    m = load_model(resolve_model(name))
    test_nme = m.manifest["training"]["test"]["nme"]
    base = base51 if m.manifest["layout"] == "inner51" else base68
    rows.append(f"| `{name}` | {m.manifest['layout']} | {test_nme:.3f} | {base.mean():.3f} | "
                f"{test_nme / base.mean():.2f} | {m.manifest['training']['test']['fr_0.1']:.0%} | "
                f"{metrics.fr_auc(base)[0]:.0%} |")
say("\n".join(rows))

n_run = 8 if SMALL else 100
res = evaluate("student", test.root, boxes="gt", limit=n_run)
assert [os.path.splitext(os.path.basename(n))[0] for n in res["names"]] == test.names[:n_run]   # same faces, same order
student = load_model(resolve_model("student"))
n_params = sum(v.size for k, v in lmref.weights.flatten(student.params).items()
               if not k.endswith(("running_mean", "running_var")))
fig, ax = plt.subplots(figsize=(8, 4.4), layout="constrained")
scores = viz.ced_plot(ax, {"student (51 points)": res["nmes"], "mean shape (51 points)": base51[:n_run]},
                      thr=0.3, step=1e-3, styles={"mean shape (51 points)": {"ls": "--", "color": "gray"}})
ax.axvline(0.1, color="C3", lw=0.8, ls=":")
ax.text(0.102, 0.03, "usual failure threshold", color="C3")
ax.set_title(f"CED on the first {n_run} test faces, drawn to 0.3")
viz.legend_outside(ax, side="below", ncol=1)
plt.show()
ok = np.mean(np.asarray(res["nmes"]) <= 0.1)
say(f"On these {n_run} faces the student scores NME {res['nme']:.3f} against the mean shape's "
    f"{base51[:n_run].mean():.3f}: it has learned a lot from the pixels, and {ok:.0%} of the faces are below "
    f"the 0.1 failure threshold. These are synthetic faces like the ones it was trained on: a "
    f"{n_params / 1e6:.2f} M-parameter network trained from scratch for "
    f"{student.manifest['training']['config']['epochs']} epochs of synthetic faces on a CPU is a teaching model; "
    f"on real photographs it does worse (the README's real-photo check).")

# %% [markdown]
# ## Summary
#
# * A landmark model answers N named points in a fixed order: 68 (iBUG / 300W), 51 (the inner 68)
#   or 98 (WFLW), each with its own indices for the same eye corners.
# * NME = mean point error / inter-ocular distance (outer eye corners, measured on the ground
#   truth). Good models on real photos score 0.04-0.07; a face above 0.1 is usually a failure.
# * The mean-shape baseline, the average face put in the face box, scores far worse (its numbers
#   are above). An NME means little without it, so the next notebooks print both.
#
# ### Try this
#
# * Score the noisy prediction of section 3 with `norm="pupil"` (the eye centres) instead of the
#   outer corners. Which is larger, and why?
# * Compute the mean-shape baseline on the `test_pose` split only
#   (`synthetic.load_split("test_pose", n=500, size=128)`). Are large poses harder for the baseline?
# * Move all 68 predicted points by the same 3 pixels to the right. What NME does that give, and
#   what would it be on a face twice as large?
#
# **Next:** notebook 1 builds the ops inside landmark networks from scratch.
