"""Analysis of NMR shielding and shift tensors (e.g. Si-29): principal values, Haeberlen and
Herzfeld-Berger parameters, Euler angles, referencing, simulated 1D spectra and `.magres` output.

Plain numpy (jax arrays are accepted and converted; these functions are not jit-able). Every
function takes tensors of shape `(..., 3, 3)` (any batch shape) in the input's units, usually ppm.

Conventions (IUPAC; Harris et al., Magn. Reson. Chem. 46, 582 (2008)):

- Two forms of the same physics: the shielding `sigma` (grows with shielding) and the chemical
  shift `delta` (grows with frequency, `delta = sigma_ref - sigma` for absolute shieldings).
  Only the symmetric part enters first-order spectra; the antisymmetric part (the 1e irrep) is
  returned by `antisymmetric_part`.
- A predicted quantity on an unreferenced shift scale (e.g. VASP's `-sigma` without core
  contributions) becomes a shift vs the reference compound by a fitted linear map,
  `delta = slope * raw + offset` (`reference_shift`, fitted by `fit_reference`).
- Haeberlen: principal values of the symmetric part ordered
  `|t_zz - t_iso| >= |t_xx - t_iso| >= |t_yy - t_iso|`; reduced anisotropy
  `zeta = t_zz - t_iso`; anisotropy `Delta = t_zz - (t_xx + t_yy) / 2 = 3 zeta / 2`; asymmetry
  `eta = (t_yy - t_xx) / zeta` in [0, 1] (0 when zeta = 0). The same formulas serve both forms:
  given a shift tensor they give the shift-form zeta and Delta (opposite in sign to the
  shielding form), eta is the same.
- Herzfeld-Berger (Maryland): span `Omega >= 0` and skew `kappa` in [-1, 1], the same number in
  both forms. Shielding form: `s_11 <= s_22 <= s_33`, `Omega = s_33 - s_11`,
  `kappa = 3 (s_iso - s_22) / Omega`; shift form: `d_11 >= d_22 >= d_33`,
  `Omega = d_11 - d_33`, `kappa = 3 (d_22 - d_iso) / Omega` (`herzfeld_berger(t, form=...)`).
- Principal axes: the columns of a proper rotation `R` (det +1) with
  `sym(t) = R diag(t_xx, t_yy, t_zz) R^T` (principal frame -> crystal frame). Each axis is
  defined up to its sign, so R (and its Euler angles) is one of four equivalent choices.
- Euler angles, convention "zyz" (active, intrinsic): `R = Rz(alpha) Ry(beta) Rz(gamma)`,
  alpha, gamma in (-pi, pi], beta in [0, pi], radians.
"""

from collections.abc import Sequence

import numpy as np

_GAUSS_FWHM_TO_STD = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
_CHUNK = 1 << 22  # elements per broadening block, bounds memory


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


def principal_components(sigma) -> tuple[np.ndarray, np.ndarray]:
    """Principal values and axes of the symmetric part, in Haeberlen order.

    **Arguments:**

    - `sigma`: tensors of shape `(..., 3, 3)`.

    **Returns:**

    `(values, axes)`: `values` of shape `(..., 3)` = `(s_xx, s_yy, s_zz)` with
    `|s_zz - s_iso| >= |s_xx - s_iso| >= |s_yy - s_iso|`, and `axes` of shape `(..., 3, 3)`, a
    proper rotation whose column k is the axis of `values[..., k]`.
    """
    w, v = np.linalg.eigh(symmetric_part(sigma))
    dev = np.abs(w - w.mean(axis=-1, keepdims=True))
    order = np.argsort(dev, axis=-1, kind="stable")[..., [1, 0, 2]]  # (yy, xx, zz) -> (xx, yy, zz)
    values = np.take_along_axis(w, order, axis=-1)
    axes = np.take_along_axis(v, order[..., None, :], axis=-1)
    # eigenvectors have arbitrary signs: flip the x axis where needed for a right-handed frame
    axes[..., :, 0] *= np.sign(np.linalg.det(axes))[..., None]
    return values, axes


def haeberlen(sigma) -> dict[str, np.ndarray]:
    """Haeberlen parameters of the symmetric part (see the module docstring).

    **Returns:**

    dict of arrays of shape `(...)`: `isotropic`, `reduced_anisotropy` (zeta = s_zz - s_iso),
    `anisotropy` (Delta = s_zz - (s_xx + s_yy) / 2), `asymmetry` (eta); and `principal_values`
    of shape `(..., 3)` = (s_xx, s_yy, s_zz).
    """
    values, _ = principal_components(sigma)
    iso = values.mean(axis=-1)
    xx, yy, zz = values[..., 0], values[..., 1], values[..., 2]
    zeta = zz - iso
    eta = np.divide(yy - xx, zeta, out=np.zeros_like(zeta), where=zeta != 0)
    return {
        "isotropic": iso,
        "reduced_anisotropy": zeta,
        "anisotropy": zz - 0.5 * (xx + yy),
        "asymmetry": np.clip(eta, 0.0, 1.0),  # clip only removes rounding noise
        "principal_values": values,
    }


