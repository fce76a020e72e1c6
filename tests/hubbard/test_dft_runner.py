"""Runner, cycle and data-set writer driven by fake pw.x / hp.x scripts (no QE needed)."""

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo.hubbard.dft import cycle, dataset, structures
from zoo.hubbard.dft.plan import PSEUDOS
from zoo.hubbard.dft.runner import nice_autogroup, read_json, write_json_atomic

DATA = Path(__file__).resolve().parents[1] / "data" / "qe"

FAKE_PW = f"""#!{sys.executable}
import os, re, sys, shutil
from pathlib import Path
text = sys.stdin.read()
outdir = Path(re.search(r"outdir = '([^']+)'", text).group(1))
counter = Path(os.environ["FAKE_DIR"]) / "pw.count"
counter.write_text(str(int(counter.read_text()) + 1) if counter.exists() else "1")
out = Path("{DATA}/MnO.scf.out").read_text()
if os.environ.get("FAKE_PW_MODE") == "notconverged":
    out = re.sub(r"convergence has been achieved in\\s+\\d+ iterations",
                 "convergence NOT achieved after 16 iterations: stopping", out)
(outdir / "pwscf.save").mkdir(parents=True, exist_ok=True)
shutil.copy("{DATA}/MnO.occup.txt", outdir / "pwscf.save" / "occup.txt")
(outdir / "pwscf.wfc1").write_text("x")
sys.stdout.write(out)
"""

