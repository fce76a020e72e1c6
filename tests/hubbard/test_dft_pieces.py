"""hp.x split into resumable pieces (perturb_only_atom + compute_hp), driven by a fake hp.x."""

import re
import sys
from pathlib import Path

import pytest

from zoo.hubbard.dft import cycle, dataset, inputs, pieces, structures
from zoo.hubbard.dft.plan import PSEUDOS
from zoo.hubbard.dft.runner import read_json, write_json_atomic

DATA = Path(__file__).resolve().parents[1] / "data" / "qe"

FAKE_PW = f"""#!{sys.executable}
import re, shutil, sys
from pathlib import Path
outdir = Path(re.search(r"outdir = '([^']+)'", sys.stdin.read()).group(1))
(outdir / "pwscf.save").mkdir(parents=True, exist_ok=True)
shutil.copy("{DATA}/MnO.occup.txt", outdir / "pwscf.save" / "occup.txt")
sys.stdout.write(Path("{DATA}/MnO.scf.out").read_text())
"""

# determine_num_pert_only -> the list; perturb_only_atom(i) -> HP/pwscf.chi.pert_i.dat;
# + start_q/last_q -> the q grid (FAKE_NQS points) and pwscf.dns.pert_i.q_<iq>.dat per q (q 1 in
# outdir, as 6.7 may leave it, the others in HP/); + sum_pertq -> the chi file, only if every
# q's file with the right header is in HP/; compute_hp -> the final files, only if every chi
# file is in HP/. Logs each call.
FAKE_HP = f"""#!{sys.executable}
import os, re, shutil, sys
from pathlib import Path
text = sys.stdin.read()
fake = Path(os.environ["FAKE_DIR"])
nqs = int(os.environ.get("FAKE_NQS", "4"))
outdir = Path(re.search(r"outdir = '([^']+)'", text).group(1))
head = "     Program HP v.6.7 starts on  1Jan2026 at  0: 0: 0\\n"
done = "     HP           :      1.00s CPU      2.00s WALL\\n\\n   JOB DONE.\\n"
atom = re.search(r"perturb_only_atom\\((\\d+)\\)", text)
qr = re.search(r"start_q = (\\d+)\\n  last_q = (\\d+)", text)
kind = "init" if "determine_num_pert_only" in text else "collect" if "compute_hp" in text else f"a{{atom.group(1)}}"
if qr:
    kind += f"q{{qr.group(1)}}-{{qr.group(2)}}"
elif "sum_pertq" in text:
    kind += "sum"
with open(fake / "hp.log", "a") as f:
    f.write(kind + " " + re.search(r"conv_thr_chi = (\\S+)", text).group(1) + "\\n")
grid = "".join(f"{{n:8d}}   0.{{n}}00000000   0.000000000   0.000000000   0.1\\n" for n in range(1, nqs + 1))
grid = f"     The grid of q-points ( 2, 2, 2)  ( {{nqs:2d}} q-points ) :\\n       N  xq(1) xq(2) xq(3) wq\\n" + grid
if kind == "init":
    sys.stdout.write(head + "     List of  2 atoms which will be perturbed (one at a time):\\n\\n"
                     "        1      Mn1    54.9380   tau( 1) = (  0.0  0.0  0.0  )\\n"
                     "        3      O      15.9990   tau( 3) = (  0.5  0.5  0.5  )\\n\\n" + done)
elif kind == "collect":
    have = sorted(p.name for p in (outdir / "HP").glob("pwscf.chi.*.dat"))
    assert have == ["pwscf.chi.pert_1.dat", "pwscf.chi.pert_3.dat"], have
    shutil.copy("{DATA}/MnO.Hubbard_parameters.dat", "pwscf.Hubbard_parameters.dat")
    shutil.copy("{DATA}/parameters.out", "parameters.out")
    sys.stdout.write(head + done)
elif kind == os.environ.get("FAKE_FAIL_ONCE") and not (fake / "failed").exists():
    (fake / "failed").write_text(kind)
    sys.stdout.write(head + "     atom #  3   q point #  1   iter #  40\\n"
                     "     Convergence has not been reached after 40 iterations!\\n")
elif qr:
    i, (s, l) = int(atom.group(1)), map(int, qr.groups())
    (outdir / "HP").mkdir(exist_ok=True)
    for iq in range(s, l + 1):
        dest = outdir if iq == 1 else outdir / "HP"
        (dest / f"pwscf.dns.pert_{{i}}.q_{{iq}}.dat").write_text(
            f" Perturbed atom #   {{i}} , type : X\\n q #   {{iq}} = (   0.{{iq}}000000   0.0000000   0.0000000 )\\n")
    sys.stdout.write(head + grid + "      Not all q points were considered. Stopping smoothly...\\n" + done)
else:  # as QE 6.7: the column is written, then the post-processing stops without it
    i = kind[1:].removesuffix("sum")
    if kind.endswith("sum"):
        for iq in range(1, nqs + 1):
            h = (outdir / "HP" / f"pwscf.dns.pert_{{i}}.q_{{iq}}.dat").read_text()
            assert h.startswith(f" Perturbed atom #   {{i}} ") and f"q #   {{iq}} = (   0.{{iq}}0" in h, h
    (outdir / "HP").mkdir(exist_ok=True)
    (outdir / "HP" / f"pwscf.chi.pert_{{i}}.dat").write_text(kind)
    sys.stdout.write(head + grid + "     Post-processing calculation of Hubbard parameters ...\\n"
                     "     Error in routine hp_calc_U (1):\\n     Missing file with the chi matrix\\n")
    sys.exit(1)
"""


