"""Atomic structures: validated host-side containers and ASE conversion.

A :class:`Structure` is what every zoo entry point accepts first: it is made from an
``ase.Atoms``, another ``Structure`` or plain arrays, and it refuses bad input with one clear
``ValueError`` (naming the atom or field) before anything reaches JAX.

Units: positions and cell in Å.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

#: Two atoms closer than this (Å) are refused: such a structure is almost always a unit or
#: duplication mistake, and every model here would extrapolate wildly on it.
MIN_DISTANCE = 0.1

#: A periodic cell with |det| below this (Å^3) is treated as singular.
MIN_VOLUME = 1e-6

_MAX_Z = 118


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z={z}"


@dataclasses.dataclass(frozen=True, eq=False)
class Structure:
    """One atomic structure, validated on construction.

    **Fields:**

    - `numbers`: atomic numbers, shape `(n_atoms,)`, int.
    - `positions`: Cartesian positions in Å, shape `(n_atoms, 3)`, float64.
    - `cell`: lattice vectors as rows in Å, shape `(3, 3)`; zeros when non-periodic.
    - `pbc`: periodicity along each lattice vector, shape `(3,)`, bool.
    - `info`: free-form metadata carried along (not used by models).
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        numbers = _as_int_array("numbers", self.numbers, (None,))
        positions = _as_float_array("positions", self.positions, (len(numbers), 3))
        cell = _as_float_array("cell", self.cell, (3, 3))
        pbc = _as_pbc(self.pbc)
        if len(numbers) == 0:
            raise ValueError("empty structure: it has no atoms")
        bad = np.flatnonzero((numbers < 1) | (numbers > _MAX_Z))
        if bad.size:
            raise ValueError(
                f"atom {bad[0]} has atomic number {numbers[bad[0]]}: must be in 1..{_MAX_Z}"
            )
        bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
        if bad.size:
            raise ValueError(
                f"non-finite position for atom {bad[0]} ({_symbol(numbers[bad[0]])}): "
                f"{positions[bad[0]].tolist()}"
            )
        if not np.isfinite(cell).all():
            raise ValueError(f"non-finite cell: {cell.tolist()}")
        if pbc.any():
            volume = abs(np.linalg.det(cell))
            if volume < MIN_VOLUME:
                raise ValueError(
                    f"the cell is singular (volume {volume:.3g} Å^3) but pbc={pbc.tolist()}: "
                    "give three non-coplanar lattice vectors or set pbc=False"
                )
            for axis in np.flatnonzero(pbc):
                if np.linalg.norm(cell[axis]) < 1e-8:
                    raise ValueError(f"lattice vector {axis} is zero but pbc[{axis}] is True")
        object.__setattr__(self, "numbers", numbers)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "pbc", pbc)
        _check_min_distance(self)

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def volume(self) -> float:
        """Cell volume in Å^3 (0.0 for a non-periodic structure)."""
        return float(abs(np.linalg.det(self.cell))) if self.pbc.any() else 0.0

    @property
    def symbols(self) -> list[str]:
        return [_symbol(int(z)) for z in self.numbers]

    @classmethod
    def from_ase(cls, atoms) -> Structure:
        """From an ``ase.Atoms`` (positions and cell in Å); ``atoms.info`` is copied."""
        return cls(
            numbers=atoms.get_atomic_numbers(),
            positions=atoms.get_positions(),
            cell=np.asarray(atoms.get_cell()),
            pbc=atoms.get_pbc(),
            info=dict(atoms.info),
        )

    def to_ase(self):
        """As an ``ase.Atoms``."""
        import ase

        return ase.Atoms(
            numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc
        )


def as_structure(obj: Any) -> Structure:
    """Coerce an ``ase.Atoms``, a :class:`Structure` or a mapping with keys ``numbers``,
    ``positions`` and optionally ``cell``/``pbc`` to a validated :class:`Structure`."""
    if isinstance(obj, Structure):
        return obj
    if hasattr(obj, "get_atomic_numbers") and hasattr(obj, "get_positions"):
        return Structure.from_ase(obj)
    if isinstance(obj, dict):
        missing = {"numbers", "positions"} - set(obj)
        if missing:
            raise ValueError(
                f"a structure dict needs keys 'numbers' and 'positions'; missing {missing}"
            )
        cell = obj.get("cell")
        pbc = obj.get("pbc", cell is not None)
        return Structure(
            numbers=obj["numbers"],
            positions=obj["positions"],
            cell=np.zeros((3, 3)) if cell is None else cell,
            pbc=pbc,
        )
    raise ValueError(
        f"cannot make a structure from {type(obj).__name__}: give an ase.Atoms, a zoo.Structure "
        "or a dict with 'numbers', 'positions', 'cell' and 'pbc'"
    )


