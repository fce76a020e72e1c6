"""Hubbard U (on-site) and V (inter-site) models, after HubbardML / e3psi (npj Comput Mater 2025).

Both act on the spin-flip-invariant occupation irreps of :mod:`zoo.hubbard._features` (one
sample; batch with ``jax.vmap`` or leading axes) and return one scalar in eV:

- :class:`OnsiteModel` (U): ``hidden_layers`` x (tensor square -> linear -> gate), then a tensor
  square -> linear -> ``1x0e``, then ``y = target_std * x + target_mean``.
- :class:`IntersiteModel` (V): tensor product of the p-site and d-site features -> linear
  (no activation); tensor product with the edge (``2x0e``, + bond harmonics up to
  ``bond_lmax``) -> linear -> gate; ``hidden_layers - 1``
  x (tensor square -> linear -> gate); tensor square -> linear -> ``1x0e``; rescaling.

With ``residual=True`` either model predicts the *change* from the parameter the pw.x run used,
``y = U_in + target_std * x + target_mean`` (V alike): the network fits the hp.x correction, so a
run that is already self-consistent needs only a small output, where a direct fit has to
rebuild U_in from its inputs (HubbardML's form; its later-iteration errors exceed the
U_in baseline's).

The layers are in :mod:`zoo.hubbard._layers`. ``target_mean``/``target_std`` and the input standardisation ``input_stats`` are data statistics
of the *training* split. They live in the static ``config``, so an optimiser never updates or
decays them; set them with :func:`zoo.hubbard.fit_scalers`.
"""

import math
from typing import Any

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._dtype import resolve_float
from .._hub_mixin import HubMixin
from .._serialization import FORMAT_VERSION
from ._features import edge_irreps, onsite_irreps, site_irreps
from ._layers import TensorProduct, TensorSquare, _init_normal
from ._prediction import PredictsRuns

ONSITE_TYPE = "hubbard-onsite"
INTERSITE_TYPE = "hubbard-intersite"
_NORMALIZATIONS = ("component", "norm")


def _zoo_version() -> str:
    # the model-folder format version that zoo.hub reads (not the package version)
    return FORMAT_VERSION


def _as_input(x, irreps: e3nn.Irreps, dtype, name: str) -> e3nn.IrrepsArray:
    if isinstance(x, e3nn.IrrepsArray):
        if x.irreps != irreps:
            raise ValueError(f"{name}: expected irreps {irreps}, got {x.irreps}")
        x = x.array
    x = jnp.asarray(x, dtype=dtype)
    if x.ndim < 1 or x.shape[-1] != irreps.dim:
        raise ValueError(f"{name}: expected shape (..., {irreps.dim}), got {x.shape}")
    return e3nn.IrrepsArray(irreps, x)


def _standardize(x: e3nn.IrrepsArray, stats: dict | None) -> e3nn.IrrepsArray:
    if stats is None:
        return x
    mean = jnp.asarray(stats["mean"], dtype=x.dtype)
    scale = jnp.asarray(stats["scale"], dtype=x.dtype)
    return e3nn.IrrepsArray(x.irreps, (x.array - mean) * scale)


def input_statistics(x: Float[np.ndarray, "n dim"], irreps) -> dict[str, list[float]]:
    """Equivariant input scaling from training inputs: ``x -> (x - mean) * scale``.

    ``mean`` is 0 and ``scale`` is, per irrep copy (scalar column or l > 0 block), the inverse
    root-mean-square component over the rows (1 if that is below 1e-4). Scaling by the RMS, not by
    the standard deviation, brings every input to O(1) without blowing up the tiny spreads of
    a narrow training set (a degree-8 polynomial network extrapolates those violently).
    JSON-safe lists of length ``irreps.dim``.
    """
    irreps = e3nn.Irreps(irreps)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != irreps.dim or x.shape[0] < 2:
        raise ValueError(f"inputs: expected shape (n >= 2, {irreps.dim}), got {x.shape}")
    scale = np.ones(irreps.dim)
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        rms = np.sqrt((x[:, sl].reshape(len(x), mul, ir.dim) ** 2).mean(axis=(0, 2)))
        # an (almost) constant-zero column keeps scale 1: scaling it up turns placeholders
        # such as V_in = 1e-8 eV into O(1) inputs and predictions into nonsense
        scale[sl] = np.repeat(np.where(rms > 1e-4, 1.0 / np.maximum(rms, 1e-4), 1.0), ir.dim)
    return {"mean": np.zeros(irreps.dim).tolist(), "scale": scale.tolist()}


