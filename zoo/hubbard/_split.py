"""Near-duplicate clustering, the cluster split, the U_in/V_in baseline and per-species metrics.

After HubbardML (``similarities.py``, experiment ``predict_hp``): two rows of the same species
key are near-duplicates when, for every site, the RMS difference of the power spectra of
``occs_sum`` and of ``occs_prod`` is below 1e-4, ``|d param_in|`` is below 1e-3 eV (U) or
5e-3 eV (V), and (V) ``|d distance|`` is below 4e-3 Bohr. Clusters are the connected components
of that relation. The split then sends 20 % of the clusters of each (species, self-consistent
path) group to validation, keeping one representative per validation cluster (the other members
are "duplicate" and dropped) and every member of training clusters, so no duplicate leaks.
"""

import math
from collections.abc import Hashable, Sequence

import e3nn_jax as e3nn
import numpy as np
from jaxtyping import Float, Int

from ._features import invariants

SPECTRUM_TOL = 1e-4
U_PARAM_TOL = 1e-3  # eV
V_PARAM_TOL = 5e-3  # eV
DISTANCE_TOL = 4e-3  # Bohr
TRAIN, VALIDATE, DUPLICATE = "train", "validate", "duplicate"


def power_spectrum(x: e3nn.IrrepsArray) -> Float[np.ndarray, "n p"]:
    """Rotation invariants of `x` (:func:`~zoo.hubbard._features.invariants`), float64 ``(n, p)``."""
    arr = np.asarray(x.array, dtype=np.float64).reshape(-1, x.irreps.dim)
    return invariants(arr, x.irreps)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def duplicate_clusters(
    keys: Sequence[Hashable],
    spectra: Sequence[Float[np.ndarray, "n p"]],
    param_in: Float[np.ndarray, " n"],
    distance: Float[np.ndarray, " n"] | None = None,
    *,
    param_tol: float,
    spectrum_tol: float = SPECTRUM_TOL,
    distance_tol: float = DISTANCE_TOL,
) -> Int[np.ndarray, " n"]:
    """Cluster id of every row (connected components of the near-duplicate relation).

    **Arguments:**

    - `keys`: species key per row (e.g. ``"Mn"`` for U, ``"O-Mn"`` for V); rows are compared
      only within one key.
    - `spectra`: one or more ``(n, p_k)`` arrays (e.g. :func:`power_spectrum` of occs_sum and of
      occs_prod of each site); each must agree to RMS < `spectrum_tol`.
    - `param_in`: U_in / V_in (eV); `distance`: pair distance (Bohr) for V, or None.
    - `param_tol`: ``U_PARAM_TOL`` or ``V_PARAM_TOL``.

    **Returns:** int array `(n,)`; a cluster's id is the index of its first row.
    """
    keys = list(keys)
    n = len(keys)
    p_in = np.asarray(param_in, dtype=np.float64).reshape(-1)
    spectra = [
        np.asarray(s, dtype=np.float64).reshape(n, -1) if n else np.zeros((0, 0)) for s in spectra
    ]
    if p_in.shape != (n,):
        raise ValueError(f"param_in: expected {n} values, got {p_in.shape}")
    dist = None if distance is None else np.asarray(distance, dtype=np.float64).reshape(-1)
    if dist is not None and dist.shape != (n,):
        raise ValueError(f"distance: expected {n} values, got {dist.shape}")
    uf = _UnionFind(n)
    by_key: dict[Hashable, list[int]] = {}
    for i, k in enumerate(keys):
        by_key.setdefault(k, []).append(i)
    for rows in by_key.values():
        rows = np.asarray(rows)
        rows = rows[np.argsort(p_in[rows], kind="stable")]  # only a param_in window can match
        sorted_p = p_in[rows]
        for a, i in enumerate(rows):
            stop = np.searchsorted(sorted_p, sorted_p[a] + param_tol, side="left")
            cand = rows[a + 1 : stop]
            if cand.size == 0:
                continue
            ok = np.abs(p_in[cand] - p_in[i]) < param_tol
            if dist is not None:
                ok &= np.abs(dist[cand] - dist[i]) < distance_tol
            for s in spectra:
                ok &= np.sqrt(np.mean((s[cand] - s[i]) ** 2, axis=1)) < spectrum_tol
            for j in cand[ok]:
                uf.union(int(i), int(j))
    return np.array([uf.find(i) for i in range(n)], dtype=np.int64)


