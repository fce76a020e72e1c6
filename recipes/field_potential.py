"""Train a field-dependent potential (`zoo.field.FieldModel`) on the finite-field DFT frames.

    python -m recipes.field_potential --material batio3 --minutes 25
    python -m recipes.field_potential --material sio2 --minutes 25

Data: ``data/field`` (BaTiO3 59 x 135 atoms, alpha-SiO2 161 x 72 atoms; see its README).
Fixed split by source frame id, written to ``split.json``: a numpy ``default_rng(0)``
permutation of the sorted ids, 80 % training, 20 % validation. Normalisation (per-species
energy and polarizability offsets, output scales) on training frames only.

Loss: for energy (per atom), forces, stress, polarization (folded modulo the quantum), Born
charges and polarizability, the mean squared error divided by the square of a reference error
(`zoo._field_train.REFERENCE`, the issue's targets; for SiO2 its own force, Born and
polarizability targets), all with weight 1 except stress 0.1. Adam, learning rate
cosine-decayed over the wall-clock budget, one frame per step. The model after the last step
is evaluated on the validation frames and written with `save_pretrained` to
``zoo/weights/<material>-field`` with ``metrics.json``, ``split.json``, parity plots and its
card (`recipes._field_card`); then the weights registry is re-hashed.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zoo._field_config import fit_field_config, make_field_config
from zoo._field_train import REFERENCE, evaluate, frame_batch, make_step
from zoo.data.field import load_field
from zoo.field import FieldModel

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "batio3": {"species": [56, 22, 8], "reference": {}},
    "sio2": {
        "species": [14, 8],
        "reference": {"forces": 0.025, "born_charges": 0.005, "polarizability": 0.012},
    },
}
WEIGHTS = {
    "energy": 1.0,
    "forces": 1.0,
    "stress": 0.1,
    "polarization": 1.0,
    "born_charges": 1.0,
    "polarizability": 1.0,
}
BACKBONE = {
    "channels": 8, "num_layers": 2, "lmax": 2, "r_max": 4.0, "num_basis": 8, "radial_hidden": 32,
}  # fmt: skip


def make_split(records: list[dict], fraction: float = 0.2) -> dict[str, list[int]]:
    ids = sorted(r["index"] for r in records)
    perm = np.random.default_rng(0).permutation(len(ids))
    n_val = max(1, round(fraction * len(ids)))
    val = sorted(ids[k] for k in perm[:n_val])
    return {"train": sorted(set(ids) - set(val)), "validation": val}


def avg_neighbors(records: list[dict], r_max: float) -> float:
    from zoo._neighbors import neighbor_pairs

    counts = [len(neighbor_pairs(r["structure"], r_max)[0]) / len(r["structure"]) for r in records]
    return float(np.mean(counts))


def batches(records, r_max, dtype, frames: int = 1):
    """Padded graphs of `frames` consecutive records each, all with the same edge capacity
    (one compilation): the largest bucketed edge count of any group, since buckets above a
    given capacity win."""
    groups = [records[k : k + frames] for k in range(0, len(records), frames)]
    out = [frame_batch(g, r_max, dtype) for g in groups]
    cap = max(g.senders.shape[0] for g, _ in out)
    nodes = max(g.positions.shape[0] for g, _ in out)
    graphs = max(g.n_graphs for g, _ in out)
    return [
        b
        if (b[0].senders.shape[0], b[0].positions.shape[0], b[0].n_graphs) == (cap, nodes, graphs)
        else frame_batch(g, r_max, dtype, n_edges=cap, n_nodes=nodes, n_graphs=graphs)
        for b, g in zip(out, groups)
    ]


def train(
    material: str,
    minutes: float,
    lr: float,
    seed: int,
    coupling: str,
    log,
    backbone: dict | None = None,
    weights: dict | None = None,
    frames: int = 1,
    init: Path | None = None,
) -> tuple:
    """Fit one model within `minutes`; returns (model, split, validation metrics, parity
    pairs, training summary). `backbone` overrides entries of :data:`BACKBONE`, `weights`
    of :data:`WEIGHTS`; `frames` per optimiser step; `init` a model folder (its config,
    normalisation and weights; then `backbone` is not used) to continue training from."""
    weights = {**WEIGHTS, **(weights or {})}
    settings = SETTINGS[material]
    records = load_field(material)
    split = make_split(records)
    by_id = {r["index"]: r for r in records}
    tr = [by_id[i] for i in split["train"]]
    va = [by_id[i] for i in split["validation"]]
    if init is None:
        backbone = {**BACKBONE, **(backbone or {})}
        backbone["avg_num_neighbors"] = avg_neighbors(tr, backbone["r_max"])
        config = make_field_config(settings["species"], coupling=coupling, **backbone)
        config = fit_field_config(config, tr)
        model = FieldModel(config, key=jax.random.key(seed))
    else:
        model = continued(Path(init), material, split)
        backbone = model.config["backbone"]
    reference = {**REFERENCE, **settings["reference"]}
    train_b = batches(tr, backbone["r_max"], model.dtype, frames)
    val_b = batches(va, backbone["r_max"], model.dtype)
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
    opt_state = optimizer.init(eqx_arrays(model))
    step = make_step(optimizer, weights, reference)
    rng = np.random.default_rng(seed)
    start, n_steps, history = time.time(), 0, []
    budget = minutes * 60
    while True:
        for k in rng.permutation(len(train_b)):
            frac = min((time.time() - start) / budget, 1.0)
            # an array, not a Python float: filter_jit would recompile for every new value
            rate = lr * 0.5 * (1 + math.cos(math.pi * frac))
            opt_state.hyperparams["learning_rate"] = jnp.asarray(rate, jnp.float32)
            model, opt_state, terms = step(model, opt_state, *train_b[k])
            n_steps += 1
            if n_steps % 10 == 0:
                row = {k: float(v) for k, v in terms.items()}
                history.append({"step": n_steps, "seconds": time.time() - start, **row})
                log(f"step {n_steps} {time.time() - start:.0f}s " +
                    " ".join(f"{k}={v:.3g}" for k, v in row.items()))  # fmt: skip
            if time.time() - start > budget:
                break
        else:
            continue
        break
    seconds = time.time() - start
    metrics, pairs = evaluate(model, val_b)
    train_metrics, _ = evaluate(model, train_b[:8])  # a sample: evaluation is not free
    summary = {
        "steps": n_steps,
        "epochs": n_steps * frames / len(tr),
        "minutes": seconds / 60,
        "budget_minutes": minutes,
        "learning_rate": lr,
        "seed": seed,
        "loss_weights": weights,
        "frames_per_step": frames,
        "previous_training": None if init is None else previous_training(Path(init)),
        "loss_reference_errors": reference,
        "n_train": len(tr),
        "n_validation": len(va),
        "train_metrics_first_8_frames": train_metrics,
        "history": history,
    }
    return model, split, metrics, pairs, summary


def continued(folder: Path, material: str, split: dict) -> FieldModel:
    """The model of `folder` (config.json, model.safetensors), refused unless it is a field
    model of `material`'s species trained on the same split (its ``split.json``)."""
    from zoo.hub import load_folder_files

    model = load_folder_files(folder / "config.json", folder / "model.safetensors")
    if not isinstance(model, FieldModel) or list(model.species) != SETTINGS[material]["species"]:
        raise SystemExit(f"--init {folder}: not a field model of {material}")
    # a shipped folder holds its split; a run's model folder sits next to it
    split_file = next((f / "split.json" for f in (folder, folder.parent)
                       if (f / "split.json").is_file()), None)  # fmt: skip
    if split_file is None or json.loads(split_file.read_text()) != split:
        raise SystemExit(f"--init {folder}: no split.json equal to this recipe's split")
    return model


