"""The periodic atomic graph: batched, padded to size buckets, differentiable edge vectors.

Neighbour lists are built on the host (vesin) and only the integer cell shifts are kept, so
edge vectors are recomputed in JAX from positions, cell and an optional strain:

    r_e = (x[senders] - x[receivers] + shifts @ cell[g]) @ (1 + eps_g)^T

which makes every output differentiable with respect to positions, cell and strain
(forces and stress by ``jax.grad``).

**Bucket rule.** The node count (real atoms + 1) is padded up to the next size of the form
``m * 2**k`` with ``m`` in {4, 5, 6, 7} (at most 25 % padding, a handful of shapes over
orders of magnitude). The edge count is the padded node count times the number of edges per
padded node rounded up the same way (at least 4): an intensive quantity, so thermal
snapshots, vacancies and supercells of one material land on the same shapes. The number of
graphs is padded to the next power of two.
There is always at least one padding node and one padding graph: padding edges join the
first padding node to itself, padding nodes belong to the last (padding) graph. Structures
whose padded sizes coincide reuse the same compiled code. Positions, cell and shifts are data,
never shapes; the edge count is a shape, so ``predict`` pads with `zoo._capacity` instead
(edge headroom and capacities reused across calls) and passes the sizes explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ._dtype import resolve_float
from ._neighbors import neighbor_pairs
from .structure import Structure, as_structures


def bucket_size(n: int, minimum: int = 8) -> int:
    """Smallest ``m * 2**k >= max(n, minimum)`` with ``m`` in {4, 5, 6, 7}."""
    n = max(int(n), minimum)
    k = max(math.ceil(math.log2(n)) - 3, 0)
    while True:
        for m in (4, 5, 6, 7):
            if m * 2**k >= n:
                return m * 2**k
        k += 1


def _graph_bucket(n: int) -> int:
    return 1 << max(n - 1, 1).bit_length()


class Graph(eqx.Module):
    """A batch of atomic graphs, padded (see the module docstring for the bucket rule).

    Edge ``e`` points from its centre atom ``receivers[e]`` to the neighbour
    ``senders[e]``; messages flow from senders to receivers.

    **Fields** (all arrays):

    - `positions`: `(n_nodes, 3)` Å.
    - `numbers`: `(n_nodes,)` atomic numbers (0 on padding nodes).
    - `cell`: `(n_graphs, 3, 3)` lattice vectors as rows, Å (identity on padding graphs and
      zeros rows on non-periodic axes).
    - `senders`, `receivers`: `(n_edges,)` node indices.
    - `shifts`: `(n_edges, 3)` integer cell shifts (stored as floats).
    - `node_graph`: `(n_nodes,)` graph index of each node.
    - `n_node`: `(n_graphs,)` real atoms per graph (0 for padding graphs).
    - `node_mask`, `edge_mask`, `graph_mask`: which entries are real.
    - `pbc`: `(n_graphs, 3)` periodicity.
    """

    positions: Float[Array, "n_nodes 3"]
    numbers: Int[Array, " n_nodes"]
    cell: Float[Array, "n_graphs 3 3"]
    senders: Int[Array, " n_edges"]
    receivers: Int[Array, " n_edges"]
    shifts: Float[Array, "n_edges 3"]
    node_graph: Int[Array, " n_nodes"]
    n_node: Int[Array, " n_graphs"]
    node_mask: Bool[Array, " n_nodes"]
    edge_mask: Bool[Array, " n_edges"]
    graph_mask: Bool[Array, " n_graphs"]
    pbc: Bool[Array, "n_graphs 3"]

    @property
    def n_nodes(self) -> int:
        return self.positions.shape[0]

    @property
    def n_edges(self) -> int:
        return self.senders.shape[0]

    @property
    def n_graphs(self) -> int:
        return self.cell.shape[0]

    def edge_vectors(
        self,
        positions: Float[Array, "n_nodes 3"] | None = None,
        strain: Float[Array, "n_graphs 3 3"] | None = None,
    ) -> Float[Array, "n_edges 3"]:
        """Edge vectors (Å), differentiable in `positions`, `self.cell` and `strain`.

        The strain is symmetrised, ``F = 1 + (eps + eps^T)/2``, and deforms the whole
        structure (positions and cell) of its graph: only its symmetric part is physical.
        """
        x = self.positions if positions is None else positions
        graph_of_edge = self.node_graph[self.receivers]
        vec = x[self.senders] - x[self.receivers]
        vec = vec + jnp.einsum("ei,eij->ej", self.shifts.astype(x.dtype), self.cell[graph_of_edge])
        if strain is not None:
            sym = 0.5 * (strain + jnp.swapaxes(strain, -1, -2))
            deform = jnp.eye(3, dtype=sym.dtype) + sym
            vec = jnp.einsum("ej,eij->ei", vec, deform[graph_of_edge])
        return vec

    def volume(self) -> Float[Array, " n_graphs"]:
        """Cell volumes (Å^3); 1.0 on padding and non-periodic graphs so divisions are safe."""
        det = jnp.abs(jnp.linalg.det(self.cell))
        ok = self.graph_mask & self.pbc.all(axis=-1)
        return jnp.where(ok, det, 1.0)

    def split_nodes(self, x) -> list[np.ndarray]:
        """Host-side: per-node array -> one array per real graph, input atom order."""
        x = np.asarray(x)
        counts = np.asarray(self.n_node)[np.asarray(self.graph_mask)]
        return np.split(x[: counts.sum()], np.cumsum(counts)[:-1])


def build_graph(
    structures,
    r_max: float,
    *,
    dtype=None,
    pad: bool = True,
    n_nodes: int | None = None,
    n_edges: int | None = None,
    n_graphs: int | None = None,
    neighbors: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
) -> Graph:
    """Build a padded :class:`Graph` from one or several structures.

    **Arguments:**

    - `structures`: an ``ase.Atoms``, a :class:`~zoo.Structure`, a dict of arrays, or a list
      of them (validated: see :class:`~zoo.Structure`).
    - `r_max`: neighbour cutoff in Å.
    - `dtype`: floating dtype of positions and cell (``None``: f32, or f64 under x64).
    - `pad`: pad to the size buckets of the module docstring (``False``: exactly one
      padding node and graph).
    - `n_nodes`, `n_edges`, `n_graphs`: force larger padded sizes (e.g. a fixed capacity
      for a whole data set); too small a value is an error.
    - `neighbors`: the structures' :func:`neighbor_pairs` at `r_max`, if already computed.
    """
    if not (isinstance(r_max, (int, float)) and math.isfinite(r_max) and r_max > 0):
        raise ValueError(f"r_max must be a positive number of Å, got {r_max!r}")
    dtype = resolve_float(dtype)
    items: list[Structure] = as_structures(structures)
    if neighbors is None:
        neighbors = [neighbor_pairs(s, r_max) for s in items]
    elif len(neighbors) != len(items):
        raise ValueError(f"neighbors: {len(neighbors)} lists for {len(items)} structures")

    pos, num, cells, pbcs, snd, rcv, shf, node_graph, n_node = [], [], [], [], [], [], [], [], []
    offset = 0
    for g, (s, (i, j, shift)) in enumerate(zip(items, neighbors)):
        pos.append(s.positions)
        num.append(s.numbers)
        cells.append(s.cell)
        pbcs.append(s.pbc)
        rcv.append(i + offset)
        snd.append(j + offset)
        shf.append(shift)
        node_graph.append(np.full(len(s), g))
        n_node.append(len(s))
        offset += len(s)

    n_real, e_real, g_real = offset, sum(len(x) for x in snd), len(items)
    want_n = bucket_size(n_real + 1) if pad else n_real + 1
    # edges: padded nodes times a bucketed number of edges per padded node, an intensive
    # quantity, so snapshots and repeats of one material share a shape
    want_e = want_n * bucket_size(math.ceil(e_real / want_n), minimum=4) if pad else max(e_real, 1)
    want_g = _graph_bucket(g_real + 1) if pad else g_real + 1
    sizes = {}
    for name, want, given, need in (
        ("n_nodes", want_n, n_nodes, n_real + 1),
        ("n_edges", want_e, n_edges, e_real),
        ("n_graphs", want_g, n_graphs, g_real + 1),
    ):
        if given is not None and given < need:
            raise ValueError(f"{name}={given} is too small: this batch needs at least {need}")
        sizes[name] = max(want, given or 0)
    N, E, G = sizes["n_nodes"], sizes["n_edges"], sizes["n_graphs"]

    def padded(parts, length, fill, width=()):
        out = np.full((length, *width), fill, dtype=np.result_type(*[p.dtype for p in parts]))
        cat = np.concatenate(parts) if parts else out[:0]
        out[: len(cat)] = cat
        return out

    cell = np.tile(np.eye(3), (G, 1, 1))
    cell[:g_real] = np.stack(cells)
    pbc = np.zeros((G, 3), bool)
    pbc[:g_real] = np.stack(pbcs)
    node_graph_arr = padded(node_graph, N, G - 1)
    n_node_arr = np.zeros(G, np.int64)
    n_node_arr[:g_real] = n_node
    float_ = np.dtype(dtype)

    # cast on the host (a device-side cast would compile one small program per shape), then
    # one transfer for all fields (one call per array: ~20 % more host time per graph)
    fields = {
        "positions": (padded(pos, N, 0.0, (3,)), float_),
        "numbers": (padded(num, N, 0), np.int32),
        "cell": (cell, float_),
        "senders": (padded(snd, E, n_real), np.int32),
        "receivers": (padded(rcv, E, n_real), np.int32),
        "shifts": (padded(shf, E, 0, (3,)), float_),
        "node_graph": (node_graph_arr, np.int32),
        "n_node": (n_node_arr, np.int32),
        "node_mask": (np.arange(N) < n_real, bool),
        "edge_mask": (np.arange(E) < e_real, bool),
        "graph_mask": (np.arange(G) < g_real, bool),
        "pbc": (pbc, bool),
    }
    host = {k: np.asarray(x, dtype=dt) for k, (x, dt) in fields.items()}
    return Graph(**jax.device_put(host))


def species_indices(
    numbers: Int[Array, " n_nodes"], species: Sequence[int]
) -> Int[Array, " n_nodes"]:
    """Map atomic numbers to indices in a model's ``species`` tuple (inside JAX).

    Unknown numbers (including padding's 0) map to 0: check real atoms on the host first with
    :func:`check_species`.
    """
    table = np.zeros(119, np.int32)
    table[np.asarray(species, dtype=np.int64)] = np.arange(len(species), dtype=np.int32)
    return jnp.asarray(table)[numbers]


def check_species(
    structures, species: Sequence[int], model_name: str = "this model", *, start: int = 0
) -> None:
    """Refuse atoms whose element is not in ``species``: one ``ValueError`` naming the structure
    (counted from `start`), its unknown elements and their atoms."""
    from ase.data import chemical_symbols

    known = sorted({int(z) for z in species})
    for g, s in enumerate(as_structures(structures), start):
        bad = np.flatnonzero(~np.isin(s.numbers, known))
        if bad.size:
            unknown = ", ".join(
                chemical_symbols[z] for z in sorted({int(z) for z in s.numbers[bad]})
            )
            atoms = ", ".join(map(str, bad[:5])) + (", ..." if bad.size > 5 else "")
            names = ", ".join(chemical_symbols[z] for z in known)
            raise ValueError(
                f"structure {g}: unknown species {unknown} (atoms {atoms}): "
                f"{model_name} knows only {names}"
            )
