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


# ---- derivatives with respect to global and per-node vector inputs (fields, moments) ----
#
# A *field energy* is ``energy(node_var, global_var) -> (n_graphs,)``: per-graph energies as a
# function of one per-node variable `(n_nodes, 3)` (positions, or nuclear moments mu_I) and
# one per-graph vector `(n_graphs, 3)` (electric field eps or magnetic field B). The mixed
# derivatives are taken at the given point (usually zero field) by
#
# - reverse mode over the per-node variable (one pass gives every atom), and
# - forward mode over the 3 components of the global vector (3 directions, vmapped),
#
# i.e. forward-over-reverse for second and forward-over-forward-over-reverse for third
# derivatives: the global vector has 3 components, the node variable 3 * n_nodes, so the
# forward passes stay O(1) in the system size. Second order pushes the 3 first-order
# tangents forward once more (3 + 9 tangents; 6 symmetric pairs would carry 6 + 6 + 6).
# `benchmarks/autodiff.py` measures both modes against energy + forces.

FieldEnergy = Callable[
    [Float[Array, "n_nodes 3"], Float[Array, "n_graphs 3"]], Float[Array, " n_graphs"]
]

_PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


def broadcast_to_nodes(graph: Graph, values: Float[Array, "n_graphs ..."]) -> Array:
    """Per-graph values repeated on each graph's nodes (zero on padding nodes)."""
    out = values[graph.node_graph]
    mask = graph.node_mask.reshape((-1,) + (1,) * (out.ndim - 1))
    return jnp.where(mask, out, 0)


def _directions(n_graphs: int, dtype) -> Float[Array, "3 n_graphs 3"]:
    # direction a moves component a of every graph's vector at once: graphs are independent
    return jnp.broadcast_to(jnp.eye(3, dtype=dtype)[:, None, :], (3, n_graphs, 3))


