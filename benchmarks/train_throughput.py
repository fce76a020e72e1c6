"""Training throughput on the BaTiO3 set: the zoo's ``batio3-response`` direct recipe against
e3response's trainer, seconds per epoch.

Both train Born charges and Raman tensors read directly out of a 3-layer NequIP on the same
32 training structures of ``data/batio3`` (``split.json``), one structure per step, float32,
without validation (only the training epoch is timed):

- ``zoo``: `recipes.batio3_response` (its model, normalisation, batches, loss and
  `zoo.train.fit` settings), ``--epochs`` epochs;
- ``e3response``: e3response 0.1.3's BaTiO3 example model (``examples/bto/model/
  nequip_direct.yaml``: tensorial ``NequipLayer``s, ``ReaxModule``, Adam) with the zoo's
  hidden irreps, spherical harmonics and cutoff, its data module reading the same files, and
  the ``reax.Trainer`` that ``e3response train`` drives.

Each side runs in its own subprocess pinned to one core (``--cpu``), single-threaded, as in
`energy_forces.py`; e3response's pins clash with the zoo's, so it runs from an environment of
its own (``--python e3response=/venv/bin/python`` or ``ZOO_BENCH_PYTHON_E3RESPONSE``). The
first epoch includes compilation; the table reports it and the median of the later ones.

    python benchmarks/train_throughput.py --epochs 4 --python e3response=$V/e3response/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from energy_forces import ENV, interpreter, run_worker

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "batio3"
SIDES = ("zoo", "e3response")
TARGETS = ("born_charges", "raman_tensors")
IRREPS = "8x0e + 8x0o + 8x1e + 8x1o + 8x2e + 8x2o + 8x3e + 8x3o"  # the recipe's NequIP
R_MAX = 4.5


def split() -> dict[str, list[str]]:
    return json.loads((DATA / "split.json").read_text())


class EpochClock(Sequence):
    """Training batches that note the wall and process CPU time of every read: `zoo.train.fit`
    reads each batch once per epoch, and the first read of an epoch comes after the previous
    epoch's losses were synchronised, so the last `epochs * len` reads delimit the epochs."""

    def __init__(self, batches: list):
        self.batches, self.marks = batches, []

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i):
        self.tick()
        return self.batches[i]

    def tick(self) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def epochs(self, n_epochs: int) -> list[tuple[float, float]]:
        """(wall, CPU) seconds of each of the last `n_epochs` epochs (call `tick` at the end)."""
        starts = self.marks[-1 - n_epochs * len(self) :: len(self)]
        return [(w1 - w0, c1 - c0) for (w0, c0), (w1, c1) in zip(starts, starts[1:])]


def zoo_epochs(epochs: int) -> tuple[list[float], dict]:
    """Seconds of each training epoch of the direct recipe (`zoo.train.fit`'s history)."""
    import jax
    import numpy as np

    from recipes.batio3_response import SPECIES, make_batches, make_fns, run_settings
    from zoo.data.batio3 import DATA_DIR, load_batio3
    from zoo.graph import build_graph
    from zoo.model import ResponseModel, fit_normalization, make_config
    from zoo.train import TrainConfig, fit

    settings = run_settings("direct", epochs=epochs)
    bb = settings["backbone"]
    records = load_batio3(DATA_DIR, ids=split()["train"])
    config = make_config(SPECIES, TARGETS, formulation="direct", backbone=bb)
    graphs = [build_graph([r["structure"]], bb["r_max"]) for r in records]
    n_neigh = np.mean([float(g.edge_mask.sum()) / float(g.node_mask.sum()) for g in graphs])
    config["backbone"]["avg_num_neighbors"] = float(n_neigh)
    config = fit_normalization(config, [r["structure"] for r in records],
                               {k: [r[k] for r in records] for k in TARGETS})  # fmt: skip
    model = ResponseModel(config, key=jax.random.key(0))
    loss_fn, _ = make_fns(config)
    train = {**settings["train"], "eval_every": epochs + 1, "checkpoint_every": epochs + 1}
    batches = EpochClock(make_batches(records, bb["r_max"]))
    fit(model, loss_fn, batches, None, TrainConfig(**train), progress=False)
    batches.tick()
    n_params = sum(x.size for x in jax.tree.leaves(model) if hasattr(x, "size"))
    info = {"irreps": str(model.backbone.irreps_out), "parameters": int(n_params),
            "steps_per_epoch": len(records)}  # fmt: skip
    return batches.epochs(epochs), info


