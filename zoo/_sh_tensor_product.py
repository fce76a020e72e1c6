"""Channel-wise tensor product of per-edge features with spherical harmonics, on slabs.

``e3nn.tensor_product`` contracts dense Clebsch-Gordan blocks with ``einsum`` in the
``(mul, dim)`` layout; for per-edge products that is slow on CPU. Here features are kept
*component-major*, ``(batch, dim, mul)`` (:func:`to_components`), so every component is a
contiguous ``(batch, channels)`` slab, and each path ``l1 x l2 -> l3`` is written as a sum of
slab products with static indices over the non-zero CG entries, which XLA fuses into
vectorised elementwise loops (no batched tiny matmuls, no gathers). The channel-free second
operand (spherical harmonics) is first contracted with the CG block,
``M[e, i, k] = sum_j C[i, j, k] y[e, j]``. Normalisation is e3nn's ``"component"`` (CG
scaled by ``sqrt(2 l3 + 1)``). Derivatives go through a custom JVP written as batched
contractions (fast in reverse mode, and still differentiable again: forward-over-reverse).
"""

from __future__ import annotations

import functools

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


@functools.lru_cache(maxsize=256)
def _cg(l1: int, l2: int, l3: int) -> np.ndarray:
    return np.asarray(e3nn.clebsch_gordan(l1, l2, l3), np.float64) * np.sqrt(2 * l3 + 1)


def paths(irreps_x: e3nn.Irreps, irreps_y: e3nn.Irreps, keep: e3nn.Irreps) -> e3nn.Irreps:
    """Output irreps of :func:`channelwise_tensor_product`: one ``mul x ir_out`` per path,
    in the order (x irreps, y irreps, output l)."""
    keep_set = {ir for _, ir in e3nn.Irreps(keep)}
    out = []
    for mul, ir1 in e3nn.Irreps(irreps_x):
        for _, ir2 in e3nn.Irreps(irreps_y):
            for ir3 in ir1 * ir2:
                if ir3 in keep_set:
                    out.append((mul, ir3))
    return e3nn.Irreps(out)


def to_components(x: e3nn.IrrepsArray) -> Float[Array, "batch dim mul"]:
    """``(batch, mul x irreps)`` (one multiplicity) -> component-major ``(batch, dim, mul)``:
    each component is a contiguous row of channels, which XLA vectorises."""
    mul = single_mul(x.irreps)
    batch = x.shape[0]
    blocks = [
        x.array[:, sl].reshape(batch, mul, ir.dim).transpose(0, 2, 1)
        for sl, (_, ir) in zip(x.irreps.slices(), x.irreps)
    ]
    return jnp.concatenate(blocks, axis=1)


def from_components(irreps: e3nn.Irreps, comp: Float[Array, "batch dim mul"]) -> e3nn.IrrepsArray:
    """Inverse of :func:`to_components`."""
    chunks, start = [], 0
    for _, ir in irreps:
        chunks.append(comp[:, start : start + ir.dim, :].transpose(0, 2, 1))
        start += ir.dim
    return e3nn.from_chunks(irreps, chunks, (comp.shape[0],), comp.dtype)


def single_mul(irreps: e3nn.Irreps) -> int:
    muls = {mul for mul, _ in irreps}
    if len(muls) != 1:
        raise ValueError(f"expected one multiplicity for every irrep, got {irreps}")
    return muls.pop()


@functools.lru_cache(maxsize=64)
def _blocks(
    irreps_x: str, irreps_y: str, keep: str
) -> tuple[tuple[int, int, np.ndarray, tuple[int, ...]], ...]:
    """Per irrep of `x`: ``(start, d1, G, d3s)`` with ``G`` `(dim_y, d1 * D1)` the CG blocks of
    all its paths side by side (``M = y @ G``) and ``d3s`` the output size of each path."""
    keep_set = {ir for _, ir in e3nn.Irreps(keep)}
    irreps_y_ = e3nn.Irreps(irreps_y)
    out, start = [], 0
    for _, ir1 in e3nn.Irreps(irreps_x):
        cols, d3s = [], []
        for sl, (_, ir2) in zip(irreps_y_.slices(), irreps_y_):
            for ir3 in ir1 * ir2:
                if ir3 in keep_set:
                    g = np.zeros((irreps_y_.dim, ir1.dim, ir3.dim))
                    g[sl] = _cg(ir1.l, ir2.l, ir3.l).transpose(1, 0, 2)
                    cols.append(g)
                    d3s.append(ir3.dim)
        if cols:
            g = np.concatenate(cols, axis=2)  # (dim_y, d1, D1)
            out.append((start, ir1.dim, g.reshape(irreps_y_.dim, -1), tuple(d3s)))
        start += ir1.dim
    return tuple(out)


