"""Channel-wise tensor product of per-edge features with spherical harmonics.

``e3nn.tensor_product`` contracts dense Clebsch-Gordan blocks path by path with ``einsum`` in
the ``(mul, dim)`` layout; for per-edge products that is slow on CPU. Here features are kept
*component-major*, ``(batch, dim, mul)`` (:func:`to_components`), and all paths are done at
once: the channel-free operand (spherical harmonics) is contracted with every CG block in one
product, ``M[e, i, k] = sum_j C[i, j, k] y[e, j]`` (``C`` holds all paths, built once per
irreps), then ``out[e, k, c] = sum_i x[e, i, c] M[e, i, k]`` is a short sum over the input
components that XLA fuses into one loop. A few large ops instead of one per CG entry keeps the
compile time in seconds. Normalisation is e3nn's ``"component"`` (CG scaled by
``sqrt(2 l3 + 1)``).
"""

from __future__ import annotations

import functools

import e3nn_jax as e3nn
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
    cg, path_of = _path_tables(
        tuple(ir for _, ir in irreps_x), tuple(ir for _, ir in y.irreps),
        tuple(sorted({ir for _, ir in e3nn.Irreps(keep)})),
    )  # fmt: skip
    # m[b, i, k] = sum_j C[i, j, k] y[b, j]: the channel-free operand meets all paths at once
    m = jnp.einsum("bj,ijk->bik", y.array, jnp.asarray(cg, x.dtype))
    # out[b, k, c] = sum_i x[b, i, c] m[b, i, k]: dim_x terms, fused into one loop by XLA
    out = sum(x[:, i, None, :] * m[:, i, :, None] for i in range(cg.shape[0]))
    if weights is not None:
        out = out * weights[:, path_of, :]
    return out


@functools.lru_cache(maxsize=64)
def _path_tables(irs_x: tuple, irs_y: tuple, keep: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The CG blocks of every path ``ir1 x ir2 -> ir3`` (``ir3`` in `keep`) in one array
    `(dim_x, dim_y, dim_out)`, and the path index of every output component `(dim_out,)`."""
    keep_set = set(keep)
    blocks = []  # (x offset, y offset, out offset, cg)
    dx, dy = sum(ir.dim for ir in irs_x), sum(ir.dim for ir in irs_y)
    out_dim, path_of, x0, n_paths = 0, [], 0, 0
    for ir1 in irs_x:
        y0 = 0
        for ir2 in irs_y:
            for ir3 in ir1 * ir2:
                if ir3 in keep_set:
                    blocks.append((x0, y0, out_dim, _cg(ir1.l, ir2.l, ir3.l)))
                    path_of += [n_paths] * ir3.dim
                    n_paths += 1
                    out_dim += ir3.dim
            y0 += ir2.dim
        x0 += ir1.dim
    cg = np.zeros((dx, dy, out_dim))
    for a, b, c, block in blocks:
        cg[a : a + block.shape[0], b : b + block.shape[1], c : c + block.shape[2]] = block
    return cg, np.asarray(path_of, np.int32)
