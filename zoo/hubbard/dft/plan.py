"""The planned jobs of this project's queue (``queue seed``), in priority order.

1. (10) 5-iteration rattled no-symmetry SCF for each TM pseudopotential (Mn 0.3.1 passed before).
2. (20-29) hp.x convergence study on MnO (q mesh, conv_thr_chi/alpha_mix, cutoffs) and NiO cutoffs.
3. (100+) production: rattled/strained AFM rock-salt MO and layered LiMO2, 2-3 sc iterations.
"""

from __future__ import annotations

from pathlib import Path

from . import structures as S
from .cycle import add_job, make_job

PSEUDO_DIR = "/work/shared/qe/pseudo"
PSEUDOS = {
    "Mn": "Mn.pbe-spn-rrkjus_psl.0.3.1.UPF",
    "Fe": "Fe.pbe-spn-rrkjus_psl.1.0.0.UPF",
    "Co": "Co.pbe-spn-rrkjus_psl.1.0.0.UPF",
    "Ni": "Ni.pbe-spn-rrkjus_psl.1.0.0.UPF",
    "O": "O.pbe-nl-rrkjus_psl.1.0.0.UPF",
    "Li": "Li.pbe-sl-rrkjus_psl.1.0.0.UPF",
    "P": "P.pbe-nl-rrkjus_psl.1.0.0.UPF",
}
U_INIT = {"Mn": 4.0, "Fe": 4.0, "Co": 4.0, "Ni": 4.0}


def pseudo_tests() -> list[dict]:
    jobs = []
    for m in ("Fe", "Co", "Ni"):
        st = S.perturb(S.rocksalt_afm(m), seed=7, sigma=0.04)
        jobs.append(
            make_job(
                f"p10-pptest-{m}O-rattled",
                material=f"{m}O",
                structure=st,
                pseudos=PSEUDOS,
                pseudo_dir=PSEUDO_DIR,
                u_init=U_INIT,
                kind="scf_test",
                purpose="pseudopotential no-symmetry test",
                priority=10,
                max_attempts=1,
            )
        )
    return jobs


def convergence_jobs() -> list[dict]:
    mno = S.rocksalt_afm("Mn")
    nio = S.rocksalt_afm("Ni")
    q1 = {"nq": [1, 1, 1]}
    q2 = {"nq": [2, 2, 2], "conv_thr_chi": 1e-4, "alpha_mix": 0.3, "niter_max": 40}
    spec = [
        ("p20-conv-MnO-q111-e50", mno, "MnO", {}, q1),
        ("p21-conv-MnO-q222-e50-chi1e-4", mno, "MnO", {}, q2),
        ("p22-conv-MnO-q111-e60", mno, "MnO", {"ecutwfc": 60.0, "ecutrho": 480.0}, q1),
        ("p23-conv-MnO-q111-e40", mno, "MnO", {"ecutwfc": 40.0, "ecutrho": 320.0}, q1),
        ("p24-conv-NiO-q111-e50", nio, "NiO", {}, q1),
        ("p25-conv-NiO-q111-e65", nio, "NiO", {"ecutwfc": 65.0, "ecutrho": 520.0}, q1),
        ("p26-conv-MnO-q222-k444-chi1e-4", mno, "MnO", {"kpts": [4, 4, 4]}, q2),
    ]
    jobs = []
    for n, (jid, st, mat, pw, hp) in enumerate(spec):
        jobs.append(
            make_job(
                jid,
                material=mat,
                structure=st,
                pseudos=PSEUDOS,
                pseudo_dir=PSEUDO_DIR,
                pw=pw,
                hp=hp,
                hp_fallback=[{"alpha_mix": 0.15, "conv_thr_chi": 1e-4}],
                u_init=U_INIT,
                n_iter=1,
                purpose="convergence",
                priority=20 + n,
                max_attempts=2,
            )
        )
    return jobs


def seed(queue_dir: str | Path) -> list[Path]:
    """Add every planned job that is not in ``queue_dir`` yet."""
    return [add_job(queue_dir, j) for j in pseudo_tests() + convergence_jobs()]
