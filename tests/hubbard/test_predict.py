"""HubbardUV on a real QE 6.7 DFT+U+V output (AFM MnO, tests/data/qe) with untrained models."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from zoo.hubbard._predict import HubbardUV, pair_bonds
from zoo.hubbard._run import element_of
from zoo.hubbard.dft.parsers import parse_hubbard_card

DATA = Path(__file__).resolve().parents[1] / "data" / "qe"
LABELS = ["Mn1", "Mn2", "O", "O"]


@pytest.fixture(scope="module")
def mno(uv):
    return uv.predict(DATA / "MnO.scf.out", occup=DATA / "MnO.occup.txt", labels=LABELS)


def test_predicts_every_d_site_and_pd_pair(mno):
    assert sorted(mno.U) == [1, 2]
    # Mn2 is Mn1 with the spins swapped (AFM): spin-flip-invariant inputs give the same U
    assert mno.U[1] == pytest.approx(mno.U[2], rel=1e-4, abs=1e-6)
    assert len(mno.V) == 24  # 6 O per Mn, 6 Mn per O, as in pw.x's pair table
    values = list(mno.V.values())
    assert max(values) - min(values) < 1e-4 * max(1.0, abs(values[0]))  # all equivalent
    assert (1, 3, (0, 0, -1)) in mno.V and mno.distances[(1, 3, (0, 0, -1))] == pytest.approx(4.2)
    assert set(mno.not_predicted) == {(3, 3, (0, 0, 0)), (4, 4, (0, 0, 0))}
    assert mno.elements == {1: "Mn", 2: "Mn", 3: "O", 4: "O"}
    assert mno["U"] is mno.U
    json.dumps(mno.as_dict())


def test_hubbard_cards(mno):
    params = mno.parameters()
    assert len(params) == 28
    projector, rows = parse_hubbard_card(mno.hubbard_card("qe7"))
    assert projector == "ortho-atomic"
    assert [(i, j) for i, j, _ in rows] == [(i, j) for i, j, _ in params]
    assert all(v == pytest.approx(p, abs=1e-6) for (_, _, v), (_, _, p) in zip(rows, params))
    assert dict(((i, j), v) for i, j, v in rows)[(3, 3)] == 1e-8  # O 2p stays switched on
    qe6 = mno.hubbard_card("qe6").splitlines()
    assert qe6[0].startswith("Hubbard_V(1,1,1) = ") and "Hubbard_V(3,3,1) = 1.0d-8" in qe6
    assert "V Mn1-3d O-2p 1 12 " in mno.hubbard_card("qe7")
    with pytest.raises(ValueError, match="syntax"):
        mno.hubbard_card("qe5")


def test_bond_directions_from_the_header(tmp_path):
    """A V model with bond harmonics gets the geometry from the pw.x header (labels too);
    from parsed data without positions it refuses; its pair vectors match pw.x's distances."""
    from zoo.hubbard._models import IntersiteModel, OnsiteModel
    from zoo.hubbard.dft.parsers import parse_occup, parse_pw_output

    small = {"hidden_layers": 1, "key": jax.random.key(0)}
    uv = HubbardUV(
        OnsiteModel(["Fe", "Mn", "Ni"], feature_irreps="2x0e+2x2e", **small),
        IntersiteModel(["Fe", "Mn", "Ni", "O"], feature_irreps="2x0e+2x1e+2x2e", bond_lmax=4, **small),
    )  # fmt: skip
    out = DATA / "MnO.scf.out"
    res = uv.predict(out, occup=DATA / "MnO.occup.txt")  # labels from the header
    assert res.labels == {1: "Mn1", 2: "Mn2", 3: "O", 4: "O"} and len(res.V) == 24
    # six bond directions per Mn, but the pairs are symmetry-equivalent (D3d Mn sites of AFM
    # MnO): the occupations turn with the bonds, so V is one value (equivariance on real data)
    values = np.array(list(res.V.values()))
    assert np.isfinite(values).all()
    assert np.ptp(values) < 1e-4 * max(1.0, abs(values[0]))
    pw = parse_pw_output(out.read_text())
    occ = parse_occup((DATA / "MnO.occup.txt").read_text(), nat=4)
    keys = list(res.V)
    bonds = pair_bonds(uv.v_model, keys, pw["positions_bohr"], pw["cell_bohr"], 4)
    np.testing.assert_allclose(
        np.linalg.norm(bonds, axis=1), [res.distances[k] for k in keys], atol=2e-5
    )
    with pytest.raises(ValueError, match="uses bond directions"):
        uv.predict_parsed(LABELS, pw["pairs"], occ)


def test_default_occup_location_and_pair_selection(uv, tmp_path):
    shutil.copy(DATA / "MnO.scf.out", tmp_path / "pw.out")
    shutil.copy(DATA / "MnO.occup.txt", tmp_path / "occup.txt")
    res = uv.predict(tmp_path / "pw.out", labels=LABELS, pairs=[(1, 3, (0, 0, -1))])
    assert list(res.V) == [(1, 3, (0, 0, -1))]
    assert res.not_predicted[(1, 4, (-1, -1, 0))] == "not requested"
    with pytest.raises(ValueError, match="not in the run's Hubbard pair table"):
        uv.predict(tmp_path / "pw.out", labels=LABELS, pairs=[(1, 2, (0, 0, 0))])


def test_bad_outputs(uv, tmp_path):
    text = (DATA / "MnO.scf.out").read_text()
    occ = DATA / "MnO.occup.txt"

    def run(content, **kw):
        path = tmp_path / "pw.out"
        path.write_text(content)
        return uv.predict(path, occup=kw.pop("occup", occ), labels=kw.pop("labels", LABELS), **kw)

    with pytest.raises(ValueError, match="truncated"):
        run(text[: len(text) // 3])
    no_pairs = "\n".join(ln for ln in text.splitlines() if " V = " not in ln)
    with pytest.raises(ValueError, match="not a DFT\\+U\\+V"):
        run(no_pairs)
    with pytest.raises(ValueError, match="6.4.*not supported.*6.7"):
        run(text.replace("PWSCF v.6.7MaX", "PWSCF v.6.4"))
    with pytest.raises(ValueError, match="did not converge"):
        run(
            text.replace(
                "convergence has been achieved in  16", "convergence NOT achieved after 16"
            )
        )
    with pytest.raises(ValueError, match="occup"):
        run(text, occup=tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="one species label per atom"):
        run(text, labels=["Mn1", "O"])
    with pytest.raises(ValueError, match="'Co' is not among the model's species"):
        run(text, labels=["Co1", "Co2", "O", "O"])
    with pytest.raises(ValueError, match="no such file"):
        uv.predict(tmp_path / "nothing.out")


def test_config_roundtrip(uv):
    config = json.loads(json.dumps(uv.config))
    rebuilt = HubbardUV.from_config(config)
    assert jax.tree_util.tree_structure(rebuilt) == jax.tree_util.tree_structure(uv)
    with pytest.raises(ValueError, match="hubbard-uv"):
        HubbardUV.from_config(config["u"])


def test_element_of():
    assert [element_of(s) for s in ("Mn1", "O", "Fe_up", "Co2", "Ni")] == [
        "Mn", "O", "Fe", "Co", "Ni",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="element symbol"):
        element_of("1x")
