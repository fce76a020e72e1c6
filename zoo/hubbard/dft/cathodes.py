"""Battery-cathode cells for the Hubbard data set, from published crystal structures.

Every cell is built from its space group and Wyckoff positions (``ase.spacegroup.crystal``)
and returned as a structure dict (``structures._make``). Li-free ends are the lithiated cells
with Li removed and the lattice kept (topotactic delithiation, not relaxed): the labels probe
another TM oxidation state in the same framework; strain and rattle add the geometry spread.

Sources (room-temperature diffraction):

- rutile beta-MnO2, P4_2/mnm: a = 4.3983, c = 2.8730 A, O 4f x = 0.3046
  (Bolzan, Fong, Kennedy, Howard, Aust. J. Chem. 46, 939 (1993)).
- layered LiNiO2, R-3m: a = 2.878, c = 14.19 A, O 6c z = 0.2412
  (structures.LAYERED_LIMO2; e.g. Kanno et al., J. Solid State Chem. 110, 216 (1994)).
- layered monoclinic LiMnO2, C2/m: a = 5.4387, b = 2.80857, c = 5.3878 A, beta = 115.90 deg,
  Li 2d, Mn 2a, O 4i (0.2723, 0, 0.7706) (Armstrong and Bruce, Nature 381, 499 (1996);
  Capitaine, Gravereau, Delmas, Solid State Ionics 89, 197 (1996)).
- spinel LiMn2O4, Fd-3m (origin 2): a = 8.245 A, Li 8a, Mn 16d, O 32e x = 0.2625
  (e.g. Akimoto et al., J. Solid State Chem. 113, 27 (1994)); primitive fcc cell, 14 atoms.
- olivine LiFePO4, Pnma: a = 10.332, b = 6.010, c = 4.692 A; Fe 4c (0.28222, 1/4, 0.97472),
  P 4c (0.09486, 1/4, 0.41820), O1 4c (0.09678, 1/4, 0.74279), O2 4c (0.45710, 1/4, 0.20602),
  O3 8d (0.16558, 0.04646, 0.28530), Li 4a (Streltsov et al., Acta Cryst. B 49, 147 (1993)).

Magnetic order: ferromagnetic, except rutile MnO2 (Mn at the corner and body centre
antiparallel: the collinear approximation of its screw order, Yoshimori, J. Phys. Soc. Jpn.
14, 807 (1959)) and olivine (Santoro and Newnham, Acta Cryst. 22, 344 (1967): the Fe of each
corner-sharing layer antiparallel).
"""

from __future__ import annotations

import math

import numpy as np

from .structures import LAYERED_LIMO2, _make, layered_limo2

RUTILE_MNO2 = {"cellpar": (4.3983, 4.3983, 2.8730, 90, 90, 90), "x_o": 0.3046}
MONOCLINIC_LIMNO2 = {"cellpar": (5.4387, 2.80857, 5.3878, 90, 115.90, 90), "o": (0.2723, 0, 0.7706)}
SPINEL_LIMN2O4 = {"a": 8.245, "x_o": 0.2625}
OLIVINE_LIFEPO4 = {
    "cellpar": (10.332, 6.010, 4.692, 90, 90, 90),
    "sites": {
        "Li": (0.0, 0.0, 0.0),
        "Fe": (0.28222, 0.25, 0.97472),
        "P": (0.09486, 0.25, 0.41820),
        "O1": (0.09678, 0.25, 0.74279),
        "O2": (0.45710, 0.25, 0.20602),
        "O3": (0.16558, 0.04646, 0.28530),
    },
}


def _from_ase(atoms, spin_of) -> dict:
    """Structure dict of ``atoms`` with spins ``spin_of(symbol, fractional position)``."""
    frac = atoms.get_scaled_positions(wrap=True)
    sym = atoms.get_chemical_symbols()
    spins = [spin_of(s, f) for s, f in zip(sym, frac, strict=True)]
    return _make(sym, atoms.cell.array, atoms.positions, spins)


def without(structure: dict, element: str, keep: int = 0) -> dict:
    """``structure`` with all but the first ``keep`` atoms of ``element`` removed."""
    idx = [i for i, s in enumerate(structure["symbols"]) if s == element]
    if not idx:
        raise ValueError(f"element: no {element!r} atom in {structure['symbols']}")
    drop = set(idx[keep:])
    take = [i for i in range(len(structure["symbols"])) if i not in drop]
    return _make(
        [structure["symbols"][i] for i in take],
        structure["cell"],
        [structure["positions"][i] for i in take],
        [structure["spins"][i] for i in take],
    )


