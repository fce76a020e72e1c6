"""Command line of the local DFT queue.

    python -m zoo.hubbard.dft.queue seed   <queue_dir>   # add the planned jobs (idempotent)
    python -m zoo.hubbard.dft.queue run    <queue_dir> [--commit] [--exit-when-idle]
    python -m zoo.hubbard.dft.queue step   <job_dir>     # one step (used by run)
    python -m zoo.hubbard.dft.queue status <queue_dir>
    python -m zoo.hubbard.dft.queue export <queue_dir> [--commit]

``run`` takes a lock on ``<queue_dir>/queue.lock`` (one runner per queue), picks the runnable job
with the lowest (priority, id) and runs its next step in a fresh interpreter, so code fixes apply
to the next step without restarting the queue. Jobs added while it runs are picked up. After a
job finishes and after every finished hp.x step it exports ``data/hubbard/`` and, with
``--commit``, commits that folder only (one commit per finished hp.x step or job).

The step interpreter leads its own process group (with ``mpirun`` and the QE ranks); it dies
with the runner (``runner.die_with_parent``) and the runner kills the group when it exits or is
signalled, so no QE process outlives the queue. A step holds its job's lock (``step.lock``);
one that finds the lock taken exits with ``EXIT_BUSY`` and the runner waits.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .pieces import piece_names
from .runner import StepBusy, die_with_parent, nice_autogroup, now, read_json, stop_group

EXIT_BUSY = 75  # the job's step lock is held by another process
STEP_NICE = 10  # pw.x / hp.x yield to everything else on the machine

# Runs this CLI with ``zoo`` and ``zoo.hubbard`` as bare namespace packages: a step process then
# imports only the QE pipeline (numpy, ase), not the models (jax), i.e. ~1 s instead of ~15 s
# of CPU taken from the QE run on a 2-core machine.
_BOOT = """import sys, types
for name, path in {paths!r}:
    mod = types.ModuleType(name)
    mod.__path__ = [path]
    sys.modules[name] = mod
