"""Spin-flip-invariant occupation features: sizes, invariances, equivariance, validation."""

from pathlib import Path

import e3nn_jax as e3nn
import numpy as np
import pytest

from zoo.hubbard._basis import occupations_qe_to_e3nn, wigner_d_qe
from zoo.hubbard._features import (
    SYMMETRY_TOL,
    intersite_features,
    occs_prod_irreps,
    occs_sum_irreps,
    onsite_features,
    onsite_irreps,
    site_features,
    site_irreps,
    spin_features,
    symmetric_irreps,
)
from zoo.hubbard.dft.parsers import parse_occup

DATA = Path(__file__).resolve().parents[1] / "data" / "qe"
SPECIES = ["Fe", "Mn", "Ni"]


def _sym(rng, *shape):
    a = rng.normal(size=shape)
    return a + np.swapaxes(a, -1, -2)


def _rotation(seed, proper=True):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r)) * np.sign(np.linalg.det(q * np.sign(np.diag(r))))
    return q if proper else -q


def test_irreps_and_sizes():
    # HubbardML's sizes: U site 80 (3 species), V p-site 26 and d-site 80 (4 species)
    assert occs_sum_irreps(2) == e3nn.Irreps("0e+2e+4e")
    assert occs_sum_irreps(1) == e3nn.Irreps("0e+2e")
    assert occs_prod_irreps(2).regroup() == e3nn.Irreps("3x0e+2x2e+2x4e+6e+8e")
    assert occs_prod_irreps(2).dim == 61 and occs_prod_irreps(1).dim == 16
    for l in (1, 2, 3):  # the order of e3nn's own product (the features are built in it)
        s = occs_sum_irreps(l)
        ref = e3nn.elementwise_tensor_product(
            s, s, filter_ir_out=[f"{k}e" for k in range(0, 13, 2)]
        )
        assert occs_prod_irreps(l) == e3nn.Irreps(ref)
    assert onsite_irreps(3).dim == 80 and onsite_irreps(3, with_param_in=False).dim == 79
    assert site_irreps(4, 1).dim == 26 and site_irreps(4, 2).dim == 80


@pytest.mark.parametrize("l", [1, 2])
def test_symmetric_irreps_orthonormal(l, rng, x64):
    n = _sym(rng, 2 * l + 1, 2 * l + 1)
    x = symmetric_irreps(n, l)
    np.testing.assert_allclose(np.linalg.norm(x.array), np.linalg.norm(n), rtol=1e-12)
    np.testing.assert_allclose(abs(x.array[0]), abs(np.trace(n)) / np.sqrt(2 * l + 1), rtol=1e-12)


@pytest.mark.parametrize("l", [1, 2])
def test_spin_swap_invariance(l, rng, x64):
    up, down = _sym(rng, 3, 2 * l + 1, 2 * l + 1), _sym(rng, 3, 2 * l + 1, 2 * l + 1)
    s1, p1 = spin_features(up, down, l)
    s2, p2 = spin_features(down, up, l)
    np.testing.assert_allclose(s1.array, s2.array, atol=1e-12)
    np.testing.assert_allclose(p1.array, p2.array, atol=1e-12)
    # ...and the product does depend on both spins
    _, p3 = spin_features(up, up, l)
    assert np.abs(p3.array - p1.array).max() > 1e-2


@pytest.mark.parametrize("l", [1, 2])
@pytest.mark.parametrize("proper", [True, False])
def test_rotating_occupations_rotates_irreps(l, proper, rng, x64):
    # rotate the crystal: both spins' QE matrices n -> D_qe n D_qe^T; the e3nn irreps of the
    # result equal e3nn's D(R) applied to the irreps of the original matrices
    rot = _rotation(l + 10 * proper, proper)
    up, down = _sym(rng, 2 * l + 1, 2 * l + 1), _sym(rng, 2 * l + 1, 2 * l + 1)
    d = wigner_d_qe(l, rot)

    def feats(u, v):
        s, p = spin_features(occupations_qe_to_e3nn(u, l), occupations_qe_to_e3nn(v, l), l)
        return e3nn.concatenate([s, p])

    rotated = feats(d @ up @ d.T, d @ down @ d.T)
    expected = feats(up, down).transform_by_matrix(rot)
    np.testing.assert_allclose(rotated.array, expected.array, atol=1e-10)
    # the scalars are invariant, the rest is not
    assert np.abs(rotated.array - feats(up, down).array).max() > 1e-3


