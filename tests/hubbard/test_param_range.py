"""The kernel models' guard on a run's own U_in / V_in: the training range of each species,
kept with the weights (and recovered for folders saved before it was kept)."""

import json

import numpy as np
import pytest

import zoo
from zoo._serialization import save_pretrained
from zoo.data.hubbard import DATA_DIR, load_rows, u_dataset, v_dataset
from zoo.hubbard._kernel import KernelModel
from zoo.hubbard._predict import HubbardUV
from zoo.hubbard._support import PARAM_MARGIN, PARAM_MARGIN_EV

PATHS = ("p105-NiO-rat-s0", "p100-MnO-sym-e+0.000")
KINDS = {"onsite": (u_dataset, "Ni"), "intersite": (v_dataset, "O-Ni")}


@pytest.fixture(scope="module")
def rows():
    rows = load_rows(DATA_DIR / "labels.jsonl")
    rows = [r for r in rows if r.get("purpose") == "production" and r["sc_path"] in PATHS]
    assert {r["sc_path"] for r in rows} == set(PATHS)
    return rows


def _fit(ds, kind):
    return KernelModel.fit(ds["species"], ds["inputs"], ds["y"], kind=kind, gamma=0.1, lam=1e-3)


def _with_param(kind, inputs, value):
    """`inputs` with the run's U_in (U: last column of x) / V_in (V: edge column 1) set."""
    arrays = [np.array(a) for a in inputs]
    arrays[-1][:, -1 if kind == "onsite" else 1] = value
    return tuple(arrays)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_range_is_that_of_the_training_rows_and_both_sides_of_its_edges(rows, kind):
    build, key = KINDS[kind]
    ds = build(rows)
    model = _fit(ds, kind)
    metal = [r["atom_1_element"] for r in ds["rows"]]  # U site / V d site
    own = np.array(ds["param_in"])[np.array(metal) == "Ni"]
    # V_in enters as pw.x prints it (4 decimals): 1e-8 reads 0
    assert model.config["param_in_range"][key] == pytest.approx([own.min(), own.max()], abs=1e-4)
    assert model.param_ranges() is model.config["param_in_range"]
    lo, hi = model.param_ranges()[key]
    margin = max(PARAM_MARGIN * (hi - lo), PARAM_MARGIN_EV)
    name = "U_in" if kind == "onsite" else "V_in"
    for edge, out in ((hi + margin, 1e-4), (lo - margin, -1e-4)):
        assert model.param_problem(key, edge - out) is None
        why = model.param_problem(key, edge + out)
        assert f"its {name} = {edge + out:.4g} eV is outside the {key} training range" in why
        assert f"{lo:.4g} to {hi:.4g} eV" in why
    with pytest.raises(ValueError, match="value: expected a finite number"):
        model.param_problem(key, float("nan"))
    # through predict's guard: a training row is answered; the same row with the parameter
    # beyond the range is refused by the range check first, naming it
    ni = np.flatnonzero(np.array(metal) == "Ni")[:1]
    row = tuple(a[ni] for a in ds["inputs"])
    model.check_support(row, ["row"])
    far = hi + 3 * margin
    with pytest.raises(ValueError, match=rf"row: its {name} = {far:.4g} eV is outside the {key}"):
        model.check_support(_with_param(kind, row, far), ["row"])


def test_extend_widens_the_range(rows):
    ds = u_dataset(rows)
    first = np.array([r["iteration"] == 0 for r in ds["rows"]])
    model = KernelModel.fit(
        ds["species"], tuple(a[first] for a in ds["inputs"]), ds["y"][first], kind="onsite",
        gamma=0.1, lam=1e-3,
    )  # fmt: skip
    assert model.param_ranges()["Ni"] == pytest.approx([4.0, 4.0])
    later = model.extend(tuple(a[~first] for a in ds["inputs"]), ds["y"][~first])
    own = ds["param_in"][np.array([r["atom_1_element"] == "Ni" for r in ds["rows"]])]
    assert later.param_ranges()["Ni"] == pytest.approx([own.min(), own.max()])


def test_folders_saved_without_the_range_recover_it_from_their_training_rows(rows, tmp_path):
    u, v = _fit(u_dataset(rows), "onsite"), _fit(v_dataset(rows), "intersite")
    save_pretrained(HubbardUV(u, v), tmp_path / "new", card="# test\n")
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    assert config["u"]["param_in_range"] == u.param_ranges()
    # the same weights as saved before the range was kept: their config has no such key
    before = [
        KernelModel({k: c for k, c in m.config.items() if k != "param_in_range"},
                    m.train_z, m.train_y, m.alpha)
        for m in (u, v)
    ]  # fmt: skip
    save_pretrained(HubbardUV(*before), tmp_path / "uv", card="# test\n")
    old = zoo.load(tmp_path / "uv")
    for loaded, fitted in ((old.u_model, u), (old.v_model, v)):
        assert "param_in_range" not in loaded.config
        ranges = loaded.param_ranges()
        assert sorted(ranges) == sorted(fitted.param_ranges())
        for key, (lo, hi) in fitted.param_ranges().items():
            assert ranges[key] == pytest.approx([lo, hi], abs=1e-5)
    assert "outside the Ni training range of U_in" in old.u_model.param_problem("Ni", 20.0)
    for bad in ({"Ni": [5.0, 4.0]}, {"Ni": ["4", 5.0]}, {"Ni": [4.0]}, [4.0, 5.0]):
        with pytest.raises(ValueError, match="param_in_range must map each species"):
            KernelModel.skeleton_from_config({**u.config, "param_in_range": bad})
