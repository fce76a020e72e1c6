"""The plan: pseudopotential directory, settings hashes of existing jobs, seeding, cathodes."""

import json
from pathlib import Path

import numpy as np
import pytest

from zoo.hubbard.dft import cathodes, cycle, inputs, plan, structures
from zoo.hubbard.dft.plan_cathodes import FAMILIES, estimated_cost
from zoo.hubbard.dft.queue import list_jobs
from zoo.hubbard.dft.runner import StepBusy, job_lock, read_json, write_json_atomic

REPO_DATA = Path(__file__).resolve().parents[2] / "data" / "hubbard"


@pytest.fixture
def plan_pseudos(tmp_path, monkeypatch):
    """$ZOO_PSEUDO_DIR with a stand-in for every file the plan names."""
    pdir = tmp_path / "plan_pseudo"
    pdir.mkdir()
    names = set(plan.PSEUDOS.values())
    names |= {f"{m}.pbe-{f}-rrkjus_psl.1.0.0.UPF" for m in ("Fe", "Co", "Ni") for f in ("n", "spn")}
    for n in names:
        (pdir / n).write_text(f"stand-in {n}")
    monkeypatch.setenv("ZOO_PSEUDO_DIR", str(pdir))
    return pdir


def test_seed_extends_finished_jobs_from_the_committed_data(tmp_path, plan_pseudos):
    """A job done with 2 iterations, planned with 3, continues at scf2 (nothing is redone)."""
    repo = REPO_DATA
    jid = "p101-NiO-sym-e+0.000"
    man = read_json(repo / "manifest.json")
    rec = man["jobs"][jid]  # as it was committed after 2 iterations (the queue may add a 3rd)
    rec["steps"] = {k: v for k, v in rec["steps"].items() if k[-1] in "01"}
    assert rec["state"] == "done" and len(rec["steps"]) == 4
    write_json_atomic(tmp_path / "manifest.json", man)
    rows = (repo / "labels.jsonl").read_text().splitlines()
    keep = [r for r in rows if not json.loads(r)["id"].startswith(f"{jid}/it2/")]
    (tmp_path / "labels.jsonl").write_text("\n".join(keep) + "\n")
    plan.seed(tmp_path / "queue", manifest=tmp_path / "manifest.json")
    status = read_json(tmp_path / "queue" / jid / "status.json")
    assert [k for k, v in sorted(status["steps"].items()) if v.get("restored")] == [
        "hp0", "hp1", "scf0", "scf1"
    ]  # fmt: skip
    assert status["steps"]["scf2"]["state"] == "pending"
    assert (tmp_path / "queue" / jid / "hp1" / "parameters.out").exists()
    # Failed jobs and pseudopotential tests are not re-added.
    assert not (tmp_path / "queue" / "p102-CoO-sym-e+0.000").exists()
    assert not (tmp_path / "queue" / "p10-pptest-FeO-rattled").exists()


def _seeded(tmp_path: Path, jid: str) -> tuple[Path, Path, dict]:
    """A queue seeded from the plan alone (no manifest): its folder, `jid`'s job.json and job."""
    queue = tmp_path / "queue"
    plan.seed(queue, manifest=tmp_path / "none.json")
    jp = queue / jid / "job.json"
    return queue, jp, read_json(jp)


