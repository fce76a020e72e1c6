"""Atomic file writes: a reader (or a killed writer) never sees a half-written file.

Files get the permissions an ordinary ``open()`` would give them (``0o666`` minus the umask),
not ``mkstemp``'s private ``0o600``; folders likewise ``0o777`` minus the umask.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions of a new file under the current umask."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """Permissions of a new folder under the current umask."""
    return 0o777 & ~umask()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path beside `path`, fsync it, then ``os.replace`` it.

    The one writer of the package: the bytes/text/JSON helpers below and every file the CLI,
    training checkpoints and fine-tuning write go through it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        os.close(fd)
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write `data` to `path`."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> None:
    """Atomically write `obj` as key-sorted, strict JSON (NaN refused) with a final newline."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, allow_nan=False) + "\n")


def _unwritable(folder: Path) -> Path | None:
    """The first folder at or below `folder` whose entries cannot be removed, if any."""
    for root, dirs, _ in os.walk(folder):
        if not os.access(root, os.W_OK | os.X_OK):
            return Path(root)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
    return None


def replace_folder(
    target: str | os.PathLike, populate: Callable[[Path, Path | None], None]
) -> Path:
    """Write a folder aside, then swap it into place; returns the real (symlink-free) path.

    ``populate(new, old)`` fills the empty folder `new`; `old` is the existing folder (or None),
    which it may read but must not change. A symlinked `target` is resolved, so the link stays
    and its target folder is replaced. An existing folder is renamed aside, the new one renamed
    in, and the old one removed; every check that could fail runs before the swap, and if the
    swap fails the old folder is put back whole. No temporary folder is left behind.
    """
    real = Path(target).expanduser().resolve()
    if real.exists() and not real.is_dir():
        raise ValueError(f"{real} exists and is not a directory")
    real.parent.mkdir(parents=True, exist_ok=True)
    old = real if real.is_dir() else None
    for folder in [real.parent] + ([] if old is None else [old]):
        locked = _unwritable(folder) if folder is old else (
            None if os.access(folder, os.W_OK | os.X_OK) else folder)  # fmt: skip
        if locked is not None:
            raise PermissionError(f"cannot replace {real}: {locked} is not writable; nothing was "
                                  "changed")  # fmt: skip
    new = Path(tempfile.mkdtemp(dir=real.parent, prefix=f".{real.name}.tmp-"))
    aside = real.parent / f"{new.name.replace('.tmp-', '.old-', 1)}"
    try:
        os.chmod(new, dir_mode())
        populate(new, old)
        if old is None:
            os.rename(new, real)
            return real
        os.rename(real, aside)
        try:
            os.rename(new, real)
        except BaseException:
            os.rename(aside, real)
            raise
        shutil.rmtree(aside)
        return real
    finally:
        shutil.rmtree(new, ignore_errors=True)
