"""`FieldModel`: one energy ``E(positions, cell, eps)`` for everything under an electric field.

With the ``"expansion"`` coupling (default) the backbone gives, per atom, an energy ``u_i``, an
equivariant dipole ``p_i`` (1o) and a symmetric polarizability ``alpha_i`` (0e + 2e), and

    E(r, eps) = sum_i u_i(r) - eps . (sum_i p_i(r) + q_i r_i) - eps . (sum_i alpha_i(r)) . eps / 2

where ``q_i`` are fixed integer ionic charges (nominal oxidation states; an atom wrapped by a
lattice vector R moves the dipole by ``q_i R``, a whole polarization quantum). The
``"node_input"`` coupling instead feeds ``eps`` to every node as a ``1x1o`` input and learns
``E(r, eps)`` whole (plus the same ionic term). Either way every observable is a derivative of
``E`` by JAX autodiff (`zoo._field_derivatives`): forces ``-dE/dr``, stress, polarization
``P = -dE/deps`` (cell dipole, e·Å, meaningful modulo the quantum), Born charges
``Z[i, a, b] = dP_a/dr_ib`` (e), polarizability ``dP/deps`` (e·Å^2/V) and Raman tensors
``COULOMB * d alpha / dr`` (Å^2, ``[atom, displacement, field, field]``). The field is in V/Å.
"""

from __future__ import annotations

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import _predict
from ._dtype import resolve_float
from ._field_config import check_field_config, make_field_config
from ._field_derivatives import field_observables
from ._hub_mixin import HubMixin
from ._shared_static import share_static
from .backbones import build_backbone
from .graph import Graph, species_indices
from .response import broadcast_to_nodes, graph_sum

#: per-atom outputs of :meth:`FieldModel.__call__` (the others are per structure)
PER_ATOM = ("forces", "born_charges", "raman_tensors")
#: symmetric 3x3 from its 0e + 2e components (e3nn's own basis, so it rotates correctly)
_SYM_BASIS = np.asarray(e3nn.reduced_tensor_product_basis("ij=ji", i="1o").array)


def _backbone(backbone: dict, dtype, key) -> eqx.Module:
    """The backbone of a config's ``"backbone"`` entry; the P and alpha read-outs are node
    irreps, so the architecture must give node features with a field-free trunk (NequIP)."""
    if backbone.get("architecture", "nequip") != "nequip":
        raise ValueError(f"backbone architecture {backbone['architecture']!r}: only 'nequip'")
    return build_backbone(backbone, dtype, key=key)


def check_field(field, n_graphs: int | None = None) -> np.ndarray:
    """A finite field `(3,)` or `(n_graphs, 3)` in V/Å as float64, or one clear error."""
    try:
        value = np.asarray(field, dtype=np.float64) if field is not None else np.zeros(3)
    except (TypeError, ValueError):
        raise ValueError(f"field must be 3 numbers (V/Å) or one such vector per structure, "
                         f"got {field!r}") from None  # fmt: skip
    ok_shape = value.shape == (3,) or (value.ndim == 2 and value.shape[-1] == 3)
    if not ok_shape or (n_graphs is not None and value.ndim == 2 and len(value) != n_graphs):
        raise ValueError(
            f"field must be a vector of 3 components (V/Å) or one per structure, "
            f"got shape {value.shape}"
        )
    if not np.isfinite(value).all():
        raise ValueError(f"field must be finite, got {value.tolist()}")
    return value


