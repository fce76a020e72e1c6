"""Energy + forces + stress speed: zoo NequIP / MACE / Allegro against mace-torch, InstaDeep's
mlip (JAX MACE), tensorial (JAX MACE), nequip and nequip-allegro (torch), side by side on the
same structures and hyperparameters.

Every (model, size) runs in its own subprocess pinned to one core (``taskset -c 0``, XLA and
torch single-threaded), float32, so its peak RSS is its own. Reported: median of `--runs`
timed calls after one warm-up call, the first call (compile / build of the graph) and peak
RSS. The table's speed-up is peer time / zoo time for the same architecture.

Peers whose pins clash with the zoo's live in virtual environments of their own: give each
peer's interpreter with ``--python PEER=/path/to/venv/bin/python`` or the environment
variable ``ZOO_BENCH_PYTHON_<PEER>`` (upper case, ``-`` -> ``_``, e.g.
``ZOO_BENCH_PYTHON_MACE_TORCH``); default: this interpreter. Peer workers import neither the
zoo nor its dependencies, except tensorial's, which shares the zoo's graph and radial basis
(its environment needs the zoo's dependencies; the repository is put on its path).

    .venv/bin/python benchmarks/energy_forces.py --repeats 1 2 4 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "batio3" / "structures" / "cif"
SPECIES = (8, 22, 56)
R_MAX = 5.0
ENV = {
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",  # mace-torch 0.3.16 + e3nn 0.4.4 under torch 2.13
    "JAX_PLATFORMS": "cpu",
}
PEERS = {  # peer -> the zoo model it is compared with
    "mace-torch": "zoo-mace",
    "mlip-mace": "zoo-mace",
    "tensorial-mace": "zoo-mace",
    "nequip-torch": "zoo-nequip",
    "allegro-torch": "zoo-allegro",
}
MODELS = ["zoo-mace", "zoo-nequip", "zoo-allegro", *PEERS]
REPO = Path(__file__).resolve().parents[1]


def structure(repeat: int):
    import ase.io

    atoms = ase.io.read(sorted(DATA.glob("*.cif"))[0])
    return atoms.repeat((repeat, repeat, repeat))


def avg_neighbors() -> float:
    """Mean neighbours within R_MAX in the 135-atom cell (ase: every peer's environment has it)."""
    import ase.neighborlist

    atoms = structure(1)
    return len(ase.neighborlist.neighbor_list("i", atoms, R_MAX)) / len(atoms)


# ---- workers: each returns a zero-argument callable computing energy, forces, stress ----


def zoo_runner(name: str, atoms):
    import equinox as eqx
    import jax

    from zoo.graph import build_graph
    from zoo.response import energy_forces_stress, scalar_channel

    avg = avg_neighbors()
    key = jax.random.PRNGKey(0)
    if name == "zoo-mace":
        from zoo.mace import MACE, MACEConfig

        cfg = MACEConfig(
            species=SPECIES, r_max=R_MAX, num_interactions=2, hidden_irreps="64x0e+64x1o",
            max_ell=3, correlation=3, avg_num_neighbors=avg,
        )  # fmt: skip
        build = lambda k: MACE(cfg, key=k)
    elif name == "zoo-nequip":
        from zoo.nequip import NequIP, NequIPConfig

        cfg = NequIPConfig(
            species=SPECIES, r_max=R_MAX, num_layers=3, channels=32, lmax=2, parity=True,
            avg_num_neighbors=avg,
        )  # fmt: skip
        build = lambda k: NequIP(cfg, key=k)
    else:
        from zoo.allegro import Allegro, AllegroConfig

        cfg = AllegroConfig(
            species=SPECIES, r_max=R_MAX, num_layers=2, lmax=2, channels=32, latent_dim=64,
            avg_num_neighbors=avg,
        )  # fmt: skip
        build = lambda k: Allegro(cfg, key=k)
    model = eqx.filter_jit(build)(key)
    graph = build_graph(atoms, R_MAX)
    efs = eqx.filter_jit(lambda m, g: energy_forces_stress(scalar_channel(m), g))

    def run():
        out = efs(model, graph)
        jax.block_until_ready(out)
        return float(out["energy"][0])

    return run, int(graph.edge_mask.sum())


def mace_torch_runner(atoms):
    import numpy as np
    import torch
    from e3nn import o3
    from mace import data as mace_data
    from mace import modules, tools
    from mace.tools import torch_geometric

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    model = modules.MACE(
        r_max=R_MAX, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=2, num_elements=3, hidden_irreps=o3.Irreps("64x0e+64x1o"),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(3),
        avg_num_neighbors=avg_neighbors(), atomic_numbers=list(SPECIES), correlation=3,
        gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64],
    )  # fmt: skip
    z_table = tools.AtomicNumberTable(list(SPECIES))
    data = mace_data.AtomicData.from_config(
        mace_data.config_from_atoms(atoms), z_table=z_table, cutoff=R_MAX, heads=["Default"]
    )
    batch = torch_geometric.Batch.from_data_list([data]).to_dict()

    def run():
        b = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
        out = model(b, compute_stress=True, training=False)
        return float(out["energy"].item())

    return run, int(data["edge_index"].shape[1])


