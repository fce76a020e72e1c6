"""The shipped model cards parse with huggingface_hub, their model-index values are the stored
metrics.json values, and every plot they link exists (and every plot is linked)."""

import json
import re

import pytest
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard import metadata_load

from zoo import _registry
from zoo._cards import card_data, eval_result, make_model_card, with_front_matter

WEIGHTS = _registry.WEIGHTS_DIR


def _si29(m: dict) -> dict:
    v = m["formulations"][m["shipped"]]["validation"]
    out = {("validation", k): round(v[k], 4) for k in
           ("isotropic_mae", "isotropic_rmse", "isotropic_r2", "tensor_mae", "span_mae", "skew_mae")}  # fmt: skip
    ref = m["nmr_reference"]
    return {**out, (None, "mae"): round(ref["mae"], 4), (None, "loo_mae"): round(ref["loo_mae"], 4)}


def _hubbard(m: dict) -> dict:
    out = {}
    for part in ("U", "V"):
        for split in ("validation", "test") if isinstance(m.get(part), dict) else ():
            a = m[part][f"{split}_model"]["all"]
            out[(split, part, "mae")] = round(a["mae"], 4)
            out[(split, part, "mare")] = round(100 * a["mare"], 2)
    return out


def _batio3(m: dict) -> dict:
    v, g = m["validation"], m["global_heads"]
    return {
        ("validation", "Born effective charges", "mae"): round(v["born_charges"]["asr"]["mae"], 4),
        ("validation", "Born effective charges", "rmse"): round(v["born_charges"]["asr"]["rmse"], 4),
        ("validation", "Raman tensors", "mae"): round(v["raman_tensors"]["asr"]["mae"], 4),
        ("validation", "Raman tensors", "r2"): round(v["raman_tensors"]["asr"]["r2"], 4),
        ("validation", "Dielectric tensor", "mae"): round(g["dielectric"]["model_full_predict"]["mae"], 4),
        ("validation", "chi(2)", "mae"): round(g["chi2"]["model_full_predict"]["mae"], 4),
    }  # fmt: skip


def _field(m: dict) -> dict:
    return {("validation", q, "mae"): round(v["mae"], 5) for q, v in m["validation"].items()}


#: name -> (license, metrics.json -> {key: value} as the card's model-index must hold them)
EXPECTED = {
    "batio3-response": ("gpl-3.0", _batio3),
    "si29-shielding": ("mit", _si29),
    "hubbard-u": ("mit", _hubbard),
    "hubbard-v": ("mit", _hubbard),
    "hubbard-uv": ("mit", _hubbard),
    "batio3-field": ("mit", _field),
    "sio2-field": ("mit", _field),
}


def _key(name: str, r) -> tuple:
    if name == "si29-shielding":
        return (r.dataset_split, r.metric_type)
    return (r.dataset_split, r.dataset_config, r.metric_type)


@pytest.mark.parametrize("name", list(_registry.SHIPPED))
def test_shipped_card_parses_and_matches_metrics(name):
    folder = WEIGHTS / name
    card = ModelCard.load(folder / "README.md")
    license, expected = EXPECTED[name]
    data = card.data
    assert data.library_name == "e3zoo" and data.license == license
    assert {"e3zoo", "jax", "equinox", "e3nn"} <= set(data.tags)
    assert data.model_name == name
    got = {_key(name, r): r.metric_value for r in data.eval_results}
    assert len(got) == len(data.eval_results)  # no two results under one key
    assert got == expected(json.loads((folder / "metrics.json").read_text()))
    assert metadata_load(folder / "README.md")["model-index"][0]["name"] == name
    linked = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", card.text)
    assert linked, "the card shows no plot"
    assert all(not link.startswith(("/", "http")) and (folder / link).is_file() for link in linked)
    assert {p.name for p in folder.glob("*.png")} == set(linked)


