"""Data statistics and a data-dependent init for the Hubbard networks (:func:`fit_scalers`)."""

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from ._models import ONSITE_TYPE, _as_input, _standardize, input_statistics, param_offset


def fit_scalers(model, inputs, targets: Float[np.ndarray, " n"], *, init_weights: bool = True):
    """The same model (same weights) with its data statistics fit on the **training** split.

    **Arguments:**

    - `model`: an :class:`OnsiteModel` or :class:`IntersiteModel`.
    - `inputs`: training features, `(n, dim)` for U (:func:`onsite_features`), or the tuple
      `(p_site, d_site, edge)` for V (:func:`intersite_features`); IrrepsArrays or arrays.
    - `targets`: the training targets (eV), shape `(n,)`.
    - `init_weights`: also rescale every layer's weights (one factor per output irrep type) so
      that its pre-activations have unit RMS on these inputs, layer after layer (a
      data-dependent init, as LSUV). Without it a chain of tensor squares starts with outputs
      ~100x the target spread and trains poorly. Call it before training.

    **Returns:** a new model whose config holds ``target_mean``/``target_std`` (mean and std of
    `targets`) and ``input_stats`` (:func:`input_statistics`).
    """
    t = np.asarray(targets, dtype=np.float64).reshape(-1)
    if t.size < 2 or not np.isfinite(t).all():
        raise ValueError(f"targets: need >= 2 finite values, got {t.size}")
    if model.config["model_type"] == ONSITE_TYPE:
        names = {"x": model.irreps_in}
        inputs = (inputs,)
    else:
        names = model.irreps_in
        if not isinstance(inputs, tuple | list) or len(inputs) != 3:
            raise ValueError("inputs: expected the tuple (p_site, d_site, edge) for V")
    stats, raw = {}, {}
    for (k, ir), x in zip(names.items(), inputs):
        x = np.asarray(x.array if isinstance(x, e3nn.IrrepsArray) else x)
        if x.shape[0] != t.size:
            raise ValueError(f"inputs {k}: {x.shape[0]} rows but {t.size} targets")
        stats[k], raw[k] = input_statistics(x, ir), x
    # a residual model's scalers describe the change from the run's parameter, not the label
    t = t - param_offset(model.config, raw["x" if "x" in raw else "edge"])
    std = float(t.std())
    config = {
        **model.config,
        "target_mean": float(t.mean()),
        "target_std": std if std > 1e-8 else 1.0,
        "input_stats": stats,
    }
    skeleton = type(model).skeleton_from_config(config)
    model = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(skeleton), jax.tree_util.tree_leaves(model)
    )
    if not init_weights:
        return model
    rows = np.random.default_rng(0).permutation(t.size)[:1024]
    dtype = model.readout.linear.weights[0].dtype
    xs = [
        _standardize(_as_input(np.asarray(getattr(x, "array", x))[rows], ir, dtype, k), stats[k])
        for (k, ir), x in zip(names.items(), inputs)
    ]
    if model.config["model_type"] == ONSITE_TYPE:
        h, layers = xs[0], []
    else:
        sites, h = _unit_rms(model.sites, xs[0], xs[1])
        edge, h = _unit_rms(model.edge, h, xs[2])
        model = eqx.tree_at(lambda m: (m.sites, m.edge), model, (sites, edge))
        layers = []
    for layer in model.layers:
        layer, h = _unit_rms(layer, h)
        layers.append(layer)
    readout, _ = _unit_rms(model.readout, h)
    return eqx.tree_at(lambda m: (m.layers, m.readout), model, (tuple(layers), readout))


@eqx.filter_jit
def _pre_and_out(layer, *xs):
    pre = layer.pre_gate(*xs)
    rms = [jnp.sqrt(jnp.mean(c**2)) for c in pre.chunks]  # one per output irrep type
    return rms, layer(*xs)


def _unit_rms(layer, *xs):
    rms, _ = _pre_and_out(layer, *xs)
    weights = tuple(w / jnp.where(r > 1e-12, r, 1.0) for w, r in zip(layer.linear.weights, rms))
    layer = eqx.tree_at(lambda m: m.linear.weights, layer, weights)
    return layer, _pre_and_out(layer, *xs)[1]


__all__ = ["fit_scalers"]
