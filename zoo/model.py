"""`ResponseModel`: the user-facing graph model (backbone + tensor heads + normalisation).

The backbone is any architecture of `zoo.backbones` (``config["backbone"]["architecture"]``:
``"nequip"``, the default, ``"mace"`` or ``"allegro"``); the heads read its per-node features.

One class for every response model of the zoo; the ``formulation`` picks how heads are made:

- ``"direct"``: every output is read out of the node features (`zoo.heads.AtomTensorHead`,
  `zoo.heads.GlobalTensorHead`);
- ``"electric"``: a latent energy ``E(r, eps)`` with the electric field fed to every node as an
  unnormalised ``1x1o`` input; Born charges, Raman and dielectric tensors are its derivatives
  (`zoo.response.mixed_derivatives`, `zoo.heads.derivative`);
- ``"magnetic"``: ``E(r, B, mu_I)`` with the magnetic field B (global) and nuclear moments mu_I
  (per atom) both axial ``1x1e`` inputs; shielding ``sigma = d2E / dmu dB``.

Everything needed to rebuild the model is in the JSON-safe static ``config`` (model type, zoo
version, dtype, backbone, heads with their training-split scale/shift, conventions, the
training domain used for out-of-distribution warnings).

Output names and units: ``born_charges`` (n_atoms, 3, 3) e, ``[atom, field, displacement]``
unless the config says ``born_order="displacement_first"``; ``raman_tensors`` (n_atoms, 3, 3, 3)
``[atom, displacement, field, field]`` Å^2 (Quantum ESPRESSO convention, ``(Omega/4pi) d eps/dr``);
``dielectric`` (3, 3) dimensionless; ``chi2`` (3, 3, 3) as in the training data; ``shielding``
(n_atoms, 3, 3) ppm.
"""

from __future__ import annotations

import math

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _predict
from . import heads as H
from ._dtype import resolve_float
from ._hub_mixin import HubMixin
from ._response_config import ASR_OUTPUTS as ASR_OUTPUTS
from ._response_config import FORMULATIONS as FORMULATIONS
from ._response_config import MODEL_TYPE as MODEL_TYPE
from ._response_config import NEEDS_CELL as NEEDS_CELL
from ._response_config import OUTPUTS as OUTPUTS
from ._response_config import fit_normalization as fit_normalization
from ._response_config import head_entries as head_entries
from ._response_config import make_config as make_config
from .backbones import build_backbone
from .graph import Graph, species_indices
from .response import broadcast_to_nodes, graph_sum, mixed_derivatives