@pytest.fixture
def split_job(tmp_path, monkeypatch):
    exes = {}
    for name, body in (("pw", FAKE_PW), ("hp", FAKE_HP)):
        p = tmp_path / f"fake_{name}.py"
        p.write_text(body)
        p.chmod(0o755)
        exes[name] = str(p)
    monkeypatch.setenv("FAKE_DIR", str(tmp_path))
    pdir = tmp_path / "pseudo"
    pdir.mkdir()
    for el in ("Mn", "O"):
        (pdir / PSEUDOS[el]).write_text(f"stand-in {el}")
    st = structures.rocksalt_afm("Mn", a=8.40 * 0.529177210903)

    def make(job_id="mno", **kw):
        job = cycle.make_job(
            job_id, material="MnO", structure=st, pseudos=PSEUDOS, pseudo_dir=str(pdir),
            u_init={"Mn": 4.0}, n_iter=1, hp={"conv_thr_chi": 1e-4}, hp_split=True, **kw,
        )  # fmt: skip
        return cycle.add_job(tmp_path / "queue", job)

    def step(jobdir):
        return cycle.run_step(jobdir, np=1, nice=0, pw_exe=exes["pw"], hp_exe=exes["hp"])

    return tmp_path, make, step


def _log(tmp):
    return (tmp / "hp.log").read_text().split("\n")[:-1]


def test_pieces_resume_after_an_interruption_and_merge_into_the_usual_outputs(split_job):
    tmp, make, step = split_job
    jobdir = make()
    assert [step(jobdir) for _ in range(3)] == ["scf0", "hp0", "hp0"]  # scf0, init, a1
    status = read_json(jobdir / "status.json")
    assert status["steps"]["hp0"]["state"] == "partial"
    assert status["steps"]["hp0"]["pieces"]["init"]["atoms"] == [1, 3]
    # Killed during piece a3: its half-written response must not reach the collecting run.
    status["steps"]["hp0"]["state"] = "running"
    status["steps"]["hp0"]["pieces"]["a3"] = {"state": "running", "attempt": 0}
    write_json_atomic(jobdir / "status.json", status)
    (jobdir / "out" / "HP").mkdir(exist_ok=True)  # a1 left its response there
    (jobdir / "out" / "HP" / "pwscf.chi.pert_7.dat").write_text("partial")
    assert step(jobdir) == "hp0" and step(jobdir) == "hp0" and step(jobdir) is None
    assert [x.split()[0] for x in _log(tmp)] == ["init", "a1", "a3", "collect"]
    status = read_json(jobdir / "status.json")
    assert status["state"] == "done" and status["failures"] == []
    assert [i["step"] for i in status["interruptions"]] == ["hp0"]
    assert "compute_hp = .true." in (jobdir / "hp0" / "hp.in").read_text()
    assert "perturb_only_atom(3) = .true." in (jobdir / "hp0/pieces/a3/hp.in").read_text()
    assert len(dataset.rows_for_job(jobdir)) == 10  # same rows as an unsplit hp.x run


