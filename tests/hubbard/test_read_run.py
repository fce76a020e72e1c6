"""Reading any DFT+U+V run: atoms without a Hubbard manifold, lone U/V models, bad input.

``tests/data/qe/LiCoO2_sym_it0.*``: QE 6.7 pw.x (one MPI rank) of the 4-atom R-3m LiCoO2 cell
``layered_limo2("Co")`` with the queue's production settings (ortho-atomic, 40/320 Ry, k 2x2x2,
fixed occupations, tot_magnetization 0) and iteration-0 parameters (U(Co) 4 eV, O 2p and the
six Co-O V switched on at 1e-8), written by ``zoo.hubbard.dft.inputs.pw_input``; pseudopotential
paths stripped from the output. The queue ran the same cell: ``data/hubbard/labels.jsonl``,
``p170-LiCoO2-sym-e+0.000/it0`` (hp.x U(Co) 7.5518 eV, V(Co-O) 0.5011 eV).

``LiFeO2_sym_it0.*``: the same for ``layered_limo2("Fe")`` (fixed occupations,
tot_magnetization 5); its total energy equals the queue's ``p171-LiFeO2-sym-e+0.000`` it0
(-140.90040666 Ry; hp.x U(Fe) 4.3372 eV, V(Fe-O) 0.3812 eV).

``<family>_kcheck_it0.*``: the queue's own pw.x runs (2 MPI ranks, iteration 0) of the k checks
of the cathode plan, paths stripped: R-3m LiNiO2 (``c151a``, k 4x4x4, Marzari-Vanderbilt
0.02 Ry), C2/m LiMnO2 (``c152a``, k 4x4x2, same smearing) and AFM rutile beta-MnO2
(``c150b``, k 4x4x4, fixed occupations); cells in ``zoo.hubbard.dft.cathodes``.
"""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

import zoo
from zoo.hubbard import OnsiteModel
from zoo.hubbard._run import read_run
from zoo.hubbard.dft.parsers import parse_occup, parse_pw_output

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "qe"
EXAMPLES = ROOT / "zoo" / "examples" / "hubbard-uv"
LICOO2 = DATA / "LiCoO2_sym_it0.out"
LICOO2_OCC = DATA / "LiCoO2_sym_it0.occup.txt"


@pytest.fixture(scope="module")
def shipped():
    return {name: zoo.load(name) for name in ("hubbard-uv", "hubbard-u", "hubbard-v")}


def test_li_is_skipped_and_every_hubbard_site_and_pair_answered(shipped):
    pred = shipped["hubbard-uv"].predict(LICOO2, occup=LICOO2_OCC)  # labels from the header
    assert pred.labels == {1: "Co", 2: "O", 3: "O", 4: "Li"}
    assert list(pred.U) == [1] and len(pred.V) == 12  # six O per Co, both directions
    assert all(4 not in key[:2] for key in pred.sc_index)  # Li: no Hubbard parameter at all
    assert set(pred.not_predicted) == {(2, 2, (0, 0, 0)), (3, 3, (0, 0, 0))}  # O 2p U
    # the queue's hp.x labels of this cell (a training structure: the kernel interpolates)
    assert pred.U[1] == pytest.approx(7.5518, rel=1e-3)
    assert all(v == pytest.approx(0.5011, rel=1e-3) for v in pred.V.values())
    card = pred.hubbard_card("qe6")
    assert "Hubbard_V(4," not in card and "Hubbard_V(1,1,1) = 7.55" in card
    assert " Li" not in pred.hubbard_card("qe7")


def test_every_loaded_hubbard_model_answers_predict(shipped, uv):
    kw = {"occup": LICOO2_OCC}
    both = shipped["hubbard-uv"].predict(LICOO2, **kw)
    u_alone = shipped["hubbard-u"].predict(LICOO2, **kw)
    v_alone = shipped["hubbard-v"].predict(LICOO2, **kw)
    assert u_alone.U == both.U and u_alone.V == {}
    assert v_alone.V == both.V and v_alone.U == {}
    assert all("hubbard-uv" in u_alone.not_predicted[key] for key in both.V)
    assert "hubbard-uv" in v_alone.not_predicted[(1, 1, (0, 0, 0))]
    # the untrained networks (Fe/Mn/Ni) alone give their part of HubbardUV's answer
    files = {"occup": DATA / "MnO.occup.txt", "labels": ["Mn1", "Mn2", "O", "O"]}
    ref = uv.predict(DATA / "MnO.scf.out", **files)
    assert uv.u_model.predict(DATA / "MnO.scf.out", **files).U == ref.U
    assert uv.v_model.predict(DATA / "MnO.scf.out", **files).V == ref.V
    p_model = OnsiteModel(["O"], l=1, feature_irreps="2x0e+2x2e", hidden_layers=1,
                          key=jax.random.key(0))  # fmt: skip
    with pytest.raises(ValueError, match="p manifolds"):
        p_model.predict(DATA / "MnO.scf.out", **files)


