"""The self-consistent DFT+U+V cycle as a sequence of resumable steps.

``scf<k>``: pw.x with the iteration-k parameters (k = 0: initial guess; else hp<k-1>'s
``parameters.out`` plus the activation rule). ``hp<k>``: hp.x on scf<k>'s ground state. A label
set is one (scf<k>, hp<k>) pair: occupations and ``param_in`` from scf<k>, ``param_out`` from
hp<k>. Job kind ``scf_test`` is a single pw.x run with few iterations (pseudopotential test).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from . import inputs, parsers
from .runner import (
    load_status,
    mpi_cmd,
    next_step,
    now,
    read_json,
    record_failure,
    run_command,
    save_status,
    write_json_atomic,
)

PREFIX = "pwscf"


def settings_hash(job: dict) -> str:
    """Hash of everything but the structure that determines the labels (12 hex digits)."""
    keys = ("pseudos", "pw", "hp", "hp_fallback", "u_init", "kind")
    blob = json.dumps({k: job.get(k) for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def make_job(
    job_id: str,
    *,
    material: str,
    structure: dict,
    pseudos: dict[str, str],
    pseudo_dir: str,
    pw: dict | None = None,
    hp: dict | None = None,
    hp_fallback: list[dict] | None = None,
    u_init: dict[str, float] | None = None,
    n_iter: int = 2,
    kind: str = "sc",
    purpose: str = "production",
    priority: int = 100,
    max_attempts: int = 3,
    meta: dict | None = None,
    qe_version: tuple[int, int] = (6, 7),
) -> dict:
    """A validated job spec (canonical atom order; initial pairs checked in the 3x3x3 supercell)."""
    if kind not in ("sc", "scf_test"):
        raise ValueError(f"kind: expected 'sc' or 'scf_test', got {kind!r}")
    if n_iter < 1:
        raise ValueError(f"n_iter: must be >= 1, got {n_iter}")
    st = inputs.canonical_order(structure)
    hub = inputs.initial_hubbard(st, u_init or {})
    # Fails early with a clear message on missing pseudopotentials.
    inputs.pw_input(st, hub, pseudos=pseudos, pseudo_dir=pseudo_dir, settings=pw)
    job = {
        "id": job_id,
        "kind": kind,
        "purpose": purpose,
        "material": material,
        "structure": st,
        "pseudos": {el: pseudos[el] for el in sorted(set(st["symbols"]))},
        "pseudo_dir": str(pseudo_dir),
        "pw": {**inputs.DEFAULT_PW, **(pw or {})},
        "hp": {**inputs.DEFAULT_HP, **(hp or {})},
        "hp_fallback": list(hp_fallback or []),
        "u_init": dict(u_init or {}),
        "n_iter": 1 if kind == "scf_test" else int(n_iter),
        "priority": int(priority),
        "max_attempts": int(max_attempts),
        "meta": dict(meta or {}),
        "qe_version": list(qe_version),
        "created": now(),
    }
    job["settings_hash"] = settings_hash(job)
    return job


def add_job(queue_dir: str | Path, job: dict) -> Path:
    """Create ``<queue_dir>/<id>/job.json`` unless it exists (never overwrites a job)."""
    jobdir = Path(queue_dir) / job["id"]
    if (jobdir / "job.json").exists():
        return jobdir
    jobdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(jobdir / "job.json", job)
    return jobdir


def step_names(job: dict) -> list[str]:
    if job["kind"] == "scf_test":
        return ["scf0"]
    return [f"{kind}{k}" for k in range(job["n_iter"]) for kind in ("scf", "hp")]


def hubbard_for_iteration(job: dict, jobdir: Path, k: int) -> list[tuple[int, int, float]]:
    """Iteration-k parameters: hp<k-1>'s parameters.out, plus every first-shell TM-ligand pair
    and ligand on-site term it lacks, activated at 1e-8 (same rule at every iteration)."""
    st = job["structure"]
    init = inputs.initial_hubbard(st, job["u_init"])
    if k == 0:
        return init
    hp_dir = jobdir / f"hp{k - 1}"
    if (hp_dir / "parameters.out").exists():  # QE 6.7
        prev = parsers.parse_parameters_out((hp_dir / "parameters.out").read_text())
    else:  # QE >= 7.1 writes the HUBBARD card
        prev = parsers.parse_hubbard_card((hp_dir / "HUBBARD.dat").read_text())[1]
    nat = len(st["symbols"])

    def key(i, j):  # (atom, neighbour element, distance): equal for symmetry-equivalent pairs
        return (
            i,
            st["symbols"][inputs.supercell_atom(j, nat)[0]],
            round(inputs.pair_distance(st, i, j), 4),
        )

    # hp.x lists one pair per symmetry class and pw.x completes the others; adding an
    # equivalent pair with another value makes pw.x stop ("Problem with Hubbard_V").
    have = {(i, j) for i, j, _ in prev} | {key(i, j) for i, j, _ in prev}
    extra = [(i, j, v) for i, j, v in init if (i, j) not in have and key(i, j) not in have]
    return prev + extra


def _pw_settings(job: dict, attempt: int) -> dict:
    pw = dict(job["pw"])
    if job["kind"] == "scf_test":
        pw["electron_maxstep"] = job["pw"].get("test_steps", 5)
        pw["conv_thr"] = 1e-14
    elif attempt:  # retry of a non-converged SCF: gentler mixing
        pw["mixing_beta"] = round(pw["mixing_beta"] / (2**attempt), 4)
    return pw


def run_step(jobdir: str | Path, *, np: int = 2, nice: int = 10, pw_exe="pw.x", hp_exe="hp.x"):
    """Run the next pending step of the job in ``jobdir``; returns the step name or None."""
    jobdir = Path(jobdir).resolve()
    job = read_json(jobdir / "job.json")
    steps = step_names(job)
    status = load_status(jobdir, steps)
    if status["state"] in ("done", "failed"):
        return None
    step = next_step(status, steps)
    if step is None:
        status["state"] = "done"
        save_status(jobdir, status)
        return None
    k = int(step.lstrip("scfhp"))
    n_fail = sum(1 for f in status["failures"] if f["step"] == step)
    status["state"] = "running"
    status["steps"][step] = {"state": "running", "started": now(), "attempt": n_fail}
    save_status(jobdir, status)
    sdir = jobdir / step
    if sdir.exists():
        shutil.rmtree(sdir)
    sdir.mkdir()
    outdir = jobdir / "out"
    try:
        if step.startswith("scf"):
            ok, info = _run_scf(job, jobdir, sdir, outdir, k, n_fail, np, nice, pw_exe)
        else:
            if not (outdir / f"{PREFIX}.save" / "occup.txt").exists():
                # The ground state is gone (e.g. deleted after a crash): redo scf<k> first.
                status["steps"][f"scf{k}"] = {"state": "pending", "reason": "outdir missing"}
                status["steps"][step] = {"state": "pending"}
                save_status(jobdir, status)
                return step
            ok, info = _run_hp(job, sdir, outdir, n_fail, np, nice, hp_exe)
    except (ValueError, OSError) as err:  # bad files/inputs: record, never crash-loop
        ok, info = False, {"reason": f"{type(err).__name__}: {err}"}
    if not ok:
        record_failure(jobdir, status, step, info["reason"], job["max_attempts"])
        if step.startswith("hp"):
            shutil.rmtree(outdir / "HP", ignore_errors=True)
        else:
            shutil.rmtree(outdir, ignore_errors=True)
        if status["state"] == "failed":
            shutil.rmtree(outdir, ignore_errors=True)
        return step
    status["steps"][step] = {**status["steps"][step], **info, "state": "done", "finished": now()}
    if next_step(status, steps) is None:
        status["state"] = "done"
    save_status(jobdir, status)
    if step.startswith("hp") or status["state"] == "done":
        shutil.rmtree(outdir, ignore_errors=True)  # wavefunctions are not needed any more
    return step


def _run_scf(job, jobdir, sdir, outdir, k, attempt, np, nice, pw_exe):
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir()
    hub = hubbard_for_iteration(job, jobdir, k)
    text = inputs.pw_input(
        job["structure"],
        hub,
        pseudos=job["pseudos"],
        pseudo_dir=job["pseudo_dir"],
        prefix=PREFIX,
        outdir=str(outdir),
        settings=_pw_settings(job, attempt),
        qe_version=tuple(job.get("qe_version", (6, 7))),
    )
    (sdir / "pw.in").write_text(text)
    write_json_atomic(sdir / "hubbard_in.json", [list(x) for x in hub])
    rc, wall = run_command(
        mpi_cmd(pw_exe, np), cwd=sdir, stdin=sdir / "pw.in", stdout=sdir / "pw.out", nice=nice
    )
    try:
        res = parsers.parse_pw_output((sdir / "pw.out").read_text(errors="replace"))
    except ValueError as err:
        return False, {"reason": f"pw.x rc={rc}: {err}"}
    info = {"wall_s": wall, "cpu_s": res["cpu_s"], "n_iter": res["n_iter"], "rc": rc}
    info.update(energy_ry=res["energy_ry"], total_mag=res["total_mag"], abs_mag=res["abs_mag"])
    if job["kind"] == "scf_test":
        acc = res["scf_accuracy"]
        info["scf_accuracy"] = acc
        if len(acc) < 3 or max(acc) > 1e2 or acc[-1] > 0.5 * acc[0]:
            return False, {"reason": f"pseudopotential test: SCF accuracy blew up/stalled {acc}"}
        return True, info
    if not res["converged"]:
        return False, {"reason": f"pw.x not converged after {res['n_iter']} iterations"}
    save = outdir / f"{PREFIX}.save"
    for src in (save / "occup.txt", outdir / f"{PREFIX}.HubbardV.txt"):
        if src.exists():
            shutil.copy(src, sdir / src.name)
    if not (sdir / "occup.txt").exists():
        return False, {"reason": "pw.x wrote no occup.txt"}
    for f in outdir.glob(f"{PREFIX}.wfc*"):  # distributed scratch copies; save/ keeps its own
        f.unlink()
    return True, info


def _run_hp(job, sdir, outdir, attempt, np, nice, hp_exe):
    variants = [{}] + list(job.get("hp_fallback", []))
    hp = {**job["hp"], **variants[min(attempt, len(variants) - 1)]}
    (sdir / "hp.in").write_text(inputs.hp_input(prefix=PREFIX, outdir=str(outdir), settings=hp))
    rc, wall = run_command(
        mpi_cmd(hp_exe, np), cwd=sdir, stdin=sdir / "hp.in", stdout=sdir / "hp.out", nice=nice
    )
    try:
        res = parsers.parse_hp_output((sdir / "hp.out").read_text(errors="replace"))
    except ValueError as err:
        return False, {"reason": f"hp.x rc={rc}: {err}"}
    dat = sdir / f"{PREFIX}.Hubbard_parameters.dat"
    params = (sdir / "parameters.out").exists() or (sdir / "HUBBARD.dat").exists()
    if not res["converged"] or not dat.exists() or not params:
        return False, {"reason": res["reason"] or f"hp.x rc={rc}: no Hubbard_parameters.dat"}
    parsers.parse_hubbard_parameters_dat(dat.read_text())
    return True, {"wall_s": wall, "cpu_s": res["cpu_s"], "hp_settings": hp, "rc": rc}
