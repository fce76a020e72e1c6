"""Allegro: symmetries (f32 and f64), forces vs finite differences, per-edge outputs, padding,
strict locality, learning Born charges."""

import functools
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from test_mace import born_charge_batches, learn_born_charges, molecule, small_bto  # noqa: F401

from zoo.allegro import Allegro, AllegroConfig
from zoo.graph import build_graph
from zoo.response import energy_forces_stress, scalar_channel, total_energy
from zoo.testing import Output, check_symmetries, finite_difference_forces

RTOL = {np.float32: 1e-5, np.float64: 1e-10}
OUT = "2x0e+1x1o+1x1e+1x2e"


@functools.cache
def _build(dtype, items):
    base = dict(
        species=(8, 22, 56), r_max=4.5, lmax=2, channels=4, latent_dim=8, two_body_hidden=8,
        avg_num_neighbors=30.0, output_irreps=OUT,
    )  # fmt: skip
    cfg = AllegroConfig(**{**base, **dict(items)})
    return eqx.filter_jit(lambda key: Allegro(cfg, dtype=dtype, key=key))(jax.random.PRNGKey(1))


def make_model(dtype, **kw):
    return _build(np.dtype(dtype).type, tuple(sorted(kw.items())))


CALL = eqx.filter_jit(lambda m, g: m(g).array)
EDGES = eqx.filter_jit(lambda m, g: m.edge_outputs(g).array)


def predictor(model, dtype):
    def predict(s):
        g = build_graph(s, model.config.r_max, dtype=dtype, n_nodes=16, n_edges=2048)
        return {"nodes": np.asarray(CALL(model, g))[: len(s)]}

    return predict


@pytest.mark.parametrize("make", [small_bto, molecule])
def test_symmetries(dtype, make):
    model = make_model(dtype)
    predict = predictor(model, dtype)
    check_symmetries(predict, make(), {"nodes": Output(irreps=OUT)}, rtol=RTOL[dtype])
    assert np.abs(predict(make())["nodes"]).max() > 1e-3


def test_edge_outputs_rotate(dtype, rng):
    """Per-edge outputs are equivariant edge by edge (same edge order after a rotation)."""
    model = make_model(dtype)
    atoms = small_bto()
    g = build_graph(atoms, model.config.r_max, dtype=dtype, n_nodes=16, n_edges=2048)
    from zoo.testing import random_orthogonal

    for reflect in (False, True):
        R = random_orthogonal(rng, reflect)
        vecs = np.asarray(g.edge_vectors(), np.float64) @ R.T
        rotated = np.asarray(EDGES2(model, g, jnp.asarray(vecs, dtype)), np.float64)
        expected = Output(irreps=OUT).transform(R, np.asarray(EDGES(model, g), np.float64))
        err = np.abs(rotated - expected).max() / np.abs(expected).max()
        assert err < RTOL[dtype], err
    e = np.asarray(EDGES(model, g))
    assert np.all(e[~np.asarray(g.edge_mask)] == 0) and np.abs(e).max() > 1e-3


EDGES2 = eqx.filter_jit(lambda m, g, v: m.edge_outputs(g, v).array)


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


def test_forces_match_finite_differences(x64):
    model = make_model(np.float64, output_irreps="1x0e")
    atoms = small_bto(seed=3)
    g = build_graph(atoms, model.config.r_max, dtype=np.float64)
    node_energy = scalar_channel(model)
    res = jax.jit(energy_forces_stress, static_argnums=0)(node_energy, g)
    n = len(atoms)
    energy = jax.jit(lambda p: total_energy(node_energy, g, positions=p)[0])

    def energy_at(pos):
        return float(energy(jnp.asarray(g.positions).at[:n].set(pos)))

    fd = finite_difference_forces(energy_at, np.asarray(g.positions[:n]), h=1e-5)
    np.testing.assert_allclose(np.asarray(res["forces"][:n]), fd, rtol=1e-6, atol=1e-8)
    assert np.abs(fd).max() > 1e-4


def test_padding_does_not_change_outputs(dtype):
    model = make_model(dtype)
    atoms = small_bto()
    a = CALL(model, build_graph(atoms, model.config.r_max, dtype=dtype, n_nodes=16, n_edges=2048))
    b = CALL(model, build_graph(atoms, model.config.r_max, dtype=dtype, n_nodes=64, n_edges=4096))
    np.testing.assert_allclose(
        np.asarray(b[:5]), np.asarray(a[:5]), rtol=RTOL[dtype] * 10, atol=1e-6
    )
    assert np.all(np.asarray(b[5:]) == 0)


def test_strictly_local():
    """An atom beyond r_max of atom 0 changes nothing at atom 0, even when it is within r_max
    of atom 0's neighbours (a message-passing model would see it after two layers)."""
    model = make_model(np.float32)
    base = [[0, 0, 0], [3.0, 0, 0]]
    far = Atoms("OTiBa", positions=base + [[6.5, 0, 0]], pbc=False)
    farther = Atoms("OTiBa", positions=base + [[6.9, 0.5, 0]], pbc=False)
    a = predictor(model, np.float32)(far)["nodes"]
    b = predictor(model, np.float32)(farther)["nodes"]
    np.testing.assert_array_equal(a[0], b[0])
    assert np.abs(a[1] - b[1]).max() > 1e-6  # the middle atom does see the change


def test_config_round_trip_and_validation():
    cfg = AllegroConfig(species=(8, 22), channels=5)
    assert AllegroConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown Allegro config keys"):
        AllegroConfig.from_dict({**cfg.to_dict(), "chanels": 3})
    with pytest.raises(ValueError, match="raise lmax or set parity"):
        AllegroConfig(species=(8,), lmax=1, output_irreps="1x2e")
    with pytest.raises(ValueError, match="no node_inputs"):
        model = make_model(np.float32)
        g = build_graph(small_bto(), 4.5, n_nodes=16, n_edges=2048)
        model(g, node_inputs=jnp.zeros((16, 3)))


@pytest.mark.slow
def test_learns_born_charges():
    model = make_model(
        np.float32, channels=8, latent_dim=16, two_body_hidden=16, r_max=4.0,
        output_irreps="1x0e+1x1e+1x2e",
    )  # fmt: skip
    t0 = time.perf_counter()
    final, mean_mse, species_mse = learn_born_charges(model)
    print(
        f"Allegro Born charges: train MSE {final:.4f} e^2, mean predictor {mean_mse:.4f}, "
        f"per-species mean {species_mse:.4f} ({time.perf_counter() - t0:.0f} s)"
    )
    # the per-species mean is the bar that needs the environment (measured: 0.052 vs 0.46)
    assert final < 0.1 * mean_mse and final < 0.5 * species_mse