def test_a_failed_piece_is_retried_and_pieces_of_other_settings_are_redone(split_job, monkeypatch):
    tmp, make, step = split_job
    monkeypatch.setenv("FAKE_FAIL_ONCE", "a3")
    jobdir = make(hp_fallback=[{"alpha_mix": 0.15, "conv_thr_chi": 2e-4}], max_attempts=2)
    for _ in range(10):
        if step(jobdir) is None:
            break
    status = read_json(jobdir / "status.json")
    assert status["state"] == "done"
    (fail,) = status["failures"]
    assert fail["step"] == "hp0" and fail["reason"].startswith("piece a3: hp.x chi not converged")
    # a1 converged at conv_thr_chi 1e-4 is not merged with the retry's 2e-4: it is redone.
    assert _log(tmp) == ["init 0.0001", "a1 0.0001", "a3 0.0001", "a1 0.0002", "a3 0.0002",
                         "collect 0.0002"]  # fmt: skip
    assert status["steps"]["hp0"]["hp_settings"]["conv_thr_chi"] == 2e-4


def test_perturbed_atoms_and_piece_inputs():
    text = (DATA / "MnO.hp.out").read_text()
    assert pieces.perturbed_atoms(text) == [1, 3]
    assert pieces.perturbed_atoms("  Atom which will be perturbed:\n\n   2  Ni  58.7\n") == [2]
    with pytest.raises(ValueError, match="no list of perturbed atoms"):
        pieces.perturbed_atoms("Program HP\n JOB DONE\n")
    hp = inputs.hp_input(settings={"perturb_only_atom": 4, "start_q": 2, "last_q": 3})
    assert re.search(r"perturb_only_atom\(4\) = \.true\.\n  start_q = 2\n  last_q = 3", hp)
    assert "compute_hp = .true." in inputs.hp_input(settings={"compute_hp": True})
    with pytest.raises(ValueError, match="perturb_only_atom"):
        inputs.hp_input(settings={"perturb_only_atom": 0})


def _run_all(step, jobdir, n=40):
    for _ in range(n):
        if step(jobdir) is None:
            return read_json(jobdir / "status.json")
    raise AssertionError("job did not finish")


