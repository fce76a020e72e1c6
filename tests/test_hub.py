"""Download path against a local Hub server, through the real huggingface_hub client.

Nothing inside huggingface_hub is mocked. ``HF_ENDPOINT`` is set with monkeypatch: zoo.hub
reads it at call time and passes ``endpoint=`` to huggingface_hub (whose own constant is read
at import). ``HF_HUB_OFFLINE`` is likewise read by zoo.hub at call time and turned into
``local_files_only=True``. Every test uses its own cache folder.
"""

import shutil
import time

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
            "repo_id": REPO,
            "revision": "v0.1.0",
            "embedded": False,
            "downloadable": True,
        }
    ]
    model = load(NAME, **opts(tmp_path, weights))
    np.testing.assert_array_equal(predict(model), predict(models[0]))
    paths = {path for _, path in resolves(hub)}
    assert paths == {f"/{REPO}/resolve/v0.1.0/{f}" for f in ("config.json", "model.safetensors")}
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
