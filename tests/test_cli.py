"""The ``zoo`` command line: every subcommand's --help, list/demo output, predict to each format,
evaluate, and one-line errors with exit status 1 for bad input."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from ase import Atoms
from ase.io import read, write

import zoo
from zoo import _registry as registry
from zoo._cli_output import write_csv
from zoo.cli import main
from zoo.model import ResponseModel, make_config

BACKBONE = dict(channels=4, lmax=2, num_layers=2, radial_hidden=8, r_max=4.0)
COMMANDS = ["list", "info", "demo", "predict", "train", "finetune", "evaluate"]


def perovskite(seed=0):
    atoms = Atoms(
        "BaTiO3",
        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        cell=np.eye(3) * 4.0,
        pbc=True,
    )
    atoms.rattle(0.1, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def model():
    config = make_config([56, 22, 8], ["born_charges", "dielectric"], backbone=BACKBONE)
    return ResponseModel(config, key=jax.random.key(0))


@pytest.fixture(scope="module")
def folder(model, tmp_path_factory):
    return str(model.save_pretrained(tmp_path_factory.mktemp("m") / "tiny"))


@pytest.fixture
def structures(tmp_path):
    path = tmp_path / "in.extxyz"
    write(path, [perovskite(0), perovskite(1)])
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: zoo {command}" in capsys.readouterr().out


def test_list_shows_every_shipped_model_with_status(capsys, tmp_path, monkeypatch, model):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    model.save_pretrained(tmp_path / "si29-shielding")
    code, out, _ = run(capsys, "list")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1 : 1 + len(registry.SHIPPED)]}
    assert list(rows) == list(registry.SHIPPED)
    assert "  installed" in rows["si29-shielding"]
    assert "not installed" in rows["batio3-response"]


def test_demo_predicts_on_bundled_examples(capsys, tmp_path, monkeypatch, model):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    code, out, _ = run(capsys, "demo")
    assert code == 1 and "no shipped weights are installed" in out
    model.save_pretrained(tmp_path / "batio3-response")
    registry.write_registry(tmp_path)  # embedded weights load only when pinned
    code, out, _ = run(capsys, "demo")
    assert code == 0
    assert "#### batio3-response: 1 example input(s)" in out
    assert "site  element  Z*xx (e)  Z*yy (e)  Z*zz (e)" in out
    assert "... 123 more row(s) (135 in all)" in out
    assert "dielectric tensor eps_inf (dimensionless):" in out
    assert "summary: Ba27O81Ti27, 135 atoms; mean Born charge (trace/3, e): Ba " in out
    assert "== hubbard-uv: not installed, skipped" in out


def test_predict_writes_each_format(capsys, tmp_path, folder, model, structures):
    want = model.predict([perovskite(0), perovskite(1)])
    code, out, _ = run(capsys, "predict", folder, structures, "-o", tmp_path / "p.extxyz")
    assert code == 0 and "wrote 2 prediction(s)" in out
    frames = read(tmp_path / "p.extxyz", index=":")
    got = np.concatenate([f.arrays["zoo_born_charges"].reshape(-1, 3, 3) for f in frames])
    np.testing.assert_allclose(got, want["born_charges"], atol=1e-5)
    np.testing.assert_allclose(frames[1].info["zoo_dielectric"].reshape(3, 3),
                               want["dielectric"][1], atol=1e-5)  # fmt: skip
    assert run(capsys, "predict", folder, structures, "-o", tmp_path / "p.npz")[0] == 0
    with np.load(tmp_path / "p.npz") as npz:
        np.testing.assert_allclose(npz["1/dielectric"], want["dielectric"][1], atol=1e-5)
    assert run(capsys, "predict", folder, structures, "-o", tmp_path / "p.json")[0] == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    assert [r["frame"] for r in rows] == [0, 1] and np.shape(rows[0]["born_charges"]) == (5, 3, 3)
    code, out, _ = run(capsys, "predict", folder, structures)  # no -o: a table per structure
    assert code == 0 and out.count("summary: BaO3Ti, 5 atoms") == 2
    lines = [line.split() for line in out.splitlines() if line.strip().startswith(("1 ", "2 "))]
    z = np.diagonal(want["born_charges"][0])
    assert lines[0][:2] == ["1", "Ba"] and np.allclose(
        [float(x) for x in lines[0][2:]], z, atol=1e-4
    )
    assert lines[1][1] == "Ti"


def test_predict_never_overwrites(capsys, tmp_path, folder, structures):
    target = tmp_path / "p.json"
    target.write_text("mine")
    code, _, err = run(capsys, "predict", folder, structures, "-o", target)
    assert code == 1
    assert err.strip().endswith("exists; pass --overwrite to replace it")
    assert target.read_text() == "mine"
    code, _, err = run(capsys, "predict", folder, structures, "-o", tmp_path / "p.txt")
    assert code == 1 and "the suffix must be one of .extxyz, .xyz, .npz, .json, .csv" in err
    assert run(capsys, "predict", folder, structures, "-o", target, "--overwrite")[0] == 0
    assert target.read_text() != "mine"


def test_bad_input_one_line_errors(capsys, tmp_path, folder, structures):
    code, _, err = run(capsys, "predict", "no-such-model", structures)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "unknown model name 'no-such-model'; known names: batio3-response" in err
    garbage = tmp_path / "garbage.cif"
    garbage.write_text("not a cif at all\n\x00\x01")
    code, _, err = run(capsys, "predict", folder, garbage)
    assert code == 1 and f"cannot read '{garbage}'" in err
    code, _, err = run(capsys, "predict", folder, tmp_path / "missing.xyz")
    assert code == 1 and "no such input file" in err and "missing.xyz" in err
    code, _, err = run(capsys, "train", "no_such_recipe")
    assert code == 1 and "unknown recipe 'no_such_recipe'; known recipes:" in err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    code, _, err = run(capsys, "finetune", folder, structures, "-o", busy)
    assert code == 1 and "is not empty; pass --overwrite" in err
    assert (busy / "keep.txt").read_text() == "x"
    with pytest.raises(SystemExit) as exit_:
        main(["predict"])
    assert exit_.value.code == 2


def test_evaluate_writes_metrics_and_parity_plot(capsys, tmp_path, folder, model):
    frames = [perovskite(2), perovskite(3)]
    pred = model.predict(frames)
    for k, atoms in enumerate(frames):
        atoms.arrays["born_charges"] = pred["born_charges"][5 * k : 5 * k + 5].reshape(5, 9) + 0.1
    write(tmp_path / "lab.extxyz", frames)
    code, out, _ = run(capsys, "evaluate", folder, tmp_path / "lab.extxyz", "-o", tmp_path / "ev")
    assert code == 0 and "born_charges: MAE 0.1" in out
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert metrics["born_charges"]["mae"] == pytest.approx(0.1, abs=1e-4)
    assert "dielectric" not in metrics  # no labels, no metric
    assert (tmp_path / "ev" / "parity_born_charges.png").is_file()


def test_hubbard_prediction_from_a_pw_output(capsys, tmp_path):
    """A pw.x output with its occup.txt and labels sidecars (zoo/examples/hubbard-uv), untrained
    tiny models: the CLI plumbing, not the physics."""
    import argparse

    from zoo._cli_output import format_record
    from zoo.cli import EXAMPLES, _plain_records, _predict_files, _write_predictions
    from zoo.hubbard._models import IntersiteModel, OnsiteModel
    from zoo.hubbard._predict import HubbardUV

    small = {"hidden_layers": 1, "key": jax.random.key(0)}
    uv = HubbardUV(
        OnsiteModel(["Mn"], feature_irreps="2x0e+2x2e", **small),
        IntersiteModel(["Mn", "O"], feature_irreps="2x0e+2x1e+2x2e", **small),
    )
    args = argparse.Namespace(occup=None, labels=None, batch_size=8)
    records = _predict_files(uv, [EXAMPLES / "hubbard-uv" / "MnO.out"], args)
    table = format_record(records[0])
    assert "parameter                   sites  distance (Å)  value (eV)" in table
    assert "U                     Mn1" in table
    # pw.x prints pair distances in Bohr: Mn-O in MnO is 4.2 Bohr = 2.2225 Å
    assert "V  Mn1-O4 (image -1,-1,0)        2.2225" in table
    assert "summary: 2 U site(s)" in table
    csv = write_csv(None, records).splitlines()
    assert csv[0] == "file,frame,parameter,sites,distance (Å),value (eV)"
    assert csv[1].endswith(",0,U,Mn1,,{:.6g}".format(records[0]["prediction"].U[1]))
    records = _plain_records(records)
    _write_predictions(tmp_path / "h.json", records)
    rows = json.loads((tmp_path / "h.json").read_text())
    assert sorted(rows[0]["U"]) == ["1", "2"] and rows[0]["elements"]["3"] == "O"
    assert rows[0]["distances"]["1-4--1,-1,0"] == pytest.approx(4.2, abs=1e-3)
    with pytest.raises(ValueError, match="Hubbard predictions are written as .json only"):
        _write_predictions(tmp_path / "h.npz", records)
    args.labels = "Mn1,Mn2,O"  # one label short
    with pytest.raises(ValueError, match="labels: need one species label per atom"):
        _predict_files(uv, [EXAMPLES / "hubbard-uv" / "MnO.out"], args)


def test_evaluate_the_shipped_shielding_model_on_its_examples(capsys, tmp_path):
    """The labels of a shielding model (``shielding`` arrays, the training data's quantity) are
    compared with its ``unreferenced_shift`` output."""
    data = Path(zoo.__file__).parent / "examples" / "si29-shielding" / "silicates.extxyz"
    code, out, _ = run(capsys, "evaluate", "si29-shielding", data, "-o", tmp_path / "ev")
    assert code == 0, out
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert 0 < metrics["shielding"]["mae"] < 5.0  # ppm, on two silicates of the training set


def test_shielding_table_csv_reference_magres_and_input_format(capsys, tmp_path):
    """The shipped si29 model on its bundled silicates: per-Si table (1-based input order),
    CSV, --reference slope,offset / none, magres, and --input-format passed to ASE."""
    import argparse

    from zoo._cli_output import format_record, parse_reference, shift_columns
    from zoo.cli import _predict_files

    data = Path(zoo.__file__).parent / "examples" / "si29-shielding" / "silicates.extxyz"
    model = zoo.load("si29-shielding")
    ns = argparse.Namespace(occup=None, labels=None, batch_size=8, input_format=None)
    records = _predict_files(model, [data], ns)
    want = records[0]["prediction"]
    si = [i for i, s in enumerate(records[0]["atoms"].get_chemical_symbols()) if s == "Si"]
    code, out, _ = run(capsys, "predict", "si29-shielding", data)
    assert code == 0
    assert "site  element  isotropic (ppm vs TMS)  span (ppm)     skew" in out
    row = next(
        line.split() for line in out.splitlines() if line.split()[:2] == [str(si[0] + 1), "Si"]
    )
    assert float(row[2]) == pytest.approx(float(want["chemical_shift"][si[0]]), abs=1e-3)
    assert "summary: CaLi2O4Si, 8 atoms, 1 Si site(s)" in out
    lines = write_csv(None, records).strip().splitlines()
    assert lines[0] == "file,frame,site,element,isotropic (ppm vs TMS),span (ppm),skew"
    assert len(lines) == 1 + 1 + 3  # one Si in the first crystal, three in the second
    raw = np.trace(np.asarray(want["unreferenced_shift"][si[0]])) / 3
    scaled = write_csv(None, records, parse_reference("2,-10")).splitlines()[1].split(",")
    assert float(scaled[4]) == pytest.approx(2 * raw - 10, abs=1e-3)
    cols, unit = shift_columns(want, parse_reference("none"))
    assert unit == "ppm, unreferenced" and cols["chemical_shift"][si[0]] == pytest.approx(raw)
    assert "isotropic (ppm, unreferenced)" in format_record(records[0], None)
    code, _, err = run(capsys, "predict", "si29-shielding", data, "--reference", "1")
    assert code == 1 and "--reference must be 'slope,offset'" in err
    weird = tmp_path / "silicates.dat"  # a name ASE cannot guess the format from
    weird.write_bytes(data.read_bytes())
    code, _, err = run(capsys, "predict", "si29-shielding", weird)
    assert code == 1 and "cannot read" in err
    code, out, _ = run(capsys, "predict", "si29-shielding", weird, "--input-format", "extxyz",
                       "-o", tmp_path / "s.magres")  # fmt: skip
    assert code == 0 and (tmp_path / "s.0.magres").is_file() and (tmp_path / "s.1.magres").is_file()
    assert "ms" in (tmp_path / "s.1.magres").read_text()


def test_csv_of_born_charges_and_option_errors(capsys, tmp_path, folder, model, structures):
    want = model.predict([perovskite(0), perovskite(1)])
    code, out, _ = run(capsys, "predict", folder, structures, "-o", tmp_path / "z.csv")
    assert code == 0
    lines = (tmp_path / "z.csv").read_text().splitlines()
    assert lines[0] == "file,frame,site,element,Z*xx (e),Z*yy (e),Z*zz (e)"
    last = lines[-1].split(",")
    assert last[1:4] == ["1", "5", "O"]
    np.testing.assert_allclose([float(x) for x in last[4:]], np.diagonal(want["born_charges"][-1]),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    code, _, err = run(capsys, "predict", folder, structures, "--reference", "1,0")
    assert code == 1 and "for NMR shielding models only" in err
    code, _, err = run(capsys, "predict", folder, structures, "--format", "extxyz")
    assert code == 1 and "give -o FILE" in err
    code, out, _ = run(capsys, "predict", folder, structures, "--format", "json")
    assert code == 0 and np.shape(json.loads(out)[1]["born_charges"]) == (5, 3, 3)
