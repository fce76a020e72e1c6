"""`_cli_output`: how ``zoo predict`` shows and writes predictions.

A table per structure (per-site values with units, sites numbered 1..N in input order, and a
summary line), or files: ``.extxyz``/``.xyz`` (predictions as ``zoo_``-prefixed arrays and info
next to the input's own, never overwriting them), ``.npz`` (``<k>/<key>`` arrays), ``.json``
(one row per structure, NaN as null), ``.csv`` (per-site scalars) or ``.magres`` (shielding).
Files are written atomically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

OUT_SUFFIXES = (".extxyz", ".xyz", ".npz", ".json", ".csv", ".magres")


#: ``--format`` by the suffix of ``-o`` when no ``--format`` is given
_FORMAT_OF_SUFFIX = {".extxyz": "extxyz", ".xyz": "extxyz", ".npz": "npz", ".json": "json",
                     ".csv": "csv", ".magres": "magres"}  # fmt: skip


def _output_format(args, out: Path | None) -> str:
    if args.format is not None:
        if out is not None and _FORMAT_OF_SUFFIX.get(out.suffix) not in (args.format, None):
            raise ValueError(
                f"output {str(out)!r}: the suffix does not match --format {args.format}"
            )
        return args.format
    if out is None:
        return "table"
    if out.suffix not in _FORMAT_OF_SUFFIX:
        raise ValueError(f"output {str(out)!r}: the suffix must be one of "
                         f"{', '.join(_FORMAT_OF_SUFFIX)} (or give --format)")  # fmt: skip
    return _FORMAT_OF_SUFFIX[out.suffix]


def _plain_records(records: list[dict]) -> list[dict]:
    """Hubbard predictions as plain dicts (with the pair distances) for json/npz writers."""
    out = []
    for r in records:
        pred = r["prediction"]
        if r["kind"] == "hubbard":
            key = lambda k: f"{k[0]}-{k[1]}-{','.join(map(str, k[2]))}"  # noqa: E731
            pred = {**pred.as_dict(), "distances": {key(k): d for k, d in pred.distances.items()}}
        out.append({**r, "prediction": pred})
    return out


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


# ---- human-readable tables (zoo predict --format table, zoo demo) ----
#: how a prediction is shown, by the model's kind (see `model_kind`)
KINDS = ("shielding", "response", "hubbard")
SITE_NOTE = "sites numbered 1..N in the order of the input file"


def model_kind(model) -> str:
    """``"hubbard"`` (answers for pw.x outputs), ``"shielding"`` or ``"response"``."""
    model_type = str(getattr(model, "config", {}).get("model_type", ""))
    if model_type.startswith("hubbard"):
        return "hubbard"
    return "shielding" if model_type == "shielding" else "response"


def parse_reference(text: str | None) -> tuple[float, float] | None | str:
    """``--reference``: ``"slope,offset"`` -> (slope, offset); ``"none"`` -> None (unreferenced);
    no option -> ``"model"`` (the model's own fitted reference)."""
    if text is None:
        return "model"
    if text.strip().lower() == "none":
        return None
    parts = text.split(",")
    try:
        slope, offset = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--reference must be 'slope,offset' (e.g. 0.8745,-455.5) or 'none', "
                         f"got {text!r}") from None  # fmt: skip
    if slope == 0 or not all(map(math.isfinite, (slope, offset))):
        raise ValueError(f"--reference: slope must be non-zero and both finite, got {text!r}")
    return slope, offset


def shift_columns(pred: dict, reference) -> tuple[dict, str]:
    """Per-site isotropic value, span and skew (Herzfeld-Berger) of a shielding prediction under
    ``reference`` (see `parse_reference`), and the unit text of the isotropic column."""
    import numpy as np

    from .nmr import herzfeld_berger

    if reference == "model" and "chemical_shift" in pred:
        cols = {k: np.asarray(pred[k]) for k in ("chemical_shift", "span", "skew")}
        return cols, "ppm vs TMS"
    raw = np.asarray(pred["unreferenced_shift"], dtype=float)
    if reference in (None, "model"):  # no fitted reference in the model: the raw scale
        tensor, unit = raw, "ppm, unreferenced"
    else:
        slope, offset = reference
        tensor = slope * raw + offset * np.eye(3)
        unit = f"ppm, {slope:g} * raw + {offset:g}"
    mask = np.asarray(pred.get("mask", np.isfinite(raw).all(axis=(1, 2))), bool)
    hb = herzfeld_berger(tensor[mask], form="shift")  # only the Si sites: NaN elsewhere
    cols = {}
    for out_key, hb_key in (("chemical_shift", "isotropic"), ("span", "span"), ("skew", "skew")):
        cols[out_key] = np.full(len(raw), np.nan)
        cols[out_key][mask] = hb[hb_key]
    return cols, unit


