"""One real pw.x -> hp.x -> pw.x -> hp.x cycle on the smallest cell (2-atom FM NiO), cheap settings.

Pseudopotentials are regenerated with ld1.x from the committed pslibrary inputs
(tests/data/qe/ld1/), so the test needs only the quantum-espresso package.
"""

import pytest

from zoo.hubbard.dft import cycle, dataset, structures
from zoo.hubbard.dft.runner import read_json

pytestmark = pytest.mark.qe  # needs Quantum ESPRESSO (the nio_pseudos fixture checks it)


def _nio_job(tmp_path, nio_pseudos, jid: str, nq: list[int], **kw):
    """2-atom FM NiO at cheap settings, added to ``tmp_path/queue``."""
    pseudos, pdir = nio_pseudos
    job = cycle.make_job(
        jid,
        material="NiO",
        structure=structures.rocksalt_fm("Ni"),
        pseudos=pseudos,
        pseudo_dir=str(pdir),
        pw={"ecutwfc": 30.0, "ecutrho": 240.0, "kpts": [2, 2, 2], "conv_thr": 1e-8,
            "tot_magnetization": 2, "mixing_beta": 0.4},
        hp={"nq": nq, "conv_thr_chi": 1e-4, "niter_max": 40},
        u_init={"Ni": 4.0},
        max_attempts=1,
        **kw,
    )  # fmt: skip
    return cycle.add_job(tmp_path / "queue", job)


@pytest.mark.timeout(900)
def test_real_cycle_nio(tmp_path, nio_pseudos):
    jobdir = _nio_job(tmp_path, nio_pseudos, "nio-test", [1, 1, 1], n_iter=2)
    done = []
    for _ in range(8):
        step = cycle.run_step(jobdir, np=1, nice=0)
        if step is None:
            break
        done.append(step)
    status = read_json(jobdir / "status.json")
    assert status["state"] == "done", status.get("failures")
    assert done == ["scf0", "hp0", "scf1", "hp1"]
    rows = dataset.rows_for_job(jobdir)
    u = [r for r in rows if r["param_type"] == "U" and r["atom_1_element"] == "Ni"]
    v = [r for r in rows if r["param_type"] == "V" and r["atom_2_element"] == "O"]
    assert len(u) == 2 and len(v) >= 2  # one U(Ni) per iteration, Ni-O V per iteration
    it0, it1 = sorted(u, key=lambda r: r["iteration"])
    assert it0["param_in"] == 4.0 and it1["param_in"] == pytest.approx(it0["param_out"])
    assert 2.0 < it0["param_out"] < 12.0
    up, down = it0["atom_1_occs"]
    mag = sum(up[i][i] for i in range(5)) - sum(down[i][i] for i in range(5))
    assert 1.0 < mag < 2.0  # Ni2+ d8: two holes in the minority eg
    assert not (jobdir / "out").exists()  # wavefunctions deleted


@pytest.mark.timeout(900)
def test_hp_in_pieces_gives_the_unsplit_parameters(tmp_path, nio_pseudos):
    """perturb_only_atom pieces + compute_hp (QE 6.7) reproduce one unsplit hp.x run."""
    rows = {}
    for split in (True, False):
        jid = f"nio-split{int(split)}"
        jobdir = _nio_job(tmp_path, nio_pseudos, jid, [2, 2, 2], n_iter=1, hp_split=split)
        steps = [cycle.run_step(jobdir, np=1, nice=0) for _ in range(6)]
        status = read_json(jobdir / "status.json")
        assert status["state"] == "done", status.get("failures")
        n_hp = 4 if split else 1  # init, a1 (Ni), a2 (O), collect
        assert steps == ["scf0"] + ["hp0"] * n_hp + [None] * (5 - n_hp)
        rows[split] = sorted(
            (r["param_type"], r["atom_1_idx"], r["atom_2_sc_idx"], r["param_out"])
            for r in dataset.rows_for_job(jobdir)
        )
    assert rows[True] == rows[False] and len(rows[True]) == 8  # U(Ni), U(O), 6 V(Ni-O)


@pytest.mark.timeout(1200)
def test_hp_split_over_q_gives_the_unsplit_parameters(tmp_path, nio_pseudos):
    """start_q/last_q pieces + sum_pertq per atom, then compute_hp (QE 6.7), reproduce one
    unsplit hp.x run; the q = Gamma piece gives each atom's number of q points."""
    rows = {}
    for per in (1, None):
        jid = f"nio-q{per}"
        kw = {"hp_split": True, "hp_q_per_piece": per} if per else {}
        jobdir = _nio_job(tmp_path, nio_pseudos, jid, [2, 2, 2], n_iter=1, **kw)
        for _ in range(40):
            if cycle.run_step(jobdir, np=1, nice=0) is None:
                break
        status = read_json(jobdir / "status.json")
        assert status["state"] == "done", status.get("failures")
        if per:
            pcs = status["steps"]["hp0"]["pieces"]
            nqs = pcs["a1q1"]["nqs"]
            assert nqs > 1 and f"a1q{nqs}" in pcs and pcs["a1"]["state"] == "done"
            assert (jobdir / "hp0/pieces/a1/hp.in").read_text().count("sum_pertq = .true.") == 1
        rows[per] = sorted(
            (r["param_type"], r["atom_1_idx"], r["atom_2_sc_idx"], r["param_out"])
            for r in dataset.rows_for_job(jobdir)
        )
    assert rows[1] == rows[None] and len(rows[1]) == 8  # U(Ni), U(O), 6 V(Ni-O)
