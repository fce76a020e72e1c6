"""Cost of the field-dependent potentials (`batio3-field`, `sio2-field`): response vs E+F, MD.

Per material, on the first frame of ``data/field`` (BaTiO3 135 atoms, SiO2 72 atoms) and the
shipped weights, compiled calls of: energy + forces (one reverse pass over positions),
energy + forces + stress + polarization (`FieldModel` with ``response=False``, what MD
uses), and everything (``response=True``: adds Born charges and the polarizability). Then
ASE velocity-Verlet MD steps per second through `zoo.calculator.Calculator` under a field
of 0.01 V/Å along z, on the BaTiO3 frame and its 2x2x2 repeat (1,080 atoms): each step
rebuilds the graph on the host, as MD does. Wall and process CPU seconds (pin the process
to one core, e.g. ``taskset -c 1``: XLA runs single-threaded here); ratios in CPU time.

    taskset -c 1 python benchmarks/field.py [--repeats 3] [--md-steps 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from autodiff import timed  # noqa: E402  (benchmarks/ is the script's folder)

from zoo.data.field import load_field  # noqa: E402
from zoo.graph import build_graph  # noqa: E402
from zoo.hub import load  # noqa: E402

FIELD = (0.0, 0.0, 0.01)  # V/Å


def evaluation_costs(material: str, repeats: int) -> dict:
    """Compile and run times of E+F, E+F+stress+P and E+F+stress+P+Z+alpha."""
    model = load(f"{material}-field", source="embedded")
    structure = load_field(material)[0]["structure"]
    graph = build_graph([structure], float(model.config["backbone"]["r_max"]), dtype=model.dtype)

    def energy_forces(m, g):
        return jax.value_and_grad(lambda r: m.energy(g, r).sum())(g.positions)

    cases = {
        "energy_forces": energy_forces,
        "with_stress_polarization": lambda m, g: m(g, response=False),
        "with_born_polarizability": lambda m, g: m(g, response=True),
    }
    out = {"atoms": len(structure)}
    for name, fn in cases.items():
        out[name] = timed(eqx.filter_jit(fn), (model, graph), repeats)
    base = out["energy_forces"]["run_cpu_s"]
    out["ratio_all_to_energy_forces"] = out["with_born_polarizability"]["run_cpu_s"] / base
    return out


def md_rate(repeat: int, steps: int) -> dict:
    """Velocity-Verlet steps per second (1 fs) of `batio3-field` on the BaTiO3 frame repeated
    `repeat` times along each axis, after two warm-up steps (compilation)."""
    from ase import units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from zoo.calculator import Calculator

    atoms = load_field("batio3")[0]["structure"].to_ase().repeat(repeat)
    atoms.calc = Calculator(load("batio3-field", source="embedded"), field=FIELD)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dyn.run(2)
    t0, c0 = time.perf_counter(), time.process_time()
    dyn.run(steps)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"atoms": len(atoms), "steps": steps, "steps_per_s": steps / wall,
            "steps_per_cpu_s": steps / cpu}  # fmt: skip


def table(results: dict) -> str:
    rows = ["| material | atoms | E+F (ms) | E+F+stress+P (ms) | + Z + alpha (ms) | ratio to E+F |",
            "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for material, r in results["evaluation"].items():
        ms = [1e3 * r[k]["run_cpu_s"] for k in
              ("energy_forces", "with_stress_polarization", "with_born_polarizability")]  # fmt: skip
        rows.append(f"| {material} | {r['atoms']} | {ms[0]:.0f} | {ms[1]:.0f} | {ms[2]:.0f} | "
                    f"{r['ratio_all_to_energy_forces']:.2f} |")  # fmt: skip
    rows += ["", "| MD (batio3-field) atoms | steps/s (wall) | steps/s (CPU) |", "|---:|---:|---:|"]
    for r in results["md"]:
        rows.append(f"| {r['atoms']} | {r['steps_per_s']:.2f} | {r['steps_per_cpu_s']:.2f} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--md-steps", type=int, default=10)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.md_steps < 1:
        raise SystemExit("--repeats and --md-steps must be >= 1")
    results = {"evaluation": {}, "md": []}
    for material in ("batio3", "sio2"):
        results["evaluation"][material] = evaluation_costs(material, args.repeats)
        print(material, json.dumps(results["evaluation"][material]), flush=True)
    for repeat in (1, 2):
        results["md"].append(md_rate(repeat, args.md_steps))
        print(json.dumps(results["md"][-1]), flush=True)
    results["load_average"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
