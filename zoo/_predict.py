"""The one host-side predictor of the zoo's graph models.

Every ``predict`` goes the same way (:func:`stream`): the input (one structure, a list, or any
iterable such as ``ase.io.iread``) is converted and validated (a list whole, before anything
runs; an iterable as it is read), structures are packed by size into batches that share one
padded capacity (`zoo._capacity`: a handful of shapes, so a handful of compilations), each
batch's graph is built once, the training-domain check runs on that graph
(:func:`domain_reasons`), the model runs as one jitted call per batch, and outputs come back
per structure in input order. The persistent compilation cache (`zoo._jax_cache`) is switched
on at the first prediction.

An iterable that fails part-way (a truncated trajectory file) loses nothing: :func:`stream`
first yields the structures read before the failure, then raises; :func:`predict` raises
:class:`PredictionInterrupted` with their outputs in ``.results``.

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
from collections.abc import Callable, Collection, Iterator, Sequence, Sized

import equinox as eqx
import numpy as np

from ._capacity import Capacities, plan
from ._jax_cache import enable as enable_compilation_cache
from ._neighbors import neighbor_pairs
from ._shared_static import share_static
from ._warn import warn
from .graph import Graph, build_graph, check_species
from .structure import Structure, as_structures, iter_structures

#: Capacities used by predictions in this process, per kind of model (:func:`capacities_for`):
#: a capacity is worth reusing exactly when its executables are in jax's (process-wide) jit
#: cache.
_CAPACITIES: dict[tuple, Capacities] = {}
#: An iterable is read this many batches at a time (the unit of packing and of streaming).
CHUNK_BATCHES = 16
#: Seconds before the automatic progress bar appears.
PROGRESS_DELAY = 3.0
#: what a structure that is not periodic along every axis has instead of a polarization
_DEFINED_WITHOUT_CELL = (
    " (the polarization is a bulk quantity, defined modulo e*R/volume in a cell periodic "
    "along all three axes; along a non-periodic axis only a dipole moment is defined)"
)


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


def check_structures(structures: Sequence[Structure], spec: InputSpec, *, start: int = 0) -> None:
    """Refuse unknown elements, non-periodic input where a cell is needed, and structures
    without the model's nucleus; one ``ValueError`` naming the structure index (counted from
    `start`)."""
    check_species(structures, spec.species, spec.name, start=start)
    periodic_only = bool(spec.domain and spec.domain.get("periodic"))
    for g, s in enumerate(structures, start):
        if not s.pbc.all() and (periodic_only or spec.needs_cell):
            why = []
            if periodic_only:
                why.append(f"{spec.name} was trained on periodic crystals only")
            if spec.needs_cell:
                why.append(f"{', '.join(spec.needs_cell)} need a cell volume")
            defined = _DEFINED_WITHOUT_CELL if "polarization" in spec.needs_cell else ""
            raise ValueError(
                f"structure {g} is not periodic in all three directions (pbc={s.pbc.tolist()}): "
                f"{' and '.join(why)}{defined}; give a periodic bulk structure"
            )
        if spec.nucleus is not None and not np.any(s.numbers == spec.nucleus):
            nucleus = _symbols([spec.nucleus])
            raise ValueError(
                f"structure {g} ({''.join(sorted(set(s.symbols)))}) has no {nucleus} atom: "
                f"{spec.name} predicts {nucleus} shielding only"
            )


def prepare(atoms, spec: InputSpec) -> tuple[list[Structure], bool]:
    """Convert and validate the input once (an iterable is read whole).
    **Returns:** `(structures, single)`."""
    structures = as_structures(atoms)
    check_structures(structures, spec)
    return structures, is_single(atoms)


def check(atoms, spec: InputSpec) -> None:
    """The checks of a prediction without the model call (for callers that build their own
    graphs, e.g. the ASE calculator): errors of :func:`prepare`, then domain warnings."""
    structures, _ = prepare(atoms, spec)
    graph = build_graph(structures, spec.r_max, dtype=spec.dtype)
    warn_out_of_domain(graph, range(len(structures)), spec.domain)


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


def warn_out_of_domain(graph: Graph, indices: Sequence[int], domain: dict | None) -> None:
    """A ``UserWarning`` per graph of the batch outside `domain`, pointed at the user's call
    (`zoo._warn`); `indices` are the graphs' input indices."""
    for i, reason in zip(indices, domain_reasons(graph, domain)):
        if reason:
            warn(f"structure {i} is outside the training domain: {reason}")


def capacities_for(spec: InputSpec) -> Capacities:
    """The capacities this process used for models of `spec` (species, cutoff, dtype)."""
    key = (spec.name, spec.species, float(spec.r_max), np.dtype(spec.dtype).name)
    return _CAPACITIES.setdefault(key, Capacities())


def _validated(atoms, spec: InputSpec) -> Iterator[Structure]:
    """Validated structures of `atoms`: one structure or a sequence is checked whole before
    anything is yielded; any other iterable one structure at a time, as it is read."""
    if is_single(atoms) or (isinstance(atoms, Sequence) and not isinstance(atoms, (str, bytes))):
        yield from prepare(atoms, spec)[0]
        return
    count = 0
    for s in iter_structures(atoms):
        check_structures([s], spec, start=count)
        count += 1
        yield s
    if count == 0:
        raise ValueError("no structures to predict: the iterable was empty")


