"""Graph building: neighbours, differentiable edge vectors, buckets and compile reuse."""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk
from ase.io import read
from ase.neighborlist import neighbor_list

from zoo.graph import bucket_size, build_graph
from zoo.nequip import NequIP, NequIPConfig

BTO = Path(__file__).parents[1] / "data/batio3/structures/cif/structure_00000.cif"


def bto_cell():
    return read(BTO)  # the repository's own data: a missing file fails the test


def test_bucket_rule():
    sizes = [bucket_size(n) for n in range(1, 5000)]
    assert sizes[0] == 8 and all(b >= n for n, b in zip(range(1, 5000), sizes))
    assert max(b / n for n, b in zip(range(8, 5000), sizes[7:])) <= 1.25 + 1e-9
    assert len(set(sizes)) <= 40  # a handful of shapes over three orders of magnitude
    assert bucket_size(135) == bucket_size(130) == 160


def test_edges_match_ase_neighbor_list():
    atoms = bulk("Si", "diamond", 5.43).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=1)
    g = build_graph(atoms, 4.0, pad=False)
    mask = np.asarray(g.edge_mask)
    ours = sorted(
        (int(i), int(j), *np.round(v.astype(float), 3).tolist())
        for i, j, v in zip(
            np.asarray(g.receivers)[mask],
            np.asarray(g.senders)[mask],
            np.asarray(g.edge_vectors())[mask],
        )
    )
    i, j, D = neighbor_list("ijD", atoms, 4.0)
    ref = sorted((int(a), int(b), *np.round(d, 3).tolist()) for a, b, d in zip(i, j, D))
    assert len(ours) == len(ref) and ours == ref


def test_edge_vectors_are_differentiable_in_positions_cell_and_strain():
    g = build_graph(bulk("Si", "diamond", 5.43), 3.0)
    f = lambda pos, cell, eps: jnp.sum(
        jnp.where(
            g.edge_mask,
            jnp.sum(eqx.tree_at(lambda x: x.cell, g, cell).edge_vectors(pos, eps) ** 2, -1),
            0,
        )
    )
    eps = jnp.zeros((g.n_graphs, 3, 3))
    dpos, dcell, deps = jax.grad(f, argnums=(0, 1, 2))(g.positions, g.cell, eps)
    # sum of |r|^2 over a full neighbour list: d/d eps = 2 sum r r^T (symmetric) != 0
    assert float(jnp.abs(deps[0]).max()) > 1.0 and float(jnp.abs(dcell[0]).max()) > 1.0
    np.testing.assert_allclose(
        np.asarray(dpos[:2]).sum(0), 0.0, atol=1e-3
    )  # translation invariance


def test_precomputed_neighbors_give_the_same_graph():
    from zoo._neighbors import neighbor_pairs
    from zoo.structure import as_structures

    items = as_structures([bulk("Si", "diamond", 5.43), bto_cell()])
    pairs = [neighbor_pairs(s, 4.0) for s in items]
    a, b = build_graph(items, 4.0), build_graph(items, 4.0, neighbors=pairs)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with pytest.raises(ValueError, match="neighbors: 1 lists for 2 structures"):
        build_graph(items, 4.0, neighbors=pairs[:1])


def test_too_small_capacity_refused():
    with pytest.raises(ValueError, match="n_edges=4 is too small"):
        build_graph(bulk("Si"), 3.0, n_edges=4)
    with pytest.raises(ValueError, match="r_max must be a positive"):
        build_graph(bulk("Si"), -1.0)


def test_nearby_sizes_reuse_the_compiled_model():
    """BaTiO3 135 atoms and its 2x2x2 repeat: a second structure of a nearby size does not
    recompile (the jitted body runs in Python only when it is traced)."""
    atoms = bto_cell()
    traces = []

    @eqx.filter_jit
    def forward(model, graph):
        traces.append(graph.n_nodes)
        return model(graph).array

    cfg = NequIPConfig(
        species=(8, 22, 56), r_max=5.0, channels=2, lmax=1, num_layers=1, radial_hidden=8
    )
    model = NequIP(cfg, key=jax.random.PRNGKey(0))
    big = atoms.repeat((2, 2, 2))
    smaller, big_smaller = atoms[:-2], big[:-5]
    smaller.rattle(0.01, seed=2)
    for s in (atoms, smaller, big, big_smaller):
        out = forward(model, build_graph(s, cfg.r_max))
        assert np.isfinite(np.asarray(out)).all()
    assert len(traces) == 2, f"expected 2 compilations (135 and 1,080 atoms), got {traces}"
