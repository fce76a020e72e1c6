"""Spin-flip-invariant model inputs built from Hubbard occupation matrices.

One site (an atom's p or d manifold) with occupation matrices ``n_up``, ``n_down`` (QE basis,
``(2l+1, 2l+1)``, symmetric for collinear runs) gives, in this fixed order (after HubbardML):

1. ``onehot``: ``n_species x 0e``, the element among the model's species;
2. ``occs_sum``: irreps of ``(n_up + n_down) / 2`` (a mean over spins): d ``0e+2e+4e`` (15),
   p ``0e+2e`` (6);
3. ``occs_prod``: the even-L part of the element-wise (same l only) tensor product of the irreps
   of ``n_up`` and of ``n_down``, ``irrep_normalization="norm"``. The Clebsch-Gordan coefficients
   of equal l and even L are symmetric in the two inputs, so swapping the spins leaves it
   unchanged. d: ``3x0e+2x2e+2x4e+6e+8e`` (61 values), p: ``2x0e+2e+4e`` (16 values);
4. U only: ``param_in``, the U used in that run (eV), ``1x0e``.

For V the sites are the p atom and the d atom (no ``param_in``), and the edge is ``2x0e`` =
``[distance (Bohr), V_in (eV)]`` (HubbardML), optionally followed by the spherical harmonics of
the bond direction, ``2e+4e+...`` (zoo: the occupations are anisotropic, and which orbitals
point along the bond is what a hopping integral sees).
Sizes: U 80 (3 species); V p-site 26, d-site 80, edge 2 (4 species).

A symmetric matrix maps to irreps with the orthonormal basis of
``reduced_tensor_product_basis("ij=ji", i=<orbital irrep>)`` (Frobenius norm preserved).
"""

import functools
from collections.abc import Sequence

import e3nn_jax as e3nn
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._basis import ORBITAL_IRREPS, _change_of_basis

#: largest |n - n^T| accepted in an occupation matrix (collinear QE runs are symmetric to ~1e-15)
SYMMETRY_TOL = 1e-4
_NORMALIZATION = "norm"  # of occs_prod, as in HubbardML


def _even_l(lmax: int) -> list[str]:
    return [f"{ll}e" for ll in range(0, lmax + 1, 2)]


@functools.cache
def _symmetric_basis(l: int) -> tuple[e3nn.Irreps, np.ndarray]:
    q = e3nn.reduced_tensor_product_basis("ij=ji", i=ORBITAL_IRREPS[l])
    return q.irreps, np.asarray(q.array, dtype=np.float64)


def occs_sum_irreps(l: int) -> e3nn.Irreps:
    """Irreps of a symmetric ``(2l+1)x(2l+1)`` matrix: p ``0e+2e``, d ``0e+2e+4e``."""
    if l not in (1, 2, 3):
        raise ValueError(f"orbital l must be 1 (p), 2 (d) or 3 (f), got {l!r}")
    return _symmetric_basis(l)[0]


def occs_prod_irreps(l: int) -> e3nn.Irreps:
    """Irreps of ``occs_prod`` (see module docstring): d ``3x0e+2x2e+2x4e+6e+8e`` (unsorted).

    Those of ``e3nn.elementwise_tensor_product(s, s)`` restricted to even L, s the irreps of
    :func:`occs_sum_irreps`, in its order (tested), without tracing it (~0.1 s a call).
    """
    irreps = occs_sum_irreps(l)
    return e3nn.Irreps([(mul, out) for mul, ir in irreps for out in ir * ir if out.l % 2 == 0])


def symmetric_irreps(n: Float[Array, "... d d"], l: int) -> e3nn.IrrepsArray:
    """Irreps of symmetric matrices already in e3nn's basis: shape ``(..., irreps.dim)``.

    The antisymmetric part (if any) is projected out. Jit/vmap-able; the dtype follows ``n``.
    """
    irreps, q = _symmetric_basis(l)
    dim = 2 * l + 1
    if n.shape[-2:] != (dim, dim):
        raise ValueError(
            f"occupations for l={l} must have shape (..., {dim}, {dim}), got {n.shape}"
        )
    q = jnp.asarray(q, dtype=jnp.result_type(n))
    return e3nn.IrrepsArray(irreps, jnp.einsum("ijz,...ij->...z", q, n))


