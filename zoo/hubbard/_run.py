"""Reading one DFT+U+V pw.x run for the Hubbard models, with the checks that keep answers honest.

Reading uses :mod:`zoo.hubbard.dft.parsers` (pw.x stdout for the pair table, U/V used, status
and geometry; ``occup.txt`` for full-precision occupations). Atoms without a Hubbard manifold
(Li, P, ...) are in pw.x's table with their on-site row only; they are left out here, so the
models answer for every Hubbard site and pair of any cell. Refused, each with one error: an
``occup.txt`` whose on-site traces and moments differ from the ones the pw.x output prints
(the occupations of another run), and on-site occupations with NaN or a diagonal outside [0, 1].
"""

import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase.data import chemical_symbols
from jaxtyping import Float

from ._prediction import PairKey
from .dft.inputs import MANIFOLD, supercell_atom
from .dft.parsers import _FLOAT, occupation_blocks, parse_occup, parse_pw_output

#: QE versions whose pw.x stdout and lda_plus_u_kind=2 occup.txt layout are supported
SUPPORTED_QE = ("6.7", "6.8", "7.0", "7.1", "7.2", "7.3", "7.4")
#: largest difference (electrons) between an occup.txt trace or moment and the pw.x output's
#: (printed to 7 decimals; the occupations of another run differ by 1e-2 and more)
TRACE_TOL = 1e-4
#: rounding slack on the [0, 1] bounds of an occupation
OCCUPATION_TOL = 1e-4


class Prepared(NamedTuple):
    """On-site blocks ``{site: [2, 5, 5]}``, ``{site: element}`` and the Hubbard pairs
    ``{(i, j, image): (supercell index, distance, V_in)}`` of a run (Hubbard atoms only)."""

    onsite: dict[int, np.ndarray]
    elements: dict[int, str]
    keyed: dict[PairKey, tuple[int, float, float]]


class Run(NamedTuple):
    """A read run: species `labels`, its :class:`Prepared` sites and pairs, `positions`
    ``(nat, 3)`` and `cell` (Bohr, rows a1..a3; None if the output does not print them)."""

    labels: list[str]
    prepared: Prepared
    positions: Float[np.ndarray, "nat 3"] | None
    cell: Float[np.ndarray, "3 3"] | None


def element_of(label: str) -> str:
    """Element of a QE species label (``Mn1`` -> ``Mn``, ``O`` -> ``O``, ``Fe_up`` -> ``Fe``)."""
    m = re.match(r"([A-Z][a-z]?)", label)
    if m and m.group(1) in chemical_symbols:
        return m.group(1)
    if m and m.group(1)[0] in chemical_symbols:
        return m.group(1)[0]
    raise ValueError(f"species label {label!r} does not start with an element symbol")


def read_run(pw_output, occup=None, labels=None) -> Run:
    """The run whose pw.x stdout is `pw_output` (occupations from `occup`, default
    ``occup.txt`` beside it), with one clear error for a missing, unsupported, unconverged or
    non-DFT+U+V output, missing labels, bad occupations (see :func:`prepare`) or an
    ``occup.txt`` of another run."""
    for name, value in (("pw_output", pw_output), ("occup", occup)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"{name}: expected a file path, got {type(value).__name__}")
    if isinstance(labels, str):  # a string would be read one character per atom
        raise ValueError(f"labels: expected a list of species labels, got the string {labels!r}")
    path = Path(pw_output)
    if not path.is_file():
        raise ValueError(f"pw_output: no such file {str(path)!r}")
    text = path.read_text(errors="replace")
    pw = parse_pw_output(text)
    version = re.match(r"\d+\.\d+", pw["version"] or "")
    if version is None or version.group(0) not in SUPPORTED_QE:
        raise ValueError(
            f"{path.name}: QE version {pw['version']!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_QE)}; tested on 6.7)"
        )
    if not pw["converged"]:
        raise ValueError(f"{path.name}: pw.x did not converge; no prediction from it")
    if not pw["pairs"]:
        raise ValueError(
            f"{path.name}: no Hubbard pair table: not a DFT+U+V (lda_plus_u_kind=2) run"
        )
    labels = labels if labels is not None else pw["labels"]
    if labels is None or len(labels) != pw["nat"]:
        raise ValueError(f"labels: need one species label per atom ({pw['nat']}), got {labels!r}")
    occ_path = Path(occup) if occup is not None else path.parent / "occup.txt"
    if not occ_path.is_file():
        raise ValueError(
            f"occup: {str(occ_path)!r} not found; pass occup=<outdir>/<prefix>.save/occup.txt"
        )
    occ = parse_occup(occ_path.read_text(), nat=pw["nat"])
    prepared = prepare(list(labels), pw["pairs"], occ)
    _check_against_output(text, prepared.onsite, f"{occ_path.name} vs {path.name}")
    return Run(list(labels), prepared, pw["positions_bohr"], pw["cell_bohr"])


