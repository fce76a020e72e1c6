"""The one predictor (`zoo._predict`) on the shipped models: predictions on the bundled
examples equal the stored reference arrays, and inputs outside the training species or
without full periodicity are refused with one clear error."""

from pathlib import Path

import ase.io
import numpy as np
import pytest

import zoo
from zoo.shielding import ShieldingModel

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "zoo" / "examples"
#: predictions of the shipped weights on the bundled examples (f32 model, stored as f64)
REFERENCE = Path(__file__).parent / "data" / "shipped_predictions.npz"
RTOL = 1e-5


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as data:
        return dict(data)


@pytest.fixture(scope="module")
def batio3():
    return zoo.load("batio3-response", source="embedded")


@pytest.fixture(scope="module")
def si29():
    return zoo.load("si29-shielding", source="embedded", model_types={"shielding": ShieldingModel})


def batio3_example():
    return ase.io.read(EXAMPLES / "batio3-response" / "BaTiO3_400K_00000.cif")


def si29_examples():
    return ase.io.read(EXAMPLES / "si29-shielding" / "silicates.extxyz", index=":")


def assert_close(got, want, name):
    """Relative to each tensor's largest entry: a component near zero is not a scale."""
    scale = np.nanmax(np.abs(want))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale, err_msg=name)


def test_batio3_response_predicts_the_reference(batio3, reference):
    out = batio3.predict(batio3_example())
    names = sorted(k.split("/")[1] for k in reference if k.startswith("batio3-response/"))
    assert names == sorted(out) == ["born_charges", "chi2", "dielectric", "raman_tensors"]
    for name in names:
        assert_close(out[name], reference[f"batio3-response/{name}"], name)


def test_si29_shielding_predicts_the_reference(si29, reference):
    out = si29.predict(si29_examples())
    # the reference file keys the head's output by the head's name; predict calls it unreferenced_shift
    want = reference["si29-shielding/shielding"]
    got = out["unreferenced_shift"]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isfinite(want).any()
    assert_close(got, want, "unreferenced_shift")
    np.testing.assert_array_equal(
        out["structure_index"], reference["si29-shielding/structure_index"]
    )


def test_unknown_element_is_refused(batio3, si29):
    bto = batio3_example()
    bto.numbers[[3, 7]] = 79  # Au
    with pytest.raises(ValueError, match=r"structure 1: unknown species Au \(atoms 3, 7\)"):
        batio3.predict([batio3_example(), bto])
    frames = si29_examples()
    frames[0].numbers[0] = 13  # Al
    with pytest.raises(ValueError, match=r"structure 0: unknown species Al \(atoms 0\).*Li, Be"):
        si29.predict(frames)


@pytest.mark.parametrize("pbc", [False, [True, True, False]])
def test_non_periodic_input_is_refused(batio3, si29, pbc):
    bto = batio3_example()
    bto.pbc = pbc
    with pytest.raises(ValueError, match=r"structure 0 is not periodic .*periodic crystals only"):
        batio3.predict(bto)
    frames = si29_examples()
    frames[1].pbc = pbc
    with pytest.raises(ValueError, match=r"structure 1 is not periodic .*periodic crystals only"):
        si29.predict(frames)