FAKE_HP = f"""#!{sys.executable}
import os, shutil, sys
from pathlib import Path
counter = Path(os.environ["FAKE_DIR"]) / "hp.count"
counter.write_text(str(int(counter.read_text()) + 1) if counter.exists() else "1")
if os.environ.get("FAKE_HP_MODE") == "fail":
    sys.stdout.write(Path("{DATA}/MnO.hp.q222.notconverged.out").read_text())
    sys.exit(1)
shutil.copy("{DATA}/MnO.Hubbard_parameters.dat", "pwscf.Hubbard_parameters.dat")
shutil.copy("{DATA}/parameters.out", "parameters.out")
sys.stdout.write(Path("{DATA}/MnO.hp.out").read_text())
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    exes = {}
    for name, body in (("pw", FAKE_PW), ("hp", FAKE_HP)):
        p = tmp_path / f"fake_{name}.py"
        p.write_text(body)
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
        exes[name] = str(p)
    monkeypatch.setenv("FAKE_DIR", str(tmp_path))
    return tmp_path, exes


def _count(tmp, name):
    p = tmp / f"{name}.count"
    return int(p.read_text()) if p.exists() else 0


def _make_job_with_pseudos(tmp, **kw):
    pdir = tmp / "pseudo"
    pdir.mkdir(exist_ok=True)
    for n in (PSEUDOS["Mn"], PSEUDOS["O"]):
        (pdir / n).write_text("fake")
    st = structures.rocksalt_afm("Mn", a=8.40 * 0.529177210903)
    job = cycle.make_job(
        "mno", material="MnO", structure=st, pseudos=PSEUDOS, pseudo_dir=str(pdir),
        u_init={"Mn": 4.0}, **kw,
    )  # fmt: skip
    return cycle.add_job(tmp / "queue", job)


def _run_all(jobdir, exes, limit=20):
    steps = []
    for _ in range(limit):
        s = cycle.run_step(jobdir, np=1, nice=0, pw_exe=exes["pw"], hp_exe=exes["hp"])
        if s is None:
            break
        steps.append(s)
    return steps


def test_full_cycle_resume_and_never_redo(fake):
    tmp, exes = fake
    jobdir = _make_job_with_pseudos(tmp, n_iter=2)
    assert cycle.run_step(jobdir, np=1, nice=0, pw_exe=exes["pw"], hp_exe=exes["hp"]) == "scf0"
    assert (jobdir / "out" / "pwscf.save").exists() and not (jobdir / "out" / "pwscf.wfc1").exists()
    # Simulate a kill during hp0: the step is left "running" with partial files.
    status = read_json(jobdir / "status.json")
    status["steps"]["hp0"] = {"state": "running"}
    write_json_atomic(jobdir / "status.json", status)
    (jobdir / "hp0").mkdir()
    (jobdir / "hp0" / "junk").write_text("partial")
    assert _run_all(jobdir, exes) == ["hp0", "scf1", "hp1"]
    assert _count(tmp, "pw") == 2 and _count(tmp, "hp") == 2  # scf0 was not redone
    assert not (jobdir / "hp0" / "junk").exists() and not (jobdir / "out").exists()
    status = read_json(jobdir / "status.json")
    assert status["state"] == "done"
    assert cycle.run_step(jobdir, np=1, nice=0, pw_exe=exes["pw"], hp_exe=exes["hp"]) is None
    assert _count(tmp, "pw") == 2  # finished jobs are never redone
    # Iteration 1 used hp0's parameters.out (plus activated ligand terms).
    hub1 = {(i, j): v for i, j, v in read_json(jobdir / "scf1" / "hubbard_in.json")}
    assert hub1[(1, 1)] == 2.8365 and hub1[(1, 10)] == -1.5902 and hub1[(3, 3)] == 1e-8
    assert not list(jobdir.rglob("*.tmp"))


def test_rows_from_finished_job(fake):
    tmp, exes = fake
    jobdir = _make_job_with_pseudos(tmp, n_iter=1)
    _run_all(jobdir, exes)
    rows = dataset.rows_for_job(jobdir)
    u = [r for r in rows if r["param_type"] == "U"]
    v = [r for r in rows if r["param_type"] == "V"]
    assert len(u) == 4 and len(v) == 6  # V rows only from the TM side
    u1 = next(r for r in u if r["atom_1_idx"] == 1)
    assert u1["param_in"] == 4.0 and u1["param_out"] == 2.8365
    assert len(u1["atom_1_occs"]) == 2 and len(u1["atom_1_occs"][0]) == 5
    mo = next(r for r in v if r["atom_2_sc_idx"] == 12)
    assert mo["atom_2_idx"] == 4 and mo["atom_2_image"] == [-1, -1, 0]
    assert mo["param_in"] == 1e-8 and mo["dist_bohr"] == 4.2
    assert len(mo["atom_2_occs"][0]) == 3 and mo["intersite_occs"] is not None
    mm = next(r for r in v if r["atom_2_sc_idx"] == 10)
    assert mm["intersite_occs"] is None and mm["param_in"] == 0.0  # pair not active in pw.x
    assert mo["first_shell"] and not mm["first_shell"]
    out = dataset.write_dataset(tmp / "queue", tmp / "data")
    assert out["totals"]["all"]["U_TM"] == 2 and out["totals"]["all"]["V_TM_O"] == 4
    # Mn1/Mn2 and the printed Mn-O pairs are symmetry-equivalent: one unique label each.
    assert out["totals"]["all"]["U_TM_unique"] == 1 and out["totals"]["all"]["V_TM_O_unique"] == 1
    lines = (tmp / "data" / "labels.jsonl").read_text().splitlines()
    assert len(lines) == 10 and json.loads(lines[0])["orbital_order"].startswith("QE")
    # Rows survive a wiped queue directory.
    dataset.write_dataset(tmp / "empty_queue", tmp / "data")
    assert len((tmp / "data" / "labels.jsonl").read_text().splitlines()) == 10


def test_implausible_linear_response_is_rejected_with_its_reason(fake, monkeypatch):
    tmp, exes = fake
    jobdir = _make_job_with_pseudos(tmp, n_iter=1)
    _run_all(jobdir, exes)
    good = dataset.rows_for_step(read_json(jobdir / "job.json"), jobdir, 0)
    assert dataset.step_problem(good) is None
    skewed = [dict(r) for r in good]
    occ = np.array(skewed[0]["atom_2_occs"])
    occ[0, 0, 1] += 0.01  # a misread (non-symmetric) on-site block
    skewed[0]["atom_2_occs"] = occ.tolist()
    assert "not symmetric" in dataset.step_problem(skewed)

    def bad(job, jd, k):  # what a metallic CoO run gave: U(Co) ~ 0.07 eV
        return [{**r, "param_out": 0.07} if r["param_type"] == "U" else r for r in good]

    monkeypatch.setattr(dataset, "rows_for_step", bad)
    assert "outside" in dataset.step_problem(bad(None, None, 0))
    assert dataset.rows_for_job(jobdir) == []
    out = dataset.write_dataset(tmp / "queue", tmp / "data")
    (job,) = [j for j in out["jobs"].values() if j.get("rejected_steps")]
    assert job["rejected_steps"]["it0"].startswith("U(Mn1 3d) = 0.07 eV")
    assert (tmp / "data" / "labels.jsonl").read_text() == ""


def test_pw_not_converged_is_recorded_and_capped(fake, monkeypatch):
    tmp, exes = fake
    monkeypatch.setenv("FAKE_PW_MODE", "notconverged")
    jobdir = _make_job_with_pseudos(tmp, n_iter=1, max_attempts=2)
    assert _run_all(jobdir, exes) == ["scf0", "scf0"]
    status = read_json(jobdir / "status.json")
    assert status["state"] == "failed" and "not converged" in status["reason"]
    assert len(status["failures"]) == 2
    assert "mixing_beta = 0.15" in (jobdir / "scf0" / "pw.in").read_text()  # gentler retry
    assert dataset.rows_for_job(jobdir) == []


def test_hp_failure_records_q_point(fake, monkeypatch):
    tmp, exes = fake
    monkeypatch.setenv("FAKE_HP_MODE", "fail")
    jobdir = _make_job_with_pseudos(tmp, n_iter=1, max_attempts=1)
    assert _run_all(jobdir, exes) == ["scf0", "hp0"]
    status = read_json(jobdir / "status.json")
    assert status["state"] == "failed" and "(1, 2, 20)" in status["reason"]
    assert not (jobdir / "out").exists()


def test_write_json_atomic_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "status.json"
    write_json_atomic(p, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(p, {"a": object()})
    assert read_json(p) == {"a": 1}
    assert os.listdir(tmp_path) == ["status.json"]


def test_make_job_rejects_bad_input(tmp_path):
    st = structures.rocksalt_afm("Mn")
    with pytest.raises(ValueError, match="kind"):
        cycle.make_job("x", material="MnO", structure=st, pseudos=PSEUDOS, pseudo_dir="/", kind="?")
    with pytest.raises(ValueError, match="element 'O'"):
        cycle.make_job("x", material="MnO", structure=st, pseudos={"Mn": "a"}, pseudo_dir="/")


def test_bad_previous_output_is_recorded_not_crashing(fake):
    tmp, exes = fake
    jobdir = _make_job_with_pseudos(tmp, n_iter=2, max_attempts=1)
    assert _run_all(jobdir, exes, limit=2) == ["scf0", "hp0"]
    (jobdir / "hp0" / "parameters.out").write_text("garbage\n")
    assert cycle.run_step(jobdir, np=1, nice=0, pw_exe=exes["pw"], hp_exe=exes["hp"]) == "scf1"
    status = read_json(jobdir / "status.json")
    assert status["state"] == "failed" and "parameters.out" in status["reason"]


def test_queue_run_end_to_end(fake, monkeypatch):
    from zoo.hubbard.dft import queue

    tmp, exes = fake
    bindir = tmp / "bin"
    bindir.mkdir()
    for name in ("pw", "hp"):
        (bindir / f"{name}.x").symlink_to(exes[name])
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    jobdir = _make_job_with_pseudos(tmp, n_iter=1)
    args = ["run", str(jobdir.parent), "--exit-when-idle", "--np", "1"]
    queue.main(args + ["--data-dir", str(tmp / "data")])
    assert read_json(jobdir / "status.json")["state"] == "done"
    assert len((tmp / "data" / "labels.jsonl").read_text().splitlines()) == 10
    assert (jobdir.parent / "queue.lock").read_text().strip() == str(os.getpid())


def test_lost_queue_resumes_from_the_committed_rows(fake):
    """A wiped scratch: the job continues at scf1 with hp0's parameters rebuilt from its rows."""
    from zoo.hubbard.dft.restore import restore_job

    tmp, exes = fake
    jobdir = _make_job_with_pseudos(tmp, n_iter=2)
    for _ in range(2):  # scf0, hp0; then the machine dies
        cycle.run_step(jobdir, np=1, nice=0, pw_exe=exes["pw"], hp_exe=exes["hp"])
    data = tmp / "data"
    dataset.write_dataset(tmp / "queue", data)
    committed = (data / "labels.jsonl").read_text()
    record = read_json(data / "manifest.json")["jobs"]["mno"]
    assert record["state"] == "running" and committed
    rows = [json.loads(x) for x in committed.splitlines()]

    fresh = cycle.add_job(tmp / "queue2", read_json(jobdir / "job.json"))
    assert restore_job(fresh, record, rows) == [0]
    assert restore_job(fresh, record, rows) == []  # a live queue entry is never touched
    got = cycle.parsers.parse_parameters_out((fresh / "hp0" / "parameters.out").read_text())
    want = cycle.parsers.parse_parameters_out((jobdir / "hp0" / "parameters.out").read_text())
    assert sorted(got) == sorted(want)
    n_pw = _count(tmp, "pw")
    assert _run_all(fresh, exes) == ["scf1", "hp1"] and _count(tmp, "pw") == n_pw + 1
    # Same iteration-1 input as an uninterrupted run, and the committed it0 rows are kept.
    assert _run_all(jobdir, exes) == ["scf1", "hp1"]
    assert sorted(read_json(fresh / "scf1" / "hubbard_in.json")) == sorted(
        read_json(jobdir / "scf1" / "hubbard_in.json")
    )
    dataset.write_dataset(tmp / "queue2", data)
    ids = [json.loads(x)["id"] for x in (data / "labels.jsonl").read_text().splitlines()]
    assert sum("/it0/" in i for i in ids) == len(rows) and any("/it1/" in i for i in ids)
    assert read_json(data / "manifest.json")["jobs"]["mno"]["state"] == "done"


def test_restore_ignores_a_job_whose_settings_changed(fake):
    from zoo.hubbard.dft.restore import parameters_out_text, restore_job

    tmp, exes = fake
    jobdir = _make_job_with_pseudos(tmp, n_iter=2)
    record = {"settings_hash": "something-else", "steps": {}}
    assert restore_job(jobdir, record, []) == []
    with pytest.raises(ValueError, match="no TM rows"):
        parameters_out_text([])


def test_a_step_yields_through_its_autogroup(tmp_path):
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-1 nice 0\n")
    assert nice_autogroup(10, group) and group.read_text() == "10\n"
    assert not nice_autogroup(10, tmp_path / "no-such-dir" / "autogroup")  # other kernels