def site_rows(record: dict, reference="model") -> tuple[list[str], list[list]]:
    """Header and per-site rows of the scalars of one structure (CSV and tables): site
    (1-based), element, then per kind: shift/span/skew (Si sites), Born-charge diagonal."""
    import numpy as np

    pred, atoms, kind = record["prediction"], record["atoms"], record["kind"]
    symbols = atoms.get_chemical_symbols()
    if kind == "shielding":
        cols, unit = shift_columns(pred, reference)
        header = ["site", "element", f"isotropic ({unit})", "span (ppm)", "skew"]
        keep = [i for i in range(len(symbols)) if np.isfinite(cols["chemical_shift"][i])]
        return header, [[i + 1, symbols[i], *(float(cols[k][i]) for k in cols)] for i in keep]
    if "born_charges" not in pred:
        return ["site", "element"], [[i + 1, s] for i, s in enumerate(symbols)]
    z = np.asarray(pred["born_charges"])
    header = ["site", "element", "Z*xx (e)", "Z*yy (e)", "Z*zz (e)"]
    return header, [[i + 1, s, *map(float, np.diagonal(z[i]))] for i, s in enumerate(symbols)]


def hubbard_rows(prediction) -> tuple[list[str], list[list]]:
    """One row per U site and per V pair ("Ni1-O4 (image -1,-1,0)") of a Hubbard prediction."""
    from ase.units import Bohr

    el = prediction.elements  # pw.x pair distances are in Bohr
    header = ["parameter", "sites", "distance (Å)", "value (eV)"]
    rows = [["U", f"{el[i]}{i}", "", u] for i, u in sorted(prediction.U.items())]
    for (i, j, image), v in sorted(prediction.V.items()):
        where = f"{el[i]}{i}-{el[j]}{j} (image {','.join(map(str, image))})"
        rows.append(["V", where, prediction.distances.get((i, j, image), math.nan) * Bohr, v])
    return header, rows


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list], max_rows: int | None = None) -> str:
    shown = rows if max_rows is None or len(rows) <= max_rows else rows[:max_rows]
    cells = [header, *[[_fmt(v) for v in row] for row in shown]]
    widths = [max(len(r[c]) for r in cells) for c in range(len(header))]
    lines = ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    if len(shown) < len(rows):
        lines.append(f"  ... {len(rows) - len(shown)} more row(s) ({len(rows)} in all)")
    return "\n".join(lines)


def _not_predicted(prediction) -> str:
    """``reason: sites i, j`` per distinct reason of the parameters left unpredicted."""
    by_reason: dict[str, list[int]] = {}
    for (i, _, _), why in prediction.not_predicted.items():
        sites = by_reason.setdefault(why, [])
        if i not in sites:
            sites.append(i)
    return "; ".join(f"{why} (site(s) {', '.join(map(str, s))})" for why, s in by_reason.items())


def _matrix(name: str, value, unit: str) -> str:
    import numpy as np

    m = np.asarray(value, dtype=float)
    rows = "\n".join("    [" + "  ".join(f"{x:9.4f}" for x in row) + "]" for row in m)
    return f"  {name} ({unit}):\n{rows}"


