"""The one host-side predictor of the zoo's graph models.

Every ``predict`` goes the same way: the input is converted and validated once
(:func:`prepare`), structures are grouped by size into batches, each batch's padded graph is
built once, the training-domain check runs on that graph (:func:`domain_reasons`), the model runs
as one jitted call per batch, and outputs come back per structure in input order
(:func:`predict`).

Input rules (errors name the structure index):

- an element outside the model's training species is refused (the species embedding has no
  row for it);
- a model trained on periodic crystals only (``domain["periodic"]``) refuses a structure that is
  not periodic in all three directions (molecules, slabs, wires), as does any model asked for a
  bulk output (a cell volume is needed);
- inputs that pass but look unlike the training data (volume per atom, shortest distance) get
  a ``UserWarning`` and are still predicted.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Collection, Sequence

import equinox as eqx
import numpy as np

from .graph import Graph, build_graph
from .structure import Structure, as_structures


def _symbols(numbers) -> str:
    from ase.data import chemical_symbols

    return ", ".join(chemical_symbols[int(z)] for z in numbers)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a model accepts.

    **Fields:** `name` (for messages, e.g. ``"this response model"``), `species` (atomic
    numbers of the training set), `r_max` (graph cutoff, Å), `dtype` (float dtype of the
    graph), `domain` (the config's training domain, or ``None``), `needs_cell` (requested
    outputs that need a periodic cell), `nucleus` (atomic number every structure must contain,
    or ``None``).
    """

    name: str
    species: tuple[int, ...]
    r_max: float
    dtype: object
    domain: dict | None = None
    needs_cell: tuple[str, ...] = ()
    nucleus: int | None = None


def is_single(atoms) -> bool:
    """Whether `atoms` is one structure (not a list of them)."""
    return isinstance(atoms, (Structure, dict)) or hasattr(atoms, "get_atomic_numbers")


def check_structures(structures: Sequence[Structure], spec: InputSpec) -> None:
    """Refuse unknown elements, non-periodic input where a cell is needed, and structures
    without the model's nucleus; one ``ValueError`` naming the structure index."""
    known = set(spec.species)
    periodic_only = bool(spec.domain and spec.domain.get("periodic"))
    for g, s in enumerate(structures):
        unknown = sorted({int(z) for z in s.numbers} - known)
        if unknown:
            atoms = np.flatnonzero(~np.isin(s.numbers, spec.species))
            raise ValueError(
                f"structure {g}: unknown species {_symbols(unknown)} (atoms "
                f"{', '.join(map(str, atoms[:5]))}{', ...' if len(atoms) > 5 else ''}): "
                f"{spec.name} was trained on {_symbols(spec.species)} only"
            )
        if not s.pbc.all() and (periodic_only or spec.needs_cell):
            why = []
            if periodic_only:
                why.append(f"{spec.name} was trained on periodic crystals only")
            if spec.needs_cell:
                why.append(f"{', '.join(spec.needs_cell)} need a cell volume")
            raise ValueError(
                f"structure {g} is not periodic in all three directions (pbc={s.pbc.tolist()}): "
                f"{' and '.join(why)}; give a periodic bulk structure"
            )
        if spec.nucleus is not None and not np.any(s.numbers == spec.nucleus):
            nucleus = _symbols([spec.nucleus])
            raise ValueError(
                f"structure {g} ({''.join(sorted(set(s.symbols)))}) has no {nucleus} atom: "
                f"{spec.name} predicts {nucleus} shielding only"
            )


def prepare(atoms, spec: InputSpec) -> tuple[list[Structure], bool]:
    """Convert and validate the input once. **Returns:** `(structures, single)`."""
    structures = as_structures(atoms)
    check_structures(structures, spec)
    return structures, is_single(atoms)


def check(atoms, spec: InputSpec) -> None:
    """The checks of a prediction without the model call (for callers that build their own
    graphs, e.g. the ASE calculator): errors of :func:`prepare`, then domain warnings."""
    structures, _ = prepare(atoms, spec)
    graph = build_graph(structures, spec.r_max, dtype=spec.dtype)
    warn_out_of_domain(graph, range(len(structures)), spec.domain, stacklevel=3)


