"""Train the Hubbard U (on-site) and V (inter-site) models on ``data/hubbard/labels.jsonl``.

HubbardML's inputs, split and metrics (npj Comput Mater 11, 19 (2025)) in zoo, from a fresh
clone (seconds for the kernel models, ~15 min for the networks):

    python -m recipes.hubbard_uv --out runs/hubbard_uv --split-seeds 1 2  # cluster split, 20 % val
    python -m recipes.hubbard_uv --out runs/hubbard_uv --ship     # ... and ship to zoo/weights
    python -m recipes.hubbard_uv --out runs/transfer --transfer 2  # train it < 2, test it >= 2
    python -m recipes.hubbard_uv --steps zoo/weights/hubbard-uv/data_steps.json  # as shipped
    python -m recipes.hubbard_uv --model network --restarts 3     # HubbardML's network
    python -m recipes.hubbard_uv --out runs/lofo-FeO --test-paths --hold-out FeO  # one family out
    python -m recipes.hubbard_uv --leave-out LiNiO2 NiO2 LiNiO2+NiO2  # ... reported in the card
    python -m recipes.hubbard_uv --leave-out LiNiO2 --compare-network runs/net/metrics.json  # vs
    #   the held-out-family MAREs of a `--model network --leave-out LiNiO2` run of the same steps

The data set grows as the DFT queue runs; ``--steps`` restricts it to the self-consistent
steps a shipped model was trained on (its ``data_steps.json``), which reproduces its card.

``--model kernel`` (the default and the shipped model): kernel ridge regression on the
rotation invariants of the same inputs (:class:`zoo.hubbard.KernelModel`), width and ridge by
5-fold cross-validation over the training rows' duplicate clusters. ``--model network``:
HubbardML's tensor-square network (:class:`zoo.hubbard.OnsiteModel`,
:class:`zoo.hubbard.IntersiteModel`), with restarts, ensembles, residual and bounded layers
as options. The measured comparison of the two and of the network's options is in
``docs/experiments.md`` (Hubbard models).

Rows: U of TM 3d sites with ``param_out > 0.2`` eV; V of TM 3d - O 2p pairs with
``param_out > 0.1`` eV (every pair hp.x lists; ``zoo.data.hubbard.V_CUTOFF``). Near-duplicates are clustered and 20 % of the clusters of every
(species, self-consistent path) group go to validation (one representative each). Scalers are
fit on the training rows only. Metrics per species (MAE, RMSE, MARE) for the model and for the
U_in/V_in baseline are written to ``<out>/metrics.json``; the models to ``<out>/hubbard-u``,
``<out>/hubbard-v`` and ``<out>/hubbard-uv`` (config.json, model.safetensors, README.md).
"""

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

import zoo
from recipes._hubbard_eval import (
    TEST,
    clusters_of,
    evaluate,
    held_out,
    left_out,
    report_metrics,
    split,
)
from recipes._hubbard_network import LOSSES, NETWORK_OPTIONS, train_restarts
from zoo.data.hubbard import load_rows, select_steps, step_of, u_dataset, v_dataset
from zoo.hubbard import (
    TRAIN,
    VALIDATE,
    HubbardUV,
    IntersiteModel,
    KernelModel,
    OnsiteModel,
    cross_validate,
)

ROOT = Path(__file__).resolve().parents[1]
#: whole structures (sc paths) held out of training and validation: the models are judged
#: on these unseen structures too, and zoo/examples/hubbard-uv holds their pw.x runs
TEST_PATHS = ("p111-NiO-sym-e-0.030", "p113-FeO-sym-e-0.030")


