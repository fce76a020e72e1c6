"""OnsiteModel (U) and IntersiteModel (V): invariances, equivariant layers, config, scalers."""

import json

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.hubbard import fit_scalers
from zoo.hubbard._basis import wigner_d_qe
from zoo.hubbard._features import intersite_features, onsite_features, onsite_irreps
from zoo.hubbard._layers import TensorProduct, TensorSquare
from zoo.hubbard._models import (
    INTERSITE_TYPE,
    ONSITE_TYPE,
    IntersiteModel,
    OnsiteModel,
    intersite_input_irreps,
)

U_SPECIES = ["Fe", "Mn", "Ni"]
V_SPECIES = ["Fe", "Mn", "Ni", "O"]


def _occupations(rng, n, l, diag):
    """Realistic-looking symmetric occupation matrices: `diag` +- 5 % plus small couplings."""
    d = 2 * l + 1
    a = rng.normal(size=(n, d, d)) * 0.01
    return a + np.swapaxes(a, 1, 2) + np.diag(diag)[None] * (1 + 0.05 * rng.normal(size=(n, 1, 1)))


def _rotation(seed, proper=True):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    q = q * np.sign(np.linalg.det(q))
    return q if proper else -q


def _u_data(rng, n=16):
    up = _occupations(rng, n, 2, [0.99] * 5)
    down = _occupations(rng, n, 2, [0.1, 0.03, 0.03, 0.1, 0.03])
    elements = [U_SPECIES[i % 3] for i in range(n)]
    return elements, up, down, rng.uniform(0, 6, n), rng.uniform(3, 7, n)


def _v_data(rng, n=16):
    p_up, p_dn = _occupations(rng, n, 1, [0.88] * 3), _occupations(rng, n, 1, [0.86] * 3)
    d_up = _occupations(rng, n, 2, [0.99] * 5)
    d_dn = _occupations(rng, n, 2, [0.1, 0.03, 0.03, 0.1, 0.03])
    d_el = [U_SPECIES[i % 3] for i in range(n)]
    return ["O"] * n, p_up, p_dn, d_el, d_up, d_dn, rng.uniform(3.9, 4.4, n), rng.uniform(0, 2, n)


@jax.jit
def _predict_u(model, x):
    return model(x)


@jax.jit
def _predict_v(model, p, d, e):
    return model(p, d, e)


def _fitted_onsite(rng, dtype=None):
    elements, up, down, u_in, u_out = _u_data(rng)
    x = onsite_features(elements, up, down, u_in, species=U_SPECIES)
    model = OnsiteModel(U_SPECIES, dtype=dtype, key=jax.random.key(0))
    return fit_scalers(model, x, u_out), (elements, up, down, u_in)


def test_onsite_invariances(dtype):
    # one batch: originals, both spins rotated (proper and improper R), spins swapped
    rng = np.random.default_rng(0)
    model, (elements, up, down, u_in) = _fitted_onsite(rng)
    assert model.config["dtype"] == np.dtype(dtype).name
    n = 4
    rot_up, rot_down = [], []
    for i in range(n):
        d = wigner_d_qe(2, _rotation(i, proper=i % 2 == 0))
        rot_up.append(d @ up[i] @ d.T)
        rot_down.append(d @ down[i] @ d.T)
    all_up = np.concatenate([up[:n], np.array(rot_up), down[:n]])
    all_down = np.concatenate([down[:n], np.array(rot_down), up[:n]])
    x = onsite_features(elements[:n] * 3, all_up, all_down, np.tile(u_in[:n], 3), species=U_SPECIES)
    y = np.asarray(_predict_u(model, jnp.asarray(x.array, dtype)))
    assert y.shape == (3 * n,) and y.dtype == dtype
    tol = 1e-9 if dtype == np.float64 else 2e-4
    scale = np.abs(y).max()
    np.testing.assert_allclose(y[n : 2 * n], y[:n], atol=tol * scale)  # rotation
    np.testing.assert_allclose(y[2 * n :], y[:n], atol=tol * scale)  # spin swap
    assert np.ptp(y[:n]) > 1e-3  # the model is not a constant