def test_onsite_features_layout(rng):
    up, down = _sym(rng, 2, 5, 5), _sym(rng, 2, 5, 5)
    x = onsite_features(["Mn", "Ni"], up, down, [4.0, 5.5], species=SPECIES)
    assert x.irreps == onsite_irreps(3) and x.shape == (2, 80) and x.dtype == np.float64
    np.testing.assert_array_equal(x.array[:, :3], [[0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(x.array[:, -1], [4.0, 5.5])
    single = onsite_features("Mn", up[0], down[0], 4.0, species=SPECIES)
    np.testing.assert_allclose(single.array, x.array[0], atol=1e-14)
    assert onsite_features("Mn", up[0], down[0], None, species=SPECIES).shape == (79,)


def test_intersite_features_layout(rng):
    sp = ["Fe", "Mn", "Ni", "O"]
    p_up, p_dn = _sym(rng, 3, 3, 3), _sym(rng, 3, 3, 3)
    d_up, d_dn = _sym(rng, 3, 5, 5), _sym(rng, 3, 5, 5)
    p, d, e = intersite_features(
        ["O"] * 3,
        p_up,
        p_dn,
        ["Mn", "Fe", "Ni"],
        d_up,
        d_dn,
        [4.1, 4.2, 4.3],
        [1.0, 1.1, 1.2],
        species=sp,
    )
    assert p.shape == (3, 26) and d.shape == (3, 80) and e.irreps == e3nn.Irreps("2x0e")
    np.testing.assert_array_equal(e.array, [[4.1, 1.0], [4.2, 1.1], [4.3, 1.2]])
    np.testing.assert_array_equal(p.array[:, 3], [1, 1, 1])


def test_real_mno_afm_sites_are_equal():
    # AFM MnO: Mn2's spins are Mn1's swapped (|diff| < 1e-6), so spin-flip-invariant features
    # of the two sites agree, while their raw spin-up matrices differ by ~4.7 in the trace
    occ = parse_occup((DATA / "MnO.occup.txt").read_text(), nat=4)[:, :, 0]
    x = site_features(["Mn", "Mn"], occ[0, :2], occ[1, :2], species=SPECIES, l=2)
    np.testing.assert_allclose(x.array[0], x.array[1], atol=1e-5)
    assert abs(np.trace(occ[0, 0]) - np.trace(occ[0, 1])) > 4


def test_validation_messages(rng):
    up, down = _sym(rng, 2, 5, 5), _sym(rng, 2, 5, 5)
    with pytest.raises(ValueError, match=r"n_up \(spin 1\).*shape \(N, 5, 5\)"):
        onsite_features(["Mn", "Mn"], up[:, :3, :3], down, [1, 2], species=SPECIES)
    bad = down.copy()
    bad[1, 0, 2] += 10 * SYMMETRY_TOL
    with pytest.raises(ValueError, match=r"n_down \(spin 2\).*Mn2.*not symmetric"):
        onsite_features(["Mn", "Mn"], up, bad, [1, 2], species=SPECIES, labels=["Mn1", "Mn2"])
    ok = down.copy()
    ok[1, 0, 2] += 0.5 * SYMMETRY_TOL  # within tolerance: accepted
    onsite_features(["Mn", "Mn"], up, ok, [1, 2], species=SPECIES)
    with pytest.raises(ValueError, match="'Co' is not among the model's species"):
        onsite_features(["Mn", "Co"], up, down, [1, 2], species=SPECIES)
    nan = up.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite.*row 0"):
        onsite_features(["Mn", "Mn"], nan, down, [1, 2], species=SPECIES)
    with pytest.raises(ValueError, match="u_in: expected 2 values"):
        onsite_features(["Mn", "Mn"], up, down, [1, 2, 3], species=SPECIES)
    with pytest.raises(ValueError, match="2 elements"):
        onsite_features(["Mn", "Mn"], up, down[:1], [1, 2], species=SPECIES)
    with pytest.raises(ValueError, match="distance"):
        intersite_features(
            "O",
            up[0, :3, :3],
            down[0, :3, :3],
            "Mn",
            up[0],
            down[0],
            -1.0,
            1.0,
            species=["Mn", "O"],
        )
    with pytest.raises(ValueError, match="V p-site n_up .*shape \\(N, 3, 3\\)"):
        intersite_features("O", up[0], down[0], "Mn", up[0], down[0], 4.0, 1.0, species=["Mn", "O"])


@pytest.mark.parametrize("l", [1, 2])
def test_numpy_and_jax_paths_agree(l, rng, x64):
    # site_features computes in numpy (no XLA compiles); spin_features is the jit-able twin
    up, down = _sym(rng, 3, 2 * l + 1, 2 * l + 1), _sym(rng, 3, 2 * l + 1, 2 * l + 1)
    x = site_features(["Mn"] * 3, up, down, species=["Mn"], l=l)
    s, p = spin_features(occupations_qe_to_e3nn(up, l), occupations_qe_to_e3nn(down, l), l)
    np.testing.assert_allclose(x.array[:, 1:], np.concatenate([s.array, p.array], 1), atol=1e-12)
    assert x.irreps == site_irreps(1, l)
