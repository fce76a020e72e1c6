"""QE real harmonics -> e3nn-jax basis: closed forms, orthogonality, Wigner D, real QE data."""

from pathlib import Path

import e3nn_jax as e3nn
import jax
import numpy as np
import pytest

from zoo.hubbard._basis import (
    ORBITAL_IRREPS,
    e3nn_real_harmonics,
    occupations_qe_to_e3nn,
    orbital_l,
    qe_real_harmonics,
    qe_to_e3nn,
    wigner_d_qe,
)
from zoo.hubbard.dft.parsers import parse_occup

DATA = Path(__file__).resolve().parents[1] / "data" / "qe"


def _directions(n=50, seed=0):
    r = np.random.default_rng(seed).normal(size=(n, 3))
    return r / np.linalg.norm(r, axis=1, keepdims=True)


def _rotations(n=4, seed=0):
    # random orthogonal matrices (QR of Gaussians), alternately proper and improper
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        out.append(q * np.sign(np.linalg.det(q)) * (-1) ** i)
    return out


def test_qe_harmonics_closed_forms():
    # ylmr2.f90 with the Condon-Shortley phase: p = (z, -x, -y), d = (z2, -xz, -yz, x2-y2, xy)
    r = _directions()
    x, y, z = r.T
    p = np.sqrt(3 / (4 * np.pi)) * np.stack([z, -x, -y], axis=1)
    np.testing.assert_allclose(qe_real_harmonics(1, r), p, atol=1e-14)
    c = np.sqrt(15 / (4 * np.pi))
    d = np.stack(
        [
            np.sqrt(5 / (16 * np.pi)) * (3 * z**2 - 1),
            -c * x * z,
            -c * y * z,
            c / 2 * (x**2 - y**2),
            c * x * y,
        ],
        axis=1,
    )
    np.testing.assert_allclose(qe_real_harmonics(2, r), d, atol=1e-14)
    np.testing.assert_allclose(qe_real_harmonics(0, r), np.full((50, 1), 0.5 / np.sqrt(np.pi)))


@pytest.mark.parametrize("l", [0, 1, 2, 3])
def test_qe_harmonics_orthonormal(l):
    # Gauss-Legendre in cos(theta) x uniform phi integrates these polynomials exactly
    ct, w = np.polynomial.legendre.leggauss(8)
    phi = np.arange(16) * 2 * np.pi / 16
    st = np.sqrt(1 - ct**2)
    r = np.stack(
        [np.outer(st, np.cos(phi)), np.outer(st, np.sin(phi)), np.outer(ct, np.ones(16))], -1
    ).reshape(-1, 3)
    weights = np.repeat(w, 16) * 2 * np.pi / 16
    y = qe_real_harmonics(l, r)
    np.testing.assert_allclose(y.T @ (weights[:, None] * y), np.eye(2 * l + 1), atol=1e-12)


@pytest.mark.parametrize("l", [0, 1, 2, 3])
def test_change_of_basis_orthogonal_and_exact(l):
    c = qe_to_e3nn(l)
    np.testing.assert_allclose(c @ c.T, np.eye(2 * l + 1), atol=1e-13)
    r = _directions(seed=7)
    np.testing.assert_allclose(qe_real_harmonics(l, r) @ c.T, e3nn_real_harmonics(l, r), atol=1e-13)
    from zoo.hubbard._basis import _fit_change_of_basis

    np.testing.assert_allclose(c, _fit_change_of_basis(l), atol=1e-12)  # tabulated == fitted


def test_change_of_basis_p_is_signed_permutation():
    # e3nn-jax 0.21 l=1 is (x, y, z); QE's p is (z, -x, -y)
    np.testing.assert_allclose(qe_to_e3nn(1), [[0, -1, 0], [0, 0, -1], [1, 0, 0]], atol=1e-14)


def test_change_of_basis_d_is_not_a_permutation():
    # e3nn-jax's l >= 2 harmonics use y as the polar axis: QE's z2 mixes two e3nn components
    c = qe_to_e3nn(2)
    assert np.count_nonzero(np.abs(c[:, 0]) > 1e-12) == 2
    np.testing.assert_allclose(np.sort(np.abs(c[:, 0])), [0, 0, 0, 0.5, np.sqrt(3) / 2], atol=1e-14)