def test_seed_refreshes_the_run_order_and_the_settings_of_unstarted_jobs(tmp_path, plan_pseudos):
    jid = "p105-NiO-rat-s0"
    queue, jp, job = _seeded(tmp_path, jid)
    write_json_atomic(jp, {**job, "priority": 999})
    plan.seed(queue, manifest=tmp_path / "none.json")
    again = read_json(jp)
    assert again["priority"] == job["priority"] != 999
    assert again["settings_hash"] == job["settings_hash"] and again["created"] == job["created"]
    # a job that never started takes the plan's settings; a started one keeps its own
    fe = queue / "p117-FeO-rat-s1-sm" / "job.json"
    write_json_atomic(fe, {**read_json(fe), "settings_hash": "old", "pw": {}})
    write_json_atomic(jp, {**job, "settings_hash": "old"})
    done = {"state": "running", "steps": {"scf0": {"state": "done"}, "hp0": {"state": "pending"}}}
    write_json_atomic(queue / jid / "status.json", done)
    plan.seed(queue, manifest=tmp_path / "none.json")
    assert read_json(fe)["pw"]["ecutwfc"] == 40 and read_json(fe)["settings_hash"] != "old"
    assert read_json(jp)["settings_hash"] == "old"
    # how hp.x is split is refreshed the same way (it is not in the settings hash)
    ni = queue / "c950-LiNiO2-rat-s0" / "job.json"
    planned = read_json(ni)["hp_q_per_piece"]
    write_json_atomic(ni, {k: v for k, v in read_json(ni).items() if k != "hp_q_per_piece"})
    write_json_atomic(jp, {**job, "hp_split": True})  # started: its pieces stay as they are
    plan.seed(queue, manifest=tmp_path / "none.json")
    assert read_json(ni)["hp_q_per_piece"] == planned
    assert read_json(jp)["hp_split"] is True
    # Rattled Ni cells (most unique labels per CPU-minute) run before symmetric strains.
    prio = {j["id"]: j["priority"] for j in plan.production_jobs()}
    assert prio["p125-NiO-rat-s2"] < prio["p111-NiO-sym-e-0.030"]
    assert prio["p100-MnO-sym-e+0.000"] < prio["p125-NiO-rat-s2"]
    # Fe is scarce: symmetric LiFeO2 first; rattled FeO (its SCF stalls) late, smeared
    fe_jobs = {j["id"]: j for j in plan.production_jobs() if "FeO-rat" in j["id"]}
    assert all(j["pw"]["smearing"] == "gaussian" for j in fe_jobs.values())
    assert prio["p171-LiFeO2-sym-e+0.000"] < prio["p115-NiO-rat-s1"] < prio["p107-FeO-rat-s0-sm"]


def test_seed_starts_afresh_a_started_job_that_finished_no_step(tmp_path, plan_pseudos):
    """New settings for a job whose first SCF failed: the old attempt moves to superseded/."""
    jid = "c500a-kcheck-LiFePO4-k1x1x2-q111"
    queue, jp, job = _seeded(tmp_path, jid)
    write_json_atomic(jp, {**job, "settings_hash": "old", "pw": {"occupations": "fixed"}})
    failed = {
        "state": "running",
        "failures": [{"step": "scf0"}],
        "steps": {"scf0": {"state": "running"}},
    }
    write_json_atomic(queue / jid / "status.json", failed)
    (queue / jid / "scf0").mkdir()
    (queue / jid / "scf0" / "pw.out").write_text("not converged")
    with job_lock(queue / jid):
        with pytest.raises(StepBusy):
            plan.seed(queue, manifest=tmp_path / "none.json")  # a step of it runs: untouched
    assert read_json(jp)["settings_hash"] == "old"
    plan.seed(queue, manifest=tmp_path / "none.json")

    def settings(j):
        return {k: v for k, v in j.items() if k != "created"}

    assert settings(read_json(jp)) == settings(job) and not (queue / jid / "status.json").exists()
    old = queue / "superseded" / f"{jid}-old"
    assert (old / "scf0" / "pw.out").read_text() == "not converged"
    assert read_json(old / "status.json") == failed
    assert [j["id"] for j, _ in list_jobs(queue)].count(jid) == 1  # the old one is not a job
    # seeding again with the old attempt still in superseded/ changes nothing
    again = read_json(jp)
    plan.seed(queue, manifest=tmp_path / "none.json")
    assert read_json(jp) == again


def test_pseudo_dir_comes_from_the_argument_or_the_environment(tmp_path, monkeypatch, plan_pseudos):
    monkeypatch.delenv("ZOO_PSEUDO_DIR")
    with pytest.raises(ValueError, match="set ZOO_PSEUDO_DIR"):
        plan.planned_jobs()
    with pytest.raises(ValueError, match="does not exist"):
        cycle.resolve_pseudo_dir(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="missing Xx.UPF"):
        cycle.resolve_pseudo_dir(plan_pseudos, ["Xx.UPF", plan.PSEUDOS["O"]])
    assert cycle.resolve_pseudo_dir(plan_pseudos, plan.PSEUDOS.values()) == str(plan_pseudos)
    (plan_pseudos / plan.PSEUDOS["P"]).unlink()
    with pytest.raises(ValueError, match="missing P.pbe-nl"):
        plan.planned_jobs(plan_pseudos)