def _progress(progress: bool | None, total: int | None):
    """A tqdm bar over structures: ``None`` shows it on a terminal once the run passes
    `PROGRESS_DELAY` seconds, ``True`` always, ``False`` never."""
    if progress is not None and not isinstance(progress, bool):
        raise ValueError(f"progress must be True, False or None, got {progress!r}")
    from tqdm.auto import tqdm

    disable = {None: None, True: False, False: True}[progress]  # None: tqdm's TTY check
    return tqdm(total=total, desc="predict", unit="structure", disable=disable,
                delay=PROGRESS_DELAY if progress is None else 0.0)  # fmt: skip


def _predict_chunk(chunk, offset, spec, call, per_atom, batch_size, capacities, bar):
    """Outputs of one chunk of validated structures, in chunk order; `offset` is the chunk's
    first input index (for warnings)."""
    pairs = [neighbor_pairs(s, spec.r_max) for s in chunk]
    cap, groups = plan([(len(s), len(p[0])) for s, p in zip(chunk, pairs)], batch_size,
                       capacities)  # fmt: skip
    results: list[dict[str, np.ndarray]] = [{} for _ in chunk]
    for idx in groups:
        graph = build_graph([chunk[i] for i in idx], spec.r_max, dtype=spec.dtype,
                            neighbors=[pairs[i] for i in idx], **cap._asdict())  # fmt: skip
        warn_out_of_domain(graph, [offset + i for i in idx], spec.domain)
        for name, value in call(graph).items():
            value = np.asarray(value)
            parts = graph.split_nodes(value) if name in per_atom else value[: len(idx)]
            for i, part in zip(idx, parts):
                results[i][name] = np.asarray(part)
        bar.update(len(idx))
    return results


def stream(
    atoms,
    spec: InputSpec,
    call: Callable[[Graph], dict],
    per_atom: Collection[str],
    *,
    batch_size: int = 8,
    progress: bool | None = None,
    capacities: Capacities | None = None,
) -> Iterator[tuple[Structure, dict[str, np.ndarray]]]:
    """Predict `atoms` (one structure, a sequence or any iterable of them) chunk by chunk.

    **Yields:** `(structure, outputs)` per input structure, in input order: outputs named in
    `per_atom` `(n_atoms, ...)`, the others `(...)`. A sequence is validated whole first; an
    iterable is read `CHUNK_BATCHES * batch_size` structures at a time. If reading or
    validating structure ``i`` fails, the structures before it are predicted and yielded,
    then the error is raised. `capacities` defaults to :func:`capacities_for` `spec`.
    """
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    enable_compilation_cache()
    capacities = capacities_for(spec) if capacities is None else capacities
    total = 1 if is_single(atoms) else len(atoms) if isinstance(atoms, Sized) else None
    source = _validated(atoms, spec)
    size = CHUNK_BATCHES * batch_size
    done = 0
    with _progress(progress, total) as bar:
        while True:
            chunk: list[Structure] = []
            failure = None
            try:
                for s in source:
                    chunk.append(s)
                    if len(chunk) == size:
                        break
            except Exception as err:  # noqa: BLE001 - re-raised below, after the chunk
                failure = err
            if chunk:
                results = _predict_chunk(chunk, done, spec, call, per_atom, batch_size,
                                         capacities, bar)  # fmt: skip
                yield from zip(chunk, results)
                done += len(chunk)
            if failure is not None:
                raise failure
            if len(chunk) < size:
                return


class PredictionInterrupted(RuntimeError):
    """A prediction stopped at input structure `index` (the iterable failed to give it, it
    was refused, or its chunk failed) after the `index` before it were predicted. **Fields:** `index`, `results` (what :func:`predict` returns for those
    structures), `structures`. The original error is ``__cause__``."""

    def __init__(
        self, index: int, results: dict, structures: list[Structure], cause: BaseException
    ):
        super().__init__(
            f"structure {index} could not be predicted ({type(cause).__name__}: {cause}); the "
            f"{index} structures before it were, and their outputs are in this error's .results"
        )
        self.index, self.results, self.structures = index, results, structures


def run(
    structures: Sequence[Structure],
    spec: InputSpec,
    call: Callable[[Graph], dict],
    per_atom: Collection[str],
    *,
    batch_size: int = 8,
    progress: bool | None = None,
) -> list[dict[str, np.ndarray]]:
    """:func:`stream` over validated `structures` into a list: one dict per structure, in
    input order."""
    return [r for _, r in stream(structures, spec, call, per_atom, batch_size=batch_size,
                                 progress=progress)]  # fmt: skip


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
    progress: bool | None = None,
) -> dict[str, np.ndarray]:
    """:func:`stream`, then one structure's dict or the :func:`merge` of several.

    **Raises** :class:`PredictionInterrupted` (carrying the outputs so far) when an iterable
    fails part-way; the error itself when nothing was predicted yet.
    """
    structures: list[Structure] = []
    results: list[dict[str, np.ndarray]] = []
    try:
        for s, r in stream(atoms, spec, call, per_atom, batch_size=batch_size, progress=progress):
            structures.append(s)
            results.append(r)
    except Exception as err:
        if not results:
            raise
        merged = merge(results, structures, per_atom)
        raise PredictionInterrupted(len(results), merged, structures, err) from err
    return results[0] if is_single(atoms) else merge(results, structures, per_atom)


@eqx.filter_jit
def _forward(model, graph: Graph, *args):
    return model(graph, *args)


def forward(model, graph: Graph, *args):
    """`model(graph, *args)`, compiled once per model structure and graph bucket: equal
    models (e.g. one folder loaded twice) share the compiled call (`zoo._shared_static`)."""
    return _forward(share_static(model), graph, *args)
