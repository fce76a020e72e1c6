"""Symmetry checks for any zoo model or head (used by the test suite; usable on your models).

A *predictor* maps a :class:`~zoo.Structure` to a dict of numpy arrays. Each output is
described by an :class:`Output`: how it transforms under an orthogonal matrix ``R``
(rotation or reflection), whether it is per atom, and whether a global output is extensive.
:func:`check_symmetries` then compares, for one structure:

- rotations *and* reflections: ``f(R x) == D(R) f(x)``;
- translations: ``f(x + t) == f(x)``;
- atom permutations: ``f(P x) == P f(x)``;
- periodic wrapping: moving atoms by lattice vectors changes nothing;
- supercell consistency: per-atom outputs of a 2x1x1 repeat equal the original's (and
  global outputs are equal, or doubled when extensive).

Errors are ``max |a - b| / max(|b|, tiny)`` over all entries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import e3nn_jax as e3nn
import numpy as np

from .structure import Structure, as_structure

Predictor = Callable[[Structure], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Output:
    """How one output transforms.

    Either `irreps` (an irreps string; the output's last axis is in that basis) or
    `cartesian_rank` (a Cartesian tensor whose last `rank` axes each transform with ``R``;
    `axial` multiplies by det(R) once per axial index, e.g. 2 for a shielding tensor
    d2E/dB dmu). `per_atom`: the leading axis is atoms. `extensive`: a global output that
    doubles in a 2x1x1 supercell.
    """

    irreps: str | None = None
    cartesian_rank: int | None = None
    axial: int = 0
    per_atom: bool = True
    extensive: bool = False

    def transform(self, R: np.ndarray, x: np.ndarray) -> np.ndarray:
        if self.irreps is not None:
            D = np.asarray(e3nn.Irreps(self.irreps).D_from_matrix(R), dtype=np.float64)
            return np.einsum("ij,...j->...i", D, x)
        out = np.asarray(x, np.float64)
        rank = self.cartesian_rank or 0
        for axis in range(rank):
            out = np.moveaxis(
                np.tensordot(out, R, axes=([out.ndim - rank + axis], [1])),
                -1,
                out.ndim - rank + axis,
            )
        return out * np.linalg.det(R) ** self.axial


def random_orthogonal(rng: np.random.Generator, reflect: bool) -> np.ndarray:
    """A random rotation (``reflect=False``) or improper rotation (det -1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return -q if reflect else q


def _moved(s: Structure, positions=None, cell=None, numbers=None) -> Structure:
    return Structure(
        numbers=s.numbers if numbers is None else numbers,
        positions=s.positions if positions is None else positions,
        cell=s.cell if cell is None else cell,
        pbc=s.pbc,
    )


def _error(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch {a.shape} vs {b.shape}")
    scale = max(np.abs(b).max(initial=0.0), 1e-30)
    return float(np.abs(a - b).max(initial=0.0) / scale)


def symmetry_errors(
    predict: Predictor, structure, outputs: dict[str, Output], *, seed: int = 0
) -> dict[str, float]:
    """Relative errors of every check and output, keyed ``"<check>/<output>"``."""
    rng = np.random.default_rng(seed)
    s = as_structure(structure)
    ref = predict(s)
    errors: dict[str, float] = {}

    def compare(check: str, got: dict, expected: Callable[[str, np.ndarray], np.ndarray]):
        for name, spec in outputs.items():
            errors[f"{check}/{name}"] = _error(got[name], expected(name, ref[name]))

    for reflect in (False, True):
        R = random_orthogonal(rng, reflect)
        got = predict(_moved(s, s.positions @ R.T, s.cell @ R.T))
        compare(
            "reflection" if reflect else "rotation", got, lambda n, x: outputs[n].transform(R, x)
        )

    t = rng.normal(size=3) * 3.0
    compare("translation", predict(_moved(s, s.positions + t)), lambda n, x: x)

    perm = rng.permutation(len(s))
    got = predict(_moved(s, s.positions[perm], numbers=s.numbers[perm]))
    compare("permutation", got, lambda n, x: x[perm] if outputs[n].per_atom else x)

    if s.pbc.all():
        images = rng.integers(-1, 3, size=(len(s), 3))
        compare("wrap", predict(_moved(s, s.positions + images @ s.cell)), lambda n, x: x)
        big = s.to_ase().repeat((2, 1, 1))
        got = predict(as_structure(big))

        def tiled(n, x):
            spec = outputs[n]
            if spec.per_atom:
                return np.concatenate([x, x])
            return 2 * x if spec.extensive else x

        compare("supercell", got, tiled)
    return errors


def check_symmetries(
    predict: Predictor, structure, outputs: dict[str, Output], *, rtol: float, seed: int = 0
) -> dict[str, float]:
    """Run :func:`symmetry_errors` and raise ``AssertionError`` listing every check above
    `rtol`. Returns the errors."""
    errors = symmetry_errors(predict, structure, outputs, seed=seed)
    bad = {k: v for k, v in errors.items() if not v <= rtol}
    if bad:
        lines = ", ".join(f"{k}={v:.2e}" for k, v in sorted(bad.items()))
        raise AssertionError(f"symmetry violated beyond rtol={rtol:g}: {lines}")
    return errors


def finite_difference_forces(
    energy: Callable[[np.ndarray], float], positions: np.ndarray, h: float = 1e-5
):
    """Central-difference forces -dE/dr of a scalar energy function of positions."""
    forces = np.zeros_like(positions, dtype=np.float64)
    for i in range(positions.shape[0]):
        for a in range(3):
            plus, minus = positions.copy(), positions.copy()
            plus[i, a] += h
            minus[i, a] -= h
            forces[i, a] = -(energy(plus) - energy(minus)) / (2 * h)
    return forces
