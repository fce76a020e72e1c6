"""Cartesian tensors <-> irreps for every tensor kind the zoo predicts.

Each kind is a Cartesian tensor with a known index symmetry. Its change of basis comes from
`e3nn.reduced_tensor_product_basis` (e3nn-jax 0.21), an orthonormal basis of the symmetric subspace:

| kind          | formula   | index irreps | irreps            | example                           |
|---------------|-----------|--------------|-------------------|-----------------------------------|
| `rank2`       | `ij`      | 1o, 1o       | 0e+1e+2e          | Born charges Z*                   |
| `rank2_axial` | `ij`      | 1e, 1e       | 0e+1e+2e          | NMR shielding (B, mu axial)       |
| `symmetric2`  | `ij=ji`   | 1o           | 0e+2e             | dielectric tensor eps_inf         |
| `raman`       | `ijk=ikj` | 1o           | 2x1o+1x2o+1x3o    | Raman R[displacement, E, E]       |
| `chi2`        | `ijk=jik` | 1o           | 2x1o+1x2o+1x3o    | chi(2), symmetric in first two    |

Normalisation: the basis is orthonormal, so `to_irreps` preserves the Frobenius norm of any
tensor that has the kind's symmetry. For the rank-2 kinds (e3nn-jax orders 1o/1e as x, y, z):

- `0e = trace(T) / sqrt(3)`,
- `1e = (T_yz - T_zy, T_zx - T_xz, T_xy - T_yx) / sqrt(2)` (the antisymmetric part),
- `2e` = the symmetric traceless part in e3nn's real spherical-harmonic basis (m = -2..2).

`rank2` and `rank2_axial` are the same conversion: with two axial (1e) indices the two det(R)
signs cancel, so the tensor transforms as `R T R^T` and has irreps 0e+1e+2e either way. The
separate name records what the indices are (B and mu for shielding) for heads and configs.

Symmetry of the input: for a kind with an index symmetry, `to_irreps` projects onto the symmetric
subspace (the part breaking the symmetry is discarded). A concrete **numpy** input whose relative
asymmetry exceeds 1e-6 raises ValueError instead; jax arrays and tracers are projected silently,
so the functions stay jit-able and differentiable.
"""

import functools

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

# kind -> (formula, irreps of the indices as reduced_tensor_product_basis keywords)
_SPECS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "rank2": ("ij", (("i", "1o"), ("j", "1o"))),
    "rank2_axial": ("ij", (("i", "1e"), ("j", "1e"))),
    "symmetric2": ("ij=ji", (("i", "1o"),)),
    "raman": ("ijk=ikj", (("i", "1o"), ("j", "1o"))),
    "chi2": ("ijk=jik", (("i", "1o"), ("k", "1o"))),
}
KINDS: tuple[str, ...] = tuple(_SPECS)

_ASYMMETRY_TOL = 1e-6


@functools.cache
def _basis(formula: str, index_irreps: tuple[tuple[str, str], ...]) -> tuple[str, np.ndarray]:
    """Irreps string and the float64 basis matrix `(3**rank, dim)` (read-only) of one formula."""
    q = e3nn.reduced_tensor_product_basis(formula, **dict(index_irreps))
    rank = q.array.ndim - 1
    mat = np.array(q.array, dtype=np.float64).reshape(3**rank, q.irreps.dim)
    mat.setflags(write=False)
    return str(q.irreps), mat


