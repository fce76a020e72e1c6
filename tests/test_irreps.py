"""Cartesian <-> irreps conversions: round trips, equivariance (rotations and reflections), data."""

from pathlib import Path

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import irreps as zi

BATIO3 = Path(__file__).resolve().parents[1] / "data" / "batio3"
EXPECTED_IRREPS = {
    "rank2": "1x0e+1x1e+1x2e",
    "rank2_axial": "1x0e+1x1e+1x2e",
    "symmetric2": "1x0e+1x2e",
    "raman": "2x1o+1x2o+1x3o",
    "chi2": "2x1o+1x2o+1x3o",
}
TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    if request.param is np.float64:
        with jax.enable_x64(True):
            yield np.float64
    else:
        yield np.float32


def symmetrise(kind, a):
    """The kind's index symmetry, written independently of zoo.irreps."""
    if kind == "symmetric2":
        return (a + np.swapaxes(a, -1, -2)) / 2
    if kind == "raman":
        return (a + np.swapaxes(a, -1, -2)) / 2
    if kind == "chi2":
        return (a + np.swapaxes(a, -3, -2)) / 2
    return a


def random_tensor(kind, batch, seed=0, dtype=np.float64):
    rank = 3 if kind in ("raman", "chi2") else 2
    a = np.random.default_rng(seed).normal(size=batch + (3,) * rank)
    return symmetrise(kind, a).astype(dtype)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)


def test_kinds_and_irreps():
    assert zi.KINDS == tuple(EXPECTED_IRREPS)
    for kind, irreps in EXPECTED_IRREPS.items():
        assert zi.irreps_of(kind) == e3nn.Irreps(irreps)
        rank = 3 if kind in ("raman", "chi2") else 2
        assert zi.cartesian_shape(kind) == (3,) * rank


@pytest.mark.parametrize("kind", zi.KINDS)
def test_round_trip_cartesian(kind, dtype):
    cart = random_tensor(kind, (4, 2), dtype=dtype)
    x = zi.to_irreps(kind, cart)
    assert x.irreps == zi.irreps_of(kind)
    assert x.shape == (4, 2, zi.irreps_of(kind).dim) and x.dtype == dtype
    back = zi.to_cartesian(kind, x)
    assert back.shape == cart.shape and back.dtype == dtype
    assert rel_err(back, cart) <= TOL[dtype]
    # the basis is orthonormal: the Frobenius norm is preserved
    norms = np.linalg.norm(cart.reshape(4, 2, -1).astype(np.float64), axis=-1)
    assert rel_err(np.linalg.norm(np.asarray(x.array, np.float64), axis=-1), norms) <= TOL[dtype]


@pytest.mark.parametrize("kind", zi.KINDS)
def test_round_trip_irreps(kind, dtype):
    dim = zi.irreps_of(kind).dim
    vec = np.random.default_rng(1).normal(size=(5, dim)).astype(dtype)
    cart = zi.to_cartesian(kind, vec)  # plain arrays are accepted too
    assert rel_err(symmetrise(kind, np.asarray(cart)), cart) <= TOL[dtype]  # has the symmetry
    back = zi.to_irreps(kind, cart)
    assert back.dtype == dtype
    assert rel_err(back.array, vec) <= TOL[dtype]


def rotations(seed):
    # float64 rotation from a QR decomposition (e3nn.rand_matrix returns float32 even under x64)
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    R = q * np.sign(np.diag(r))
    R[:, 0] *= np.linalg.det(R)  # make it proper
    mirror = np.diag([1.0, 1.0, -1.0])
    return {"proper": R, "inversion": -R, "mirror": mirror @ R}


