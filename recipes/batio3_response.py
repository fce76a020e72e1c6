"""Train the BaTiO3 electric-response models (Born charges, Raman tensors) and ship the best.

    python -m recipes.batio3_response                        # both formulations, then ship
    python -m recipes.batio3_response --formulation direct   # one of them (resumable)
    python -m recipes.batio3_response --ship-only            # compare finished runs and ship
    python -m recipes.batio3_response --formulation direct --backbone mace --epochs 10 --no-ship

Data: ``data/batio3`` (copied from the e3response 400 K ensemble, see its README), fixed split
of 32 training / 8 validation structures by id in ``data/batio3/split.json`` (a numpy
``default_rng(0)`` permutation of the sorted ids). Targets are normalised on the training split only. Two formulations on the same
split: ``direct`` (per-atom tensor heads) and ``electric`` (derivatives of a latent
E(r, eps)). Each run writes ``<out>/<formulation>/`` (checkpoints, history, parity plots,
``metrics.json``). The better run on the validation split (a direct one with its dielectric
and chi(2) heads, `recipes.batio3_global`) is written with `save_pretrained` to
``zoo/weights/batio3-response`` with its card, metrics and parity plots, and the weights
registry is re-hashed. ``--born-order-experiment`` fits a Born-only derivative model with
each index order (see docs/experiments.md). ``--backbone mace|allegro`` trains the same
formulation on another architecture (:data:`BACKBONES`; same split, ``--epochs`` fixes the
budget) into ``<out>/<formulation>-<backbone>/`` for comparison; shipping considers the runs
of every backbone, and `recipes.batio3_global` extends a direct trunk of any of them with the
global heads. Allegro takes no per-node field input, so it has the direct formulation only.
The card is rendered by `recipes._batio3_card`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import zoo
from recipes._batio3_card import card_text
from recipes._batio3_compare import RESULTS as COMPARISON
from zoo._io import atomic_write_text
from zoo.data.batio3 import DATA_DIR, load_batio3, load_split
from zoo.graph import build_graph
from zoo.hub import from_pretrained
from zoo.model import ResponseModel, fit_normalization, make_config
from zoo.train import TrainConfig, fit, parity_plot, regression_metrics, weighted_loss

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "zoo" / "weights" / "batio3-response"
TARGETS = ("born_charges", "raman_tensors")
SPECIES = [56, 22, 8]

#: per formulation: backbone, training and (for the derivative model) the conventions
SETTINGS = {
    "direct": {
        "backbone": dict(channels=8, lmax=3, r_max=4.5, num_layers=3, radial_hidden=32),
        "train": dict(max_epochs=60, learning_rate=5e-3, schedule="cosine", warmup=2,
                      final_lr_factor=0.02, eval_every=2, checkpoint_every=1, grad_clip=10.0),
    },
    "electric": {
        # natural-parity features suffice (antisymmetric Z comes from the derivatives) and
        # keep the 4-level autodiff graph compilable: ~200 s compile, ~11 s per structure step
        "backbone": dict(channels=8, lmax=2, r_max=4.5, num_layers=2, radial_hidden=32,
                         parity=False),
        "train": dict(max_epochs=8, learning_rate=1e-2, schedule="cosine", warmup=0.5,
                      final_lr_factor=0.05, eval_every=1, checkpoint_every=1, grad_clip=10.0),
    },
}  # fmt: skip


#: per architecture and formulation: a backbone of a similar size to NequIP's (the direct heads
#: read 0e+1e+2e and 1o+2o+3o node features)
BACKBONES = {
    "nequip": {form: s["backbone"] for form, s in SETTINGS.items()},
    "mace": {
        "direct": dict(architecture="mace", r_max=4.5, max_ell=3, correlation=2, parity=True,
                       hidden_irreps="8x0e+8x1o+8x1e+8x2e+8x2o+8x3o", num_interactions=2,
                       radial_hidden=32),
        "electric": dict(architecture="mace", r_max=4.5, max_ell=2, correlation=2,
                         hidden_irreps="8x0e+8x1o+8x2e", num_interactions=2, radial_hidden=32),
    },
    "allegro": {
        "direct": dict(architecture="allegro", r_max=4.5, channels=8, lmax=3, num_layers=2,
                       latent_dim=32, two_body_hidden=32),
    },
}  # fmt: skip


def run_settings(
    formulation: str, backbone: str = "nequip", epochs: int | None = None, seed: int = 0
) -> dict:
    """SETTINGS of `formulation` with the backbone of `backbone` and, if given, a budget of
    `epochs`; ``name`` is the run folder."""
    if formulation not in BACKBONES[backbone]:
        raise SystemExit(f"--backbone {backbone} has no {formulation} formulation")
    s = json.loads(json.dumps(SETTINGS[formulation]))  # a deep copy
    s["backbone"] = dict(BACKBONES[backbone][formulation])
    if epochs is not None:
        s["train"].update(max_epochs=epochs, warmup=min(s["train"]["warmup"], epochs / 4))
    name = formulation if backbone == "nequip" else f"{formulation}-{backbone}"
    name += f"-seed{seed}" if seed else ""
    return {"name": name, "formulation": formulation, "architecture": backbone, "seed": seed, **s}


def make_batches(records: list[dict], r_max: float) -> list[dict]:
    """One structure per batch (all 135-atom cells share one padded shape)."""
    batches = []
    for r in records:
        g = build_graph([r["structure"]], r_max)
        n = len(r["structure"])
        batch = {"graph": g}
        for name in TARGETS:
            t = np.zeros((g.n_nodes,) + r[name].shape[1:], np.float32)
            t[:n] = r[name]
            batch[name] = jnp.asarray(t)
        batches.append(batch)
    return batches


def make_fns(model_config: dict):
    scales = {name: model_config["heads"][name]["scale"] for name in TARGETS}

    def predict_fn(model, batch):
        out = model(batch["graph"])
        mask = batch["graph"].node_mask
        return {name: (out[name], batch[name], mask) for name in TARGETS}

    def loss_fn(model, batch):
        weights = {name: 1.0 / scales[name] ** 2 for name in TARGETS}
        return weighted_loss(predict_fn(model, batch), weights)

    return loss_fn, predict_fn


def validation_metrics(model: ResponseModel, records: list[dict]) -> tuple[dict, dict]:
    """MAE (target units) and R2 on the validation records, with and without the sum rule,
    plus the sum-rule violation of the unconstrained model. Returns (metrics, predictions)."""
    structures = [r["structure"] for r in records]
    # one compiled call: the sum rule is applied afterwards (it is a per-structure mean)
    pred = model.predict(structures, batch_size=1, acoustic_sum_rule=False, progress=False)
    idx = pred["structure_index"]
    out, constrained = {}, {}
    for name in TARGETS:
        true = np.concatenate([r[name] for r in records])
        raw = pred[name]
        means = np.stack([raw[idx == g].mean(0) for g in range(len(records))])
        constrained[name] = raw - means[idx]
        sums = means * len(structures[0])
        out[name] = {
            "asr": regression_metrics(constrained[name], true),
            "no_asr": regression_metrics(raw, true),
            "asr_violation_max_abs_sum": float(np.abs(sums).max()),
            "asr_violation_mean_abs_sum": float(np.abs(sums).mean()),
        }
    return out, constrained


def train(formulation: str, out_root: Path, records, split, settings: dict | None = None) -> dict:
    settings = settings or run_settings(formulation)
    by_id = {r["id"]: r for r in records}
    train_recs = [by_id[i] for i in split["train"]]
    val_recs = [by_id[i] for i in split["validation"]]
    config = make_config(SPECIES, TARGETS, formulation=formulation,
                         backbone=settings["backbone"])  # fmt: skip
    graphs = [build_graph([r["structure"]], settings["backbone"]["r_max"]) for r in train_recs]
    n_neigh = np.mean([float(g.edge_mask.sum()) / float(g.node_mask.sum()) for g in graphs])
    config["backbone"]["avg_num_neighbors"] = float(n_neigh)
    config = fit_normalization(config, [r["structure"] for r in train_recs],
                               {k: [r[k] for r in train_recs] for k in TARGETS})  # fmt: skip
    seed = settings.get("seed", 0)
    model = ResponseModel(config, key=jax.random.key(seed))
    loss_fn, predict_fn = make_fns(config)
    r_max = settings["backbone"]["r_max"]
    out_dir = out_root / settings["name"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model_config.json").write_text(json.dumps(config, indent=2) + "\n")
    t0 = time.time()
    result = fit(
        model, loss_fn, make_batches(train_recs, r_max), make_batches(val_recs, r_max),
        TrainConfig(seed=seed, **settings["train"]), out_dir=out_dir, predict_fn=predict_fn,
        tensor_kinds={"born_charges": "rank2", "raman_tensors": "raman"},
        units={"born_charges": "e", "raman_tensors": "Å²"},
    )  # fmt: skip
    wall = time.time() - t0
    val_metrics, pred = validation_metrics(result.model, val_recs)
    history_time = sum(h.get("time_s", 0.0) for h in result.history)
    metrics = {
        "formulation": formulation,
        "validation": val_metrics,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_wall_time_s": history_time,
        "n_parameters": int(
            sum(x.size for x in jax.tree.leaves(result.model) if hasattr(x, "size"))
        ),
        "this_invocation_wall_time_s": wall,
        "settings": settings,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    result.model.save_pretrained(out_dir / "model", overwrite=True)
    for name, unit in (("born_charges", "e"), ("raman_tensors", "Å²")):
        true = np.concatenate([r[name] for r in val_recs])
        parity_plot(pred[name], true, out_dir / f"val_parity_{name}.png",
                    title=f"{formulation}: {name} (validation)", units=unit)  # fmt: skip
    return metrics


def _summary(m: dict) -> tuple[float, float]:
    v = m["validation"]
    return v["born_charges"]["asr"]["mae"], v["raman_tensors"]["asr"]["r2"]


def finished_runs(out_root: Path) -> dict[str, dict]:
    """``metrics.json`` of every finished run under `out_root` (every formulation of every
    backbone in :data:`BACKBONES`), by run folder name."""
    runs = {}
    for arch, forms in BACKBONES.items():
        for form in forms:
            name = run_settings(form, arch)["name"]
            path = out_root / name / "metrics.json"
            if path.is_file():
                runs[name] = json.loads(path.read_text())
    return runs


def ship(out_root: Path, split: dict, records: list[dict]) -> None:
    """Pick the best finished run of any backbone (lower Born MAE, then higher Raman R2) and ship it with its
    card, ``metrics.json`` (of a direct model with the global heads' metrics under
    ``global_heads``), its validation parity plots and ``split.json``."""
    runs = finished_runs(out_root)
    if not runs:
        raise SystemExit(f"no finished run in {out_root}: train first")
    best = min(runs, key=lambda f: (_summary(runs[f])[0], -_summary(runs[f])[1]))
    metrics = dict(runs[best])
    if metrics["formulation"] == "direct":  # + dielectric and chi(2) heads on its frozen trunk
        from recipes.batio3_global import run as add_global

        metrics["global_heads"] = add_global(out_root, best, records, split)
        model = from_pretrained(out_root / "global" / "model")
    else:
        model = from_pretrained(out_root / best / "model")
    others = {f: _summary(m) for f, m in runs.items() if f != best}
    extra = {"metrics.json": json.dumps(metrics, indent=2) + "\n",
             "split.json": DATA_DIR / "split.json"}  # fmt: skip
    for name in TARGETS:
        extra[f"parity_{name}.png"] = out_root / best / f"val_parity_{name}.png"
    card = card_text(metrics, split, others, **card_extras())
    model.save_pretrained(WEIGHTS, card=card, overwrite=True, extra_files=extra)
    zoo.write_registry()
    print(f"shipped {best} to {WEIGHTS}")


def card_extras() -> dict:
    """The card's optional sections from their committed results: the fine-tuning learning
    curves (`recipes.learning_curves`) and the backbone comparison (`recipes._batio3_compare`)."""
    files = {"learning": ROOT / "docs" / "learning_curves.json", "backbones": COMPARISON}
    return {k: json.loads(f.read_text()) if f.is_file() else None for k, f in files.items()}


def render_card(out_root: Path) -> None:
    """Rewrite the shipped card from its own ``metrics.json`` and ``split.json``, the finished
    runs of the other formulations in `out_root` and :func:`card_extras`; the weights and
    config are left as they are."""
    metrics = json.loads((WEIGHTS / "metrics.json").read_text())
    split = json.loads((WEIGHTS / "split.json").read_text())
    others = {f: _summary(m) for f, m in finished_runs(out_root).items()
              if m["formulation"] != metrics["formulation"]}  # fmt: skip
    atomic_write_text(WEIGHTS / "README.md", card_text(metrics, split, others, **card_extras()))
    zoo.write_registry()
    print(f"rewrote {WEIGHTS / 'README.md'}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--formulation", choices=[*SETTINGS, "both"], default="both")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "batio3_response")
    p.add_argument("--ship-only", action="store_true")
    p.add_argument("--no-ship", action="store_true")
    p.add_argument("--card-only", action="store_true",
                   help="re-render the shipped card (other runs in --out, learning curves) "
                        "without touching its weights, and re-hash the registry")  # fmt: skip
    p.add_argument("--born-order-experiment", action="store_true")
    p.add_argument("--backbone", choices=sorted(BACKBONES), default="nequip")
    p.add_argument("--epochs", type=int, help="training budget in epochs (default: SETTINGS)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and shuffling seed")
    args = p.parse_args(argv)
    records = load_batio3(DATA_DIR)
    split = load_split(records)
    if args.card_only:
        render_card(args.out)
        return
    if args.born_order_experiment:
        born_order_experiment(args.out, records, split)
        return
    if not args.ship_only:
        forms = list(SETTINGS) if args.formulation == "both" else [args.formulation]
        forms = [f for f in forms if f in BACKBONES[args.backbone]]
        for form in forms:
            settings = run_settings(form, args.backbone, args.epochs, args.seed)
            m = train(form, args.out, records, split, settings)
            print(json.dumps({form: _summary(m)}), flush=True)
    if not args.no_ship:
        ship(args.out, split, records)


def born_order_experiment(out_root: Path, records, split, n_train=8, n_val=4, epochs=4) -> dict:
    """Which index of the stored Z* is the field? Fit a Born-only derivative model
    (Z = -d2E/deps dr, order 1) with each index order on a few structures; the order the data
    obey is the one whose antisymmetric (1e) part the model can fit."""
    from zoo.train import evaluate

    by_id = {r["id"]: r for r in records}
    train_recs = [by_id[i] for i in split["train"][:n_train]]
    val_recs = [by_id[i] for i in split["validation"][:n_val]]
    backbone = dict(SETTINGS["electric"]["backbone"])
    r_max = backbone["r_max"]
    results = {}
    for order in ("field_first", "displacement_first"):
        config = make_config(SPECIES, ["born_charges"], formulation="electric",
                             backbone=backbone, born_order=order)  # fmt: skip
        config["backbone"]["avg_num_neighbors"] = 28.0
        config = fit_normalization(config, [r["structure"] for r in train_recs],
                                   {"born_charges": [r["born_charges"] for r in train_recs]})  # fmt: skip
        model = ResponseModel(config, key=jax.random.key(0))
        scale = config["heads"]["born_charges"]["scale"]

        def predict_fn(m, batch):
            return {"born_charges": (m(batch["graph"])["born_charges"], batch["born_charges"],
                                     batch["graph"].node_mask)}  # fmt: skip

        def loss_fn(m, batch):
            return weighted_loss(predict_fn(m, batch), {"born_charges": 1 / scale**2})

        t0 = time.time()
        res = fit(model, loss_fn, make_batches(train_recs, r_max), None,
                  TrainConfig(max_epochs=epochs, learning_rate=1e-2, schedule="cosine"),
                  progress=False)  # fmt: skip
        m = evaluate(res.final_model, predict_fn, make_batches(val_recs, r_max),
                     tensor_kinds={"born_charges": "rank2"})["born_charges"]  # fmt: skip
        results[order] = {"mae": m["mae"], "r2": m["r2"], "irreps": m["irreps"],
                          "train_loss": [h["train_loss"] for h in res.history],
                          "wall_time_s": time.time() - t0}  # fmt: skip
        print(order, json.dumps(results[order]), flush=True)
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "born_order_experiment.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
