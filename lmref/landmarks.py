"""Landmark layouts: point names, groups, boundaries (edges), horizontal-flip permutations and the
indices NME is normalised by.

    >>> lay = get("ibug68")
    >>> lay.point_names[36], lay.norm_indices["ocular"]
    ('right_eye_outer', (36, 45))
    >>> M, b = lay.edge_matrix()            # [68, 9], [68]: E2P(E)_p = sum_e M[p, e] E_e + b_p

Layouts (0-based indices throughout):

* ``ibug68`` (alias ``300w``): the iBUG / 300W 68-point markup.
* ``wflw98`` (alias ``wflw``): the WFLW 98-point markup (two pupils at 96, 97).
* ``cofw29`` (alias ``cofw``): the COFW / LFPW 29-point markup.
* ``inner51``: ``ibug68`` without the 17 jaw points (iBUG 17..67 renumbered 0..50), the layout of the
  ICME 2024 low-power challenge, with 8 boundaries.

"Right" and "left" are the *subject's*: the right eye is on the image's left in a frontal face, as
in STAR's edge names (``RightEye`` = 36-41).

Sources (see /work/shared/reference/architectures.md): edges from STAR ``conf/alignment.py``
``edge_info`` (§2.4), flip permutations from STAR ``flip_mapping`` / PIPNet ``points_flip`` (§6.3),
normalising indices from STAR ``conf/alignment.py`` and PIPNet ``lib/test.py`` (§6.1). The
within-group point semantics (36 = outer corner of the right eye, 8 = chin ...) follow the standard
iBUG / WFLW / LFPW markups; they agree with the flip pairs, which the tests check.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Layout", "get", "for_num_points", "mirror_name", "NAMES", "ALIASES", "INNER51_FROM_IBUG68"]


@dataclass(frozen=True)
class Layout:
    """A landmark markup.

    name          canonical name (``get(name)`` returns this layout)
    num_points    N
    point_names   N names; a name with a ``right`` token mirrors the one with ``left`` in its place
    groups        part name -> point indices (``right_eye``, ``left_eye``, ``outer_lip`` ...)
    edges         STAR boundaries: (name, point indices in drawing order, closed curve?)
    flip          horizontal-flip permutation: after mirroring the image, new point k is old flip[k]
    norm_indices  normaliser name -> (a, b); a, b are an index or a tuple of indices whose mean is
                  taken; NME divides by the distance between a and b on the ground truth
    default_norm  the key of ``norm_indices`` the benchmark reports by default
    """
    name: str
    num_points: int
    point_names: tuple
    groups: dict
    edges: tuple
    flip: tuple
    norm_indices: dict
    default_norm: str
    notes: str = field(default="", compare=False)

    def __post_init__(self):
        n = self.num_points
        if len(self.point_names) != n or len(set(self.point_names)) != n:
            raise ValueError(f"{self.name}: need {n} distinct point names, got {len(set(self.point_names))}")
        if sorted(self.flip) != list(range(n)):
            raise ValueError(f"{self.name}: flip is not a permutation of 0..{n - 1}")
        for what, idx in [*self.groups.items(), *((e[0], e[1]) for e in self.edges)]:
            if not idx or min(idx) < 0 or max(idx) >= n:
                raise ValueError(f"{self.name}: {what} has indices outside 0..{n - 1}: {idx}")
        if self.default_norm not in self.norm_indices:
            raise ValueError(f"{self.name}: default_norm {self.default_norm!r} not in norm_indices")

    @property
    def num_edges(self):
        return len(self.edges)

    @property
    def edge_names(self):
        return tuple(e[0] for e in self.edges)

    def edge_matrix(self):
        """The fixed E2P matrix of STAR's ``E2HTransform``: M[p, e] = 1 iff point p lies on edge e,
        b_p = 1 iff p lies on no edge (so the point map alone gates it). A point on two edges (COFW's
        mouth corners) has a row sum of 2.

        -> (M [N, E] float64, b [N] float64)"""
        M = np.zeros((self.num_points, self.num_edges))
        for e, (_, indices, _) in enumerate(self.edges):
            M[list(indices), e] = 1.0
        b = (M.sum(axis=1) < 0.5).astype(np.float64)   # STAR: (M @ 1) < 0.5
        return M, b

    def mirror(self, points, width):
        """Mirror landmarks with their image: reorder by ``flip`` and set x <- (width - 1) - x
        (pixel-index coordinates, pixel centres at integers: STAR's ``Flip`` with offset -1).
        points: [..., N, 2] (x, y) -> [..., N, 2]"""
        pts = np.asarray(points)
        if pts.ndim < 2 or pts.shape[-2:] != (self.num_points, 2):
            raise ValueError(f"points: expected [..., {self.num_points}, 2], got shape {pts.shape}")
        out = pts[..., list(self.flip), :].copy()       # [..., N, 2] reordered
        out[..., 0] = (width - 1) - out[..., 0]
        return out

    def indices(self, *group_names):
        """Concatenated point indices of the named groups, in the order given."""
        return tuple(i for g in group_names for i in self.groups[g])


def mirror_name(name):
    """'right_eye_outer' -> 'left_eye_outer' (whole underscore-separated tokens only)."""
    swap = {"right": "left", "left": "right"}
    return "_".join(swap.get(t, t) for t in name.split("_"))


def _edges(*specs):
    return tuple((name, tuple(idx), bool(closed)) for name, idx, closed in specs)


# ---------------------------------------------------------------------------------------------
# iBUG / 300W, 68 points
# ---------------------------------------------------------------------------------------------

def _ibug68_names():
    # jaw 0..16 from the right ear-level end over the chin (8) to the left end
    contour = [f"right_contour_{k}" for k in range(8)] + ["chin"] + [f"left_contour_{k}" for k in range(7, -1, -1)]
    brows = ["right_brow_outer", "right_brow_1", "right_brow_2", "right_brow_3", "right_brow_inner",
             "left_brow_inner", "left_brow_3", "left_brow_2", "left_brow_1", "left_brow_outer"]
    nose = ["nose_bridge_0", "nose_bridge_1", "nose_bridge_2", "nose_tip",
            "right_alar", "right_nostril", "subnasale", "left_nostril", "left_alar"]
    eyes = ["right_eye_outer", "right_eye_upper_outer", "right_eye_upper_inner",
            "right_eye_inner", "right_eye_lower_inner", "right_eye_lower_outer",
            "left_eye_inner", "left_eye_upper_inner", "left_eye_upper_outer",
            "left_eye_outer", "left_eye_lower_outer", "left_eye_lower_inner"]
    return tuple(contour + brows + nose + eyes + _lip_names())


def _lip_names():
    """12 outer-lip points then 8 inner-lip points, both clockwise in the image from the subject's
    right mouth corner (the same markup in iBUG 68 and WFLW 98)."""
    outer = ["right_mouth_corner", "upper_lip_outer_right_2", "upper_lip_outer_right_1",
             "upper_lip_outer_center", "upper_lip_outer_left_1", "upper_lip_outer_left_2",
             "left_mouth_corner", "lower_lip_outer_left_2", "lower_lip_outer_left_1",
             "lower_lip_outer_center", "lower_lip_outer_right_1", "lower_lip_outer_right_2"]
    inner = ["right_inner_mouth_corner", "upper_lip_inner_right", "upper_lip_inner_center",
             "upper_lip_inner_left", "left_inner_mouth_corner", "lower_lip_inner_left",
             "lower_lip_inner_center", "lower_lip_inner_right"]
    return outer + inner


def _r(a, b):
    return tuple(range(a, b + 1))


IBUG68 = Layout(
    name="ibug68",
    num_points=68,
    point_names=_ibug68_names(),
    groups={
        "contour": _r(0, 16),
        "right_eyebrow": _r(17, 21),
        "left_eyebrow": _r(22, 26),
        "nose_bridge": _r(27, 30),
        "nose_lower": _r(31, 35),
        "right_eye": _r(36, 41),
        "left_eye": _r(42, 47),
        "outer_lip": _r(48, 59),
        "inner_lip": _r(60, 67),
    },
    # STAR conf/alignment.py edge_info for 300W
    edges=_edges(
        ("FaceContour", _r(0, 16), False),
        ("RightEyebrow", _r(17, 21), False),
        ("LeftEyebrow", _r(22, 26), False),
        ("NoseLine", _r(27, 30), False),
        ("Nose", _r(31, 35), False),
        ("RightEye", _r(36, 41), True),
        ("LeftEye", _r(42, 47), True),
        ("OuterLip", _r(48, 59), True),
        ("InnerLip", _r(60, 67), True),
    ),
    # STAR flip_mapping (300W) == PIPNet points_flip, as a permutation
    flip=(16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
          26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
          27, 28, 29, 30,
          35, 34, 33, 32, 31,
          45, 44, 43, 42, 47, 46,
          39, 38, 37, 36, 41, 40,
          54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
          64, 63, 62, 61, 60, 67, 66, 65),
    norm_indices={
        "ocular": (36, 45),                       # outer eye corners (STAR default, PIPNet)
        "pupil": (_r(36, 41), _r(42, 47)),        # eye centres = mean of each eye's 6 points
    },
    default_norm="ocular",
)


# ---------------------------------------------------------------------------------------------
# WFLW, 98 points
# ---------------------------------------------------------------------------------------------

def _wflw98_names():
    contour = [f"right_contour_{k}" for k in range(16)] + ["chin"] + [f"left_contour_{k}" for k in range(15, -1, -1)]
    # brows are closed curves: outer corner, 3 upper points, inner corner, 4 lower points back
    right_brow = ["right_brow_outer", "right_brow_upper_1", "right_brow_upper_2", "right_brow_upper_3",
                  "right_brow_inner", "right_brow_lower_4", "right_brow_lower_3", "right_brow_lower_2",
                  "right_brow_lower_1"]
    left_brow = ["left_brow_inner", "left_brow_upper_3", "left_brow_upper_2", "left_brow_upper_1",
                 "left_brow_outer", "left_brow_lower_1", "left_brow_lower_2", "left_brow_lower_3",
                 "left_brow_lower_4"]
    nose = ["nose_bridge_0", "nose_bridge_1", "nose_bridge_2", "nose_tip",
            "right_alar", "right_nostril", "subnasale", "left_nostril", "left_alar"]
    right_eye = ["right_eye_outer", "right_eye_upper_1", "right_eye_upper_2", "right_eye_upper_3",
                 "right_eye_inner", "right_eye_lower_3", "right_eye_lower_2", "right_eye_lower_1"]
    left_eye = ["left_eye_inner", "left_eye_upper_3", "left_eye_upper_2", "left_eye_upper_1",
                "left_eye_outer", "left_eye_lower_1", "left_eye_lower_2", "left_eye_lower_3"]
    pupils = ["right_pupil", "left_pupil"]
    return tuple(contour + right_brow + left_brow + nose + right_eye + left_eye + _lip_names() + pupils)


WFLW98 = Layout(
    name="wflw98",
    num_points=98,
    point_names=_wflw98_names(),
    groups={
        "contour": _r(0, 32),
        "right_eyebrow": _r(33, 41),
        "left_eyebrow": _r(42, 50),
        "nose_bridge": _r(51, 54),
        "nose_lower": _r(55, 59),
        "right_eye": _r(60, 67),
        "left_eye": _r(68, 75),
        "outer_lip": _r(76, 87),
        "inner_lip": _r(88, 95),
        "right_pupil": (96,),
        "left_pupil": (97,),
    },
    # STAR conf/alignment.py edge_info for WFLW; the pupils 96, 97 are on no edge
    edges=_edges(
        ("FaceContour", _r(0, 32), False),
        ("RightEyebrow", _r(33, 41), True),
        ("LeftEyebrow", _r(42, 50), True),
        ("NoseLine", _r(51, 54), False),
        ("Nose", _r(55, 59), False),
        ("RightEye", _r(60, 67), True),
        ("LeftEye", _r(68, 75), True),
        ("OuterLip", _r(76, 87), True),
        ("InnerLip", _r(88, 95), True),
    ),
    # STAR flip_mapping (WFLW) == PIPNet points_flip, as a permutation
    flip=tuple(range(32, -1, -1)) + (
        46, 45, 44, 43, 42, 50, 49, 48, 47,
        37, 36, 35, 34, 33, 41, 40, 39, 38,
        51, 52, 53, 54,
        59, 58, 57, 56, 55,
        72, 71, 70, 69, 68, 75, 74, 73,
        64, 63, 62, 61, 60, 67, 66, 65,
        82, 81, 80, 79, 78, 77, 76, 87, 86, 85, 84, 83,
        92, 91, 90, 89, 88, 95, 94, 93,
        97, 96),
    norm_indices={
        "ocular": (60, 72),      # outer eye corners (STAR default, PIPNet)
        "pupil": (96, 97),
    },
    default_norm="ocular",
)


# ---------------------------------------------------------------------------------------------
# COFW, 29 points (the LFPW-29 markup)
# ---------------------------------------------------------------------------------------------

COFW29 = Layout(
    name="cofw29",
    num_points=29,
    # LFPW-29 point meanings, consistent with STAR's edge order (brow and eye loops go
    # outer, top, inner, bottom) and the flip pairs; not spelled out in STAR or PIPNet code.
    point_names=(
        "right_brow_outer", "left_brow_outer", "right_brow_inner", "left_brow_inner",
        "right_brow_top", "right_brow_bottom", "left_brow_top", "left_brow_bottom",
        "right_eye_outer", "left_eye_outer", "right_eye_inner", "left_eye_inner",
        "right_eye_top", "right_eye_bottom", "left_eye_top", "left_eye_bottom",
        "right_pupil", "left_pupil",
        "right_nostril", "left_nostril", "nose_tip", "subnasale",
        "right_mouth_corner", "left_mouth_corner",
        "upper_lip_top", "upper_lip_bottom", "lower_lip_top", "lower_lip_bottom",
        "chin",
    ),
    groups={
        "right_eyebrow": (0, 4, 2, 5),
        "left_eyebrow": (1, 6, 3, 7),
        "right_eye": (8, 12, 10, 13),
        "left_eye": (9, 14, 11, 15),
        "right_pupil": (16,),
        "left_pupil": (17,),
        "nose": (18, 20, 19, 21),
        "mouth": _r(22, 27),
        "chin": (28,),
    },
    # STAR conf/alignment.py edge_info for COFW, including its LeftEye closed=False (RightEye is
    # closed; it looks like an upstream typo, kept so edge-map targets match STAR's)
    edges=_edges(
        ("RightEyebrow", (0, 4, 2, 5), True),
        ("LeftEyebrow", (1, 6, 3, 7), True),
        ("RightEye", (8, 12, 10, 13), True),
        ("LeftEye", (9, 14, 11, 15), False),
        ("Nose", (18, 20, 19, 21), True),
        ("LowerLip", (22, 26, 23, 27), True),
        ("UpperLip", (22, 24, 23, 25), True),
    ),
    # PIPNet points_flip for COFW (== STAR's flip_mapping pairs)
    flip=(1, 0, 3, 2, 6, 7, 4, 5, 9, 8, 11, 10, 14, 15, 12, 13, 17, 16, 19, 18,
          20, 21, 23, 22, 24, 25, 26, 27, 28),
    norm_indices={
        "ocular": (8, 9),        # STAR 'ocular', PIPNet
        "pupil": (16, 17),       # STAR 'pupil' / 'default'
    },
    default_norm="pupil",
    notes="COFW numbers are usually inter-pupil (STAR); PIPNet reports inter-ocular (8, 9).",
)


# ---------------------------------------------------------------------------------------------
# inner 51 = iBUG 68 without the jaw
# ---------------------------------------------------------------------------------------------

INNER51_FROM_IBUG68 = tuple(range(17, 68))   # inner51 point k is iBUG-68 point INNER51_FROM_IBUG68[k]


def _inner51():
    keep = INNER51_FROM_IBUG68
    new = {old: k for k, old in enumerate(keep)}             # iBUG index -> inner51 index

    def remap(idx):
        return new[idx] if isinstance(idx, int) else tuple(new[i] for i in idx)

    return Layout(
        name="inner51",
        num_points=len(keep),
        point_names=tuple(IBUG68.point_names[i] for i in keep),
        groups={g: remap(idx) for g, idx in IBUG68.groups.items() if g != "contour"},
        # the 9 iBUG edges without FaceContour, same flags as 300W
        edges=tuple((name, remap(idx), closed) for name, idx, closed in IBUG68.edges
                    if name != "FaceContour"),
        # the jaw maps onto itself under the flip, so the 68-point flip restricted to 17..67 is a
        # permutation of the inner points
        flip=tuple(new[IBUG68.flip[old]] for old in keep),
        norm_indices={k: (remap(a), remap(b)) for k, (a, b) in IBUG68.norm_indices.items()},
        default_norm="ocular",
        notes="iBUG 68 points 17..67 renumbered 0..50 (ICME 2024 low-power challenge layout).",
    )


INNER51 = _inner51()

LAYOUTS = {lay.name: lay for lay in (IBUG68, WFLW98, COFW29, INNER51)}
NAMES = tuple(LAYOUTS)
ALIASES = {"300w": "ibug68", "wflw": "wflw98", "cofw": "cofw29"}


def get(name):
    """The layout called ``name`` (one of ``NAMES`` or an alias in ``ALIASES``; case-insensitive).
    A Layout is returned unchanged."""
    if isinstance(name, Layout):
        return name
    if not isinstance(name, str):
        raise TypeError(f"layout name: expected a str, got {type(name).__name__}")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in LAYOUTS:
        raise KeyError(f"unknown landmark layout {name!r}; known: {list(NAMES)} and aliases {sorted(ALIASES)}")
    return LAYOUTS[key]


def for_num_points(n):
    """The layout with ``n`` points (68, 98, 29 or 51)."""
    matches = [lay for lay in LAYOUTS.values() if lay.num_points == n]
    if len(matches) != 1:
        raise ValueError(f"no layout with {n} points; known: "
                         f"{ {lay.name: lay.num_points for lay in LAYOUTS.values()} }")
    return matches[0]