def nequip_torch_runner(name: str, atoms):
    """nequip >= 0.7 (``NequIPGNNModel``) or nequip-allegro (``AllegroModel``), eager mode."""
    import torch
    from nequip.data import AtomicDataDict, compute_neighborlist_, from_ase
    from nequip.utils.global_state import set_global_state

    torch.set_num_threads(1)
    set_global_state()
    common = dict(
        seed=0, model_dtype="float32", type_names=["O", "Ti", "Ba"], r_max=R_MAX,
        avg_num_neighbors=avg_neighbors(),
    )  # fmt: skip
    if name == "nequip-torch":
        from nequip.model import NequIPGNNModel

        model = NequIPGNNModel(
            num_layers=3, l_max=2, parity=True, num_features=32, radial_mlp_depth=2,
            radial_mlp_width=64, num_bessels=8, polynomial_cutoff_p=6, **common,
        )  # fmt: skip
    else:
        from allegro.model import AllegroModel

        embed = {"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 8}
        model = AllegroModel(
            l_max=2, parity=True, num_layers=2, num_scalar_features=64,
            num_tensor_features=32, radial_chemical_embed=embed, **common,
        )  # fmt: skip
    model.eval()
    data = compute_neighborlist_(from_ase(atoms), r_max=R_MAX)
    species = {8: 0, 22: 1, 56: 2}
    data[AtomicDataDict.ATOM_TYPE_KEY] = torch.tensor([species[z] for z in atoms.numbers])

    def run():
        out = model({k: v.clone() for k, v in data.items()})
        assert out[AtomicDataDict.STRESS_KEY] is not None
        return float(out[AtomicDataDict.TOTAL_ENERGY_KEY].sum().item())

    return run, int(data[AtomicDataDict.EDGE_INDEX_KEY].shape[1])


def mlip_runner(atoms):
    """InstaDeep's mlip ``Mace`` through its ``ForceField`` (energy, forces, stress), jitted."""
    import jax
    from mlip.data import DatasetInfo
    from mlip.data.chemical_system import ChemicalSystem
    from mlip.graph.graph import Graph
    from mlip.models import ForceField, Mace
    from mlip.typing.properties import Properties

    avg = avg_neighbors()
    info = DatasetInfo(
        atomic_energies_map={z: 0.0 for z in SPECIES}, graph_cutoff_angstrom=R_MAX,
        avg_num_neighbors=avg,
    )  # fmt: skip
    cfg = Mace.Config(
        num_layers=2, num_channels=64, l_max=3, correlation=3, readout_irreps=("16x0e", "0e"),
        num_rbf=8, radial_mlp_hidden=[64, 64, 64], avg_num_neighbors=avg,
        node_symmetry=1,  # hidden features 64x0e+64x1o as the others (mlip's default: l_max)
    )  # fmt: skip
    ff = ForceField.from_mlip_network(Mace(cfg, info), Properties(stress=True), seed=0)
    graph = Graph.from_chemical_system(ChemicalSystem.from_ase_atoms(atoms), R_MAX)
    predict = jax.jit(ff)

    def run():
        out = predict(graph)
        jax.block_until_ready((out.forces, out.stress))
        return float(out.energy[0])

    return run, int(graph.n_edge[0])


def tensorial_runner(atoms):
    import e3nn_jax as e3nn
    import jax
    import jax.numpy as jnp
    import jraph
    from tensorial.gcnn import _mace, keys

    from zoo._blocks import radial_embedding
    from zoo.graph import build_graph, species_indices

    graph = build_graph(atoms, R_MAX)
    avg = avg_neighbors()
    mace = _mace.Mace(
        irreps_out="1x0e", out_field="energy", hidden_irreps="64x0e+64x1o",
        correlation_order=3, num_interactions=2, num_types=3, max_ell=3,
        avg_num_neighbours=avg, readout_mlp_irreps="16x0e",
    )  # fmt: skip
    embed = jax.random.normal(jax.random.PRNGKey(1), (3, 64))

    def to_jraph(positions, strain):
        g = graph
        vec = g.edge_vectors(positions, strain)
        safe = jnp.where(g.edge_mask[:, None], vec, jnp.array([1.0, 0.0, 0.0]))
        length = jnp.linalg.norm(safe, axis=-1)
        sh = e3nn.spherical_harmonics(
            "0e+1o+2e+3o", safe, normalize=True, normalization="component"
        )
        radial = radial_embedding(length, 8, R_MAX, 5) * g.edge_mask[:, None]
        species = species_indices(g.numbers, SPECIES)
        nodes = {
            keys.FEATURES: e3nn.IrrepsArray("64x0e", embed[species]),
            keys.SPECIES: species[:, None],
            keys.MASK: g.node_mask,
        }
        edges = {keys.ATTRIBUTES: sh, keys.RADIAL_EMBEDDINGS: radial, keys.MASK: g.edge_mask}
        return jraph.GraphsTuple(
            nodes=nodes, edges=edges, senders=g.senders, receivers=g.receivers,
            globals=None, n_node=jnp.array([g.n_nodes]), n_edge=jnp.array([g.n_edges]),
        )  # fmt: skip

    zero = jnp.zeros((graph.n_graphs, 3, 3))
    params = mace.init(jax.random.PRNGKey(0), to_jraph(graph.positions, zero))

    def energy(params, positions, strain):
        out = mace.apply(params, to_jraph(positions, strain)).nodes["energy"].array[:, 0]
        return jnp.sum(jnp.where(graph.node_mask, out, 0.0))

    efs = jax.jit(jax.value_and_grad(energy, argnums=(1, 2)))

    def run():
        e, grads = efs(params, graph.positions, zero)
        jax.block_until_ready(grads)
        return float(e)

    return run, int(graph.edge_mask.sum())


def worker(name: str, repeat: int, runs: int) -> dict:
    atoms = structure(repeat)
    t0 = time.perf_counter()
    if name.startswith("zoo-"):
        run, n_edges = zoo_runner(name, atoms)
    elif name == "mace-torch":
        run, n_edges = mace_torch_runner(atoms)
    elif name in ("nequip-torch", "allegro-torch"):
        run, n_edges = nequip_torch_runner(name, atoms)
    elif name == "mlip-mace":
        run, n_edges = mlip_runner(atoms)
    elif name == "tensorial-mace":
        sys.path.insert(0, str(REPO))
        run, n_edges = tensorial_runner(atoms)
    else:
        raise ValueError(f"unknown model {name!r}; known: {MODELS}")
    build = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    energy = run()
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    return {
        "model": name, "atoms": len(atoms), "edges": n_edges, "build_s": build,
        "first_call_s": first, "median_s": statistics.median(times), "times": times,
        "peak_rss_mb": rss_mb, "energy": energy,
        # CPU seconds of this single-threaded, pinned process: what the wall times would be
        # on an idle core (the other jobs on a shared machine inflate only the wall times)
        "first_call_cpu_s": first_cpu, "median_cpu_s": statistics.median(cpu),
        "load_1min": load,
    }  # fmt: skip


def interpreter(name: str, given: dict[str, str]) -> str:
    """The Python that runs `name`: ``--python``, then ``ZOO_BENCH_PYTHON_<NAME>``, then this."""
    env = "ZOO_BENCH_PYTHON_" + name.upper().replace("-", "_")
    return given.get(name) or os.environ.get(env) or sys.executable


def spawn(name: str, repeat: int, runs: int, timeout: float, cpu: int, python: str) -> dict:
    cmd = ["taskset", "-c", str(cpu), python, __file__, "--worker", name]
    cmd += ["--repeats", str(repeat), "--runs", str(runs)]
    env = {**os.environ, **ENV}
    if name.startswith("zoo-"):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if os.environ.get("ZOO_BENCH_EXTRA_XLA_FLAGS"):  # e.g. compile-time experiments
        env["XLA_FLAGS"] += " " + os.environ["ZOO_BENCH_EXTRA_XLA_FLAGS"]
    return run_worker(cmd, env, timeout, {"model": name})


def run_worker(cmd: list[str], env: dict, timeout: float, label: dict) -> dict:
    """The last JSON line a worker subprocess prints, or `label` with its ``error``."""
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**label, "error": f"timeout after {timeout:.0f} s"}
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    errors = [l for l in proc.stderr.splitlines() if "Error" in l] or ["?"]
    return {**label, "error": errors[-1][:200]}


