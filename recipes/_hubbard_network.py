"""HubbardML's tensor-square network in the Hubbard recipe (``--model network``): losses,
one training run, and restarts / ensembles over initialisations."""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from recipes._hubbard_eval import TEST, _call, batches, evaluate, report_metrics
from zoo.hubbard import TRAIN, VALIDATE, HubbardEnsemble, fit_scalers
from zoo.train import TrainConfig, fit


def loss_fn(model, batch, relative: bool = False):
    """Masked mean squared error (eV^2), or of the *relative* error (MARE is relative)."""
    err = (_call(model, batch["x"]) - batch["y"]) * batch["mask"]
    n = jnp.sum(batch["mask"])
    loss = jnp.sum((err / batch["y"] if relative else err) ** 2) / n
    return loss, {"mae": jnp.sum(jnp.abs(err)) / n}


LOSSES = {"mse": loss_fn, "relative": functools.partial(loss_fn, relative=True)}


def predict_fn(model, batch):
    return {"param": (_call(model, batch["x"]), batch["y"], batch["mask"])}


def train_one(model, ds: dict, labels: np.ndarray, args, out: Path, batch_size: int, seed: int):
    tr, va = np.flatnonzero(labels == TRAIN), np.flatnonzero(labels == VALIDATE)
    model = fit_scalers(
        model,
        tuple(a[tr] for a in ds["inputs"]) if len(ds["inputs"]) > 1 else ds["inputs"][0][tr],
        ds["y"][tr],
    )
    # --keep final: the validation rows take no part in training (no early stopping, no
    # chosen epoch) and only report; evaluate() below measures them either way
    watch = len(va) > 0 and args.keep == "best-val"
    config = TrainConfig(
        seed=seed, max_epochs=args.epochs, optimizer="adamw", learning_rate=args.lr,
        weight_decay=args.weight_decay, schedule="exponential", final_lr_factor=0.05, grad_clip=10.0,
        early_stopping_patience=args.patience if watch else None, eval_every=10,
        checkpoint_every=100,
    )  # fmt: skip
    result = fit(
        model, LOSSES[args.loss], batches(ds, tr, batch_size), batches(ds, va, 256) if watch else None,
        config, out_dir=out, predict_fn=predict_fn, units={"param": "eV"}, progress=False,
    )  # fmt: skip
    return result.model, report_metrics(result.model, ds, labels)


def train_restarts(make, ds: dict, labels: np.ndarray, args, out: Path, batch_size: int, seed: int):
    """`args.restarts` initialisations (and batch orders) on one split; keeps the one with the
    lowest *training* MSE, so a start stuck on a plateau is dropped without the validation
    rows choosing the model, or with ``args.ensemble`` the mean of them all (a
    :class:`HubbardEnsemble`). Restart 0 is the single run of ``--restarts 1``."""
    runs = []
    for r in range(args.restarts):
        key = jax.random.key(seed)
        if r:
            key = jax.random.fold_in(key, r)
        run_out = out if r == 0 else out.with_name(f"{out.name}-r{r}")
        runs.append(train_one(make(key), ds, labels, args, run_out, batch_size, seed + 1000 * r))
    mse = [m["train_model"]["all"]["rmse"] ** 2 for _, m in runs]
    best = int(np.argmin(mse))
    model, metrics = runs[best]
    restarts = {
        "chosen": best,
        "by": "training MSE",
        "train_mse": mse,
        "validation_mare": [
            m.get("validation_model", {}).get("all", {}).get("mare") for _, m in runs
        ],
    }
    if getattr(args, "ensemble", False):  # the mean of every restart is the model
        model = HubbardEnsemble([m for m, _ in runs])
        metrics = {"rows": metrics["rows"]}
        for name, label in (("train", TRAIN), ("validation", VALIDATE), ("test", TEST)):
            metrics.update(evaluate(model, ds, np.flatnonzero(labels == label), name))
        restarts |= {"chosen": "all", "by": "ensemble mean"}
    metrics["restarts"] = restarts
    return model, metrics


#: options that only the tensor-square network (``--model network``) uses
NETWORK_OPTIONS = (
    "epochs", "lr", "patience", "weight_decay", "hidden_layers", "bond_lmax", "residual",
    "squash", "keep", "batch_u", "batch_v", "loss", "restarts", "ensemble",
)  # fmt: skip
