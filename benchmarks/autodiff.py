"""Cost of the field derivatives (Born charges, Raman tensors) against energy + forces.

Times, on one 135-atom structure of ``data/batio3`` and the BaTiO3 electric model's backbone
(2-layer, lmax-2 NequIP, random weights), in one process: energy + forces by one reverse
pass, and `zoo.response.mixed_derivatives` of order 1 (Born charges), order 2 (Born + Raman +
dielectric) and one training step of order 2 (gradient of the squared derivatives). Reported
per case: compile (first call minus a timed call) and the median of `--repeats` calls, as
wall and process CPU seconds (pin the process to one core, e.g. ``taskset -c 1``: XLA runs
single-threaded here), and the ratio to energy + forces in CPU time.

    taskset -c 1 python benchmarks/autodiff.py [--repeats 3] [--modes forward_over_reverse]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from zoo.data.batio3 import DATA_DIR, load_batio3  # noqa: E402
from zoo.graph import build_graph  # noqa: E402
from zoo.model import ResponseModel, make_config  # noqa: E402
from zoo.response import mixed_derivatives  # noqa: E402

BACKBONE = dict(channels=8, lmax=2, r_max=4.5, num_layers=2, radial_hidden=32, parity=False,
                avg_num_neighbors=28.0)  # fmt: skip
MODES = ("forward_over_reverse", "reverse_over_forward")


def timed(fn, args, repeats: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    run, run_cpu = statistics.median(wall), statistics.median(cpu)
    return {"compile_s": first - run, "compile_cpu_s": first_cpu - run_cpu, "run_s": run,
            "run_cpu_s": run_cpu}  # fmt: skip


def run(repeats: int, modes: list[str], out: Path) -> dict:
    config = make_config([56, 22, 8], ["born_charges", "raman_tensors"], formulation="electric",
                         backbone=BACKBONE)  # fmt: skip
    model = ResponseModel(config, key=jax.random.key(0))
    structure = load_batio3(DATA_DIR, ids=["00000"])[0]["structure"]
    graph = build_graph([structure], BACKBONE["r_max"])
    zeros = jnp.zeros((graph.n_graphs, 3))

    def energy_forces(m, g):
        return jax.value_and_grad(lambda r: m.energy(g, r, zeros).sum())(g.positions)

    results = {"energy_forces": timed(eqx.filter_jit(energy_forces), (model, graph), repeats)}
    print("energy_forces", results["energy_forces"], flush=True)
    save(results, out)
    for mode in modes:
        for order, train_step in ((1, False), (2, False), (2, True)):

            def derivs(m, g, order=order, mode=mode):
                d = mixed_derivatives(lambda r, e: m.energy(g, r, e), g.positions, zeros,
                                      order=order, mode=mode)  # fmt: skip
                return sum(jnp.sum(v**2) for k, v in d.items() if k.startswith("d_global_node")
                           or k == "d_node_global_global")  # fmt: skip

            fn = eqx.filter_jit(eqx.filter_grad(derivs) if train_step else derivs)
            key = f"{mode}/order{order}/{'train_step' if train_step else 'predict'}"
            results[key] = timed(fn, (model, graph), repeats)
            results[key]["vs_energy_forces_cpu"] = (
                results[key]["run_cpu_s"] / results["energy_forces"]["run_cpu_s"]
            )
            print(key, results[key], flush=True)
            save(results, out)  # a case at a time: a cut-off run keeps what it measured
    return results


def save(results: dict, out: Path) -> None:
    with open("/proc/loadavg") as f:
        results["load_average"] = f.read().split()[:3]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "autodiff.json")
    args = p.parse_args()
    run(args.repeats, args.modes, args.out)


if __name__ == "__main__":
    main()
