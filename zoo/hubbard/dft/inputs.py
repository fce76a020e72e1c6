"""pw.x / hp.x input writers (QE 6.7 ``Hubbard_V(i,j,k)`` syntax and the QE >= 7.1 HUBBARD card).

Hubbard parameters are lists of ``(i, j, value_eV)`` with QE's 1-based indices: ``i`` an atom
of the cell, ``j`` an atom of QE's virtual 3x3x3 supercell (``i == j``: on-site U). Supercell
numbering (PW/src/intersite_V.f90): ``j = 1..nat`` home cell; then, looping ``nx`` (outer),
``ny``, ``nz`` (inner) over -1, 0, 1 and skipping (0, 0, 0), ``nat`` consecutive indices per
image (atom innermost); position ``tau(na) + nx*a1 + ny*a2 + nz*a3`` with ``tau`` as written.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from ase.data import atomic_masses, atomic_numbers

from .structures import TRANSITION_METALS, validate_structure

ANGSTROM_TO_BOHR = 1.0 / 0.529177210903
ACTIVATE = 1e-8  # "switched on" without a physical value, as in the QE examples
MANIFOLD = {"O": "2p", "N": "2p", "S": "3p", **{m: "3d" for m in TRANSITION_METALS}}
# Images of QE's 3x3x3 supercell in index order (cell 0 = home, then 26 in nx, ny, nz order).
IMAGES = [(0, 0, 0)] + [t for t in itertools.product((-1, 0, 1), repeat=3) if t != (0, 0, 0)]

DEFAULT_PW = {
    "ecutwfc": 50.0,
    "ecutrho": 400.0,
    "kpts": [2, 2, 2],
    "conv_thr": 1e-10,
    "mixing_beta": 0.3,
    "electron_maxstep": 100,
    "tot_magnetization": 0,
    "U_projection_type": "ortho-atomic",
}
DEFAULT_HP = {"nq": [2, 2, 2], "conv_thr_chi": 1e-5, "niter_max": 30, "alpha_mix": 0.3}


def is_hubbard(symbol: str) -> bool:
    return symbol in MANIFOLD


def is_ligand(symbol: str) -> bool:
    """Whether `symbol` has a ligand p manifold (the other end of a V(TM-ligand) pair)."""
    return MANIFOLD.get(symbol, "").endswith("p")


def canonical_order(structure: dict) -> dict:
    """Hubbard atoms first (TM, then ligands, stable), crystal coordinates wrapped to [0, 1)."""
    validate_structure(structure)
    sym = structure["symbols"]
    if not any(s in TRANSITION_METALS for s in sym):
        raise ValueError(f"structure.symbols: no Hubbard (transition-metal) atom in {sym}")
    rank = [0 if s in TRANSITION_METALS else 1 if is_hubbard(s) else 2 for s in sym]
    order = sorted(range(len(sym)), key=lambda i: (rank[i], i))
    cell = np.asarray(structure["cell"], float)
    frac = wrap(np.asarray(structure["positions"], float) @ np.linalg.inv(cell))
    return {
        "symbols": [sym[i] for i in order],
        "cell": cell.tolist(),
        "positions": np.round(frac[order] @ cell, 10).tolist(),
        "spins": [int(structure["spins"][i]) for i in order],
        "pbc": [True, True, True],
    }


def wrap(frac: np.ndarray) -> np.ndarray:
    """Fractional coordinates wrapped to [0, 1) (1 - 1e-10 and above maps to 0)."""
    out = frac - np.floor(frac)
    out[out >= 1.0 - 1e-10] = 0.0
    return out


def crystal_coords(structure: dict) -> np.ndarray:
    cell = np.asarray(structure["cell"], float)
    return wrap(np.asarray(structure["positions"], float) @ np.linalg.inv(cell))


def supercell_index(atom: int, image: tuple[int, int, int], nat: int) -> int:
    """QE 3x3x3 supercell index (1-based) of 0-based ``atom`` in ``image``."""
    return IMAGES.index(tuple(int(x) for x in image)) * nat + atom + 1


def supercell_atom(j: int, nat: int) -> tuple[int, tuple[int, int, int]]:
    """Inverse of :func:`supercell_index`: (0-based atom, image) of 1-based index ``j``."""
    if not 1 <= j <= 27 * nat:
        raise ValueError(f"j: supercell index {j} outside 1..{27 * nat}")
    return (j - 1) % nat, IMAGES[(j - 1) // nat]


def pair_distance(structure: dict, i: int, j: int) -> float:
    """Distance (Angstrom) between cell atom ``i`` (1-based) and supercell atom ``j``."""
    nat = len(structure["symbols"])
    frac = crystal_coords(structure)
    cell = np.asarray(structure["cell"], float)
    atom, image = supercell_atom(j, nat)
    d = (frac[atom] + np.array(image) - frac[i - 1]) @ cell
    return float(np.linalg.norm(d))


def first_shell_pairs(structure: dict, tol: float = 0.25) -> list[tuple[int, int]]:
    """TM-ligand first-shell pairs ``(i, j)`` (1-based QE indices, TM side).

    A neighbour is in the first shell when closer than ``(1 + tol)`` times the TM's shortest
    TM-ligand distance. Raises ValueError when a first-shell neighbour (found among 5x5x5 images)
    is missing from QE's 3x3x3 supercell.
    """
    sym = structure["symbols"]
    nat = len(sym)
    frac = crystal_coords(structure)
    cell = np.asarray(structure["cell"], float)
    pairs = []
    big = list(itertools.product(range(-2, 3), repeat=3))
    for i in range(nat):
        if sym[i] not in TRANSITION_METALS:
            continue
        cand = []
        for k in range(nat):
            if sym[k] in TRANSITION_METALS or not is_hubbard(sym[k]):
                continue
            for img in big:
                d = float(np.linalg.norm((frac[k] + np.array(img) - frac[i]) @ cell))
                cand.append((d, k, img))
        if not cand:
            raise ValueError(f"structure.symbols: TM atom {i + 1} ({sym[i]}) has no ligand")
        dmin = min(c[0] for c in cand)
        for d, k, img in sorted(cand):
            if d > dmin * (1 + tol):
                break
            if max(abs(x) for x in img) > 1:
                raise ValueError(
                    f"structure.positions: first-shell neighbour {sym[k]}{k + 1} of "
                    f"{sym[i]}{i + 1} (image {img}, {d:.3f} A) is missing in the 3x3x3 supercell"
                )
            pairs.append((i + 1, supercell_index(k, img, nat)))
    return sorted(pairs)


def initial_hubbard(structure: dict, u_init: dict[str, float]) -> list[tuple[int, int, float]]:
    """Iteration-0 parameters: U(TM) = ``u_init``, ligand U and first-shell V activated (1e-8)."""
    params = []
    for i, s in enumerate(structure["symbols"], start=1):
        if s in TRANSITION_METALS:
            params.append((i, i, float(u_init.get(s, ACTIVATE))))
        elif is_hubbard(s):
            params.append((i, i, ACTIVATE))
    params += [(i, j, ACTIVATE) for i, j in first_shell_pairs(structure)]
    return params


def species_labels(structure: dict) -> list[str]:
    """Per-atom species label: TM spin up ``Mn1``, spin down ``Mn2``, else the element."""
    out = []
    for s, spin in zip(structure["symbols"], structure["spins"], strict=True):
        out.append(f"{s}{1 if spin > 0 else 2}" if s in TRANSITION_METALS and spin else s)
    return out


def _species(structure: dict, pseudos: dict[str, str], pseudo_dir: str | None):
    labels = species_labels(structure)
    missing = sorted(set(structure["symbols"]) - set(pseudos))
    if missing:
        raise ValueError(f"pseudos: no pseudopotential given for element {missing[0]!r}")
    species = []
    for lab, s, spin in zip(labels, structure["symbols"], structure["spins"], strict=True):
        if lab in [x[0] for x in species]:
            continue
        if pseudo_dir is not None and not (Path(pseudo_dir) / pseudos[s]).is_file():
            raise ValueError(f"pseudos: file {pseudos[s]!r} for {s!r} not found in {pseudo_dir}")
        species.append((lab, s, pseudos[s], float(np.sign(spin))))
    return labels, species


def _fmt(x: float) -> str:
    return f"{x:.10g}".replace("e", "d") if "e" in f"{x:.10g}" else f"{x:.10g}"


def pw_input(
    structure: dict,
    hubbard: list[tuple[int, int, float]],
    *,
    pseudos: dict[str, str],
    pseudo_dir: str,
    prefix: str = "pwscf",
    outdir: str = "./out",
    settings: dict | None = None,
    qe_version: tuple[int, int] = (6, 7),
    check_files: bool = True,
) -> str:
    """pw.x DFT+U+V SCF input text for ``structure`` (canonical order) and ``hubbard``."""
    st = {**DEFAULT_PW, **(settings or {})}
    if not hubbard:
        raise ValueError("hubbard: empty parameter list")
    labels, species = _species(structure, pseudos, pseudo_dir if check_files else None)
    nat = len(labels)
    for i, j, _ in hubbard:
        if not (1 <= i <= nat and 1 <= j <= 27 * nat):
            raise ValueError(f"hubbard: pair ({i}, {j}) out of range for nat={nat}")
    sys_lines = [
        "ibrav = 0",
        f"nat = {nat}",
        f"ntyp = {len(species)}",
        f"ecutwfc = {st['ecutwfc']}",
        f"ecutrho = {st['ecutrho']}",
        "nspin = 2",
    ]
    if st.get("smearing"):
        sys_lines += ["occupations = 'smearing'", f"smearing = '{st['smearing']}'"]
        sys_lines.append(f"degauss = {st.get('degauss', 0.01)}")
    else:
        sys_lines += ["occupations = 'fixed'", f"tot_magnetization = {st['tot_magnetization']}"]
    for n, (_, _, _, m) in enumerate(species, start=1):
        sys_lines.append(f"starting_magnetization({n}) = {m}")
    if st.get("nosym"):
        sys_lines.append("nosym = .true.")
    hub_card = []
    if qe_version < (7, 1):
        sys_lines += [
            "lda_plus_u = .true.",
            "lda_plus_u_kind = 2",
            f"U_projection_type = '{st['U_projection_type']}'",
        ]
        sys_lines += [f"Hubbard_V({i},{j},1) = {_fmt(v)}" for i, j, v in hubbard]
    else:
        hub_card.append(f"HUBBARD {{{st['U_projection_type']}}}")
        for i, j, v in hubbard:
            a, _ = supercell_atom(j, nat)
            mi = f"{labels[i - 1]}-{MANIFOLD[structure['symbols'][i - 1]]}"
            mj = f"{labels[a]}-{MANIFOLD[structure['symbols'][a]]}"
            hub_card.append(f"V {mi} {mj} {i} {j} {_fmt(v)}")
    lines = [
        "&control",
        "  calculation = 'scf'",
        f"  prefix = '{prefix}'",
        f"  pseudo_dir = '{pseudo_dir}'",
        f"  outdir = '{outdir}'",
        "  tprnfor = .false.",
        "/",
        "&system",
        *[f"  {x}" for x in sys_lines],
        "/",
        "&electrons",
        f"  conv_thr = {_fmt(st['conv_thr'])}",
        f"  mixing_beta = {st['mixing_beta']}",
        f"  electron_maxstep = {st['electron_maxstep']}",
        # optional: QE's defaults ('plain', 8) unless a job sets them
        *[f"  {k} = {_qe_value(st[k])}" for k in ("mixing_mode", "mixing_ndim") if k in st],
        "/",
        "ATOMIC_SPECIES",
    ]
    for lab, s, pp, _ in species:
        lines.append(f"  {lab} {atomic_masses[atomic_numbers[s]]:.4f} {pp}")
    lines.append("CELL_PARAMETERS {angstrom}")
    lines += ["  " + " ".join(f"{x:15.10f}" for x in row) for row in structure["cell"]]
    lines.append("ATOMIC_POSITIONS {crystal}")
    for lab, row in zip(labels, crystal_coords(structure), strict=True):
        lines.append(f"  {lab} " + " ".join(f"{x:14.10f}" for x in row))
    k = st["kpts"]
    lines += ["K_POINTS {automatic}", f"  {k[0]} {k[1]} {k[2]} 0 0 0", *hub_card]
    return "\n".join(lines) + "\n"


def _qe_value(v) -> str:
    return f"'{v}'" if isinstance(v, str) else str(v)


def hp_input(*, prefix: str = "pwscf", outdir: str = "./out", settings: dict | None = None) -> str:
    """hp.x input text (same ``prefix``/``outdir`` as the pw.x run it follows)."""
    st = {**DEFAULT_HP, **(settings or {})}
    nq = st["nq"]
    lines = [
        "&inputhp",
        f"  prefix = '{prefix}'",
        f"  outdir = '{outdir}'",
        f"  nq1 = {nq[0]}, nq2 = {nq[1]}, nq3 = {nq[2]}",
        f"  conv_thr_chi = {_fmt(st['conv_thr_chi'])}",
        f"  niter_max = {st['niter_max']}",
        f"  alpha_mix(1) = {st['alpha_mix']}",
        "  iverbosity = 2",
    ]
    if "num_neigh" in st:
        lines.append(f"  num_neigh = {st['num_neigh']}")
    lines += _hp_split_lines(st)
    return "\n".join(lines) + "\n/\n"


HP_SPLIT_FLAGS = ("determine_num_pert_only", "compute_hp", "sum_pertq")


def _hp_split_lines(st: dict) -> list[str]:
    """Keywords of one piece of a split hp.x run (QE 6.7 ``&inputhp``)."""
    lines = []
    if (atom := st.get("perturb_only_atom")) is not None:
        if not isinstance(atom, int) or atom < 1:
            raise ValueError(f"perturb_only_atom: expected a 1-based atom index, got {atom!r}")
        lines.append(f"  perturb_only_atom({atom}) = .true.")
    for key in ("start_q", "last_q"):
        if key in st:
            lines.append(f"  {key} = {int(st[key])}")
    lines += [f"  {key} = .true." for key in HP_SPLIT_FLAGS if st.get(key)]
    return lines
