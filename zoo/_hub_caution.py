"""The caution of preview weights, kept in their weights file so that it travels with them.

A shipped model whose validation errors are far above its targets
(`zoo._registry.Pretrained.caution`) carries the same text in the header of its
model.safetensors under :data:`CAUTION_KEY`. Every load of those weights warns it at the
user's line: by shipped name, from a copy of the folder, or from a Hub repo the folder was
pushed to. Re-saving a loaded model writes weights of the user's own, without it.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.numpy import load_file, save

from ._warn import warn
from ._weights_file import safetensors_metadata

#: safetensors header key of the caution text
CAUTION_KEY = "zoo_caution"


def stored_caution(weights: str | os.PathLike) -> str:
    """The caution in the header of a weights file (``""`` for none)."""
    return safetensors_metadata(weights).get(CAUTION_KEY, "")


def warn_caution(where: str, weights: str | os.PathLike, fallback: str = "") -> None:
    """Warn the caution of the weights file (else `fallback`, e.g. the registry's text for
    a shipped name at another revision) as ``"<where>: <caution>"``."""
    caution = stored_caution(weights) or fallback
    if caution:
        warn(f"{where}: {caution}")


def write_caution(weights: str | os.PathLike, caution: str) -> None:
    """Put `caution` in the header of a weights file (``""`` removes it); every tensor and
    every other header entry is kept byte for byte. Maintainers then rerun
    `zoo._registry.write_registry`."""
    if not isinstance(caution, str):
        raise ValueError(f"caution must be a str, got {type(caution).__name__}")
    path = Path(weights)
    metadata = safetensors_metadata(path)
    if not metadata:
        raise ValueError(f"{path}: not a weights file written by e3zoo (no header metadata)")
    tensors = load_file(str(path))
    metadata.pop(CAUTION_KEY, None)
    if caution:
        metadata[CAUTION_KEY] = caution
    path.write_bytes(save(tensors, metadata=metadata))
