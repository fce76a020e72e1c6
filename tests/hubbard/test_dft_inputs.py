import numpy as np
import pytest

from zoo.hubbard.dft import inputs, structures
from zoo.hubbard.dft.plan import PSEUDOS

PSEUDO_DIR = "/nonexistent"  # inputs are written with check_files=False


def _mno():
    return inputs.canonical_order(structures.rocksalt_afm("Mn"))


def test_supercell_index_roundtrip():
    for j in range(1, 27 * 4 + 1):
        atom, image = inputs.supercell_atom(j, 4)
        assert inputs.supercell_index(atom, image, 4) == j
    assert inputs.supercell_atom(5, 4) == (0, (-1, -1, -1))  # first image after the home cell
    with pytest.raises(ValueError, match="j: supercell index"):
        inputs.supercell_atom(0, 4)


def test_first_shell_matches_qe_example():
    # Pairs of examples/MnO_afm_UV/MnO.scf.in (QE 6.7 numbering).
    assert inputs.first_shell_pairs(_mno()) == [
        (1, 12), (1, 20), (1, 23), (1, 44), (1, 47), (1, 55),
        (2, 24), (2, 48), (2, 56), (2, 59), (2, 67), (2, 91),
    ]  # fmt: skip
    d = inputs.pair_distance(_mno(), 1, 12)
    assert d == pytest.approx(4.445 / 2, abs=1e-9)


def test_canonical_order_puts_hubbard_atoms_first_and_wraps():
    st = structures.perturb(structures.layered_limo2("Ni"), seed=3, sigma=0.05)
    st["positions"][0] = (np.asarray(st["positions"][0]) - 2 * np.asarray(st["cell"][0])).tolist()
    can = inputs.canonical_order(st)
    assert can["symbols"] == ["Ni", "O", "O", "Li"]
    frac = inputs.crystal_coords(can)
    assert (frac >= 0).all() and (frac < 1).all()
    raw = np.asarray(can["positions"]) @ np.linalg.inv(np.asarray(can["cell"]))
    assert (raw > -1e-9).all() and (raw < 1).all()
    assert len(inputs.first_shell_pairs(can)) == 6


def test_pw_input_qe67_and_qe71():
    st = structures.perturb(structures.rocksalt_afm("Mn"), seed=1)
    st = inputs.canonical_order(st)
    hub = inputs.initial_hubbard(st, {"Mn": 4.0})
    assert (1, 1, 4.0) in hub and (3, 3, inputs.ACTIVATE) in hub
    assert sum(1 for i, j, _ in hub if i != j) == 12
    kw = dict(pseudos=PSEUDOS, pseudo_dir=PSEUDO_DIR, check_files=False)
    old = inputs.pw_input(st, hub, **kw)
    assert "lda_plus_u_kind = 2" in old and "Hubbard_V(1,1,1) = 4" in old
    assert "HUBBARD" not in old
    assert "Mn1" in old and "Mn2" in old
    new = inputs.pw_input(st, hub, qe_version=(7, 2), **kw)
    assert "Hubbard_V" not in new and "HUBBARD {ortho-atomic}" in new
    assert "V Mn1-3d Mn1-3d 1 1 4" in new
    assert sum(1 for ln in new.splitlines() if ln.startswith("V Mn")) == 2 + 12
    assert "mixing_mode" not in old  # QE's default unless a job sets it
    tf = inputs.pw_input(st, hub, settings={"mixing_mode": "local-TF", "mixing_ndim": 12}, **kw)
    assert "mixing_mode = 'local-TF'" in tf and "mixing_ndim = 12" in tf
    hp = inputs.hp_input(settings={"nq": [2, 2, 2], "conv_thr_chi": 1e-4})
    assert "nq1 = 2, nq2 = 2, nq3 = 2" in hp and "conv_thr_chi = 0.0001" in hp


def test_structure_without_hubbard_atoms():
    st = structures._make(["Li", "O"], np.eye(3) * 3, [[0, 0, 0], [1.5, 1.5, 1.5]], [0, 0])
    with pytest.raises(ValueError, match="no Hubbard"):
        inputs.canonical_order(st)


def test_missing_pseudopotential_is_named():
    st = _mno()
    with pytest.raises(ValueError, match="element 'Mn'"):
        inputs.pw_input(st, [(1, 1, 4.0)], pseudos={"O": "O.UPF"}, pseudo_dir=PSEUDO_DIR)
    with pytest.raises(ValueError, match="not found"):
        inputs.pw_input(st, [(1, 1, 4.0)], pseudos=PSEUDOS, pseudo_dir="/nonexistent")


def test_neighbour_missing_in_3x3x3_supercell():
    # A strongly skewed cell: the nearest O image is two lattice vectors away.
    cell = np.array([[3.0, 0, 0], [6.0, 3.0, 0], [0, 0, 3.0]])
    frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    st = structures._make(["Mn", "O"], cell, frac @ cell, [1, 0])
    with pytest.raises(ValueError, match="missing in the 3x3x3 supercell"):
        inputs.first_shell_pairs(inputs.canonical_order(st))


def test_perturb_is_seeded():
    a = structures.perturb(structures.rocksalt_afm("Ni"), seed=5, strain=0.02)
    b = structures.perturb(structures.rocksalt_afm("Ni"), seed=5, strain=0.02)
    c = structures.perturb(structures.rocksalt_afm("Ni"), seed=6, strain=0.02)
    assert a == b and a != c
    assert structures.structure_id(a) != structures.structure_id(c)
    vol = abs(np.linalg.det(a["cell"])) / abs(np.linalg.det(structures.rocksalt_afm("Ni")["cell"]))
    assert vol == pytest.approx(1.02**3)
