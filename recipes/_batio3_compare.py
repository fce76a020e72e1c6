"""Backbone comparison of ``batio3-response`` at a fixed budget: collected from finished
comparison runs into ``docs/batio3_backbones.json`` and rendered as a card section.

    python -m recipes.batio3_response --formulation direct --backbone mace --epochs 8 \\
        --seed 1 --no-ship --out runs/cmp_batio3          # one run per backbone and seed
    python -m recipes._batio3_compare runs/cmp_batio3     # -> docs/batio3_backbones.json
    python -m recipes.batio3_response --card-only         # card with the comparison
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "batio3_backbones.json"
NAMES = {"nequip": "NequIP", "mace": "MACE", "allegro": "Allegro"}


def predict_cpu_seconds(model_dir: Path, structure, repeats: int = 3) -> float:
    """Median process CPU seconds of one warm `predict` of `structure` (compilation excluded)."""
    import zoo

    model = zoo.load(model_dir)
    model.predict(structure)  # compile
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        model.predict(structure)
        times.append(time.process_time() - t0)
    return sorted(times)[len(times) // 2]


def collect(out_root: Path) -> dict:
    """One row per finished run under `out_root` (``<formulation>[-<arch>][-seed<k>]``)."""
    from recipes.batio3_response import DATA_DIR, load_batio3, load_split

    records = load_batio3(DATA_DIR)
    by_id = {r["id"]: r for r in records}
    first_val = by_id[load_split(records)["validation"][0]]["structure"]
    rows = []
    for path in sorted(out_root.glob("*/metrics.json")):
        m = json.loads(path.read_text())
        if "settings" not in m or not (path.parent / "model").is_dir():
            continue  # an unfinished run
        v, s = m["validation"], m["settings"]
        rows.append({
            "run": path.parent.name, "formulation": m["formulation"],
            "architecture": s.get("architecture", "nequip"), "seed": s.get("seed", 0),
            "epochs": m["epochs_run"], "n_parameters": m["n_parameters"],
            "train_minutes": round(m["train_wall_time_s"] / 60, 1),
            "born_mae": v["born_charges"]["asr"]["mae"],
            "raman_r2": v["raman_tensors"]["asr"]["r2"],
            "raman_mae": v["raman_tensors"]["asr"]["mae"],
            "predict_cpu_s": round(predict_cpu_seconds(path.parent / "model", first_val), 3),
        })  # fmt: skip
    if not rows:
        raise SystemExit(f"no finished run (metrics.json + model/) under {out_root}")
    return {"out": out_root.name, "load_average": round(os.getloadavg()[0], 1), "runs": rows}


def section(results: dict | None) -> str:
    """The card section: one row per run, validation Born MAE and Raman R2 after the same
    budget (empty without results)."""
    if results is None:
        return ""
    rows = "\n".join(
        f"| {NAMES[r['architecture']]} | {r['seed']} | {r['epochs']} | {r['n_parameters']:,} | "
        f"{r['train_minutes']:.1f} | {r['predict_cpu_s']:.2f} | {r['born_mae']:.4f} | "
        f"{r['raman_r2']:.3f} |"
        for r in sorted(results["runs"], key=lambda r: (r["architecture"] != "nequip",
                                                         r["architecture"], r["seed"]))
    )  # fmt: skip
    by_arch: dict[str, list[float]] = {}
    for r in results["runs"]:
        by_arch.setdefault(r["architecture"], []).append(r["born_mae"])
    best = min(by_arch, key=lambda a: sum(by_arch[a]) / len(by_arch[a]))
    return COMPARISON.format(rows=rows, load=results["load_average"], best=NAMES[best])


COMPARISON = """
## Backbones at a fixed budget
The direct formulation on each backbone (`--backbone nequip | mace | allegro`, settings in
`recipes/batio3_response.py`), same split, same 8-epoch budget, validation metrics with the
sum rule imposed; train time on 2 shared CPU cores, predict time = process CPU seconds of one
warm prediction of a 135-atom validation structure (machine load average ~{load} while
measuring, so times compare within the table only). Lowest Born MAE at this budget (mean
over seeds): {best}.

| backbone | seed | epochs | parameters | train (min) | predict CPU (s) | Born MAE (e) | Raman R² |
|---|---:|---:|---:|---:|---:|---:|---:|
{rows}

`python -m recipes.batio3_response --formulation direct --backbone <name> --epochs 8
--seed <k> --no-ship --out runs/cmp_batio3`, then `python -m recipes._batio3_compare
runs/cmp_batio3`.
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder of the comparison runs")
    args = p.parse_args(argv)
    results = collect(args.out)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(RESULTS)
    print(section(results))


if __name__ == "__main__":
    main()
