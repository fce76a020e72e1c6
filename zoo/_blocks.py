"""Building blocks shared by the architectures: radial basis, radial MLP, edge attributes."""

from __future__ import annotations

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

ACTIVATIONS = {"silu": jax.nn.silu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}


def activation(name: str):
    """Activation by name (names keep configs JSON-safe)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


def polynomial_envelope(x: Float[Array, ...], p: int) -> Float[Array, ...]:
    """Smooth cutoff u_p(x) of Klicpera et al. on x = r / r_max: 1 at 0, zero with its first
    two derivatives at 1, and 0 beyond."""
    return jnp.where(x < 1.0, e3nn.poly_envelope(p - 1, 2)(x), 0.0)


def edge_lengths_and_directions(
    vectors: Float[Array, "n_edges 3"], edge_mask: Bool[Array, " n_edges"]
) -> tuple[Float[Array, " n_edges"], Float[Array, "n_edges 3"]]:
    """Lengths and a NaN-safe copy of the vectors: padding edges (zero vectors) are replaced
    by a unit vector so that norms and their gradients stay finite."""
    safe = jnp.where(edge_mask[:, None], vectors, jnp.array([1.0, 0.0, 0.0], vectors.dtype))
    return jnp.linalg.norm(safe, axis=-1), safe


def radial_embedding(
    lengths: Float[Array, " n_edges"], num_basis: int, r_max: float, p: int
) -> Float[Array, "n_edges num_basis"]:
    """Bessel basis times the polynomial envelope; vanishes smoothly at `r_max`."""
    basis = e3nn.bessel(lengths, num_basis, r_max)
    return basis * polynomial_envelope(lengths / r_max, p)[:, None]


class RadialMLP(eqx.Module):
    """Scalar MLP on the radial basis giving per-edge tensor-product weights.

    Weights are stored with unit variance and scaled by 1/sqrt(fan_in) in the forward pass,
    so the initial outputs are O(1) whatever the widths.
    """

    weights: tuple[Float[Array, "fan_in fan_out"], ...]
    act: str = eqx.field(static=True)

    def __init__(self, sizes: tuple[int, ...], act: str = "silu", *, dtype, key):
        activation(act)
        keys = jax.random.split(key, len(sizes) - 1)
        self.weights = tuple(
            jax.random.normal(k, (a, b), dtype) for k, a, b in zip(keys, sizes[:-1], sizes[1:])
        )
        self.act = act

    def __call__(self, x: Float[Array, "... fan_in"]) -> Float[Array, "... fan_out"]:
        f = e3nn.normalize_function(activation(self.act))
        for k, w in enumerate(self.weights):
            x = x @ w / jnp.sqrt(w.shape[0]).astype(x.dtype)
            if k < len(self.weights) - 1:
                x = f(x)
        return x


def linear(irreps_in, irreps_out, *, dtype, key, **kwargs) -> e3nn.equinox.Linear:
    """e3nn-jax's equivariant Linear with the dtype passed through (it defaults to f32)."""
    return e3nn.equinox.Linear(
        irreps_in=e3nn.Irreps(irreps_in),
        irreps_out=e3nn.Irreps(irreps_out),
        input_dtype=dtype,
        key=key,
        **kwargs,
    )