def train_kernel(ds: dict, labels: np.ndarray, seed: int, cv_rule: str = "min"):
    """:class:`KernelModel` on the training rows; its width and ridge by cross-validation
    over the training rows' duplicate clusters (the validation and test rows take no part)."""
    tr = np.flatnonzero(labels == TRAIN)
    clusters = clusters_of(ds, tr)
    kind = "onsite" if ds["distance"] is None else "intersite"
    inputs = tuple(a[tr] for a in ds["inputs"])
    gamma, lam, table = cross_validate(
        ds["species"], inputs, ds["y"][tr], clusters, kind=kind, folds=CV_FOLDS, seed=seed,
        rule=cv_rule,
    )  # fmt: skip
    model = KernelModel.fit(ds["species"], inputs, ds["y"][tr], kind=kind, gamma=gamma, lam=lam)
    metrics = report_metrics(model, ds, labels)
    te, va = np.flatnonzero(labels == TEST), np.flatnonzero(labels == VALIDATE)
    refused, va_refused = (
        np.array([why is not None for why in model.support_report(*(a[i] for a in ds["inputs"]))])
        if len(i) else np.zeros(0, bool)
        for i in (te, va)
    )  # fmt: skip
    metrics["kernel"] = {
        "gamma": gamma, "lam": lam, "cv_folds": CV_FOLDS, "cv_rule": cv_rule, "cv": table,
        "support_distance": model.config["support_distance"],
        "species_support": model.species_support(),
        "param_in_range": model.param_ranges(),
        "test_refused": [ds["rows"][i]["id"] for i in te[refused]],
        "validation_refused": [ds["rows"][i]["id"] for i in va[va_refused]],
    }  # fmt: skip
    if refused.any():  # what predict() answers: the supported rows
        supported = evaluate(model, ds, te[~refused], "test")
        metrics |= {f"supported_{k}": v for k, v in supported.items()}
    return model, metrics


CV_FOLDS = 5  # the kernel's width and ridge: cross-validation folds over training clusters


#: the kernel's card also reports the paper's transfer test: iterations < k train, the rest
#: (the converged values) validate
TRANSFER_K = 2


