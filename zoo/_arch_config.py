"""The validated, JSON-safe base of every architecture config, and the data-derived numbers.

An architecture config mixes two kinds of numbers, kept apart as mlip's ``DatasetInfo`` does:

- :class:`DatasetInfo`: what the training data fixes (species and their embedding order, the
  cutoff the graphs are built with, the average neighbour count that normalises the sums);
- hyperparameters: what a user chooses (widths, depths, rotation orders, activations).

Both are stored flat in ``config.json`` (``{"architecture": "mace", "species": ..., ...}``);
:attr:`ArchitectureConfig.dataset_info` and :attr:`ArchitectureConfig.hyperparameters` split
them, :meth:`ArchitectureConfig.from_parts` joins them. Every size is bounded: a typo such as
``channels=32000`` is refused here, before any array is allocated.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import e3nn_jax as e3nn
import numpy as np

from ._blocks import activation

#: the fields of every config that come from the training data
DATA_FIELDS = ("species", "r_max", "avg_num_neighbors")
#: upper bounds that keep a config from allocating absurd sizes
MAX_R_MAX = 30.0
MAX_IRREPS_DIM = 4096


def _check_species(species) -> tuple[int, ...]:
    try:
        out = tuple(int(z) for z in species)
    except (TypeError, ValueError):
        raise ValueError(f"species must be a list of atomic numbers, got {species!r}") from None
    if not out or len(set(out)) != len(out) or min(out) < 1 or max(out) > 118:
        raise ValueError(f"species must be distinct atomic numbers in 1..118, got {species!r}")
    return out


def _check_positive(name: str, value, upper: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and 0 < value <= upper):
        raise ValueError(f"{name} must be in (0, {upper:g}], got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Numbers fixed by the training data, not chosen by hand.

    Attributes:
        species: atomic numbers, in embedding order.
        r_max: cutoff radius (Å) the graphs are built with.
        avg_num_neighbors: mean number of neighbours within `r_max` over the training
            structures; message sums are divided by it (or its square root).
    """

    species: tuple[int, ...]
    r_max: float = 5.0
    avg_num_neighbors: float = 20.0

    def __post_init__(self):
        object.__setattr__(self, "species", _check_species(self.species))
        object.__setattr__(self, "r_max", _check_positive("r_max", self.r_max, MAX_R_MAX))
        avg = _check_positive("avg_num_neighbors", self.avg_num_neighbors, 1e4)
        object.__setattr__(self, "avg_num_neighbors", avg)

    @classmethod
    def from_structures(cls, structures: Sequence, r_max: float, species=None) -> DatasetInfo:
        """Species (sorted, unless given) and the mean neighbour count within `r_max` of a
        list of structures (``ase.Atoms``, :class:`~zoo.Structure` or dicts)."""
        from ._neighbors import neighbor_pairs
        from .structure import as_structures

        structures = as_structures(structures)
        if not structures:
            raise ValueError("from_structures: no structures given")
        r_max = _check_positive("r_max", r_max, MAX_R_MAX)
        if species is None:
            species = sorted({int(z) for s in structures for z in s.numbers})
        n_edges = sum(len(neighbor_pairs(s, r_max)[0]) for s in structures)
        n_nodes = sum(len(s) for s in structures)
        return cls(tuple(species), r_max, max(n_edges / n_nodes, 1e-3))


