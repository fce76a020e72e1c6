"""Which leaves train, the optax optimiser with its schedule, and the plateau rule."""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import optax

from ._config import TrainConfig

# `trainable` is None (every inexact array), a pytree of bools shaped like (a prefix of) the model,
# or a callable taking a leaf's key path string (`jax.tree_util.keystr`, e.g. ".head.weight").
Trainable = Any


def trainable_mask(model: eqx.Module, trainable: Trainable = None) -> Any:
    """Pytree of bools shaped like `model`: True for the leaves the optimiser updates.

    A leaf trains when it is an inexact (floating or complex) array and `trainable` selects it.

    **Arguments:**

    - `model`: any `eqx.Module`.
    - `trainable`: `None` (all inexact arrays); a callable `path -> bool` on the key path string of
      each leaf (`jax.tree_util.keystr`, such as `".layers[0].weight"`), to freeze a trunk with
      `lambda path: path.startswith(".head")`; or a pytree of bools matching the model or a prefix
      of it (as `eqx.partition` filter specs), such as `eqx.tree_at(...)` on an all-True tree.

    **Returns:** the mask; raises ValueError if it selects no array at all.
    """
    inexact = jax.tree.map(eqx.is_inexact_array, model)
    if trainable is None:
        user = jax.tree.map(lambda _: True, model)
    elif callable(trainable) and not isinstance(trainable, eqx.Module):
        user = jax.tree_util.tree_map_with_path(
            lambda path, _: bool(trainable(jax.tree_util.keystr(path))), model
        )
    else:

        def broadcast(spec: Any, sub: Any) -> Any:
            if not isinstance(spec, bool):
                raise ValueError(
                    f"trainable must be None, a callable on key paths or a pytree of bools; "
                    f"found a leaf of type {type(spec).__name__}"
                )
            return jax.tree.map(lambda _: spec, sub)

        try:
            user = jax.tree.map(broadcast, trainable, model)
        except (TypeError, KeyError) as err:  # structure mismatch: say so in one line
            raise ValueError(f"trainable does not match the model's structure: {err}") from None
    mask = jax.tree.map(lambda a, b: a and b, inexact, user)
    if not any(jax.tree.leaves(mask)):
        raise ValueError("trainable selects no floating-point array of the model: nothing to train")
    return mask


def make_optimizer(
    config: TrainConfig, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, Callable[[int], Any]]:
    """Return the optax chain (clip, then Adam/AdamW on the schedule) and the schedule itself.

    The `"plateau"` schedule is constant here; `fit` scales the updates by the plateau factor.
    """
    total = config.max_epochs * steps_per_epoch
    warm = round(config.warmup * steps_per_epoch)
    rest = max(total - warm, 1)
    lr = config.learning_rate
    if config.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, rest, alpha=config.final_lr_factor)
    elif config.schedule == "exponential":
        main = optax.exponential_decay(lr, rest, config.final_lr_factor)
    else:
        main = optax.constant_schedule(lr)
    if warm > 0:
        schedule = optax.join_schedules([optax.linear_schedule(0.0, lr, warm), main], [warm])
    else:
        schedule = main
    parts = [] if config.grad_clip is None else [optax.clip_by_global_norm(config.grad_clip)]
    if config.optimizer == "adamw":
        parts.append(optax.adamw(schedule, weight_decay=config.weight_decay))
    else:
        parts.append(optax.adam(schedule))
    return optax.chain(*parts), schedule


@dataclasses.dataclass
class Plateau:
    """Host-side state of the reduce-on-plateau rule (JSON-safe, stored in checkpoints)."""

    scale: float = 1.0
    best: float = math.inf
    bad: int = 0

    def update(self, val_loss: float, config: TrainConfig) -> None:
        """Record one validation loss; shrink `scale` after `plateau_patience` bad evaluations."""
        if config.schedule != "plateau":
            return
        if val_loss < self.best:
            self.best, self.bad = val_loss, 0
            return
        self.bad += 1
        if self.bad >= config.plateau_patience:
            self.scale = max(self.scale * config.plateau_factor, config.final_lr_factor)
            self.bad = 0
