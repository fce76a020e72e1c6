"""Model cards and parity plots of the Hubbard models (written by ``recipes/hubbard_uv.py``).

Everything in a card comes from the recipe's own report (metrics measured on the held-out
rows) and from the label rows it trained on (materials, QE version and settings).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from recipes._hubbard_tables import (
    _families,
    _former_cut,
    _other_splits,
    _table,
    _targets,
    _transfer,
    _versus_network,
    _worst_test,
)
from zoo._cards import card_data, eval_result, front_matter
from zoo.data.hubbard import HUBBARDML_V_CUTOFF, U_CUTOFF, V_CUTOFF
from zoo.hubbard._support import PARAM_MARGIN, PARAM_MARGIN_EV

#: what each model answers, then how (the kernel, or HubbardML's network): `_description`
WHAT = {
    "hubbard-u": "Hubbard U (eV) of transition-metal 3d sites from one DFT+U+V pw.x run",
    "hubbard-v": "Hubbard V (eV) of transition-metal 3d - O 2p pairs from one DFT+U+V pw.x run",
    "hubbard-uv": "Hubbard U (TM 3d) and V (TM 3d - O 2p) for a whole DFT+U+V pw.x run, in "
    "place of an hp.x linear-response calculation: `hubbard-u` and `hubbard-v` together",
}
PAPER = "Uhrin et al., npj Comput. Mater. 11, 19 (2025)"
NETWORK = {
    "hubbard-u": f"the on-site model of HubbardML ({PAPER}) in Equinox + e3nn-jax",
    "hubbard-v": f"the inter-site model of HubbardML ({PAPER}) in Equinox + e3nn-jax",
    "hubbard-uv": f"HubbardML, {PAPER}",
}
KERNEL = (
    "kernel ridge regression (Gaussian kernel) on the rotation invariants of HubbardML's "
    f"inputs (the spin-flip-invariant occupation irreps of {PAPER}, U_in/V_in and the pair "
    "distance), in Equinox + e3nn-jax"
)


#: why the shipped models are kernels (measured: docs/experiments.md, "Hubbard models on
#: layered LiNiO2 / NiO2" and "Hubbard models on layered LiMnO2 / MnO2")
WHY_KERNEL = (
    "The kernel is shipped rather than HubbardML's network because it is the closer of the two "
    'to hp.x on the validation rows and on the held-out layered families (table "Kernel vs '
    "HubbardML's network\" below, `docs/experiments.md`): off its data the network, a "
    "high-degree polynomial of its inputs, blows up, where the kernel refuses the row or "
    "stays bounded."
)


def _description(name: str, kernel: bool) -> str:
    how = KERNEL if kernel else NETWORK[name]
    what = f"{WHAT[name]} ({how})." if name == "hubbard-uv" else f"{WHAT[name]}: {how}."
    return f"{what} {WHY_KERNEL}" if kernel else what


#: what `predict` returns, per model folder
ANSWERS = {
    "hubbard-u": "pred.U          # {site: eV} for every TM 3d Hubbard site (V: hubbard-v)",
    "hubbard-v": "pred.V          # {(i, j, image): eV} for every TM-O pair of the run's table",
    "hubbard-uv": "pred.U          # {site: eV} for every TM 3d Hubbard site\n"
    "pred.V          # {(i, j, image): eV} for every TM-O pair of the run's table",
}
EXTEND = """# fine-tune (kernel models): refit with your own hp.x labels of that run added
tuned = model.extend("scf.out", U={1: 6.1}, V={(1, 3, (0, 0, 0)): 0.52},
                     occup="out/pwscf.save/occup.txt")
