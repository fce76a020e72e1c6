"""Static tables: model types -> classes, shipped pretrained names -> Hub repos, sha256 pins.

Nothing here imports a dotted path read from a user's file: a config.json names a
``model_type``, which is looked up in :data:`MODEL_TYPES` (internal import strings) or in
a ``model_types`` mapping passed by the caller's own code.
"""

import hashlib
import importlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._io import atomic_write_json

#: Embedded weights (package data; the top-level ``weights/`` links here).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: sha256 pins of every embedded model folder, written by :func:`write_registry`.
REGISTRY_NAME = "registry.json"
REGISTRY_FORMAT = 1

# model_type (config.json) -> "module:Class" inside the zoo package. The class must have a
# ``from_config(config: dict) -> eqx.Module`` classmethod; an optional
# ``skeleton_from_config`` (same shapes, no random init) is what the loader uses if present.
MODEL_TYPES: dict[str, str] = {
    "response": "zoo.model:ResponseModel",
    "shielding": "zoo.shielding:ShieldingModel",
    "potential": "zoo.backbones:Potential",
    "hubbard-onsite": "zoo.hubbard._models:OnsiteModel",
    "hubbard-intersite": "zoo.hubbard._models:IntersiteModel",
    "hubbard-uv": "zoo.hubbard._predict:HubbardUV",
    "hubbard-ensemble": "zoo.hubbard._ensemble:HubbardEnsemble",
    "hubbard-kernel": "zoo.hubbard._kernel:KernelModel",
    "field": "zoo.field:FieldModel",
}

#: A model_types override maps a type to a class with ``from_config``, a builder
#: ``config -> Module``, or an import string "module:Class".
ModelTypeEntry = type | Callable[[dict], Any] | str


@dataclass(frozen=True)
class Pretrained:
    """A shipped pretrained model: its Hub repo and the pinned release revision; `caution`
    (warned on every load) when its card reports errors far above its targets."""

    name: str
    repo_id: str
    revision: str
    description: str
    caution: str = ""


def _shipped(name: str, description: str, caution: str = "") -> Pretrained:
    # "v0.1.0" is the tag created when publishing; the sha256 pins fix the content.
    return Pretrained(name, f"e3zoo/{name}", "v0.1.0", description, caution)


_SHORT_TRAINING = (
    "preview weights from a short training run: validation errors are {} the published "
    "targets (forces ~{} meV/Å); fine for testing workflows, not for production MD or "
    "quantitative response (see its card)"
)


SHIPPED: dict[str, Pretrained] = {
    p.name: p
    for p in (
        _shipped(
            "batio3-response", "BaTiO3: Born charges, Raman tensors, dielectric tensor, chi(2)"
        ),
        _shipped("si29-shielding", "29Si NMR chemical shielding tensors"),
        _shipped("hubbard-u", "Hubbard U (on-site) from DFT+U occupations"),
        _shipped("hubbard-v", "Hubbard V (inter-site) from DFT+U+V occupations"),
        _shipped("hubbard-uv", "Hubbard U and V from DFT+U+V occupations"),
        _shipped(
            "batio3-field",
            "BaTiO3 potential under an electric field: E, F, P, Z, alpha (preview)",
            _SHORT_TRAINING.format("7-17x", 260),
        ),
        _shipped(
            "sio2-field",
            "alpha-SiO2 potential under an electric field: E, F, P, Z, alpha (preview)",
            _SHORT_TRAINING.format("3-9x", 220),
        ),
    )
}


def shipped(name: str) -> Pretrained:
    """The :class:`Pretrained` entry of a shipped name; ValueError listing the known names."""
    if name not in SHIPPED:
        raise ValueError(f"unknown pretrained model {name!r}; known names: {', '.join(SHIPPED)}")
    return SHIPPED[name]


def _import(spec: str) -> Any:
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"model type entry {spec!r} must look like 'package.module:Class'")
    return getattr(importlib.import_module(module), attr)


