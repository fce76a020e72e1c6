"""Every architecture behind every head, in f32 and f64: rotations, reflections, translations,
permutations, periodic wrapping and supercells; forces and stress against finite differences;
save/load round trips; padding and batching; and the bad inputs of the backbone registry.

Models are tiny and every check of one (architecture, head, dtype) reuses one compiled call
on a graph of fixed capacity."""

import functools
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms

import zoo
from zoo import backbones
from zoo.backbones import Potential
from zoo.graph import build_graph
from zoo.model import ResponseModel, make_config
from zoo.shielding import ShieldingModel, shielding_config
from zoo.testing import Output, check_symmetries, finite_difference_forces

SPECIES = (8, 22, 56)
R_MAX = 4.0
CAPACITY = dict(n_nodes=16, n_edges=768)  # fits the 10-atom supercell
RTOL = {np.float32: 2e-4, np.float64: 1e-9}
#: per architecture: the smallest backbone for energies, and what the heads need beyond it
TINY = {
    "nequip": dict(channels=4, lmax=1, num_layers=1, radial_hidden=8, num_basis=4),
    "mace": dict(
        hidden_irreps="4x0e+4x1o",
        max_ell=1,
        correlation=2,
        num_interactions=1,
        radial_hidden=8,
        readout_hidden=4,
        num_basis=4,
    ),  # fmt: skip
    "allegro": dict(
        channels=4, lmax=1, latent_dim=8, two_body_hidden=8, num_layers=1, num_basis=4
    ),  # fmt: skip
}
#: the direct heads read 0e+1e+2e node features; the magnetic energy needs axial features
#: (and NequIP three layers: mu.B terms first appear there)
MORE = {
    ("nequip", "direct"): dict(lmax=2, num_layers=2),
    ("mace", "direct"): dict(
        hidden_irreps="4x0e+4x1e+4x2e", max_ell=2, parity=True, num_interactions=2
    ),
    ("allegro", "direct"): dict(lmax=2),
    ("nequip", "magnetic"): dict(num_layers=3, lmax=2),
    ("mace", "magnetic"): dict(hidden_irreps="4x0e+4x1e", parity=True),
}
#: head group -> (formulation, outputs); "energy" is the bare architecture as a Potential
HEADS = {
    "energy": (None, ("energy", "forces", "stress")),
    "direct": ("direct", ("born_charges", "dielectric", "shielding")),
    "electric": ("electric", ("born_charges",)),
    "magnetic": ("magnetic", ("shielding",)),
}
SPECS = {
    "energy": Output(cartesian_rank=0, per_atom=False, extensive=True),
    "forces": Output(cartesian_rank=1),
    "stress": Output(cartesian_rank=2, per_atom=False),
    "born_charges": Output(cartesian_rank=2),
    "raman_tensors": Output(cartesian_rank=3),
    "dielectric": Output(cartesian_rank=2, per_atom=False),
    "chi2": Output(cartesian_rank=3, per_atom=False),
    "shielding": Output(cartesian_rank=2, axial=2),
}
#: every (architecture, head group); Allegro takes no per-node field inputs
CASES = [
    (arch, head)
    for arch in TINY
    for head in HEADS
    if not (arch == "allegro" and head in ("electric", "magnetic"))
]


def small_bto(seed=0):
    atoms = Atoms(
        "BaTiO3",
        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        cell=np.eye(3) * 4.0 + np.random.default_rng(seed).normal(scale=0.1, size=(3, 3)),
        pbc=True,
    )
    atoms.rattle(0.1, seed=seed)
    return atoms


def backbone_dict(arch: str, head: str) -> dict:
    return {"architecture": arch, "r_max": R_MAX, "avg_num_neighbors": 20.0, **TINY[arch],
            **MORE.get((arch, head), {})}  # fmt: skip


