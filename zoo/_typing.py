"""jaxtyping aliases shared across zoo (shapes documented once, here)."""

from jaxtyping import Array, Bool, Float, Int

Positions = Float[Array, "n_nodes 3"]
Cells = Float[Array, "n_graphs 3 3"]
Strains = Float[Array, "n_graphs 3 3"]
EdgeVectors = Float[Array, "n_edges 3"]
EdgeIndex = Int[Array, " n_edges"]
NodeMask = Bool[Array, " n_nodes"]
EdgeMask = Bool[Array, " n_edges"]
GraphMask = Bool[Array, " n_graphs"]

__all__ = [
    "Positions",
    "Cells",
    "Strains",
    "EdgeVectors",
    "EdgeIndex",
    "NodeMask",
    "EdgeMask",
    "GraphMask",
]
