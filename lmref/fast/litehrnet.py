"""Lite-HRNet, regrouped: the small layers that share an input or a resolution run stacked -- the
spatial weighting of a block's branches (block-diagonal), the SCAF units of one target, and the SCAF
dw downsampling steps that run at one resolution (one depthwise conv per level) -- so that a Plus 10M
pass makes about 500 op calls instead of 900. The stacked parameters are derived once from the
model's own (``buffers.derived``); the model's blocks ``conditional_channel_weighting`` and
``scaf_fusion`` are replaced outside traces only, and tests/test_fast_layer.py checks the stacked
routes against the unit-by-unit definitions.
"""
import numpy as np

from ..models import litehrnet as L
from ..ops import linear, relu, sigmoid, conv2d
from . import buffers
from .folding import folded
from .registry import replaces


def block_diagonal(blocks):
    """Matrices [m_k, n_k] -> [sum m_k, sum n_k] with block k on the diagonal and zeros elsewhere."""
    out = np.zeros((sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)), blocks[0].dtype)
    r = c = 0
    for b in blocks:
        out[r:r + b.shape[0], c:c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


# ---------------------------------------------------------------------------------------------
# conditional channel weighting: the branches' spatial weighting as two products

def stack_spatial_weighting(p, num_branches):
    """The SE layers of one block's branches as block-diagonal 1x1 convs, so that
    ``spatial_weighting_stacked`` runs them as two products: conv1 [sum C_k/4, sum C_k] and conv2
    [sum C_k, sum C_k/4] (branch k's weights on the diagonal, zeros elsewhere) and their biases."""
    units = [p[str(k)] for k in range(num_branches)]
    w1 = [u["conv1"]["conv"]["weight"][:, :, 0, 0] for u in units]           # [C_k/4, C_k] each
    w2 = [u["conv2"]["conv"]["weight"][:, :, 0, 0] for u in units]           # [C_k, C_k/4] each
    return {"conv1_weight": block_diagonal(w1), "conv1_bias": np.concatenate([u["conv1"]["conv"]["bias"] for u in units]),
            "conv2_weight": block_diagonal(w2), "conv2_bias": np.concatenate([u["conv2"]["conv"]["bias"] for u in units])}


def spatial_weighting_stacked(xs, q):
    """``spatial_weighting`` of all branches of a block at once: the GAPs concatenated [B, sum C_k],
    the block-diagonal layers of ``stack_spatial_weighting`` (the same sums; the zero blocks add
    exact zeros for finite inputs), split back per branch."""
    g = np.concatenate([L.gap(x) for x in xs], axis=1)                        # [B, sum C_k]
    w = relu(linear(g, q["conv1_weight"], q["conv1_bias"]))                   # [B, sum C_k/4]
    w = sigmoid(linear(w, q["conv2_weight"], q["conv2_bias"]))                # [B, sum C_k]
    out, start = [], 0
    for x in xs:
        out.append(x * w[:, start:start + x.shape[1], None, None])           # [B, C_k, H_k, W_k]
        start += x.shape[1]
    return out


@replaces(L.conditional_channel_weighting)
def conditional_channel_weighting(xs, p, eps):
    """The block with its spatial weighting stacked, and concat + channel shuffle (2) written as one
    interleaving copy (channel 2m is A_m, 2m + 1 is B_m)."""
    a = [s[:, :s.shape[1] // 2] for s in xs]
    b = L.cross_resolution_weighting([s[:, s.shape[1] // 2:] for s in xs], p["cross_resolution_weighting"], eps)
    for k in range(len(b)):
        b[k] = L.conv_bn(b[k], p["depthwise_convs"][str(k)], groups=b[k].shape[1], eps=eps)
    sw = p["spatial_weighting"]
    b = spatial_weighting_stacked(b, buffers.derived(sw["0"]["conv1"]["conv"]["weight"], "stacked",
                                                     lambda: stack_spatial_weighting(sw, len(xs))))
    return [np.stack([a[k], b[k]], axis=2).reshape(xs[k].shape) for k in range(len(xs))]


# ---------------------------------------------------------------------------------------------
# SCAF: the units of one target batched, the dw downsampling steps stacked by resolution

def stack_scaf_units(p_i, sources):
    """The fc layers of the J = S - 1 units merging into one target, stacked so that ``scaf_fusion``
    runs them as two products: fc1 [J*hid, C_i] (the units' fc1 one above the other, they share the
    input g_i) and fc2 as J matrices [J, hid, C_i] (transposed), biases [J*hid] and [J, 1, C_i]."""
    units = [p_i[str(j)] for j in sources]
    return {"fc1_weight": np.concatenate([u["fc1"]["weight"] for u in units]),      # [J*hid, C_i]
            "fc1_bias": np.concatenate([u["fc1"]["bias"] for u in units]),          # [J*hid]
            "fc2_weight_t": np.stack([u["fc2"]["weight"].T for u in units]),        # [J, hid, C_i]
            "fc2_bias": np.stack([u["fc2"]["bias"] for u in units])[:, None, :]}    # [J, 1, C_i]


def scaf_down_units(num_branches, level):
    """The pairwise SCAF units (i, j) with a high->low step at branch ``level``'s resolution
    (j <= level < i), in (i, j) order: first the units that arrive at their target i = level + 1."""
    return [(i, j) for i in range(level + 1, num_branches) for j in range(level + 1)]


def stack_scaf_down(fuse, chans, eps):
    """The dw 3x3 s2 steps of a pairwise SCAF fusion (scaf_down="dwconv"), BatchNorms folded, stacked
    by the resolution they run at, so that ``scaf_down_stacked`` makes one depthwise conv per level:
    for level L the weights [n_L, 1, 3, 3] and biases [n_L] of the units ``scaf_down_units(S, L)`` one
    after the other (step L - j of unit (i, j), C_j channels each), and "mean" [L+1, sum_{j<=L} C_j],
    the channel means of the arriving units as one product (row j: 1/C_j over unit (L+1, j)'s
    channels). Level 0's units all start from x_0: their weights are interleaved channel by channel
    (filter u of channel c at c*(S-1) + u) for one conv with a channel multiplier, which reads x_0 once."""
    levels = {}
    for L_ in range(len(chans) - 1):
        units = scaf_down_units(len(chans), L_)
        steps = [fuse[str(i)][str(j)]["down"][str(L_ - j)] for i, j in units]
        convs = [folded(s["0"], s["1"], eps) for s in steps]
        w = np.concatenate([c[0] for c in convs])                             # [n_L, 1, 3, 3], unit by unit
        b = np.concatenate([c[1] for c in convs])                             # [n_L]
        if L_ == 0:                                                           # channel-major for the multiplier
            w = w.reshape(len(convs), chans[0], *w.shape[1:]).transpose(1, 0, 2, 3, 4).reshape(w.shape)
            b = b.reshape(len(convs), chans[0]).T.reshape(-1)
        levels[L_] = {"weight": w, "bias": b,
                      "mean": block_diagonal([np.full((1, c), 1 / c, w.dtype) for c in chans[:L_ + 1]])}
    return levels


def scaf_down_stacked(xs, levels):
    """The high->low maps of a pairwise SCAF fusion with dwconv downsampling (``scaf_map``'s steps and
    channel means for every j < i), one depthwise conv per resolution (``stack_scaf_down``): at level
    L the inputs are x_L for the units starting there and the ReLU'd outputs of level L - 1 for the
    units passing through; the units arriving at i = L + 1 take their channel means.
    Returns {i: [B, i, h_i*w_i]}, row j the map of unit (i, j)."""
    B, S = xs[0].shape[0], len(xs)
    chans = [x.shape[1] for x in xs]
    carry, down = None, {}
    for L_ in range(S - 1):
        q = levels[L_]
        if L_ == 0:                                                           # S-1 filters per channel of x_0
            z = conv2d(xs[0], q["weight"], q["bias"], stride=2, padding=1, groups=chans[0])   # [B, C_0*(S-1), h_1, w_1]
            z = z.reshape(B, chans[0], S - 1, -1).transpose(0, 2, 1, 3).reshape(B, -1, *z.shape[2:])   # unit by unit
        else:
            pieces, pos = [], 0
            for i, j in scaf_down_units(S, L_):
                if j == L_:
                    pieces.append(xs[L_])                                     # the unit's first step
                else:
                    pieces.append(carry[:, pos:pos + chans[j]])               # its step L - j
                    pos += chans[j]
            z = np.concatenate(pieces, axis=1)                                # [B, n_L, h_L, w_L]
            z = conv2d(z, q["weight"], q["bias"], stride=2, padding=1, groups=z.shape[1])   # [B, n_L, h_L+1, w_L+1]
        arrived = q["mean"].shape[1]                                          # channels of units (L+1, j)
        h, w = z.shape[2:]
        down[L_ + 1] = q["mean"] @ z[:, :arrived].reshape(B, arrived, h * w)  # [B, L+1, h*w]
        if arrived < z.shape[1]:
            carry = relu(z[:, arrived:])                                      # ReLU between steps
    return down


def stack_scaf(p, chans, cfg):
    """Everything ``scaf_fusion`` stacks for one pairwise fusion: {"units": per target i the stacked
    fc layers, "down": the stacked dw steps (scaf_down="dwconv") or None}."""
    S = len(chans)
    return {"units": [stack_scaf_units(p[str(i)], [j for j in range(S) if j != i]) for i in range(S)],
            "down": stack_scaf_down(p, chans, cfg.bn_eps) if cfg.scaf_down == "dwconv" else None}


@replaces(L.scaf_fusion)
def scaf_fusion(xs, p, cfg):
    """The pairwise ``scaf_fusion`` with the units of each target batched (the same sum, rounded in
    another order; the cascade route runs the definition):

        h   = ReLU(g_i @ fc1_stack^T + b1)              [B, J*hid]   one linear for the J units
        a   = sigmoid(h_j @ fc2_j^T + b2_j)             [B, J, C_i]  one batched product
        M   = the J maps m_j (``scaf_map``)             [B, J, h_i*w_i]
        y_i = ReLU(x_i + a^T @ M)                       [B, C_i, h_i, w_i]

    The channel mean of a source that is only resized (j > i, or scaf_down="avgpool") is computed once
    per fusion instead of once per target; with dwconv downsampling the maps j < i come from
    ``scaf_down_stacked``."""
    if cfg.scaf_route != "pairwise":
        return scaf_fusion.definition(xs, p, cfg)
    S, B = len(xs), xs[0].shape[0]
    st = buffers.derived(p["0"]["1"]["fc1"]["weight"], ("stacked", cfg.scaf_down, cfg.bn_eps),
                         lambda: stack_scaf(p, [x.shape[1] for x in xs], cfg))
    down = scaf_down_stacked(xs, st["down"]) if st["down"] is not None else {}   # {i: [B, i, h_i*w_i]}
    means, out = {}, []
    for i in range(S):
        q = st["units"][i]
        C_i, (h_i, w_i) = xs[i].shape[1], xs[i].shape[2:]
        a = relu(linear(L.gap(xs[i]), q["fc1_weight"], q["fc1_bias"]))       # [B, J*hid]
        a = a.reshape(B, S - 1, 1, -1) @ q["fc2_weight_t"] + q["fc2_bias"]    # [B, J, 1, C_i]
        a = sigmoid(a.reshape(B, S - 1, C_i))                                 # [B, J, C_i]
        maps = [down[i]] if i in down else []                                 # rows j < i, dwconv
        for j in range(S):
            if j == i or (j < i and i in down):
                continue
            if j not in means:
                means[j] = L.channel_mean(xs[j])                              # [B, 1, h_j, w_j]
            m = L.scaf_resize(means[j], (h_i, w_i), max(0, i - j), cfg)       # [B, 1, h_i, w_i]
            maps.append(m.reshape(B, 1, h_i * w_i))
        M = np.concatenate(maps, axis=1)                                      # [B, J, h_i*w_i]
        y = xs[i] + (a.transpose(0, 2, 1) @ M).reshape(B, C_i, h_i, w_i)      # [B, C_i, h_i, w_i]
        out.append(relu(y))
    return out
