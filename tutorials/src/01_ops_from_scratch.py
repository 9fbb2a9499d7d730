# %% [markdown]
# # 1. Ops from scratch
#
# A landmark network is a few dozen kinds of array operation applied in a fixed order. `lmref`
# writes each of them once, in NumPy, in `lmref/ops/`. This notebook rebuilds five of them by hand,
# step by step, checks each against PyTorch, and shows what the shapes and numbers look like:
#
# 1. **convolution** as *im2col* + one matrix product,
# 2. **depthwise convolution** (the `groups` argument),
# 3. **group norm with one group** (MobileViT-v2's "LayerNorm2d", which is *not* a LayerNorm over channels),
# 4. **unfold / fold** of MobileViT-v2, and why `lmref` carries a second, *rank-≤5* version of it,
# 5. MobileViT-v2's **separable self-attention**: qkv split, softmax over patches, context vector.
#
# Stages are numbered from 0, as in the weights and in notebook 2: `backbone.stages.2` is the first
# stage with attention. Notebook 0 explains what a landmark model answers and how it is scored.
#
# Everything runs in a few seconds on a laptop CPU. Set `LMREF_TUTORIAL_SMALL=1` to run the final
# randomised check on fewer cases (the test suite does).

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
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

from lmref import ops, viz

SMALL = os.environ.get("LMREF_TUTORIAL_SMALL", "0") == "1"
plt.rcParams.update(viz.NOTEBOOK_RC)   # figure and text sizes readable on HiDPI screens
rng = np.random.default_rng(0)
torch.manual_seed(0)
torch.set_num_threads(1)      # tensors here are tiny: starting threads would cost more than it saves
np.set_printoptions(precision=4, suppress=True, linewidth=110)


def max_err(a, b):
    """Largest absolute difference between a NumPy array and a torch tensor (or two arrays)."""
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else b
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


t = torch.from_numpy          # NumPy -> torch without copying (same dtype)


def say(text):
    """Show Markdown written from computed numbers (so the text cannot disagree with them)."""
    display(Markdown(text))

# %% [markdown]
# ## 1. Convolution = im2col + matmul
#
# A 2-D convolution (strictly: cross-correlation, which is what every deep-learning framework
# computes) with weight $W \in \mathbb{R}^{C_{out} \times C_{in} \times k_h \times k_w}$ is
#
# $$y[o, y, x] = b_o + \sum_{c,i,j} W[o,c,i,j]\; x_{pad}[c,\; y s_h + i d_h,\; x s_w + j d_w].$$
#
# *im2col* reorganises the sum: for every kernel tap $(i, j)$ take the shifted, strided view of the
# padded input, and stack all $C_{in} k_h k_w$ of them as the rows of a matrix whose columns are the
# output pixels. The convolution is then **one matrix product** of the flattened filters
# $[C_{out}, C_{in} k_h k_w]$ with that matrix $[C_{in} k_h k_w, H_o W_o]$.
#
# Here is the whole thing in eight lines, for one image (batch 1), no groups:

# %%
def im2col(x, kh, kw, stride=1, padding=0):
    """x [C, H, W] -> columns [C*kh*kw, Ho*Wo]; row (c, i, j), column (y, x) = x_pad[c, y*s + i, x*s + j]."""
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))     # [C, H, W] -> [C, Hp, Wp]
    C, Hp, Wp = x.shape
    Ho, Wo = (Hp - kh) // stride + 1, (Wp - kw) // stride + 1
    rows = [x[:, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]   # [C, Ho, Wo]
            for i in range(kh) for j in range(kw)]
    cols = np.stack(rows, axis=1)                                        # [C, kh*kw, Ho, Wo]
    return cols.reshape(C * kh * kw, Ho * Wo), (Ho, Wo)


def conv2d_by_hand(x, w, b, stride=1, padding=0):
    """x [C, H, W], w [O, C, kh, kw], b [O] -> [O, Ho, Wo]."""
    O, C, kh, kw = w.shape
    cols, (Ho, Wo) = im2col(x, kh, kw, stride, padding)                 # [C*kh*kw, Ho*Wo]
    y = w.reshape(O, C * kh * kw) @ cols + b[:, None]                    # [O, C*kh*kw] @ [C*kh*kw, Ho*Wo]
    return y.reshape(O, Ho, Wo)


