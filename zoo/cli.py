"""The ``zoo`` command line: ``zoo list | info NAME | demo``.

Every subcommand has ``--help``; errors print one line to stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent / "examples"


def _cmd_list(args) -> int:
    from .hub import list_models

    rows = list_models()
    if not rows:
        print("no models are registered")
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        where = "embedded" if r.get("embedded") else "hub only"
        print(f"{r['name']:<{width}}  {where:<9} {r.get('description', '')}")
    return 0


def _cmd_info(args) -> int:
    import json

    from .hub import info

    print(json.dumps(info(args.name), indent=2, sort_keys=True, default=str))
    return 0


def _example_inputs(name: str) -> list[Path]:
    folder = EXAMPLES / name
    return (
        sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if folder.exists()
        else []
    )


def _summarise(value) -> str:
    import numpy as np

    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{k}: {_summarise(v)}" for k, v in list(value.items())[:6])
            + (", ..." if len(value) > 6 else "")
            + "}"
        )
    arr = np.asarray(value)
    if arr.dtype.kind in "fc" and arr.size:
        finite = arr[np.isfinite(arr)]
        stats = f" mean|x|={np.abs(finite).mean():.4g}" if finite.size else " all NaN"
        return f"array{arr.shape}{stats}"
    return repr(value)


def _cmd_demo(args) -> int:
    from ase.io import read

    from .hub import list_models, load

    shipped = [r["name"] for r in list_models() if r.get("embedded")]
    if not shipped:
        print("no embedded weights are installed: nothing to demonstrate")
        return 1
    for name in shipped:
        model = load(name)
        inputs = _example_inputs(name)
        print(f"== {name}: {len(inputs)} example input(s) from {EXAMPLES / name}")
        for path in inputs:
            if getattr(model, "input_kind", "structure") == "structure":
                out = model.predict(read(path))
            else:
                out = model.predict(path)
            print(f"-- {path.name}")
            for key, value in out.items():
                print(f"   {key}: {_summarise(value)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="E(3)-equivariant model zoo")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the shipped and downloadable models").set_defaults(
        func=_cmd_list
    )
    p = sub.add_parser("info", help="model card metadata and config summary of a model")
    p.add_argument("name", help="shipped name, Hub repo id or local folder")
    p.set_defaults(func=_cmd_info)
    sub.add_parser(
        "demo", help="predict with every embedded model on its bundled examples"
    ).set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, KeyError) as err:
        print(f"zoo {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
