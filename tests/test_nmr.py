"""NMR tensor analysis: Haeberlen / Herzfeld-Berger numbers, invariances, Euler angles, spectra."""

import jax.numpy as jnp
import numpy as np
import pytest

from zoo import nmr
from zoo.data.si29 import DATA_DIR, EXTXYZ

SI29 = DATA_DIR / EXTXYZ


def random_rotation(seed, proper=True):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    R = q * np.sign(np.diag(r))
    R[:, 0] *= np.linalg.det(R) * (1 if proper else -1)
    return R


def random_tensors(n, seed=0):
    """Shielding-like tensors: ~400 ppm isotropic, anisotropic and slightly non-symmetric."""
    rng = np.random.default_rng(seed)
    return 400.0 * np.eye(3) + 20.0 * rng.normal(size=(n, 3, 3))


@pytest.fixture(scope="module")
def si29_tensors():
    import ase.io

    frames = ase.io.read(SI29, "0:8")
    out = [a.arrays["shielding"][a.arrays["has_shielding"]].reshape(-1, 3, 3) for a in frames]
    return np.concatenate(out)


def test_diagonal_tensor_known_numbers():
    # principal values 390, 400, 440: iso 410
    sigma = np.diag([400.0, 440.0, 390.0])
    h = nmr.haeberlen(sigma)
    # deviations: -10, +30, -20 -> zz = 440, xx = 390, yy = 400
    np.testing.assert_allclose(h["principal_values"], [390.0, 400.0, 440.0])
    np.testing.assert_allclose(h["isotropic"], 410.0)
    np.testing.assert_allclose(h["reduced_anisotropy"], 30.0)
    np.testing.assert_allclose(h["anisotropy"], 45.0)
    np.testing.assert_allclose(h["asymmetry"], (400.0 - 390.0) / 30.0)
    hb = nmr.herzfeld_berger(sigma)
    np.testing.assert_allclose(hb["principal_values"], [390.0, 400.0, 440.0])
    np.testing.assert_allclose(hb["span"], 50.0)
    np.testing.assert_allclose(hb["skew"], 3 * (410.0 - 400.0) / 50.0)
    # shift convention gives the same skew: d = ref - s, kappa = 3 (d_22 - d_iso) / Omega
    d = np.sort(nmr.chemical_shift(np.array([390.0, 400.0, 440.0]), 500.0))[::-1]
    np.testing.assert_allclose(3 * (d[1] - d.mean()) / (d[0] - d[2]), hb["skew"])
    # axially symmetric limits: skew +-1, eta 0
    np.testing.assert_allclose(nmr.herzfeld_berger(np.diag([1.0, 1.0, 4.0]))["skew"], 1.0)
    np.testing.assert_allclose(nmr.herzfeld_berger(np.diag([1.0, 4.0, 4.0]))["skew"], -1.0)
    np.testing.assert_allclose(nmr.haeberlen(np.diag([1.0, 1.0, 4.0]))["asymmetry"], 0.0)
    # isotropic tensor: zero anisotropy, span; defined (zero) eta and skew
    iso = nmr.haeberlen(400.0 * np.eye(3))
    assert iso["reduced_anisotropy"] == 0 and iso["asymmetry"] == 0
    assert nmr.herzfeld_berger(400.0 * np.eye(3))["skew"] == 0


def test_parts_and_isotropic():
    s = random_tensors(4)
    np.testing.assert_allclose(nmr.isotropic(s), np.trace(s, axis1=1, axis2=2) / 3)
    np.testing.assert_allclose(nmr.symmetric_part(s) + nmr.antisymmetric_part(s), s)
    np.testing.assert_allclose(nmr.symmetric_part(s), np.swapaxes(nmr.symmetric_part(s), 1, 2))
    np.testing.assert_allclose(
        nmr.antisymmetric_part(s), -np.swapaxes(nmr.antisymmetric_part(s), 1, 2)
    )
    assert nmr.isotropic(jnp.asarray(s)).shape == (4,)  # jax arrays are accepted


def test_principal_components_order_and_frame():
    s = random_tensors(50, seed=1).reshape(5, 10, 3, 3)  # batch dims
    values, axes = nmr.principal_components(s)
    assert values.shape == (5, 10, 3) and axes.shape == (5, 10, 3, 3)
    dev = np.abs(values - nmr.isotropic(s)[..., None])
    assert np.all(dev[..., 2] >= dev[..., 0] - 1e-9) and np.all(dev[..., 0] >= dev[..., 1] - 1e-9)
    np.testing.assert_allclose(np.linalg.det(axes), 1.0, atol=1e-12)
    recon = axes @ (values[..., :, None] * np.swapaxes(axes, -1, -2))
    np.testing.assert_allclose(recon, nmr.symmetric_part(s), atol=1e-10)
    h = nmr.haeberlen(s)
    assert np.all((h["asymmetry"] >= 0) & (h["asymmetry"] <= 1))
    np.testing.assert_allclose(h["anisotropy"], 1.5 * h["reduced_anisotropy"])


