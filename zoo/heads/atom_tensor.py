"""Direct per-atom tensor head: node features -> irreps of a tensor kind -> Cartesian tensor."""

from __future__ import annotations

from collections.abc import Sequence

import e3nn_jax as e3nn
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._blocks import linear
from ..irreps import irreps_of, to_cartesian


def _check_kind(kind: str, allowed: Sequence[str]) -> None:
    if kind not in allowed:
        raise ValueError(f"kind must be one of {tuple(allowed)}, got {kind!r}")


def scalar_shift(irreps: e3nn.Irreps, shift: Float[Array, " n"], dtype) -> Float[Array, "n dim"]:
    """Put a per-row scalar into the first 0e slot of `irreps` (zeros elsewhere)."""
    dims = [mul_ir.dim for mul_ir in irreps]
    starts = [sum(dims[:k]) for k in range(len(dims))]
    slots = [s for s, mul_ir in zip(starts, irreps) if mul_ir.ir == e3nn.Irrep("0e")]
    if not slots:
        raise ValueError(f"irreps {irreps} have no 0e component to shift")
    out = jnp.zeros(shift.shape + (irreps.dim,), dtype)
    return out.at[..., slots[0]].set(shift.astype(dtype))


class AtomTensorHead(eqx.Module):
    """Per-atom Cartesian tensor of a `zoo.irreps` kind, read out linearly from node features.

    Output ``= to_cartesian(kind, scale * Linear(features) + shift[species] * 0e)``: the
    per-species shift acts on the invariant (0e) part only, so equivariance is exact.

    **Arguments** of `__init__`: `irreps_in` (node feature irreps), `kind` (``"rank2"``,
    ``"rank2_axial"`` or ``"raman"``), `scale` (float, target units), `shift` (one float per
    species for kinds with a 0e part, or ``None``), `dtype`, keyword-only `key`.
    """

    linear: e3nn.equinox.Linear
    kind: str = eqx.field(static=True)
    scale: float = eqx.field(static=True)
    shift: tuple[float, ...] | None = eqx.field(static=True)

    def __init__(self, irreps_in, kind: str, scale=1.0, shift=None, *, dtype, key):
        _check_kind(kind, ("rank2", "rank2_axial", "raman"))
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.kind = kind
        self.scale = float(scale)
        self.shift = None if shift is None else tuple(float(s) for s in shift)
        if self.shift is not None and "0e" not in str(irreps_of(kind)):
            raise ValueError(f"kind {kind!r} has no 0e part: shift must be None")
        self.linear = linear(irreps_in, irreps_of(kind), dtype=dtype, key=key)

    def __call__(
        self, features: e3nn.IrrepsArray, species: Int[Array, " n_nodes"]
    ) -> Float[Array, "n_nodes ..."]:
        """`features` `(n_nodes, irreps_in)`, `species` `(n_nodes,)` indices -> `(n_nodes, 3, 3)`
        or `(n_nodes, 3, 3, 3)`."""
        y = self.linear(features)
        arr = self.scale * y.array
        if self.shift is not None:
            table = jnp.asarray(self.shift, arr.dtype)
            arr = arr + scalar_shift(y.irreps, table[species], arr.dtype)
        return to_cartesian(self.kind, arr)