def random_weights(build, seed: int = 1) -> eqx.Module:
    """`build()`'s model with N(0, 1) weights, without running its initialisers (tracing
    only: eager or compiled initialisers cost more than the tests on a busy machine)."""
    rng = np.random.default_rng(seed)

    def draw(leaf):
        if isinstance(leaf, jax.ShapeDtypeStruct):
            return jax.device_put(rng.normal(size=leaf.shape).astype(leaf.dtype))
        return leaf

    return jax.tree_util.tree_map(draw, eqx.filter_eval_shape(build))


@functools.cache
def _model(arch: str, head: str, dtype) -> eqx.Module:
    formulation, outputs = HEADS[head]
    bb = backbone_dict(arch, head)
    if formulation is None:
        config = backbones.backbone_config({**bb, "species": list(SPECIES)})
        return random_weights(
            lambda: Potential.wrap(
                backbones.build_backbone(config, dtype, key=jax.random.key(1)),
                energy_shift=[-1.0, 0.5, 2.0],
            )
        )
    config = make_config(
        SPECIES, outputs, formulation=formulation, backbone=bb, dtype=np.dtype(dtype).name
    )
    if formulation == "magnetic":  # mu.B terms of a tiny random model are far below 1
        config["field_scale"] = 100.0
    return random_weights(lambda: ResponseModel(config, key=jax.random.key(1)))


def model(arch, head, dtype):
    """Tiny models, cached: the tests of one case share one build."""
    return _model(arch, head, np.dtype(dtype).type)


CALL = eqx.filter_jit(lambda m, g: m(g))


def predictor(m, dtype, **capacity):
    def predict(s):
        g = build_graph(s, R_MAX, dtype=dtype, **(capacity or CAPACITY))
        out = CALL(m, g)
        n = len(s)
        return {k: np.asarray(v)[:n] if SPECS[k].per_atom else np.asarray(v)[0]
                for k, v in out.items()}  # fmt: skip

    return predict


@pytest.mark.parametrize("arch,head", CASES)
def test_symmetries(arch, head, dtype):
    m = model(arch, head, dtype)
    predict = predictor(m, dtype)
    outputs = {name: SPECS[name] for name in HEADS[head][1]}
    errors = check_symmetries(predict, small_bto(), outputs, rtol=RTOL[dtype])
    assert {k.split("/")[0] for k in errors} == {
        "rotation", "reflection", "translation", "permutation", "wrap", "supercell"
    }  # fmt: skip
    out = predict(small_bto())
    for name in outputs:  # a zero output would pass every symmetry check
        assert np.abs(out[name]).max() > 1e-6, name


