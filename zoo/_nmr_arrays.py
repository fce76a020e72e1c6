"""`_nmr_arrays`: checked NMR tensor inputs and their elementary parts.

`_array` turns an input into a finite float64 array (one error naming the argument otherwise),
`_tensors` also checks the `(..., 3, 3)` shape; `isotropic`, `symmetric_part` and
`antisymmetric_part` are re-exported by `zoo.nmr`, whose docstring gives the conventions.
"""

import numpy as np


def _array(x, name: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected a real numeric array, got {type(x).__name__}") from err
    if not np.all(np.isfinite(a)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise ValueError(
            f"{name}: contains non-finite values (first at index {bad}); select the labelled "
            "atoms first (predictions are NaN for atoms of other species)"
        )
    return a


def _tensors(sigma, name: str = "sigma") -> np.ndarray:
    a = _array(sigma, name)
    if a.ndim < 2 or a.shape[-2:] != (3, 3):
        raise ValueError(f"{name}: expected an array of shape (..., 3, 3), got shape {a.shape}")
    return a


def isotropic(sigma) -> np.ndarray:
    """Isotropic value `trace(sigma) / 3`, shape `(...)`, from tensors of shape `(..., 3, 3)`."""
    return np.trace(_tensors(sigma), axis1=-2, axis2=-1) / 3.0


def symmetric_part(sigma) -> np.ndarray:
    """`(sigma + sigma^T) / 2`, shape `(..., 3, 3)`."""
    a = _tensors(sigma)
    return 0.5 * (a + np.swapaxes(a, -1, -2))


def antisymmetric_part(sigma) -> np.ndarray:
    """`(sigma - sigma^T) / 2`, shape `(..., 3, 3)`; invisible in first-order spectra."""
    a = _tensors(sigma)
    return 0.5 * (a - np.swapaxes(a, -1, -2))
