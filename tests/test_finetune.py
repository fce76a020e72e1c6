"""`zoo.finetune`: lower validation error on shifted data, new species, frozen trunk, new heads,
artefacts, and bad input. The "pretrained" model is a tiny ResponseModel trained in-test."""

import json

import equinox as eqx
import jax
import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from zoo._species_growth import freeze_rows
from zoo.finetune import finetune, finetune_config, grow_model, read_labelled
from zoo.graph import build_graph
from zoo.hub import from_pretrained
from zoo.model import ResponseModel, fit_normalization, make_config
from zoo.train import TrainConfig, fit, weighted_loss

BACKBONE = dict(channels=4, lmax=2, num_layers=2, radial_hidden=8, r_max=4.0)
SPECIES = [56, 22, 8]
#: tiny MACE and Allegro backbones with the 0e+1e+2e node features a Born head reads
OTHER_BACKBONES = {
    "mace": dict(architecture="mace", r_max=4.0, hidden_irreps="4x0e+4x1e+4x2e", max_ell=2,
                 correlation=2, parity=True, num_interactions=2, radial_hidden=8,
                 readout_hidden=4, num_basis=4),
    "allegro": dict(architecture="allegro", r_max=4.0, channels=4, lmax=2, num_layers=1,
                    latent_dim=8, two_body_hidden=8, num_basis=4),
}  # fmt: skip


def perovskite(seed, a="Ba"):
    rng = np.random.default_rng(seed)
    atoms = Atoms(
        f"{a}TiO3",
        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        cell=np.eye(3) * 4.0 + rng.normal(scale=0.05, size=(3, 3)),
        pbc=True,
    )
    atoms.rattle(0.1, seed=seed)
    return atoms


def born(atoms, shift=0.0):
    """A smooth label obeying the acoustic sum rule: element charges (``shift`` moves charge
    from the O to the Ti atoms) plus a displacement-dependent part with zero mean."""
    z = {56: 2.7, 38: 2.5, 22: 6.9 + 3 * shift, 8: -3.2 - shift}
    base = np.array([z[n] for n in atoms.numbers])[:, None, None] * np.eye(3)
    d = atoms.positions - atoms.positions.mean(0)
    extra = 0.2 * np.einsum("ni,nj->nij", d, d) / 4.0
    out = base + extra - extra.mean(0)
    return out - out.mean(0)


def labelled(seeds, shift=0.0, a="Ba"):
    out = []
    for s in seeds:
        atoms = perovskite(s, a)
        atoms.arrays["born_charges"] = born(atoms, shift).reshape(len(atoms), 9)
        out.append(atoms)
    return out


def train_tiny(backbone: dict, epochs: int, learning_rate: float) -> tuple[ResponseModel, list]:
    """A tiny Born-charge model fitted to four labelled frames; the model and its history."""
    atoms = labelled(range(4))
    targets = {"born_charges": [born(a) for a in atoms]}
    config = make_config(SPECIES, ["born_charges"], backbone=backbone)
    config = fit_normalization(config, atoms, targets)
    model = ResponseModel(config, key=jax.random.key(0))
    batches = []
    for a, z in zip(atoms, targets["born_charges"]):
        g = build_graph(a, 4.0)
        t = np.zeros((g.n_nodes, 3, 3), np.float32)
        t[: len(a)] = z
        batches.append((g, t))

    def loss_fn(m, batch):
        g, t = batch
        return weighted_loss({"born_charges": (m(g)["born_charges"], t, g.node_mask)},
                             {"born_charges": 1.0})  # fmt: skip

    cfg = TrainConfig(max_epochs=epochs, learning_rate=learning_rate)
    result = fit(model, loss_fn, batches, None, cfg, progress=False)
    return result.model, result.history


@pytest.fixture(scope="module")
def pretrained():
    """Trained for a few steps on unshifted labels: never random weights called pretrained."""
    model, history = train_tiny(BACKBONE, 4, 5e-3)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    return model


