"""Literature silicate structures with experimental Si-29 shifts (``data/si29/experimental_shifts.json``).

Each compound is built with ASE from its published space group, cell and asymmetric unit and
checked (:func:`check_silicate`) before use: every Si has four O neighbours at 1.57-1.70 A
(the range of Si-O bonds in silicates, bridging bonds of chain silicates reach ~1.69 A) and no
two atoms are closer than 1.5 A. ``recipes/si29_reference.py`` fits the shift reference of
`si29-shielding` to them.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from .si29 import _path

SHIFTS = "experimental_shifts.json"
SI_O_RANGE = (1.57, 1.70)  # Angstrom
MIN_DISTANCE = 1.5  # Angstrom, any pair


@dataclasses.dataclass(frozen=True, eq=False)
class ReferenceCompound:
    """One compound: `atoms` (``ase.Atoms``, periodic), `site` `(n_atoms,)` the asymmetric-unit
    label of each atom, `shifts` {Si site label: experimental shift, ppm vs TMS}, `name`,
    `formula`, `qn` (Q^n of its SiO4 units), `structure_source`, `shift_source`."""

    name: str
    formula: str
    qn: int
    atoms: object
    site: np.ndarray
    shifts: dict
    structure_source: str
    shift_source: str

    @property
    def shift(self) -> float:
        """Mean experimental shift over the Si sites (equal multiplicities in this set)."""
        return float(np.mean(list(self.shifts.values())))


def check_silicate(atoms) -> dict:
    """Bond checks of a built silicate.

    **Returns:** ``{"si_o_min", "si_o_max", "min_distance"}`` (Angstrom). **Raises**
    ValueError when a Si atom has not exactly four O neighbours within 2 A, a Si-O bond is
    outside `SI_O_RANGE`, or two atoms are closer than `MIN_DISTANCE`.
    """
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, 2.0)
    numbers = atoms.numbers
    si_o = (numbers[i] == 14) & (numbers[j] == 8)
    for k in np.flatnonzero(numbers == 14):
        n_o = int(np.sum(si_o & (i == k)))
        if n_o != 4:
            raise ValueError(f"Si atom {k} has {n_o} O neighbours within 2 A, expected 4")
    bonds = d[si_o]
    lo, hi = float(bonds.min()), float(bonds.max())
    if lo < SI_O_RANGE[0] or hi > SI_O_RANGE[1]:
        raise ValueError(f"Si-O bonds {lo:.3f}-{hi:.3f} A outside {SI_O_RANGE} A")
    closest = float(d.min()) if d.size else np.inf
    if closest < MIN_DISTANCE:
        raise ValueError(f"two atoms {closest:.3f} A apart (< {MIN_DISTANCE} A)")
    return {"si_o_min": lo, "si_o_max": hi, "min_distance": closest}


def _build(entry: dict):
    from ase.spacegroup import crystal
    from ase.spacegroup.spacegroup import spacegroup_from_data

    group = entry["spacegroup"]
    if "symops" in entry:  # the published, non-standard setting
        group = spacegroup_from_data(no=group, setting=1, sitesym=entry["symops"])
    sites = entry["sites"]
    atoms = crystal(
        [s[0] for s in sites],
        [s[2:5] for s in sites],
        spacegroup=group,
        cellpar=entry["cell"],
        onduplicates="error",
    )
    labels = np.array([sites[k][1] for k in atoms.arrays.pop("spacegroup_kinds")])
    return atoms, labels


def load_reference_compounds(path: str | os.PathLike | None = None) -> list[ReferenceCompound]:
    """Build and check every compound of ``experimental_shifts.json`` (a folder or the file;
    default ``data/si29``). Raises ValueError naming the compound on a malformed entry or a
    failed :func:`check_silicate`."""
    file = _path(path, SHIFTS)
    entries = json.loads(file.read_text()).get("compounds")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{file}: expected a non-empty list under 'compounds'")
    out = []
    for entry in entries:
        name = entry.get("name", "?")
        try:
            atoms, labels = _build(entry)
            check_silicate(atoms)
            shifts = {s["label"]: float(s["delta"]) for s in entry["shifts"]}
            si_labels = {str(x) for x in labels[atoms.numbers == 14]}
            if set(shifts) != si_labels:
                raise ValueError(f"shifts name {sorted(shifts)}, Si sites are {sorted(si_labels)}")
            out.append(
                ReferenceCompound(
                    name=name,
                    formula=entry["formula"],
                    qn=int(entry["qn"]),
                    atoms=atoms,
                    site=labels,
                    shifts=shifts,
                    structure_source=entry["structure_source"],
                    shift_source=entry["shift_source"],
                )
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{file}: compound {name!r}: {err}") from None
    return out
