"""Pretrained models: ``load`` by shipped name, Hub repo or folder; ``push_to_hub``.

Follows huggingface_hub's ``ModelHubMixin`` conventions as free functions: a model folder is
config.json + model.safetensors + README.md. Shipped names load from the embedded weights
(offline default); Hub downloads go through ``hf_hub_download`` (its cache, ``HF_HUB_OFFLINE``,
``HF_ENDPOINT``) at a pinned revision and every file is checked against its sha256 pin.
``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are read at call time, not only at import. Getting and
checking the files is `zoo._hub_files`; this module resolves names and builds the models.
"""

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import equinox as eqx
import huggingface_hub as hf

from . import _registry as registry
from ._dtype import cast_floating, resolve_float
from ._hub_caution import warn_caution
from ._hub_files import PathLike, _endpoint, _hub_files, _local_files, _offline, _verify
from ._hub_files import WeightsUnavailableError as WeightsUnavailableError
from ._registry import SHIPPED, ModelTypeEntry
from ._serialization import (
    CARD_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_config_matches_weights,
    load_safetensors,
    make_model_card,
    read_card_metadata,
    read_config,
    save_pretrained,
)
from ._shared_static import share_static
from ._warn import warn

Source = Literal["auto", "embedded", "hub"]
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def _known_names(weights_dir: PathLike | None) -> str:
    available = {m["name"] for m in list_models(weights_dir=weights_dir)}
    return ", ".join(n if n in available else f"{n} (not installed)" for n in SHIPPED)


def _resolve(
    spec: PathLike,
    required: Sequence[str],
    optional: Sequence[str],
    *,
    revision: str | None,
    cache_dir: PathLike | None,
    local_files_only: bool | None,
    source: Source,
    token: str | bool | None,
    endpoint: str | None,
    weights_dir: PathLike | None,
    snapshot: bool = False,
) -> tuple[dict, str]:
    """Paths of the requested files of a model, and a description of where they came from;
    with `snapshot`, a Hub model's other files (card, plots, metrics) are cached too."""
    if source not in ("auto", "embedded", "hub"):
        raise ValueError(f"source must be 'auto', 'embedded' or 'hub', got {source!r}")
    hub = dict(
        cache_dir=cache_dir,
        offline=_offline() if local_files_only is None else bool(local_files_only),
        token=token,
        endpoint=_endpoint(endpoint),
        snapshot=snapshot,
    )
    # A bare shipped name wins over a folder of the same name in the cwd ("./name" for that).
    if isinstance(spec, os.PathLike) or (
        isinstance(spec, str)
        and spec not in SHIPPED
        and source != "hub"
        and Path(spec).expanduser().is_dir()
    ):
        folder = Path(spec).expanduser()
        return _local_files(folder, required, optional), f"folder {folder}"
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"expected a model name, Hub repo id or folder, got {spec!r}")
    if spec in SHIPPED:
        return _resolve_shipped(spec, required, optional, revision, source, weights_dir, hub)
    if spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1:
        raise ValueError(f"no model folder at {spec!r}")
    if not _REPO_ID.fullmatch(spec):
        raise ValueError(
            f"unknown model name {spec!r}; known names: {_known_names(weights_dir)}. "
            "Or pass a Hub repo id 'org/name' or a folder path."
        )
    if source == "embedded":
        raise ValueError(f"source='embedded' needs a shipped name, got Hub repo {spec!r}")
    files = _hub_files(spec, revision, required, optional, {}, **hub)
    return files, f"hub {spec}@{revision or 'main'}"


def _resolve_shipped(
    name: str,
    required: Sequence[str],
    optional: Sequence[str],
    revision: str | None,
    source: Source,
    weights_dir: PathLike | None,
    hub: dict,
) -> tuple[dict, str]:
    entry = SHIPPED[name]
    root = Path(weights_dir) if weights_dir is not None else registry.WEIGHTS_DIR
    folder = root / name
    pinned = revision in (None, entry.revision)
    embedded = source == "embedded" or (source == "auto" and pinned and folder.is_dir())
    if embedded and not pinned:
        raise ValueError(f"embedded {name!r} is revision {entry.revision!r}, not {revision!r}")
    if embedded and not folder.is_dir():
        raise ValueError(
            f"embedded weights of {name!r} are not installed ({folder}); "
            "download them with source='hub'"
        )
    try:
        pins = registry.pins_of(name, root)
    except ValueError as err:
        where = "embedded weights, but" if embedded else f"no embedded weights ({folder}) and"
        raise ValueError(f"{name!r} has {where} {err}") from None
    if embedded:
        files = _local_files(folder, required, optional)
        for file, path in files.items():
            if file not in pins:
                raise ValueError(f"{registry.REGISTRY_NAME} has no sha256 pin of embedded "
                                 f"{name}/{file}; reinstall e3zoo")  # fmt: skip
            fix = "Reinstall e3zoo (maintainers: rerun zoo._registry.write_registry)."
            _verify(path, pins[file], f"embedded {name}/{file}", fix)
        return files, f"embedded {folder}"
    if not pinned:
        warn(f"{name!r} at revision {revision!r} is not the pinned release {entry.revision!r}: "
             "its files are checked only against the sha256 the Hub reports")  # fmt: skip
    rev = revision or entry.revision
    files = _hub_files(entry.repo_id, rev, required, optional, pins if pinned else {}, **hub)
    return files, f"hub {entry.repo_id}@{rev}"


