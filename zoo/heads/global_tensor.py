"""Direct global tensor head: mean-pooled node features -> an intensive Cartesian tensor."""

from __future__ import annotations

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._blocks import linear
from ..graph import Graph
from ..irreps import irreps_of, to_cartesian
from .atom_tensor import _check_kind, scalar_shift


class GlobalTensorHead(eqx.Module):
    """Intensive per-structure tensor (dielectric ``symmetric2``, ``chi2``).

    Node features are averaged over each graph's real atoms (so a supercell gives the same
    value), mapped linearly to the kind's irreps, scaled and shifted on the 0e part.

    **Arguments** of `__init__`: `irreps_in`, `kind` (``"symmetric2"`` or ``"chi2"``),
    `scale`, `shift` (float for kinds with a 0e part, or ``None``), `dtype`, keyword-only `key`.
    """

    linear: e3nn.equinox.Linear
    kind: str = eqx.field(static=True)
    scale: float = eqx.field(static=True)
    shift: float | None = eqx.field(static=True)

    def __init__(self, irreps_in, kind: str, scale=1.0, shift=None, *, dtype, key):
        _check_kind(kind, ("symmetric2", "chi2"))
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.kind = kind
        self.scale = float(scale)
        self.shift = None if shift is None else float(shift)
        if self.shift is not None and "0e" not in str(irreps_of(kind)):
            raise ValueError(f"kind {kind!r} has no 0e part: shift must be None")
        self.linear = linear(irreps_in, irreps_of(kind), dtype=dtype, key=key)

    def __call__(self, features: e3nn.IrrepsArray, graph: Graph) -> Float[Array, "n_graphs ..."]:
        """`features` `(n_nodes, irreps_in)` -> `(n_graphs, 3, 3)` or `(n_graphs, 3, 3, 3)`."""
        return self.readout(mean_pool(features, graph))

    def readout(self, pooled: e3nn.IrrepsArray) -> Float[Array, "n_graphs ..."]:
        """Mean-pooled features `(n_graphs, irreps_in)` -> Cartesian tensors. Split from
        `__call__` so heads on a frozen trunk can be fit on cached pooled features."""
        y = self.linear(pooled)
        arr = self.scale * y.array
        if self.shift is not None:
            shift = jnp.full(arr.shape[:1], self.shift, arr.dtype)
            arr = arr + scalar_shift(y.irreps, shift, arr.dtype)
        return to_cartesian(self.kind, arr)


def mean_pool(features: e3nn.IrrepsArray, graph: Graph) -> e3nn.IrrepsArray:
    """Average of `features` `(n_nodes, irreps)` over each graph's real atoms `(n_graphs, irreps)`."""
    mask = graph.node_mask[:, None]
    summed = jax.ops.segment_sum(
        jnp.where(mask, features.array, 0), graph.node_graph, num_segments=graph.n_graphs
    )
    count = jnp.maximum(graph.n_node, 1).astype(summed.dtype)[:, None]
    return e3nn.IrrepsArray(features.irreps, summed / count)
