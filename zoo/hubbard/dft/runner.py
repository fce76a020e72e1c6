"""Resumable local runner: one directory per calculation, atomic JSON status, retry cap.

Layout of a job directory::

    <job>/job.json        the immutable spec (structure, settings, steps)
    <job>/status.json     written atomically (temp file + os.replace) after every transition
    <job>/<step>/         inputs and small outputs of one step (pw.x/hp.x stdout, occup.txt, ...)
    <job>/out/            QE outdir (wavefunctions; deleted after the step that last needs it)

A step is ``pending`` -> ``running`` -> ``done`` | ``failed``. A step found ``running`` when the
runner starts (the process was killed) is rerun from scratch; ``done`` steps are never redone.
A failed step is retried until the job's ``max_attempts`` is used up; then the job is ``failed``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMP_NUM_THREADS": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
}


def now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write JSON to ``path`` via a temp file in the same directory and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str | os.PathLike):
    with open(path) as f:
        return json.load(f)


def load_status(jobdir: Path, steps: list[str]) -> dict:
    path = jobdir / "status.json"
    if path.exists():
        status = read_json(path)
    else:
        status = {"state": "pending", "attempts": 0, "failures": [], "steps": {}}
    for s in steps:
        status["steps"].setdefault(s, {"state": "pending"})
    return status


def save_status(jobdir: Path, status: dict) -> None:
    write_json_atomic(jobdir / "status.json", status)


def next_step(status: dict, steps: list[str]) -> str | None:
    """First step that is not done (``running`` counts as interrupted -> rerun)."""
    for s in steps:
        if status["steps"][s]["state"] != "done":
            return s
    return None


def run_command(
    cmd: list[str],
    *,
    cwd: Path,
    stdin: Path,
    stdout: Path,
    nice: int = 10,
    timeout: float | None = None,
) -> tuple[int, float]:
    """Run ``cmd`` under ``nice`` with the MPI environment; returns (returncode, wall seconds)."""
    env = {**os.environ, **MPI_ENV}
    full = ["nice", "-n", str(nice), *cmd] if nice else list(cmd)
    t0 = time.time()
    with open(stdin) as fin, open(stdout, "w") as fout:
        proc = subprocess.Popen(
            full, cwd=cwd, stdin=fin, stdout=fout, stderr=subprocess.STDOUT, env=env
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = -9
    return rc, time.time() - t0


def mpi_cmd(exe: str, np: int = 2, npool: int = 2, mpirun: str = "mpirun") -> list[str]:
    """``mpirun -np N exe -nk P`` (or the bare executable when np <= 1)."""
    if np <= 1:
        return [exe]
    return [mpirun, "-np", str(np), exe, "-nk", str(npool)]


def record_failure(jobdir: Path, status: dict, step: str, reason: str, max_attempts: int) -> None:
    """Mark ``step`` failed with ``reason``; the job fails once ``max_attempts`` are used."""
    status["attempts"] = status.get("attempts", 0) + 1
    status["failures"].append({"step": step, "reason": reason, "time": now()})
    status["steps"][step] = {**status["steps"][step], "state": "failed", "reason": reason}
    if status["attempts"] >= max_attempts:
        status["state"] = "failed"
        status["reason"] = reason
    save_status(jobdir, status)
