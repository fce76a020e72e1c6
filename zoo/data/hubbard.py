"""The Hubbard U/V rows of ``data/hubbard/labels.jsonl`` as model datasets.

One row per hp.x label (format: ``data/hubbard/README.md``). :func:`u_dataset` and
:func:`v_dataset` turn rows into the models' inputs (HubbardML's occupation irreps), targets and
the keys the splitting and metrics need; rows at or below HubbardML's cut-offs are dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..hubbard._basis import occupations_qe_to_e3nn
from ..hubbard._features import intersite_features, onsite_features, pair_vectors, spin_features
from ..hubbard._split import U_PARAM_TOL, V_PARAM_TOL, power_spectrum

#: ``data/hubbard`` of a source checkout
DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "hubbard"
#: eV. U: HubbardML's ``hubbard_param_cutoff``. V: lower than HubbardML's, so that every pair
#: hp.x lists for the next iteration (the first O shell of each TM: 0.135 eV and up in the
#: data) is a row; 0.3 eV dropped the long Jahn-Teller Mn-O bonds of layered LiMnO2 (0.14 eV)
#: and MnO2 (0.20-0.22 eV) that pw.x runs of those cells list, so ``predict`` refused them.
#: Below 0.1 eV hp.x's precision (~0.03 eV at conv_thr_chi 1e-4) is a third of the value.
U_CUTOFF, V_CUTOFF = 0.2, 0.1
HUBBARDML_V_CUTOFF = 0.3  # eV: the V row set of HubbardML (and of earlier cards), for comparison


def load_rows(path: str | Path = DATA_DIR / "labels.jsonl") -> list[dict]:
    """The rows of a ``labels.jsonl`` file (default: the repository's)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def step_of(row: dict) -> str:
    """The self-consistent step of a row, ``<sc_path>/it<k>`` (its rows are fixed once written)."""
    return f"{row['sc_path']}/it{row['iteration']}"


def select_steps(rows: list[dict], path: Path) -> list[dict]:
    """The rows of the steps listed in the JSON file `path`; every step must be in the data."""
    steps = json.loads(Path(path).read_text())
    if not isinstance(steps, list) or not all(isinstance(x, str) for x in steps):
        raise ValueError(f"{path}: expected a JSON list of '<sc_path>/it<k>' strings")
    wanted = set(steps)
    missing = sorted(wanted - {step_of(r) for r in rows})
    if missing:
        raise ValueError(f"{path}: steps not in the data: {', '.join(missing[:5])}")
    return [r for r in rows if step_of(r) in wanted]


def _spectra(up: np.ndarray, down: np.ndarray, l: int) -> list[np.ndarray]:
    s, p = spin_features(occupations_qe_to_e3nn(up, l), occupations_qe_to_e3nn(down, l), l)
    return [power_spectrum(s), power_spectrum(p)]


def u_dataset(rows: list[dict]) -> dict | None:
    """The U rows (TM 3d, label above ``U_CUTOFF``) as a dataset; ``None`` if fewer than 2."""
    rows = [
        r for r in rows
        if r["param_type"] == "U" and r["atom_1_manifold"] == "3d" and r["param_out"] > U_CUTOFF
    ]  # fmt: skip
    if len(rows) < 2:
        return None
    species = sorted({r["atom_1_element"] for r in rows})
    occs = np.array([r["atom_1_occs"] for r in rows], dtype=np.float64)
    elements = [r["atom_1_element"] for r in rows]
    p_in = np.array([r["param_in"] for r in rows])
    x = onsite_features(
        elements, occs[:, 0], occs[:, 1], p_in, species=species, labels=[r["id"] for r in rows]
    )
    return {
        "rows": rows, "species": species, "inputs": (x.array,), "key": elements,
        "y": np.array([r["param_out"] for r in rows]), "param_in": p_in,
        "spectra": _spectra(occs[:, 0], occs[:, 1], 2), "distance": None, "tol": U_PARAM_TOL,
    }  # fmt: skip


def bond_vector(row: dict) -> np.ndarray:
    """The TM (atom 1) -> O (atom 2 in its cell image) vector of a V row, Å."""
    st, pair = row["structure"], (row["atom_1_idx"], row["atom_2_idx"], row["atom_2_image"])
    return pair_vectors(st["positions"], st["cell"], [pair])[0]


def v_dataset(rows: list[dict], bond_lmax: int = 0) -> dict | None:
    """The V rows (TM 3d - O 2p, label above ``V_CUTOFF``) as a dataset; ``None`` if fewer
    than 2."""
    rows = [
        r for r in rows
        if r["param_type"] == "V" and (r["atom_1_manifold"], r["atom_2_manifold"]) == ("3d", "2p")
        and r["param_out"] > V_CUTOFF
    ]  # fmt: skip
    if len(rows) < 2:
        return None
    species = sorted({r["atom_1_element"] for r in rows} | {r["atom_2_element"] for r in rows})
    d_occ = np.array([r["atom_1_occs"] for r in rows], dtype=np.float64)  # atom 1: the TM
    p_occ = np.array([r["atom_2_occs"] for r in rows], dtype=np.float64)  # atom 2: the ligand
    p_el, d_el = [r["atom_2_element"] for r in rows], [r["atom_1_element"] for r in rows]
    dist = np.array([r["dist_bohr"] for r in rows])
    p_in = np.array([r["param_in"] for r in rows])
    feats = intersite_features(
        p_el, p_occ[:, 0], p_occ[:, 1], d_el, d_occ[:, 0], d_occ[:, 1], dist, p_in,
        species=species, labels=[r["id"] for r in rows],
        bond=np.array([bond_vector(r) for r in rows]), bond_lmax=bond_lmax,
    )  # fmt: skip
    return {
        "rows": rows, "species": species, "inputs": tuple(f.array for f in feats),
        "key": [f"{p}-{d}" for p, d in zip(p_el, d_el)],
        "y": np.array([r["param_out"] for r in rows]), "param_in": p_in, "distance": dist, "tol": V_PARAM_TOL,
        "spectra": _spectra(p_occ[:, 0], p_occ[:, 1], 1) + _spectra(d_occ[:, 0], d_occ[:, 1], 2),
    }  # fmt: skip