def test_an_element_outside_the_training_data_is_named(shipped, uv):
    with pytest.raises(ValueError, match="'Co' is not among the model's species"):
        uv.predict(LICOO2, occup=LICOO2_OCC)  # trained on Fe, Mn, Ni only
    with pytest.raises(ValueError, match="'Cu' is not among the model's species"):
        shipped["hubbard-uv"].predict(LICOO2, occup=LICOO2_OCC, labels=["Cu", "O", "O", "Li"])


def test_occupations_of_another_run_are_refused(shipped, tmp_path):
    """MnO's output with NiO's occup.txt gave U = 10.90 eV silently; the traces and moments
    pw.x prints tell the two runs apart."""
    with pytest.raises(ValueError, match="atom 1 has trace 8.4123.*5.2851.*another run"):
        shipped["hubbard-uv"].predict(
            EXAMPLES / "MnO.out", occup=EXAMPLES / "NiO_strain-3pc_it0.occup.txt"
        )
    # same cell, other occupations: the MnO reference run against its rattled sibling
    with pytest.raises(ValueError, match="another run"):
        shipped["hubbard-uv"].predict(DATA / "MnO_rattled.scf.out", occup=DATA / "MnO.occup.txt",
                                      labels=["Mn1", "Mn2", "O", "O"])  # fmt: skip
    text = LICOO2.read_text()
    trimmed = tmp_path / "pw.out"
    trimmed.write_text("\n".join(ln for ln in text.splitlines() if "Tr[ns(na)]" not in ln))
    with pytest.raises(ValueError, match="cannot be checked"):
        shipped["hubbard-uv"].predict(trimmed, occup=LICOO2_OCC)


def _write_occup(path: Path, occ: np.ndarray) -> Path:
    # the inverse of parse_occup (checked below): real parts in its array order
    flat = occ.reshape(-1)
    path.write_text("\n".join(f"({float(x)!r},0.0)".replace("nan", "NaN") for x in flat))
    return path


@pytest.mark.parametrize("value", [1.4, -0.2])
def test_occupations_outside_0_1_are_refused(shipped, tmp_path, value):
    occ = parse_occup(LICOO2_OCC.read_text(), nat=4)
    np.testing.assert_array_equal(parse_occup(_write_occup(tmp_path / "same.txt", occ)
                                              .read_text(), nat=4), occ)  # fmt: skip
    bad = occ.copy()
    bad[0, 0, 0, 1, 1] = value  # Co, spin up, on-site block, one diagonal element
    path = _write_occup(tmp_path / "occup.txt", bad)
    with pytest.raises(ValueError, match=r"site 1 \(Co\): diagonal .* outside \[0, 1\]"):
        shipped["hubbard-uv"].predict(LICOO2, occup=path)
    pw = parse_pw_output(LICOO2.read_text())
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):  # parsed data alike
        shipped["hubbard-uv"].predict_parsed(pw["labels"], pw["pairs"], bad)


def test_nan_occupations_are_refused(shipped, tmp_path):
    occ = parse_occup(LICOO2_OCC.read_text(), nat=4)
    occ[1, 0, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match="occup.txt: unexpected content"):  # as pw.x writes it
        shipped["hubbard-uv"].predict(LICOO2, occup=_write_occup(tmp_path / "occup.txt", occ))
    pw = parse_pw_output(LICOO2.read_text())
    with pytest.raises(ValueError, match=r"site 1 \(Co\): NaN or infinite"):
        shipped["hubbard-uv"].predict_parsed(pw["labels"], pw["pairs"], occ)


def test_shipped_models_predict_the_stored_reference_values(shipped):
    """Every shipped Hubbard model on every bundled example reproduces the values recorded
    from the shipped weights (``shipped_reference.json``)."""
    stored = json.loads((Path(__file__).parent / "shipped_reference.json").read_text())
    assert set(stored["predictions"]) == {"MnO", "NiO_strain-3pc_it0"}
    for name, ref in stored["predictions"].items():
        labels = (EXAMPLES / f"{name}.labels.txt").read_text().split()
        files = {"occup": EXAMPLES / f"{name}.occup.txt", "labels": labels}
        got = {
            n: m.predict(EXAMPLES / f"{name}.out", **files).as_dict() for n, m in shipped.items()
        }
        for model, parts in (("hubbard-uv", "UV"), ("hubbard-u", "U"), ("hubbard-v", "V")):
            for part in parts:
                assert got[model][part].keys() == ref[part].keys()
                for key, value in ref[part].items():
                    assert got[model][part][key] == pytest.approx(value, rel=1e-12, abs=1e-12)


