"""Planned jobs of the battery-cathode families (part of ``plan.planned_jobs``).

Per family (``FAMILIES``): k mesh at least the k-point density of the rock-salt production
mesh (2x2x2 on the 4-atom AFM cell; ``cathodes.mesh_like_rocksalt``), raised to a multiple of
the q mesh, and doubled for the metallic / Jahn-Teller families (not for LiFePO4, an insulator
smeared only for its SCF; its k check decides); q mesh with about the rock-salt q-supercell size. Occupations: fixed with the total magnetisation of the magnetic
order for the insulators (Mn4+ d3, olivine Fe3+ d5), Marzari-Vanderbilt smearing
(``DEGAUSS`` Ry) with free magnetisation where a fixed-occupation hp.x cycle is unstable, its
SCF stalls or the cell is metallic: layered LiNiO2 with rock-salt settings gave U(Ni) 10.9 ->
8.0 -> 24.9 eV; Mn3+ in LiMnO2 and Mn3.5+ in the spinel are Jahn-Teller active; olivine LiFePO4
(Fe2+ d6, one minority-spin electron over near-degenerate orbitals, as in rattled FeO) stalled
at an estimated SCF accuracy of ~5e-4 Ry with fixed occupations (100 steps at mixing_beta 0.3,
then 0.15).

Per family, first a k-mesh check (``kcheck``: iteration 0 with q 1x1x1, the planned k and
twice it; the k effect on U/V shows without the q cost; a family whose planned k fails it is
produced at the denser one, ``PRODUCTION_K``), then production: the symmetric cell, then +-2 %
strains, then rattled cells (sigma 0.04 A, strain +-1 %), Li-free ends after the lithiated
ones, the intermediate Li0.5NiO2 after both ends. Every hp.x step runs in pieces
(``pieces.py``), split over q where one perturbed atom is estimated above ``PIECE_MAX_MIN``.
The run order is ``PRIORITY`` with ``RESCHEDULE`` on top (FePO4's symmetric cell early: iron is
the third transition metal; the olivines' rattled cells last).

The k checks' V are not labels where q = Gamma aliases the cell: beta-MnO2 (c = 2.87 A) gave
V(Mn-O) = -0.36 / -0.40 eV (rejected by ``dataset.step_problem``) with the image of the
perturbed Mn 5.4 bohr away along c and V(Mn-Mn) = -2.3 eV, the q = Gamma signature seen in MnO
(q 1x1x1 -> 2x2x2 moved V(Mn-O) by 0.5 eV); its production keeps DFT+U+V at q 2x2x2.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import cathodes as C
from . import inputs
from . import structures as S
from .cycle import make_job

DEGAUSS = 0.02  # Ry, Marzari-Vanderbilt cold smearing
SMEAR = {"smearing": "mv", "degauss": DEGAUSS}
STRAINS = (-0.02, 0.02)
RATTLES = ((0, -0.01), (1, 0.01))  # (seed, isotropic strain) of the rattled cells


def _fixed(mag: int) -> dict:
    return {"tot_magnetization": mag}


#: name -> (cell builder, material, pw occupations, k mesh, q mesh, production sc iterations)
FAMILIES: dict[str, tuple[Callable[[], dict], str, dict, list[int], list[int], int]] = {
    "rutile-MnO2": (C.rutile_mno2, "beta-MnO2", _fixed(0), [2, 2, 2], [2, 2, 2], 3),
    "layered-LiNiO2": (C.layered_linio2, "LiNiO2", SMEAR, [4, 4, 4], [2, 2, 2], 3),
    "layered-NiO2": (lambda: C.layered_linio2(0.0), "NiO2", SMEAR, [4, 4, 4], [2, 2, 2], 3),
    "layered-LiMnO2": (C.monoclinic_limno2, "LiMnO2", SMEAR, [4, 4, 2], [2, 2, 1], 3),
    "layered-MnO2": (
        lambda: C.monoclinic_limno2(False),
        "MnO2-layered",
        _fixed(3),
        [4, 4, 2],
        [2, 2, 1],
        3,
    ),  # fmt: skip
    "spinel-LiMn2O4": (C.spinel_limn2o4, "LiMn2O4", SMEAR, [2, 2, 2], [2, 2, 2], 3),
    "layered-Li0.5NiO2": (
        lambda: C.layered_linio2(0.5),
        "Li0.5NiO2",
        SMEAR,
        [2, 4, 4],
        [1, 2, 2],
        3,
    ),  # fmt: skip
    "olivine-LiFePO4": (C.olivine_lifepo4, "LiFePO4", SMEAR, [1, 1, 2], [1, 1, 2], 2),
    "olivine-FePO4": (
        lambda: C.olivine_lifepo4(False),
        "FePO4",
        _fixed(0),
        [1, 1, 2],
        [1, 1, 2],
        2,
    ),
}

#: production k mesh where the k check rejected the family's first mesh. beta-MnO2: at k 2x2x2
#: the two AFM Mn (equivalent by the 4_2 screw + spin flip) differ (|m| 2.93 / 3.12 muB, U 3.89
#: / 3.64 eV, V(Mn2-O) 0.24 eV below k 4x4x4, where they are equal); k 4x4x4 is a multiple of q.
PRODUCTION_K = {"rutile-MnO2": [4, 4, 4]}

#: family -> (k-check priority, symmetric priority, strained priority, rattled priority). The
#: k checks and the cheapest symmetric cells run before the remaining rock-salt symmetric
#: strains (priority >= 201); rattled cathode cells after those (hp.x split over q where one
#: perturbed atom over all q is estimated above ``PIECE_MAX_MIN``); the olivines' symmetric
#: cells as planned here would follow (``RESCHEDULE`` moves them early); then the rattled spinel (12 perturbations x 8 q) and beta-MnO2 (6 x 8 q at k 4x4x4), the
#: fewest labels per core-hour (~0.6), and the rattled olivines last.
PRIORITY = {
    "rutile-MnO2": (150, 160, 180, 605),
    "layered-LiNiO2": (151, 161, 181, 277),
    "layered-NiO2": (None, 162, 182, 279),
    "layered-LiMnO2": (152, 163, 183, 273),
    "layered-MnO2": (None, 164, 184, 274),
    "spinel-LiMn2O4": (153, 170, 190, 600),
    "layered-Li0.5NiO2": (None, 175, None, 285),
    "olivine-LiFePO4": (500, 510, None, 990),
    "olivine-FePO4": (None, 511, None, 991),
}
#: rattled-cell job ids keep the number they were first planned with (ids are stable)
RATTLED_ID = {
    "rutile-MnO2": 270,
    "layered-LiNiO2": 950,
    "layered-NiO2": 952,
    "spinel-LiMn2O4": 954,
}
#: scheduling only (ids keep their planned numbers): FePO4 first (Fe3+ d5: iron, a third
#: transition metal), then the intermediate Li0.5NiO2 and the strained layered cells (a few
#: hours each), then LiFePO4 and its k checks, then beta-MnO2 and the spinel (~40 h and more
#: per cell at their meshes) and last the spinel's second k check (~8x its first, 90-min run).
RESCHEDULE = {"c511": 171, "c500a": 184, "c500b": 184, "c510": 184, "c160": 185, "c170": 186,
              "c180a": 187, "c180b": 187, "c190a": 188, "c190b": 188, "c153b": 189}  # fmt: skip
#: families with one rattled seed (the most expensive cells); the others have ``RATTLES``
ONE_SEED = ("spinel-LiMn2O4", "olivine-LiFePO4", "olivine-FePO4")


def cathode_jobs(pseudo_dir: str) -> list[dict]:
    """All cathode jobs (k checks and production), ids ``c<priority>-<material>-...``."""
    jobs = []
    for fam, (build, mat, occ, k, q, n_iter) in FAMILIES.items():
        p_check, p_sym, p_strain, p_rat = PRIORITY[fam]
        base = build()
        spec = []  # (id, structure, pw, hp, n_iter, priority, purpose)
        if p_check is not None:
            for n, kk in enumerate((k, [2 * x for x in k])):
                jid = f"c{p_check}{'ab'[n]}-kcheck-{mat}-k{'x'.join(map(str, kk))}-q111"
                spec.append((jid, base, kk, [1, 1, 1], 1, p_check, "convergence"))
        k = PRODUCTION_K.get(fam, k)
        spec.append((f"c{p_sym}-{mat}-sym-e+0.000", base, k, q, n_iter, p_sym, "production"))
        for n, e in enumerate(STRAINS if p_strain is not None else ()):
            st = S.perturb(base, seed=0, sigma=0.0, strain=e)
            spec.append((f"c{p_strain}{'ab'[n]}-{mat}-sym-e{e:+.3f}", st, k, q, n_iter, p_strain,
                         "production"))  # fmt: skip
        for seed, e in RATTLES[:1] if fam in ONE_SEED else RATTLES:
            st = S.perturb(base, seed=seed, sigma=0.04, strain=e)
            jid = f"c{RATTLED_ID.get(fam, p_rat)}-{mat}-rat-s{seed}"
            spec.append((jid, st, k, q, n_iter, p_rat + seed, "production"))
        jobs += [_job(fam, mat, occ, *x, pseudo_dir) for x in spec]
    for job in jobs:
        job["priority"] = RESCHEDULE.get(job["id"].split("-")[0], job["priority"])
    return jobs


def _job(fam, mat, occ, jid, st, kpts, nq, n_iter, prio, purpose, pseudo_dir) -> dict:  # noqa: PLR0913
    from .plan import PROD_HP, PROD_HP_FALLBACK, PROD_PW, PSEUDOS, U_INIT

    kind = "rat" if "-rat-" in jid else "sym"
    per_q = piece_minutes_per_q(fam, kind, st["symbols"], kpts, nq)
    n_q = int(np.prod(nq))
    split_q = n_q > 1 and per_q * n_q > PIECE_MAX_MIN
    return make_job(
        jid,
        material=mat,
        structure=st,
        pseudos=PSEUDOS,
        pseudo_dir=pseudo_dir,
        pw={**PROD_PW, **occ, "kpts": kpts},
        hp={**PROD_HP, "nq": nq},
        hp_fallback=PROD_HP_FALLBACK,
        u_init=U_INIT,
        n_iter=n_iter,
        purpose=purpose,
        priority=prio,
        max_attempts=3,
        hp_split=True,
        hp_q_per_piece=max(1, int(PIECE_MAX_MIN // per_q)) if split_q else None,
        meta={"family": fam},
    )


#: Hubbard-atom classes hp.x perturbs in the symmetric cells (TM + inequivalent O; AFM
#: partners merge as in MnO); a rattled cell perturbs every Hubbard atom.
N_PERT_SYMMETRIC = {
    "rutile-MnO2": 2,
    "layered-LiNiO2": 2,
    "layered-NiO2": 2,
    "layered-LiMnO2": 2,
    "layered-MnO2": 2,
    "spinel-LiMn2O4": 2,
    "layered-Li0.5NiO2": 5,
    "olivine-LiFePO4": 4,
    "olivine-FePO4": 4,
}
# Measured on the rock-salt cells (4 atoms, k 2x2x2, q 2x2x2; data/hubbard/manifest.json, QE
# CPU minutes): hp.x per perturbation 2.0 (symmetric) / 4.6 (rattled), pw.x 0.5 / 0.75 per SCF;
# wall = 2 x CPU on the shared, niced machine. Cost per k point grows as nat^1.5 (MnO 4 atoms
# vs LiMnPO4 28 atoms measured ~nat^1.35).
HP_MIN_PER_PERT = {"sym": 2.0, "rat": 4.6}
SCF_MIN = {"sym": 0.5, "rat": 0.75}
WALL_PER_CPU = 2.0
NAT_EXPONENT = 1.5
PIECE_MAX_MIN = 45.0  # wall minutes of the 2-core machine one hp.x piece may take
# Measured / estimated wall of one perturbed atom at q = Gamma in the k checks (hp.x pieces of
# c150a/b, c151a/b, c152a): beta-MnO2 3.4 (k 2x2x2) and 1.8 (k 4x4x4), LiNiO2 0.57 / 0.31,
# LiMnO2 0.36. Families are scaled by the ratio of their check at the production k, or by the
# largest one of the closest checked family (spinel: beta-MnO2 at k 2x2x2), never below 1.
COST_FACTOR = {"rutile-MnO2": 1.8, "spinel-LiMn2O4": 3.4}


def piece_minutes_per_q(family: str, kind: str, symbols, kpts, nq) -> float:
    """Estimated wall minutes of one perturbed atom at one q point (``kind``: sym / rat)."""
    size = (len(symbols) / 4) ** NAT_EXPONENT * int(np.prod(kpts)) / 8
    return HP_MIN_PER_PERT[kind] / 8 * size * WALL_PER_CPU * COST_FACTOR.get(family, 1.0)


def estimated_cost(job: dict) -> dict:
    """Estimated wall hours of the 2-core machine for ``job`` and its longest hp.x piece.

    ``{"hours": total, "piece_min": longest piece (wall minutes), "n_pert": perturbations,
    "q_per_piece": q points per piece (None: one piece per perturbed atom)}``; an estimate from
    the rock-salt measurements scaled by atoms, k and q points and ``COST_FACTOR``.
    """
    sym = job["structure"]["symbols"]
    kind = "rat" if "-rat-" in job["id"] else "sym"
    family = job["meta"]["family"]
    n_pert = N_PERT_SYMMETRIC[family] if kind == "sym" else sum(inputs.is_hubbard(s) for s in sym)
    n_q = int(np.prod(job["hp"]["nq"]))
    per_q = piece_minutes_per_q(family, kind, sym, job["pw"]["kpts"], job["hp"]["nq"])
    size = (len(sym) / 4) ** NAT_EXPONENT * int(np.prod(job["pw"]["kpts"])) / 8
    scf = SCF_MIN[kind] * size * WALL_PER_CPU * COST_FACTOR.get(family, 1.0)
    hours = (per_q * n_q * n_pert + scf) * job["n_iter"] / 60
    per_piece = job.get("hp_q_per_piece") or n_q
    return {
        "hours": hours,
        "piece_min": per_q * min(per_piece, n_q),
        "n_pert": n_pert,
        "q_per_piece": job.get("hp_q_per_piece"),
    }
