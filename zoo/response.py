"""Derivatives of a learned energy: forces and stress by ``jax.grad``, never by hand.

An *energy function* here is ``node_energy(graph, edge_vectors) -> (n_nodes,)`` per-atom
energies (eV); the total energy of each graph is their masked sum. Everything below is a
pure function of it, so any architecture plugs in.
"""

from __future__ import annotations

from collections.abc import Callable

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .graph import Graph

NodeEnergy = Callable[[Graph, Float[Array, "n_edges 3"]], Float[Array, " n_nodes"]]


def graph_sum(
    graph: Graph, node_values: Float[Array, "n_nodes ..."]
) -> Float[Array, "n_graphs ..."]:
    """Masked per-graph sum of per-node values."""
    mask = graph.node_mask.reshape((-1,) + (1,) * (node_values.ndim - 1))
    return jax.ops.segment_sum(
        jnp.where(mask, node_values, 0), graph.node_graph, num_segments=graph.n_graphs
    )


def scalar_channel(model) -> NodeEnergy:
    """Per-node energy from the first 0e channel of a model's irreps output."""

    def node_energy(graph: Graph, vectors):
        out: e3nn.IrrepsArray = model(graph, vectors)
        return out.filter(keep="0e").array[:, 0]

    return node_energy


def total_energy(
    node_energy: NodeEnergy,
    graph: Graph,
    positions: Float[Array, "n_nodes 3"] | None = None,
    strain: Float[Array, "n_graphs 3 3"] | None = None,
) -> Float[Array, " n_graphs"]:
    """Energy per graph as a differentiable function of positions and strain."""
    return graph_sum(graph, node_energy(graph, graph.edge_vectors(positions, strain)))


def energy_forces_stress(node_energy: NodeEnergy, graph: Graph) -> dict[str, Array]:
    """Energy, forces and stress in one reverse pass.

    **Returns:** ``energy`` `(n_graphs,)` eV, ``forces`` `(n_nodes, 3)` eV/Å = -dE/dr,
    ``stress`` `(n_graphs, 3, 3)` eV/Å^3 = (1/V) dE/d(strain) (ASE's sign convention;
    zero for non-periodic and padding graphs).
    """
    strain = jnp.zeros((graph.n_graphs, 3, 3), graph.positions.dtype)

    def energy_sum(positions, strain):
        energy = total_energy(node_energy, graph, positions, strain)
        return jnp.sum(jnp.where(graph.graph_mask, energy, 0)), energy

    (_, energy), (d_pos, d_strain) = jax.value_and_grad(energy_sum, argnums=(0, 1), has_aux=True)(
        graph.positions, strain
    )
    periodic = (graph.graph_mask & graph.pbc.all(axis=-1))[:, None, None]
    stress = jnp.where(periodic, d_strain / graph.volume()[:, None, None], 0.0)
    forces = jnp.where(graph.node_mask[:, None], -d_pos, 0.0)
    return {"energy": energy, "forces": forces, "stress": stress}
