"""The ``zoo`` command line: ``list | info | demo | predict | train | finetune | evaluate``.

Every subcommand has ``--help``; errors print one line to stderr and exit with status 1
(usage errors: status 2). No existing file is overwritten without ``--overwrite``. How
predictions are printed and written is `zoo._cli_output`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._cli_output import OUT_SUFFIXES as OUT_SUFFIXES
from ._cli_output import PREFIX as PREFIX
from ._cli_output import (
    _check_output,
    _output_format,
    _plain,
    _plain_records,
    _split_frames,
    _write_predictions,
    format_record,
    model_kind,
    parse_reference,
    write_csv,
    write_magres,
)
from ._cli_train import _cmd_evaluate, _cmd_finetune, _cmd_train

EXAMPLES = Path(__file__).parent / "examples"


# ---- helpers ----
def _is_pw_model(model) -> bool:
    """Hubbard models answer for a pw.x output, the others for structures."""
    return model_kind(model) == "hubbard"


def _read_frames(path: Path, input_format: str | None = None) -> list:
    from ase.io import read

    if not path.is_file():
        raise ValueError(f"no such input file {str(path)!r}")
    try:
        frames = read(path, index=":", format=input_format)
    except Exception as err:  # ASE raises many types for unreadable files
        hint = ""
        if "Program PWSCF" in path.read_text(errors="replace")[:5000]:
            hint = "; ASE cannot read this pw.x output (for Hubbard U/V: zoo predict hubbard-uv)"
        raise ValueError(f"cannot read {str(path)!r} ({type(err).__name__}: {err}){hint}") from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise ValueError(f"{str(path)!r} holds no structure")
    return frames


def _sidecar(path: Path, suffix: str) -> Path | None:
    for candidate in (path.with_suffix(suffix), path.parent / suffix.lstrip(".")):
        if candidate.is_file():
            return candidate
    return None


def _predict_pw(model, path: Path, occup: str | None, labels: str | None) -> dict:
    if not hasattr(model, "predict"):
        raise ValueError(
            f"{model.config['model_type']} predicts from occupation features only; for a pw.x "
            "output use the combined model: zoo predict hubbard-uv FILE"
        )
    if not path.is_file():
        raise ValueError(f"no such input file {str(path)!r}")
    occ = Path(occup) if occup else _sidecar(path, ".occup.txt")
    if labels is None and (side := _sidecar(path, ".labels.txt")) is not None:
        labels = side.read_text()
    kwargs = {"occup": occ} if occ is not None else {}
    if labels is not None:
        kwargs["labels"] = labels.replace(",", " ").split()
    try:
        return model.predict(path, **kwargs)
    except (UnicodeDecodeError, IndexError) as err:
        raise ValueError(f"cannot read {str(path)!r} as a pw.x output ({err})") from None


def _predict_structures(model, atoms_list: list, batch_size: int) -> list[dict]:
    """The one place the CLI calls a structure model: all structures at once, split back."""
    out = model.predict(atoms_list, batch_size=batch_size)
    return _split_frames(out, [len(a) for a in atoms_list])


def _predict_files(model, files: list[Path], args) -> list[dict]:
    """Records ``{file, frame, atoms (None for pw.x runs), prediction, kind}``."""
    kind = model_kind(model)
    if kind == "hubbard":
        return [{"file": str(f), "frame": 0, "atoms": None, "kind": kind,
                 "prediction": _predict_pw(model, f, args.occup, args.labels)} for f in files]  # fmt: skip
    fmt = getattr(args, "input_format", None)
    frames = [(f, k, atoms) for f in files for k, atoms in enumerate(_read_frames(f, fmt))]
    parts = _predict_structures(model, [a for _, _, a in frames], args.batch_size)
    return [{"file": str(f), "frame": k, "atoms": a, "prediction": p, "kind": kind}
            for (f, k, a), p in zip(frames, parts)]  # fmt: skip


# ---- commands ----
def _cmd_list(args) -> int:
    from . import _registry as registry

    pins = registry.read_registry()
    width = max(len(n) for n in registry.SHIPPED)
    print(f"{'name':<{width}}  {'status':<13}  description")
    for name, entry in registry.SHIPPED.items():
        if (registry.WEIGHTS_DIR / name / "config.json").is_file():
            status = "installed"
        elif {"config.json", "model.safetensors"} <= set(pins.get(name, {})):
            status = "downloadable"
        else:
            status = "not installed"
        print(f"{name:<{width}}  {status:<13}  {entry.description}")
    print("\nzoo info NAME: details; zoo demo: predictions on bundled examples; in Python: "
          "zoo.load(NAME)")  # fmt: skip
    return 0


def _cmd_info(args) -> int:
    from .hub import info

    print(json.dumps(info(args.name), indent=2, sort_keys=True, default=str))
    return 0


def _example_folder(name: str, kind: str) -> Path:
    """``examples/<name>``; the Hubbard models (U, V and U+V) share ``examples/hubbard-uv``."""
    folder = EXAMPLES / name
    return folder if folder.is_dir() or kind != "hubbard" else EXAMPLES / "hubbard-uv"


def _example_inputs(folder: Path, pw: bool) -> list[Path]:
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    files = [p for p in files if p.suffix not in (".md", ".json")]  # provenance notes
    return [p for p in files if p.suffix == ".out"] if pw else files


def _cmd_demo(args) -> int:
    from . import _registry as registry
    from .hub import load

    ran = 0
    for name in registry.SHIPPED:
        if not (registry.WEIGHTS_DIR / name / "config.json").is_file():
            print(f"== {name}: not installed, skipped")
            continue
        model = load(name)
        kind = model_kind(model)
        folder = _example_folder(name, kind)
        inputs = _example_inputs(folder, kind == "hubbard")
        print(f"#### {name}: {len(inputs)} example input(s) in {folder}")
        if not inputs:
            print(f"   no example input for {name}")
        ns = argparse.Namespace(occup=None, labels=None, batch_size=8, input_format=None)
        for record in _predict_files(model, inputs, ns):
            record["file"] = Path(record["file"]).name
            print(format_record(record, max_rows=12))
        ran += 1
    if not ran:
        print("no shipped weights are installed: nothing to demonstrate")
        return 1
    return 0


def _cmd_predict(args) -> int:
    from .hub import load

    out = Path(args.output) if args.output else None
    fmt = _output_format(args, out)
    if out is not None and out.exists() and not args.overwrite:
        raise ValueError(f"output {str(out)!r} exists; pass --overwrite to replace it")
    if fmt in ("extxyz", "npz", "magres") and out is None:
        raise ValueError(f"--format {fmt} writes a file: give -o FILE")
    reference = parse_reference(args.reference)
    files = [Path(f) for f in args.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"no such input file {missing[0]!r}")
    model = load(args.name)
    kind = model_kind(model)
    if kind == "hubbard" and fmt in ("extxyz", "npz", "magres"):
        raise ValueError(f"Hubbard predictions are written as table, json or csv, not {fmt}")
    if kind != "hubbard" and (args.occup or args.labels):
        raise ValueError("--occup and --labels are for Hubbard models (pw.x outputs) only")
    if kind != "shielding" and (args.reference is not None or fmt == "magres"):
        raise ValueError("--reference and --format magres are for NMR shielding models only")
    if kind == "hubbard" and args.input_format:
        raise ValueError("--input-format is for structure files; Hubbard models read pw.x outputs")
    records = _predict_files(model, files, args)
    if fmt == "table":
        text = "\n".join(format_record(r, reference) for r in records)
    elif fmt == "csv":
        text = write_csv(out, records, reference)
    elif fmt == "magres":
        written = write_magres(out, records)
        text = None
        print(f"wrote {len(written)} magres file(s): {', '.join(map(str, written))}")
    elif fmt == "json" and out is None:
        rows = [{"file": r["file"], "frame": r["frame"], **_plain(r["prediction"])}
                for r in _plain_records(records)]  # fmt: skip
        text = json.dumps(rows, indent=1, allow_nan=False)
    else:
        _check_output(out, True)
        _write_predictions(out, _plain_records(records))
        text = None
        print(f"wrote {len(records)} prediction(s) to {out}")
    if text is not None and out is None:
        print(text)
    elif text is not None:
        if fmt == "table":
            from ._io import atomic_write_text

            atomic_write_text(out, text + "\n")
        print(f"wrote {len(records)} prediction(s) to {out}")
    return 0


# ---- parser ----
def _add_model_and_out(p, what: str) -> None:
    p.add_argument("name", help="shipped model name (zoo list), Hub repo id or model folder")
    p.add_argument("data", help="labelled structures: extxyz (per-atom labels in arrays, "
                   "global ones in info, named like the outputs)")  # fmt: skip
    p.add_argument("-o", "--output", help=f"output folder (default: ./{what}-NAME)")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty output folder")
    p.add_argument("--batch-size", type=int, default=4, help="structures per batch (default 4)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo", description="E(3)-equivariant model zoo: Born charges, Raman tensors, "
        "NMR shielding, Hubbard U/V. Errors exit with status 1.",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="the shipped models and whether they are installed")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("info", help="model card metadata and config summary of a model")
    p.add_argument("name", help="shipped name, Hub repo id or local folder")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("demo", help="predict with every installed model on its bundled examples")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("predict", help="predict on structure files (or pw.x outputs for Hubbard)",
                       description="Predict with a model. Structure models read any "
                       "ASE-readable file (every frame); Hubbard models read a pw.x output "
                       "with its occup.txt. Prints a per-site table with units (sites "
                       "numbered 1..N in input order) and a summary line per structure.")  # fmt: skip
    p.add_argument("name", help="shipped model name (zoo list), Hub repo id or model folder")
    p.add_argument("files", nargs="+", help="input files")
    p.add_argument("-o", "--output", help="write to a file (.extxyz/.xyz, .npz, .json, .csv, "
                   ".magres; the format follows the suffix unless --format is given)")  # fmt: skip
    p.add_argument("--format", choices=("table", "json", "csv", "extxyz", "npz", "magres"),
                   help="table (default on screen), json, csv (per-site scalars), extxyz, npz "
                   "(with -o), magres (shielding models, with -o)")  # fmt: skip
    p.add_argument("--reference", help="shielding models: the shift reference as "
                   "'slope,offset' (delta = slope * raw + offset, ppm) or 'none' for the "
                   "unreferenced output (default: the model's fitted reference to TMS)")  # fmt: skip
    p.add_argument("--input-format", help="ASE format of the input files (passed to "
                   "ase.io.read), e.g. vasp, espresso-in, cif; default: from the file name")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--batch-size", type=int, default=8, help="structures per batch (default 8)")
    p.add_argument("--occup", help="Hubbard: the run's occup.txt (default: FILE's "
                   "<stem>.occup.txt or occup.txt beside it)")  # fmt: skip
    p.add_argument("--labels", help="Hubbard: QE species label of every atom, e.g. "
                   "'Mn1,Mn2,O,O' (default: <stem>.labels.txt beside FILE)")  # fmt: skip
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("train", help="run a training recipe (the package's recipes/ or a file)",
                       description="Run main(ARGS) of a training recipe: RECIPE is a name in the "
                       "recipes/ folder installed with zoo (never the current directory's), or "
                       "the path of a .py file. ARGS go to the recipe (zoo train RECIPE --help).")  # fmt: skip
    p.add_argument("recipe", help="recipe name (batio3_response, si29_shielding, hubbard_uv) "
                   "or a recipe file path, e.g. ./my_recipe.py")  # fmt: skip
    p.add_argument("recipe_args", nargs=argparse.REMAINDER, help="arguments for the recipe")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("finetune", help="fine-tune a model on your labelled structures",
                       description="Fine-tune (zoo.finetune) and write model/, metrics.json "
                       "and parity plots to the output folder.")  # fmt: skip
    _add_model_and_out(p, "finetune")
    p.add_argument("--epochs", type=int, help="training epochs (default 30)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 2e-3, cosine)")
    p.add_argument("--freeze-trunk", action="store_true", help="train only the heads")
    p.add_argument("--heads", help="outputs of the new model, e.g. born_charges,dielectric")
    p.add_argument("--reset-heads", help="head modules to re-initialise")
    p.add_argument("--new-species", help="elements to add, e.g. Sr,Ca")
    p.add_argument("--split", type=float, default=0.2, help="validation fraction (default 0.2)")
    p.add_argument("--seed", type=int, help="seed of the split and the training (default 0)")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("evaluate", help="metrics and parity plots of a model on labelled data")
    _add_model_and_out(p, "evaluate")
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zoo`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, KeyError, FloatingPointError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"zoo {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
