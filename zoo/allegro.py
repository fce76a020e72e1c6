"""Allegro (Musaelian et al., Nat. Commun. 14, 579 (2023)) as an Equinox module.

Strictly local and edge-centred: every quantity lives on an edge ``ij`` (centre ``i``,
neighbour ``j``, ``r_ij < r_max``) and no information moves between atoms beyond ``r_max``.

- Scalar track: ``x_ij = MLP(species_i, species_j, radial basis) * u(r_ij)``.
- Tensor track: ``V_ij = w(x_ij) Y(r_ij)`` (spherical harmonics weighted per channel and l).
- Each layer builds the environment of the centre, ``G_i = sum_k w_env(x_ik) Y(r_ik)``, takes
  the channel-wise tensor product ``V_ij (x) G_i``, mixes its paths linearly into the new
  ``V_ij``, and feeds its scalar paths with ``x_ij`` to an MLP updating the scalar track.
- The output is a linear map of ``(x_ij, V_ij)`` times the envelope (per-edge irreps); the
  per-node output is their sum over the edges of each centre atom.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._arch_config import ArchitectureConfig, per_l_irreps
from ._blocks import RadialMLP, edges_in_chunks, embed_edges, linear, sum_edge_messages
from ._dtype import resolve_float
from ._sh_tensor_product import from_components, paths, to_components
from .graph import Graph, species_indices


@dataclasses.dataclass(frozen=True)
class AllegroConfig(ArchitectureConfig):
    """Hyperparameters of :class:`Allegro` (JSON-safe; stored in ``config.json``).

    Attributes:
        species: atomic numbers the model knows, in embedding order.
        r_max: cutoff radius (Å). Default 5.0.
        num_layers: tensor-product layers. Default 2.
        lmax: highest l of the harmonics and of the tensor track. Default 2.
        parity: tensor track with both parities of every l (needed for axial outputs);
            ``False`` keeps (-1)^l. Default True.
        channels: multiplicity of the tensor track. Default 32.
        latent_dim: width of the scalar track. Default 64.
        two_body_hidden, two_body_layers: hidden width and layers of the two-body MLP.
            Default 64, 2.
        latent_layers: hidden layers of each layer's latent MLP. Default 1.
        num_basis: Bessel radial functions. Default 8.
        envelope_p: exponent of the polynomial cutoff envelope. Default 6.
        avg_num_neighbors: environment sums and the per-node sum are divided by its square
            root (a data statistic). Default 20.
        output_irreps: per-edge (and per-node) output irreps. Default "1x0e".
        activation: activation of the MLPs. Default "silu".
        edge_chunk: see :class:`~zoo._arch_config.ArchitectureConfig`; here the chunked
            sums are the environments of every layer, then the outputs, each edge's state
            recomputed from its inputs in every chunk (num_layers + 1 passes over the edges).
    """

    species: tuple[int, ...]
    r_max: float = 5.0
    num_layers: int = 2
    lmax: int = 2
    parity: bool = True
    channels: int = 32
    latent_dim: int = 64
    two_body_hidden: int = 64
    two_body_layers: int = 2
    latent_layers: int = 1
    num_basis: int = 8
    envelope_p: int = 6
    avg_num_neighbors: float = 20.0
    output_irreps: str = "1x0e"
    activation: str = "silu"

    ARCHITECTURE: ClassVar[str] = "allegro"
    LIMITS: ClassVar[dict[str, tuple[int, int]]] = {
        "num_layers": (1, 8), "lmax": (0, 4), "channels": (1, 512), "latent_dim": (1, 4096),
        "two_body_hidden": (1, 4096), "two_body_layers": (0, 16), "latent_layers": (0, 16),
        "num_basis": (1, 128), "envelope_p": (2, 32),
    }  # fmt: skip
    IRREPS_FIELDS: ClassVar[tuple[str, ...]] = ("output_irreps",)

    def check(self) -> None:
        out = e3nn.Irreps(self.output_irreps)
        missing = [ir for _, ir in out if ir not in self.feature_irreps]
        if missing:
            raise ValueError(
                f"output_irreps {self.output_irreps} needs {missing[0]}, but the tensor track "
                f"stops at {self.tensor_irreps}: raise lmax or set parity=True"
            )

    @property
    def tensor_irreps(self) -> e3nn.Irreps:
        return per_l_irreps(self.channels, self.lmax, self.parity)

    @property
    def feature_irreps(self) -> e3nn.Irreps:
        """The tensor track and the scalar (0e) latent track."""
        return (e3nn.Irreps(f"{self.latent_dim}x0e") + self.tensor_irreps).regroup()


class AllegroLayer(eqx.Module):
    """One Allegro layer: environment embedding, tensor product, path mixing, latent MLP."""

    env_weights: RadialMLP
    mix: e3nn.equinox.Linear
    latent_mlp: RadialMLP
    irreps_in: e3nn.Irreps = eqx.field(static=True)
    irreps_paths: e3nn.Irreps = eqx.field(static=True)
    irreps_out: e3nn.Irreps = eqx.field(static=True)
    irreps_sh: e3nn.Irreps = eqx.field(static=True)
    avg_num_neighbors: float = eqx.field(static=True)

    def __init__(self, irreps_in, cfg: AllegroConfig, *, dtype, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.irreps_in = e3nn.Irreps(irreps_in)
        self.irreps_sh = e3nn.Irreps.spherical_harmonics(cfg.lmax)
        per_channel = e3nn.Irreps([(1, ir) for _, ir in self.irreps_in])
        self.irreps_out = cfg.tensor_irreps.filter(
            keep=paths(per_channel, self.irreps_sh, cfg.tensor_irreps)
        )
        tp = e3nn.tensor_product(per_channel, self.irreps_sh, filter_ir_out=self.irreps_out)
        self.irreps_paths = e3nn.Irreps([(cfg.channels * mul, ir) for mul, ir in tp])
        self.avg_num_neighbors = float(cfg.avg_num_neighbors)
        self.env_weights = RadialMLP(
            (cfg.latent_dim, len(self.irreps_sh) * cfg.channels), cfg.activation,
            dtype=dtype, key=k1,
        )  # fmt: skip
        self.mix = linear(self.irreps_paths, self.irreps_out, dtype=dtype, key=k2)
        n_scalar = self.irreps_paths.count("0e")
        sizes = (cfg.latent_dim + n_scalar,) + (cfg.latent_dim,) * cfg.latent_layers
        self.latent_mlp = RadialMLP(sizes + (cfg.latent_dim,), cfg.activation, dtype=dtype, key=k3)

    def environment_terms(self, x, sh, envelope):
        """Each edge's term of its centre's environment ``G_i``, `(E, sh.dim, channels)`
        (before the division by sqrt(avg_num_neighbors)); zero on padding edges."""
        n_edges = x.shape[0]
        w = self.env_weights(x).reshape(n_edges, len(self.irreps_sh), -1)
        w = w * envelope[:, None, None]
        ls = [ir.l for _, ir in self.irreps_sh]
        per_comp = jnp.concatenate(
            [w[:, k : k + 1, :].repeat(2 * l + 1, 1) for k, l in enumerate(ls)], 1
        )
        return sh[:, :, None] * per_comp

    def update(self, x, v, env, envelope):
        """New `(x, v)` of each edge from its own `(x, v)` and its centre's environment
        `env` `(E, sh.dim, channels)`."""
        # channel as a batch axis: e3nn's dense per-path products compile far faster here
        # than the unrolled slab form (both operands carry channels, so no CG pre-contraction)
        per_channel = e3nn.Irreps([(1, ir) for _, ir in self.irreps_in])
        v_ax = e3nn.IrrepsArray(per_channel, v.transpose(0, 2, 1))
        env_ax = e3nn.IrrepsArray(self.irreps_sh, env.transpose(0, 2, 1))
        tp = e3nn.tensor_product(v_ax, env_ax, filter_ir_out=self.irreps_out).axis_to_mul()
        v_new = to_components(self.mix(tp))
        scalars = tp.filter(keep="0e").array
        x_new = self.latent_mlp(jnp.concatenate([x, scalars], axis=-1))
        x = (x + envelope[:, None] * x_new) / jnp.sqrt(2.0).astype(x.dtype)
        return x, v_new

    def __call__(self, x, v, sh, envelope, receivers, n_nodes):
        """`x` `(E, latent)`, `v` `(E, dim, channels)` components, `sh` `(E, sh)`, `envelope`
        `(E,)` (zero on padding edges) -> updated `(x, v)`."""
        env = jax.ops.segment_sum(
            self.environment_terms(x, sh, envelope), receivers, num_segments=n_nodes
        )
        env = env / jnp.sqrt(self.avg_num_neighbors).astype(env.dtype)
        return self.update(x, v, env[receivers], envelope)


class Allegro(eqx.Module):
    """Allegro: :class:`~zoo.graph.Graph` -> per-edge and per-node irreps.

    **Arguments** of `__init__`: `config` (:class:`AllegroConfig`), `dtype` (``None`` -> f32,
    or f64 under x64), keyword-only `key`.
    """

    two_body: RadialMLP
    initial: RadialMLP
    layers: tuple[AllegroLayer, ...]
    readout: e3nn.equinox.Linear
    config: AllegroConfig = eqx.field(static=True)

    def __init__(self, config: AllegroConfig, dtype=None, *, key):
        dtype = resolve_float(dtype)
        keys = jax.random.split(key, config.num_layers + 3)
        self.config = config
        n_in = 2 * len(config.species) + config.num_basis
        sizes = (n_in,) + (config.two_body_hidden,) * config.two_body_layers
        self.two_body = RadialMLP(
            sizes + (config.latent_dim,), config.activation, dtype=dtype, key=keys[0]
        )
        n_sh = config.lmax + 1
        self.initial = RadialMLP(
            (config.latent_dim, n_sh * config.channels), config.activation, dtype=dtype, key=keys[1]
        )
        irreps = e3nn.Irreps(
            [(config.channels, ir) for _, ir in e3nn.Irreps.spherical_harmonics(config.lmax)]
        )
        layers = []
        for k in range(config.num_layers):
            layer = AllegroLayer(irreps, config, dtype=dtype, key=keys[k + 2])
            layers.append(layer)
            irreps = layer.irreps_out
        self.layers = tuple(layers)
        final = e3nn.Irreps(f"{config.latent_dim}x0e") + irreps
        self.readout = linear(
            final, config.output_irreps, dtype=dtype, key=keys[-1], force_irreps_out=True
        )

    @property
    def dtype(self):
        return self.two_body.weights[0].dtype

    @property
    def irreps_out(self) -> e3nn.Irreps:
        """Irreps of the per-edge and per-node outputs."""
        return self.readout.irreps_out

    def _two_body(self, species, sh, radial, envelope, senders, receivers):
        """Initial `(x, v)` of each edge: `x` `(E, latent)`, `v` `(E, sh.dim, channels)`."""
        cfg = self.config
        onehot = jax.nn.one_hot(species, len(cfg.species), dtype=self.dtype)
        features = jnp.concatenate([onehot[receivers], onehot[senders], radial], axis=-1)
        x = self.two_body(features) * envelope[:, None]
        w = self.initial(x).reshape(x.shape[0], cfg.lmax + 1, cfg.channels)
        per_comp = jnp.concatenate(
            [w[:, l : l + 1, :].repeat(2 * l + 1, 1) for l in range(cfg.lmax + 1)], 1
        )
        return x, sh[:, :, None] * per_comp

    def _readout(self, x, v, envelope) -> e3nn.IrrepsArray:
        irreps_v = self.layers[-1].irreps_out if self.layers else None
        final = e3nn.concatenate(
            [e3nn.IrrepsArray(f"{self.config.latent_dim}x0e", x), from_components(irreps_v, v)]
        )
        out = self.readout(final)
        return out * envelope[:, None].astype(out.dtype)

    def edge_outputs(
        self, graph: Graph, edge_vectors: Float[Array, "n_edges 3"] | None = None
    ) -> e3nn.IrrepsArray:
        """Per-edge outputs `(n_edges, config.output_irreps)`, zero on padding edges and
        vanishing smoothly at `r_max`. Edge ``e`` belongs to the centre ``graph.receivers[e]``."""
        cfg = self.config
        sh, radial, envelope = self._embed(graph, edge_vectors)
        species = species_indices(graph.numbers, cfg.species)
        x, v = self._two_body(species, sh, radial, envelope, graph.senders, graph.receivers)
        for layer in self.layers:
            x, v = layer(x, v, sh, envelope, graph.receivers, graph.n_nodes)
        return self._readout(x, v, envelope)

    def _embed(self, graph, edge_vectors):
        cfg = self.config
        sh, radial, envelope = embed_edges(
            graph, edge_vectors, lmax=cfg.lmax, num_basis=cfg.num_basis, r_max=cfg.r_max,
            envelope_p=cfg.envelope_p, dtype=self.dtype,
        )  # fmt: skip
        return sh.array, radial, envelope

    def _node_sums_in_chunks(self, graph: Graph, edge_vectors) -> Float[Array, "n_nodes out"]:
        """The per-node sums of the edge outputs without any `(E, ...)` tensor of a layer.

        Edges interact only through each layer's environments ``G_i`` (per node), so these
        are summed first, layer by layer, and every per-edge state is recomputed chunk by
        chunk from the edge's inputs and the environments so far: L + 1 passes over the
        edges instead of one, memory independent of the edge count but for the inputs."""
        cfg = self.config
        sh, radial, envelope = self._embed(graph, edge_vectors)
        species = species_indices(graph.numbers, cfg.species)
        inputs = (sh, radial, envelope, graph.senders, graph.receivers)

        def states(envs, sh_c, radial_c, envelope_c, snd_c, rcv_c):
            x, v = self._two_body(species, sh_c, radial_c, envelope_c, snd_c, rcv_c)
            for layer, env in zip(self.layers, envs):
                x, v = layer.update(x, v, env[rcv_c], envelope_c)
            return x, v

        def sum_over_edges(message):
            return sum_edge_messages(
                message, inputs, graph.receivers, graph.n_nodes, cfg.edge_chunk
            )

        envs = ()
        for layer in self.layers:

            def terms(*edge, envs=envs, layer=layer):
                return layer.environment_terms(states(envs, *edge)[0], edge[0], edge[2])

            env = sum_over_edges(terms)
            envs += (env / jnp.sqrt(layer.avg_num_neighbors).astype(env.dtype),)
        return sum_over_edges(lambda *edge: self._readout(*states(envs, *edge), edge[2]).array)

    def __call__(
        self,
        graph: Graph,
        edge_vectors: Float[Array, "n_edges 3"] | None = None,
        node_inputs: e3nn.IrrepsArray | None = None,
    ) -> e3nn.IrrepsArray:
        """Per-node features: the sum of the outputs of each atom's edges divided by
        sqrt(avg_num_neighbors), `(n_nodes, config.output_irreps)`; zero on padding nodes.
        `node_inputs` are not supported (an edge model) and must be ``None``."""
        if node_inputs is not None:
            raise ValueError("Allegro takes no node_inputs (it is edge-centred); pass None")
        if edges_in_chunks(graph.n_edges, self.config.edge_chunk):
            nodes = self._node_sums_in_chunks(graph, edge_vectors)
        else:
            edges = self.edge_outputs(graph, edge_vectors)
            nodes = jax.ops.segment_sum(edges.array, graph.receivers, num_segments=graph.n_nodes)
        nodes = nodes / jnp.sqrt(self.config.avg_num_neighbors).astype(nodes.dtype)
        nodes = nodes * graph.node_mask[:, None].astype(nodes.dtype)
        return e3nn.IrrepsArray(self.irreps_out, nodes)
