"""Neighbour lists on the host with vesin (full list, integer periodic shifts)."""

from __future__ import annotations

import numpy as np


def neighbor_pairs(structure, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs (i, j, S) with ``|r_j - r_i + S @ cell| < cutoff``, each pair both ways.

    **Returns:** `i` `(n_pairs,)`, `j` `(n_pairs,)` (int64) and integer cell shifts `S`
    `(n_pairs, 3)` (int64). Self-pairs with zero shift are excluded; an atom and its own
    periodic image form a pair.
    """
    from vesin import NeighborList

    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    pbc = np.asarray(structure.pbc, dtype=bool)
    # vesin wants a box even without periodicity; a non-periodic axis then has no images
    box = np.asarray(structure.cell, dtype=np.float64) if pbc.any() else np.zeros((3, 3))
    nl = NeighborList(cutoff=float(cutoff), full_list=True, sorted=True, n_threads=1)
    i, j, s = nl.compute(
        points=np.ascontiguousarray(structure.positions, dtype=np.float64),
        box=box,
        periodic=pbc,
        quantities="ijS",
    )
    return i.astype(np.int64), j.astype(np.int64), s.astype(np.int64)
