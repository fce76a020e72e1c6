"""Cost of the field-dependent potentials (`batio3-field`, `sio2-field`): response vs E+F, MD.

Per material, on the first frame of ``data/field`` (BaTiO3 135 atoms, SiO2 72 atoms) and the
shipped weights, compiled calls of: energy + forces (one reverse pass over positions),
energy + forces + stress + polarization (`FieldModel` with ``response=False``, what MD
uses), everything (``response=True``: adds Born charges and the polarizability), and with
Raman tensors two ways: the model's own ``raman=True`` (third derivatives of ``E``:
forward-over-reverse, 3 + 9 field tangents) and :func:`raman_by_heads` (first derivatives
of the expansion's dipole and polarizability heads, one backbone pass). Then
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
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from autodiff import timed  # noqa: E402  (benchmarks/ is the script's folder)

from zoo.data.field import load_field  # noqa: E402
from zoo.graph import build_graph  # noqa: E402
from zoo.heads.derivative import COULOMB  # noqa: E402
from zoo.hub import load  # noqa: E402

FIELD = (0.0, 0.0, 0.01)  # V/Å
#: the 6 independent (a, b) pairs of a symmetric 3x3 tensor
PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def raman_by_heads(model, graph) -> dict:
    """Forces, Born charges, polarizability and Raman tensors of an ``"expansion"``
    `FieldModel` at zero field, as first derivatives of its heads.

    ``E = U - eps . P - eps . alpha . eps / 2`` with a backbone that does not see the field,
    so ``P = -dE/deps`` and ``alpha = -d2E/deps2`` at zero field are head-level derivatives
    (nested field jvps: the backbone's field tangents are symbolic zeros), and ``U``, ``P``
    (3) and the 6 independent ``alpha_ab`` per graph are 10 outputs of one backbone pass: one
    ``vjp`` over positions, pulled back along 10 one-hot cotangents (vmapped). Returns the names and
    shapes of `FieldModel.__call__` (Raman tensors ``COULOMB * d alpha / dr``).
    """
    zero = jnp.zeros((graph.n_graphs, 3), model.dtype)
    dirs = jnp.broadcast_to(jnp.eye(3, dtype=model.dtype)[:, None, :], (3,) + zero.shape)

    def outputs(r):  # (10, n_graphs): U, P_a, alpha_ab (PAIRS), from one backbone pass
        def energy(f):
            return model.energy(graph, r, None, f)

        def slopes(f):  # E and its 3 field slopes
            return jax.vmap(lambda u: jax.jvp(energy, (f,), (u,)), out_axes=(None, 0))(dirs)

        (e, de), (_, dde) = jax.vmap(
            lambda v: jax.jvp(slopes, (zero,), (v,)), out_axes=((None, None), (0, 0))
        )(dirs)
        return jnp.concatenate([e[None], -de, -jnp.stack([dde[a, b] for a, b in PAIRS])])

    values, pull = jax.vjp(outputs, graph.positions.astype(model.dtype))
    (grads,) = jax.vmap(pull)(jnp.broadcast_to(jnp.eye(10, dtype=values.dtype)[:, :, None],
                                               (10,) + values.shape))  # fmt: skip
    sym = np.zeros((6, 3, 3))
    for k, (a, b) in enumerate(PAIRS):
        sym[k, a, b] = sym[k, b, a] = 1.0
    sym = jnp.asarray(sym, values.dtype)
    return {
        "energy": values[0],
        "forces": -grads[0],
        "born_charges": jnp.moveaxis(grads[1:4], 0, 1),  # (a, i, b) -> (i, a, b)
        "polarizability": jnp.einsum("kg,kab->gab", values[4:], sym),
        "raman_tensors": COULOMB * jnp.einsum("kib,kac->ibac", grads[4:], sym),
    }


def evaluation_costs(material: str, repeats: int) -> dict:
    """Compile and run times of E+F, E+F+stress+P, E+F+stress+P+Z+alpha and with Raman
    tensors (third derivatives, and :func:`raman_by_heads`), and how far the two Raman
    routes' results are apart."""
    model = load(f"{material}-field", source="embedded")
    structure = load_field(material)[0]["structure"]
    graph = build_graph([structure], float(model.config["backbone"]["r_max"]), dtype=model.dtype)

    def energy_forces(m, g):
        return jax.value_and_grad(lambda r: m.energy(g, r).sum())(g.positions)

    cases = {
        "energy_forces": energy_forces,
        "with_stress_polarization": lambda m, g: m(g, response=False),
        "with_born_polarizability": lambda m, g: m(g, response=True),
        "with_raman": lambda m, g: m(g, response=True, raman=True),
        "raman_by_heads": raman_by_heads,
    }
    out = {"atoms": len(structure)}
    for name, fn in cases.items():
        out[name] = timed(eqx.filter_jit(fn), (model, graph), repeats)
        print(name, out[name], flush=True)
    # the first case timed in a process runs up to 1.5x slow (allocator and caches warming
    # up): time the baseline again and keep the faster
    again = timed(eqx.filter_jit(energy_forces), (model, graph), repeats)
    out["energy_forces"] = min(out["energy_forces"], again, key=lambda t: t["run_cpu_s"])
    base = out["energy_forces"]["run_cpu_s"]
    for name in ("with_born_polarizability", "with_raman", "raman_by_heads"):
        out[f"ratio_{name}"] = out[name]["run_cpu_s"] / base
    # the two Raman routes give the same tensors (up to float32 rounding)
    nested = eqx.filter_jit(cases["with_raman"])(model, graph)
    heads = eqx.filter_jit(raman_by_heads)(model, graph)
    out["heads_vs_nested_max_abs"] = {
        k: float(jnp.max(jnp.abs(heads[k] - nested[k])[: len(structure)]))
        for k in ("forces", "born_charges", "raman_tensors")
    }
    out["heads_vs_nested_max_abs"]["polarizability"] = float(
        jnp.max(jnp.abs(heads["polarizability"][0] - nested["polarizability"][0]))
    )
    return out


def md_rate(repeat: int, steps: int) -> dict:
    """Velocity-Verlet steps per second (1 fs) of `batio3-field` on the BaTiO3 frame repeated
    `repeat` times along each axis, after ten warm-up steps (compilation, and a recompile
    where the first steps move the edge count into another size bucket)."""
    from ase import units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from zoo.calculator import Calculator

    atoms = load_field("batio3")[0]["structure"].to_ase().repeat(repeat)
    atoms.calc = Calculator(load("batio3-field", source="embedded"), field=FIELD)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dyn.run(10)
    t0, c0 = time.perf_counter(), time.process_time()
    dyn.run(steps)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"atoms": len(atoms), "steps": steps, "steps_per_s": steps / wall,
            "steps_per_cpu_s": steps / cpu}  # fmt: skip


