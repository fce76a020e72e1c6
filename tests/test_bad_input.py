"""Bad input, one table: every row is an input a user could give and what must come of it.

A row is ``(id, run, error, phrase)``: ``run(ctx)`` gives the input; with an ``error`` type it
must raise that type with ``phrase`` in the message, without one ``run`` itself asserts the
checked outcome (nothing a user wrote lost, a valid file written). Hub rows use the local
Hub-protocol server of ``hub_server.py``; nothing goes to the network.
"""

import contextlib
import dataclasses
import io
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest
from ase.io import read, write
from hub_server import HubServer
from huggingface_hub import constants
from safetensors.numpy import save_file
from test_cli import BACKBONE, perovskite
from test_serialization import TINY_TYPES, predict, train_tiny

import zoo
from zoo import _cli_train, _registry, cli, nmr
from zoo._serialization import load_safetensors, make_model_card, model_tensors, save_pretrained
from zoo.finetune import _base_identity, finetune
from zoo.hub import WeightsUnavailableError, load
from zoo.model import ResponseModel, make_config
from zoo.structure import as_structure
from zoo.train import TrainConfig

NAME, REPO = "batio3-response", "e3zoo/batio3-response"


@pytest.fixture(scope="module")
def tiny():
    """The pinned release and a later, different tiny model (test_serialization.TinyModel)."""
    return train_tiny(steps=30), train_tiny(steps=30, shift=0.5)


@pytest.fixture(scope="module")
def response():
    config = make_config([56, 22, 8], ["born_charges", "dielectric"], backbone=BACKBONE)
    return ResponseModel(config, key=jax.random.key(0))


@dataclasses.dataclass
class Ctx:
    tmp: Path
    hub: HubServer
    weights: Path  # weights/ with NAME embedded and pinned; the same files tagged on the Hub
    tiny: tuple
    response: ResponseModel

    def opts(self, **kwargs) -> dict:
        return dict(cache_dir=self.tmp / "cache", weights_dir=self.weights,
                    model_types=TINY_TYPES, **kwargs)  # fmt: skip

    def response_folder(self) -> Path:
        return self.response.save_pretrained(self.tmp / "response")


@pytest.fixture
def ctx(tmp_path, monkeypatch, tiny, response):
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))
    root = tmp_path / "weights"
    folder = save_pretrained(tiny[0], root / NAME)
    _registry.write_registry(root)
    server.add_commit(REPO, {p.name: p.read_bytes() for p in folder.iterdir()}, tags=("v0.1.0",))
    yield Ctx(tmp_path, server, root, tiny, response)
    server.stop()


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    run: Callable[[Ctx], object]
    error: type[BaseException] | None = None
    phrase: str = ""


def structure_dict(**over) -> dict:
    base = {"numbers": [14, 8], "positions": [[0, 0, 0], [1.6, 0, 0]], "cell": np.eye(3) * 5}
    return {**base, "pbc": True, **over}


# ---- rows whose outcome is checked --------------------------------------------------------
def cli_extxyz_keeps_the_input_labels(c: Ctx) -> None:
    frames = [perovskite(0), perovskite(1)]
    for k, atoms in enumerate(frames):
        atoms.arrays["born_charges"] = np.full((5, 9), 1.0 + k)  # the user's reference labels
        atoms.info["dielectric"] = np.arange(9.0)
        atoms.info["source_file"] = "mine"
    write(c.tmp / "in.extxyz", frames)
    assert cli.main(["predict", str(c.response_folder()), str(c.tmp / "in.extxyz"),
                     "-o", str(c.tmp / "out.extxyz")]) == 0  # fmt: skip
    want = c.response.predict([perovskite(0), perovskite(1)])
    out = read(c.tmp / "out.extxyz", index=":")
    for k, atoms in enumerate(out):
        np.testing.assert_array_equal(atoms.arrays["born_charges"], np.full((5, 9), 1.0 + k))
        np.testing.assert_array_equal(atoms.info["dielectric"], np.arange(9.0))
        assert atoms.info["source_file"] == "mine"
        assert atoms.info["zoo_source_file"] == str(c.tmp / "in.extxyz")
        got = atoms.arrays["zoo_born_charges"].reshape(5, 3, 3)
        np.testing.assert_allclose(got, want["born_charges"][5 * k : 5 * k + 5], atol=1e-5)
        np.testing.assert_allclose(atoms.info["zoo_dielectric"].reshape(3, 3),
                                   want["dielectric"][k], atol=1e-5)  # fmt: skip


