"""Download path against a local Hub server, through the real huggingface_hub client.

Nothing inside huggingface_hub is mocked. ``HF_ENDPOINT`` is set with monkeypatch: zoo.hub
reads it at call time and passes ``endpoint=`` to huggingface_hub (whose own constant is read
at import). ``HF_HUB_OFFLINE`` is likewise read by zoo.hub at call time and turned into
``local_files_only=True``. Every test uses its own cache folder.
"""

import shutil
import time
import warnings

import numpy as np
import pytest
from hub_server import HubServer
from huggingface_hub import constants
from test_serialization import TINY_TYPES, predict, train_tiny

from zoo import _registry
from zoo._serialization import save_pretrained
from zoo.hub import WeightsUnavailableError, info, list_models, load, push_to_hub

NAME = "batio3-response"
REPO = "e3zoo/batio3-response"


@pytest.fixture(scope="module")
def models():
    """Two trained tiny models: the pinned release and a later, different one."""
    return train_tiny(steps=30), train_tiny(steps=30, shift=0.5)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))
    yield server
    server.stop()


def folder_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture
def weights(tmp_path, models, hub):
    """weights/ with the release embedded and pinned; the same files tagged v0.1.0 on the Hub."""
    root = tmp_path / "weights"
    folder = save_pretrained(models[0], root / NAME)
    _registry.write_registry(root)
    hub.add_commit(REPO, folder_bytes(folder), tags=("v0.1.0",))
    return root


def opts(tmp_path, weights, **kwargs):
    return dict(cache_dir=tmp_path / "cache", weights_dir=weights, model_types=TINY_TYPES, **kwargs)


def resolves(hub) -> list[tuple[str, str]]:
    return [r for r in hub.requests if "/resolve/" in r[1]]


def test_first_download_then_cached_load_with_server_stopped(tmp_path, models, hub, weights):
    shutil.rmtree(weights / NAME)  # pins only: "auto" must go to the Hub
    assert list_models(weights) == [
        {
            "name": NAME,
            "description": _registry.SHIPPED[NAME].description,
            "caution": "",
            "repo_id": REPO,
            "revision": "v0.1.0",
            "embedded": False,
            "downloadable": True,
        }
    ]
    model = load(NAME, **opts(tmp_path, weights))
    np.testing.assert_array_equal(predict(model), predict(models[0]))
    paths = {path for _, path in resolves(hub)}
    commit = hub.commit_of(REPO, "v0.1.0")
    assert {f"/{REPO}/resolve/v0.1.0/{f}" for f in ("config.json", "model.safetensors")} <= paths
    # the rest of the repo (the card) is snapshotted at the same commit
    assert f"/{REPO}/resolve/{commit}/README.md" in paths
    hub.stop()
    again = load(NAME, **opts(tmp_path, weights))
    np.testing.assert_array_equal(predict(again), predict(models[0]))


def test_embedded_is_the_offline_default(tmp_path, models, hub, weights):
    model = load(NAME, **opts(tmp_path, weights))
    np.testing.assert_array_equal(predict(model), predict(models[0]))
    assert hub.requests == []
    hub_model = load(NAME, **opts(tmp_path, weights, source="hub"))
    np.testing.assert_array_equal(predict(hub_model), predict(models[0]))
    assert len(resolves(hub)) > 0


def test_pinned_revision_picks_the_release(tmp_path, models, hub, weights):
    newer = save_pretrained(models[1], tmp_path / "newer")
    commit = hub.add_commit(REPO, folder_bytes(newer))  # main moves on, v0.1.0 stays
    pinned = load(NAME, **opts(tmp_path, weights, source="hub"))
    np.testing.assert_array_equal(predict(pinned), predict(models[0]))
    latest = load(REPO, **opts(tmp_path, weights))  # "org/repo": main by default, no pins
    np.testing.assert_array_equal(predict(latest), predict(models[1]))
    for revision in ("v0.1.0", commit):
        model = load(REPO, revision=revision, **opts(tmp_path, weights))
        expected = models[0] if revision == "v0.1.0" else models[1]
        np.testing.assert_array_equal(predict(model), predict(expected))
    with pytest.warns(UserWarning, match="not the pinned release 'v0.1.0'"):
        model = load(NAME, revision="main", **opts(tmp_path, weights))
    np.testing.assert_array_equal(predict(model), predict(models[1]))


