"""Config of `zoo.field.FieldModel`: defaults, validation and the normalisation fitted on
training frames (per-species energy and polarizability offsets, output scales, domain)."""

from __future__ import annotations

import math

import numpy as np

from ._response_config import training_domain
from .structure import as_structures

MODEL_TYPE = "field"
COUPLINGS = ("expansion", "node_input")
#: backbone output irreps per coupling: energy 0e; dipole 1o; polarizability 0e + 2e
BACKBONE_OUTPUT = {"expansion": "2x0e+1x1o+1x2e", "node_input": "1x0e"}
#: nominal oxidation states, the fixed ionic part of the polarization (integers, so a wrapped
#: atom moves the dipole by a whole polarization quantum)
NOMINAL_CHARGES = {56: 2, 22: 4, 8: -2, 14: 4}


def make_field_config(
    species,
    *,
    coupling: str = "expansion",
    ionic_charges=None,
    dtype: str = "float32",
    **backbone,
) -> dict:
    """A JSON-safe config with neutral normalisation (fit it with :func:`fit_field_config`).

    **Arguments:** `species` (atomic numbers), `coupling` (``"expansion"``: ``E = U(r) -
    eps.P(r) - eps.alpha(r).eps / 2`` with equivariant per-atom dipoles and polarizabilities;
    ``"node_input"``: the field is a ``1x1o`` input of every node and ``E(r, eps)`` is
    learned whole), `ionic_charges` (one integer per species, or ``None`` for the nominal
    oxidation states of :data:`NOMINAL_CHARGES`; ``[]`` for none), `dtype`, and NequIP
    hyperparameters (`zoo.nequip.NequIPConfig`) as keywords.
    """
    from .nequip import NequIPConfig

    species = [int(z) for z in species]
    if coupling not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
    if ionic_charges is None:
        missing = [z for z in species if z not in NOMINAL_CHARGES]
        if missing:
            raise ValueError(f"no nominal charge for Z={missing}: pass ionic_charges")
        ionic_charges = [NOMINAL_CHARGES[z] for z in species]
    ionic_charges = [int(q) for q in ionic_charges]
    if ionic_charges and len(ionic_charges) != len(species):
        raise ValueError("ionic_charges needs one integer per species (or [] for none)")
    bb = {**backbone, "species": species, "output_irreps": BACKBONE_OUTPUT[coupling]}
    if coupling == "node_input":
        bb["node_input_irreps"] = "1x1o"
    bb = NequIPConfig(**bb).to_dict()  # validates
    n = len(species)
    return {
        "model_type": MODEL_TYPE,
        "zoo_version": "1.0",
        "dtype": str(dtype),
        "coupling": coupling,
        "backbone": {"architecture": "nequip", **bb},
        "ionic_charges": ionic_charges,
        "energy_shift": [0.0] * n,
        "energy_scale": 1.0,
        "dipole_scale": 1.0,
        "polarizability_shift": [0.0] * n,
        "polarizability_scale": 1.0,
        "field_scale": 1.0,
        "domain": None,
    }


def check_field_config(config: dict) -> dict:
    """Refuse a config this code cannot build, naming the key."""
    if config.get("model_type") != MODEL_TYPE:
        raise ValueError(f"config: model_type must be {MODEL_TYPE!r}, got "
                         f"{config.get('model_type')!r}")  # fmt: skip
    if config.get("coupling") not in COUPLINGS:
        raise ValueError(f"config: coupling must be one of {COUPLINGS}")
    n = len(config["backbone"]["species"])
    for key in ("energy_shift", "polarizability_shift"):
        if len(config.get(key, ())) != n:
            raise ValueError(f"config: {key} needs one value per species ({n})")
    for key in ("energy_scale", "dipole_scale", "polarizability_scale", "field_scale"):
        value = config.get(key)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"config: {key} must be a positive number, got {value!r}")
    if config.get("ionic_charges") and len(config["ionic_charges"]) != n:
        raise ValueError("config: ionic_charges needs one integer per species")
    return config


def _composition(structures, species) -> np.ndarray:
    return np.stack([[np.sum(s.numbers == z) for z in species] for s in structures]).astype(float)


def fit_field_config(config: dict, records: list[dict]) -> dict:
    """Offsets and scales from training records (`zoo.data.field.load_field`); a new config.

    Energy: per-species offsets by least squares on composition, scale = force RMS.
    Polarizability: per-species isotropic offsets by least squares on the trace / 3, scale =
    RMS of the remaining per-frame entries over sqrt(atoms). Dipole scale: RMS of the Born
    charges minus the ionic charges. Also records the training domain for warnings.
    """
    if not records:
        raise ValueError("fit_field_config needs at least one training record")
    config = {**config}
    species = config["backbone"]["species"]
    structures = as_structures([r["structure"] for r in records])
    counts = _composition(structures, species)
    energies = np.asarray([r["energy"] for r in records])
    shift = np.linalg.lstsq(counts, energies, rcond=None)[0]
    config["energy_shift"] = [float(x) for x in shift]
    forces = np.concatenate([r["forces"] for r in records])
    config["energy_scale"] = float(max(np.sqrt(np.mean(forces**2)), 1e-3))
    alpha = np.stack([r["polarizability"] for r in records])
    iso = np.trace(alpha, axis1=1, axis2=2) / 3
    a_shift = np.linalg.lstsq(counts, iso, rcond=None)[0]
    rest = alpha - (counts @ a_shift)[:, None, None] * np.eye(3)
    n_atoms = counts.sum(1)
    config["polarizability_shift"] = [float(x) for x in a_shift]
    config["polarizability_scale"] = float(
        max(np.sqrt(np.mean(rest**2 / n_atoms[:, None, None])), 1e-4)
    )
    charges = config["ionic_charges"] or [0] * len(species)
    born = np.concatenate([r["born_charges"] for r in records])
    numbers = np.concatenate([s.numbers for s in structures])
    q = np.asarray([charges[species.index(int(z))] for z in numbers], float)
    config["dipole_scale"] = float(
        max(np.sqrt(np.mean((born - q[:, None, None] * np.eye(3)) ** 2)), 1e-3)
    )
    config["domain"] = training_domain(structures)
    return config