def main(argv=None) -> dict:
    t0 = time.perf_counter()
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "hubbard" / "labels.jsonl")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "hubbard_uv")
    ap.add_argument(
        "--model", choices=("kernel", "network"), default="kernel",
        help="kernel ridge regression on the occupation invariants (default), or HubbardML's "
        "tensor-square network (the options below that follow are the network's)",
    )  # fmt: skip
    ap.add_argument(
        "--cv-rule", choices=("min", "one-se"), default="min",
        help="kernel: the width and ridge of lowest cross-validation error ('min', default), "
        "or the largest ridge within one standard error of it ('one-se')",
    )  # fmt: skip
    ap.add_argument("--epochs", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--patience", type=int, default=50, help="evaluations (every 10 epochs)")
    ap.add_argument("--weight-decay", type=float, default=1e-2)
    ap.add_argument("--hidden-layers", type=int, default=2)
    ap.add_argument(
        "--bond-lmax", type=int, default=0,
        help="V: bond-direction harmonics l = 2, 4, .. up to this in the edge (0: HubbardML's)",
    )  # fmt: skip
    ap.add_argument(
        "--residual", action="store_true",
        help="predict the change from the run's U_in / V_in (default: the value itself)",
    )  # fmt: skip
    ap.add_argument(
        "--squash", action="store_true",
        help="bound every gated layer's irreps (v / sqrt(1 + |v|^2)); HubbardML has no bound",
    )  # fmt: skip
    ap.add_argument(
        "--keep", choices=("best-val", "final"), default="best-val",
        help="the weights of the lowest validation loss (early stopping), or the last ones",
    )  # fmt: skip
    ap.add_argument("--batch-u", type=int, default=16, help="U training batch size")
    ap.add_argument("--batch-v", type=int, default=64, help="V training batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loss", choices=sorted(LOSSES), default="mse", help="training loss")
    ap.add_argument(
        "--restarts", type=int, default=1,
        help="initialisations per model; the lowest training MSE is kept",
    )  # fmt: skip
    ap.add_argument(
        "--ensemble", action="store_true",
        help="the model is the mean of all restarts (default: the lowest training MSE)",
    )  # fmt: skip
    ap.add_argument(
        "--split-seeds", type=int, nargs="*", default=[], metavar="SEED",
        help="also train on these other validation splits and report their metrics (card)",
    )  # fmt: skip
    ap.add_argument("--steps", type=Path, help="JSON list of sc steps to train on (default: all)")
    ap.add_argument("--transfer", type=int, default=None, metavar="K")
    ap.add_argument("--test-paths", nargs="*", default=list(TEST_PATHS), metavar="SC_PATH")
    ap.add_argument(
        "--hold-out", nargs="*", default=[], metavar="MATERIAL",
        help="every sc path of these materials is a test path too (leave-one-family-out)",
    )  # fmt: skip
    ap.add_argument(
        "--leave-out", nargs="*", default=[], metavar="MATERIAL[+MATERIAL]",
        help="also train with every sc path of these materials held out, one run per argument "
        "(LiNiO2, or LiNiO2+NiO2 for both at once), and report them (card: per family)",
    )  # fmt: skip
    ap.add_argument(
        "--compare-network", type=Path, metavar="METRICS_JSON",
        help="metrics.json of a --model network run with --leave-out on the same steps: its "
        "held-out-family MAREs go beside the kernel's (card: kernel vs network)",
    )  # fmt: skip
    ap.add_argument(
        "--ship", action="store_true",
        help="also write the model folders to zoo/weights/ (cards, metrics, plots, registry)",
    )  # fmt: skip
    ap.add_argument(
        "--purpose", default="production",
        help="rows of this `purpose` only ('all': every row; convergence tests relabel the same "
        "occupations with other hp.x settings)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.model == "kernel":  # the network's options would be silently ignored
        given = [o for o in NETWORK_OPTIONS if getattr(args, o) != ap.get_default(o)]
        if given:
            flags = ", ".join("--" + o.replace("_", "-") for o in given)
            ap.error(f"{flags}: options of --model network, not of the kernel model")
    elif args.cv_rule != ap.get_default("cv_rule"):
        ap.error("--cv-rule: an option of --model kernel, not of the network")
    rows = load_rows(args.data)
    if args.purpose != "all":
        rows = [r for r in rows if r.get("purpose") == args.purpose]
    if args.steps:
        try:
            rows = select_steps(rows, args.steps)
        except ValueError as err:
            raise SystemExit(str(err)) from None
    for flag, given in (("--hold-out", args.hold_out), ("--leave-out", args.leave_out)):
        unknown = sorted({m for g in given for m in g.split("+")} - {r["material"] for r in rows})
        if unknown:
            ap.error(f"{flag}: no rows of {', '.join(unknown)}")
    network = _network_report(args.compare_network, rows) if args.compare_network else None
    held = sorted({r["sc_path"] for r in rows if r["material"] in set(args.hold_out)})
    args.test_paths = [*args.test_paths, *(p for p in held if p not in args.test_paths)]
    report = {
        "data": _repo_relative(args.data),
        "purpose": args.purpose,
        "n_rows": len(rows),
        "steps": sorted({step_of(r) for r in rows}),
        "seed": args.seed,
        "model": args.model,
        "restarts": args.restarts,
        "residual": args.residual,
        "ensemble": args.ensemble,
        "batch": {"U": args.batch_u, "V": args.batch_v},
        "squash": args.squash,
        "keep": args.keep,
        "transfer": args.transfer,
        "test_paths": list(args.test_paths),
        "hold_out": list(args.hold_out),
        "leave_out": list(args.leave_out),
        "command": "python -m recipes.hubbard_uv "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    models = {}
    for name, build, make, bs in [
        (
            "U",
            u_dataset,
            lambda sp, k: OnsiteModel(
                sp,
                hidden_layers=args.hidden_layers,
                residual=args.residual,
                squash=args.squash,
                key=k,
            ),
            args.batch_u,
        ),
        (
            "V",
            functools.partial(v_dataset, bond_lmax=args.bond_lmax),
            lambda sp, k: IntersiteModel(
                sp,
                hidden_layers=args.hidden_layers,
                bond_lmax=args.bond_lmax,
                residual=args.residual,
                squash=args.squash,
                key=k,
            ),  # fmt: skip
            args.batch_v,
        ),
    ]:
        ds = build(rows)
        if ds is None:
            report[name] = "not enough rows"
            continue
        build_model = functools.partial(make, ds["species"])
        labels = split(ds, args.seed, args.transfer, args.test_paths)

        def train(labels, out, seed):
            if args.model == "kernel":
                return train_kernel(ds, labels, seed, args.cv_rule)
            return train_restarts(build_model, ds, labels, args, out, bs, seed)  # noqa: B023

        models[name], report[name] = train(labels, args.out / f"train-{name}", args.seed)
        for s in args.split_seeds:  # the same recipe on other splits: how much the split matters
            other = split(ds, s, args.transfer, args.test_paths)
            _, m = train(other, args.out / f"split{s}-{name}", s)
            report[name].setdefault("other_splits", {})[str(s)] = held_out(m)
        for group in args.leave_out:  # leave-one-family-out: the family's paths are test paths
            paths = {r["sc_path"]: r["material"] for r in rows if r["material"] in group.split("+")}
            lo = split(ds, args.seed, args.transfer, [*args.test_paths, *sorted(paths)])
            _, m = train(lo, args.out / f"leave-out-{group}-{name}", args.seed)
            report[name].setdefault("leave_out", {})[group] = left_out(m, paths)
        if network is not None and isinstance(network.get(name), dict):
            report[name]["network_leave_out"] = network[name].get("leave_out", {})
            report["network_command"] = network["command"]
        if args.model == "kernel" and args.transfer is None:  # seconds: always report it
            _, m = train(split(ds, args.seed, TRANSFER_K, args.test_paths), None, args.seed)
            report[name]["transfer"] = {"k": TRANSFER_K} | held_out(m)
        print(name, json.dumps(report[name], indent=1))
    report["wall_time_s"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    _save(models, report, args.out, rows)
    if args.ship:
        _save(models, report, zoo.WEIGHTS_DIR, rows)
        zoo.write_registry(zoo.WEIGHTS_DIR)
    return report


def _network_report(path: Path, rows: list[dict]) -> dict:
    """The metrics.json of a ``--model network`` run on exactly the steps of `rows`."""
    try:
        net = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"--compare-network: cannot read {path}: {err}") from None
    if net.get("model") != "network":
        raise SystemExit(f"--compare-network: {path} is not a --model network run")
    if net.get("steps") != sorted({step_of(r) for r in rows}):
        raise SystemExit(f"--compare-network: {path} was trained on other steps than these rows")
    return net


def _repo_relative(path: Path) -> str:
    """`path` relative to the repository when inside it (metrics.json names no machine path)."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _save(models: dict, report: dict, out: Path, rows: list[dict]) -> None:
    from recipes._hubbard_tables import parity_png
    from recipes.hubbard_card import model_card
    from zoo import save_pretrained

    named = {"hubbard-u": models.get("U"), "hubbard-v": models.get("V")}
    if "U" in models and "V" in models:
        named["hubbard-uv"] = HubbardUV(models["U"], models["V"])
    for name, model in named.items():
        if model is None:
            continue
        parts = {"hubbard-u": ["U"], "hubbard-v": ["V"], "hubbard-uv": ["U", "V"]}[name]
        sub = {k: report[k] for k in parts}
        metrics = {k: v for k, v in report.items() if k not in ("U", "V")} | sub
        folder = out / name
        save_pretrained(model, folder, card=model_card(name, report, parts, rows), overwrite=True)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
        (folder / "data_steps.json").write_text(json.dumps(report["steps"], indent=1) + "\n")
        for part in parts:
            parity_png(report[part], folder / f"parity_{part}.png", part)


if __name__ == "__main__":
    main()