def test_intersite_invariances(dtype):
    rng = np.random.default_rng(1)
    p_el, p_up, p_dn, d_el, d_up, d_dn, dist, v_in = _v_data(rng)
    model = IntersiteModel(V_SPECIES, dtype=dtype, key=jax.random.key(1))
    feats = intersite_features(p_el, p_up, p_dn, d_el, d_up, d_dn, dist, v_in, species=V_SPECIES)
    model = fit_scalers(model, feats, rng.uniform(0.5, 1.5, len(p_el)))
    n = 3
    rotated = [[], [], [], []]
    for i in range(n):
        rot = _rotation(10 + i, proper=i != 1)
        d1, d2 = wigner_d_qe(1, rot), wigner_d_qe(2, rot)  # one R for both sites
        for k, (m, d) in enumerate([(p_up, d1), (p_dn, d1), (d_up, d2), (d_dn, d2)]):
            rotated[k].append(d @ m[i] @ d.T)
    cat = lambda a, b, c: np.concatenate([a[:n], np.array(b), c[:n]])  # noqa: E731
    p, d, e = intersite_features(
        p_el[:n] * 3, cat(p_up, rotated[0], p_dn), cat(p_dn, rotated[1], p_up),
        d_el[:n] * 3, cat(d_up, rotated[2], d_dn), cat(d_dn, rotated[3], d_up),
        np.tile(dist[:n], 3), np.tile(v_in[:n], 3), species=V_SPECIES,
    )  # fmt: skip
    y = np.asarray(_predict_v(model, *(jnp.asarray(a.array, dtype) for a in (p, d, e))))
    assert y.shape == (3 * n,) and y.dtype == dtype
    tol = (1e-9 if dtype == np.float64 else 2e-4) * np.abs(y).max()
    np.testing.assert_allclose(y[n : 2 * n], y[:n], atol=tol)
    np.testing.assert_allclose(y[2 * n :], y[:n], atol=tol)
    assert np.ptp(y[:n]) > 1e-3


def test_intersite_bond_directions(dtype):
    """With bond harmonics (bond_lmax=4): rotating occupations *and* bond (proper, improper)
    or reversing the bond keeps V; rotating the bond alone changes it (it is an input)."""
    rng = np.random.default_rng(2)
    p_el, p_up, p_dn, d_el, d_up, d_dn, dist, v_in = _v_data(rng)
    bond = rng.normal(size=(len(p_el), 3))
    bond *= (dist / np.linalg.norm(bond, axis=1))[:, None]

    def feats(p_up, p_dn, d_up, d_dn, bond, k=len(p_el)):
        return intersite_features(
            p_el[:k], p_up, p_dn, d_el[:k], d_up, d_dn, dist[:k], v_in[:k],
            species=V_SPECIES, bond=bond, bond_lmax=4,
        )  # fmt: skip

    model = IntersiteModel(V_SPECIES, bond_lmax=4, dtype=dtype, key=jax.random.key(1))
    model = fit_scalers(model, feats(p_up, p_dn, d_up, d_dn, bond), rng.uniform(0.5, 1.5, 16))
    assert model.irreps_in["edge"] == e3nn.Irreps("2x0e+2e+4e")

    def v(*args):
        f = feats(*args, k=4)
        return np.asarray(_predict_v(model, *(jnp.asarray(a.array, dtype) for a in f)))

    y = v(p_up[:4], p_dn[:4], d_up[:4], d_dn[:4], bond[:4])
    tol = (1e-9 if dtype == np.float64 else 2e-4) * np.abs(y).max()
    rot = [_rotation(20 + i, proper=i % 2 == 0) for i in range(4)]
    turn = lambda m, l: np.array(
        [wigner_d_qe(l, r) @ x @ wigner_d_qe(l, r).T for r, x in zip(rot, m)]
    )  # noqa: E501, E731
    bond_rot = np.einsum("nab,nb->na", np.array(rot), bond[:4])
    occ = (turn(p_up[:4], 1), turn(p_dn[:4], 1), turn(d_up[:4], 2), turn(d_dn[:4], 2))
    np.testing.assert_allclose(v(*occ, bond_rot), y, atol=tol)
    np.testing.assert_allclose(v(p_up[:4], p_dn[:4], d_up[:4], d_dn[:4], -bond[:4]), y, atol=tol)
    moved = v(p_up[:4], p_dn[:4], d_up[:4], d_dn[:4], bond_rot)
    assert np.abs(moved - y).max() > 100 * tol
    with pytest.raises(ValueError, match="bond: the d -> p vectors are needed"):
        intersite_features(
            p_el, p_up, p_dn, d_el, d_up, d_dn, dist, v_in, species=V_SPECIES, bond_lmax=4
        )
    with pytest.raises(ValueError, match="finite and non-zero"):
        feats(p_up, p_dn, d_up, d_dn, np.zeros_like(bond))
    with pytest.raises(ValueError, match="bond_lmax must be an even integer"):
        IntersiteModel(V_SPECIES, bond_lmax=3, key=None)


