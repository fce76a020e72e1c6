"""Inference of the Hubbard models in numpy, on their dense bilinear form.

The models are a few tensor-square layers applied to a handful of rows: tracing and XLA
compilation (~0.8 s) cost far more than the arithmetic (~1 ms). For concrete inputs this
module evaluates the same function as ``model(..., dense=model.dense_coefficients())`` with
numpy only; `tests/hubbard/test_infer.py` checks it against the JAX forward (f32 and f64).
"""

from __future__ import annotations

import e3nn_jax as e3nn
import numpy as np
from jaxtyping import Float

from ._ensemble import HubbardEnsemble
from ._features import regroup_index
from ._kernel import KernelModel
from ._layers import TensorProduct, TensorSquare, _second_moment_scale, gated_irreps
from ._models import IntersiteModel, OnsiteModel, param_offset


def _standardize(x: np.ndarray, stats: dict | None) -> np.ndarray:
    if stats is None:
        return x
    return (x - np.asarray(stats["mean"], x.dtype)) * np.asarray(stats["scale"], x.dtype)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -z))  # no overflow for large |z|


def _gate(y: np.ndarray, irreps: e3nn.Irreps) -> np.ndarray:
    """`_layers._gate` on a plain array of regrouped `irreps` (scalars, then the gated ones)."""
    (n0, _), rest = irreps[0], irreps[1:]
    n_gates = sum(mul for mul, _ in rest)
    s = y[..., :n0]
    z = s[..., : n0 - n_gates]
    out = [z * _sigmoid(z) * _second_moment_scale("silu")]
    gates = _sigmoid(s[..., n0 - n_gates :]) * _second_moment_scale("sigmoid")
    col, g = n0, 0
    for mul, ir in rest:
        c = y[..., col : col + mul * ir.dim].reshape(*y.shape[:-1], mul, ir.dim)
        out.append((c * gates[..., g : g + mul, None]).reshape(*y.shape[:-1], mul * ir.dim))
        col, g = col + mul * ir.dim, g + mul
    return np.concatenate(out, axis=-1).astype(y.dtype, copy=False)


def _squash(y: np.ndarray, irreps: e3nn.Irreps) -> np.ndarray:
    """`_layers._squash` on a plain array of `irreps`: ``v / sqrt(1 + |v|^2)`` per copy."""
    out = []
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        c = y[..., sl].reshape(*y.shape[:-1], mul, ir.dim)
        c = c / np.sqrt(1 + np.sum(c**2, axis=-1, keepdims=True))
        out.append(c.reshape(*y.shape[:-1], mul * ir.dim))
    return np.concatenate(out, axis=-1).astype(y.dtype, copy=False)


def _layer(
    layer: TensorSquare | TensorProduct, w: np.ndarray, x1, irreps_1, x2=None, irreps_2=None
):
    """One layer on the dense form: `x1` of irreps `irreps_1` (any order), `x2` likewise."""
    w = np.asarray(w, x1.dtype)
    x1 = x1[..., regroup_index(irreps_1)]
    x2 = x1 if x2 is None else x2[..., regroup_index(irreps_2)]
    y = np.einsum("...j,...jk->...k", x2, np.einsum("...i,ijk->...jk", x1, w))
    if not layer.gate:
        return y
    y = _gate(y, layer.linear.irreps_out)
    return _squash(y, gated_irreps(layer.linear.irreps_out)) if layer.squash else y


def _out(model, y: np.ndarray, raw: np.ndarray) -> np.ndarray:
    # `raw`: the unstandardised input holding the run's parameter (see `param_offset`)
    c = model.config
    return c["target_std"] * y[..., 0] + c["target_mean"] + param_offset(c, raw)


def _ensemble_mean(predict, model: HubbardEnsemble, inputs, dense) -> np.ndarray:
    dense = model.dense_coefficients() if dense is None else dense
    return np.mean([predict(m, *inputs, d) for m, d in zip(model.members, dense)], axis=0)


def predict_u(
    model: OnsiteModel | HubbardEnsemble | KernelModel,
    x: Float[np.ndarray, "*batch dim"],
    dense: tuple[np.ndarray, ...] | None = None,
) -> Float[np.ndarray, "*batch"]:
    """``model(x, dense=dense)`` in numpy: `x` the `.array` of :func:`onsite_features`;
    `dense` defaults to ``model.dense_coefficients()`` (cast to the model's dtype here)."""
    if isinstance(model, KernelModel):
        return model.predict_numpy(x)
    if isinstance(model, HubbardEnsemble):
        return _ensemble_mean(predict_u, model, (x,), dense)
    dense = model.dense_coefficients() if dense is None else dense
    dtype = model.readout.linear.weights[0].dtype
    raw = np.asarray(x, dtype)
    x = _standardize(raw, (model.config["input_stats"] or {}).get("x"))
    irreps = model.irreps_in
    for layer, w in zip(model.layers, dense):
        x, irreps = _layer(layer, w, x, irreps), _gated(layer)
    return _out(model, _layer(model.readout, dense[-1], x, irreps), raw)


def predict_v(
    model: IntersiteModel | HubbardEnsemble | KernelModel,
    p_site: Float[np.ndarray, "*batch p_dim"],
    d_site: Float[np.ndarray, "*batch d_dim"],
    edge: Float[np.ndarray, "*batch edge_dim"],
    dense: tuple[np.ndarray, ...] | None = None,
) -> Float[np.ndarray, "*batch"]:
    """``model(p_site, d_site, edge, dense=dense)`` in numpy (the :func:`intersite_features`);
    `dense` as in :func:`predict_u`."""
    if isinstance(model, KernelModel):
        return model.predict_numpy(p_site, d_site, edge)
    if isinstance(model, HubbardEnsemble):
        return _ensemble_mean(predict_v, model, (p_site, d_site, edge), dense)
    dense = model.dense_coefficients() if dense is None else dense
    dtype = model.readout.linear.weights[0].dtype
    irreps = model.irreps_in
    stats = model.config["input_stats"] or {}
    p, d, e = (
        _standardize(np.asarray(v, dtype), stats.get(k))
        for k, v in (("p_site", p_site), ("d_site", d_site), ("edge", edge))
    )
    x = _layer(model.sites, dense[0], p, irreps["p_site"], d, irreps["d_site"])
    x = _layer(model.edge, dense[1], x, _gated(model.sites), e, irreps["edge"])
    irreps = _gated(model.edge)
    for layer, w in zip(model.layers, dense[2:]):
        x, irreps = _layer(layer, w, x, irreps), _gated(layer)
    return _out(model, _layer(model.readout, dense[-1], x, irreps), np.asarray(edge, dtype))


def _gated(layer: TensorSquare | TensorProduct) -> e3nn.Irreps:
    """Irreps of `layer`'s output (after its gate, if it has one)."""
    return gated_irreps(layer.linear.irreps_out) if layer.gate else layer.linear.irreps_out
