"""An hp.x step split into resumable pieces (QE 6.7 ``perturb_only_atom`` + ``compute_hp``).

A job with ``hp_split`` runs its ``hp<k>`` step as a sequence of hp.x runs, one per call of
``cycle.run_step``, each recorded in ``status["steps"]["hp<k>"]["pieces"]``:

1. ``init``: ``determine_num_pert_only`` (seconds) lists the atoms hp.x perturbs;
2. ``a<i>``: one run per perturbed atom ``i`` (``perturb_only_atom(i)``), each writing
   ``<outdir>/HP/<prefix>.chi.pert_<i>.dat`` (QE 6.7), copied to ``hp<k>/pieces/a<i>/`` when
   every q converged;
3. ``collect``: ``compute_hp`` in ``hp<k>/`` on exactly those files, writing the same outputs
   as an unsplit run (``hp.out``, ``Hubbard_parameters.dat``, ``parameters.out``); checked with
   QE 6.7 on FM NiO: the same U and V as one unsplit hp.x run (``tests/hubbard/test_dft_qe.py``).

A job with ``hp_q_per_piece`` = n (stored in the ``init`` piece, so a step keeps the split it
started with) also splits each perturbed atom over its q points (``start_q``/``last_q``):

- ``a<i>q1``: q = Gamma only; its output gives the atom's q grid (hp.x 6.7 cannot list it
  without computing, and symmetry makes it depend on the atom);
- ``a<i>q<s>-<l>``: q points s..l (at most n), each writing ``<prefix>.dns.pert_<i>.q_<iq>.dat``
  (response occupations of one q), copied to ``hp<k>/pieces/<name>/``;
- ``a<i>``: ``sum_pertq`` on those files (staged into ``<outdir>/HP`` after checking that each
  names atom i and the q point of the grid) gives atom i's chi column as above; checked with
  QE 6.7 on FM NiO (one q per piece): the same U and V as one unsplit run.

Every piece starts from an empty ``<outdir>/HP``, so an interrupted piece leaves nothing that a
later one reads, and an interruption loses at most one piece. A failed piece is retried with
the job's fallback settings; pieces computed with other settings than the collecting run's
(other than the mixing factor, which does not change the converged chi) are never merged.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from . import inputs, parsers
from .runner import mpi_cmd, run_command, save_status, write_text_atomic

PREFIX = "pwscf"
# Settings that change the converged response: must agree between pieces and collecting run.
MERGE_KEYS = ("nq", "conv_thr_chi", "num_neigh")


def perturbed_atoms(text: str) -> list[int]:
    """1-based atom indices from hp.x's "List of N atoms which will be perturbed" block."""
    m = re.search(r"List of\s+(\d+)\s+atoms which will be perturbed[^\n]*\n\s*\n", text)
    if m is None:
        m1 = re.search(r"Atom which will be perturbed[^\n]*\n\s*\n\s*(\d+)", text)
        if m1 is None:
            raise ValueError("hp.x output: no list of perturbed atoms")
        return [int(m1.group(1))]
    n = int(m.group(1))
    rows = text[m.end() :].splitlines()[:n]
    atoms = [int(r.split()[0]) for r in rows if r.split() and r.split()[0].isdigit()]
    if len(atoms) != n:
        raise ValueError(f"hp.x output: expected {n} perturbed atoms, read {len(atoms)}")
    return atoms


def piece_names(piece_state: dict) -> list[str]:
    """Run order of the pieces known so far (``init`` first, ``collect`` last)."""
    init = piece_state.get("init", {})
    if init.get("atoms") is None:
        return ["init"]
    names = ["init"]
    for i in init["atoms"]:
        if init.get("q_per_piece"):
            nqs = piece_state.get(f"a{i}q1", {}).get("nqs")
            names += q_piece_names(i, nqs, init["q_per_piece"])
        names.append(f"a{i}")
    return [*names, "collect"]


def q_piece_names(atom: int, nqs: int | None, per_piece: int) -> list[str]:
    """``a<i>q1`` (q = Gamma), then ranges ``a<i>q<s>-<l>`` of at most ``per_piece`` q points
    over q = 2..``nqs`` (unknown until ``a<i>q1`` has run); a single q is ``a<i>q<s>``."""
    names, start = [f"a{atom}q1"], 2
    while nqs is not None and start <= nqs:
        last = min(start + per_piece - 1, nqs)
        names.append(f"a{atom}q{start}" + (f"-{last}" if last > start else ""))
        start = last + 1
    return names


def q_range(name: str) -> tuple[int, int, int] | None:
    """(atom, start_q, last_q) of a q piece name, None for any other piece."""
    m = re.fullmatch(r"a(\d+)q(\d+)(?:-(\d+))?", name)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or m.group(2))