@pytest.mark.parametrize("gate,squash", [(True, False), (False, False), (True, True)])
def test_layers_are_equivariant(gate, squash, x64):
    irreps = e3nn.Irreps("3x0e+1e+2x2e")
    out = "2x0e+1e+2e"
    rng = np.random.default_rng(3)
    x = e3nn.IrrepsArray(irreps, rng.normal(size=(2, irreps.dim)))
    y = e3nn.IrrepsArray("2x0e+2e", rng.normal(size=(2, 7)))
    key = jax.random.key(3)
    rot = _rotation(5)
    square = TensorSquare(irreps, out, "component", gate, key=key, squash=squash)
    prod = TensorProduct(irreps, "2x0e+2e", out, "norm", gate, key=key, squash=squash)
    for f, args in [(square, (x,)), (prod, (x, y))]:
        f = eqx.filter_jit(f)
        lhs = f(*(a.transform_by_matrix(rot) for a in args))
        out = f(*args)
        np.testing.assert_allclose(lhs.array, out.transform_by_matrix(rot).array, atol=1e-10)
        assert np.abs(lhs.array - out.array).max() > 1e-3  # non-scalars do rotate
        if squash:  # every irrep copy bounded by norm 1, even for huge inputs
            big = f(*(e3nn.IrrepsArray(a.irreps, 1e6 * a.array) for a in args))
            norms = [np.linalg.norm(c, axis=-1) for c in big.chunks if c is not None]
            assert max(n.max() for n in norms) <= 1 + 1e-12 and np.isfinite(big.array).all()


def test_config_roundtrip():
    rng = np.random.default_rng(2)
    model, (elements, up, down, u_in) = _fitted_onsite(rng)
    config = json.loads(json.dumps(model.config))  # JSON-safe
    assert config["model_type"] == ONSITE_TYPE and config["zoo_version"]
    skeleton = OnsiteModel.from_config(config)
    assert jax.tree_util.tree_structure(skeleton) == jax.tree_util.tree_structure(model)
    zeros = OnsiteModel.skeleton_from_config(config)  # what the loader fills: no random draw
    assert jax.tree_util.tree_structure(zeros) == jax.tree_util.tree_structure(model)
    assert all(not np.any(np.asarray(w)) for w in jax.tree_util.tree_leaves(zeros))
    loaded = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(skeleton), jax.tree_util.tree_leaves(model)
    )
    x = onsite_features(elements[:2], up[:2], down[:2], u_in[:2], species=U_SPECIES).array
    np.testing.assert_array_equal(_predict_u(loaded, x), _predict_u(model, x))
    shapes = eqx.filter_eval_shape(IntersiteModel.from_config, IntersiteModel(
        V_SPECIES, hidden_layers=3, key=jax.random.key(0)).config)  # fmt: skip
    assert shapes.config["model_type"] == INTERSITE_TYPE and len(shapes.layers) == 2


