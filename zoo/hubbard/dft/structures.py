"""Small magnetic transition-metal oxide cells for the Hubbard data set.

A structure is a plain dict (JSON-serialisable, stored verbatim in every label row):
``{"symbols": [...], "cell": 3x3 (Angstrom, rows = lattice vectors),
"positions": Nx3 (Angstrom, Cartesian), "spins": [+1/-1/0 per atom], "pbc": [True]*3}``.
``spins`` selects the species label (``Mn1`` up, ``Mn2`` down) and the starting magnetisation.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

TRANSITION_METALS = frozenset(
    "Sc Ti V Cr Mn Fe Co Ni Cu Zn Y Zr Nb Mo Tc Ru Rh Pd Ag Cd Hf Ta W Re Os Ir Pt Au".split()
)

# Experimental rock-salt lattice constants (Angstrom), room temperature.
ROCKSALT_A = {"Mn": 4.445, "Fe": 4.334, "Co": 4.260, "Ni": 4.177}
# Layered R-3m LiMO2 (hexagonal a, c in Angstrom; oxygen z). LiMnO2/LiFeO2 in this structure are
# hypothetical/metastable; they give extra d-occupation diversity, not physical ground states.
LAYERED_LIMO2 = {
    "Co": (2.816, 14.05, 0.2396),
    "Ni": (2.878, 14.19, 0.2412),
    "Mn": (2.900, 14.30, 0.2450),
    "Fe": (2.950, 14.40, 0.2420),
}


def rocksalt_afm(metal: str, a: float | None = None) -> dict:
    """AFM-II rock-salt MO in the 4-atom rhombohedral cell (TM up, TM down, O, O)."""
    if metal not in ROCKSALT_A and a is None:
        raise ValueError(f"metal: no default lattice constant for {metal!r}; pass a")
    a = ROCKSALT_A[metal] if a is None else float(a)
    cell = a * np.array([[1.0, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 1.0]])
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], [0.75, 0.75, 0.75]])
    return _make([metal, metal, "O", "O"], cell, frac @ cell, [1, -1, 0, 0])


def rocksalt_fm(metal: str, a: float | None = None) -> dict:
    """Ferromagnetic rock-salt MO in the 2-atom fcc primitive cell (the smallest test cell)."""
    if metal not in ROCKSALT_A and a is None:
        raise ValueError(f"metal: no default lattice constant for {metal!r}; pass a")
    a = ROCKSALT_A[metal] if a is None else float(a)
    cell = 0.5 * a * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    return _make([metal, "O"], cell, [[0, 0, 0], [0.5 * a, 0.5 * a, 0.5 * a]], [1, 0])


def layered_limo2(metal: str) -> dict:
    """R-3m LiMO2 in the 4-atom rhombohedral primitive cell (TM, O, O, Li), ferromagnetic."""
    if metal not in LAYERED_LIMO2:
        raise ValueError(f"metal: no layered LiMO2 parameters for {metal!r}")
    a, c, z = LAYERED_LIMO2[metal]
    # Rhombohedral primitive vectors of the hexagonal R-3m cell (obverse setting).
    cell = np.array(
        [
            [a / 2, -a / (2 * np.sqrt(3)), c / 3],
            [0.0, a / np.sqrt(3), c / 3],
            [-a / 2, -a / (2 * np.sqrt(3)), c / 3],
        ]
    )
    # Tabulated z is for Li at 3a; with the TM at the origin the oxygens sit at +-(1/2 - z).
    zo = 0.5 - z
    frac = np.array([[0, 0, 0], [zo, zo, zo], [-zo, -zo, -zo], [0.5, 0.5, 0.5]])
    spin = 0 if metal == "Co" else 1  # LiCoO2 is low-spin Co3+
    return _make([metal, "O", "O", "Li"], cell, frac @ cell, [spin, 0, 0, 0])


def perturb(structure: dict, *, seed: int, sigma: float = 0.04, strain: float = 0.0) -> dict:
    """Seeded Gaussian rattle (``sigma`` Angstrom per Cartesian component) and isotropic strain."""
    if sigma < 0:
        raise ValueError(f"sigma: must be >= 0, got {sigma}")
    rng = np.random.default_rng(seed)
    cell = np.asarray(structure["cell"], float) * (1.0 + strain)
    pos = np.asarray(structure["positions"], float) * (1.0 + strain)
    pos = pos + rng.normal(0.0, sigma, size=pos.shape)
    return _make(structure["symbols"], cell, pos, structure["spins"])


def _make(symbols, cell, positions, spins) -> dict:
    cell = np.asarray(cell, float)
    positions = np.asarray(positions, float)
    return {
        "symbols": list(symbols),
        "cell": np.round(cell, 10).tolist(),
        "positions": np.round(positions, 10).tolist(),
        "spins": [int(s) for s in spins],
        "pbc": [True, True, True],
    }


def validate_structure(structure: dict) -> None:
    """Raise ValueError naming the first bad field of a structure dict."""
    for key in ("symbols", "cell", "positions", "spins"):
        if key not in structure:
            raise ValueError(f"structure: missing field {key!r}")
    n = len(structure["symbols"])
    if np.shape(structure["cell"]) != (3, 3):
        raise ValueError(
            f"structure.cell: expected shape (3, 3), got {np.shape(structure['cell'])}"
        )
    if np.shape(structure["positions"]) != (n, 3):
        raise ValueError(
            f"structure.positions: expected shape ({n}, 3), got {np.shape(structure['positions'])}"
        )
    if len(structure["spins"]) != n:
        raise ValueError(f"structure.spins: expected {n} entries, got {len(structure['spins'])}")
    if abs(np.linalg.det(np.asarray(structure["cell"], float))) < 1e-6:
        raise ValueError("structure.cell: singular cell")


def structure_id(structure: dict) -> str:
    """Content hash of a structure dict (12 hex digits)."""
    blob = json.dumps(
        {k: structure[k] for k in ("symbols", "cell", "positions", "spins")}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def to_ase(structure: dict):
    """The structure as an ``ase.Atoms`` (spins as initial magnetic moments)."""
    from ase import Atoms

    atoms = Atoms(
        structure["symbols"], positions=structure["positions"], cell=structure["cell"], pbc=True
    )
    atoms.set_initial_magnetic_moments(structure["spins"])
    return atoms


def from_ase(atoms, spins=None) -> dict:
    """A structure dict from ``ase.Atoms``; spins default to the signs of initial moments."""
    if spins is None:
        spins = np.sign(atoms.get_initial_magnetic_moments()).astype(int)
    return _make(atoms.get_chemical_symbols(), atoms.cell.array, atoms.positions, spins)
