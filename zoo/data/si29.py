"""Si-29 NMR tensors of crystalline silicates (Venetos et al., J. Phys. Chem. A 127, 2388
(2023)): loader, per-atom label mask and the fixed train/validation split by structure.

The data live in ``data/si29/`` of the source tree (see its README for provenance, units and
format): ``si29_shielding.extxyz`` with per-atom arrays ``shielding`` `(N, 9)` (row-major,
ppm: VASP's unreferenced shift ``-sigma``, not an absolute shielding, despite the array's
name), ``has_shielding`` `(N,)` and ``info["source_index"]``.
Only symmetry-inequivalent Si sites carry a label; :attr:`Si29Record.mask` marks them, so only
labelled atoms enter a loss while every atom still gets a prediction.

The split (``split.json``) is by structure, never by atom: ids are ``source_index`` values.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..structure import Structure

#: The source tree's copy of the data set (absent from an installed wheel: pass a path).
DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "si29"
EXTXYZ = "si29_shielding.extxyz"
SPLIT = "split.json"
SILICON = 14


@dataclasses.dataclass(frozen=True, eq=False)
class Si29Record:
    """One structure of the data set.

    **Fields:** `structure` (:class:`~zoo.Structure`), `shielding` `(n_atoms, 3, 3)` ppm
    (zeros where unlabelled), `mask` `(n_atoms,)` bool (labelled Si sites), `qn` `(n_atoms,)`
    Q^n of each SiO4 unit (0 where unlabelled), `source_index` (id in the source JSON).
    """

    structure: Structure
    shielding: np.ndarray
    mask: np.ndarray
    qn: np.ndarray
    source_index: int


def _path(path: str | os.PathLike | None, name: str) -> Path:
    root = DATA_DIR if path is None else Path(path)
    file = root / name if root.is_dir() else root
    if not file.is_file():
        raise ValueError(
            f"{file}: no such file; pass the folder holding {name} (a copy of data/si29 of the "
            "e3zoo source tree)"
        )
    return file


def _record(atoms, k: int, file: Path) -> Si29Record:
    where = f"{file}: frame {k}"
    n = len(atoms)
    for name in ("shielding", "has_shielding"):
        if name not in atoms.arrays:
            raise ValueError(f"{where}: per-atom array {name!r} is missing")
    raw = np.asarray(atoms.arrays["shielding"])
    if raw.shape == (n, 3, 3):
        raw = raw.reshape(n, 9)
    if raw.shape != (n, 9):
        raise ValueError(f"{where}: 'shielding' must have shape ({n}, 9), got {raw.shape}")
    mask = np.asarray(atoms.arrays["has_shielding"])
    if mask.shape != (n,) or mask.dtype.kind not in "bi":
        raise ValueError(f"{where}: 'has_shielding' must be {n} bools, got shape {mask.shape}")
    mask = mask.astype(bool)
    sigma = raw.astype(np.float64).reshape(n, 3, 3)
    bad = np.flatnonzero(mask & ~np.isfinite(sigma).all(axis=(1, 2)))
    if bad.size:
        raise ValueError(f"{where}: non-finite shielding tensor on atom {bad[0]}")
    bad = np.flatnonzero(mask & (atoms.numbers != SILICON))
    if bad.size:
        raise ValueError(f"{where}: atom {bad[0]} is labelled but is not Si")
    if "source_index" not in atoms.info:
        raise ValueError(f"{where}: info['source_index'] is missing")
    qn = np.asarray(atoms.arrays["qn"], np.int64) if "qn" in atoms.arrays else np.zeros(n, int)
    try:
        structure = Structure.from_ase(atoms)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return Si29Record(
        structure=structure,
        shielding=np.where(mask[:, None, None], sigma, 0.0),
        mask=mask,
        qn=qn,
        source_index=int(atoms.info["source_index"]),
    )


def load_si29(path: str | os.PathLike | None = None) -> list[Si29Record]:
    """Read and validate the data set (a folder with ``si29_shielding.extxyz``, or the file).

    Raises ValueError naming the file and frame for a missing array, a wrong shape, a
    non-finite label, a label on a non-Si atom, or a duplicated ``source_index``.
    """
    import ase.io

    file = _path(path, EXTXYZ)
    try:
        frames = ase.io.read(file, ":")
    except Exception as err:  # ase raises many types for malformed files
        raise ValueError(f"{file}: unreadable extxyz ({type(err).__name__}: {err})") from None
    if not frames:
        raise ValueError(f"{file}: no structures")
    records = [_record(atoms, k, file) for k, atoms in enumerate(frames)]
    seen: dict[int, int] = {}
    for k, r in enumerate(records):
        if r.source_index in seen:
            raise ValueError(
                f"{file}: frames {seen[r.source_index]} and {k} share source_index {r.source_index}"
            )
        seen[r.source_index] = k
    return records


def make_split(ids: Sequence[int], validation_fraction: float = 0.2, seed: int = 0) -> dict:
    """A random train/validation split of structure ids (sorted lists), seeded.

    **Returns:** ``{"seed", "validation_fraction", "train": [...], "validation": [...]}``.
    """
    ids = [int(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be distinct structure ids")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = max(1, round(validation_fraction * len(ids)))
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return {
        "seed": seed,
        "validation_fraction": validation_fraction,
        "by": "structure (source_index)",
        "train": train,
        "validation": val,
    }


def load_split(path: str | os.PathLike | None = None) -> dict[str, list[int]]:
    """Read ``split.json`` (a folder or the file); checks that no structure is in both parts."""
    file = _path(path, SPLIT)
    try:
        split = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{file}: unreadable split ({err})") from None
    for part in ("train", "validation"):
        if not isinstance(split.get(part), list) or not split[part]:
            raise ValueError(f"{file}: '{part}' must be a non-empty list of source indices")
    both = sorted(set(split["train"]) & set(split["validation"]))
    if both:
        raise ValueError(f"{file}: structures {both[:5]} are in both train and validation")
    return {part: [int(i) for i in split[part]] for part in ("train", "validation")}


def split_records(
    records: Sequence[Si29Record], split: dict[str, list[int]]
) -> dict[str, list[Si29Record]]:
    """Records of each split part, in split order; every split id must be in `records`."""
    by_id = {r.source_index: r for r in records}
    out = {}
    for part in ("train", "validation"):
        missing = [i for i in split[part] if i not in by_id]
        if missing:
            raise ValueError(f"split '{part}' names source indices {missing[:5]} not in the data")
        out[part] = [by_id[i] for i in split[part]]
    return out


def make_batches(
    records: Sequence[Si29Record],
    r_max: float,
    *,
    max_atoms: int = 192,
    seed: int = 0,
    dtype=None,
) -> list[dict]:
    """Pack structures into batches of at most `max_atoms` atoms, all padded to one shape.

    Structures are shuffled once (seeded) and packed greedily, so the jitted train step
    compiles once. A structure larger than `max_atoms` gets a batch of its own (and sets the
    common shape). **Returns:** a list of ``{"graph": Graph, "shielding": (n_nodes, 3, 3),
    "mask": (n_nodes,) bool}``; the mask is True on labelled Si atoms only.
    """
    import jax.numpy as jnp

    from ..graph import bucket_size, build_graph

    if not records:
        raise ValueError("records is empty")
    order = np.random.default_rng(seed).permutation(len(records))
    groups: list[list[Si29Record]] = [[]]
    for i in order:
        r = records[int(i)]
        if groups[-1] and sum(len(x.structure) for x in groups[-1]) + len(r.structure) > max_atoms:
            groups.append([])
        groups[-1].append(r)
    loose = [build_graph([r.structure for r in g], r_max, pad=False) for g in groups]
    n_nodes = bucket_size(max(g.n_nodes for g in loose))
    n_edges = max(int(g.edge_mask.sum()) for g in loose) + 1
    n_graphs = max(g.n_graphs for g in loose)
    batches = []
    for group in groups:
        graph = build_graph(
            [r.structure for r in group], r_max, dtype=dtype,
            n_nodes=n_nodes, n_edges=n_edges, n_graphs=n_graphs,
        )  # fmt: skip
        sigma = np.zeros((graph.n_nodes, 3, 3))
        mask = np.zeros(graph.n_nodes, bool)
        n = sum(len(r.structure) for r in group)
        sigma[:n] = np.concatenate([r.shielding for r in group])
        mask[:n] = np.concatenate([r.mask for r in group])
        batches.append(
            {
                "graph": graph,
                "shielding": jnp.asarray(sigma, graph.positions.dtype),
                "mask": jnp.asarray(mask),
            }
        )
    return batches


def normalization(records: Sequence[Si29Record], species: Sequence[int]) -> dict:
    """Per-species shift of the 0e (trace / sqrt 3) part and one RMS scale of the rest, from
    the labelled atoms of (training) `records` only. **Returns:** ``{"shift", "scale"}``."""
    from ..irreps import to_irreps

    sigma = np.concatenate([r.shielding[r.mask] for r in records])
    numbers = np.concatenate([r.structure.numbers[r.mask] for r in records])
    if not len(sigma):
        raise ValueError("records have no labelled atoms")
    rows = np.array(to_irreps("rank2_axial", sigma).array, np.float64)
    shift = [float(rows[numbers == z, 0].mean()) if np.any(numbers == z) else 0.0 for z in species]
    rows[:, 0] -= np.asarray([shift[list(species).index(int(z))] for z in numbers])
    return {"shift": shift, "scale": float(np.sqrt(np.mean(rows**2)))}