def test_wrong_sha256_is_refused(tmp_path, models, hub, weights):
    newer = save_pretrained(models[1], tmp_path / "newer")
    hub.add_commit(REPO, folder_bytes(newer), tags=("v0.1.0",))  # the tag now serves other bytes
    with pytest.raises(ValueError, match=r"sha256 mismatch for e3zoo/batio3-response@v0\.1\.0/"):
        load(NAME, **opts(tmp_path, weights, source="hub"))


def test_tampered_embedded_weights_are_refused(tmp_path, hub, weights):
    path = weights / NAME / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="sha256 mismatch for embedded batio3-response"):
        load(NAME, **opts(tmp_path, weights))


def test_404s_give_clear_errors(tmp_path, hub, weights):
    with pytest.raises(WeightsUnavailableError, match="Hub repo 'nobody/nothing' not found"):
        load("nobody/nothing", **opts(tmp_path, weights))
    with pytest.raises(WeightsUnavailableError, match="revision 'v9' not found in Hub repo"):
        load(REPO, revision="v9", **opts(tmp_path, weights))
    hub.add_commit("alice/notes", {"config.json": b"{}"})
    with pytest.raises(WeightsUnavailableError, match="'model.safetensors' of 'alice/notes'"):
        load("alice/notes", **opts(tmp_path, weights))


def test_server_down_with_empty_cache_fails_fast(tmp_path, hub, weights):
    hub.stop()
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match=r"cannot download .* from http://127"):
        load(NAME, **opts(tmp_path, weights, source="hub"))
    assert time.perf_counter() - start < 10  # no 20 s of retries


@pytest.mark.parametrize("how", ["env", "constant", "argument"])
def test_offline_with_empty_cache(tmp_path, models, hub, weights, monkeypatch, how):
    kwargs = {"local_files_only": True} if how == "argument" else {}
    if how == "env":  # set after import: zoo.hub reads it at call time
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    elif how == "constant":  # set before import: huggingface_hub's own constant
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    message = "offline .* is not in the Hugging Face cache"
    with pytest.raises(WeightsUnavailableError, match=message):
        load(NAME, **opts(tmp_path, weights, source="hub", **kwargs))
    embedded = load(NAME, **opts(tmp_path, weights, **kwargs))  # the offline default still works
    np.testing.assert_array_equal(predict(embedded), predict(models[0]))
    assert hub.requests == []


def test_offline_with_filled_cache(tmp_path, models, hub, weights, monkeypatch):
    load(NAME, **opts(tmp_path, weights, source="hub"))
    seen = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load(NAME, **opts(tmp_path, weights, source="hub"))
    np.testing.assert_array_equal(predict(model), predict(models[0]))
    assert len(hub.requests) == seen


def test_unknown_name_lists_known_names(tmp_path, hub, weights):
    with pytest.raises(ValueError, match="unknown model name 'hubbard-w'; known names: batio3"):
        load("hubbard-w", **opts(tmp_path, weights))
    with pytest.raises(ValueError, match="no model folder at './missing'"):
        load("./missing", **opts(tmp_path, weights))
    with pytest.raises(ValueError, match="embedded weights of 'hubbard-u' are not installed"):
        load("hubbard-u", **opts(tmp_path, weights, source="embedded"))
    with pytest.raises(ValueError, match="'hubbard-u' has no embedded weights .* no sha256 pins"):
        load("hubbard-u", **opts(tmp_path, weights))
    assert [m["name"] for m in list_models(tmp_path / "empty")] == []


def test_local_relative_folder(tmp_path, models, hub, weights, monkeypatch):
    monkeypatch.chdir(weights)
    model = load(f"./{NAME}", model_types=TINY_TYPES)
    np.testing.assert_array_equal(predict(model), predict(models[0]))
    assert hub.requests == []