def _example(name):
    return {"path": DATA / f"{name}.out", "occup": DATA / f"{name}.occup.txt"}


def test_layered_lifeo2_is_answered_as_hp_x_labelled_it(shipped):
    ex = _example("LiFeO2_sym_it0")
    pred = shipped["hubbard-uv"].predict(ex["path"], occup=ex["occup"])
    assert pred.labels == {1: "Fe1", 2: "O", 3: "O", 4: "Li"}
    assert list(pred.U) == [1] and len(pred.V) == 12
    assert pred.U[1] == pytest.approx(4.3372, rel=5e-3)  # hp.x, p171 it0
    assert all(v == pytest.approx(0.3812, rel=5e-3) for v in pred.V.values())


def test_layered_linio2_example_is_answered_for_every_ni_site_and_pair(shipped):
    """The queue's pw.x run of layered LiNiO2 (``zoo/examples/hubbard-uv/LiNiO2_it0``, job
    c161, iteration 0; labels from the output's header): Li has no Hubbard manifold and is
    left out; the Ni site and its six Ni-O pairs (both directions) are answered inside the
    support guard, near hp.x's labels of that step (U(Ni) 9.4502 eV, V(Ni-O) 0.8941 eV)."""
    ex = {"path": EXAMPLES / "LiNiO2_it0.out", "occup": EXAMPLES / "LiNiO2_it0.occup.txt"}
    run = read_run(ex["path"], ex["occup"])
    assert run.labels == ["Ni1", "O", "O", "Li"]
    assert sorted(run.prepared.onsite) == [1, 2, 3]
    for name in ("hubbard-uv", "hubbard-u", "hubbard-v"):
        pred = shipped[name].predict(ex["path"], occup=ex["occup"])
        assert pred.labels == {1: "Ni1", 2: "O", 3: "O", 4: "Li"}
        assert all(4 not in key[:2] for key in pred.sc_index)  # Li: no parameter at all
        if name != "hubbard-v":
            assert list(pred.U) == [1] and pred.U[1] == pytest.approx(9.4502, rel=0.02)
        if name != "hubbard-u":
            assert len(pred.V) == 12 and {k[0] for k in pred.V} == {1, 2, 3}
            assert all(v == pytest.approx(0.8941, rel=0.02) for v in pred.V.values())
    # the k check c151a is the same cell, k mesh and start: the same ground state
    kcheck = _example("LiNiO2_kcheck_it0")
    same = shipped["hubbard-uv"].predict(kcheck["path"], occup=kcheck["occup"])
    assert same.U[1] == pytest.approx(
        shipped["hubbard-u"].predict(ex["path"], occup=ex["occup"]).U[1], rel=1e-3
    )


def test_cathodes_outside_the_training_data_are_refused_naming_what(shipped):
    """Rutile beta-MnO2 (no rutile cell in the data): its Mn site is refused."""
    ex = _example("beta-MnO2_kcheck_it0")
    with pytest.raises(
        ValueError, match=r"U of site 1 \(Mn1\): its Mn environment .*beyond their range"
    ) as err:
        shipped["hubbard-uv"].predict(ex["path"], occup=ex["occup"])
    assert "outside what the model was trained on" in str(err.value)


def test_layered_limno2_is_answered_for_its_long_jahn_teller_pairs_too(shipped):
    """The C2/m LiMnO2 k check is the ground state of the production job c163 at iteration 0
    (same total energy), a training step: U(Mn) is hp.x's 5.0162 eV. Its two long
    Jahn-Teller Mn-O bonds (4.36 bohr, hp.x V 0.1465 eV; 4 table rows) are training rows since
    the V cut-off went down to 0.1 eV (under HubbardML's 0.3 eV they were refused): every
    pair is answered, near hp.x's V (0.4994 eV for the four short bonds)."""
    ex = _example("LiMnO2_kcheck_it0")
    pred = shipped["hubbard-uv"].predict(ex["path"], occup=ex["occup"])
    assert list(pred.U) == [1] and pred.U[1] == pytest.approx(5.0162, rel=2e-3)
    assert len(pred.V) == 12
    bonds = read_run(ex["path"], ex["occup"]).prepared.keyed  # {key: (sc index, bohr, V_in)}
    long = [key for key in pred.V if bonds[key][1] > 4.0]
    assert len(long) == 4
    for key, v in pred.V.items():
        assert v == pytest.approx(0.1465 if key in long else 0.4994, rel=0.05), key
