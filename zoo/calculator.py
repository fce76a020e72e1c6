"""`Calculator`: any zoo graph model as an ASE calculator.

Tensor outputs (``born_charges``, ``raman_tensors``, ``dielectric``, ``chi2``, ``shielding``)
are properties read with ``atoms.calc.get_property(name, atoms)``; ASE's standard names
``born_effective_charges`` and ``dielectric_tensor`` are filled too. Energy, forces and
stress are implemented only for a model that defines a *physical* energy, i.e. a method
``node_energy(graph, edge_vectors) -> (n_nodes,)`` per-atom energies in eV (forces and stress
by `zoo.energy_forces_stress`). The latent energy of a derivative-formulation response model
is not a physical energy and is never reported.

A field-dependent potential (`zoo.field.FieldModel`) gives energy, forces, stress, ``dipole``
(the cell dipole P, e·Å, modulo the polarization quantum), ``polarization`` (P / volume,
e/Å^2), ``born_effective_charges`` (e, ``[atom, P index, displacement]``), ``polarizability``
(e·Å^2/V) and ``raman_tensors`` (Å^2), all at the calculator's parameter ``field`` (V/Å,
default zero; ``calc.set(field=...)`` changes it), so ASE molecular dynamics runs under a
field. Those quantities need a cell periodic in all three directions.

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

from . import _jax_cache, _predict
from .field import FieldModel, check_field
from .graph import Graph, build_graph, check_species
from .model import OUTPUTS
from .response import energy_forces_stress
from .structure import Structure

#: ASE's standard property names for zoo outputs
ASE_NAMES = {"born_charges": "born_effective_charges", "dielectric": "dielectric_tensor"}
ENERGY_PROPERTIES = ("energy", "free_energy", "forces", "stress")
#: properties of a field-dependent potential (`zoo.field.FieldModel`)
FIELD_PROPERTIES = ENERGY_PROPERTIES + (
    "dipole", "polarization", "born_effective_charges", "born_charges", "polarizability",
    "raman_tensors",
)  # fmt: skip
_RESPONSE = {"born_effective_charges", "born_charges", "polarizability", "raman_tensors"}


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


def _field_forward(model, graph: Graph, field, response: bool, raman: bool) -> dict:
    return model(graph, field, response=response, raman=raman)


class Calculator(_AseCalculator):
    """ASE calculator of a zoo model (see the module docstring).

    **Arguments:** `model` (an ``eqx.Module`` such as `zoo.model.ResponseModel`, or a name or
    path for `zoo.load`), `acoustic_sum_rule` (override the model's switch; response models
    only), `field` (applied electric field, V/Å, `(3,)`; field-dependent potentials only),
    and ASE's keyword arguments.
    """

    def __init__(self, model, *, acoustic_sum_rule: bool | None = None, field=None, **kwargs):
        if isinstance(model, (str, os.PathLike)):
            from .hub import load

            model = load(model)
        if not isinstance(model, eqx.Module):
            raise ValueError(f"model must be a zoo model (eqx.Module), got {type(model).__name__}")
        _jax_cache.enable()  # an MD run in a new process reuses the compiled model
        inner, nucleus = _unwrap(model)
        self.r_max = _r_max(inner)
        self.model, self.nucleus = inner, nucleus
        self.acoustic_sum_rule = acoustic_sum_rule
        self.is_field = isinstance(inner, FieldModel)
        if self.is_field:
            self.outputs, self.has_energy = (), False
            self.implemented_properties = list(FIELD_PROPERTIES)
            self._jit = eqx.filter_jit(_field_forward)
            super().__init__(**kwargs)
            self.set(field=np.zeros(3) if field is None else field)
            return
        if field is not None:
            raise ValueError(
                f"{type(inner).__name__} does not depend on an electric field: field= needs a "
                "field-dependent potential (zoo.FieldModel, trained with recipes.field_potential)"
            )
        self.outputs = tuple(n for n in getattr(inner, "outputs", ()) if n in OUTPUTS)
        self.has_energy = callable(getattr(inner, "node_energy", None))
        props = list(ENERGY_PROPERTIES) if self.has_energy else []
        props += list(self.outputs) + [ASE_NAMES[n] for n in self.outputs if n in ASE_NAMES]
        if not props:
            raise ValueError(f"{type(inner).__name__} has no outputs and no node_energy")
        self.implemented_properties = props
        self._jit = eqx.filter_jit(_forward)  # one per calculator: compiled once per bucket
        super().__init__(**kwargs)

    def set(self, **kwargs):
        """ASE's ``set``; a new ``field`` (V/Å, `(3,)`) is validated and clears the results."""
        if "field" in kwargs:
            if not getattr(self, "is_field", False):
                raise ValueError(
                    f"{type(self.model).__name__} does not depend on an electric field"
                )
            kwargs["field"] = check_field(kwargs["field"]).tolist()
            if np.shape(kwargs["field"]) != (3,):
                raise ValueError(
                    f"field must have shape (3,) (V/Å), got {np.shape(kwargs['field'])}"
                )
        changed = super().set(**kwargs)
        if "field" in changed:
            self.reset()
        return changed

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        """Compute every implemented property of `atoms` in one forward pass."""
        super().calculate(atoms, properties, system_changes)
        if self.is_field:
            self._calculate_field(properties or ["energy"])
            return
        structure = Structure.from_ase(self.atoms)
        spec = self.model.input_spec() if hasattr(self.model, "input_spec") else None
        if spec is None:
            check_species([structure], self.model.species, f"this {type(self.model).__name__}")
        else:  # the predictor's own checks: species, periodicity, nucleus
            _predict.check_structures([structure], spec)
        graph = build_graph([structure], self.r_max, dtype=getattr(self.model, "dtype", None))
        if spec is not None:  # out-of-domain warnings from the graph just built
            _predict.warn_out_of_domain(graph, [0], spec.domain)
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

    def _calculate_field(self, properties) -> None:
        structure = Structure.from_ase(self.atoms)
        if not structure.pbc.all():
            raise ValueError(
                f"pbc={structure.pbc.tolist()}: the polarization of this field model is a "
                "bulk (Berry-phase) quantity defined modulo e*R for a cell periodic in all "
                "three directions; along a non-periodic axis only a dipole moment is defined, "
                "and the model was trained on bulk crystals only: give a fully periodic cell"
            )
        spec = self.model.input_spec(("polarization",))
        _predict.check_structures([structure], spec)
        graph = build_graph([structure], self.r_max, dtype=self.model.dtype)
        _predict.warn_out_of_domain(graph, [0], spec.domain)
        raman = "raman_tensors" in properties
        response = raman or bool(_RESPONSE & set(properties))
        field = np.zeros((graph.n_graphs, 3))
        field[0] = self.parameters["field"]
        out = self._jit(self.model, graph, field, response, raman)
        n = len(structure)
        dipole = np.asarray(out["polarization"], np.float64)[0]
        results = {
            "energy": float(np.asarray(out["energy"])[0]),
            "forces": np.asarray(out["forces"], np.float64)[:n],
            "stress": full_3x3_to_voigt_6_stress(np.asarray(out["stress"], np.float64)[0]),
            "dipole": dipole,
            "polarization": dipole / structure.volume,
        }
        results["free_energy"] = results["energy"]
        if response:
            born = np.asarray(out["born_charges"], np.float64)[:n]
            results["born_effective_charges"] = results["born_charges"] = born
            results["polarizability"] = np.asarray(out["polarizability"], np.float64)[0]
        if raman:
            results["raman_tensors"] = np.asarray(out["raman_tensors"], np.float64)[:n]
        self.results = results


__all__ = ["Calculator", "ASE_NAMES"]
