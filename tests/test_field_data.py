"""`zoo.data.field`: the shipped finite-field frames load with their conventions."""

import numpy as np
import pytest

from zoo.data.field import DATA_DIR, fold_polarization, load_field, read_split


@pytest.mark.parametrize(("material", "n_frames", "n_atoms"), [("batio3", 59, 135),
                                                               ("sio2", 161, 72)])  # fmt: skip
def test_frames_and_conventions(material, n_frames, n_atoms):
    records = load_field(material)
    assert len(records) == n_frames
    r = records[0]
    assert len(r["structure"]) == n_atoms and r["structure"].pbc.all()
    assert r["born_charges"].shape == (n_atoms, 3, 3) and r["polarizability"].shape == (3, 3)
    assert r["stress"].shape == (3, 3) and np.allclose(r["stress"], r["stress"].T)
    # acoustic sum rule of the DFT Born charges, and the held-out source frames are absent
    assert np.abs(np.stack([x["born_charges"].sum(0) for x in records])).mean() < 0.2
    assert {x["index"] % 5 for x in records} == {0, 1, 2, 3}


def test_fold_polarization_and_errors(tmp_path):
    cell = np.diag([4.0, 5.0, 6.0])
    folded = fold_polarization(np.array([4.1, -2.6, 11.0]), cell)
    np.testing.assert_allclose(folded, [0.1, 2.4, -1.0], atol=1e-12)
    with pytest.raises(ValueError, match="unknown material 'quartz'"):
        load_field("quartz")
    with pytest.raises(ValueError, match="not found"):
        load_field("sio2", root=tmp_path)
    (tmp_path / "split.json").write_text('{"train": [1, 2], "validation": [2]}')
    with pytest.raises(ValueError, match="both training and validation"):
        read_split(tmp_path / "split.json")
    assert (DATA_DIR / "README.md").read_text().count("MIT License") == 1
