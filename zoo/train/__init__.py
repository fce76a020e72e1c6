"""Generic training for any Equinox model: optax + `eqx.filter_jit`, checkpoints, metrics, plots.

Contract: a model is an `eqx.Module`; data are sequences of batches (pytrees of fixed-shape
arrays, padding masked inside); the caller gives `loss_fn(model, batch) -> (loss, aux)` and
optionally `predict_fn(model, batch) -> {target: (pred, true, mask)}`.
"""

from ._checkpoint import load_weights as load_weights
from ._checkpoint import save_weights as save_weights
from ._config import TrainConfig as TrainConfig
from ._fit import FitResult as FitResult
from ._fit import fit as fit
from ._loss import weighted_loss as weighted_loss
from ._metrics import collect_predictions as collect_predictions
from ._metrics import evaluate as evaluate
from ._metrics import irreps_metrics as irreps_metrics
from ._metrics import metrics_from_predictions as metrics_from_predictions
from ._metrics import parity_plot as parity_plot
from ._metrics import regression_metrics as regression_metrics
from ._optim import trainable_mask as trainable_mask
from ._parallel import Placement as Placement