def domain_reasons(graph: Graph, domain: dict | None) -> list[str | None]:
    """Per real graph of a batch: why it looks unlike the training `domain` (``None`` if it
    does not).

    Uses the batch's own edges: a shortest distance beyond ``r_max`` has no edge and is
    within the domain anyway (training minima are well below any cutoff).
    """
    n_node = np.asarray(graph.n_node)[np.asarray(graph.graph_mask)]
    if not domain:
        return [None] * len(n_node)
    cell = np.asarray(graph.cell, np.float64)
    x = np.asarray(graph.positions, np.float64)
    mask = np.asarray(graph.edge_mask)
    snd, rcv = np.asarray(graph.senders)[mask], np.asarray(graph.receivers)[mask]
    owner = np.asarray(graph.node_graph)[rcv]
    vec = x[snd] - x[rcv] + np.einsum("ei,eij->ej", np.asarray(graph.shifts, np.float64)[mask],
                                      cell[owner])  # fmt: skip
    shortest = np.full(len(n_node), np.inf)
    np.minimum.at(shortest, owner, np.linalg.norm(vec, axis=1))
    periodic = np.asarray(graph.pbc).all(axis=1)
    vpa = domain.get("volume_per_atom")
    reasons: list[str | None] = []
    for k, n in enumerate(n_node):
        reason = None
        v = abs(float(np.linalg.det(cell[k]))) / n
        if vpa and periodic[k] and not 0.9 * vpa[0] <= v <= 1.1 * vpa[1]:
            reason = (f"volume per atom {v:.2f} Å^3 is far from the training range "
                      f"[{vpa[0]:.2f}, {vpa[1]:.2f}] Å^3")  # fmt: skip
        elif shortest[k] < 0.85 * domain["min_distance"]:
            reason = (f"shortest interatomic distance {shortest[k]:.2f} Å is below the "
                      f"training minimum {domain['min_distance']:.2f} Å")  # fmt: skip
        reasons.append(reason)
    return reasons


def warn_out_of_domain(
    graph: Graph, indices: Sequence[int], domain: dict | None, stacklevel: int = 4
) -> None:
    """A ``UserWarning`` per graph of the batch outside `domain`; `indices` are the graphs'
    input indices; `stacklevel` points the warning at the user's call."""
    for i, reason in zip(indices, domain_reasons(graph, domain)):
        if reason:
            warnings.warn(f"structure {i} is outside the training domain: {reason}",
                          stacklevel=stacklevel + 1)  # fmt: skip


def batches(structures: Sequence[Structure], batch_size: int) -> list[list[int]]:
    """Indices of `structures` grouped by size, `batch_size` per batch."""
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    order = sorted(range(len(structures)), key=lambda i: len(structures[i]))
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def run(
    structures: Sequence[Structure],
    spec: InputSpec,
    call: Callable[[Graph], dict],
    per_atom: Collection[str],
    *,
    batch_size: int = 8,
    progress: bool | None = False,
) -> list[dict[str, np.ndarray]]:
    """Run `call` (a jitted model call on one padded graph) over validated `structures`.

    **Returns:** one dict per structure in input order: outputs named in `per_atom`
    `(n_atoms, ...)`, the others `(...)`. Domain warnings name the input index.
    """
    groups = batches(structures, batch_size)
    show = len(groups) > 4 if progress is None else progress
    if show:
        from tqdm.auto import tqdm

        groups = tqdm(groups, desc="predict", unit="batch")
    results: list[dict[str, np.ndarray]] = [{} for _ in structures]
    for idx in groups:
        graph = build_graph([structures[i] for i in idx], spec.r_max, dtype=spec.dtype)
        warn_out_of_domain(graph, idx, spec.domain)
        for name, value in call(graph).items():
            value = np.asarray(value)
            parts = graph.split_nodes(value) if name in per_atom else value[: len(idx)]
            for i, part in zip(idx, parts):
                results[i][name] = np.asarray(part)
    return results


def merge(
    results: list[dict[str, np.ndarray]], structures: Sequence[Structure], per_atom
) -> dict[str, np.ndarray]:
    """Per-structure outputs -> per-atom ones concatenated `(total_atoms, ...)` with
    ``structure_index`` `(total_atoms,)`, the others stacked `(n_structures, ...)`."""
    merged = {
        name: np.concatenate([r[name] for r in results])
        if name in per_atom
        else np.stack([r[name] for r in results])
        for name in results[0]
    }
    merged["structure_index"] = np.repeat(np.arange(len(structures)),
                                          [len(s) for s in structures])  # fmt: skip
    return merged


def predict(
    atoms,
    spec: InputSpec,
    call: Callable[[Graph], dict],
    per_atom: Collection[str],
    *,
    batch_size: int = 8,
    progress: bool | None = False,
) -> dict[str, np.ndarray]:
    """:func:`prepare`, :func:`run`, then one structure's dict or the :func:`merge` of a list."""
    structures, single = prepare(atoms, spec)
    results = run(structures, spec, call, per_atom, batch_size=batch_size, progress=progress)
    return results[0] if single else merge(results, structures, per_atom)


@eqx.filter_jit
def forward(model, graph: Graph, *args):
    """`model(graph, *args)`, compiled once per model structure and graph bucket."""
    return model(graph, *args)
