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
# compute_hp -> the final files, only if every chi file is in HP/. Logs each call.
FAKE_HP = f"""#!{sys.executable}
import os, re, shutil, sys
from pathlib import Path
text = sys.stdin.read()
fake = Path(os.environ["FAKE_DIR"])
outdir = Path(re.search(r"outdir = '([^']+)'", text).group(1))
head = "     Program HP v.6.7 starts on  1Jan2026 at  0: 0: 0\\n"
done = "     HP           :      1.00s CPU      2.00s WALL\\n\\n   JOB DONE.\\n"
atom = re.search(r"perturb_only_atom\\((\\d+)\\)", text)
kind = "init" if "determine_num_pert_only" in text else "collect" if "compute_hp" in text else f"a{{atom.group(1)}}"
with open(fake / "hp.log", "a") as f:
    f.write(kind + " " + re.search(r"conv_thr_chi = (\\S+)", text).group(1) + "\\n")
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
else:  # as QE 6.7: the column is written, then the post-processing stops without it
    (outdir / "HP").mkdir(exist_ok=True)
    (outdir / "HP" / f"pwscf.chi.pert_{{kind[1:]}}.dat").write_text(kind)
    sys.stdout.write(head + "     Post-processing calculation of Hubbard parameters ...\\n"
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

    def make(**kw):
        job = cycle.make_job(
            "mno", material="MnO", structure=st, pseudos=PSEUDOS, pseudo_dir=str(pdir),
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
