"""ML self-consistent DFT+U+V loop vs the hp.x cycle on one structure of the data set.

    .venv/bin/python benchmarks/hubbard_ml_loop.py --pseudo-dir DIR [--path p111-NiO-sym-e-0.030]

Runs :func:`zoo.hubbard.self_consistent_hubbard` (pw.x -> model -> pw.x ...) from the same
structure, pw.x settings, pseudopotentials and starting guess (U(TM) = 4 eV, first-shell V
switched on) as the queue job ``--path`` of ``data/hubbard``, and compares the converged U/V
with hp.x's values at the last self-consistent iteration of that job, and the pw.x wall time
of the ML loop with the pw.x + hp.x wall time of the hp.x cycle (``manifest.json``). Choose a
path the model did not train on (the recipe's test paths). Needs pw.x (Quantum ESPRESSO) and
the job's pseudopotential files in ``--pseudo-dir`` (or ``$ZOO_PSEUDO_DIR``).
Writes ``<workdir>/comparison.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "hubbard"


def main(argv=None) -> dict:
    import zoo
    from zoo.hubbard import run_pw_local, self_consistent_hubbard

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default="p111-NiO-sym-e-0.030", help="sc path (job id)")
    ap.add_argument("--model", default="hubbard-uv")
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "hubbard_ml_loop")
    ap.add_argument("--tol", type=float, default=0.01, help="eV")
    ap.add_argument("--max-iter", type=int, default=8)
    ap.add_argument("--nice", type=int, default=10, help="niceness of pw.x (2 MPI ranks)")
    ap.add_argument("--pseudo-dir", type=Path, default=os.environ.get("ZOO_PSEUDO_DIR"),
                    help="folder of the job's pseudopotentials (default $ZOO_PSEUDO_DIR)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.pseudo_dir is None or not Path(args.pseudo_dir).is_dir():
        ap.error(f"--pseudo-dir: not a folder ({args.pseudo_dir}); pass it or set ZOO_PSEUDO_DIR")

    rows = [json.loads(x) for x in (DATA / "labels.jsonl").read_text().splitlines() if x]
    rows = [r for r in rows if r["sc_path"] == args.path]
    if not rows:
        raise SystemExit(f"--path: no rows of {args.path!r} in {DATA / 'labels.jsonl'}")
    job = json.loads((DATA / "manifest.json").read_text())["jobs"][args.path]
    last = max(r["iteration"] for r in rows)
    st = rows[0]["structure"]
    tms = sorted({r["atom_1_element"] for r in rows if r["atom_1_manifold"] == "3d"})
    model = zoo.load(args.model)
    t0 = time.perf_counter()
    res = self_consistent_hubbard(
        model, st, {m: 4.0 for m in tms}, run_pw_local(nprocs=2, npool=2, nice=args.nice),
        workdir=args.workdir / args.path, pseudos=rows[0]["settings"]["pseudos"],
        pseudo_dir=args.pseudo_dir, pw_settings=dict(job["pw"]), tol=args.tol, max_iter=args.max_iter,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    hp_cycle = _hp_cycle(rows, job["steps"], last)
    # the loop's last prediction by (i, j_supercell), the key of hp.x's rows
    ml = {f"U/{i}": u for i, u in res.U.items()}
    ml |= {f"V/{k[0]}-{j}": res.V[k] for k, j in res.prediction.sc_index.items() if k in res.V}
    hp_last = hp_cycle["iterations"][-1]["labels"]
    rel = {key: (ml[key] - hp) / hp for key, hp in hp_last.items() if key in ml}
    out = {
        "path": args.path,
        "model": args.model,
        "ml_loop": {
            "converged": res.converged,
            "iterations": len(res.history),
            "U": res.U,
            "wall_s": wall,
            "pw_wall_s": sum(h["pw_wall_s"] for h in res.history),
            "predict_s": sum(h["predict_s"] for h in res.history),
            "history": [
                {k: h[k] for k in ("U_in", "U", "V", "max_change_ev", "pw_wall_s", "predict_s")}
                for h in res.history
            ],
        },
        "hp_cycle": hp_cycle,
        "relative_difference": rel,
        "max_abs_relative_difference": {
            p: float(np.max(np.abs([v for k, v in rel.items() if k.startswith(p)] or [np.nan])))
            for p in ("U", "V")
        },
    }
    path = args.workdir / args.path / "comparison.json"
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(json.dumps(out, indent=1, default=str))
    return out


def _hp_cycle(rows: list[dict], steps: dict, last: int) -> dict:
    """The queue job's hp.x cycle: per iteration the TM U and TM-O V labels (``"U/i"``,
    ``"V/i-j_supercell"``: eV) and the pw.x / hp.x wall and CPU times (``manifest.json``)."""
    per_it = []
    for k in range(last + 1):
        labels = {
            f"{r['param_type']}/{r['id'].rsplit('/', 1)[1]}": r["param_out"]
            for r in rows
            if r["iteration"] == k and r["atom_1_manifold"] == "3d"
            and (r["param_type"] == "U" or r.get("first_shell"))
        }  # fmt: skip
        times = {f"{s}_{t}_s": steps[f"{s if s == 'hp' else 'scf'}{k}"][f"{t}_s"] or 0
                 for s in ("pw", "hp") for t in ("wall", "cpu")}  # fmt: skip
        per_it.append({"iteration": k, "labels": labels, **times})
    total = {key: sum(it[key] for it in per_it) for key in per_it[0] if key.endswith("_s")}
    return {"n_iterations": last + 1, **total, "iterations": per_it}


if __name__ == "__main__":
    main()
