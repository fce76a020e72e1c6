"""Padded capacities for prediction: few shapes, reused, so XLA compiles a handful of times.

A jitted model compiles once per padded shape ``(n_nodes, n_edges, n_graphs)``. Positions,
cell and cell shifts are data, but the edge count is not: a 5-atom BaTiO3 cell has 154 edges
within 4.5 Å at a = 4.00 Å and 106 at 4.10 Å (the second Ti-O shell, at 1.118 a, leaves the
cutoff), so the edge bucket of :func:`zoo.graph.build_graph` changes with a 2.5 % strain.

Two rules fix that:

- a fresh capacity (:func:`fresh`) gives the edges 25 % headroom before rounding up, and grows
  geometrically (nodes and edges on the ``m * 2**k`` ladder, graphs by powers of two);
- :class:`Capacities` remembers the capacities already used in the process (as the jit cache
  remembers their executables) and reuses the cheapest one that fits a new batch, unless it
  costs more than ``max_waste`` times a fresh one.

:func:`plan` packs a chunk of structures into batches that all share one capacity.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import NamedTuple

from .graph import _graph_bucket, bucket_size

#: Extra edges a fresh capacity leaves room for (strain, thermal motion, a new shell).
EDGE_HEADROOM = 1.25


class Capacity(NamedTuple):
    """Padded sizes of a batched graph (they include the padding node and graph)."""

    n_nodes: int
    n_edges: int
    n_graphs: int

    def fits(self, need: Capacity) -> bool:
        return all(c >= n for c, n in zip(self, need))

    @property
    def cost(self) -> int:
        """Work of one call, roughly: edges dominate message passing."""
        return self.n_edges + self.n_nodes


def fresh(need: Capacity) -> Capacity:
    """A new capacity for `need` (real atoms + 1, real edges, real graphs + 1)."""
    n = bucket_size(need.n_nodes)
    per_node = math.ceil(EDGE_HEADROOM * max(need.n_edges, 1) / n)
    return Capacity(n, n * bucket_size(per_node, minimum=4), _graph_bucket(need.n_graphs))


class Capacities:
    """The capacities used so far; `fit` reuses one or adds a fresh one.

    **Arguments:** `max_waste`: a seen capacity is reused while its cost is at most this
    many times that of a fresh capacity for the batch.
    """

    def __init__(self, max_waste: float = 2.0):
        if not max_waste >= 1.0:
            raise ValueError(f"max_waste must be >= 1, got {max_waste!r}")
        self.max_waste = float(max_waste)
        self._seen: list[Capacity] = []
        self._lock = threading.Lock()

    def fit(self, need: Capacity) -> Capacity:
        new = fresh(need)
        with self._lock:
            ok = [c for c in self._seen if c.fits(need) and c.cost <= self.max_waste * new.cost]
            if ok:
                return min(ok, key=lambda c: c.cost)
            self._seen.append(new)
            return new

    def __len__(self) -> int:
        return len(self._seen)


def plan(
    sizes: Sequence[tuple[int, int]], batch_size: int, capacities: Capacities
) -> tuple[Capacity, list[list[int]]]:
    """Pack structures into batches of one shared capacity.

    **Arguments:** `sizes` `[(n_atoms, n_edges), ...]` of a chunk; `batch_size` the typical
    number of structures per batch (the node and edge budget is `batch_size` mean structures,
    never less than the largest one); `capacities` to reuse from.

    **Returns:** `(capacity, batches)`, `batches` lists of indices into `sizes`, grouped by
    size (small structures pack more per batch, at most ``2 * batch_size``).
    """
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not sizes:
        raise ValueError("no structures to plan")
    k = min(batch_size, len(sizes))
    atoms = [n for n, _ in sizes]
    edges = [e for _, e in sizes]
    need = Capacity(
        max(max(atoms), math.ceil(k * sum(atoms) / len(sizes))) + 1,
        max(max(edges), math.ceil(k * sum(edges) / len(sizes))),
        k + 1,
    )
    cap = capacities.fit(need)
    most = min(cap.n_graphs - 1, 2 * batch_size)
    batches: list[list[int]] = []
    room = (0, 0)
    for i in sorted(range(len(sizes)), key=lambda i: sizes[i][0]):
        n, e = sizes[i]
        if (batches and len(batches[-1]) < most and room[0] + n + 1 <= cap.n_nodes
                and room[1] + e <= cap.n_edges):  # fmt: skip
            batches[-1].append(i)
            room = (room[0] + n, room[1] + e)
        else:
            batches.append([i])
            room = (n, e)
    return cap, batches
