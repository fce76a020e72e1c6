"""`_labels`: reading, checking and batching labelled structures for fine-tuning.

Labels live on ``ase.Atoms`` (or an extxyz file of them): per-atom tensors in
``atoms.arrays[name]`` as `(n, 3, 3)` or flattened `(n, 9)` (Raman `(n, 27)`), global ones in
``atoms.info[name]`` (`(3, 3)` or `(9,)`), under the model output names or ASE's aliases
(`ALIASES`). A row of NaN, or a False in a boolean per-atom array ``has_<name>``, means "not
labelled". `read_labelled` turns them into a `Labelled`; `check_labels` refuses a label with
no labelled row in the training split; `make_batches` pads them into training batches.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from .graph import build_graph
from .irreps import cartesian_shape
from .model import OUTPUTS, ResponseModel
from .structure import Structure, as_structures

#: extra label names read for an output (ASE's standard property names; ``born_charge`` is
#: NequIP's, used by data/field)
ALIASES: dict[str, tuple[str, ...]] = {
    "born_charges": ("born_effective_charges", "born_charge"),
    "dielectric": ("dielectric_tensor",),
}


@dataclasses.dataclass(frozen=True)
class Labelled:
    """Structures and their labels: `targets[name][g]` is `(n_g, *shape)` for per-atom outputs,
    `(*shape)` for global ones; NaN rows (or a NaN global tensor) are unlabelled."""

    structures: list[Structure]
    targets: dict[str, list[np.ndarray]]


def _read_file(path: Path) -> list:
    from ase.io import read

    if not path.is_file():
        raise ValueError(f"data: no such file {str(path)!r}")
    try:
        frames = read(path, index=":")
    except Exception as err:  # ASE raises many types for unreadable files
        raise ValueError(f"data: cannot read {str(path)!r} ({type(err).__name__}: {err})") from None
    return frames if isinstance(frames, list) else [frames]


def _label(atoms, name: str) -> Any:
    results = getattr(getattr(atoms, "calc", None), "results", {}) or {}
    for key in (name, *ALIASES.get(name, ())):
        for table in (atoms.arrays, atoms.info, results):
            if key in table:
                return table[key]
    return None


def read_labelled(data, outputs: Sequence[str]) -> Labelled:
    """Structures and labels of `outputs` from a list of ``ase.Atoms`` or an ASE-readable file.

    Outputs without a label in any structure are left out; a structure lacking a label that
    others have gets NaN (unlabelled). ValueError names the structure and label on a bad shape.
    """
    if isinstance(data, (str, os.PathLike)):
        atoms_list = _read_file(Path(data))
    elif hasattr(data, "get_atomic_numbers"):
        atoms_list = [data]
    else:
        atoms_list = list(data)
    if not atoms_list or not all(hasattr(a, "get_atomic_numbers") for a in atoms_list):
        raise ValueError("data must be a non-empty list of ase.Atoms or a path to an extxyz file")
    structures = as_structures(atoms_list)
    targets: dict[str, list[np.ndarray]] = {}
    for name in outputs:
        shape, per_atom = cartesian_shape(OUTPUTS[name][0]), OUTPUTS[name][1]
        raw = [_label(a, name) for a in atoms_list]
        if all(v is None for v in raw):
            continue
        values = []
        for g, (value, s) in enumerate(zip(raw, structures)):
            full = (len(s), *shape) if per_atom else shape
            if value is None:
                values.append(np.full(full, np.nan))
                continue
            arr = np.asarray(value, dtype=np.float64)
            if arr.size != math.prod(full) or (per_atom and arr.shape[0] != len(s)):
                flat = (len(s), math.prod(shape)) if per_atom else (math.prod(shape),)
                raise ValueError(
                    f"structure {g}: label {name!r} has shape {arr.shape}, expected {full} "
                    f"or {flat}"
                )
            if np.isinf(arr).any():
                raise ValueError(f"structure {g}: label {name!r} contains infinite values")
            arr = arr.reshape(full).copy()
            labelled = atoms_list[g].arrays.get(f"has_{name}") if per_atom else None
            if labelled is not None:  # e.g. data/si29: zeros on unlabelled atoms
                arr[~np.asarray(labelled, bool)] = np.nan
            values.append(arr)
        targets[name] = values
    if not targets:
        raise ValueError(
            f"data has no labels: put per-atom targets in atoms.arrays and global ones in "
            f"atoms.info under one of the names {list(outputs)}"
        )
    return Labelled(structures, targets)


def _labelled_rows(values: list[np.ndarray], per_atom: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rows with every component finite, their row mask over all rows)."""
    stacked = np.concatenate(values) if per_atom else np.stack(values)
    mask = np.isfinite(stacked.reshape(len(stacked), -1)).all(axis=1)
    return stacked[mask], mask


def check_labels(data: Labelled, train_idx: Sequence[int]) -> None:
    """Refuse, before any training, a label with no labelled row at all or none in the
    training split (e.g. all NaN): one error naming the label, not a shape error later."""
    for name, values in data.targets.items():
        per_atom = OUTPUTS[name][1]
        if not len(_labelled_rows(values, per_atom)[0]):
            raise ValueError(f"labels {name!r}: no structure has a finite {name} (all NaN?); "
                             "fix the data or leave that label out")  # fmt: skip
        if not len(_labelled_rows([values[i] for i in train_idx], per_atom)[0]):
            raise ValueError(f"labels {name!r}: none in the training split (only in the "
                             "validation structures); change split/seed or add labels")  # fmt: skip


def make_batches(
    model: ResponseModel, data: Labelled, splits: Sequence, names, batch_size: int
) -> list[list[dict]]:
    """Batches ``{"graph", "targets", "masks"}`` of each index list in `splits` (sorted by
    size), all padded to one common shape so training and evaluation compile once."""
    r_max, dtype = model.config["backbone"]["r_max"], model.dtype
    groups = []
    for idx in splits:
        order = sorted(idx, key=lambda i: len(data.structures[i]))
        groups.append([order[k : k + batch_size] for k in range(0, len(order), batch_size)])

    def graph_of(part, **sizes):
        return build_graph([data.structures[i] for i in part], r_max, dtype=dtype, **sizes)

    first = [graph_of(part) for parts in groups for part in parts]
    sizes = {
        f"n_{k}": max(getattr(g, f"n_{k}") for g in first) for k in ("nodes", "edges", "graphs")
    }
    return [
        [_batch(graph_of(part, **sizes), part, data, names) for part in parts] for parts in groups
    ]


def _batch(graph, part: list[int], data: Labelled, names) -> dict:
    targets, masks = {}, {}
    for name in names:
        per_atom, shape = OUTPUTS[name][1], cartesian_shape(OUTPUTS[name][0])
        rows = graph.n_nodes if per_atom else graph.n_graphs
        value, mask, start = np.zeros((rows, *shape)), np.zeros(rows, bool), 0
        for g, i in enumerate(part):
            t = data.targets[name][i] if per_atom else data.targets[name][i][None]
            sl = slice(start, start + len(t)) if per_atom else slice(g, g + 1)
            ok = np.isfinite(t.reshape(len(t), -1)).all(axis=1)
            value[sl] = np.where(ok.reshape((-1,) + (1,) * len(shape)), t, 0.0)
            mask[sl] = ok
            start += len(t)
        targets[name] = jnp.asarray(value, graph.positions.dtype)
        masks[name] = jnp.asarray(mask)
    return {"graph": graph, "targets": targets, "masks": masks}
