"""`TrainConfig`: every knob of `fit`, frozen, validated and JSON-safe (`dataclasses.asdict`)."""

import dataclasses
import math
from typing import Any

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "exponential", "plateau")
NONFINITE = ("skip", "raise")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (stored as `train_config.json` beside the weights).

    **Attributes:**

    - `seed`: seeds the shuffling of the batch order (the model's own init key is the caller's).
    - `max_epochs`: number of passes over the training batches.
    - `optimizer`: `"adam"` or `"adamw"` (decoupled weight decay; `weight_decay` needs `"adamw"`).
    - `learning_rate`: peak learning rate.
    - `weight_decay`: AdamW decay coefficient (0 for `"adam"`).
    - `schedule`: `"constant"`; `"cosine"` (to `learning_rate * final_lr_factor` at the last step);
      `"exponential"` (same end point, geometric in between); `"plateau"` (multiply the rate by
      `plateau_factor` after `plateau_patience` evaluations without a lower validation loss, never
      below `learning_rate * final_lr_factor`).
    - `warmup`: epochs (may be fractional) of linear warm-up from 0 before the schedule.
    - `final_lr_factor`: end (cosine, exponential) or floor (plateau) of the rate, as a fraction.
    - `plateau_patience`, `plateau_factor`: see `schedule="plateau"`.
    - `grad_clip`: clip the global gradient norm to this value (`None`: no clipping).
    - `early_stopping_patience`: stop after this many evaluations without a lower validation loss
      (`None`: never stop early).
    - `eval_every`: evaluate on the validation batches every this many epochs (and at the last).
    - `checkpoint_every`: write the resumable checkpoint every this many epochs (and at the end).
    - `shuffle`: shuffle the order of the training batches each epoch.
    - `nonfinite`: what a step with a NaN/Inf loss or gradient does. `"skip"` leaves parameters and
      optimiser state untouched and counts the step (`n_skipped` in the history); if every step
      of an epoch is skipped, `fit` raises `FloatingPointError`. `"raise"` raises at the first one.
    - `ema_decay`: keep an exponential moving average of the trainable weights,
      `ema <- ema_decay * ema + (1 - ema_decay) * weights` after every applied step (`None`: off).
      Validation, the best model and the returned models then use the averaged weights (the raw
      ones keep training); 0.99-0.999 averages over ~100-1000 steps and smooths the epoch-to-epoch
      noise of the validation loss.
    """

    seed: int = 0
    max_epochs: int = 100
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: float = 0.0
    final_lr_factor: float = 0.01
    plateau_patience: int = 5
    plateau_factor: float = 0.5
    grad_clip: float | None = None
    early_stopping_patience: int | None = None
    eval_every: int = 1
    checkpoint_every: int = 1
    shuffle: bool = True
    nonfinite: str = "skip"
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        def bad(field: str, want: str) -> ValueError:
            return ValueError(f"TrainConfig.{field} must be {want}, got {getattr(self, field)!r}")

        if not _is_int(self.seed) or self.seed < 0:
            raise bad("seed", "an int >= 0")
        for field in ("max_epochs", "plateau_patience", "eval_every", "checkpoint_every"):
            if not _is_int(getattr(self, field)) or getattr(self, field) < 1:
                raise bad(field, "an int >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"one of {SCHEDULES}")
        if self.nonfinite not in NONFINITE:
            raise bad("nonfinite", f"one of {NONFINITE}")
        if not _is_real(self.learning_rate) or self.learning_rate <= 0:
            raise bad("learning_rate", "a finite number > 0")
        if not _is_real(self.weight_decay) or self.weight_decay < 0:
            raise bad("weight_decay", "a finite number >= 0")
        if self.weight_decay > 0 and self.optimizer != "adamw":
            raise bad("weight_decay", "0 unless optimizer='adamw' (Adam has no decoupled decay)")
        if not _is_real(self.warmup) or not 0 <= self.warmup < self.max_epochs:
            raise bad("warmup", f"a number of epochs in [0, max_epochs={self.max_epochs})")
        if not _is_real(self.final_lr_factor) or not 0 <= self.final_lr_factor <= 1:
            raise bad("final_lr_factor", "a number in [0, 1]")
        if self.schedule == "exponential" and self.final_lr_factor == 0:
            raise bad("final_lr_factor", "> 0 for schedule='exponential'")
        if not _is_real(self.plateau_factor) or not 0 < self.plateau_factor < 1:
            raise bad("plateau_factor", "a number in (0, 1)")
        if self.grad_clip is not None and (not _is_real(self.grad_clip) or self.grad_clip <= 0):
            raise bad("grad_clip", "None or a finite number > 0")
        patience = self.early_stopping_patience
        if patience is not None and (not _is_int(patience) or patience < 1):
            raise bad("early_stopping_patience", "None or an int >= 1")
        ema = self.ema_decay
        if ema is not None and (not _is_real(ema) or not 0 < ema < 1):
            raise bad("ema_decay", "None or a number in (0, 1)")
        if not isinstance(self.shuffle, bool):
            raise bad("shuffle", "a bool")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; unknown keys are an error (a typo must not be ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"TrainConfig got unknown fields {unknown}; known: {sorted(names)}")
        return cls(**data)
