"""The mean of several Hubbard U (or V) models trained on the same split.

Restarts of the tensor-square networks that fit the training rows equally well still
disagree by several per cent on held-out rows; averaging them is ``recipes/hubbard_uv.py
--ensemble``. It is not the shipped default: measured there, the mean beat the restart of
lowest training MSE on some splits and lost on others (one member blowing up off the training
data spoils the mean). The members share one configuration (the same
species, layers and training-split scalers), so the ensemble's ``config`` is the members'
with ``model_type`` set to :data:`ENSEMBLE_TYPE`, the members' own type in ``member_type`` and
their number in ``n_members``: code that reads ``config["species"]`` etc. works unchanged.
"""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._hub_mixin import HubMixin
from .._registry import model_class
from ._models import INTERSITE_TYPE, ONSITE_TYPE, IntersiteModel, OnsiteModel
from ._prediction import PredictsRuns

ENSEMBLE_TYPE = "hubbard-ensemble"
MEMBER_TYPES = (ONSITE_TYPE, INTERSITE_TYPE)


class HubbardEnsemble(HubMixin, PredictsRuns, eqx.Module):
    """``mean(member(*inputs) for member in members)``: a U or a V model of ``n`` members."""

    members: tuple[OnsiteModel | IntersiteModel, ...]
    config: dict[str, Any] = eqx.field(static=True)

    def __init__(self, members):
        """`members`: one or more :class:`OnsiteModel`, or of :class:`IntersiteModel`, with
        identical configs (same architecture and scalers: restarts on one training split)."""
        members = tuple(members)
        if not members:
            raise ValueError("HubbardEnsemble: needs at least one member")
        first = members[0].config
        if first.get("model_type") not in MEMBER_TYPES:
            raise ValueError(
                f"HubbardEnsemble: members must be {list(MEMBER_TYPES)} models, "
                f"got {first.get('model_type')!r}"
            )
        for i, m in enumerate(members[1:], 1):
            if type(m) is not type(members[0]) or m.config != first:
                diff = sorted(
                    k for k in first.keys() | m.config.keys() if first.get(k) != m.config.get(k)
                )
                raise ValueError(
                    f"HubbardEnsemble: member {i} differs from member 0 in {diff or 'its type'} "
                    "(members must be restarts of one model on one training split)"
                )
        self.members = members
        self.config = {
            **first,
            "model_type": ENSEMBLE_TYPE,
            "member_type": first["model_type"],
            "n_members": len(members),
        }

    @classmethod
    def from_config(cls, config: dict) -> "HubbardEnsemble":
        """Members of the right shapes (random weights) from a :attr:`config` dict."""
        return cls._build(config, "from_config")

    @classmethod
    def skeleton_from_config(cls, config: dict) -> "HubbardEnsemble":
        """:meth:`from_config` with zero weights (no random draw): for loading weights into."""
        return cls._build(config, "skeleton_from_config")

    @classmethod
    def _build(cls, config: dict, how: str) -> "HubbardEnsemble":
        if not isinstance(config, dict) or config.get("model_type") != ENSEMBLE_TYPE:
            raise ValueError(f"config: expected model_type {ENSEMBLE_TYPE!r}")
        n = config.get("n_members")
        if config.get("member_type") not in MEMBER_TYPES or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"config: an ensemble needs member_type in {list(MEMBER_TYPES)} and "
                f"n_members >= 1, got {config.get('member_type')!r}, {n!r}"
            )
        member = {k: v for k, v in config.items() if k not in ("member_type", "n_members")}
        member["model_type"] = config["member_type"]
        member_class = model_class(config["member_type"])  # the package's one type table
        return cls(getattr(member_class, how)(member) for _ in range(n))

    @property
    def irreps_in(self):
        return self.members[0].irreps_in

    def dense_coefficients(self) -> tuple[tuple, ...]:
        """Every member's :meth:`dense_coefficients`, for ``dense=``."""
        return tuple(m.dense_coefficients() for m in self.members)

    def __call__(self, *inputs, dense=None) -> Float[Array, "..."]:
        """The members' inputs (`x` for U; `p_site, d_site, edge` for V); `dense`: this
        ensemble's :meth:`dense_coefficients`. **Returns:** the mean prediction, eV."""
        dense = dense or (None,) * len(self.members)
        return jnp.mean(jnp.stack([m(*inputs, dense=d) for m, d in zip(self.members, dense)]), 0)


__all__ = ["ENSEMBLE_TYPE", "HubbardEnsemble"]
