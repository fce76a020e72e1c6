"""The training subcommands of the ``zoo`` command line: ``train`` (a recipe), ``finetune`` and
``evaluate``. Their parsers are in `zoo.cli`."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _check_out_dir(path: Path, overwrite: bool) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise ValueError(f"output folder {str(path)!r} is not empty; pass --overwrite to reuse it")


#: the repository's ``recipes/`` next to the installed ``zoo`` package (a clone or editable
#: install); never the current directory's
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _recipe_module(spec: str):
    """The recipe module: a file path as given, else ``recipes/<NAME>.py`` of the package."""
    import importlib.util
    import types

    path = Path(spec).expanduser()
    if os.sep in spec or "/" in spec:  # a path only when written as one: ./mine.py
        if not path.is_file():
            raise ValueError(f"no such recipe file {spec!r}")
        module_name = f"_zoo_recipe_{path.stem}"
    else:
        name = spec.replace("-", "_").removesuffix(".py")
        path = RECIPES / f"{name}.py"
        if not name.isidentifier() or not path.is_file():
            known = sorted(p.stem for p in RECIPES.glob("[!_]*.py"))
            raise ValueError(
                f"unknown recipe {spec!r}; known recipes: "
                f"{', '.join(known) or '(none: this install has no recipes/ folder)'}. "
                "Or give the path of a recipe file, e.g. zoo train ./my_recipe.py"
            )
        package = sys.modules.get("recipes")
        if package is None or list(getattr(package, "__path__", [])) != [str(RECIPES)]:
            # the package's recipes (which import one another as recipes.X), not a recipes/
            # folder that happens to be in the current directory
            package = types.ModuleType("recipes")
            package.__path__ = [str(RECIPES)]
            sys.modules["recipes"] = package
            for key in [k for k in sys.modules if k.startswith("recipes.")]:
                del sys.modules[key]
        module_name = f"recipes.{name}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module
    loader.loader.exec_module(module)
    if not callable(getattr(module, "main", None)):
        raise ValueError(f"recipe {str(path)!r} has no main(argv) function")
    return module, path


def _cmd_train(args) -> int:
    module, path = _recipe_module(args.recipe)
    print(f"zoo train: running {path} (main with {args.recipe_args})", file=sys.stderr)
    module.main(args.recipe_args)
    return 0


def _train_config(args):
    from .finetune import DEFAULT_TRAIN
    from .train import TrainConfig

    overrides = {"max_epochs": args.epochs, "learning_rate": args.lr, "seed": args.seed}
    return TrainConfig.from_dict({**DEFAULT_TRAIN.to_dict(),
                                  **{k: v for k, v in overrides.items() if v is not None}})  # fmt: skip


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t for t in text.replace(" ", ",").split(",") if t]


def _cmd_finetune(args) -> int:
    from .finetune import finetune

    out = Path(args.output or f"finetune-{Path(args.name).name}")
    _check_out_dir(out, args.overwrite)
    result = finetune(
        args.name, args.data, out_dir=out, train_config=_train_config(args),
        freeze_trunk=args.freeze_trunk, heads=_csv(args.heads),
        reset_heads=_csv(args.reset_heads) or (), new_species=_csv(args.new_species),
        split=args.split, seed=args.seed or 0, batch_size=args.batch_size,
        overwrite=args.overwrite, progress=True,
    )  # fmt: skip
    for stage in ("pretrained", "finetuned"):
        split = "validation" if "validation" in (result.metrics[stage] or {}) else "train"
        for target, m in result.metrics[stage][split].items():
            if isinstance(m, dict) and "mae" in m:
                print(f"{stage:>10} {split} {target}: MAE {m['mae']:.4g}  RMSE {m['rmse']:.4g}")
    print(f"model written to {out / 'model'} (load it with zoo.load('{out / 'model'}'))")
    return 0


#: output keys of the model wrappers for the labels their heads were trained on
_PREDICTED_AS = {"shielding": "unreferenced_shift"}


def _cmd_evaluate(args) -> int:
    import numpy as np

    from ._io import atomic_write_json
    from .finetune import read_labelled
    from .hub import load
    from .model import OUTPUTS
    from .train import parity_plot, regression_metrics
    from .train._checkpoint import jsonable

    out = Path(args.output or f"evaluate-{Path(args.name).name}")
    _check_out_dir(out, args.overwrite)
    model = load(args.name)
    outputs = [n for n in getattr(model, "outputs", ()) if n in OUTPUTS]
    if not outputs:  # a wrapper (e.g. shielding) exposes its response model's outputs
        outputs = [n for n in getattr(getattr(model, "response", None), "outputs", ())]
    if not outputs:
        raise ValueError(f"{args.name}: evaluate needs a structure model with tensor outputs")
    data = read_labelled(args.data, outputs)
    pred = model.predict(data.structures, batch_size=args.batch_size)
    metrics = {}
    out.mkdir(parents=True, exist_ok=True)
    for name, values in data.targets.items():
        per_atom = OUTPUTS[name][1]
        true = np.concatenate(values) if per_atom else np.stack(values)
        # a shielding model returns its head's output under the name of what it is
        p = np.asarray(pred[name if name in pred else _PREDICTED_AS[name]]).reshape(true.shape)
        mask = np.isfinite(true.reshape(len(true), -1)).all(axis=1)
        metrics[name] = regression_metrics(p[mask], true[mask])
        parity_plot(p[mask], true[mask], out / f"parity_{name}.png", f"{args.name}: {name}",
                    OUTPUTS[name][2])  # fmt: skip
        m = metrics[name]
        print(f"{name}: MAE {m['mae']:.4g}  RMSE {m['rmse']:.4g}  R2 {m['r2']:.4f}  (n={m['n']})")
    report = {"model": args.name, "data": str(args.data), "metrics": metrics}
    atomic_write_json(out / "metrics.json", jsonable(report))
    print(f"metrics and parity plots written to {out}")
    return 0
