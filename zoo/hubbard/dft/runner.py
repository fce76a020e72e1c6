"""Resumable local runner: one directory per calculation, atomic JSON status, retry cap.

Layout of a job directory::

    <job>/job.json        the immutable spec (structure, settings, steps)
    <job>/status.json     written atomically (temp file + os.replace) after every transition
    <job>/<step>/         inputs and small outputs of one step (pw.x/hp.x stdout, occup.txt, ...)
    <job>/out/            QE outdir (wavefunctions; deleted after the step that last needs it)

A step is ``pending`` -> ``running`` -> ``done`` | ``failed``. A step found ``running`` when the
runner starts (the process was killed) is rerun from scratch; ``done`` steps are never redone.
A failed step is retried until the job's ``max_attempts`` is used up; then the job is ``failed``.

Kill safety: a step holds ``<job>/step.lock`` (``fcntl.flock``) from before it reads
``status.json`` until after its last write, so two steps of one job never run at once and no
status update is lost. The step process and its ``mpirun`` form one process group that dies with
the runner (``die_with_parent``: ``PR_SET_PDEATHSIG`` on Linux, and the runner kills the group
when it exits); ``mpirun`` itself gets ``SIGKILL`` when the step process dies.

Files are written through `zoo._io` (temp file + fsync + ``os.replace``).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ..._io import atomic_write_text as write_text_atomic

MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMP_NUM_THREADS": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
}


def now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write JSON to ``path`` atomically (the old file stays if serialisation fails)."""
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True))


class StepBusy(RuntimeError):
    """Another process holds the job's step lock (a step of this job is still running)."""


@contextlib.contextmanager
def job_lock(jobdir: Path) -> Iterator[None]:
    """Hold ``<jobdir>/step.lock`` exclusively for the block; raise StepBusy if it is taken.

    The lock belongs to this process's open file description, and ``subprocess`` closes
    inherited descriptors, so QE children never keep it alive after the step dies.
    """
    fh = open(Path(jobdir) / "step.lock", "a+")  # not "w": keep the holder's pid readable
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise StepBusy(f"{jobdir}: a step is running in process {fh.read().strip()}") from None
        fh.truncate(0)
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()  # releases the lock


PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies (False elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


STOP_GRACE_S = 3.0  # mpirun forwards SIGTERM to its ranks (each in its own process group)


def stop_group(pgid: int, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group ``pgid`` (``mpirun`` then stops its ranks), SIGKILL it after
    ``grace`` seconds if anything is left; no error when the group is already gone."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    t0 = time.time()
    while time.time() - t0 < grace:
        time.sleep(0.1)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def die_with_parent(parent_pid: int) -> None:
    """Make this step process and its process group die with the runner ``parent_pid``.

    Called first thing in a step process that the runner started as a group leader
    (``start_new_session``): SIGTERM/SIGHUP/SIGINT (and the runner's death, via the Linux
    parent-death signal) stop the group: ``mpirun`` gets SIGTERM and stops its pw.x/hp.x
    ranks, then whatever is left (this process included) gets SIGKILL. The step's status
    stays ``running`` and the next runner reruns it from a clean state.
    """

    def stop(signum, frame):  # noqa: ARG001
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # the group's SIGTERM reaches us too
        stop_group(os.getpgrp())

    if os.getpgrp() == os.getpid():  # never stop a group we do not lead (e.g. a shell's)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, stop)
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent_pid:  # the runner died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def nice_autogroup(nice: int, autogroup: Path = Path("/proc/self/autogroup")) -> bool:
    """Give this process's whole autogroup the scheduling weight of ``nice``.

    With Linux autogroups (``kernel.sched_autogroup_enabled``, the default of most distributions)
    ``nice`` only ranks processes inside one autogroup (one per ``setsid``), and every autogroup
    gets an equal share of the CPU: a step is started under ``setsid``, so its niced pw.x / hp.x
    would still take half of the machine from an interactive job. Writing the value to the
    autogroup makes it yield. Returns False where there is no autogroup (other kernels) or it cannot be set."""
    try:
        autogroup.write_text(f"{int(nice)}\n")
    except OSError:
        return False
    return True


def _child_dies_with_step() -> None:  # preexec_fn of mpirun/pw.x/hp.x
    set_parent_death_signal(signal.SIGKILL)


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
            full,
            cwd=cwd,
            stdin=fin,
            stdout=fout,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_child_dies_with_step,
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
    status.setdefault("failures", []).append({"step": step, "reason": reason, "time": now()})
    status["steps"][step] = {**status["steps"][step], "state": "failed", "reason": reason}
    if status["attempts"] >= max_attempts:
        status["state"] = "failed"
        status["reason"] = reason
    save_status(jobdir, status)
