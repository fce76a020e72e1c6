"""Bad batch input for the other `predict`s than `ResponseModel.predict` (covered in
`test_batch_predict.py`): a `Potential` (streams like the response model) and a
`ShieldingModel` (reads its input whole before predicting): an unknown species in a mixed
batch names the structure and element, an empty input is refused, and an iterator that fails
part-way loses no output (the potential returns them in the error, the shielding model has
computed none yet)."""

import jax
import numpy as np
import pytest
from test_batch_predict import bto, mixed
from test_si29 import tiny_model

from zoo import PredictionInterrupted
from zoo.backbones import Potential, build_backbone


@pytest.fixture(scope="module")
def potential():
    backbone = {"architecture": "nequip", "species": [56, 22, 8], "r_max": 4.49, "channels": 2,
                "lmax": 1, "num_layers": 1, "radial_hidden": 4, "avg_num_neighbors": 20.0}  # fmt: skip
    return Potential.wrap(build_backbone(backbone, key=jax.random.key(0)))


@pytest.fixture(scope="module")
def shielding():
    return tiny_model()


def silicates():
    """Two Si-O cells of 2 and 4 atoms (a crystal-only model needs periodic cells)."""
    from ase import Atoms

    one = Atoms("SiO", positions=[[0, 0, 0], [1.6, 0, 0]], cell=[5.0, 5.0, 5.0], pbc=True)
    return [one, one.repeat((2, 1, 1)), one.repeat((1, 2, 1))]


def failing(structures, after: int):
    def frames():
        yield from structures[:after]
        raise OSError("truncated trajectory file")

    return frames()


def test_potential_unknown_species_names_structure_and_element(potential):
    structures = mixed()
    structures[1].numbers[3] = 79  # Au
    with pytest.raises(ValueError, match=r"structure 1: unknown species Au \(atoms 3\)"):
        potential.predict(structures)
    with pytest.raises(PredictionInterrupted, match="structure 1") as info:
        potential.predict(iter(structures))
    assert "unknown species Au" in str(info.value.__cause__)
    assert info.value.index == 1 and info.value.results["forces"].shape == (10, 3)


def test_potential_empty_input_is_refused(potential):
    with pytest.raises(ValueError, match="empty list of structures"):
        potential.predict([])
    with pytest.raises(ValueError, match="the iterable was empty"):
        potential.predict(iter([]))


def test_potential_iterator_failing_midway_keeps_the_outputs_so_far(potential):
    with pytest.raises(PredictionInterrupted, match="structure 2 .*truncated") as info:
        potential.predict(failing(mixed(), 2), batch_size=1)
    err = info.value
    assert isinstance(err.__cause__, OSError) and err.index == 2 and len(err.structures) == 2
    want = potential.predict(mixed()[:2])
    assert err.results["energy"].shape == (2,)
    for name in want:
        np.testing.assert_allclose(err.results[name], want[name], rtol=1e-5, atol=1e-6)
    alone = potential.predict(bto(4.0, 1, (2, 1, 1)))
    np.testing.assert_allclose(err.results["energy"][0], alone["energy"], rtol=1e-5)


def test_shielding_unknown_species_in_a_batch_names_structure_and_element(shielding):
    structures = silicates()
    structures[2].numbers[1] = 13  # Al: not a training species
    with pytest.raises(ValueError, match=r"structure 2: unknown species Al \(atoms 1\)"):
        shielding.predict(structures)
    with pytest.raises(ValueError, match=r"structure 2: unknown species Al"):
        shielding.predict(iter(structures))


def test_shielding_empty_input_is_refused(shielding):
    with pytest.raises(ValueError, match="empty"):
        shielding.predict([])
    with pytest.raises(ValueError, match="empty"):
        shielding.predict(iter([]))


def test_shielding_iterator_failing_midway_raises_before_predicting(shielding):
    # the input is read whole first: the reader's own error, nothing computed to lose
    with pytest.raises(OSError, match="truncated"):
        shielding.predict(failing(silicates(), 2))
    out = shielding.predict(silicates()[:2])
    assert out["unreferenced_shift"].shape == (6, 3, 3)
    np.testing.assert_array_equal(out["structure_index"], [0, 0, 1, 1, 1, 1])