def test_fit_scalers_uses_given_targets_only():
    rng = np.random.default_rng(3)
    elements, up, down, u_in, u_out = _u_data(rng)
    x = onsite_features(elements, up, down, u_in, species=U_SPECIES)
    model = OnsiteModel(U_SPECIES, key=jax.random.key(0))
    fitted = fit_scalers(model, x, u_out, init_weights=False)
    assert fitted.config["target_mean"] == pytest.approx(u_out.mean())
    assert fitted.config["target_std"] == pytest.approx(u_out.std())
    stats = fitted.config["input_stats"]["x"]
    rms = np.sqrt((x.array**2).mean(0))
    np.testing.assert_allclose(stats["scale"][:3], 1 / rms[:3])  # one-hot columns
    np.testing.assert_allclose(stats["scale"][-1], 1 / np.sqrt(np.mean(u_in**2)))  # U_in
    np.testing.assert_allclose(stats["scale"][4:9], 1 / np.sqrt(np.mean(x.array[:, 4:9] ** 2)))
    assert stats["mean"] == [0.0] * 80
    for a, b in zip(jax.tree_util.tree_leaves(model), jax.tree_util.tree_leaves(fitted)):
        assert a is b  # same weights
    half = fit_scalers(model, x[:8], u_out[:8], init_weights=False)
    assert half.config["target_mean"] == pytest.approx(u_out[:8].mean())


def test_residual_models_predict_the_change_from_the_run_value():
    """``residual=True``: the same network plus U_in (V_in); scalers fit on label - U_in."""
    rng = np.random.default_rng(6)
    elements, up, down, u_in, u_out = _u_data(rng)
    x = onsite_features(elements, up, down, u_in, species=U_SPECIES).array
    direct = OnsiteModel(U_SPECIES, key=jax.random.key(0))
    resid = OnsiteModel(U_SPECIES, residual=True, key=jax.random.key(0))
    fitted = fit_scalers(resid, x, u_out)
    assert fitted.config["target_mean"] == pytest.approx((u_out - u_in).mean())
    assert fitted.config["target_std"] == pytest.approx((u_out - u_in).std())
    # same weights and scalers, the residual output is the direct one shifted by U_in
    same = fit_scalers(direct, x, u_out - u_in, init_weights=False)
    as_resid = fit_scalers(resid, x, u_out, init_weights=False)
    np.testing.assert_allclose(
        _predict_u(as_resid, x), _predict_u(same, x) + u_in, rtol=1e-5, atol=1e-5
    )
    p_el, p_up, p_dn, d_el, d_up, d_dn, dist, v_in = _v_data(rng)
    feats = intersite_features(
        p_el, p_up, p_dn, d_el, d_up, d_dn, dist, v_in, species=V_SPECIES
    )  # fmt: skip
    xs = tuple(f.array for f in feats)
    v_out = v_in + rng.normal(size=len(v_in)) * 0.05
    v = IntersiteModel(V_SPECIES, residual=True, key=jax.random.key(1))
    fitted_v = fit_scalers(v, xs, v_out, init_weights=False)
    assert fitted_v.config["target_mean"] == pytest.approx((v_out - v_in).mean())
    plain = IntersiteModel(V_SPECIES, key=jax.random.key(1))
    plain = fit_scalers(plain, xs, v_out - v_in, init_weights=False)
    np.testing.assert_allclose(
        _predict_v(fitted_v, *xs), _predict_v(plain, *xs) + v_in, rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="with_param_in=True"):
        OnsiteModel(U_SPECIES, residual=True, with_param_in=False, key=None)


