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
