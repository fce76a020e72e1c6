"""`.magres` output of predicted Si-29 tensors (the CASTEP/ASE magnetic-resonance format).

A magres file stores absolute magnetic shieldings (`ms`, ppm). The `si29-shielding` model
predicts a chemical shift tensor `delta` vs TMS once its reference is applied, so the file
holds `sigma = sigma_ref * I - delta` with `sigma_ref` the absolute shielding given for the
reference compound; with the default `sigma_ref = 0` the values are shieldings relative to
TMS, and `delta = -sigma` recovers the shifts (soprano: `MSIsotropy.get(atoms,
references={"Si": 0.0}, gradients={"Si": -1.0})`).

Only the atoms of the nucleus are written (with the lattice): the model predicts nothing for
the other atoms, and ASE and soprano read an `ms` block only when every atom has a tensor.
Their labels and indices (`Si 1`, `Si 2`, ...) are those of the full structure.
"""

from __future__ import annotations

import os

import numpy as np

from . import nmr


def magres_shielding(shift_tensor, sigma_ref: float = 0.0) -> np.ndarray:
    """`sigma_ref * I - delta`, shape `(n, 3, 3)`, from shift tensors `delta` `(n, 3, 3)`."""
    return nmr.chemical_shift(nmr._tensors(shift_tensor, "shift_tensor"), sigma_ref)


def write_magres(path: str | os.PathLike, atoms, out: dict, *, sigma_ref: float = 0.0) -> None:
    """Write one structure and its predicted tensors as a `.magres` file (via ASE).

    **Arguments:**

    - `path`: the file to write (an existing file is an error: nothing is overwritten).
    - `atoms`: the periodic ``ase.Atoms`` that was predicted.
    - `out`: the dict of `ShieldingModel.predict(atoms)` for this one structure; it must hold
      ``shift_tensor`` (the model has a reference) and ``mask``.
    - `sigma_ref`: absolute shielding of the shift reference, ppm (0: shieldings relative to it).

    The file holds the lattice and the atoms of the nucleus (``mask``) with their full,
    non-symmetric tensors `sigma_ij = sigma_ref delta_ij - delta_ij` (row i: induced field,
    column j: applied field, as in the training data); see the module docstring.
    """
    import ase.io

    path = os.fspath(path)
    if os.path.exists(path):
        raise ValueError(f"{path}: exists; choose another name (nothing is overwritten)")
    if not hasattr(atoms, "get_positions") or not np.all(atoms.get_pbc()):
        raise ValueError("atoms: expected a periodic ase.Atoms (magres files need a lattice)")
    missing = [k for k in ("shift_tensor", "mask") if k not in out]
    if missing:
        raise ValueError(
            f"out: missing {missing}; pass the result of ShieldingModel.predict for one "
            "structure of a model with a shift reference"
        )
    if len(out["mask"]) != len(atoms):
        raise ValueError(
            f"out: {len(out['mask'])} atoms but atoms has {len(atoms)}: predict this structure"
        )
    mask = np.asarray(out["mask"], bool)
    if not mask.any():
        raise ValueError("out: no atom of the nucleus (mask is all False)")
    image = atoms.copy()
    image.calc = None
    image.info = {"magres_units": {"ms": "ppm"}}
    symbols = image.get_chemical_symbols()
    # per-species 1-based indices of the full structure, kept for the written subset
    image.new_array("indices", np.array([symbols[: i + 1].count(s) for i, s in enumerate(symbols)]))
    image = image[mask]
    image.new_array("ms", magres_shielding(np.asarray(out["shift_tensor"])[mask], sigma_ref))
    ase.io.write(path, image, format="magres")