def test_fit_scalers_data_dependent_init():
    # raw init: a chain of tensor squares gives outputs far beyond the target spread;
    # init_weights=True rescales each layer to unit pre-activation RMS on the training inputs
    rng = np.random.default_rng(5)
    elements, up, down, u_in, u_out = _u_data(rng, n=64)
    x = onsite_features(elements, up, down, u_in, species=U_SPECIES).array
    model = OnsiteModel(U_SPECIES, key=jax.random.key(0))
    raw = fit_scalers(model, x, u_out, init_weights=False)
    init = fit_scalers(model, x, u_out)
    spread = lambda m: np.sqrt(np.mean((np.asarray(_predict_u(m, x)) - u_out.mean()) ** 2))  # noqa: E731
    assert spread(raw) > 10 * u_out.std()
    assert 0.2 * u_out.std() < spread(init) < 5 * u_out.std()


def test_gradients_finite():
    rng = np.random.default_rng(4)
    model, (elements, up, down, u_in) = _fitted_onsite(rng)
    x = onsite_features(elements, up, down, u_in, species=U_SPECIES).array
    grads = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.mean((m(x) - 4.0) ** 2)))(model)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.isfinite(g).all() for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


def test_bad_inputs_and_configs():
    model = OnsiteModel(U_SPECIES, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"OnsiteModel input: expected shape \(\.\.\., 80\)"):
        model(jnp.zeros((2, 79)))
    with pytest.raises(ValueError, match="expected irreps"):
        model(e3nn.zeros(onsite_irreps(3, with_param_in=False), (2,)))
    with pytest.raises(ValueError, match="expected model_type 'hubbard-onsite'"):
        OnsiteModel.from_config({**model.config, "model_type": INTERSITE_TYPE})
    with pytest.raises(ValueError, match="distinct element symbols"):
        OnsiteModel(["Mn", "Mn"], key=jax.random.key(0))
    with pytest.raises(ValueError, match="hidden_layers"):
        IntersiteModel(V_SPECIES, hidden_layers=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="even-parity"):
        OnsiteModel(U_SPECIES, feature_irreps="4x0e+4x1o", key=jax.random.key(0))
    if not jax.config.jax_enable_x64:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            OnsiteModel(U_SPECIES, dtype=jnp.float64, key=jax.random.key(0))
    with pytest.raises(ValueError, match="input_stats"):
        OnsiteModel(U_SPECIES, input_stats={"x": {"mean": [0.0], "scale": [1.0]}}, key=None)
    with pytest.raises(ValueError, match="targets"):
        fit_scalers(model, np.zeros((1, 80)), [1.0])
    with pytest.raises(ValueError, match=r"\(p_site, d_site, edge\)"):
        fit_scalers(IntersiteModel(V_SPECIES, key=jax.random.key(0)), np.zeros((2, 80)), [1, 2])


@pytest.mark.parametrize("normalization", ["component", "norm"])
def test_dense_form_equals_the_path_form(normalization, x64):
    """The inference form (one bilinear contraction per layer) is the same function."""
    rng = np.random.default_rng(4)
    # jitted: one compile of each form (eager path form dispatches ~1,000 small ops)
    call = eqx.filter_jit(lambda m, *a, dense=None: m(*a, dense=dense))
    u = OnsiteModel(["Mn", "Ni"], irrep_normalization=normalization, key=jax.random.key(1))
    x = rng.normal(size=(3, u.irreps_in.dim))
    np.testing.assert_allclose(call(u, x, dense=u.dense_coefficients()), call(u, x), rtol=1e-10)
    v = IntersiteModel(["Mn", "O"], irrep_normalization=normalization, key=jax.random.key(2))
    irr = intersite_input_irreps(2)
    xs = [rng.normal(size=(3, irr[k].dim)) for k in ("p_site", "d_site", "edge")]
    np.testing.assert_allclose(call(v, *xs, dense=v.dense_coefficients()), call(v, *xs), rtol=1e-10)
