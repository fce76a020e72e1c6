"""Every family of the Hubbard data is answered by the shipped models, and what lies outside
the data is still refused.

Two sources of ground states: every committed pw.x output with its ``occup.txt``
(``tests/data/qe``, ``zoo/examples/hubbard-uv``), and, for the families without one (layered
NiO2 and MnO2), the ground states of the training steps as the label rows store them
(``data/hubbard/labels.jsonl``: cell, pw.x's pair table rows and on-site occupations).
"""

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.data.hubbard import load_rows, step_of
from zoo.hubbard._run import classify, read_run

ROOT = Path(__file__).resolve().parents[2]
OUTPUT_DIRS = (ROOT / "tests" / "data" / "qe", ROOT / "zoo" / "examples" / "hubbard-uv")
WEIGHTS = ROOT / "zoo" / "weights"
#: committed outputs of ground states outside the training data, refused by design: rutile
#: beta-MnO2 (no rutile cell in the data) and the held-out strained FeO cell whose Fe2 site
#: has an orbital order of no training cell (``test_shipped.py``)
OUTSIDE = {"beta-MnO2_kcheck_it0": "Mn1", "FeO_strain-3pc_it0": "Fe2"}
#: the families these outputs cover (the rest: :func:`test_every_family_...` from the rows)
COVERED = {"MnO", "NiO", "LiCoO2", "LiFeO2", "LiNiO2", "LiMnO2"}


def _outputs() -> list[tuple[str, Path, Path, list[str] | None]]:
    """``(name, pw.x output, occup.txt, labels or None)`` of every committed pw.x output
    that has its occupations beside it."""
    found = []
    for folder in OUTPUT_DIRS:
        for out in sorted(folder.glob("*.out")):
            name = out.name.removesuffix(".out")
            occ, lab = folder / f"{name}.occup.txt", folder / f"{name}.labels.txt"
            if occ.is_file():
                labels = lab.read_text().split() if lab.is_file() else None
                found.append((name, out, occ, labels))
    return found


@pytest.fixture(scope="module")
def shipped():
    return {name: zoo.load(name) for name in ("hubbard-uv", "hubbard-u", "hubbard-v")}


def test_every_committed_pw_output_of_a_trained_family_is_answered(shipped):
    outputs = [o for o in _outputs() if o[0] not in OUTSIDE]
    assert len(outputs) >= 7, f"committed pw.x outputs not found: {outputs}"
    materials = set()
    for name, out, occ, labels in outputs:
        run = read_run(out, occ, labels)
        u_sites, v_pairs, _ = classify(run.prepared)
        assert u_sites and v_pairs, name
        pred = shipped["hubbard-uv"].predict(out, occup=occ, labels=labels)
        assert sorted(pred.U) == sorted(u_sites), name
        assert sorted(pred.V) == sorted(v_pairs), name
        values = [*pred.U.values(), *pred.V.values()]
        assert all(np.isfinite(x) and x > 0 for x in values), (name, values)
        alone_u = shipped["hubbard-u"].predict(out, occup=occ, labels=labels)
        alone_v = shipped["hubbard-v"].predict(out, occup=occ, labels=labels)
        assert alone_u.U == pred.U and alone_v.V == pred.V, name
        materials.add(name.split("_")[0].split(".")[0])
    assert COVERED <= materials, f"no committed output of {sorted(COVERED - materials)}"


@pytest.mark.parametrize("name", sorted(OUTSIDE))
def test_ground_states_outside_the_data_are_still_refused(shipped, name):
    (_, out, occ, labels) = next(o for o in _outputs() if o[0] == name)
    with pytest.raises(ValueError, match=rf"U of site \d \({OUTSIDE[name]}\):") as err:
        shipped["hubbard-uv"].predict(out, occup=occ, labels=labels)
    assert "outside what the model was trained on" in str(err.value)


def _step_input(rows: list[dict]) -> tuple[list[str], list[tuple], np.ndarray, dict]:
    """``predict_parsed``'s inputs for the ground state of one self-consistent step from its
    label rows: species labels, the pair table (on-site rows of every Hubbard site, the
    TM-O pairs hp.x listed), on-site occupations in ``parse_occup``'s layout and the hp.x
    labels ``{(i, j, image) or site: eV}``."""
    symbols = rows[0]["structure"]["symbols"]
    nat = len(symbols)
    table, occ, hp = [], {}, {}
    for r in rows:
        i = r["atom_1_idx"]
        if r["param_type"] == "U":
            table.append((i, i, 0.0, r["param_in"]))
            occ[i] = np.array(r["atom_1_occs"])
            if r["atom_1_manifold"] == "3d":
                hp[i] = r["param_out"]
        else:
            table.append((i, r["atom_2_sc_idx"], r["dist_bohr"], r["param_in"]))
            hp[(i, r["atom_2_idx"], tuple(r["atom_2_image"]))] = r["param_out"]
    partners = defaultdict(set)
    for i, j, *_ in table:
        partners[i] |= {i, j}
    n_neigh = max(len(p) for p in partners.values())
    arr = np.zeros((2, nat, n_neigh, 5, 5))
    for i, block in occ.items():
        n = block.shape[-1]
        arr[:, i - 1, sorted(partners[i]).index(i), :n, :n] = block
    return list(symbols), table, arr, hp


def test_every_family_in_the_data_is_answered_on_its_training_ground_states(shipped):
    """Every production step the shipped models trained on (test paths aside), rebuilt from
    its rows: every TM site and listed TM-O pair of a step whose rows are all training rows
    is answered, near hp.x, and every family has such steps. A step with a row the recipe
    held out as validation (one representative of its duplicate cluster) may be refused
    when no training row is like it (NiO2 iteration 0): at most one step per refused
    validation row."""
    metrics = json.loads((WEIGHTS / "hubbard-uv" / "metrics.json").read_text())
    steps = set(json.loads((WEIGHTS / "hubbard-uv" / "data_steps.json").read_text()))
    validation = {i for p in "UV" for i in metrics[p]["validation_predictions"]}
    refusable = sum(len(metrics[p]["kernel"]["validation_refused"]) for p in "UV")
    by_step = defaultdict(list)
    for r in load_rows():
        if step_of(r) in steps and r["sc_path"] not in metrics["test_paths"]:
            by_step[step_of(r)].append(r)
    answered, refused, worst = set(), [], 0.0
    for step, rows in sorted(by_step.items()):
        labels, table, occ, hp = _step_input(rows)
        if any(r["id"] in validation for r in rows):
            try:
                shipped["hubbard-uv"].predict_parsed(labels, table, occ)
            except ValueError as err:
                assert "outside what the model was trained on" in str(err), step
                refused.append(step)
            continue
        pred = shipped["hubbard-uv"].predict_parsed(labels, table, occ)
        got = {**pred.U, **{k: v for k, v in pred.V.items() if k in hp}}
        assert set(got) == set(hp), (step, sorted(set(hp) - set(got), key=str))
        for key, label in hp.items():
            assert np.isfinite(got[key]), (step, key)
            worst = max(worst, abs(got[key] - label) / label)
        answered.add(rows[0]["material"])
    assert answered >= COVERED | {"FeO", "NiO2", "MnO2-layered"}, answered
    assert len(refused) <= refusable, refused
    # measured 5.5 %: the ridge does not interpolate its training rows exactly
    assert worst < 0.08, f"largest relative error on a training ground state {worst:.3f}"
