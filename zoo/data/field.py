"""Finite-field DFT frames of BaTiO3 and alpha-SiO2 (``data/field``, see its README).

One record per frame: the structure, the zero-field DFT energy, forces, stress, the Berry-phase
cell dipole (defined modulo the polarization quantum), Born charges with the convention
``Z[i, a, b] = dP_a / dr_{i,b}`` (polarization index first) and the cell polarizability
``dP_a / d eps_b``. Every frame is checked on reading; a missing key, a wrong shape or a
non-finite value raises one ValueError naming the file and frame.
"""

from __future__ import annotations

import io
import json
import lzma
import os
from pathlib import Path

import numpy as np

from ..structure import Structure

#: ``data/field`` of a source checkout
DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "field"
#: material name -> file in DATA_DIR
FILES = {"batio3": "BaTiO3.extxyz.xz", "sio2": "SiO2.extxyz.xz"}

#: record key -> (shape after the atom axis for per-atom arrays, or full shape; per atom)
TARGETS: dict[str, tuple[tuple[int, ...], bool]] = {
    "energy": ((), False),
    "forces": ((3,), True),
    "stress": ((3, 3), False),
    "polarization": ((3,), False),
    "born_charges": ((3, 3), True),
    "polarizability": ((3, 3), False),
}


def _frame(atoms, where: str) -> dict:
    calc = getattr(atoms, "calc", None)
    results = dict(getattr(calc, "results", {}) or {})
    n = len(atoms)
    raw = {
        "energy": atoms.info.get("total_energy"),
        "forces": results.get("forces"),
        "stress": results.get("stress"),
        "polarization": results.get("polarization"),
        "born_charges": atoms.arrays.get("born_charge"),
        "polarizability": atoms.info.get("polarizability"),
    }
    record = {}
    for name, (shape, per_atom) in TARGETS.items():
        if raw[name] is None:
            raise ValueError(f"{where}: no {name!r} (see data/field/README.md for the keys)")
        value = np.asarray(raw[name], np.float64)
        full = (n, *shape) if per_atom else shape
        if name == "stress" and value.shape == (6,):  # ASE may hand back Voigt order
            from ase.stress import voigt_6_to_full_3x3_stress

            value = voigt_6_to_full_3x3_stress(value)
        if value.size != int(np.prod(full)):
            raise ValueError(f"{where}: {name} has {value.size} values, expected shape {full}")
        value = value.reshape(full)
        if not np.isfinite(value).all():
            raise ValueError(f"{where}: {name} has non-finite values")
        record[name] = value if value.shape else float(value)
    if "original_dataset_index" not in atoms.info:
        raise ValueError(f"{where}: no 'original_dataset_index'")
    record["index"] = int(atoms.info["original_dataset_index"])
    record["structure"] = Structure.from_ase(atoms)
    return record


def load_field(material: str, root: str | os.PathLike = DATA_DIR) -> list[dict]:
    """All frames of one material, in file order.

    **Arguments:** `material` (``"batio3"`` or ``"sio2"``), `root` (the ``data/field`` folder).

    **Returns:** a list of dicts with ``structure`` (:class:`~zoo.Structure`), ``energy``
    (eV), ``forces`` `(n, 3)` eV/Å, ``stress`` `(3, 3)` eV/Å^3 (ASE sign), ``polarization``
    `(3,)` e·Å (cell dipole, modulo the quantum), ``born_charges`` `(n, 3, 3)` e
    ``[atom, polarization, displacement]``, ``polarizability`` `(3, 3)` e·Å^2/V and
    ``index`` (the source's frame id).
    """
    import ase.io

    if material not in FILES:
        raise ValueError(f"unknown material {material!r}; known: {', '.join(FILES)}")
    path = Path(root) / FILES[material]
    if not path.is_file():
        raise ValueError(f"{path} not found: the field data set lives in data/field")
    # decompress in one go: ASE's own .xz reader is ~100x slower line by line
    with lzma.open(path, "rt") as f:
        frames = ase.io.read(io.StringIO(f.read()), ":", format="extxyz")
    records = [_frame(atoms, f"{path} frame {k}") for k, atoms in enumerate(frames)]
    ids = [r["index"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: repeated original_dataset_index")
    return records


def fold_polarization(delta: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """A cell-dipole difference `(..., 3)` e·Å folded into the cell: the representative of
    ``delta`` modulo the polarization quantum e·R (R a lattice vector of `cell` `(..., 3, 3)`,
    rows) with fractional coordinates in [-1/2, 1/2)."""
    frac = np.einsum("...i,...ij->...j", delta, np.linalg.inv(cell))
    frac = frac - np.round(frac)
    return np.einsum("...j,...jk->...k", frac, cell)


def read_split(path: str | os.PathLike) -> dict[str, list[int]]:
    """A ``split.json`` (``{"train": [ids], "validation": [ids]}``, source frame ids)."""
    path = Path(path)
    try:
        split = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable split ({err})") from err
    if not isinstance(split, dict) or set(split) != {"train", "validation"}:
        raise ValueError(f"{path}: a split has exactly the keys 'train' and 'validation'")
    if set(split["train"]) & set(split["validation"]):
        raise ValueError(f"{path}: a frame is in both training and validation")
    return {k: [int(i) for i in v] for k, v in split.items()}