def table(results: dict) -> str:
    rows = ["| material | atoms | E+F (ms) | E+F+stress+P (ms) | + Z + alpha (ms) | ratio to E+F "
            "| + Raman, `raman=True` (ms) | ratio | E+F+Z+alpha+Raman by heads (ms) | ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    names = ("energy_forces", "with_stress_polarization", "with_born_polarizability",
             "with_raman", "raman_by_heads")  # fmt: skip
    for material, r in results["evaluation"].items():
        ms = [1e3 * r[k]["run_cpu_s"] for k in names]
        rows.append(
            f"| {material} | {r['atoms']} | {ms[0]:.0f} | {ms[1]:.0f} | {ms[2]:.0f} | "
            f"{r['ratio_with_born_polarizability']:.2f} | {ms[3]:.0f} | "
            f"{r['ratio_with_raman']:.2f} | {ms[4]:.0f} | {r['ratio_raman_by_heads']:.2f} |"
        )
    rows += ["", "| MD (batio3-field) atoms | steps/s (wall) | steps/s (CPU) |", "|---:|---:|---:|"]
    for r in results["md"]:
        rows.append(f"| {r['atoms']} | {r['steps_per_s']:.2f} | {r['steps_per_cpu_s']:.2f} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--md-steps", type=int, default=10, help="0: no MD")
    p.add_argument("--materials", nargs="+", default=["batio3", "sio2"], choices=["batio3", "sio2"])
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.md_steps < 0:
        raise SystemExit("--repeats must be >= 1 and --md-steps >= 0")
    results = {"evaluation": {}, "md": []}
    for material in args.materials:
        results["evaluation"][material] = evaluation_costs(material, args.repeats)
        print(material, json.dumps(results["evaluation"][material]), flush=True)
    for repeat in (1, 2) if args.md_steps else ():
        results["md"].append(md_rate(repeat, args.md_steps))
        print(json.dumps(results["md"][-1]), flush=True)
    results["load_average"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