x = rng.standard_normal((3, 9, 11))            # C=3, H=9, W=11 (float64)
w = rng.standard_normal((4, 3, 3, 3))          # O=4 filters of 3x3 over 3 channels
b = rng.standard_normal(4)

y_hand = conv2d_by_hand(x, w, b, stride=2, padding=1)
y_lmref = ops.conv2d(x[None], w, b, stride=2, padding=1)[0]
y_torch = F.conv2d(t(x[None]), t(w), t(b), stride=2, padding=1)[0]
print("output shape", y_hand.shape)
print(f"by hand vs torch: {max_err(y_hand, y_torch):.2e}    lmref.ops.conv2d vs torch: {max_err(y_lmref, y_torch):.2e}")

# %% [markdown]
# What the column matrix looks like: a 5×5 single-channel image holding its own pixel indices,
# a 3×3 kernel, no padding. Each of the 9 output pixels is a column holding the 9 input pixels
# under the kernel; each row is one kernel tap, i.e. one shifted copy of the image.

# %%
img = np.arange(25, dtype=np.float64).reshape(1, 5, 5)
cols, (Ho, Wo) = im2col(img, 3, 3)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained", gridspec_kw={"width_ratios": [1, 1.6]})
im = viz.show(axes[0], img[0], "input 5x5 (red: first 3x3 window)", cmap="viridis", vmin=0, vmax=24)
viz.annotate_cells(axes[0], img[0].astype(int), "{:d}", im=im, fontsize=10)
axes[0].add_patch(plt.Rectangle((-0.5, -0.5), 3, 3, fill=False, ec="r", lw=2))
im = viz.show(axes[1], cols, f"im2col matrix [{cols.shape[0]}, {cols.shape[1]}]", cmap="viridis", vmin=0, vmax=24,
              cbar="input pixel index", ticks=True, aspect="auto")
viz.annotate_cells(axes[1], cols.astype(int), "{:d}", im=im, fontsize=9)
axes[1].add_patch(plt.Rectangle((-0.5, -0.5), 1, 9, fill=False, ec="r", lw=2))
axes[1].set_xlabel("output pixel (y*Wo + x)")
axes[1].set_ylabel("kernel tap (i*kw + j)")
plt.show()

# %% [markdown]
# `lmref.ops.conv2d` is exactly this, extended to a batch, dilation, `padding="same"` and groups
# (`lmref/ops/conv.py`, `_im2col`). The price of the simplicity is memory: the column matrix is
# $k_h k_w$ times larger than the input. For a 3×3 convolution on a 64-channel 64×64 map:

# %%
big_cols, _ = im2col(np.zeros((64, 64, 64)), 3, 3, padding=1)
say(f"the column matrix is {big_cols.shape[0]:,} × {big_cols.shape[1]:,} = **{big_cols.size / 1e6:.1f} M entries** "
    f"({big_cols.size // (64 * 64 * 64)} times the input): fine for a reference implementation, and the reason fast "
    f"libraries avoid materialising it.")

# %% [markdown]
# ## 2. Depthwise convolution
#
# `groups=G` splits the input and output channels into G independent convolutions. With
# `groups = C_in = C_out` each filter sees only its own channel: the **depthwise** convolution
# of MobileNet-style blocks (MobileViT-v2's MV2 blocks and its local representation use 3×3
# depthwise convs). The weight has shape `[C, 1, k, k]`.
#
# By hand: one tiny convolution per channel.

# %%
C = 6
x = rng.standard_normal((C, 10, 10))
w_dw = rng.standard_normal((C, 1, 3, 3))
b_dw = rng.standard_normal(C)

y_hand = np.stack([conv2d_by_hand(x[c:c + 1], w_dw[c:c + 1], b_dw[c:c + 1], padding=1)[0]
                   for c in range(C)])                                    # C x ([1, H, W] conv [1, 1, 3, 3])
y_lmref = ops.conv2d(x[None], w_dw, b_dw, padding=1, groups=C)[0]
y_torch = F.conv2d(t(x[None]), t(w_dw), t(b_dw), padding=1, groups=C)[0]
print(f"by hand vs torch: {max_err(y_hand, y_torch):.2e}    lmref vs torch: {max_err(y_lmref, y_torch):.2e}")