@pytest.mark.parametrize("arch", TINY)
def test_forces_and_stress_match_finite_differences(arch, x64):
    predict = predictor(model(arch, "energy", np.float64), np.float64)
    atoms = small_bto(seed=3)
    got = predict(atoms)

    def energy_at(positions, cell=atoms.cell[:]):
        moved = Atoms(atoms.numbers, positions=positions, cell=cell, pbc=True)
        return float(predict(moved)["energy"])

    fd = finite_difference_forces(energy_at, atoms.positions.copy(), h=1e-5)
    np.testing.assert_allclose(got["forces"], fd, rtol=1e-6, atol=1e-8)
    assert np.abs(fd).max() > 1e-3
    # stress: (1/V) dE/d(strain) by central differences over symmetric strains
    h, fd_stress = 1e-6, np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = h / (2 if a != b else 1)
            plus, minus = np.eye(3) + eps, np.eye(3) - eps
            e_p = energy_at(atoms.positions @ plus.T, atoms.cell[:] @ plus.T)
            e_m = energy_at(atoms.positions @ minus.T, atoms.cell[:] @ minus.T)
            fd_stress[a, b] = (e_p - e_m) / (2 * h) / atoms.get_volume()
    np.testing.assert_allclose(got["stress"], fd_stress, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("arch,head", CASES)
def test_save_load_round_trip(arch, head, dtype, tmp_path):
    m = model(arch, head, dtype)
    zoo.save_pretrained(m, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "README.md", "config.json", "model.safetensors"
    ]  # fmt: skip
    loaded = zoo.load(tmp_path / "m")
    assert type(loaded) is type(m) and loaded.config == m.config
    assert backbones.model_architecture(loaded.config) == arch
    want, got = predictor(m, dtype)(small_bto(1)), predictor(loaded, dtype)(small_bto(1))
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("arch", TINY)
def test_bare_architecture_predicts_energy_forces_stress(arch, tmp_path):
    m = model(arch, "energy", np.float32)
    folder = zoo.save_pretrained(m.backbone, tmp_path / arch)
    loaded = zoo.load(folder)
    atoms = [small_bto(2), small_bto(3)]
    out = loaded.predict(atoms)
    assert out["energy"].shape == (2,) and out["stress"].shape == (2, 3, 3)
    assert out["forces"].shape == (10, 3)
    want = predictor(m, np.float32)(atoms[1])
    # saved without the cached model's per-species shift (-1, 0.5, 2 for O, Ti, Ba)
    unshifted = want["energy"] - (3 * -1.0 + 0.5 + 2.0)
    np.testing.assert_allclose(loaded.energy(atoms[1]), unshifted, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded.forces(atoms[1]), want["forces"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loaded.stress(atoms[1]), want["stress"], rtol=1e-4, atol=1e-6)
    assert zoo.info(folder)["architecture"] == arch


@pytest.mark.parametrize("arch", ["mace", "allegro"])
def test_shielding_model_on_other_backbones(arch, tmp_path):
    bb = backbone_dict(arch, "direct")
    config = shielding_config(SPECIES, backbone=bb, atomic_number=22)
    m = random_weights(lambda: ShieldingModel(config, key=jax.random.key(0)))
    atoms = Atoms("TiO2", positions=[[0, 0, 0], [1.9, 0, 0], [0, 1.9, 0.2]], cell=np.eye(3) * 4,
                  pbc=True)  # fmt: skip
    want = m.predict(atoms, reference=None)
    folder = m.save_pretrained(tmp_path / "s")
    got = zoo.load(folder, model_types={"shielding": ShieldingModel}).predict(atoms)
    np.testing.assert_array_equal(got["unreferenced_shift"], want["unreferenced_shift"])
    assert zoo.info(folder)["architecture"] == arch


@pytest.mark.parametrize("arch", TINY)
def test_padding_batching_and_training_gradients(arch):
    """More padding or a second structure in the batch changes nothing; gradients of a
    force loss are finite on padded graphs (an isolated atom has no edges)."""
    m = model(arch, "energy", np.float32)
    s1, far = small_bto(4), Atoms("OBa", positions=[[0, 0, 0], [9, 0, 0]], pbc=False)
    big = dict(n_nodes=32, n_edges=1024, n_graphs=4)
    one = CALL(m, build_graph(s1, R_MAX, **big))
    both = CALL(m, build_graph([s1, far], R_MAX, **big))
    ref = predictor(m, np.float32)(s1)
    np.testing.assert_allclose(np.asarray(one["forces"][:5]), ref["forces"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(both["forces"][:5]), ref["forces"], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(one["forces"][5:]), 0.0)
    assert np.isfinite(np.asarray(both["energy"][1])) and both["energy"][1] != 0

    def loss(model, g):
        return jnp.sum(model(g)["forces"] ** 2)

    grads = eqx.filter_jit(eqx.filter_grad(loss))(m, build_graph([s1, far], R_MAX, **big))
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array))
    assert leaves and all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


def test_allegro_is_strictly_local():
    """An atom beyond r_max of atom 0 changes nothing at atom 0, even within r_max of atom 0's
    neighbours (a message-passing model would see it after two layers)."""
    m = model("allegro", "energy", np.float32).backbone
    nodes = eqx.filter_jit(lambda m, g: m(g).array)
    base = [[0, 0, 0], [3.0, 0, 0]]
    far = Atoms("OTiBa", positions=base + [[6.5, 0, 0]], pbc=False)
    farther = Atoms("OTiBa", positions=base + [[6.9, 0.5, 0]], pbc=False)
    a = np.asarray(nodes(m, build_graph(far, R_MAX, **CAPACITY)))
    b = np.asarray(nodes(m, build_graph(farther, R_MAX, **CAPACITY)))
    np.testing.assert_array_equal(a[0], b[0])
    assert np.abs(a[1] - b[1]).max() > 1e-6  # the middle atom does see the change


@pytest.mark.parametrize("arch", list(TINY))
def test_edge_chunks_give_the_same_energy_forces_and_stress(arch, x64):
    """The chunked loop over edges (large structures) equals the one-shot sum; two layers, so
    that Allegro recomputes its per-edge states from the first layer's environments."""
    depth = {"nequip": "num_layers", "mace": "num_interactions", "allegro": "num_layers"}[arch]
    config = backbones.backbone_config(
        {**backbone_dict(arch, "energy"), depth: 2, "species": SPECIES}
    )
    assert config.to_dict()["edge_chunk"] == 8192  # saved in config.json, default as MACE's
    g = build_graph(small_bto(2), R_MAX, dtype=np.float64, **CAPACITY)
    out = {}
    for chunk in (0, 64, 700):  # one pass; 12 chunks; 2 chunks of 384 (no padding edges)
        cfg = type(config).from_dict({**config.to_dict(), "edge_chunk": chunk})
        out[chunk] = CALL(
            random_weights(
                lambda: Potential.wrap(backbones.build_backbone(cfg, key=jax.random.key(1)))
            ),
            g,
        )
    assert np.abs(out[0]["forces"]).max() > 1e-3
    for chunk in (64, 700):
        for key in ("energy", "forces", "stress"):
            np.testing.assert_allclose(out[chunk][key], out[0][key], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("node_inputs,chunk", [("", 0), ("1x1o+2x0e", 0), ("", 7)])
def test_nequip_messages_equal_e3nn_tensor_product(node_inputs, chunk):
    """The channel-wise message kernel computes e3nn's ``tensor_product(x[senders], sh)
    .regroup() * radial weights`` with the same parameters, also with inputs of mixed
    multiplicities (node inputs) and with chunked sums."""
    import e3nn_jax as e3nn

    from zoo._blocks import gate
    from zoo.nequip import NequIP, NequIPConfig

    cfg = NequIPConfig(species=(1, 8), channels=4, lmax=2, num_layers=3, num_basis=4,
                       radial_hidden=8, node_input_irreps=node_inputs, edge_chunk=chunk)  # fmt: skip
    model = NequIP(cfg, key=jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    n, e = 6, 23
    sh = e3nn.spherical_harmonics("0e+1o+2e", rng.normal(size=(e, 3)), True, "component")
    radial = jnp.asarray(rng.normal(size=(e, 4)), jnp.float32)
    snd, rcv = (jnp.asarray(rng.integers(0, n, e)) for _ in range(2))
    species = jnp.asarray(rng.integers(0, 2, n))
    for layer in model.layers:
        h = e3nn.IrrepsArray(layer.irreps_in, rng.normal(size=(n, layer.irreps_in.dim)))
        h = h.astype(jnp.float32)
        x = layer.linear_up(h)
        tp = e3nn.tensor_product(x[snd], sh, filter_ir_out=layer.irreps_out).regroup()
        summed = jax.ops.segment_sum((tp * layer.radial_mlp(radial)).array, rcv, n)
        summed = e3nn.IrrepsArray(layer.irreps_messages, summed)
        summed = summed / np.sqrt(layer.avg_num_neighbors)
        pre = (layer.linear_down(summed) + layer.self_connection(species, h)) / np.sqrt(2.0)
        ref = gate(pre, layer.act)
        out = layer(h, species, sh, radial, snd, rcv)
        assert out.irreps == ref.irreps
        np.testing.assert_allclose(out.array, ref.array, rtol=1e-5, atol=2e-6)


# ---- bad input ----


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(
        ValueError, match=r"unknown architecture 'schnet'; known: nequip, mace, allegro"
    ):
        make_config(SPECIES, ["born_charges"], backbone={"architecture": "schnet"})
    with pytest.raises(ValueError, match="unknown architecture"):
        backbones.architecture("MACE")


def test_heads_need_the_node_features_they_read():
    with pytest.raises(ValueError, match=r"head 'born_charges' needs node features 1e\+2e"):
        make_config(SPECIES, ["born_charges"],
                    backbone={"architecture": "mace", "hidden_irreps": "4x0e+4x1o"})  # fmt: skip
    with pytest.raises(ValueError, match="allegro backbone takes no per-node inputs"):
        make_config(SPECIES, ["born_charges"], formulation="electric",
                    backbone={"architecture": "allegro"})  # fmt: skip
    with pytest.raises(ValueError, match="magnetic' needs backbone parity=True"):
        make_config(SPECIES, ["shielding"], formulation="magnetic",
                    backbone={"architecture": "mace", "parity": False})  # fmt: skip


def test_config_typos_and_absurd_sizes_are_refused_before_building():
    with pytest.raises(ValueError, match=r"'chanels' \(did you mean 'channels'\?\); known: \["):
        zoo.NequIPConfig.from_dict({"species": [8], "chanels": 3})
    with pytest.raises(ValueError, match="corelation"):
        zoo.MACEConfig.from_dict({"species": [8], "corelation": 3})
    with pytest.raises(ValueError, match=r"channels must be in 1\.\.1024, got 1000000"):
        zoo.NequIPConfig(species=(8,), channels=1_000_000)
    with pytest.raises(ValueError, match="hidden_irreps='100000x0e' has dimension 100000"):
        zoo.MACEConfig(species=(8,), hidden_irreps="100000x0e")
    with pytest.raises(ValueError, match=r"latent_dim must be in 1\.\.4096"):
        zoo.AllegroConfig(species=(8,), latent_dim=10**9)
    with pytest.raises(ValueError, match=r"edge_chunk must be in 0\.\.16777216, got -1"):
        zoo.NequIPConfig(species=(8,), edge_chunk=-1)
    with pytest.raises(ValueError, match=r"edge_chunk must be an int, got 8\.5"):
        zoo.AllegroConfig.from_dict({"species": [8], "edge_chunk": 8.5})
    with pytest.raises(ValueError, match=r"r_max must be in \(0, 30\]"):
        zoo.AllegroConfig(species=(8,), r_max=1e4)
    with pytest.raises(ValueError, match="raise lmax or set parity"):
        zoo.NequIPConfig(species=(8,), lmax=1, output_irreps="1x2e")
    with pytest.raises(ValueError, match="architecture 'nequip', the dict says 'mace'"):
        zoo.NequIPConfig.from_dict({"architecture": "mace", "species": [8]})


def test_dataset_info_is_kept_apart_from_hyperparameters():
    cfg = zoo.MACEConfig(species=(8, 22), r_max=4.5, avg_num_neighbors=12.0, max_ell=2)
    assert cfg.dataset_info == zoo.DatasetInfo((8, 22), 4.5, 12.0)
    assert not {"species", "r_max", "avg_num_neighbors", "architecture"} & set(cfg.hyperparameters)
    assert zoo.MACEConfig.from_parts(cfg.hyperparameters, cfg.dataset_info) == cfg
    info = zoo.DatasetInfo.from_structures([small_bto()], r_max=3.0)
    assert info.species == (8, 22, 56) and 5 < info.avg_num_neighbors < 15
    with pytest.raises(ValueError, match="data-derived"):
        zoo.MACEConfig.from_parts({"species": [8]}, info)


def test_newer_format_version_is_refused_naming_both(tmp_path):
    folder = zoo.save_pretrained(model("nequip", "energy", np.float32).backbone, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    assert config["zoo_version"] == "1.1"
    (folder / "config.json").write_text(json.dumps({**config, "zoo_version": "1.2"}))
    with pytest.raises(ValueError, match=r"written by format 1\.2, newer than the format 1\.1"):
        zoo.load(folder)
