import re
from pathlib import Path

import numpy as np
import pytest

from zoo.hubbard.dft import parsers

DATA = Path(__file__).resolve().parents[1] / "data" / "qe"


def _read(name):
    return (DATA / name).read_text()


def test_pw_output():
    out = parsers.parse_pw_output(_read("MnO.scf.out"))
    assert out["converged"] and out["n_iter"] == 16 and out["nat"] == 4
    assert out["energy_ry"] == pytest.approx(-483.32241317)
    assert out["total_mag"] == 0.0 and out["abs_mag"] == pytest.approx(9.46)
    assert out["cpu_s"] == pytest.approx(26.95)
    assert out["version"].startswith("6.7")
    assert out["labels"] == ["Mn1", "Mn2", "O", "O"]
    np.testing.assert_allclose(out["cell_bohr"][0], [8.4, 4.2, 4.2])  # alat x a(1)
    np.testing.assert_allclose(out["positions_bohr"][2], [4.2, 4.2, 4.2])
    rat = parsers.parse_pw_output(_read("MnO_rattled.scf.out"))
    assert (1, 12, 4.14573828, 0.0) in rat["pairs"]
    assert sum(1 for i, j, _, _ in rat["pairs"] if i == 1 and j != 1) == 6
    # the header geometry reproduces pw.x's own pair distances
    from zoo.hubbard.dft.inputs import supercell_atom

    pos, cell = rat["positions_bohr"], rat["cell_bohr"]
    for i, j, dist, _ in rat["pairs"]:
        a, image = supercell_atom(j, rat["nat"])
        assert np.linalg.norm(pos[a] + np.asarray(image) @ cell - pos[i - 1]) == pytest.approx(
            dist, abs=2e-5
        )
    trimmed = _read("MnO.scf.out").replace(" tau(", " pos(")
    assert parsers.parse_pw_output(trimmed)["positions_bohr"] is None


def test_pw_output_not_converged_is_recorded_not_raised():
    text = _read("MnO.scf.out")
    text = re.sub(
        r"convergence has been achieved in\s+\d+ iterations",
        "convergence NOT achieved after 16 iterations: stopping",
        text,
    )
    out = parsers.parse_pw_output(text)
    assert out["converged"] is False and out["n_iter"] == 16


