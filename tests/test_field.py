"""`zoo.field.FieldModel`: derivatives against finite differences, equivariance of E, F, P, Z
and alpha (rotation, reflection, translation, permutation, periodic wrapping) in f32 and f64,
save/load round trip, bad input.

Compilation is most of the cost: one f32 and one f64 model serve every test, and every
structure is padded to one capacity, so each (model, raman) pair compiles once.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms

from zoo._field_config import fit_field_config
from zoo._shared_static import share_static
from zoo.field import FieldModel, check_field
from zoo.graph import build_graph
from zoo.hub import load

BACKBONE = dict(channels=4, lmax=2, num_layers=2, radial_hidden=8, r_max=3.5)
#: one padded shape for every 10-atom cell of these tests (about 140 edges each)
CAPACITY = dict(n_nodes=16, n_edges=256, n_graphs=2)


def perovskite(seed=0, repeat=(2, 1, 1)):
    atoms = Atoms(
        "BaTiO3",
        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        cell=np.eye(3) * 4.0,
        pbc=True,
    ).repeat(repeat)
    atoms.rattle(0.1, seed=seed)
    return atoms


def make_model(dtype="float32", coupling="expansion", seed=0):
    model = FieldModel.create([56, 22, 8], coupling=coupling, dtype=dtype,
                              key=jax.random.key(seed), **BACKBONE)  # fmt: skip
    # non-trivial scales and offsets so every term of the energy matters
    config = {**model.config, "dipole_scale": 0.7, "polarizability_scale": 0.3,
              "polarizability_shift": [0.2, 0.3, 0.1], "energy_shift": [-1.0, -2.0, -3.0]}  # fmt: skip
    return FieldModel(config, key=jax.random.key(seed))


@eqx.filter_jit
def _call(model, graph, field, raman):
    return model(graph, field, raman=raman)


def run(model, atoms, field=(0.0, 0.0, 0.0), raman=False, capacity=CAPACITY):
    """Every output of `model` on `atoms` at `field`, padded to `capacity` (``{}``: the
    graph's own size buckets, for models with another cutoff)."""
    graph = build_graph([atoms], model.config["backbone"]["r_max"], dtype=model.dtype,
                        **capacity)  # fmt: skip
    f = np.zeros((graph.n_graphs, 3))
    f[0] = field
    # equal models (e.g. saved and reloaded) share the compiled call
    out = _call(share_static(model), graph, jnp.asarray(f, model.dtype), raman)
    n = len(atoms)
    per_atom = ("forces", "born_charges", "raman_tensors")
    return {k: np.asarray(v, np.float64)[:n] if k in per_atom else np.asarray(v, np.float64)[0]
            for k, v in out.items()}  # fmt: skip


@pytest.fixture(scope="module")
def model32():
    return make_model("float32")


@pytest.fixture(scope="module")
def model64():
    """The float64 model; use it inside ``jax.enable_x64(True)``."""
    with jax.enable_x64(True):
        return make_model("float64")


def test_derivatives_match_finite_differences(model64):
    with jax.enable_x64(True):
        atoms, field, h = perovskite(), np.array([0.02, -0.01, 0.03]), 1e-4
        out = run(model64, atoms, field, raman=True)

        def at(positions=None, f=field):
            a = atoms.copy()
            if positions is not None:
                a.positions = positions
            return run(model64, a, f)

        for i, k in ((0, 0), (3, 2), (7, 1)):
            plus, minus = atoms.positions.copy(), atoms.positions.copy()
            plus[i, k] += h
            minus[i, k] -= h
            up, down = at(plus), at(minus)
            fd_force = -(up["energy"] - down["energy"]) / (2 * h)
            np.testing.assert_allclose(out["forces"][i, k], fd_force, rtol=1e-5, atol=1e-7)
            fd_born = (up["polarization"] - down["polarization"]) / (2 * h)  # Z[i, :, k]
            np.testing.assert_allclose(out["born_charges"][i, :, k], fd_born, rtol=1e-5, atol=1e-7)
            fd_raman = (
                14.399645478425668 * (up["polarizability"] - down["polarizability"]) / (2 * h)
            )
            np.testing.assert_allclose(out["raman_tensors"][i, k], fd_raman, rtol=1e-5, atol=1e-6)
        for a in range(3):
            d = np.zeros(3)
            d[a] = h
            up, down = at(f=field + d), at(f=field - d)
            np.testing.assert_allclose(out["polarization"][a],
                                       -(up["energy"] - down["energy"]) / (2 * h), rtol=1e-6)  # fmt: skip
            np.testing.assert_allclose(out["polarizability"][:, a],
                                       (up["polarization"] - down["polarization"]) / (2 * h),
                                       rtol=1e-6, atol=1e-8)  # fmt: skip
        # stress: energies of homogeneously strained copies (central difference)
        eps, energies = 1e-5, []
        for sign in (1, -1):
            strained = atoms.copy()
            deform = np.eye(3) + sign * eps * np.array([[1, 0, 0], [0, 0, 0.5], [0, 0.5, 0]])
            strained.set_cell(atoms.cell[:] @ deform, scale_atoms=True)
            energies.append(run(model64, strained, field)["energy"])
        fd = (energies[0] - energies[1]) / (2 * eps) / atoms.get_volume()
        s = out["stress"]
        assert abs(s[0, 0] + s[1, 2] - fd) < 1e-5 * max(1.0, abs(fd))
        assert np.allclose(out["raman_tensors"], np.swapaxes(out["raman_tensors"], 2, 3))
        assert np.allclose(out["polarizability"], out["polarizability"].T)
        # acoustic sum rule: the ionic charges are neutral and the learned dipoles local
        assert np.abs(out["born_charges"].sum(0)).max() < 1e-8


def _random_rotation(seed, reflect):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.linalg.det(q))
    return -q if reflect else q


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_equivariance(dtype, request):
    tol = 2e-4 if dtype == "float32" else 1e-9
    with jax.enable_x64(dtype == "float64"):
        model = request.getfixturevalue("model" + dtype[-2:])
        atoms, field = perovskite(1), np.array([0.01, 0.02, -0.03])
        ref = run(model, atoms, field)

        def close(a, b, scale=1.0):
            np.testing.assert_allclose(a, b, atol=tol * max(scale, np.abs(b).max()), rtol=tol)

        for reflect in (False, True):  # O(3): rotation, and rotation times inversion
            rot = _random_rotation(3, reflect)
            moved = atoms.copy()
            moved.set_cell(atoms.cell[:] @ rot.T)
            moved.positions = atoms.positions @ rot.T
            out = run(model, moved, rot @ field)
            close(out["energy"], ref["energy"])
            close(out["forces"], ref["forces"] @ rot.T)
            close(out["polarization"], rot @ ref["polarization"])
            close(out["born_charges"], np.einsum("ab,nbc,dc->nad", rot, ref["born_charges"], rot))
            close(out["polarizability"], rot @ ref["polarizability"] @ rot.T)
        moved = atoms.copy()
        moved.positions += np.array([0.3, -1.2, 2.0])  # translation (neutral: P unchanged)
        perm = np.random.default_rng(0).permutation(len(atoms))
        permuted = atoms[perm]
        wrapped = atoms.copy()
        wrapped.positions[2] += atoms.cell[0] - atoms.cell[2]  # one atom by a lattice vector
        for other, order in ((moved, slice(None)), (permuted, perm), (wrapped, slice(None))):
            out = run(model, other, field)
            close(out["forces"], ref["forces"][order])
            close(out["born_charges"], ref["born_charges"][order])
            close(out["polarizability"], ref["polarizability"])
            # P modulo the quantum: the wrapped atom moved it by q * R, a whole quantum
            frac = (out["polarization"] - ref["polarization"]) @ np.linalg.inv(atoms.cell[:])
            assert np.allclose(frac, np.round(frac), atol=tol * 10)
        out = run(model, moved, field)
        close(out["energy"], ref["energy"])
        close(out["polarization"], ref["polarization"])
        close(run(model, permuted, field)["energy"], ref["energy"])
        close(run(model, wrapped, (0, 0, 0))["energy"], run(model, atoms)["energy"])


