"""`Calculator`: any zoo graph model as an ASE calculator.

Tensor outputs (``born_charges``, ``raman_tensors``, ``dielectric``, ``chi2``, ``shielding``)
are properties read with ``atoms.calc.get_property(name, atoms)``; ASE's standard names
``born_effective_charges`` and ``dielectric_tensor`` are filled too. Energy, forces and
stress are implemented only for a model that defines a *physical* energy, i.e. a method
``node_energy(graph, edge_vectors) -> (n_nodes,)`` per-atom energies in eV (forces and stress
by `zoo.energy_forces_stress`). The latent energy of a derivative-formulation response model
is not a physical energy and is never reported.

Each structure is padded to a size bucket (`zoo.build_graph`), so the forward pass is
compiled once per bucket: an MD run or a relaxation compiles once.
"""

from __future__ import annotations

import os

import equinox as eqx
import numpy as np
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from . import _predict
from .graph import Graph, build_graph, check_species
from .model import OUTPUTS
from .response import energy_forces_stress
from .structure import Structure

#: ASE's standard property names for zoo outputs
ASE_NAMES = {"born_charges": "born_effective_charges", "dielectric": "dielectric_tensor"}
ENERGY_PROPERTIES = ("energy", "free_energy", "forces", "stress")


def _unwrap(model):
    """(graph model, nucleus atomic number or None) of a model or a wrapper around one."""
    inner = getattr(model, "response", None)
    if isinstance(inner, eqx.Module) and hasattr(inner, "outputs"):
        return inner, getattr(model, "atomic_number", None)
    return model, None


def _r_max(model) -> float:
    config = getattr(model, "config", None)
    if isinstance(config, dict) and isinstance(config.get("backbone"), dict):
        return float(config["backbone"]["r_max"])
    if hasattr(model, "r_max"):
        return float(model.r_max)
    raise ValueError(
        f"{type(model).__name__} is not a structure model (no config['backbone']['r_max'] or "
        "r_max): the ASE calculator needs a graph model"
    )


def _forward(model, graph: Graph, tensors: bool, energy: bool, asr: bool | None) -> dict:
    out = {}
    if tensors:
        out = dict(model(graph) if asr is None else model(graph, acoustic_sum_rule=asr))
    if energy:
        out.update(energy_forces_stress(model.node_energy, graph))
    return out


class Calculator(_AseCalculator):
    """ASE calculator of a zoo model (see the module docstring).

    **Arguments:** `model` (an ``eqx.Module`` such as `zoo.model.ResponseModel`, or a name or
    path for `zoo.load`), `acoustic_sum_rule` (override the model's switch; response models
    only), and ASE's keyword arguments.
    """

    def __init__(self, model, *, acoustic_sum_rule: bool | None = None, **kwargs):
        if isinstance(model, (str, os.PathLike)):
            from .hub import load

            model = load(model)
        if not isinstance(model, eqx.Module):
            raise ValueError(f"model must be a zoo model (eqx.Module), got {type(model).__name__}")
        inner, nucleus = _unwrap(model)
        self.r_max = _r_max(inner)
        self.model, self.nucleus = inner, nucleus
        self.acoustic_sum_rule = acoustic_sum_rule
        self.outputs = tuple(n for n in getattr(inner, "outputs", ()) if n in OUTPUTS)
        self.has_energy = callable(getattr(inner, "node_energy", None))
        props = list(ENERGY_PROPERTIES) if self.has_energy else []
        props += list(self.outputs) + [ASE_NAMES[n] for n in self.outputs if n in ASE_NAMES]
        if not props:
            raise ValueError(f"{type(inner).__name__} has no outputs and no node_energy")
        self.implemented_properties = props
        self._jit = eqx.filter_jit(_forward)  # one per calculator: compiled once per bucket
        super().__init__(**kwargs)

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        """Compute every implemented property of `atoms` in one forward pass."""
        super().calculate(atoms, properties, system_changes)
        structure = Structure.from_ase(self.atoms)
        spec = self.model.input_spec() if hasattr(self.model, "input_spec") else None
        check_species([structure], self.model.species, f"this {type(self.model).__name__}")
        if spec is not None:  # the predictor's own checks: periodicity, nucleus
            _predict.check_structures([structure], spec)
        graph = build_graph([structure], self.r_max, dtype=getattr(self.model, "dtype", None))
        if spec is not None:  # out-of-domain warnings from the graph just built
            _predict.warn_out_of_domain(graph, [0], spec.domain, stacklevel=3)
        out = self._jit(
            self.model, graph, bool(self.outputs), self.has_energy, self.acoustic_sum_rule
        )
        n = len(structure)
        results = {}
        for name in self.outputs:
            value = np.asarray(out[name], np.float64)
            value = value[:n] if OUTPUTS[name][1] else value[0]
            if self.nucleus is not None and OUTPUTS[name][1]:
                value = np.where(
                    (structure.numbers == self.nucleus).reshape((-1,) + (1,) * (value.ndim - 1)),
                    value,
                    np.nan,
                )
            results[name] = value
            if name in ASE_NAMES:
                results[ASE_NAMES[name]] = value
        if self.has_energy:
            energy = float(np.asarray(out["energy"])[0])
            results["energy"] = results["free_energy"] = energy
            results["forces"] = np.asarray(out["forces"], np.float64)[:n]
            if structure.pbc.all():
                stress = np.asarray(out["stress"], np.float64)[0]
                results["stress"] = full_3x3_to_voigt_6_stress(stress)
        self.results = results


__all__ = ["Calculator", "ASE_NAMES"]
