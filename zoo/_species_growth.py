"""Growing a response model by new species (`zoo.finetune`'s ``new_species``).

Species enter a backbone in two ways. NequIP and MACE index arrays by species (the embedding,
the species-indexed self-connections, residuals and symmetric-contraction weights): one row
per species, so a new species is a new row. Allegro feeds one-hot species of both atoms of an
edge into the first layer of its two-body MLP: a new species is a new input row in each one-hot
block. In both cases the old species' predictions are kept: the old rows are carried over and
a new row only ever meets atoms of the new species.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .backbones import model_architecture
from .model import ResponseModel

#: per architecture: path of an array whose rows are ``blocks`` one-hot species blocks then
#: other inputs, and which the forward pass divides by sqrt(rows) (`zoo._blocks.RadialMLP`)
ONE_HOT_ROWS = {"allegro": {".backbone.two_body.weights[0]": 2}}


def _one_hot_rows(before, fresh, blocks: int, n_old: int, n_new: int):
    """`fresh` `(blocks*n_new + rest, ...)` with the rows of `before` `(blocks*n_old + rest,
    ...)` carried over, rescaled so that the 1/sqrt(rows) of the forward pass is unchanged for
    old inputs; also the boolean mask of the new species' rows."""
    rest = before.shape[0] - blocks * n_old
    if rest != fresh.shape[0] - blocks * n_new:
        raise ValueError(f"rows {before.shape[0]} -> {fresh.shape[0]} are not {blocks} "
                         f"species blocks of {n_old} -> {n_new} and {rest} other inputs")  # fmt: skip
    factor = math.sqrt(fresh.shape[0] / before.shape[0])
    scaled = before * jnp.asarray(factor, before.dtype)
    new_rows = np.zeros(fresh.shape[0], bool)
    out = fresh
    for b in range(blocks):
        out = out.at[b * n_new : b * n_new + n_old].set(scaled[b * n_old : (b + 1) * n_old])
        new_rows[b * n_new + n_old : (b + 1) * n_new] = True
    out = out.at[blocks * n_new :].set(scaled[blocks * n_old :])
    return out, new_rows


def grow_model(
    model: ResponseModel, config: dict, keep: set[str], *, key
) -> tuple[Any, dict[str, np.ndarray]]:
    """A model of `config` carrying `model`'s weights (heads in `keep` and the trunk); arrays
    indexed by species gain fresh rows for the new species. Returns it and, per grown array's
    path, the boolean mask of its new rows (the rows that may train)."""
    fresh = ResponseModel(config, key=key)
    old = {
        jax.tree_util.keystr(p): leaf
        for p, leaf in jax.tree_util.tree_flatten_with_path(model)[0]
        if eqx.is_array(leaf)
    }
    n_old, n_new = len(model.species), len(config["backbone"]["species"])
    one_hot = ONE_HOT_ROWS.get(model_architecture(model.config), {})
    grown = {}

    def take(path, leaf):
        name = jax.tree_util.keystr(path)
        if not eqx.is_array(leaf) or name not in old:
            return leaf
        if name.startswith(".heads[") and name.split("'")[1] not in keep:
            return leaf
        before = old[name]
        if before.shape == leaf.shape:
            return before
        if before.shape[1:] != leaf.shape[1:]:
            raise ValueError(f"cannot carry {name} over: shape {before.shape} -> {leaf.shape}")
        if name in one_hot:
            out, grown[name] = _one_hot_rows(before, leaf, one_hot[name], n_old, n_new)
            return out
        if (before.shape[0], leaf.shape[0]) == (n_old, n_new):
            grown[name] = np.arange(n_new) >= n_old
            return leaf.at[:n_old].set(before)
        raise ValueError(f"cannot carry {name} over: shape {before.shape} -> {leaf.shape}")

    return jax.tree_util.tree_map_with_path(take, fresh), grown


def freeze_rows(model, grown: dict[str, np.ndarray]):
    """`model` with no gradient into the rows of the grown arrays that are not new."""

    def cut(path, leaf):
        new_rows = grown.get(jax.tree_util.keystr(path))
        if new_rows is None:
            return leaf
        mask = jnp.asarray(new_rows).reshape((-1,) + (1,) * (leaf.ndim - 1))
        return jnp.where(mask, leaf, jax.lax.stop_gradient(leaf))

    return jax.tree_util.tree_map_with_path(cut, model)
