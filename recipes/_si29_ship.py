"""Shipping of `recipes.si29_shielding`: pick the best finished run, write its folder (card,
metrics.json, parity plots, split) to ``zoo/weights/si29-shielding``, refresh the registry and
check the reloaded folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from recipes.si29_shielding import BACKBONES, COMMAND, NAME, SETTINGS, load_trained, run_settings
from zoo import write_registry
from zoo._io import atomic_write_json
from zoo.data.si29 import DATA_DIR
from zoo.shielding import ShieldingModel
from zoo.train import parity_plot


def write_parity_plots(pred: np.ndarray, true: np.ndarray, folder: Path, best: str) -> None:
    """`parity_isotropic.png` and `parity_tensor.png` of validation tensors `(M, 3, 3)`."""
    iso_p, iso_t = np.trace(pred, axis1=1, axis2=2) / 3, np.trace(true, axis1=1, axis2=2) / 3
    parity_plot(iso_p[:, None], iso_t[:, None], folder / "parity_isotropic.png",
                f"Si-29 raw isotropic, validation ({best})", "ppm")  # fmt: skip
    # components of t - t_iso * 1 (the isotropic part is the plot above; keeping it here
    # would put everything near 400 ppm and hide the anisotropic errors)
    eye = np.eye(3)
    parity_plot(pred - iso_p[:, None, None] * eye, true - iso_t[:, None, None] * eye,
                folder / "parity_tensor.png",
                f"Si-29 raw - raw_iso*1, validation ({best})",
                "ppm")  # fmt: skip


def ship(runs: Path, data: dict, split: dict, weights_dir: Path) -> None:
    summaries = {}
    for form in SETTINGS:
        for backbone in BACKBONES if form == "direct" else ["nequip"]:
            run = run_settings(form, backbone)
            path = runs / run["name"] / "summary.json"
            if path.is_file():
                summaries[run["name"]] = json.loads(path.read_text())
    if not summaries:
        raise SystemExit(f"no finished run under {runs}: train first")
    best = min(summaries, key=lambda f: summaries[f]["validation"]["tensor_mae"])
    members = load_trained(run_settings(summaries[best].get("formulation", best),
                                        summaries[best].get("backbone", "nequip")), runs)  # fmt: skip
    model = ShieldingModel.wrap(members, atomic_number=14)
    for s in summaries.values():
        s["species"] = list(model.species)
    n_struct = {k: len(v) for k, v in data.items()}
    n_sites = {k: int(sum(r.mask.sum() for r in v)) for k, v in data.items()}
    folder = weights_dir / NAME
    tmp = runs / "ship"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pred, true = np.load(runs / best / "validation_predictions.npz").values()
    write_parity_plots(pred, true, tmp, best)
    metrics = {
        "shipped": best,
        "split": {"file": "split.json", "by": "structure", **n_struct, "sites": n_sites},
        "units": "ppm",
        "command": COMMAND,
        "formulations": summaries,
    }
    atomic_write_json(tmp / "metrics.json", metrics)
    extra = {
        "metrics.json": tmp / "metrics.json",
        "parity_isotropic.png": tmp / "parity_isotropic.png",
        "parity_tensor.png": tmp / "parity_tensor.png",
        "split.json": DATA_DIR / "split.json",
    }
    from recipes._si29_card import card_text

    # new weights need a new shift reference: run recipes.si29_reference after this
    card = card_text(best, summaries, split, n_struct, n_sites)
    model.save_pretrained(folder, card=card, overwrite=True, extra_files=extra)
    write_registry(weights_dir)
    print(f"shipped {best} to {folder}", flush=True)


def check_shipped(folder: Path, data: dict) -> None:
    """Reload the folder offline and check it reproduces one validation structure."""
    from zoo.hub import from_pretrained

    model = from_pretrained(folder, model_types={"shielding": ShieldingModel})
    r = data["validation"][0]
    out = model.predict(r.structure)
    err = np.abs(out["unreferenced_shift"][r.mask] - r.shielding[r.mask]).mean()
    print(f"reloaded {folder}: validation structure {r.source_index} tensor MAE {err:.2f} ppm")
