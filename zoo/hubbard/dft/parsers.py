"""Parsers for QE 6.7 pw.x / hp.x outputs; each raises one ValueError on truncated/foreign text.

Orbital order of every occupation matrix (QE real harmonics, ``m = 0, +1, -1, +2, -2``):
p = (z, x, y); d = (z2, xz, yz, x2-y2, xy).
"""

from __future__ import annotations

import re

import numpy as np

RY_TO_EV = 13.605693122994
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][-+]?\d+)?"


def _ffloat(text: str) -> float:
    """Float from Python or Fortran (``1.d-8``) notation."""
    return float(text.replace("d", "e").replace("D", "E"))


def _time_seconds(text: str) -> float:
    """'1h 2m 3.4s' / '1m 5.2s' / '47.43s' -> seconds."""
    total = 0.0
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)([hms])", text):
        total += float(value) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


def parse_pw_output(text: str) -> dict:
    """pw.x stdout -> dict(converged, n_iter, energy_ry, total_mag, abs_mag, pairs, nat, ...).

    ``pairs`` is the Hubbard pair table ``[(i, j, dist_bohr, V_eV), ...]`` printed at the top of a
    DFT+U+V run. A run that stopped without convergence has ``converged=False`` (not an error);
    a file that is not pw.x output or ends before the run finished raises ValueError.
    """
    if "Program PWSCF" not in text:
        raise ValueError("pw.x output: 'Program PWSCF' header not found (not a pw.x stdout)")
    out: dict = {"version": None, "converged": False, "n_iter": None, "energy_ry": None}
    m = re.search(r"Program PWSCF v\.(\S+)", text)
    out["version"] = m.group(1) if m else None
    m = re.search(r"number of atoms/cell\s*=\s*(\d+)", text)
    if not m:
        raise ValueError("pw.x output: truncated before 'number of atoms/cell'")
    out["nat"] = int(m.group(1))
    m = re.search(r"convergence has been achieved in\s+(\d+)\s+iterations", text)
    if m:
        out["converged"], out["n_iter"] = True, int(m.group(1))
    m = re.search(r"convergence NOT achieved after\s+(\d+)\s+iterations", text)
    if m:
        out["converged"], out["n_iter"] = False, int(m.group(1))
    done = "JOB DONE" in text
    if not done and not m:
        raise ValueError("pw.x output: truncated (no 'JOB DONE' and no convergence verdict)")
    energies = re.findall(r"^!\s+total energy\s+=\s+(" + _FLOAT + r")\s+Ry", text, re.M)
    out["energy_ry"] = float(energies[-1]) if energies else None
    mags = re.findall(r"total magnetization\s+=\s+(" + _FLOAT + ")", text)
    absm = re.findall(r"absolute magnetization\s+=\s+(" + _FLOAT + ")", text)
    out["total_mag"] = float(mags[-1]) if mags else None
    out["abs_mag"] = float(absm[-1]) if absm else None
    acc = re.findall(r"estimated scf accuracy\s+<\s+(" + _FLOAT + ")", text)
    out["scf_accuracy"] = [float(a) for a in acc]
    out["pairs"] = [
        (int(i), int(j), float(d), float(v))
        for i, j, d, v in re.findall(
            r"^\s+(\d+)\s+(\d+)\s+(" + _FLOAT + r")\s+V =\s+(" + _FLOAT + ")", text, re.M
        )
    ]
    out.update(_structure(text, out["nat"]))
    m = re.search(r"PWSCF\s+:\s+(.+?)CPU\s+(.+?)WALL", text)
    out["cpu_s"] = _time_seconds(m.group(1)) if m else None
    out["wall_s"] = _time_seconds(m.group(2)) if m else None
    out["job_done"] = done
    return out


def _structure(text: str, nat: int) -> dict:
    """``labels`` (species label per atom), ``cell_bohr`` (rows a1..a3) and ``positions_bohr``
    of the run's header (the input geometry; an scf run keeps it), or ``None`` each if the
    header does not hold them (an older or trimmed output)."""
    none = {"labels": None, "cell_bohr": None, "positions_bohr": None}
    m = re.search(r"lattice parameter \(alat\)\s+=\s+(" + _FLOAT + r")\s+a\.u\.", text)
    axes = re.findall(
        r"^\s+a\([123]\) = \(\s*(" + (r"(?:" + _FLOAT + r")\s+") * 3 + r")\)", text, re.M
    )
    tau = re.findall(
        r"^\s+\d+\s+(\S+)\s+tau\(\s*\d+\) = \(\s*((?:" + _FLOAT + r"\s+){3})\)", text, re.M
    )
    if not m or len(axes) < 3 or len(tau) < nat:
        return none
    alat = float(m.group(1))
    cell = np.array([[float(x) for x in a.split()] for a in axes[:3]]) * alat
    pos = np.array([[float(x) for x in t.split()] for _, t in tau[:nat]]) * alat
    return {"labels": [lab for lab, _ in tau[:nat]], "cell_bohr": cell, "positions_bohr": pos}


