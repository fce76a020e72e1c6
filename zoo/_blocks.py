"""Building blocks shared by the architectures: radial basis, radial MLP, the edge embedding
(harmonics, radial basis, envelope), the sum of edge messages over neighbours, the initial
node features and the gate layout."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .graph import Graph

ACTIVATIONS = {"silu": jax.nn.silu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}


def activation(name: str):
    """Activation by name (names keep configs JSON-safe)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


def polynomial_envelope(x: Float[Array, ...], p: int) -> Float[Array, ...]:
    """Smooth cutoff u_p(x) of Klicpera et al. on x = r / r_max: 1 at 0, zero with its first
    two derivatives at 1, and 0 beyond."""
    return jnp.where(x < 1.0, e3nn.poly_envelope(p - 1, 2)(x), 0.0)


def edge_lengths_and_directions(
    vectors: Float[Array, "n_edges 3"], edge_mask: Bool[Array, " n_edges"]
) -> tuple[Float[Array, " n_edges"], Float[Array, "n_edges 3"]]:
    """Lengths and a NaN-safe copy of the vectors: padding edges (zero vectors) are replaced
    by a unit vector so that norms and their gradients stay finite."""
    safe = jnp.where(edge_mask[:, None], vectors, jnp.array([1.0, 0.0, 0.0], vectors.dtype))
    return jnp.linalg.norm(safe, axis=-1), safe


def radial_embedding(
    lengths: Float[Array, " n_edges"], num_basis: int, r_max: float, p: int
) -> Float[Array, "n_edges num_basis"]:
    """Bessel basis times the polynomial envelope; vanishes smoothly at `r_max`."""
    basis = e3nn.bessel(lengths, num_basis, r_max)
    return basis * polynomial_envelope(lengths / r_max, p)[:, None]


class EdgeEmbedding(NamedTuple):
    """What every architecture computes first from the edge vectors.

    `sh` `(n_edges, 0e+1o+...+lmax)` component-normalised spherical harmonics of the
    directions; `radial` `(n_edges, num_basis)` Bessel basis times the envelope; `envelope`
    `(n_edges,)` the smooth cutoff. `radial` and `envelope` are zero on padding edges.
    """

    sh: e3nn.IrrepsArray
    radial: Float[Array, "n_edges num_basis"]
    envelope: Float[Array, " n_edges"]


def embed_edges(
    graph: Graph,
    edge_vectors: Float[Array, "n_edges 3"] | None,
    *,
    lmax: int,
    num_basis: int,
    r_max: float,
    envelope_p: int,
    dtype,
) -> EdgeEmbedding:
    """The shared edge embedding; `edge_vectors` default to ``graph.edge_vectors()`` (pass
    them to differentiate with respect to positions or strain)."""
    if edge_vectors is None:
        edge_vectors = graph.edge_vectors()
    lengths, safe = edge_lengths_and_directions(edge_vectors.astype(dtype), graph.edge_mask)
    sh = e3nn.spherical_harmonics(
        e3nn.Irreps.spherical_harmonics(lmax), safe, normalize=True, normalization="component"
    )
    radial = radial_embedding(lengths, num_basis, r_max, envelope_p) * graph.edge_mask[:, None]
    envelope = polynomial_envelope(lengths / r_max, envelope_p) * graph.edge_mask
    return EdgeEmbedding(sh, radial, envelope)


def edges_in_chunks(n_edges: int, chunk: int) -> bool:
    """Whether :func:`sum_edge_messages` loops over chunks of `chunk` edges."""
    return 0 < chunk < n_edges