def printed_moments(text: str) -> dict[int, tuple[float, float]]:
    """``{atom: (trace, moment)}`` of the on-site occupations as pw.x prints them last
    (``atom  1   Tr[ns(na)]= ...`` / ``Mag[ns(na)]= ...``: the converged ones), 1-based atoms."""
    num = r"\s+(\d+)\s+{}\s*=\s*(" + _FLOAT + ")"
    traces = dict(re.findall(r"atom" + num.format(r"Tr\[ns\(na\)\]"), text))
    moments = dict(re.findall(r"atom" + num.format(r"Mag\[ns\(na\)\]"), text))
    return {int(a): (float(t), float(moments[a])) for a, t in traces.items() if a in moments}


def _check_against_output(text: str, onsite: dict[int, np.ndarray], what: str) -> None:
    printed = printed_moments(text)
    if not printed:
        raise ValueError(
            f"{what}: the pw.x output prints no on-site traces ('Tr[ns(na)]'), so occup.txt "
            "cannot be checked to belong to it; pass the complete pw.x stdout"
        )
    if not set(onsite) <= set(printed):
        missing = sorted(set(onsite) - set(printed))
        raise ValueError(f"{what}: the pw.x output prints no trace of Hubbard atom {missing[0]}")
    for atom, (trace, moment) in sorted(printed.items()):
        if atom not in onsite:
            raise ValueError(
                f"{what}: atom {atom} is a Hubbard atom in the output, not in occup.txt"
            )
        up, down = (float(np.trace(onsite[atom][s])) for s in (0, 1))
        if not (abs(up + down - trace) <= TRACE_TOL and abs(up - down - moment) <= TRACE_TOL):
            raise ValueError(
                f"{what}: atom {atom} has trace {up + down:.4f} and moment {up - down:.4f} in "
                f"occup.txt but {trace:.4f} and {moment:.4f} in the pw.x output: the "
                "occupations belong to another run"
            )


def prepare(labels: list[str], table, occupations: np.ndarray) -> Prepared:
    """The Hubbard sites and pairs of a run (atoms without a Hubbard manifold left out), with
    the on-site occupations checked: finite, diagonal within [0, 1]."""
    nat = len(labels)
    if occupations.ndim != 5 or occupations.shape[:2] != (2, nat):
        raise ValueError(
            f"occupations: expected shape (2, {nat}, n, 5, 5), got {occupations.shape}"
        )
    elements = {i + 1: element_of(lab) for i, lab in enumerate(labels)}
    onsite = occupation_blocks(occupations, table)["onsite"]
    keyed = {}
    for i, j, dist, v in table:
        a, image = supercell_atom(j, nat)
        if elements[i] in MANIFOLD and elements[a + 1] in MANIFOLD:
            keyed[(i, a + 1, image)] = (j, dist, v)
    hubbard = {i for i, _, _ in keyed}
    for i in sorted(hubbard):
        _check_occupations(onsite[i], i, labels[i - 1], MANIFOLD[elements[i]])
    return Prepared({i: onsite[i] for i in hubbard}, elements, keyed)


def _check_occupations(block: np.ndarray, site: int, label: str, manifold: str) -> None:
    n = 3 if manifold.endswith("p") else 5  # a p block is the leading 3x3 of the 5x5
    diag = np.diagonal(block[:, :n, :n], axis1=-2, axis2=-1)
    if not np.isfinite(block).all():
        raise ValueError(f"occupations of site {site} ({label}): NaN or infinite values")
    if not ((diag >= -OCCUPATION_TOL).all() and (diag <= 1 + OCCUPATION_TOL).all()):
        raise ValueError(
            f"occupations of site {site} ({label}): diagonal {np.round(diag, 4).tolist()} "
            "outside [0, 1] (not the occupations of a pw.x run)"
        )


def classify(prep: Prepared, pairs=None) -> tuple[list, list, dict]:
    """``(U sites, V pairs, {key: why not predicted})`` of a run's Hubbard pairs: U for d
    manifolds, V for p-d pairs (only `pairs`, if given)."""
    skipped: dict[PairKey, str] = {}
    u_sites, v_pairs = [], []
    for key in prep.keyed:
        i, b, image = key
        ei, eb = prep.elements[i], prep.elements[b]
        mi, mb = MANIFOLD[ei], MANIFOLD[eb]
        if i == b and image == (0, 0, 0):
            if mi.endswith("d"):
                u_sites.append(i)
            else:
                skipped[key] = f"{ei} {mi}: the U model covers d manifolds only"
        elif pairs is not None and key not in pairs:
            skipped[key] = "not requested"
        elif {mi[-1], mb[-1]} == {"p", "d"}:
            v_pairs.append(key)
        else:
            skipped[key] = f"{ei}-{eb} ({mi}-{mb}): V model covers p-d pairs only"
    return u_sites, v_pairs, skipped


def check_elements(config: dict, elements, part: str, where: str) -> None:
    """ValueError naming the first of `elements` outside the training data of the `part`
    ("U" or "V") model whose config is `config` (its ``species``)."""
    species = config["species"]
    for el in elements:
        if el not in species:
            raise ValueError(
                f"{where}: element {el!r} is not among the {part} model's species {species} "
                "(outside its training data; use hp.x for it)"
            )


__all__ = ["SUPPORTED_QE", "Run", "Prepared", "element_of", "read_run", "prepare", "classify"]