def test_existing_jobs_keep_their_settings_hash_wherever_the_pseudopotentials_are(plan_pseudos):
    jobs = {j["id"]: j for j in plan.planned_jobs()}
    man = read_json(REPO_DATA / "manifest.json")["jobs"]
    # the pseudopotential tests and the first convergence jobs ran with older settings; jobs
    # that never started take the plan's settings when it changes them (seed)
    current = [
        k
        for k in man
        if k in jobs
        and man[k]["steps"]
        and "pptest" not in k
        and k[:3] not in ("p20", "p21", "p22", "p23")
    ]
    assert len(current) > 20
    assert all(jobs[k]["settings_hash"] == man[k]["settings_hash"] for k in current)
    j = jobs["p101-NiO-sym-e+0.000"]
    assert "pseudo_dir" not in json.dumps({k: j[k] for k in ("pw", "hp", "pseudos")})
    assert (
        j["pseudo_md5"][plan.PSEUDOS["Ni"]]
        == __import__("hashlib").md5((plan_pseudos / plan.PSEUDOS["Ni"]).read_bytes()).hexdigest()
    )


def test_a_step_refuses_pseudopotentials_that_differ_without_spending_an_attempt(
    tmp_path, monkeypatch, plan_pseudos
):
    job = next(j for j in plan.planned_jobs() if j["id"] == "c160-beta-MnO2-sym-e+0.000")
    jobdir = cycle.add_job(tmp_path / "queue", job)
    other = tmp_path / "other"
    other.mkdir()
    for f in job["pseudos"].values():
        (other / f).write_text("another file with the same name")
    monkeypatch.setenv("ZOO_PSEUDO_DIR", str(other))
    with pytest.raises(ValueError, match=r"differs from the job's \(md5\)"):
        cycle.run_step(jobdir, np=1, nice=0, pw_exe="false")
    assert not (jobdir / "status.json").exists()


def _tm_o_distances(st):
    c = inputs.canonical_order(st)
    return [inputs.pair_distance(c, i, j) for i, j in inputs.first_shell_pairs(c)]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cathode_cells_are_octahedral_and_sampled_like_the_rocksalt_cells(family):
    build, material, occ, k, q, _ = FAMILIES[family]
    st = build()
    sym = st["symbols"]
    tm = [i for i, s in enumerate(sym) if s in structures.TRANSITION_METALS]
    d = _tm_o_distances(st)
    assert len(d) == 6 * len(tm) and 1.80 < min(d) and max(d) < 2.35, (family, min(d), max(d))
    assert all(st["spins"][i] in (1, -1) for i in tm)
    if material == "beta-MnO2" or "FePO4" in material:
        assert sum(st["spins"][i] for i in tm) == 0  # antiferromagnetic cells
    ref = structures.rocksalt_afm("Mn")["cell"]
    assert all(np.asarray(k) >= cathodes.mesh_like_rocksalt(st["cell"], ref))
    assert all(a % b == 0 for a, b in zip(k, q, strict=True))  # q mesh commensurate with k
    assert ("smearing" in occ) != ("tot_magnetization" in occ)


def test_cathode_formulas_and_the_intermediate_lithium_cell():
    count = lambda st, el: st["symbols"].count(el)  # noqa: E731
    assert [count(cathodes.olivine_lifepo4(), e) for e in ("Li", "Fe", "P", "O")] == [4, 4, 4, 16]
    assert len(cathodes.olivine_lifepo4(False)["symbols"]) == 24
    assert [count(cathodes.spinel_limn2o4(), e) for e in ("Li", "Mn", "O")] == [2, 4, 8]
    half = cathodes.layered_linio2(0.5)
    assert [count(half, e) for e in ("Li", "Ni", "O")] == [1, 2, 4]
    assert abs(np.linalg.det(half["cell"])) == pytest.approx(
        2 * abs(np.linalg.det(cathodes.layered_linio2()["cell"]))
    )
    with pytest.raises(ValueError, match="lithium"):
        cathodes.layered_linio2(0.25)
    with pytest.raises(ValueError, match="no 'Li'"):
        cathodes.without(cathodes.rutile_mno2(), "Li")


