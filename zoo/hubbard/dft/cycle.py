"""The self-consistent DFT+U+V cycle as a sequence of resumable steps.

``scf<k>``: pw.x with the iteration-k parameters (k = 0: initial guess; else hp<k-1>'s
``parameters.out`` plus the activation rule). ``hp<k>``: hp.x on scf<k>'s ground state. A label
set is one (scf<k>, hp<k>) pair: occupations and ``param_in`` from scf<k>, ``param_out`` from
hp<k>. Job kind ``scf_test`` is a single pw.x run with few iterations (pseudopotential test).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from . import inputs, parsers, pieces
from .runner import (
    job_lock,
    load_status,
    mpi_cmd,
    next_step,
    now,
    read_json,
    record_failure,
    run_command,
    save_status,
    write_json_atomic,
    write_text_atomic,
)

PREFIX = "pwscf"
PSEUDO_ENV = "ZOO_PSEUDO_DIR"


def resolve_pseudo_dir(pseudo_dir: str | os.PathLike | None, files=()) -> str:
    """The pseudopotential directory: ``pseudo_dir``, else ``$ZOO_PSEUDO_DIR``; one ValueError
    naming what is missing (the variable, the directory or the first absent file)."""
    where = pseudo_dir or os.environ.get(PSEUDO_ENV)
    if not where:
        raise ValueError(
            f"pseudopotential directory: not given; pass pseudo_dir or set {PSEUDO_ENV}"
        )
    d = Path(where).expanduser().resolve()
    if not d.is_dir():
        raise ValueError(f"pseudopotential directory {d}: does not exist")
    missing = sorted(f for f in set(files) if not (d / f).is_file())
    if missing:
        raise ValueError(f"pseudopotential directory {d}: missing {', '.join(missing)}")
    return str(d)


def pseudo_md5(pseudo_dir: str, files) -> dict[str, str]:
    """md5 of each pseudopotential file (what the labels depend on, wherever it lives)."""
    return {
        f: hashlib.md5((Path(pseudo_dir) / f).read_bytes()).hexdigest() for f in sorted(set(files))
    }


def step_pseudo_dir(job: dict) -> str:
    """Directory a step reads the job's pseudopotentials from: ``$ZOO_PSEUDO_DIR`` when set
    (the queue can move between machines), else the one the job was created with; the files
    must match the md5s recorded at creation (jobs from before that record only names)."""
    files = job["pseudos"].values()
    d = resolve_pseudo_dir(os.environ.get(PSEUDO_ENV) or job.get("pseudo_dir"), files)
    want = job.get("pseudo_md5")
    if want:
        got = pseudo_md5(d, files)
        bad = sorted(f for f in want if got.get(f) != want[f])
        if bad:
            raise ValueError(
                f"pseudopotential directory {d}: {bad[0]} differs from the job's (md5)"
            )
    return d


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
    hp_split: bool = False,
    hp_q_per_piece: int | None = None,
) -> dict:
    """A validated job spec (canonical atom order; initial pairs checked in the 3x3x3 supercell)."""
    if kind not in ("sc", "scf_test"):
        raise ValueError(f"kind: expected 'sc' or 'scf_test', got {kind!r}")
    if n_iter < 1:
        raise ValueError(f"n_iter: must be >= 1, got {n_iter}")
    if hp_q_per_piece is not None and (
        not hp_split or not isinstance(hp_q_per_piece, int) or hp_q_per_piece < 1
    ):
        raise ValueError(
            f"hp_q_per_piece: expected an int >= 1 with hp_split=True, got {hp_q_per_piece!r}"
        )
    st = inputs.canonical_order(structure)
    hub = inputs.initial_hubbard(st, u_init or {})
    # Fails early with a clear message on missing pseudopotentials.
    inputs.pw_input(st, hub, pseudos=pseudos, pseudo_dir=pseudo_dir, settings=pw)
    used = {el: pseudos[el] for el in sorted(set(st["symbols"]))}
    job = {
        "id": job_id,
        "kind": kind,
        "purpose": purpose,
        "material": material,
        "structure": st,
        "pseudos": used,
        "pseudo_dir": str(pseudo_dir),
        "pseudo_md5": pseudo_md5(str(pseudo_dir), used.values()),
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
    if hp_split:  # how hp.x is run (pieces), not what it computes: not in the settings hash
        job["hp_split"] = True
    if hp_q_per_piece is not None:
        job["hp_q_per_piece"] = hp_q_per_piece
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
    """Run the next pending step (or hp.x piece) of the job in ``jobdir``; returns its name.

    Holds the job's step lock for the whole step (raises ``runner.StepBusy`` when another
    process holds it). A step found ``running`` was interrupted: it is noted in
    ``status["interruptions"]`` (not a failure) and rerun from a clean state.
    """
    jobdir = Path(jobdir).resolve()
    with job_lock(jobdir):
        return _run_step_locked(jobdir, np, nice, pw_exe, hp_exe)


def _run_step_locked(jobdir: Path, np: int, nice: int, pw_exe: str, hp_exe: str):
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
    prev = status["steps"][step]
    outdir = jobdir / "out"
    # A missing/different pseudopotential directory is the machine's fault, not the job's:
    # it raises here, before the step is marked running or an attempt is counted.
    pseudo_dir = step_pseudo_dir(job) if step.startswith("scf") else None
    if prev["state"] == "running":  # killed mid-step: its partial outputs are not trusted
        status.setdefault("interruptions", []).append({"step": step, "time": now()})
        shutil.rmtree(outdir / "HP", ignore_errors=True)
    split = step.startswith("hp") and bool(job.get("hp_split"))
    status["state"] = "running"
    status["steps"][step] = {"state": "running", "started": now(), "attempt": n_fail}
    if split and "pieces" in prev:
        status["steps"][step]["pieces"] = prev["pieces"]
    save_status(jobdir, status)
    sdir = jobdir / step
    if sdir.exists() and not split:
        shutil.rmtree(sdir)
    sdir.mkdir(exist_ok=True)
    try:
        if step.startswith("scf"):
            args = (k, n_fail, np, nice, pw_exe, pseudo_dir)
            ok, info = _run_scf(job, jobdir, sdir, outdir, *args)
        else:
            if not (outdir / f"{PREFIX}.save" / "occup.txt").exists():
                # The ground state is gone (e.g. deleted after a crash): redo scf<k> first;
                # pieces computed on the old ground state are dropped with it.
                status["steps"][f"scf{k}"] = {"state": "pending", "reason": "outdir missing"}
                status["steps"][step] = {"state": "pending"}
                shutil.rmtree(sdir, ignore_errors=True)
                save_status(jobdir, status)
                return step
            run = pieces.run_piece if split else _run_hp
            ok, info = run(job, jobdir, status, step, sdir, outdir, n_fail, np, nice, hp_exe)
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
    if info.get("partial"):  # one hp.x piece done, more to run
        status["steps"][step]["state"] = "partial"
        save_status(jobdir, status)
        return step
    status["steps"][step] = {**status["steps"][step], **info, "state": "done", "finished": now()}
    if next_step(status, steps) is None:
        status["state"] = "done"
    save_status(jobdir, status)
    if step.startswith("hp") or status["state"] == "done":
        shutil.rmtree(outdir, ignore_errors=True)  # wavefunctions are not needed any more
    return step


def _run_scf(job, jobdir, sdir, outdir, k, attempt, np, nice, pw_exe, pseudo_dir):
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir()
    hub = hubbard_for_iteration(job, jobdir, k)
    text = inputs.pw_input(
        job["structure"],
        hub,
        pseudos=job["pseudos"],
        pseudo_dir=pseudo_dir,
        prefix=PREFIX,
        outdir=str(outdir),
        settings=_pw_settings(job, attempt),
        qe_version=tuple(job.get("qe_version", (6, 7))),
    )
    write_text_atomic(sdir / "pw.in", text)
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


def hp_settings(job: dict, attempt: int) -> dict:
    """hp.x settings of attempt ``attempt`` (0: the job's; then its fallbacks in order)."""
    variants = [{}] + list(job.get("hp_fallback", []))
    return {**job["hp"], **variants[min(attempt, len(variants) - 1)]}


def _run_hp(job, jobdir, status, step, sdir, outdir, attempt, np, nice, hp_exe):
    hp = hp_settings(job, attempt)
    write_text_atomic(
        sdir / "hp.in", inputs.hp_input(prefix=PREFIX, outdir=str(outdir), settings=hp)
    )
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