def herzfeld_berger(tensor, form: str = "shielding") -> dict[str, np.ndarray]:
    """Herzfeld-Berger (Maryland) parameters: isotropic value, span and skew.

    **Arguments:**

    - `tensor`: tensors of shape `(..., 3, 3)`, shieldings or shifts.
    - `form`: `"shielding"` (principal values ordered `s_11 <= s_22 <= s_33`, skew
      `3 (s_iso - s_22) / Omega`) or `"shift"` (`d_11 >= d_22 >= d_33`, skew
      `3 (d_22 - d_iso) / Omega`). A shift tensor `delta = ref - sigma` gives the same span
      and skew in the shift form as `sigma` in the shielding form.

    **Returns:**

    dict of arrays of shape `(...)`: `isotropic`, `span` (Omega >= 0), `skew` (kappa in
    [-1, 1]); and `principal_values` of shape `(..., 3)` = (t_11, t_22, t_33) in the form's order.
    """
    if form not in ("shielding", "shift"):
        raise ValueError(f"form must be 'shielding' or 'shift', got {form!r}")
    values = np.linalg.eigvalsh(symmetric_part(tensor))  # ascending
    sign = 1.0 if form == "shielding" else -1.0
    if form == "shift":
        values = values[..., ::-1]
    iso = values.mean(axis=-1)
    span = sign * (values[..., 2] - values[..., 0])
    skew = np.divide(
        3.0 * sign * (iso - values[..., 1]), span, out=np.zeros_like(span), where=span != 0
    )
    return {
        "isotropic": iso,
        "span": span,
        "skew": np.clip(skew, -1.0, 1.0),
        "principal_values": values,
    }


def _check_convention(convention: str) -> None:
    if convention != "zyz":
        raise ValueError(f"convention: only 'zyz' is supported, got {convention!r}")


def euler_angles(axes, convention: str = "zyz") -> np.ndarray:
    """Euler angles `(alpha, beta, gamma)` of a principal-axis frame, `axes = Rz(a) Ry(b) Rz(g)`.

    **Arguments:**

    - `axes`: orthogonal matrices of shape `(..., 3, 3)`, columns = principal axes (as returned
      by `principal_components`). A left-handed frame (det -1) is made right-handed by flipping
      its first column, which is still a principal axis.
    - `convention`: `"zyz"`.

    **Returns:**

    Array of shape `(..., 3)` in radians. At `beta = 0` or `pi` only `alpha + gamma` (or
    `alpha - gamma`) is defined; then `gamma = 0`.
    """
    _check_convention(convention)
    R = _tensors(axes, "axes").copy()
    err = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max(initial=0.0)
    if err > 1e-6:
        raise ValueError(f"axes: expected orthogonal matrices, |R^T R - I| = {err:.2e}")
    R[..., :, 0] *= np.sign(np.linalg.det(R))[..., None]
    beta = np.arccos(np.clip(R[..., 2, 2], -1.0, 1.0))
    sin_beta = np.hypot(R[..., 0, 2], R[..., 1, 2])
    regular = sin_beta > 1e-9
    alpha = np.where(
        regular, np.arctan2(R[..., 1, 2], R[..., 0, 2]), np.arctan2(-R[..., 0, 1], R[..., 1, 1])
    )
    gamma = np.where(regular, np.arctan2(R[..., 2, 1], -R[..., 2, 0]), 0.0)
    return np.stack([alpha, beta, gamma], axis=-1)


