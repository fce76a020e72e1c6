"""Every observable of a field-dependent energy ``E(r, strain, eps)`` by JAX autodiff.

One reverse pass gives the energy, forces, stress and ``dE/deps``; pushing that reverse pass
forward along the 3 field directions (vmapped jvps: forward-over-reverse) gives Born charges and
the polarizability, and a second forward push along the field gives Raman tensors. The field
has 3 components and the positions ``3 n``, so the extra cost is independent of system size.

Units: energy eV, positions Å, field V/Å, so ``P`` is a cell dipole in e·Å, ``Z`` in e,
``alpha = dP/deps`` in e·Å^2/V; Raman ``COULOMB * d alpha / dr`` in Å^2 (the Quantum ESPRESSO
convention, see `zoo.heads.derivative`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .heads.derivative import COULOMB
from .response import _directions

#: ``energy(positions (n_nodes, 3), strain (n_graphs, 3, 3), field (n_graphs, 3)) -> (n_graphs,)``
StrainFieldEnergy = Callable[[Array, Array, Array], Float[Array, " n_graphs"]]


def field_observables(
    energy: StrainFieldEnergy,
    positions: Float[Array, "n_nodes 3"],
    field: Float[Array, "n_graphs 3"],
    volume: Float[Array, " n_graphs"],
    *,
    response: bool = True,
    raman: bool = False,
) -> dict[str, Array]:
    """Energy and its derivatives at `positions` and `field` (strain zero).

    **Arguments:** `energy` (see :data:`StrainFieldEnergy`; graph ``g`` depends only on its
    own nodes and ``field[g]``), `positions` `(n_nodes, 3)` Å, `field` `(n_graphs, 3)` V/Å,
    `volume` `(n_graphs,)` Å^3 (1 where there is no cell), `response` (Born charges and
    polarizability), `raman` (also Raman tensors; implies `response`).

    **Returns:** ``energy`` `(n_graphs,)` eV; ``forces`` `(n_nodes, 3)` = -dE/dr;
    ``stress`` `(n_graphs, 3, 3)` = (1/V) dE/dstrain eV/Å^3; ``polarization``
    `(n_graphs, 3)` = -dE/deps e·Å; with `response`: ``born_charges`` `(n_nodes, 3, 3)`
    ``[i, a, b] = dP_a / dr_ib`` e and ``polarizability`` `(n_graphs, 3, 3)` = dP/deps;
    with `raman`: ``raman_tensors`` `(n_nodes, 3, 3, 3)` ``[i, k, a, b] = COULOMB *
    d alpha_ab / dr_ik`` Å^2.
    """
    n_graphs = field.shape[0]
    strain = jnp.zeros((n_graphs, 3, 3), positions.dtype)

    def first(f):
        e, vjp = jax.vjp(lambda x, s, f_: energy(x, s, f_), positions, strain, f)
        d_x, d_s, d_f = vjp(jnp.ones_like(e))
        return e, d_x, d_s, d_f

    def pack(e, d_x, d_s, d_f) -> dict[str, Array]:
        return {
            "energy": e,
            "forces": -d_x,
            "stress": d_s / volume[:, None, None],
            "polarization": -d_f,
        }

    if not (response or raman):
        return pack(*first(field))
    dirs = _directions(n_graphs, field.dtype)
    if not raman:
        primal, tangent = jax.vmap(lambda u: jax.jvp(first, (field,), (u,)))(dirs)
        out = pack(*(p[0] for p in primal))
        _, dd_x, _, dd_f = tangent
        out["born_charges"] = -jnp.moveaxis(dd_x, 0, 1)  # (a, i, b) -> (i, a, b)
        out["polarizability"] = -jnp.moveaxis(dd_f, 0, 1)  # (a, g, b) -> (g, a, b)
        return out

    def second(u, v):
        def inner(f):
            return jax.jvp(first, (f,), (u,))

        (primal, d1), (_, d2) = jax.jvp(inner, (field,), (v,))
        return primal, d1, d2

    us = jnp.repeat(dirs, 3, axis=0)  # pairs (a, b) in row-major order
    vs = jnp.tile(dirs, (3, 1, 1))
    primal, d1, d2 = jax.vmap(second)(us, vs)
    out = pack(*(p[0] for p in primal))
    out["born_charges"] = -jnp.moveaxis(d1[1][::3], 0, 1)
    out["polarizability"] = -jnp.moveaxis(d1[3][::3], 0, 1)
    # d2[1][(a, b)] = d3E / deps_a deps_b dr -> (i, k, a, b)
    d3 = d2[1].reshape(3, 3, *d2[1].shape[1:])
    out["raman_tensors"] = -COULOMB * jnp.transpose(d3, (2, 3, 0, 1))
    return out
