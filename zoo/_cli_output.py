"""`_cli_output`: how ``zoo predict`` shows and writes predictions.

A summary printed per structure, or one output file of all predictions: ``.extxyz``/``.xyz``
(predictions as ``zoo_``-prefixed arrays and info next to the input's own, never overwriting
them), ``.npz`` (``<k>/<key>`` arrays) or ``.json`` (one row per structure, NaN as null).
Files are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT_SUFFIXES = (".extxyz", ".xyz", ".npz", ".json")


def _summarise(value) -> str:
    import numpy as np

    arr = np.asarray(value)
    if arr.dtype.kind in "fc" and arr.size > 1:
        finite = arr[np.isfinite(arr)]
        stats = f"  mean|x| = {np.abs(finite).mean():.4g}" if finite.size else "  (all NaN)"
        return f"array{arr.shape}{stats}"
    if arr.size > 1:
        return f"array{arr.shape} {arr.dtype}"
    return f"{arr.item():.6g}" if arr.dtype.kind in "fc" else repr(arr.item())


def _print_prediction(out: dict, indent: str = "   ") -> None:
    for key, value in out.items():
        if isinstance(value, dict):  # Hubbard: {"U": {"1": eV}, ...}
            shown = ", ".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}"
                              for k, v in list(value.items())[:8])  # fmt: skip
            more = f", ... ({len(value)} in all)" if len(value) > 8 else ""
            unit = " (eV)" if key in ("U", "V") else ""
            print(f"{indent}{key}{unit}: {{{shown}{more}}}")
        else:
            print(f"{indent}{key}: {_summarise(value)}")


def _split_frames(out: dict, sizes: list[int]) -> list[dict]:
    """Per-structure dicts of a batched structure-model prediction."""
    import numpy as np

    n_total = sum(sizes)
    idx = np.repeat(np.arange(len(sizes)), sizes)
    frames = []
    for g in range(len(sizes)):
        part = {}
        for key, value in out.items():
            value = np.asarray(value)
            if key == "structure_index":
                continue
            per_atom = value.ndim >= 1 and value.shape[0] == n_total and "structure_index" in out
            part[key] = value[idx == g] if per_atom else value[g]
        frames.append(part)
    return frames


def _check_output(path: Path, overwrite: bool) -> None:
    if path.suffix not in OUT_SUFFIXES:
        raise ValueError(
            f"output {str(path)!r}: the suffix must be one of {', '.join(OUT_SUFFIXES)}"
        )
    if path.exists() and not overwrite:
        raise ValueError(f"output {str(path)!r} exists; pass --overwrite to replace it")


#: prefix of the predicted arrays/info keys in an output extxyz: the input's own keys (e.g. a
#: reference ``shielding``) are kept next to ``zoo_shielding``, never overwritten
PREFIX = "zoo_"


def _plain(value):
    """JSON-safe: arrays to nested lists, NaN/Inf to None (JSON has no NaN)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "shape") or isinstance(value, np.generic):
        return _plain(np.asarray(value).tolist())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _write_predictions(path: Path, records: list[dict]) -> None:
    """records: ``{"file", "frame", "atoms" (or None), "prediction"}``."""
    import numpy as np

    from ._io import atomic_write, atomic_write_text

    if path.suffix == ".json":
        rows = [{"file": r["file"], "frame": r["frame"], **_plain(r["prediction"])}
                for r in records]  # fmt: skip
        atomic_write_text(path, json.dumps(rows, indent=1, allow_nan=False) + "\n")
        return
    if any(r["atoms"] is None for r in records):
        raise ValueError(f"output {str(path)!r}: Hubbard predictions are written as .json only")
    if path.suffix == ".npz":
        arrays = {}
        for k, r in enumerate(records):
            for key, value in r["prediction"].items():
                arrays[f"{k}/{key}"] = np.asarray(value)
            arrays[f"{k}/file"] = np.asarray(r["file"])

        def savez(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                np.savez(f, **arrays)

        atomic_write(path, savez)
        return
    from ase.io import write

    frames = []
    for r in records:
        atoms = r["atoms"].copy()
        atoms.calc = None
        n = len(atoms)
        taken = sorted(PREFIX + k for k in [*r["prediction"], "source_file"]
                       if PREFIX + k in atoms.arrays or PREFIX + k in atoms.info)  # fmt: skip
        if taken:
            raise ValueError(
                f"{r['file']} (frame {r['frame']}) already has {', '.join(taken)} (an earlier "
                f"prediction?): they are never overwritten; write to .json or .npz instead"
            )
        for key, value in r["prediction"].items():
            value = np.asarray(value)
            if value.ndim >= 1 and value.shape[0] == n:
                atoms.arrays[PREFIX + key] = value.reshape(n, -1) if value.ndim > 2 else value
            else:
                atoms.info[PREFIX + key] = value.reshape(-1) if value.ndim else value.item()
        atoms.info[PREFIX + "source_file"] = r["file"]
        frames.append(atoms)
    atomic_write(path, lambda tmp: write(tmp, frames, format="extxyz"))
