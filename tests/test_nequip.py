"""NequIP: symmetries (f32 and f64), forces and stress against finite differences, padding."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from zoo.graph import build_graph
from zoo.nequip import NequIP, NequIPConfig
from zoo.response import energy_forces_stress, scalar_channel, total_energy
from zoo.testing import Output, check_symmetries, finite_difference_forces

RTOL = {np.float32: 1e-5, np.float64: 1e-10}
OUT = "2x0e+1x1o+1x1e+1x2e+1x2o+1x3o"


def small_bto(seed=0, rattle=0.1):
    a = 4.0
    atoms = Atoms(
        "BaTiO3",
        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        cell=np.eye(3) * a + np.random.default_rng(seed).normal(scale=0.1, size=(3, 3)),
        pbc=True,
    )
    atoms.rattle(rattle, seed=seed)
    return atoms


def molecule():
    return Atoms("OTiBa", positions=[[0, 0, 0], [1.9, 0.1, 0.2], [-0.3, 2.7, 0.4]], pbc=False)


def make_model(dtype, output_irreps="1x0e+1x1o", lmax=1, **kw):
    cfg = NequIPConfig(
        species=(8, 22, 56), r_max=4.5, channels=4, lmax=lmax, num_layers=2, radial_hidden=16,
        output_irreps=output_irreps, avg_num_neighbors=30.0, **kw,
    )  # fmt: skip
    return NequIP(cfg, dtype=dtype, key=jax.random.PRNGKey(1))


def predictor(model, dtype):
    call = eqx.filter_jit(lambda m, g: m(g).array)

    def predict(s):
        # fixed capacity: every rotated/permuted copy reuses one compiled function
        g = build_graph(s, model.config.r_max, dtype=dtype, n_nodes=16, n_edges=2048)
        return {"nodes": np.asarray(call(model, g))[: len(s)]}

    return predict


@pytest.mark.parametrize("make", [small_bto, molecule])
def test_symmetries(dtype, make):
    model = make_model(dtype, OUT, lmax=3)
    errors = check_symmetries(
        predictor(model, dtype), make(), {"nodes": Output(irreps=OUT)}, rtol=RTOL[dtype]
    )
    assert errors  # the checks ran
    out = predictor(model, dtype)(make())["nodes"]
    assert np.abs(out).max() > 1e-3  # a zero output would pass every symmetry check


def test_energy_forces_stress_symmetries(dtype):
    model = make_model(dtype, output_irreps="1x0e")
    efs = eqx.filter_jit(lambda m, g: energy_forces_stress(scalar_channel(m), g))

    def predict(s):
        g = build_graph(s, model.config.r_max, dtype=dtype, n_nodes=16, n_edges=2048)
        r = efs(model, g)
        return {
            "energy": np.asarray(r["energy"][:1]),
            "forces": np.asarray(r["forces"])[: len(s)],
            "stress": np.asarray(r["stress"][0]),
        }

    outputs = {
        "energy": Output(irreps="0e", per_atom=False, extensive=True),
        "forces": Output(cartesian_rank=1),
        "stress": Output(cartesian_rank=2, per_atom=False),
    }
    check_symmetries(predict, small_bto(), outputs, rtol=10 * RTOL[dtype])


def test_forces_and_stress_match_finite_differences(x64):
    model = make_model(np.float64, output_irreps="1x0e")
    atoms = small_bto(seed=3)
    g = build_graph(atoms, model.config.r_max, dtype=np.float64)
    node_energy = scalar_channel(model)
    res = energy_forces_stress(node_energy, g)
    n = len(atoms)
    energy = jax.jit(lambda p, e: total_energy(node_energy, g, positions=p, strain=e)[0])
    zero = jnp.zeros((g.n_graphs, 3, 3))

    def energy_at(pos):
        return float(energy(jnp.asarray(g.positions).at[:n].set(pos), zero))

    fd = finite_difference_forces(energy_at, np.asarray(g.positions[:n]), h=1e-5)
    np.testing.assert_allclose(np.asarray(res["forces"][:n]), fd, rtol=1e-6, atol=1e-8)
    assert np.abs(fd).max() > 1e-3

    # stress: central differences of E over a symmetric strain, divided by the volume
    fd_stress = np.zeros((3, 3))
    h = 1e-6
    for a in range(3):
        for b in range(3):
            eps = np.zeros((g.n_graphs, 3, 3))
            eps[0, a, b] = eps[0, b, a] = h / (2 if a != b else 1)
            ep = float(energy(g.positions, jnp.asarray(eps)))
            em = float(energy(g.positions, -jnp.asarray(eps)))
            fd_stress[a, b] = (ep - em) / (2 * h) / atoms.get_volume()
    np.testing.assert_allclose(np.asarray(res["stress"][0]), fd_stress, rtol=1e-6, atol=1e-9)


def test_forces_change_with_cell_derivative_consistent(x64):
    """Stress from the strain derivative equals -(1/V) (sum_i r_i x F_i + cell-gradient term)."""
    model = make_model(np.float64, output_irreps="1x0e")
    atoms = small_bto(seed=5)
    g = build_graph(atoms, model.config.r_max, dtype=np.float64)
    node_energy = scalar_channel(model)

    def energy_of_cell(cell):
        return total_energy(node_energy, eqx.tree_at(lambda x: x.cell, g, cell))[0]

    dE_dcell = jax.jit(jax.grad(energy_of_cell))(g.cell)[0]
    res = jax.jit(energy_forces_stress, static_argnums=0)(node_energy, g)
    n = len(atoms)
    # x' = x F^T and cell' = cell F^T, so dE/dF = (dE/dx)^T x + (dE/dcell)^T cell
    grad_pos = -np.asarray(res["forces"][:n])
    expected = grad_pos.T @ np.asarray(g.positions[:n]) + np.asarray(dE_dcell).T @ np.asarray(
        g.cell[0]
    )
    expected = 0.5 * (expected + expected.T) / atoms.get_volume()
    np.testing.assert_allclose(np.asarray(res["stress"][0]), expected, rtol=1e-8, atol=1e-12)


def test_padding_does_not_change_outputs(dtype):
    model = make_model(dtype)
    call = eqx.filter_jit(lambda m, g: m(g).array)
    atoms = small_bto()
    a = call(model, build_graph(atoms, model.config.r_max, dtype=dtype, pad=False))[:5]
    b = call(model, build_graph(atoms, model.config.r_max, dtype=dtype, n_nodes=64, n_edges=4096))
    np.testing.assert_allclose(np.asarray(b[:5]), np.asarray(a), rtol=RTOL[dtype] * 10, atol=1e-6)
    assert np.all(np.asarray(b[5:]) == 0)


def test_batch_equals_separate(dtype):
    model = make_model(dtype)
    call = eqx.filter_jit(lambda m, g: m(g).array)
    s1, s2 = small_bto(1), molecule()
    size = dict(dtype=dtype, n_nodes=16, n_edges=2048)
    both = call(model, build_graph([s1, s2], model.config.r_max, **size))
    one = call(model, build_graph(s1, model.config.r_max, **size))[:5]
    two = call(model, build_graph(s2, model.config.r_max, **size))[:3]
    np.testing.assert_allclose(np.asarray(both[:5]), np.asarray(one), atol=1e-5)
    np.testing.assert_allclose(np.asarray(both[5:8]), np.asarray(two), atol=1e-5)


def test_isolated_atom_has_defined_output():
    model = make_model(np.float32, output_irreps="1x0e+1x1o")
    far = Atoms("OBa", positions=[[0, 0, 0], [20, 0, 0]], pbc=False)
    g = build_graph(far, model.config.r_max)
    assert int(g.edge_mask.sum()) == 0
    res = eqx.filter_jit(lambda m, g: energy_forces_stress(scalar_channel(m), g))(model, g)
    out = np.asarray(eqx.filter_jit(lambda m, g: m(g).array)(model, g)[:2])
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(np.asarray(res["forces"])))
    np.testing.assert_allclose(out[:, 1:], 0.0, atol=1e-7)  # no neighbours: vectors vanish
    assert out[0, 0] != out[1, 0]  # scalar still depends on the species


def test_gradients_finite_on_padded_graph():
    model = make_model(np.float32, output_irreps="1x0e")
    g = build_graph([small_bto(), molecule()], model.config.r_max)

    def loss(m):
        return jnp.sum(energy_forces_stress(scalar_channel(m), g)["forces"] ** 2)

    grads = eqx.filter_jit(eqx.filter_grad(loss))(model)
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array))
    assert leaves and all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


def test_output_irreps_beyond_hidden_features_refused():
    with pytest.raises(ValueError, match="raise lmax or set parity"):
        NequIPConfig(species=(8,), lmax=1, output_irreps="1x2e")
    with pytest.raises(ValueError, match="needs 1x1e|1e"):
        NequIPConfig(species=(8,), lmax=2, parity=False, output_irreps="1x1e")


def test_config_round_trip_and_validation():
    cfg = NequIPConfig(species=(8, 22), channels=5)
    assert NequIPConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown NequIP config keys"):
        NequIPConfig.from_dict({**cfg.to_dict(), "chanels": 3})
    with pytest.raises(ValueError, match="species"):
        NequIPConfig(species=(8, 8))
    with pytest.raises(ValueError, match="r_max"):
        NequIPConfig(species=(8,), r_max=-1.0)


def test_si_bulk_runs_with_small_cell():
    """A cell smaller than r_max: many periodic images of the same atom are neighbours."""
    cfg = NequIPConfig(species=(14,), r_max=5.0, channels=4, lmax=1, num_layers=1)
    model = NequIP(cfg, key=jax.random.PRNGKey(0))
    g = build_graph(bulk("Si"), cfg.r_max)
    out = eqx.filter_jit(lambda m, g: m(g).array)(model, g)
    assert np.all(np.isfinite(np.asarray(out))) and int(g.edge_mask.sum()) > 50