def q_grid(text: str) -> list[tuple[float, float, float]]:
    """The perturbed atom's q points (alat-scaled Cartesian) from hp.x's "grid of q-points"."""
    m = re.search(r"The grid of q-points \([\d,\s]+\)\s*\(\s*(\d+) q-points\s*\)", text)
    if m is None:
        raise ValueError("hp.x output: no 'grid of q-points' table")
    rows = text[m.end() :].splitlines()[2 : 2 + int(m.group(1))]
    grid = [tuple(float(x) for x in r.split()[1:4]) for r in rows]
    if len(grid) != int(m.group(1)):
        raise ValueError(f"hp.x output: expected {m.group(1)} q points, read {len(grid)}")
    return grid


def run_piece(job, jobdir, status, step, sdir, outdir, attempt, np, nice, hp_exe):
    """Run the next piece of ``step``; ``(ok, info)`` like ``cycle._run_hp``.

    ``info["partial"]`` is True while pieces remain; the last (collecting) piece returns the
    step's info (CPU and wall times summed over all pieces).
    """
    from .cycle import hp_settings

    state = status["steps"][step].setdefault("pieces", {})
    hp = hp_settings(job, attempt)
    for name in piece_names(state)[1:-1]:  # computed with other settings: redo, never merge
        used = state.get(name, {}).get("hp_settings", {})
        if state.get(name, {}).get("state") == "done" and _mismatch(used, hp):
            state[name] = {"state": "pending", "reason": f"other {_mismatch(used, hp)}"}
    name = next(n for n in piece_names(state) if state.get(n, {}).get("state") != "done")
    q = q_range(name)
    pdir = sdir if name == "collect" else sdir / "pieces" / name
    if name != "collect":
        shutil.rmtree(pdir, ignore_errors=True)
        pdir.mkdir(parents=True)
    shutil.rmtree(outdir / "HP", ignore_errors=True)  # never reuse a partial response
    state[name] = {"state": "running", "attempt": attempt}
    save_status(jobdir, status)
    if name == "init":
        extra = {"determine_num_pert_only": True}
    elif name == "collect":
        extra = {"compute_hp": True}
        _stage_chi_files(state, sdir, outdir, hp)
    elif q is not None:
        extra = {"perturb_only_atom": q[0], "start_q": q[1], "last_q": q[2]}
    elif state["init"].get("q_per_piece"):
        extra = {"perturb_only_atom": int(name[1:]), "sum_pertq": True}
        _stage_dns_files(state, int(name[1:]), sdir, outdir, hp)
    else:
        extra = {"perturb_only_atom": int(name[1:])}
    write_text_atomic(
        pdir / "hp.in",
        inputs.hp_input(prefix=PREFIX, outdir=str(outdir), settings={**hp, **extra}),
    )
    rc, wall = run_command(
        mpi_cmd(hp_exe, np), cwd=pdir, stdin=pdir / "hp.in", stdout=pdir / "hp.out", nice=nice
    )
    text = (pdir / "hp.out").read_text(errors="replace")
    res = parsers.parse_hp_output(text)
    if q is None and name not in ("init", "collect") and _atom_done(text, outdir):
        res = {**res, "converged": True}
    if q is not None and _postprocessing_reached(text):  # q = Gamma was the atom's only q
        res = {**res, "converged": True}
    if not res["converged"]:
        state[name]["state"] = "failed"
        return False, {"reason": f"piece {name}: {res['reason'] or f'hp.x rc={rc}'}"}
    info = {"state": "done", "wall_s": wall, "cpu_s": res["cpu_s"], "hp_settings": hp}
    if name == "init":
        info["atoms"] = perturbed_atoms(text)
        if job.get("hp_q_per_piece"):
            info["q_per_piece"] = int(job["hp_q_per_piece"])
    elif q is not None:
        try:
            info.update(_keep_dns_files(state, name, q, text, outdir, pdir))
        except ValueError as err:
            state[name]["state"] = "failed"
            return False, {"reason": f"piece {name}: {err}"}
    elif name != "collect":
        chi = sorted((outdir / "HP").glob(f"{PREFIX}.chi.*.dat"))
        if not chi:
            state[name]["state"] = "failed"
            return False, {"reason": f"piece {name}: hp.x wrote no {PREFIX}.chi.*.dat"}
        for f in chi:
            shutil.copy(f, pdir / f.name)
    state[name] = info
    if name != "collect":
        return True, {"partial": True}
    dat = sdir / f"{PREFIX}.Hubbard_parameters.dat"
    if not dat.exists() or not (sdir / "parameters.out").exists():
        return False, {"reason": f"piece collect: hp.x rc={rc}: no Hubbard_parameters.dat"}
    parsers.parse_hubbard_parameters_dat(dat.read_text())
    done = [v for v in state.values() if v.get("state") == "done"]
    return True, {
        "wall_s": sum(v["wall_s"] for v in done),
        "cpu_s": sum(v.get("cpu_s") or 0.0 for v in done),
        "hp_settings": hp,
        "rc": rc,
    }


