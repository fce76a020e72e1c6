"""NequIP (Batzner et al., Nat. Commun. 13, 2453 (2022)) as an Equinox module.

Graph in, per-node irreps out. Each interaction layer: a linear mixing of the node features,
a tensor product of the neighbours' features with the edge spherical harmonics weighted per
path by a radial MLP, a sum over neighbours (divided by sqrt(avg_num_neighbors)), a linear
map plus a species-indexed self-connection, and a gated nonlinearity.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar, NamedTuple

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ._arch_config import MAX_IRREPS_DIM, ArchitectureConfig
from ._blocks import (
    RadialMLP,
    embed_edges,
    gate,
    gated_irreps,
    initial_node_features,
    linear,
    sum_edge_messages,
)
from ._dtype import resolve_float
from ._sh_tensor_product import channelwise_tensor_product, to_components
from .graph import Graph, species_indices


@dataclasses.dataclass(frozen=True)
class NequIPConfig(ArchitectureConfig):
    """Hyperparameters of :class:`NequIP` (JSON-safe; stored in ``config.json``).

    Attributes:
        species: atomic numbers the model knows, in embedding order.
        r_max: cutoff radius (Å). Default 5.0.
        num_layers: interaction layers. Default 3.
        channels: multiplicity of every hidden irrep. Default 32.
        lmax: highest rotation order of hidden features and edge harmonics. Default 2.
        parity: keep both parities of every l (full O(3) features: needed for axial outputs
            such as the 1e part of Born charges). ``False`` keeps only (-1)^l. Default True.
        num_basis: Bessel radial functions. Default 8.
        envelope_p: exponent of the polynomial cutoff envelope. Default 6.
        radial_hidden, radial_layers: radial MLP width and hidden layers. Default 64, 2.
        avg_num_neighbors: messages are summed and divided by its square root; a data
            statistic (set it from the training set). Default 20.0.
        output_irreps: per-node output irreps, e.g. ``"1x0e"`` for energies. Default "1x0e".
        node_input_irreps: extra per-node inputs concatenated to the species embedding
            (e.g. ``"1x1o"`` for an electric field). Default "" (none).
        activation: activation of even scalars (odd ones use tanh). Default "silu".
        edge_chunk: see :class:`~zoo._arch_config.ArchitectureConfig`.
    """

    species: tuple[int, ...]
    r_max: float = 5.0
    num_layers: int = 3
    channels: int = 32
    lmax: int = 2
    parity: bool = True
    num_basis: int = 8
    envelope_p: int = 6
    radial_hidden: int = 64
    radial_layers: int = 2
    avg_num_neighbors: float = 20.0
    output_irreps: str = "1x0e"
    node_input_irreps: str = ""
    activation: str = "silu"

    ARCHITECTURE: ClassVar[str] = "nequip"
    LIMITS: ClassVar[dict[str, tuple[int, int]]] = {
        "num_layers": (1, 16), "channels": (1, 1024), "lmax": (0, 6), "num_basis": (1, 128),
        "envelope_p": (2, 32), "radial_hidden": (1, 4096), "radial_layers": (0, 16),
    }  # fmt: skip
    IRREPS_FIELDS: ClassVar[tuple[str, ...]] = ("output_irreps", "node_input_irreps")
    NODE_INPUTS: ClassVar[bool] = True

    def check(self) -> None:
        if self.hidden_irreps.dim > MAX_IRREPS_DIM * 4:
            raise ValueError(f"channels={self.channels} with lmax={self.lmax} gives hidden "
                             f"features of dimension {self.hidden_irreps.dim}: too large")  # fmt: skip
        missing = [ir for _, ir in e3nn.Irreps(self.output_irreps) if ir not in self.hidden_irreps]
        if missing:
            raise ValueError(
                f"output_irreps {self.output_irreps} needs {missing[0]}, but the hidden features "
                f"stop at {self.hidden_irreps}: raise lmax or set parity=True"
            )

    @property
    def hidden_irreps(self) -> e3nn.Irreps:
        # unsorted (0e, 0o, 1e, 1o, ...): the order of the shipped weights
        parities = (1, -1) if self.parity else (None,)
        irs = []
        for l in range(self.lmax + 1):
            for p in parities:
                irs.append((self.channels, (l, p if p is not None else (-1) ** l)))
        return e3nn.Irreps(irs)

    @property
    def feature_irreps(self) -> e3nn.Irreps:
        return self.hidden_irreps


class InteractionLayer(eqx.Module):
    """One NequIP interaction: convolution, self-connection and gate.

    `__call__(h, species, sh, radial, senders, receivers)` with `h` `(n_nodes, irreps_in)`,
    `species` `(n_nodes,)`, `sh` `(n_edges, irreps_sh)`, `radial` `(n_edges, num_basis)`
    (zero on padding edges) -> `(n_nodes, irreps_out)`.
    """

    linear_up: e3nn.equinox.Linear
    radial_mlp: RadialMLP
    linear_down: e3nn.equinox.Linear
    self_connection: e3nn.equinox.Linear
    irreps_in: e3nn.Irreps = eqx.field(static=True)
    irreps_out: e3nn.Irreps = eqx.field(static=True)
    irreps_messages: e3nn.Irreps = eqx.field(static=True)
    avg_num_neighbors: float = eqx.field(static=True)
    act: str = eqx.field(static=True)
    edge_chunk: int = eqx.field(static=True)

    def __init__(
        self, irreps_in, irreps_out, irreps_sh, n_species, cfg: NequIPConfig, *, dtype, key
    ):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.irreps_in = e3nn.Irreps(irreps_in)
        self.avg_num_neighbors = float(cfg.avg_num_neighbors)
        self.act = cfg.activation
        self.edge_chunk = int(cfg.edge_chunk)
        self.irreps_messages = e3nn.tensor_product(
            self.irreps_in, e3nn.Irreps(irreps_sh), filter_ir_out=e3nn.Irreps(irreps_out)
        ).regroup()
        # keep only the hidden irreps that this layer's messages can actually produce
        self.irreps_out = e3nn.Irreps(irreps_out).filter(keep=self.irreps_messages)
        self.linear_up = linear(self.irreps_in, self.irreps_in, dtype=dtype, key=k1)
        sizes = (cfg.num_basis,) + (cfg.radial_hidden,) * cfg.radial_layers
        self.radial_mlp = RadialMLP(
            sizes + (self.irreps_messages.num_irreps,), cfg.activation, dtype=dtype, key=k2
        )
        gated = gated_irreps(self.irreps_out).simplify()
        self.linear_down = linear(
            self.irreps_messages, gated, dtype=dtype, key=k3, force_irreps_out=True
        )
        self.self_connection = linear(
            self.irreps_in, gated, dtype=dtype, key=k4,
            linear_type="indexed", num_indexed_weights=n_species, force_irreps_out=True,
        )  # fmt: skip

    def __call__(self, h, species, sh, radial, senders, receivers) -> e3nn.IrrepsArray:
        x = self.linear_up(h)
        # e3nn.tensor_product(x[senders], sh).regroup() * radial weights, computed channel by
        # channel on component-major slabs (no dense CG einsum per edge); same parameters
        plan = _message_plan(str(x.irreps), str(sh.irreps), str(self.irreps_out))
        # the radial MLP's last columns reordered once as the groups consume them
        last = self.radial_mlp.weights[-1][:, jnp.asarray(plan.weight_order)]
        mlp = eqx.tree_at(lambda m: m.weights[-1], self.radial_mlp, last)
        comps = [_take(x, g) for g in plan.groups]

        def messages(sh_c, radial_c, snd_c):
            w = mlp(radial_c)
            y = e3nn.IrrepsArray(sh.irreps, sh_c)
            out, start = [], 0
            for g, xc in zip(plan.groups, comps):
                wg = w[:, start : start + g.n_paths * g.mul].reshape(-1, g.n_paths, g.mul)
                tp = channelwise_tensor_product(xc[snd_c], g.irreps, y, self.irreps_out, wg)
                out.append(tp.reshape(tp.shape[0], -1))
                start += g.n_paths * g.mul
            return jnp.concatenate(out, axis=1)

        inputs = (sh.array, radial, senders)
        # recomputed in the backward pass: storing the per-edge products costs more than
        # computing them again (memory-bound on CPU)
        messages = jax.checkpoint(messages)
        summed = sum_edge_messages(messages, inputs, receivers, h.shape[0], self.edge_chunk)
        summed = e3nn.IrrepsArray(self.irreps_messages, _message_layout(plan, summed))
        summed = summed / jnp.sqrt(self.avg_num_neighbors).astype(summed.dtype)
        out = (self.linear_down(summed) + self.self_connection(species, h)) / jnp.sqrt(2.0)
        return gate(out, self.act)


class _Group(NamedTuple):
    """Input irreps of one multiplicity: their positions in the input, their irreps, the
    number of products (paths) they enter and the size of those products."""

    mul: int
    index: tuple[int, ...]
    irreps: e3nn.Irreps
    n_paths: int
    dim: int


class _Plan(NamedTuple):
    """How :func:`~zoo._sh_tensor_product.channelwise_tensor_product` reproduces
    ``e3nn.tensor_product(x, sh, filter_ir_out=keep).regroup() * w``: the input groups,
    `weight_order` (the columns of `w` in the order the groups consume them: group, path,
    channel) and `blocks` (per output block of e3nn's regrouped layout, in order: the group,
    the offset of the block in that group's flattened component-major output and its
    ``(dim, mul)`` shape)."""

    groups: tuple[_Group, ...]
    weight_order: tuple[int, ...]
    blocks: tuple[tuple[int, int, int, int], ...]


@functools.lru_cache(maxsize=64)
def _message_plan(irreps_x: str, irreps_sh: str, keep: str) -> _Plan:
    x, sh = e3nn.Irreps(irreps_x), e3nn.Irreps(irreps_sh)
    keep_set = {ir for _, ir in e3nn.Irreps(keep)}
    # e3nn's products in its order: (x irrep, sh irrep, output irrep)
    products = [(i, mul, ir3) for i, (mul, ir1) in enumerate(x) for _, ir2 in sh
                for ir3 in ir1 * ir2 if ir3 in keep_set]  # fmt: skip
    order = e3nn.Irreps([(mul, ir3) for _, mul, ir3 in products]).sort().inv
    weight_start = {}  # product -> its first weight column (regrouped order)
    start = 0
    for k in order:
        weight_start[k] = start
        start += products[k][1]
    groups, weight_order, where = [], [], {}
    for mul in sorted({m for m, _ in x}):
        index = tuple(i for i, (m, _) in enumerate(x) if m == mul)
        mine = [k for k, (i, _, _) in enumerate(products) if i in index]
        if not mine:
            continue
        g, offset = len(groups), 0
        for k in mine:  # channelwise_tensor_product emits them in e3nn's order too
            where[k] = (g, offset, products[k][2].dim, mul)
            offset += products[k][2].dim * mul
            weight_order += range(weight_start[k], weight_start[k] + mul)
        irreps = e3nn.Irreps([x[i] for i in index])
        groups.append(_Group(mul, index, irreps, len(mine), offset))
    return _Plan(tuple(groups), tuple(weight_order), tuple(where[k] for k in order))


def _take(x: e3nn.IrrepsArray, group: _Group) -> Float[Array, "n dim mul"]:
    """The group's irreps of `x` in component-major layout."""
    slices = x.irreps.slices()
    array = jnp.concatenate([x.array[:, slices[i]] for i in group.index], axis=1)
    return to_components(e3nn.IrrepsArray(group.irreps, array))


