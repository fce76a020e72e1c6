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
