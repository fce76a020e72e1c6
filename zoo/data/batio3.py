"""BaTiO3 electric-response data (``data/batio3``, see its README): structures from Quantum
ESPRESSO cards plus Born charges, Raman tensors, dielectric and chi(2) tensors per structure,
the fixed training/validation split, and the check that flags unphysical dielectric tensors.

Born charges are returned field first, ``Z[i, a, b] = dP_a / dr_ib`` (the zoo's convention,
that of `zoo.FieldModel` and ``data/field``); the files store them displacement first and are
transposed on reading (how the order was determined: ``data/batio3/README.md``).

Every file is checked on reading; a wrong shape, a missing file or a non-finite value raises
one ValueError naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers

from ..structure import Structure

#: ``data/batio3`` of a source checkout (the folder with ``structures/qe``)
DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "batio3"
SPLIT = "split.json"

#: target name -> (folder, trailing shape after the atom axis or full shape, per atom)
TARGETS: dict[str, tuple[str, tuple[int, ...], bool]] = {
    "born_charges": ("born_charges", (3, 3), True),
    "raman_tensors": ("raman_tensors", (3, 3, 3), True),
    "dielectric": ("dielectric", (3, 3), False),
    "chi2": ("nlo_susceptibilities", (3, 3, 3), False),
}


def read_qe_cards(path: str | os.PathLike) -> Structure:
    """A :class:`~zoo.Structure` from the CELL_PARAMETERS and ATOMIC_POSITIONS (Å) cards."""
    path = Path(path)
    cell, symbols, positions, mode = [], [], [], None
    for k, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith(("!", "#")):
            continue
        head = words[0].upper()
        if head in ("CELL_PARAMETERS", "ATOMIC_POSITIONS"):
            unit = " ".join(words[1:]).strip("{}() ").lower()
            if unit not in ("angstrom", ""):
                raise ValueError(f"{path}:{k}: {head} must be in angstrom, got {unit!r}")
            mode = head
            continue
        try:
            if mode == "CELL_PARAMETERS" and len(cell) < 3:
                cell.append([float(x) for x in words[:3]])
            elif mode == "ATOMIC_POSITIONS":
                if words[0] not in atomic_numbers:
                    mode = None
                    continue
                symbols.append(words[0])
                positions.append([float(x) for x in words[1:4]])
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{k}: cannot read {line.strip()!r}") from None
    if len(cell) != 3 or not symbols:
        raise ValueError(f"{path}: needs CELL_PARAMETERS (3 rows) and ATOMIC_POSITIONS cards")
    try:
        return Structure(
            numbers=np.array([atomic_numbers[s] for s in symbols]),
            positions=np.array(positions),
            cell=np.array(cell),
            pbc=True,
        )
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _load_array(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{path}: missing file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable .npy array ({err})") from None
    if arr.shape != shape:
        raise ValueError(f"{path}: expected shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: contains non-finite values")
    return arr.astype(np.float64)


def load_batio3(root: str | os.PathLike, ids=None) -> list[dict]:
    """Load the data set as a list of records sorted by id.

    **Arguments:** `root` (the folder with ``structures/qe`` and the target folders), `ids`
    (structure ids like ``"00000"``; default: every ``born_charges/*.npy``).

    **Returns:** ``[{"id", "structure", "born_charges" (n, 3, 3) e ``[atom, field,
    displacement]``, "raman_tensors" (n, 3, 3, 3) Å^2 ``[atom, displacement, field, field]``,
    "dielectric" (3, 3), "chi2" (3, 3, 3)}, ...]``.
    """
    root = Path(root)
    if not (root / "structures" / "qe").is_dir():
        raise ValueError(f"{root}: no structures/qe folder (is this the batio3 data folder?)")
    if ids is None:
        ids = sorted(p.stem for p in (root / "born_charges").glob("*.npy"))
    if not ids:
        raise ValueError(f"{root}: no structures found in born_charges/")
    records = []
    for sid in sorted(ids):
        structure = read_qe_cards(root / "structures" / "qe" / f"structure_{sid}.scf")
        record = {"id": sid, "structure": structure}
        for name, (folder, shape, per_atom) in TARGETS.items():
            full = (len(structure), *shape) if per_atom else shape
            record[name] = _load_array(root / folder / f"{sid}.npy", full)
        # the files are [atom, displacement, field]; the zoo is field first
        record["born_charges"] = np.ascontiguousarray(record["born_charges"].transpose(0, 2, 1))
        records.append(record)
    return records


def load_split(records: list[dict], root: str | os.PathLike = DATA_DIR) -> dict[str, list[str]]:
    """The fixed split ``{"train": [ids], "validation": [ids]}`` of ``root/split.json``,
    checked against the ids of `records` (every id known, no id in both parts)."""
    path = Path(root) / SPLIT
    if not path.is_file():
        raise ValueError(f"{path}: missing file (the split ships with data/batio3)")
    try:
        split = json.loads(path.read_text())
        train, validation = list(split["train"]), list(split["validation"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: needs JSON lists 'train' and 'validation' ({err})") from None
    unknown = sorted(set(train + validation) - {r["id"] for r in records})
    if unknown:
        raise ValueError(f"{path}: ids {unknown} are not in the loaded records")
    both = sorted(set(train) & set(validation))
    if both:
        raise ValueError(f"{path}: ids {both} are in both train and validation")
    return {"train": train, "validation": validation}


def physical(record: dict) -> bool:
    """Whether the record's eps_inf is symmetric positive with eigenvalues >= 1.

    Five structures of the data (00010, 00017, 00020, 00023, 00048) fail: one diagonal
    element near -64 and |chi2| ~ 4e5 (a failed DFPT field direction); their Born and Raman
    tensors look normal, so only the dielectric and chi(2) targets drop them.
    """
    eps = record["dielectric"]
    return bool(np.linalg.eigvalsh((eps + eps.T) / 2).min() >= 1.0)
