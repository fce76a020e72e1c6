"""Fit the chemical-shift reference of si29-shielding to experimental Si-29 shifts.

Builds the literature silicates of ``data/si29/experimental_shifts.json`` (checked bonds),
predicts them with the shipped model (its unreferenced output), fits
``delta_exp = slope * raw_iso + offset`` by plain least squares over compounds (the mean over
each compound's Si sites), reports the fit and leave-one-out errors, and ships the line as the
``reference`` of ``zoo/weights/si29-shielding/config.json`` (with the table in
``metrics.json`` and the card), then re-hashes the registry.

    python -m recipes.si29_reference            # fit, print, ship
    python -m recipes.si29_reference --dry-run  # fit and print only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from recipes._si29_card import card_from_metrics
from zoo import nmr, write_registry
from zoo._io import atomic_write_json, atomic_write_text
from zoo.data.silicates import load_reference_compounds
from zoo.hub import from_pretrained
from zoo.shielding import ShieldingModel

ROOT = Path(__file__).resolve().parents[1]
NAME = "si29-shielding"
COMMAND = "python -m recipes.si29_reference"


def predict_compounds(model: ShieldingModel, compounds) -> list[dict]:
    """Per compound: mean unreferenced isotropic value of each Si site label (ppm)."""
    rows = []
    for c in compounds:
        out = model.predict(c.atoms, reference={"slope": 1.0, "offset": 0.0})
        iso = nmr.isotropic(out["unreferenced_shift"][out["mask"]])
        labels = c.site[out["mask"]]
        sites = {lab: float(iso[labels == lab].mean()) for lab in c.shifts}
        rows.append({"name": c.name, "formula": c.formula, "qn": c.qn, "raw_sites": sites,
                     "raw": float(np.mean(list(sites.values()))), "experimental": c.shift,
                     "experimental_sites": c.shifts, "structure_source": c.structure_source,
                     "shift_source": c.shift_source})  # fmt: skip
    return rows


def fit(rows: list[dict]) -> dict:
    result = nmr.fit_reference([r["raw"] for r in rows], [r["experimental"] for r in rows])
    for r, res, loo in zip(rows, result.pop("residuals"), result.pop("loo_residuals")):
        r["fitted"] = r["experimental"] + res
        r["loo"] = r["experimental"] + loo
    return {**result, "compounds": rows, "command": COMMAND,
            "data": "data/si29/experimental_shifts.json"}  # fmt: skip


def table(result: dict) -> str:
    lines = ["| compound | Q^n | raw (ppm) | experiment | fitted | leave-one-out |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["compounds"]:
        lines.append(f"| {r['name']} | Q{r['qn']} | {r['raw']:.1f} | {r['experimental']:.1f} | "
                     f"{r['fitted']:.1f} | {r['loo']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def ship(result: dict, folder: Path) -> None:
    config_file, metrics_file = folder / "config.json", folder / "metrics.json"
    config = json.loads(config_file.read_text())
    config["reference"] = {
        "slope": round(result["slope"], 6),
        "offset": round(result["offset"], 4),
        "fit_mae": round(result["mae"], 3),
        "loo_mae": round(result["loo_mae"], 3),
        "n_compounds": result["n"],
        "made_by": COMMAND,
    }
    atomic_write_json(config_file, config)
    metrics = json.loads(metrics_file.read_text())
    metrics["nmr_reference"] = result
    atomic_write_json(metrics_file, metrics)
    atomic_write_text(folder / "README.md", card_from_metrics(metrics))
    write_registry(folder.parent)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, default=ROOT / "zoo" / "weights")
    p.add_argument("--dry-run", action="store_true", help="fit and print, change nothing")
    args = p.parse_args(argv)
    folder = args.weights / NAME
    model = from_pretrained(folder, model_types={"shielding": ShieldingModel})
    result = fit(predict_compounds(model, load_reference_compounds()))
    print(table(result))
    print(f"delta = {result['slope']:.4f} * raw + {result['offset']:.2f} ppm; fit MAE "
          f"{result['mae']:.2f} ppm, leave-one-out MAE {result['loo_mae']:.2f} ppm "
          f"({result['n']} compounds)")  # fmt: skip
    if not args.dry_run:
        ship(result, folder)
        print(f"reference written to {folder / 'config.json'}; registry re-hashed")


if __name__ == "__main__":
    main()
