"""`recipes.hubbard_uv --steps`: train on the self-consistent steps a shipped model saw."""

import json

import pytest

from recipes.hubbard_uv import select_steps, step_of


def _rows():
    return [
        {"sc_path": "p1-MnO", "iteration": 0, "id": "a"},
        {"sc_path": "p1-MnO", "iteration": 1, "id": "b"},
        {"sc_path": "p2-NiO", "iteration": 0, "id": "c"},
    ]


def test_select_steps_keeps_only_the_listed_steps(tmp_path):
    f = tmp_path / "steps.json"
    f.write_text(json.dumps(["p1-MnO/it0", "p2-NiO/it0"]))
    assert [r["id"] for r in select_steps(_rows(), f)] == ["a", "c"]
    assert step_of(_rows()[1]) == "p1-MnO/it1"


def test_select_steps_refuses_steps_missing_from_the_data(tmp_path):
    f = tmp_path / "steps.json"
    f.write_text(json.dumps(["p1-MnO/it0", "p9-FeO/it2"]))
    with pytest.raises(SystemExit, match="p9-FeO/it2"):
        select_steps(_rows(), f)
    f.write_text(json.dumps({"p1-MnO": 0}))
    with pytest.raises(SystemExit, match="JSON list"):
        select_steps(_rows(), f)


def test_recipe_end_to_end_with_restarts_and_bond_directions(tmp_path):
    """A short run of the recipe on two committed sc steps: two restarts per model, the one
    with the lowest training MSE kept; the V model sees bond directions; the folders load."""
    import zoo
    from recipes.hubbard_uv import main

    steps = tmp_path / "steps.json"
    steps.write_text(json.dumps(["p105-NiO-rat-s0/it0", "p105-NiO-rat-s0/it1"]))
    out = tmp_path / "run"
    report = main(
        ["--out", str(out), "--steps", str(steps), "--epochs", "5", "--restarts", "2",
         "--bond-lmax", "2", "--hidden-layers", "1", "--test-paths"]
    )  # fmt: skip
    for part in ("U", "V"):
        r = report[part]["restarts"]
        assert len(r["train_mse"]) == 2 and r["chosen"] == int(
            min(range(2), key=r["train_mse"].__getitem__)
        )
        assert r["train_mse"][r["chosen"]] == pytest.approx(
            report[part]["train_model"]["all"]["rmse"] ** 2
        )
    assert report["restarts"] == 2 and (out / "train-V-r1").is_dir()
    assert "lowest training MSE of 2 initialisation(s)" in (out / "hubbard-v/README.md").read_text()
    uv = zoo.load(out / "hubbard-uv")
    assert uv.v_model.config["bond_lmax"] == 2
    assert json.loads((out / "hubbard-uv" / "data_steps.json").read_text()) == sorted(
        json.loads(steps.read_text())
    )


def test_card_reports_other_splits():
    from recipes.hubbard_card import _other_splits

    m = lambda mare, n: {"mae": 0.1, "rmse": 0.1, "mare": mare, "n": n}  # noqa: E731
    part = {
        "validation_model": {"O-Ni": m(0.04, 3), "all": m(0.05, 5)},
        "other_splits": {
            "1": {
                "validation_model": {"all": m(0.116, 20)},
                "validation_baseline": {"all": m(0.4, 20)},
            }
        },
    }
    lines = _other_splits(part)
    assert lines[2] == "| split seed | O-Ni | all |"
    assert lines[4] == "| 1 | - | 11.6 % / 40.0 % (20) |"
    assert _other_splits({"validation_model": {}}) == []
