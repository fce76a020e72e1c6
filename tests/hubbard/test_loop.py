"""The ML self-consistent loop with a fake pw.x replaying a committed QE 6.7 run (AFM MnO)."""

import json
import os
import shutil
import stat
from pathlib import Path

import jax
import numpy as np
import pytest

from zoo.hubbard import HubbardLoopError, run_pw_local, self_consistent_hubbard
from zoo.hubbard._models import IntersiteModel, OnsiteModel
from zoo.hubbard._predict import HubbardUV
from zoo.hubbard.dft import structures
from zoo.hubbard.dft.parsers import parse_pw_output

DATA = Path(__file__).resolve().parents[1] / "data" / "qe"
PSEUDOS = {"Mn": "Mn.UPF", "O": "O.UPF"}


@pytest.fixture
def pseudo_dir(tmp_path):
    d = tmp_path / "pseudo"
    d.mkdir()
    for name in PSEUDOS.values():
        (d / name).write_text("fake\n")
    return d


class FakePw:
    """Replays tests/data/qe/MnO.scf.out; writes occup.txt where pw.x would (outdir/pwscf.save)."""

    def __init__(self, text=None, occup=True):
        self.text = text or (DATA / "MnO.scf.out").read_text()
        self.occup, self.inputs = occup, []

    def __call__(self, input_file: Path, workdir: Path) -> Path:
        self.inputs.append(input_file.read_text())
        if self.occup:
            save = workdir / "out" / "pwscf.save"
            save.mkdir(parents=True, exist_ok=True)
            shutil.copy(DATA / "MnO.occup.txt", save / "occup.txt")
        (workdir / "pw.out").write_text(self.text)
        return workdir / "pw.out"


def run(uv, tmp_path, pseudo_dir, fake, **kw):
    kw = {"tol": 1e-6, "max_iter": 5, "workdir": tmp_path / "loop", **kw}
    return self_consistent_hubbard(
        uv, structures.rocksalt_afm("Mn"), {"Mn": 4.0}, fake,
        pseudos=PSEUDOS, pseudo_dir=pseudo_dir, **kw,
    )  # fmt: skip


def test_loop_converges_and_feeds_predictions_back(uv, tmp_path, pseudo_dir):
    fake = FakePw()
    res = run(uv, tmp_path, pseudo_dir, fake)
    # the same replayed output twice predicts the same U/V: converged at the second run
    assert res.converged and len(res.history) == 2 and len(fake.inputs) == 2
    h0, h1 = res.history
    assert h0["U_in"] == {"1": 4.0, "2": 4.0} and h0["max_change_ev"] > 1e-6
    assert h1["max_change_ev"] < 1e-6 and h1["U_in"] == {k: v for k, v in h0["U"].items()}
    assert f"Hubbard_V(1,1,1) = {res.U[1]:.10g}" in fake.inputs[1]
    assert "Hubbard_V(1,1,1) = 4\n" in fake.inputs[0]
    # O 2p U is not predicted: kept switched on (pw.x prints it as 0.0000)
    assert (
        "Hubbard_V(3,3,1) = 1d-08" in fake.inputs[0]
        and "Hubbard_V(3,3,1) = 1d-08" in fake.inputs[1]
    )
    energy = parse_pw_output(fake.text)["energy_ry"]
    assert h0["energy_ry"] == energy and h0["energy_ev"] == pytest.approx(energy * 13.6057, 1e-4)
    assert h0["pw_wall_s"] >= 0 and h0["pw_scf_steps"] == 16 and not h0["reused"]
    assert h0["pw_reported_wall_s"] == parse_pw_output(fake.text)["wall_s"]
    assert len(res.parameters) == 28 and len(res.V) == 24
    # V(i, j, R) and V(j, i, -R) are written as one value
    assert res.V[(1, 3, (0, 0, -1))] == res.V[(3, 1, (0, 0, 1))]
    for k in ("iter00", "iter01"):
        assert {"pw.in", "pw.out", "occup.txt", "result.json", "run.json"} <= {
            p.name for p in (res.workdir / k).iterdir()
        }
        assert not (res.workdir / k / "out").exists()  # wavefunctions deleted
    summary = json.loads((res.workdir / "loop.json").read_text())
    assert summary["converged"] and summary["iterations"] == 2
    assert "V Mn1-3d O-2p 1 12 " in res.hubbard_card("qe7")