from zoo.hubbard.dft.queue import main
main(sys.argv[1:])
"""


def pipeline_command(*args: str) -> list[str]:
    """``python`` command line running this CLI with ``args`` without importing the models."""
    zoo_dir = Path(__file__).resolve().parents[2]
    paths = (("zoo", str(zoo_dir)), ("zoo.hubbard", str(zoo_dir / "hubbard")))
    return [sys.executable, "-c", _BOOT.format(paths=paths), *args]


REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "data" / "hubbard"


def list_jobs(queue_dir: Path) -> list[tuple[dict, dict]]:
    """(job, status) for every job directory, sorted by (priority, id)."""
    out = []
    for p in sorted(Path(queue_dir).glob("*/job.json")):
        job = read_json(p)
        sp = p.parent / "status.json"
        status = read_json(sp) if sp.exists() else {"state": "pending", "steps": {}}
        out.append((job, status))
    out.sort(key=lambda js: (js[0]["priority"], js[0]["id"]))
    return out


def _git_commit(paths: list[str], message: str) -> None:
    # wait for another git command, or a merge a maintainer is resolving, to finish: a commit
    # now would fail, and `git add` would stage the data into that merge
    busy = ("index.lock", "MERGE_HEAD", "REBASE_HEAD", "CHERRY_PICK_HEAD")
    for _ in range(360):
        if not any((REPO / ".git" / name).exists() for name in busy):
            break
        time.sleep(5)
    subprocess.run(["git", "add", *paths], cwd=REPO, check=False)
    subprocess.run(["git", "commit", "-q", "-m", message, "--", *paths], cwd=REPO, check=False)


def export(
    queue_dir: Path, commit: bool, message: str = "hubbard data: update", out: Path | None = None
) -> None:
    from .dataset import write_dataset

    out = DATA if out is None else out
    write_dataset(queue_dir, out)
    if commit:
        _git_commit(["data/hubbard"], message)


def run(
    queue_dir: Path,
    commit: bool,
    exit_when_idle: bool,
    idle_sleep: float = 120.0,
    np: int = 2,
    data_dir: Path = DATA,
) -> None:
    queue_dir.mkdir(parents=True, exist_ok=True)
    lock = open(queue_dir / "queue.lock", "a+")  # not "w": keep the owner's pid on failure
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        sys.exit(f"queue {queue_dir} is already being run by process {lock.read().strip()}")
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    n_hp_before: dict[str, int] = {}
    for job, status in list_jobs(queue_dir):
        n_hp_before[job["id"]] = sum(
            1
            for k, v in status.get("steps", {}).items()
            if k.startswith("hp") and v["state"] == "done"
        )
    while True:
        runnable = [(j, s) for j, s in list_jobs(queue_dir) if s["state"] not in ("done", "failed")]
        if not runnable:
            if exit_when_idle:
                return
            time.sleep(idle_sleep)
            continue
        job, _ = runnable[0]
        jobdir = queue_dir / job["id"]
        print(f"{now()} step {job['id']}", flush=True)
        rc = _run_step_process(jobdir, np)
        status = read_json(jobdir / "status.json") if (jobdir / "status.json").exists() else {}
        print(f"{now()} -> rc={rc} state={status.get('state')}", flush=True)
        if rc != 0:
            time.sleep(30)  # a crash of the step code itself: do not spin
        steps = status.get("steps", {})
        hp_done = [k for k, v in steps.items() if k.startswith("hp") and v["state"] == "done"]
        new_rows = len(hp_done) > n_hp_before.get(job["id"], 0)
        n_hp_before[job["id"]] = len(hp_done)
        if status.get("state") in ("done", "failed") or new_rows:
            # every finished (scf, hp) pair is a label set: export and commit it right away
            if status.get("state") in ("done", "failed"):
                msg = f"hubbard data: {job['id']} {status['state']} ({len(hp_done)} sc steps)"
            else:
                msg = f"hubbard data: {job['id']} labels of sc step {len(hp_done)}"
            subprocess.run(
                [sys.executable, "-m", "zoo.hubbard.dft.queue", "export", str(queue_dir)]
                + ["--data-dir", str(data_dir)]
                + (["--commit", "--message", msg] if commit else []),
                cwd=REPO,
            )


def _run_step_process(jobdir: Path, np: int) -> int:
    """One step in a fresh interpreter leading its own process group; the group never
    outlives this call (normal return, exception, SIGTERM/SIGINT/SIGHUP of the runner)."""
    cmd = pipeline_command("step", str(jobdir), "--np", str(np), "--parent-pid", str(os.getpid()))
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)

    def stop(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        return proc.wait()
    finally:
        stop_group(proc.pid)  # stragglers of a finished step, or all of it
        proc.wait()
        for s, h in old.items():
            signal.signal(s, h)


def _step_state(step: dict) -> str:
    """First letter of the state; hp.x pieces as ``[done/known]``."""
    if "pieces" not in step or step["state"] == "done":
        return step["state"][0]
    names = piece_names(step["pieces"])
    done = sum(step["pieces"].get(n, {}).get("state") == "done" for n in names)
    return f"{step['state'][0]}[{done}/{len(names)}]"


def _shown_state(jobdir: Path, state: str) -> str:
    """``state``, except that a "running" job whose step-lock holder is gone (the runner was
    stopped mid-step) shows as "stopped": its step restarts cleanly on the next ``run``."""
    if state != "running":
        return state
    try:
        pid = int((jobdir / "step.lock").read_text().strip())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return "stopped"
    return "stopped" if fields[0] in ("Z", "X") else state  # a zombie holds no lock


def print_status(queue_dir: Path) -> None:
    for job, status in list_jobs(queue_dir):
        steps = " ".join(f"{k}:{_step_state(v)}" for k, v in status.get("steps", {}).items())
        state = _shown_state(Path(queue_dir) / job["id"], status["state"])
        print(f"{job['priority']:4d} {job['id']:40s} {state:8s} {steps}")
        if status.get("failures"):
            print(f"      last failure: {status['failures'][-1]['reason'][:150]}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="zoo.hubbard.dft.queue")
    ap.add_argument("command", choices=["seed", "run", "step", "status", "export"])
    ap.add_argument("path", type=Path)
    ap.add_argument("--commit", action="store_true")
    ap.add_argument("--exit-when-idle", action="store_true")
    ap.add_argument("--message", default="hubbard data: update")
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.command == "seed":
        from .plan import seed

        seed(args.path)
    elif args.command == "run":
        run(
            args.path.resolve(),
            args.commit,
            args.exit_when_idle,
            np=args.np,
            data_dir=args.data_dir,
        )
    elif args.command == "step":
        from .cycle import run_step

        if args.parent_pid is not None:
            die_with_parent(args.parent_pid)
        if os.getsid(0) == os.getpid():  # started by `run` under setsid: an autogroup of its
            nice_autogroup(STEP_NICE)  # own; never renice the autogroup of a user's shell
        try:
            run_step(args.path, np=args.np, nice=STEP_NICE)
        except StepBusy as err:
            print(err, file=sys.stderr)
            sys.exit(EXIT_BUSY)
    elif args.command == "status":
        print_status(args.path)
    else:
        export(args.path.resolve(), args.commit, args.message, args.data_dir)


if __name__ == "__main__":
    main()
