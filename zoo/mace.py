"""MACE (Batatia et al., NeurIPS 2022) as an Equinox module.

Graph in, per-node irreps out. Each interaction: a linear map of the node features, their
tensor product with the edge spherical harmonics weighted per path and channel by a radial
MLP, summed over neighbours (divided by avg_num_neighbors) into the atomic basis ``A``; then
the species-weighted symmetric contraction of ``A`` up to `correlation` (the product basis,
:mod:`zoo._symmetric_contraction`, coupling tensors built once at construction), a linear
map, and a species-indexed residual. Every interaction has a readout (linear, the last one a
gated MLP) and the readouts are summed, as in mace-torch's ``MACE``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ._arch_config import ArchitectureConfig, per_l_irreps
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
from ._sh_tensor_product import channelwise_tensor_product, from_components, paths, to_components
from ._symmetric_contraction import SymmetricContraction
from .graph import Graph, species_indices


@dataclasses.dataclass(frozen=True)
class MACEConfig(ArchitectureConfig):
    """Hyperparameters of :class:`MACE` (JSON-safe; stored in ``config.json``).

    Attributes:
        species: atomic numbers the model knows, in embedding order.
        r_max: cutoff radius (Å). Default 5.0.
        num_interactions: interaction layers. Default 2.
        hidden_irreps: node features between interactions; every irrep with the same
            multiplicity (the channel count). Default "64x0e+64x1o".
        max_ell: highest l of the edge harmonics and of the atomic basis. Default 3.
        correlation: highest body order of the symmetric contraction (1..3). Default 3.
        parity: atomic basis with both parities of every l (needed for axial outputs such
            as the 1e part of Born charges); ``False`` keeps (-1)^l as mace-torch. Default False.
        num_basis: Bessel radial functions. Default 8.
        envelope_p: exponent of the polynomial cutoff envelope. Default 5.
        radial_hidden, radial_layers: radial MLP width and hidden layers. Default 64, 3.
        avg_num_neighbors: messages are summed and divided by it (a data statistic). Default 20.
        readout_hidden: width of the last, gated readout. Default 16.
        output_irreps: per-node output irreps, e.g. ``"1x0e"`` for energies. Default "1x0e".
        node_input_irreps: extra per-node inputs concatenated to the species embedding.
            Default "" (none).
        activation: activation of even scalars (odd ones use tanh). Default "silu".
        edge_chunk: see :class:`~zoo._arch_config.ArchitectureConfig`.
    """

    species: tuple[int, ...]
    r_max: float = 5.0
    num_interactions: int = 2
    hidden_irreps: str = "64x0e+64x1o"
    max_ell: int = 3
    correlation: int = 3
    parity: bool = False
    num_basis: int = 8
    envelope_p: int = 5
    radial_hidden: int = 64
    radial_layers: int = 3
    avg_num_neighbors: float = 20.0
    readout_hidden: int = 16
    output_irreps: str = "1x0e"
    node_input_irreps: str = ""
    activation: str = "silu"

    ARCHITECTURE: ClassVar[str] = "mace"
    LIMITS: ClassVar[dict[str, tuple[int, int]]] = {
        "num_interactions": (1, 8), "max_ell": (0, 3), "correlation": (1, 3),
        "num_basis": (1, 128), "envelope_p": (2, 32), "radial_hidden": (1, 4096),
        "radial_layers": (0, 16), "readout_hidden": (1, 1024),
    }  # fmt: skip
    IRREPS_FIELDS: ClassVar[tuple[str, ...]] = (
        "hidden_irreps", "output_irreps", "node_input_irreps"
    )  # fmt: skip
    NODE_INPUTS: ClassVar[bool] = True

    def check(self) -> None:
        hidden = e3nn.Irreps(self.hidden_irreps)
        if not hidden or len({mul for mul, _ in hidden}) != 1 or "0e" not in hidden:
            raise ValueError(
                f"hidden_irreps must contain 0e and give every irrep the same multiplicity "
                f"(e.g. '64x0e+64x1o'), got {self.hidden_irreps!r}"
            )
        if self.channels > 512:
            raise ValueError(f"hidden_irreps {self.hidden_irreps!r}: at most 512 channels")
        too_high = [ir for _, ir in hidden if ir.l > 3]
        if too_high:
            raise ValueError(f"hidden_irreps stop at l=3, found {too_high[0]}")
        missing = [ir for _, ir in e3nn.Irreps(self.output_irreps) if ir not in hidden]
        if missing:
            raise ValueError(
                f"output_irreps {self.output_irreps} needs {missing[0]}, which hidden_irreps "
                f"{self.hidden_irreps} lacks: add it there"
            )

    @property
    def channels(self) -> int:
        return e3nn.Irreps(self.hidden_irreps)[0].mul

    @property
    def feature_irreps(self) -> e3nn.Irreps:
        return e3nn.Irreps(self.hidden_irreps)

    @property
    def atomic_basis_irreps(self) -> e3nn.Irreps:
        """Irreps of the atomic basis ``A`` (before filtering by what a layer can make)."""
        return per_l_irreps(self.channels, self.max_ell, self.parity)


class MACELayer(eqx.Module):
    """One MACE interaction + product basis + readout.

    `__call__(h, species, sh, radial, senders, receivers)` -> `(h_out, readout)`, both
    `(n_nodes, ...)`; `radial` is zero on padding edges.
    """

    linear_up: e3nn.equinox.Linear
    radial_mlp: RadialMLP
    linear_message: e3nn.equinox.Linear
    species_skip: e3nn.equinox.Linear | None
    residual: e3nn.equinox.Linear | None
    contraction: SymmetricContraction
    linear_product: e3nn.equinox.Linear
    readout: tuple[e3nn.equinox.Linear, ...]
    irreps_in: e3nn.Irreps = eqx.field(static=True)
    irreps_a: e3nn.Irreps = eqx.field(static=True)
    irreps_messages: e3nn.Irreps = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    irreps_out: e3nn.Irreps = eqx.field(static=True)
    avg_num_neighbors: float = eqx.field(static=True)
    act: str = eqx.field(static=True)
    edge_chunk: int = eqx.field(static=True)

    def __init__(
        self, irreps_in, irreps_out, first: bool, last: bool, cfg: MACEConfig, *, dtype, key
    ):
        keys = iter(jax.random.split(key, 8))
        n_species = len(cfg.species)
        self.irreps_in = e3nn.Irreps(irreps_in).regroup()
        self.avg_num_neighbors = float(cfg.avg_num_neighbors)
        self.act = cfg.activation
        self.edge_chunk = int(cfg.edge_chunk)
        sh = e3nn.Irreps.spherical_harmonics(cfg.max_ell)
        # one multiplicity for the channel-wise product (node inputs may come as 1x1o)
        irreps_up = e3nn.Irreps([(cfg.channels, ir) for _, ir in self.irreps_in])
        messages = paths(irreps_up, sh, cfg.atomic_basis_irreps)
        self.irreps_messages = messages
        self.channels = cfg.channels
        self.irreps_a = cfg.atomic_basis_irreps.filter(keep=messages)
        self.linear_up = linear(self.irreps_in, irreps_up, dtype=dtype, key=next(keys))
        sizes = (cfg.num_basis,) + (cfg.radial_hidden,) * cfg.radial_layers
        self.radial_mlp = RadialMLP(
            sizes + (messages.num_irreps,), cfg.activation, dtype=dtype, key=next(keys)
        )
        self.linear_message = linear(messages, self.irreps_a, dtype=dtype, key=next(keys))
        indexed = dict(linear_type="indexed", num_indexed_weights=n_species)
        # mace-torch: the first layer makes A species-dependent, later ones add a residual
        self.species_skip = (
            linear(self.irreps_a, self.irreps_a, dtype=dtype, key=next(keys), **indexed)
            if first
            else None
        )
        self.contraction = SymmetricContraction(
            self.irreps_a, irreps_out, cfg.correlation, n_species, dtype=dtype, key=next(keys)
        )
        self.irreps_out = self.contraction.irreps_out
        self.residual = (
            None
            if first
            else linear(
                self.irreps_in,
                self.irreps_out,
                dtype=dtype,
                key=next(keys),
                force_irreps_out=True,
                **indexed,
            )  # fmt: skip
        )
        self.linear_product = linear(self.irreps_out, self.irreps_out, dtype=dtype, key=next(keys))
        out = e3nn.Irreps(cfg.output_irreps)
        if last:
            hidden = e3nn.Irreps([(cfg.readout_hidden, ir) for _, ir in out.regroup()])
            k1, k2 = jax.random.split(next(keys))
            self.readout = (
                linear(
                    self.irreps_out,
                    gated_irreps(hidden),
                    dtype=dtype,
                    key=k1,
                    force_irreps_out=True,
                ),
                linear(hidden, out, dtype=dtype, key=k2, force_irreps_out=True),
            )
        else:
            self.readout = (
                linear(self.irreps_out, out, dtype=dtype, key=next(keys), force_irreps_out=True),
            )

    def _atomic_basis(self, x, sh, radial, senders, receivers):
        """Sum over neighbours of the weighted products, `(n_nodes, components, channels)`,
        in chunks of `edge_chunk` edges (:func:`~zoo._blocks.sum_edge_messages`)."""
        xc = to_components(x)

        def messages(sh_c, radial_c, snd_c):
            w = self.radial_mlp(radial_c).reshape(radial_c.shape[0], -1, self.channels)
            y = e3nn.IrrepsArray(sh.irreps, sh_c)
            return channelwise_tensor_product(xc[snd_c], x.irreps, y, self.irreps_a, w)

        inputs = (sh.array, radial, senders)
        return sum_edge_messages(messages, inputs, receivers, x.shape[0], self.edge_chunk)

    def __call__(self, h, species, sh, radial, senders, receivers):
        x = self.linear_up(h)
        a = self._atomic_basis(x, sh, radial, senders, receivers)
        a = from_components(self.irreps_messages, a / jnp.asarray(self.avg_num_neighbors, a.dtype))
        a = self.linear_message(a)
        if self.species_skip is not None:
            a = self.species_skip(species, a)
        out = self.linear_product(self.contraction(a, species))
        if self.residual is not None:
            out = out + self.residual(species, h)
        y = self.readout[0](out)
        if len(self.readout) == 2:
            y = self.readout[1](gate(y, self.act))
        return out, y


class MACE(eqx.Module):
    """MACE: :class:`~zoo.graph.Graph` -> per-node irreps (`config.output_irreps`).

    **Arguments** of `__init__`: `config` (:class:`MACEConfig`), `dtype` (``None`` -> f32, or
    f64 under x64), keyword-only `key`. Building computes the coupling tensors (cached per
    irreps, correlation order and output irrep).
    """

    embedding: Float[Array, "n_species channels"]
    layers: tuple[MACELayer, ...]
    config: MACEConfig = eqx.field(static=True)

    def __init__(self, config: MACEConfig, dtype=None, *, key):
        dtype = resolve_float(dtype)
        keys = jax.random.split(key, config.num_interactions + 1)
        self.config = config
        self.embedding = jax.random.normal(keys[0], (len(config.species), config.channels), dtype)
        irreps = e3nn.Irreps(f"{config.channels}x0e") + e3nn.Irreps(config.node_input_irreps)
        hidden = e3nn.Irreps(config.hidden_irreps)
        out_types = {ir for _, ir in e3nn.Irreps(config.output_irreps)} | {e3nn.Irrep("0e")}
        layers = []
        for k in range(config.num_interactions):
            last = k == config.num_interactions - 1
            # the last product basis only makes what the readout needs (mace: scalars)
            target = hidden.filter(keep=list(out_types)) if last else hidden
            layer = MACELayer(irreps, target, k == 0, last, config, dtype=dtype, key=keys[k + 1])
            layers.append(layer)
            irreps = layer.irreps_out
        self.layers = tuple(layers)
        made = {ir for layer in layers for _, ir in layer.irreps_out}
        missing = [ir for _, ir in e3nn.Irreps(config.output_irreps) if ir not in made]
        if missing:
            raise ValueError(
                f"no layer can make the output irrep {missing[0]} from atomic basis "
                f"{config.atomic_basis_irreps}: raise max_ell or correlation, or set parity=True"
            )

    @property
    def dtype(self):
        return self.embedding.dtype

    @property
    def irreps_out(self) -> e3nn.Irreps:
        """Irreps of the per-node output (every readout is forced to them)."""
        return e3nn.Irreps(self.config.output_irreps)

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

        **Returns:** `(n_nodes, config.output_irreps)`, the sum of every layer's readout;
        zero on padding nodes.
        """
        cfg = self.config
        edges = embed_edges(
            graph, edge_vectors, lmax=cfg.max_ell, num_basis=cfg.num_basis, r_max=cfg.r_max,
            envelope_p=cfg.envelope_p, dtype=self.dtype,
        )  # fmt: skip
        species: Int[Array, " n_nodes"] = species_indices(graph.numbers, cfg.species)
        h = initial_node_features(
            self.embedding, species, node_inputs, cfg.node_input_irreps, "MACE"
        )
        total = None
        for layer in self.layers:
            h, y = layer(h, species, edges.sh, edges.radial, graph.senders, graph.receivers)
            total = y if total is None else total + y
        return total * graph.node_mask[:, None].astype(total.dtype)
