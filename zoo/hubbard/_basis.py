"""Quantum ESPRESSO real harmonics -> e3nn-jax real spherical harmonics, for l = 0..3.

QE (``upflib/ylmr2.f90``) orders the 2l+1 real harmonics of one l as
m = 0, +1, -1, +2, -2, ...: entry 0 is ``Q_l0``, entries ``2m-1`` / ``2m`` are
``sqrt(2) Q_lm cos(m phi)`` / ``sqrt(2) Q_lm sin(m phi)``, with
``Q_lm = sqrt((l-m)!/(l+m)!) P_lm(cos theta)`` *including* the Condon-Shortley phase (-1)^m,
theta measured from z. On the unit sphere this gives (orthonormal, times sqrt((2l+1)/4pi)):

- p: ``(z, -x, -y)``
- d: ``(3z^2-1)/2``, ``-sqrt(3) xz``, ``-sqrt(3) yz``, ``sqrt(3)/2 (x^2-y^2)``, ``sqrt(3) xy``

(QE's docs write p = (z, x, y), d = (z2, xz, yz, x2-y2, xy): that is the order, not the signs).
Hubbard occupation matrices ``n[m1, m2]`` (pw.x ``occup.txt``, ``write_nsg``) live in this basis.

e3nn-jax 0.21 orders l=1 as (x, y, z) but takes **y** as the polar axis for l >= 2, so for d and f
the change of basis is orthogonal but *not* a signed permutation. It is solved numerically
(least squares on random unit vectors, then checked to be orthogonal and exact), never typed in:

    Y_e3nn(r) = C_l @ Y_qe(r),   n_e3nn = C_l @ n_qe @ C_l.T,   D_e3nn(R) = C_l @ D_qe(R) @ C_l.T
"""

import functools

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

L_MAX = 3
# the irrep of an orbital shell (s, p, d, f): parity (-1)^l, as a function on the sphere
ORBITAL_IRREPS: dict[int, str] = {0: "0e", 1: "1o", 2: "2e", 3: "3o"}
# how far the fitted C may be from orthogonal / from reproducing e3nn before we refuse it
_FIT_TOL = 1e-10


def _check_l(l: int) -> None:
    if not isinstance(l, int | np.integer) or not 0 <= l <= L_MAX:
        raise ValueError(f"l must be an integer in 0..{L_MAX} (s, p, d, f), got {l!r}")


