"""MACE's symmetric contraction: species-weighted symmetric powers of the atomic basis.

For every channel ``c`` independently, with ``A`` the per-channel irreps of the atomic basis,

    B[c, out] = sum_nu sum_k w_nu[z, k, c] U_nu[i1..i_nu, k, out] A[c, i1] ... A[c, i_nu]

where ``U_nu`` are the generalised Clebsch-Gordan coupling tensors of the symmetric power of
order ``nu`` (e3nn-jax's ``reduced_symmetric_tensor_product_basis``). They are computed once
at construction and folded over the permutations of their (symmetric) indices into a sparse
table: for each coupled output component, the few monomials ``A_i A_j A_k`` (``i <= j <= k``)
that feed it and their coefficients. A dense ``d**nu`` tensor (4,096 x 44 entries for
``0e+1o+2e+3o`` at order 3, ~1 % non-zero) is never contracted at run time.
"""

from __future__ import annotations

import functools
import itertools

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._sh_tensor_product import to_components


class _Table:
    """Hashable wrapper of a constant numpy array (a static field compares by content)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array

    def __hash__(self):
        return hash((self.array.shape, self.array.dtype.str, self.array.tobytes()))

    def __eq__(self, other):
        return (
            isinstance(other, _Table)
            and self.array.shape == other.array.shape
            and self.array.dtype == other.array.dtype
            and bool(np.array_equal(self.array, other.array))
        )


@functools.lru_cache(maxsize=64)
def coupling_table(irreps: str, degree: int, ir_out: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Sparse symmetric coupling of order `degree` from `irreps` (one channel) to `ir_out`.

    **Returns:** ``(index, value, K)``: `index` `(K * ir_out.dim, L, degree)` int32 indices
    into the ``irreps.dim`` components, `value` `(K * ir_out.dim, L)` float64 coefficients
    (zero-padded), and ``K`` the number of independent couplings (``0`` if none).
    Row ``k * dim + m`` is component ``m`` of the ``k``-th coupled copy of `ir_out`.
    """
    ir = e3nn.Irrep(ir_out)
    try:
        u = e3nn.reduced_symmetric_tensor_product_basis(e3nn.Irreps(irreps), degree, keep_ir=[ir])
        array = np.asarray(u.array, np.float64)  # (d,)*degree + (K * dim,)
    except ValueError:  # e3nn-jax raises when no coupling exists
        array = np.zeros((1,) * degree + (0,))
    n_rows = array.shape[-1]
    if n_rows == 0:
        return np.zeros((0, 1, degree), np.int32), np.zeros((0, 1)), 0
    rows: list[list[tuple[tuple[int, ...], float]]] = [[] for _ in range(n_rows)]
    for combo in itertools.combinations_with_replacement(range(array.shape[0]), degree):
        # A_i A_j A_k is symmetric: fold every permutation of the indices into one monomial
        coeff = sum(array[p] for p in set(itertools.permutations(combo)))
        for row in np.flatnonzero(np.abs(coeff) > 1e-10):
            rows[row].append((combo, float(coeff[row])))
    width = max(len(r) for r in rows)
    index = np.zeros((n_rows, width, degree), np.int32)
    value = np.zeros((n_rows, width))
    for row, entries in enumerate(rows):
        for j, (combo, c) in enumerate(entries):
            index[row, j] = combo
            value[row, j] = c
    return index, value, n_rows // ir.dim


