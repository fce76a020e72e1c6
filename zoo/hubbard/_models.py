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

A "tensor square -> linear" pair is e3nn-torch's ``o3.TensorSquare(irreps_in, irreps_out)``
with learned weights. Gates: silu on even scalars, sigmoid on even gates (all features are even).
``target_mean``/``target_std`` and the input standardisation ``input_stats`` are data statistics
of the *training* split. They live in the static ``config``, so an optimiser never updates or
decays them; set them with :func:`fit_scalers`.
"""

import functools
import math
from typing import Any

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._dtype import resolve_float
from .._serialization import FORMAT_VERSION
from ._features import edge_irreps, onsite_irreps, site_irreps

ONSITE_TYPE = "hubbard-onsite"
INTERSITE_TYPE = "hubbard-intersite"
_NORMALIZATIONS = ("component", "norm")


def _zoo_version() -> str:
    # the model-folder format version that zoo.hub reads (not the package version)
    return FORMAT_VERSION


@functools.partial(jax.jit, static_argnums=(1, 2))
def _normal(key: PRNGKeyArray, shapes: tuple, dtype) -> tuple[Array, ...]:
    # one compiled call for all weights of a model (one eager op per weight compiles each)
    return tuple(
        jax.random.normal(k, s, dtype) for k, s in zip(jax.random.split(key, len(shapes)), shapes)
    )


def _init_normal(modules, key: PRNGKeyArray | None, dtype):
    """`modules` with every array leaf redrawn from N(0, 1) in one compiled call; with
    ``key=None`` unchanged (the zero placeholders of a skeleton to load weights into)."""
    if key is None:
        return modules
    leaves, treedef = jax.tree_util.tree_flatten(modules)
    return jax.tree_util.tree_unflatten(
        treedef, _normal(key, tuple(x.shape for x in leaves), dtype)
    )


class IrrepsLinear(eqx.Module):
    """Equivariant linear map: one ``(mul_in, mul_out)`` weight per output irrep, no bias."""

    weights: tuple[Array, ...]
    irreps_in: e3nn.Irreps = eqx.field(static=True)
    irreps_out: e3nn.Irreps = eqx.field(static=True)

    def __init__(self, irreps_in, irreps_out, dtype=None, *, key: PRNGKeyArray | None):
        """`irreps_in` (regrouped), `irreps_out`: each output irrep must occur in `irreps_in`.
        `key=None` leaves zero placeholders for a parent to fill (see `_init_normal`)."""
        self.irreps_in = e3nn.Irreps(irreps_in).regroup()
        self.irreps_out = e3nn.Irreps(irreps_out).regroup()
        mul_in = {ir: mul for mul, ir in self.irreps_in}
        missing = [str(ir) for _, ir in self.irreps_out if ir not in mul_in]
        if missing:
            raise ValueError(f"IrrepsLinear: outputs {missing} do not occur in {self.irreps_in}")
        shapes = tuple((mul_in[ir], mul) for mul, ir in self.irreps_out)
        dtype = resolve_float(dtype)
        if key is None:
            self.weights = tuple(np.zeros(shape, dtype) for shape in shapes)
        else:
            self.weights = _normal(key, shapes, dtype)

    def __call__(self, x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        """`x` of irreps `irreps_in` (any leading shape) -> irreps `irreps_out`."""
        x = x.regroup()
        if x.irreps != self.irreps_in:
            raise ValueError(f"IrrepsLinear: expected irreps {self.irreps_in}, got {x.irreps}")
        chunks = {ir: c for (_, ir), c in zip(x.irreps, x.chunks)}
        out = []
        for (_, ir), w in zip(self.irreps_out, self.weights):
            c = chunks[ir]
            # 1/sqrt(fan_in) keeps unit-variance inputs at unit variance ("element" normalisation)
            out.append(
                None if c is None else jnp.einsum("...ui,uw->...wi", c, w) / math.sqrt(w.shape[0])
            )
        return e3nn.from_chunks(self.irreps_out, out, x.shape[:-1], x.dtype)


def _paths(irreps_1: e3nn.Irreps, irreps_2: e3nn.Irreps, keep: e3nn.Irreps, square: bool):
    """Bilinear paths ``(i1, i2, ir_out, u_idx, v_idx)`` into the irreps of `keep` only.

    With ``square=True`` (x (x) x) the pair of copies (u, v) and (v, u) is counted once, and
    odd-L outputs of a copy with itself (identically zero) are skipped. Computing only the
    kept outputs avoids e3nn's Clebsch-Gordan tables up to L = 16 (seconds of setup).
    """
    wanted = {ir for _, ir in keep}
    paths = []
    for i1, (mul_1, ir_1) in enumerate(irreps_1):
        for i2, (mul_2, ir_2) in enumerate(irreps_2):
            if square and i2 < i1:
                continue
            for ir in ir_1 * ir_2:
                if ir not in wanted:
                    continue
                if square and i1 == i2:
                    u, v = np.triu_indices(mul_1, k=1 if ir.l % 2 else 0)
                else:
                    u, v = (
                        a.reshape(-1)
                        for a in np.meshgrid(np.arange(mul_1), np.arange(mul_2), indexing="ij")
                    )
                if u.size:
                    paths.append((i1, i2, ir, u, v))
    return paths, e3nn.Irreps([(len(u), ir) for _, _, ir, u, _ in paths])


def _bilinear(x1: e3nn.IrrepsArray, x2: e3nn.IrrepsArray, paths, irreps_out, normalization):
    chunks = []
    for i1, i2, ir, u, v in paths:
        (_, ir_1), (_, ir_2) = x1.irreps[i1], x2.irreps[i2]
        alpha = ir.dim if normalization == "component" else ir_1.dim * ir_2.dim
        cg = jnp.asarray(e3nn.clebsch_gordan(ir_1.l, ir_2.l, ir.l) * math.sqrt(alpha), x1.dtype)
        a, b = x1.chunks[i1][..., u, :], x2.chunks[i2][..., v, :]
        chunks.append(jnp.einsum("...ui,...uj,ijk->...uk", a, b, cg))
    leading = jnp.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
    return e3nn.from_chunks(irreps_out, chunks, leading, x1.dtype)


def _dense_coefficients(
    irreps_1: e3nn.Irreps, irreps_2: e3nn.Irreps, linear: IrrepsLinear, normalization: str, square
) -> Float[np.ndarray, "d1 d2 d_out"]:
    """``W`` with ``linear(_bilinear(x1, x2)) == einsum("...i,...j,ijk->...k", x1, x2, W)``.

    Built in numpy (float64) from the path list and the linear weights: the same bilinear map
    as the path-by-path form, but one contraction to compile instead of a few ops per path,
    which is what makes the first prediction fast (compile time ~ graph size).
    """
    paths, _ = _paths(irreps_1, irreps_2, linear.irreps_out, square=square)
    sl_1, sl_2 = irreps_1.slices(), irreps_2.slices()
    out_slices = {ir: sl for (_, ir), sl in zip(linear.irreps_out, linear.irreps_out.slices())}
    weights = {
        ir: np.asarray(w, np.float64) for (_, ir), w in zip(linear.irreps_out, linear.weights)
    }
    W = np.zeros((irreps_1.dim, irreps_2.dim, linear.irreps_out.dim))
    row = dict.fromkeys(weights, 0)  # next input copy of each output irrep (paths in order)
    for i1, i2, ir, u, v in paths:
        (_, ir_1), (_, ir_2) = irreps_1[i1], irreps_2[i2]
        alpha = ir.dim if normalization == "component" else ir_1.dim * ir_2.dim
        cg = e3nn.clebsch_gordan(ir_1.l, ir_2.l, ir.l) * math.sqrt(alpha)
        w = weights[ir][row[ir] : row[ir] + len(u)] / math.sqrt(weights[ir].shape[0])
        row[ir] += len(u)
        sl = out_slices[ir]
        block = np.einsum("ijk,cw->cijwk", cg, w).reshape(len(u), ir_1.dim, ir_2.dim, -1)
        a = sl_1[i1].start + u[:, None] * ir_1.dim + np.arange(ir_1.dim)  # (copies, d1)
        b = sl_2[i2].start + v[:, None] * ir_2.dim + np.arange(ir_2.dim)
        # distinct copies (u, v) and paths never share an entry: plain assignment suffices
        W[a[:, :, None, None], b[:, None, :, None], np.arange(sl.start, sl.stop)] = block
    return W


def _dense_apply(x1: e3nn.IrrepsArray, x2: e3nn.IrrepsArray, W, irreps_out) -> e3nn.IrrepsArray:
    t = jnp.einsum("...i,ijk->...jk", x1.array, jnp.asarray(W, x1.dtype))
    y = jnp.einsum("...j,...jk->...k", x2.array, t)
    return e3nn.IrrepsArray(irreps_out, y)


def _with_gates(irreps_out: e3nn.Irreps) -> e3nn.Irreps:
    # one gate scalar per non-scalar irrep copy, after the activated scalars
    n_gates = sum(mul for mul, ir in irreps_out if ir.l > 0)
    return (e3nn.Irreps(f"{n_gates}x0e") + irreps_out).regroup()


@functools.cache
def _second_moment_scale(name: str) -> float:
    # 1/sqrt(E[f(z)^2]), z ~ N(0, 1) (e3nn's normalize_act), by Gauss-Hermite quadrature
    z, w = np.polynomial.hermite_e.hermegauss(80)
    f = {"silu": z / (1 + np.exp(-z)), "sigmoid": 1 / (1 + np.exp(-z))}[name]
    return float(1 / np.sqrt(np.sum(w * f**2) / np.sum(w)))


def gated_irreps(irreps: e3nn.Irreps) -> e3nn.Irreps:
    """Irreps after :func:`_gate` of regrouped `irreps` (the inverse of :func:`_with_gates`)."""
    (n0, _), rest = irreps[0], irreps[1:]
    return e3nn.Irreps(f"{n0 - sum(mul for mul, _ in rest)}x0e") + rest


def _gate(x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
    """HubbardML/e3psi gate for even irreps: silu on the first scalars, the last scalars
    (one per non-scalar copy) through a sigmoid multiply the non-scalars. `x` is regrouped."""
    (n0, _), rest = x.irreps[0], x.irreps[1:]
    n_gates = sum(mul for mul, _ in rest)
    scalars = x.chunks[0][..., 0]
    extra = jax.nn.silu(scalars[..., : n0 - n_gates]) * _second_moment_scale("silu")
    gates = jax.nn.sigmoid(scalars[..., n0 - n_gates :]) * _second_moment_scale("sigmoid")
    chunks, start = [extra[..., None]], 0
    for (mul, _), c in zip(rest, x.chunks[1:]):
        chunks.append(c * gates[..., start : start + mul, None])
        start += mul
    return e3nn.from_chunks(gated_irreps(x.irreps), chunks, x.shape[:-1], x.dtype)


def _squash(x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
    """Every irrep copy ``v -> v / sqrt(1 + |v|^2)``: equivariant (a function of the invariant
    norm) and bounded by 1, so a chain of tensor squares stays bounded off the training data."""
    chunks = [
        None if c is None else c / jnp.sqrt(1 + jnp.sum(c**2, axis=-1, keepdims=True))
        for c in x.chunks
    ]
    return e3nn.from_chunks(x.irreps, chunks, x.shape[:-1], x.dtype)


class TensorSquare(eqx.Module):
    """``x -> linear(x (x) x)`` onto `irreps_out` (e3nn-torch's weighted ``o3.TensorSquare``),
    optionally followed by a gate (then `irreps_out` gets the gate scalars added)."""

    linear: IrrepsLinear
    irreps_in: e3nn.Irreps = eqx.field(static=True)
    normalization: str = eqx.field(static=True)
    gate: bool = eqx.field(static=True)
    squash: bool = eqx.field(static=True)

    def __init__(
        self, irreps_in, irreps_out, normalization, gate, dtype=None, *, key, squash=False
    ):
        """`squash`: :func:`_squash` after the gate (needs `gate`)."""
        self.irreps_in = e3nn.Irreps(irreps_in).regroup()
        self.normalization = normalization
        self.gate = gate
        self.squash = squash and gate
        out = _with_gates(e3nn.Irreps(irreps_out)) if gate else e3nn.Irreps(irreps_out)
        _, irreps_mid = _paths(self.irreps_in, self.irreps_in, out, square=True)
        self.linear = IrrepsLinear(irreps_mid, out, dtype, key=key)

    def pre_gate(self, x: e3nn.IrrepsArray, dense=None) -> e3nn.IrrepsArray:
        x = x.regroup()
        if dense is not None:
            return _dense_apply(x, x, dense, self.linear.irreps_out)
        paths, irreps_mid = _paths(x.irreps, x.irreps, self.linear.irreps_out, square=True)
        return self.linear(_bilinear(x, x, paths, irreps_mid, self.normalization))

    def dense_coefficients(self) -> Float[np.ndarray, "d d d_out"]:
        """The layer before its gate as one bilinear form (see :func:`_dense_coefficients`)."""
        irr = self.irreps_in
        return _dense_coefficients(irr, irr, self.linear, self.normalization, square=True)

    def __call__(self, x: e3nn.IrrepsArray, dense=None) -> e3nn.IrrepsArray:
        """`dense`: this layer's :meth:`dense_coefficients` (same result, faster to compile)."""
        y = self.pre_gate(x, dense)
        y = _gate(y) if self.gate else y
        return _squash(y) if self.squash else y


class TensorProduct(eqx.Module):
    """``(x1, x2) -> linear(x1 (x) x2)`` (e3nn-torch's FullyConnectedTensorProduct) (+ gate)."""

    linear: IrrepsLinear
    irreps_1: e3nn.Irreps = eqx.field(static=True)
    irreps_2: e3nn.Irreps = eqx.field(static=True)
    normalization: str = eqx.field(static=True)
    gate: bool = eqx.field(static=True)
    squash: bool = eqx.field(static=True)

    def __init__(
        self, irreps_1, irreps_2, irreps_out, normalization, gate, dtype=None, *, key, squash=False
    ):
        """`squash`: :func:`_squash` after the gate (needs `gate`)."""
        self.normalization = normalization
        self.gate = gate
        self.squash = squash and gate
        out = _with_gates(e3nn.Irreps(irreps_out)) if gate else e3nn.Irreps(irreps_out)
        self.irreps_1 = e3nn.Irreps(irreps_1).regroup()
        self.irreps_2 = e3nn.Irreps(irreps_2).regroup()
        _, irreps_mid = _paths(self.irreps_1, self.irreps_2, out, square=False)
        self.linear = IrrepsLinear(irreps_mid, out, dtype, key=key)

    def pre_gate(self, x1: e3nn.IrrepsArray, x2: e3nn.IrrepsArray, dense=None) -> e3nn.IrrepsArray:
        x1, x2 = x1.regroup(), x2.regroup()
        if dense is not None:
            return _dense_apply(x1, x2, dense, self.linear.irreps_out)
        paths, irreps_mid = _paths(x1.irreps, x2.irreps, self.linear.irreps_out, square=False)
        return self.linear(_bilinear(x1, x2, paths, irreps_mid, self.normalization))

    def dense_coefficients(self) -> Float[np.ndarray, "d1 d2 d_out"]:
        """The layer before its gate as one bilinear form (see :func:`_dense_coefficients`)."""
        return _dense_coefficients(
            self.irreps_1, self.irreps_2, self.linear, self.normalization, square=False
        )

    def __call__(self, x1: e3nn.IrrepsArray, x2: e3nn.IrrepsArray, dense=None) -> e3nn.IrrepsArray:
        """`dense`: this layer's :meth:`dense_coefficients` (same result, faster to compile)."""
        y = self.pre_gate(x1, x2, dense)
        y = _gate(y) if self.gate else y
        return _squash(y) if self.squash else y


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


class OnsiteModel(eqx.Module):
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
        < 1, see :func:`_squash`; HubbardML's network has no such bound), the data statistics
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


class IntersiteModel(eqx.Module):
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


def fit_scalers(model, inputs, targets: Float[np.ndarray, " n"], *, init_weights: bool = True):
    """The same model (same weights) with its data statistics fit on the **training** split.

    **Arguments:**

    - `model`: an :class:`OnsiteModel` or :class:`IntersiteModel`.
    - `inputs`: training features, `(n, dim)` for U (:func:`onsite_features`), or the tuple
      `(p_site, d_site, edge)` for V (:func:`intersite_features`); IrrepsArrays or arrays.
    - `targets`: the training targets (eV), shape `(n,)`.
    - `init_weights`: also rescale every layer's weights (one factor per output irrep type) so
      that its pre-activations have unit RMS on these inputs, layer after layer (a
      data-dependent init, as LSUV). Without it a chain of tensor squares starts with outputs
      ~100x the target spread and trains poorly. Call it before training.

    **Returns:** a new model whose config holds ``target_mean``/``target_std`` (mean and std of
    `targets`) and ``input_stats`` (:func:`input_statistics`).
    """
    t = np.asarray(targets, dtype=np.float64).reshape(-1)
    if t.size < 2 or not np.isfinite(t).all():
        raise ValueError(f"targets: need >= 2 finite values, got {t.size}")
    if model.config["model_type"] == ONSITE_TYPE:
        names = {"x": model.irreps_in}
        inputs = (inputs,)
    else:
        names = model.irreps_in
        if not isinstance(inputs, tuple | list) or len(inputs) != 3:
            raise ValueError("inputs: expected the tuple (p_site, d_site, edge) for V")
    stats, raw = {}, {}
    for (k, ir), x in zip(names.items(), inputs):
        x = np.asarray(x.array if isinstance(x, e3nn.IrrepsArray) else x)
        if x.shape[0] != t.size:
            raise ValueError(f"inputs {k}: {x.shape[0]} rows but {t.size} targets")
        stats[k], raw[k] = input_statistics(x, ir), x
    # a residual model's scalers describe the change from the run's parameter, not the label
    t = t - param_offset(model.config, raw["x" if "x" in raw else "edge"])
    std = float(t.std())
    config = {
        **model.config,
        "target_mean": float(t.mean()),
        "target_std": std if std > 1e-8 else 1.0,
        "input_stats": stats,
    }
    skeleton = type(model).skeleton_from_config(config)
    model = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(skeleton), jax.tree_util.tree_leaves(model)
    )
    if not init_weights:
        return model
    rows = np.random.default_rng(0).permutation(t.size)[:1024]
    dtype = model.readout.linear.weights[0].dtype
    xs = [
        _standardize(_as_input(np.asarray(getattr(x, "array", x))[rows], ir, dtype, k), stats[k])
        for (k, ir), x in zip(names.items(), inputs)
    ]
    if model.config["model_type"] == ONSITE_TYPE:
        h, layers = xs[0], []
    else:
        sites, h = _unit_rms(model.sites, xs[0], xs[1])
        edge, h = _unit_rms(model.edge, h, xs[2])
        model = eqx.tree_at(lambda m: (m.sites, m.edge), model, (sites, edge))
        layers = []
    for layer in model.layers:
        layer, h = _unit_rms(layer, h)
        layers.append(layer)
    readout, _ = _unit_rms(model.readout, h)
    return eqx.tree_at(lambda m: (m.layers, m.readout), model, (tuple(layers), readout))


@eqx.filter_jit
def _pre_and_out(layer, *xs):
    pre = layer.pre_gate(*xs)
    rms = [jnp.sqrt(jnp.mean(c**2)) for c in pre.chunks]  # one per output irrep type
    return rms, layer(*xs)


def _unit_rms(layer, *xs):
    rms, _ = _pre_and_out(layer, *xs)
    weights = tuple(w / jnp.where(r > 1e-12, r, 1.0) for w, r in zip(layer.linear.weights, rms))
    layer = eqx.tree_at(lambda m: m.linear.weights, layer, weights)
    return layer, _pre_and_out(layer, *xs)[1]


__all__ = [
    "ONSITE_TYPE",
    "INTERSITE_TYPE",
    "IrrepsLinear",
    "TensorSquare",
    "TensorProduct",
    "OnsiteModel",
    "IntersiteModel",
    "input_statistics",
    "intersite_input_irreps",
    "param_offset",
    "fit_scalers",
]
