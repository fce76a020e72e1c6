"""Stage 2 of the BaTiO3 recipe: dielectric and chi(2) heads on the frozen per-atom model.

    python -m recipes.batio3_global [--out runs/batio3_response] [--base direct-mace]

The 32 training structures give 32 dielectric tensors and 32 chi(2) tensors: far too few to
train a backbone, enough for the linear global heads (`zoo.heads.GlobalTensorHead`) on the
mean-pooled features of the trained per-atom model, whose trunk stays frozen. Pooled features
are computed once; each head (normalised on the training split) is fit by full-batch Adam.
Writes ``<out>/global/`` (``model/`` = the per-atom run + the two heads, ``metrics.json`` with
validation MAE/RMSE/R2 and the training-mean baseline). `recipes.batio3_response` runs it
before shipping a direct model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from zoo.data.batio3 import DATA_DIR, load_batio3, load_split, physical
from zoo.graph import build_graph
from zoo.heads import GlobalTensorHead
from zoo.heads.global_tensor import mean_pool
from zoo.hub import from_pretrained
from zoo.model import ResponseModel, fit_normalization, head_entries
from zoo.train import regression_metrics

ROOT = Path(__file__).resolve().parents[1]
GLOBAL = ("dielectric", "chi2")
STEPS, LEARNING_RATE, SEED = 3000, 1e-2, 0


@eqx.filter_jit
def _pooled(model: ResponseModel, graph) -> e3nn.IrrepsArray:
    return mean_pool(model.backbone(graph), graph)


def pooled_features(model: ResponseModel, structures) -> e3nn.IrrepsArray:
    """Mean-pooled node features of any backbone `(n_structures, irreps)` (one compiled shape:
    135 atoms)."""
    r_max = model.config["backbone"]["r_max"]
    pooled = [_pooled(model, build_graph([s], r_max)) for s in structures]
    rows = np.stack([np.asarray(x.array[0]) for x in pooled])
    return e3nn.IrrepsArray(pooled[0].irreps, jnp.asarray(rows))


def fit_head(head: GlobalTensorHead, x: e3nn.IrrepsArray, y: np.ndarray) -> GlobalTensorHead:
    """Full-batch Adam on the mean squared error in units of the head's scale."""
    opt = optax.adam(optax.cosine_decay_schedule(LEARNING_RATE, STEPS, alpha=0.01))
    y = jnp.asarray(y, x.dtype)

    def loss(h):
        return jnp.mean((h.readout(x) - y) ** 2) / h.scale**2

    @eqx.filter_jit
    def step(h, state):
        value, grads = eqx.filter_value_and_grad(loss)(h)
        updates, state = opt.update(grads, state, h)
        return eqx.apply_updates(h, updates), state, value

    state = opt.init(eqx.filter(head, eqx.is_array))
    for _ in range(STEPS):
        head, state, _ = step(head, state)
    return head


def add_global_heads(model: ResponseModel, train_recs, val_recs) -> tuple[ResponseModel, dict]:
    """`model` plus trained dielectric and chi(2) heads, and their validation metrics."""
    if model.config["formulation"] != "direct":
        raise ValueError("global heads on a frozen trunk need a direct-formulation model")
    structures = [r["structure"] for r in train_recs]
    norm = fit_normalization(
        {**model.config, "heads": head_entries(GLOBAL)},
        structures, {n: [r[n] for r in train_recs] for n in GLOBAL},
    )["heads"]  # fmt: skip
    x_train = pooled_features(model, structures)
    x_val = pooled_features(model, [r["structure"] for r in val_recs])
    keys = jax.random.split(jax.random.key(SEED), len(GLOBAL))
    heads, metrics = dict(model.heads), {}
    for key, name in zip(keys, GLOBAL):
        h = norm[name]
        head = GlobalTensorHead(x_train.irreps, h["kind"], h["scale"], h["shift"],
                                dtype=model.dtype, key=key)  # fmt: skip
        heads[name] = fit_head(head, x_train, np.stack([r[name] for r in train_recs]))
        true = np.stack([r[name] for r in val_recs])
        mean = np.mean([r[name] for r in train_recs], axis=0)
        metrics[name] = {
            "model": regression_metrics(np.asarray(heads[name].readout(x_val)), true),
            "training_mean_baseline": regression_metrics(np.broadcast_to(mean, true.shape), true),
        }
    config = {**model.config, "heads": {**model.config["heads"], **norm}}
    grown = ResponseModel(config, key=jax.random.key(SEED))
    grown = eqx.tree_at(lambda m: (m.backbone, m.heads), grown, (model.backbone, heads))
    return grown, metrics


def run(out_root: Path, base: str, records, split) -> dict:
    """Global heads on the direct run ``<out_root>/<base>`` (any backbone: ``direct``,
    ``direct-mace``, ...), written to ``<out_root>/global``; their metrics."""
    by_id = {r["id"]: r for r in records}
    train_recs = [by_id[i] for i in split["train"] if physical(by_id[i])]
    val_recs = [by_id[i] for i in split["validation"] if physical(by_id[i])]
    excluded = sorted(r["id"] for r in records if not physical(r))
    model = from_pretrained(out_root / base / "model")
    grown, metrics = add_global_heads(model, train_recs, val_recs)
    # the full model reproduces the cached-feature predictions (same heads, same trunk)
    pred = grown.predict([r["structure"] for r in val_recs], batch_size=1, progress=False)
    for name in GLOBAL:
        true = np.stack([r[name] for r in val_recs])
        metrics[name]["model_full_predict"] = regression_metrics(pred[name], true)
    out = out_root / "global"
    grown.save_pretrained(out / "model", overwrite=True)
    metrics = {
        "base": base, "steps": STEPS, "learning_rate": LEARNING_RATE,
        "n_train": len(train_recs), "n_validation": len(val_recs),
        "excluded_unphysical_dielectric": excluded, **metrics,
    }  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    for name in GLOBAL:
        m, b = metrics[name]["model_full_predict"], metrics[name]["training_mean_baseline"]
        print(f"{name}: validation MAE {m['mae']:.4g} (R2 {m['r2']:.3f}); "
              f"training-mean baseline MAE {b['mae']:.4g}", flush=True)  # fmt: skip
    return metrics


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "batio3_response")
    p.add_argument("--base", default="direct", help="the direct run folder under --out")
    args = p.parse_args(argv)
    records = load_batio3(DATA_DIR)
    run(args.out, args.base, records, load_split(records))


if __name__ == "__main__":
    main()