def test_node_input_coupling_matches_its_own_derivatives():
    model = make_model(coupling="node_input")
    atoms = perovskite(2)
    out = run(model, atoms, (0.0, 0.01, 0.0))
    assert np.isfinite(out["polarizability"]).all() and np.abs(out["born_charges"]).max() > 0
    assert np.abs(out["born_charges"].sum(0)).max() < 1e-4


def test_save_load_round_trip(tmp_path, model32):
    model = model32
    model.save_pretrained(tmp_path / "m")
    again = load(tmp_path / "m")
    assert isinstance(again, FieldModel) and again.config == model.config
    atoms = perovskite(4)
    a, b = run(model, atoms, (0.01, 0, 0)), run(again, atoms, (0.01, 0, 0))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_predict_matches_call_and_refuses_bad_input(model32):
    model = model32
    atoms = perovskite(5)
    got = model.predict(atoms, field=[0.0, 0.0, 0.02])
    want = run(model, atoms, (0.0, 0.0, 0.02))
    np.testing.assert_allclose(got["born_charges"], want["born_charges"], atol=1e-6)
    assert got["forces"].shape == (len(atoms), 3) and got["polarizability"].shape == (3, 3)
    with pytest.raises(ValueError, match="3 components"):
        model.predict(atoms, field=[0.0, 0.02])
    with pytest.raises(ValueError, match="must be finite"):
        model.predict(atoms, field=[0.0, np.nan, 0.0])
    slab = atoms.copy()
    slab.pbc = [True, True, False]
    with pytest.raises(ValueError, match="not periodic in all three directions"):
        model.predict(slab)
    with pytest.raises(ValueError, match="3 components"):
        check_field(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="field must be 3 numbers .*got 'up'"):
        check_field("up")