def test_info_reads_card_and_config(tmp_path, hub, weights):
    shutil.rmtree(weights / NAME)
    meta = info(NAME, cache_dir=tmp_path / "cache", weights_dir=weights)
    assert meta["card"]["library_name"] == "e3zoo"
    assert meta["config"]["model_type"] == "tiny" and meta["config_sections"] == ["species"]
    assert meta["source"] == f"hub {REPO}@v0.1.0" and meta["revision"] == "v0.1.0"


def test_push_to_hub_then_load(tmp_path, models, hub, weights, monkeypatch):
    # upload_folder's Xet pipeline needs a Xet CAS; the server speaks the plain commit API.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    commit = push_to_hub(models[1], "alice/tiny", token="hf_test")
    files = hub.files("alice/tiny")
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    assert (
        "alice/tiny" in files["README.md"].decode()
        and commit.oid == hub.repos["alice/tiny"]["main"]
    )
    model = load("alice/tiny", **opts(tmp_path, weights))
    np.testing.assert_array_equal(predict(model), predict(models[1]))
    push_to_hub(weights / NAME, "alice/tiny", revision="release", token="hf_test")
    model = load("alice/tiny", revision="release", **opts(tmp_path, weights))
    np.testing.assert_array_equal(predict(model), predict(models[0]))
    with pytest.raises(ValueError, match="repo_id must look like 'org/name'"):
        push_to_hub(models[1], "tiny", token="hf_test")
    with pytest.raises(ValueError, match="is not a model folder: config.json is missing"):
        push_to_hub(tmp_path, "alice/tiny", token="hf_test")


# ---- the ModelHubMixin surface of the model classes ----
TINY_RESPONSE = dict(channels=4, lmax=2, num_layers=2, radial_hidden=8, r_max=4.0)


@pytest.fixture(scope="module")
def response_model():
    import jax

    from zoo.model import ResponseModel, make_config

    config = make_config([56, 22, 8], ["born_charges", "dielectric"], backbone=TINY_RESPONSE)
    return ResponseModel(config, key=jax.random.key(0))


