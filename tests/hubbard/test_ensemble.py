"""HubbardEnsemble: the mean of its members, invariant as they are, saved and loaded whole."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo._serialization import save_pretrained
from zoo.hubbard import IntersiteModel, OnsiteModel, fit_scalers
from zoo.hubbard._basis import wigner_d_qe
from zoo.hubbard._ensemble import HubbardEnsemble
from zoo.hubbard._features import intersite_features, onsite_features
from zoo.hubbard._infer import predict_u, predict_v
from zoo.hubbard._predict import HubbardUV

U_SPECIES, V_SPECIES = ["Mn", "Ni"], ["Mn", "Ni", "O"]
SMALL_U = {"feature_irreps": "2x0e+2x2e", "hidden_layers": 1, "residual": True}
SMALL_V = {"feature_irreps": "2x0e+2x1e+2x2e", "hidden_layers": 1}


def _occ(rng, n, diag):
    a = rng.normal(size=(n, len(diag), len(diag))) * 0.01
    return a + np.swapaxes(a, 1, 2) + np.diag(diag)[None] * (1 + 0.05 * rng.normal(size=(n, 1, 1)))


def _rotation(seed, proper):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    q = q * np.sign(np.linalg.det(q))
    return q if proper else -q


def _data(rng, n=8):
    u = (["Mn", "Ni"] * n)[:n], _occ(rng, n, [0.99] * 5), _occ(rng, n, [0.1, 0.03, 0.03, 0.1, 0.03])
    p = ["O"] * n, _occ(rng, n, [0.88] * 3), _occ(rng, n, [0.86] * 3)
    return u, p, rng.uniform(3.9, 4.4, n), rng.uniform(0, 6, n), rng.uniform(0.2, 1.5, n)


def _ensembles(dtype, n_members=3):
    rng = np.random.default_rng(0)
    (el, up, dn), (p_el, p_up, p_dn), dist, u_in, v_in = _data(rng)
    x = onsite_features(el, up, dn, u_in, species=U_SPECIES).array
    feats = tuple(
        f.array
        for f in intersite_features(
            p_el, p_up, p_dn, el, up, dn, dist, v_in, species=V_SPECIES
        )  # fmt: skip
    )
    u_members = [
        fit_scalers(
            OnsiteModel(U_SPECIES, dtype=dtype, key=jax.random.key(i), **SMALL_U), x, u_in + 0.3
        )
        for i in range(n_members)
    ]
    v_members = [
        fit_scalers(
            IntersiteModel(V_SPECIES, dtype=dtype, key=jax.random.key(10 + i), **SMALL_V),
            feats,
            v_in * 0.8 + 0.2,
        )  # fmt: skip
        for i in range(n_members)
    ]
    return HubbardEnsemble(u_members), HubbardEnsemble(v_members), x, feats


def test_ensemble_is_the_mean_of_its_members(dtype):
    u, v, x, feats = _ensembles(dtype)
    assert u.config["model_type"] == "hubbard-ensemble" and u.config["n_members"] == 3
    assert u.config["species"] == U_SPECIES and u.config["member_type"] == "hubbard-onsite"
    forward = eqx.filter_jit(lambda m, *a: m(*a))
    got_u, got_v = np.asarray(forward(u, x)), np.asarray(forward(v, *feats))
    members_u = np.array([np.asarray(forward(m, x)) for m in u.members])
    members_v = np.array([np.asarray(forward(m, *feats)) for m in v.members])
    tol = 1e-10 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got_u, members_u.mean(0), rtol=tol, atol=tol)
    np.testing.assert_allclose(got_v, members_v.mean(0), rtol=tol, atol=tol)
    assert np.ptp(members_u, axis=0).max() > 1e-3  # the members differ: a real mean
    # the numpy inference path (what `predict` uses) answers the same
    tol = 1e-9 if dtype == np.float64 else 5e-5
    np.testing.assert_allclose(predict_u(u, np.asarray(x)), got_u, rtol=tol, atol=tol)
    np.testing.assert_allclose(predict_v(v, *map(np.asarray, feats)), got_v, rtol=tol, atol=tol)


def test_ensemble_invariances(dtype):
    """Rotations and reflections of the occupations (one R for both sites), spin swap."""
    u, v, _, _ = _ensembles(dtype)
    rng = np.random.default_rng(0)
    (el, up, dn), (p_el, p_up, p_dn), dist, u_in, v_in = _data(rng)
    n = 4
    rots = [_rotation(i, proper=i % 2 == 0) for i in range(n)]
    d2 = [wigner_d_qe(2, r) for r in rots]
    d1 = [wigner_d_qe(1, r) for r in rots]
    rot = lambda m, ds: np.array([d @ a @ d.T for d, a in zip(ds, m[:n])])  # noqa: E731
    cat = lambda a, b, c: np.concatenate([a[:n], b, c[:n]])  # noqa: E731
    all_up, all_dn = cat(up, rot(up, d2), dn), cat(dn, rot(dn, d2), up)
    x = onsite_features(el[:n] * 3, all_up, all_dn, np.tile(u_in[:n], 3), species=U_SPECIES)
    feats = intersite_features(
        p_el[:n] * 3, cat(p_up, rot(p_up, d1), p_dn), cat(p_dn, rot(p_dn, d1), p_up),
        el[:n] * 3, all_up, all_dn, np.tile(dist[:n], 3), np.tile(v_in[:n], 3), species=V_SPECIES,
    )  # fmt: skip
    forward = eqx.filter_jit(lambda m, *a: m(*a))
    tol = 1e-9 if dtype == np.float64 else 2e-4
    for y in (
        np.asarray(forward(u, jnp.asarray(x.array, dtype))),
        np.asarray(forward(v, *(jnp.asarray(f.array, dtype) for f in feats))),
    ):
        scale = np.abs(y).max()
        np.testing.assert_allclose(y[n : 2 * n], y[:n], atol=tol * scale)  # rotation
        np.testing.assert_allclose(y[2 * n :], y[:n], atol=tol * scale)  # spin swap
        assert np.ptp(y[:n]) > 1e-4


def test_ensemble_folders_roundtrip(tmp_path):
    u, v, x, feats = _ensembles(np.float32, n_members=2)
    save_pretrained(HubbardUV(u, v), tmp_path / "uv", card="# test\n")
    save_pretrained(v, tmp_path / "v", card="# test\n")
    uv = zoo.load(tmp_path / "uv")
    assert isinstance(uv.u_model, HubbardEnsemble) and isinstance(uv.v_model, HubbardEnsemble)
    np.testing.assert_array_equal(predict_u(uv.u_model, np.asarray(x)), predict_u(u, np.asarray(x)))
    loaded_v = zoo.load(tmp_path / "v")
    arrays = tuple(map(np.asarray, feats))
    np.testing.assert_array_equal(predict_v(loaded_v, *arrays), predict_v(v, *arrays))


def test_ensemble_refuses_mismatched_members():
    a = OnsiteModel(U_SPECIES, key=jax.random.key(0))
    other = OnsiteModel(["Fe", "Ni"], key=jax.random.key(1))
    with pytest.raises(ValueError, match=r"member 1 differs from member 0 in \['species'\]"):
        HubbardEnsemble([a, other])
    with pytest.raises(ValueError, match="differs from member 0"):
        HubbardEnsemble([a, IntersiteModel(V_SPECIES, key=jax.random.key(0))])
    with pytest.raises(ValueError, match="at least one member"):
        HubbardEnsemble([])
    config = HubbardEnsemble([a, a]).config
    with pytest.raises(ValueError, match="n_members >= 1"):
        HubbardEnsemble.from_config({**config, "n_members": 0})
    with pytest.raises(ValueError, match="expected model_type 'hubbard-ensemble'"):
        HubbardEnsemble.from_config(a.config)
    assert len(HubbardEnsemble.skeleton_from_config(config).members) == 2