def test_finetune_on_shifted_data_beats_pretrained(pretrained, tmp_path):
    data = labelled(range(10, 18), shift=0.3)
    cfg = TrainConfig(max_epochs=60, learning_rate=2e-2, schedule="cosine")
    res = finetune(
        pretrained, data, out_dir=tmp_path / "ft", train_config=cfg, split=0.25, batch_size=2
    )
    before = res.metrics["pretrained"]["validation"]["born_charges"]["mae"]
    after = res.metrics["finetuned"]["validation"]["born_charges"]["mae"]
    assert after < 0.7 * before, (before, after)
    assert len(res.val_indices) == 2 and len(res.train_indices) == 6
    files = {p.name for p in (tmp_path / "ft").iterdir()}
    assert {"metrics.json", "split.json", "parity_born_charges.png", "model"} <= files
    saved = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert saved["finetuned"]["validation"]["born_charges"]["mae"] == pytest.approx(after)
    loaded = from_pretrained(tmp_path / "ft" / "model")
    np.testing.assert_array_equal(
        loaded.predict(data[0])["born_charges"], res.model.predict(data[0])["born_charges"]
    )
    with pytest.raises(ValueError, match="is not empty; pass overwrite=True"):
        finetune(pretrained, data, out_dir=tmp_path / "ft", train_config=cfg)


def test_new_species_leave_old_predictions_unchanged(pretrained):
    data = read_labelled(labelled([20, 21], a="Sr") + labelled([22]), ["born_charges"])
    config, keep = finetune_config(pretrained, data, [0, 1, 2], new_species=["Sr"])
    assert config["backbone"]["species"] == SPECIES + [38]
    assert len(config["heads"]["born_charges"]["shift"]) == 4
    grown, rows = grow_model(pretrained, config, keep, key=jax.random.key(3))
    assert ".backbone.embedding" in rows
    bto = perovskite(5)
    np.testing.assert_array_equal(
        grown.predict(bto)["born_charges"], pretrained.predict(bto)["born_charges"]
    )
    with pytest.raises(ValueError, match="data contains Sr, unknown to the model: pass new_sp"):
        finetune_config(pretrained, data, [0, 1, 2])


@pytest.mark.parametrize("architecture", sorted(OTHER_BACKBONES))
def test_new_species_on_mace_and_allegro(architecture):
    atoms = labelled(range(2))
    config = make_config(SPECIES, ["born_charges"], backbone=OTHER_BACKBONES[architecture])
    config = fit_normalization(config, atoms, {"born_charges": [born(a) for a in atoms]})
    model = ResponseModel(config, key=jax.random.key(0))
    data = read_labelled(labelled([20], a="Sr"), ["born_charges"])
    config, keep = finetune_config(model, data, [0], new_species=["Sr"])
    grown, rows = grow_model(model, config, keep, key=jax.random.key(3))
    # MACE: species-indexed rows; Allegro: the one-hot inputs of its two-body MLP (rescaled
    # for the MLP's 1/sqrt(fan_in), so equal to float rounding)
    assert rows and all(r.sum() == (2 if architecture == "allegro" else 1) for r in rows.values())
    bto = perovskite(5)
    np.testing.assert_allclose(grown.predict(bto)["born_charges"],
                               model.predict(bto)["born_charges"], rtol=1e-5, atol=1e-6)  # fmt: skip
    graph = build_graph(perovskite(6, "Sr"), 4.0)
    grad = eqx.filter_jit(
        eqx.filter_grad(lambda m: (freeze_rows(m, rows)(graph)["born_charges"] ** 2).sum())
    )
    grads = grad(grown)
    flat = {jax.tree_util.keystr(p): g for p, g in jax.tree_util.tree_flatten_with_path(grads)[0]}
    assert not any(np.asarray(flat[p])[~r].any() for p, r in rows.items())  # old rows stay put
    assert any(np.asarray(flat[p])[r].any() for p, r in rows.items())  # new rows learn


