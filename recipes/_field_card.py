"""Ship a finished field-potential run: model folder with card, metrics, split, parity plots.

`ship(run, out, material)` reads ``<run>/model``, ``metrics.json``, ``split.json`` and
``pairs.npz`` (written by `recipes.field_potential`), times one evaluation with and without
the response derivatives, writes ``out`` with `save_pretrained` and re-hashes the registry.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from zoo._hub_caution import write_caution
from zoo._registry import shipped, write_registry
from zoo.data.field import load_field
from zoo.graph import build_graph
from zoo.hub import load_folder_files
from zoo.train import parity_plot

#: issue 24 targets (validation MAE), per material
TARGETS = {
    "batio3": {"energy": 0.4, "forces": 15.0, "polarization": 0.04, "born_charges": 0.014,
               "polarizability": 0.016},
    "sio2": {"forces": 25.0, "born_charges": 0.005, "polarizability": 0.012},
}  # fmt: skip
LABELS = {
    "energy": ("Energy MAE (meV/atom)", "eV/atom"),
    "forces": ("Forces MAE (meV/Å)", "eV/Å"),
    "stress": ("Stress MAE (meV/Å³)", "eV/Å³"),
    "polarization": ("Polarization MAE, folded (e·Å)", "e·Å"),
    "born_charges": ("Born charges MAE (e)", "e"),
    "polarizability": ("Polarizability MAE (e·Å²/V)", "e·Å²/V"),
}
NAMES = {"batio3": ("BaTiO3", "tetragonal BaTiO3 3x3x3 supercells (135 atoms)"),
         "sio2": ("alpha-SiO2", "alpha-quartz 2x2x2 orthorhombic cells (72 atoms)")}  # fmt: skip


def time_evaluation(model, structure, repeats: int = 3) -> dict[str, float]:
    """Seconds per compiled call: energy + forces + stress + P, and with Z and alpha."""
    graph = build_graph([structure], float(model.config["backbone"]["r_max"]), dtype=model.dtype)
    out = {}
    for key, response in (("energy_forces", False), ("with_response", True)):
        call = eqx.filter_jit(lambda m, g, r=response: m(g, response=r))
        jax.block_until_ready(call(model, graph))
        start = time.perf_counter()
        for _ in range(repeats):
            jax.block_until_ready(call(model, graph))
        out[key] = (time.perf_counter() - start) / repeats
    out["ratio"] = out["with_response"] / out["energy_forces"]
    return out


def baselines(material: str, split: dict) -> dict[str, float]:
    """Validation MAE (metric units) of trivial predictors fitted on the training frames:
    mean energy per atom, zero forces, mean stress, the nominal ionic dipole (folded), the
    per-species mean Born tensor and the mean polarizability."""
    from zoo._field_config import NOMINAL_CHARGES
    from zoo.data.field import fold_polarization

    by_id = {r["index"]: r for r in load_field(material)}
    tr, va = ([by_id[i] for i in split[k]] for k in ("train", "validation"))

    def stack(frames, key):
        return np.stack([np.asarray(r[key], float) for r in frames])

    def per_atom_energy(frames):
        return np.array([r["energy"] / len(r["structure"]) for r in frames])

    species = np.concatenate([r["structure"].numbers for r in tr])
    born = np.concatenate([r["born_charges"] for r in tr])
    mean_born = {z: born[species == z].mean(0) for z in np.unique(species)}
    z_val = np.concatenate([r["structure"].numbers for r in va])
    ionic = [
        fold_polarization(
            np.array([NOMINAL_CHARGES[z] for z in r["structure"].numbers])
            @ r["structure"].positions - r["polarization"], r["structure"].cell)
        for r in va
    ]  # fmt: skip
    return {
        "energy": 1e3 * np.abs(per_atom_energy(va) - per_atom_energy(tr).mean()).mean(),
        "forces": 1e3 * np.abs(np.concatenate([r["forces"] for r in va])).mean(),
        "stress": 1e3 * np.abs(stack(va, "stress") - stack(tr, "stress").mean(0)).mean(),
        "polarization": np.abs(np.stack(ionic)).mean(),
        "born_charges": np.abs(np.stack([mean_born[z] for z in z_val])
                               - np.concatenate([r["born_charges"] for r in va])).mean(),
        "polarizability": np.abs(stack(va, "polarizability")
                                 - stack(tr, "polarizability").mean(0)).mean(),
    }  # fmt: skip


def _metric_rows(metrics: dict, targets: dict, baseline: dict) -> list[str]:
    rows = ["| quantity | MAE | RMSE | trivial baseline (MAE) | target (MAE) | gap to target |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for name, (label, _) in LABELS.items():
        m = metrics[name]
        goal = targets.get(name)
        gap = "—" if goal is None else ("met" if m["mae"] <= goal else f"{m['mae'] / goal:.1f}x")
        rows.append(f"| {label} | {m['mae']:.4g} | {m['rmse']:.4g} | {baseline[name]:.4g} | "
                    f"{'—' if goal is None else goal} | {gap} |")  # fmt: skip
    return rows


def status(summary: dict, metrics: dict, targets: dict, baseline: dict) -> list[str]:
    """A warning paragraph for weights trained for less than a few epochs or missing the
    targets by more than 3x."""
    gaps = [metrics[q]["mae"] / t for q, t in targets.items()]
    vs_base = [metrics[q]["mae"] / baseline[q] for q in targets]
    stages = _stages(summary)
    steps, epochs, minutes = (sum(st[k] for st in stages) for k in ("steps", "epochs", "minutes"))
    if epochs >= 20 and max(gaps) <= 3:
        return []
    return [
        f"**Short training.** These weights saw {steps} optimiser steps "
        f"({epochs:.1f} epochs) within {minutes:.0f} minutes of training "
        f"on shared CPU cores; the errors are {min(gaps):.0f}-{max(gaps):.0f}x the targets "
        f"({min(vs_base):.2f}-{max(vs_base):.2f} of the trivial baselines' errors): they "
        "measure that state, not "
        "the architecture's limit. Fit for testing workflows (MD under a field, response "
        "tensors) and qualitative trends; retrain with `recipes.field_potential` and a "
        "larger `--minutes` before relying on the numbers.",
        "",
    ]


def front_matter_of(name: str, material: str, metrics: dict) -> str:
    """The Hub front matter (`zoo._cards.card_data`) with the validation MAEs as
    ``model-index`` results."""
    from zoo._cards import card_data, eval_result, front_matter

    formula = NAMES[material][0]
    data = (f"Falletta et al. 2025 finite-field DFT (allegro-pol), {formula}", f"field-{material}")
    task = ("field-dependent-potential", f"{formula} energy and electric response")
    results = [eval_result(task, data, ("mae", label), round(metrics[q]["mae"], 5),
                           split="validation", subset=q) for q, (label, _) in LABELS.items()]  # fmt: skip
    tags = ["nequip", "interatomic-potential", "electric-field", "born-charges",
            "polarizability", material]  # fmt: skip
    return front_matter(card_data(name, license="mit", tags=tags, results=results))


def card_text(name: str, material: str, model, metrics: dict, summary: dict, split: dict,
              timing: dict) -> str:  # fmt: skip
    formula, what = NAMES[material]
    cfg = model.config
    bb = cfg["backbone"]
    baseline = baselines(material, split)
    lines = [front_matter_of(name, material, metrics).rstrip("\n"), ""]
    charges = ", ".join(f"{z}: {q:+d}" for z, q in zip(bb["species"], cfg["ionic_charges"]))
    lines += [
        f"# {name}",
        "",
        f"A field-dependent interatomic potential E(positions, cell, eps) for {formula} "
        f"(`zoo.field.FieldModel`, NequIP backbone). Energy, forces, stress, polarization "
        "P = -dE/deps, Born charges Z = dP/dr, polarizability alpha = dP/deps and Raman "
        "tensors COULOMB * d alpha/dr are all JAX derivatives of the one energy, so they are "
        "mutually consistent and obey the acoustic sum rule by construction.",
        "",
        "## Usage",
        "",
        "```python",
        "import zoo",
        "from zoo.calculator import Calculator",
        "",
        f'model = zoo.load("{name}")',
        "out = model.predict(atoms, field=[0.0, 0.0, 0.01])  # field in V/Å",
        "# energy (eV), forces (n, 3), stress (3, 3), polarization (3,) e·Å (cell dipole,",
        "# modulo the polarization quantum), born_charges (n, 3, 3) e [atom, P index,",
        "# displacement], polarizability (3, 3) e·Å²/V; raman=True adds raman_tensors Å²",
        f'atoms.calc = Calculator("{name}", field=[0.0, 0.0, 0.01])  # MD under a field',
        "```",
        "",
        "Input: periodic crystals of the training elements; a warning flags cells far from "
        "the training volume per atom or shorter interatomic distances.",
        "",
        f"## Metrics (validation: {summary['n_validation']} frames never trained on)",
        "",
        *_metric_rows(metrics, TARGETS[material], baseline),
        "",
        "Targets are Allegro-pol's published parity figures on these data sets (which "
        "include its training frames). Polarization errors are folded modulo the "
        "polarization quantum (difference reduced into the cell). Trivial baselines, fitted "
        "on the training frames: mean energy per atom, zero forces, mean stress, the "
        "nominal ionic dipole, the per-species mean Born tensor, the mean polarizability.",
        "",
        *[f"![{q}](parity_{q}.png)" for q in LABELS],
        "",
        *status(summary, metrics, TARGETS[material], baseline),
        "## How the field enters",
        f"Coupling `{cfg['coupling']}`: E = sum_i u_i(r) - eps . (sum_i p_i(r) + q_i r_i) - "
        "eps . (sum_i alpha_i(r)) . eps / 2, with per-atom energy u_i (0e), dipole p_i (1o) "
        "and symmetric polarizability alpha_i (0e + 2e) read out of one NequIP backbone, "
        f"and fixed integer ionic charges q ({charges}) so that wrapping an atom moves P by "
        "a whole quantum. Cost (one 135/72-atom frame, compiled, 2 shared CPU cores): "
        f"E+F+stress+P {timing['energy_forces'] * 1e3:.0f} ms, with Z and alpha "
        f"{timing['with_response'] * 1e3:.0f} ms ({timing['ratio']:.2f}x) at training time; "
        "the current CPU-time ratios to energy + forces alone are in benchmarks/README.md "
        "(`field.py`). Feeding eps "
        "as a 1x1o node input instead costs about 6x E+F for the same outputs (see "
        "docs/experiments.md), which is why the expansion is used.",
        "",
        "## Data",
        f"Finite-field Quantum ESPRESSO (PBE) frames of {what} from S. Falletta et al., "
        "Nat. Commun. 16, 4031 (2025), allegro-pol repository (MIT), `data/field` "
        "(README and licence notice there). Fixed split by source frame id (`split.json`): "
        f"{summary['n_train']} training, {summary['n_validation']} validation frames; every "
        "fifth source frame is held out of `data/field` altogether.",
        "",
        f"- training ids: {', '.join(map(str, split['train']))}",
        f"- validation ids: {', '.join(map(str, split['validation']))}",
        "",
        "## Training",
        f"NequIP {bb['num_layers']} layers, {bb['channels']} channels, lmax {bb['lmax']}, "
        f"r_max {bb['r_max']} Å, {cfg['dtype']}. Loss: per quantity MSE / reference^2 "
        f"(reference errors {summary['loss_reference_errors']}), weights "
        f"{summary['loss_weights']}. {training_text(summary)} on 2 shared CPU cores. "
        f"Per-quantity training metrics and the loss history (at most {HISTORY_ROWS} evenly "
        "spaced logged steps) are in `metrics.json`.",
        "",
        "## Reproduce",
        *reproduce_text(material, summary, bb),
        "",
    ]
    return "\n".join(lines)


def _stage(stage: dict) -> str:
    frames = stage.get("frames_per_step", 1)
    return (f"Adam, learning rate {stage['learning_rate']} cosine-decayed over the budget, "
            f"{frames} frame{'s' if frames > 1 else ''} per step: {stage['steps']} steps "
            f"({stage['epochs']:.1f} epochs) in {stage['minutes']:.1f} min")  # fmt: skip


def _stages(summary: dict) -> list[dict]:
    """The training runs behind the weights, first to last (``previous_training`` chain)."""
    stages = [summary]
    while stages[0].get("previous_training"):
        stages.insert(0, stages[0]["previous_training"])
    return stages


def training_text(summary: dict) -> str:
    """How the weights were trained, one sentence per run (from random weights first)."""
    stages = _stages(summary)
    if len(stages) == 1:
        return _stage(summary)
    parts = [_stage(s) for s in stages]
    return parts[0] + "; then continued from those weights: " + "; then ".join(parts[1:])


def backbone_options(backbone: dict) -> str:
    """The recipe's ``--channels``, ``--lmax``, ``--r-max`` for the entries of `backbone`
    (a model config's) that differ from its defaults."""
    from recipes.field_potential import BACKBONE

    flags = (("channels", "--channels"), ("lmax", "--lmax"), ("r_max", "--r-max"))
    return "".join(f" {flag} {backbone[key]:g}" for key, flag in flags
                   if backbone[key] != BACKBONE[key])  # fmt: skip


def reproduce_text(material: str, summary: dict, backbone: dict) -> list[str]:
    """The recipe commands that retrain the weights of `backbone` (the model config's; a
    continued run names the folder of the previous run's model)."""
    lines, stages = [], _stages(summary)
    for k, stage in enumerate(stages):
        cmd = f"python -m recipes.field_potential --material {material} "
        cmd += f"--minutes {round(stage.get('budget_minutes', stage['minutes']))}"
        if k == 0:
            cmd += backbone_options(backbone)
        if stage["learning_rate"] != 1e-2:
            cmd += f" --lr {stage['learning_rate']}"
        if stage.get("frames_per_step", 1) > 1:
            cmd += f" --frames {stage['frames_per_step']}"
        if k:
            cmd += f" --init runs/stage{k}/model"
        if k < len(stages) - 1:
            cmd += f" --run runs/stage{k + 1} --no-ship"
        lines.append(f"- `{cmd}`")
    return lines + ["", "from a clone of the repository (CPU; budgets are wall-clock minutes)."]


#: loss-history rows a shipped metrics.json keeps (the run folder keeps all)
HISTORY_ROWS = 200


def thinned(rows: list, n: int) -> list:
    """At most `n` of `rows`, evenly spaced, the first and the last included."""
    if len(rows) <= n:
        return list(rows)
    return [rows[i] for i in np.unique(np.linspace(0, len(rows) - 1, n).round().astype(int))]


def ship(run: Path, out: Path, material: str) -> Path:
    """Write the model folder `out` from the run folder `run`; re-hash the registry."""
    run = Path(run)
    model = load_folder_files(run / "model" / "config.json", run / "model" / "model.safetensors")
    stored = json.loads((run / "metrics.json").read_text())
    split = json.loads((run / "split.json").read_text())
    pairs = dict(np.load(run / "pairs.npz"))
    metrics = stored["validation"]
    summary = {k: v for k, v in stored.items() if k != "validation"}
    summary["history"] = thinned(summary.get("history", []), HISTORY_ROWS)
    frame = next(r for r in load_field(material) if r["index"] == split["validation"][0])
    timing_file = run / "timing.json"  # timed once per run: two compilations are not free
    if timing_file.is_file():
        timing = json.loads(timing_file.read_text())
    else:
        timing = time_evaluation(model, frame["structure"])
        timing_file.write_text(json.dumps(timing, indent=1) + "\n")
    name = f"{material}-field"
    card = card_text(name, material, model, metrics, summary, split, timing)
    files = {
        "metrics.json": json.dumps(
            {"validation": metrics, "timing_seconds": timing, **summary}, indent=1
        )
        + "\n",  # fmt: skip
        "split.json": json.dumps(split, indent=1) + "\n",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for q, (label, unit) in LABELS.items():
            pred, true = pairs[q]
            path = Path(tmp) / f"parity_{q}.png"
            parity_plot(pred[:, None], true[:, None], path, f"{name}: {q} (validation)", unit)
            files[path.name] = path.read_bytes()
        folder = model.save_pretrained(out, card=card, extra_files=files, overwrite=True)
    # the registry's preview caution travels in the weights file (zoo._hub_caution)
    write_caution(Path(folder) / "model.safetensors", shipped(name).caution)
    write_registry(Path(out).parent)
    return folder
