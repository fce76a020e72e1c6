"""`_nmr_spectra`: simulated 1D NMR spectra of shielding or shift tensors, re-exported by
`zoo.nmr`: isotropic (MAS-like) lines, static CSA powder patterns, and their plot.

Every line is a unit-area Gaussian of the given full width at half maximum, so a spectrum
integrates to the sum of the site weights when the grid covers it.
"""

from collections.abc import Sequence

import numpy as np

from ._nmr_arrays import _array, isotropic, symmetric_part

_GAUSS_FWHM_TO_STD = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
_CHUNK = 1 << 22  # elements per broadening block, bounds memory


def _grid_fwhm(grid, fwhm) -> tuple[np.ndarray, float]:
    x = _array(grid, "grid")
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"grid: expected a 1-D array of at least 2 points, got shape {x.shape}")
    f = _array(fwhm, "fwhm")
    if f.ndim != 0 or f <= 0:
        raise ValueError(f"fwhm: expected a positive scalar, got {fwhm!r}")
    return x, float(f)


def _weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = _array(weights, "weights").reshape(-1)
    if w.size != n:
        raise ValueError(f"weights: expected {n} values (one per site), got {w.size}")
    return w


def _broaden(centres: np.ndarray, weights: np.ndarray, x: np.ndarray, fwhm: float) -> np.ndarray:
    """Sum of unit-area Gaussians `weights_i * G(x - centres_i)`, in blocks to bound memory."""
    std = fwhm * _GAUSS_FWHM_TO_STD
    out = np.zeros_like(x)
    block = max(1, _CHUNK // x.size)
    for start in range(0, centres.size, block):
        c, w = centres[start : start + block, None], weights[start : start + block, None]
        out += np.sum(w * np.exp(-0.5 * ((x[None, :] - c) / std) ** 2), axis=0)
    return out / (std * np.sqrt(2.0 * np.pi))


def isotropic_spectrum(
    shifts_or_sigmas, grid, fwhm: float, weights: Sequence[float] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic (MAS-like) 1D spectrum: one Gaussian line per site.

    **Arguments:**

    - `shifts_or_sigmas`: isotropic values of shape `(n,)` (shifts or shieldings; the spectrum is
      in the same units) or tensors of shape `(n, 3, 3)`, whose isotropic values are used.
    - `grid`: 1-D array of abscissae (ppm).
    - `fwhm`: full width at half maximum of each line (ppm).
    - `weights`: optional `(n,)` intensities per site (e.g. site multiplicities); default 1.

    **Returns:**

    `(x, intensity)`, both of shape `grid.shape`. Each line has unit area times its weight, so the
    intensity integrates over x to `sum(weights)` when the grid covers every line.
    """
    v = _array(shifts_or_sigmas, "shifts_or_sigmas")
    if v.ndim >= 2 and v.shape[-2:] == (3, 3):
        v = isotropic(v)
    centres = v.reshape(-1)
    x, f = _grid_fwhm(grid, fwhm)
    return x, _broaden(centres, _weights(weights, centres.size), x, f)


def fibonacci_sphere(n: int) -> np.ndarray:
    """`n` nearly uniform unit vectors of shape `(n, 3)` on the sphere (deterministic)."""
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n_orientations: expected a positive integer, got {n!r}")
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    r = np.sqrt(np.clip(1.0 - z**2, 0.0, None))
    phi = np.pi * (1.0 + np.sqrt(5.0)) * k  # golden angle increments
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def static_powder_pattern(
    sigma, grid, fwhm: float, n_orientations: int = 5000, weights=None
) -> tuple[np.ndarray, np.ndarray]:
    """Static CSA powder line shape: first-order frequency `b^T sym(sigma) b` over field directions.

    The field direction b runs over `n_orientations` Fibonacci points on the sphere (equivalent to
    the zz component of `R sigma R^T` over crystallite orientations R); each value is broadened by a
    Gaussian. Use enough orientations that their spacing is below `fwhm` (roughly
    `n_orientations >> (span / fwhm)**2`).

    **Arguments:**

    - `sigma`: tensors of shape `(3, 3)` or `(n, 3, 3)` (shielding, or shift tensors from
      `chemical_shift(sigma, ref)` for a spectrum in shift units).
    - `grid`, `fwhm`: as in `isotropic_spectrum`.
    - `n_orientations`: number of field directions.
    - `weights`: optional `(n,)` intensities per site.

    **Returns:**

    `(x, intensity)` of shape `grid.shape`; intensity integrates to `sum(weights)`.
    """
    s = symmetric_part(sigma).reshape(-1, 3, 3)
    x, f = _grid_fwhm(grid, fwhm)
    w = _weights(weights, s.shape[0])
    b = fibonacci_sphere(n_orientations)
    freq = np.einsum("ka,nab,kb->nk", b, s, b)  # (n_sites, n_orientations)
    w_each = np.repeat(w / n_orientations, n_orientations)
    return x, _broaden(freq.reshape(-1), w_each, x, f)


def plot_spectrum(x, y, ax=None, *, xlabel: str = "ppm", invert_x: bool = True, **plot_kwargs):
    """Line plot of a spectrum on `ax` (a new figure if None); NMR axes run right to left.

    Returns the matplotlib Axes.
    """
    xs, ys = _array(x, "x"), _array(y, "y")
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ValueError(
            f"x, y: expected two 1-D arrays of the same length, got {xs.shape}, {ys.shape}"
        )
    if ax is None:
        import matplotlib.pyplot as plt  # lazy: matplotlib only when plotting

        _, ax = plt.subplots()
    ax.plot(xs, ys, **plot_kwargs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("intensity")
    if invert_x and not ax.xaxis_inverted():
        ax.invert_xaxis()
    return ax