"""
RUN_NEEDS = """pw.x must have run DFT+U+V (`lda_plus_u_kind = 2`, `nspin = 2`) with the 3d manifolds of
the TMs and the O 2p manifold as Hubbard manifolds and every first-shell TM-O pair listed
(V = 1e-8 switches a pair on). Atoms without a Hubbard manifold (Li, P, ...) are skipped.
`occup.txt` must be that run's: its on-site traces and moments are checked against the ones
pw.x prints, and occupations outside [0, 1] are refused. `zoo.hubbard.self_consistent_hubbard`
iterates pw.x and the model to self-consistency. An element or manifold outside the training
set, or a run's U_in / V_in outside their training range, is an error, never an
extrapolation."""


def _usage(name: str) -> str:
    lines = [
        "```python",
        "import zoo",
        "",
        f'model = zoo.load("{name}"){" " * (20 - len(name))}# embedded weights, offline',
        'pred = model.predict("scf.out", occup="out/pwscf.save/occup.txt")',
        ANSWERS[name],
        'print(pred.hubbard_card("qe6"))  # Hubbard_V lines for QE <= 7.0 (&system)',
        'print(pred.hubbard_card("qe7"))  # HUBBARD card for QE >= 7.1',
    ]
    if name == "hubbard-uv":
        lines.append(EXTEND.rstrip())
    return "\n".join(lines + ["```", "", RUN_NEEDS])


def _front_matter(name: str, report: dict, parts: list[str]) -> str:
    """The Hub's YAML front matter, with the held-out metrics as `model-index` results."""
    results = []
    for p in parts:
        for split, what in (("validation", "held-out clusters"), ("test", "held-out structures")):
            m = report[p].get(f"{split}_model", {}).get("all")
            if not m:
                continue
            task, data = (
                ("tabular-regression", f"Hubbard {p} (eV)"),
                (f"data/hubbard, {what}", "data/hubbard"),
            )
            results += [
                eval_result(task, data, ("mae", f"{p} {split} MAE (eV)"), round(m["mae"], 4), split=split, subset=p),
                eval_result(task, data, ("mare", f"{p} {split} MARE (%)"), round(100 * m["mare"], 2), split=split, subset=p),
            ]  # fmt: skip
    tags = ["hubbard", "dft+u+v", "quantum-espresso"]
    return front_matter(card_data(name, license="mit", tags=tags, results=results)).rstrip("\n")


def _data_section(rows: list[dict], parts: list[str], report: dict) -> list[str]:
    used = {
        row_id
        for p in parts
        for split in ("train", "validation", "test")
        for row_id in report[p].get(f"{split}_predictions", {})
    }
    mine = [r for r in rows if r["id"] in used]
    mats = Counter((r["material"], r["param_type"]) for r in mine)
    paths = {r["sc_path"] for r in mine}
    codes = sorted({r["code"] for r in mine})
    s0 = mine[0]["settings"] if mine else {}
    pseudos = sorted({(el, pp) for r in mine for el, pp in r["settings"]["pseudos"].items()})
    lines = [
        "## Data",
        "",
        "Labels computed by this project with Quantum ESPRESSO (`data/hubbard/`: one row per "
        "label per self-consistent step; pipeline `zoo.hubbard.dft`): the model input is the "
        "pw.x ground state (occupation matrices from `occup.txt`, U_in/V_in, pair distance), "
        "the label is hp.x's linear-response U or V on that ground state.",
        "",
        f"- {len(mine)} rows (U > {U_CUTOFF:g} eV, HubbardML's cut-off; V > {V_CUTOFF:g} eV, "
        f"below HubbardML's {HUBBARDML_V_CUTOFF:g} eV so that every TM-O pair hp.x lists for "
        "the next iteration is a row: the long Jahn-Teller Mn-O bonds of layered LiMnO2 and "
        "MnO2, 0.14-0.22 eV, are pairs pw.x runs of those cells ask for) from "
        f"{len(paths)} self-consistent paths: "
        + ", ".join(f"{m} {t} {n}" for (m, t), n in sorted(mats.items())),
        f"- code: {', '.join(codes)}; PBE, `U_projection_type = '{s0.get('projector')}'`, "
        f"ecutwfc/ecutrho {s0.get('ecutwfc')}/{s0.get('ecutrho')} Ry, k {_meshes(mine, 'kpts')}, "
        f"hp.x q {_meshes(mine, 'nq')}, conv_thr_chi {s0.get('conv_thr_chi')}",
        "- pseudopotentials (U and V depend on their atomic 3d/2p orbitals; use the same ones): "
        + ", ".join(f"{el} `{pp}`" for el, pp in pseudos),
        "",
    ]
    return lines


def _meshes(rows: list[dict], key: str) -> str:
    """The k or q meshes of `rows` (``settings[key]``) and the materials of each, when the
    families were run with different meshes: ``2x2x2 (FeO, MnO), 4x4x4 (LiNiO2)``."""
    by: dict[str, set] = {}
    for r in rows:
        by.setdefault("x".join(map(str, r["settings"][key])), set()).add(r["material"])
    if len(by) == 1:
        return next(iter(by))
    return ", ".join(f"{m} ({', '.join(sorted(mats))})" for m, mats in sorted(by.items()))