def _stage_chi_files(state: dict, sdir: Path, outdir: Path, hp: dict) -> None:
    """Copy the converged pieces' chi files into ``<outdir>/HP`` for the collecting run."""
    (outdir / "HP").mkdir(parents=True)
    for name in piece_names(state)[1:-1]:
        if state[name].get("state") != "done" or _mismatch(state[name]["hp_settings"], hp):
            raise ValueError(f"piece {name}: not done with the collecting run's settings")
        for f in (sdir / "pieces" / name).glob(f"{PREFIX}.chi.*.dat"):
            shutil.copy(f, outdir / "HP" / f.name)


def _keep_dns_files(state: dict, name: str, q: tuple, text: str, outdir: Path, pdir: Path):
    """Copy the range's response files to ``pdir``; the q grid must be the atom's (``a<i>q1``)."""
    atom, start, last = q
    grid = q_grid(text)
    ref = grid if start == 1 else state[f"a{atom}q1"]["q_points"]
    if len(grid) != len(ref) or not np.allclose(grid, ref, atol=1e-6):
        raise ValueError(f"q grid differs from piece a{atom}q1's ({len(grid)} vs {len(ref)} q)")
    if last > len(grid):
        raise ValueError(f"last_q = {last} > {len(grid)} q points of atom {atom}")
    for iq in range(start, last + 1):
        fname = f"{PREFIX}.dns.pert_{atom}.q_{iq}.dat"
        found = [p for p in (outdir / "HP" / fname, outdir / fname) if p.exists()]
        if not found:
            raise ValueError(f"hp.x wrote no {fname}")
        shutil.copy(found[0], pdir / fname)
    return {"nqs": len(grid), "q_points": [list(x) for x in grid]} if start == 1 else {}


def _stage_dns_files(state: dict, atom: int, sdir: Path, outdir: Path, hp: dict) -> None:
    """Put atom ``atom``'s per-q response files into ``<outdir>/HP`` for its ``sum_pertq`` run,
    after checking each file's header (atom, q point) and the pieces' settings."""
    grid = state[f"a{atom}q1"]["q_points"]
    (outdir / "HP").mkdir(parents=True)
    for name in q_piece_names(atom, len(grid), state["init"]["q_per_piece"]):
        if state.get(name, {}).get("state") != "done" or _mismatch(state[name]["hp_settings"], hp):
            raise ValueError(f"piece {name}: not done with the summing run's settings")
        _, start, last = q_range(name)
        for iq in range(start, last + 1):
            f = sdir / "pieces" / name / f"{PREFIX}.dns.pert_{atom}.q_{iq}.dat"
            try:
                _check_dns_header(f, atom, iq, grid[iq - 1])
            except ValueError as err:  # recompute that piece; the bad file is never summed
                state[name] = {"state": "pending", "reason": str(err)}
                raise ValueError(f"piece {name}: {err}") from None
            shutil.copy(f, outdir / "HP" / f.name)


def _check_dns_header(path: Path, atom: int, iq: int, xq) -> None:
    """Refuse a response file of another atom or q point (``hp_write_dnsq``'s two header lines)."""
    if not path.exists():
        raise ValueError(f"{path.name}: missing")
    head = path.read_text(errors="replace").splitlines()[:2]
    m_at = re.match(r"\s*Perturbed atom #\s*(\d+)", head[0] if head else "")
    m_q = re.match(r"\s*q #\s*(\d+)\s*=\s*\(([^)]*)\)", head[1] if len(head) > 1 else "")
    if m_at is None or m_q is None:
        raise ValueError(f"{path.name}: not an hp.x response file (header)")
    got = [float(x) for x in m_q.group(2).split()]
    if int(m_at.group(1)) != atom or int(m_q.group(1)) != iq or not np.allclose(got, xq, atol=1e-6):
        raise ValueError(
            f"{path.name}: belongs to atom {m_at.group(1)}, q #{m_q.group(1)} = {got}, "
            f"expected atom {atom}, q #{iq} = {list(xq)}"
        )


def _postprocessing_reached(text: str) -> bool:
    """Every (atom, q) of the run converged and hp.x went on to the Hubbard parameters."""
    return (
        "Post-processing calculation of Hubbard parameters" in text
        and "Convergence has not been reached" not in text
    )


def _atom_done(text: str, outdir: Path) -> bool:
    """A ``perturb_only_atom`` run of QE 6.7 writes its chi column for every q and then stops in
    the post-processing ("Missing file with the chi matrix", no JOB DONE): its column counts
    when every q converged and the file is there."""
    return _postprocessing_reached(text) and any((outdir / "HP").glob(f"{PREFIX}.chi.*.dat"))


def _mismatch(used: dict, hp: dict) -> str | None:
    """First of MERGE_KEYS on which two hp.x settings differ (None: mergeable)."""
    return next((k for k in MERGE_KEYS if used.get(k) != hp.get(k)), None)