def sum_edge_messages(
    message: Callable[..., Float[Array, "n_edges ..."]],
    edge_inputs: tuple[Array, ...],
    receivers: Int[Array, " n_edges"],
    n_nodes: int,
    chunk: int,
) -> Float[Array, "n_nodes ..."]:
    """``out[i] = sum of message(*edge_inputs)[e] over the edges e with receivers[e] == i``.

    `message` maps per-edge arrays (leading axis `n_edges`, the order of `edge_inputs`) to
    per-edge messages and must give zero messages on all-zero inputs (padding). Up to `chunk`
    edges (or with `chunk` 0) it runs once over all edges. Above, a loop over equal chunks
    of at most `chunk` edges, each rematerialised in the backward pass, adds them in edge
    order into one accumulator: memory then grows with the atoms, not with edges x message
    size; results equal the single pass's up to rounding.
    """
    n_edges = receivers.shape[0]
    if any(v.shape[0] != n_edges for v in edge_inputs):
        raise ValueError(f"edge inputs of {[v.shape[0] for v in edge_inputs]} edges, "
                         f"receivers of {n_edges}")  # fmt: skip
    if not edges_in_chunks(n_edges, chunk):
        return jax.ops.segment_sum(message(*edge_inputs), receivers, num_segments=n_nodes)
    n_chunks = -(-n_edges // chunk)
    chunk = -(-n_edges // n_chunks)  # equal chunks: little padding (50,192 -> 2 x 25,096)
    pad = n_chunks * chunk - n_edges  # zero inputs, zero messages, added to node 0

    def split(v):
        v = jnp.concatenate([v, jnp.zeros((pad,) + v.shape[1:], v.dtype)])
        return v.reshape((n_chunks, chunk) + v.shape[1:])

    def body(acc, xs):
        *inputs, rcv = xs
        return acc.at[rcv].add(jax.checkpoint(message)(*inputs), mode="drop"), None

    xs = tuple(split(v) for v in (*edge_inputs, receivers))
    shape = jax.eval_shape(message, *(v[0] for v in xs[:-1]))
    acc = jnp.zeros((n_nodes,) + shape.shape[1:], shape.dtype)
    return jax.lax.scan(body, acc, xs)[0]


def initial_node_features(
    embedding: Float[Array, "n_species channels"],
    species: Int[Array, " n_nodes"],
    node_inputs: e3nn.IrrepsArray | None,
    expected: str,
    owner: str,
) -> e3nn.IrrepsArray:
    """Species embedding `(n_nodes, channels x 0e)`, with the configured extra per-node inputs
    (irreps `expected`, e.g. a field ``1x1o``) concatenated; `owner` names the model in errors."""
    h = e3nn.IrrepsArray(f"{embedding.shape[1]}x0e", embedding[species])
    irreps = e3nn.Irreps(expected)
    if irreps.dim:
        if node_inputs is None or node_inputs.irreps != irreps:
            got = None if node_inputs is None else node_inputs.irreps
            raise ValueError(f"node_inputs must have irreps {irreps}, got {got}")
        return e3nn.concatenate([h, node_inputs.astype(embedding.dtype)]).regroup()
    if node_inputs is not None:
        raise ValueError(f"this {owner} has node_input_irreps='' but node_inputs were given")
    return h


def gated_irreps(irreps: e3nn.Irreps) -> e3nn.Irreps:
    """Scalars, then one 0e gate per non-scalar irrep, then the non-scalars (e3nn.gate's order)."""
    scalars = irreps.filter(keep=["0e", "0o"])
    vectors = irreps.filter(drop=["0e", "0o"])
    gates = e3nn.Irreps(f"{vectors.num_irreps}x0e") if vectors.num_irreps else e3nn.Irreps("")
    return scalars + gates + vectors


def gate(x: e3nn.IrrepsArray, act: str) -> e3nn.IrrepsArray:
    """e3nn's gate: `act` on even scalars and even gates, tanh on odd ones."""
    return e3nn.gate(
        x, even_act=activation(act), odd_act=jnp.tanh, even_gate_act=jax.nn.sigmoid,
        odd_gate_act=jnp.tanh,
    )  # fmt: skip


class RadialMLP(eqx.Module):
    """Scalar MLP on the radial basis giving per-edge tensor-product weights.

    Weights are stored with unit variance and scaled by 1/sqrt(fan_in) in the forward pass,
    so the initial outputs are O(1) whatever the widths.
    """

    weights: tuple[Float[Array, "fan_in fan_out"], ...]
    act: str = eqx.field(static=True)

    def __init__(self, sizes: tuple[int, ...], act: str = "silu", *, dtype, key):
        activation(act)
        keys = jax.random.split(key, len(sizes) - 1)
        self.weights = tuple(
            jax.random.normal(k, (a, b), dtype) for k, a, b in zip(keys, sizes[:-1], sizes[1:])
        )
        self.act = act

    def __call__(self, x: Float[Array, "... fan_in"]) -> Float[Array, "... fan_out"]:
        f = e3nn.normalize_function(activation(self.act))
        for k, w in enumerate(self.weights):
            x = x @ w / jnp.sqrt(w.shape[0]).astype(x.dtype)
            if k < len(self.weights) - 1:
                x = f(x)
        return x


def linear(irreps_in, irreps_out, *, dtype, key, **kwargs) -> e3nn.equinox.Linear:
    """e3nn-jax's equivariant Linear with the dtype passed through (it defaults to f32)."""
    return e3nn.equinox.Linear(
        irreps_in=e3nn.Irreps(irreps_in),
        irreps_out=e3nn.Irreps(irreps_out),
        input_dtype=dtype,
        key=key,
        **kwargs,
    )