def rotation_from_euler(angles, convention: str = "zyz") -> np.ndarray:
    """Rotations `Rz(alpha) Ry(beta) Rz(gamma)`, shape `(..., 3, 3)`, from `(..., 3)` angles."""
    _check_convention(convention)
    a = _array(angles, "angles")
    if a.ndim < 1 or a.shape[-1] != 3:
        raise ValueError(f"angles: expected an array of shape (..., 3), got shape {a.shape}")

    def rz(t):
        c, s, o, z = np.cos(t), np.sin(t), np.ones_like(t), np.zeros_like(t)
        return np.stack(
            [np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2
        )

    def ry(t):
        c, s, o, z = np.cos(t), np.sin(t), np.ones_like(t), np.zeros_like(t)
        return np.stack(
            [np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2
        )

    return rz(a[..., 0]) @ ry(a[..., 1]) @ rz(a[..., 2])


def chemical_shift(sigma, reference: float) -> np.ndarray:
    """Chemical shift from an absolute shielding, `delta = sigma_ref - sigma` (ppm).

    For a model whose output is not an absolute shielding (e.g. `si29-shielding`, which predicts
    an unreferenced shift), use `reference_shift` with the model's fitted reference instead.

    **Arguments:**

    - `sigma`: isotropic shieldings of any shape, or tensors of shape `(..., 3, 3)` (recognised by
      the trailing `(3, 3)`).
    - `reference`: isotropic shielding `sigma_ref` of the reference compound (for Si-29, TMS).

    **Returns:**

    For scalars: `sigma_ref - sigma`, same shape. For tensors: the shift tensor
    `sigma_ref * I - sigma`, shape `(..., 3, 3)`. Larger shielding gives a smaller shift.
    """
    ref = _array(reference, "reference")
    if ref.ndim != 0:
        raise ValueError(f"reference: expected a scalar, got shape {ref.shape}")
    s = _array(sigma, "sigma")
    if s.ndim >= 2 and s.shape[-2:] == (3, 3):
        return float(ref) * np.eye(3) - s
    return float(ref) - s


def _slope_offset(reference) -> tuple[float, float]:
    if not isinstance(reference, dict) or not {"slope", "offset"} <= set(reference):
        raise ValueError(
            f"reference: expected a dict with 'slope' and 'offset' (ppm), got {reference!r}"
        )
    try:
        slope, offset = float(reference["slope"]), float(reference["offset"])
    except (TypeError, ValueError):
        raise ValueError(
            f"reference: slope and offset must be numbers, got {reference!r}"
        ) from None
    if not (np.isfinite(slope) and np.isfinite(offset)) or slope == 0:
        raise ValueError(f"reference: slope must be finite and non-zero, got {reference!r}")
    return slope, offset


def reference_shift(raw, reference: dict) -> np.ndarray:
    """Chemical shift vs the reference compound from values on an unreferenced shift scale.

    **Arguments:**

    - `raw`: isotropic values of any shape, or tensors `(..., 3, 3)` (trailing `(3, 3)`), on a
      scale that rises with the chemical shift (e.g. VASP's `-sigma`).
    - `reference`: `{"slope": a, "offset": b}` from `fit_reference` (ppm).

    **Returns:** `a * raw + b` for values; `a * raw + b * I` for tensors (same shape).
    """
    slope, offset = _slope_offset(reference)
    r = _array(raw, "raw")
    if r.ndim >= 2 and r.shape[-2:] == (3, 3):
        return slope * r + offset * np.eye(3)
    return slope * r + offset


def fit_reference(predicted, experimental) -> dict:
    """Least-squares line `experimental = slope * predicted + offset` with its errors.

    **Arguments:** `predicted`, `experimental`: 1-D arrays of the same length n >= 3 (ppm).

    **Returns:** dict with `slope`, `offset`, `n`, `mae` and `rmse` of the fit, `loo_mae` and
    `loo_rmse` (each point predicted by the line fitted to the others), and the per-point
    `residuals` and `loo_residuals` (fitted minus experimental), as plain floats and lists.
    """
    x, y = _array(predicted, "predicted"), _array(experimental, "experimental")
    if x.ndim != 1 or x.shape != y.shape or x.size < 3:
        raise ValueError(
            f"predicted, experimental: expected two 1-D arrays of one length >= 3, got "
            f"{x.shape}, {y.shape}"
        )
    if np.ptp(x) == 0:
        raise ValueError("predicted: all values are equal, the slope is undefined")
    design = np.stack([x, np.ones_like(x)], axis=-1)
    slope, offset = np.linalg.lstsq(design, y, rcond=None)[0]
    res = design @ np.array([slope, offset]) - y
    loo = np.empty_like(x)
    for i in range(x.size):
        keep = np.arange(x.size) != i
        coef = np.linalg.lstsq(design[keep], y[keep], rcond=None)[0]
        loo[i] = design[i] @ coef - y[i]
    return {
        "slope": float(slope),
        "offset": float(offset),
        "n": int(x.size),
        "mae": float(np.mean(np.abs(res))),
        "rmse": float(np.sqrt(np.mean(res**2))),
        "loo_mae": float(np.mean(np.abs(loo))),
        "loo_rmse": float(np.sqrt(np.mean(loo**2))),
        "residuals": res.tolist(),
        "loo_residuals": loo.tolist(),
    }


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


from ._magres import write_magres as write_magres  # noqa: E402  (uses the functions above)