def test_mixing(uv, tmp_path, pseudo_dir):
    fake = FakePw()
    res = run(uv, tmp_path, pseudo_dir, fake, mixing=0.5, max_iter=2)
    u0 = res.history[0]["U"]["1"]
    assert res.history[1]["U_in"]["1"] == pytest.approx(4.0 + 0.5 * (u0 - 4.0))
    # the replayed output predicts u0 again: half the step is left
    assert res.history[1]["max_change_ev"] == pytest.approx(res.history[0]["max_change_ev"] / 2)
    assert "Hubbard_V(3,3,1) = 1d-08" in fake.inputs[1]  # switched-on values are not mixed
    assert not res.converged and res.U[1] == pytest.approx(u0)


def test_not_converged_within_max_iter(uv, tmp_path, pseudo_dir):
    res = run(uv, tmp_path, pseudo_dir, FakePw(), max_iter=1)
    assert not res.converged and len(res.history) == 1
    assert res.history[0]["max_change_ev"] >= 1e-6
    assert res.U == {int(k): v for k, v in res.history[0]["U"].items()}


def test_resume_reuses_finished_iterations(uv, tmp_path, pseudo_dir):
    first = run(uv, tmp_path, pseudo_dir, FakePw(), max_iter=1)
    fake = FakePw()
    res = run(uv, tmp_path, pseudo_dir, fake)  # more iterations allowed: continues at iter01
    assert len(fake.inputs) == 1 and res.converged
    assert res.history[0]["reused"] and not res.history[1]["reused"]
    assert res.history[0]["U"] == first.history[0]["U"]
    again = FakePw()
    res2 = run(uv, tmp_path, pseudo_dir, again)
    assert again.inputs == [] and res2.parameters == res.parameters and res2.U == res.U
    # killed after pw.x finished, before the prediction was saved: predicted again, not rerun
    (res.workdir / "iter01" / "result.json").unlink()
    res3 = run(uv, tmp_path, pseudo_dir, again)
    assert again.inputs == [] and res3.parameters == res.parameters
    # killed while pw.x ran: rerun
    (res.workdir / "iter01" / "result.json").unlink()
    (res.workdir / "iter01" / "run.json").unlink()
    run(uv, tmp_path, pseudo_dir, again)
    assert len(again.inputs) == 1


def test_resume_refuses_other_inputs_or_model(uv, tmp_path, pseudo_dir):
    run(uv, tmp_path, pseudo_dir, FakePw(), max_iter=1)
    with pytest.raises(ValueError, match="another pw.x input"):
        run(uv, tmp_path, pseudo_dir, FakePw(), pw_settings={"ecutwfc": 40.0})
    other = HubbardUV(
        OnsiteModel(["Mn"], feature_irreps="2x0e+2x2e", hidden_layers=1, key=jax.random.key(1)),
        uv.v_model,
    )
    with pytest.raises(ValueError, match="another model"):
        run(other, tmp_path, pseudo_dir, FakePw())


