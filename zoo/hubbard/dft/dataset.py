"""Label rows from finished (scf<k>, hp<k>) pairs, and the ``data/hubbard/`` writer.

One row per label per self-consistent step. U rows: every Hubbard site of hp.x's U table.
V rows: every inter-site pair of hp.x's V table whose first atom is a transition metal (so each
TM-ligand pair appears once). Occupations: ``atom_{1,2}_occs`` = on-site matrices
``[spin][m1][m2]`` of both spins (spin 1 = up), ``intersite_occs`` = the block
n^{IJ s}_{m1 m2} (I = atom 1, J = atom 2 image) when pw.x had that pair active, else null.
Orbital order (QE): p = (z, x, y); d = (z2, xz, yz, x2-y2, xy).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._features import check_occupations
from . import inputs, parsers
from .cycle import PREFIX
from .runner import read_json, write_json_atomic, write_text_atomic
from .structures import TRANSITION_METALS, structure_id

BOHR = 0.529177210903
ORBITAL_ORDER = "QE real harmonics: p=(z,x,y); d=(z2,xz,yz,x2-y2,xy)"
DIM = {"2p": 3, "3p": 3, "3d": 5}


def _manifold(symbol: str) -> str | None:
    return inputs.MANIFOLD.get(symbol)


def _block(onsite: dict, site: int, dim: int) -> list:
    """On-site occupations ``[nspin, dim, dim]`` of 1-based `site` (leading block)."""
    return onsite[site][:, :dim, :dim].tolist()


def rows_for_step(job: dict, jobdir: Path, k: int) -> list[dict]:
    """Label rows of iteration ``k`` of a finished job (ValueError if its files are bad)."""
    st = job["structure"]
    sym = st["symbols"]
    nat = len(sym)
    scf, hp = jobdir / f"scf{k}", jobdir / f"hp{k}"
    pw = parsers.parse_pw_output((scf / "pw.out").read_text(errors="replace"))
    if not pw["converged"]:
        return []  # a non-converged ground state never yields labels
    occ = parsers.parse_occup((scf / "occup.txt").read_text(), nat=nat)
    hpp = parsers.parse_hubbard_parameters_dat(
        (hp / f"{PREFIX}.Hubbard_parameters.dat").read_text()
    )
    hp_out = parsers.parse_hp_output((hp / "hp.out").read_text(errors="replace"))
    if (hp / "parameters.out").exists():
        listed = parsers.parse_parameters_out((hp / "parameters.out").read_text())
    else:
        listed = parsers.parse_hubbard_card((hp / "HUBBARD.dat").read_text())[1]
    listed_pairs = {(i, j) for i, j, _ in listed if i != j}
    first_shell = set(inputs.first_shell_pairs(st))
    p_in = {(i, j): v for i, j, v in read_json(scf / "hubbard_in.json")}
    for i, j, _, v in pw["pairs"]:  # pairs pw.x added by symmetry carry the same V
        p_in.setdefault((i, j), v)
    split = parsers.occupation_blocks(occ, pw["pairs"])
    blocks, onsite = split["intersite"], split["onsite"]
    status = read_json(jobdir / "status.json")
    hp_settings = status["steps"][f"hp{k}"].get("hp_settings", job["hp"])
    common = {
        "material": job["material"],
        "structure_id": structure_id(st),
        "structure": {key: st[key] for key in ("symbols", "cell", "positions", "spins")},
        "sc_path": job["id"],
        "iteration": k,
        "purpose": job["purpose"],
        "n_atoms_uc": nat,
        "orbital_order": ORBITAL_ORDER,
        "code": f"QE {pw['version']} pw.x+hp.x",
        "settings_hash": job["settings_hash"],
        "settings": {
            "ecutwfc": job["pw"]["ecutwfc"],
            "ecutrho": job["pw"]["ecutrho"],
            "kpts": job["pw"]["kpts"],
            "nq": hp_settings["nq"],
            "conv_thr_chi": hp_settings["conv_thr_chi"],
            "projector": job["pw"]["U_projection_type"],
            "pseudos": {s: job["pseudos"][s] for s in sorted(set(sym))},
        },
        "energy_ry": pw["energy_ry"],
        "total_mag": pw["total_mag"],
        "hp_cpu_s": hp_out["cpu_s"],
    }
    rows = []
    for i, u in sorted(hpp["U"].items()):
        man = _manifold(sym[i - 1])
        d = DIM[man]
        rows.append(
            {
                **common,
                "id": f"{job['id']}/it{k}/U/{i}",
                "param_type": "U",
                "atom_1_idx": i,
                "atom_2_idx": i,
                "atom_2_sc_idx": i,
                "atom_2_image": [0, 0, 0],
                "atom_1_element": sym[i - 1],
                "atom_2_element": sym[i - 1],
                "atom_1_manifold": man,
                "atom_2_manifold": man,
                "dist_bohr": 0.0,
                "param_in": float(p_in.get((i, i), 0.0)),
                "param_out": u,
                "atom_1_occs": _block(onsite, i, d),
                "atom_2_occs": _block(onsite, i, d),
                "intersite_occs": None,
            }
        )
    for i, j, dist, v in hpp["V"]:
        # The pairs hp.x hands to the next iteration (num_neigh nearest of each TM): farther
        # entries of the table are dominated by the q-mesh periodicity.
        if (i, j) not in listed_pairs or sym[i - 1] not in TRANSITION_METALS:
            continue
        a, image = inputs.supercell_atom(j, nat)
        m1, m2 = _manifold(sym[i - 1]), _manifold(sym[a])
        d1, d2 = DIM[m1], DIM[m2]
        dist_geo = inputs.pair_distance(st, i, j) / BOHR
        if abs(dist_geo - dist) > 1e-3:
            raise ValueError(
                f"hp{k}: pair ({i}, {j}) distance {dist} bohr != structure {dist_geo:.6f} bohr"
            )
        inter = None
        if (i, j) in blocks:
            inter = blocks[(i, j)][:, :d1, :d2].tolist()
        rows.append(
            {
                **common,
                "id": f"{job['id']}/it{k}/V/{i}-{j}",
                "param_type": "V",
                "atom_1_idx": i,
                "atom_2_idx": a + 1,
                "atom_2_sc_idx": j,
                "atom_2_image": list(image),
                "atom_1_element": sym[i - 1],
                "atom_2_element": sym[a],
                "atom_1_manifold": m1,
                "atom_2_manifold": m2,
                "dist_bohr": dist,
                "first_shell": (i, j) in first_shell,
                "param_in": float(p_in.get((i, j), 0.0)),
                "param_out": v,
                "atom_1_occs": _block(onsite, i, d1),
                "atom_2_occs": _block(onsite, a + 1, d2),
                "intersite_occs": inter,
            }
        )
    return rows


# Linear response that converged numerically can still be unphysical (e.g. CoO with a
# metallic starting point gave U(Co 3d) = 0.07 eV and V(Co-O) = -3.2 eV): such steps are not
# labels. Bounds are generous: published TM 3d U are 2-10 eV, first-shell TM-O V 0.3-2 eV.
U_TM_RANGE = (0.5, 15.0)
V_TM_O_RANGE = (0.0, 5.0)


def step_problem(rows: list[dict]) -> str | None:
    """Why the labels of one (scf, hp) step are implausible, or None if they are fine."""
    for r in rows:
        for key in ("atom_1_occs", "atom_2_occs"):  # what the features will demand of them
            n = np.asarray(r[key])
            try:
                check_occupations(n, (n.shape[-1] - 1) // 2, name=f"{r['id']} {key}",
                                  labels=["spin 1", "spin 2"])  # fmt: skip
            except ValueError as err:
                return str(err)
        e1, e2, v = r["atom_1_element"], r["atom_2_element"], r["param_out"]
        if r["param_type"] == "U" and e1 in TRANSITION_METALS:
            lo, hi = U_TM_RANGE
            if not lo <= v <= hi:
                return f"U({e1}{r['atom_1_idx']} 3d) = {v} eV outside [{lo}, {hi}]"
        if r["param_type"] == "V" and r.get("first_shell") and e2 == "O":
            lo, hi = V_TM_O_RANGE
            if not lo <= v <= hi:
                return f"V({e1}{r['atom_1_idx']}-O) = {v} eV outside [{lo}, {hi}]"
    return None


def _job_rows(jobdir: Path) -> tuple[list[dict], dict[str, str]]:
    """(accepted rows, {"it<k>": reason} of rejected steps) of the job in ``jobdir``."""
    job = read_json(jobdir / "job.json")
    if job["kind"] != "sc" or not (jobdir / "status.json").exists():
        return [], {}
    steps = read_json(jobdir / "status.json")["steps"]
    rows, rejected = [], {}
    for k in range(job["n_iter"]):
        if steps.get(f"hp{k}", {}).get("restored"):
            continue  # outputs are gone; its committed rows are kept (restore.py)
        if all(steps.get(f"{s}{k}", {}).get("state") == "done" for s in ("scf", "hp")):
            step_rows = rows_for_step(job, jobdir, k)
            if (why := step_problem(step_rows)) is not None:
                rejected[f"it{k}"] = why
            else:
                rows += step_rows
    return rows, rejected


def rows_for_job(jobdir: str | Path) -> list[dict]:
    """Rows of every finished, physically plausible (scf<k>, hp<k>) pair of a job."""
    return _job_rows(Path(jobdir))[0]


def _restored_iterations(status: dict) -> set[int]:
    steps = status.get("steps", {})
    return {int(k[2:]) for k, v in steps.items() if k.startswith("hp") and v.get("restored")}


def _job_summary(job: dict, status: dict) -> dict:
    steps = status.get("steps", {})
    wall = sum(s.get("wall_s") or 0.0 for s in steps.values())
    cpu = sum(s.get("cpu_s") or 0.0 for s in steps.values())
    return {
        "id": job["id"],
        "purpose": job["purpose"],
        "material": job["material"],
        "kind": job["kind"],
        "structure_id": structure_id(job["structure"]),
        "settings_hash": job["settings_hash"],
        "pw": job["pw"],
        "hp": job["hp"],
        "state": status.get("state", "pending"),
        "steps": {
            k: {x: v.get(x) for x in ("state", "cpu_s", "wall_s", "n_iter", "finished", "reason")}
            for k, v in steps.items()
        },
        "failures": status.get("failures", []),
        "wall_s": round(wall, 1),
        "qe_cpu_s_rank0": round(cpu, 1),
    }


def write_dataset(queue_dir: str | Path, out_dir: str | Path) -> dict:
    """Merge the queue's finished rows into ``out_dir/labels.jsonl`` and refresh manifest.json.

    Rows of jobs found in ``queue_dir`` are regenerated; rows and jobs that are no longer in
    ``queue_dir`` are kept (rows keyed by ``id``), so a wiped scratch never loses data.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lab = out_dir / "labels.jsonl"
    rows = {}
    if lab.exists():
        for line in lab.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows[r["id"]] = r
    man_path = out_dir / "manifest.json"
    manifest = read_json(man_path) if man_path.exists() else {"jobs": {}}
    present = {jp.parent.name for jp in Path(queue_dir).glob("*/job.json")}
    for jid in [j for j, v in manifest["jobs"].items() if j not in present and not v["steps"]]:
        del manifest["jobs"][jid]  # planned but removed before it ran
    for jp in sorted(Path(queue_dir).glob("*/job.json")):
        job = read_json(jp)
        sp = jp.parent / "status.json"
        status = read_json(sp) if sp.exists() else {}
        summary = _job_summary(job, status)
        # The queue holds this job's outputs: its rows are regenerated, stale ones dropped,
        # except those of iterations restored from the committed data (restore.py).
        kept = _restored_iterations(status)
        rows = {
            k: r for k, r in rows.items() if r["sc_path"] != job["id"] or r["iteration"] in kept
        }
        job_rows, rejected = _job_rows(jp.parent)
        for r in job_rows:
            rows[r["id"]] = r
        if rejected:
            summary["rejected_steps"] = rejected
        manifest["jobs"][job["id"]] = summary
    write_text_atomic(
        lab, "".join(json.dumps(rows[k], sort_keys=True) + "\n" for k in sorted(rows))
    )
    manifest["totals"] = totals(list(rows.values()), manifest["jobs"])
    write_json_atomic(man_path, manifest)
    update_readme(out_dir / "README.md", [rows[k] for k in sorted(rows)], manifest["jobs"])
    return manifest