@pytest.mark.parametrize("l", [1, 2, 3])
def test_wigner_d_qe_matches_e3nn(l, x64):
    c = qe_to_e3nn(l)
    for rot in _rotations():
        d_qe = wigner_d_qe(l, rot)
        d_e3 = np.asarray(e3nn.Irrep(ORBITAL_IRREPS[l]).D_from_matrix(rot))
        np.testing.assert_allclose(c @ d_qe @ c.T, d_e3, atol=1e-12)


@pytest.mark.parametrize("l", [1, 2])
def test_occupation_rotation_commutes(l, rng, x64):
    # rotating the crystal: n_qe -> D_qe n D_qe^T; in e3nn's basis that is D_e3nn n D_e3nn^T
    a = rng.normal(size=(2 * l + 1, 2 * l + 1))
    n = a + a.T
    for rot in _rotations(seed=3):
        d_qe, d_e3 = (
            wigner_d_qe(l, rot),
            np.asarray(e3nn.Irrep(ORBITAL_IRREPS[l]).D_from_matrix(rot)),
        )
        lhs = np.asarray(occupations_qe_to_e3nn(d_qe @ n @ d_qe.T, l))
        rhs = d_e3 @ np.asarray(occupations_qe_to_e3nn(n, l)) @ d_e3.T
        np.testing.assert_allclose(lhs, rhs, atol=1e-12)


def _mno_occupations():
    occ = parse_occup((DATA / "MnO.occup.txt").read_text(), nat=4)
    return occ[:, :, 0]  # on-site blocks [spin, atom, m1, m2]


def _axis_rotation(axis, angle):
    # Rodrigues' formula
    k = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


@pytest.mark.parametrize("atom,l", [(0, 2), (1, 2), (2, 1)])
def test_real_qe_occupations_keep_site_symmetry(atom, l, x64):
    # AFM-II MnO (tests/data/qe, QE 6.7): the Mn and O sites have D3d symmetry about [111].
    # In e3nn's basis the converted occupations must be invariant under e3nn's D of C3[111] and
    # C2[1-10]. A wrong sign convention (no Condon-Shortley phase = a C2z conjugation) would
    # move the axis to [-1,-1,1], which is NOT a symmetry: that must fail by far.
    n = _mno_occupations()[:, atom, : 2 * l + 1, : 2 * l + 1]
    n_e3 = np.asarray(occupations_qe_to_e3nn(n, l))
    irrep = e3nn.Irrep(ORBITAL_IRREPS[l])

    def residual(rot):
        d = np.asarray(irrep.D_from_matrix(rot))
        return np.abs(d @ n_e3 @ d.T - n_e3).max()

    assert residual(_axis_rotation([1, 1, 1], 2 * np.pi / 3)) < 1e-10
    assert residual(_axis_rotation([1, -1, 0], np.pi)) < 1e-10
    assert residual(_axis_rotation([-1, -1, 1], 2 * np.pi / 3)) > 1e-4
    assert residual(_axis_rotation([0, 0, 1], np.pi / 2)) > 1e-4


def test_conversion_keeps_dtype_and_batches(rng):
    n = rng.normal(size=(4, 2, 5, 5)).astype(np.float32)
    out = occupations_qe_to_e3nn(n, 2)
    assert out.shape == (4, 2, 5, 5) and out.dtype == np.float32
    with jax.enable_x64(True):
        assert occupations_qe_to_e3nn(n.astype(np.float64), 2).dtype == np.float64


def test_bad_inputs():
    with pytest.raises(ValueError, match="l must be"):
        qe_to_e3nn(4)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 5, 5\)"):
        occupations_qe_to_e3nn(np.zeros((3, 3)), 2)
    with pytest.raises(ValueError, match="orthogonal"):
        wigner_d_qe(1, np.ones((3, 3)))
    with pytest.raises(ValueError, match="zero vectors"):
        qe_real_harmonics(1, np.zeros((1, 3)))
    assert orbital_l(5) == 2 and orbital_l(3) == 1
    with pytest.raises(ValueError, match="2l\\+1"):
        orbital_l(4)