def test_pw_not_converged_stops_with_iteration(uv, tmp_path, pseudo_dir):
    text = (DATA / "MnO.scf.out").read_text()
    bad = text.replace("convergence has been achieved in  16", "convergence NOT achieved after 16")
    with pytest.raises(HubbardLoopError, match="iteration 0: pw.x SCF did not converge") as err:
        run(uv, tmp_path, pseudo_dir, FakePw(bad))
    assert err.value.iteration == 0 and err.value.path.name == "pw.out"
    with pytest.raises(HubbardLoopError, match="iteration 0: pw.x failed: .*truncated"):
        run(uv, tmp_path / "b", pseudo_dir, FakePw(text[: len(text) // 3]))


def test_pw_error_message_and_absurd_prediction(uv, tmp_path, pseudo_dir):
    text = (DATA / "MnO.scf.out").read_text()
    crash = text[: len(text) // 3] + (
        "\n %%%%%%%%%%\n     Error in routine c_bands (1):\n     too many bands are not converged\n"
    )
    with pytest.raises(HubbardLoopError, match="c_bands \\(1\\): too many bands"):
        run(uv, tmp_path / "a", pseudo_dir, FakePw(crash))
    with pytest.raises(HubbardLoopError, match="iteration 0: the model predicted .* outside"):
        run(uv, tmp_path / "b", pseudo_dir, FakePw(), max_abs_ev=1e-3)
    assert not (tmp_path / "b" / "loop" / "iter00" / "result.json").exists()


def test_missing_occup(uv, tmp_path, pseudo_dir):
    with pytest.raises(HubbardLoopError, match="iteration 0: pw.x wrote no occup.txt"):
        run(uv, tmp_path, pseudo_dir, FakePw(occup=False))


def test_unknown_element_fails_before_any_run(uv, tmp_path, pseudo_dir):
    fake = FakePw()
    with pytest.raises(ValueError, match="'Co' is not among the U model's species"):
        self_consistent_hubbard(
            uv, structures.rocksalt_afm("Co"), {"Co": 4.0}, fake, workdir=tmp_path / "w",
            pseudos={"Co": "Co.UPF", "O": "O.UPF"}, pseudo_dir=pseudo_dir,
        )  # fmt: skip
    assert fake.inputs == []
    no_o = HubbardUV(
        uv.u_model,
        IntersiteModel(
            ["Mn", "S"], feature_irreps="2x0e+2x1e+2x2e", hidden_layers=1, key=jax.random.key(0)
        ),
    )
    with pytest.raises(ValueError, match="'O' is not among the V model's species"):
        run(no_o, tmp_path, pseudo_dir, fake)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"tol": 0.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"syntax": "qe5"}, "syntax"),
        ({"max_abs_ev": -1.0}, "max_abs_ev"),
        ({"mixing": 0.0}, "mixing"),
        ({"pseudos": {"Mn": "Mn.UPF"}}, "pseudos"),
    ],
)
def test_bad_arguments(uv, tmp_path, pseudo_dir, kw, match):
    kw = {"pseudos": PSEUDOS, **kw}
    with pytest.raises(ValueError, match=match):
        self_consistent_hubbard(
            uv, structures.rocksalt_afm("Mn"), {"Mn": 4.0}, FakePw(), workdir=tmp_path,
            pseudo_dir=pseudo_dir, **kw,
        )  # fmt: skip


def test_bad_starting_guess(uv, tmp_path, pseudo_dir):
    mno = structures.rocksalt_afm("Mn")
    for guess, match in [({"Ni": 4.0}, "hubbard: element 'Ni'"), ([], "hubbard: empty")]:
        with pytest.raises(ValueError, match=match):
            self_consistent_hubbard(
                uv, mno, guess, FakePw(), workdir=tmp_path, pseudos=PSEUDOS, pseudo_dir=pseudo_dir
            )


def test_explicit_parameters_and_qe7_syntax(uv, tmp_path, pseudo_dir):
    fake = FakePw()
    st = structures.rocksalt_afm("Mn")
    params = [(1, 1, 5.0), (2, 2, 5.0), (3, 3, 1e-8), (4, 4, 1e-8), (1, 12, 1e-8)]
    res = self_consistent_hubbard(
        uv, st, params, fake, workdir=tmp_path / "w", pseudos=PSEUDOS, pseudo_dir=pseudo_dir,
        syntax="qe7", max_iter=1,
    )  # fmt: skip
    assert "HUBBARD {ortho-atomic}" in fake.inputs[0] and "V Mn1-3d Mn1-3d 1 1 5" in fake.inputs[0]
    assert res.history[0]["U_in"] == {"1": 5.0, "2": 5.0}
    shuffled = {
        **st,
        **{k: [st[k][i] for i in (2, 0, 1, 3)] for k in ("symbols", "positions", "spins")},
    }
    with pytest.raises(ValueError, match="QE order"):
        self_consistent_hubbard(
            uv, shuffled, params, fake, workdir=tmp_path / "x", pseudos=PSEUDOS,
            pseudo_dir=pseudo_dir,
        )  # fmt: skip


