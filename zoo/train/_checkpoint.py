"""Arrays saved by pytree key path in safetensors (no pickle), written atomically.

A checkpoint is ONE file, so replacing it is atomic: a kill leaves either the old or the new one.
Its tensors are `model<path>`, `best<path>`, `opt<path>` and `rng`; its safetensors metadata holds
the JSON state (epoch, history, run signature, ...).
"""

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
import safetensors.numpy
from safetensors import safe_open

from .._io import atomic_write_bytes as atomic_write_bytes
from ._config import TrainConfig

_STATE_KEY = "zoo_train_state"


def jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy/jax scalars to Python, tuples to lists, NaN/Inf to None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray | jax.Array) and np.ndim(obj) == 0:
        obj = obj.item()
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _is_array_like(leaf: Any) -> bool:
    return eqx.is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)


def flatten_arrays(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """`{prefix + keystr(path): array}` for every array leaf of `tree` (others are skipped)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if eqx.is_array(leaf):
            out[prefix + jax.tree_util.keystr(path)] = np.array(leaf, order="C")  # keeps 0-d
    return out


def fill_arrays(skeleton: Any, arrays: dict[str, np.ndarray], prefix: str, what: str) -> Any:
    """Replace every array leaf of `skeleton` by `arrays[prefix + keystr(path)]`.

    Strict: a missing or extra key, or a different shape or dtype, raises ValueError naming it.
    Skeleton leaves may be arrays or `jax.ShapeDtypeStruct` (from `eqx.filter_eval_shape`).
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(skeleton)
    leaves, used = [], set()
    for path, leaf in flat:
        if not _is_array_like(leaf):
            leaves.append(leaf)
            continue
        key = prefix + jax.tree_util.keystr(path)
        if key not in arrays:
            raise ValueError(f"{what}: no array for {key!r}; it was saved from a different model")
        value = arrays[key]
        if value.shape != tuple(leaf.shape) or value.dtype != leaf.dtype:
            raise ValueError(
                f"{what}: {key!r} has shape {value.shape} and dtype {value.dtype}, "
                f"expected {tuple(leaf.shape)} and {leaf.dtype}"
            )
        leaves.append(jax.device_put(value))  # no per-shape compile (jnp.asarray)
        used.add(key)
    extra = sorted(k for k in arrays if k.startswith(prefix) and k not in used)
    if extra:
        raise ValueError(f"{what}: arrays {extra[:5]} do not exist in the model")
    return jax.tree_util.tree_unflatten(treedef, leaves)


def save_weights(model: Any, path: str | os.PathLike) -> None:
    """Atomically save every array of `model` to a safetensors file, keyed by key path."""
    atomic_write_bytes(path, safetensors.numpy.save(flatten_arrays(model)))


def load_weights(skeleton: Any, path: str | os.PathLike) -> Any:
    """Inverse of `save_weights`: `skeleton` (a model or `eqx.filter_eval_shape` of one) filled."""
    with safe_open(os.fspath(path), framework="numpy") as f:
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    return fill_arrays(skeleton, arrays, "", f"weights file {os.fspath(path)}")


def save_checkpoint(
    path: Path,
    *,
    model: Any,
    best: Any,
    opt_state: Any,
    key: jax.Array,
    state: dict,
    ema: Any = None,
) -> None:
    """Atomically write the whole resumable training state to one safetensors file."""
    tensors = {
        **flatten_arrays(model, "model"),
        **flatten_arrays(best, "best"),
        **flatten_arrays(opt_state, "opt"),
        **({} if ema is None else flatten_arrays(ema, "ema")),
        "rng": np.asarray(jax.random.key_data(key)),
    }
    meta = {_STATE_KEY: json.dumps(jsonable(state), allow_nan=False)}
    atomic_write_bytes(path, safetensors.numpy.save(tensors, metadata=meta))


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Return `(arrays, state)` of a checkpoint written by `save_checkpoint`."""
    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            arrays = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
    except Exception as err:  # a truncated or foreign file: say which
        raise ValueError(f"cannot read checkpoint {path}: {err}") from None
    if _STATE_KEY not in meta or "rng" not in arrays:
        raise ValueError(f"{path} is not a zoo.train checkpoint (no training state inside)")
    return arrays, json.loads(meta[_STATE_KEY])


def run_signature(config: TrainConfig, train: Sequence, val: Sequence, mask: Any) -> dict:
    """What must match for a checkpoint to belong to this run."""
    batch0 = [
        f"{jax.tree_util.keystr(p)}:{x.dtype}{list(np.shape(x))}"
        for p, x in jax.tree_util.tree_flatten_with_path(train[0])[0]
        if eqx.is_array(x)
    ]
    trainable = [
        jax.tree_util.keystr(p) for p, m in jax.tree_util.tree_flatten_with_path(mask)[0] if m
    ]
    return jsonable(
        {
            "config": config.to_dict(),
            "n_train_batches": len(train),
            "n_val_batches": len(val),
            "train_batch0": batch0,
            "trainable": trainable,
        }
    )


def check_same_run(saved: dict, now: dict, path: Path) -> None:
    """Raise ValueError listing what differs between a checkpoint's run signature and ours."""
    if "config" in saved and "config" in now:  # fields added since that run have defaults
        defaults = TrainConfig().to_dict()
        saved = {**saved, "config": {**defaults, **saved["config"]}}
    if saved == now:
        return
    diffs = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if key == "config" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [
                f"config.{f} is {a.get(f)!r} there but {b.get(f)!r} now"
                for f in sorted(set(a) | set(b))
                if a.get(f) != b.get(f)
            ]
        elif a != b:
            diffs.append(f"{key} differs")
    raise ValueError(
        f"checkpoint {path} belongs to a different run ({'; '.join(diffs[:6])}); it is never "
        "overwritten: use another out_dir, or delete that checkpoint to start over"
    )