def cli_extxyz_of_an_earlier_output(c: Ctx):
    atoms = perovskite(0)
    atoms.arrays["zoo_born_charges"] = np.zeros((5, 9))  # written by an earlier zoo predict
    record = {"file": "in.extxyz", "frame": 0, "atoms": atoms,
              "prediction": {"born_charges": np.ones((5, 3, 3))}}  # fmt: skip
    return cli._write_predictions(c.tmp / "out.extxyz", [record])


def cli_json_is_strict_json(c: Ctx) -> None:
    shielding = np.full((5, 3, 3), np.nan)
    shielding[1] = np.eye(3)  # NaN off the labelled atoms, as si29-shielding predicts
    record = {"file": "in.xyz", "frame": 0, "atoms": perovskite(0),
              "prediction": {"shielding": shielding, "iso": np.float32("nan")}}  # fmt: skip
    cli._write_predictions(c.tmp / "out.json", [record])

    def refuse(token):
        raise AssertionError(f"{token} in the JSON")

    rows = json.loads((c.tmp / "out.json").read_text(), parse_constant=refuse)
    assert rows[0]["shielding"][0][0] == [None, None, None] and rows[0]["iso"] is None
    assert rows[0]["shielding"][1] == np.eye(3).tolist()


def finetuned_card_inherits_licence_and_names_the_base(c: Ctx) -> None:
    shipped = _base_identity(NAME)  # the real shipped card: GPL-3.0
    assert shipped == {"base_model": REPO, "revision": "v0.1.0", "license": "gpl-3.0",
                       "license_known": True}  # fmt: skip
    base = c.response.save_pretrained(
        c.tmp / "base", card=make_model_card("base", license="gpl-3.0", config=c.response.config)
    )
    data = []
    for seed in range(3):
        atoms = perovskite(seed)
        atoms.arrays["born_charges"] = np.tile(np.eye(3).reshape(1, 9), (5, 1))
        data.append(atoms)
    out = c.tmp / "ft"
    cfg = TrainConfig(max_epochs=1, learning_rate=1e-3)
    finetune(str(base), data, out_dir=out, train_config=cfg, split=0, batch_size=4)
    card = (out / "model" / "README.md").read_text()
    assert "license: gpl-3.0" in card and "license: mit" not in card
    assert f'zoo.load("{(out / "model").as_posix()}")' in card
    assert "base_model:" not in card and str(base) in card  # a folder is not a Hub id