def table(results: list[dict]) -> str:
    """Markdown table. compile = first call - one timed call (median); "CPU" columns are
    process CPU seconds (robust to other jobs on the machine), the others wall seconds."""
    lines = [
        "| atoms | model | edges | median (s) | median CPU (s) | build (s) | first call (s) | "
        "compile (s) | compile CPU (s) | peak RSS (MB) | peer / zoo | peer / zoo (CPU) | load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(r.get("atoms"), r["model"]): r for r in results if "error" not in r}
    for r in results:
        if "error" in r:
            lines.append(f"| {r.get('atoms', '?')} | {r['model']} | | error: {r['error']} |")
            continue
        zoo = by_key.get((r["atoms"], PEERS.get(r["model"], "")))
        cpu = "median_cpu_s" in r
        speed = f"{r['median_s'] / zoo['median_s']:.2f}x" if zoo else ""
        speed_cpu = (
            f"{r['median_cpu_s'] / zoo['median_cpu_s']:.2f}x"
            if zoo and cpu and "median_cpu_s" in zoo
            else ""
        )
        compile_cpu = f"{r['first_call_cpu_s'] - r['median_cpu_s']:.1f}" if cpu else ""
        median_cpu = f"{r['median_cpu_s']:.2f}" if cpu else ""
        lines.append(
            f"| {r['atoms']} | {r['model']} | {r['edges']} | {r['median_s']:.2f} | {median_cpu} | "
            f"{r['build_s']:.0f} | {r['first_call_s']:.0f} | "
            f"{r['first_call_s'] - r['median_s']:.1f} | {compile_cpu} | {r['peak_rss_mb']:.0f} | "
            f"{speed} | {speed_cpu} | {r.get('load_1min', float('nan')):.1f} |"
        )
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, nargs="+", default=[1, 2, 4], help="n for n x n x n")
    p.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--timeout", type=float, default=3600.0, help="per (model, size), seconds")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--table", help="only print the table of these --json files", nargs="+")
    p.add_argument("--cpu", type=int, default=0, help="core every worker is pinned to")
    p.add_argument(
        "--python", nargs="+", default=[], metavar="PEER=PATH",
        help="interpreter of a peer's own environment, e.g. mace-torch=/venvs/mace/bin/python",
    )  # fmt: skip
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    given = dict(item.split("=", 1) for item in args.python)
    unknown = set(given) - set(MODELS)
    if unknown:
        p.error(f"--python names unknown models {sorted(unknown)}; known: {MODELS}")
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats[0], args.runs)))
        return
    if args.table:
        print(table([r for name in args.table for r in json.load(open(name))]))
        return
    results = []
    for repeat in args.repeats:
        for name in args.models:
            r = spawn(name, repeat, args.runs, args.timeout, args.cpu, interpreter(name, given))
            r.setdefault("atoms", 135 * repeat**3)
            print(json.dumps(r), flush=True)
            results.append(r)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"\nload average at the end: {' '.join(load)} (2 cores)\n")
    print(table(results))


if __name__ == "__main__":
    main()
