"""Model folders: config.json + model.safetensors + README.md, written and read strictly.

The weights file is `zoo._weights_file` (tensors named by pytree key path; no pickle anywhere),
model cards (README.md) are made and read by `zoo._cards`.
"""

import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx

from ._cards import make_model_card
from ._cards import read_card_metadata as read_card_metadata
from ._io import replace_folder
from ._weights_file import MAX_LISTED, safetensors_metadata, save_safetensors
from ._weights_file import check_config_matches_weights as check_config_matches_weights
from ._weights_file import load_safetensors as load_safetensors
from ._weights_file import model_tensors as model_tensors

#: Version of the model-folder format. A config.json of a newer version, or of another major
#: version, is refused. 1.1: backbones name their ``"architecture"`` (absent in 1.0: NequIP),
#: and bare architectures are saved as ``"potential"`` models.
FORMAT_VERSION = "1.1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
#: safetensors header key of ``{relative name: sha256}`` of the files save_pretrained wrote
#: besides the weights (so an overwrite can tell its own stale files from the user's)
WRITTEN_KEY = "zoo_written_files"


def _check_json_safe(value: Any, where: str) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} = {value!r} is not JSON-safe (non-finite float)")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json_safe(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a str (config must be JSON-safe)")
            _check_json_safe(item, f"{where}[{key!r}]")
        return
    raise ValueError(
        f"{where} is a {type(value).__name__}, not JSON-safe; "
        "use str/int/float/bool/None/list/dict (e.g. a list instead of a tuple)"
    )


def _version(version: Any) -> tuple[int, int] | None:
    """``"1.1"`` -> (1, 1), ``1`` -> (1, 0); None when unreadable."""
    if isinstance(version, int) and not isinstance(version, bool):
        return (version, 0)
    if isinstance(version, str):
        parts = version.split(".")
        if all(p.isdigit() for p in parts[:2]):
            return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
    return None


def check_config(config: Any, where: str = "config") -> dict:
    """Validate a config: a JSON-safe dict with ``model_type`` and a ``zoo_version`` this
    package can read (same major version, not newer than :data:`FORMAT_VERSION`)."""
    if not isinstance(config, dict):
        raise ValueError(f"{where} must be a dict, got {type(config).__name__}")
    _check_json_safe(config, where)
    if not isinstance(config.get("model_type"), str) or not config["model_type"]:
        raise ValueError(f"{where}: 'model_type' must be a non-empty string")
    if "zoo_version" not in config:
        raise ValueError(f"{where}: 'zoo_version' is missing (use {FORMAT_VERSION!r})")
    found, ours = _version(config["zoo_version"]), _version(FORMAT_VERSION) or (0, 0)
    if found is not None and found[0] == ours[0] and found > ours:
        raise ValueError(
            f"{where}: written by format {config['zoo_version']}, newer than the format "
            f"{FORMAT_VERSION} this e3zoo reads; upgrade e3zoo to load it"
        )
    if found is None or found[0] != ours[0]:
        raise ValueError(
            f"{where}: unsupported zoo_version {config['zoo_version']!r}; this e3zoo reads "
            f"format {FORMAT_VERSION} (major {ours[0]}). Install the e3zoo release that wrote "
            "this model, or re-export it with this one."
        )
    return config


