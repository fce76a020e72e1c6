"""`ResponseModel`: predict (atom order, lists, errors, OOD warning), normalisation, data
loading, and a save/load round trip of a model trained for a few steps in-test."""

import json
import shutil
import warnings

import equinox as eqx
import jax
import numpy as np
import pytest
from ase import Atoms
from test_heads import BACKBONE, small_bto

from zoo.data.batio3 import DATA_DIR, load_batio3, physical
from zoo.graph import build_graph
from zoo.hub import from_pretrained
from zoo.model import ResponseModel, fit_normalization, make_config
from zoo.train import TrainConfig, fit, weighted_loss

DATA = DATA_DIR
OUTS = ["born_charges", "raman_tensors", "dielectric"]


def tiny_targets(structures, seed=0):
    rng = np.random.default_rng(seed)
    t = {"born_charges": [], "raman_tensors": [], "dielectric": []}
    for s in structures:
        n = len(s)
        z = np.where(s.get_atomic_numbers() == 8, -2.0, 3.0)[:, None, None] * np.eye(3)
        t["born_charges"].append(z + 0.1 * rng.normal(size=(n, 3, 3)))
        r = rng.normal(size=(n, 3, 3, 3))
        t["raman_tensors"].append((r + r.swapaxes(-1, -2)) / 2)
        e = rng.normal(size=(3, 3)) * 0.05
        t["dielectric"].append(5 * np.eye(3) + (e + e.T) / 2)
    return t


@pytest.fixture(scope="module")
def model():
    structures = [small_bto(0), small_bto(1)]
    config = make_config([56, 22, 8], OUTS, backbone=BACKBONE)
    config = fit_normalization(config, structures, tiny_targets(structures))
    return ResponseModel(config, key=jax.random.key(0))


def test_normalization_is_fitted_on_the_given_data(model):
    heads = model.config["heads"]
    # O has the -2 trace offset: its 0e shift is -2 * sqrt(3) (species order Ba, Ti, O)
    assert heads["born_charges"]["shift"][2] == pytest.approx(-2 * np.sqrt(3), abs=0.2)
    assert heads["raman_tensors"]["shift"] is None
    assert heads["dielectric"]["shift"] == pytest.approx(5 * np.sqrt(3), abs=0.1)
    dom = model.config["domain"]
    assert dom["periodic"] and 10 < dom["volume_per_atom"][0] < 15
    json.dumps(model.config)  # JSON-safe


def test_predict_atom_order_and_lists(model):
    s = small_bto(2)
    perm = np.random.default_rng(0).permutation(len(s))
    one = model.predict(s)
    permuted = model.predict(s[perm])
    for name in ("born_charges", "raman_tensors"):
        np.testing.assert_allclose(permuted[name], one[name][perm], atol=1e-5)
        assert one[name].shape[0] == len(s)
    assert one["dielectric"].shape == (3, 3)
    big = s.repeat((2, 1, 1))
    both = model.predict([big, s], batch_size=1)
    np.testing.assert_array_equal(both["structure_index"], [0] * 10 + [1] * 5)
    np.testing.assert_allclose(both["born_charges"][10:], one["born_charges"], atol=1e-5)
    np.testing.assert_allclose(both["dielectric"][1], one["dielectric"], atol=1e-5)
    assert both["dielectric"].shape == (2, 3, 3)


def test_predict_errors_and_warnings(model):
    s = small_bto(0)
    bad = s.copy()
    bad.numbers[1] = 29
    with pytest.raises(ValueError, match="unknown species Cu"):
        model.predict(bad)
    molecule = Atoms("BaTiO", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.2, 0]], pbc=False)
    with pytest.raises(ValueError, match="not periodic.*dielectric"):
        model.predict(molecule)
    stretched = s.copy()
    stretched.set_cell(s.cell * 1.3, scale_atoms=True)
    with pytest.warns(UserWarning, match="volume per atom"):
        model.predict(stretched)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(s)  # in the domain: no warning
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(s, batch_size=0)


