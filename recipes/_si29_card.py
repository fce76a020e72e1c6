"""The model card of si29-shielding (README.md with Hugging Face front matter).

Written by `recipes.si29_shielding` when it ships weights and by `recipes.si29_reference`
when it ships a shift reference (from the folder's ``metrics.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

from ase.data import chemical_symbols

from recipes.si29_shielding import BACKBONES, COMMAND, NAME, SEED, SETTINGS, seeds_of


def _training_text() -> str:
    parts = []
    for form, s in SETTINGS.items():
        t = s["train"]
        text = f"`{form}` = {t['max_epochs']} epochs (Adam, cosine from {t['learning_rate']:g}"
        loss = s.get("loss", {})
        if loss.get("loss", "mse") != "mse":
            text += f", {loss['loss']} loss"
            if "huber_delta" in loss:
                text += f" (delta {loss['huber_delta']:g} ppm)"
        if t.get("ema_decay"):
            text += f", exponential moving average of the weights, decay {t['ema_decay']:g}/step"
        text += ")"
        if "finetune" in s:
            f = s["finetune"]
            text += (f" then {f['max_epochs']} fine-tuning epochs (rate {f['learning_rate']:g}, "
                     f"isotropic part weighted {s['finetune_0e_weight']:g}x)")  # fmt: skip
        if len(seeds_of(s)) > 1:
            text += (f", {len(s['seeds'])} models from seeds {s['seeds']} (initialisation and "
                     "batch order), predicting their mean")  # fmt: skip
        parts.append(text)
    return "; ".join(parts) + (
        " (the magnetic model costs ~10x a direct one per epoch: budget-limited, not converged)"
        if "magnetic" in SETTINGS
        else ""
    )


def _members_text(summaries: dict) -> str:
    """A sentence on each ensemble's members alone (empty when no formulation has several)."""
    parts = []
    for form, summ in summaries.items():
        ms = summ.get("members", [])
        if len(ms) > 1:
            each = ", ".join(f"seed {x['seed']} {x['validation']['isotropic_mae']:.3f} / "
                             f"{x['validation']['tensor_mae']:.3f}" for x in ms)  # fmt: skip
            parts.append(f"`{form}` is the mean of {len(ms)} models; alone (isotropic / tensor "
                         f"MAE, ppm): {each}.")  # fmt: skip
    return ("\n" + " ".join(parts) + "\n") if parts else ""


CONVENTION = """\
The model predicts what the training data hold: for each Si atom the full, non-symmetric 3x3
tensor that VASP prints as its (unreferenced) chemical shift, `raw = -sigma` without core
contributions (VASP before 6.6 prints `delta_ij = -sigma_ij`, row i the induced field, column j
the applied field; see `data/si29/README.md`). It rises with the chemical shift (quartz, Q4:
about 399 ppm; forsterite, Q0: about 452 ppm) and is not an absolute shielding. The shipped
`reference` (`config.json`) maps it to the chemical shift vs TMS,
`delta = slope * raw + offset` (tensors: `slope * raw + offset * 1`)."""


def _front_matter(metrics: dict, reference: dict | None) -> str:
    from zoo._cards import card_data, eval_result, front_matter

    task = ("tensor-regression", "Si-29 NMR tensor per Si atom (ppm)")
    data = ("Venetos et al. 2023 Si-29 tensors (wengroup/matten datasets/si_nmr_data.json)",
            "si29-venetos2023")  # fmt: skip
    names = {"isotropic_mae": "isotropic MAE (ppm)", "isotropic_rmse": "isotropic RMSE (ppm)",
             "isotropic_r2": "isotropic R2", "tensor_mae": "tensor component MAE (ppm)",
             "span_mae": "span MAE (ppm)", "skew_mae": "skew MAE"}  # fmt: skip
    results = [eval_result(task, data, (k, n), round(float(metrics[k]), 4), split="validation")
               for k, n in names.items() if k in metrics]  # fmt: skip
    if reference:
        task = ("chemical-shift", "Si-29 chemical shift vs TMS (ppm)")
        data = (f"experimental MAS shifts of {reference['n']} silicates",
                "data/si29/experimental_shifts.json")  # fmt: skip
        results += [eval_result(task, data, (k, n), round(float(reference[k]), 4))
                    for k, n in (("mae", "fit MAE (ppm)"), ("loo_mae", "leave-one-out MAE (ppm)"))
                    if k in reference]  # fmt: skip
    tags = ["nmr", "chemical-shift", "si29", "silicates", "gipaw"]
    return front_matter(card_data(NAME, license="mit", tags=tags, results=results))