@pytest.mark.parametrize("kind", zi.KINDS)
@pytest.mark.parametrize("which", ["proper", "inversion", "mirror"])
def test_equivariance(kind, which, dtype):
    R = rotations(3)[which].astype(dtype)
    assert np.isclose(np.linalg.det(R), -1.0 if which != "proper" else 1.0)
    cart = random_tensor(kind, (3,), seed=2, dtype=dtype)
    lhs = zi.to_irreps(kind, zi.rotate_cartesian(kind, cart, R))
    rhs = zi.to_irreps(kind, cart).transform_by_matrix(jnp.asarray(R))
    assert rel_err(lhs.array, rhs.array) <= 10 * TOL[dtype]
    # same check through the representation matrix
    D = zi.irreps_of(kind).D_from_matrix(jnp.asarray(R))
    rhs2 = zi.to_irreps(kind, cart).array @ D.T
    assert rel_err(lhs.array, rhs2) <= 10 * TOL[dtype]


def test_parity_matters():
    """Labelling the Raman irreps with the wrong parity breaks equivariance under a reflection."""
    with jax.enable_x64(True):
        R = rotations(4)["mirror"]
        cart = random_tensor("raman", (2,), seed=5)
        lhs = zi.to_irreps("raman", zi.rotate_cartesian("raman", cart, R)).array
        right = zi.to_irreps("raman", cart)
        wrong = e3nn.IrrepsArray("2x1e+1x2e+1x3e", right.array)
        assert rel_err(lhs, right.transform_by_matrix(R).array) < 1e-12
        assert rel_err(lhs, wrong.transform_by_matrix(R).array) > 0.1


def test_rotate_cartesian_rank2_is_r_t_rt():
    with jax.enable_x64(True):
        R = rotations(6)["mirror"]
        T = random_tensor("rank2", (), seed=7)
        for kind in ("rank2", "rank2_axial"):
            assert rel_err(zi.rotate_cartesian(kind, T, R), R @ T @ R.T) < 1e-13


def test_rank2_normalisation():
    """0e = trace/sqrt(3); 1e = (T_yz - T_zy, T_zx - T_xz, T_xy - T_yx)/sqrt(2), antisymmetric."""
    with jax.enable_x64(True):
        T = random_tensor("rank2", (6,), seed=8)
        for kind in ("rank2", "rank2_axial"):
            x = zi.to_irreps(kind, T)
            assert rel_err(x.array[..., 0], np.trace(T, axis1=-2, axis2=-1) / np.sqrt(3)) < 1e-13
            A = (T - np.swapaxes(T, -1, -2)) / 2
            axial = np.stack([A[..., 1, 2], A[..., 2, 0], A[..., 0, 1]], -1) * np.sqrt(2)
            assert rel_err(x.array[..., 1:4], axial) < 1e-13
            # the antisymmetric part alone maps to the 1e block only
            xa = zi.to_irreps(kind, A).array
            assert np.max(np.abs(xa[..., [0, 4, 5, 6, 7, 8]])) < 1e-13
        # symmetric2 agrees with the 0e and 2e blocks of rank2 on a symmetric tensor
        S = random_tensor("symmetric2", (6,), seed=9)
        full = zi.to_irreps("rank2", S).array
        assert rel_err(zi.to_irreps("symmetric2", S).array, full[..., [0, 4, 5, 6, 7, 8]]) < 1e-13


