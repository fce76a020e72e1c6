"""The ML self-consistent DFT+U+V loop: pw.x run -> model U/V -> next pw.x input, until stable.

Replaces the pw.x -> hp.x cycle (hp.x: hours) by pw.x -> :class:`HubbardUV` (seconds). The
user decides how pw.x runs through `run_pw(input_file, workdir) -> output_file`
(:func:`zoo.hubbard.run_pw_local` is a ready one: ``nice mpirun -np N pw.x -nk P``). Layout::

    <workdir>/iter00/pw.in        input written with the iteration's parameters
    <workdir>/iter00/run.json     pw.x output path and wall time (written once run_pw returned)
    <workdir>/iter00/occup.txt    copy of <outdir>/<prefix>.save/occup.txt
    <workdir>/iter00/result.json  the finished iteration (written last, atomically)
    <workdir>/loop.json           summary of the whole loop

An iteration with ``result.json`` is reused, never rerun (its ``pw.in`` must be the one the
loop would write now, else ValueError); one with only ``run.json`` is predicted again from its
pw.x output; anything else is run again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from .._io import atomic_write_json, atomic_write_text
from ._kernel import KernelModel
from ._predict import HubbardUV
from ._prediction import HubbardPrediction, PairKey
from ._pw_local import RunPw
from ._run import check_elements
from .dft import inputs
from .dft.parsers import RY_TO_EV, parse_pw_output
from .dft.structures import TRANSITION_METALS, from_ase

Params = list[tuple[int, int, float]]
SYNTAX_QE = {"qe6": (6, 7), "qe7": (7, 1)}


class HubbardLoopError(RuntimeError):
    """A pw.x run of the loop failed or the model's prediction from it is unusable;
    ``iteration`` and ``path`` say which and where."""

    def __init__(self, iteration: int, path: Path, message: str):
        super().__init__(f"iteration {iteration}: {message} ({path})")
        self.iteration, self.path = iteration, Path(path)


@dataclasses.dataclass(frozen=True)
class LoopResult:
    """Outcome of :func:`self_consistent_hubbard`.

    ``parameters``: ``[(i, j_supercell, eV)]`` predicted from the last pw.x run (the input of
    the next run); ``U``/``V`` the predicted values (eV) by site / ``(i, j, image)`` pair;
    ``history``: one dict per iteration: ``U_in`` (used), ``U``/``V`` (predicted from that
    run; keys ``"i"``/``"i-j-n1,n2,n3"``), ``max_change_ev``, ``energy_ry``/``energy_ev``,
    ``pw_wall_s`` (around `run_pw`), ``pw_reported_wall_s``, ``pw_scf_steps``, ``predict_s``,
    ``reused`` (True: read back from a finished iteration); ``prediction``: the last one.
    """

    converged: bool
    parameters: Params
    U: dict[int, float]
    V: dict[PairKey, float]
    history: list[dict[str, Any]]
    prediction: HubbardPrediction
    workdir: Path

    def hubbard_card(self, syntax: str = "qe7") -> str:
        """The final parameters as QE input text (see :meth:`HubbardPrediction.hubbard_card`)."""
        return self.prediction.hubbard_card(syntax)


def self_consistent_hubbard(
    model: HubbardUV,
    structure: Mapping[str, Any] | Any,
    hubbard: Mapping[str, float] | Sequence[tuple[int, int, float]],
    run_pw: RunPw,
    *,
    workdir: str | Path,
    pseudos: Mapping[str, str],
    pseudo_dir: str | Path,
    pw_settings: Mapping[str, Any] | None = None,
    tol: float = 0.01,
    max_iter: int = 10,
    syntax: str = "qe6",
    prefix: str = "pwscf",
    keep_outdir: bool = False,
    max_abs_ev: float = 20.0,
    mixing: float = 1.0,
) -> LoopResult:
    """Alternate pw.x runs and `model` predictions until U and V change by less than `tol`.

    **Arguments:**

    - `model`: the :class:`HubbardUV` predicting U (TM d sites) and V (p-d pairs).
    - `structure`: ``{"symbols", "cell", "positions" (Angstrom), "spins"}`` as in
      :mod:`zoo.hubbard.dft.structures`, or an ``ase.Atoms`` (spins: signs of its initial
      magnetic moments). Reordered Hubbard atoms first (TM, ligands, others).
    - `hubbard`: the starting guess: ``{"Ni": 4.0}`` (U of each TM in eV; ligand U and
      first-shell TM-ligand V switched on at 1e-8) or ``[(i, j_supercell, eV)]`` in QE indices
      (then `structure` must already be in that order).
    - `run_pw`: ``run_pw(input_file, workdir) -> pw.x stdout path``; QE's outdir is
      ``<workdir>/out``. See :func:`run_pw_local`.
    - `workdir`: one ``iter<k>`` directory per iteration; rerunning resumes.
    - `pseudos`, `pseudo_dir`, `pw_settings`: as :func:`zoo.hubbard.dft.inputs.pw_input`
      (defaults ``inputs.DEFAULT_PW``).
    - `tol`: convergence threshold (eV) on the largest change of a predicted U or V between
      the values a run used and the values predicted from it.
    - `max_iter`: number of pw.x runs at most; not converged by then -> ``converged=False``.
    - `syntax`: ``"qe6"`` (``Hubbard_V`` in ``&system``, QE <= 7.0) or ``"qe7"`` (``HUBBARD``
      card, QE >= 7.1).
    - `keep_outdir`: keep each iteration's QE outdir (wavefunctions); deleted by default.
    - `mixing`: the next run uses ``old + mixing * (predicted - old)`` (1: the prediction;
      lower it when U/V oscillate between iterations; parameters that were only switched on
      (1e-8) take the prediction). Convergence is judged on the
      predicted change whatever the mixing.
    - `max_abs_ev`: a predicted U or V beyond +-this (eV) stops the loop (an extrapolating
      model would otherwise hand pw.x an absurd Hamiltonian).

    A kernel model answers only runs whose U_in / V_in lie within the values of its training
    rows of that species (:meth:`KernelModel.param_ranges`): a starting guess outside is a
    ValueError before any pw.x run, and a prediction outside (the next run's input) stops the
    loop with :class:`HubbardLoopError` before pw.x runs on it.

    **Returns:** a :class:`LoopResult`. Raises :class:`HubbardLoopError` when a pw.x run did not
    converge or left no readable output / occup.txt, ValueError on bad arguments (checked before
    any pw.x run, including elements the model was not trained on).
    """
    if not isinstance(model, HubbardUV):
        raise ValueError(f"model: expected a HubbardUV, got {type(model).__name__}")
    if not callable(run_pw):
        raise ValueError("run_pw: expected a callable run_pw(input_file, workdir) -> output")
    if not (isinstance(tol, int | float) and tol > 0):
        raise ValueError(f"tol: expected a positive number of eV, got {tol!r}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter: expected an int >= 1, got {max_iter!r}")
    if not (isinstance(max_abs_ev, int | float) and max_abs_ev > 0):
        raise ValueError(f"max_abs_ev: expected a positive number of eV, got {max_abs_ev!r}")
    if not (isinstance(mixing, int | float) and 0 < mixing <= 1):
        raise ValueError(f"mixing: expected a number in (0, 1], got {mixing!r}")
    if syntax not in SYNTAX_QE:
        raise ValueError(f"syntax: expected 'qe6' (QE <= 7.0) or 'qe7' (QE >= 7.1), got {syntax!r}")
    st, params = _start(structure, hubbard)
    _check_species(model, st)
    why = _range_problem(model, st, params)
    if why is not None:
        raise ValueError(f"hubbard: {why}")
    labels = inputs.species_labels(st)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    def pw_text(params: Params, d: Path) -> str:
        return inputs.pw_input(
            st, params, pseudos=dict(pseudos), pseudo_dir=str(pseudo_dir), prefix=prefix,
            outdir=str(d / "out"), settings=dict(pw_settings or {}),
            qe_version=SYNTAX_QE[syntax],
        )  # fmt: skip

    pw_text(params, workdir / "iter00")  # bad pseudos/settings fail before any run
    history: list[dict[str, Any]] = []
    converged, pred, model_sha = False, None, _model_sha(model)
    for k in range(max_iter):
        d = workdir / f"iter{k:02d}"
        text = pw_text(params, d)
        rec, pred = _finished(d, text, model_sha), None
        if rec is None:
            rec, pred = _iteration(
                model, run_pw, d, k, text, params, labels, prefix, keep_outdir, max_abs_ev
            )
            saved = {**rec, "model_sha256": model_sha}
            saved.pop("reused")
            atomic_write_json(d / "result.json", saved)
        history.append({key: v for key, v in rec.items() if key != "parameters_out"})
        params_in = params
        predicted = [(int(i), int(j), float(v)) for i, j, v in rec["parameters_out"]]
        if rec["max_change_ev"] < tol:
            converged = True
            break
        params = _mix(params_in, predicted, mixing)
        why = _range_problem(model, st, params) if k + 1 < max_iter else None
        if why is not None:
            raise HubbardLoopError(k, d, f"next pw.x input: {why}; not run")
    if pred is None:  # last iteration reused: its prediction again from the kept files
        out = Path(rec["output"])
        if not out.is_file():
            raise HubbardLoopError(k, out, "pw.x output of a finished iteration was removed")
        pred = _finish(model.predict(out, occup=d / "occup.txt", labels=labels), params_in)
    result = LoopResult(
        converged=converged, parameters=predicted, U=dict(pred.U), V=dict(pred.V),
        history=history, prediction=pred, workdir=workdir,
    )  # fmt: skip
    atomic_write_json(
        workdir / "loop.json",
        {"converged": converged, "tol_ev": tol, "max_iter": max_iter, "iterations": len(history),
         "parameters": [list(p) for p in predicted], "history": history},
    )  # fmt: skip
    return result


def _mix(old: Params, new: Params, mixing: float) -> Params:
    # linear mixing of each parameter present in both runs; new pairs enter as predicted
    prev = {(i, j): v for i, j, v in old}
    if mixing == 1:
        return new
    out = []
    for i, j, v in new:
        u = prev.get((i, j), v)
        out.append((i, j, u + mixing * (v - u) if abs(u) >= 1e-6 else v))
    return out


def _start(structure, hubbard) -> tuple[dict, Params]:
    if not isinstance(structure, Mapping):
        if not hasattr(structure, "get_chemical_symbols"):
            raise ValueError("structure: expected a structure dict or an ase.Atoms")
        structure = from_ase(structure)
    st = inputs.canonical_order(dict(structure))
    if isinstance(hubbard, Mapping):
        unknown = sorted(set(hubbard) - set(st["symbols"]))
        if unknown:
            raise ValueError(f"hubbard: element {unknown[0]!r} is not in the structure")
        return st, inputs.initial_hubbard(st, {str(k): float(v) for k, v in hubbard.items()})
    if list(structure["symbols"]) != st["symbols"]:
        raise ValueError(
            "hubbard: (i, j, value) triples need the structure in QE order (Hubbard atoms "
            f"first: {st['symbols']}); reorder it or pass {{element: U}}"
        )
    try:
        params = [(int(i), int(j), float(v)) for i, j, v in hubbard]
    except (TypeError, ValueError) as err:
        raise ValueError(f"hubbard: expected (i, j, value) triples ({err})") from None
    if not params:
        raise ValueError("hubbard: empty parameter list")
    return st, params


def _check_species(model: HubbardUV, st: dict) -> None:
    # fail before pw.x runs for hours on an element the model would refuse afterwards
    tms = sorted({s for s in st["symbols"] if s in TRANSITION_METALS})
    check_elements(model.u_model.config, tms, "U", "structure")
    ligands = {s for s in st["symbols"] if inputs.is_ligand(s)}
    if ligands:
        check_elements(model.v_model.config, sorted(set(tms) | ligands), "V", "structure")


def _range_problem(model: HubbardUV, st: dict, params: Params) -> str | None:
    """Why the first TM U or ligand-TM V of `params` lies outside the kernel model's
    training range of that input (:meth:`KernelModel.param_problem`), or None."""
    symbols, nat = st["symbols"], len(st["symbols"])
    for i, j, v in params:
        a, b = symbols[i - 1], symbols[inputs.supercell_atom(j, nat)[0]]
        if i == j and a in TRANSITION_METALS:
            part, key, what = model.u_model, a, f"U of site {i} ({a})"
        elif {a in TRANSITION_METALS, b in TRANSITION_METALS} == {True, False}:
            tm, ligand = (a, b) if a in TRANSITION_METALS else (b, a)
            if not inputs.is_ligand(ligand):
                continue
            part, key, what = model.v_model, f"{ligand}-{tm}", f"V of ({i}, {j}) ({a}-{b})"
        else:
            continue  # ligand U, TM-TM V: not predicted, not checked
        why = part.param_problem(key, v) if isinstance(part, KernelModel) else None
        if why is not None:
            return f"{what}: {why}"
    return None


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _model_sha(model: HubbardUV) -> str:
    h = hashlib.sha256(json.dumps(model.config, sort_keys=True, default=str).encode())
    for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)):
        h.update(np.asarray(leaf).tobytes())
    return h.hexdigest()


def _finished(d: Path, text: str, model_sha: str) -> dict | None:
    path = d / "result.json"
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    if rec.get("pw_in_sha256") != _sha(text):
        raise ValueError(
            f"workdir: {d} holds a finished iteration with another pw.x input (other structure, "
            "settings, parameters or a moved workdir); use a fresh workdir"
        )
    if rec.get("model_sha256") != model_sha:
        raise ValueError(
            f"workdir: {d} was predicted by another model (other weights); use a fresh workdir"
        )
    rec.pop("model_sha256")
    return {**rec, "reused": True}


def _iteration(model, run_pw, d, k, text, params, labels, prefix, keep_outdir, max_abs_ev):
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "pw.in", text)
    run = _load_run(d, text)
    if run is None:
        (d / "occup.txt").unlink(missing_ok=True)  # from an interrupted earlier attempt
        t0 = time.perf_counter()
        out = run_pw(d / "pw.in", d)
        wall = time.perf_counter() - t0
        if not isinstance(out, str | Path):
            raise ValueError(f"run_pw: must return the pw.x output path, got {type(out).__name__}")
        run = {"output": str(Path(out).resolve()), "wall_s": wall, "pw_in_sha256": _sha(text)}
        atomic_write_json(d / "run.json", run)
    out = Path(run["output"])
    if not out.is_file():
        raise HubbardLoopError(k, out, "run_pw returned a pw.x output path that does not exist")
    text_out = out.read_text(errors="replace")
    try:
        pw = parse_pw_output(text_out)
    except ValueError as err:
        m = re.search(r"Error in routine\s+(.+?):?\s*\n\s*(.+?)\n", text_out)
        why = f"; {m.group(1).strip()}: {m.group(2).strip()}" if m else ""
        raise HubbardLoopError(k, out, f"pw.x failed: {err}{why}") from None
    if not pw["converged"]:
        raise HubbardLoopError(
            k, out, f"pw.x SCF did not converge after {pw['n_iter']} steps; loop stopped "
            "(lower mixing_beta or raise electron_maxstep, then use a fresh workdir)",
        )  # fmt: skip
    if pw["nat"] != len(labels):
        raise HubbardLoopError(
            k, out, f"pw.x ran {pw['nat']} atoms, the structure has {len(labels)}"
        )
    occ = d / "occup.txt"
    if not occ.is_file():
        src = [d / "out" / f"{prefix}.save" / "occup.txt", out.parent / "occup.txt"]
        found = next((p for p in src if p.is_file()), None)
        if found is None:
            raise HubbardLoopError(
                k, src[0], "pw.x wrote no occup.txt (needs lda_plus_u_kind = 2 and outdir = "
                "<workdir>/out)",
            )  # fmt: skip
        atomic_write_text(occ, found.read_text())
    t0 = time.perf_counter()
    pred = _finish(model.predict(out, occup=occ, labels=labels), params)
    predict_s = time.perf_counter() - t0
    used = {(i, j): v for i, j, v in params}
    for name, values in (("U", pred.U), ("V", pred.V)):
        for key, v in values.items():
            if not (np.isfinite(v) and abs(v) <= max_abs_ev):
                raise HubbardLoopError(
                    k, out, f"the model predicted {name}{key} = {v:.4g} eV, outside "
                    f"+-{max_abs_ev} eV (an extrapolation?); not passed on to pw.x",
                )  # fmt: skip
    change = 0.0
    for key, j in pred.sc_index.items():
        new = pred.U.get(key[0]) if key[0] == key[1] and key[2] == (0, 0, 0) else pred.V.get(key)
        if new is not None:
            change = max(change, abs(new - used.get((key[0], j), pred.param_in[key])))
    u_in = {i: used.get((i, i), pred.param_in[(i, i, (0, 0, 0))]) for i in pred.U}
    rec = {
        "iteration": k, "dir": d.name, "pw_in_sha256": _sha(text), "output": str(out),
        "energy_ry": pw["energy_ry"],
        "energy_ev": None if pw["energy_ry"] is None else pw["energy_ry"] * RY_TO_EV,
        "pw_wall_s": run["wall_s"], "pw_scf_steps": pw["n_iter"],
        "pw_reported_wall_s": pw["wall_s"], "predict_s": predict_s,
        "max_change_ev": change, "U_in": {str(i): v for i, v in u_in.items()},
        **{key: v for key, v in pred.as_dict().items() if key in ("U", "V")},
        "parameters_out": [
            [i, j, v if abs(v) >= 1e-6 else inputs.ACTIVATE] for i, j, v in pred.parameters()
        ],
    }  # fmt: skip
    if not keep_outdir:
        shutil.rmtree(d / "out", ignore_errors=True)
    return {**rec, "reused": False}, pred


def _load_run(d: Path, text: str) -> dict | None:
    # pw.x finished but the process died before result.json: predict again, don't rerun pw.x
    path = d / "run.json"
    if not path.is_file():
        return None
    run = json.loads(path.read_text())
    if run.get("pw_in_sha256") != _sha(text) or not Path(run.get("output", "")).is_file():
        return None
    return run


def _finish(pred: HubbardPrediction, params: Params) -> HubbardPrediction:
    """`pred` with V(i, j, R) and V(j, i, -R) both set to their mean, and the parameters it
    does not predict (ligand U, d-d V) kept at the values the run used (`params`).

    pw.x refuses two different values for one pair, and the two directions reach the model
    as separate rows (float noise). pw.x prints parameters to 4 decimals: 1e-8 (switched on)
    reads 0.0, and carrying that over would switch the manifold off."""
    used = {(i, j): v for i, j, v in params}
    kept = {key: used.get((key[0], j), pred.param_in[key]) for key, j in pred.sc_index.items()}
    v = dict(pred.V)
    for (i, j, image), val in pred.V.items():
        back = (j, i, tuple(-x for x in image))
        if back in pred.V:
            v[(i, j, image)] = 0.5 * (val + pred.V[back])
    return dataclasses.replace(pred, V=v, param_in=kept)


__all__ = ["HubbardLoopError", "LoopResult", "self_consistent_hubbard"]