def _reference_text(ref: dict | None) -> str:
    if not ref:
        return "No shift reference is stored: outputs stay on the unreferenced scale.\n"
    rows = ["| compound | Q^n | raw (ppm) | experiment | fitted | leave-one-out |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for r in ref["compounds"]:
        rows.append(f"| {r['name']} | Q{r['qn']} | {r['raw']:.1f} | {r['experimental']:.1f} | "
                    f"{r['fitted']:.1f} | {r['loo']:.1f} |")  # fmt: skip
    met = "met" if ref["loo_mae"] <= 2.0 else "not met"
    return f"""Fitted by plain least squares to {ref["n"]} silicates built with ASE from their
published structures, against their experimental Si-29 MAS shifts (one point per compound: the
mean over its Si sites; structures, sources and values in `data/si29/experimental_shifts.json`;
every structure's Si-O bonds are checked):

`delta = {ref["slope"]:.4f} * raw + ({ref["offset"]:.2f})` ppm; fit MAE {ref["mae"]:.2f} ppm,
leave-one-out MAE {ref["loo_mae"]:.2f} ppm (aim <= 2 ppm: {met}).

{chr(10).join(rows)}

The set covers Q0, Q2 and Q4 sites only (no Q1 or Q3 compound). Slope below 1: PBE spreads
the Si-29 shifts more than experiment. Made by `{ref["command"]}`.
"""


def backbone_comparison(runs: Path) -> dict:
    """One row per finished direct run under `runs` (``python -m recipes.si29_shielding --only
    direct --backbone <name> --epochs <n> --runs <runs>``): its first member's validation
    metrics and cost, and every member's metrics when it has several seeds."""
    rows = {}
    for path in sorted(runs.glob("direct*/summary.json")):
        s = json.loads(path.read_text())
        first, history = s["members"][0], json.loads((path.parent / "history.json").read_text())
        rows[s["backbone"]] = {
            "validation": first["validation"],
            "epochs": first["epochs"],
            "n_parameters": s["n_parameters"] // len(s["members"]),
            "train_wall_time_s": first["train_wall_time_s"],
            "epoch_time_s": [h["time_s"] for h in history],
            "predict_time_per_structure_s": s["predict_time_per_structure_s"],
            "backbone": s["settings"]["backbone"],
            "seeds": {m["seed"]: m["validation"] for m in s["members"]},
        }
    if not rows:
        raise SystemExit(f"no finished direct run under {runs}")
    order = list(BACKBONES)
    return dict(sorted(rows.items(), key=lambda kv: order.index(kv[0])))


def _comparison_text(rows: dict | None) -> str:
    if not rows:
        return ""
    epochs = {r["epochs"] for r in rows.values()}
    lines = ["| backbone | isotropic MAE | tensor MAE | isotropic R2 | parameters | "
             "train (min) | epoch after compilation (s) | predict (ms / structure) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in rows.items():
        v = r["validation"]
        lines.append(f"| {name} | {v['isotropic_mae']:.2f} | {v['tensor_mae']:.2f} | "
                     f"{v['isotropic_r2']:.3f} | {r['n_parameters']:,} | "
                     f"{r['train_wall_time_s'] / 60:.1f} | {r['epoch_time_s'][-1]:.0f} | "
                     f"{r['predict_time_per_structure_s'] * 1e3:.0f} |")  # fmt: skip
    spread = [f"{name}: " + ", ".join(f"seed {k} {v['isotropic_mae']:.2f} / {v['tensor_mae']:.2f}"
                                      for k, v in r["seeds"].items())
              for name, r in rows.items() if len(r["seeds"]) > 1]  # fmt: skip
    seeds = (f" Seed spread at this budget (isotropic / tensor MAE, ppm): {'; '.join(spread)}."
             if spread else "")  # fmt: skip
    return f"""
## Backbone comparison at a fixed budget

The direct formulation on the same split with each backbone, {"/".join(map(str, epochs))}
epochs each (cosine schedule, the recipe's other settings, r_max 4.0 Å), MAEs in ppm;
train time includes compilation, predict time is per structure with compiled shapes (the
validation structures, one per call), all on 2 CPU cores shared with other jobs.{seeds}

{chr(10).join(lines)}

At this budget no backbone is near the shipped model (60 epochs), so the comparison ranks
cost and early learning only, and a difference smaller than the seed spread means nothing;
NequIP is shipped because it is the backbone trained to the full budget. Backbone settings and every metric: `metrics.json` (`backbone_comparison`).
"""


def card_text(best: str, summaries: dict, split: dict, n_struct: dict, n_sites: dict,
              reference: dict | None = None, comparison: dict | None = None) -> str:  # fmt: skip
    m = summaries[best]["validation"]
    rows = ["| metric (validation, ppm) | " + " | ".join(summaries) + " |"]
    rows.append("|---|" + "---|" * len(summaries))
    for key in ("isotropic_mae", "isotropic_rmse", "isotropic_r2", "tensor_mae", "tensor_rmse",
                "mae_0e", "mae_1e", "mae_2e", "span_mae", "skew_mae"):  # fmt: skip
        rows.append(
            f"| {key} | "
            + " | ".join(f"{s['validation'][key]:.3f}" for s in summaries.values())
            + " |"
        )
    rows.append(
        "| train wall time (min) | "
        + " | ".join(f"{s['train_wall_time_s'] / 60:.1f}" for s in summaries.values())
        + " |"
    )
    rows.append(
        "| epochs (best epoch of the last stage) | "
        + " | ".join(f"{s['epochs']} ({s['best_epoch']})" for s in summaries.values())
        + " |"
    )
    species = ", ".join(chemical_symbols[z] for z in summaries[best]["species"])
    return (
        _front_matter(m, reference)
        + f"""
# {NAME}

Full (non-symmetric) Si-29 chemical shift tensors of silicates, per Si atom, in ppm, with a
fitted reference to TMS. Formulation: **{best}**; NequIP backbone in Equinox + e3nn-jax.

## What it predicts

{CONVENTION}

## Usage

```python
import zoo
model = zoo.load("{NAME}")
out = model.predict(atoms)          # periodic ase.Atoms or zoo.Structure
out["chemical_shift"]               # (N,) ppm vs TMS, NaN for non-Si atoms
out["shift_tensor"]                 # (N, 3, 3) ppm vs TMS
out["unreferenced_shift"]           # (N, 3, 3) the raw output, training-data scale
out["span"], out["skew"], out["reduced_anisotropy"], out["asymmetry"]   # shift form
out["principal_axes"], out["euler_angles"]
x, y = model.spectrum(atoms, kind="isotropic", fwhm=1.0, plot=True)   # ppm vs TMS
zoo.nmr.write_magres("quartz.magres", atoms, out)   # ms = -delta (shielding relative to TMS)
```

Refused with one clear error: structures without Si, elements outside the training set
({species}) and structures not periodic in all three directions.

## Shift reference

{_reference_text(reference)}
## Data and provenance

- Venetos, Wen, Persson, "Machine Learning Full NMR Chemical Shift Tensors of Silicon Oxides
  with Equivariant Graph Neural Networks", J. Phys. Chem. A 127, 2388 (2023),
  doi:10.1021/acs.jpca.2c07530: PBE tensors (VASP, linear response) of Materials Project
  silicates, distributed as `datasets/si_nmr_data.json` of github.com/wengroup/matten (no
  licence file found in that repository; the structures come from the Materials Project,
  CC BY 4.0). Cite the paper when using this model. Weights: MIT, like e3zoo.
- This model saw 337 of the 421 structures (source index % 5 != 4; the rest is held out for
  independent evaluation), see `data/si29/README.md`.
- Split **by structure** (`split.json` here; seed {split.get("seed", SEED)}):
  {n_struct["train"]} training structures ({n_sites["train"]} labelled Si sites),
  {n_struct["validation"]} validation structures ({n_sites["validation"]} sites). Only the
  labelled (symmetry-inequivalent) Si sites enter the loss.

## Validation metrics (measured by the recipe, on the unreferenced scale)

{chr(10).join(rows)}
{_members_text(summaries)}
0e/1e/2e: MAE of the irreps components of the error tensor (orthonormal basis: 0e = trace/sqrt3,
1e = antisymmetric, 2e = symmetric traceless part). Span/skew: Herzfeld-Berger (skew
dimensionless). The shipped weights are the **{best}** formulation (lower full-tensor MAE);
`metrics.json` has both.
{_comparison_text(comparison)}
![Isotropic parity, validation](parity_isotropic.png)

![Tensor parity (raw - raw_iso * 1), validation](parity_tensor.png)

Training: {_training_text()}. The weights of the epoch with the lowest validation loss are
kept (the validation split also selects the epoch, so its metrics are slightly optimistic).
The 84 held-out structures (source index % 5 == 4) were never used. Other settings on the same
split (isotropic / tensor MAE, ppm): MSE instead of Huber loss 1.53 / 1.29; plus a 10-epoch
isotropic-weighted fine-tuning stage 1.66 / -; weight moving average (decay 0.995) 1.55 / 1.30;
16 channels 1.73 / 1.47; seed 1 instead of 0 1.46 / 1.11. Errors have a heavy tail (Q0-Q3 sites
and mixed-cation silicates, e.g. Na-Ca, are the worst).

## Reproduce

`{COMMAND}` from a fresh clone (CPU; wall times above on 2 shared cores), then
`python -m recipes.si29_reference` for the shift reference.
"""
    )


def card_from_metrics(metrics: dict) -> str:
    """The card from a shipped ``metrics.json`` (as written by `ship`)."""
    sp = metrics["split"]
    return card_text(
        metrics["shipped"],
        metrics["formulations"],
        {},
        {"train": sp["train"], "validation": sp["validation"]},
        sp["sites"],
        metrics.get("nmr_reference"),
        metrics.get("backbone_comparison"),
    )


def write_comparison(runs: Path, folder: Path) -> None:
    """Store the backbone comparison of the runs under `runs` in the shipped `folder`'s
    ``metrics.json`` and re-render its card (the weights are untouched)."""
    from zoo import write_registry

    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["backbone_comparison"] = backbone_comparison(runs)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (folder / "README.md").write_text(card_from_metrics(metrics))
    write_registry(folder.parent)


if __name__ == "__main__":  # python -m recipes._si29_card runs/cmp
    import sys

    write_comparison(Path(sys.argv[1]), Path(__file__).resolve().parents[1] / "zoo/weights" / NAME)
