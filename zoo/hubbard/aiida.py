"""AiiDA bridge: hp.x results of ``aiida-hubbard`` as label rows, predictions as Hubbard data.

Users who run Quantum ESPRESSO through AiiDA (``aiida-quantumespresso`` for pw.x,
``aiida-hubbard`` for hp.x) keep their provenance graph:

- :func:`label_rows`: the ``hubbard_structure`` output of a finished ``HpCalculation`` (the
  hp.x U and V) and the pw.x run it perturbed (its stdout and ``occup.txt``, e.g. from the
  ``retrieved`` folder of the ``PwCalculation``; add ``out/aiida.save/occup.txt`` to its
  ``ADDITIONAL_RETRIEVE_LIST``) -> rows in the format of ``data/hubbard/labels.jsonl``, for
  :func:`zoo.data.hubbard.u_dataset` / ``v_dataset`` and :meth:`KernelModel.extend`.
- :func:`to_hubbard_structure` / :func:`predict`: a prediction as an unstored
  ``HubbardStructureData`` with the sites of the run's structure: the U and V of the next
  ``PwCalculation``.

Needs the AiiDA packages (not a dependency of zoo; see :data:`REQUIREMENTS`); importing this
module without them raises one ImportError saying what to install. They are no zoo extra: every
aiida-core 2.6-2.9 caps click below 8.3 and huggingface-hub 2.4 needs click >= 8.4.2, so pip
cannot resolve both in one install; installed after zoo (pip warns, click goes to 8.2), zoo's
loading and this bridge work (tested with aiida-core 2.9.4, aiida-quantumespresso 5.1.0,
aiida-hubbard 0.7.0).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ._run import Run, element_of, read_run
from .dft.dataset import BOHR, DIM, ORBITAL_ORDER
from .dft.inputs import MANIFOLD
from .dft.structures import TRANSITION_METALS, structure_id

#: the AiiDA packages this bridge is written and tested against
REQUIREMENTS = ("aiida-core>=2.8,<3", "aiida-quantumespresso>=5,<6", "aiida-hubbard>=0.7,<0.8")

try:
    from aiida import orm
    from aiida_quantumespresso.common.hubbard import Hubbard
    from aiida_quantumespresso.data.hubbard_structure import HubbardStructureData
except ImportError as err:  # one clear error instead of a missing-module trace
    raise ImportError(
        "zoo.hubbard.aiida needs the AiiDA packages: pip install "
        + " ".join(f'"{r}"' for r in REQUIREMENTS)
        + f" ({err})"
    ) from err

#: largest difference (Angstrom) between a position of the AiiDA structure and the pw.x run's
POSITION_TOL = 1e-4
#: largest difference (Bohr) between a pair distance from the AiiDA translation and pw.x's
DISTANCE_TOL = 1e-3


def _read(source, name: str, folder: Path) -> Path:
    """A file path for `source`: a path, an AiiDA ``SinglefileData``, or a ``FolderData``
    (``retrieved``) holding exactly one file called `name` (at any depth)."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    if isinstance(source, orm.SinglefileData):
        text = source.get_content()
    elif isinstance(source, orm.FolderData):
        found = [
            f"{root}/{f}".lstrip("./") if str(root) != "." else f
            for root, _, files in source.base.repository.walk()
            for f in files
            if f == name
        ]
        if len(found) != 1:
            raise ValueError(
                f"{name}: expected one file of that name in FolderData<{source.pk}>, found "
                f"{found or 'none'} (retrieve it: ADDITIONAL_RETRIEVE_LIST of the PwCalculation)"
            )
        text = source.base.repository.get_object_content(found[0])
    else:
        raise ValueError(
            f"{name}: expected a path, SinglefileData or FolderData, got {type(source).__name__}"
        )
    path = folder / name
    path.write_text(text)
    return path