def save_uses_the_umask(c: Ctx) -> None:
    old = os.umask(0o027)
    try:
        folder = save_pretrained(c.tiny[0], c.tmp / "m", extra_files={"plots/a.txt": "x"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert stat.S_IMODE((folder / "plots").stat().st_mode) == 0o750
    for name in ("model.safetensors", "config.json", "README.md", "plots/a.txt"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o640, name


def save_through_a_symlink(c: Ctx) -> None:
    real = c.tmp / "s" / "real"
    save_pretrained(c.tiny[0], real)
    (real / "notes.txt").write_text("mine")
    link = c.tmp / "s" / "link"
    link.symlink_to(real, target_is_directory=True)
    assert save_pretrained(c.tiny[1], link, overwrite=True) == real
    assert link.is_symlink() and link.resolve() == real
    assert (real / "notes.txt").read_text() == "mine"
    np.testing.assert_array_equal(predict(load(link, model_types=TINY_TYPES)), predict(c.tiny[1]))
    assert sorted(p.name for p in (c.tmp / "s").iterdir()) == ["link", "real"]


def failed_swap_keeps_the_old_folder(c: Ctx, monkeypatch) -> None:
    target = save_pretrained(c.tiny[0], c.tmp / "s" / "m", extra_files={"metrics.json": "{}"})
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    real_rename, calls = os.rename, []

    def rename(src, dst):  # the second rename (new folder into place) fails
        calls.append(src)
        if len(calls) == 2:
            raise OSError("simulated failure")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="simulated failure"):
        save_pretrained(c.tiny[1], target, overwrite=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["m"]  # no .m.old-*, .m.tmp-*


def overwrite_drops_the_previous_models_files(c: Ctx) -> None:
    target = save_pretrained(c.tiny[0], c.tmp / "m", extra_files={"metrics.json": '{"a": 1}'})
    old_card = (target / "README.md").read_text()
    (target / "notes.txt").write_text("mine")
    (target / "extra.json").write_text("user")  # not written by save_pretrained: kept
    save_pretrained(c.tiny[1], target, overwrite=True, card="new card")
    assert not (target / "metrics.json").exists()
    assert (target / "README.md").read_text() == "new card" != old_card
    assert (target / "notes.txt").read_text() == "mine"
    assert (target / "extra.json").read_text() == "user"
    save_pretrained(c.tiny[0], target, overwrite=True)  # the default card replaces ours
    assert (target / "README.md").read_text() == make_model_card("m", config=c.tiny[0].config)
    (target / "README.md").write_text("edited by hand")
    with pytest.warns(UserWarning, match="written or edited by hand and is kept"):
        save_pretrained(c.tiny[1], target, overwrite=True)
    assert (target / "README.md").read_text() == "edited by hand"
    np.testing.assert_array_equal(predict(load(target, model_types=TINY_TYPES)),
                                  predict(c.tiny[1]))  # fmt: skip


def overwrite_of_an_older_folder_warns(c: Ctx) -> None:
    target = save_pretrained(c.tiny[0], c.tmp / "m")
    (target / "metrics.json").write_text("{}")  # origin unknown: not listed by the weights
    with pytest.warns(UserWarning, match=r"kept 1 file\(s\) .*\(metrics\.json\)"):
        save_pretrained(c.tiny[1], target, overwrite=True)
    assert (target / "metrics.json").read_text() == "{}"


def hub_transit_corruption_is_refetched(c: Ctx) -> None:
    c.hub.corrupt["model.safetensors"] = 1  # one bad transfer under the right ETag
    model = load(NAME, **c.opts(source="hub"))
    np.testing.assert_array_equal(predict(model), predict(c.tiny[0]))
    gets = [p for m, p in c.hub.requests if m == "GET" and p.endswith("model.safetensors")]
    assert len(gets) == 2


def hub_unpinned_corruption_leaves_no_bad_blob(c: Ctx) -> None:
    c.hub.corrupt["model.safetensors"] = 2
    with pytest.raises(ValueError, match="do not match the sha256 the Hub reports"):
        load(REPO, **c.opts())
    blobs = list((c.tmp / "cache").rglob("blobs/*"))
    assert blobs and all(_registry.matches_etag(b, b.name) for b in blobs)  # no bad blob kept
    c.hub.corrupt.clear()  # the next try downloads afresh and loads
    np.testing.assert_array_equal(predict(load(REPO, **c.opts())), predict(c.tiny[0]))


def legacy_config_without_heads(c: Ctx) -> None:
    folder = c.response_folder()
    config = json.loads((folder / "config.json").read_text())
    del config["heads"]
    (folder / "config.json").write_text(json.dumps(config))
    save_file(model_tensors(c.response), str(folder / "model.safetensors"))  # no config hash
    load(folder)


def edited_config(edit) -> Callable[[Ctx], object]:
    def run(c: Ctx):
        folder = c.response_folder()
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        (folder / "config.json").write_text(json.dumps(config))
        return load(folder)

    return run


def edited_embedded_config(c: Ctx):
    path = c.weights / NAME / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "scale": 2.0}))
    return load(NAME, **c.opts())


def nan_weights(c: Ctx):
    folder = save_pretrained(c.tiny[0], c.tmp / "m")
    tensors = {k: np.array(v) for k, v in model_tensors(c.tiny[0]).items()}
    tensors["layers.0.bias"][1] = np.nan
    save_file(tensors, str(folder / "model.safetensors"))
    return load(folder, model_types=TINY_TYPES)


def tampered_embedded(c: Ctx):
    (c.weights / NAME / "model.safetensors").write_bytes(b"x" * 64)
    return load(NAME, **c.opts())


def no_registry(c: Ctx):
    (c.weights / "registry.json").unlink()
    return load(NAME, **c.opts())


def registry_without_the_name(c: Ctx):
    (c.weights / "registry.json").write_text(json.dumps({"format": 1, "models": {}}))
    return load(NAME, **c.opts())


def all_nan_labels(c: Ctx):
    data = []
    for seed in range(3):
        atoms = perovskite(seed)
        atoms.arrays["born_charges"] = np.full((5, 9), np.nan)
        data.append(atoms)
    return finetune(c.response, data, out_dir=c.tmp / "ft", split=0)


