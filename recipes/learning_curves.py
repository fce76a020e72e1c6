"""What pretrained weights are worth: Born-charge learning curves on the BaTiO3 field frames.

    python -m recipes.learning_curves                       # N = 2, 5, 10, 20; 60 steps each
    python -m recipes.learning_curves --sizes 2 5 --steps 20 --out runs/lc-small

For each training-set size N, the shipped `batio3-response` (trained on the DFPT 400 K
ensemble only) is fine-tuned with `zoo.finetune` on the Born charges of N frames of
``data/field/BaTiO3`` and, as the control, the same architecture and normalisation with fresh
random weights is trained on the same N frames with the same number of optimiser steps. Both
are scored on the 12 validation frames of ``zoo/weights/batio3-field/split.json`` (never
trained on, used only once at the end, not for model selection). The N frames are the first N
of a fixed `--seed` permutation of that split's training frames, so the sets are nested.

Written: ``<out>/<mode>-n<N>/`` (the `zoo.finetune` folders), ``<out>/learning_curves.json``
(Born MAE and the MAE of its symmetric and antisymmetric parts per run, the untrained
starting point of each mode, steps, seconds) and the plot `--plot`. Finished runs are read
back from their ``metrics.json``, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np

import zoo
from zoo.data.field import load_field, read_split
from zoo.finetune import finetune
from zoo.model import ResponseModel
from zoo.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SPLIT = ROOT / "zoo" / "weights" / "batio3-field" / "split.json"
BASE = "batio3-response"
#: the learning rate of each mode: the zoo's fine-tuning default, the recipe's from-scratch one
LEARNING_RATE = {"finetune": 2e-3, "scratch": 5e-3}


def labelled_atoms(records: list[dict]) -> list:
    """``ase.Atoms`` carrying the Born charges `(n, 3, 3)` (field first) as `zoo.finetune`
    labels."""
    out = []
    for r in records:
        atoms = r["structure"].to_ase()
        atoms.arrays["born_charges"] = r["born_charges"].reshape(len(atoms), 9)
        out.append(atoms)
    return out


def split_errors(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Born MAE `(n, 3, 3)` in e, of the whole tensor and of its symmetric and antisymmetric
    parts."""
    diff = pred - true
    sym, anti = (diff + diff.swapaxes(1, 2)) / 2, (diff - diff.swapaxes(1, 2)) / 2
    return {
        "mae": float(np.abs(diff).mean()),
        "mae_symmetric": float(np.abs(sym).mean()),
        "mae_antisymmetric": float(np.abs(anti).mean()),
    }


def score(model, val_atoms: list, val_true: np.ndarray) -> dict[str, float]:
    pred = np.asarray(model.predict(val_atoms, batch_size=1, progress=False)["born_charges"])
    return split_errors(pred, val_true)


def run_one(mode, n, args, base, train_atoms, val_atoms, val_true) -> dict:
    """One fine-tuning (``mode="finetune"``) or from-scratch run on `n` frames, scored."""
    folder = Path(args.out) / f"{mode}-n{n}"
    done = folder / "learning_curve.json"
    if done.is_file():
        return json.loads(done.read_text())
    start = base
    if mode == "scratch":  # the same architecture and normalisation, fresh weights
        start = ResponseModel(base.config, key=jax.random.key(args.seed))
    epochs = math.ceil(args.steps / n)  # one frame per step: the same step budget for every n
    config = TrainConfig(
        seed=args.seed, max_epochs=epochs, learning_rate=LEARNING_RATE[mode], schedule="cosine",
        final_lr_factor=0.05, grad_clip=10.0, eval_every=epochs, checkpoint_every=epochs,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = finetune(
        start, train_atoms[:n] + val_atoms, out_dir=folder, train_config=config,
        heads=["born_charges"], split=list(range(n, n + len(val_atoms))), seed=args.seed,
        batch_size=1, overwrite=True,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    row = {
        "mode": mode, "n_train": n, "steps": epochs * n, "epochs": epochs,
        "learning_rate": LEARNING_RATE[mode], "seconds": round(seconds, 1),
        "validation": score(result.model, val_atoms, val_true),
    }  # fmt: skip
    done.write_text(json.dumps(row, indent=2) + "\n")
    return row


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    styles = {"finetune": ("C0", "o", f"fine-tuned {BASE}"), "scratch": ("C3", "s", "from scratch")}
    for mode, (color, marker, label) in styles.items():
        rows = sorted((r for r in results["runs"] if r["mode"] == mode), key=lambda r: r["n_train"])
        if rows:
            ax.plot([r["n_train"] for r in rows], [r["validation"]["mae"] for r in rows],
                    color=color, marker=marker, label=label)  # fmt: skip
    ax.axhline(results["untrained"]["finetune"]["mae"], color="C0", ls=":",
               label=f"{BASE}, no field frames")  # fmt: skip
    sizes = sorted({r["n_train"] for r in results["runs"]})
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes], minor=False)
    ax.set_xticks([], minor=True)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("training frames (135 atoms each)")
    ax.set_ylabel("validation Born MAE (e)")
    ax.set_title(f"BaTiO3 field frames, {results['steps']} steps per run", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 5, 10, 20])
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps per run")
    parser.add_argument("--seed", type=int, default=0, help="frame order, init and shuffling")
    parser.add_argument("--modes", nargs="+", default=["finetune", "scratch"],
                        choices=["finetune", "scratch"])  # fmt: skip
    parser.add_argument("--out", default="runs/learning_curves")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "learning_curves.png"))
    args = parser.parse_args(argv)
    if args.steps < 1 or args.seed < 0:
        parser.error("--steps must be >= 1 and --seed >= 0")
    split = read_split(SPLIT)
    by_id = {r["index"]: r for r in load_field("batio3")}
    order = np.random.default_rng(args.seed).permutation(split["train"])
    if max(args.sizes) > len(order) or min(args.sizes) < 1:
        parser.error(f"--sizes must lie in 1..{len(order)} (training frames of the split)")
    train_atoms = labelled_atoms([by_id[int(i)] for i in order[: max(args.sizes)]])
    val_records = [by_id[i] for i in split["validation"]]
    val_atoms = labelled_atoms(val_records)
    val_true = np.concatenate([r["born_charges"] for r in val_records])
    base = zoo.load(BASE)
    fresh = ResponseModel(base.config, key=jax.random.key(args.seed))
    results = {
        "base_model": BASE, "steps": args.steps, "seed": args.seed,
        "train_frames": [int(i) for i in order[: max(args.sizes)]],
        "validation_frames": split["validation"],
        "untrained": {"finetune": score(base, val_atoms, val_true),
                      "scratch": score(fresh, val_atoms, val_true)},
        "runs": [],
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for n in sorted(args.sizes):
        for mode in args.modes:
            row = run_one(mode, n, args, base, train_atoms, val_atoms, val_true)
            results["runs"].append(row)
            v = row["validation"]
            print(f"{mode:8s} N={n:2d}: Born MAE {v['mae']:.4f} e (sym {v['mae_symmetric']:.4f}, "
                  f"antisym {v['mae_antisymmetric']:.4f}), {row['seconds']:.0f} s", flush=True)  # fmt: skip
            (out / "learning_curves.json").write_text(json.dumps(results, indent=2) + "\n")
            plot(results, Path(args.plot))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
