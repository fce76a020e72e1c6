"""Derivative heads: response tensors as derivatives of a learned energy E(r, eps, B, mu).

Units: energy eV, positions Å, electric field eps V/Å, so that ``d2E/deps dr`` is in e.
With ``COULOMB = e^2 / (4 pi eps0) = 14.399645 eV Å`` (so ``1/eps0 = 4 pi COULOMB``):

- Born charges ``Z[i, a, k] = -d2E / deps_a dr_ik`` (e); `born_from_derivatives` can return the
  transpose ``[i, k, a]`` (displacement first) when a data set stores it that way.
- Raman tensor ``R[i, k, a, b] = -COULOMB * d3E / dr_ik deps_a deps_b`` (Å^2) is the Quantum
  ESPRESSO convention ``(Omega / 4 pi) d eps_inf / d r = Omega dchi/dr`` (Gaussian chi); the
  ``"per_volume"`` convention divides by the cell volume Omega: ``dchi/dr`` in 1/Å.
- Dielectric ``eps_inf = 1 - (4 pi COULOMB / Omega) d2E / deps2`` (from ``E = -Omega eps0 chi
  eps^2 / 2``): needs a periodic cell.
- NMR shielding with a magnetic field B and nuclear moments mu_I, both axial (1e):
  ``E = mu_I . sigma_I B`` so ``sigma[i, a, b] = d2E / dmu_ia dB_b`` (dimensionless; ppm when the
  energy scale is fitted in ppm units, which the head's scale absorbs).
"""

from __future__ import annotations

import math

import e3nn_jax as e3nn
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._blocks import linear

#: e^2 / (4 pi eps0) in eV Å.
COULOMB = 14.399645478425668

BORN_ORDERS = ("field_first", "displacement_first")
RAMAN_CONVENTIONS = ("qe", "per_volume")


class EnergyHead(eqx.Module):
    """Per-atom energy ``scale * Linear(features)[0e]``: the latent potential of the
    derivative heads (only its derivatives are trained, so it has no shift)."""

    linear: e3nn.equinox.Linear
    scale: float = eqx.field(static=True)

    def __init__(self, irreps_in, scale=1.0, *, dtype, key):
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.linear = linear(irreps_in, "1x0e", dtype=dtype, key=key)

    def __call__(
        self, features: e3nn.IrrepsArray, species: Int[Array, " n_nodes"] | None = None
    ) -> Float[Array, " n_nodes"]:
        return self.scale * self.linear(features).array[:, 0]


def born_from_derivatives(
    d: dict[str, Array], order: str = "field_first"
) -> Float[Array, "n_nodes 3 3"]:
    """Born charges (e) from `zoo.response.mixed_derivatives` (node = positions, global =
    field): ``[i, field, displacement]`` or, with ``order="displacement_first"``, transposed."""
    if order not in BORN_ORDERS:
        raise ValueError(f"order must be one of {BORN_ORDERS}, got {order!r}")
    z = -d["d_global_node"]
    return z if order == "field_first" else jnp.swapaxes(z, -1, -2)


def raman_from_derivatives(
    d: dict[str, Array],
    convention: str = "qe",
    volume: Float[Array, " n_nodes"] | None = None,
) -> Float[Array, "n_nodes 3 3 3"]:
    """Raman tensors ``[i, displacement, field, field]``: Å^2 (``"qe"``) or 1/Å
    (``"per_volume"``, needs `volume` per node in Å^3)."""
    if convention not in RAMAN_CONVENTIONS:
        raise ValueError(f"convention must be one of {RAMAN_CONVENTIONS}, got {convention!r}")
    r = -COULOMB * d["d_node_global_global"]
    if convention == "per_volume":
        if volume is None:
            raise ValueError("the 'per_volume' Raman convention needs the cell volume")
        r = r / volume[:, None, None, None]
    return r


def dielectric_from_derivatives(
    d: dict[str, Array], volume: Float[Array, " n_graphs"]
) -> Float[Array, "n_graphs 3 3"]:
    """High-frequency dielectric tensor from ``d2E/deps2`` and the cell volume (Å^3)."""
    eye = jnp.eye(3, dtype=d["d_global_global"].dtype)
    factor = 4 * math.pi * COULOMB / volume
    return eye - factor[:, None, None] * d["d_global_global"]


def shielding_from_derivatives(d: dict[str, Array]) -> Float[Array, "n_nodes 3 3"]:
    """Shielding ``sigma[i, a, b] = d2E / dmu_ia dB_b`` from `mixed_derivatives` with node =
    moments mu, global = field B (whose ``d_global_node`` is ``[i, b, a]``)."""
    return jnp.swapaxes(d["d_global_node"], -1, -2)