def test_real_batio3_tensors():
    with jax.enable_x64(True):
        raman = np.load(BATIO3 / "raman_tensors" / "00000.npy")  # (135, 3, 3, 3)
        chi2 = np.load(BATIO3 / "nlo_susceptibilities" / "00000.npy")  # (3, 3, 3)
        born = np.load(BATIO3 / "born_charges" / "00000.npy")  # (135, 3, 3)
        eps = np.load(BATIO3 / "dielectric" / "00000.npy")
        for kind, t in (("raman", raman), ("chi2", chi2), ("rank2", born), ("symmetric2", eps)):
            x = zi.to_irreps(kind, t)
            assert x.shape == t.shape[: t.ndim - len(zi.cartesian_shape(kind))] + (x.irreps.dim,)
            # eps_inf is symmetric only to ~1e-7 relative: the round trip projects that away
            tol = 1e-6 if kind == "symmetric2" else 1e-12
            assert rel_err(zi.to_cartesian(kind, x), t) < tol
        # chi(2) is symmetric in (i, j) but not in (j, k): the raman kind refuses it
        with pytest.raises(ValueError, match="ijk=ikj"):
            zi.to_irreps("raman", chi2)
        with pytest.raises(ValueError, match="ijk=jik"):
            zi.to_irreps("chi2", raman)
        # Born charges are not symmetric: the 1e part is non-zero and symmetric2 refuses them
        assert np.max(np.abs(zi.to_irreps("rank2", born).array[..., 1:4])) > 1e-3
        with pytest.raises(ValueError, match="symmetric2"):
            zi.to_irreps("symmetric2", born)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown tensor kind 'born'.*rank2.*chi2"):
        zi.to_irreps("born", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="unknown tensor kind"):
        zi.irreps_of("rank4")
    with pytest.raises(ValueError, match=r"cart: kind 'raman'.*got shape \(5, 3, 3\)"):
        zi.to_irreps("raman", np.zeros((5, 3, 3)))
    with pytest.raises(ValueError, match="cart: kind 'rank2'"):
        zi.to_irreps("rank2", jnp.zeros((3,)))
    bad = np.random.default_rng(0).normal(size=(2, 3, 3))
    with pytest.raises(ValueError, match=r"cart: kind 'symmetric2'.*batch index \(\d,\)"):
        zi.to_irreps("symmetric2", bad)
    with pytest.raises(ValueError, match="x: kind 'raman' expects irreps"):
        zi.to_cartesian("raman", e3nn.IrrepsArray("0e+1e+2e", jnp.zeros(9)))
    with pytest.raises(ValueError, match=r"x: kind 'symmetric2'.*\(\*batch, 6\)"):
        zi.to_cartesian("symmetric2", jnp.zeros((2, 9)))
    with pytest.raises(ValueError, match="R: expected shape"):
        zi.rotate_cartesian("rank2", np.eye(3), np.eye(2))


def test_jax_input_is_projected():
    """A non-symmetric jax array is projected onto the symmetric subspace (documented)."""
    with jax.enable_x64(True):
        bad = np.random.default_rng(0).normal(size=(2, 3, 3, 3))
        for kind in ("raman", "chi2"):
            back = zi.to_cartesian(kind, zi.to_irreps(kind, jnp.asarray(bad)))
            assert rel_err(back, symmetrise(kind, bad)) < 1e-13


def test_integer_input_and_irreps_rechunked():
    x = zi.to_irreps("rank2", np.eye(3, dtype=np.int32))
    assert jnp.issubdtype(x.dtype, jnp.floating)
    assert np.allclose(x.array[0], np.sqrt(3)) and np.allclose(x.array[1:], 0, atol=1e-7)
    vec = e3nn.IrrepsArray("1o+1o+2o+3o", jnp.ones(18))
    assert zi.to_cartesian("raman", vec).shape == (3, 3, 3)


def test_jit_and_grad(dtype):
    kind = "raman"
    cart = random_tensor(kind, (2,), seed=11, dtype=dtype)
    f = jax.jit(lambda t: zi.to_irreps(kind, t).array)
    assert rel_err(f(cart), zi.to_irreps(kind, cart).array) <= TOL[dtype]
    # |Q^T t|^2 has gradient 2 Q Q^T t = 2 * (symmetric projection of t)
    raw = np.random.default_rng(12).normal(size=cart.shape).astype(dtype)
    g = jax.grad(lambda t: jnp.sum(zi.to_irreps(kind, t).array ** 2))(jnp.asarray(raw))
    assert g.dtype == dtype
    assert rel_err(g, 2 * symmetrise(kind, raw)) <= 10 * TOL[dtype]
    g2 = jax.grad(lambda v: jnp.sum(zi.to_cartesian(kind, v) ** 2))(jnp.ones(18, dtype))
    assert rel_err(g2, 2 * np.ones(18)) <= 10 * TOL[dtype]
