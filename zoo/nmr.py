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

The input checks and elementary parts live in `zoo._nmr_arrays`, the spectra in
`zoo._nmr_spectra`, the `.magres` writer in `zoo._magres`; all are re-exported here.
"""

import numpy as np

from ._nmr_arrays import _array, _tensors
from ._nmr_arrays import antisymmetric_part as antisymmetric_part
from ._nmr_arrays import isotropic as isotropic
from ._nmr_arrays import symmetric_part as symmetric_part
from ._nmr_spectra import fibonacci_sphere as fibonacci_sphere
from ._nmr_spectra import isotropic_spectrum as isotropic_spectrum
from ._nmr_spectra import plot_spectrum as plot_spectrum
from ._nmr_spectra import static_powder_pattern as static_powder_pattern


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


from ._magres import write_magres as write_magres  # noqa: E402  (uses the functions above)