def count_unique(rows: list[dict], tol: float = 2e-3) -> int:
    """Number of labels left after merging rows of one sc step with the same elements whose
    distance (Bohr) and value (eV) agree within ``tol`` (symmetry-equivalent sites/pairs)."""
    groups: dict = {}
    for r in rows:
        key = (r["structure_id"], r["iteration"], r["param_type"])
        key += (r["atom_1_element"], r["atom_2_element"])
        groups.setdefault(key, []).append((r["dist_bohr"], r["param_out"]))
    n = 0
    for vals in groups.values():
        reps: list[tuple[float, float]] = []
        for d, v in sorted(vals):
            if not any(abs(d - d0) <= tol and abs(v - v0) <= tol for d0, v0 in reps):
                reps.append((d, v))
        n += len(reps)
    return n


def totals(rows: list[dict], jobs: dict) -> dict:
    """Label counts (all / production, U(TM) / V(TM-O)) and machine time."""

    def count(rs):
        u = [r for r in rs if r["param_type"] == "U" and r["atom_1_element"] in TRANSITION_METALS]
        v = [r for r in rs if r["param_type"] == "V" and r.get("first_shell")]
        return {
            "U_TM": len(u),
            "V_TM_O": len(v),
            "U_TM_unique": count_unique(u),
            "V_TM_O_unique": count_unique(v),
            "rows": len(rs),
        }

    wall = sum(j["wall_s"] for j in jobs.values())
    cpu = sum(j["qe_cpu_s_rank0"] for j in jobs.values())
    prod = [r for r in rows if r["purpose"] == "production"]
    prod_wall = sum(j["wall_s"] for j in jobs.values() if j["purpose"] == "production")
    return {
        "all": count(rows),
        "production": count(prod),
        "materials": sorted({r["material"] for r in rows}),
        "machine_hours_2cores": round(wall / 3600, 3),
        "core_hours": round(2 * wall / 3600, 3),
        "qe_cpu_core_hours": round(2 * cpu / 3600, 3),
        "production_core_hours": round(2 * prod_wall / 3600, 3),
    }


