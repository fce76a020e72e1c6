"""Structure validation: one clear ValueError per kind of bad input."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from zoo.graph import build_graph, check_species
from zoo.structure import Structure, as_structure, as_structures, iter_structures


def water_dict(**over):
    d = dict(numbers=[8, 1, 1], positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    d.update(over)
    return d


def test_from_ase_round_trip():
    atoms = bulk("NaCl", "rocksalt", 5.64)
    s = as_structure(atoms)
    assert s.symbols == ["Na", "Cl"] and s.pbc.all()
    np.testing.assert_allclose(s.volume, atoms.get_volume())
    back = s.to_ase()
    np.testing.assert_allclose(back.positions, atoms.positions)
    assert as_structure(water_dict()).volume == 0.0


@pytest.mark.parametrize(
    "over, match",
    [
        (
            {"positions": [[0, 0, 0], [np.nan, 0, 0], [1, 1, 0]]},
            r"non-finite position for atom 1 \(H\)",
        ),
        ({"positions": [[0, 0, 0], [np.inf, 0, 0], [1, 1, 0]]}, "non-finite position for atom 1"),
        ({"numbers": [8, 1, 200]}, "atom 2 has atomic number 200"),
        ({"numbers": [8, 1, 0]}, "atom 2 has atomic number 0"),
        ({"numbers": [], "positions": np.zeros((0, 3))}, "empty structure"),
        (
            {"positions": [[0, 0, 0], [0.05, 0, 0], [1, 1, 0]]},
            r"atom 0 \(O\) is 0.05 Å from atom 1 \(H\)",
        ),
        (
            {"positions": [[0, 0, 0], [1, 0, 0]]},
            r"positions must have shape \(3, 3\), got \(2, 3\)",
        ),
        ({"positions": [["a", "b", "c"]] * 3}, "positions must be real numbers"),
        ({"numbers": [8.5, 1, 1]}, "numbers must be integers"),
        ({"cell": np.zeros((3, 3)), "pbc": True}, "the cell is singular"),
        ({"cell": [[1, 0, 0], [2, 0, 0], [0, 0, 1]], "pbc": True}, "the cell is singular"),
        ({"cell": [[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]], "pbc": True}, "non-finite cell"),
        ({"cell": np.eye(2), "pbc": True}, r"cell must have shape \(3, 3\)"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(over, match):
    with pytest.raises(ValueError, match=match):
        as_structure(water_dict(**over))


def test_periodic_self_image_too_close():
    with pytest.raises(ValueError, match="its own periodic image"):
        Structure(numbers=[1], positions=[[0, 0, 0]], cell=np.eye(3) * 0.05, pbc=True)


def test_list_errors_name_the_structure():
    with pytest.raises(ValueError, match="structure 1: non-finite"):
        as_structures([water_dict(), water_dict(positions=[[0, 0, 0], [np.nan, 0, 0], [1, 1, 0]])])
    with pytest.raises(ValueError, match="empty list"):
        as_structures([])
    with pytest.raises(ValueError, match="cannot make a structure from int"):
        as_structure(3)


def test_iterables_are_read_lazily_and_errors_name_the_structure():
    read = []

    def frames():
        for k in range(3):
            read.append(k)
            yield water_dict() if k != 2 else water_dict(numbers=[8, 1, 0])

    it = iter_structures(frames())
    assert len(next(it)) == 3 and read == [0]  # one at a time, as read
    with pytest.raises(ValueError, match="structure 2: atom 2 has atomic number 0"):
        list(it)
    assert [len(s) for s in as_structures(s for s in [water_dict(), bulk("Si")])] == [3, 2]
    with pytest.raises(ValueError, match="empty list"):
        as_structures(iter([]))
    for bad in ("POSCAR", 3, water_dict()):
        with pytest.raises(ValueError, match="expected an iterable of structures"):
            next(iter_structures(bad))


def test_unknown_species_named():
    with pytest.raises(
        ValueError, match=r"structure 0: unknown species H \(atoms 1, 2\): this model knows only O$"
    ):
        check_species(molecule("H2O"), [8])
    check_species(molecule("H2O"), [1, 8])


def test_isolated_atom_is_valid():
    g = build_graph(Atoms("Ar", positions=[[0, 0, 0]]), 5.0)
    assert int(g.node_mask.sum()) == 1 and int(g.edge_mask.sum()) == 0


def test_mixed_pbc_slab():
    slab = bulk("Cu", "fcc", 3.6, cubic=True)
    slab.pbc = (True, True, False)
    g = build_graph(slab, 3.0)
    vec = np.asarray(g.edge_vectors())[np.asarray(g.edge_mask)]
    # no neighbour across the non-periodic z boundary: z components stay inside the cell
    assert np.abs(vec[:, 2]).max() < 3.6
    full = build_graph(bulk("Cu", "fcc", 3.6, cubic=True), 3.0)
    assert int(full.edge_mask.sum()) > int(g.edge_mask.sum())


@pytest.mark.parametrize(
    ("positions", "cell", "pbc", "match"),
    [
        (
            [[0, 0, 0.02], [0, 0, 4.98]],
            np.eye(3) * 5,
            True,
            "0.04 Å from atom 1",
        ),  # across the boundary
        ([[0, 0, 0.02], [0, 0, 4.98]], np.eye(3) * 5, [True, True, False], None),  # not along z
        (
            [[0, 0, 0], [0, 3, 0]],
            np.diag([0.05, 5, 5]),
            [True, False, False],
            "its own periodic image",
        ),
        ([[0, 0, 0], [0.74, 0, 0]], np.eye(3) * 60, True, None),  # a molecule in a large box
        ([[0, 0, 0], [0, 0.09, 0]], np.zeros((3, 3)), False, "0.09 Å from atom 1"),
    ],
)
def test_atoms_closer_than_the_minimum_distance_are_found_anywhere(positions, cell, pbc, match):
    def build():
        return Structure(numbers=[1, 1], positions=positions, cell=cell, pbc=pbc)

    if match is None:
        assert len(build()) == 2
    else:
        with pytest.raises(ValueError, match=match):
            build()