def qe_real_harmonics(l: int, r: Float[np.ndarray, "n 3"]) -> Float[np.ndarray, "n 2l+1"]:
    """QE's real spherical harmonics of one ``l`` at the directions ``r`` (ylmr2 recursion).

    **Arguments:**

    - `l`: angular momentum, 0..3.
    - `r`: Cartesian vectors, shape `(n, 3)` (any length > 0; only the direction is used).

    **Returns:** shape `(n, 2l+1)`, orthonormal on the sphere, QE order m = 0, +1, -1, +2, -2, ...
    """
    _check_l(l)
    r = np.asarray(r, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != 3:
        raise ValueError(f"r must have shape (n, 3), got {r.shape}")
    norm = np.linalg.norm(r, axis=1)
    if np.any(norm < 1e-9):
        raise ValueError("r must not contain zero vectors (the direction is undefined)")
    cost = r[:, 2] / norm
    sent = np.sqrt(np.clip(1.0 - cost**2, 0.0, None))
    phi = np.arctan2(r[:, 1], r[:, 0])

    # q[(l, m)] = sqrt((l-m)!/(l+m)!) P_lm(cos theta), Condon-Shortley phase included
    q = {(0, 0): np.ones_like(cost), (1, 0): cost, (1, 1): -sent / np.sqrt(2.0)}
    for ll in range(2, l + 1):
        for m in range(ll - 1):
            a = cost * (2 * ll - 1) / np.sqrt(ll * ll - m * m)
            b = np.sqrt((ll - 1) ** 2 - m * m) / np.sqrt(ll * ll - m * m)
            q[(ll, m)] = a * q[(ll - 1, m)] - b * q.get((ll - 2, m), 0.0)
        q[(ll, ll - 1)] = cost * np.sqrt(2 * ll - 1) * q[(ll - 1, ll - 1)]
        q[(ll, ll)] = -np.sqrt((2 * ll - 1) / (2 * ll)) * sent * q[(ll - 1, ll - 1)]

    c = np.sqrt((2 * l + 1) / (4 * np.pi))
    out = [c * q[(l, 0)]]
    for m in range(1, l + 1):
        out.append(c * np.sqrt(2.0) * q[(l, m)] * np.cos(m * phi))
        out.append(c * np.sqrt(2.0) * q[(l, m)] * np.sin(m * phi))
    return np.stack(out, axis=1)


def e3nn_real_harmonics(l: int, r: Float[np.ndarray, "n 3"]) -> Float[np.ndarray, "n 2l+1"]:
    """e3nn-jax's real spherical harmonics of one ``l`` (``normalization="integral"``), float64.

    **Arguments:** `l` in 0..3; `r` of shape `(n, 3)`. **Returns:** shape `(n, 2l+1)`.
    """
    _check_l(l)
    r = np.asarray(r, dtype=np.float64)
    # a local float64 context (not the global flag), so that C is exact to ~1e-15
    with jax.enable_x64(True):
        y = e3nn.sh([l], jnp.asarray(r), normalize=True, normalization="integral")
        return np.asarray(y, dtype=np.float64)


def _random_directions(n: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed).normal(size=(n, 3))
    return r / np.linalg.norm(r, axis=1, keepdims=True)


_S3, _S15, _S38, _S58 = np.sqrt(3) / 2, np.sqrt(15) / 4, np.sqrt(3 / 8), np.sqrt(5 / 8)
#: C for each l, written out: fitting it needs e3nn.sh under jit (~1 s of XLA compiles on
#: the first prediction). `_fit_change_of_basis` derives it; tests check the two agree.
_TABULATED = {
    0: [[1.0]],
    1: [[0, -1, 0], [0, 0, -1], [1, 0, 0]],
    2: [
        [0, -1, 0, 0, 0], [0, 0, 0, 0, 1], [-0.5, 0, 0, -_S3, 0], [0, 0, -1, 0, 0],
        [_S3, 0, 0, -0.5, 0],
    ],
    3: [
        [0, -_S15, 0, 0, 0, 0.25, 0], [0, 0, 0, 0, 1, 0, 0], [0, 0.25, 0, 0, 0, _S15, 0],
        [0, 0, _S38, 0, 0, 0, _S58], [-_S38, 0, 0, -_S58, 0, 0, 0],
        [0, 0, -_S58, 0, 0, 0, _S38], [_S58, 0, 0, -_S38, 0, 0, 0],
    ],
}  # fmt: skip


@functools.cache
def _change_of_basis(l: int) -> np.ndarray:
    return np.asarray(_TABULATED[l], dtype=np.float64)


def _fit_change_of_basis(l: int) -> np.ndarray:
    r = _random_directions(200, seed=l)
    y_qe = qe_real_harmonics(l, r)
    y_e3 = e3nn_real_harmonics(l, r)
    c_t, *_ = np.linalg.lstsq(y_qe, y_e3, rcond=None)  # y_e3 = y_qe @ C.T
    c = c_t.T
    c[np.abs(c) < 1e-12] = 0.0  # exact zeros for the signed-permutation blocks
    residual = np.max(np.abs(y_qe @ c.T - y_e3))
    orthogonality = np.max(np.abs(c @ c.T - np.eye(2 * l + 1)))
    if residual > _FIT_TOL or orthogonality > _FIT_TOL:
        raise RuntimeError(
            f"QE -> e3nn change of basis for l={l} is not exact (residual {residual:.1e}, "
            f"orthogonality {orthogonality:.1e}): did e3nn-jax change its harmonics?"
        )
    return c


def qe_to_e3nn(l: int) -> Float[np.ndarray, "2l+1 2l+1"]:
    """The orthogonal ``C`` with ``Y_e3nn(r) = C @ Y_qe(r)`` for one ``l`` (float64, a copy).

    Rows follow e3nn-jax's order, columns QE's order. An occupation matrix converts as
    ``C @ n_qe @ C.T`` (see :func:`occupations_qe_to_e3nn`).
    """
    _check_l(l)
    return _change_of_basis(l).copy()


def wigner_d_qe(l: int, rotation: Float[np.ndarray, "3 3"]) -> Float[np.ndarray, "2l+1 2l+1"]:
    """Matrix ``D`` with ``Y_qe(R r) = D @ Y_qe(r)``, fitted from QE's harmonics alone (float64).

    Independent of e3nn: it is the reference that :func:`qe_to_e3nn` is tested against. Rotating
    the crystal by ``R`` maps an occupation matrix to ``D @ n @ D.T``.
    """
    _check_l(l)
    rot = np.asarray(rotation, dtype=np.float64)
    if rot.shape != (3, 3) or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-8):
        raise ValueError(f"rotation must be an orthogonal 3x3 matrix, got shape {rot.shape}")
    r = _random_directions(100, seed=100 + l)
    y = qe_real_harmonics(l, r)
    y_rot = qe_real_harmonics(l, r @ rot.T)
    d_t, *_ = np.linalg.lstsq(y, y_rot, rcond=None)
    return d_t.T


def occupations_qe_to_e3nn(
    n: Float[Array, "... 2l+1 2l+1"], l: int
) -> Float[Array, "... 2l+1 2l+1"]:
    """Occupation matrices from QE's real-harmonic basis to e3nn-jax's: ``C n C^T``.

    **Arguments:**

    - `n`: shape `(..., 2l+1, 2l+1)`, rows/columns in QE order (numpy or jax, any float dtype).
    - `l`: the shell's angular momentum (1 for p, 2 for d, 3 for f).

    **Returns:** same shape and dtype, rows/columns in e3nn-jax order. Jit- and vmap-able.
    """
    _check_l(l)
    dim = 2 * l + 1
    if n.shape[-2:] != (dim, dim):
        raise ValueError(
            f"occupations for l={l} must have shape (..., {dim}, {dim}), got {n.shape}"
        )
    c = jnp.asarray(_change_of_basis(l), dtype=jnp.result_type(n))
    return jnp.einsum("ai,...ij,bj->...ab", c, n, c)


def orbital_l(dim: int) -> int:
    """The l of a ``(dim, dim)`` occupation matrix (dim = 2l+1), or ValueError."""
    if dim % 2 != 1 or not 1 <= dim <= 2 * L_MAX + 1:
        raise ValueError(f"an occupation matrix must be (2l+1)x(2l+1) with l <= {L_MAX}, got {dim}")
    return (dim - 1) // 2


__all__ = [
    "L_MAX",
    "ORBITAL_IRREPS",
    "qe_real_harmonics",
    "e3nn_real_harmonics",
    "qe_to_e3nn",
    "wigner_d_qe",
    "occupations_qe_to_e3nn",
    "orbital_l",
]
