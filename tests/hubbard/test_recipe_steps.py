"""`recipes.hubbard_uv --steps`: train on the self-consistent steps a shipped model saw."""

import json

import jax
import pytest

from zoo.data.hubbard import select_steps, step_of


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
    with pytest.raises(ValueError, match="p9-FeO/it2"):
        select_steps(_rows(), f)
    f.write_text(json.dumps({"p1-MnO": 0}))
    with pytest.raises(ValueError, match="JSON list"):
        select_steps(_rows(), f)


def test_recipe_end_to_end_with_bond_directions(tmp_path):
    """A short run of the recipe on two committed sc steps: the V model sees bond directions;
    metrics, cards and data_steps.json are written and the folders load."""
    import zoo
    from recipes.hubbard_uv import main

    steps = tmp_path / "steps.json"
    steps.write_text(json.dumps(["p105-NiO-rat-s0/it0", "p105-NiO-rat-s0/it1"]))
    out = tmp_path / "run"
    report = main(
        ["--out", str(out), "--steps", str(steps), "--model", "network", "--epochs", "5", "--bond-lmax", "2",
         "--hidden-layers", "1", "--test-paths"]
    )  # fmt: skip
    assert report["restarts"] == 1 and report["V"]["restarts"]["chosen"] == 0
    assert "lowest training MSE of 1 initialisation(s)" in (out / "hubbard-v/README.md").read_text()
    uv = zoo.load(out / "hubbard-uv")
    assert uv.v_model.config["bond_lmax"] == 2
    assert json.loads((out / "hubbard-uv" / "data_steps.json").read_text()) == sorted(
        json.loads(steps.read_text())
    )


def test_recipe_residual_models_keep_the_final_weights(tmp_path):
    """``--residual --keep final --ensemble``: the loaded models are means of both restarts
    predicting U - U_in / V - V_in, and the validation rows never reach training (no
    validation loss in the history)."""
    import numpy as np

    import zoo
    from recipes.hubbard_uv import main

    steps = tmp_path / "steps.json"
    steps.write_text(json.dumps(["p105-NiO-rat-s0/it1", "p105-NiO-rat-s0/it2"]))
    out = tmp_path / "run"
    report = main(
        ["--out", str(out), "--steps", str(steps), "--model", "network", "--epochs", "5",
         "--hidden-layers", "1", "--residual", "--keep", "final", "--restarts", "2", "--ensemble", "--squash", "--test-paths"]
    )  # fmt: skip
    assert report["residual"] and report["keep"] == "final"
    assert report["V"]["rows"]["validate"] > 0
    history = json.loads((out / "train-V" / "history.json").read_text())
    assert len(history) == 5 and not any("val_loss" in h for h in history)
    uv = zoo.load(out / "hubbard-uv")
    assert uv.u_model.config["residual"] and uv.v_model.config["residual"]
    assert uv.v_model.config["n_members"] == 2 and report["V"]["restarts"]["chosen"] == "all"
    assert uv.u_model.config["squash"] and uv.v_model.members[0].edge.squash
    card = (out / "hubbard-v/README.md").read_text()
    assert "the mean of 2 initialisations" in card and "Every gated layer is bounded" in card
    assert "the last weights of the schedule are kept" in card and "V = V_in + output" in card
    # the validation predictions are V_in + the network: finite and near the labels' scale
    pred = np.array(list(report["V"]["validation_predictions"].values()))
    assert np.isfinite(pred).all() and np.abs(pred[:, 1]).max() < 10