def _message_layout(plan: _Plan, summed: Float[Array, "n total"]) -> Float[Array, "n dim"]:
    """Per-group component-major sums -> e3nn's regrouped ``(mul, dim)`` message layout."""
    starts = [0]
    for g in plan.groups[:-1]:
        starts.append(starts[-1] + g.dim)
    n = summed.shape[0]
    blocks = []
    for g, offset, d, mul in plan.blocks:
        block = summed[:, starts[g] + offset : starts[g] + offset + d * mul].reshape(n, d, mul)
        blocks.append(block.transpose(0, 2, 1).reshape(n, mul * d))
    return jnp.concatenate(blocks, axis=1)


class NequIP(eqx.Module):
    """NequIP: :class:`~zoo.graph.Graph` -> per-node irreps (`config.output_irreps`).

    **Arguments** of `__init__`: `config` (:class:`NequIPConfig`), `dtype` (``None`` ->
    f32, or f64 under x64), keyword-only `key`.
    """

    embedding: Float[Array, "n_species channels"]
    layers: tuple[InteractionLayer, ...]
    readout: e3nn.equinox.Linear
    config: NequIPConfig = eqx.field(static=True)

    def __init__(self, config: NequIPConfig, dtype=None, *, key):
        dtype = resolve_float(dtype)
        keys = jax.random.split(key, config.num_layers + 2)
        self.config = config
        n_species = len(config.species)
        self.embedding = jax.random.normal(keys[0], (n_species, config.channels), dtype)
        irreps_sh = e3nn.Irreps.spherical_harmonics(config.lmax)
        irreps = e3nn.Irreps(f"{config.channels}x0e") + e3nn.Irreps(config.node_input_irreps)
        layers = []
        for k in range(config.num_layers):
            layer = InteractionLayer(
                irreps.regroup(), config.hidden_irreps, irreps_sh, n_species, config,
                dtype=dtype, key=keys[k + 1],
            )  # fmt: skip
            layers.append(layer)
            irreps = layer.irreps_out
        self.layers = tuple(layers)
        self.readout = linear(irreps, config.output_irreps, dtype=dtype, key=keys[-1])

    @property
    def dtype(self):
        return self.embedding.dtype

    @property
    def irreps_out(self) -> e3nn.Irreps:
        """Irreps of the per-node output (what the readout can make of the hidden features)."""
        return self.readout.irreps_out

    def __call__(
        self,
        graph: Graph,
        edge_vectors: Float[Array, "n_edges 3"] | None = None,
        node_inputs: e3nn.IrrepsArray | None = None,
    ) -> e3nn.IrrepsArray:
        """Per-node features.

        **Arguments:**

        - `graph`: a padded :class:`~zoo.graph.Graph`.
        - `edge_vectors`: `(n_edges, 3)` Å; default ``graph.edge_vectors()``. Pass them to
          differentiate with respect to positions or strain.
        - `node_inputs`: `(n_nodes, config.node_input_irreps)` extra inputs, if configured.

        **Returns:** `(n_nodes, config.output_irreps)`; zero on padding nodes.
        """
        cfg = self.config
        edges = embed_edges(
            graph, edge_vectors, lmax=cfg.lmax, num_basis=cfg.num_basis, r_max=cfg.r_max,
            envelope_p=cfg.envelope_p, dtype=self.dtype,
        )  # fmt: skip
        species: Int[Array, " n_nodes"] = species_indices(graph.numbers, cfg.species)
        h = initial_node_features(
            self.embedding, species, node_inputs, cfg.node_input_irreps, "NequIP"
        )
        for layer in self.layers:
            h = layer(h, species, edges.sh, edges.radial, graph.senders, graph.receivers)
        out = self.readout(h)
        return out * graph.node_mask[:, None].astype(out.dtype)