def perovskite():
    from ase import Atoms

    atoms = Atoms("BaTiO3", cell=np.eye(3) * 4.0, pbc=True,
                  scaled_positions=[[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])  # fmt: skip
    atoms.rattle(0.05, seed=1)
    return atoms


def test_mixin_adds_no_field_and_keeps_the_module_a_pytree(response_model):
    import dataclasses

    import equinox as eqx
    import jax
    from huggingface_hub import ModelHubMixin

    from zoo.model import ResponseModel
    from zoo.shielding import ShieldingModel

    assert issubclass(ResponseModel, ModelHubMixin) and issubclass(ShieldingModel, ModelHubMixin)
    assert [f.name for f in dataclasses.fields(ResponseModel)] == ["backbone", "heads", "config"]
    assert [f.name for f in dataclasses.fields(ShieldingModel)] == ["response", "others", "config"]
    assert "_hub_mixin_config" not in vars(response_model)
    assert ResponseModel._hub_mixin_info.model_card_data.library_name == "e3zoo"
    leaves = jax.tree_util.tree_leaves(eqx.filter(response_model, eqx.is_array))
    assert len(leaves) > 0 and all(isinstance(x, jax.Array) for x in leaves)


def test_from_pretrained_push_to_hub_round_trip(tmp_path, hub, response_model, monkeypatch):
    """push_to_hub -> ResponseModel.from_pretrained at a pinned revision, the whole repo (card,
    plots) in the Hugging Face cache, then an offline reload with the server stopped."""
    from zoo.model import ResponseModel
    from zoo.shielding import ShieldingModel

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    first = response_model.push_to_hub("alice/resp", token="hf_test")
    hub.repos["alice/resp"]["v1"] = first.oid  # a tag on the first commit
    hub.add_commit(
        "alice/resp", {"parity_born_charges.png": b"\x89PNG plot", "metrics.json": b"{}"}
    )
    hub.add_commit("alice/resp", {"later.txt": b"after the pin"})
    cache = tmp_path / "hf"
    model = ResponseModel.from_pretrained("alice/resp", cache_dir=cache)
    want = response_model.predict(perovskite())
    np.testing.assert_allclose(model.predict(perovskite())["born_charges"], want["born_charges"])
    snapshots = list((cache / "models--alice--resp" / "snapshots").iterdir())
    assert len(snapshots) == 1
    cached = {p.name for p in snapshots[0].iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "parity_born_charges.png",
            "metrics.json", "later.txt"} <= cached  # fmt: skip
    pinned = ResponseModel.from_pretrained("alice/resp", revision="v1", cache_dir=cache)
    assert isinstance(pinned, ResponseModel)
    assert not (cache / "models--alice--resp" / "snapshots" / first.oid / "later.txt").exists()
    hub.stop()
    again = ResponseModel.from_pretrained("alice/resp", cache_dir=cache, local_files_only=True)
    np.testing.assert_allclose(again.predict(perovskite())["dielectric"], want["dielectric"])
    with pytest.raises(ValueError, match="model_type 'response' .*not a ShieldingModel"):
        ShieldingModel.from_pretrained("alice/resp", cache_dir=cache, local_files_only=True)
    folder = again.save_pretrained(tmp_path / "saved")
    assert ResponseModel.from_pretrained(folder).config == response_model.config


def test_a_subclass_loads_as_itself(tmp_path, response_model):
    from zoo.model import ResponseModel

    class MyResponse(ResponseModel):
        pass

    folder = response_model.save_pretrained(tmp_path / "m")
    model = MyResponse.from_pretrained(folder)
    assert type(model) is MyResponse


def test_dtype_at_load_without_a_global_switch(tmp_path, response_model):
    import jax
    import jax.numpy as jnp

    folder = response_model.save_pretrained(tmp_path / "m")
    assert not jax.config.jax_enable_x64
    with pytest.raises(ValueError, match="float64 needs jax_enable_x64"):
        load(folder, dtype="float64")
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        load(folder, dtype="bfloat16")
    with jax.enable_x64(True):
        model = load(folder, dtype="float64")
        floats = [x for x in jax.tree_util.tree_leaves(model) if hasattr(x, "dtype")
                  and jnp.issubdtype(x.dtype, jnp.floating)]  # fmt: skip
        assert floats and all(x.dtype == jnp.float64 for x in floats)
        assert model.config["dtype"] == "float64"
        got = model.predict(perovskite())["born_charges"]
        assert got.dtype == np.float64
        # a float64 copy saves and reloads as float64 (its config says so)
        again = load(model.save_pretrained(tmp_path / "m64"))
        assert again.backbone.embedding.dtype == jnp.float64
    want = response_model.predict(perovskite())["born_charges"]
    np.testing.assert_allclose(got, want, atol=1e-4)
    f32 = load(folder, dtype="float32")
    assert f32.backbone.embedding.dtype == jnp.float32


def test_device_at_load(tmp_path, response_model):
    import jax

    folder = response_model.save_pretrained(tmp_path / "m")
    device = jax.devices("cpu")[-1]
    model = load(folder, device=device)
    assert {d for x in jax.tree_util.tree_leaves(model) if isinstance(x, jax.Array)
            for d in x.devices()} == {device}  # fmt: skip
    with pytest.raises(ValueError, match="device must be a jax.Device"):
        load(folder, device="gpu0")


def test_the_mixin_on_the_hubbard_classes(tmp_path):
    """Every Hubbard model class carries the mixin: `from_pretrained` loads the shipped weights
    as that class, `save_pretrained` and a reload round-trip."""
    import equinox as eqx
    import jax

    from zoo._hub_mixin import HubMixin
    from zoo.hubbard._ensemble import HubbardEnsemble
    from zoo.hubbard._kernel import KernelModel
    from zoo.hubbard._models import IntersiteModel, OnsiteModel
    from zoo.hubbard._predict import HubbardUV

    for cls in (HubbardUV, HubbardEnsemble, KernelModel, IntersiteModel, OnsiteModel):
        assert issubclass(cls, HubMixin), cls.__name__
    model = HubbardUV.from_pretrained("hubbard-uv")
    assert type(model) is HubbardUV
    shipped = load("hubbard-uv")
    mine, theirs = (
        jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_array)) for m in (model, shipped)
    )
    assert len(mine) == len(theirs) > 0
    assert all(np.array_equal(a, b) for a, b in zip(mine, theirs))
    folder = model.save_pretrained(tmp_path / "uv")
    assert type(HubbardUV.from_pretrained(folder)) is HubbardUV