def read_config(path: str | os.PathLike) -> dict:
    """Read and validate a config.json; errors name the file."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable config ({err})") from err
    return check_config(config, where=str(path))


def _check_model(model: Any) -> dict:
    if not isinstance(model, eqx.Module):
        raise ValueError(f"model must be an eqx.Module, got {type(model).__name__}")
    if not hasattr(model, "config"):
        raise ValueError(f"{type(model).__name__} has no 'config' field to write to config.json")
    return check_config(model.config, where=f"{type(model).__name__}.config")


def _extra_bytes(extra_files: Mapping[str, Any]) -> dict[str, bytes]:
    """``{relative posix name: content}`` of the extra files, validated before any write."""
    out = {}
    for name, content in extra_files.items():
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"extra_files: {name!r} must be a relative path inside the folder")
        if rel.as_posix() in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME):
            raise ValueError(f"extra_files: {name!r} is written by save_pretrained itself")
        if isinstance(content, str):
            out[rel.as_posix()] = content.encode()
        elif isinstance(content, bytes):
            out[rel.as_posix()] = content
        elif isinstance(content, os.PathLike):
            out[rel.as_posix()] = Path(content).read_bytes()
        else:
            raise ValueError(f"extra_files[{name!r}] must be str, bytes or a path")
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _carry_over(old: Path, new: Path, written: set[str], card_given: bool) -> tuple[list, list]:
    """Copy into `new` the files of `old` a user wrote; return (kept, dropped) names.

    A file is ours, and dropped, when the old weights' header lists it with its current
    sha256 (save_pretrained wrote it and nobody changed it since) or the new save writes it.
    """
    try:
        ours = json.loads(safetensors_metadata(old / WEIGHTS_NAME).get(WRITTEN_KEY, "{}"))
    except json.JSONDecodeError:
        ours = {}
    kept, dropped = [], []
    for path in sorted(old.rglob("*")):
        rel = path.relative_to(old).as_posix()
        if path.is_dir() and not path.is_symlink():
            continue
        replaced = rel in written or (rel == CARD_NAME and card_given)
        if replaced or rel in (CONFIG_NAME, WEIGHTS_NAME):
            continue
        if not path.is_symlink() and ours.get(rel) == _sha(path.read_bytes()):
            dropped.append(rel)
            continue
        (new / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, new / rel, follow_symlinks=False)
        kept.append(rel)
    return kept, dropped


def save_pretrained(
    model: eqx.Module,
    directory: str | os.PathLike,
    *,
    card: str | None = None,
    overwrite: bool = False,
    extra_files: Mapping[str, str | bytes | os.PathLike] | None = None,
) -> Path:
    """Write ``model`` as a model folder: config.json, model.safetensors, README.md.

    **Arguments:**

    - `model`: an eqx.Module with a JSON-safe ``config`` dict (``model_type``, ``zoo_version``),
      or a bare architecture (``zoo.NequIP``, ``zoo.MACE``, ``zoo.Allegro``), saved as a
      :class:`zoo.backbones.Potential` (``zoo.load`` gives energy, forces and stress).
    - `directory`: the folder to write; created if missing. A symlink is followed: the folder
      it points to is replaced and the link kept.
    - `card`: README.md text (see :func:`make_model_card`). ``None`` writes a default card,
      except that a README.md a user wrote or edited is kept (with a warning).
    - `overwrite`: required to write into a non-empty folder. The files an earlier
      save_pretrained wrote there (its card, metrics, plots) are removed unless a user edited
      them; every other file (a user's notes, an edited card) is kept.
    - `extra_files`: ``{relative name: str | bytes | path}`` written beside (metrics, plots).

    **Returns:** the folder path (symlinks resolved).

    Files and folders get the user's umask. The folder is assembled beside the target and
    swapped in by renames: a failure (e.g. a read-only folder) leaves the old folder whole and
    no temporary folder behind.
    """
    from .backbones import Potential, is_backbone

    if is_backbone(model):
        model = Potential.wrap(model)
    config = _check_model(model)
    target = Path(directory).expanduser()
    real = target.resolve()
    if real.exists() and not real.is_dir():
        raise ValueError(f"{target} exists and is not a directory")
    if real.is_dir() and any(real.iterdir()) and not overwrite:
        raise ValueError(f"{target} is not empty; pass overwrite=True to replace the model files")
    extra = _extra_bytes(extra_files or {})
    default = make_model_card(real.name, config=config)
    texts = {CONFIG_NAME: json.dumps(config, sort_keys=True, indent=2, allow_nan=False) + "\n"}
    notes: dict[str, list] = {}

    def populate(new: Path, old: Path | None) -> None:
        kept, dropped = [], []
        if old is not None:
            kept, dropped = _carry_over(old, new, set(extra), card is not None)
        files = {**extra}
        if CARD_NAME not in kept:
            files[CARD_NAME] = (default if card is None else card).encode()
        for rel, data in {**files, CONFIG_NAME: texts[CONFIG_NAME].encode()}.items():
            (new / rel).parent.mkdir(parents=True, exist_ok=True)
            (new / rel).write_bytes(data)
        written = json.dumps({rel: _sha(data) for rel, data in files.items()}, sort_keys=True)
        save_safetensors(model, new / WEIGHTS_NAME, {WRITTEN_KEY: written})
        notes.update(
            kept=kept, dropped=dropped, model=old is not None and (old / CONFIG_NAME).is_file()
        )

    folder = replace_folder(real, populate)
    if CARD_NAME in notes["kept"]:
        warnings.warn(
            f"{folder / CARD_NAME} was written or edited by hand and is kept; it may describe "
            "the previous model: pass card=... to replace it",
            stacklevel=2,
        )
    others = [n for n in notes["kept"] if n != CARD_NAME]
    if others and notes["model"]:
        shown = ", ".join(others[:MAX_LISTED]) + (", ..." if len(others) > MAX_LISTED else "")
        warnings.warn(
            f"{folder}: kept {len(others)} file(s) of the previous folder that save_pretrained "
            f"did not write or that were edited ({shown}); delete them if they describe the "
            "previous model",
            stacklevel=2,
        )
    return folder