STATS_BEGIN, STATS_END = "<!-- stats:begin -->", "<!-- stats:end -->"


def stats_markdown(rows: list[dict], jobs: dict) -> str:
    """Generated README section: production counts per material, convergence table, jobs."""
    t = totals(rows, jobs)
    lines = [STATS_BEGIN, "", "_Generated by `zoo.hubbard.dft.dataset.write_dataset`._", ""]
    prod_h = t["production_core_hours"]
    p = t["production"]
    rate = f"{(p['U_TM_unique'] + p['V_TM_O_unique']) / prod_h:.1f}" if prod_h else "n/a"
    lines += [
        f"- rows: {t['all']['rows']} (production {p['rows']}); production labels: "
        f"U(TM) {p['U_TM']} ({p['U_TM_unique']} unique), "
        f"V(TM-O) {p['V_TM_O']} ({p['V_TM_O_unique']} unique)",
        f"- all rows incl. convergence jobs: U(TM) {t['all']['U_TM_unique']} unique, "
        f"V(TM-O) {t['all']['V_TM_O_unique']} unique; materials {', '.join(t['materials'])}",
        f"- machine time: {t['machine_hours_2cores']:.2f} h of the 2-core machine = "
        f"{t['core_hours']:.2f} core-hours (production {prod_h:.2f} core-hours; CPU time "
        f"actually given to QE: {t['qe_cpu_core_hours']:.2f} core-hours, the machine is shared); "
        f"production labels per core-hour: {rate}",
        "",
        "| material | sc paths | iterations | U(TM) unique | V(TM-O) unique |",
        "|---|---|---|---|---|",
    ]
    prod = [r for r in rows if r["purpose"] == "production"]
    for mat in sorted({r["material"] for r in prod}):
        rs = [r for r in prod if r["material"] == mat]
        u = count_unique([r for r in rs if r["param_type"] == "U" and r["atom_1_element"] != "O"])
        v = count_unique([r for r in rs if r["param_type"] == "V" and r.get("first_shell")])
        its = len({(r["sc_path"], r["iteration"]) for r in rs})
        lines.append(f"| {mat} | {len({r['sc_path'] for r in rs})} | {its} | {u} | {v} |")
    lines += [
        "",
        "Convergence jobs (iteration 0, U_in(TM) = 4 eV):",
        "",
        "| job | ecut (Ry) | k | q | conv_thr_chi | U(TM) eV | V(TM-O) eV | hp wall min | state |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for jid, j in sorted(jobs.items()):
        if j["purpose"] != "convergence":
            continue
        rs = [r for r in rows if r["sc_path"] == jid and r["iteration"] == 0]
        us = sorted({round(r["param_out"], 3) for r in rs if r["param_type"] == "U"
                     and r["atom_1_element"] != "O"})  # fmt: skip
        vs = sorted({round(r["param_out"], 3) for r in rs if r["param_type"] == "V"
                     and r.get("first_shell")})  # fmt: skip
        hp = j["steps"].get("hp0", {})
        wall = f"{hp['wall_s'] / 60:.1f}" if hp.get("wall_s") else "-"
        lines.append(
            f"| {jid} | {j['pw']['ecutwfc']:g}/{j['pw']['ecutrho']:g} | "
            f"{'x'.join(map(str, j['pw']['kpts']))} | {'x'.join(map(str, j['hp']['nq']))} | "
            f"{j['hp']['conv_thr_chi']:g} | {', '.join(map(str, us)) or '-'} | "
            f"{', '.join(map(str, vs)) or '-'} | {wall} | {j['state']} |"
        )
    lines += ["", "All jobs:", "", "| job | purpose | state | wall (min) | last failure |"]
    lines.append("|---|---|---|---|---|")
    for jid, j in sorted(jobs.items()):
        fail = j["failures"][-1]["reason"][:90] if j["failures"] else ""
        if j.get("rejected_steps"):  # finished but implausible: not labels
            fail = "; ".join(f"{k} rejected: {v}" for k, v in j["rejected_steps"].items())
        lines.append(f"| {jid} | {j['purpose']} | {j['state']} | {j['wall_s'] / 60:.1f} | {fail} |")
    return "\n".join(lines + ["", STATS_END])


def update_readme(readme: Path, rows: list[dict], jobs: dict) -> None:
    """Replace the generated section of ``readme`` (between the stats markers)."""
    if not readme.exists():
        return
    text = readme.read_text()
    if STATS_BEGIN not in text or STATS_END not in text:
        return
    head, rest = text.split(STATS_BEGIN, 1)
    tail = rest.split(STATS_END, 1)[1]
    write_text_atomic(readme, head + stats_markdown(rows, jobs) + tail)
