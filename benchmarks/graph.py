"""Neighbour-list + graph build time for BaTiO3 supercells (135, 1,080, 8,640 atoms).

    python benchmarks/graph.py [--repeats 5] [--r-max 5.0]

Times (median of repeats, after one warm-up): vesin's neighbour list alone, the full
``zoo.build_graph`` (validation + neighbours + padding + transfer to JAX), and, as a peer
run in the same process, ``ase.neighborlist.neighbor_list`` on the same structure. Ratios,
not absolute times, are what carry between machines.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from ase.io import read
from ase.neighborlist import neighbor_list

from zoo._neighbors import neighbor_pairs
from zoo.graph import build_graph
from zoo.structure import as_structure

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "batio3"


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--r-max", type=float, default=5.0)
    args = parser.parse_args()
    base = read(DATA / "structures" / "cif" / "structure_00000.cif")
    print(f"r_max = {args.r_max} Å, median of {args.repeats} runs after a warm-up")
    print(
        f"{'atoms':>6} {'edges':>9} {'vesin (ms)':>11} {'build_graph (ms)':>17} {'ase NL (ms)':>12} {'ase/vesin':>10}"
    )
    for rep in (1, 2, 4):
        atoms = base.repeat((rep, rep, rep))
        s = as_structure(atoms)
        edges = len(neighbor_pairs(s, args.r_max)[0])
        t_vesin = median_time(lambda: neighbor_pairs(s, args.r_max), args.repeats)
        t_graph = median_time(
            lambda: build_graph(atoms, args.r_max).positions.block_until_ready(), args.repeats
        )
        t_ase = median_time(
            lambda: neighbor_list("ijS", atoms, args.r_max), max(1, args.repeats // 2)
        )
        print(
            f"{len(atoms):>6} {edges:>9} {1e3 * t_vesin:>11.2f} {1e3 * t_graph:>17.2f} "
            f"{1e3 * t_ase:>12.2f} {t_ase / t_vesin:>10.1f}"
        )


if __name__ == "__main__":
    main()
