"""`zoo.ir`: IR spectra from dipole time series, checked on synthetic signals."""

import numpy as np
import pytest

from zoo.ir import C_CM_PER_FS, dipole_derivative, ir_spectrum, spectrum_peaks


def oscillating(wavenumbers, amplitudes, steps=3000, timestep=1.0, phase=0.3):
    """Dipoles (steps, 3) oscillating at the given wavenumbers (cm^-1), one axis each."""
    t = np.arange(steps) * timestep
    m = np.zeros((steps, 3))
    for axis, (nu, a) in enumerate(zip(wavenumbers, amplitudes)):
        m[:, axis] = a * np.cos(2 * np.pi * C_CM_PER_FS * nu * t + phase * axis)
    return m


def test_a_dipole_oscillating_at_a_known_frequency_gives_its_peak_there():
    w, s = ir_spectrum(oscillating([463.0], [0.5]), 1.0)
    peaks = spectrum_peaks(w, s)
    assert peaks.shape == (1,)
    assert abs(peaks[0] - 463.0) < 2.0
    assert s.max() == pytest.approx(1.0)


def test_two_modes_give_two_peaks_weighted_by_the_square_of_the_dipole_derivative():
    # same dipole amplitude: the derivative (and the IR intensity) scales with the frequency
    w, s = ir_spectrum(oscillating([400.0, 1000.0], [0.2, 0.2], timestep=0.5), 0.5)
    peaks = spectrum_peaks(w, s)
    assert np.allclose(peaks, [400.0, 1000.0], atol=2.0)
    height = [s[np.argmin(abs(w - p))] for p in peaks]
    assert height[1] / height[0] == pytest.approx((1000.0 / 400.0) ** 2, rel=0.1)


def test_a_jump_by_a_polarization_quantum_does_not_change_the_spectrum():
    cell = np.array([[9.97, 0, 0], [0, 8.63, 0], [0.5, 0, 10.96]])
    m = oscillating([800.0, 0.0], [0.1, 0.0])
    jumped = m.copy()
    jumped[1700:] += 2 * cell[2] - cell[0]
    ref = ir_spectrum(m, 1.0, cell=cell)[1]
    assert np.allclose(ir_spectrum(jumped, 1.0, cell=cell)[1], ref, atol=1e-12)
    # without the cell, the jump is a step in the dipole: its derivative is a spike
    assert not np.allclose(ir_spectrum(jumped, 1.0)[1], ref, atol=1e-3)


def test_dipole_derivative_is_the_finite_difference():
    m = np.cumsum(np.ones((10, 3)), axis=0) * 0.02
    assert np.allclose(dipole_derivative(m, 0.5), 0.04)


@pytest.mark.parametrize(
    ("dipoles", "timestep", "kwargs", "match"),
    [
        (np.zeros((100, 2)), 1.0, {}, "shape"),
        (np.zeros((4, 3)), 1.0, {}, "shape"),
        (np.full((100, 3), np.nan), 1.0, {}, "non-finite"),
        (np.zeros((100, 3)), 0.0, {}, "timestep"),
        (np.zeros((100, 3)), 1.0, {"cell": np.zeros((3, 3))}, "cell"),
        (np.zeros((100, 3)), 1.0, {"max_lag": 500.0}, "max_lag"),
        (np.zeros((100, 3)), 1.0, {"resolution": -1.0}, "resolution"),
    ],
)
def test_bad_input_fails_with_one_clear_error(dipoles, timestep, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ir_spectrum(dipoles, timestep, **kwargs)


def test_spectrum_peaks_refuses_mismatched_arrays_and_an_empty_window():
    with pytest.raises(ValueError, match="1-D"):
        spectrum_peaks(np.arange(10.0), np.arange(9.0))
    with pytest.raises(ValueError, match="window"):
        spectrum_peaks(np.arange(10.0), np.ones(10), window=(100.0, 200.0))


def test_dfpt_modes_merge_degenerate_pairs_and_keep_the_strongest():
    from recipes.sio2_ir import dfpt_modes, match

    modes = dfpt_modes()
    # the E(TO) pair at 1041.47 / 1041.61 cm^-1 is one line with the summed intensity
    assert modes[np.argmax(modes[:, 1])] == pytest.approx([1041.54, 84.4123])
    assert np.all(modes[:, 1] >= 0.05 * modes[:, 1].max())
    assert len(modes) == 7 and np.all(np.diff(modes[:, 0]) > 2.0)
    rows = match(modes[:2], np.array([340.0, 380.0, 1000.0]))
    assert [r["md"] for r in rows] == [340.0, 380.0]
    assert rows[0]["difference"] == pytest.approx(340.0 - 348.54)
    with pytest.raises(ValueError, match="no peak"):
        match(modes, np.zeros(0))


def test_the_ir_page_names_the_backbone_size_of_the_weights():
    from types import SimpleNamespace

    from recipes.sio2_ir import model_size

    old = SimpleNamespace(config={"backbone": {"channels": 8, "r_max": 4.0}})
    new = SimpleNamespace(config={"backbone": {"architecture": "nequip", "channels": 16,
                                               "r_max": 4.5}})  # fmt: skip
    assert model_size(old) == "nequip, 8 channels, r_max 4 Å"
    assert model_size(new) == "nequip, 16 channels, r_max 4.5 Å"