def previous_training(folder: Path) -> dict | None:
    """Steps, minutes and learning rate of the run that trained the weights in `folder`
    (its ``metrics.json``, or the run folder's next to it)."""
    for f in (folder, folder.parent):
        if (f / "metrics.json").is_file():
            m = json.loads((f / "metrics.json").read_text())
            keys = ("steps", "epochs", "minutes", "budget_minutes", "learning_rate",
                    "frames_per_step", "previous_training")  # fmt: skip
            return {k: m[k] for k in keys if k in m}
    return None


def eqx_arrays(model):
    import equinox as eqx

    return eqx.filter(model, eqx.is_array)


def save_run(run: Path, model, split, metrics, pairs, summary) -> None:
    """The raw result of a training run (model folder, split, metrics, parity pairs)."""
    model.save_pretrained(run / "model", overwrite=True)
    (run / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    (run / "metrics.json").write_text(json.dumps({"validation": metrics, **summary}, indent=1))
    np.savez(run / "pairs.npz", **pairs)


def born_order_check(split_file: Path) -> dict[str, float]:
    """MAE of the shipped ``batio3-response`` Born charges on the validation frames of
    `split_file`, as stored and transposed, and of their symmetric and antisymmetric parts."""
    import zoo

    ids = set(json.loads(Path(split_file).read_text())["validation"])
    frames = [r for r in load_field("batio3") if r["index"] in ids]
    pred = zoo.load("batio3-response").predict([r["structure"] for r in frames])["born_charges"]
    true = np.concatenate([r["born_charges"] for r in frames])

    def anti(z):
        return z - np.swapaxes(z, 1, 2)

    return {
        "atoms": len(true),
        "mae_as_stored": float(np.abs(pred - true).mean()),
        "mae_transposed": float(np.abs(np.swapaxes(pred, 1, 2) - true).mean()),
        "mae_symmetric_part": float(np.abs((pred + np.swapaxes(pred, 1, 2) - true
                                            - np.swapaxes(true, 1, 2)) / 2).mean()),
        "mae_antisymmetric_as_stored": float(np.abs(anti(pred) - anti(true)).mean()),
        "mae_antisymmetric_transposed": float(np.abs(-anti(pred) - anti(true)).mean()),
    }  # fmt: skip


def parse_weights(items: list[str]) -> dict[str, float]:
    """``["forces=4", ...]`` -> ``{"forces": 4.0}``; unknown quantities or bad numbers fail."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            w = float(value)
        except ValueError:
            w = -1.0
        if name not in WEIGHTS or not (math.isfinite(w) and w >= 0):
            raise SystemExit(f"--weight {item!r}: expected QUANTITY=W with QUANTITY in "
                             f"{sorted(WEIGHTS)} and W >= 0")  # fmt: skip
        out[name] = w
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--material", choices=sorted(SETTINGS), required=True)
    p.add_argument("--minutes", type=float, default=25.0, help="training budget (wall clock)")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coupling", choices=("expansion", "node_input"), default="expansion")
    p.add_argument("--channels", type=int, default=BACKBONE["channels"])
    p.add_argument("--lmax", type=int, default=BACKBONE["lmax"])
    p.add_argument("--r-max", type=float, default=BACKBONE["r_max"], help="cutoff (Å)")
    p.add_argument("--frames", type=int, default=1, help="frames per optimiser step")
    p.add_argument("--init", type=Path, default=None,
                   help="continue training the model in this folder (e.g. a shipped one)")  # fmt: skip
    p.add_argument("--weight", action="append", default=[], metavar="QUANTITY=W",
                   help=f"loss weight of one of {sorted(WEIGHTS)} (repeatable)")  # fmt: skip
    p.add_argument(
        "--run", type=Path, default=None, help="run folder, default runs/<material>-field"
    )
    p.add_argument("--ship-only", action="store_true", help="ship a finished run, no training")
    p.add_argument("--no-ship", action="store_true", help="train and keep the run only")
    p.add_argument("--born-order-check", action="store_true",
                   help="batio3-response's Born MAE on the validation frames, as stored and "
                   "transposed (see docs/experiments.md), then exit")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="default zoo/weights/<material>-field")
    args = p.parse_args(argv)
    if not args.minutes > 0:
        raise SystemExit("--minutes must be > 0")
    if args.frames < 1 or args.channels < 1:
        raise SystemExit("--frames and --channels must be >= 1")
    weights = parse_weights(args.weight)
    run = args.run or ROOT / "runs" / f"{args.material}-field"
    out = args.out or ROOT / "zoo" / "weights" / f"{args.material}-field"
    if args.born_order_check:
        print(json.dumps(born_order_check(ROOT / "zoo/weights/batio3-field/split.json"), indent=1))
        return
    if not args.ship_only:
        run.mkdir(parents=True, exist_ok=True)
        backbone = {"channels": args.channels, "lmax": args.lmax, "r_max": args.r_max}
        result = train(args.material, args.minutes, args.lr, args.seed, args.coupling, print,
                       backbone, weights, args.frames, args.init)  # fmt: skip
        save_run(run, *result)
        print(json.dumps(result[2], indent=1))
        if args.no_ship:
            return
    from recipes._field_card import ship

    ship(run, out, args.material)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