def _check_common(config: dict) -> None:
    species = config["species"]
    if (
        not species
        or len(set(species)) != len(species)
        or not all(isinstance(s, str) for s in species)
    ):
        raise ValueError(
            f"species must be a non-empty list of distinct element symbols, got {species!r}"
        )
    norm = config["irrep_normalization"]
    if norm not in _NORMALIZATIONS:
        raise ValueError(f"irrep_normalization must be one of {_NORMALIZATIONS}, got {norm!r}")
    if not isinstance(config["hidden_layers"], int) or config["hidden_layers"] < 1:
        raise ValueError(f"hidden_layers must be an integer >= 1, got {config['hidden_layers']!r}")
    irreps = e3nn.Irreps(config["feature_irreps"])
    if any(ir.p != 1 for _, ir in irreps) or "0e" not in irreps:
        raise ValueError(f"feature_irreps must be even-parity irreps with scalars, got {irreps}")
    std = config["target_std"]
    if not (math.isfinite(config["target_mean"]) and math.isfinite(std) and std > 0):
        raise ValueError(
            f"target_mean must be finite and target_std > 0, got {config['target_mean']}, {std}"
        )


class OnsiteModel(HubMixin, PredictsRuns, eqx.Module):
    """Hubbard U of one d (or p) site from its occupation irreps: scalar in eV."""

    layers: tuple[TensorSquare, ...]
    readout: TensorSquare
    config: dict[str, Any] = eqx.field(static=True)

    def __init__(
        self,
        species: list[str],
        *,
        l: int = 2,
        feature_irreps: str = "4x0e+4x1e+4x2e",
        hidden_layers: int = 2,
        irrep_normalization: str = "component",
        with_param_in: bool = True,
        residual: bool = False,
        squash: bool = False,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        input_stats: dict | None = None,
        dtype=None,
        key: PRNGKeyArray | None,
    ):
        """**Arguments:** `species` (one-hot order), `l` of the manifold (2: d), the hidden
        `feature_irreps` and number of gated `hidden_layers`, the tensor products'
        `irrep_normalization`, `with_param_in` (U_in as an input), `residual` (predict
        U - U_in; needs `with_param_in`), `squash` (bound every gated layer's irreps to norm
        < 1, see :func:`zoo.hubbard._layers._squash`; HubbardML's network has no such bound), the data statistics
        (`target_mean`, `target_std`, `input_stats`; set them with :func:`fit_scalers`),
        `dtype` (None: float32, or float64 under x64), `key` (None: zero weights, a skeleton
        to load weights into)."""
        dtype = resolve_float(dtype)
        self.config = {
            "model_type": ONSITE_TYPE,
            "zoo_version": _zoo_version(),
            "species": list(species),
            "l": int(l),
            "feature_irreps": str(e3nn.Irreps(feature_irreps)),
            "hidden_layers": hidden_layers,
            "irrep_normalization": irrep_normalization,
            "with_param_in": bool(with_param_in),
            "residual": bool(residual),
            "squash": bool(squash),
            "target_mean": float(target_mean),
            "target_std": float(target_std),
            "input_stats": input_stats,
            "dtype": jnp.dtype(dtype).name,
        }
        _check_common(self.config)
        _check_stats(input_stats, {"x": onsite_irreps(len(species), l, with_param_in)})
        if l not in (1, 2):
            raise ValueError(f"l must be 1 (p) or 2 (d), got {l!r}")
        if residual and not with_param_in:
            raise ValueError("residual=True predicts U - U_in: it needs with_param_in=True")
        irreps = onsite_irreps(len(species), l, with_param_in)
        layers = []
        for _ in range(hidden_layers):
            layers.append(
                TensorSquare(
                    irreps,
                    feature_irreps,
                    irrep_normalization,
                    True,
                    dtype,
                    key=None,
                    squash=squash,
                )  # fmt: skip
            )
            irreps = e3nn.Irreps(feature_irreps)
        readout = TensorSquare(irreps, "0e", irrep_normalization, False, dtype, key=None)
        self.layers, self.readout = _init_normal((tuple(layers), readout), key, dtype)

    @classmethod
    def from_config(cls, config: dict) -> "OnsiteModel":
        """A model of the right shapes (random weights, key 0) from a :attr:`config` dict."""
        return cls(**_init_kwargs(config, ONSITE_TYPE), key=jax.random.key(0))

    @classmethod
    def skeleton_from_config(cls, config: dict) -> "OnsiteModel":
        """:meth:`from_config` with zero weights (no random draw): for loading weights into."""
        return cls(**_init_kwargs(config, ONSITE_TYPE), key=None)

    @property
    def irreps_in(self) -> e3nn.Irreps:
        c = self.config
        return onsite_irreps(len(c["species"]), c["l"], c["with_param_in"])

    def dense_coefficients(self) -> tuple[np.ndarray, ...]:
        """Every layer's bilinear coefficients (layers, then readout), for ``dense=``."""
        return tuple(m.dense_coefficients() for m in (*self.layers, self.readout))

    def __call__(
        self, x: Float[Array, "... dim"] | e3nn.IrrepsArray, dense=None
    ) -> Float[Array, "..."]:
        """**Arguments:** `x`, :func:`onsite_features` (IrrepsArray or its `.array`), shape
        `(..., irreps_in.dim)`; `dense`: :meth:`dense_coefficients` of this model (the same
        function, one contraction per layer: compiles in a fraction of the time; inference).
        **Returns:** U in eV, shape `(...)`, in the model's dtype."""
        dtype = self.readout.linear.weights[0].dtype
        x = _as_input(x, self.irreps_in, dtype, "OnsiteModel input")
        offset = param_offset(self.config, x.array)
        x = _standardize(x, (self.config["input_stats"] or {}).get("x"))
        dense = dense or (None,) * (len(self.layers) + 1)
        for layer, w in zip(self.layers, dense):
            x = layer(x, w)
        y = self.readout(x, dense[-1]).array[..., 0]
        return self.config["target_std"] * y + self.config["target_mean"] + offset


