"""MACE's symmetric contraction: species-weighted symmetric powers of the atomic basis.

For every channel ``c`` independently, with ``A`` the per-channel irreps of the atomic basis,

    B[c, out] = sum_nu sum_k w_nu[z, k, c] U_nu[i1..i_nu, k, out] A[c, i1] ... A[c, i_nu]

where ``U_nu`` are the generalised Clebsch-Gordan coupling tensors of the symmetric power of
order ``nu`` (e3nn-jax's ``reduced_symmetric_tensor_product_basis``). At construction each
``U_nu`` is rewritten exactly (least squares, residual checked) in a basis of ``K`` *coupling
paths* ``T_p``: order 2 ``(A_t1 (x) A_t2 -> out)``, order 3 ``((A_t1 (x) A_t2 -> L) (x) A_t3
-> out)``, chosen linearly independent after symmetrisation, so ``U_k(A..A) = sum_p C[p, k]
T_p(A..A)``. At run time the paths are a few Clebsch-Gordan contractions, one matmul per pair
of input irreps (all intermediate ``L`` side by side) and one per ``(L, t3, out)`` group after
the species weights are folded in: tens of HLO ops instead of thousands of unrolled monomials
(which compiled for minutes), and no dense ``d**nu`` tensor is contracted.
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

# a coupling path: (t1,) | (t1, t2) | (t1, t2, L12, t3); t = index of an irrep of A
Path = tuple


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


@functools.lru_cache(maxsize=256)
def _cg(ir1: str, ir2: str, ir3: str) -> np.ndarray:
    """Real CG block `(d1, d2, d3)`, zero when parity or the triangle rule forbids it."""
    a, b, c = e3nn.Irrep(ir1), e3nn.Irrep(ir2), e3nn.Irrep(ir3)
    if c not in a * b:
        return np.zeros((a.dim, b.dim, c.dim))
    return np.asarray(e3nn.clebsch_gordan(a.l, b.l, c.l), np.float64) * np.sqrt(c.dim)


def _special(cg: np.ndarray) -> str | None:
    """Which elementwise shortcut a CG block `(d1, d2, d3)` allows: a scalar times a copy
    (``"left"``/``"right"``), a scaled dot product (``"dot"``), or none (a matmul)."""
    d1, d2, d3 = cg.shape
    if d1 == 1 and d2 == d3 and np.allclose(cg[0], cg[0, 0, 0] * np.eye(d2)):
        return "left"
    if d2 == 1 and d1 == d3 and np.allclose(cg[:, 0], cg[0, 0, 0] * np.eye(d1)):
        return "right"
    if d3 == 1 and d1 == d2 and np.allclose(cg[:, :, 0], np.diag(np.diag(cg[:, :, 0]))):
        return "dot"
    return None


def _couple(x1: Array, x2: Array, cg: np.ndarray) -> Array:
    """``sum_ij cg[i, j, k] x1[..., i] x2[..., j]`` for `(n, c, d1)`, `(n, c, d2)` ->
    `(n, c, d3)`: elementwise where the block is a scaled identity or diagonal (scalars,
    dot products: no tiny matmul for XLA to emit), else one matmul on the outer product."""
    kind, dtype = _special(cg), x1.dtype
    if kind == "left":
        return x1 * x2 * float(cg[0, 0, 0])
    if kind == "right":
        return x1 * x2 * float(cg[0, 0, 0])
    if kind == "dot":
        return jnp.sum(x1 * x2 * jnp.asarray(np.diag(cg[:, :, 0]), dtype), -1, keepdims=True)
    outer = (x1[..., :, None] * x2[..., None, :]).reshape(x1.shape[:-1] + (-1,))
    return outer @ jnp.asarray(cg.reshape(-1, cg.shape[2]), dtype)


def _candidates(irs: list[e3nn.Irrep], degree: int, out: e3nn.Irrep) -> list[Path]:
    """Every coupling path of order `degree` to `out`, cheapest (fewest flops) first."""
    n = len(irs)
    if degree == 1:
        return [(t,) for t in range(n) if irs[t] == out]
    pairs = [(t1, t2) for t1 in range(n) for t2 in range(t1, n)]
    if degree == 2:
        return sorted(
            [p for p in pairs if out in irs[p[0]] * irs[p[1]]],
            key=lambda p: irs[p[0]].dim * irs[p[1]].dim,
        )
    paths = [
        (t1, t2, str(mid), t3)
        for t1, t2 in pairs
        for mid in irs[t1] * irs[t2]
        for t3 in range(n)
        if out in mid * irs[t3]
    ]
    return sorted(paths, key=lambda p: irs[p[0]].dim * irs[p[1]].dim * e3nn.Irrep(p[2]).dim)


def _dense(irs: list[e3nn.Irrep], path: Path, out: e3nn.Irrep) -> np.ndarray:
    """The path as a symmetrised dense tensor `(d,)*degree + (out.dim,)` (construction only)."""
    offsets = np.cumsum([0] + [ir.dim for ir in irs])
    d = offsets[-1]
    blk = [slice(offsets[t], offsets[t + 1]) for t in range(len(irs))]
    t = np.zeros((d,) * (1 if len(path) == 1 else 2 if len(path) == 2 else 3) + (out.dim,))
    if len(path) == 1:
        t[blk[path[0]]] = np.eye(out.dim)
    elif len(path) == 2:
        t1, t2 = path
        t[blk[t1], blk[t2]] = _cg(str(irs[t1]), str(irs[t2]), str(out))
    else:
        t1, t2, mid, t3 = path
        cg12, cg3 = _cg(str(irs[t1]), str(irs[t2]), mid), _cg(mid, str(irs[t3]), str(out))
        t[blk[t1], blk[t2], blk[t3]] = np.einsum("ijq,qkm->ijkm", cg12, cg3)
    axes = range(t.ndim - 1)
    perms = list(itertools.permutations(axes))
    return sum(t.transpose(p + (t.ndim - 1,)) for p in perms) / len(perms)


@functools.lru_cache(maxsize=64)
def coupling_paths(irreps: str, degree: int, ir_out: str) -> tuple[tuple[Path, ...], np.ndarray]:
    """Paths spanning the symmetric coupling of order `degree` from `irreps` (one channel) to
    `ir_out`, and ``C`` `(K, K)` float64 with ``U[..., k, :] = sum_p C[p, k] Sym(T_p)``
    (``U`` e3nn-jax's basis, `(d,)*degree + (K * dim,)`). ``K = 0``: no coupling exists."""
    irs = [ir for _, ir in e3nn.Irreps(irreps)]
    out = e3nn.Irrep(ir_out)
    try:
        u = e3nn.reduced_symmetric_tensor_product_basis(e3nn.Irreps(irreps), degree, keep_ir=[out])
        u = np.asarray(u.array, np.float64)
    except ValueError:  # e3nn-jax raises when no coupling exists
        return (), np.zeros((0, 0))
    k = u.shape[-1] // out.dim
    if k == 0:
        return (), np.zeros((0, 0))
    u = u.reshape(-1, k, out.dim).transpose(0, 2, 1).reshape(-1, k)  # (d^nu * dim, K)
    chosen, columns = [], np.zeros((u.shape[0], 0))
    for path in _candidates(irs, degree, out):  # greedy: keep a path if it adds a direction
        col = _dense(irs, path, out).reshape(-1, out.dim).reshape(-1, 1)
        trial = np.concatenate([columns, col], axis=1)
        if np.linalg.matrix_rank(trial, tol=1e-9) > columns.shape[1]:
            chosen.append(path)
            columns = trial
        if len(chosen) == k:
            break
    coeff, *_ = np.linalg.lstsq(columns, u, rcond=None)
    if len(chosen) != k or np.abs(columns @ coeff - u).max() > 1e-9:
        raise RuntimeError(f"coupling paths do not span U ({irreps}, {degree}, {ir_out})")
    return tuple(chosen), coeff


class SymmetricContraction(eqx.Module):
    """Species-dependent symmetric contraction of correlation orders 1..`correlation`.

    `__call__(a, species)`: `a` `(n_nodes, channels x irreps_in)` (every irrep with the
    same multiplicity `channels`), `species` `(n_nodes,)` -> `(n_nodes, channels x irreps_out)`.
    `irreps_out` keeps only the requested irreps that some symmetric power can make (e.g. no
    1e from ``0e+1o``: the product of a vector with itself has no antisymmetric part).
    """

    weights: tuple[Float[Array, "n_species k channels"], ...]
    coeff: tuple[_Table, ...] = eqx.field(static=True)  # constants: no leaves under jax.jit
    paths: tuple[tuple[Path, ...], ...] = eqx.field(static=True)
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
        keys, paths, coeff, shapes, found = [], [], [], [], []
        for ir in (ir for _, ir in irreps_out):
            for degree in range(1, correlation + 1):
                p, c = coupling_paths(per_channel, degree, str(ir))
                if not p:
                    continue
                keys.append((degree, str(ir)))
                paths.append(p)
                coeff.append(_Table(c))
                shapes.append((n_species, len(p), self.channels))
            if any(name == str(ir) for _, name in keys):
                found.append(ir)  # irreps no symmetric power can make are left out
        sizes = [int(np.prod(s)) for s in shapes]
        flat = jax.random.normal(key, (sum(sizes),), dtype)
        cuts = np.cumsum([0] + sizes)
        weights = [flat[a:b].reshape(s) for a, b, s in zip(cuts[:-1], cuts[1:], shapes)]
        self.keys, self.paths = tuple(keys), tuple(paths)
        self.coeff, self.weights = tuple(coeff), tuple(weights)
        self.irreps_in = irreps_in
        self.irreps_out = e3nn.Irreps([(self.channels, ir) for ir in found])

    def __call__(self, a: e3nn.IrrepsArray, species: Int[Array, " n_nodes"]) -> e3nn.IrrepsArray:
        if a.irreps != self.irreps_in:
            raise ValueError(f"expected irreps {self.irreps_in}, got {a.irreps}")
        n, c = a.shape[0], self.channels
        irs = [ir for _, ir in self.irreps_in]
        x = [a.array[:, sl].reshape(n, c, ir.dim) for sl, ir in zip(self.irreps_in.slices(), irs)]
        # pair products: one matmul per (t1, t2) gives every intermediate L side by side
        mids: dict[tuple[int, int], list[str]] = {}
        for (_, ir), ps in zip(self.keys, self.paths):
            for p in ps:
                if len(p) > 1:
                    mid = ir if len(p) == 2 else p[2]
                    if mid not in mids.setdefault(p[:2], []):
                        mids[p[:2]].append(mid)
        pair: dict[tuple[int, int, str], Array] = {}
        for (t1, t2), names in mids.items():
            cgs = [_cg(str(irs[t1]), str(irs[t2]), m) for m in names]
            general = [(m, cg) for m, cg in zip(names, cgs) if _special(cg) is None]
            for m, cg in zip(names, cgs):
                if _special(cg) is not None:
                    pair[(t1, t2, m)] = _couple(x[t1], x[t2], cg)
            if general:  # one matmul for every other intermediate L of this pair
                y = _couple(x[t1], x[t2], np.concatenate([cg for _, cg in general], axis=2))
                start = 0
                for m, _ in general:
                    pair[(t1, t2, m)] = y[..., start : start + e3nn.Irrep(m).dim]
                    start += e3nn.Irrep(m).dim
        # fold the change of basis into the species weights (tiny), then one gather for all
        weff = [
            jnp.einsum("zkc,pk->zpc", w, jnp.asarray(cf.array / np.sqrt(len(ps)), w.dtype))
            for ps, cf, w in zip(self.paths, self.coeff, self.weights)
        ]
        w_all = jnp.concatenate(weff, axis=1)[species]  # (n, sum P, c)
        outputs: dict[str, list[Array]] = {}
        offset = 0
        for (_, ir), ps in zip(self.keys, self.paths):
            wz = w_all[:, offset : offset + len(ps)]  # (n, P, c)
            offset += len(ps)
            total, groups = 0.0, {}
            for j, p in enumerate(ps):
                if len(p) == 1:
                    total = total + wz[:, j, :, None] * x[p[0]]
                elif len(p) == 2:
                    total = total + wz[:, j, :, None] * pair[(p[0], p[1], ir)]
                else:  # order 3 is linear in the intermediate: weight it, then couple once
                    groups.setdefault((p[2], p[3]), []).append(wz[:, j, :, None] * pair[p[:3]])
            for (mid, t3), terms in groups.items():
                z = sum(terms)  # (n, c, dL)
                total = total + _couple(z, x[t3], _cg(mid, str(irs[t3]), ir))
            outputs.setdefault(ir, []).append(total)  # (n, c, dim)
        chunks = [
            sum(outputs[str(ir)]) / np.sqrt(len(outputs[str(ir)])) for _, ir in self.irreps_out
        ]
        return e3nn.from_chunks(self.irreps_out, chunks, (n,), a.dtype)
