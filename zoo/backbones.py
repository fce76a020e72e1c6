"""Backbones: the registry ``architecture name -> (Config, Module)``, and a bare architecture
as a model of its own (:class:`Potential`: energy, forces, stress).

Every model type builds its backbone here from a JSON dict
``{"architecture": "nequip" | "mace" | "allegro", <that config's fields>}``; a dict without
``"architecture"`` (config.json files of format 1.0) is NequIP. Each architecture maps a
:class:`~zoo.graph.Graph` to per-node irreps (Allegro's per-edge outputs summed over each
centre atom's edges), so any head reading node features works on any backbone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import _predict
from ._arch_config import ArchitectureConfig as ArchitectureConfig
from ._arch_config import DatasetInfo as DatasetInfo
from ._dtype import resolve_float
from ._hub_mixin import HubMixin
from .allegro import Allegro, AllegroConfig
from .graph import Graph, species_indices
from .mace import MACE, MACEConfig
from .nequip import NequIP, NequIPConfig
from .response import energy_forces_stress

#: architecture name -> (config class, module class)
ARCHITECTURES: dict[str, tuple[type[ArchitectureConfig], type[eqx.Module]]] = {
    "nequip": (NequIPConfig, NequIP),
    "mace": (MACEConfig, MACE),
    "allegro": (AllegroConfig, Allegro),
}
#: what a backbone dict without an "architecture" key is (every file of format 1.0)
DEFAULT_ARCHITECTURE = "nequip"


def architecture(name: str) -> tuple[type[ArchitectureConfig], type[eqx.Module]]:
    """(Config class, Module class) of an architecture name; the error lists the known ones."""
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def architecture_name(backbone: Mapping[str, Any] | ArchitectureConfig) -> str:
    """The architecture of a backbone dict (default :data:`DEFAULT_ARCHITECTURE`) or config."""
    if isinstance(backbone, ArchitectureConfig):
        return backbone.ARCHITECTURE
    if not isinstance(backbone, Mapping):
        raise ValueError(f"backbone must be a dict, got {type(backbone).__name__}")
    name = backbone.get("architecture", DEFAULT_ARCHITECTURE)
    architecture(name)
    return name


def backbone_config(backbone: Mapping[str, Any] | ArchitectureConfig) -> ArchitectureConfig:
    """The validated config of a backbone dict (or the config itself)."""
    if isinstance(backbone, ArchitectureConfig):
        return backbone
    config_cls, _ = architecture(architecture_name(backbone))
    return config_cls.from_dict({k: v for k, v in backbone.items() if k != "architecture"})


def build_backbone(
    backbone: Mapping[str, Any] | ArchitectureConfig, dtype=None, *, key
) -> eqx.Module:
    """The module of a backbone dict or config: ``Module(config, dtype=dtype, key=key)``."""
    config = backbone_config(backbone)
    _, module_cls = architecture(config.ARCHITECTURE)
    return module_cls(config, dtype=dtype, key=key)


def is_backbone(model: Any) -> bool:
    """Whether `model` is a bare architecture module (a registered Module class)."""
    return isinstance(model, tuple(m for _, m in ARCHITECTURES.values()))


def model_architecture(config: Mapping[str, Any]) -> str | None:
    """The backbone architecture of a model config (``config["backbone"]``, or a shielding
    model's ``config["response"]["backbone"]``); None for a model without one."""
    for where in (config, config.get("response")):
        if isinstance(where, Mapping) and isinstance(where.get("backbone"), Mapping):
            return architecture_name(where["backbone"])
    return None


MODEL_TYPE = "potential"


class Potential(HubMixin, eqx.Module):
    """A bare architecture as a model: energy, forces and stress.

    The energy of each atom is ``energy_scale * (first 0e output) + energy_shift[species]``
    (eV); forces and stress are its derivatives (`zoo.response.energy_forces_stress`). This is
    what ``zoo.save_pretrained(MACE(...), folder)`` writes and ``zoo.load(folder)`` returns.

    **Arguments** of `__init__`: `config` (``{"model_type": "potential", "zoo_version",
    "dtype", "backbone": {"architecture", ...}, "energy_scale": float, "energy_shift":
    [one float per species] or None}``), keyword-only `key`.
    """

    backbone: eqx.Module
    config: dict = eqx.field(static=True)

    def __init__(self, config: dict, *, key):
        if not isinstance(config, dict) or config.get("model_type") != MODEL_TYPE:
            got = config.get("model_type") if isinstance(config, dict) else config
            raise ValueError(f"config: model_type must be {MODEL_TYPE!r}, got {got!r}")
        bb = backbone_config(config["backbone"])
        if e3nn.Irrep("0e") not in [ir for _, ir in e3nn.Irreps(bb.output_irreps)]:
            raise ValueError(f"a potential needs a 0e output (the energy); the backbone's "
                             f"output_irreps are {bb.output_irreps!r}")  # fmt: skip
        scale, shift = config.get("energy_scale", 1.0), config.get("energy_shift")
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
            raise ValueError(f"config: energy_scale must be a number > 0, got {scale!r}")
        if shift is not None and (not isinstance(shift, list) or len(shift) != len(bb.species)):
            raise ValueError(f"config: energy_shift must be None or one float per species "
                             f"({len(bb.species)}), got {shift!r}")  # fmt: skip
        self.config = dict(config)
        self.backbone = build_backbone(bb, resolve_float(config.get("dtype", "float32")), key=key)

    @classmethod
    def from_config(cls, config: dict) -> Potential:
        """A model of the right shapes (random weights, key 0) from a config dict."""
        return cls(config, key=jax.random.key(0))

    @classmethod
    def wrap(cls, backbone: eqx.Module, energy_scale: float = 1.0, energy_shift=None) -> Potential:
        """A potential around a bare architecture module; its weights are kept."""
        from ._serialization import FORMAT_VERSION

        if not is_backbone(backbone):
            raise ValueError(f"wrap needs one of {', '.join(ARCHITECTURES)} modules, got "
                             f"{type(backbone).__name__}")  # fmt: skip
        config = {
            "model_type": MODEL_TYPE,
            "zoo_version": FORMAT_VERSION,
            "dtype": str(jnp.dtype(backbone.dtype)),
            "backbone": backbone.config.to_dict(),
            "energy_scale": float(energy_scale),
            "energy_shift": None if energy_shift is None else [float(e) for e in energy_shift],
        }
        skeleton = eqx.filter_eval_shape(cls.from_config, config)
        return eqx.tree_at(lambda m: m.backbone, skeleton, backbone)

    @property
    def species(self) -> tuple[int, ...]:
        return tuple(self.config["backbone"]["species"])

    @property
    def dtype(self):
        return self.backbone.dtype

    def node_energy(
        self, graph: Graph, edge_vectors: Float[Array, "n_edges 3"] | None = None
    ) -> Float[Array, " n_nodes"]:
        """Per-atom energy (eV), zero on padding nodes."""
        out = self.backbone(graph, edge_vectors).filter(keep="0e").array[:, 0]
        out = out * jnp.asarray(self.config.get("energy_scale", 1.0), out.dtype)
        shift = self.config.get("energy_shift")
        if shift is not None:
            table = jnp.asarray(shift, out.dtype)
            out = out + table[species_indices(graph.numbers, self.species)]
        return jnp.where(graph.node_mask, out, 0)

    def __call__(self, graph: Graph) -> dict[str, Array]:
        """``energy`` `(n_graphs,)` eV, ``forces`` `(n_nodes, 3)` eV/Å, ``stress``
        `(n_graphs, 3, 3)` eV/Å^3 (zero for non-periodic graphs)."""
        return energy_forces_stress(self.node_energy, graph)

    def input_spec(self) -> _predict.InputSpec:
        return _predict.InputSpec(
            name=f"this {self.config['backbone'].get('architecture', DEFAULT_ARCHITECTURE)} "
            "potential",
            species=self.species,
            r_max=self.config["backbone"]["r_max"],
            dtype=self.dtype,
        )

    def predict(self, atoms, batch_size: int = 8) -> dict[str, np.ndarray]:
        """Energy (eV), forces (eV/Å) and stress (eV/Å^3) of one structure or a list.

        **Returns:** one structure: ``energy`` `()`, ``forces`` `(n_atoms, 3)`, ``stress``
        `(3, 3)`; a list: ``energy`` `(n_structures,)`, ``forces`` concatenated
        `(total_atoms, 3)` with ``structure_index``, ``stress`` `(n_structures, 3, 3)`.

        `atoms` may also be any iterable (e.g. ``ase.io.iread``), read in chunks. **Raises**
        ``ValueError`` naming the structure index and element for an element outside the
        training species, and for an empty input; an iterable failing part-way raises
        `zoo.PredictionInterrupted` with the outputs of the structures before it in
        ``.results``.
        """
        return _predict.predict(
            atoms,
            self.input_spec(),
            lambda graph: _predict.forward(self, graph),
            ("forces",),
            batch_size=batch_size,
        )

    def energy(self, atoms) -> np.ndarray:
        """Energy (eV) of one structure `()` or a list `(n_structures,)`."""
        return self.predict(atoms)["energy"]

    def forces(self, atoms) -> np.ndarray:
        """Forces (eV/Å) `(n_atoms, 3)` (a list: concatenated over structures)."""
        return self.predict(atoms)["forces"]

    def stress(self, atoms) -> np.ndarray:
        """Stress (eV/Å^3) `(3, 3)` of one structure, `(n_structures, 3, 3)` of a list."""
        return self.predict(atoms)["stress"]