def load_folder_files(
    config_path: PathLike,
    weights_path: PathLike,
    model_types: Mapping[str, ModelTypeEntry] | None = None,
) -> eqx.Module:
    """Rebuild a model from config.json alone, then fill its arrays from the safetensors file."""
    config = read_config(config_path)
    entry = registry.model_class(config["model_type"], model_types)
    # a class's skeleton_from_config (no random draw) if it has one: tracing a random init,
    # even under eval_shape, was most of the load time of the Hubbard models
    build = getattr(entry, "skeleton_from_config", None) or getattr(entry, "from_config", entry)
    check_config_matches_weights(config, weights_path)  # before building: nothing allocated
    try:
        skeleton = eqx.filter_eval_shape(build, config)  # shapes only: no real init cost
    except KeyError as err:
        raise ValueError(f"{config_path}: config.json lacks the key {err.args[0]!r} that a "
                         f"{config['model_type']!r} model needs") from None  # fmt: skip
    if not isinstance(skeleton, eqx.Module):
        raise ValueError(f"{config['model_type']}: from_config returned {type(skeleton).__name__}")
    return load_safetensors(skeleton, weights_path)


def from_pretrained(
    name_or_path: PathLike,
    *,
    revision: str | None = None,
    cache_dir: PathLike | None = None,
    local_files_only: bool | None = None,
    source: Source = "auto",
    model_types: Mapping[str, ModelTypeEntry] | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    weights_dir: PathLike | None = None,
    dtype: str | None = None,
    device: Any = None,
) -> eqx.Module:
    """Load a pretrained model.

    **Arguments:**

    - `name_or_path`: a shipped name (see :func:`list_models`), a Hub repo id ``"org/name"``
      or a model folder.
    - `revision`: Hub branch, tag or commit; shipped names default to their pinned release.
    - `cache_dir`: Hugging Face cache folder (default: huggingface_hub's, ``HF_HUB_CACHE``).
      A Hub model is cached whole (config, weights, card, plots, metrics), every file checked.
    - `local_files_only`: never touch the network; ``None`` follows ``HF_HUB_OFFLINE``.
    - `source`: ``"auto"`` (embedded weights if installed, else the Hub), ``"embedded"``
      or ``"hub"``.
    - `model_types`: extra ``model_type -> class`` entries (e.g. your own model class).
    - `token`, `endpoint`: Hub token and URL (default ``HF_ENDPOINT``).
    - `weights_dir`: where embedded weights live (default: the package's ``weights/``).
    - `dtype`: ``"float32"`` or ``"float64"``: cast every floating weight (and the config's
      ``dtype``) after loading; ``None`` keeps the stored dtype. float64 needs
      ``jax.config.update("jax_enable_x64", True)`` first, else a ValueError (JAX would
      otherwise compute in float32 without a word).
    - `device`: a ``jax.Device`` (e.g. ``jax.devices("gpu")[0]``) to place the weights on;
      ``None`` leaves them on JAX's default device.

    **Returns:** the model, an ``eqx.Module``.
    """
    return _load(
        name_or_path,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        source=source,
        model_types=model_types,
        token=token,
        endpoint=endpoint,
        weights_dir=weights_dir,
        dtype=dtype,
        device=device,
    )


def _load(
    name_or_path: PathLike,
    *,
    model_class: type | None = None,
    model_types: Mapping[str, ModelTypeEntry] | None = None,
    dtype: str | None = None,
    device: Any = None,
    **where: Any,
) -> eqx.Module:
    """`from_pretrained`; with `model_class`, the config's model type must be that class or
    one it derives from, and the model is built as `model_class`."""
    if dtype is not None:
        resolve_float(dtype)  # refuse float64 without x64 before any download
    where = {"revision": None, "cache_dir": None, "local_files_only": None, "source": "auto",
             "token": None, "endpoint": None, "weights_dir": None, **where}  # fmt: skip
    files, _ = _resolve(name_or_path, (CONFIG_NAME, WEIGHTS_NAME), (), snapshot=True, **where)
    if model_class is not None:
        model_type = read_config(files[CONFIG_NAME])["model_type"]
        registered = registry.model_class(model_type)
        if not (isinstance(registered, type) and issubclass(model_class, registered)):
            shown = getattr(registered, "__name__", str(registered))
            raise ValueError(
                f"{name_or_path}: config.json has model_type {model_type!r} ({shown}), not a "
                f"{model_class.__name__}; load it with zoo.load({str(name_or_path)!r})"
            )
        model_types = {model_type: model_class}
    shipped = SHIPPED.get(name_or_path) if isinstance(name_or_path, str) else None
    warn_caution(str(name_or_path), files[WEIGHTS_NAME], shipped.caution if shipped else "")
    model = load_folder_files(files[CONFIG_NAME], files[WEIGHTS_NAME], model_types)
    model = share_static(cast_floating(model, dtype))  # equal models share compiled calls
    return model if device is None else to_device(model, device)


