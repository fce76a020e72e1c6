"""Model card of ``batio3-response`` (Hub layout), rendered from the shipped run's metrics by
`recipes.batio3_response`."""

from __future__ import annotations

from recipes._batio3_compare import section as backbone_section

ARCHITECTURE_NAMES = {"nequip": "NequIP", "mace": "MACE", "allegro": "Allegro"}


def _results(metrics: dict) -> list[tuple[str, str, str, float]]:
    """(task, metric type, label, value) of the shipped model on the validation split."""
    v = metrics["validation"]
    born, raman = v["born_charges"]["asr"], v["raman_tensors"]["asr"]
    rows = [("Born effective charges", "mae", "Born charges MAE (e)", born["mae"]),
            ("Born effective charges", "rmse", "Born charges RMSE (e)", born["rmse"]),
            ("Raman tensors", "mae", "Raman tensors MAE (Å²)", raman["mae"]),
            ("Raman tensors", "r2", "Raman tensors R²", raman["r2"])]  # fmt: skip
    glob = metrics.get("global_heads")
    if glob is not None:
        for name, task, unit in (("dielectric", "Dielectric tensor", ""),
                                 ("chi2", "chi(2)", " (pm/V)")):  # fmt: skip
            m = glob[name]["model_full_predict"]
            rows.append((task, "mae", f"{task} MAE{unit}", m["mae"]))
    return rows


def card_front_matter(
    results: list[tuple[str, str, str, float]], architecture: str = "nequip"
) -> str:
    """The Hub front matter (`zoo._cards.card_data`) with the validation `results`."""
    from zoo._cards import card_data, eval_result, front_matter

    data = ("BaTiO3 400 K DFPT ensemble (e3response, L. Bastonero)", "batio3-e3response")
    evals = [eval_result(("tensor-regression", task), data, (kind, label), round(value, 4),
                         split="validation", subset=task) for task, kind, label, value in results]  # fmt: skip
    tags = [architecture, "born-charges", "raman", "dielectric", "batio3"]
    return front_matter(card_data("batio3-response", license="gpl-3.0", tags=tags, results=evals))


def card_text(
    metrics: dict,
    split: dict,
    others: dict[str, tuple[float, float]],
    learning: dict | None = None,
    backbones: dict | None = None,
) -> str:
    """The model card (Hub layout) of the shipped run's `metrics`; `others` are the other
    runs' (Born MAE, Raman R2) on the same split; `learning` the results of
    `recipes.learning_curves` (``docs/learning_curves.json``) and `backbones` the comparison of
    `recipes._batio3_compare` (``docs/batio3_backbones.json``), if any."""

    results = _results(metrics)
    architecture = metrics.get("settings", {}).get("architecture", "nequip")
    index = card_front_matter(results, architecture)
    rows = "\n".join(f"| {label} | {value:.4f} |" for _, _, label, value in results)
    other = "; ".join(f"{f}: Born MAE {a:.4f} e, Raman R² {b:.4f}" for f, (a, b) in others.items())
    v = metrics["validation"]
    return CARD.format(
        formulation=metrics["formulation"], front_matter=index, rows=rows,
        architecture=ARCHITECTURE_NAMES[architecture],
        others=f"Other runs on the same split ({other}): see docs/experiments.md."
        if others else "",
        asr_z=v["born_charges"]["asr_violation_max_abs_sum"],
        asr_r=v["raman_tensors"]["asr_violation_max_abs_sum"],
        train=", ".join(split["train"]), val=", ".join(split["validation"]),
        wall=metrics["train_wall_time_s"] / 60, epochs=metrics["epochs_run"],
        global_section=_global_section(metrics.get("global_heads")),
        learning_section=_learning_section(learning) + backbone_section(backbones),
    )  # fmt: skip


def _learning_section(results: dict | None) -> str:
    """The fine-tuning learning curve: validation Born MAE against training frames."""
    if results is None:
        return ""
    mae = {(r["mode"], r["n_train"]): r["validation"]["mae"] for r in results["runs"]}
    sizes = sorted({n for _, n in mae})
    rows = "\n".join(
        "| " + " | ".join([str(n)] + [f"{mae[m, n]:.3f}" if (m, n) in mae else "-"
                                      for m in ("finetune", "scratch")]) + " |"
        for n in sizes
    )  # fmt: skip
    return LEARNING_CARD.format(
        steps=results["steps"], untrained=results["untrained"]["finetune"]["mae"], rows=rows,
        n_val=len(results["validation_frames"]),
    )  # fmt: skip


def _global_section(m: dict | None) -> str:
    if m is None:
        return "The shipped model has no dielectric or χ(2) head.\n"
    return GLOBAL_CARD.format(
        n_train=m["n_train"], n_val=m["n_validation"], steps=m["steps"],
        excluded=", ".join(m["excluded_unphysical_dielectric"]),
        eps=m["dielectric"]["training_mean_baseline"]["mae"],
        chi=m["chi2"]["training_mean_baseline"]["mae"],
    )  # fmt: skip


