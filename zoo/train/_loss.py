"""Per-target weighted, masked losses on Cartesian or irreps components (jit-able, pure jnp)."""

import importlib
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

LOSSES = ("mse", "mae", "huber")


def _elementwise(residual: Array, kind: str, delta: float) -> Array:
    if kind == "mse":
        return residual**2
    if kind == "mae":
        return jnp.abs(residual)
    a = jnp.abs(residual)  # huber: quadratic below delta, linear above
    return jnp.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta))


def weighted_loss(
    outputs: Mapping[str, tuple[Array, Array, Array]],
    weights: Mapping[str, float],
    *,
    loss: str = "mse",
    tensor_kinds: Mapping[str, str] | None = None,
    irreps_weights: Mapping[str, Mapping[str, float]] | None = None,
    huber_delta: float = 1.0,
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """`sum_t weights[t] * loss_t`, each a masked mean over rows of the mean over components.

    **Arguments:**

    - `outputs`: `{target: (pred, true, mask)}` as returned by a `predict_fn`: `pred`, `true`
      of shape `(n, *tensor_shape)`, `mask` `(n,)` (zero rows are padding and do not count).
    - `weights`: `{target: weight}`; targets absent from it are not in the loss.
    - `loss`: `"mse"`, `"mae"` or `"huber"` (with `huber_delta`).
    - `tensor_kinds`: `{target: kind}`; those targets' residuals are taken on the irreps
      components of `zoo.irreps.to_irreps(kind, ...)` instead of the Cartesian ones.
    - `irreps_weights`: `{target: {"0e": w, "2e": w, ...}}` weights of irreps blocks (keys as in
      `str(mul_ir)`, like `"1x0e"`, or just the irrep `"0e"`); unnamed blocks weigh 1.

    **Returns:** `(loss, aux)` with `aux = {"loss_<target>": unweighted loss of that target}`,
    ready to return from a `loss_fn` given to `fit`.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    missing = sorted(set(weights) - set(outputs))
    if missing:
        raise ValueError(f"weights name targets {missing} absent from outputs {sorted(outputs)}")
    tensor_kinds = dict(tensor_kinds or {})
    irreps_weights = dict(irreps_weights or {})
    if not weights:
        raise ValueError("weights must name at least one target")
    total = 0.0
    aux = {}
    for name, weight in weights.items():
        pred, true, mask = outputs[name]
        residual = jnp.asarray(pred) - jnp.asarray(true)
        n = residual.shape[0]
        if name in tensor_kinds:
            irreps_mod = importlib.import_module("zoo.irreps")
            kind = tensor_kinds[name]
            residual = irreps_mod.to_irreps(kind, residual).array  # linear: to_irreps(p) - (t)
            comp = _block_weights(irreps_mod.irreps_of(kind), irreps_weights, name)
        else:
            residual = residual.reshape(n, -1)
            comp = [1.0] * residual.shape[1]
        comp = jnp.asarray(comp, dtype=residual.dtype)
        per_row = jnp.sum(_elementwise(residual, loss, huber_delta) * comp, axis=1) / jnp.sum(comp)
        m = jnp.ones((n,), per_row.dtype) if mask is None else jnp.asarray(mask, per_row.dtype)
        value = jnp.sum(per_row * m) / jnp.maximum(jnp.sum(m), 1.0)
        aux[f"loss_{name}"] = value
        total = total + weight * value
    return total, aux


def _block_weights(irreps: Any, irreps_weights: Mapping, name: str) -> list[float]:
    given = dict(irreps_weights.get(name, {}))
    out, used = [], set()
    for mul_ir in irreps:
        for key in (str(mul_ir), str(mul_ir.ir)):
            if key in given:
                used.add(key)
                out += [float(given[key])] * mul_ir.dim
                break
        else:
            out += [1.0] * mul_ir.dim
    unused = sorted(set(given) - used)
    if unused:
        raise ValueError(f"irreps_weights[{name!r}] names blocks {unused} not in {irreps}")
    return out
