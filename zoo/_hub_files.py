"""`_hub_files`: getting a model's files, checked, from a folder or the Hugging Face Hub.

Hub downloads go through ``hf_hub_download`` (its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``,
both read at call time); every downloaded file is checked against the sha256 (LFS) or git sha1
ETag the Hub reports, a bad copy is evicted from the cache and fetched once more, and files with
a pin are checked against it. Failures raise `WeightsUnavailableError` with the fix.
"""

import importlib.metadata
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import huggingface_hub as hf
from huggingface_hub import constants
from huggingface_hub import errors as hf_errors

from . import _registry as registry

PathLike = str | os.PathLike
_TRUE = {"1", "ON", "YES", "TRUE"}


class WeightsUnavailableError(OSError):
    """Model files could not be obtained: offline with an empty cache, Hub unreachable, 404."""

    __module__ = "zoo.hub"  # its public home, as tracebacks and the docs name it


def _version() -> str:
    try:
        return importlib.metadata.version("e3zoo")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _offline() -> bool:
    env = os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE
    return env or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _endpoint(endpoint: str | None) -> str:
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection/timeout errors of whichever HTTP client huggingface_hub uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, attr in (("httpx2", "TransportError"), ("httpx", "TransportError")):
        cls = getattr(sys.modules.get(module), attr, None)
        if isinstance(cls, type):
            errors.append(cls)
    requests = sys.modules.get("requests")
    if requests is not None:
        errors.append(requests.ConnectionError)
    return tuple(errors)


def _download(
    repo_id: str,
    filename: str,
    *,
    revision: str | None,
    cache_dir: PathLike | None,
    offline: bool,
    token: str | bool | None,
    endpoint: str,
    optional: bool = False,
) -> Path | None:
    """One file through the Hugging Face cache; our errors say what failed and the fix."""
    where = f"{filename!r} of {repo_id!r} at revision {revision or 'main'!r}"
    cache = cache_dir or constants.HF_HUB_CACHE
    try:
        cached = hf.try_to_load_from_cache(repo_id, filename, cache_dir, revision)
        if not offline and not isinstance(cached, str):
            # One HEAD without retries first: fail fast (and with our message) instead of
            # huggingface_hub's ~20 s of backoff when nothing is cached and the Hub is down.
            url = hf.hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
            hf.get_hf_file_metadata(url, token=token, endpoint=endpoint)
        path = hf.hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=offline,
            token=token,
            endpoint=endpoint,
            library_name="e3zoo",
            library_version=_version(),
        )
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled) as err:
        if offline or _offline():
            raise WeightsUnavailableError(
                f"offline (HF_HUB_OFFLINE=1 or local_files_only=True) and {where} is not in "
                f"the Hugging Face cache ({cache}). Fix: run once with network access (unset "
                "HF_HUB_OFFLINE) to fill the cache, or load a model folder by path."
            ) from err
        raise _unreachable(where, endpoint, cache, err) from err
    except hf_errors.RepositoryNotFoundError as err:
        raise WeightsUnavailableError(
            f"Hub repo {repo_id!r} not found at {endpoint} (if it is private or gated, pass "
            "token=...)"
        ) from err
    except hf_errors.RevisionNotFoundError as err:
        raise WeightsUnavailableError(
            f"revision {revision!r} not found in Hub repo {repo_id!r} at {endpoint}"
        ) from err
    except hf_errors.EntryNotFoundError as err:
        if optional:
            return None
        raise WeightsUnavailableError(
            f"{where} not found at {endpoint}: is it an e3zoo model repo?"
        ) from err
    except hf_errors.HfHubHTTPError as err:
        raise WeightsUnavailableError(f"Hub error while downloading {where}: {err}") from err
    except _transport_errors() as err:
        raise _unreachable(where, endpoint, cache, err) from err
    return Path(path)


def _unreachable(where: str, endpoint: str, cache: Any, err: BaseException) -> OSError:
    return WeightsUnavailableError(
        f"cannot download {where} from {endpoint} ({type(err).__name__}: {err}) and it is not in "
        f"the Hugging Face cache ({cache}). Fix: check the network and HF_ENDPOINT, or load a "
        "model folder by path."
    )


def _verify(path: Path, expected: str, what: str, fix: str) -> None:
    found = registry.sha256_file(path)
    if found != expected:
        raise ValueError(
            f"sha256 mismatch for {what}: expected {expected}, found {found} ({path}); the file "
            f"was not used. {fix}"
        )


