"""NequIP (Batzner et al., Nat. Commun. 13, 2453 (2022)) as an Equinox module.

Graph in, per-node irreps out. Each interaction layer: a linear mixing of the node features,
a tensor product of the neighbours' features with the edge spherical harmonics weighted per
path by a radial MLP, a sum over neighbours (divided by sqrt(avg_num_neighbors)), a linear
map plus a species-indexed self-connection, and a gated nonlinearity.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

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
        edge_chunk: above this many edges, messages are summed in a loop over equal chunks
            of at most this size, rematerialised in the backward pass (bounds memory on large
            structures; results do not depend on it up to rounding). 0: never. Default 8192.
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
    edge_chunk: int = 8192

    ARCHITECTURE: ClassVar[str] = "nequip"
    LIMITS: ClassVar[dict[str, tuple[int, int]]] = {
        "num_layers": (1, 16), "channels": (1, 1024), "lmax": (0, 6), "num_basis": (1, 128),
        "envelope_p": (2, 32), "radial_hidden": (1, 4096), "radial_layers": (0, 16),
        "edge_chunk": (0, 1 << 24),
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

        def messages(sh_c, radial_c, snd_c):
            y = e3nn.IrrepsArray(sh.irreps, sh_c)
            tp = e3nn.tensor_product(x[snd_c], y, filter_ir_out=self.irreps_out).regroup()
            return (tp * self.radial_mlp(radial_c)).array

        inputs = (sh.array, radial, senders)
        summed = sum_edge_messages(messages, inputs, receivers, h.shape[0], self.edge_chunk)
        summed = e3nn.IrrepsArray(self.irreps_messages, summed)
        summed = summed / jnp.sqrt(self.avg_num_neighbors).astype(summed.dtype)
        out = (self.linear_down(summed) + self.self_connection(species, h)) / jnp.sqrt(2.0)
        return gate(out, self.act)


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