def read_aiida_run(pw_output, occup) -> Run:
    """The pw.x run of `pw_output` (stdout) and `occup` (its ``occup.txt``), each a path, a
    ``SinglefileData`` or the ``retrieved`` ``FolderData``, with :func:`zoo.hubbard._run.read_run`'s
    checks (converged DFT+U+V run, occupations finite and in [0, 1], ``occup.txt`` of this run)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = _read(pw_output, "aiida.out", Path(tmp))
        return read_run(out, _read(occup, "occup.txt", Path(tmp)))


def _check_sites(structure, run: Run) -> None:
    """`structure` (AiiDA) has the run's atoms in the run's order, at the same positions."""
    symbols = [s.kind_name for s in structure.sites]
    elements = [structure.get_kind(k).symbol for k in symbols]
    expected = [element_of(lab) for lab in run.labels]
    if elements != expected:
        raise ValueError(
            f"structure: elements {elements} do not match the pw.x run's {expected} (same atoms "
            "in the same order needed)"
        )
    if run.positions is None:
        raise ValueError("pw_output: the pw.x output prints no positions to check the structure")
    pos = np.array([s.position for s in structure.sites]) / BOHR
    off = float(np.abs(pos - run.positions).max()) * BOHR
    if not off <= POSITION_TOL:
        raise ValueError(
            f"structure: positions differ from the pw.x run's by up to {off:.3g} A: another "
            "structure"
        )


def _checked_calculation(hubbard_out) -> None:
    """A ``hubbard_structure`` made by a calculation must come from a finished, complete one."""
    creator = hubbard_out.creator
    if creator is None:
        return  # built by hand: nothing recorded to check
    if not creator.is_finished_ok:
        raise ValueError(
            f"hubbard_out: its {creator.process_label}<{creator.pk}> did not finish ok "
            f"(exit status {creator.exit_status}): its values are no labels"
        )
    card = (
        creator.inputs.parameters.get_dict().get("INPUTHP", {})
        if "parameters" in creator.inputs
        else {}
    )
    if any(k.lower().startswith(("perturb_only_atom", "start_q", "last_q")) for k in card):
        raise ValueError(
            f"hubbard_out: {creator.process_label}<{creator.pk}> computed part of the "
            "perturbations (perturb_only_atom / start_q / last_q): not a label set"
        )


def label_rows(
    hubbard_out, pw_output, occup, *, sc_path: str, iteration: int = 0, material: str = "",
    hubbard_in=None,
) -> list[dict]:  # fmt: skip
    """Label rows (the format of ``data/hubbard/labels.jsonl``) of one hp.x step.

    **Arguments:** `hubbard_out` the ``HubbardStructureData`` hp.x produced (output
    ``hubbard_structure`` of a finished, complete ``HpCalculation``); `pw_output` and `occup`
    the stdout and ``occup.txt`` of the pw.x ground state it perturbed (paths, ``SinglefileData``
    or the ``retrieved`` ``FolderData``); `sc_path`, `iteration` and `material` name the rows.
    Every hp.x parameter becomes a row: U of a site (atom 1 = atom 2), V of a pair from the
    transition-metal side, ``param_in`` the value pw.x used: from `hubbard_in` (the
    ``HubbardStructureData`` of the pw.x run) when given, else from pw.x's pair table, which
    prints 4 decimals (an activation value of 1e-8 eV reads 0).
    """
    if not isinstance(hubbard_out, HubbardStructureData):
        raise ValueError(f"hubbard_out: expected HubbardStructureData, got {type(hubbard_out)}")
    if not isinstance(sc_path, str) or not sc_path or "/" in sc_path:
        raise ValueError(f"sc_path: expected a non-empty name without '/', got {sc_path!r}")
    if not isinstance(iteration, int) or iteration < 0:
        raise ValueError(f"iteration: expected an integer >= 0, got {iteration!r}")
    _checked_calculation(hubbard_out)
    run = read_aiida_run(pw_output, occup)
    _check_sites(hubbard_out, run)
    exact = {}
    if hubbard_in is not None:
        if not isinstance(hubbard_in, HubbardStructureData):
            raise ValueError(f"hubbard_in: expected HubbardStructureData, got {type(hubbard_in)}")
        _check_sites(hubbard_in, run)
        for q in hubbard_in.hubbard.parameters:
            t = tuple(q.translation)
            exact[(q.atom_index + 1, q.neighbour_index + 1, t)] = q.value
            exact[(q.neighbour_index + 1, q.atom_index + 1, tuple(-x for x in t))] = q.value
    prep, nat = run.prepared, len(run.labels)
    symbols = [element_of(lab) for lab in run.labels]
    cell = np.asarray(hubbard_out.cell, float)
    positions = np.array([s.position for s in hubbard_out.sites])
    spins = [int(np.sign(round(float(np.trace(prep.onsite[i + 1][0] - prep.onsite[i + 1][1])), 1)))
             if i + 1 in prep.onsite else 0 for i in range(nat)]  # fmt: skip
    structure = {"symbols": symbols, "cell": cell.tolist(), "positions": positions.tolist(),
                 "spins": spins}  # fmt: skip
    common = {
        "material": material or "".join(sorted(set(symbols))),
        "structure_id": structure_id(structure),
        "structure": structure,
        "sc_path": sc_path,
        "iteration": iteration,
        "purpose": "aiida",
        "n_atoms_uc": nat,
        "orbital_order": ORBITAL_ORDER,
        "code": "QE pw.x+hp.x (AiiDA)",
        "settings": {"projector": hubbard_out.hubbard.projectors},
    }
    rows = []
    for p in hubbard_out.hubbard.parameters:
        i, a, image = p.atom_index, p.neighbour_index, tuple(p.translation)
        onsite = i == a and image == (0, 0, 0)
        for el, man in ((symbols[i], p.atom_manifold), (symbols[a], p.neighbour_manifold)):
            if MANIFOLD.get(el) != man:
                raise ValueError(
                    f"hubbard_out: parameter {p.to_tuple()}: manifold {man!r} of {el}, the "
                    f"pw.x run uses {MANIFOLD.get(el)!r}"
                )
        if not onsite and symbols[i] not in TRANSITION_METALS:  # rows hold V from the TM side
            i, a, image = a, i, tuple(-t for t in image)
        key = (i + 1, a + 1, image)
        if key not in prep.keyed:
            raise ValueError(
                f"hubbard_out: parameter {p.to_tuple()} is not in the pw.x run's Hubbard pair "
                "table: its occupations were not computed"
            )
        j, dist, p_in = prep.keyed[key]
        geo = np.linalg.norm(positions[a] + np.asarray(image) @ cell - positions[i]) / BOHR
        if abs(geo - dist) > DISTANCE_TOL:
            raise ValueError(
                f"hubbard_out: parameter {p.to_tuple()}: distance {geo:.4f} bohr from the "
                f"structure, {dist:.4f} in the pw.x table (translation convention?)"
            )
        if not np.isfinite(p.value):
            raise ValueError(f"hubbard_out: parameter {p.to_tuple()} is not finite")
        m1, m2 = MANIFOLD[symbols[i]], MANIFOLD[symbols[a]]
        kind = "U" if onsite else "V"
        rows.append({
            **common,
            "id": f"{sc_path}/it{iteration}/{kind}/{i + 1}" + ("" if onsite else f"-{j}"),
            "param_type": kind,
            "atom_1_idx": i + 1, "atom_2_idx": a + 1, "atom_2_sc_idx": j,
            "atom_2_image": list(image),
            "atom_1_element": symbols[i], "atom_2_element": symbols[a],
            "atom_1_manifold": m1, "atom_2_manifold": m2,
            "dist_bohr": 0.0 if onsite else float(dist),
            "param_in": float(exact.get(key, p_in)), "param_out": float(p.value),
            "atom_1_occs": prep.onsite[i + 1][:, : DIM[m1], : DIM[m1]].tolist(),
            "atom_2_occs": prep.onsite[a + 1][:, : DIM[m2], : DIM[m2]].tolist(),
            "intersite_occs": None,
        })  # fmt: skip
    return sorted(rows, key=lambda r: r["id"])


def to_hubbard_structure(prediction, structure) -> HubbardStructureData:
    """An unstored ``HubbardStructureData``: the sites of `structure` (AiiDA ``StructureData``
    or ``HubbardStructureData``, the atoms of the predicted run in its order) with the
    parameters of `prediction` (a :class:`HubbardPrediction`: predicted U and V, the run's
    values where none is predicted), in its projector, Dudarev formulation."""
    if not isinstance(structure, orm.StructureData):
        raise ValueError(f"structure: expected an AiiDA StructureData, got {type(structure)}")
    labels = prediction.labels
    elements = [structure.get_kind(s.kind_name).symbol for s in structure.sites]
    expected = [element_of(labels[i]) for i in sorted(labels)]
    if elements != expected:
        raise ValueError(
            f"structure: elements {elements} are not the predicted run's {expected} (same "
            "atoms in the same order needed)"
        )
    images = {(key[0], j): tuple(key[2]) for key, j in prediction.sc_index.items()}
    params = []
    for i, j, value in prediction.parameters():
        a, image = (j - 1) % len(elements), images[(i, j)]
        kind = "Ueff" if a == i - 1 and image == (0, 0, 0) else "V"
        params.append(
            (i - 1, MANIFOLD[elements[i - 1]], a, MANIFOLD[elements[a]], float(value), image, kind)
        )
    hubbard = Hubbard.from_list(params, projectors=prediction.projector, formulation="dudarev")
    return HubbardStructureData.from_structure(structure, hubbard=hubbard)


def predict(model, pw_output, occup, structure) -> HubbardStructureData:
    """`model` (``zoo.load("hubbard-uv")``, or a U or V model) on a pw.x run given as AiiDA
    nodes or paths (see :func:`read_aiida_run`), as :func:`to_hubbard_structure` of `structure`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = _read(pw_output, "aiida.out", Path(tmp))
        prediction = model.predict(out, occup=_read(occup, "occup.txt", Path(tmp)))
    return to_hubbard_structure(prediction, structure)


__all__ = ["REQUIREMENTS", "label_rows", "predict", "read_aiida_run", "to_hubbard_structure"]