def test_pw_output_truncated_or_foreign():
    text = _read("MnO.scf.out")
    with pytest.raises(ValueError, match="truncated"):
        parsers.parse_pw_output(text[: len(text) // 3])
    with pytest.raises(ValueError, match="not a pw.x stdout"):
        parsers.parse_pw_output(_read("MnO.hp.out"))


def test_occup_full_precision_and_traces():
    occ = parsers.parse_occup(_read("MnO.occup.txt"), nat=4)
    assert occ.shape == (2, 4, 7, 5, 5) and occ.dtype == np.float64
    onsite = occ[:, :, 0]
    # Tr/Mag printed by pw.x (3-7 decimals) for Mn1 and O.
    assert onsite[0, 0].trace() + onsite[1, 0].trace() == pytest.approx(5.285, abs=1e-3)
    assert onsite[0, 0].trace() - onsite[1, 0].trace() == pytest.approx(4.670, abs=1e-3)
    assert onsite[:, 2, :3, :3].trace(axis1=1, axis2=2).sum() == pytest.approx(5.3082676, abs=1e-6)
    np.testing.assert_allclose(onsite, onsite.transpose(0, 1, 3, 2), atol=1e-10)
    # p-shell atoms use only the first 3x3 entries.
    assert np.abs(onsite[:, 2, 3:, :]).max() == 0.0
    # AFM: spin up of Mn1 is spin down of Mn2.
    np.testing.assert_allclose(onsite[0, 0], onsite[1, 1], atol=1e-6)


def test_occup_truncated_or_foreign():
    text = _read("MnO.occup.txt")
    with pytest.raises(ValueError, match="truncated"):
        parsers.parse_occup(text[: len(text) // 2].rsplit("(", 1)[0], nat=4)
    with pytest.raises(ValueError, match="unexpected content"):
        parsers.parse_occup(text[: text.index(",", len(text) // 2)], nat=4)  # cut in a pair
    with pytest.raises(ValueError, match="unexpected content"):
        parsers.parse_occup(_read("parameters.out"), nat=4)


def test_hubbard_parameters_dat():
    out = parsers.parse_hubbard_parameters_dat(_read("MnO.Hubbard_parameters.dat"))
    assert out["U"] == {1: 2.8365, 2: 2.8366, 3: 10.1309, 4: 10.1309}
    assert (1, 12, 4.2, 1.1515) in out["V"] and (1, 10, 5.939697, -1.5902) in out["V"]
    assert len(out["V"]) == 16
    text = _read("MnO.Hubbard_parameters.dat")
    with pytest.raises(ValueError, match="header not found"):
        parsers.parse_hubbard_parameters_dat(_read("MnO.scf.out")[:2000])
    with pytest.raises(ValueError, match="truncated"):
        parsers.parse_hubbard_parameters_dat(text[: text.index("Distance (Bohr)")])


def test_parameters_out():
    rows = parsers.parse_parameters_out(_read("parameters.out"))
    assert rows[0] == (1, 1, 2.8365) and rows[3] == (1, 10, -1.5902) and len(rows) == 8
    with pytest.raises(ValueError, match="header"):
        parsers.parse_parameters_out(_read("MnO.Hubbard_parameters.dat"))
    with pytest.raises(ValueError, match="malformed"):
        parsers.parse_parameters_out(_read("parameters.out") + "  3  4\n")


def test_hp_output_converged_and_not():
    ok = parsers.parse_hp_output(_read("MnO.hp.out"))
    assert ok["converged"] and ok["cpu_s"] == pytest.approx(132.81)
    bad = parsers.parse_hp_output(_read("MnO.hp.q222.notconverged.out"))
    assert not bad["converged"] and bad["last"] == (1, 2, 20)
    assert "(1, 2, 20)" in bad["reason"]  # the q point it stalled at is recorded
    crash = (
        "\n     Post-processing calculation of Hubbard parameters ...\n\nFortran runtime error: "
    )
    res = parsers.parse_hp_output(
        _read("MnO.hp.out").split("Post-processing")[0] + crash + "Bad real number in item 1\n"
    )
    assert not res["converged"] and res["reason"] == (
        "hp.x crashed in post-processing: Bad real number in item 1"
    )
    stalled = _read("MnO.hp.out").replace("JOB DONE", "") + "\n Convergence has not been reached\n"
    res = parsers.parse_hp_output(stalled)
    assert not res["converged"] and "not converged" in res["reason"]
    with pytest.raises(ValueError, match="not a hp.x stdout"):
        parsers.parse_hp_output(_read("MnO.scf.out"))
    # QE's own error message is the reason (seen: the NSCF of an O perturbation in LiMnO2)
    nscf = _read("MnO.hp.out").split("Post-processing")[0].replace("JOB DONE", "") + (
        "\n %%%%\n     Error in routine cdiaghg (146):\n     S matrix not positive definite\n"
    )
    res = parsers.parse_hp_output(nscf)
    assert not res["converged"]
    assert res["reason"].endswith(": cdiaghg: S matrix not positive definite")


def test_occupation_blocks_match_pair_table():
    pw = parsers.parse_pw_output(_read("MnO.scf.out"))
    occ = parsers.parse_occup(_read("MnO.occup.txt"), nat=4)
    blocks = parsers.occupation_blocks(occ, pw["pairs"])
    assert set(blocks["onsite"]) == {1, 2, 3, 4}
    assert (1, 12) in blocks["intersite"] and blocks["intersite"][(1, 12)].shape == (2, 5, 5)
    # Mn-O block: Mn d rows, O p columns (only 3 used); nonzero hybridisation.
    b = blocks["intersite"][(1, 12)]
    assert np.abs(b[:, :, :3]).max() > 1e-3 and np.abs(b[:, :, 3:]).max() == 0.0
    with pytest.raises(ValueError, match="neighbour blocks"):
        parsers.occupation_blocks(occ[:, :, :3], pw["pairs"])


def test_onsite_block_follows_lower_index_home_cell_partners():
    """pw.x orders atom i's blocks by the partner's supercell index, i itself included: in a
    rattled MnO run O4 pairs with Mn1 (index 1), so O4's on-site block is the second one."""
    nat, n_neigh = 4, 3
    occ = np.zeros((2, nat, n_neigh, 5, 5))
    for i in range(nat):
        for v in range(n_neigh):
            occ[:, i, v] = 10 * (i + 1) + v  # block id: 10 * atom + slot
    pairs = [(1, 1, 0.0, 4.0), (1, 4, 4.1, 0.7), (4, 4, 0.0, 1e-8), (4, 1, 4.1, 0.7),
             (4, 30, 4.2, 0.6)]  # fmt: skip
    blocks = parsers.occupation_blocks(occ, pairs)
    assert blocks["onsite"][1][0, 0, 0] == 10 and blocks["intersite"][(1, 4)][0, 0, 0] == 11
    assert blocks["intersite"][(4, 1)][0, 0, 0] == 40  # partner 1 < 4 comes first
    assert blocks["onsite"][4][0, 0, 0] == 41 and blocks["intersite"][(4, 30)][0, 0, 0] == 42


def test_hubbard_card_roundtrip_with_writer():
    from zoo.hubbard.dft import inputs, structures
    from zoo.hubbard.dft.plan import PSEUDOS

    st = inputs.canonical_order(structures.rocksalt_afm("Mn"))
    hub = inputs.initial_hubbard(st, {"Mn": 4.0})
    text = inputs.pw_input(
        st, hub, pseudos=PSEUDOS, pseudo_dir="/x", qe_version=(7, 2), check_files=False
    )
    card = text[text.index("HUBBARD") :]
    projector, rows = parsers.parse_hubbard_card(card)
    assert projector == "ortho-atomic" and rows == hub
    with pytest.raises(ValueError, match="unsupported line"):
        parsers.parse_hubbard_card("HUBBARD {ortho-atomic}\nU Mn-3d 4.0\n")
    with pytest.raises(ValueError, match="header"):
        parsers.parse_hubbard_card(_read("parameters.out"))


def test_q222_outputs_from_this_pipeline():
    # Trimmed outputs of the p21 convergence job (MnO, q 2x2x2, conv_thr_chi 1e-4).
    hp = parsers.parse_hp_output(_read("MnO_q222.hp.out"))
    assert hp["converged"] and hp["last"] == (3, 4, 6)
    dat = parsers.parse_hubbard_parameters_dat(_read("MnO_q222.Hubbard_parameters.dat"))
    assert dat["U"][1] == dat["U"][2] == 4.1918
    first = [v for i, j, d, v in dat["V"] if i == 1 and 0 < d < 4.3]
    assert first == [0.6289] * 6
    rows = parsers.parse_parameters_out(_read("MnO_q222.parameters.out"))
    assert len(rows) == 14 and {j for i, j, _ in rows if i == 1} == {1, 12, 20, 23, 44, 47, 55}
