"""The queue survives SIGKILL of its runner: real processes, fake mpirun/pw.x/hp.x on PATH."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo.hubbard.dft import cycle, structures
from zoo.hubbard.dft import queue as queue_cli
from zoo.hubbard.dft.plan import PSEUDOS
from zoo.hubbard.dft.runner import StepBusy, job_lock, read_json

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "qe"

# Every fake QE process records its pid and whether another one was alive when it started.
PROLOGUE = f"""#!{sys.executable}
import os, re, shutil, sys, time
from pathlib import Path
fake = Path(os.environ["FAKE_DIR"])
def alive(pid):
    try:
        return Path(f"/proc/{{pid}}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
def start(name):
    others = [p for p in fake.glob("active.*") if alive(int(p.name.split(".")[1]))]
    if others:
        (fake / "overlap").write_text(" ".join(p.name for p in others))
    (fake / f"active.{{os.getpid()}}").write_text(name)
    with open(fake / "pids", "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    n = int((fake / f"{{name}}.count").read_text()) + 1 if (fake / f"{{name}}.count").exists() else 1
    (fake / f"{{name}}.count").write_text(str(n))
    return n
def stop():
    (fake / f"active.{{os.getpid()}}").unlink()
"""

# Like Open MPI's mpirun: the rank runs in its own process group; SIGTERM is forwarded to it.
MPIRUN = f"""#!{sys.executable}
import os, signal, subprocess, sys
from pathlib import Path
with open(Path(os.environ["FAKE_DIR"]) / "pids", "a") as f:
    f.write(f"{{os.getpid()}}\\n")
args = sys.argv[1:]
exe = args[args.index("-np") + 2]  # mpirun -np N exe -nk P
rank = subprocess.Popen([exe], process_group=0)
def forward(signum, frame):
    rank.terminate()
    rank.wait()
    sys.exit(1)
signal.signal(signal.SIGTERM, forward)
sys.exit(rank.wait())
"""

PW = (
    PROLOGUE
    + f"""
n = start("pw")
text = sys.stdin.read()
outdir = Path(re.search(r"outdir = '([^']+)'", text).group(1))
out = Path("{DATA}/MnO.scf.out").read_text()
if n == 1:  # first attempt: a real failure that must stay in the history
    out = re.sub(r"convergence has been achieved in\\s+\\d+ iterations",
                 "convergence NOT achieved after 16 iterations: stopping", out)
(outdir / "pwscf.save").mkdir(parents=True, exist_ok=True)
(outdir / "pwscf.save" / "partial").write_text(str(n))
if n == 2:  # second attempt: killed with the runner half-way
    (fake / "pw2.started").write_text("")
    time.sleep(60)
shutil.copy("{DATA}/MnO.occup.txt", outdir / "pwscf.save" / "occup.txt")
sys.stdout.write(out)
stop()
"""
)

HP = (
    PROLOGUE
    + f"""
start("hp")
time.sleep(0.5)
shutil.copy("{DATA}/MnO.Hubbard_parameters.dat", "pwscf.Hubbard_parameters.dat")
shutil.copy("{DATA}/parameters.out", "parameters.out")
sys.stdout.write(Path("{DATA}/MnO.hp.out").read_text())
stop()
"""
)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def queue(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, body in (("mpirun", MPIRUN), ("pw.x", PW), ("hp.x", HP)):
        (bindir / name).write_text(body)
        (bindir / name).chmod(0o755)
    pdir = tmp_path / "pseudo"
    pdir.mkdir()
    for el in ("Mn", "O"):
        (pdir / PSEUDOS[el]).write_text(f"stand-in {el}")
    st = structures.rocksalt_afm("Mn", a=8.40 * 0.529177210903)
    job = cycle.make_job(
        "mno", material="MnO", structure=st, pseudos=PSEUDOS, pseudo_dir=str(pdir),
        u_init={"Mn": 4.0}, n_iter=1, max_attempts=3,
    )  # fmt: skip
    jobdir = cycle.add_job(tmp_path / "queue", job)
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_DIR": str(tmp_path),
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "ZOO_PSEUDO_DIR": str(pdir),
    }
    return tmp_path, jobdir, env


def _runner(tmp, env, **kw):
    args = ["run", str(tmp / "queue"), "--exit-when-idle", "--np", "2"]
    cmd = queue_cli.pipeline_command(*args, "--data-dir", str(tmp / "data"))
    return subprocess.Popen(cmd, cwd=REPO, env=env, **kw)


def _shown_state(queue_dir: Path, capsys) -> str:
    """The job state column of ``queue status`` for the one job in `queue_dir`."""
    capsys.readouterr()
    queue_cli.print_status(queue_dir)
    return capsys.readouterr().out.splitlines()[0].split()[2]


def _wait_for(cond, timeout: float, what: str) -> None:
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_runner_takes_its_step_along_and_a_new_runner_resumes(
    queue, monkeypatch, capsys, sig
):
    tmp, jobdir, env = queue
    for key in ("PATH", "FAKE_DIR", "ZOO_PSEUDO_DIR"):
        monkeypatch.setenv(key, env[key])
    assert cycle.run_step(jobdir, np=2, nice=0) == "scf0"  # attempt 1 fails (in-process)
    first = _runner(tmp, env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: (tmp / "pw2.started").exists(), 40, "the second pw.x attempt")
    step_pid = int((jobdir / "step.lock").read_text())
    qe_pids = [int(x) for x in (tmp / "pids").read_text().split()]
    assert _alive(step_pid) and len(qe_pids) == 4  # 2 x (mpirun + pw.x)
    assert _shown_state(tmp / "queue", capsys) == "running"
    os.kill(first.pid, sig)
    first.wait()
    # The step process, mpirun and pw.x die with the runner: nothing is left behind.
    _wait_for(lambda: not any(_alive(p) for p in [step_pid, *qe_pids]), 10, "orphans to die")
    status = read_json(jobdir / "status.json")
    assert status["steps"]["scf0"]["state"] == "running" and len(status["failures"]) == 1
    assert _shown_state(tmp / "queue", capsys) == "stopped"  # not "running": nobody runs it

    second = _runner(tmp, env)
    assert second.wait(timeout=60) == 0
    status = read_json(jobdir / "status.json")
    assert status["state"] == "done", status
    # The real failure is kept, the kill is an interruption (no attempt spent), the
    # interrupted step ran once more from a clean outdir, and no two QE runs overlapped.
    assert [f["step"] for f in status["failures"]] == ["scf0"]
    assert "not converged" in status["failures"][0]["reason"]
    assert [i["step"] for i in status["interruptions"]] == ["scf0"]
    assert status["steps"]["scf0"]["attempt"] == 1
    assert (tmp / "pw.count").read_text() == "3" and (tmp / "hp.count").read_text() == "1"
    assert not (tmp / "overlap").exists()
    assert "mixing_beta = 0.15" in (jobdir / "scf0" / "pw.in").read_text()
    assert not list(jobdir.rglob("*.tmp")) and not list(jobdir.rglob(".*.tmp"))
    rows = (tmp / "data" / "labels.jsonl").read_text().splitlines()
    assert len(rows) == 10 and json.loads(rows[0])["sc_path"] == "mno"
    pids = [int(x) for x in (tmp / "pids").read_text().split()]
    assert not any(_alive(p) for p in pids)


def test_a_second_step_of_the_same_job_is_refused_while_one_runs(queue):
    tmp, jobdir, env = queue
    with job_lock(jobdir):
        with pytest.raises(StepBusy, match=str(os.getpid())):
            cycle.run_step(jobdir, np=1, nice=0)
        cmd = queue_cli.pipeline_command("step", str(jobdir), "--np", "1")
        group = Path("/proc/self/autogroup")  # a step started from a shell leaves the
        before = group.read_text() if group.exists() else None  # shell's autogroup alone
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 75 and "a step is running" in proc.stderr
    assert (group.read_text() if group.exists() else None) == before
    assert not (jobdir / "status.json").exists()  # nothing was touched
    assert not (tmp / "pids").exists()
