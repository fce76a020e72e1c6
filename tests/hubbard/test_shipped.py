"""The shipped hubbard-u / hubbard-v / hubbard-uv models on held-out pw.x runs of the data set.

Each bundled example (``zoo/examples/hubbard-uv/sources.json``) is a pw.x run of a structure
that the recipe held out (a test path); the card's metrics.json stores the prediction the
recipe made for every held-out row, so the shipped weights must reproduce them through the
user's path (pw.x output -> parser -> features -> model).
"""

import json
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.hubbard._basis import wigner_d_qe

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "zoo" / "weights"
EXAMPLES = ROOT / "zoo" / "examples" / "hubbard-uv"


def test_the_hubbard_models_are_shipped():
    for name in ("hubbard-u", "hubbard-v", "hubbard-uv"):
        assert (WEIGHTS / name / "config.json").is_file(), f"{name} is not in {WEIGHTS}"


def _examples() -> dict:
    return json.loads((EXAMPLES / "sources.json").read_text())


def _predict(model, name):
    labels = (EXAMPLES / f"{name}.labels.txt").read_text().split()
    return model.predict(
        EXAMPLES / f"{name}.out", occup=EXAMPLES / f"{name}.occup.txt", labels=labels
    )


def test_offline_prediction_reproduces_the_card_on_held_out_runs(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    uv = zoo.load("hubbard-uv")
    metrics = json.loads((WEIGHTS / "hubbard-uv" / "metrics.json").read_text())
    test_paths = set(metrics["test_paths"])
    stored = {**metrics["U"]["test_predictions"], **metrics["V"]["test_predictions"]}
    checked = 0
    for name, src in _examples().items():
        # sources.json says which examples are structures the models never trained on
        assert (src["sc_path"] in test_paths) == src["held_out"], name
        if not src["held_out"]:
            continue
        pred = _predict(uv, name)
        prefix = f"{src['sc_path']}/it{src['iteration']}/"
        for site, u in pred.U.items():
            if (key := f"{prefix}U/{site}") in stored:
                label, recipe_pred = stored[key]
                assert u == pytest.approx(recipe_pred, abs=2e-4)
                assert abs(u - label) / label < 0.15
                checked += 1
        for (i, b, image), v in pred.V.items():
            j = pred.sc_index[(i, b, image)]
            if (key := f"{prefix}V/{i}-{j}") in stored:
                assert v == pytest.approx(stored[key][1], abs=2e-4)
                checked += 1
        assert "Hubbard_U" in pred.hubbard_card("qe6") or "Hubbard_V" in pred.hubbard_card("qe6")
        assert pred.hubbard_card("qe7").startswith("HUBBARD")
    assert checked > 0


def test_u_and_v_models_are_the_parts_of_hubbard_uv():
    uv, u, v = (zoo.load(n) for n in ("hubbard-uv", "hubbard-u", "hubbard-v"))
    assert u.config == uv.u_model.config and v.config == uv.v_model.config
    x = np.random.default_rng(0).normal(size=(2, u.irreps_in.dim)).astype(np.float32)
    np.testing.assert_allclose(u(x), uv.u_model(x), rtol=1e-6)


def test_rotated_occupations_give_the_same_prediction():
    """A rotated crystal has occupation matrices D n D^T (QE's real-harmonic basis)."""
    uv = zoo.load("hubbard-uv")
    name = next(iter(_examples()))
    ref = _predict(uv, name)
    from zoo.hubbard.dft.parsers import parse_occup, parse_pw_output

    pw = parse_pw_output((EXAMPLES / f"{name}.out").read_text())
    occ = parse_occup((EXAMPLES / f"{name}.occup.txt").read_text(), nat=pw["nat"])
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q * np.sign(np.linalg.det(q))  # proper rotation
    d2 = wigner_d_qe(2, rot)
    occ_rot = np.einsum("ab,...bc,dc->...ad", d2, occ, d2)  # d blocks (5x5 padded) rotate as l=2
    labels = (EXAMPLES / f"{name}.labels.txt").read_text().split()
    got = uv.predict_parsed(labels, pw["pairs"], _rotate_blocks(occ, occ_rot, rot, labels))
    for site, u in ref.U.items():
        assert got.U[site] == pytest.approx(u, abs=1e-4)
    for key, v in ref.V.items():
        assert got.V[key] == pytest.approx(v, abs=1e-4)


def _rotate_blocks(occ, occ_d, rot, labels):
    """Rotate each on-site block with the Wigner D of its own l (d: 5x5, p: top-left 3x3)."""
    from zoo.hubbard._run import element_of
    from zoo.hubbard.dft.structures import TRANSITION_METALS

    out = np.array(occ)
    d1 = wigner_d_qe(1, rot)
    for a, lab in enumerate(labels):
        if element_of(lab) in TRANSITION_METALS:
            out[:, a] = occ_d[:, a]
        else:  # p block lives in the top-left 3x3 of the padded 5x5
            p = occ[:, a, :, :3, :3]
            out[:, a, :, :3, :3] = np.einsum("ab,...bc,dc->...ad", d1, p, d1)
    return out


def test_extrapolation_is_an_error_not_a_number():
    """Held-out strained FeO (queue job p113, iteration 0): the Fe2 site's orbital order is
    outside the training cells (a network blew up there, ~3e4 eV; the kernel's Fe environment
    sits ~24 standardised units from every Fe training row): predict refuses."""
    data = ROOT / "tests" / "data" / "qe"
    uv = zoo.load("hubbard-uv")
    labels = (data / "FeO_strain-3pc_it0.labels.txt").read_text().split()
    with pytest.raises(
        ValueError, match=r"U of site 2 \(Fe2\): its Fe environment .*beyond their range"
    ):
        uv.predict(data / "FeO_strain-3pc_it0.out", occup=data / "FeO_strain-3pc_it0.occup.txt",
                   labels=labels)  # fmt: skip


def test_extend_fits_your_own_hp_labels_and_leaves_the_model_unchanged(tmp_path):
    """Fine-tuning: the held-out NiO run plus its own hp.x labels (data/hubbard, p111 it0)
    added to the shipped kernel models; the extended model reproduces those labels, saves and
    loads, and the shipped model is not modified."""
    from zoo._serialization import save_pretrained

    uv = zoo.load("hubbard-uv")
    name, src = next(iter(_examples().items()))
    prefix = f"{src['sc_path']}/it{src['iteration']}/"
    rows = [json.loads(x) for x in (ROOT / "data/hubbard/labels.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["id"].startswith(prefix) and r.get("purpose") == "production"]
    U = {r["atom_1_idx"]: r["param_out"] for r in rows if r["param_type"] == "U"
         and r["atom_1_element"] == "Ni"}  # fmt: skip
    V = {(r["atom_1_idx"], r["atom_2_idx"], tuple(r["atom_2_image"])): r["param_out"]
         for r in rows if r["param_type"] == "V"}  # fmt: skip
    before = _predict(uv, name)
    labels = (EXAMPLES / f"{name}.labels.txt").read_text().split()
    files = {"occup": EXAMPLES / f"{name}.occup.txt", "labels": labels}
    tuned = uv.extend(EXAMPLES / f"{name}.out", U=U, V=V, **files)
    after = _predict(tuned, name)
    assert tuned.u_model.config["extended_rows"] == len(U) == 2
    assert tuned.v_model.config["extended_rows"] == len(V) == 12
    for site, u in U.items():  # measured: 0.089 -> 0.060 eV (a wide kernel, gamma 0.01)
        assert abs(after.U[site] - u) < 0.8 * abs(before.U[site] - u)
    err = lambda p: np.mean([abs(p.V[k] - v) / v for k, v in V.items()])  # noqa: E731
    # measured: 0.14 % -> 0.063 % (ridge lambda 0.01: the fit does not interpolate its rows)
    assert err(after) < 0.6 * err(before)
    assert _predict(uv, name).U == before.U  # the shipped model is unchanged (pure)
    save_pretrained(tuned, tmp_path / "tuned", card="# tuned\n")
    assert zoo.load(tmp_path / "tuned").predict(EXAMPLES / f"{name}.out", **files).U == after.U
    with pytest.raises(ValueError, match="U: site 3 is not a d-manifold Hubbard site"):
        uv.extend(EXAMPLES / f"{name}.out", U={3: 4.0}, **files)
    with pytest.raises(ValueError, match="hp.x values must be finite and > 0"):
        uv.extend(EXAMPLES / f"{name}.out", U={1: float("nan")}, **files)
    with pytest.raises(ValueError, match=r"V: pair \(1, 1, \(0, 0, 0\)\) is not an inter-site"):
        uv.extend(EXAMPLES / f"{name}.out", V={(1, 1, (0, 0, 0)): 0.5}, **files)


@pytest.mark.parametrize("name", ["hubbard-u", "hubbard-v", "hubbard-uv"])
def test_cards_carry_the_metrics_and_show_the_parity_plots(name):
    """Hub model-card layout: front matter with `model-index` results equal to metrics.json,
    parity plots embedded by relative link, and a repository-relative data path."""
    from zoo._serialization import read_card_metadata

    folder = WEIGHTS / name
    meta = read_card_metadata(folder / "README.md")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert meta["library_name"] == "e3zoo" and meta["license"]
    results = meta["model-index"][0]["results"]
    # the data are not a Hub dataset: they are named in each result's dataset entry
    assert all(res["dataset"]["type"] == "data/hubbard" for res in results)
    parts = [p for p in "UV" if p in metrics]
    assert len(results) == 2 * len(parts)  # validation and test of each part
    for res in results:
        part, split = res["metrics"][0]["name"].split()[:2]
        stored = metrics[part][f"{split}_model"]["all"]
        assert res["metrics"][0]["value"] == pytest.approx(stored["mae"], abs=5e-5)
        assert res["metrics"][1]["value"] == pytest.approx(100 * stored["mare"], abs=5e-3)
    card = (folder / "README.md").read_text()
    for p in parts:
        assert f"![parity {p}](parity_{p}.png)" in card and (folder / f"parity_{p}.png").is_file()
    assert metrics["data"] == "data/hubbard/labels.jsonl"