def test_frozen_trunk_with_new_species_and_added_head(pretrained, tmp_path):
    data = labelled([30, 31], a="Sr") + labelled([32, 33])
    for k, atoms in enumerate(data):
        atoms.info["dielectric"] = (5.0 + 0.1 * k) * np.eye(3).reshape(9)
    path = tmp_path / "data.extxyz"
    write(path, data)
    cfg = TrainConfig(max_epochs=2, learning_rate=1e-2)
    res = finetune(pretrained, str(path), out_dir=tmp_path / "ft", train_config=cfg,
                   freeze_trunk=True, new_species=["Sr"], heads=["born_charges", "dielectric"],
                   split=0.25)  # fmt: skip
    model = res.model
    assert model.outputs == ("born_charges", "dielectric")
    assert model.config["heads"]["dielectric"]["shift"] == pytest.approx(5.15 * np.sqrt(3), 0.05)
    old_emb, new_emb = pretrained.backbone.embedding, model.backbone.embedding
    np.testing.assert_array_equal(new_emb[:3], old_emb)
    leaves = lambda m: jax.tree_util.tree_leaves(m.backbone.layers[0].radial_mlp)  # noqa: E731
    for a, b in zip(leaves(pretrained), leaves(model)):
        np.testing.assert_array_equal(a, b)
    sc_old = jax.tree_util.tree_leaves(pretrained.backbone.layers[0].self_connection)[0]
    sc_new = jax.tree_util.tree_leaves(model.backbone.layers[0].self_connection)[0]
    np.testing.assert_array_equal(sc_new[:3], sc_old)
    head_old = jax.tree_util.tree_leaves(pretrained.heads["born_charges"])
    head_new = jax.tree_util.tree_leaves(model.heads["born_charges"])
    assert any(not np.array_equal(x, y) for x, y in zip(head_old, head_new))  # heads trained
    assert model.predict(data[0])["dielectric"].shape == (3, 3)


def test_bad_input_messages(pretrained, tmp_path):
    bad = tmp_path / "broken.extxyz"
    bad.write_text("this is not\nan extxyz file\n")
    with pytest.raises(ValueError, match="data: cannot read .*broken.extxyz"):
        finetune(pretrained, str(bad), out_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="data: no such file .*missing.xyz"):
        finetune(pretrained, str(tmp_path / "missing.xyz"), out_dir=tmp_path / "a")
    atoms = perovskite(0)
    atoms.arrays["born_charges"] = np.zeros((5, 4))
    with pytest.raises(ValueError, match=r"structure 0: label 'born_charges' has shape \(5, 4\)"):
        finetune(pretrained, [atoms], out_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="data has no labels"):
        finetune(pretrained, [perovskite(0)], out_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="heads: \\['energy'\\] are not outputs"):
        finetune(pretrained, labelled([0]), out_dir=tmp_path / "a", heads=["energy"])
    with pytest.raises(ValueError, match="split=0.2: 1 structure"):
        finetune(pretrained, labelled([0]), out_dir=tmp_path / "a")


def test_fixed_validation_indices_and_nequip_born_key(pretrained, tmp_path):
    data = labelled(range(30, 35))
    data[1].arrays["born_charge"] = data[1].arrays.pop("born_charges")  # NequIP's key
    cfg = TrainConfig(max_epochs=1, learning_rate=1e-3)
    res = finetune(pretrained, data, out_dir=tmp_path / "ft", train_config=cfg, split=[3, 1])
    assert (res.train_indices, res.val_indices) == ([0, 2, 4], [1, 3])
    assert res.metrics["pretrained"]["validation"]["born_charges"]["n"] == 10  # 2 x 5 atoms
    saved = json.loads((tmp_path / "ft" / "split.json").read_text())
    assert saved["validation"] == [1, 3] and saved["fraction"] is None
    for bad in ([1, 1], [5], [True], [0.5], list(range(5))):
        with pytest.raises(ValueError, match="split: "):
            finetune(pretrained, data, out_dir=tmp_path / "b", split=bad)


def test_base_model_is_named_only_for_its_own_weights():
    import zoo
    from zoo import _registry
    from zoo.finetune import _base_identity

    shipped = zoo.load("batio3-response")
    repo = _registry.SHIPPED["batio3-response"].repo_id
    assert _base_identity(shipped)["base_model"] == repo
    fresh = ResponseModel(shipped.config, key=jax.random.key(0))  # same config, new weights
    ident = _base_identity(fresh)
    assert "base_model" not in ident and ident["license_known"] is False


def test_base_model_is_named_in_any_dtype():
    import zoo
    from zoo import _registry
    from zoo.finetune import _base_identity

    with jax.enable_x64(True):
        shipped64 = zoo.load("batio3-response", dtype="float64")
        assert (
            _base_identity(shipped64)["base_model"] == _registry.SHIPPED["batio3-response"].repo_id
        )