def mixed_derivatives(
    energy: FieldEnergy,
    node_var: Float[Array, "n_nodes 3"],
    global_var: Float[Array, "n_graphs 3"],
    *,
    order: int = 2,
    mode: str = "forward_over_reverse",
) -> dict[str, Array]:
    """Energy and its derivatives in a per-node and a per-graph vector variable.

    **Arguments:**

    - `energy`: ``energy(node_var, global_var) -> (n_graphs,)``; graph ``g``'s energy must
      depend only on its own nodes and its own ``global_var[g]``.
    - `node_var`: `(n_nodes, 3)` where to differentiate (positions, or moments).
    - `global_var`: `(n_graphs, 3)` (usually zeros).
    - `order`: 1 returns the first mixed derivative; 2 also the second order in the global
      variable.
    - `mode`: ``"forward_over_reverse"`` (default: one reverse pass over the node variable,
      pushed forward along 3 or 6 global directions) or ``"reverse_over_forward"`` (field
      derivatives of the energy first, then one reverse pass for each of them); same values,
      different cost (the recipe's ``--benchmark-autodiff`` measures both).

    **Returns:** a dict with

    - ``energy`` `(n_graphs,)`; ``d_node`` `(n_nodes, 3)` = dE/dx_i;
    - ``d_global`` `(n_graphs, 3)` = dE/dg;
    - ``d_global_node`` `(n_nodes, 3, 3)`: ``[i, a, k] = d2E / dg_a dx_ik``;
    - with ``order=2``: ``d_node_global_global`` `(n_nodes, 3, 3, 3)`:
      ``[i, k, a, b] = d3E / dx_ik dg_a dg_b`` (symmetric in a, b), and ``d_global_global``
      `(n_graphs, 3, 3)` = d2E/dg_a dg_b.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    if mode not in ("forward_over_reverse", "reverse_over_forward"):
        raise ValueError(
            f"mode must be 'forward_over_reverse' or 'reverse_over_forward', got {mode!r}"
        )
    if node_var.ndim != 2 or node_var.shape[-1] != 3:
        raise ValueError(f"node_var must have shape (n_nodes, 3), got {node_var.shape}")
    if global_var.ndim != 2 or global_var.shape[-1] != 3:
        raise ValueError(f"global_var must have shape (n_graphs, 3), got {global_var.shape}")

    def value_and_grad(g):
        # energy, dE/dglobal-independent pieces: one reverse pass over the node variable
        e, vjp = jax.vjp(lambda x: energy(x, g), node_var)
        (d_node,) = vjp(jnp.ones_like(e))
        return e, d_node

    dirs = _directions(global_var.shape[0], global_var.dtype)
    if mode == "reverse_over_forward":
        return _reverse_over_forward(energy, node_var, global_var, dirs, order)

    def firsts(g):
        # the 3 first field derivatives side by side: one tangent per field component
        return jax.vmap(lambda u: jax.jvp(value_and_grad, (g,), (u,)))(dirs)

    if order == 1:
        (e, d_node), (de, dd) = firsts(global_var)
        return {
            "energy": e[0],
            "d_node": d_node[0],
            "d_global": jnp.moveaxis(de, 0, -1),
            "d_global_node": jnp.moveaxis(dd, 0, 1),
        }
    # pushed forward once more along each component: 3 first-order tangents (vmap leaves them
    # unbatched over the outer direction) and 3 x 3 second-order ones; cheaper than 6
    # symmetric pairs that each carry their own two first-order tangents
    ((e, d_node), (de, dd)), (_, (dde, ddd)) = jax.vmap(
        lambda v: jax.jvp(firsts, (global_var,), (v,))
    )(dirs)
    return {
        "energy": e[0, 0],
        "d_node": d_node[0, 0],
        "d_global": jnp.moveaxis(de[0], 0, -1),
        "d_global_node": jnp.moveaxis(dd[0], 0, 1),
        # [b, a, ...] -> [..., a, b]
        "d_global_global": jnp.moveaxis(dde, (0, 1), (-1, -2)),
        "d_node_global_global": jnp.moveaxis(ddd, (0, 1), (-1, -2)),
    }


def _reverse_over_forward(energy, node_var, global_var, dirs, order: int) -> dict[str, Array]:
    """`mixed_derivatives` with the field derivatives taken first (forward), then one reverse
    pass over the node variable per field derivative."""
    pairs = _PAIRS if order == 2 else _PAIRS[:3]
    us = jnp.stack([dirs[a] for a, _ in pairs])
    vs = jnp.stack([dirs[b] for _, b in pairs])

    def field_terms(x, u, v):
        def inner(g):
            return jax.jvp(lambda g_: energy(x, g_), (g,), (u,))

        (e, de_u), (_, d2e) = jax.jvp(inner, (global_var,), (v,))
        return jnp.stack([e, de_u, d2e])  # (3, n_graphs)

    def with_grads(u, v):
        terms, vjp = jax.vjp(lambda x: field_terms(x, u, v), node_var)
        # one reverse pass per row (energy, first, second field derivative), summed over graphs
        rows = jnp.broadcast_to(jnp.eye(3, dtype=terms.dtype)[:, :, None], (3, *terms.shape))
        (grads,) = jax.vmap(vjp)(rows)  # (3, n_nodes, 3)
        return terms, grads

    terms, grads = jax.vmap(with_grads)(us, vs)  # (P, 3, G), (P, 3, N, 3)
    out = {
        "energy": terms[0, 0],
        "d_node": grads[0, 0],
        "d_global": jnp.moveaxis(terms[:3, 1], 0, -1),
        "d_global_node": jnp.moveaxis(grads[:3, 1], 0, 1),
    }
    if order == 2:
        sym = jnp.asarray([[0, 3, 4], [3, 1, 5], [4, 5, 2]])
        out["d_global_global"] = jnp.moveaxis(terms[:, 2][sym], (0, 1), (-2, -1))
        out["d_node_global_global"] = jnp.moveaxis(grads[:, 2][sym], (0, 1), (-2, -1))
    return out
