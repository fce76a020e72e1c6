"""Equivariant layers of the Hubbard networks (:mod:`zoo.hubbard._models`).

A "tensor square -> linear" pair is e3nn-torch's ``o3.TensorSquare(irreps_in, irreps_out)``
with learned weights; a "tensor product -> linear" pair its ``FullyConnectedTensorProduct``.
Only the kept output irreps are computed. Each layer also has a dense form, one bilinear
coefficient array (:meth:`TensorSquare.dense_coefficients`), the same function with one
contraction to compile. Gates: e3nn's gate with silu on even scalars and sigmoid on even
gates (all features are even), each scaled to unit second moment.

The linear maps store one ``(mul_in, mul_out)`` matrix per output irrep
(:class:`IrrepsLinear`), not e3nn-jax's ``Linear`` (``zoo._blocks.linear``): the dense form,
the data-dependent init of :func:`zoo.hubbard.fit_scalers` and the numpy inference in
:mod:`zoo.hubbard._infer` address those matrices, and saved model files name them.
"""

import functools
import math

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._blocks import activation
from .._dtype import resolve_float


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


def _scaled(name: str):
    """Activation `name` of ``zoo._blocks`` times its :func:`_second_moment_scale`."""
    act, scale = activation(name), _second_moment_scale(name)
    return lambda z: act(z) * scale


def _gate(x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
    """HubbardML/e3psi gate for even irreps (``e3nn.gate``): silu on the first scalars, the
    last scalars (one per non-scalar copy) through a sigmoid multiply the non-scalars. The
    activations are normalised here, with the quadrature constant the numpy inference uses."""
    return e3nn.gate(
        x, even_act=_scaled("silu"), even_gate_act=_scaled("sigmoid"), normalize_act=False
    )


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


__all__ = ["IrrepsLinear", "TensorSquare", "TensorProduct", "gated_irreps"]