def model_class(
    model_type: str, model_types: Mapping[str, ModelTypeEntry] | None = None
) -> ModelTypeEntry:
    """The class (or builder) registered for ``model_type``.

    **Arguments:**

    - `model_type`: the ``"model_type"`` string of a config.json.
    - `model_types`: extra entries from the caller's code, consulted before :data:`MODEL_TYPES`.

    **Returns:** a class with ``from_config`` or a callable ``config -> Module``.
    """
    table: dict[str, ModelTypeEntry] = {**MODEL_TYPES, **(model_types or {})}
    if not isinstance(model_type, str) or model_type not in table:
        known = ", ".join(sorted(table)) or "(none registered yet)"
        raise ValueError(f"config.json: unknown model_type {model_type!r}; known types: {known}")
    entry = table[model_type]
    if isinstance(entry, str):
        entry = _import(entry)
    if not callable(getattr(entry, "from_config", entry)):
        raise ValueError(f"model type {model_type!r}: {entry!r} has no from_config(config)")
    return entry


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_blob_sha1(path: str | os.PathLike) -> str:
    """The git object id of a file, which the Hub reports as the ETag of a non-LFS file."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def matches_etag(path: str | os.PathLike, etag: str) -> bool | None:
    """Whether a file's content is what a Hub ETag names: the sha256 of an LFS file (64 hex),
    the git blob sha1 of a small file (40 hex). None when the ETag is neither."""
    etag = etag.strip().removeprefix("W/").strip('"').lower()
    if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag):
        return sha256_file(path) == etag
    if len(etag) == 40 and all(c in "0123456789abcdef" for c in etag):
        return git_blob_sha1(path) == etag
    return None


def _folder_files(folder: Path) -> list[Path]:
    """Non-hidden regular files below ``folder``, sorted by relative path."""
    files = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith((".", "__")) for part in rel.parts):
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def write_registry(weights_dir: str | os.PathLike | None = None) -> dict:
    """Hash every model folder (a subfolder with config.json) into ``weights_dir/registry.json``.

    Run after adding or retraining embedded weights; the Hub copies must be byte-identical.
    The file is replaced atomically. Returns the registry dict that was written.
    """
    root = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    if not root.is_dir():
        raise ValueError(f"weights_dir {str(root)!r} is not a directory")
    models = {}
    for folder in sorted(p for p in root.iterdir() if (p / "config.json").is_file()):
        models[folder.name] = {
            "files": {
                path.relative_to(folder).as_posix(): {
                    "sha256": sha256_file(path),
                    "size": path.stat().st_size,
                }
                for path in _folder_files(folder)
            }
        }
    registry = {"format": REGISTRY_FORMAT, "models": models}
    atomic_write_json(root / REGISTRY_NAME, registry)
    return registry


def pins_of(name: str, weights_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """The sha256 pins of one shipped name; ValueError if registry.json or the name is missing.

    Every shipped name must be pinned: without a pin, tampered or corrupted weights (or a
    config.json edited to other sizes, another cutoff or species order) would load unchecked.
    """
    root = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    path = root / REGISTRY_NAME
    if not path.is_file():
        raise ValueError(f"{path} is missing, so {name!r} cannot be checked; reinstall e3zoo")
    pins = read_registry(root).get(name)
    if not pins or not {"config.json", "model.safetensors"} <= set(pins):
        raise ValueError(f"{path} has no sha256 pins of {name!r} (config.json and "
                         "model.safetensors); reinstall e3zoo (maintainers: write_registry)")  # fmt: skip
    return pins


def read_registry(weights_dir: str | os.PathLike | None = None) -> dict[str, dict[str, str]]:
    """The sha256 pins ``{name: {filename: sha256}}``; empty if no registry.json exists
    (listing only: loading a shipped name uses :func:`pins_of`, which refuses that)."""
    path = (Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR) / REGISTRY_NAME
    if not path.is_file():
        return {}
    try:
        registry = json.loads(path.read_text())
        if registry.get("format") != REGISTRY_FORMAT:
            raise ValueError(f"format {registry.get('format')!r}, expected {REGISTRY_FORMAT}")
        return {
            name: {file: meta["sha256"] for file, meta in entry["files"].items()}
            for name, entry in registry["models"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(
            f"{path}: unreadable weights registry ({err}); regenerate it with "
            "zoo._registry.write_registry(weights_dir)"
        ) from err