def test_trained_model_save_load_round_trip(tmp_path):
    structures = [small_bto(k) for k in range(3)]
    config = make_config([56, 22, 8], ["born_charges"], backbone={**BACKBONE, "lmax": 2})
    targets = tiny_targets(structures)
    config = fit_normalization(config, structures, {"born_charges": targets["born_charges"]})
    model = ResponseModel(config, key=jax.random.key(1))
    batches = []
    for s, z in zip(structures, targets["born_charges"]):
        g = build_graph(s, 4.0, n_nodes=8, n_edges=1024)
        t = np.zeros((8, 3, 3), np.float32)
        t[:5] = z
        batches.append((g, t))

    def loss_fn(m, batch):
        g, t = batch
        return weighted_loss({"born_charges": (m(g)["born_charges"], t, g.node_mask)},
                             {"born_charges": 1.0})  # fmt: skip

    result = fit(model, loss_fn, batches, batches[:1], TrainConfig(max_epochs=3, learning_rate=1e-2),
                 progress=False)  # fmt: skip
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    trained = result.model
    folder = trained.save_pretrained(tmp_path / "m")
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in folder.iterdir()}
    loaded = from_pretrained(folder)
    assert isinstance(loaded, ResponseModel) and loaded.config == trained.config
    a, b = trained.predict(structures[0]), loaded.predict(structures[0])
    np.testing.assert_array_equal(a["born_charges"], b["born_charges"])
    assert not np.allclose(a["born_charges"], model.predict(structures[0])["born_charges"])


def test_mace_backbone_learns_born_charges():
    records = load_batio3(DATA, ids=["00000", "00001"])
    structures = [r["structure"] for r in records]
    backbone = dict(architecture="mace", r_max=4.0, hidden_irreps="4x0e+4x1e+4x2e", max_ell=2,
                    correlation=2, parity=True, num_interactions=2, radial_hidden=8,
                    readout_hidden=4, num_basis=4, avg_num_neighbors=20.0)  # fmt: skip
    config = make_config([56, 22, 8], ["born_charges"], backbone=backbone)
    config = fit_normalization(
        config, structures, {"born_charges": [r["born_charges"] for r in records]}
    )
    model = ResponseModel(config, key=jax.random.key(0))
    batches = [(build_graph(s, 4.0), r["born_charges"]) for s, r in zip(structures, records)]
    scale = config["heads"]["born_charges"]["scale"]

    def loss_fn(m, batch):
        g, t = batch
        return weighted_loss({"born_charges": (m(g)["born_charges"][: len(t)], t, g.node_mask[: len(t)])},
                             {"born_charges": 1 / scale**2})  # fmt: skip

    loss = eqx.filter_jit(lambda m: sum(loss_fn(m, b)[0] for b in batches))
    result = fit(model, loss_fn, batches, None, TrainConfig(max_epochs=6, learning_rate=5e-2),
                 progress=False)  # fmt: skip
    before, after = float(loss(model)), float(loss(result.model))
    assert after < 0.5 * before, (before, after)


def test_load_batio3_validates_shapes(tmp_path):
    records = load_batio3(DATA, ids=["00000"])
    assert records[0]["born_charges"].shape == (135, 3, 3)
    assert records[0]["raman_tensors"].shape == (135, 3, 3, 3)
    assert list(records[0]["structure"].numbers[:5]) == [56, 22, 8, 8, 8]
    root = tmp_path / "batio3"
    shutil.copytree(DATA, root, ignore=shutil.ignore_patterns("*.cif"))
    np.save(root / "raman_tensors" / "00001.npy", np.zeros((135, 3, 3)))
    with pytest.raises(ValueError, match=r"raman_tensors/00001\.npy: expected shape"):
        load_batio3(root)
    with pytest.raises(ValueError, match="no structures/qe"):
        load_batio3(tmp_path)


def test_shipped_batio3_predicts_all_four_tensors_on_a_validation_structure():
    import zoo

    records = load_batio3(DATA)
    assert sorted(r["id"] for r in records if not physical(r)) == [
        "00010", "00017", "00020", "00023", "00048",
    ]  # fmt: skip
    split = json.loads((DATA / "split.json").read_text())
    rec = next(r for r in records if r["id"] == split["validation"][0])
    model = zoo.load("batio3-response")
    out = model.predict(rec["structure"])
    assert out["born_charges"].shape == (135, 3, 3) and out["raman_tensors"].shape == (135, 3, 3, 3)
    eps, chi = out["dielectric"], out["chi2"]
    np.testing.assert_allclose(eps, eps.T, atol=1e-6)
    np.testing.assert_allclose(chi, chi.transpose(1, 0, 2), atol=1e-5)
    assert np.abs(eps - rec["dielectric"]).max() < 0.1  # eps_inf ~ 5.1 on the diagonal
    assert np.abs(out["born_charges"] - rec["born_charges"]).mean() < 0.05