@dataclasses.dataclass(frozen=True)
class ArchitectureConfig:
    """Base of the frozen architecture configs (``NequIPConfig``, ``MACEConfig``, ...).

    A subclass is a frozen dataclass with the fields of :data:`DATA_FIELDS` among its own and
    sets :attr:`ARCHITECTURE` (registry name), :attr:`LIMITS` (``int field -> (min, max)``),
    :attr:`IRREPS_FIELDS` and optionally :meth:`check` (its own rules, run after the common
    ones). Validation runs in ``__post_init__``, so every instance is valid.

    Attributes common to every architecture (keyword-only):
        edge_chunk: above this many edges, the sums over neighbours run in a loop over equal
            chunks of at most this many edges, each rematerialised in the backward pass
            (memory grows with the atoms, not with edges x features; results do not depend
            on it up to rounding). 0: never. Default 8192; absent from older ``config.json``
            files, which load with the default.
    """

    edge_chunk: int = dataclasses.field(default=8192, kw_only=True)

    ARCHITECTURE: ClassVar[str] = ""
    LIMITS: ClassVar[dict[str, tuple[int, int]]] = {}
    #: bounds of the common fields, checked with each architecture's :attr:`LIMITS`
    COMMON_LIMITS: ClassVar[dict[str, tuple[int, int]]] = {"edge_chunk": (0, 1 << 24)}
    IRREPS_FIELDS: ClassVar[tuple[str, ...]] = ()
    #: whether the module accepts extra per-node inputs (``node_input_irreps``)
    NODE_INPUTS: ClassVar[bool] = False

    def __post_init__(self):
        info = DatasetInfo(self.species, self.r_max, self.avg_num_neighbors)
        for name in DATA_FIELDS:
            object.__setattr__(self, name, getattr(info, name))
        for name, (lo, hi) in {**self.COMMON_LIMITS, **self.LIMITS}.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be an int, got {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be in {lo}..{hi}, got {value}")
            object.__setattr__(self, name, int(value))
        activation(self.activation)
        for name in self.IRREPS_FIELDS:
            value = getattr(self, name)
            try:
                irreps = e3nn.Irreps(value)
            except Exception as err:
                raise ValueError(f"{name}={value!r} is not an irreps string: {err}") from None
            if irreps.dim > MAX_IRREPS_DIM:
                raise ValueError(f"{name}={value!r} has dimension {irreps.dim}, more than "
                                 f"{MAX_IRREPS_DIM}: reduce the multiplicities")  # fmt: skip
        self.check()

    def check(self) -> None:
        """Rules of one architecture (raise ValueError); the common ones have passed."""

    @property
    def feature_irreps(self) -> e3nn.Irreps:
        """Every irrep the module can put in its per-node output."""
        raise NotImplementedError

    @property
    def dataset_info(self) -> DatasetInfo:
        return DatasetInfo(self.species, self.r_max, self.avg_num_neighbors)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The fields chosen by hand (no data-derived number, no architecture name)."""
        d = self.to_dict()
        return {k: v for k, v in d.items() if k not in DATA_FIELDS and k != "architecture"}

    @classmethod
    def from_parts(cls, hyperparameters: Mapping[str, Any], info: DatasetInfo):
        """A config from hand-chosen `hyperparameters` and the data's :class:`DatasetInfo`."""
        clash = sorted(set(hyperparameters) & set(DATA_FIELDS))
        if clash:
            raise ValueError(f"hyperparameters must not contain data-derived {clash}: "
                             "they come from the DatasetInfo")  # fmt: skip
        return cls.from_dict({**hyperparameters, **dataclasses.asdict(info)})

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict, with ``"architecture"``, read back by :meth:`from_dict`."""
        d = dataclasses.asdict(self)  # type: ignore[call-overload]
        d["species"] = list(self.species)
        return {"architecture": self.ARCHITECTURE, **d}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Inverse of :meth:`to_dict`. Unknown keys (typos) are refused with the known ones; an
        ``"architecture"`` key, if present, must name this architecture."""
        if not isinstance(d, Mapping):
            raise ValueError(f"{cls.__name__}.from_dict needs a dict, got {type(d).__name__}")
        d = dict(d)
        name = d.pop("architecture", cls.ARCHITECTURE)
        if name != cls.ARCHITECTURE:
            raise ValueError(f"{cls.__name__} is architecture {cls.ARCHITECTURE!r}, "
                             f"the dict says {name!r}")  # fmt: skip
        known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(known))
        if unknown:
            hints = [
                f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k)
                for k in unknown
                for close in [difflib.get_close_matches(k, known, n=1)]
            ]
            owner = cls.__name__.removesuffix("Config")
            raise ValueError(f"unknown {owner} config keys {', '.join(hints)}; "
                             f"known: {sorted(known)}")  # fmt: skip
        if "species" not in d:
            raise ValueError(f"{cls.ARCHITECTURE} config needs 'species' (atomic numbers)")
        return cls(**d)  # species are checked and made a tuple in __post_init__


def per_l_irreps(channels: int, lmax: int, parity: bool) -> e3nn.Irreps:
    """`channels` x every l up to `lmax`: both parities, or only (-1)^l, sorted."""
    parities = (1, -1) if parity else (None,)
    irs = [(l, (-1) ** l if p is None else p) for l in range(lmax + 1) for p in parities]
    return e3nn.Irreps([(channels, ir) for ir in irs]).sort().irreps