def test_q_range_pieces_resume_and_sum_into_the_usual_outputs(split_job):
    tmp, make, step = split_job
    jobdir = make(hp_q_per_piece=2)
    assert [step(jobdir) for _ in range(4)] == ["scf0", "hp0", "hp0", "hp0"]  # init, q1, q2-3
    status = read_json(jobdir / "status.json")
    pc = status["steps"]["hp0"]["pieces"]
    assert pc["init"]["q_per_piece"] == 2 and pc["a1q1"]["nqs"] == 4
    assert pieces.piece_names(pc)[:6] == ["init", "a1q1", "a1q2-3", "a1q4", "a1", "a3q1"]
    # Killed during a1q4: it is rerun from an empty HP/, the finished ranges are kept.
    status["steps"]["hp0"]["state"] = "running"
    pc["a1q4"] = {"state": "running", "attempt": 0}
    write_json_atomic(jobdir / "status.json", status)
    status = _run_all(step, jobdir)
    assert status["state"] == "done" and status["failures"] == []
    assert [x.split()[0] for x in _log(tmp)] == [
        "init", "a1q1-1", "a1q2-3", "a1q4-4", "a1sum", "a3q1-1", "a3q2-3", "a3q4-4", "a3sum",
        "collect",
    ]  # fmt: skip
    hp_in = (jobdir / "hp0/pieces/a1q2-3/hp.in").read_text()
    assert "perturb_only_atom(1) = .true.\n  start_q = 2\n  last_q = 3" in hp_in
    assert "sum_pertq = .true." in (jobdir / "hp0/pieces/a3/hp.in").read_text()
    assert sorted(p.name for p in (jobdir / "hp0/pieces/a1q1").glob("*.dat")) == [
        "pwscf.dns.pert_1.q_1.dat"
    ]
    assert len(dataset.rows_for_job(jobdir)) == 10


def test_q_pieces_of_other_settings_or_atoms_are_never_summed(split_job, monkeypatch):
    tmp, make, step = split_job
    monkeypatch.setenv("FAKE_FAIL_ONCE", "a3q2-3")
    jobdir = make(
        hp_q_per_piece=2, hp_fallback=[{"conv_thr_chi": 2e-4}], max_attempts=3
    )  # fmt: skip
    status = _run_all(step, jobdir)
    assert status["state"] == "done"
    (fail,) = status["failures"]
    assert fail["reason"].startswith("piece a3q2-3: hp.x chi not converged")
    log = _log(tmp)
    after = log[log.index("a3q2-3 0.0001") + 1 :]
    # every response computed at 1e-4 is redone at 2e-4 before anything is summed
    assert after[:4] == ["a1q1-1 0.0002", "a1q2-3 0.0002", "a1q4-4 0.0002", "a1sum 0.0002"]
    assert all(x.endswith("0.0002") for x in after)

    # A response file of another atom in a finished range: refused, that range is recomputed.
    (tmp / "hp.log").unlink()
    monkeypatch.delenv("FAKE_FAIL_ONCE")
    jobdir = make("mno2", hp_q_per_piece=3)
    for _ in range(4):  # scf0, init, a1q1, a1q2-4
        step(jobdir)
    bad = jobdir / "hp0/pieces/a1q2-4/pwscf.dns.pert_1.q_3.dat"
    bad.write_text(bad.read_text().replace("atom #   1", "atom #   3"))
    status = _run_all(step, jobdir)
    assert status["state"] == "done"
    (fail,) = status["failures"]
    assert "pwscf.dns.pert_1.q_3.dat: belongs to atom 3, q #3" in fail["reason"]
    # hp.x never ran on the bad file: the range was recomputed, then summed
    assert [x.split()[0] for x in _log(tmp)][:5] == ["init", "a1q1-1", "a1q2-4", "a1q2-4", "a1sum"]


def test_q_piece_names_and_grid():
    assert pieces.q_piece_names(2, None, 3) == ["a2q1"]
    assert pieces.q_piece_names(2, 8, 3) == ["a2q1", "a2q2-4", "a2q5-7", "a2q8"]
    assert pieces.q_range("a2q5-7") == (2, 5, 7) and pieces.q_range("a2q1") == (2, 1, 1)
    assert pieces.q_range("a2") is None and pieces.q_range("collect") is None
    text = (DATA / "MnO.hp.out").read_text()
    with pytest.raises(ValueError, match="grid of q-points"):
        pieces.q_grid("Program HP\n")
    assert len(pieces.q_grid(text)) >= 1
    with pytest.raises(ValueError, match="hp_q_per_piece"):
        cycle.make_job(
            "x", material="MnO", structure=structures.rocksalt_afm("Mn", a=4.4),
            pseudos=PSEUDOS, pseudo_dir=str(DATA), hp_q_per_piece=2,
        )  # fmt: skip