def parse_occup(text: str, *, nat: int, nspin: int = 2, ldim: int = 5) -> np.ndarray:
    """``<prefix>.save/occup.txt`` of a ``lda_plus_u_kind=2`` run -> float64 array.

    Shape ``[nspin, nat, n_neigh, ldim, ldim]``; element ``[s, I, v, m1, m2]`` is
    <c+_{I m1 s} c_{J m2 s}> with ``v = 0`` the on-site block and ``v >= 1`` the neighbours of
    ``I`` in increasing supercell index (the order of pw.x's pair table). Imaginary parts must be
    zero (collinear runs).
    """
    pairs = re.findall(r"\(\s*(" + _FLOAT + r")\s*,\s*(" + _FLOAT + r")\s*\)", text)
    stripped = re.sub(r"\(\s*" + _FLOAT + r"\s*,\s*" + _FLOAT + r"\s*\)", "", text)
    if stripped.strip() or not pairs:
        raise ValueError("occup.txt: unexpected content (not a list of complex numbers)")
    block = ldim * ldim * nat * nspin
    if len(pairs) % block:
        raise ValueError(
            f"occup.txt: {len(pairs)} values is not a multiple of {block} "
            f"(ldim^2*nat*nspin); file truncated?"
        )
    flat = " ".join(a for p in pairs for a in p).replace("D", "E").replace("d", "e")
    vals = np.array(flat.split(), dtype=np.float64).reshape(-1, 2)  # one C-level conversion
    if np.abs(vals[:, 1]).max() > 1e-8:
        raise ValueError("occup.txt: nonzero imaginary parts (noncollinear run not supported)")
    n_neigh = len(pairs) // block
    # Column-major Fortran nsg(a, b, viz, na, is) read in C order gives [is, na, viz, b, a];
    # pw.x's first index a runs over the *neighbour's* orbitals (checked on Mn-O blocks: only
    # 3 of its 5 values are used), so this is [is, na, viz, m(central), m(neighbour)].
    return vals[:, 0].reshape(nspin, nat, n_neigh, ldim, ldim)


def parse_hubbard_parameters_dat(text: str) -> dict:
    """hp.x ``<prefix>.Hubbard_parameters.dat`` -> {"U": {site: U_eV}, "V": [(i, j, d_bohr, V)]}.

    ``U`` keys are 1-based sites; ``V`` rows are every printed pair (3x3x3 supercell index j),
    the on-site rows (distance 0) included.
    """
    if "Hubbard U parameters" not in text:
        raise ValueError("Hubbard_parameters.dat: 'Hubbard U parameters' header not found")
    u = {}
    head = text.split("Hubbard U parameters")[1].split("=---")[0]
    for m in re.finditer(
        r"^\s+(\d+)\s+\d+\s+\S+\s+-?\d+\s+\d+\s+\S+\s+(" + _FLOAT + ")", head, re.M
    ):
        u[int(m.group(1))] = float(m.group(2))
    if not u:
        raise ValueError("Hubbard_parameters.dat: no U rows")
    v = []
    if "Hubbard V parameters" in text:
        tail = text.split("Hubbard V parameters")[1].split("=---")[0]
        if "Distance" not in tail:
            raise ValueError("Hubbard_parameters.dat: V table truncated")
        row = r"^\s+(\d+)\s+\S+\s+(\d+)\s+\S+\s+(" + _FLOAT + r")\s+(" + _FLOAT + r")\s*$"
        v = [(int(a), int(b), float(c), float(d)) for a, b, c, d in re.findall(row, tail, re.M)]
        onsite = {i for i, j, _, _ in v if i == j}
        if not v or not set(u) <= onsite:
            raise ValueError("Hubbard_parameters.dat: V table truncated (on-site rows missing)")
    return {"U": u, "V": v}