class FieldModel(HubMixin, eqx.Module):
    """Field-dependent energy model (see the module docstring).

    **Arguments** of `__init__`: `config` (`zoo._field_config.make_field_config`, usually
    fitted with `fit_field_config`), keyword-only `key`.
    """

    backbone: eqx.Module
    config: dict = eqx.field(static=True)

    def __init__(self, config: dict, *, key):
        config = check_field_config(dict(config))
        self.config = config
        self.backbone = _backbone(config["backbone"], resolve_float(config["dtype"]), key)

    @classmethod
    def from_config(cls, config: dict) -> FieldModel:
        """A model of the right shapes (random weights, key 0) from a :attr:`config` dict."""
        return cls(config, key=jax.random.key(0))

    @classmethod
    def create(cls, species, *, key, **kwargs) -> FieldModel:
        """A new model from `make_field_config(species, **kwargs)` (neutral normalisation)."""
        return cls(make_field_config(species, **kwargs), key=key)

    @property
    def species(self) -> tuple[int, ...]:
        return tuple(self.config["backbone"]["species"])

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("polarization", "born_charges", "polarizability", "raman_tensors")

    @property
    def dtype(self):
        return self.backbone.dtype

    def _table(self, key: str, graph: Graph) -> Array:
        values = jnp.asarray(self.config[key], self.dtype)
        return values[species_indices(graph.numbers, self.species)]

    def energy(
        self,
        graph: Graph,
        positions: Float[Array, "n_nodes 3"] | None = None,
        strain: Float[Array, "n_graphs 3 3"] | None = None,
        field: Float[Array, "n_graphs 3"] | None = None,
    ) -> Float[Array, " n_graphs"]:
        """Energy per graph (eV) at `positions` (Å), `strain` and `field` (V/Å); padding 0."""
        cfg = self.config
        x = graph.positions if positions is None else positions
        if strain is None:
            strain = jnp.zeros((graph.n_graphs, 3, 3), x.dtype)
        if field is None:
            field = jnp.zeros((graph.n_graphs, 3), x.dtype)
        vectors = graph.edge_vectors(x, strain)
        node_field = broadcast_to_nodes(graph, field)
        inputs = None
        if cfg["coupling"] == "node_input":
            inputs = e3nn.IrrepsArray("1x1o", node_field * cfg["field_scale"])
        out = self.backbone(graph, vectors, inputs).array
        u = cfg["energy_scale"] * out[:, 0] + self._table("energy_shift", graph)
        if cfg["coupling"] == "expansion":
            p = cfg["dipole_scale"] * out[:, 2:5]
            a = jnp.concatenate([out[:, 1:2], out[:, 5:10]], axis=1)
            alpha = cfg["polarizability_scale"] * jnp.einsum(
                "abk,nk->nab", jnp.asarray(_SYM_BASIS, a.dtype), a
            )
            alpha = alpha + self._table("polarizability_shift", graph)[:, None, None] * jnp.eye(3)
            u = u - jnp.sum(node_field * p, -1)
            u = u - 0.5 * jnp.einsum("na,nab,nb->n", node_field, alpha, node_field)
        if cfg["ionic_charges"]:
            sym = 0.5 * (strain + jnp.swapaxes(strain, -1, -2))
            deform = (jnp.eye(3, dtype=x.dtype) + sym)[graph.node_graph]
            r = jnp.einsum("nij,nj->ni", deform, x)
            u = u - self._table("ionic_charges", graph) * jnp.sum(node_field * r, -1)
        return graph_sum(graph, jnp.where(graph.node_mask, u, 0))

    def __call__(
        self,
        graph: Graph,
        field: Float[Array, "n_graphs 3"] | None = None,
        *,
        response: bool = True,
        raman: bool = False,
    ) -> dict[str, Array]:
        """Energy, forces, stress, polarization and (with `response`) Born charges and
        polarizability, (with `raman`) Raman tensors, at `field` `(n_graphs, 3)` V/Å
        (default zero). Per-atom `(n_nodes, ...)`, per-graph `(n_graphs, ...)`, zero on
        padding; stress zero for non-periodic graphs (see `zoo._field_derivatives`)."""
        if field is None:
            field = jnp.zeros((graph.n_graphs, 3), self.dtype)
        field = jnp.asarray(field, self.dtype)
        out = field_observables(
            lambda x, s, f: self.energy(graph, x, s, f),
            graph.positions.astype(self.dtype),
            field,
            graph.volume().astype(self.dtype),
            response=response,
            raman=raman,
        )
        periodic = graph.graph_mask & graph.pbc.all(axis=-1)
        for name, value in out.items():
            mask = graph.node_mask if name in PER_ATOM else graph.graph_mask
            if name == "stress":
                mask = periodic
            out[name] = jnp.where(mask.reshape((-1,) + (1,) * (value.ndim - 1)), value, 0)
        return out

    # ---- host-side API ----
    def input_spec(self, needs_cell: tuple[str, ...] = ()) -> _predict.InputSpec:
        return _predict.InputSpec(
            name="this field model",
            species=self.species,
            r_max=float(self.config["backbone"]["r_max"]),
            dtype=self.dtype,
            domain=self.config.get("domain"),
            needs_cell=needs_cell,
        )

    def predict(
        self,
        atoms,
        field=None,
        *,
        raman: bool = False,
        batch_size: int = 8,
        progress: bool | None = None,
    ) -> dict[str, np.ndarray]:
        """Every observable for one structure or a list of them at `field` (V/Å, `(3,)`).

        **Returns:** numpy arrays in input atom order: ``energy`` eV, ``forces`` `(n, 3)`,
        ``stress`` `(3, 3)` eV/Å^3, ``polarization`` `(3,)` e·Å (cell dipole, modulo the
        quantum), ``born_charges`` `(n, 3, 3)` e, ``polarizability`` `(3, 3)` e·Å^2/V,
        with `raman` ``raman_tensors`` `(n, 3, 3, 3)` Å^2. A list: per-atom outputs
        concatenated with ``structure_index``, the others stacked (see `zoo._predict`).

        **Raises** ``ValueError`` for a field of the wrong shape or non-finite, an unknown
        element, or a structure not periodic in all three directions: the polarization of
        a crystal (and its derivatives) is a bulk quantity; for a molecule the dipole is
        defined but this model was trained on crystals only.
        """
        f = check_field(field)
        if f.ndim != 1:
            raise ValueError(f"predict takes one field (3,) for every structure, got {f.shape}")
        needs = ("polarization", "stress")

        model = share_static(self)  # equal models share one compiled call

        def call(graph: Graph):
            fg = jnp.broadcast_to(jnp.asarray(f, self.dtype), (graph.n_graphs, 3))
            return _forward(model, graph, fg, raman)

        names = ["forces", "born_charges"] + (["raman_tensors"] if raman else [])
        return _predict.predict(
            atoms, self.input_spec(needs), call, names, batch_size=batch_size, progress=progress
        )


@eqx.filter_jit
def _forward(model: FieldModel, graph: Graph, field, raman: bool) -> dict:
    """Every observable, compiled once per model structure, graph bucket and `raman`."""
    return model(graph, field, response=True, raman=raman)


def fold(delta: Array, cell: Array) -> Array:
    """Cell-dipole differences `(n_graphs, 3)` folded modulo the polarization quantum
    (fractional coordinates in [-1/2, 1/2) of `cell` `(n_graphs, 3, 3)`); in JAX."""
    frac = jnp.einsum("gi,gij->gj", delta, jnp.linalg.inv(cell))
    frac = frac - jax.lax.stop_gradient(jnp.round(frac))
    return jnp.einsum("gj,gjk->gk", frac, cell)


__all__ = ["FieldModel", "check_field", "fold", "make_field_config"]