def test_fit_config_and_domain_warning(model32):
    from zoo.data.field import load_field

    records = load_field("batio3")[:4]
    config = fit_field_config(model32.config, records)
    model = FieldModel(config, key=jax.random.key(0))
    assert config["domain"]["periodic"] and config["energy_scale"] > 0
    # the per-species energy offsets reproduce the training energies' mean
    counts = np.array([[np.sum(r["structure"].numbers == z) for z in (56, 22, 8)] for r in records])
    mean = np.mean([r["energy"] for r in records])
    assert abs(np.mean(counts @ np.asarray(config["energy_shift"])) - mean) < 1e-6 * abs(mean)
    squeezed = records[0]["structure"].to_ase()
    squeezed.set_cell(squeezed.cell[:] * 0.85, scale_atoms=True)
    with pytest.warns(UserWarning, match="outside the training domain: volume per atom") as rec:
        model.predict(squeezed)
    assert [w.filename for w in rec] == [__file__]  # the user's line, not zoo's or equinox's


def test_training_loss_terms_are_mse_over_reference_squared(model32):
    """`zoo._field_train.total_loss` on targets offset from the model's own outputs by known
    errors: each term is the mean squared offset over real entries / reference^2, polarization
    offsets by a lattice vector count as zero (folded), padding entries do not count, and the
    total is the weighted sum."""
    from zoo._field_train import REFERENCE, frame_batch, total_loss

    model = model32
    atoms = perovskite(6)
    record = {"structure": atoms, "energy": 0.0, "forces": np.zeros((len(atoms), 3)),
              "stress": np.zeros((3, 3)), "polarization": np.zeros(3),
              "born_charges": np.zeros((len(atoms), 3, 3)), "polarizability": np.zeros((3, 3))}  # fmt: skip
    graph, _ = frame_batch([record], BACKBONE["r_max"], np.float32, **CAPACITY)
    full = _call(share_static(model), graph, jnp.zeros((graph.n_graphs, 3)), False)
    offsets = {"energy": 0.02 * len(atoms), "forces": 0.03, "stress": 0.002,
               "born_charges": 0.05, "polarizability": 0.04}  # fmt: skip
    shifted = {k: full[k] - v for k, v in offsets.items()}
    cell = np.asarray(graph.cell[0])
    shifted["polarization"] = full["polarization"] - 0.1 + jnp.asarray(cell[1])  # one quantum
    weights = {k: 1.0 for k in REFERENCE} | {"stress": 0.5}
    total, terms = eqx.filter_jit(total_loss)(model, graph, shifted, weights)
    want = {k: (v / (len(atoms) if k == "energy" else 1)) ** 2 / REFERENCE[k] ** 2
            for k, v in offsets.items()} | {"polarization": 0.1**2 / REFERENCE["polarization"] ** 2}  # fmt: skip
    for k, v in want.items():
        np.testing.assert_allclose(float(terms[k]), v, rtol=2e-3, err_msg=k)
    np.testing.assert_allclose(float(total), sum(weights[k] * want[k] for k in want), rtol=2e-3)