def spin_features(
    n_up: Float[Array, "... d d"], n_down: Float[Array, "... d d"], l: int
) -> tuple[e3nn.IrrepsArray, e3nn.IrrepsArray]:
    """``(occs_sum, occs_prod)`` of one site from both spins' matrices **in e3nn's basis**.

    Invariant under swapping ``n_up`` and ``n_down``; equivariant under rotations
    (``n -> D n D^T`` for both spins). Shapes ``(..., occs_sum_irreps(l).dim)`` and
    ``(..., occs_prod_irreps(l).dim)``.
    """
    up = symmetric_irreps(n_up, l)
    down = symmetric_irreps(n_down, l)
    occs_sum = (up + down) / 2
    occs_prod = e3nn.elementwise_tensor_product(
        up, down, filter_ir_out=_even_l(4 * l), irrep_normalization=_NORMALIZATION
    )
    return occs_sum, occs_prod


def check_occupations(
    n: np.ndarray, l: int, *, name: str, labels: Sequence[str] | None = None
) -> np.ndarray:
    """Validate a batch of occupation matrices; returns them as float64 ``(N, 2l+1, 2l+1)``.

    ValueError (naming `name` and the offending row's label) on a wrong shape, non-finite
    values, or ``max |n - n^T| > SYMMETRY_TOL``.
    """
    n = np.asarray(n, dtype=np.float64)
    dim = 2 * l + 1
    kind = {1: "p", 2: "d", 3: "f"}.get(l, f"l={l}")
    if n.ndim != 3 or n.shape[1:] != (dim, dim):
        raise ValueError(
            f"{name}: expected {kind} occupation matrices of shape (N, {dim}, {dim}), got {n.shape}"
        )
    label = (lambda i: labels[i]) if labels is not None else (lambda i: f"row {i}")
    bad = ~np.isfinite(n).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"{name}: non-finite occupation matrix for {label(int(np.argmax(bad)))}")
    asym = np.abs(n - np.swapaxes(n, 1, 2)).max(axis=(1, 2), initial=0.0)
    if (asym > SYMMETRY_TOL).any():
        i = int(np.argmax(asym))
        raise ValueError(
            f"{name}: occupation matrix of {label(i)} is not symmetric "
            f"(max |n - n^T| = {asym[i]:.2e} > {SYMMETRY_TOL:.0e}); "
            "non-collinear or corrupted input?"
        )
    return n


def one_hot(elements: Sequence[str], species: Sequence[str], *, name: str) -> np.ndarray:
    """``(N, len(species))`` float64 one-hot rows; ValueError naming an unknown element."""
    index = {s: i for i, s in enumerate(species)}
    out = np.zeros((len(elements), len(species)))
    for i, el in enumerate(elements):
        if el not in index:
            raise ValueError(
                f"{name}: element {el!r} is not among the model's species {list(species)} "
                "(the model was not trained on it; no extrapolation)"
            )
        out[i, index[el]] = 1.0
    return out