class SymmetricContraction(eqx.Module):
    """Species-dependent symmetric contraction of correlation orders 1..`correlation`.

    `__call__(a, species)`: `a` `(n_nodes, channels x irreps_in)` (every irrep with the
    same multiplicity `channels`), `species` `(n_nodes,)` -> `(n_nodes, channels x irreps_out)`.
    `irreps_out` keeps only the requested irreps that some symmetric power can make (e.g. no
    1e from ``0e+1o``: the product of a vector with itself has no antisymmetric part).
    """

    weights: tuple[Float[Array, "n_species k channels"], ...]
    index: tuple[_Table, ...]
    value: tuple[_Table, ...]
    keys: tuple[tuple[int, str], ...] = eqx.field(static=True)
    irreps_in: e3nn.Irreps = eqx.field(static=True)
    irreps_out: e3nn.Irreps = eqx.field(static=True)
    channels: int = eqx.field(static=True)

    def __init__(self, irreps_in, irreps_out, correlation: int, n_species: int, *, dtype, key):
        irreps_in, irreps_out = e3nn.Irreps(irreps_in), e3nn.Irreps(irreps_out)
        muls = {mul for mul, _ in irreps_in} | {mul for mul, _ in irreps_out}
        if len(muls) != 1:
            raise ValueError(
                f"symmetric contraction needs one multiplicity for all irreps, got "
                f"irreps_in={irreps_in}, irreps_out={irreps_out}"
            )
        self.channels = muls.pop()
        per_channel = str(e3nn.Irreps([ir for _, ir in irreps_in]))
        keys, index, value, shapes, found = [], [], [], [], []
        for ir in (ir for _, ir in irreps_out):
            for degree in range(1, correlation + 1):
                idx, val, k = coupling_table(per_channel, degree, str(ir))
                if k == 0:
                    continue
                keys.append((degree, str(ir)))
                index.append(_Table(idx))
                value.append(_Table(val))
                shapes.append((n_species, k, self.channels))
            if any(name == str(ir) for _, name in keys):
                found.append(ir)  # irreps no symmetric power can make are left out
        sizes = [int(np.prod(s)) for s in shapes]
        flat = jax.random.normal(key, (sum(sizes),), dtype)
        cuts = np.cumsum([0] + sizes)
        weights = [flat[a:b].reshape(s) for a, b, s in zip(cuts[:-1], cuts[1:], shapes)]
        self.keys = tuple(keys)
        self.index, self.value, self.weights = tuple(index), tuple(value), tuple(weights)
        self.irreps_in = irreps_in
        self.irreps_out = e3nn.Irreps([(self.channels, ir) for ir in found])

    def __call__(self, a: e3nn.IrrepsArray, species: Int[Array, " n_nodes"]) -> e3nn.IrrepsArray:
        if a.irreps != self.irreps_in:
            raise ValueError(f"expected irreps {self.irreps_in}, got {a.irreps}")
        n = a.shape[0]
        # one (n, channels) slab per component of A; the polynomial is unrolled on slabs with
        # static slices, so XLA fuses it into elementwise loops (no gather / scatter-add)
        comp = to_components(a)  # (n, d, channels)
        slabs = [comp[:, i, :] for i in range(comp.shape[1])]
        monomials: dict[tuple[int, ...], Array] = {}

        def monomial(combo: tuple[int, ...]) -> Array:
            if combo not in monomials:
                head = slabs[combo[0]] if len(combo) == 1 else monomial(combo[:-1])
                monomials[combo] = head if len(combo) == 1 else head * slabs[combo[-1]]
            return monomials[combo]

        outputs = {}
        for (_, ir), idx, val, w in zip(self.keys, self.index, self.value, self.weights):
            dim = e3nn.Irrep(ir).dim
            k_count = w.shape[1]
            wz = w[species] / np.sqrt(k_count)  # (n, K, channels)
            comps = []
            for m in range(dim):
                total = 0.0
                for k in range(k_count):
                    row = k * dim + m
                    basis = sum(
                        float(v) * monomial(tuple(int(i) for i in combo))
                        for combo, v in zip(idx.array[row], val.array[row])
                        if v != 0.0
                    )
                    total = total + wz[:, k, :] * basis
                comps.append(total)
            outputs.setdefault(ir, []).append(jnp.stack(comps, axis=1))  # (n, dim, channels)
        chunks = []
        for _, ir in self.irreps_out:
            terms = outputs[str(ir)]
            total = sum(terms) / np.sqrt(len(terms))
            chunks.append(total.transpose(0, 2, 1))  # (n, channels, dim)
        return e3nn.from_chunks(self.irreps_out, chunks, (n,), a.dtype)