def parse_parameters_out(text: str) -> list[tuple[int, int, float]]:
    """hp.x ``parameters.out`` -> ``[(i, j, V_eV)]`` (each maps to ``Hubbard_V(i,j,1)``)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].lstrip().startswith("# Atom 1"):
        raise ValueError("parameters.out: '# Atom 1  Atom 2  Hubbard V (eV)' header not found")
    rows = []
    for ln in lines[1:]:
        parts = ln.split()
        if len(parts) != 3:
            raise ValueError(f"parameters.out: malformed line {ln.strip()!r}")
        try:
            rows.append((int(parts[0]), int(parts[1]), _ffloat(parts[2])))
        except ValueError:
            raise ValueError(f"parameters.out: malformed line {ln.strip()!r}") from None
    if not rows:
        raise ValueError("parameters.out: no parameter lines")
    return rows


def parse_hp_output(text: str) -> dict:
    """hp.x stdout -> dict(converged, cpu_s, wall_s, n_q, last=(atom, q, iter), reason)."""
    if "Program HP" not in text:
        raise ValueError("hp.x output: 'Program HP' header not found (not a hp.x stdout)")
    its = re.findall(r"atom #\s*(\d+)\s+q point #\s*(\d+)\s+iter #\s*(\d+)", text)
    last = tuple(int(x) for x in its[-1]) if its else None
    m = re.search(r"Number of q in the star\s*=\s*(\d+)", text)
    nq = re.findall(r"Calculation for q #\s*(\d+)", text)
    out = {"last": last, "n_q_calcs": len(nq), "converged": False, "reason": None}
    out["n_q_star"] = int(m.group(1)) if m else None
    m = re.findall(r"HP\s+:\s+(.+?)CPU\s+(.+?)WALL", text)
    out["cpu_s"] = _time_seconds(m[-1][0]) if m else None
    out["wall_s"] = _time_seconds(m[-1][1]) if m else None
    crash = re.search(r"Fortran runtime error: (.+)", text)
    if "Convergence has not been reached" in text or "not converged" in text.lower():
        out["reason"] = f"hp.x chi not converged (atom, q, iter) = {last}"
    elif crash and "Post-processing calculation of Hubbard parameters" in text:
        # every (atom, q) converged, then the chi read-back failed (seen: FeO at -3 % strain,
        # 'Bad real number' in hp_postproc reading <prefix>.chi.dat)
        out["reason"] = f"hp.x crashed in post-processing: {crash.group(1).strip()}"
    elif crash:
        out["reason"] = f"hp.x crashed at (atom, q, iter) = {last}: {crash.group(1).strip()}"
    elif stop := re.search(r"Error in routine (\S+) \(\s*-?\d+\):\s*\n\s*(\S[^\n]*)", text):
        # QE's errore, e.g. the NSCF of a perturbation: "cdiaghg: S matrix not positive definite"
        out["reason"] = f"hp.x stopped at (atom, q, iter) = {last}: {stop[1]}: {stop[2].strip()}"
    elif "JOB DONE" not in text:
        out["reason"] = f"hp.x output truncated/stopped at (atom, q, iter) = {last}"
    else:
        out["converged"] = True
    return out


def occupation_blocks(occ: np.ndarray, pairs: list[tuple]) -> dict:
    """Split :func:`parse_occup`'s array into on-site and inter-site blocks.

    ``pairs`` is pw.x's pair table (``parse_pw_output(...)["pairs"]``). Returns
    ``{"onsite": {i: [nspin, 5, 5]}, "intersite": {(i, j): [nspin, 5, 5]}}`` (1-based ``i``,
    supercell ``j``; p atoms use the leading 3x3 sub-blocks).
    """
    nspin, nat, n_neigh = occ.shape[:3]
    out: dict = {"onsite": {}, "intersite": {}}
    for i in range(1, nat + 1):
        # pw.x stores atom i's blocks in increasing supercell index of the partner, the atom
        # itself included: a home-cell neighbour j < i comes *before* the on-site block (seen
        # in rattled cells, where pairs like O4-Mn1 are listed; checked: symmetric, trace 2.66)
        partners = sorted({j for a, j, *_ in pairs if a == i} | {i})
        if len(partners) > n_neigh:
            raise ValueError(
                f"occup.txt: atom {i} has {len(partners) - 1} pairs in pw.x output but only "
                f"{n_neigh - 1} neighbour blocks"
            )
        for v, j in enumerate(partners):
            if j == i:
                out["onsite"][i] = occ[:, i - 1, v]
            else:
                out["intersite"][(i, j)] = occ[:, i - 1, v]
    return out


def parse_hubbard_card(text: str) -> tuple[str, list[tuple[int, int, float]]]:
    """QE >= 7.1 ``HUBBARD`` card / hp.x ``HUBBARD.dat`` -> (projector, [(i, j, V_eV)]).

    Only the ``V label-manifold label-manifold i j value`` form (DFT+U+V) is accepted, since
    plain ``U label-manifold value`` lines carry no atom index.
    """
    lines = [ln.split("!")[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines or not lines[0].upper().startswith("HUBBARD"):
        raise ValueError("HUBBARD card: 'HUBBARD {projector}' header not found")
    projector = lines[0].split(None, 1)[1].strip("{}() \t") if " " in lines[0] else "atomic"
    rows = []
    for ln in lines[1:]:
        parts = ln.split()
        if parts[0] != "V" or len(parts) != 6:
            raise ValueError(f"HUBBARD card: unsupported line {ln!r} (expected 'V a-m b-m i j v')")
        rows.append((int(parts[3]), int(parts[4]), _ffloat(parts[5])))
    if not rows:
        raise ValueError("HUBBARD card: no parameter lines")
    return projector, rows