def e3response_config(epochs: int):
    """e3response's ``nequip_direct`` BaTiO3 model with the recipe's irreps and cutoff."""
    import omegaconf

    sh = {"_target_": "tensorial.tensors.SphericalHarmonic", "irreps": "0e + 1o + 2e + 3o",
          "normalise": True}  # fmt: skip
    nequip = {"_target_": "tensorial.gcnn.NequipLayer", "irreps_out": IRREPS,
              "avg_num_neighbours": "${from_data.avg_num_neighbours}"}  # fmt: skip
    decode = lambda name, formula, **idx: {  # noqa: E731
        "_target_": "tensorial.gcnn.NodewiseDecoding", "in_field": name,
        "attrs": {name: {"_target_": "tensorial.CartesianTensor", "formula": formula, **idx}},
    }  # fmt: skip
    layers = [
        {"_target_": "tensorial.gcnn.atomic.SpeciesTransform",
         "atomic_numbers": "${from_data.atomic_numbers}"},
        {"_target_": "tensorial.gcnn.NodewiseEmbedding", "attrs": {"species": {
            "_target_": "tensorial.tensors.OneHot", "num_classes": "${from_data.n_elements}"}}},
        {"_target_": "tensorial.gcnn.EdgeVectors"},
        {"_target_": "tensorial.gcnn.EdgewiseEncoding", "attrs": {"edge_vectors": sh}},
        {"_target_": "tensorial.gcnn.RadialBasisEdgeEncoding", "r_max": R_MAX},
        {"_target_": "tensorial.gcnn.NodewiseLinear", "field": "attributes",
         "irreps_out": IRREPS},
        nequip, nequip, nequip,
        {"_target_": "tensorial.gcnn.NodewiseLinear", "irreps_out": "1x0e + 1x1e + 1x2e",
         "out_field": "predicted_born_charges"},
        decode("predicted_born_charges", "ij", i="1o", j="1o"),
        {"_target_": "tensorial.gcnn.NodewiseLinear", "irreps_out": "2x1o + 1x2o + 1x3o",
         "out_field": "predicted_raman_tensors"},
        decode("predicted_raman_tensors", "ijk=ikj", i="1o", j="1o"),
    ]  # fmt: skip
    loss = lambda name: {  # noqa: E731
        "_target_": "tensorial.gcnn.Loss", "loss_fn": "squared_error",
        "predictions": f"nodes.predicted_{name}", "targets": f"nodes.{name}",
    }  # fmt: skip
    return omegaconf.OmegaConf.create({
        "from_data": {"n_elements": "atomic/num_species",
                      "atomic_numbers": "atomic/all_atomic_numbers",
                      "avg_num_neighbours": "atomic/avg_num_neighbours"},
        "model": {
            "_target_": "tensorial.ReaxModule",
            "optimizer": {"_partial_": True, "_target_": "optax.adam", "learning_rate": 5e-3},
            "loss_fn": {"_target_": "tensorial.gcnn.WeightedLoss", "weights": [1000.0, 1.0],
                        "loss_fns": [loss("born_charges"), loss("raman_tensors")]},
            "model": {"_target_": "tensorial.nn.Sequential", "layers": layers},
        },
    })  # fmt: skip


def e3response_epochs(epochs: int) -> tuple[list[float], dict]:
    """Seconds of each training epoch of e3response's model under ``reax.Trainer.fit``."""
    import tempfile

    import ase.io
    import hydra
    import jax
    import numpy as np
    import reax
    from e3response.data import BtoDataModule
    from tensorial import gcnn
    from tensorial.reaxkit.from_data import FromData

    class Data(BtoDataModule):
        """The data module on the zoo's copy of the 400 K set, split as the recipe splits it."""

        def setup(self, stage, /) -> None:
            if self.data_train is not None:
                return
            graphs = []
            for i in split()["train"]:  # the layout e3response's own archive unpacks to
                atoms = ase.io.read(DATA / "structures" / "cif" / f"structure_{i}.cif")
                for name in TARGETS:
                    atoms.arrays[name] = np.load(DATA / name / f"{i}.npy")
                graphs.append(gcnn.atomic.graph_from_ase(
                    atoms, r_max=R_MAX, atom_include_keys=("numbers", *TARGETS)))  # fmt: skip
            self._max_padding = gcnn.data.GraphBatcher.calculate_padding(
                graphs, batch_size=1, with_shuffle=True
            )
            self.data_train, self.data_val, self.data_test = graphs, [], []

    class Timer(reax.TrainerListener):
        def __init__(self):
            self.seconds: list[tuple[float, float]] = []

        def on_train_epoch_start(self, trainer, stage, /) -> None:
            self.t0 = time.perf_counter(), time.process_time()

        def on_train_epoch_end(self, trainer, stage, /) -> None:
            w0, c0 = self.t0
            self.seconds.append((time.perf_counter() - w0, time.process_time() - c0))

    timer = Timer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = reax.Trainer(accelerator="cpu", devices=1, logger=False, listeners=[timer],
                               enable_checkpointing=False, enable_progress_bar=False,
                               default_root_dir=tmp)  # fmt: skip
        data = Data(r_max=R_MAX, batch_size=1)
        cfg = e3response_config(epochs)
        trainer.run(FromData(cfg.from_data, trainer.engine, rngs=trainer.rngs, datamodule=data))
        module = hydra.utils.instantiate(cfg.model, _convert_="object")
        trainer.fit(module, datamodule=data, max_epochs=epochs, limit_val_batches=0)
    params = jax.tree.leaves(module.parameters())
    info = {"irreps": IRREPS, "parameters": int(sum(p.size for p in params)),
            "steps_per_epoch": len(split()["train"])}  # fmt: skip
    return timer.seconds, info