def channelwise_tensor_product(
    x: Float[Array, "batch dim_x mul"],
    irreps_x: e3nn.Irreps,
    y: e3nn.IrrepsArray,
    keep: e3nn.Irreps,
    weights: Float[Array, "batch num_paths mul"] | None = None,
) -> Float[Array, "batch dim_out mul"]:
    """``x (x) y`` channel by channel, in component-major layout (:func:`to_components`).

    `x` `(batch, irreps_x.dim // mul, mul)`; `y` `(batch, irreps_y)` with multiplicity-1
    irreps (e.g. spherical harmonics, each used with every channel); `weights`
    `(batch, n_paths, mul)` scale every path and channel (e.g. from a radial MLP).
    **Returns** `(batch, paths(...).dim // mul, mul)` for ``paths(irreps_x, y.irreps, keep)``.
    """
    if any(mul != 1 for mul, _ in y.irreps):
        raise ValueError(f"y must have multiplicity-1 irreps, got {y.irreps}")
    if weights is None:
        n_paths = paths(irreps_x, y.irreps, keep).num_irreps
        weights = jnp.ones((x.shape[0], n_paths, x.shape[-1]), x.dtype)
    spec = (str(irreps_x), str(y.irreps), str(e3nn.Irreps(keep)))
    return _weighted_product(spec, x, y.array, weights)


def _unweighted(x, m, start: int, d1: int) -> Float[Array, "batch D mul"]:
    """``t[b, k, c] = sum_i x[b, start + i, c] m[b, i, k]``: one broadcast multiply-add per
    input component (d1 <= 7) over all outputs k, vectorised over the channels."""
    return sum(x[:, start + i, None, :] * m[:, i, :, None] for i in range(d1))


def _path_weights(weights, path: int, d3s: tuple[int, ...]) -> Float[Array, "batch D mul"]:
    """Each path's weights repeated over its output components."""
    batch, _, mul = weights.shape
    w = [
        jnp.broadcast_to(weights[:, path + p, None, :], (batch, d, mul)) for p, d in enumerate(d3s)
    ]
    return jnp.concatenate(w, axis=1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _weighted_product(spec, x, y, weights):
    """The product on arrays; `spec` the irreps strings ``(x, y, keep)``."""
    blocks, path = [], 0
    for start, d1, g, d3s in _blocks(*spec):
        # every path of this x irrep at once: M[e, i, k] = sum_j C[i, j, k] y[e, j]
        m = (y @ jnp.asarray(g, y.dtype)).reshape(x.shape[0], d1, -1)
        blocks.append(_unweighted(x, m, start, d1) * _path_weights(weights, path, d3s))
        path += len(d3s)
    return jnp.concatenate(blocks, axis=1)


@_weighted_product.defjvp
def _weighted_product_jvp(spec, primals, tangents):
    # Both tangents are batched contractions, so their transposes (the reverse pass) are one
    # small dot per edge; the transpose of the slab sum instead reduces the cotangent over
    # the short channel axis element by element (a layer's reverse pass 1.8x slower).
    x, y, weights = primals
    dx, dy, dw = tangents
    blocks, path = [], 0
    for start, d1, g, d3s in _blocks(*spec):
        g = jnp.asarray(g, y.dtype)
        m = (y @ g).reshape(x.shape[0], d1, -1)
        dm = (dy @ g).reshape(m.shape)
        t = _unweighted(x, m, start, d1)
        dt = jnp.einsum("bic,bik->bkc", dx[:, start : start + d1], m)
        dt = dt + jnp.einsum("bic,bik->bkc", x[:, start : start + d1], dm)
        w = _path_weights(weights, path, d3s)
        blocks.append(dt * w + t * _path_weights(dw, path, d3s))
        path += len(d3s)
    return _weighted_product(spec, x, y, weights), jnp.concatenate(blocks, axis=1)
