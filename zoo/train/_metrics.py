"""Regression metrics (numpy), per-irreps-component metrics, evaluation loops and parity plots.

Predictions follow the `predict_fn` contract: `{target: (pred, true, mask)}` with `pred` and
`true` of shape `(n, *tensor_shape)` and `mask` of shape `(n,)` (zero rows are padding).
"""

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

Predictions = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


def _rows(pred: Any, true: Any, mask: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes; return the masked rows of `pred` and `true` as float64 `(m, k)` arrays."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim == 0:
        raise ValueError(
            f"pred and true must share a shape (n, ...), got {pred.shape}, {true.shape}"
        )
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != pred.shape[:1]:
            raise ValueError(f"mask must have shape {pred.shape[:1]}, got {mask.shape}")
        keep = mask.astype(bool)
        pred, true = pred[keep], true[keep]
    return pred.reshape(len(pred), -1), true.reshape(len(true), -1)


def regression_metrics(pred: Any, true: Any, mask: Any = None) -> dict[str, float]:
    """MAE, RMSE and R2 over every component of the masked rows.

    **Arguments:**

    - `pred`, `true`: arrays of shape `(n, *tensor_shape)`.
    - `mask`: optional `(n,)`; rows where it is zero (padding) are ignored.

    **Returns:** `{"mae", "rmse", "r2", "n"}`. R2 is `1 - SS_res / SS_tot` over all components
    flattened, about the mean of all true components (as `sklearn.metrics.r2_score` on flattened
    arrays); `n` counts rows. With no rows the errors are NaN; with constant `true`, R2 is NaN.
    """
    p, t = _rows(pred, true, mask)
    if p.size == 0:
        return {"mae": float("nan"), "rmse": float("nan"), "r2": float("nan"), "n": len(p)}
    err = p - t
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    ss_res = float(np.sum(err**2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": r2,
        "n": len(p),
    }


def _irreps_module() -> Any | None:
    try:
        return importlib.import_module("zoo.irreps")
    except ImportError:
        return None


def irreps_metrics(kind: str, pred: Any, true: Any, mask: Any = None) -> dict[str, dict] | None:
    """`regression_metrics` of each irreps block of a tensor kind known to `zoo.irreps`.

    Keys are the blocks as written in `zoo.irreps.irreps_of(kind)` (`"1x0e"`, `"2x1o"`, ...; a
    repeated block gets `#2`). Returns None when `zoo.irreps` is not importable.
    """
    irreps_mod = _irreps_module()
    if irreps_mod is None:
        return None
    p, t = _rows(pred, true, mask)
    shape = np.shape(pred)[1:]
    # jnp input: to_irreps projects onto the kind's symmetric subspace without refusing
    p_ir = np.asarray(irreps_mod.to_irreps(kind, jnp.asarray(p.reshape(-1, *shape))).array)
    t_ir = np.asarray(irreps_mod.to_irreps(kind, jnp.asarray(t.reshape(-1, *shape))).array)
    irreps = irreps_mod.irreps_of(kind)
    out: dict[str, dict] = {}
    for mul_ir, sl in zip(irreps, irreps.slices(), strict=True):
        label, i = str(mul_ir), 2
        while label in out:
            label, i = f"{mul_ir}#{i}", i + 1
        out[label] = regression_metrics(p_ir[:, sl], t_ir[:, sl])
    return out


def collect_predictions(
    model: Any, predict_fn: Callable, batches: Sequence, place: Callable | None = None
) -> Predictions:
    """Run a jitted `predict_fn(model, batch)` on every batch; concatenate per target (numpy).

    `place` optionally moves each batch to devices first (as `fit` does for data parallelism).
    """
    jitted = eqx.filter_jit(predict_fn)
    parts: dict[str, list] = {}
    for i in range(len(batches)):
        batch = batches[i] if place is None else place(batches[i])
        out = jax.device_get(jitted(model, batch))
        if not isinstance(out, Mapping):
            raise ValueError(f"predict_fn must return a dict, got {type(out).__name__}")
        for name, triple in out.items():
            if not (isinstance(triple, tuple | list) and len(triple) == 3):
                raise ValueError(f"predict_fn output {name!r} must be a (pred, true, mask) tuple")
            pred, true, mask = (np.asarray(x) if x is not None else None for x in triple)
            if mask is None:
                mask = np.ones(pred.shape[:1], dtype=bool)
            if pred.shape != true.shape or mask.shape != pred.shape[:1]:
                raise ValueError(
                    f"predict_fn output {name!r}: pred {pred.shape}, true {true.shape} and "
                    f"mask {mask.shape} must be (n, ...), (n, ...) and (n,)"
                )
            parts.setdefault(name, []).append((pred, true, mask))
    return {
        name: tuple(np.concatenate([p[j] for p in plist]) for j in range(3))
        for name, plist in parts.items()
    }


def metrics_from_predictions(
    predictions: Predictions, tensor_kinds: Mapping[str, str] | None = None
) -> dict[str, dict]:
    """Per target `regression_metrics`, plus `"irreps"` per component when its kind is given."""
    tensor_kinds = dict(tensor_kinds or {})
    unknown = sorted(set(tensor_kinds) - set(predictions))
    if unknown:
        raise ValueError(f"tensor_kinds names targets {unknown} that predict_fn does not return")
    out = {}
    for name, (pred, true, mask) in predictions.items():
        out[name] = regression_metrics(pred, true, mask)
        if name in tensor_kinds:
            per_irreps = irreps_metrics(tensor_kinds[name], pred, true, mask)
            if per_irreps is not None:
                out[name]["irreps"] = per_irreps
    return out


def evaluate(
    model: Any,
    predict_fn: Callable,
    batches: Sequence,
    *,
    tensor_kinds: Mapping[str, str] | None = None,
) -> dict[str, dict]:
    """Metrics of `model` on `batches`: `{target: {"mae", "rmse", "r2", "n"[, "irreps"]}}`."""
    return metrics_from_predictions(collect_predictions(model, predict_fn, batches), tensor_kinds)


def parity_plot(
    pred: Any,
    true: Any,
    path: str | os.PathLike,
    title: str = "",
    units: str = "",
    *,
    mask: Any = None,
) -> None:
    """Save a predicted-vs-true scatter of every component (PNG, Agg; no pyplot global state).

    **Arguments:**

    - `pred`, `true`: `(n, *tensor_shape)`; `mask`: optional `(n,)` row mask.
    - `path`: output file; `title`: plot title; `units`: axis unit label.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    p, t = _rows(pred, true, mask)
    p, t = p.ravel(), t.ravel()
    m = regression_metrics(p[:, None], t[:, None])
    fig = Figure(figsize=(4.2, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(t, p, s=6, alpha=0.5, linewidths=0)
    if p.size:
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    unit = f" [{units}]" if units else ""
    ax.set_xlabel(f"true{unit}")
    ax.set_ylabel(f"predicted{unit}")
    ax.set_title(title)
    ax.text(
        0.04,
        0.96,
        f"MAE {m['mae']:.4g}\nRMSE {m['rmse']:.4g}\nR$^2$ {m['r2']:.4f}",
        transform=ax.transAxes,
        va="top",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=120)
