"""Equal models share one entry of JAX's jit cache.

``eqx.filter_jit`` keys its cache on the static part of a model's pytree, compared with ``==``.
e3nn-jax's equinox ``Linear`` keeps a ``FunctionalLinear`` there, which compares by identity:
two models built from the same config (a model and the same model loaded from its folder, or
one folder loaded twice) never compare equal, and each is traced and lowered anew (seconds per
padded shape, even when the persistent cache then spares the XLA compilation).
:func:`share_static` swaps every such object for one canonical instance per value.
"""

from __future__ import annotations

import copy

import e3nn_jax as e3nn
import equinox as eqx
import jax

#: one ``FunctionalLinear`` per value (:func:`_value`); its entries are small and immutable,
#: like the jit cache whose keys they are
_CANONICAL: dict[tuple, object] = {}


def _is_linear(node) -> bool:
    return isinstance(node, e3nn.equinox.Linear)


def _value(functional) -> tuple:
    """What a ``FunctionalLinear`` computes: its irreps and instructions (path shapes and
    weights; its output mask follows from them)."""
    return (
        str(functional.irreps_in),
        str(functional.irreps_out),
        tuple(tuple(ins) for ins in functional.instructions),
    )


def _shared(linear: e3nn.equinox.Linear) -> e3nn.equinox.Linear:
    canonical = _CANONICAL.setdefault(_value(linear._linear), linear._linear)
    if canonical is linear._linear:
        return linear
    out = copy.copy(linear)
    object.__setattr__(out, "_linear", canonical)  # a static field: no pytree path to it
    return out


def _linears(model) -> list:
    return [n for n in jax.tree_util.tree_leaves(model, is_leaf=_is_linear) if _is_linear(n)]


def share_static(model):
    """`model` with the canonical ``FunctionalLinear`` of each value, so that it compares equal
    (as a jit static argument) to every equal model; `model` itself when it already has them."""
    linears = _linears(model)
    shared = [_shared(lin) for lin in linears]
    if all(a is b for a, b in zip(linears, shared)):
        return model
    return eqx.tree_at(_linears, model, shared)