def test_card_helpers_round_trip():
    r = eval_result(("tabular-regression", "Hubbard U (eV)"), ("data/hubbard, held-out", "data/hubbard"),
                    ("mae", "U MAE (eV)"), 0.0418, split="validation", subset="U")  # fmt: skip
    data = card_data("m", license="cc-by-4.0", tags=["hubbard"], datasets=["org/set"],
                     results=[r], base_model="e3zoo/hubbard-u")  # fmt: skip
    assert isinstance(data, ModelCardData)
    text = with_front_matter("---\nlicense: mit\n---\n\n# m\n\nbody\n", data)
    assert text.endswith("\n# m\n\nbody\n")
    back = ModelCard(text).data
    assert back.license == "cc-by-4.0" and back.base_model == "e3zoo/hubbard-u"
    assert back.datasets == ["org/set"] and back.eval_results[0].metric_value == 0.0418
    assert with_front_matter("# plain\n", data).endswith("---\n# plain\n")
    with pytest.raises(ValueError, match="value must be a finite number"):
        eval_result(("t", "t"), ("d", "d"), ("mae", "m"), float("nan"))
    with pytest.raises(ValueError, match="never closed"):
        with_front_matter("---\nlicense: mit\n", data)
    meta = ModelCard(make_model_card("x", base_model="e3zoo/batio3-response")).data
    assert meta.base_model == "e3zoo/batio3-response" and meta.library_name == "e3zoo"


def test_batio3_card_learning_section():
    from recipes._batio3_card import card_text

    folder = WEIGHTS / "batio3-response"
    metrics = json.loads((folder / "metrics.json").read_text())
    split = json.loads((folder / "split.json").read_text())
    runs = [("finetune", 2, 0.07), ("scratch", 2, 0.27), ("finetune", 5, 0.06)]
    learning = {
        "steps": 40, "validation_frames": list(range(12)),
        "untrained": {"finetune": {"mae": 0.108}},
        "runs": [{"mode": m, "n_train": n, "validation": {"mae": v}} for m, n, v in runs],
    }  # fmt: skip
    plain, text = card_text(metrics, split, {}), card_text(metrics, split, {}, learning)
    assert "| 2 | 0.070 | 0.270 |" in text and "| 5 | 0.060 | - |" in text
    assert "40\noptimiser steps" in text and "MAE 0.108 e there" in text
    assert "learning_curves" not in plain and len(text) > len(plain)


def test_batio3_card_backbone_section_names_the_best_mean():
    from recipes._batio3_card import card_text

    folder = WEIGHTS / "batio3-response"
    metrics = json.loads((folder / "metrics.json").read_text())
    split = json.loads((folder / "split.json").read_text())
    row = {"epochs": 8, "n_parameters": 1000, "train_minutes": 1.0, "predict_cpu_s": 0.1,
           "raman_r2": 0.9}  # fmt: skip
    maes = [("nequip", 0, 0.05), ("nequip", 1, 0.09), ("mace", 0, 0.06), ("mace", 1, 0.06)]
    runs = [{**row, "architecture": a, "seed": s, "born_mae": m} for a, s, m in maes]
    text = card_text(metrics, split, {}, backbones={"load_average": 1.0, "runs": runs})
    assert "| MACE | 1 | 8 | 1,000 |" in text
    assert "(mean\nover seeds): MACE." in text  # NequIP's mean 0.07 > MACE's 0.06
    assert "Backbones at a fixed budget" not in card_text(metrics, split, {})


def test_field_card_reproduce_names_a_non_default_backbone():
    from recipes._field_card import reproduce_text
    from recipes.field_potential import BACKBONE

    stage = {"budget_minutes": 44, "minutes": 44.2, "learning_rate": 0.01, "steps": 900,
             "epochs": 19.0}  # fmt: skip
    default = reproduce_text("sio2", stage, BACKBONE)[0]
    assert default == "- `python -m recipes.field_potential --material sio2 --minutes 44`"
    wider = reproduce_text("sio2", stage, {**BACKBONE, "channels": 16, "r_max": 4.5})[0]
    assert wider.endswith("--minutes 44 --channels 16 --r-max 4.5`")
    continued = {**stage, "learning_rate": 0.003, "previous_training": stage}
    first, second = reproduce_text("sio2", continued, {**BACKBONE, "channels": 16})[:2]
    assert "--channels 16 --run runs/stage1 --no-ship" in first
    assert "--channels" not in second and "--init runs/stage1/model" in second


def test_field_card_thins_the_shipped_loss_history():
    from recipes._field_card import thinned

    rows = [{"step": 10 * k} for k in range(1, 850)]
    kept = thinned(rows, 200)
    assert len(kept) == 200 and kept[0] == rows[0] and kept[-1] == rows[-1]
    assert all(a["step"] < b["step"] for a, b in zip(kept, kept[1:]))
    assert thinned(rows[:50], 200) == rows[:50]
    shipped = json.loads((WEIGHTS / "sio2-field" / "metrics.json").read_text())
    assert 0 < len(shipped["history"]) <= 200