def train_ignores_the_cwd_recipes(c: Ctx, monkeypatch) -> None:
    (c.tmp / "recipes").mkdir()
    (c.tmp / "recipes" / "batio3_response.py").write_text("raise SystemExit('cwd recipe ran')\n")
    (c.tmp / "mine.py").write_text(
        "from pathlib import Path\ndef main(argv):\n    Path('ran.txt').write_text(repr(argv))\n"
    )
    monkeypatch.chdir(c.tmp)
    (c.tmp / "batio3_response.py").write_text("raise SystemExit('cwd file ran')\n")
    for spec in ("batio3_response", "batio3_response.py", "batio3-response"):
        module, path = _cli_train._recipe_module(spec)
        assert path == _cli_train.RECIPES / "batio3_response.py" and module.__file__ == str(path)
    assert cli.main(["train", "./mine.py", "--epochs", "1"]) == 0
    assert (c.tmp / "ran.txt").read_text() == "['--epochs', '1']"


def cli_call(*argv: str) -> Callable[[Ctx], None]:
    """A CLI call that must exit with status 1 and one line on stderr, raised as ValueError."""

    def run(c: Ctx) -> None:
        args = [str(c.response_folder()) if a == "{response}" else a.format(tmp=c.tmp)
                for a in argv]  # fmt: skip
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli.main(args)
        assert code == 1 and len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
        raise ValueError(err.getvalue())

    return run


MNO = Path(zoo.__file__).parent / "examples" / "hubbard-uv" / "MnO.out"


def hubbard_predict(pw_output, **kwargs):
    return load("hubbard-uv").predict(pw_output, **kwargs)