def test_run_pw_local(tmp_path):
    with pytest.raises(ValueError, match="npool"):
        run_pw_local(nprocs=2, npool=3)
    with pytest.raises(ValueError, match="nprocs"):
        run_pw_local(nprocs=0)
    exe = tmp_path / "fake-pw.x"  # echoes its stdin and environment: checks the plumbing
    exe.write_text("#!/bin/sh\ncat\necho OMP=$OMP_NUM_THREADS ROOT=$OMPI_ALLOW_RUN_AS_ROOT\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "pw.in").write_text("&control\n/\n")
    out = run_pw_local(nprocs=1, pw_exe=str(exe))(tmp_path / "pw.in", tmp_path)
    assert out == tmp_path / "pw.out"
    assert out.read_text() == "&control\n/\nOMP=1 ROOT=1\n"
    with pytest.raises(FileNotFoundError, match="not found"):
        run_pw_local(nprocs=1, pw_exe=os.fspath(tmp_path / "none"))(tmp_path / "pw.in", tmp_path)


def _mno_kernels(u_iterations, v_paths, v_iterations) -> HubbardUV:
    """Kernel U / V models on committed AFM MnO rows (`p100`: the cell the fake pw.x replays)."""
    from zoo.data.hubbard import DATA_DIR, load_rows, u_dataset, v_dataset
    from zoo.hubbard import KernelModel

    rows = [r for r in load_rows(DATA_DIR / "labels.jsonl") if r.get("purpose") == "production"]

    def fit(build, paths, iterations, kind):
        ds = build([r for r in rows if r["sc_path"] in paths and r["iteration"] in iterations])
        return KernelModel.fit(ds["species"], ds["inputs"], ds["y"], kind=kind, gamma=0.1,
                               lam=1e-3)  # fmt: skip

    sym = ("p100-MnO-sym-e+0.000",)
    return HubbardUV(
        fit(u_dataset, sym, u_iterations, "onsite"),
        fit(v_dataset, v_paths, v_iterations, "intersite"),
    )


def test_kernel_loop_stays_within_the_training_range_of_u_in_and_v_in(tmp_path, pseudo_dir):
    """Inside the range (MnO U_in 4-4.26 eV) a kernel loop converges; a starting U outside is
    refused before pw.x runs; a predicted V outside the V_in the model saw (only 1e-8) stops
    the loop before the next pw.x run, naming the pair, the value and the range."""
    uv = _mno_kernels((0, 1, 2), ("p100-MnO-sym-e+0.000",), (0, 1, 2))
    assert uv.u_model.param_ranges()["Mn"] == pytest.approx([4.0, 4.2638])
    res = run(uv, tmp_path, pseudo_dir, FakePw(), workdir=tmp_path / "inside")
    assert res.converged and 4.0 < res.U[1] < 4.3
    fake = FakePw()
    with pytest.raises(
        ValueError, match=r"hubbard: U of site 1 \(Mn\): its U_in = 8 eV is outside the Mn "
        r"training range of U_in, 4 to 4.264 eV"
    ):  # fmt: skip
        self_consistent_hubbard(
            uv, structures.rocksalt_afm("Mn"), {"Mn": 8.0}, fake, workdir=tmp_path / "high",
            pseudos=PSEUDOS, pseudo_dir=pseudo_dir,
        )  # fmt: skip
    assert fake.inputs == []
    it0 = ("p100-MnO-sym-e+0.000", "p104-MnO-rat-s0", "p110-MnO-sym-e-0.030")
    narrow = _mno_kernels((0, 1, 2), it0, (0,))
    assert narrow.v_model.param_ranges()["O-Mn"] == pytest.approx([0.0, 0.0], abs=1e-7)
    fake = FakePw()
    with pytest.raises(
        HubbardLoopError, match=r"iteration 0: next pw.x input: V of \(\d+, \d+\) \((Mn-O|O-Mn)"
        r"\): its V_in = 0.70\d* eV is outside the O-Mn training range of V_in.*; not run"
    ):  # fmt: skip
        run(narrow, tmp_path, pseudo_dir, fake, workdir=tmp_path / "narrow")
    assert len(fake.inputs) == 1


# --- one real loop with pw.x: FM NiO (2 atoms), the settings of test_dft_qe.py -------------

LABELS = Path(__file__).resolve().parents[2] / "data" / "hubbard" / "labels.jsonl"


def _train(model, inputs, y, steps=150):
    """A few hundred Adam steps on all rows: a small real fit, not a production model."""
    import equinox as eqx
    import jax.numpy as jnp
    import optax

    from zoo.hubbard import fit_scalers

    model = fit_scalers(model, inputs if len(inputs) > 1 else inputs[0], y)
    opt = optax.adam(1e-2)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, state):
        loss, grad = eqx.filter_value_and_grad(lambda m: jnp.mean((m(*inputs) - y) ** 2))(model)
        updates, state = opt.update(grad, state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), state, loss

    for _ in range(steps):
        model, state, loss = step(model, state)
    return model, float(loss)


