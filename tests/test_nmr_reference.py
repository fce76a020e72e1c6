"""Si-29 shift reference, literature silicates, conventions against soprano, `.magres` output."""

import json
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
from soprano.nmr.tensor import MagneticShielding
from soprano.properties.nmr import MSIsotropy

from zoo import nmr
from zoo.data.si29 import DATA_DIR
from zoo.data.silicates import check_silicate, load_reference_compounds
from zoo.shielding import ShieldingModel

SHIPPED = DATA_DIR.parents[1] / "zoo" / "weights" / "si29-shielding"
PPM = 1e-6


def random_tensor(seed):
    return 400.0 * np.eye(3) + 20.0 * np.random.default_rng(seed).normal(size=(3, 3))


@pytest.fixture(scope="module")
def compounds():
    return {c.name: c for c in load_reference_compounds()}


@pytest.fixture(scope="module")
def shipped():
    from zoo.hub import load

    return load("si29-shielding", source="embedded", model_types={"shielding": ShieldingModel})


# ---- literature structures ----


def test_reference_compounds_build_and_check(compounds):
    assert len(compounds) >= 8
    assert {c.qn for c in compounds.values()} >= {0, 2, 4}
    for c in compounds.values():
        bonds = check_silicate(c.atoms)
        assert 1.57 <= bonds["si_o_min"] <= bonds["si_o_max"] <= 1.70
        formula = ase.Atoms(c.formula).get_chemical_formula(empirical=True)
        assert c.atoms.get_chemical_formula(empirical=True) == formula, c.name
        assert set(c.site[c.atoms.numbers == 14]) == set(c.shifts)
        assert c.structure_source and c.shift_source
    assert len(compounds["alpha-quartz"].atoms) == 9  # Z = 3
    assert (compounds["forsterite"].atoms.numbers == 14).sum() == 4  # Z = 4


def test_bad_entries_fail_naming_the_compound(tmp_path):
    entries = json.loads((DATA_DIR / "experimental_shifts.json").read_text())
    quartz = next(e for e in entries["compounds"] if e["name"] == "alpha-quartz")
    moved = json.loads(json.dumps(quartz))
    moved["sites"][1][2:5] = [0.30, 0.20, 0.10]  # O moved: Si loses its tetrahedron
    path = tmp_path / "experimental_shifts.json"
    path.write_text(json.dumps({"compounds": [moved]}))
    with pytest.raises(ValueError, match=r"compound 'alpha-quartz': Si(-O bonds| atom)"):
        load_reference_compounds(path)
    relabelled = json.loads(json.dumps(quartz))
    relabelled["shifts"][0]["label"] = "Si9"
    path.write_text(json.dumps({"compounds": [relabelled]}))
    with pytest.raises(ValueError, match=r"shifts name \['Si9'\], Si sites are \['Si'\]"):
        load_reference_compounds(path)
    with pytest.raises(ValueError, match="no such file"):
        load_reference_compounds(tmp_path / "missing.json")


def test_check_silicate_rejects_long_bonds():
    a = ase.Atoms("SiO4", positions=[[0, 0, 0], [1.75, 0, 0], [-1.6, 0, 0], [0, 1.6, 0],
                                     [0, 0, 1.6]], cell=[9, 9, 9], pbc=True)  # fmt: skip
    with pytest.raises(ValueError, match=r"Si-O bonds 1\.600-1\.750 A outside"):
        check_silicate(a)


# ---- the fit and its use ----


