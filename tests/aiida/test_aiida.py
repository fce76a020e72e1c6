"""zoo.hubbard.aiida on aiida-core's service-free profile (core.sqlite_temp: no PostgreSQL,
no RabbitMQ): hp.x results in AiiDA's Hubbard data -> label rows, predictions -> Hubbard data.

Needs the AiiDA packages (``zoo.hubbard.aiida.REQUIREMENTS``): without them the import below
fails, and so does this file (never skipped)."""

import numpy as np
import pytest

import zoo
from zoo.data.hubbard import DATA_DIR, load_rows
from zoo.hubbard._run import read_run

# first: without the AiiDA packages this fails with zoo's message naming them
from zoo.hubbard.aiida import HubbardStructureData, label_rows, orm, predict, to_hubbard_structure

RUN = "NiO_strain-3pc_it0"  # pw.x run of data/hubbard's p111-NiO-sym-e-0.030, iteration 0
SC_PATH, BOHR = "p111-NiO-sym-e-0.030", 0.529177210903


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    """A throw-away AiiDA profile: SQLite in a temporary folder, no daemon or broker."""
    from aiida import load_profile
    from aiida.storage.sqlite_temp import SqliteTempBackend

    folder = tmp_path_factory.mktemp("aiida")
    return load_profile(SqliteTempBackend.create_profile(filepath=str(folder)), allow_switch=True)


@pytest.fixture(scope="module")
def files():
    from pathlib import Path

    folder = Path(zoo.__file__).parent / "examples" / "hubbard-uv"
    out, occup = folder / f"{RUN}.out", folder / f"{RUN}.occup.txt"
    assert out.is_file() and occup.is_file(), f"{folder}: the {RUN} example run is missing"
    return out, occup, folder


@pytest.fixture(scope="module")
def reference(files):
    """The committed rows of the example's hp.x step (the queue's own reading of it)."""
    rows = [r for r in load_rows(DATA_DIR / "labels.jsonl")
            if r["sc_path"] == SC_PATH and r["iteration"] == 0]  # fmt: skip
    assert rows, f"no rows of {SC_PATH}/it0 in data/hubbard"
    return rows


def _structure(files) -> HubbardStructureData:
    """The run's structure as AiiDA data, kind names = the pw.x species labels."""
    out, occup, _ = files
    run = read_run(out, occup)
    sites = [(lab.rstrip("0123456789"), lab, tuple(p * BOHR)) for lab, p in
             zip(run.labels, run.positions)]  # fmt: skip
    return HubbardStructureData(cell=(run.cell * BOHR).tolist(), sites=sites)


def _hp_output(files, reference) -> HubbardStructureData:
    """What aiida-hubbard's parser stores for that step: the hp.x U and V on the structure
    (V written from the oxygen side for half of the pairs: either side must be read)."""
    hub = _structure(files)
    for n, r in enumerate(reference):
        i, a, image = r["atom_1_idx"] - 1, r["atom_2_idx"] - 1, tuple(r["atom_2_image"])
        m1, m2 = r["atom_1_manifold"], r["atom_2_manifold"]
        kind = "U" if r["param_type"] == "U" else "V"
        if kind == "V" and n % 2:
            i, a, m1, m2, image = a, i, m2, m1, tuple(-t for t in image)
        hub.append_hubbard_parameter(i, m1, a, m2, r["param_out"], image, kind)
    return hub


def test_hp_results_in_aiida_read_as_the_queue_rows(profile, files, reference):
    out, occup, _ = files
    hub = _hp_output(files, reference)
    hub.store()
    retrieved = orm.FolderData()
    retrieved.base.repository.put_object_from_file(str(out), "aiida.out")
    retrieved.base.repository.put_object_from_file(str(occup), "out/aiida.save/occup.txt")
    retrieved.store()
    printed = label_rows(hub, retrieved, retrieved, sc_path=SC_PATH, material="NiO")
    hub_in = _structure(files)  # what pw.x ran with: U(Ni) 4 eV, O and Ni-O at 1e-8
    for r in reference:
        i, a, m1, m2 = (
            r["atom_1_idx"] - 1,
            r["atom_2_idx"] - 1,
            r["atom_1_manifold"],
            r["atom_2_manifold"],
        )
        hub_in.append_hubbard_parameter(i, m1, a, m2, r["param_in"], tuple(r["atom_2_image"]),
                                        "U" if r["param_type"] == "U" else "V")  # fmt: skip
    rows = label_rows(hub, retrieved, retrieved, sc_path=SC_PATH, iteration=0, material="NiO",
                      hubbard_in=hub_in)  # fmt: skip
    # pw.x prints the parameters it used to 4 decimals
    np.testing.assert_allclose([r["param_in"] for r in printed], [r["param_in"] for r in rows],
                               atol=5e-5)  # fmt: skip
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {r["id"] for r in reference}
    for ref in reference:
        got = by_id[ref["id"]]
        for key in ("param_type", "atom_1_idx", "atom_2_idx", "atom_2_sc_idx", "atom_2_image",
                    "atom_1_element", "atom_2_element", "param_out", "param_in"):  # fmt: skip
            assert got[key] == pytest.approx(ref[key]), (ref["id"], key)
        assert got["dist_bohr"] == pytest.approx(ref["dist_bohr"], abs=1e-4)
        for key in ("atom_1_occs", "atom_2_occs"):
            np.testing.assert_allclose(got[key], ref[key], atol=1e-12)
    # the rows train and extend a model like the queue's
    from zoo.data.hubbard import u_dataset, v_dataset

    assert u_dataset(rows)["y"].tolist() == u_dataset(reference)["y"].tolist()
    assert len(v_dataset(rows)["y"]) == len(v_dataset(reference)["y"])