def tiny_trained_uv() -> HubbardUV:
    """U and V models fit in-test on the committed labels (data/hubbard/labels.jsonl).

    V_in enters as pw.x prints it (4 decimals, what ``predict`` reads): the committed rows are
    all iteration 0 with V_in = 1e-8, which the RMS input scaling would blow up by 1e8."""
    import numpy as np

    from zoo.hubbard._features import intersite_features, onsite_features

    rows = [json.loads(line) for line in LABELS.read_text().splitlines() if line.strip()]
    # the queue keeps adding materials to the file: fit only the oxides of the elements below
    u_species, v_species = ["Mn", "Ni"], ["Mn", "Ni", "O"]
    u_rows = [
        r for r in rows if r["param_type"] == "U" and r["atom_1_manifold"] == "3d"
        and r["atom_1_element"] in u_species
    ]  # fmt: skip
    v_rows = [
        r for r in rows if r["param_type"] == "V" and r["atom_1_manifold"] == "3d"
        and r["atom_2_manifold"] == "2p" and r["atom_1_element"] in u_species
    ]  # fmt: skip
    assert {r["atom_1_element"] for r in u_rows} >= {"Ni"} and v_rows
    occ = np.array([r["atom_1_occs"] for r in u_rows])
    x = onsite_features(
        [r["atom_1_element"] for r in u_rows], occ[:, 0], occ[:, 1],
        [r["param_in"] for r in u_rows], species=u_species,
    )  # fmt: skip
    u_model, u_loss = _train(
        OnsiteModel(u_species, feature_irreps="4x0e+2x2e", hidden_layers=1, key=jax.random.key(0)),
        (x.array,), np.array([r["param_out"] for r in u_rows]),
    )  # fmt: skip
    d, p = (
        np.array([r["atom_1_occs"] for r in v_rows]),
        np.array([r["atom_2_occs"] for r in v_rows]),
    )
    feats = intersite_features(
        [r["atom_2_element"] for r in v_rows], p[:, 0], p[:, 1],
        [r["atom_1_element"] for r in v_rows], d[:, 0], d[:, 1],
        [r["dist_bohr"] for r in v_rows], [round(r["param_in"], 4) for r in v_rows],
        species=v_species,
    )  # fmt: skip
    v_model, v_loss = _train(
        IntersiteModel(v_species, feature_irreps="4x0e+2x1e+2x2e", hidden_layers=1,
                       key=jax.random.key(1)),
        tuple(f.array for f in feats), np.array([r["param_out"] for r in v_rows]),
    )  # fmt: skip
    return HubbardUV(u_model, v_model), (u_loss, v_loss)


@pytest.mark.qe
@pytest.mark.timeout(600)
def test_real_loop_nio(tmp_path, nio_pseudos):
    pseudos, pdir = nio_pseudos
    uv, losses = tiny_trained_uv()
    settings = {"ecutwfc": 30.0, "ecutrho": 240.0, "kpts": [2, 2, 2], "conv_thr": 1e-8,
                "tot_magnetization": 2, "mixing_beta": 0.4}  # fmt: skip
    tol, max_iter = 0.01, 4
    res = self_consistent_hubbard(
        uv, structures.rocksalt_fm("Ni"), {"Ni": 4.0}, run_pw_local(nprocs=2, npool=2),
        workdir=tmp_path / "loop", pseudos=pseudos, pseudo_dir=pdir, pw_settings=settings,
        tol=tol, max_iter=max_iter,
    )  # fmt: skip
    print("losses", losses)
    for h in res.history:
        print(h["iteration"], h["U_in"], h["U"], h["max_change_ev"], h["energy_ev"],
              round(h["pw_wall_s"], 1), round(h["predict_s"], 2))  # fmt: skip
    changes = [h["max_change_ev"] for h in res.history]
    if res.converged:
        assert changes[-1] < tol and all(c >= tol for c in changes[:-1])
    else:
        assert len(res.history) == max_iter and min(changes) >= tol
    for prev, cur in zip(res.history, res.history[1:]):
        assert cur["U_in"] == pytest.approx(prev["U"])  # each run used the previous prediction
    assert 0.0 < res.U[1] < 15.0 and len(res.V) == 12  # 6 Ni-O pairs, both directions
    assert all(np.isfinite(h["energy_ev"]) for h in res.history)