def _local_files(folder: Path, required: Sequence[str], optional: Sequence[str]) -> dict:
    if not folder.is_dir():
        raise ValueError(f"no model folder at {str(folder)!r}")
    for name in required:
        if not (folder / name).is_file():
            raise ValueError(f"{folder} is not a model folder: {name} is missing")
    names = [*required, *(n for n in optional if (folder / n).is_file())]
    return {name: folder / name for name in names}


def _hub_etag(path: Path, repo_id: str, filename: str, revision: str | None, hub: dict) -> str:
    """The ETag the Hub reported for a cached file: the name of its blob in the cache (where
    huggingface_hub stores it), else asked again from the Hub."""
    blob = path.resolve()
    if blob.parent.name == "blobs":
        return blob.name
    if not hub["offline"]:
        url = hf.hf_hub_url(repo_id, filename, revision=revision, endpoint=hub["endpoint"])
        meta = hf.get_hf_file_metadata(url, token=hub["token"], endpoint=hub["endpoint"])
        if meta.etag:
            return meta.etag
    raise ValueError(f"{path}: no ETag from the Hub to check {filename!r} of {repo_id!r} against")


def _evict(path: Path) -> None:
    """Remove a cached file: its snapshot link and the blob it points to."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)


def _fetch_checked(
    repo_id: str, filename: str, revision: str | None, optional: bool, hub: dict
) -> Path | None:
    """Download (or take from the cache) one file whose bytes match the sha256 (LFS) or git
    sha1 the Hub reports; a mismatching copy is removed from the cache and fetched once more."""
    for attempt in (1, 2):
        path = _download(repo_id, filename, revision=revision, optional=optional, **hub)
        if path is None:
            return None
        etag = _hub_etag(path, repo_id, filename, revision, hub)
        ok = registry.matches_etag(path, etag)
        if ok is None:
            raise ValueError(f"{filename!r} of {repo_id!r}: the Hub's ETag {etag!r} is neither a "
                             "sha256 nor a git sha1, so the download cannot be checked")  # fmt: skip
        if ok:
            return path
        _evict(path)
        if hub["offline"] or attempt == 2:
            again = "" if hub["offline"] else " twice"
            raise ValueError(
                f"{filename!r} of {repo_id!r} at revision {revision or 'main'!r}: the bytes "
                f"received{again} do not match the sha256 the Hub reports ({etag}); the bad copy "
                "was removed from the cache. Retry with network access; if it persists, the "
                "download is being altered on the way (proxy?)"
            )
    return None


def _hub_files(
    repo_id: str,
    revision: str | None,
    required: Sequence[str],
    optional: Sequence[str],
    pins: Mapping[str, str],
    *,
    snapshot: bool = False,
    **hub: Any,
) -> dict:
    """The requested files, checked; with `snapshot`, every other file of the repo at the same
    commit is cached and checked too (the card and plots a Hub page shows)."""
    files = {}
    for name in [*required, *optional]:
        path = _fetch_checked(repo_id, name, revision, name in optional, hub)
        if path is None:
            continue
        if name in pins:
            _verify(path, pins[name], f"{repo_id}@{revision}/{name}",
                    "The Hub copy differs from the pinned release.")  # fmt: skip
        files[name] = path
    if snapshot and files:
        _snapshot(repo_id, next(iter(files.values())).parent, pins, hub)
    return files


def _snapshot(repo_id: str, folder: Path, pins: Mapping[str, str], hub: dict) -> None:
    """Cache every file of the repo at the commit of ``folder`` (a ``snapshots/<commit>`` folder
    of the cache), each checked like the model files (ETag, then its pin if it has one).
    Offline, the files already cached are checked."""
    commit = folder.name
    if hub["offline"]:
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    else:
        try:
            info = hf.HfApi(endpoint=hub["endpoint"], token=hub["token"]).model_info(
                repo_id, revision=commit
            )
        except (hf_errors.HfHubHTTPError, *_transport_errors()) as err:
            raise WeightsUnavailableError(
                f"cannot list the files of {repo_id!r} at commit {commit} "
                f"({type(err).__name__}: {err}). Retry, or pass local_files_only=True"
            ) from err
        names = sorted(s.rfilename for s in info.siblings or () if not s.rfilename.startswith("."))
    for name in names:
        path = _fetch_checked(repo_id, name, commit, False, hub)
        if name in pins:
            _verify(path, pins[name], f"{repo_id}@{commit}/{name}",
                    "The Hub copy differs from the pinned release.")  # fmt: skip