def test_fit_reference_exact_and_noisy_lines():
    x = np.array([395.0, 400.0, 425.0, 435.0, 450.0])
    fit = nmr.fit_reference(x, 0.9 * x - 450.0)
    assert fit["slope"] == pytest.approx(0.9) and fit["offset"] == pytest.approx(-450.0)
    assert fit["mae"] == pytest.approx(0, abs=1e-9) and fit["loo_mae"] == pytest.approx(0, abs=1e-9)
    noisy = nmr.fit_reference(x, 0.9 * x - 450.0 + np.array([1.0, -1.0, 0.5, -0.5, 0.0]))
    assert noisy["loo_mae"] > noisy["mae"] > 0 and len(noisy["loo_residuals"]) == 5
    with pytest.raises(ValueError, match="length >= 3"):
        nmr.fit_reference([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="slope is undefined"):
        nmr.fit_reference([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])


def test_reference_shift_values_and_tensors():
    ref = {"slope": 0.9, "offset": -450.0}
    t = random_tensor(0)
    d = nmr.reference_shift(t, ref)
    np.testing.assert_allclose(d, 0.9 * t - 450.0 * np.eye(3))
    np.testing.assert_allclose(nmr.isotropic(d), nmr.reference_shift(nmr.isotropic(t), ref))
    for bad in ({"slope": 1.0}, {"slope": 0.0, "offset": 1.0}, 3.0):
        with pytest.raises(ValueError, match="reference"):
            nmr.reference_shift(t, bad)


def test_shipped_reference_matches_its_fit():
    config = json.loads((SHIPPED / "config.json").read_text())
    fit = json.loads((SHIPPED / "metrics.json").read_text())["nmr_reference"]
    ref = config["reference"]
    assert ref["slope"] == pytest.approx(fit["slope"], abs=1e-6)
    assert ref["offset"] == pytest.approx(fit["offset"], abs=1e-4)
    again = nmr.fit_reference([c["raw"] for c in fit["compounds"]],
                              [c["experimental"] for c in fit["compounds"]])  # fmt: skip
    assert again["slope"] == pytest.approx(fit["slope"]) and again["loo_mae"] == fit["loo_mae"]
    assert fit["loo_mae"] <= 2.0


def test_default_shifts_of_quartz_and_forsterite(shipped, compounds):
    """Built from literature cells, the default chemical shifts are within 3 ppm of
    experiment and quartz (Q4) is the more shielded; the raw values are what the fit used."""
    fit = json.loads((SHIPPED / "metrics.json").read_text())["nmr_reference"]
    raw = {c["name"]: c["raw"] for c in fit["compounds"]}
    shifts = {}
    for name in ("alpha-quartz", "forsterite"):
        c = compounds[name]
        out = shipped.predict(c.atoms)
        si = out["mask"]
        shifts[name] = out["chemical_shift"][si]
        assert np.abs(shifts[name] - c.shift).max() < 3.0, (name, shifts[name], c.shift)
        np.testing.assert_allclose(out["isotropic"][si], shifts[name])
        assert nmr.isotropic(out["unreferenced_shift"][si]).mean() == pytest.approx(
            raw[name], abs=0.05
        )
    assert shifts["alpha-quartz"].max() < shifts["forsterite"].min()


# ---- conventions against soprano (a maintained NMR library) ----


def _same_haeberlen(ours: dict, theirs) -> None:
    """`theirs`: soprano's (iso, zeta, Delta, eta) named tuple, shielding or shift form."""
    keys = ("isotropic", "reduced_anisotropy", "anisotropy", "asymmetry")
    np.testing.assert_allclose([ours[k] for k in keys], tuple(theirs), rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shielding_form_matches_soprano(seed):
    t = random_tensor(seed)
    ms = MagneticShielding(t, species="29Si")
    hae, hb = nmr.haeberlen(t), nmr.herzfeld_berger(t)
    _same_haeberlen(hae, ms.haeberlen_shielding)
    mb = ms.herzfeldberger_shielding
    assert hb["span"] == pytest.approx(mb.omega) and hb["skew"] == pytest.approx(mb.kappa)
    np.testing.assert_allclose(hae["principal_values"], ms.eigenvalues)  # Haeberlen order


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shift_form_matches_soprano(seed):
    """soprano converts with the exact `(ref - sigma) / (1 - ref)`; ours is `ref - sigma`, so
    the shift tensor handed to zoo.nmr is built with the exact formula here."""
    t, ref = random_tensor(seed), 300.0
    ms = MagneticShielding(t, species="29Si", reference=ref, gradient=-1.0)
    d = (ref * np.eye(3) - t) / (1 - ref * PPM)
    hae, hb = nmr.haeberlen(d), nmr.herzfeld_berger(d, form="shift")
    _same_haeberlen(hae, ms.haeberlen_shift)
    mb = ms.herzfeldberger_shift
    assert hb["span"] == pytest.approx(mb.omega, rel=1e-3)  # soprano: the shielding span
    # IUPAC (Harris et al. 2008): kappa is the same number in both forms. soprano 0.11's shift
    # form applies the shielding formula to shift eigenvalues, which flips its sign.
    assert hb["skew"] == pytest.approx(ms.herzfeldberger_shielding.kappa)
    assert hb["skew"] == pytest.approx(-mb.kappa)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_euler_angles_match_soprano(dtype):
    """Both are active zyz: soprano's angles rebuild the tensor with our rotation, and ours
    equal soprano's up to 2 pi and the sign choices of the principal axes."""
    for seed in range(5):
        t = random_tensor(seed).astype(dtype)
        ms = MagneticShielding(t.astype(np.float64), species="29Si")
        values, axes = nmr.principal_components(t)
        theirs = ms.euler_angles(convention="zyz", passive=False)
        sym = nmr.symmetric_part(t)
        tol = 1e-3 if dtype == np.float32 else 1e-9
        for angles in (theirs, nmr.euler_angles(axes)):
            R = nmr.rotation_from_euler(angles)
            np.testing.assert_allclose(R @ np.diag(values) @ R.T, sym, atol=tol * 400)
        equivalent = ms.equivalent_euler_angles(convention="zyz", passive=False)
        ours = np.mod(nmr.euler_angles(axes), 2 * np.pi)
        gap = np.abs(np.mod(equivalent - ours + np.pi, 2 * np.pi) - np.pi).max(axis=-1)
        assert gap.min() < (1e-3 if dtype == np.float32 else 1e-6)


# ---- .magres ----


def _quartz_prediction(compounds):
    c = compounds["alpha-quartz"]
    rng = np.random.default_rng(3)
    n = len(c.atoms)
    mask = c.atoms.numbers == 14
    delta = np.full((n, 3, 3), np.nan)
    delta[mask] = -107.0 * np.eye(3) + 5.0 * rng.normal(size=(mask.sum(), 3, 3))
    return c.atoms, {"shift_tensor": delta, "mask": mask}


def test_magres_round_trip_in_ase_and_soprano(compounds, tmp_path):
    atoms, out = _quartz_prediction(compounds)
    path = tmp_path / "quartz.magres"
    nmr.write_magres(path, atoms, out)
    back = ase.io.read(path)
    mask = out["mask"]
    assert back.get_chemical_symbols() == ["Si"] * int(mask.sum())
    np.testing.assert_allclose(back.cell[:], atoms.cell[:], atol=1e-9)
    np.testing.assert_allclose(back.positions, atoms.positions[mask], atol=1e-9)
    ms = back.get_array("ms")
    np.testing.assert_allclose(ms, -out["shift_tensor"][mask], atol=1e-9)  # full, non-symmetric
    assert np.abs(ms - np.swapaxes(ms, 1, 2)).max() > 1.0
    # soprano reads it; reference 0 recovers delta_iso (its exact formula, 1e-4 relative here)
    iso = MSIsotropy.get(back, references={"Si": 0.0}, gradients={"Si": -1.0})
    np.testing.assert_allclose(iso, nmr.isotropic(out["shift_tensor"][mask]), rtol=1e-4)
    sigma_ref = 368.5
    nmr.write_magres(tmp_path / "abs.magres", atoms, out, sigma_ref=sigma_ref)
    np.testing.assert_allclose(
        ase.io.read(tmp_path / "abs.magres").get_array("ms"), sigma_ref * np.eye(3) + ms
    )


def test_magres_errors(compounds, tmp_path):
    atoms, out = _quartz_prediction(compounds)
    path = tmp_path / "q.magres"
    path.write_text("mine")
    with pytest.raises(ValueError, match="exists"):
        nmr.write_magres(path, atoms, out)
    assert path.read_text() == "mine"
    with pytest.raises(ValueError, match=r"missing \['shift_tensor'\]"):
        nmr.write_magres(tmp_path / "a.magres", atoms, {"mask": out["mask"]})
    with pytest.raises(ValueError, match="periodic"):
        nmr.write_magres(tmp_path / "b.magres", ase.Atoms("Si"), out)
    with pytest.raises(ValueError, match="atoms has"):
        nmr.write_magres(tmp_path / "c.magres", atoms[:3], out)


def test_referenced_shift_tensor_rotates(shipped, compounds):
    """The shift tensor of a rotated crystal is R delta R^T (the offset * 1 part is invariant);
    the isotropic shift, span and skew do not change (float32 model)."""
    atoms = compounds["alpha-quartz"].atoms
    R = nmr.rotation_from_euler(np.array([0.3, 1.1, -0.7]))
    turned = atoms.copy()
    turned.set_cell(atoms.cell[:] @ R.T, scale_atoms=True)
    a, b = shipped.predict(atoms), shipped.predict(turned)
    si = a["mask"]
    expect = R @ a["shift_tensor"][si] @ R.T
    np.testing.assert_allclose(b["shift_tensor"][si], expect, atol=2e-3 * 110)
    for key in ("chemical_shift", "span", "skew"):
        np.testing.assert_allclose(b[key][si], a[key][si], atol=2e-2)


def test_the_shipped_card_is_rendered_from_its_metrics():
    """The si29 card is a function of the folder's metrics.json (the recipe's template)."""
    from recipes._si29_card import card_from_metrics

    folder = Path(nmr.__file__).parent / "weights" / "si29-shielding"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert card_from_metrics(metrics) == (folder / "README.md").read_text()