# fmt: off
ROWS = [
    # ---- the table ----
    Row("predict -o out.extxyz keeps the input's own arrays", cli_extxyz_keeps_the_input_labels),
    Row("predict -o out.extxyz on an earlier output", cli_extxyz_of_an_earlier_output,
        ValueError, "already has zoo_born_charges"),
    Row("predict -o out.json: strict JSON, null for NaN", cli_json_is_strict_json),
    Row("fine-tuned card: base licence, Hub id + revision, usage path",
        finetuned_card_inherits_licence_and_names_the_base),
    Row("save_pretrained honours the umask", save_uses_the_umask),
    Row("save_pretrained to a symlinked folder", save_through_a_symlink),
    Row("overwrite with a different model", overwrite_drops_the_previous_models_files),
    Row("overwrite keeping files of unknown origin", overwrite_of_an_older_folder_warns),
    Row("registry.json missing", no_registry, ValueError, "registry.json is missing"),
    Row("registry.json lacks the name", registry_without_the_name, ValueError,
        "has no sha256 pins of 'batio3-response'"),
    Row("Hub bytes corrupted once in transit", hub_transit_corruption_is_refetched),
    Row("unpinned Hub repo serving corrupted bytes", hub_unpinned_corruption_leaves_no_bad_blob),
    Row("NaN in the weights", nan_weights, ValueError, "non-finite value(s)"),
    Row("embedded config.json edited", edited_embedded_config, ValueError,
        "sha256 mismatch for embedded batio3-response/config.json"),
    Row("config r_max edited", edited_config(lambda c: c["backbone"].update(r_max=5.0)),
        ValueError, "config.json differs from the config these weights were saved with"),
    Row("config species order edited",
        edited_config(lambda c: c["backbone"].update(species=[22, 56, 8])), ValueError,
        "config.json differs"),
    Row("config channels = 1e8", edited_config(lambda c: c["backbone"].update(channels=10**8)),
        ValueError, "config.json differs"),
    Row("config without heads", edited_config(lambda c: c.pop("heads")), ValueError,
        "config.json differs"),
    Row("config without heads, weights without a config hash", legacy_config_without_heads,
        ValueError, "lacks the key 'heads'"),
    Row("pbc='False' in a structure dict", lambda c: as_structure(structure_dict(pbc="False")),
        ValueError, "a string: write pbc=False"),
    Row("pbc=['True', 'False', 'True']",
        lambda c: as_structure(structure_dict(pbc=["True", "False", "True"])), ValueError,
        "pbc must be True/False or 3 of them"),
    Row("fine-tune with all-NaN labels", all_nan_labels, ValueError,
        "labels 'born_charges': no structure has a finite born_charges"),
    # ---- bad input the README documents: structures, load, CLI ----
    Row("empty structure", lambda c: as_structure({"numbers": [], "positions": np.zeros((0, 3))}),
        ValueError, "empty structure"),
    Row("NaN position", lambda c: as_structure(structure_dict(positions=[[0, 0, 0], [np.nan, 0, 0]])),
        ValueError, "non-finite position for atom 1"),
    Row("singular cell", lambda c: as_structure(structure_dict(cell=np.zeros((3, 3)))),
        ValueError, "the cell is singular"),
    Row("atoms on top of each other",
        lambda c: as_structure(structure_dict(positions=[[0, 0, 0], [0.01, 0, 0]])),
        ValueError, "closer than 0.1"),
    Row("atomic number 0", lambda c: as_structure(structure_dict(numbers=[0, 8])), ValueError,
        "atomic number 0"),
    Row("positions of the wrong shape", lambda c: as_structure(structure_dict(positions=[[0, 0]])),
        ValueError, "positions must have shape (2, 3)"),
    Row("unknown model name", lambda c: load("hubbard-w", **c.opts()), ValueError,
        "unknown model name 'hubbard-w'"),
    Row("missing folder", lambda c: load("./missing", **c.opts()), ValueError,
        "no model folder at './missing'"),
    Row("Hub repo that does not exist", lambda c: load("nobody/nothing", **c.opts()),
        WeightsUnavailableError, "not found"),
    Row("tampered embedded weights", tampered_embedded, ValueError,
        "sha256 mismatch for embedded"),
    Row("zoo predict to an existing file", cli_call("predict", "{response}", "{tmp}/in.xyz",
        "-o", "{tmp}/weights/registry.json"), ValueError, "exists; pass --overwrite"),
    Row("zoo predict of a missing input", cli_call("predict", "{response}", "{tmp}/in.xyz"),
        ValueError, "no such input file"),
    Row("zoo predict to an unknown suffix", cli_call("predict", "{response}", "{tmp}/in.xyz",
        "-o", "{tmp}/p.txt"), ValueError, "the suffix must be one of"),
    Row("zoo predict --occup with a structure model", cli_call("predict", "{response}",
        "{tmp}/weights/registry.json", "--occup", "occup.txt"), ValueError, "for Hubbard models"),
    Row("zoo predict of a pw.x output ASE cannot read", cli_call("predict", "{response}",
        str(MNO)), ValueError, "ASE cannot read this pw.x output"),
    Row("zoo train of an unknown recipe", cli_call("train", "no_such_recipe"), ValueError,
        "unknown recipe 'no_such_recipe'; known recipes: batio3_global"),
    Row("zoo train of a missing recipe file", lambda c: _cli_train._recipe_module("./nothing.py"),
        ValueError, "no such recipe file"),
    # ---- found by a later sweep ----
    Row("reference slope not a number",
        lambda c: nmr.reference_shift(np.zeros(3), {"slope": "a", "offset": 0.0}), ValueError,
        "reference: slope and offset must be numbers"),
    Row("Hubbard predict given an ase.Atoms", lambda c: hubbard_predict(perovskite()), ValueError,
        "pw_output: expected a file path, got Atoms"),
    Row("Hubbard labels as one string", lambda c: hubbard_predict(MNO, labels="Mn1,Mn2,O,O"),
        ValueError, "labels: expected a list of species labels, got the string"),
]
# fmt: on


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row, ctx):
    if row.error is None:
        row.run(ctx)
        return
    with pytest.raises(row.error) as err:
        row.run(ctx)
    assert row.phrase in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "run", [failed_swap_keeps_the_old_folder, train_ignores_the_cwd_recipes],
    ids=["failed overwrite keeps the old folder", "zoo train ignores ./recipes"],
)  # fmt: skip
def test_bad_input_needing_monkeypatch(run, ctx, monkeypatch):
    run(ctx, monkeypatch)


def test_read_only_folder_is_refused_before_writing(ctx, monkeypatch):
    """As root every folder is writable, so the permission answer is simulated."""
    target = save_pretrained(ctx.tiny[0], ctx.tmp / "s" / "m")
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: Path(p) != target and real_access(p, m))
    with pytest.raises(PermissionError, match="is not writable; nothing was changed"):
        save_pretrained(ctx.tiny[1], target, overwrite=True)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["m"]


def test_load_safetensors_is_the_way_to_use_an_edited_config(ctx):
    folder = save_pretrained(ctx.tiny[0], ctx.tmp / "m")
    skeleton = TINY_TYPES["tiny"].from_config({**ctx.tiny[0].config, "scale": 3.0})
    model = load_safetensors(skeleton, folder / "model.safetensors")
    np.testing.assert_allclose(predict(model), predict(ctx.tiny[0]) * 2.0, rtol=1e-6)
