"""`zoo.Calculator`: tensor properties equal `predict`, one compile per size bucket, unknown
species, energy/forces/stress only for a physical energy (checked by finite differences)."""

import equinox as eqx
import jax
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from zoo.calculator import Calculator
from zoo.model import ResponseModel, make_config
from zoo.nequip import NequIP, NequIPConfig

BACKBONE = dict(channels=4, lmax=2, num_layers=2, radial_hidden=8, r_max=4.0)


def perovskite(seed=0):
    atoms = Atoms(
        "BaTiO3",
        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        cell=np.eye(3) * 4.0,
        pbc=True,
    )
    atoms.rattle(0.1, seed=seed)
    return atoms


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
    with pytest.raises(ValueError, match="unknown species Cu .*atom 1.*knows only O, Ti, Ba"):
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