def summary_line(record: dict, reference="model") -> str:
    """One line per structure: formula, atoms and the headline numbers with units."""
    import numpy as np

    kind, pred = record["kind"], record["prediction"]
    if kind == "hubbard":
        u, v = list(pred.U.values()), list(pred.V.values())
        parts = [f"{len(u)} U site(s)"] + ([f"U {min(u):.3f}..{max(u):.3f} eV"] if u else [])
        parts += [f"{len(v)} V pair(s)"] + ([f"V {min(v):.3f}..{max(v):.3f} eV"] if v else [])
        return "summary: " + ", ".join(parts)
    atoms = record["atoms"]
    head = f"summary: {atoms.get_chemical_formula()}, {len(atoms)} atoms"
    if kind == "shielding":
        cols, unit = shift_columns(pred, reference)
        iso = cols["chemical_shift"][np.isfinite(cols["chemical_shift"])]
        if not iso.size:
            return f"{head}, no Si site"
        return (f"{head}, {iso.size} Si site(s), isotropic {iso.min():.2f}..{iso.max():.2f} "
                f"(mean {iso.mean():.2f}) {unit}")  # fmt: skip
    parts = [head]
    if "born_charges" in pred:
        z = np.trace(np.asarray(pred["born_charges"]), axis1=-2, axis2=-1) / 3
        symbols = np.array(atoms.get_chemical_symbols())
        means = ", ".join(f"{s} {z[symbols == s].mean():+.3f}" for s in dict.fromkeys(symbols))
        parts.append(f"mean Born charge (trace/3, e): {means}")
    if "dielectric" in pred:
        parts.append(f"eps_inf (trace/3) {np.trace(np.asarray(pred['dielectric'])) / 3:.4f}")
    return "; ".join(parts)


def format_record(record: dict, reference="model", max_rows: int | None = None) -> str:
    """The table of one structure (or pw.x run) as a person reads it, with units; at most
    `max_rows` rows (None: all)."""
    title = f"== {record['file']}" + (f" (frame {record['frame']})" if record["atoms"] else "")
    if record["kind"] == "hubbard":
        out = [title, "  Hubbard parameters (sites numbered as in the pw.x output):",
               _table(*hubbard_rows(record["prediction"]), max_rows)]  # fmt: skip
        if record["prediction"].not_predicted:
            out.append("  not predicted: " + _not_predicted(record["prediction"]))
        return "\n".join([*out, "  " + summary_line(record)])
    header, rows = site_rows(record, reference)
    what = "Si-29 NMR, Herzfeld-Berger" if record["kind"] == "shielding" else "per atom"
    out = [title, f"  {what} ({SITE_NOTE}):", _table(header, rows, max_rows)]
    pred = record["prediction"]
    if "dielectric" in pred:
        out.append(_matrix("dielectric tensor eps_inf", pred["dielectric"], "dimensionless"))
    if "chi2" in pred:
        import numpy as np

        chi = np.asarray(pred["chi2"], dtype=float)
        out.append(f"  chi(2) (pm/V): max |d_ijk| {np.abs(chi).max():.4f}; full tensor in -o json")
    if "raman_tensors" in pred:
        out.append("  Raman tensors (Å^2, per atom, 3x3x3): in -o json / extxyz")
    return "\n".join([*out, "  " + summary_line(record, reference)])


def write_csv(path: Path | None, records: list[dict], reference="model") -> str:
    """Per-site scalars (or Hubbard parameters) of every record as CSV text (written to
    ``path`` atomically when given)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header_done = False
    for r in records:
        header, rows = (
            hubbard_rows(r["prediction"]) if r["kind"] == "hubbard" else site_rows(r, reference)
        )
        if not header_done:
            writer.writerow(["file", "frame", *header])
            header_done = True
        for row in rows:
            writer.writerow([r["file"], r["frame"], *(f"{v:.6g}" if isinstance(v, float) else v
                                                      for v in row)])  # fmt: skip
    text = buffer.getvalue()
    if path is not None:
        from ._io import atomic_write_text

        atomic_write_text(path, text)
    return text


def write_magres(path: Path, records: list[dict]) -> list[Path]:
    """One .magres file per structure of a shielding prediction (``<stem>.<k>.magres`` when
    there are several); none is written if any target exists."""
    from ._magres import write_magres as write_one

    if any(r["kind"] != "shielding" for r in records):
        raise ValueError("--format magres is for NMR shielding models only")
    paths = [path] if len(records) == 1 else [
        path.with_name(f"{path.stem}.{k}{path.suffix}") for k in range(len(records))]  # fmt: skip
    taken = [str(p) for p in paths if p.exists()]
    if taken:
        raise ValueError(f"output {taken[0]!r} exists; nothing was written")
    for p, r in zip(paths, records):
        write_one(p, r["atoms"], r["prediction"])
    return paths
