"""Infrared spectra from the cell dipole of a molecular-dynamics run.

The classical IR absorption is the Fourier transform of the autocorrelation of the dipole
derivative, ``I(nu) ~ int <dM/dt(0) . dM/dt(tau)> cos(2 pi c nu tau) dtau``; the lag axis is
tapered by a Hann window so the spectrum of a finite run has no sidelobes. A Berry-phase cell
dipole is defined modulo the polarization quantum ``e R``, so consecutive differences are
folded into the cell before differentiating (a jump by a lattice vector is no motion).
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

#: speed of light in cm/fs (wavenumber in cm^-1 = frequency in 1/fs / C_CM_PER_FS)
C_CM_PER_FS = 2.99792458e-5


def _check_series(dipoles, timestep: float) -> np.ndarray:
    try:
        m = np.asarray(dipoles, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("dipoles must be a numeric array of shape (n_steps, 3)") from None
    if m.ndim != 2 or m.shape[1] != 3 or len(m) < 8:
        raise ValueError(f"dipoles must have shape (n_steps >= 8, 3), got {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("dipoles contain non-finite values")
    if not (isinstance(timestep, (int, float)) and np.isfinite(timestep) and timestep > 0):
        raise ValueError(f"timestep must be a positive number of fs, got {timestep!r}")
    return m


def dipole_derivative(
    dipoles: Float[np.ndarray, "n_steps 3"], timestep: float, cell=None
) -> Float[np.ndarray, "n_steps-1 3"]:
    """Forward differences of `dipoles` (e·Å) per `timestep` (fs), folded modulo the
    polarization quantum of `cell` `(3, 3)` (lattice vectors as rows, Å) if given."""
    m = _check_series(dipoles, timestep)
    d = np.diff(m, axis=0)
    if cell is not None:
        cell = np.asarray(cell, dtype=np.float64)
        if cell.shape != (3, 3) or not np.isfinite(cell).all() or abs(np.linalg.det(cell)) < 1e-9:
            raise ValueError(f"cell must be 3 finite, independent lattice vectors, got {cell}")
        frac = d @ np.linalg.inv(cell)
        d = (frac - np.round(frac)) @ cell
    return d / timestep


def ir_spectrum(
    dipoles: Float[np.ndarray, "n_steps 3"],
    timestep: float,
    *,
    cell=None,
    max_lag: float | None = None,
    resolution: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """IR spectrum of a dipole time series sampled every `timestep` fs.

    **Arguments:** `dipoles` `(n_steps, 3)` e·Å, `timestep` fs, `cell` (fold jumps by the
    polarization quantum, see :func:`dipole_derivative`), `max_lag` (fs, length of the Hann
    window on the autocorrelation; default half the run: longer lags are averaged over too
    few time origins), `resolution` (cm^-1 spacing of the output grid, by zero padding; the
    true resolution is about ``1 / (c * max_lag)``).

    **Returns:** wavenumbers (cm^-1, from 0 to the Nyquist limit) and the intensity
    (arbitrary units, maximum 1).
    """
    x = dipole_derivative(dipoles, timestep, cell)
    x = x - x.mean(axis=0)
    n = len(x)
    lags = n // 2 if max_lag is None else int(round(max_lag / timestep))
    if not 2 <= lags <= n - 1:
        raise ValueError(f"max_lag must span 2 to {n - 1} steps of {timestep} fs, got {max_lag}")
    if not (np.isfinite(resolution) and resolution > 0):
        raise ValueError(f"resolution must be a positive wavenumber, got {resolution!r}")
    size = 1 << int(np.ceil(np.log2(2 * n)))
    power = np.sum(np.abs(np.fft.rfft(x, size, axis=0)) ** 2, axis=1)
    acf = np.fft.irfft(power, size)[:lags] / (n - np.arange(lags))  # unbiased estimate
    acf = acf * np.hanning(2 * lags + 1)[lags:-1]
    points = max(size, int(np.ceil(1.0 / (C_CM_PER_FS * timestep * resolution))))
    # cosine transform of the even autocorrelation: 2 Re(rfft) minus the double-counted lag 0
    spectrum = 2 * np.fft.rfft(acf, points).real - acf[0]
    wavenumber = np.fft.rfftfreq(points, d=timestep) / C_CM_PER_FS
    spectrum = np.clip(spectrum, 0, None)
    top = spectrum.max()
    return wavenumber, spectrum / top if top > 0 else spectrum


def spectrum_peaks(
    wavenumber: np.ndarray, intensity: np.ndarray, *, window=(50.0, 1400.0), prominence=0.02
) -> np.ndarray:
    """Wavenumbers (cm^-1, ascending) of the peaks of a spectrum inside `window`, those
    standing out by at least `prominence` times the largest intensity in the window."""
    from scipy.signal import find_peaks

    w = np.asarray(wavenumber, dtype=np.float64)
    s = np.asarray(intensity, dtype=np.float64)
    if w.shape != s.shape or w.ndim != 1 or not np.isfinite(s).all():
        raise ValueError("wavenumber and intensity must be finite 1-D arrays of one length")
    inside = (w >= window[0]) & (w <= window[1])
    if inside.sum() < 3:
        raise ValueError(f"fewer than 3 spectrum points inside window {window} cm^-1")
    w, s = w[inside], s[inside]
    top = s.max()
    if top <= 0:
        return np.zeros(0)
    index, _ = find_peaks(s, prominence=prominence * top)
    return w[index]


__all__ = ["C_CM_PER_FS", "dipole_derivative", "ir_spectrum", "spectrum_peaks"]