def rutile_mno2() -> dict:
    """beta-MnO2 (6 atoms), Mn(0,0,0) up and Mn(1/2,1/2,1/2) down."""
    from ase.spacegroup import crystal

    x = RUTILE_MNO2["x_o"]
    at = crystal(
        ["Mn", "O"], [(0, 0, 0), (x, x, 0)], spacegroup=136, cellpar=RUTILE_MNO2["cellpar"]
    )
    return _from_ase(at, lambda s, f: 0 if s != "Mn" else (1 if f[2] < 0.25 else -1))


def layered_linio2(lithium: float = 1.0) -> dict:
    """R-3m LiNiO2 (4 atoms), NiO2 (``lithium=0``, 3 atoms) or Li0.5NiO2 (``lithium=0.5``:
    the cell doubled along a1, one of its two Li removed; 7 atoms), ferromagnetic."""
    if lithium not in (0.0, 0.5, 1.0):
        raise ValueError(f"lithium: expected 0, 0.5 or 1, got {lithium}")
    st = layered_limo2("Ni")
    if lithium == 1.0:
        return st
    if lithium == 0.0:
        return without(st, "Li")
    cell = np.asarray(st["cell"])
    pos = np.asarray(st["positions"])
    big = _make(
        st["symbols"] * 2,
        np.vstack([2 * cell[0], cell[1], cell[2]]),
        np.vstack([pos, pos + cell[0]]),
        st["spins"] * 2,
    )
    return without(big, "Li", keep=1)


def monoclinic_limno2(lithium: bool = True) -> dict:
    """C2/m layered LiMnO2 in its primitive cell (4 atoms; MnO2 without Li), ferromagnetic."""
    from ase.spacegroup import crystal

    p = MONOCLINIC_LIMNO2
    at = crystal(
        ["Li", "Mn", "O"],
        [(0, 0.5, 0.5), (0, 0, 0), p["o"]],
        spacegroup=12,
        cellpar=p["cellpar"],
        primitive_cell=True,
    )
    st = _from_ase(at, lambda s, f: 1 if s == "Mn" else 0)
    return st if lithium else without(st, "Li")


def spinel_limn2o4() -> dict:
    """Fd-3m LiMn2O4 in the primitive fcc cell (2 Li, 4 Mn, 8 O), ferromagnetic."""
    from ase.spacegroup import crystal

    a, x = SPINEL_LIMN2O4["a"], SPINEL_LIMN2O4["x_o"]
    at = crystal(
        ["Li", "Mn", "O"],
        [(0.125, 0.125, 0.125), (0.5, 0.5, 0.5), (x, x, x)],
        spacegroup=227,
        setting=2,
        cellpar=[a, a, a, 90, 90, 90],
        primitive_cell=True,
    )
    return _from_ase(at, lambda s, f: 1 if s == "Mn" else 0)


def olivine_lifepo4(lithium: bool = True) -> dict:
    """Pnma LiFePO4 (28 atoms; FePO4 without Li, 24), antiferromagnetic.

    The 4c Fe sit in two corner-sharing layers (x ~ 1/4 and x ~ 3/4); within each layer the
    y = 1/4 and y = 3/4 sites are antiparallel.
    """
    from ase.spacegroup import crystal

    sites = OLIVINE_LIFEPO4["sites"]
    names = ["Li", "Fe", "P", "O1", "O2", "O3"]
    at = crystal(
        [n[0] if n.startswith("O") else n for n in names],
        [sites[n] for n in names],
        spacegroup=62,
        cellpar=OLIVINE_LIFEPO4["cellpar"],
    )

    def spin(s, f):
        if s != "Fe":
            return 0
        return 1 if (f[0] < 0.5) == (abs(f[1] - 0.25) < 0.1) else -1

    st = _from_ase(at, spin)
    return st if lithium else without(st, "Li")


def interplanar_spacings(cell) -> np.ndarray:
    """Distance between lattice planes spanned by each pair of cell vectors (Angstrom)."""
    cell = np.asarray(cell, float)
    vol = abs(np.linalg.det(cell))
    return np.array(
        [vol / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
    )


def mesh_like_rocksalt(cell, reference_cell, reference_mesh=(2, 2, 2)) -> list[int]:
    """Monkhorst-Pack divisions giving ``cell`` the k (or q) density of ``reference_mesh``
    on ``reference_cell``: n_i = ceil(L / d_i), L = the reference's smallest n_j d_j."""
    ref = interplanar_spacings(reference_cell) * np.asarray(reference_mesh)
    length = float(ref.min())
    return [max(1, math.ceil(length / d - 1e-6)) for d in interplanar_spacings(cell)]


__all__ = [
    "LAYERED_LIMO2",
    "layered_linio2",
    "mesh_like_rocksalt",
    "monoclinic_limno2",
    "olivine_lifepo4",
    "rutile_mno2",
    "spinel_limn2o4",
    "without",
]