GLOBAL_CARD = """\
## Dielectric tensor and χ(2)
Linear global heads on the mean-pooled features of the frozen per-atom model
(`python -m recipes.batio3_global`, run by this recipe), fit by full-batch Adam ({steps}
steps) on {n_train} training structures, validated on {n_val}. Structures {excluded} are
excluded from these two targets (not from Born/Raman): one diagonal element of their stored
ε∞ is ≈ -64 and |χ(2)| ≈ 4e5, a failed DFPT field direction. Training-mean baselines:
ε∞ MAE {eps:.4f}, χ(2) MAE {chi:.4f} pm/V. ε∞ varies little across the 400 K ensemble
(diagonal 5.0-5.2), so the model is only slightly better than the training mean; χ(2)
halves the baseline error. The source does not state the χ(2) unit: pm/V is the unit QE
ph.x prints it in.
"""


LEARNING_CARD = """
## Fine-tuning on new data: what the pretrained weights are worth
Born MAE (e) on the {n_val} validation frames of `batio3-field` (finite-field tetragonal
BaTiO3, `data/field`) after fine-tuning this model with `zoo.finetune` on N field frames,
against the same architecture trained from random weights on the same frames, {steps}
optimiser steps each (`python -m recipes.learning_curves`; docs/learning_curves.md).
Without any field frame this model has MAE {untrained:.3f} e there.

| training frames | fine-tuned | from scratch |
|---:|---:|---:|
{rows}
"""


CARD = """{front_matter}
# batio3-response

Born effective charges Z* (e, `[atom, field, displacement]`), Raman tensors (Å²,
`[atom, displacement, field, field]`, Quantum ESPRESSO convention (Ω/4π) dε∞/dr), the
dielectric tensor ε∞ and χ(2) (pm/V) of BaTiO3 supercells, from a {architecture} backbone
(`zoo.model.ResponseModel`, formulation **{formulation}**). The acoustic sum rule is imposed
by default (mean over atoms subtracted per structure; `predict(..., acoustic_sum_rule=False)`
turns it off).

## Usage

```python
import zoo

model = zoo.load("batio3-response")
out = model.predict(atoms)  # born_charges (n, 3, 3), raman_tensors (n, 3, 3, 3),
                            # dielectric (3, 3), chi2 (3, 3, 3)
```

Input: periodic Ba-Ti-O crystals (other elements and non-periodic structures are refused);
a warning flags cells far from the training volume per atom.

## Metrics (validation: 8 structures, 1080 atoms, sum rule on)

| metric | value |
|---|---|
{rows}

Baselines on the same task: species-mean Born MAE 0.36 e, Raman R² 0.00; the published
e3response NequIP config: Born MAE 0.35 e, Raman R² 0.84. {others}

![Born charges, validation](parity_born_charges.png)
![Raman tensors, validation](parity_raman_tensors.png)

## Data
40 DFPT (Quantum ESPRESSO) 3x3x3 supercells (135 atoms, cubic a ≈ 12.0 Å) of the 400 K
ensemble of the e3response project (L. Bastonero; GPL-3.0), `data/batio3` (README there).
Fixed split by structure id (`split.json`): 32 training, 8 validation. Normalisation
(per-species shift of the 0e part, one scale per target) fitted on training only.

- training ids: {train}
- validation ids: {val}

## Conventions
- Born charges are field first, `Z[i, a, b] = dP_a / dr_ib` (e), as in `zoo.FieldModel`
  and `data/field`. The DFPT files store the transpose and `zoo.data.batio3` transposes them
  on reading. The order was settled on the 59 finite-field BaTiO3 frames of `data/field`
  (explicit order, never used to train this model): the antisymmetric part of the
  predicted Z* has MAE 0.041 e in this order and 0.133 e transposed (its sign would be
  reversed); the symmetric part, 0.102 e, does not depend on the order. Whole-tensor MAE
  on those tetragonal frames: 0.108 e (`tests/test_born_convention.py` checks it).
- Raman: every cell has the same volume (1728.07 Å³), so the data cannot tell the 1/Ω
  conventions apart; the magnitudes (mean |R| 1.55, ε∞ ≈ 5.1) match the QE convention
  R = -(e²/4πε0) d3E/dr deps deps (Å²).
- Acoustic sum rule of the unconstrained model on validation: max |Σ_i Z_i| = {asr_z:.2f} e,
  max |Σ_i R_i| = {asr_r:.1f} Å² per 135-atom structure (removed by the default constraint).

{global_section}{learning_section}
## Training
{epochs} epochs, {wall:.1f} min on 2 CPU cores; settings and per-target metrics (with and
without the sum rule) in `metrics.json`.

## Reproduce
`python -m recipes.batio3_response` from a clone of the repository (CPU).
"""
