"""`zoo.Calculator`: tensor properties equal `predict`, one compile per size bucket, unknown
species, energy/forces/stress only for a physical energy (checked by finite differences)."""

import equinox as eqx
import jax
import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError
from test_cli import BACKBONE, perovskite

from zoo.calculator import Calculator
from zoo.model import ResponseModel, make_config
from zoo.nequip import NequIP, NequIPConfig


@pytest.fixture(scope="module")
def model():
    config = make_config([56, 22, 8], ["born_charges", "dielectric"], backbone=BACKBONE)
    return ResponseModel(config, key=jax.random.key(0))


def test_tensor_properties_equal_predict(model):
    atoms = perovskite()
    calc = Calculator(model)
    atoms.calc = calc
    assert "energy" not in calc.implemented_properties  # a response model has no physical energy
    assert {"born_charges", "dielectric", "born_effective_charges"} <= set(
        calc.implemented_properties
    )
    want = model.predict(atoms)
    np.testing.assert_allclose(calc.get_property("born_charges", atoms), want["born_charges"],
                               atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(calc.get_property("dielectric_tensor", atoms), want["dielectric"],
                               atol=1e-6)  # fmt: skip
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_potential_energy()


def test_compiles_once_per_size_bucket(model):
    calc = Calculator(model)
    atoms = perovskite()
    values = []
    for seed in range(3):
        atoms.positions = perovskite(seed).positions
        values.append(calc.get_property("born_charges", atoms))
    assert not np.allclose(values[0], values[1])  # new positions, new result
    assert calc._jit._cached._cache_size() == 1
    big = atoms.repeat((2, 1, 1))  # another size bucket: one more compile, then reused
    calc.get_property("born_charges", big)
    big.rattle(0.05, seed=1)
    calc.get_property("born_charges", big)
    assert calc._jit._cached._cache_size() == 2


def test_unknown_species_and_unknown_name(model):
    atoms = perovskite()
    atoms.numbers[1] = 29
    with pytest.raises(
        ValueError, match=r"unknown species Cu \(atoms 1\): .* knows only O, Ti, Ba$"
    ):
        Calculator(model).get_property("born_charges", atoms)
    with pytest.raises(
        ValueError, match="unknown model name 'no-such-model'; known names: batio3-response"
    ):
        Calculator("no-such-model")


class TinyPotential(eqx.Module):
    """A NequIP with a per-atom energy: a model with a physical energy."""

    net: NequIP
    config: dict = eqx.field(static=True)

    def __init__(self, key):
        small = {**BACKBONE, "lmax": 1, "num_layers": 1}
        cfg = NequIPConfig(species=(56, 22, 8), output_irreps="1x0e", **small)
        self.net = NequIP(cfg, key=key)
        self.config = {"backbone": cfg.to_dict()}

    @property
    def species(self):
        return self.net.config.species

    @property
    def dtype(self):
        return self.net.dtype

    def node_energy(self, graph, vectors):
        return self.net(graph, vectors).array[:, 0]


def test_energy_forces_stress_of_a_physical_energy(x64):
    calc = Calculator(TinyPotential(jax.random.key(1)))
    assert {"energy", "forces", "stress"} <= set(calc.implemented_properties)
    assert "born_charges" not in calc.implemented_properties
    atoms = perovskite(3)
    atoms.calc = calc
    forces, stress = atoms.get_forces(), atoms.get_stress()
    assert forces.shape == (5, 3) and stress.shape == (6,)

    def energy(positions=None, cell=None):
        a = atoms.copy()
        if positions is not None:
            a.positions = positions
        if cell is not None:
            a.set_cell(cell, scale_atoms=True)
        a.calc = calc
        return a.get_potential_energy()

    d = 1e-4
    for i, k in ((1, 0), (3, 2)):  # two force components by central differences
        step = np.zeros((5, 3))
        step[i, k] = d
        fd = -(energy(atoms.positions + step) - energy(atoms.positions - step)) / (2 * d)
        assert forces[i, k] == pytest.approx(fd, abs=1e-6)
    strain = np.eye(3)
    strain[0, 0] += d
    up, down = energy(cell=atoms.cell @ strain), energy(cell=atoms.cell @ (2 * np.eye(3) - strain))
    assert stress[0] == pytest.approx((up - down) / (2 * d) / atoms.get_volume(), abs=1e-6)


# ---- field-dependent potentials (zoo.field.FieldModel) ----


@pytest.fixture(scope="module")
def field_model():
    from zoo.field import FieldModel

    return FieldModel.create([56, 22, 8], key=jax.random.key(2), **BACKBONE)


def test_field_properties_equal_predict(field_model):
    atoms = perovskite(4)
    calc = Calculator(field_model, field=[0.0, 0.01, 0.0])
    atoms.calc = calc
    want = field_model.predict(atoms, field=[0.0, 0.01, 0.0])
    assert atoms.get_potential_energy() == pytest.approx(float(want["energy"]), rel=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), want["forces"], atol=1e-5)
    np.testing.assert_allclose(atoms.get_dipole_moment(), want["polarization"], atol=1e-5)
    np.testing.assert_allclose(calc.get_property("polarization", atoms),
                               want["polarization"] / atoms.get_volume(), atol=1e-7)  # fmt: skip
    np.testing.assert_allclose(calc.get_property("born_effective_charges", atoms),
                               want["born_charges"], atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(calc.get_property("polarizability", atoms),
                               want["polarizability"], atol=1e-5)  # fmt: skip
    assert calc.get_property("raman_tensors", atoms).shape == (5, 3, 3, 3)
    energy = atoms.get_potential_energy()
    calc.set(field=[0.0, 0.0, 0.0])  # a new field clears the results
    assert atoms.get_potential_energy() != energy


def test_field_bad_input(field_model, model):
    atoms = perovskite(5)
    with pytest.raises(ValueError, match="3 components"):
        Calculator(field_model, field=[0.0, 1.0])
    with pytest.raises(ValueError, match="must be finite"):
        Calculator(field_model, field=[0.0, np.inf, 0.0])
    with pytest.raises(ValueError, match="does not depend on an electric field"):
        Calculator(model, field=[0.0, 0.0, 0.01])
    with pytest.raises(ValueError, match="does not depend on an electric field"):
        Calculator(model).set(field=[0.0, 0.0, 0.01])
    with pytest.raises(ValueError, match="takes no field.*FieldModel"):
        model.predict(atoms, field=[0.0, 0.0, 0.01])
    for pbc in ([True, True, False], False):
        atoms.pbc = pbc
        atoms.calc = Calculator(field_model)
        with pytest.raises(ValueError, match="Berry-phase.*only a dipole moment is defined"):
            atoms.get_dipole_moment()


@pytest.mark.parametrize("field", [None, [0.0, 0.02, -0.03]])
def test_nve_conserves_energy_with_and_without_field(field_model, field, x64):
    from ase import units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from zoo.field import FieldModel

    model = FieldModel({**field_model.config, "dtype": "float64"}, key=jax.random.key(2))
    atoms = perovskite(6).repeat((2, 1, 1))
    atoms.calc = Calculator(model, field=field)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    total = []
    dyn = VelocityVerlet(atoms, timestep=0.25 * units.fs)
    dyn.attach(lambda: total.append(atoms.get_total_energy()), interval=1)
    dyn.run(40)
    kinetic = atoms.get_kinetic_energy()
    drift = np.ptp(total)
    assert kinetic > 0 and np.isfinite(total).all()
    assert drift < 0.02 * max(kinetic, 1e-3), (drift, kinetic)


def test_shipped_field_model_refuses_bad_input_in_predict_and_the_calculator():
    """Through ``zoo.load("batio3-field")``: every error comes before any compilation."""
    from ase.build import bulk

    import zoo

    with pytest.warns(UserWarning, match="preview weights"):
        shipped = zoo.load("batio3-field")
    atoms = perovskite(7)
    fields = {
        "vector of 3 components": [0.0, 0.01],
        "must be finite": [0.0, np.nan, 0.0],
        "field must be 3 numbers": "0 0 0.01",
    }
    for phrase, field in fields.items():
        with pytest.raises(ValueError, match=phrase):
            shipped.predict(atoms, field=field)
        with pytest.raises(ValueError, match=phrase):
            Calculator(shipped, field=field)
    for pbc in (False, [True, False, True]):
        slab = atoms.copy()
        slab.pbc = pbc
        with pytest.raises(ValueError, match="not periodic .*only a dipole moment is defined"):
            shipped.predict(slab)
        slab.calc = Calculator(shipped)
        with pytest.raises(ValueError, match="Berry-phase.*only a dipole moment is defined"):
            slab.get_potential_energy()
    silicon = bulk("Si", "diamond", 5.43)
    with pytest.raises(ValueError, match=r"structure 0: unknown species Si \(atoms 0, 1\)"):
        shipped.predict(silicon)
    silicon.calc = Calculator(shipped)
    with pytest.raises(ValueError, match=r"unknown species Si .*knows only O, Ti, Ba"):
        silicon.get_forces()


def test_out_of_domain_warning_points_at_the_users_line(field_model):
    """The warning names what is outside and the line of the user's ASE call, not ASE's."""
    from zoo.field import FieldModel

    domain = {"periodic": True, "volume_per_atom": [12.0, 14.0], "min_distance": 1.6}
    model = FieldModel({**field_model.config, "domain": domain}, key=jax.random.key(2))
    atoms = perovskite(8)
    atoms.set_cell(atoms.cell[:] * 1.3, scale_atoms=True)  # 28 Å^3 per atom
    atoms.calc = Calculator(model)
    with pytest.warns(
        UserWarning, match=r"outside the training domain: volume per atom 28\."
    ) as rec:
        atoms.get_potential_energy()
    assert [w.filename for w in rec] == [__file__]


def test_equal_field_models_share_compiled_predictions(field_model):
    """Two equal FieldModels built in code predict through one compiled call."""
    from zoo._jax_cache import count_compiles
    from zoo.field import FieldModel

    twin = FieldModel.create([56, 22, 8], key=jax.random.key(2), **BACKBONE)
    atoms = perovskite(4)
    field_model.predict(atoms, field=[0.0, 0.0, 0.01])
    with count_compiles() as count:
        twin.predict(atoms, field=[0.0, 0.0, 0.01])
    assert count.compiles == 0, count
