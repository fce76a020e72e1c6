"""Resume a job from the committed data set after its queue directory was lost.

The queue lives in scratch, which dies with the machine; the data set (``labels.jsonl`` +
``manifest.json``) is committed after every finished (scf<k>, hp<k>) pair. What the next
iteration needs from hp<k> is only its ``parameters.out`` (U of each TM and the V hp.x hands
on), and those are exactly the iteration-k label rows of TM sites. So a job's finished
iterations can be marked done again (``"restored": true``) with ``parameters.out`` rebuilt
from its rows, and the job continues at scf<k+1> instead of rerunning everything.
Restored iterations keep their committed rows (``dataset.write_dataset`` does not regenerate
them: their pw.x/hp.x outputs are gone).
"""

from __future__ import annotations

from pathlib import Path

from .runner import load_status, read_json, save_status, write_text_atomic
from .structures import TRANSITION_METALS


def parameters_out_text(rows: list[dict]) -> str:
    """hp.x ``parameters.out`` of one iteration, rebuilt from its label rows.

    TM on-site U (``Hubbard_V(i,i,1)``) and every V row listed from a TM (the rows are exactly
    the pairs hp.x wrote to ``parameters.out``, see ``dataset.rows_for_step``).
    """
    lines = []
    for r in sorted(rows, key=lambda r: (r["atom_1_idx"], r["param_type"] != "U", r["dist_bohr"])):
        if r["atom_1_element"] not in TRANSITION_METALS:
            continue
        j = r["atom_1_idx"] if r["param_type"] == "U" else r["atom_2_sc_idx"]
        lines.append(f"{r['atom_1_idx']:6d} {j:8d} {r['param_out']:12.4f}")
    if not lines:
        raise ValueError("parameters.out: no TM rows to rebuild it from")
    return " # Atom 1  Atom 2  Hubbard V (eV)\n" + "\n".join(lines) + "\n"


def restore_job(jobdir: str | Path, record: dict, rows: list[dict]) -> list[int]:
    """Mark the iterations of ``record`` (its manifest entry) that have rows as done.

    Only a job without ``status.json`` is touched (never a live queue entry); iterations are
    restored in order and stop at the first one without a finished hp step or without rows.
    Returns the restored iteration numbers.
    """
    jobdir = Path(jobdir)
    if (jobdir / "status.json").exists():
        return []
    job = read_json(jobdir / "job.json")
    if job["kind"] != "sc" or record.get("settings_hash") != job["settings_hash"]:
        return []
    steps = [f"{s}{k}" for k in range(job["n_iter"]) for s in ("scf", "hp")]
    status = load_status(jobdir, steps)
    done = []
    for k in range(job["n_iter"]):
        it_rows = [r for r in rows if r["sc_path"] == job["id"] and r["iteration"] == k]
        rec = record.get("steps", {})
        if not it_rows or any(rec.get(f"{s}{k}", {}).get("state") != "done" for s in ("scf", "hp")):
            break
        hp_dir = jobdir / f"hp{k}"
        hp_dir.mkdir(exist_ok=True)
        write_text_atomic(hp_dir / "parameters.out", parameters_out_text(it_rows))
        for s in ("scf", "hp"):
            status["steps"][f"{s}{k}"] = {**rec[f"{s}{k}"], "state": "done", "restored": True}
        done.append(k)
    if done:
        status["state"] = "done" if len(done) == job["n_iter"] else "pending"
        save_status(jobdir, status)
    return done
