"""JAX's persistent compilation cache, on by default in a user cache directory.

A model's first prediction compiles one XLA executable per padded shape (seconds to tens of
seconds each); with the persistent cache a new Python process loads them from disk instead.

Where (first match wins):

- a cache directory already configured in JAX (``jax.config.jax_compilation_cache_dir`` or
  ``JAX_COMPILATION_CACHE_DIR``) is left as it is;
- ``ZOO_JAX_CACHE=0`` (or ``false``, ``no``, ``off``, or empty) disables it;
- ``ZOO_JAX_CACHE_DIR`` moves it;
- otherwise ``$XDG_CACHE_HOME/zoo/jax`` (``~/.cache/zoo/jax``; on macOS
  ``~/Library/Caches/zoo/jax``; on Windows ``%LOCALAPPDATA%\\zoo\\cache\\jax``).

It is switched on when a model first predicts (:func:`enable`), not when ``zoo`` is imported.
Every executable is written (JAX's default skips those compiling in under a second, but a
model's first trace runs dozens of small ones). The directory is trusted code: do not share it with
users you do not trust.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator
from pathlib import Path

_OFF = {"0", "false", "no", "off", ""}
#: Executables that compiled faster than this (s) are not written (unless JAX's own
#: ``jax_persistent_cache_min_compile_time_secs`` was changed from its default).
MIN_COMPILE_TIME = 0.0


def default_dir(environ=None) -> Path:
    """The platform's user cache directory for zoo's compiled executables."""
    env = os.environ if environ is None else environ
    if sys.platform == "win32":
        base = Path(env.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "zoo" / "cache" / "jax"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "zoo" / "jax"
    xdg = env.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # XDG: relative = unset
    return base / "zoo" / "jax"


def cache_dir(environ=None) -> Path | None:
    """The directory :func:`enable` would use given `environ` (default ``os.environ``), or
    ``None`` when ``ZOO_JAX_CACHE`` disables it. JAX's own setting is not consulted here."""
    env = os.environ if environ is None else environ
    if env.get("ZOO_JAX_CACHE", "1").strip().lower() in _OFF:
        return None
    moved = env.get("ZOO_JAX_CACHE_DIR")
    if moved is not None:
        if not moved.strip():
            raise ValueError("ZOO_JAX_CACHE_DIR is empty: give a directory, or set ZOO_JAX_CACHE=0")
        return Path(moved).expanduser()
    return default_dir(env)


def enable() -> str | None:
    """Point JAX's persistent compilation cache at :func:`cache_dir` unless JAX already has a
    cache directory or it is disabled. Idempotent. **Returns:** the directory in use, or
    ``None``. An unwritable directory warns and leaves the cache off."""
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if configured:  # the user's own choice (or an earlier call): never overridden
        return configured
    path = cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        import warnings

        warnings.warn(f"zoo: compilation cache off, cannot create {path}: {err}", stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if jax.config.jax_persistent_cache_min_compile_time_secs == 1.0:  # JAX's default: untouched
        # the dozens of small eager ops of a model's first trace add up to seconds too
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME)
    return str(path)


@dataclasses.dataclass
class CompileCount:
    """What XLA did while counting: `compiles` (executables built or loaded) and
    `cache_hits` (of those, loaded from the persistent cache)."""

    compiles: int = 0
    cache_hits: int = 0

    @property
    def fresh(self) -> int:
        """Executables actually compiled (not found in any cache)."""
        return self.compiles - self.cache_hits


@contextlib.contextmanager
def count_compiles() -> Iterator[CompileCount]:
    """Count XLA compilations in the block (a jit cache hit in memory is not one)."""
    import jax.monitoring as monitoring

    count = CompileCount()

    def on_duration(event: str, _secs: float, **_kw) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            count.compiles += 1

    def on_event(event: str, **_kw) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            count.cache_hits += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)
    try:
        yield count
    finally:
        monitoring.unregister_event_duration_listener(on_duration)
        monitoring.unregister_event_listener(on_event)