def model_card(name: str, report: dict, parts: list[str], rows: list[dict]) -> str:
    """README.md of one model folder (`parts`: ``["U"]``, ``["V"]`` or both)."""
    lines = [_front_matter(name, report, parts), "", f"# {name}", ""]
    lines += [_description(name, _is_kernel(report)), "", "## Usage", "", _usage(name), ""]
    lines += _data_section(rows, parts, report)
    test = ", ".join(f"`{p}`" for p in report["test_paths"]) or "none"
    lines += [
        "## Split",
        "",
        "Near-duplicate rows (same species, occupation power spectra within 1e-4 RMS, "
        "param_in within 1e-3 eV (U) / 5e-3 eV (V), distance within 4e-3 Bohr) are clustered; "
        "20 % of the clusters of every (species, self-consistent path) group go to validation "
        "with one representative each (HubbardML's `predict_hp`), so duplicates cannot leak. "
        f"Whole structures held out as a test set (never seen in training or validation): {test}. "
        "Scalers are fit on the training rows only. Baseline = the value pw.x used "
        "(U_in / V_in) as the prediction.",
        "",
    ]
    for p in parts:
        rc = report[p]["rows"]
        lines += [
            f"## {p}: metrics (eV; MARE = mean |error| / |label|)",
            "",
            f"Rows: train {rc['train']}, validation {rc['validate']}, duplicates dropped "
            f"{rc['duplicate']}, test {rc['test']}; training rows per species: "
            + ", ".join(f"{k} {n}" for k, n in rc["species"].items()),
            "",
            "**Validation** (held-out clusters):",
            "",
            *_table(report[p], "validation"),
            _kernel_training(report[p])
            if _is_kernel(report)
            else (
                f"Training: the model is the mean of {report.get('restarts', 1)} initialisations "
                "(restarts, an ensemble); "
                if report.get("ensemble")
                else f"Training: the lowest training MSE of {report.get('restarts', 1)} "
                "initialisation(s) is kept (restarts); "
            )
            + (
                "the last weights of the schedule are kept (the validation rows only report)."
                if report.get("keep") == "final"
                else "early stopping and the kept epoch use the validation loss."
            )
            + (
                f" The network predicts the change from the run's {p}_in ({p} = {p}_in + output)."
                if report.get("residual")
                else ""
            )
            + (
                " Every gated layer is bounded (`squash`: v / sqrt(1 + |v|^2) per irrep copy)."
                if report.get("squash")
                else ""
            ),
            "",
            *_other_splits(report[p], _is_kernel(report)),
            *_transfer(report[p]),
            *_families(report[p], p),
            *_targets(report[p], p),
            *(_former_cut(report[p], p, HUBBARDML_V_CUTOFF) if p == "V" else []),
            *_versus_network(report[p], p, report.get("network_command")),
            "**Test** (held-out structures):",
            "",
            *_table(report[p], "test"),
            f"![parity {p}](parity_{p}.png)",
            "",
        ]
    lines += [
        "## Reproduce",
        "",
        "From a fresh clone (CPU"
        + (
            f"; the run that wrote this card took {report['wall_time_s'] / 60:.0f} min of wall "
            "time on 2 cores"
            if "wall_time_s" in report
            else ""
        )
        + "):",
        "",
        f"```\n{report['command']}\n```",
        "",
        "writes these folders (and `metrics.json`, with every held-out prediction) to "
        "`--out`; `--ship` also writes them to `zoo/weights/`. The data set grows as the DFT "
        f"queue runs: these weights saw the {len(report['steps'])} self-consistent steps of "
        "`data_steps.json` (here); add `--steps <this folder>/data_steps.json` to train on "
        "exactly those rows and reproduce the metrics above.",
        "",
        "## Limitations",
        "",
        f"- Trained on small ({_cell_sizes(rows, report)}-atom) oxide cells of few materials: "
        "trust it near the training "
        "chemistry; check a new material against one hp.x run before relying on it.",
        "- Only the species and manifolds listed in `config.json` (TM 3d, O 2p); other "
        "projectors, pseudopotentials or functionals give other U/V.",
        _kernel_limitation(report, parts)
        if _is_kernel(report)
        else "- Outside its training occupations the network (a high-degree polynomial of its "
        f"inputs) can blow up{_worst_test(report, parts)}. `predict` therefore refuses any "
        "value farther than 8 training-label standard deviations + 1 eV from the training "
        "mean (ValueError naming the site or pair).",
        "",
    ]
    return "\n".join(lines)


def _cell_sizes(rows: list[dict], report: dict) -> str:
    """Atoms per cell of the training steps: ``4`` or ``3-4``."""
    steps = set(report["steps"])
    n = sorted({r["n_atoms_uc"] for r in rows if f"{r['sc_path']}/it{r['iteration']}" in steps})
    return "-".join(str(k) for k in sorted({n[0], n[-1]})) if n else "few"