@pytest.mark.parametrize("proper", [True, False])
def test_rotation_invariance(proper):
    s = random_tensors(6, seed=2)
    R = random_rotation(3, proper)
    rs = R @ s @ R.T
    np.testing.assert_allclose(nmr.principal_components(rs)[0], nmr.principal_components(s)[0])
    for name in ("isotropic", "reduced_anisotropy", "asymmetry"):
        np.testing.assert_allclose(nmr.haeberlen(rs)[name], nmr.haeberlen(s)[name], atol=1e-10)
    for name in ("isotropic", "span", "skew"):
        np.testing.assert_allclose(
            nmr.herzfeld_berger(rs)[name], nmr.herzfeld_berger(s)[name], atol=1e-10
        )


def test_euler_angles_reconstruct():
    s = random_tensors(20, seed=4)
    values, axes = nmr.principal_components(s)
    angles = nmr.euler_angles(axes)
    assert angles.shape == (20, 3)
    assert np.all((angles[:, 1] >= 0) & (angles[:, 1] <= np.pi))
    R = nmr.rotation_from_euler(angles)
    np.testing.assert_allclose(R, axes, atol=1e-10)
    recon = R @ (values[..., :, None] * np.swapaxes(R, -1, -2))
    np.testing.assert_allclose(recon, nmr.symmetric_part(s), atol=1e-9)
    # known angles round trip, including the gimbal-lock cases beta = 0 and pi
    known = np.array([[0.3, 1.1, -2.0], [0.5, 0.0, 0.0], [-1.0, np.pi, 0.0]])
    np.testing.assert_allclose(nmr.euler_angles(nmr.rotation_from_euler(known)), known, atol=1e-7)
    # a left-handed frame is made right-handed and still diagonalises the tensor
    left = axes.copy()
    left[:, :, 0] *= -1
    R2 = nmr.rotation_from_euler(nmr.euler_angles(left))
    np.testing.assert_allclose(
        R2 @ (values[..., :, None] * np.swapaxes(R2, -1, -2)), recon, atol=1e-9
    )


def test_chemical_shift_sign():
    # more shielded -> smaller shift
    d = nmr.chemical_shift(np.array([400.0, 420.0]), reference=330.0)
    np.testing.assert_allclose(d, [-70.0, -90.0])
    s = random_tensors(3, seed=5)
    dt = nmr.chemical_shift(s, 330.0)
    assert dt.shape == (3, 3, 3)
    np.testing.assert_allclose(nmr.isotropic(dt), 330.0 - nmr.isotropic(s))
    np.testing.assert_allclose(nmr.herzfeld_berger(dt)["span"], nmr.herzfeld_berger(s)["span"])
    # the shift form of the shift tensor gives the shielding form's span and skew
    hs, hd = nmr.herzfeld_berger(s), nmr.herzfeld_berger(dt, form="shift")
    np.testing.assert_allclose(hd["span"], hs["span"])
    np.testing.assert_allclose(hd["skew"], hs["skew"], atol=1e-12)
    np.testing.assert_allclose(hd["principal_values"], 330.0 - hs["principal_values"])
    assert np.all(np.diff(hd["principal_values"], axis=-1) <= 0)  # d11 >= d22 >= d33
    # Haeberlen: zeta changes sign, eta does not
    np.testing.assert_allclose(
        nmr.haeberlen(dt)["reduced_anisotropy"], -nmr.haeberlen(s)["reduced_anisotropy"]
    )
    np.testing.assert_allclose(nmr.haeberlen(dt)["asymmetry"], nmr.haeberlen(s)["asymmetry"])
    with pytest.raises(ValueError, match="form must be"):
        nmr.herzfeld_berger(s, form="delta")


def test_isotropic_spectrum_peak_and_area():
    grid = np.linspace(-120.0, -60.0, 3001)
    x, y = nmr.isotropic_spectrum(np.array([-100.0, -80.0]), grid, fwhm=1.0, weights=[1.0, 2.0])
    assert x.shape == y.shape == grid.shape
    np.testing.assert_allclose(np.trapezoid(y, x), 3.0, rtol=1e-6)
    assert abs(x[np.argmax(y)] - -80.0) < 0.05
    left = (x > -110) & (x < -90)
    assert abs(x[left][np.argmax(y[left])] - -100.0) < 0.05
    np.testing.assert_allclose(y.max() / y[left].max(), 2.0, rtol=1e-6)
    # half maximum at +-fwhm/2
    half = x[left][y[left] >= 0.5 * y[left].max()]
    np.testing.assert_allclose(half.max() - half.min(), 1.0, atol=0.05)
    # tensors are reduced to their isotropic values
    s = random_tensors(3, seed=6)
    _, yt = nmr.isotropic_spectrum(s, np.linspace(300, 500, 401), 2.0)
    _, yi = nmr.isotropic_spectrum(nmr.isotropic(s), np.linspace(300, 500, 401), 2.0)
    np.testing.assert_allclose(yt, yi)


