"""The planned jobs of this project's queue (``queue seed``), in priority order.

1. (10-13) 5-iteration rattled no-symmetry SCF for each TM pseudopotential considered.
2. (20-29) hp.x convergence study on MnO (q mesh, conv_thr_chi/alpha_mix, cutoffs) and NiO cutoffs.
3. (100+) production: rattled/strained AFM rock-salt MO and layered LiMO2, 3 sc iterations.
4. (150+) battery-cathode families (``plan_cathodes``): k-mesh checks, then production.

Pseudopotentials are read from ``pseudo_dir`` or ``$ZOO_PSEUDO_DIR`` (``cycle.resolve_pseudo_dir``);
the directory is not part of the settings hash, the file names are (and each job records their
md5s).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import structures as S
from .cycle import add_job, make_job, resolve_pseudo_dir
from .restore import restore_job
from .runner import job_lock, write_json_atomic

PSEUDOS = {
    "Mn": "Mn.pbe-spn-rrkjus_psl.0.3.1.UPF",
    # Co/Ni spn (us_ps_high 1.0.0) blow up without symmetry (p10/p12 tests): n files.
    "Fe": "Fe.pbe-n-rrkjus_psl.1.0.0.UPF",
    "Co": "Co.pbe-n-rrkjus_psl.1.0.0.UPF",
    "Ni": "Ni.pbe-n-rrkjus_psl.1.0.0.UPF",
    "O": "O.pbe-nl-rrkjus_psl.1.0.0.UPF",
    "Li": "Li.pbe-sl-rrkjus_psl.1.0.0.UPF",
    "P": "P.pbe-nl-rrkjus_psl.1.0.0.UPF",
}
U_INIT = {"Mn": 4.0, "Fe": 4.0, "Co": 4.0, "Ni": 4.0}


def _pp(**over: str) -> dict[str, str]:
    return {**PSEUDOS, **{el: f"{el}.pbe-{fam}-rrkjus_psl.1.0.0.UPF" for el, fam in over.items()}}


def pseudo_dir_with_files(pseudo_dir: str | Path | None = None) -> str:
    """``pseudo_dir`` (or ``$ZOO_PSEUDO_DIR``), checked to hold every file the plan names."""
    files = set(PSEUDOS.values()) | {
        _pp(**{m: f})[m] for m in ("Fe", "Co", "Ni") for f in ("n", "spn")
    }
    return resolve_pseudo_dir(pseudo_dir, files)


def pseudo_tests(pseudo_dir: str | Path | None = None) -> list[dict]:
    """No-symmetry 5-iteration SCF tests (+ symmetric controls) of every TM file considered."""
    pdir = pseudo_dir_with_files(pseudo_dir)
    spec = []
    for m in ("Fe", "Co", "Ni"):  # spn (us_ps_high) files, rattled
        spec.append((f"p10-pptest-{m}O-rattled", m, _pp(**{m: "spn"}), True, 10))
    for m in ("Co", "Ni"):  # n (us_ps_low) files, rattled; spn files in the symmetric cell
        spec.append((f"p11-pptest-{m}O-rattled-nfile", m, _pp(**{m: "n"}), True, 11))
        spec.append((f"p12-pptest-{m}O-symmetric-spn", m, _pp(**{m: "spn"}), False, 12))
    spec.append(("p13-pptest-FeO-rattled-nfile", "Fe", _pp(Fe="n"), True, 13))
    jobs = []
    for jid, m, pseudos, rattled, prio in spec:
        st = S.rocksalt_afm(m)
        jobs.append(
            make_job(
                jid,
                material=f"{m}O",
                structure=S.perturb(st, seed=7, sigma=0.04) if rattled else st,
                pseudos=pseudos,
                pseudo_dir=pdir,
                u_init=U_INIT,
                kind="scf_test",
                purpose="pseudopotential test",
                priority=prio,
                max_attempts=1,
            )
        )
    return jobs


PRIORITY = {"p26": 250, "p28": 26}  # the k 4x4x4 check runs after a cost-ordered round


def convergence_jobs(pseudo_dir: str | Path | None = None) -> list[dict]:
    pdir = pseudo_dir_with_files(pseudo_dir)
    mno = S.rocksalt_afm("Mn")
    nio = S.rocksalt_afm("Ni")
    q1 = {"nq": [1, 1, 1]}
    q2 = {"nq": [2, 2, 2], "conv_thr_chi": 1e-4, "alpha_mix": 0.3, "niter_max": 40}
    e60 = {"ecutwfc": 60.0, "ecutrho": 480.0}
    spec = [
        ("p20-conv-MnO-q111-e50", mno, "MnO", {}, q1),
        ("p21-conv-MnO-q222-e50-chi1e-4", mno, "MnO", {}, q2),
        ("p22-conv-MnO-q111-e60", mno, "MnO", e60, q1),
        ("p23-conv-MnO-q111-e40", mno, "MnO", {"ecutwfc": 40.0, "ecutrho": 320.0}, q1),
        ("p24-conv-NiOn-q111-e50", nio, "NiO", {}, q1),
        ("p25-conv-NiOn-q111-e60", nio, "NiO", e60, q1),
        ("p26-conv-MnO-q222-k444-chi1e-4", mno, "MnO", {"kpts": [4, 4, 4]}, q2),
        ("p27-conv-MnO-q333-e50-chi1e-4", mno, "MnO", {}, {**q2, "nq": [3, 3, 3]}),
        ("p28-conv-NiOn-q111-e40", nio, "NiO", {"ecutwfc": 40.0, "ecutrho": 320.0}, q1),
    ]
    jobs = []
    for jid, st, mat, pw, hp in spec:
        jobs.append(
            make_job(
                jid,
                material=mat,
                structure=st,
                pseudos=PSEUDOS,
                pseudo_dir=pdir,
                pw=pw,
                hp=hp,
                hp_fallback=[{"alpha_mix": 0.15, "conv_thr_chi": 1e-4}],
                u_init=U_INIT,
                n_iter=1,
                purpose="convergence",
                priority=PRIORITY.get(jid[:3], int(jid[1:3])),
                max_attempts=2,
            )
        )
    return jobs


def planned_jobs(pseudo_dir: str | Path | None = None) -> list[dict]:
    """Every job of the plan (ids are stable; the run order is each job's ``priority``)."""
    from .plan_cathodes import cathode_jobs

    pdir = pseudo_dir_with_files(pseudo_dir)
    return (
        pseudo_tests(pdir)
        + convergence_jobs(pdir)
        + production_jobs(pseudo_dir=pdir)
        + cathode_jobs(pdir)
    )


#: job fields that say how hp.x is run (pieces), not what it computes (not in the hash)
RUN_MODE = ("hp_split", "hp_q_per_piece")


def seed(
    queue_dir: str | Path,
    manifest: str | Path | None = None,
    pseudo_dir: str | Path | None = None,
) -> list[Path]:
    """Add every planned job that is not in ``queue_dir`` yet.

    Jobs that ``manifest`` (default: the repo's ``data/hubbard/manifest.json``) records as
    ``done`` or ``failed`` are not re-added, so a wiped scratch never redoes finished work.
    Jobs already in the queue take the plan's run order; its settings when they never started,
    or when they started and finished no step (moved to ``<queue>/superseded/`` and added
    afresh); a job with finished steps keeps its settings. ``pseudo_dir`` defaults to
    ``$ZOO_PSEUDO_DIR``.
    """
    if manifest is None:
        manifest = Path(__file__).resolve().parents[3] / "data" / "hubbard" / "manifest.json"
    records = json.loads(Path(manifest).read_text())["jobs"] if Path(manifest).exists() else {}
    jobs = planned_jobs(pseudo_dir)
    n_iter = {j["id"]: j["n_iter"] for j in jobs}

    def finished(jid: str) -> bool:  # done jobs the plan now gives more iterations are resumed
        rec = records.get(jid)
        if rec is None or rec["state"] not in ("done", "failed"):
            return False
        n_hp = sum(
            1 for k, v in rec["steps"].items() if k.startswith("hp") and v["state"] == "done"
        )
        return rec["state"] == "failed" or rec["kind"] != "sc" or n_hp >= n_iter.get(jid, 0)

    queue = Path(queue_dir)
    renewed = set()
    for j in jobs:  # the run order may change; the settings only of a job that never started
        jp = queue / j["id"] / "job.json"
        if not jp.exists():
            continue
        cur = json.loads(jp.read_text())
        changed = any(cur.get(k) != j.get(k) for k in ("settings_hash", *RUN_MODE))
        if not (jp.parent / "status.json").exists() and changed:
            write_json_atomic(jp, j)  # never started: nothing was computed with the old settings
        elif cur["settings_hash"] != j["settings_hash"] and not _finished_steps(jp.parent):
            _supersede(jp.parent, cur["settings_hash"])  # started, nothing kept: start afresh
            renewed.add(j["id"])
        elif cur["priority"] != j["priority"]:
            write_json_atomic(jp, {**cur, "priority": j["priority"]})
    added = [
        add_job(queue, j)
        for j in jobs
        if not finished(j["id"]) or j["id"] in renewed or (queue / j["id"] / "job.json").exists()
    ]
    # Jobs that were running when an earlier queue died resume after their committed steps.
    lab = Path(manifest).with_name("labels.jsonl")
    rows = (
        [json.loads(x) for x in lab.read_text().splitlines() if x.strip()] if lab.exists() else []
    )
    for jobdir in added:
        if jobdir.name in renewed:
            continue
        if (rec := records.get(jobdir.name)) and not finished(jobdir.name):
            restore_job(jobdir, rec, rows)
    return added


def _finished_steps(jobdir: Path) -> list[str]:
    status = json.loads((jobdir / "status.json").read_text())
    return [k for k, v in status.get("steps", {}).items() if v.get("state") == "done"]


def _supersede(jobdir: Path, old_hash: str) -> Path:
    """Move a started job that finished no step to ``<queue>/superseded/<id>-<old hash>`` (kept
    for inspection, out of the run order) so ``seed`` adds it afresh with the plan's settings.
    Raises ``StepBusy`` while a step of it runs."""
    dest = jobdir.parent / "superseded" / f"{jobdir.name}-{old_hash}"
    with job_lock(jobdir):
        if dest.exists():
            raise FileExistsError(f"{dest} exists: move it away before seeding again")
        dest.parent.mkdir(exist_ok=True)
        os.rename(jobdir, dest)  # atomic; the lock file moves with it
    return dest


# Production (decided from the convergence jobs, table in data/hubbard/README.md): q 2x2x2
# with conv_thr_chi 1e-4 (q 1x1x1 underestimates U(Mn) by 1.3 eV); 40/320 Ry (U within 0.02 eV
# of 60/480 for Mn spn and Ni n, ~30% less CPU than 50/400); smaller alpha_mix on retry.
PROD_PW: dict = {"ecutwfc": 40.0, "ecutrho": 320.0}
PROD_HP = {"nq": [2, 2, 2], "conv_thr_chi": 1e-4, "alpha_mix": 0.3, "niter_max": 40}
PROD_HP_FALLBACK = [{"alpha_mix": 0.15}]
ROCKSALT_ORDER = ("Mn", "Ni", "Co", "Fe")  # most robust SCF first
STRAINS = (0.0, -0.03, 0.03, -0.015, 0.015, -0.04, 0.04)
CO_LATE = 800  # priority offset of the rock-salt CoO jobs
# 3 sc iterations: the third starts near self-consistency (where the ML loop works), and a
# (species, sc path) group of 3 clusters puts one in validation at 20 % (2 would put none).
N_ITER = 3


def production_jobs(rounds: int = 7, pseudo_dir: str | Path | None = None) -> list[dict]:
    """Rattled and symmetric-strained AFM rock-salt MO (+ layered LiMO2), N_ITER sc iterations.

    Symmetric strained cells are cheap for hp.x (2 perturbations, 4 q) and give one new U(TM)
    per run; rattled cells cost ~4x more but give 2 U(TM) and 12 distinct V(TM-O) per run.
    Round r: for each TM one symmetric cell at strain STRAINS[r] and one rattled cell (seed r,
    sigma 0.04 A, strain STRAINS[r] / 2); LiCoO2 and LiFeO2 symmetric, then rattled from round 1.
    Job ids keep the round numbering; the run order is ``_cost_priority``.
    """
    pdir = pseudo_dir_with_files(pseudo_dir)
    jobs = []
    for r in range(rounds):
        for n, m in enumerate(ROCKSALT_ORDER):
            base = S.rocksalt_afm(m)
            st = S.perturb(base, seed=0, sigma=0.0, strain=STRAINS[r])
            name = f"p{100 + 10 * r + n}-{m}O-sym-e{STRAINS[r]:+.3f}"
            jobs.append(_prod_job(name, f"{m}O", st, _cost_priority(m, "sym", r), {}, pdir))
            st = S.perturb(base, seed=r, sigma=0.04, strain=STRAINS[r] / 2)
            name = f"p{100 + 10 * r + 4 + n}-{m}O-rat-s{r}"
            pw = {}
            if m == "Fe":  # p107 (fixed occupations) stalls: every rattled FeO is smeared
                name, pw = name + "-sm", FEO_RATTLED_PW
            jobs.append(_prod_job(name, f"{m}O", st, _cost_priority(m, "rat", r), pw, pdir))
        if r >= 1:
            for n, (m, mag) in enumerate(LI_MAG):
                st = S.perturb(S.layered_limo2(m), seed=r, sigma=0.04, strain=STRAINS[r] / 2)
                pw = {"tot_magnetization": mag}
                name = f"p{100 + 10 * r + 8 + n}-Li{m}O2-rat-s{r}"
                prio = _cost_priority(m, "li", r)
                jobs.append(_prod_job(name, f"Li{m}O2", st, prio, pw, pdir))
    for n, (m, mag) in enumerate(LI_MAG):  # the symmetric layered cells: cheap, a 4th material
        pw = {"tot_magnetization": mag}
        st = S.layered_limo2(m)
        name = f"p{170 + n}-Li{m}O2-sym-e+0.000"
        jobs.append(_prod_job(name, f"Li{m}O2", st, _cost_priority(m, "lisym", 0), pw, pdir))
    return jobs


#: rattled FeO: with fixed occupations the SCF stalls at ~1e-4 Ry for 100 steps at mixing_beta
#: 0.3, 0.15 and 0.075 (p107), and Thomas-Fermi-screened mixing with a longer history
#: (p107-...-tf) was worse (~0.03 Ry): the one minority-spin t2g electron of Fe2+ hops between
#: near-degenerate orbitals of the rattled cell. Gaussian smearing (0.01 Ry = 0.14 eV, small
#: against the gap; the total magnetisation floats, AFM ~0) did not settle it either: ~3.5e-4 Ry
#: after 64 steps (p107-...-sm). These jobs run late; Fe labels come first from LiFeO2
#: (high-spin Fe3+ d5, no orbital degeneracy) and the olivines.
FEO_RATTLED_PW = {"smearing": "gaussian", "degauss": 0.01}

LI_MAG = (("Co", 0), ("Fe", 5))  # layered LiMO2: low-spin Co3+, high-spin Fe3+ (tot_magnetization)


def _cost_priority(metal: str, kind: str, r: int) -> int:
    """Run order from the measured cost per unique label (data/hubbard/manifest.json).

    Measured in QE CPU time: a rattled Ni/Fe hp.x step ~13-20 min for 2 U + 12 V unique labels
    (~1 label per CPU-minute), a symmetric one 2-8 min for 1 U + 1 V (~0.4); rattled Mn
    (semicore ``spn``) ~30 min per step (~0.5). So: the rattled Ni cells of every round first,
    the cheap completions of half-finished symmetric paths (MnO round 0, the layered cells),
    then the symmetric Ni/Fe/Mn strains (after the cathode checks and cheapest cathode cells,
    ``plan_cathodes``); rattled Mn and LiMO2 after those; rock-salt CoO (its linear response
    was rejected, p102) last; rattled FeO (its SCF stalls, ``FEO_RATTLED_PW``) late too.
    Symmetric LiFeO2 (Fe is the scarcest species of the data) comes early.
    """
    if metal == "Co" and kind in ("sym", "rat"):
        return CO_LATE + 100 + 10 * r + (0 if kind == "sym" else 4)
    if kind == "lisym":
        return 121 if metal == "Co" else 112
    if kind == "li":
        return 300 + 10 * r + (0 if metal == "Co" else 1)
    if metal == "Mn":
        if kind == "sym":
            return 120 if r == 0 else 190 + 10 * r + 8
        return 400 + 10 * r
    if kind == "sym":
        return 190 + 10 * r + {"Ni": 1, "Fe": 2}[metal]
    if metal == "Fe":  # its SCF stalls, smeared or not (FEO_RATTLED_PW)
        return 700 + 10 * r
    return 100 + 10 * r + 5


def _prod_job(jid: str, material: str, st: dict, prio: int, pw: dict, pdir: str) -> dict:
    return make_job(
        jid,
        material=material,
        structure=st,
        pseudos=PSEUDOS,
        pseudo_dir=pdir,
        pw={**PROD_PW, **pw},
        hp=PROD_HP,
        hp_fallback=PROD_HP_FALLBACK,
        u_init=U_INIT,
        n_iter=N_ITER,
        purpose="production",
        priority=prio,
        max_attempts=3,
    )