def split_by_clusters(
    clusters: Int[np.ndarray, " n"],
    groups: Sequence[Hashable],
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """``"train"`` / ``"validate"`` / ``"duplicate"`` for every row.

    **Arguments:**

    - `clusters`: from :func:`duplicate_clusters`.
    - `groups`: (species, sc path) key per row; a cluster belongs to the group of its first row.
    - `val_fraction`: share of each group's clusters sent to validation (rounded half up, so a
      group with fewer than 3 clusters has none in validation at 0.2).
    - `seed`: the split is a deterministic function of the rows, groups and seed.

    **Returns:** str array `(n,)`. A validation cluster keeps its first row as ``"validate"``
    and marks the others ``"duplicate"``; training clusters keep all rows.
    """
    clusters = np.asarray(clusters).reshape(-1)
    groups = list(groups)
    if len(groups) != clusters.size:
        raise ValueError(f"groups: expected {clusters.size} values, got {len(groups)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    first: dict[int, int] = {}
    for i, c in enumerate(clusters.tolist()):
        first.setdefault(c, i)
    by_group: dict[Hashable, list[int]] = {}
    for c, i in first.items():
        by_group.setdefault(groups[i], []).append(c)
    rng = np.random.default_rng(seed)
    val_clusters = set()
    for g in sorted(by_group, key=repr):  # a fixed group order makes the rng stream reproducible
        cs = sorted(by_group[g])
        n_val = int(math.floor(val_fraction * len(cs) + 0.5))
        val_clusters.update(np.asarray(cs)[rng.permutation(len(cs))[:n_val]].tolist())
    out = np.full(clusters.size, TRAIN, dtype=object)
    for i, c in enumerate(clusters.tolist()):
        if c in val_clusters:
            out[i] = VALIDATE if first[c] == i else DUPLICATE
    return out.astype(str)


def regression_metrics(
    y_true: Float[np.ndarray, " n"],
    y_pred: Float[np.ndarray, " n"],
    species: Sequence[str],
) -> dict[str, dict[str, float]]:
    """Per-species and overall (``"all"``) ``n``, ``mae`` (eV), ``rmse`` (eV), ``mare``.

    MARE is the mean of ``|y_pred - y_true| / |y_true|`` (a fraction; x100 for %).
    """
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    species = np.asarray(list(species), dtype=str)
    if p.shape != t.shape or species.shape != t.shape:
        raise ValueError(f"y_true {t.shape}, y_pred {p.shape} and species {species.shape} differ")
    if np.any(t == 0):
        raise ValueError("y_true: MARE needs nonzero targets")

    def stats(mask) -> dict[str, float]:
        err = p[mask] - t[mask]
        return {
            "n": int(mask.sum()),
            "mae": float(np.mean(np.abs(err))),
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mare": float(np.mean(np.abs(err) / np.abs(t[mask]))),
        }

    out = {s: stats(species == s) for s in sorted(set(species.tolist()))}
    if t.size:
        out["all"] = stats(np.ones(t.size, dtype=bool))
    return out


def baseline_metrics(
    param_in: Float[np.ndarray, " n"], param_out: Float[np.ndarray, " n"], species: Sequence[str]
) -> dict[str, dict[str, float]]:
    """:func:`regression_metrics` of the baseline that predicts ``param_out = param_in``."""
    return regression_metrics(param_out, param_in, species)


__all__ = [
    "SPECTRUM_TOL",
    "U_PARAM_TOL",
    "V_PARAM_TOL",
    "DISTANCE_TOL",
    "TRAIN",
    "VALIDATE",
    "DUPLICATE",
    "power_spectrum",
    "duplicate_clusters",
    "split_by_clusters",
    "regression_metrics",
    "baseline_metrics",
]