def _column(x, n: int, *, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape != (n,):
        raise ValueError(f"{name}: expected {n} values, got shape {np.shape(x)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: values must be finite")
    return x


#: |U_in| or |V_in| below this (eV) is QE's switch-on placeholder (1e-8), not a value: pw.x
#: prints it as 0.0000, so training rows and predictions must both see 0.
ACTIVATION_EV = 1e-4


def _param_in(x, n: int, *, name: str) -> np.ndarray:
    x = _column(x, n, name=name)
    return np.where(np.abs(x) < ACTIVATION_EV, 0.0, x)


def _as_batch(elements) -> tuple[list[str], bool]:
    if isinstance(elements, str):
        return [elements], True
    return list(elements), False


def site_features(
    elements: str | Sequence[str],
    n_up: Float[np.ndarray, "... d d"],
    n_down: Float[np.ndarray, "... d d"],
    *,
    species: Sequence[str],
    l: int,
    labels: Sequence[str] | None = None,
    name: str = "site",
) -> e3nn.IrrepsArray:
    """Validated ``onehot + occs_sum + occs_prod`` for sites given in **QE's basis**.

    **Arguments:**

    - `elements`: one symbol (then `n_up`, `n_down` are single `(d, d)` matrices) or N symbols
      (then `(N, d, d)`).
    - `n_up`, `n_down`: occupation matrices of spin 1 and spin 2, QE orbital order.
    - `species`: the model's element list (one-hot order). `l`: 1 (p) or 2 (d).
    - `labels`: names of the N sites for error messages (default "row i").

    **Returns:** float64 IrrepsArray of shape `(N, dim)` (or `(dim,)` for one symbol).
    """
    elements, single = _as_batch(elements)
    if single:
        n_up, n_down = np.asarray(n_up)[None], np.asarray(n_down)[None]
    up = check_occupations(n_up, l, name=f"{name} n_up (spin 1)", labels=labels)
    down = check_occupations(n_down, l, name=f"{name} n_down (spin 2)", labels=labels)
    if len(elements) != up.shape[0] or down.shape != up.shape:
        raise ValueError(
            f"{name}: {len(elements)} elements but n_up {up.shape} and n_down {down.shape}"
        )
    onehot = one_hot(elements, species, name=name)
    occs_sum, occs_prod = _spin_features_np(_to_e3nn_np(up, l), _to_e3nn_np(down, l), l)
    out = e3nn.IrrepsArray(
        site_irreps(len(species), l), np.concatenate([onehot, occs_sum, occs_prod], axis=1)
    )
    return out[0] if single else out


@functools.cache
def regroup_index(irreps: e3nn.Irreps) -> np.ndarray:
    """Column order of ``IrrepsArray.regroup()`` (a stable sort of the irreps entries)."""
    slices = irreps.slices()
    return np.concatenate([np.arange(slices[i].start, slices[i].stop) for i in irreps.sort().inv])


def invariants(x, irreps: e3nn.Irreps, xp=np):
    """Rotation invariants of `x` (``(..., irreps.dim)``, numpy or jax per `xp`): the ``0e``
    part of its tensor square up to per-path constants, ``(..., p)``.

    For every irrep type l with copies ``x_u`` (regrouped): ``<x_u, x_v> / sqrt(2l+1)`` for
    ``u <= v``, without ``e3nn.tensor_square``'s Clebsch-Gordan tables up to L = 16 (seconds
    to build).
    """
    irreps = e3nn.Irreps(irreps)
    # index arrays in `xp`'s own integer type (a numpy int64 index trips jax under x64)
    x = xp.take(x, xp.asarray(regroup_index(irreps)), axis=-1)
    grouped = irreps.regroup()
    out = []
    for (mul, ir), sl in zip(grouped, grouped.slices()):
        block = x[..., sl].reshape(*x.shape[:-1], mul, ir.dim)
        u, v = np.triu_indices(mul)
        gram = xp.einsum("...ui,...vi->...uv", block, block) / np.sqrt(ir.dim)
        flat = gram.reshape(*gram.shape[:-2], mul * mul)
        out.append(xp.take(flat, xp.asarray(u * mul + v), axis=-1))
    return xp.concatenate(out, axis=-1) if out else xp.zeros(x.shape[:-1] + (0,))


def _to_e3nn_np(n: np.ndarray, l: int) -> np.ndarray:
    c = _change_of_basis(l)
    return np.einsum("ai,nij,bj->nab", c, n, c)


def _spin_features_np(up: np.ndarray, down: np.ndarray, l: int) -> tuple[np.ndarray, np.ndarray]:
    # numpy twin of spin_features for concrete inputs: no per-op XLA compilation (~80 small
    # compiles, seconds, on the first call of the jax version); test_features checks they agree
    irreps, q = _symmetric_basis(l)
    a, b = np.einsum("ijz,nij->nz", q, up), np.einsum("ijz,nij->nz", q, down)
    prod = []
    for (_, ir), sl in zip(irreps, irreps.slices()):
        for ir_out in ir * ir:
            if ir_out.l % 2 == 0:  # same loop order as e3nn.elementwise_tensor_product
                cg = e3nn.clebsch_gordan(ir.l, ir.l, ir_out.l) * ir.dim  # "norm": sqrt(d * d)
                prod.append(np.einsum("ni,nj,ijk->nk", a[:, sl], b[:, sl], cg))
    return (a + b) / 2, np.concatenate(prod, axis=1)


def site_irreps(n_species: int, l: int) -> e3nn.Irreps:
    """Irreps of :func:`site_features` (in that order, not simplified)."""
    return f"{n_species}x0e" + occs_sum_irreps(l) + occs_prod_irreps(l)


def onsite_irreps(n_species: int, l: int = 2, with_param_in: bool = True) -> e3nn.Irreps:
    """Irreps of :func:`onsite_features`: site irreps (+ ``1x0e`` for U_in)."""
    irreps = site_irreps(n_species, l)
    return irreps + "1x0e" if with_param_in else irreps


def onsite_features(
    elements: str | Sequence[str],
    n_up: Float[np.ndarray, "... 5 5"],
    n_down: Float[np.ndarray, "... 5 5"],
    u_in: float | Float[np.ndarray, " N"] | None,
    *,
    species: Sequence[str],
    l: int = 2,
    labels: Sequence[str] | None = None,
) -> e3nn.IrrepsArray:
    """Input of :class:`OnsiteModel` (U): ``onehot + occs_sum + occs_prod [+ U_in (eV)]``.

    `n_up`/`n_down` in QE's basis; `u_in=None` leaves out the param_in scalar. Shapes as in
    :func:`site_features`; float64 IrrepsArray of `onsite_irreps(len(species), l, ...)`.
    """
    x = site_features(elements, n_up, n_down, species=species, l=l, labels=labels, name="U site")
    if u_in is None:
        return x
    batch = x.shape[:-1]
    u = _param_in(u_in, int(np.prod(batch)), name="u_in").reshape(batch + (1,))
    arr = np.concatenate([np.asarray(x.array), u], axis=-1)
    return e3nn.IrrepsArray(x.irreps + e3nn.Irreps("1x0e"), arr)


def intersite_features(
    p_elements: str | Sequence[str],
    p_up: Float[np.ndarray, "... 3 3"],
    p_down: Float[np.ndarray, "... 3 3"],
    d_elements: str | Sequence[str],
    d_up: Float[np.ndarray, "... 5 5"],
    d_down: Float[np.ndarray, "... 5 5"],
    distance: float | Float[np.ndarray, " N"],
    v_in: float | Float[np.ndarray, " N"],
    *,
    species: Sequence[str],
    labels: Sequence[str] | None = None,
    bond: Float[np.ndarray, "... 3"] | None = None,
    bond_lmax: int = 0,
) -> tuple[e3nn.IrrepsArray, e3nn.IrrepsArray, e3nn.IrrepsArray]:
    """Inputs of :class:`IntersiteModel` (V) for p-d pairs: ``(p_site, d_site, edge)``.

    `distance` is the pair distance in Bohr, `v_in` the V used in that run (eV); the edge is
    ``2x0e = [distance, v_in]``, then (``bond_lmax >= 2``) the spherical harmonics of the
    direction of `bond` (the d atom -> p atom vector, Cartesian, any length unit), even
    ``l = 2 .. bond_lmax``: :func:`edge_irreps`. Occupations in QE's basis, the Cartesian frame
    of `bond`. float64 IrrepsArrays of shapes `(N, site_irreps(n, 1).dim)`,
    `(N, site_irreps(n, 2).dim)`, `(N, edge_irreps(bond_lmax).dim)` (no N for one pair).
    """
    irreps_edge = edge_irreps(bond_lmax)
    p = site_features(
        p_elements, p_up, p_down, species=species, l=1, labels=labels, name="V p-site"
    )
    d = site_features(
        d_elements, d_up, d_down, species=species, l=2, labels=labels, name="V d-site"
    )
    if p.shape[:-1] != d.shape[:-1]:
        raise ValueError(f"V: {p.shape[:-1]} p-sites but {d.shape[:-1]} d-sites")
    batch = p.shape[:-1]
    n = int(np.prod(batch))
    dist = _column(distance, n, name="distance (Bohr)")
    if (dist <= 0).any():
        raise ValueError("distance (Bohr): pair distances must be > 0")
    edge = np.stack([dist, _param_in(v_in, n, name="v_in")], axis=-1)
    if bond_lmax:
        if bond is None:
            raise ValueError(f"bond: the d -> p vectors are needed (bond_lmax = {bond_lmax})")
        edge = np.concatenate([edge, bond_harmonics(bond, bond_lmax, n)], axis=-1)
    return p, d, e3nn.IrrepsArray(irreps_edge, edge.reshape(batch + (irreps_edge.dim,)))


def pair_vectors(
    positions: Float[np.ndarray, "nat 3"],
    cell: Float[np.ndarray, "3 3"],
    pairs: Sequence[tuple[int, int, Sequence[int]]],
) -> Float[np.ndarray, "n_pairs 3"]:
    """``positions[j] + image @ cell - positions[i]`` for each pair ``(i, j, image)`` (1-based
    atoms, `image` the lattice translation of atom j; `cell` rows a1..a3, the length unit of
    `positions`): the bond vectors :func:`intersite_features` takes as `bond`."""
    pos, cell = np.asarray(positions, np.float64), np.asarray(cell, np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or cell.shape != (3, 3):
        raise ValueError(f"positions {pos.shape}, cell {cell.shape}: expected (nat, 3), (3, 3)")
    if not (np.isfinite(pos).all() and np.isfinite(cell).all()):
        raise ValueError("positions, cell: values must be finite")
    return np.array([pos[j - 1] + np.asarray(im) @ cell - pos[i - 1] for i, j, im in pairs])


def edge_irreps(bond_lmax: int = 0) -> e3nn.Irreps:
    """Irreps of the V edge: ``2x0e`` (distance, V_in), then ``2e+4e+...`` up to `bond_lmax`.

    Odd l are left out: they would change sign with the bond, and with even-parity site
    features they cannot reach the scalar output anyway.
    """
    if not (isinstance(bond_lmax, int) and bond_lmax >= 0 and bond_lmax % 2 == 0):
        raise ValueError(f"bond_lmax must be an even integer >= 0, got {bond_lmax!r}")
    return e3nn.Irreps("2x0e" + "".join(f"+1x{ll}e" for ll in range(2, bond_lmax + 1, 2)))


def bond_harmonics(
    bond: Float[np.ndarray, "... 3"], bond_lmax: int, n: int | None = None
) -> Float[np.ndarray, "N dim"]:
    """Real spherical harmonics (e3nn-jax's, "component" normalisation) of the directions of
    `bond`, even ``l = 2 .. bond_lmax``: float64 ``(N, edge_irreps(bond_lmax).dim - 2)``.
    Rotating the vectors by R multiplies them by e3nn's Wigner D of R, as the occupations."""
    v = np.asarray(bond, dtype=np.float64).reshape(-1, 3)
    if n is not None and len(v) != n:
        raise ValueError(f"bond: expected {n} vectors of shape (3,), got shape {np.shape(bond)}")
    norm = np.linalg.norm(v, axis=1)
    if not (np.isfinite(v).all() and (norm > 1e-6).all()):
        raise ValueError("bond: vectors must be finite and non-zero")
    irreps = edge_irreps(bond_lmax)[1:]
    sh = e3nn.spherical_harmonics(irreps, v / norm[:, None], normalize=False)
    return np.asarray(sh.array, dtype=np.float64)


__all__ = [
    "SYMMETRY_TOL",
    "occs_sum_irreps",
    "occs_prod_irreps",
    "symmetric_irreps",
    "spin_features",
    "check_occupations",
    "one_hot",
    "site_features",
    "site_irreps",
    "onsite_irreps",
    "onsite_features",
    "intersite_features",
    "edge_irreps",
    "bond_harmonics",
    "pair_vectors",
]