def _is_kernel(report: dict) -> bool:
    return report.get("model", "network") == "kernel"


def _kernel_training(part: dict) -> str:
    k = part["kernel"]
    return (
        "Training: kernel ridge regression on the training rows (`zoo.hubbard.KernelModel`); "
        f"kernel width gamma = {k['gamma']:g} and ridge lambda = {k['lam']:g} chosen by "
        f"{k['cv_folds']}-fold cross-validation over the training rows' duplicate clusters "
        f"({_CV_RULE[k.get('cv_rule', 'min')]}); the validation and test rows take no part. "
        "No random initialisation: the same rows give the same model."
    )


_CV_RULE = {
    "min": "lowest MARE",
    "one-se": "the largest ridge whose MARE is within one standard error over folds of the "
    "lowest, then its lowest-MARE width: the smoothest fit the folds cannot tell from the best",
}


def _kernel_limitation(report: dict, parts: list[str]) -> str:
    """The support guard, with what it refused among this run's held-out test rows."""
    out = (
        "- Off its training data a Gaussian kernel returns the training mean, not a blow-up; "
        "`predict` refuses (ValueError naming the site or pair, its species and how far it is) "
        "any row outside the training rows of its species (U: the metal, V: the O-metal pair): "
        "farther from all of them than 1.25 times their largest nearest-neighbour distance in "
        "occupations and pair distance, or twice that distance with the run's U/V included "
        "(`KernelModel.species_support`), and any row of a species without training rows."
    )
    out += _param_range_text(report, parts)
    for p in parts:
        part = report[p]
        refused = part["kernel"]["test_refused"]
        if refused and "supported_test_model" not in part:  # every held-out row refused
            out += f" {p}: it refuses all {len(refused)} held-out test rows."
        elif refused:
            sup = part["supported_test_model"]["all"]
            out += (
                f" {p}: it refuses {len(refused)} of {part['rows']['test']} held-out test rows "
                f"(e.g. `{refused[0]}`); on the others the test MARE is {100 * sup['mare']:.2f} % "
                f"(MAE {sup['mae']:.4f} eV)."
            )
    return out


def _param_range_text(report: dict, parts: list[str]) -> str:
    """The guard on the run's own U_in / V_in, with each species' training range."""
    ranges = []
    for p in parts:
        got = report[p]["kernel"].get("param_in_range")
        if got:
            ranges.append(
                f"{p}_in " + ", ".join(f"{k} {lo:.2f}-{hi:.2f}" for k, (lo, hi) in got.items())
            )
    if not ranges:
        return ""
    return (
        " It also refuses a run whose own U_in / V_in lies outside the values of its species' "
        f"training rows ({'; '.join(ranges)} eV), widened by {100 * PARAM_MARGIN:.0f} % of that "
        f"span (at least {PARAM_MARGIN_EV} eV; `config.json`: `param_in_range`), naming the "
        "species, the value and the range. Refused rather than warned: the kernel saw U_in only "
        "at the queue's starting guess and at hp.x's answers, and answers a value beyond them "
        "from the nearest of those; `self_consistent_hubbard` started inside the range stays "
        "inside while the model interpolates, checks its starting guess before any pw.x run "
        "and stops before a pw.x run whose input would be outside (with Ni rows up to U_in "
        "8.3 eV the ML loop on LiNiO2 fed back 9.48 eV and drifted to 8.1 eV against hp.x's "
        "9.2 eV, `docs/experiments.md`)."
    )


def rerender(folder: Path, rows: list[dict]) -> None:
    """Rewrite the card of a shipped model folder from its own metrics.json (no training:
    the same weights and metrics), with the data path in metrics.json repository-relative."""
    metrics_path = folder / "metrics.json"
    report = json.loads(metrics_path.read_text())
    report["data"] = "data/hubbard/labels.jsonl"
    parts = [p for p in ("U", "V") if isinstance(report.get(p), dict)]
    (folder / "README.md").write_text(model_card(folder.name, report, parts, rows))
    metrics_path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


def main(argv=None) -> None:
    """``python -m recipes.hubbard_card zoo/weights/hubbard-u ...``: re-render the cards."""
    from zoo.data.hubbard import DATA_DIR, load_rows

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, default=DATA_DIR / "labels.jsonl")
    args = ap.parse_args(argv)
    rows = load_rows(args.data)
    for folder in args.folders:
        if not (folder / "metrics.json").is_file():
            raise SystemExit(f"{folder}: no metrics.json (not a Hubbard model folder)")
        rerender(folder, rows)


if __name__ == "__main__":
    main()
