"""The weights file of a model folder: a model's arrays in safetensors, named by pytree key path
("layers.0.linear.weight", "w.w[0,1] 0e,1o"), so a file can be read without the code and a
renamed field fails loudly instead of loading silently. The header carries the sha256 of the
config the weights were saved with. No pickle.
"""

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

#: safetensors header key of the config's sha256
CONFIG_HASH_KEY = "config_sha256"
#: at most this many problems are listed in one error
MAX_LISTED = 5


def _key_name(key: Any) -> str:
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.DictKey):
        if not isinstance(key.key, str | int):
            raise ValueError(f"dict key {key.key!r} in the model: only str/int keys can be saved")
        return str(key.key)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    raise ValueError(f"unsupported pytree key {key!r} in the model")


def tensor_name(path: Sequence[Any]) -> str:
    """Human-readable tensor name of a pytree key path, e.g. ``"layers.0.weight"``."""
    return ".".join(_key_name(k) for k in path)


def _is_tensor(leaf: Any) -> bool:
    return eqx.is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)


def _named_leaves(tree: Any) -> tuple[list[tuple[str | None, Any]], Any]:
    """(name or None for non-array leaves, leaf) in flattening order, and the treedef."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    named, seen = [], set()
    for path, leaf in flat:
        name = tensor_name(path) if _is_tensor(leaf) else None
        if name is not None:
            if name in seen:
                raise ValueError(f"two model arrays share the tensor name {name!r}")
            seen.add(name)
        named.append((name, leaf))
    return named, treedef


def model_tensors(model: eqx.Module) -> dict[str, np.ndarray]:
    """The model's arrays as host numpy arrays, keyed by tensor name."""
    tensors = {}
    for name, leaf in _named_leaves(model)[0]:
        if name is None:
            continue
        if isinstance(leaf, jax.ShapeDtypeStruct):
            raise ValueError(f"tensor {name!r} is abstract (ShapeDtypeStruct): nothing to save")
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            raise ValueError(f"tensor {name!r} is a PRNG key; store jax.random.key_data(key)")
        tensors[name] = np.ascontiguousarray(np.asarray(leaf))
    return tensors


def config_sha256(config: Mapping[str, Any]) -> str:
    """sha256 of a config's canonical JSON (key-sorted, indent 2): whitespace does not count."""
    text = json.dumps(config, sort_keys=True, indent=2, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def save_safetensors(
    model: eqx.Module, path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> None:
    """Write the model's arrays to a safetensors file (non-array leaves are not saved).

    The header metadata holds ``format: e3zoo`` and, when the model has a config, its
    ``config_sha256``, so a config.json edited after saving is refused at load.
    """
    meta = {"format": "e3zoo", **(metadata or {})}
    config = getattr(model, "config", None)
    if isinstance(config, dict):
        meta[CONFIG_HASH_KEY] = config_sha256(config)
    # bytes through Python's open(): safetensors' own writer creates the file 0600
    Path(path).write_bytes(save(model_tensors(model), metadata=meta))


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The header metadata of a safetensors file ({} when unreadable or absent)."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError):
        return {}


def check_config_matches_weights(config: Mapping[str, Any], weights: str | os.PathLike) -> None:
    """Refuse a config.json edited after its weights were saved (before anything is built).

    Weights saved by this package carry the config's sha256 in their header; an edit of the
    same shapes (``r_max``, species order) would otherwise load and predict differently, and an
    edit of a size (``channels``) would allocate before any shape check.
    """
    saved = safetensors_metadata(weights).get(CONFIG_HASH_KEY)
    if saved is not None and saved != config_sha256(config):
        raise ValueError(
            f"{weights}: config.json differs from the config these weights were saved with "
            "(edited after saving?); restore it, or build the model from the edited config "
            "and fill it with zoo._serialization.load_safetensors(model, path)"
        )


def _problems_message(path: Path, problems: list[str]) -> str:
    shown = problems[:MAX_LISTED]
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return (
        f"{path}: weights do not match the model built from config.json:\n  "
        + "\n  ".join(shown)
        + more
    )


def load_safetensors(skeleton: eqx.Module, path: str | os.PathLike) -> eqx.Module:
    """Fill the array leaves of ``skeleton`` from a safetensors file, strictly.

    **Arguments:**

    - `skeleton`: a model whose array leaves may be arrays or ``jax.ShapeDtypeStruct``
      (e.g. from ``eqx.filter_eval_shape``); its other leaves are kept.
    - `path`: the safetensors file.

    **Returns:** the model with every array leaf read from the file.

    Raises ValueError naming the file when it is corrupt or truncated, and naming the tensors
    when names are missing or extra, a shape or dtype differs, or a value is NaN or Inf.
    """
    path = Path(path)
    named, treedef = _named_leaves(skeleton)
    expected = {name: leaf for name, leaf in named if name is not None}
    try:
        with safe_open(str(path), framework="numpy") as f:
            stored = set(f.keys())
            problems = [f"missing tensor {n!r}" for n in expected if n not in stored]
            problems += [f"unexpected tensor {n!r}" for n in sorted(stored - set(expected))]
            arrays = {}
            for name, leaf in expected.items():
                if name not in stored:
                    continue
                array = f.get_tensor(name)
                if array.shape != tuple(leaf.shape):
                    problems.append(
                        f"tensor {name!r}: shape {array.shape} in the file, "
                        f"{tuple(leaf.shape)} expected"
                    )
                elif array.dtype != np.dtype(leaf.dtype):
                    hint = ""
                    if array.dtype == np.float64 and not jax.config.jax_enable_x64:
                        hint = " (enable jax_enable_x64 to load float64 weights)"
                    elif jnp.issubdtype(array.dtype, jnp.floating):
                        hint = " (the model class must build the dtype stored in config.json)"
                    problems.append(
                        f"tensor {name!r}: dtype {array.dtype} in the file, "
                        f"{np.dtype(leaf.dtype)} expected{hint}"
                    )
                if array.dtype.kind in "fc" and not np.isfinite(array).all():
                    bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
                    problems.append(f"tensor {name!r}: {bad} non-finite value(s) (NaN or Inf)")
                arrays[name] = array
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"{path}: corrupt or truncated safetensors file ({err}); re-download or re-save it"
        ) from err
    if problems:
        raise ValueError(_problems_message(path, problems))
    # device_put, not jnp.asarray: the latter compiles a copy per distinct shape (~20 ms each,
    # most of a model's load time)
    leaves = [leaf if name is None else jax.device_put(arrays[name]) for name, leaf in named]
    return jax.tree_util.tree_unflatten(treedef, leaves)
