"""The shipped field-dependent potentials (`batio3-field`, `sio2-field`) load offline from the
embedded folders, reproduce the stored predictions (tests/data/field_shipped_predictions.npz,
float64, written by running this file as a script), and their forces and polarization are
-dE/dr and -dE/deps by central differences (float64, small cells, non-zero field)."""

from functools import partial
from pathlib import Path

import jax
import numpy as np
import pytest
from ase.spacegroup import crystal
from test_field import perovskite
from test_field import run as run_padded

from zoo.hub import load

STORED = Path(__file__).parent / "data" / "field_shipped_predictions.npz"
FIELD = np.array([0.01, -0.02, 0.015])  # V/Å
run = partial(run_padded, capacity={})  # the shipped cutoffs need more edges than test_field's
KEYS = ("energy", "forces", "stress", "polarization", "born_charges", "polarizability")


def small_cell(name: str):
    """A rattled 5-atom BaTiO3 cell or 9-atom alpha-quartz cell."""
    if name == "batio3-field":
        atoms = perovskite(seed=1, repeat=(1, 1, 1))
        atoms.set_cell(np.eye(3) * 4.03, scale_atoms=True)
        return atoms
    atoms = crystal(["Si", "O"], basis=[(0.4697, 0, 0), (0.4135, 0.2669, 0.1191)],
                    spacegroup=154, cellpar=[4.916, 4.916, 5.405, 90, 90, 120])  # fmt: skip
    atoms.rattle(0.05, seed=1)
    return atoms


def predictions(name: str) -> dict:
    """The shipped model's float64 outputs on :func:`small_cell` at :data:`FIELD`
    (call inside ``jax.enable_x64``)."""
    return run(load(name, source="embedded", dtype="float64"), small_cell(name), FIELD)


@pytest.mark.parametrize("name", ["batio3-field", "sio2-field"])
def test_shipped_field_model_predicts_stored_values_and_its_own_derivatives(name):
    if not STORED.is_file():
        raise AssertionError(f"{STORED} is missing: run python tests/test_field_shipped.py")
    with np.load(STORED) as data:
        ref = {k.split("/")[1]: data[k] for k in data.files if k.startswith(name + "/")}
    assert sorted(ref) == sorted(KEYS)
    with jax.enable_x64(True):
        with pytest.warns(UserWarning, match="preview weights from a short training run"):
            model = load(name, source="embedded", dtype="float64")
        atoms, h = small_cell(name), 1e-4
        out = run(model, atoms, FIELD)
        for key in KEYS:
            np.testing.assert_allclose(out[key], ref[key], rtol=1e-7, atol=1e-9, err_msg=key)

        def energy(positions=atoms.positions, field=FIELD):
            moved = atoms.copy()
            moved.positions = positions
            return run(model, moved, field)["energy"]

        for i, k in ((0, 0), (len(atoms) - 1, 2)):
            plus, minus = atoms.positions.copy(), atoms.positions.copy()
            plus[i, k] += h
            minus[i, k] -= h
            fd = -(energy(plus) - energy(minus)) / (2 * h)
            np.testing.assert_allclose(out["forces"][i, k], fd, rtol=1e-5, atol=1e-7)
        for a in range(3):
            d = np.eye(3)[a] * h
            fd = -(energy(field=FIELD + d) - energy(field=FIELD - d)) / (2 * h)
            np.testing.assert_allclose(out["polarization"][a], fd, rtol=1e-6, atol=1e-8)


if __name__ == "__main__":  # python tests/test_field_shipped.py [NAME ...]: (re)write entries
    import sys

    names = sys.argv[1:] or ["batio3-field", "sio2-field"]
    arrays = dict(np.load(STORED)) if STORED.is_file() else {}
    with jax.enable_x64(True):
        for n in names:
            arrays.update({f"{n}/{k}": v for k, v in predictions(n).items() if k in KEYS})
    np.savez(STORED, **arrays)
    print(f"wrote {STORED}: {sorted(arrays)}")
