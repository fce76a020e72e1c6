"""Floating dtype resolution, following equinox: ``None`` means f64 under x64, else f32."""

import jax
import jax.numpy as jnp


def default_float() -> jnp.dtype:
    """The default floating dtype: float64 when ``jax_enable_x64`` is on, else float32."""
    # canonicalize_dtype honours the jax.enable_x64 context manager, not just the global flag
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def resolve_float(dtype) -> jnp.dtype:
    """``dtype`` as a numpy dtype, ``None`` -> :func:`default_float`; refuses non-floating types."""
    if dtype is None:
        return default_float()
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating type (float32 or float64), got {dtype}")
    if dtype == jnp.float64 and default_float() != jnp.float64:
        raise ValueError(
            "dtype=float64 needs jax_enable_x64: call jax.config.update('jax_enable_x64', True) "
            "before building the model or graph"
        )
    return dtype


def _set_dtype(value, name: str):
    if isinstance(value, dict):
        return {k: name if k == "dtype" else _set_dtype(v, name) for k, v in value.items()}
    if isinstance(value, list):
        return [_set_dtype(v, name) for v in value]
    return value


def _with_dtype_config(module, name: str):
    """A shallow copy of ``module`` whose config (nested configs too) says ``dtype: name``, so
    that a saved copy rebuilds the dtype its weights have."""
    import copy
    import dataclasses

    config = getattr(module, "config", None)
    fields = {f.name for f in dataclasses.fields(module)}
    if "config" not in fields or not isinstance(config, dict):
        return module
    new_config = _set_dtype(config, name)
    if new_config == config:
        return module
    new = copy.copy(module)
    object.__setattr__(new, "config", new_config)  # a static field: not a leaf
    return new


def cast_floating(model, dtype):
    """``model`` with every floating array leaf cast to ``dtype`` (``"float32"`` or
    ``"float64"``) and the ``config["dtype"]`` of its modules updated; nothing else changes.

    float64 needs ``jax_enable_x64`` (the global switch or the ``jax.enable_x64()`` context):
    without it JAX would silently compute in float32, so this refuses with a ValueError.
    """
    import equinox as eqx

    if dtype is None:
        return model
    if isinstance(dtype, str) and dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    target = resolve_float(dtype)

    def cast(leaf):
        if eqx.is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.astype(target)
        return leaf

    return _retag(jax.tree_util.tree_map(cast, model), target.name)


def _retag(tree, name: str):
    """Every module of ``tree`` (outermost first) with its config's dtype set to ``name``."""
    import equinox as eqx

    if not isinstance(tree, eqx.Module):
        return tree
    tree = _with_dtype_config(tree, name)
    inner = lambda x: x is not tree and isinstance(x, eqx.Module)  # noqa: E731
    children, treedef = jax.tree_util.tree_flatten(tree, is_leaf=inner)
    return jax.tree_util.tree_unflatten(treedef, [_retag(c, name) for c in children])
