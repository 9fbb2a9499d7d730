"""lmref.landmarks: flips, groups, edges, E2P matrices, the inner-51 derivation."""
import dataclasses

import numpy as np
import pytest

from lmref import landmarks as L

LAYOUTS = [L.get(n) for n in L.NAMES]
ids = [lay.name for lay in LAYOUTS]

# STAR conf/alignment.py flip_mapping as typed upstream (pairs), an independent representation of
# the permutations in landmarks.py (which were typed from PIPNet's lists)
STAR_PAIRS = {
    "ibug68": ([0, 16], [1, 15], [2, 14], [3, 13], [4, 12], [5, 11], [6, 10], [7, 9],
               [17, 26], [18, 25], [19, 24], [20, 23], [21, 22], [31, 35], [32, 34],
               [36, 45], [37, 44], [38, 43], [39, 42], [40, 47], [41, 46],
               [48, 54], [49, 53], [50, 52], [61, 63], [60, 64], [67, 65], [58, 56], [59, 55]),
    "wflw98": ([0, 32], [1, 31], [2, 30], [3, 29], [4, 28], [5, 27], [6, 26], [7, 25], [8, 24], [9, 23],
               [10, 22], [11, 21], [12, 20], [13, 19], [14, 18], [15, 17],
               [33, 46], [34, 45], [35, 44], [36, 43], [37, 42], [38, 50], [39, 49], [40, 48], [41, 47],
               [60, 72], [61, 71], [62, 70], [63, 69], [64, 68], [65, 75], [66, 74], [67, 73],
               [55, 59], [56, 58], [76, 82], [77, 81], [78, 80], [87, 83], [86, 84],
               [88, 92], [89, 91], [95, 93], [96, 97]),
    "cofw29": ([0, 1], [4, 6], [2, 3], [5, 7], [8, 9], [10, 11], [12, 14], [16, 17], [13, 15], [18, 19], [22, 23]),
}


def sides(name):
    return set(name.split("_")) & {"left", "right"}


@pytest.mark.parametrize("lay", LAYOUTS, ids=ids)
def test_flip_is_an_involution(lay):
    f = np.array(lay.flip)
    assert sorted(f) == list(range(lay.num_points))
    np.testing.assert_array_equal(f[f], np.arange(lay.num_points))


@pytest.mark.parametrize("name", sorted(STAR_PAIRS))
def test_flip_matches_star_pairs(name):
    lay = L.get(name)
    perm = list(range(lay.num_points))
    for a, b in STAR_PAIRS[name]:
        perm[a], perm[b] = b, a
    assert tuple(perm) == lay.flip


@pytest.mark.parametrize("lay", LAYOUTS, ids=ids)
def test_flip_agrees_with_point_names(lay):
    """The flip sends each point to the one whose name has left/right swapped; points without a
    side are exactly the fixed points (the x-symmetric ones)."""
    names = lay.point_names
    for k, old in enumerate(lay.flip):
        assert names[old] == L.mirror_name(names[k]), (k, names[k], names[old])
    fixed = {k for k in range(lay.num_points) if lay.flip[k] == k}
    assert fixed == {k for k, n in enumerate(names) if not sides(n)}


def test_ibug68_fixed_points_and_semantics():
    lay = L.get("300w")
    assert {k for k in range(68) if lay.flip[k] == k} == {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}
    n = lay.point_names
    assert (n[36], n[39], n[42], n[45]) == ("right_eye_outer", "right_eye_inner", "left_eye_inner", "left_eye_outer")
    assert (n[8], n[30], n[48], n[54]) == ("chin", "nose_tip", "right_mouth_corner", "left_mouth_corner")
    w = L.get("wflw98").point_names
    assert (w[60], w[64], w[68], w[72], w[96], w[97]) == (
        "right_eye_outer", "right_eye_inner", "left_eye_inner", "left_eye_outer", "right_pupil", "left_pupil")


@pytest.mark.parametrize("lay", LAYOUTS, ids=ids)
def test_flip_maps_left_groups_to_right_groups(lay):
    for g, idx in lay.groups.items():
        image = {lay.flip[k] for k in idx}
        partner = L.mirror_name(g)
        assert image == set(lay.groups[partner]), g
        if not sides(g):
            assert partner == g
    for name, idx, closed in lay.edges:
        partner = name.replace("Right", "@").replace("Left", "Right").replace("@", "Left")
        other = dict((e[0], e[1]) for e in lay.edges)[partner]
        assert {lay.flip[k] for k in idx} == set(other), name


@pytest.mark.parametrize("lay", LAYOUTS, ids=ids)
def test_mirror_keeps_a_symmetric_face(lay):
    """A face symmetric about x = (W-1)/2 is unchanged by mirror(); mirroring twice is the identity."""
    W = 101
    rng = np.random.default_rng(0)
    pts = np.zeros((lay.num_points, 2))
    for k in range(lay.num_points):
        j = lay.flip[k]
        if j == k:
            pts[k] = ((W - 1) / 2, rng.uniform(0, 100))
        elif k < j:
            x, y = rng.integers(0, 100, 2) + 0.25           # exact in binary: the test can be exact
            pts[k], pts[j] = (x, y), ((W - 1) - x, y)
    np.testing.assert_array_equal(lay.mirror(pts, W), pts)
    q = rng.uniform(0, 100, (3, lay.num_points, 2))
    np.testing.assert_allclose(lay.mirror(lay.mirror(q, W), W), q, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="points"):
        lay.mirror(q[..., :1], W)


