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

Every piece starts from an empty ``<outdir>/HP``, so an interrupted piece leaves nothing that a
later one reads, and an interruption loses at most one piece. A failed piece is retried with
the job's fallback settings; pieces computed with other settings than the collecting run's
(other than the mixing factor, which does not change the converged chi) are never merged.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

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
    atoms = piece_state.get("init", {}).get("atoms")
    if atoms is None:
        return ["init"]
    return ["init", *[f"a{i}" for i in atoms], "collect"]


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
    if name not in ("init", "collect") and _atom_done(text, outdir):
        res = {**res, "converged": True}
    if not res["converged"]:
        state[name]["state"] = "failed"
        return False, {"reason": f"piece {name}: {res['reason'] or f'hp.x rc={rc}'}"}
    info = {"state": "done", "wall_s": wall, "cpu_s": res["cpu_s"], "hp_settings": hp}
    if name == "init":
        info["atoms"] = perturbed_atoms(text)
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


def _atom_done(text: str, outdir: Path) -> bool:
    """A ``perturb_only_atom`` run of QE 6.7 writes its chi column for every q and then stops in
    the post-processing ("Missing file with the chi matrix", no JOB DONE): its column counts
    when every q converged and the file is there."""
    return (
        "Post-processing calculation of Hubbard parameters" in text
        and "Convergence has not been reached" not in text
        and any((outdir / "HP").glob(f"{PREFIX}.chi.*.dat"))
    )


def _mismatch(used: dict, hp: dict) -> str | None:
    """First of MERGE_KEYS on which two hp.x settings differ (None: mergeable)."""
    return next((k for k in MERGE_KEYS if used.get(k) != hp.get(k)), None)