def test_static_powder_pattern_axial_edges():
    s_perp, s_par = 380.0, 440.0
    sigma = np.diag([s_perp, s_perp, s_par])
    grid = np.linspace(340.0, 480.0, 1401)
    x, y = nmr.static_powder_pattern(sigma, grid, fwhm=1.0, n_orientations=40000)
    np.testing.assert_allclose(np.trapezoid(y, x), 1.0, rtol=1e-3)
    # horn at s_perp, step at s_par, nothing outside
    assert abs(x[np.argmax(y)] - s_perp) < 2.0
    assert np.all(y[x < s_perp - 3.0] < 1e-3 * y.max())
    assert np.all(y[x > s_par + 3.0] < 1e-3 * y.max())
    # interior follows the analytic density 1 / (2 sqrt((s_par - s_perp)(x - s_perp)))
    for xi in (400.0, 420.0, 435.0):
        exact = 1.0 / (2.0 * np.sqrt((s_par - s_perp) * (xi - s_perp)))
        np.testing.assert_allclose(np.interp(xi, x, y), exact, rtol=0.03)
    # the step's half-height crossing is at s_par
    step = 1.0 / (2.0 * (s_par - s_perp))
    above = x[(x > 420.0) & (y > 0.5 * step)]
    assert abs(above.max() - s_par) < 0.5
    # rotating the tensor does not change the powder pattern
    R = random_rotation(7)
    _, yr = nmr.static_powder_pattern(R @ sigma @ R.T, grid, fwhm=1.0, n_orientations=40000)
    np.testing.assert_allclose(yr, y, atol=0.02 * y.max())


def test_real_si29_tensors(si29_tensors):
    s = si29_tensors
    assert s.ndim == 3 and len(s) >= 10
    iso = nmr.isotropic(s)
    assert np.all((iso >= 374.0) & (iso <= 468.0))
    assert np.max(np.abs(nmr.antisymmetric_part(s))) > 0.1  # the data are not symmetric
    hb, h = nmr.herzfeld_berger(s), nmr.haeberlen(s)
    np.testing.assert_allclose(hb["isotropic"], iso)
    np.testing.assert_allclose(h["isotropic"], iso)
    assert np.all(hb["span"] >= 0) and np.all(np.abs(hb["skew"]) <= 1)
    values, axes = nmr.principal_components(s)
    R = nmr.rotation_from_euler(nmr.euler_angles(axes))
    recon = R @ (values[..., :, None] * np.swapaxes(R, -1, -2))
    np.testing.assert_allclose(recon, nmr.symmetric_part(s), atol=1e-9)
    # the stored values rise with the chemical shift: referenced, they land in the silicate range
    shift = nmr.reference_shift(iso, {"slope": 0.8745, "offset": -455.5})
    assert np.all((shift > -130) & (shift < -40))
    x, y = nmr.isotropic_spectrum(shift, np.linspace(-160, -20, 1401), 1.0)
    np.testing.assert_allclose(np.trapezoid(y, x), len(s), rtol=1e-4)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"sigma: expected an array of shape \(\.\.\., 3, 3\)"):
        nmr.haeberlen(np.zeros((4, 3)))
    bad = random_tensors(2)
    bad[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match=r"sigma: contains non-finite.*\(1, 0, 2\)"):
        nmr.principal_components(bad)
    with pytest.raises(ValueError, match="sigma: expected a real numeric"):
        nmr.isotropic("not a tensor")
    with pytest.raises(ValueError, match="reference: expected a scalar"):
        nmr.chemical_shift(400.0, [1.0, 2.0])
    with pytest.raises(ValueError, match="reference: contains non-finite"):
        nmr.chemical_shift(400.0, np.inf)
    with pytest.raises(ValueError, match="axes: expected orthogonal"):
        nmr.euler_angles(2 * np.eye(3))
    with pytest.raises(ValueError, match="convention"):
        nmr.euler_angles(np.eye(3), convention="zxz")
    with pytest.raises(ValueError, match="fwhm: expected a positive"):
        nmr.isotropic_spectrum([400.0], np.linspace(0, 1, 5), fwhm=0.0)
    with pytest.raises(ValueError, match="grid: expected a 1-D"):
        nmr.isotropic_spectrum([400.0], 5.0, fwhm=1.0)
    with pytest.raises(ValueError, match="weights: expected 2 values"):
        nmr.isotropic_spectrum([400.0, 410.0], np.linspace(0, 1, 5), 1.0, weights=[1.0])
    with pytest.raises(ValueError, match="n_orientations"):
        nmr.static_powder_pattern(np.eye(3), np.linspace(0, 1, 5), 1.0, n_orientations=0)


def test_plot_spectrum():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = nmr.isotropic_spectrum([-90.0], np.linspace(-120, -60, 301), 2.0)
    ax = nmr.plot_spectrum(x, y, color="k")
    assert ax.xaxis_inverted()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), y)
    fig, ax2 = plt.subplots()
    assert nmr.plot_spectrum(x, y, ax=ax2, invert_x=False) is ax2 and not ax2.xaxis_inverted()
    with pytest.raises(ValueError, match="x, y"):
        nmr.plot_spectrum(x, y[:-1], ax=ax2)
    plt.close("all")
