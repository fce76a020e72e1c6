"""Near-duplicate clustering, cluster split, baseline and metrics on synthetic rows."""

import e3nn_jax as e3nn
import numpy as np
import pytest

from zoo.hubbard._basis import occupations_qe_to_e3nn, wigner_d_qe
from zoo.hubbard._features import spin_features
from zoo.hubbard._split import (
    DUPLICATE,
    TRAIN,
    U_PARAM_TOL,
    V_PARAM_TOL,
    VALIDATE,
    baseline_metrics,
    duplicate_clusters,
    power_spectrum,
    regression_metrics,
    split_by_clusters,
)


def _sym(rng, n, d):
    a = rng.normal(size=(n, d, d))
    return a + np.swapaxes(a, 1, 2)


def test_power_spectrum_is_rotation_invariant(rng, x64):
    up, down = _sym(rng, 1, 5), _sym(rng, 1, 5)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    d = wigner_d_qe(2, q)

    def feats(u, v):
        return spin_features(occupations_qe_to_e3nn(u, 2), occupations_qe_to_e3nn(v, 2), 2)

    s1, p1 = feats(up, down)
    s2, p2 = feats(d @ up @ d.T, d @ down @ d.T)
    for a, b in [(s1, s2), (p1, p2)]:
        np.testing.assert_allclose(power_spectrum(a), power_spectrum(b), atol=1e-9)
    assert power_spectrum(s1).shape == (1, 3)  # 0e.0e, 2e.2e, 4e.4e


def test_clusters_join_near_duplicates_transitively():
    # rows 0-1-2 chain within tolerance (0 and 2 differ by 1.6 tol: joined through 1)
    spec = np.zeros((6, 4))
    spec[1, 0] = 0.8 * 2e-4  # RMS over 4 values = 0.8e-4 < 1e-4
    spec[2, 0] = 1.6 * 2e-4
    spec[3, 0] = 5e-3  # far
    p_in = np.array([4.0, 4.0, 4.0, 4.0, 4.0 + 2 * U_PARAM_TOL, 4.0])
    keys = ["Mn"] * 5 + ["Ni"]  # row 5 equals row 0 but is another species
    c = duplicate_clusters(keys, [spec], p_in, param_tol=U_PARAM_TOL)
    np.testing.assert_array_equal(c, [0, 0, 0, 3, 4, 5])


def test_clusters_need_every_criterion():
    spec = np.zeros((4, 3))
    other = np.zeros((4, 3))
    other[1] = 1e-3  # second site differs
    dist = np.array([4.0, 4.0, 4.0 + 1e-2, 4.0 + 1e-3])
    c = duplicate_clusters(["O-Mn"] * 4, [spec, other], np.ones(4), dist, param_tol=V_PARAM_TOL)
    np.testing.assert_array_equal(c, [0, 1, 2, 0])


def test_clusters_scale_with_sorted_window(rng):
    n = 400
    spec = rng.normal(size=(n, 5))
    spec[200:] = spec[:200] + 1e-6  # 200 duplicate pairs
    p_in = np.concatenate([np.linspace(0, 5, 200)] * 2)
    c = duplicate_clusters(["Fe"] * n, [spec], p_in, param_tol=U_PARAM_TOL)
    assert len(set(c.tolist())) == 200
    np.testing.assert_array_equal(c[200:], c[:200])


def test_split_keeps_duplicates_out_of_validation():
    # 3 groups x 10 clusters of 3 rows each
    n_per, groups, clusters = 3, [], []
    for g in range(3):
        for k in range(10):
            for _ in range(n_per):
                groups.append(("Mn", f"path{g}"))
                clusters.append(len(clusters) - len(clusters) % n_per)
    clusters = np.array(clusters)
    labels = split_by_clusters(clusters, groups, seed=1)
    for g in range(3):
        idx = [i for i, gr in enumerate(groups) if gr[1] == f"path{g}"]
        val_clusters = {clusters[i] for i in idx if labels[i] == VALIDATE}
        assert len(val_clusters) == 2  # 20 % of 10 clusters
    for c in set(clusters.tolist()):
        members = labels[clusters == c]
        if VALIDATE in members:
            assert sorted(members.tolist()) == [DUPLICATE, DUPLICATE, VALIDATE]
        else:
            assert set(members.tolist()) == {TRAIN}
    assert (split_by_clusters(clusters, groups, seed=1) == labels).all()  # reproducible
    assert (split_by_clusters(clusters, groups, seed=2) != labels).any()  # seeded


def test_split_small_groups_and_errors():
    labels = split_by_clusters(np.array([0, 1]), ["a", "a"])
    assert (labels == TRAIN).all()  # round(0.2 * 2) = 0
    labels = split_by_clusters(np.array([0, 1, 2]), ["a"] * 3, val_fraction=0.5)
    assert (labels == VALIDATE).sum() == 2  # 1.5 rounds half up
    with pytest.raises(ValueError, match="groups"):
        split_by_clusters(np.array([0, 1]), ["a"])
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_clusters(np.array([0]), ["a"], val_fraction=1.0)


def test_metrics_and_baseline():
    y = np.array([4.0, 5.0, 1.0, 2.0])
    pred = np.array([4.4, 4.5, 1.0, 2.2])
    m = regression_metrics(y, pred, ["Mn", "Mn", "O-Mn", "O-Mn"])
    assert m["Mn"]["n"] == 2
    assert m["Mn"]["mae"] == pytest.approx(0.45)
    assert m["Mn"]["rmse"] == pytest.approx(np.sqrt((0.16 + 0.25) / 2))
    assert m["Mn"]["mare"] == pytest.approx((0.1 + 0.1) / 2)
    assert m["O-Mn"]["mare"] == pytest.approx(0.05)
    assert m["all"]["n"] == 4
    b = baseline_metrics(pred, y, ["Mn"] * 4)  # param_in = pred, param_out = y
    assert b["Mn"]["mae"] == pytest.approx(np.mean(np.abs(pred - y)))
    with pytest.raises(ValueError, match="nonzero"):
        regression_metrics([0.0], [1.0], ["Mn"])
    with pytest.raises(ValueError, match="differ"):
        regression_metrics([1.0, 2.0], [1.0], ["Mn", "Mn"])


def test_power_spectrum_shape_for_prod():
    x = e3nn.IrrepsArray("3x0e+2x2e", np.ones((2, 13)))
    assert power_spectrum(x).shape[0] == 2