def worker(side: str, epochs: int) -> dict:
    c0 = time.process_time()
    seconds, info = zoo_epochs(epochs) if side == "zoo" else e3response_epochs(epochs)
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    wall, cpu = zip(*seconds)
    return {"side": side, "epoch_s": wall, "epoch_cpu_s": cpu, "first_epoch_s": wall[0],
            "first_epoch_cpu_s": cpu[0], "median_epoch_s": statistics.median(wall[1:]),
            "median_epoch_cpu_s": statistics.median(cpu[1:]), "cpu_s": time.process_time() - c0,
            "load_1min": load, **info}  # fmt: skip


def spawn(side: str, epochs: int, cpu: int, python: str, timeout: float) -> dict:
    cmd = ["taskset", "-c", str(cpu), python, __file__, "--worker", side, "--epochs", str(epochs)]
    env = {**os.environ, **ENV}
    if side == "zoo":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return run_worker(cmd, env, timeout, {"side": side})


def table(results: list[dict]) -> str:
    lines = ["| trainer | parameters | steps / epoch | first epoch (s) | first epoch CPU (s) | "
             "epoch (s) | epoch CPU (s) | CPU s / step | e3response / zoo (CPU) | load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    zoo = next((r for r in results if r["side"] == "zoo" and "error" not in r), None)
    for r in results:
        if "error" in r:
            lines.append(f"| {r['side']} | | | error: {r['error']} | | | | | | |")
            continue
        cpu = r["median_epoch_cpu_s"]
        ratio = f"{cpu / zoo['median_epoch_cpu_s']:.2f}x" if zoo and r is not zoo else ""
        lines.append(
            f"| {r['side']} | {r['parameters']} | {r['steps_per_epoch']} | "
            f"{r['first_epoch_s']:.1f} | {r['first_epoch_cpu_s']:.1f} | "
            f"{r['median_epoch_s']:.1f} | {cpu:.1f} | {cpu / r['steps_per_epoch']:.2f} | "
            f"{ratio} | {r['load_1min']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    p.add_argument("--epochs", type=int, default=4, help="epochs per side (>= 2)")
    p.add_argument("--cpu", type=int, default=0, help="core the workers are pinned to")
    p.add_argument("--timeout", type=float, default=3600.0, help="per side, seconds")
    p.add_argument("--python", nargs="+", default=[], metavar="SIDE=PATH",
                   help="interpreter of a side's own environment")  # fmt: skip
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--table", type=Path, nargs="+", help="only print the table of these --json")
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.epochs < 2:
        p.error("--epochs must be >= 2: the first epoch compiles")
    given = dict(item.split("=", 1) for item in args.python)
    if set(given) - set(SIDES):
        p.error(f"--python names unknown sides {sorted(set(given) - set(SIDES))}; known: {SIDES}")
    if args.worker:
        print(json.dumps(worker(args.worker, args.epochs)))
        return
    if args.table:
        print(table([r for path in args.table for r in json.loads(path.read_text())]))
        return
    results = []
    for side in args.sides:
        r = spawn(side, args.epochs, args.cpu, interpreter(side, given), args.timeout)
        print(json.dumps(r), flush=True)
        results.append(r)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))


if __name__ == "__main__":
    sys.exit(main())