class IntersiteModel(HubMixin, PredictsRuns, eqx.Module):
    """Hubbard V of one p-d pair from both sites' occupation irreps and the edge: eV."""

    sites: TensorProduct
    edge: TensorProduct
    layers: tuple[TensorSquare, ...]
    readout: TensorSquare
    config: dict[str, Any] = eqx.field(static=True)

    def __init__(
        self,
        species: list[str],
        *,
        feature_irreps: str = "4x0e+4x1e+4x2e+4x3e",
        hidden_layers: int = 2,
        irrep_normalization: str = "component",
        bond_lmax: int = 0,
        residual: bool = False,
        squash: bool = False,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        input_stats: dict | None = None,
        dtype=None,
        key: PRNGKeyArray | None,
    ):
        """Arguments as :class:`OnsiteModel`; `species` covers both the p and d elements,
        `bond_lmax` (even) the bond-direction harmonics in the edge (0: HubbardML's edge),
        `residual` (predict V - V_in),
        `input_stats` has the keys ``p_site``, ``d_site``, ``edge``."""
        dtype = resolve_float(dtype)
        self.config = {
            "model_type": INTERSITE_TYPE,
            "zoo_version": _zoo_version(),
            "species": list(species),
            "feature_irreps": str(e3nn.Irreps(feature_irreps)),
            "hidden_layers": hidden_layers,
            "irrep_normalization": irrep_normalization,
            "bond_lmax": bond_lmax,
            "residual": bool(residual),
            "squash": bool(squash),
            "target_mean": float(target_mean),
            "target_std": float(target_std),
            "input_stats": input_stats,
            "dtype": jnp.dtype(dtype).name,
        }
        _check_common(self.config)
        irreps_in = intersite_input_irreps(len(species), bond_lmax)
        _check_stats(input_stats, irreps_in)
        n, norm = len(species), irrep_normalization
        feats = e3nn.Irreps(feature_irreps)
        sites = TensorProduct(
            site_irreps(n, 1), site_irreps(n, 2), feats, norm, False, dtype, key=None
        )
        edge = TensorProduct(
            feats, irreps_in["edge"], feats, norm, True, dtype, key=None, squash=squash
        )
        layers = tuple(
            TensorSquare(feats, feats, norm, True, dtype, key=None, squash=squash)
            for _ in range(hidden_layers - 1)
        )
        readout = TensorSquare(feats, "0e", norm, False, dtype, key=None)
        self.sites, self.edge, self.layers, self.readout = _init_normal(
            (sites, edge, layers, readout), key, dtype
        )

    @classmethod
    def from_config(cls, config: dict) -> "IntersiteModel":
        """A model of the right shapes (random weights, key 0) from a :attr:`config` dict."""
        return cls(**_init_kwargs(config, INTERSITE_TYPE), key=jax.random.key(0))

    @classmethod
    def skeleton_from_config(cls, config: dict) -> "IntersiteModel":
        """:meth:`from_config` with zero weights (no random draw): for loading weights into."""
        return cls(**_init_kwargs(config, INTERSITE_TYPE), key=None)

    @property
    def irreps_in(self) -> dict[str, e3nn.Irreps]:
        c = self.config
        return intersite_input_irreps(len(c["species"]), c.get("bond_lmax", 0))

    def dense_coefficients(self) -> tuple[np.ndarray, ...]:
        """Every layer's bilinear coefficients (sites, edge, layers, readout), for ``dense=``."""
        return tuple(
            m.dense_coefficients() for m in (self.sites, self.edge, *self.layers, self.readout)
        )

    def __call__(self, p_site, d_site, edge, dense=None) -> Float[Array, "..."]:
        """**Arguments:** the three outputs of :func:`intersite_features` (IrrepsArrays or arrays),
        shapes `(..., p_dim)`, `(..., d_dim)`, `(..., edge_dim)`; `dense` as in
        :class:`OnsiteModel`. **Returns:** V in eV, shape `(...)`."""
        irreps = self.irreps_in
        stats = self.config["input_stats"] or {}
        dtype = self.readout.linear.weights[0].dtype
        p, d, e = (
            _as_input(v, irreps[k], dtype, f"IntersiteModel {k}")
            for k, v in (("p_site", p_site), ("d_site", d_site), ("edge", edge))
        )
        offset = param_offset(self.config, e.array)
        p, d, e = (_standardize(v, stats.get(k)) for k, v in zip(irreps, (p, d, e)))
        dense = dense or (None,) * (len(self.layers) + 3)
        x = self.edge(self.sites(p, d, dense[0]), e, dense[1])
        for layer, w in zip(self.layers, dense[2:]):
            x = layer(x, w)
        y = self.readout(x, dense[-1]).array[..., 0]
        return self.config["target_std"] * y + self.config["target_mean"] + offset