class ResponseModel(HubMixin, eqx.Module):
    """Backbone + response heads; see the module docstring for outputs and units.

    **Arguments** of `__init__`: `config` (from :func:`make_config`, usually refitted with
    :func:`fit_normalization`), keyword-only `key`.
    """

    backbone: eqx.Module
    heads: dict
    config: dict = eqx.field(static=True)

    def __init__(self, config: dict, *, key):
        config = dict(config)
        if config.get("model_type") != MODEL_TYPE:
            raise ValueError(f"config: model_type must be {MODEL_TYPE!r}, got "
                             f"{config.get('model_type')!r}")  # fmt: skip
        if config.get("formulation") not in FORMULATIONS:
            raise ValueError(f"config: formulation must be one of {FORMULATIONS}")
        dtype = resolve_float(config.get("dtype", "float32"))
        self.config = config
        k_bb, k_heads = jax.random.split(key)
        self.backbone = build_backbone(config["backbone"], dtype=dtype, key=k_bb)
        feats = self.backbone.irreps_out  # what the backbone can actually produce
        names = sorted(config["heads"])
        keys = dict(zip(names + ["energy"], jax.random.split(k_heads, len(names) + 1)))
        heads = {}
        if config["formulation"] == "direct":
            for name in names:
                h = config["heads"][name]
                cls = H.AtomTensorHead if OUTPUTS[name][1] else H.GlobalTensorHead
                heads[name] = cls(feats, h["kind"], h["scale"], h["shift"], dtype=dtype,
                                  key=keys[name])  # fmt: skip
        else:
            heads["energy"] = H.EnergyHead(feats, config["energy_scale"], dtype=dtype,
                                           key=keys["energy"])  # fmt: skip
        self.heads = heads

    @classmethod
    def from_config(cls, config: dict) -> ResponseModel:
        """A model of the right shapes (random weights, key 0) from a :attr:`config` dict."""
        return cls(config, key=jax.random.key(0))

    @property
    def species(self) -> tuple[int, ...]:
        return tuple(self.config["backbone"]["species"])

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(sorted(self.config["heads"]))

    @property
    def dtype(self):
        return self.backbone.dtype

    # ---- pure JAX forward ----
    def __call__(self, graph: Graph, acoustic_sum_rule: bool | None = None) -> dict:
        """All outputs for a padded graph: per-atom `(n_nodes, ...)`, global `(n_graphs, ...)`,
        zero on padding. `acoustic_sum_rule` ``None`` uses the config's switch."""
        form = self.config["formulation"]
        out = self._direct(graph) if form == "direct" else self._derivative(graph)
        asr = self.config["acoustic_sum_rule"] if acoustic_sum_rule is None else acoustic_sum_rule
        if asr:
            for name in ASR_OUTPUTS:
                if name in out:
                    out[name] = subtract_mean_over_atoms(graph, out[name])
        for name, value in out.items():
            mask = graph.node_mask if OUTPUTS[name][1] else graph.graph_mask
            out[name] = jnp.where(mask.reshape((-1,) + (1,) * (value.ndim - 1)), value, 0)
        return out

    def _direct(self, graph: Graph) -> dict:
        feats = self.backbone(graph)
        species = species_indices(graph.numbers, self.species)
        out = {}
        for name, head in self.heads.items():
            out[name] = head(feats, species) if OUTPUTS[name][1] else head(feats, graph)
        return out

    def _node_shift(self, name: str, graph: Graph) -> jax.Array:
        """Per-species isotropic offset (a fixed bilinear energy term) of a derivative output."""
        shift = self.config["heads"][name]["shift"]
        if shift is None:
            return jnp.zeros((graph.n_nodes, 1, 1), self.dtype)
        table = jnp.asarray(shift, self.dtype)[species_indices(graph.numbers, self.species)]
        # the 0e component is trace / sqrt(3): the offset is shift / sqrt(3) * identity
        return (table / math.sqrt(3.0))[:, None, None] * jnp.eye(3, dtype=self.dtype)

    def energy(self, graph: Graph, positions=None, field=None, moments=None) -> jax.Array:
        """Latent energy per graph `(n_graphs,)` of a derivative formulation.

        **Arguments:** `positions` `(n_nodes, 3)` Å (default the graph's), `field`
        `(n_graphs, 3)` (electric: V/Å; magnetic: B, arbitrary units) and, for ``"magnetic"``,
        nuclear `moments` `(n_nodes, 3)`; missing fields and moments are zero.
        """
        form = self.config["formulation"]
        if form == "direct":
            raise ValueError("a direct model has no energy: its outputs are read out directly")
        s = jnp.asarray(self.config["field_scale"], self.dtype)
        field = jnp.zeros((graph.n_graphs, 3), self.dtype) if field is None else field
        node_field = broadcast_to_nodes(graph, field * s)
        if form == "electric":
            inputs = e3nn.IrrepsArray("1x1o", node_field)
        else:
            moments = jnp.zeros((graph.n_nodes, 3), self.dtype) if moments is None else moments
            inputs = e3nn.IrrepsArray("2x1e", jnp.concatenate([node_field, moments * s], -1))
        feats = self.backbone(graph, graph.edge_vectors(positions), inputs)
        species = species_indices(graph.numbers, self.species)
        return graph_sum(graph, self.heads["energy"](feats, species))

    def _derivative(self, graph: Graph) -> dict:
        cfg = self.config
        zeros_g = jnp.zeros((graph.n_graphs, 3), self.dtype)
        out = {}
        if cfg["formulation"] == "electric":
            second = any(n in cfg["heads"] for n in ("raman_tensors", "dielectric"))
            d = mixed_derivatives(
                lambda r, e: self.energy(graph, positions=r, field=e),
                graph.positions, zeros_g, order=2 if second else 1,
            )  # fmt: skip
            if "born_charges" in cfg["heads"]:
                z = H.born_from_derivatives(d, cfg["born_order"])
                out["born_charges"] = z + self._node_shift("born_charges", graph)
            if "raman_tensors" in cfg["heads"]:
                vol = graph.volume()[graph.node_graph]
                out["raman_tensors"] = H.raman_from_derivatives(d, cfg["raman_convention"], vol)
            if "dielectric" in cfg["heads"]:
                out["dielectric"] = H.dielectric_from_derivatives(d, graph.volume())
        else:
            moments = jnp.zeros((graph.n_nodes, 3), self.dtype)
            d = mixed_derivatives(
                lambda m, b: self.energy(graph, field=b, moments=m), moments, zeros_g, order=1
            )
            out["shielding"] = H.shielding_from_derivatives(d) + self._node_shift(
                "shielding", graph
            )
        return out

    # ---- host-side API ----
    def input_spec(self) -> _predict.InputSpec:
        """What :meth:`predict` accepts: training species, cutoff, domain, bulk outputs."""
        needs_cell = [n for n in self.outputs if n in NEEDS_CELL]
        if self.config["raman_convention"] == "per_volume" and "raman_tensors" in self.outputs:
            needs_cell.append("raman_tensors")
        return _predict.InputSpec(
            name="this response model",
            species=self.species,
            r_max=self.config["backbone"]["r_max"],
            dtype=self.dtype,
            domain=self.config.get("domain"),
            needs_cell=tuple(needs_cell),
        )

    def predict(
        self,
        atoms,
        batch_size: int = 8,
        *,
        acoustic_sum_rule: bool | None = None,
        progress: bool | None = None,
        field=None,
    ) -> dict[str, np.ndarray]:
        """Predict every output for one structure or a list or iterable of them.

        **Arguments:**

        - `atoms`: an ``ase.Atoms`` / :class:`~zoo.Structure` / dict, or a list or any
          iterable of them (e.g. ``ase.io.iread(path)``).
        - `batch_size`: typical structures per compiled call (packed by size, see
          `zoo._predict`).
        - `acoustic_sum_rule`: override the config's switch.
        - `progress`: tqdm bar (``None``: on a terminal once the run takes a few seconds).

        **Returns:** a dict of numpy arrays in the input atom order. One structure: per-atom
        outputs `(n_atoms, ...)`, global ones `(...)`. A list: per-atom outputs concatenated
        over structures `(total_atoms, ...)` with ``structure_index`` `(total_atoms,)`, global
        ones stacked `(n_structures, ...)`. Units: ``born_charges`` e, ``raman_tensors`` Å^2,
        ``dielectric`` dimensionless, ``shielding`` ppm (see the module docstring).

        **Raises** ``ValueError`` for an element outside the training species, and for a
        structure not periodic in all three directions when the model was trained on crystals
        only (``config["domain"]["periodic"]``) or a bulk output needs a cell volume; warns
        when a structure is outside the training domain (see `zoo._predict`). An iterable
        failing part-way raises `zoo._predict.PredictionInterrupted` with the outputs so far.
        A `field` is refused: these are zero-field responses (a :class:`~zoo.FieldModel`, e.g.
        ``zoo.load("batio3-field")``, predicts at a field).
        """
        if field is not None:
            raise ValueError(
                "ResponseModel.predict takes no field: its outputs are the zero-field linear "
                "responses; for predictions at a field use a FieldModel, e.g. "
                "zoo.load('batio3-field').predict(atoms, field=[0, 0, 0.01])"
            )
        return self._predict(_predict.predict, atoms, batch_size, acoustic_sum_rule, progress)

    def predict_iter(self, atoms, batch_size: int = 8, *, acoustic_sum_rule=None, progress=None):
        """:meth:`predict` streamed: yields one structure's outputs (a dict as for a single
        structure) at a time, in input order; see `zoo._predict.stream`."""
        for _, out in self._predict(
            _predict.stream, atoms, batch_size, acoustic_sum_rule, progress
        ):
            yield out

    def _predict(self, run, atoms, batch_size, acoustic_sum_rule, progress):
        if acoustic_sum_rule is None:  # resolved here: one compiled function per setting
            acoustic_sum_rule = bool(self.config["acoustic_sum_rule"])
        per_atom = [n for n in self.outputs if OUTPUTS[n][1]]
        return run(
            atoms,
            self.input_spec(),
            lambda graph: _predict.forward(self, graph, acoustic_sum_rule),
            per_atom,
            batch_size=batch_size,
            progress=progress,
        )

    def check_inputs(self, structures) -> None:
        """The checks of :meth:`predict` without predicting: errors for inputs it refuses,
        warnings for structures outside the training domain."""
        _predict.check(structures, self.input_spec())


def subtract_mean_over_atoms(graph: Graph, values: jax.Array) -> jax.Array:
    """Acoustic sum rule: remove each structure's mean over its real atoms."""
    total = graph_sum(graph, values)
    count = jnp.maximum(graph.n_node, 1).astype(values.dtype)
    mean = total / count.reshape((-1,) + (1,) * (values.ndim - 1))
    return values - mean[graph.node_graph]