def _is_one(obj: Any) -> bool:
    return isinstance(obj, (Structure, dict)) or hasattr(obj, "get_atomic_numbers")


def iter_structures(obj: Any) -> Iterator[Structure]:
    """Validated structures of an iterable (a list, a generator, ``ase.io.iread(...)``),
    converted one at a time as they are read; a bad item is a ``ValueError`` naming its
    index. An error of the iterable itself is raised unchanged."""
    if _is_one(obj) or isinstance(obj, (str, bytes)) or not isinstance(obj, Iterable):
        raise ValueError(
            f"expected an iterable of structures, got {type(obj).__name__}: give a list or "
            "iterator of ase.Atoms / zoo.Structure / dicts"
        )
    for i, item in enumerate(obj):
        try:
            yield as_structure(item)
        except ValueError as err:
            raise ValueError(f"structure {i}: {err}") from None


def as_structures(obj: Any) -> list[Structure]:
    """One structure, or a sequence or other iterable of them -> a list of validated
    structures (an empty one is refused)."""
    if _is_one(obj):
        return [as_structure(obj)]
    if isinstance(obj, (str, bytes)) or not isinstance(obj, Iterable):
        return [as_structure(obj)]  # refused with the message of as_structure
    out = list(iter_structures(obj))
    if not out:
        raise ValueError("empty list of structures: give at least one")
    return out


def _as_pbc(value) -> np.ndarray:
    """`(3,)` bool from a bool, 0/1, or 3 of them; strings such as "False" are refused (any
    non-empty string is truthy, so it would silently make the structure periodic)."""
    try:
        pbc = np.asarray(value)
    except Exception:  # ragged lists etc.
        pbc = np.asarray(None)
    if pbc.shape == ():
        pbc = np.full(3, pbc.item() if pbc.dtype.kind in "bi" else None)
    ok = pbc.shape == (3,) and all(isinstance(v, bool | int | np.bool_ | np.integer)
                                   and int(v) in (0, 1) for v in pbc.tolist())  # fmt: skip
    if not ok:
        raise ValueError(
            f"pbc must be True/False or 3 of them, got {value!r}"
            + (" (a string: write pbc=False, not 'False')" if _has_str(value) else "")
        )
    return pbc.astype(bool)


def _has_str(value) -> bool:
    items = value if isinstance(value, list | tuple | np.ndarray) else [value]
    return any(isinstance(v, str | np.str_) for v in np.ravel(np.asarray(items, dtype=object)))


def _as_float_array(name: str, value, shape) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged lists etc.
        raise ValueError(f"{name} is not an array: {err}") from None
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    return arr.astype(np.float64)


def _as_int_array(name: str, value, shape) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _search_cutoff(s: Structure) -> float:
    """A cutoff of about the mean atomic spacing (at least MIN_DISTANCE, at most 4 Å): a cell
    list at a 0.1 Å cutoff has ~1e5 cells per 100 Å^3 and costs ~20 ms per structure."""
    extent = np.where(s.pbc, np.linalg.norm(s.cell, axis=1), np.ptp(s.positions, axis=0) + 1)
    volume = s.volume if s.pbc.all() else float(np.prod(extent))
    return float(np.clip((volume / len(s)) ** (1 / 3), MIN_DISTANCE, 4.0))


def _check_min_distance(s: Structure) -> None:
    from ._neighbors import neighbor_pairs

    i, j, shifts = neighbor_pairs(s, _search_cutoff(s))
    d = s.positions[j] - s.positions[i] + shifts @ s.cell
    dist = np.linalg.norm(d, axis=1)
    close = dist < MIN_DISTANCE
    i, j, dist = i[close], j[close], dist[close]
    if len(i):
        k = int(np.argmin(dist))
        a, b = int(i[k]), int(j[k])
        what = "its own periodic image" if a == b else f"atom {b} ({_symbol(s.numbers[b])})"
        raise ValueError(
            f"atom {a} ({_symbol(s.numbers[a])}) is {dist[k]:.3g} Å from {what}: "
            f"closer than {MIN_DISTANCE} Å (duplicated atom or wrong units?)"
        )