def _spec(kind: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    if not isinstance(kind, str) or kind not in _SPECS:
        raise ValueError(f"kind: unknown tensor kind {kind!r}; known kinds are {KINDS}")
    return _SPECS[kind]


def _kind_basis(kind: str) -> tuple[e3nn.Irreps, np.ndarray, int]:
    formula, index_irreps = _spec(kind)
    irreps, mat = _basis(formula, index_irreps)
    return e3nn.Irreps(irreps), mat, len(formula.split("=")[0])


def irreps_of(kind: str) -> e3nn.Irreps:
    """Irreps of a tensor kind, e.g. `irreps_of("raman") == Irreps("2x1o+1x2o+1x3o")`."""
    return _kind_basis(kind)[0]


def cartesian_shape(kind: str) -> tuple[int, ...]:
    """Trailing Cartesian shape of a tensor kind: `(3, 3)` or `(3, 3, 3)`."""
    return (3,) * _kind_basis(kind)[2]


def _float_dtype(x) -> jnp.dtype:
    """Floating dtype of `x`, as jax will hold it (f64 numpy input -> f32 unless x64 is on)."""
    dtype = x.dtype if hasattr(x, "dtype") else jnp.asarray(x).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = float  # ints/bools -> default float
    return jax.dtypes.canonicalize_dtype(dtype)


def _check_symmetric(kind: str, cart: np.ndarray, mat: np.ndarray, rank: int) -> None:
    """Raise if a concrete numpy tensor breaks the kind's index symmetry (relative, per tensor)."""
    if mat.shape[0] == mat.shape[1]:
        return  # no index symmetry: every tensor is in the subspace
    flat = cart.reshape(cart.shape[: cart.ndim - rank] + (3**rank,)).astype(np.float64)
    residual = flat - (flat @ mat) @ mat.T
    norm = np.linalg.norm(flat, axis=-1)
    rel = np.linalg.norm(residual, axis=-1) / np.maximum(norm, np.finfo(np.float64).tiny)
    if rel.size and np.max(rel) > _ASYMMETRY_TOL:
        where = np.unravel_index(int(np.argmax(rel)), rel.shape)
        formula = _SPECS[kind][0]
        raise ValueError(
            f"cart: kind {kind!r} needs the index symmetry {formula}, but the tensor at batch "
            f"index {tuple(int(i) for i in where)} has relative asymmetry {np.max(rel):.2e} "
            f"> {_ASYMMETRY_TOL:g}; symmetrise it first (e.g. (T + T.swapaxes(...)) / 2)"
        )


def to_irreps(kind: str, cart: Float[Array, "*batch 3 3"] | np.ndarray) -> e3nn.IrrepsArray:
    """Cartesian tensor(s) -> IrrepsArray.

    **Arguments:**

    - `kind`: one of `KINDS`.
    - `cart`: array of shape `(*batch, 3, 3)` (rank-2 kinds) or `(*batch, 3, 3, 3)` (rank 3).
      Floating dtypes are kept; integer inputs become the default float dtype.

    **Returns:**

    IrrepsArray with irreps `irreps_of(kind)` and array shape `(*batch, irreps.dim)`.
    """
    irreps, mat, rank = _kind_basis(kind)
    shape = getattr(cart, "shape", None)
    if shape is None:
        cart = np.asarray(cart)
        shape = cart.shape
    if len(shape) < rank or tuple(shape[len(shape) - rank :]) != (3,) * rank:
        raise ValueError(
            f"cart: kind {kind!r} expects an array of shape (*batch, {', '.join(['3'] * rank)}), "
            f"got shape {tuple(shape)}"
        )
    if isinstance(cart, np.ndarray):
        _check_symmetric(kind, cart, mat, rank)
    dtype = _float_dtype(cart)
    cart = jnp.asarray(cart, dtype=dtype)
    flat = cart.reshape(cart.shape[: cart.ndim - rank] + (3**rank,))
    out = jnp.matmul(flat, jnp.asarray(mat, dtype=dtype), precision="highest")
    return e3nn.IrrepsArray(irreps, out)


def to_cartesian(kind: str, x: e3nn.IrrepsArray | Float[Array, "*batch dim"]) -> Array:
    """IrrepsArray (or a plain array laid out as `irreps_of(kind)`) -> Cartesian tensor(s).

    **Arguments:**

    - `kind`: one of `KINDS`.
    - `x`: IrrepsArray whose irreps equal `irreps_of(kind)` (up to merging equal neighbours,
      e.g. `1o+1o+2o+3o` for `2x1o+2o+3o`), or an array of shape `(*batch, irreps.dim)`.

    **Returns:**

    Array of shape `(*batch, 3, 3)` or `(*batch, 3, 3, 3)`, with the kind's index symmetry,
    in the dtype of `x`.
    """
    irreps, mat, rank = _kind_basis(kind)
    if isinstance(x, e3nn.IrrepsArray):
        if x.irreps.simplify() != irreps:
            raise ValueError(f"x: kind {kind!r} expects irreps {irreps}, got irreps {x.irreps}")
        arr = x.array
    else:
        arr = jnp.asarray(x)
    if arr.ndim < 1 or arr.shape[-1] != irreps.dim:
        raise ValueError(
            f"x: kind {kind!r} expects an array of shape (*batch, {irreps.dim}) for irreps "
            f"{irreps}, got shape {tuple(arr.shape)}"
        )
    dtype = _float_dtype(arr)
    arr = jnp.asarray(arr, dtype=dtype)
    flat = jnp.matmul(arr, jnp.asarray(mat.T, dtype=dtype), precision="highest")
    return flat.reshape(arr.shape[:-1] + (3,) * rank)


def rotate_cartesian(kind: str, cart: Float[Array, "*batch 3 3"], R: Float[Array, "3 3"]) -> Array:
    """Apply an orthogonal matrix `R` (rotation or improper rotation) to every index of `cart`.

    `T'_{ab..} = R_{ai} R_{bj} .. T_{ij..}`. Polar (1o) indices transform with `R` and axial (1e)
    ones with `det(R) R`; `rank2_axial` has two axial indices, so the signs cancel and every kind
    transforms the same way. Used by the tests to check `to_irreps(rotate(T)) == D(R) to_irreps(T)`.

    **Arguments:**

    - `kind`: one of `KINDS`.
    - `cart`: array of shape `(*batch, 3, ..., 3)` (rank of the kind).
    - `R`: array of shape `(3, 3)`, orthogonal.

    **Returns:**

    Array of the shape and dtype of `cart`.
    """
    _, _, rank = _kind_basis(kind)
    R = jnp.asarray(R)
    if R.shape != (3, 3):
        raise ValueError(f"R: expected shape (3, 3), got shape {tuple(R.shape)}")
    cart = jnp.asarray(cart)
    if cart.ndim < rank or cart.shape[cart.ndim - rank :] != (3,) * rank:
        raise ValueError(
            f"cart: kind {kind!r} expects trailing shape {(3,) * rank}, got {cart.shape}"
        )
    R = R.astype(_float_dtype(cart))
    out = cart
    # contract R into each of the trailing `rank` axes in turn
    for axis in range(cart.ndim - rank, cart.ndim):
        out = jnp.moveaxis(jnp.tensordot(out, R, axes=([axis], [1]), precision="highest"), -1, axis)
    return out