def param_offset(config: dict, x):
    """What a model adds to its rescaled output: the parameter of the run (U_in: the last
    column of the on-site features; V_in: column 1 of the edge, after the distance) for a
    ``residual`` model, else 0. `x`: the *raw* (unstandardised) on-site features or V edge,
    `(..., dim)` array (jax or numpy); returns `(...)` (or the scalar 0)."""
    if not config.get("residual", False):  # configs written before the option: direct
        return 0.0
    onsite = config.get("member_type", config["model_type"]) == ONSITE_TYPE  # ensembles too
    return x[..., -1] if onsite else x[..., 1]


def intersite_input_irreps(n_species: int, bond_lmax: int = 0) -> dict[str, e3nn.Irreps]:
    """Irreps of the three inputs of :class:`IntersiteModel`."""
    return {
        "p_site": site_irreps(n_species, 1),
        "d_site": site_irreps(n_species, 2),
        "edge": edge_irreps(bond_lmax),
    }


def _check_stats(stats: dict | None, irreps: dict[str, e3nn.Irreps]) -> None:
    if stats is None:
        return
    if not isinstance(stats, dict) or set(stats) != set(irreps):
        raise ValueError(f"input_stats must be None or a dict with keys {sorted(irreps)}")
    for k, ir in irreps.items():
        entry = stats[k]
        ok = isinstance(entry, dict) and set(entry) == {"mean", "scale"}
        if not ok or any(len(entry[f]) != ir.dim for f in ("mean", "scale")):
            raise ValueError(
                f"input_stats[{k!r}] must hold 'mean' and 'scale' lists of length {ir.dim}"
            )


def _init_kwargs(config: dict, model_type: str) -> dict:
    if not isinstance(config, dict) or config.get("model_type") != model_type:
        got = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"config: expected model_type {model_type!r}, got {got!r}")
    kwargs = {k: v for k, v in config.items() if k not in ("model_type", "zoo_version")}
    kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
    return kwargs


__all__ = [
    "ONSITE_TYPE",
    "INTERSITE_TYPE",
    "OnsiteModel",
    "IntersiteModel",
    "input_statistics",
    "intersite_input_irreps",
    "param_offset",
]
