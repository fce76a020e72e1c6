"""Response heads: every output of `ResponseModel` passes the symmetry harness (f32, f64).

Each (formulation, dtype) model is compiled once, for one padded shape, and every check of it
(the harness, anisotropy, Raman symmetry in the field indices) reuses that call.
"""

import json

import equinox as eqx
import jax
import numpy as np
import pytest
from ase import Atoms

from zoo.graph import build_graph
from zoo.model import OUTPUTS, ResponseModel, make_config
from zoo.testing import Output, check_symmetries

RTOL = {np.float32: 1e-5, np.float64: 1e-10}
BACKBONE = dict(channels=4, lmax=3, num_layers=2, radial_hidden=8, r_max=4.0,
                avg_num_neighbors=20.0)  # fmt: skip


def small_bto(seed=0, rattle=0.1):
    atoms = Atoms(
        "BaTiO3",
        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        cell=np.eye(3) * 4.0 + np.random.default_rng(seed).normal(scale=0.1, size=(3, 3)),
        pbc=True,
    )
    atoms.rattle(rattle, seed=seed)
    return atoms


def make_model(dtype, formulation, outputs, **kw):
    backbone = dict(BACKBONE)
    if formulation != "direct":
        backbone.update(lmax=2, parity=False)  # natural parity: a lighter 4-level autodiff
    if formulation == "magnetic":
        backbone.update(lmax=2, parity=True, num_layers=3)  # mu.B terms need both
    config = make_config([56, 22, 8], outputs, formulation=formulation, backbone=backbone,
                         dtype=np.dtype(dtype).name, **kw)  # fmt: skip
    for name, head in config["heads"].items():  # non-trivial shifts exercise the 0e path
        if "0e" in str(__import__("zoo").irreps_of(head["kind"])):
            head["shift"] = [1.0, -2.0, 0.5] if OUTPUTS[name][1] else 3.0
    if formulation == "electric":
        config["field_scale"] = 0.7
    if formulation == "magnetic":  # B and mu meet only through gates: tiny at init, scale up
        config["field_scale"], config["energy_scale"] = 10.0, 1e5
    return ResponseModel(config, key=jax.random.key(3))


def predictor(model, dtype):
    call = eqx.filter_jit(lambda m, g: m(g))

    def predict(s):
        g = build_graph(s, model.config["backbone"]["r_max"], dtype=dtype, n_nodes=16,
                        n_edges=1024, n_graphs=2)  # fmt: skip
        out = call(model, g)
        return {
            name: np.asarray(v)[: len(s)] if OUTPUTS[name][1] else np.asarray(v)[0]
            for name, v in out.items()
        }

    return predict


def spec(name):
    kind, per_atom, _, _ = OUTPUTS[name]
    rank = 3 if kind in ("raman", "chi2") else 2
    return Output(cartesian_rank=rank, axial=2 if kind == "rank2_axial" else 0, per_atom=per_atom)


CASES = [
    ("direct", ("born_charges", "raman_tensors", "dielectric", "chi2", "shielding")),
    ("electric", ("born_charges", "raman_tensors", "dielectric")),
    ("magnetic", ("shielding",)),
]


@pytest.mark.parametrize("formulation,outputs", CASES, ids=[c[0] for c in CASES])
def test_head_symmetries(dtype, formulation, outputs):
    model = make_model(dtype, formulation, outputs, acoustic_sum_rule=False)
    predict = predictor(model, dtype)
    errors = check_symmetries(predict, small_bto(), {n: spec(n) for n in outputs}, rtol=RTOL[dtype])
    assert len(errors) >= 6 * len(outputs)
    out = predict(small_bto())
    for name in outputs:
        value = out[name]
        assert value.shape[-3 if OUTPUTS[name][0] in ("raman", "chi2") else -2 :] == (3,) * (
            3 if OUTPUTS[name][0] in ("raman", "chi2") else 2
        )
        # a zero or purely isotropic output would pass every check: demand anisotropy
        assert np.abs(value).max() > 1e-4, name
        if value.shape[-2:] == (3, 3) and value.ndim >= 2:
            traceless = value - np.trace(value, axis1=-2, axis2=-1)[..., None, None] / 3 * np.eye(3)
            assert np.abs(traceless).max() > 1e-6, name
    if "raman_tensors" in outputs:  # d alpha / dr: symmetric in the two field indices
        r = out["raman_tensors"]
        np.testing.assert_allclose(r, np.swapaxes(r, -1, -2), atol=1e-6 * np.abs(r).max())


def test_unknown_head_kind_is_refused():
    from zoo.heads import AtomTensorHead

    with pytest.raises(ValueError, match="kind"):
        AtomTensorHead("4x0e", "symmetric2", dtype=np.float32, key=jax.random.key(0))
    with pytest.raises(ValueError, match="formulation"):
        make_config([8], ["chi2"], formulation="electric")
    with pytest.raises(ValueError, match="unknown output"):
        make_config([8], ["polarisation"])


def test_global_heads_fit_on_an_allegro_trunk_and_ship_sees_every_backbone(tmp_path):
    from recipes.batio3_global import GLOBAL, add_global_heads, pooled_features
    from recipes.batio3_response import finished_runs

    backbone = dict(architecture="allegro", channels=4, lmax=3, num_layers=1, latent_dim=8,
                    two_body_hidden=8, num_basis=4, r_max=4.0, avg_num_neighbors=20.0)  # fmt: skip
    config = make_config([56, 22, 8], ["born_charges", "raman_tensors"], backbone=backbone)
    model = ResponseModel(config, key=jax.random.key(0))
    rng = np.random.default_rng(0)
    records = []
    for k in range(5):
        eps, chi = rng.normal(scale=0.05, size=(3, 3)), rng.normal(size=(3, 3, 3))
        records.append({"structure": small_bto(k), "dielectric": 5 * np.eye(3) + eps + eps.T,
                        "chi2": chi + chi.transpose(1, 0, 2)})  # fmt: skip
    grown, metrics = add_global_heads(model, records[:4], records[4:])
    assert set(metrics) == set(GLOBAL) and set(GLOBAL) < set(grown.outputs)
    # the full model reproduces the heads on the cached pooled features
    pooled = pooled_features(grown, [records[4]["structure"]])
    out = grown.predict(records[4]["structure"])
    for name in GLOBAL:
        want = np.asarray(grown.heads[name].readout(pooled))[0]
        np.testing.assert_allclose(out[name], want, rtol=1e-4, atol=1e-5)
    # shipping compares the finished runs of every backbone
    for name, mae in (("direct", 0.05), ("direct-allegro", 0.04), ("electric-mace", 0.06)):
        (tmp_path / name).mkdir()
        metrics = {"formulation": name.split("-")[0], "validation": {
            "born_charges": {"asr": {"mae": mae}}, "raman_tensors": {"asr": {"r2": 0.9}}}}  # fmt: skip
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    runs = finished_runs(tmp_path)
    assert sorted(runs) == ["direct", "direct-allegro", "electric-mace"]