def test_restarts_keep_the_lowest_training_mse(monkeypatch, tmp_path):
    """Restart r uses key fold_in(seed, r) and batch seed seed + 1000 r; the lowest training
    MSE wins, whatever the validation rows say."""
    import argparse

    import recipes._hubbard_network as recipe

    calls = []

    def fake_train_one(model, ds, labels, args, out, batch_size, seed):
        calls.append((model, out.name, seed))
        rmse, mare = {1007: (0.05, 0.01)}.get(seed, (0.02, 0.1))
        return f"model-{seed}", {
            "train_model": {"all": {"rmse": rmse}},
            "validation_model": {"all": {"mare": mare}},
        }

    monkeypatch.setattr(recipe, "train_one", fake_train_one)
    args = argparse.Namespace(restarts=3)
    model, metrics = recipe.train_restarts(
        lambda key: key, {}, None, args, tmp_path / "train-V", 8, seed=7
    )
    assert [c[1:] for c in calls] == [("train-V", 7), ("train-V-r1", 1007), ("train-V-r2", 2007)]
    assert model == "model-7" and metrics["restarts"]["chosen"] == 0  # rmse 0.02 < 0.05
    assert metrics["restarts"]["validation_mare"] == [0.1, 0.01, 0.1]
    keys = [c[0] for c in calls]
    assert (
        jax.random.key_data(keys[1]).tolist()
        == jax.random.key_data(jax.random.fold_in(jax.random.key(7), 1)).tolist()
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


def test_recipe_kernel_models_are_fit_and_loaded(tmp_path):
    """The default ``--model kernel``: width and ridge from cross-validation on the training
    rows, the folders load as kernel models that reproduce the recipe's held-out predictions,
    and the same rows give the same model (no random initialisation)."""
    import numpy as np

    import zoo
    from recipes.hubbard_uv import main

    steps = tmp_path / "steps.json"
    steps.write_text(json.dumps([f"p105-NiO-rat-s0/it{k}" for k in range(3)]
                                + [f"p115-NiO-rat-s1/it{k}" for k in range(3)]))  # fmt: skip
    runs = [
        main(["--out", str(tmp_path / f"run{k}"), "--steps", str(steps), "--test-paths"])
        for k in (0, 1)
    ]
    report = runs[0]
    assert report["model"] == "kernel" and report["V"]["rows"]["validate"] > 0
    grid = report["V"]["kernel"]["cv"]
    best = min(grid, key=lambda r: r["mare"])
    assert (report["V"]["kernel"]["gamma"], report["V"]["kernel"]["lam"]) == (
        best["gamma"],
        best["lam"],
    )
    assert runs[1]["V"]["validation_predictions"] == report["V"]["validation_predictions"]
    # a model this small and local must beat V_in = the value pw.x used
    v = report["V"]
    assert v["validation_model"]["all"]["mae"] < v["validation_baseline"]["all"]["mae"]
    uv = zoo.load(tmp_path / "run0" / "hubbard-uv")
    assert uv.v_model.config["model_type"] == "hubbard-kernel"
    card = (tmp_path / "run0" / "hubbard-v" / "README.md").read_text()
    assert "kernel ridge regression" in card and "Transfer test" in card
    assert "![parity V](parity_V.png)" in card
    metrics = json.loads((tmp_path / "run0" / "hubbard-v" / "metrics.json").read_text())
    assert metrics["data"] == "data/hubbard/labels.jsonl"  # no machine path
    # the card is a function of the folder's metrics.json: re-rendering changes nothing
    from recipes.hubbard_card import main as render
    from zoo.data.hubbard import DATA_DIR, load_rows

    render([str(tmp_path / "run0" / "hubbard-v")])
    assert (tmp_path / "run0" / "hubbard-v" / "README.md").read_text() == card
    assert len(load_rows(DATA_DIR.parents[1] / metrics["data"])) > 0
    transfer = v["transfer"]  # iterations 0-1 train, iteration 2 validates
    assert transfer["k"] == 2 and transfer["rows"]["validate"] == 24
    assert np.isfinite(uv.v_model.config["support_distance"])


def test_recipe_refuses_network_options_for_the_kernel(capsys):
    from recipes.hubbard_uv import main

    with pytest.raises(SystemExit):
        main(["--residual", "--epochs", "10"])
    assert "--epochs, --residual: options of --model network" in capsys.readouterr().err


def test_recipe_holds_out_a_whole_family(tmp_path):
    """``--hold-out LiFeO2``: every LiFeO2 path is a test path (trained on FeO's Fe only), the
    metrics are also given per material, and the card renders whatever the guard refuses."""
    from recipes.hubbard_uv import main

    steps = tmp_path / "steps.json"
    paths = {"p105-NiO-rat-s0": 3, "p103-FeO-sym-e+0.000": 3, "p113-FeO-sym-e-0.030": 2,
             "p171-LiFeO2-sym-e+0.000": 3}  # fmt: skip
    steps.write_text(json.dumps([f"{p}/it{k}" for p, n in paths.items() for k in range(n)]))
    out = tmp_path / "run"
    report = main(["--out", str(out), "--steps", str(steps), "--test-paths",
                   "--hold-out", "LiFeO2", "--leave-out", "FeO"])  # fmt: skip
    assert report["test_paths"] == ["p171-LiFeO2-sym-e+0.000"]
    # --leave-out FeO: one more run without FeO (and LiFeO2, held out anyway), its FeO rows
    without = report["U"]["leave_out"]["FeO"]
    assert set(without["model"]) == {"FeO"} and without["model"]["FeO"]["n"] > 0
    assert without["train"] < report["U"]["rows"]["train"]
    card = (out / "hubbard-uv" / "README.md").read_text()
    assert "| family | validation | without FeO |" in card
    for part in ("U", "V"):
        test = report[part]["test_by_material"]
        assert set(test["model"]) == {"LiFeO2", "all"} and test["model"]["LiFeO2"]["n"] > 0
        assert "LiFeO2" not in report[part]["validation_by_material"]["model"]
        assert (out / f"hubbard-{part.lower()}" / "README.md").exists()
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--hold-out", "CuO"])
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--leave-out", "NiO+CuO"])


def test_card_says_when_the_guard_refuses_every_held_out_row():
    from recipes.hubbard_card import _kernel_limitation

    part = {"kernel": {"test_refused": ["p1/it0/V/1-2"]}, "rows": {"test": 1}}
    assert "V: it refuses all 1 held-out test rows." in _kernel_limitation({"V": part}, ["V"])


def test_card_per_family_table_and_what_the_guard_refused():
    """``left_out`` keeps the held-out family's rows (not the default test paths') and counts
    the refused ones per material; the card shows it beside the validation MARE."""
    from recipes._hubbard_eval import left_out
    from recipes._hubbard_tables import _families

    m = lambda mare, n: {"mae": 0.1, "rmse": 0.1, "mare": mare, "n": n}  # noqa: E731
    run = {
        "rows": {"train": 40},
        "test_by_material": {
            "model": {"LiNiO2": m(0.129, 3), "NiO": m(0.005, 6), "all": m(0.06, 9)},
            "baseline": {"LiNiO2": m(0.201, 3), "NiO": m(0.175, 6), "all": m(0.18, 9)},
        },
        "kernel": {"test_refused": ["c161-LiNiO2-sym-e+0.000/it0/U/1", "p111-NiO/it0/U/1"]},
        "supported_test_by_material": {"model": {"LiNiO2": m(0.1, 2), "NiO": m(0.005, 5)}},
    }
    out = left_out(run, {"c161-LiNiO2-sym-e+0.000": "LiNiO2"})
    assert set(out["model"]) == set(out["baseline"]) == {"LiNiO2"}
    assert out["refused"] == {"LiNiO2": 1} and out["answered"]["LiNiO2"]["n"] == 2
    part = {
        "validation_by_material": {
            "model": {"LiNiO2": m(0.01, 1), "MnO": m(0.05, 3)},
            "baseline": {"LiNiO2": m(0.001, 1), "MnO": m(0.073, 3)},
        },
        "leave_out": {"LiNiO2": out},
    }
    lines = _families(part, "U")
    assert lines[2] == "| family | validation | without LiNiO2 |"
    assert (
        lines[4]
        == "| LiNiO2 | 1.0 % / 0.1 % (1) | 12.9 % / 20.1 % (3); refused 1, answered 10.0 % |"
    )
    assert lines[5] == "| MnO | 5.0 % / 7.3 % (3) | - |"
    assert _families({}, "U") == []


def test_card_kernel_vs_network_and_the_u_in_range():
    """The held-out families both models were run without, side by side, with the count of
    families where the kernel is closer; the guard's U_in ranges as the card states them."""
    from recipes._hubbard_tables import _versus_network
    from recipes.hubbard_card import _kernel_limitation

    m = lambda mare, n: {"mae": 0.1, "rmse": 0.1, "mare": mare, "n": n}  # noqa: E731
    ours = {"model": {"LiMnO2": m(0.05, 3)}, "baseline": {"LiMnO2": m(0.2, 3)},
            "refused": {"LiMnO2": 1}}  # fmt: skip
    part = {
        "leave_out": {"LiMnO2": ours, "NiO2": ours},
        "network_leave_out": {
            "LiMnO2": {"model": {"LiMnO2": m(0.3, 3)}},
            "NiO2": {"model": {"LiMnO2": m(98681131.234, 3)}},
        },
    }
    lines = _versus_network(part, "U", "python -m recipes.hubbard_uv --model network")
    assert "the kernel is closer to hp.x in 2 of 2." in lines[0]
    assert lines[4] == "| LiMnO2 | LiMnO2 | 5.0 % | 1 of 3 | 30.0 % | 20.0 % |"
    assert lines[5] == "| NiO2 | LiMnO2 | 5.0 % | 1 of 3 | 9.9e+09 % | 20.0 % |"  # a blow-up
    assert len(lines) == 7 and _versus_network({"leave_out": {"NiO2": ours}}, "U", None) == []
    kernel = {"test_refused": [], "param_in_range": {"Mn": [4.0, 5.27], "Ni": [4.0, 9.45]}}
    text = _kernel_limitation({"U": {"kernel": kernel, "rows": {"test": 0}}}, ["U"])
    assert "(U_in Mn 4.00-5.27, Ni 4.00-9.45 eV), widened by 10 % of that span" in text


def test_recipe_refuses_a_network_comparison_of_other_steps(tmp_path):
    from recipes.hubbard_uv import main

    for report, why in (({"model": "kernel"}, "is not a --model network run"),
                        ({"model": "network", "steps": ["p1/it0"]}, "other steps")):  # fmt: skip
        path = tmp_path / "metrics.json"
        path.write_text(json.dumps(report))
        with pytest.raises(SystemExit, match=why):
            main(["--out", str(tmp_path / "run"), "--compare-network", str(path)])
    with pytest.raises(SystemExit, match="cannot read"):
        main(["--out", str(tmp_path / "run"), "--compare-network", str(tmp_path / "none.json")])


def test_card_targets_former_cut_and_transfer_per_family():
    """The gap to the targets, the MARE on the rows above HubbardML's 0.3 eV (earlier cards'
    row set) beside all rows, the transfer test per family, and the note when the network
    comparison was run on other rows."""
    from recipes._hubbard_tables import _former_cut, _targets, _transfer, _versus_network

    m = lambda mare, n: {"mae": 0.1, "rmse": 0.1, "mare": mare, "n": n}  # noqa: E731
    held = {"model": {"LiMnO2": m(0.12, 3)}, "baseline": {"LiMnO2": m(0.3, 3)}, "refused": {}}
    part = {
        "validation_model": {"all": m(0.02, 4)},
        "validation_predictions": {"a": [0.15, 0.18], "b": [0.5, 0.5]},  # 20 % and 0 %
        "leave_out": {"LiMnO2": held, "LiMnO2+MnO2": held},
    }
    lines = _targets(part, "V")
    assert lines[0] == (
        "**Targets** (MARE): validation <= 5 %, each family held out <= 8 %. Validation "
        "2.00 %: met. Without LiMnO2: 12.0 % (4.0 points over)."
    )
    assert _targets({}, "V") == []
    cut = _former_cut(part, "V", 0.3)[0]
    assert "validation all: 10.00 %, 0.0150 eV (2); > 0.3 eV: 0.00 %, 0.0000 eV (1)." in cut
    assert _former_cut({}, "V", 0.3) == []
    transfer = {"k": 2, "rows": {"train": 5, "validate": 2}, "validation_model": {"all": m(0.1, 2)},
                "validation_baseline": {"all": m(0.01, 2)},
                "validation_by_material": {"model": {"NiO2": m(0.1, 2), "all": m(0.1, 2)},
                                           "baseline": {"NiO2": m(0.01, 2)}}}  # fmt: skip
    assert _transfer({"transfer": transfer})[-2] == (
        "Transfer test per family (model / baseline (rows)): NiO2 10.0 % / 1.0 % (2)."
    )
    note = _versus_network(part, "V", "python -m recipes.hubbard_uv --model network")
    assert note[0].startswith("HubbardML's network was not retrained on these V rows")
