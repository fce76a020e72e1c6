"""Channel-wise tensor product of per-edge features with spherical harmonics, on slabs.

``e3nn.tensor_product`` contracts dense Clebsch-Gordan blocks with ``einsum`` in the
``(mul, dim)`` layout; for per-edge products that is slow on CPU. Here features are kept
*component-major*, ``(batch, dim, mul)`` (:func:`to_components`), so every component is a
contiguous ``(batch, channels)`` slab, and each path ``l1 x l2 -> l3`` is written as a sum of
slab products with static indices over the non-zero CG entries, which XLA fuses into
vectorised elementwise loops (no batched tiny matmuls, no gathers). The channel-free second
operand (spherical harmonics) is first contracted with the CG block,
``M[e, i, k] = sum_j C[i, j, k] y[e, j]``. Normalisation is e3nn's ``"component"`` (CG
scaled by ``sqrt(2 l3 + 1)``).
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
    keep_set = {ir for _, ir in e3nn.Irreps(keep)}
    y_cols = {ir: y.array[:, sl] for sl, (_, ir) in zip(y.irreps.slices(), y.irreps)}
    comps, start, path = [], 0, 0
    for _, ir1 in irreps_x:
        x_slabs = [x[:, start + i, :] for i in range(ir1.dim)]
        start += ir1.dim
        for _, ir2 in y.irreps:
            yc = y_cols[ir2]
            for ir3 in ir1 * ir2:
                if ir3 not in keep_set:
                    continue
                cg = _cg(ir1.l, ir2.l, ir3.l)  # (d1, d2, d3)
                w = None if weights is None else weights[:, path, :]
                path += 1
                for k in range(ir3.dim):
                    total = jnp.zeros_like(x_slabs[0])
                    for i in range(ir1.dim):
                        js = np.flatnonzero(np.abs(cg[i, :, k]) > 1e-12)
                        if len(js):
                            m_ik = sum(float(cg[i, j, k]) * yc[:, j] for j in js)  # (batch,)
                            total = total + x_slabs[i] * m_ik[:, None]
                    comps.append(total if w is None else total * w)
    return jnp.stack(comps, axis=1)