# ---- the preview caution travels with the weights ----
PREVIEW = "preview weights from a short training run"


def cautions(record) -> list:
    return [w for w in record if PREVIEW in str(w.message)]


def test_caution_of_preview_weights_is_in_their_weights_file():
    from zoo._hub_caution import stored_caution

    for name, entry in _registry.SHIPPED.items():
        stored = stored_caution(_registry.WEIGHTS_DIR / name / "model.safetensors")
        assert stored == entry.caution, name  # "" for the models without one
    assert {m["name"]: m["caution"] for m in list_models()}["sio2-field"].startswith(PREVIEW)
    assert info("sio2-field")["caution"].startswith(PREVIEW)


def test_caution_is_warned_at_the_users_line_by_name_folder_and_hub(tmp_path, hub, monkeypatch):
    from zoo.field import FieldModel

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    copy = tmp_path / "copy"
    shutil.copytree(_registry.WEIGHTS_DIR / "sio2-field", copy)
    push_to_hub(copy, "alice/sio2", token="hf_test")
    loads = {
        "sio2-field": lambda: load("sio2-field"),
        str(copy): lambda: load(copy),
        "alice/sio2": lambda: FieldModel.from_pretrained("alice/sio2", cache_dir=tmp_path / "c"),
    }
    for where, run in loads.items():
        with pytest.warns(UserWarning, match=PREVIEW) as record:
            model = run()
        (warning,) = cautions(record)  # once
        assert str(warning.message).startswith(f"{where}: "), warning.message
        assert warning.filename == __file__, (where, warning.filename)
    # a model re-saved by its user is the user's own: no caution
    mine = model.save_pretrained(tmp_path / "mine")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        load(mine)
    assert cautions(record) == []


def test_write_caution_keeps_every_tensor(tmp_path, models):
    from safetensors.numpy import load_file

    from zoo._hub_caution import stored_caution, write_caution

    folder = save_pretrained(models[0], tmp_path / "m")
    path = folder / "model.safetensors"
    before = load_file(str(path))
    write_caution(path, "made up for a test")
    assert stored_caution(path) == "made up for a test"
    after = load_file(str(path))
    assert sorted(before) == sorted(after)
    assert all(before[k].tobytes() == after[k].tobytes() for k in before)
    with pytest.warns(UserWarning, match=r"m: made up for a test") as record:
        model = load(folder, model_types=TINY_TYPES)
    assert record[0].filename == __file__
    np.testing.assert_array_equal(predict(model), predict(models[0]))
    write_caution(path, "")
    assert stored_caution(path) == ""
    with pytest.raises(ValueError, match="caution must be a str"):
        write_caution(path, None)
    (tmp_path / "plain.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="not a weights file written by e3zoo"):
        write_caution(tmp_path / "plain.safetensors", "x")


# ---- equal models share compiled calls ----
def test_a_reloaded_model_reuses_the_compiled_calls_of_the_same_model(tmp_path, response_model):
    """e3nn-jax's Linear keeps a static FunctionalLinear compared by identity: without
    `zoo._shared_static` a reloaded model would trace and compile every call again."""
    import jax

    from zoo._jax_cache import count_compiles

    response_model.predict(perovskite())
    folder = response_model.save_pretrained(tmp_path / "m")
    first, second = load(folder), load(folder)
    structure = jax.tree_util.tree_structure
    assert structure(first) == structure(second)
    with count_compiles() as count:
        for model in (first, second, response_model):
            model.predict(perovskite())
    assert count.compiles == 0, count