@pytest.mark.parametrize("lay", LAYOUTS, ids=ids)
def test_edge_matrix_is_star_e2h(lay):
    """M[p, e] = 1 iff p in edge e; bias 1 iff p on no edge (STAR E2HTransform)."""
    M, b = lay.edge_matrix()
    assert M.shape == (lay.num_points, lay.num_edges) and b.shape == (lay.num_points,)
    assert M.dtype == np.float64 and b.dtype == np.float64
    for e, (_, idx, _) in enumerate(lay.edges):
        assert set(np.flatnonzero(M[:, e])) == set(idx)
    on_no_edge = {p for p in range(lay.num_points) if not any(p in e[1] for e in lay.edges)}
    assert set(np.flatnonzero(b)) == on_no_edge
    assert set(np.unique(M)) <= {0.0, 1.0}


def test_edge_coverage():
    M, b = L.get("ibug68").edge_matrix()
    assert M.shape == (68, 9) and np.all(M.sum(1) == 1) and not b.any()
    M, b = L.get("wflw98").edge_matrix()
    assert M.shape == (98, 9)
    assert np.flatnonzero(b).tolist() == [96, 97] and np.all(M[:96].sum(1) == 1) and not M[96:].any()
    M, b = L.get("cofw29").edge_matrix()
    assert M.shape == (29, 7)
    rows = M.sum(1)
    assert np.flatnonzero(rows == 2).tolist() == [22, 23]                  # mouth corners: two lips
    assert np.flatnonzero(b).tolist() == [16, 17, 28]                       # pupils, chin
    assert np.all(rows[[i for i in range(29) if i not in (16, 17, 22, 23, 28)]] == 1)
    M, b = L.get("inner51").edge_matrix()
    assert M.shape == (51, 8) and np.all(M.sum(1) == 1) and not b.any()


def test_inner51_is_ibug68_without_the_jaw():
    i68, i51 = L.get("ibug68"), L.get("inner51")
    sub = np.array(L.INNER51_FROM_IBUG68)
    assert sub.tolist() == list(range(17, 68))
    assert i51.point_names == tuple(i68.point_names[i] for i in sub)
    # flip: mirroring then taking the subset == taking the subset then mirroring
    for k in range(51):
        assert sub[i51.flip[k]] == i68.flip[sub[k]]
    # 8 edges = iBUG's 9 without FaceContour, same points and flags
    e68 = {n: (idx, c) for n, idx, c in i68.edges}
    assert [e[0] for e in i51.edges] == [n for n in e68 if n != "FaceContour"]
    for name, idx, closed in i51.edges:
        assert (tuple(sub[list(idx)]), closed) == e68[name]
    assert i51.norm_indices["ocular"] == (19, 28) and sub[19] == 36 and sub[28] == 45
    for key, (a, b) in i51.norm_indices.items():
        a68, b68 = i68.norm_indices[key]
        assert tuple(sub[list(np.atleast_1d(a))]) == tuple(np.atleast_1d(a68))
        assert tuple(sub[list(np.atleast_1d(b))]) == tuple(np.atleast_1d(b68))
    # and the subset of landmarks mirrors consistently
    pts = np.random.default_rng(1).uniform(0, 64, (2, 68, 2))
    np.testing.assert_array_equal(i68.mirror(pts, 64)[:, sub], i51.mirror(pts[:, sub], 64))


def test_norm_indices():
    assert L.get("ibug68").norm_indices["ocular"] == (36, 45)
    assert L.get("ibug68").norm_indices["pupil"] == (tuple(range(36, 42)), tuple(range(42, 48)))
    assert L.get("wflw98").norm_indices == {"ocular": (60, 72), "pupil": (96, 97)}
    assert L.get("cofw29").norm_indices == {"ocular": (8, 9), "pupil": (16, 17)}
    assert L.get("cofw29").default_norm == "pupil" and L.get("ibug68").default_norm == "ocular"


def test_groups_partition_the_points():
    for lay in LAYOUTS:
        allidx = sorted(i for idx in lay.groups.values() for i in idx)
        assert allidx == list(range(lay.num_points)), lay.name


def test_get():
    assert L.get("300W") is L.get("ibug68") and L.get("WFLW") is L.get("wflw98") and L.get("cofw").num_points == 29
    lay = L.get("inner51")
    assert L.get(lay) is lay and L.for_num_points(51) is lay
    with pytest.raises(KeyError, match="unknown landmark layout 'ibug69'"):
        L.get("ibug69")
    with pytest.raises(TypeError):
        L.get(68)
    with pytest.raises(ValueError, match="no layout with 70 points"):
        L.for_num_points(70)


def test_layout_validation():
    lay = L.get("cofw29")
    with pytest.raises(ValueError, match="permutation"):
        dataclasses.replace(lay, flip=(0,) * 29)
    with pytest.raises(ValueError, match="outside"):
        dataclasses.replace(lay, groups={**lay.groups, "bad": (29,)})
    with pytest.raises(ValueError, match="default_norm"):
        dataclasses.replace(lay, default_norm="bbox")