# %% [markdown]
# In im2col form a grouped convolution is a *block-diagonal* matrix product: the flattened weight
# of a dense conv is a full `[C_out, C_in·k·k]` matrix, a grouped conv fills only G blocks of it.
# That is where the saving comes from:

# %%
def dense_equivalent(w, groups):
    """Grouped weight [O, C/G, k, k] -> the dense [O, C*k*k] matrix it acts as (zeros off the groups)."""
    O, Cg, kh, kw = w.shape
    Og = O // groups
    full = np.zeros((O, Cg * groups, kh, kw))
    for g in range(groups):
        full[g * Og:(g + 1) * Og, g * Cg:(g + 1) * Cg] = w[g * Og:(g + 1) * Og]
    return full.reshape(O, -1)


fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.0), layout="constrained")
for ax, G in zip(axes, (1, 2, C)):
    w_g = rng.standard_normal((C, C // G, 3, 3))
    dense = dense_equivalent(w_g, G)
    # the claim: a grouped conv equals a dense conv with this block-diagonal weight
    err = max_err(ops.conv2d(x[None], w_g, padding=1, groups=G),
                  ops.conv2d(x[None], dense.reshape(C, C, 3, 3), padding=1))
    # a bool map drawn with vmin=0, vmax=1 (viz.show): the all-True dense matrix of groups=1 is black,
    # where imshow's autoscale would map a constant array to white and draw an empty panel
    im = viz.show(ax, dense != 0, f"groups={G}: {w_g.size} weights\n(dense-equal err {err:.0e})",
                  cmap="Greys", ticks=True, aspect="auto")
    ax.set_xlabel("input (channel, tap)")
    ax.set_ylabel("output channel")
cb = viz.colorbar(axes[-1], im, ticks=[0, 1])
cb.set_ticklabels(["zero", "weight"])
plt.show()

H = W = 64
for name, G in (("dense 3x3", 1), ("depthwise 3x3", 64)):
    params = 64 * (64 // G) * 9
    print(f"{name:14s} 64 -> 64 channels on {H}x{W}: {params:6d} weights, {params * H * W / 1e6:6.2f} M MACs")

# %% [markdown]
# ## 3. Group norm with one group
#
# MobileViT-v2 normalises its transformer inputs with `GroupNorm(num_groups=1)` — cvnets calls it
# `layer_norm_2d`, timm `GroupNorm1`. The name is misleading: with one group the mean and the
# variance are taken **per sample over all of C×H×W at once**, then a per-channel scale and shift
# are applied. A `LayerNorm` over the channel axis alone would normalise every pixel separately.
#
# $$ \mu = \frac{1}{CHW}\sum_{c,h,w} x_{c,h,w},\quad
#    \sigma^2 = \frac{1}{CHW}\sum (x-\mu)^2,\quad
#    y_{c,h,w} = \gamma_c \frac{x_{c,h,w}-\mu}{\sqrt{\sigma^2+\epsilon}} + \beta_c $$
#
# (biased variance, $\epsilon$ inside the square root — torch's convention for every norm).

# %%
x = rng.standard_normal((2, 8, 5, 7)) * 3 + 1          # [B, C, H, W]
gamma, beta = rng.standard_normal(8), rng.standard_normal(8)
eps = 1e-5

mu = x.mean(axis=(1, 2, 3), keepdims=True)                            # [B, 1, 1, 1]: one mean per sample
var = ((x - mu) ** 2).mean(axis=(1, 2, 3), keepdims=True)            # biased variance
y_hand = (x - mu) / np.sqrt(var + eps) * gamma[:, None, None] + beta[:, None, None]

y_torch = F.group_norm(t(x), 1, t(gamma), t(beta), eps=eps)
y_lmref = ops.group_norm(x, 1, gamma, beta, eps=eps)
print(f"by hand vs torch: {max_err(y_hand, y_torch):.2e}    lmref vs torch: {max_err(y_lmref, y_torch):.2e}")

# the "LayerNorm over channels" reading gives different numbers:
x_cl = x.transpose(0, 2, 3, 1)                                        # [B, H, W, C]
y_ln = ops.layer_norm(x_cl, 8, gamma, beta, eps=eps).transpose(0, 3, 1, 2)
print(f"group_norm(1 group) vs layer_norm over C: max difference {max_err(y_lmref, y_ln):.2f}")

# %% [markdown]
# With one group the per-pixel channel means stay spread out (only their overall average is
# removed); a LayerNorm over C would force each of them to zero:

# %%
plain = ops.group_norm(x, 1)        # no affine, to look at the normalisation alone
fig, axes = plt.subplots(1, 3, figsize=(10, 2.8), layout="constrained")
for ax, (title, a) in zip(axes, [("input", x), ("group_norm, 1 group", plain),
                                 ("layer_norm over C", ops.layer_norm(x_cl, 8).transpose(0, 3, 1, 2))]):
    im = viz.show(ax, a[0].mean(axis=0), f"{title}\nper-pixel mean over C", cmap="coolwarm", vmin=-1.5, vmax=2.5)
fig.colorbar(im, ax=axes, shrink=0.9, label="mean over channels")
plt.show()

# %% [markdown]
# ## 4. Unfold / fold, and the rank-≤5 rewrite
#
# MobileViT-v2 runs its attention on **patches**. A feature map `[B, C, H, W]` is cut into
# non-overlapping 2×2 patches and rearranged to `[B, C, P, N]`: P = 4 pixel positions inside a
# patch, N = (H/2)(W/2) patches. Attention then mixes information *across patches* (the N axis),
# separately for each of the P in-patch positions.
#
# The layout (timm and cvnets agree): pixel (i, j) of patch (a, b) goes to
# `p = i·pw + j`, `n = a·(W/pw) + b`. timm writes it as one reshape to 6-D, a 6-D permute, and a
# reshape back:

# %%
def unfold_6d(x, ph, pw):
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // ph, ph, W // pw, pw)          # [B, C, nh, ph, nw, pw]   <- rank 6
    x = x.transpose(0, 1, 3, 5, 2, 4)                      # [B, C, ph, pw, nh, nw]   <- 6-D permute
    return x.reshape(B, C, ph * pw, (H // ph) * (W // pw))  # [B, C, P, N]


x = np.arange(64, dtype=np.float64).reshape(1, 1, 8, 8)    # every pixel holds its own index
patches = unfold_6d(x, 2, 2)
print("patches", patches.shape)
print(patches[0, 0])

# torch's F.unfold with kernel = stride = patch size is the same thing (cvnets' default path)
ref = F.unfold(t(x), kernel_size=2, stride=2).reshape(1, 1, 4, 16)
print(f"6-D reshape/permute vs torch F.unfold: {max_err(patches, ref):.1e};  "
      f"lmref.ops.unfold_patches vs F.unfold: {max_err(ops.unfold_patches(x, 2, 2), ref):.1e}")
back = ops.fold_patches(patches, 8, 8, 2, 2)
ref_back = F.fold(t(patches).reshape(1, 4, 16), output_size=(8, 8), kernel_size=2, stride=2)
print(f"fold_patches vs F.fold: {max_err(back, ref_back):.1e};  fold(unfold(x)) == x: {np.array_equal(back, x)}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.6), layout="constrained", gridspec_kw={"width_ratios": [1, 2.2]})
im = viz.show(axes[0], x[0, 0], "8x8 map, 2x2 patches", cmap="viridis", vmin=0, vmax=63)
viz.annotate_cells(axes[0], x[0, 0].astype(int), "{:d}", im=im)
for k in range(1, 4):
    axes[0].axhline(2 * k - 0.5, color="r", lw=1.5)
    axes[0].axvline(2 * k - 0.5, color="r", lw=1.5)
im = viz.show(axes[1], patches[0, 0], "unfolded [P=4, N=16]", cmap="viridis", vmin=0, vmax=63,
              cbar="pixel index (row*8 + col)", ticks=True, aspect="auto")
viz.annotate_cells(axes[1], patches[0, 0].astype(int), "{:d}", im=im)
axes[1].set_xticks(range(16))
axes[1].set_yticks(range(4))
axes[1].set_xlabel("patch n = a*(W/pw) + b")
axes[1].set_ylabel("pixel in patch p = i*pw + j")
plt.show()

# %% [markdown]
# ### Why a rank-≤5 version exists
#
# The ICME 2024 low-power landmark entry had to run its MobileViT-v2 student under
# **tflite-runtime ≤ 2.11**, whose TRANSPOSE kernel supports at most 5 dimensions. The 6-D
# permute above does not convert. The paper (§2.2.2) splits the 6-D tensor along one axis,
# squeezes each slice to 5-D, permutes it there with `permute(0, 1, 3, 2, 4)`, unsqueezes and
# concatenates.
#
# `lmref.ops.unfold_patches(x, ph, pw, rank5=True)` arranges the same recipe so that *no*
# intermediate tensor has rank above 5 — not even after a reshape — and produces the same numbers
# bit for bit (it only moves data). Every intermediate passes through `_rank5`, a checkpoint
# function, so we can wrap it and record the shapes both paths go through:

# %%
import lmref.ops.patches as patches_mod

seen = []
original_checkpoint = patches_mod._rank5
patches_mod._rank5 = lambda a: seen.append(a.shape) or original_checkpoint(a)
try:
    x = rng.standard_normal((2, 3, 8, 12))
    p5 = ops.unfold_patches(x, 2, 2, rank5=True)
finally:
    patches_mod._rank5 = original_checkpoint

print("rank-5 path, distinct intermediate shapes:")
for s in dict.fromkeys(seen):
    print(f"  rank {len(s)}  {s}")
print("max rank:", max(len(s) for s in seen))
Bx, Cx, Hx, Wx = x.shape
print("the 6-D path reshapes to", (Bx, Cx, Hx // 2, 2, Wx // 2, 2), "(rank 6)")
print("identical to the 6-D path:", np.array_equal(p5, ops.unfold_patches(x, 2, 2)))
print("fold rank5 inverts it:    ", np.array_equal(ops.fold_patches(p5, 8, 12, 2, 2, rank5=True), x))

# %% [markdown]
# The price is a Python loop over `pw` slices and a concatenation — on a TFLite graph, a handful
# of extra SPLIT/CONCAT nodes. The numbers do not change, so the same weights work on either path
# (`torch_impl`'s MobileViT-v2 has the same switch, `set_rank5_patches(True)`, for export).

# %% [markdown]
# ## 5. Separable self-attention, step by step
#
# Standard self-attention compares every token with every other token: cost $O(N^2 d)$.
# MobileViT-v2 (Mehta & Rastegari 2022, "Separable self-attention for mobile vision transformers")
# replaces the $N \times N$ matrix by a single **context vector**:
#
# 1. one 1×1 conv maps $d$ channels to $1 + 2d$: a scalar *query* $I$ per token, keys $K$, values $V$;
# 2. **context scores** $c_s = \mathrm{softmax}_N(I)$: a probability distribution over the N patches
#    (separately for each in-patch position p);
# 3. **context vector** $c_v = \sum_n c_s[n]\, K[:, n]$ — one d-vector per p, a score-weighted average of the keys;
# 4. output $= W_o\,(\mathrm{ReLU}(V) \odot c_v) + b_o$: every token's value, gated by the shared context.
#
# Everything is linear in N. To *see* the softmax over patches, build a toy "face", turn it into
# d = 8 feature channels with our own conv2d, unfold it, and give the query a weight that reads
# the darkness of a patch: the scores become a soft spotlight on the dark features.

# %%
def toy_face(n=32):
    """A bright ellipse with two dark eyes and a dark mouth, values in [0, 1]."""
    yy, xx = np.mgrid[0:n, 0:n] / (n - 1) * 2 - 1                   # [-1, 1] grid
    img = 0.15 + 0.7 * ((xx / 0.75) ** 2 + (yy / 0.95) ** 2 < 1)
    for cx in (-0.33, 0.33):                                          # eyes
        img[(xx - cx) ** 2 + (yy + 0.25) ** 2 < 0.012] = 0.05
    img[(np.abs(xx) < 0.3) & (np.abs(yy - 0.45) < 0.05)] = 0.1         # mouth
    return img


d, ph, pw = 8, 2, 2
face = toy_face()
feat = np.concatenate([face[None, None],                              # channel 0: the intensity itself
                       ops.conv2d(face[None, None], rng.standard_normal((d - 1, 1, 3, 3)) * 0.3, padding=1)],
                      axis=1)                                         # [1, d, 32, 32]
xp = ops.unfold_patches(feat, ph, pw)                                 # [1, d, P=4, N=256]
B, _, P, N = xp.shape

# weights: query = -12 * (channel 0) + 6  ("darkness"), keys and values = identity, out_proj = identity
qkv_w = np.zeros((1 + 2 * d, d))
qkv_w[0, 0] = -12.0
qkv_b = np.zeros(1 + 2 * d)
qkv_b[0] = 6.0
qkv_w[1:1 + d] = np.eye(d)
qkv_w[1 + d:] = np.eye(d)
out_w, out_b = np.eye(d), np.zeros(d)

# step 1: qkv projection (a 1x1 conv is a matrix product over the channel axis) and split [1, d, d]
qkv = np.einsum("oc,bcpn->bopn", qkv_w, xp) + qkv_b[:, None, None]     # [1, 1+2d, P, N]
I, K, V = qkv[:, :1], qkv[:, 1:1 + d], qkv[:, 1 + d:]                  # [1,1,P,N] [1,d,P,N] [1,d,P,N]
# step 2: context scores, softmax over the patches N
e = np.exp(I - I.max(axis=-1, keepdims=True))
c_s = e / e.sum(axis=-1, keepdims=True)                               # [1, 1, P, N], sums to 1 over N
# step 3: context vector, score-weighted sum of the keys
c_v = (K * c_s).sum(axis=-1, keepdims=True)                           # [1, d, P, 1]
# step 4: gate the values and project
y_hand = np.einsum("oc,bcpn->bopn", out_w, np.maximum(V, 0) * c_v) + out_b[:, None, None]   # [1, d, P, N]

for name, a in [("qkv", qkv), ("I", I), ("K", K), ("V", V), ("c_s", c_s), ("c_v", c_v), ("y", y_hand)]:
    print(f"{name:4s} {list(a.shape)}")
print("scores sum to 1 over N:", np.allclose(c_s.sum(-1), 1))

y_lmref = ops.separable_self_attention(xp, qkv_w[:, :, None, None], qkv_b, out_w[:, :, None, None], out_b)
print(f"by hand vs lmref.ops.separable_self_attention: {max_err(y_hand, y_lmref):.1e}")

# %%
nh, nw = face.shape[0] // ph, face.shape[1] // pw
fig, axes = plt.subplots(1, 1 + P, figsize=(10.5, 2.6), layout="constrained")
viz.show(axes[0], face, "toy face (channel 0)", cmap="gray", vmin=0, vmax=1)
top = c_s.max()
for p in range(P):
    im = viz.show(axes[1 + p], c_s[0, 0, p].reshape(nh, nw), f"c_s, p = {p} (i={p // pw}, j={p % pw})",
                  cmap="magma", vmin=0, vmax=top)                      # N = nh*nw, row-major; one scale for all
fig.colorbar(im, ax=axes[1:], shrink=0.9, label="c_s (sums to 1 per p)")
plt.show()
print("context vector c_v for p = 0 (what every token of that position is gated with):")
print(c_v[0, :, 0, 0])
v = xp[0, 0]                                                           # [P, N] intensity of each token
kinds = {"eyes and mouth": v < 0.125, "background": (v > 0.125) & (v < 0.5), "bright face": v > 0.5}
share = {k: (m.mean(), (c_s[0, 0] * m).sum(-1).mean()) for k, m in kinds.items()}   # (token share, score mass)
say("Share of the tokens and of the score mass (mean over p): " + "; ".join(
    f"{k} {t:.0%} of the tokens, **{s:.1%}** of the mass" for k, (t, s) in share.items()) +
    f". A dark token outweighs a bright one by far, and the darkest (eyes, mouth) weigh "
    f"{share['eyes and mouth'][1] / share['eyes and mouth'][0] / (share['background'][1] / share['background'][0]):.1f} "
    f"times a background token each. The context vector is this weighted average of the features. "
    f"Each in-patch position p has its own distribution because each sees a different quarter of every patch.")

# %% [markdown]
# Now the check against PyTorch with random weights — `torch_impl`'s `LinearSelfAttention` module
# (the training-side twin, same state-dict keys as timm's) — in float64 and float32:

# %%
from torch_impl.models.mobilevitv2 import LinearSelfAttention

attn = LinearSelfAttention(d).double().eval()
sd = {k: v.numpy() for k, v in attn.state_dict().items()}
x = rng.standard_normal((2, d, 4, 64))
for dtype in (np.float64, np.float32):
    mod = attn.to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        ref = mod(torch.from_numpy(x.astype(dtype)))
    got = ops.separable_self_attention(x.astype(dtype), *(sd[k].astype(dtype) for k in
                                       ("qkv_proj.weight", "qkv_proj.bias", "out_proj.weight", "out_proj.bias")))
    print(f"{np.dtype(dtype).name}: max |lmref - torch| = {max_err(got, ref):.1e}  (relative to max |y| = {np.abs(got).max():.2f})")

# %% [markdown]
# ### What "linear in N" buys
#
# Multiply-accumulates of one attention layer on N tokens of width d (projections included):
# standard single-head self-attention needs $4Nd^2 + 2N^2 d$, the separable version
# $N d (1 + 2d) + 2 N d + N d^2$. For d and N, take the first attention stage of the shipped student
# (MobileViT-v2 ×0.5), `backbone.stages.2`, at 1/8 of the input resolution with 2×2 patches:

# %%
from lmref.detect import resolve_model
from lmref.weights import load_model

student = load_model(resolve_model("student"))
qkv = student.params["backbone"]["stages"]["2"]["1"]["transformer"]["0"]["attn"]["qkv_proj"]["weight"]
d = qkv.shape[1]                                                       # [1 + 2d, d, 1, 1]
N_256 = (256 // 8 // 2) ** 2                                           # tokens per in-patch position at 256x256
say(f"`backbone.stages.2` attends over **d = {d}** channels; at 256×256 input its map is {256 // 8}×{256 // 8}, "
    f"so **N = {N_256}** tokens per in-patch position. The quadratic term takes over quickly beyond that.")
Ns = np.array([16, 64, 256, 1024, 4096])
mhsa = 4 * Ns * d * d + 2 * Ns ** 2 * d
sep = Ns * d * (1 + 2 * d) + 2 * Ns * d + Ns * d * d
fig, ax = plt.subplots(figsize=(8.5, 3.6), layout="constrained")
ax.loglog(Ns, mhsa / 1e6, "o-", label="self-attention  $4Nd^2 + 2N^2d$")
ax.loglog(Ns, sep / 1e6, "s-", label="separable  $\\approx 3Nd^2$")
ax.axvline(N_256, color="gray", ls=":", lw=1)
ax.text(N_256 * 1.06, mhsa.max() / 1e6 / 3, "stages.2 at 256 px", color="gray")
ax.set_xlabel("tokens N")
ax.set_ylabel(f"M MACs per layer (d = {d})")
viz.legend_outside(ax)
ax.grid(True, which="both", alpha=0.3)
plt.show()
for n, a, s in zip(Ns, mhsa, sep):
    print(f"N={n:5d}: self-attention {a / 1e6:8.1f} M, separable {s / 1e6:7.1f} M  ({a / s:4.1f}x)")

# %% [markdown]
# ## 6. All five against torch, over random shapes
#
# The property tests in `tests/test_ops_*.py` do this with hypothesis; here is a compact version:
# random shapes, strides, paddings and groups, each op in float64 and float32, the worst relative
# error over all cases.

# %%
cases = 25 if SMALL else 200
worst = {}


def record(name, dtype, got, ref):
    ref = ref.detach().numpy()
    rel = np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30)
    key = (name, np.dtype(dtype).name)
    worst[key] = max(worst.get(key, 0.0), float(rel))


for _ in range(cases):
    for dtype in (np.float64, np.float32):
        B, G = int(rng.integers(1, 3)), int(rng.integers(1, 4))
        C, O = G * int(rng.integers(1, 4)), G * int(rng.integers(1, 4))
        k, s, p = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(0, 2))
        H, W = int(rng.integers(k, 12)), int(rng.integers(k, 12))
        x = rng.standard_normal((B, C, H, W)).astype(dtype)
        w = rng.standard_normal((O, C // G, k, k)).astype(dtype)
        b = rng.standard_normal(O).astype(dtype)
        record("conv2d", dtype, ops.conv2d(x, w, b, stride=s, padding=p, groups=G),
               F.conv2d(t(x), t(w), t(b), stride=s, padding=p, groups=G))
        wd = rng.standard_normal((C, 1, 3, 3)).astype(dtype)
        record("depthwise conv2d", dtype, ops.conv2d(x, wd, stride=s, padding=1, groups=C),
               F.conv2d(t(x), t(wd), stride=s, padding=1, groups=C))
        g, bb = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
        record("group_norm(1)", dtype, ops.group_norm(x, 1, g, bb), F.group_norm(t(x), 1, t(g), t(bb)))
        ph, pw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        xu = rng.standard_normal((B, C, ph * int(rng.integers(1, 5)), pw * int(rng.integers(1, 5)))).astype(dtype)
        Hu, Wu = xu.shape[2:]
        ref = F.unfold(t(xu), (ph, pw), stride=(ph, pw)).reshape(B, C, ph * pw, -1)
        record("unfold (6-D)", dtype, ops.unfold_patches(xu, ph, pw), ref)
        record("unfold (rank 5)", dtype, ops.unfold_patches(xu, ph, pw, rank5=True), ref)
        record("fold (rank 5)", dtype, ops.fold_patches(ref.numpy(), Hu, Wu, ph, pw, rank5=True),
               F.fold(ref.reshape(B, C * ph * pw, -1), (Hu, Wu), (ph, pw), stride=(ph, pw)))
        da = C
        mod = LinearSelfAttention(da).to(torch.float64 if dtype == np.float64 else torch.float32)
        xa = rng.standard_normal((B, da, ph * pw, int(rng.integers(1, 20)))).astype(dtype)
        with torch.no_grad():
            ref = mod(t(xa))
        sd = {k_: v.numpy() for k_, v in mod.state_dict().items()}
        record("separable attention", dtype, ops.separable_self_attention(
            xa, sd["qkv_proj.weight"], sd["qkv_proj.bias"], sd["out_proj.weight"], sd["out_proj.bias"]), ref)

print(f"{cases} random cases per op and dtype; worst relative error max|lmref - torch| / max|torch|")
print(f"{'op':22s} {'float64':>10s} {'float32':>10s}")
for name in dict.fromkeys(k[0] for k in worst):
    print(f"{name:22s} {worst[(name, 'float64')]:10.1e} {worst[(name, 'float32')]:10.1e}")
assert all(v < (1e-12 if dt == "float64" else 1e-5) for (_, dt), v in worst.items())
moving = [k for k in worst if k[0].startswith(("unfold", "fold"))]
arith = [k for k in worst if k not in moving]
say(f"float64 agrees to at most **{max(worst[k] for k in arith if k[1] == 'float64'):.0e}** (a few units in the last "
    f"place: the two libraries sum in different orders), float32 to at most "
    f"**{max(worst[k] for k in arith if k[1] == 'float32'):.0e}**. The data-movement ops (unfold / fold) are "
    + ("exact in both." if all(worst[k] == 0 for k in moving) else
       f"within {max(worst[k] for k in moving):.0e}."))

# %% [markdown]
# ## Summary
#
# * A convolution is im2col plus one matrix product; `groups` makes that product block-diagonal,
#   and a depthwise convolution (one group per channel) keeps only the diagonal blocks.
# * MobileViT-v2's "LayerNorm2d" is a group norm with one group: statistics over C×H×W per sample.
# * Unfold / fold only move data. The rank-≤5 version moves it without any tensor of rank 6, for
#   runtimes that cannot transpose 6-D tensors, and gives the same bits.
# * Separable self-attention replaces the N×N attention matrix by one softmax over the patches and a
#   context vector, so its cost grows linearly with N.
# * Every op written by hand here agrees with PyTorch to rounding error.
#
# ### Try this
#
# * Add `dilation` to `im2col` and `conv2d_by_hand` (the taps move `d` pixels apart) and check it
#   against `F.conv2d(..., dilation=2)`.
# * In section 5, flip the sign of the query weight (`qkv_w[0, 0] = +12.0`, `qkv_b[0] = -6.0`).
#   Where does the spotlight move, and why?
# * `unfold_6d` needs patches that divide the map. MobileViT-v2 resizes a map whose side is not
#   even before unfolding it; notebook 2 finds where that happens in the student.
#
# **Next:** notebook 2 runs a whole landmark model through `lmref.trace` and looks at what these
# ops produce, stage by stage.
