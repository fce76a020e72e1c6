"""`fit`: optax + `eqx.filter_jit` training loop with early stopping, checkpoints and outputs."""

import dataclasses
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .._io import atomic_write_json
from ._checkpoint import (
    check_same_run,
    fill_arrays,
    jsonable,
    load_checkpoint,
    run_signature,
    save_checkpoint,
    save_weights,
)
from ._config import TrainConfig
from ._metrics import collect_predictions, metrics_from_predictions, parity_plot
from ._optim import Plateau, Trainable, make_optimizer, trainable_mask
from ._parallel import make_placement

CHECKPOINT = Path("checkpoint") / "checkpoint.safetensors"

# loss_fn(model, batch) -> (scalar loss, {name: scalar}); predict_fn(model, batch) -> {target:
# (pred (n, ...), true (n, ...), mask (n,))}
LossFn = Callable[[Any, Any], tuple[Any, Mapping[str, Any]]]
PredictFn = Callable[[Any, Any], Mapping[str, tuple[Any, Any, Any]]]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What `fit` returns.

    - `model`: the weights with the lowest validation loss (the last ones without validation).
    - `final_model`: the weights after the last epoch run (both averaged with `ema_decay`).
    - `history`: one dict per epoch (`epoch`, `step`, `lr`, `train_loss`, `train_<aux>`,
      `n_skipped`, `time_s`, and on evaluated epochs `val_loss`, `val_<aux>`).
    - `best_epoch`, `best_val_loss` (None without validation batches).
    - `metrics`: `{"validation": {target: ...}, "train": {target: ...}, ...}` if `predict_fn`.
    - `n_skipped`: steps skipped for a non-finite loss or gradient.
    - `out_dir`: where the files went, or None.
    """

    model: Any
    final_model: Any
    history: list[dict]
    best_epoch: int
    best_val_loss: float | None
    metrics: dict | None
    n_skipped: int
    out_dir: Path | None


@dataclasses.dataclass
class _Run:
    """Host-side loop state; JSON round-trips through the checkpoint."""

    epoch: int = 0
    step: int = 0
    best_val: float = math.inf
    best_epoch: int = 0
    bad_evals: int = 0
    n_skipped: int = 0
    finished: bool = False
    history: list = dataclasses.field(default_factory=list)
    plateau: Plateau = dataclasses.field(default_factory=Plateau)

    @classmethod
    def from_state(cls, state: dict) -> "_Run":
        state = dict(state)
        plateau = dict(state.pop("plateau"))
        plateau["best"] = math.inf if plateau["best"] is None else plateau["best"]
        best = state.pop("best_val")
        return cls(**state, best_val=math.inf if best is None else best, plateau=Plateau(**plateau))


def _check_batches(batches: Any, name: str) -> None:
    if isinstance(batches, Iterator) or not hasattr(batches, "__getitem__"):
        raise ValueError(
            f"{name} must be a sequence of batches (len() and indexing, e.g. a list), not "
            f"{type(batches).__name__}: it is traversed once per epoch in a shuffled order"
        )


def _all_finite(tree: Any) -> jax.Array:
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def _make_fns(loss_fn: LossFn, optimizer: Any) -> tuple[Callable, Callable]:
    def loss_of(params: Any, static: Any, batch: Any) -> tuple[jax.Array, dict]:
        out = loss_fn(eqx.combine(params, static), batch)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
            raise ValueError("loss_fn must return (scalar loss, aux dict of scalars)")
        loss, aux = out
        if jnp.shape(loss) != () or any(jnp.shape(v) != () for v in aux.values()):
            raise ValueError("loss_fn must return a scalar loss and an aux dict of scalars")
        return loss, dict(aux)

    @eqx.filter_jit
    def step(params, static, opt_state, batch, lr_scale):
        grad_fn = eqx.filter_value_and_grad(loss_of, has_aux=True)
        (loss, aux), grads = grad_fn(params, static, batch)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: u * lr_scale.astype(u.dtype), updates)
        new_params = eqx.apply_updates(params, updates)

        def keep(new: Any, old: Any) -> Any:  # a non-finite step changes nothing
            return jnp.where(finite, new, old) if eqx.is_array(new) else new

        params = jax.tree.map(keep, new_params, params)
        opt_state = jax.tree.map(keep, new_opt_state, opt_state)
        return params, opt_state, loss, aux, finite

    return step, eqx.filter_jit(loss_of)


@eqx.filter_jit
def _ema_update(ema: Any, params: Any, decay: float) -> Any:
    return jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)


def _mean_records(records: list[dict], prefix: str) -> dict[str, float]:
    keys = records[0].keys() if records else ()
    return {f"{prefix}{k}": float(np.mean([r[k] for r in records])) for k in keys}


def fit(
    model: Any,
    loss_fn: LossFn,
    train_batches: Sequence,
    val_batches: Sequence | None,
    config: TrainConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    predict_fn: PredictFn | None = None,
    trainable: Trainable = None,
    tensor_kinds: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
    resume: bool = True,
) -> FitResult:
    """Train `model` on `train_batches`, keeping the weights with the lowest validation loss.

    **Arguments:**

    - `model`: an `eqx.Module`; its `eqx.is_inexact_array` leaves selected by `trainable` train.
    - `loss_fn`: `loss_fn(model, batch) -> (scalar loss, {name: scalar})`, jit-able.
    - `train_batches`, `val_batches`: sequences of batches (pytrees of numpy/jax arrays, padded to
      fixed shapes so the step compiles once per shape). The order of the training batches is
      shuffled each epoch from `config.seed`; the validation loss is the mean over batches.
    - `config`: a `TrainConfig`.
    - `out_dir`: if given, a resumable checkpoint (`checkpoint/checkpoint.safetensors`), the best
      weights (`best_model.safetensors`), `train_config.json`, `history.json`, and with a
      `predict_fn` `metrics.json` and `parity_<target>.png` are written there.
    - `predict_fn`: `predict_fn(model, batch) -> {target: (pred, true, mask)}` for the metrics.
    - `trainable`: which leaves train (see `trainable_mask`); the others are frozen.
    - `tensor_kinds`: `{target: zoo.irreps kind}` adds metrics per irreps component.
    - `units`: `{target: unit}` for the parity-plot axes.
    - `progress`: show a tqdm progress bar.
    - `devices`: train data-parallel on these devices (see `Placement`); None: default device.
    - `resume`: continue from the checkpoint in `out_dir` (the end of the last checkpointed
      epoch) if it was written by the same run (same config, number and layout of batches and
      trainable leaves; otherwise ValueError). A finished run is not trained again. With
      `resume=False` an existing checkpoint is an error: a run is never silently overwritten.

    **Returns:** a `FitResult`. Non-finite steps follow `config.nonfinite`. The same seed, data and
    machine give bit-identical weights, also across a kill and resume.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not callable(loss_fn) or (predict_fn is not None and not callable(predict_fn)):
        raise ValueError("loss_fn (and predict_fn, if given) must be callable")
    val_batches = [] if val_batches is None else val_batches
    _check_batches(train_batches, "train_batches")
    _check_batches(val_batches, "val_batches")
    if len(train_batches) == 0:
        raise ValueError("train_batches is empty")
    if tensor_kinds and predict_fn is None:
        raise ValueError("tensor_kinds is only used for metrics: it needs predict_fn")

    mask = trainable_mask(model, trainable)
    params, static = eqx.partition(model, mask)
    n_train = len(train_batches)
    optimizer, schedule = make_optimizer(config, n_train)
    opt_state = optimizer.init(params)
    key = jax.random.key(config.seed)
    run, best_params = _Run(), params
    use_ema = config.ema_decay is not None
    ema_params = params if use_ema else None
    signature = run_signature(config, train_batches, val_batches, mask)
    out = None if out_dir is None else Path(out_dir)
    ckpt = None if out is None else out / CHECKPOINT
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if ckpt is not None and ckpt.exists():
        if not resume:
            raise ValueError(f"{ckpt} exists and resume=False; use another out_dir or delete it")
        arrays, state = load_checkpoint(ckpt)
        check_same_run(state["signature"], signature, ckpt)
        what = f"checkpoint {ckpt}"
        params, static = eqx.partition(fill_arrays(model, arrays, "model", what), mask)
        best_params = eqx.filter(fill_arrays(model, arrays, "best", what), mask)
        opt_state = fill_arrays(opt_state, arrays, "opt", what)
        if use_ema:
            ema_params = eqx.filter(fill_arrays(model, arrays, "ema", what), mask)
        key = jax.random.wrap_key_data(jnp.asarray(arrays["rng"]))
        run = _Run.from_state(state["run"])

    placement = make_placement(devices)
    place_batch = (lambda b: b) if placement is None else placement.batch
    if placement is not None:
        params, static, opt_state, best_params, ema_params = placement.replicate(
            (params, static, opt_state, best_params, ema_params)
        )
    step_fn, eval_fn = _make_fns(loss_fn, optimizer)

    bar = tqdm(
        total=config.max_epochs * n_train, initial=run.step, disable=not progress, unit="step"
    )
    try:
        while not run.finished:
            t0 = time.perf_counter()
            key, sub = jax.random.split(key)
            order = np.arange(n_train)
            if config.shuffle:
                order = np.asarray(jax.random.permutation(sub, n_train))
            lr_scale = jnp.asarray(run.plateau.scale, jnp.float32)
            losses, auxes, skipped = [], [], 0
            for i in order:
                batch = place_batch(train_batches[int(i)])
                params, opt_state, loss, aux, ok = step_fn(
                    params, static, opt_state, batch, lr_scale
                )
                loss, aux, ok = jax.device_get((loss, aux, ok))
                run.step += 1
                bar.update(1)
                if not ok:
                    skipped += 1
                    if config.nonfinite == "raise":
                        raise FloatingPointError(
                            f"non-finite loss or gradient at epoch {run.epoch + 1}, training "
                            f"batch {int(i)} (loss={float(loss)}); nonfinite='skip' skips them"
                        )
                    continue
                if use_ema:
                    ema_params = _ema_update(ema_params, params, config.ema_decay)
                losses.append(float(loss))
                auxes.append(aux)
                bar.set_postfix(epoch=run.epoch + 1, loss=f"{float(loss):.4g}", refresh=False)
            run.epoch += 1
            run.n_skipped += skipped
            if not losses:
                raise FloatingPointError(
                    f"every training step of epoch {run.epoch} had a non-finite loss or gradient;"
                    " lower the learning rate, set grad_clip, or check the data"
                )
            applied = run.step - run.n_skipped  # the optimiser's own step count
            record = {
                "epoch": run.epoch,
                "step": run.step,
                "lr": float(schedule(applied)) * run.plateau.scale,
                "train_loss": float(np.mean(losses)),
                **_mean_records(auxes, "train_"),
                "n_skipped": skipped,
            }
            last = run.epoch >= config.max_epochs
            stop = False
            judged = ema_params if use_ema else params  # the weights validation and `best` see
            if not val_batches:
                best_params, run.best_epoch = judged, run.epoch
            elif run.epoch % config.eval_every == 0 or last:
                vals = [eval_fn(judged, static, place_batch(b)) for b in val_batches]
                vals = jax.device_get(vals)
                val_loss = float(np.mean([v[0] for v in vals]))
                record["val_loss"] = val_loss
                record.update(_mean_records([v[1] for v in vals], "val_"))
                run.plateau.update(val_loss, config)
                if val_loss < run.best_val:
                    run.best_val, run.best_epoch, best_params = val_loss, run.epoch, judged
                    run.bad_evals = 0
                else:
                    run.bad_evals += 1
                    patience = config.early_stopping_patience
                    stop = patience is not None and run.bad_evals >= patience
                bar.set_postfix(epoch=run.epoch, val=f"{val_loss:.4g}", refresh=False)
            record["time_s"] = time.perf_counter() - t0
            run.history.append(record)
            run.finished = last or stop
            if ckpt is not None and (run.epoch % config.checkpoint_every == 0 or run.finished):
                state = {"signature": signature, "run": dataclasses.asdict(run)}
                best_model = eqx.combine(best_params, static)
                save_checkpoint(
                    ckpt,
                    model=eqx.combine(params, static),
                    best=best_model,
                    opt_state=opt_state,
                    key=key,
                    state=state,
                    ema=None if ema_params is None else eqx.combine(ema_params, static),
                )
                atomic_write_json(out / "history.json", jsonable(run.history))
    finally:
        bar.close()

    best = eqx.combine(best_params, static)
    metrics = None
    if predict_fn is not None:
        metrics = _final_metrics(
            best, predict_fn, train_batches, val_batches, tensor_kinds, units, out, place_batch
        )
        metrics = {"best_epoch": run.best_epoch, "best_val_loss": run.best_val, **metrics}
    if out is not None:
        save_weights(best, out / "best_model.safetensors")
        atomic_write_json(out / "train_config.json", jsonable(config.to_dict()))
        atomic_write_json(out / "history.json", jsonable(run.history))
        if metrics is not None:
            atomic_write_json(out / "metrics.json", jsonable(metrics))
    return FitResult(
        model=best,
        final_model=eqx.combine(ema_params if use_ema else params, static),
        history=run.history,
        best_epoch=run.best_epoch,
        best_val_loss=run.best_val if val_batches else None,
        metrics=jsonable(metrics),
        n_skipped=run.n_skipped,
        out_dir=out,
    )


def _final_metrics(
    model: Any,
    predict_fn: PredictFn,
    train_batches: Sequence,
    val_batches: Sequence,
    tensor_kinds: Mapping[str, str] | None,
    units: Mapping[str, str] | None,
    out: Path | None,
    place_batch: Callable,
) -> dict:
    """Metrics on both splits; parity plots of the validation split (train if there is none)."""
    result = {}
    plotted = None
    for split, batches in (("validation", val_batches), ("train", train_batches)):
        if not batches:
            continue
        preds = collect_predictions(model, predict_fn, batches, place_batch)
        result[split] = metrics_from_predictions(preds, tensor_kinds)
        if out is not None and plotted is None:
            plotted = split
            for name, (pred, true, mask) in preds.items():
                safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
                parity_plot(
                    pred,
                    true,
                    out / f"parity_{safe}.png",
                    f"{name} ({split})",
                    (units or {}).get(name, ""),
                    mask=mask,
                )
    result["parity_split"] = plotted
    return result