def test_cathode_queue_order(plan_pseudos):
    jobs = plan.planned_jobs()
    prio = {j["id"]: j["priority"] for j in jobs}
    cath = [j for j in jobs if j["id"].startswith("c")]
    assert len(prio) == len(jobs) and all(j["hp_split"] for j in cath)
    rocksalt_strains = [p for i, p in prio.items() if "-sym-e" in i and i[1] == "1" and p > 200]
    checks = [j for j in cath if j["purpose"] == "convergence"]
    assert {j["meta"]["family"] for j in checks} >= {"rutile-MnO2", "spinel-LiMn2O4"}
    cheap = [j for j in cath if "sym-e+0.000" in j["id"] and len(j["structure"]["symbols"]) <= 6]
    early = [j for j in checks if "FePO4" not in j["id"]] + cheap
    assert max(j["priority"] for j in early) < min(rocksalt_strains)
    # the layered cells (two metals, two Li concentrations, hours each) before beta-MnO2's (~12 h)
    layered = [
        p
        for i, p in prio.items()
        if "-sym-e+0.000" in i
        and ("NiO2" in i or "LiMnO2" in i or "MnO2-layered" in i)
        and "Li0.5" not in i
    ]
    assert max(layered) < prio["c160-beta-MnO2-sym-e+0.000"] < prio["c170-LiMn2O4-sym-e+0.000"]
    # FePO4's symmetric cell (Fe3+: iron, a third metal) right after the symmetric layered
    # cells, before Li0.5NiO2 and the strained layered cells; LiFePO4 after those, before
    # beta-MnO2, smeared (its fixed-occupation SCF stalls); FePO4 (Fe3+ d5) fixed
    later_layered = [p for i, p in prio.items() if i.startswith(("c175-", "c181", "c182", "c183", "c184"))]  # fmt: skip
    lifepo4 = [p for i, p in prio.items() if "LiFePO4" in i and "-rat-" not in i]
    assert max(layered) < prio["c511-FePO4-sym-e+0.000"] < min(later_layered)
    assert max(later_layered) <= min(lifepo4) and max(lifepo4) < prio["c160-beta-MnO2-sym-e+0.000"]
    olivine = {j["id"]: j["pw"] for j in jobs if "FePO4" in j["id"]}
    assert all(pw["smearing"] == "mv" for i, pw in olivine.items() if "LiFePO4" in i)
    assert all(pw["tot_magnetization"] == 0 for i, pw in olivine.items() if "LiFePO4" not in i)
    # the rattled spinel and beta-MnO2 cells (fewest labels per core-hour) after every other
    # cathode cell, before the rattled olivines
    late = {i: p for i, p in prio.items() if "LiMn2O4-rat" in i or "beta-MnO2-rat" in i}
    others = [p for i, p in prio.items() if i[0] == "c" and "-rat-" not in i]
    assert len(late) == 3 and min(late.values()) > max(others)
    assert max(late.values()) < min(p for i, p in prio.items() if "FePO4-rat" in i)
    # the rattled layered-Ni and spinel cells run (ids kept), their hp.x split over q
    for jid in ("c950-LiNiO2-rat-s0", "c950-LiNiO2-rat-s1", "c952-NiO2-rat-s0",
                "c954-LiMn2O4-rat-s0"):  # fmt: skip
        job = next(j for j in cath if j["id"] == jid)
        assert job["priority"] < 900 and job["hp_q_per_piece"] >= 1
    # no hp.x piece is estimated above ~45 min of the machine, but a Gamma-only k check that
    # cannot be split (one q point per perturbed atom)
    long = {j["id"] for j in cath if estimated_cost(j)["piece_min"] > 45}
    assert all(np.prod(j["hp"]["nq"]) == 1 for j in cath if j["id"] in long)
    assert long == {"c153b-kcheck-LiMn2O4-k4x4x4-q111"}
    beta = next(j for j in cath if j["id"] == "c160-beta-MnO2-sym-e+0.000")
    assert beta["pw"]["kpts"] == [4, 4, 4] and beta["hp"]["nq"] == [2, 2, 2]
    assert estimated_cost(beta) == {
        "hours": pytest.approx(11.9, abs=0.05),
        "piece_min": pytest.approx(39.7, abs=0.1),
        "n_pert": 2,
        "q_per_piece": 3,
    }
    rat = estimated_cost(next(j for j in cath if j["id"] == "c950-LiNiO2-rat-s0"))
    assert rat["q_per_piece"] == 4 and rat["piece_min"] == pytest.approx(36.8, abs=0.1)
    half = [p for i, p in prio.items() if "Li0.5NiO2" in i]
    assert min(half) > max(prio["c161-LiNiO2-sym-e+0.000"], prio["c162-NiO2-sym-e+0.000"])