def to_device(model: eqx.Module, device: Any) -> eqx.Module:
    """``model`` with its arrays on ``device`` (a ``jax.Device`` or ``jax.sharding.Sharding``):
    ``jax.device_put`` of the array leaves, the rest of the module kept."""
    import jax

    if not isinstance(device, jax.Device | jax.sharding.Sharding):
        raise ValueError(f"device must be a jax.Device (e.g. jax.devices()[0]), got {device!r}")
    arrays, rest = eqx.partition(model, eqx.is_array)
    return eqx.combine(jax.device_put(arrays, device), rest)


def load(
    name_or_repo_or_path: PathLike,
    revision: str | None = None,
    cache_dir: PathLike | None = None,
    local_files_only: bool | None = None,
    **kwargs: Any,
) -> eqx.Module:
    """``zoo.load("hubbard-uv")``: same as :func:`from_pretrained` (keyword options there,
    e.g. ``dtype="float64"``, ``device=jax.devices()[0]``)."""
    return from_pretrained(
        name_or_repo_or_path,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        **kwargs,
    )


def list_models(weights_dir: PathLike | None = None) -> list[dict]:
    """Shipped models that are installed (``embedded``) or can be downloaded and verified."""
    root = Path(weights_dir) if weights_dir is not None else registry.WEIGHTS_DIR
    pins = registry.read_registry(root)
    models = []
    for name, entry in SHIPPED.items():
        embedded = (root / name / CONFIG_NAME).is_file()
        downloadable = all(f in pins.get(name, {}) for f in (CONFIG_NAME, WEIGHTS_NAME))
        if embedded or downloadable:
            models.append(
                {
                    "name": name,
                    "description": entry.description,
                    "caution": entry.caution,
                    "repo_id": entry.repo_id,
                    "revision": entry.revision,
                    "embedded": embedded,
                    "downloadable": downloadable,
                }
            )
    return models


def info(
    name_or_repo_or_path: PathLike,
    *,
    revision: str | None = None,
    cache_dir: PathLike | None = None,
    local_files_only: bool | None = None,
    source: Source = "auto",
    token: str | bool | None = None,
    endpoint: str | None = None,
    weights_dir: PathLike | None = None,
) -> dict:
    """Card metadata (YAML front matter) and a config summary; options as in from_pretrained."""
    files, origin = _resolve(
        name_or_repo_or_path,
        (CONFIG_NAME,),
        (CARD_NAME,),
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        source=source,
        token=token,
        endpoint=endpoint,
        weights_dir=weights_dir,
    )
    config = read_config(files[CONFIG_NAME])
    scalar = (str, int, float, bool, type(None))
    result = {
        "name": str(name_or_repo_or_path),
        "source": origin,
        "card": read_card_metadata(files[CARD_NAME]) if CARD_NAME in files else {},
        "config": {k: v for k, v in config.items() if isinstance(v, scalar)},
        "config_sections": sorted(k for k, v in config.items() if not isinstance(v, scalar)),
    }
    from .backbones import model_architecture

    if model_architecture(config) is not None:
        result["architecture"] = model_architecture(config)
    entry = SHIPPED.get(str(name_or_repo_or_path))
    if entry is not None:
        result.update(description=entry.description, repo_id=entry.repo_id)
        result.update(revision=entry.revision, caution=entry.caution)
    return result


def push_to_hub(
    model_or_dir: eqx.Module | PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    card: str | None = None,
    endpoint: str | None = None,
) -> Any:
    """Upload a model (saved first) or a model folder; a thin wrapper over ``HfApi``.

    Creates the repo (and the ``revision`` branch) if needed, then ``upload_folder``.
    Returns huggingface_hub's ``CommitInfo``. Tag a release afterwards with
    ``HfApi().create_tag(repo_id, tag="v0.1.0")``.
    """
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    api = hf.HfApi(endpoint=_endpoint(endpoint), token=token)
    if isinstance(model_or_dir, eqx.Module):
        config = getattr(model_or_dir, "config", None)
        if card is None and isinstance(config, dict):
            card = make_model_card(repo_id.split("/")[1], config=config, repo_id=repo_id)
        with tempfile.TemporaryDirectory() as tmp:
            folder = save_pretrained(model_or_dir, Path(tmp) / "model", card=card)
            return _upload(api, folder, repo_id, revision, private, commit_message)
    if card is not None:
        raise ValueError("card= applies when pushing a model; edit README.md in the folder")
    folder = Path(model_or_dir).expanduser()
    _local_files(folder, (CONFIG_NAME, WEIGHTS_NAME), ())
    read_config(folder / CONFIG_NAME)
    return _upload(api, folder, repo_id, revision, private, commit_message)


def _upload(
    api: hf.HfApi,
    folder: Path,
    repo_id: str,
    revision: str | None,
    private: bool | None,
    commit_message: str | None,
) -> Any:
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        revision=revision,
        commit_message=commit_message or "Upload e3zoo model",
        ignore_patterns=[".*"],
    )