def test_bad_aiida_inputs_are_refused(profile, files, reference):
    out, occup, folder = files
    hub = _hp_output(files, reference)
    with pytest.raises(ValueError, match="occupations belong to another run"):
        label_rows(hub, out, folder / "MnO.occup.txt", sc_path="x")
    other = _structure(files)
    other.append_hubbard_parameter(0, "3d", 0, "3d", 7.0, (0, 0, 0), "U")
    moved = HubbardStructureData(cell=other.cell, sites=[
        (s[0], s[1], tuple(np.add(s[2], (0.1, 0, 0)) if n == 0 else s[2]))
        for n, s in enumerate((k.kind_name.rstrip("12"), k.kind_name, k.position)
                              for k in other.sites)])  # fmt: skip
    moved.hubbard = other.hubbard
    with pytest.raises(ValueError, match="positions differ"):
        label_rows(moved, out, occup, sc_path="x")
    far = _structure(files)
    far.append_hubbard_parameter(0, "3d", 2, "2p", 1.0, (1, 1, 1), "V")  # not a listed pair
    with pytest.raises(ValueError, match="not in the pw.x run's Hubbard pair table"):
        label_rows(far, out, occup, sc_path="x")
    with pytest.raises(ValueError, match="sc_path"):
        label_rows(hub, out, occup, sc_path="a/b")
    # a failed hp.x calculation, and one that perturbed only some atoms: never labels
    from aiida.common.links import LinkType

    for status, inputhp, match in ((300, {}, "did not finish ok"),
                                   (0, {"perturb_only_atom(1)": True}, "part of the")):  # fmt: skip
        calc = orm.CalcJobNode(process_type="aiida.calculations:quantumespresso.hp")
        calc.base.links.add_incoming(orm.Dict({"INPUTHP": inputhp}).store(), LinkType.INPUT_CALC,
                                     "parameters")  # fmt: skip
        calc.set_process_state("finished")
        calc.set_exit_status(status)
        calc.store()
        node = _hp_output(files, reference)
        node.base.links.add_incoming(calc, LinkType.CREATE, "hubbard_structure")
        node.store()
        with pytest.raises(ValueError, match=match):
            label_rows(node, out, occup, sc_path="x")


def test_prediction_back_as_hubbard_structure(profile, files):
    out, occup, _ = files
    model = zoo.load("hubbard-uv")
    structure = _structure(files)
    hub = predict(model, orm.SinglefileData(str(out)), orm.SinglefileData(str(occup)), structure)
    pred = model.predict(out, occup=occup)
    params = hub.hubbard.to_list()
    assert len(params) == len(pred.parameters())
    assert hub.hubbard.projectors == "ortho-atomic"
    cell = np.asarray(hub.cell)
    pos = np.array([s.position for s in hub.sites])
    for (i, m1, a, m2, value, image, kind), (qi, _, qv) in zip(params, pred.parameters()):
        assert (i + 1, value) == (qi, pytest.approx(qv))
        if kind == "Ueff":  # U of Ni predicted; O 2p keeps the run's value
            assert a == i and pred.U.get(i + 1, pred.param_in[(i + 1, i + 1, (0, 0, 0))]) == value
        else:
            key = (i + 1, a + 1, tuple(image))
            dist = np.linalg.norm(pos[a] + np.asarray(image) @ cell - pos[i]) / BOHR
            assert dist == pytest.approx(pred.distances[key], abs=1e-4)
            if key in pred.V:
                assert pred.V[key] == pytest.approx(value)
    # aiida-quantumespresso writes the HUBBARD card of the next pw.x run from it
    from aiida_quantumespresso.utils.hubbard import HubbardUtils

    card = HubbardUtils(hub).get_hubbard_card()
    ours = pred.hubbard_card("qe7")
    assert len(card.split("\n")) >= len(params) and "V" in card
    numbers = sorted(float(line.split()[-1]) for line in card.splitlines()[1:] if line.strip())
    expected = sorted(float(line.split()[-1]) for line in ours.splitlines()[1:] if line.strip())
    np.testing.assert_allclose(numbers, expected, rtol=1e-4, atol=1e-8)
    with pytest.raises(ValueError, match="not the predicted run's"):
        to_hubbard_structure(pred, HubbardStructureData(cell=structure.cell,
                                                        sites=[("O", "O", (0, 0, 0))]))  # fmt: skip
