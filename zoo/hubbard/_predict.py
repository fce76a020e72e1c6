"""``HubbardUV``: both models answering for a whole DFT+U+V pw.x run, and the QE card they imply.

Reading the run uses :mod:`zoo.hubbard.dft.parsers` (pw.x stdout for the pair table, U/V used
and status; ``occup.txt`` for full-precision occupations). Predicted: U of every Hubbard site
with a d manifold, V of every p-d pair of pw.x's pair table. Everything else (U of p
manifolds, d-d V) is reported in ``not_predicted`` and carried over unchanged into the card.
"""

import dataclasses
import re
from pathlib import Path
from typing import Any

import equinox as eqx
import numpy as np
from ase.data import chemical_symbols
from jaxtyping import Float

from ._ensemble import ENSEMBLE_TYPE, HubbardEnsemble
from ._features import intersite_features, onsite_features, pair_vectors
from ._infer import predict_u, predict_v
from ._kernel import KERNEL_TYPE, KernelModel
from ._models import IntersiteModel, OnsiteModel, _zoo_version, param_offset
from .dft.inputs import MANIFOLD, supercell_atom
from .dft.parsers import occupation_blocks, parse_occup, parse_pw_output

UV_TYPE = "hubbard-uv"
#: QE versions whose pw.x stdout and lda_plus_u_kind=2 occup.txt layout are supported
SUPPORTED_QE = ("6.7", "6.8", "7.0", "7.1", "7.2", "7.3", "7.4")
PairKey = tuple[int, int, tuple[int, int, int]]


def element_of(label: str) -> str:
    """Element of a QE species label (``Mn1`` -> ``Mn``, ``O`` -> ``O``, ``Fe_up`` -> ``Fe``)."""
    m = re.match(r"([A-Z][a-z]?)", label)
    if m and m.group(1) in chemical_symbols:
        return m.group(1)
    if m and m.group(1)[0] in chemical_symbols:
        return m.group(1)[0]
    raise ValueError(f"species label {label!r} does not start with an element symbol")


@dataclasses.dataclass(frozen=True)
class HubbardPrediction:
    """Predicted U (per 1-based site) and V (per ``(i, j, image)`` pair), in eV.

    ``labels``/``elements`` per site; ``param_in`` the values pw.x used (same keys, plus the
    not-predicted ones); ``sc_index`` maps a V key to QE's 3x3x3 supercell index j;
    ``not_predicted`` names the parameters left to their input value and why.
    """

    U: dict[int, float]
    V: dict[PairKey, float]
    labels: dict[int, str]
    elements: dict[int, str]
    distances: dict[PairKey, float]
    param_in: dict[PairKey, float]
    sc_index: dict[PairKey, int]
    not_predicted: dict[PairKey, str]
    projector: str = "ortho-atomic"

    def __getitem__(self, key: str) -> dict:
        return {"U": self.U, "V": self.V}[key]

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready keys as strings ``"i"``/``"i-j-n1,n2,n3"``)."""
        name = lambda k: f"{k[0]}-{k[1]}-{','.join(map(str, k[2]))}"  # noqa: E731
        return {
            "U": {str(i): u for i, u in self.U.items()},
            "V": {name(k): v for k, v in self.V.items()},
            "elements": {str(i): e for i, e in self.elements.items()},
            "not_predicted": {name(k): why for k, why in self.not_predicted.items()},
        }

    def parameters(self) -> list[tuple[int, int, float]]:
        """``[(i, j_supercell, eV)]`` for the next run: predictions, else the input values."""
        out = []
        for key, j in sorted(self.sc_index.items(), key=lambda kv: (kv[0][0], kv[1])):
            i = key[0]
            if key[0] == key[1] and key[2] == (0, 0, 0) and i in self.U:
                out.append((i, j, self.U[i]))
            elif key in self.V:
                out.append((i, j, self.V[key]))
            else:
                out.append((i, j, self.param_in[key]))
        return out

    def hubbard_card(self, syntax: str = "qe7") -> str:
        """Text to paste into the next pw.x input.

        ``"qe6"``: ``Hubbard_V(i,j,1) = value`` lines for ``&system`` (QE <= 7.0; also set
        ``lda_plus_u = .true.``, ``lda_plus_u_kind = 2``). ``"qe7"``: the QE >= 7.1
        ``HUBBARD {projector}`` card with ``V label-manifold label-manifold i j value`` lines.
        """
        if syntax not in ("qe6", "qe7"):
            raise ValueError(
                f"syntax must be 'qe6' (QE <= 7.0) or 'qe7' (QE >= 7.1), got {syntax!r}"
            )
        params = self.parameters()
        if syntax == "qe6":
            return "".join(f"Hubbard_V({i},{j},1) = {_value(v, 'd')}\n" for i, j, v in params)
        nat = len(self.labels)
        lines = [f"HUBBARD {{{self.projector}}}"]
        for i, j, v in params:
            a = supercell_atom(j, nat)[0] + 1
            mi = f"{self.labels[i]}-{MANIFOLD[self.elements[i]]}"
            mj = f"{self.labels[a]}-{MANIFOLD[self.elements[a]]}"
            lines.append(f"V {mi} {mj} {i} {j} {_value(v, 'e')}")
        return "\n".join(lines) + "\n"


def _read_run(pw_output, occup, labels) -> tuple:
    """``(labels, pair table, occupations, positions_bohr, cell_bohr)`` of a pw.x run, with one
    clear error for a missing, unsupported, unconverged or non-DFT+U+V output."""
    path = Path(pw_output)
    if not path.is_file():
        raise ValueError(f"pw_output: no such file {str(path)!r}")
    pw = parse_pw_output(path.read_text(errors="replace"))
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
    return list(labels), pw["pairs"], occ, pw["positions_bohr"], pw["cell_bohr"]


def _prepare(labels: list[str], table, occupations: np.ndarray) -> tuple[dict, dict, dict]:
    """``(on-site blocks, elements, {(i, j, image): (sc index, dist, V_in)})`` of a run."""
    nat = len(labels)
    if occupations.ndim != 5 or occupations.shape[:2] != (2, nat):
        raise ValueError(
            f"occupations: expected shape (2, {nat}, n, 5, 5), got {occupations.shape}"
        )
    onsite = occupation_blocks(occupations, table)["onsite"]
    elements = {i + 1: element_of(lab) for i, lab in enumerate(labels)}
    keyed = {}
    for i, j, dist, v in table:
        a, image = supercell_atom(j, nat)
        keyed[(i, a + 1, image)] = (j, dist, v)
    return onsite, elements, keyed


def _classify(keyed: dict, elements: dict, pairs=None) -> tuple[list, list, dict]:
    """``(U sites, V pairs, {key: why not predicted})`` of a run's pair table: U for d
    manifolds, V for p-d pairs (only `pairs`, if given)."""
    skipped: dict[PairKey, str] = {}
    u_sites, v_pairs = [], []
    for key in keyed:
        i, b, image = key
        mi, mb = _manifold(elements[i], i), _manifold(elements[b], b)
        if i == b and image == (0, 0, 0):
            if mi.endswith("d"):
                u_sites.append(i)
            else:
                skipped[key] = f"{elements[i]} {mi}: the U model covers d manifolds only"
        elif pairs is not None and key not in pairs:
            skipped[key] = "not requested"
        elif {mi[-1], mb[-1]} == {"p", "d"}:
            v_pairs.append(key)
        else:
            skipped[key] = f"{elements[i]}-{elements[b]} ({mi}-{mb}): V model covers p-d pairs only"
    return u_sites, v_pairs, skipped


def _labels(values: dict, keys: list, what: str) -> np.ndarray:
    y = np.array([values[k] for k in keys], dtype=np.float64)
    if not (np.isfinite(y).all() and (y > 0).all()):
        raise ValueError(f"{what}: hp.x values must be finite and > 0 eV, got {y.tolist()}")
    return y


def _value(v: float, exponent: str) -> str:
    # pw.x prints V to 4 decimals: a pair active at 1e-8 reads 0.0, but a zero would switch it
    # off (and drop its occupation blocks), so keep it switched on
    return f"{v:.6f}" if abs(v) >= 1e-6 else f"1.0{exponent}-8"


def _manifold(element: str, site: int) -> str:
    if element not in MANIFOLD:
        raise ValueError(f"site {site}: element {element!r} has no known Hubbard manifold")
    return MANIFOLD[element]


class HubbardUV(eqx.Module):
    """The on-site (U) and inter-site (V) models together, for whole pw.x outputs."""

    u_model: OnsiteModel | HubbardEnsemble | KernelModel
    v_model: IntersiteModel | HubbardEnsemble | KernelModel
    config: dict = eqx.field(static=True)

    def __init__(
        self,
        u_model: OnsiteModel | HubbardEnsemble | KernelModel,
        v_model: IntersiteModel | HubbardEnsemble | KernelModel,
    ):
        if u_model.config["l"] != 2:
            raise ValueError("u_model: HubbardUV needs a U model of d manifolds (l=2)")
        self.u_model, self.v_model = u_model, v_model
        self.config = {
            "model_type": UV_TYPE, "zoo_version": _zoo_version(),
            "u": u_model.config, "v": v_model.config,
        }  # fmt: skip

    @classmethod
    def from_config(cls, config: dict) -> "HubbardUV":
        """Both models of the right shapes from a :attr:`config` dict."""
        return cls._build(config, "from_config")

    @classmethod
    def skeleton_from_config(cls, config: dict) -> "HubbardUV":
        """:meth:`from_config` with zero weights (no random draw): for loading weights into."""
        return cls._build(config, "skeleton_from_config")

    @classmethod
    def _build(cls, config: dict, how: str) -> "HubbardUV":
        if not isinstance(config, dict) or config.get("model_type") != UV_TYPE:
            raise ValueError(f"config: expected model_type {UV_TYPE!r}")
        u, v = config["u"], config["v"]
        # either part may be a kernel model or an ensemble of networks (recipes.hubbard_uv)
        other = {ENSEMBLE_TYPE: HubbardEnsemble, KERNEL_TYPE: KernelModel}
        u_cls = other.get(u.get("model_type"), OnsiteModel)
        v_cls = other.get(v.get("model_type"), IntersiteModel)
        return cls(getattr(u_cls, how)(u), getattr(v_cls, how)(v))

    def predict(
        self,
        pw_output: str | Path,
        *,
        occup: str | Path | None = None,
        labels: list[str] | None = None,
        pairs: list[PairKey] | None = None,
    ) -> HubbardPrediction:
        """U and V for the run whose pw.x stdout is `pw_output`.

        **Arguments:**

        - `pw_output`: path of the pw.x stdout (DFT+U+V, ``lda_plus_u_kind = 2``, nspin = 2).
        - `occup`: that run's ``<outdir>/<prefix>.save/occup.txt`` (default: ``occup.txt``
          beside `pw_output`).
        - `labels`: species label of every atom (``["Mn1", "Mn2", "O", "O"]``), when the pw.x
          parser does not provide them.
        - `pairs`: only these V pairs ``(i, j, image)``; ValueError if the run lacks one.
        """
        run = _read_run(pw_output, occup, labels)
        return self.predict_parsed(*run[:3], pairs=pairs, positions=run[3], cell=run[4])

    def extend(
        self,
        pw_output: str | Path,
        U: dict[int, float] | None = None,
        V: dict[PairKey, float] | None = None,
        *,
        occup: str | Path | None = None,
        labels: list[str] | None = None,
    ) -> "HubbardUV":
        """Fine-tune on your own hp.x labels: a new model whose kernel parts also fit the
        U of the sites `U` ``{site: eV}`` and the V of the pairs `V` ``{(i, j, image): eV}``
        (keys as :meth:`predict` returns them) of the run `pw_output` (hp.x computed them on
        that ground state). Same width, ridge and descriptor scaling as the shipped fit;
        ``config["extended_rows"]`` counts the added rows. Only :class:`KernelModel` parts can
        be extended (retrain networks with ``recipes/hubbard_uv.py --data``)."""
        for part, given in (("u_model", U), ("v_model", V)):
            if given and not isinstance(getattr(self, part), KernelModel):
                raise ValueError(f"extend: {part} is not a KernelModel; retrain it with the recipe")
        names, table, occ, positions, cell = _read_run(pw_output, occup, labels)
        onsite, elements, keyed = _prepare(names, table, occ)
        u_model, v_model = self.u_model, self.v_model
        u_sites, v_pairs, _ = _classify(keyed, elements)  # what predict would answer for
        if U:
            sites = list(U)
            for i in sites:
                if i not in u_sites:
                    raise ValueError(f"U: site {i} is not a d-manifold Hubbard site of this run")
            x = self._u_features(sites, elements, onsite, keyed, names)
            u_model = u_model.extend((x,), _labels(U, sites, "U"))
        if V:
            keys = list(V)
            for key in keys:
                if key not in v_pairs:
                    raise ValueError(
                        f"V: pair {key} is not an inter-site p-d pair of this run's table"
                    )
            bonds = self._bonds(keys, positions, cell, len(names))
            feats = self._v_features(keys, elements, onsite, keyed, names, bonds)
            v_model = v_model.extend(feats, _labels(V, keys, "V"))
        return HubbardUV(u_model, v_model)

    def predict_parsed(
        self,
        labels: list[str],
        table: list[tuple[int, int, float, float]],
        occupations: np.ndarray,
        *,
        pairs: list[PairKey] | None = None,
        projector: str = "ortho-atomic",
        positions: Float[np.ndarray, "nat 3"] | None = None,
        cell: Float[np.ndarray, "3 3"] | None = None,
    ) -> HubbardPrediction:
        """As :meth:`predict`, from parsed data: species `labels`, pw.x's pair `table`
        ``[(i, j, dist_bohr, V_eV)]`` and ``parse_occup``'s array ``[2, nat, n_neigh, 5, 5]``;
        `positions` and `cell` (rows a1..a3, same length unit) for a V model that sees bond
        directions (``bond_lmax > 0``), in the Cartesian frame of the occupations."""
        nat = len(labels)
        onsite, elements, keyed = _prepare(labels, table, occupations)
        for key in pairs or []:
            if key not in keyed:
                raise ValueError(f"pairs: V{key} is not in the run's Hubbard pair table")
        u_sites, v_pairs, skipped = _classify(keyed, elements, pairs)
        u_pred = self._predict_u(u_sites, elements, onsite, keyed, labels)
        bonds = self._bonds(v_pairs, positions, cell, nat)
        v_pred = self._predict_v(v_pairs, elements, onsite, keyed, labels, bonds)
        return HubbardPrediction(
            U=u_pred, V=v_pred, labels={i + 1: lab for i, lab in enumerate(labels)},
            elements=elements, distances={k: d for k, (_, d, _) in keyed.items()},
            param_in={k: v for k, (_, _, v) in keyed.items()},
            sc_index={k: j for k, (j, _, _) in keyed.items()}, not_predicted=skipped,
            projector=projector,
        )  # fmt: skip

    def _u_features(self, sites, elements, onsite, keyed, labels) -> np.ndarray:
        """:func:`onsite_features` array ``(n_sites, dim)`` of the U model for `sites`."""
        up = np.stack([onsite[i][0] for i in sites])
        down = np.stack([onsite[i][1] for i in sites])
        u_in = [keyed[(i, i, (0, 0, 0))][2] for i in sites]
        x = onsite_features(
            [elements[i] for i in sites], up, down, u_in,
            species=self.u_model.config["species"],
            labels=[f"site {i} ({labels[i - 1]})" for i in sites],
        )  # fmt: skip
        return np.asarray(x.array)

    def _predict_u(self, sites, elements, onsite, keyed, labels) -> dict[int, float]:
        if not sites:
            return {}
        x = self._u_features(sites, elements, onsite, keyed, labels)
        # numpy on the dense form of each layer (`_infer`): no tracing or XLA compilation
        y = predict_u(self.u_model, x)
        names = [f"U of site {i} ({labels[i - 1]})" for i in sites]
        _check_support(self.u_model, (x,), names)
        _check_range(y, x, self.u_model.config, names)
        return {i: float(u) for i, u in zip(sites, np.asarray(y))}

    def _bonds(self, keys, positions, cell, nat) -> np.ndarray | None:
        """``(n_pairs, 3)`` vectors atom i -> atom j (in its image) of V `keys`, or None when
        the V model does not use them (the sign is irrelevant: even harmonics only)."""
        if not keys or not self.v_model.config.get("bond_lmax", 0):
            return None
        if positions is None or cell is None:
            raise ValueError(
                "positions, cell: this V model uses bond directions; pass the structure "
                "(pw.x outputs give it; predict() reads it from the header)"
            )
        if np.shape(positions) != (nat, 3):
            raise ValueError(f"positions: expected shape ({nat}, 3), got {np.shape(positions)}")
        return pair_vectors(positions, cell, keys)

    def _v_features(self, keys, elements, onsite, keyed, labels, bonds) -> tuple:
        """:func:`intersite_features` arrays ``(p_site, d_site, edge)`` of the V pairs `keys`."""
        p_at, d_at = [], []
        for i, b, _ in keys:
            p, d = (i, b) if MANIFOLD[elements[i]].endswith("p") else (b, i)
            p_at.append(p)
            d_at.append(d)
        feats = intersite_features(
            [elements[a] for a in p_at], np.stack([onsite[a][0][:3, :3] for a in p_at]),
            np.stack([onsite[a][1][:3, :3] for a in p_at]),
            [elements[a] for a in d_at], np.stack([onsite[a][0] for a in d_at]),
            np.stack([onsite[a][1] for a in d_at]),
            [keyed[k][1] for k in keys], [keyed[k][2] for k in keys],
            species=self.v_model.config["species"], labels=[f"pair {k}" for k in keys],
            bond=bonds, bond_lmax=self.v_model.config.get("bond_lmax", 0),
        )  # fmt: skip
        return tuple(np.asarray(f.array) for f in feats)

    def _predict_v(self, keys, elements, onsite, keyed, labels, bonds) -> dict[PairKey, float]:
        if not keys:
            return {}
        feats = self._v_features(keys, elements, onsite, keyed, labels, bonds)
        y = predict_v(self.v_model, *feats)
        names = [f"V of pair {k}" for k in keys]
        _check_support(self.v_model, feats, names)
        _check_range(y, feats[2], self.v_model.config, names)
        return {k: float(v) for k, v in zip(keys, np.asarray(y))}

    def hubbard_card(self, pw_output: str | Path, syntax: str = "qe7", **kwargs) -> str:
        """``self.predict(pw_output, **kwargs).hubbard_card(syntax)``."""
        return self.predict(pw_output, **kwargs).hubbard_card(syntax)


def _check_support(model, inputs: tuple, names: list[str]) -> None:
    """A kernel model refuses rows off its training data (:meth:`KernelModel.check_support`);
    the networks have only the label-range guard below."""
    if isinstance(model, KernelModel):
        model.check_support(inputs, names)


#: a prediction farther than this many training-label standard deviations (+ 1 eV) from the
#: training mean is an extrapolation: the tensor-square network is a high-degree polynomial of
#: its inputs and blows up outside the occupations it was trained on (seen: 3.5e4 eV for a
#: strained FeO site whose orbital order differs from the training cells)
RANGE_STDS = 8.0


def _check_range(y: np.ndarray, raw: np.ndarray, config: dict, names: list[str]) -> None:
    """`raw`: the unstandardised input holding the run's parameter (``param_offset``): a
    residual model's training range is that of the change from it."""
    if config.get("input_stats") is None:
        return  # scalers never fit to data (an untrained model): no label range to judge by
    mean, std = config["target_mean"], config["target_std"]
    half = RANGE_STDS * std + 1.0
    change = y - param_offset(config, raw)
    what = "changes from the run's value" if config.get("residual") else "labels"
    bad = [
        (n, float(v), float(c)) for n, v, c in zip(names, y, change) if not abs(c - mean) <= half
    ]
    if bad:
        name, v, c = bad[0]
        raise ValueError(
            f"{name}: predicted {v:.4g} eV, outside the range of the training {what} "
            f"({mean:.2f} +- {half:.2f} eV, here {c:.4g}; {len(bad)} of {len(names)} such "
            "values): this run's occupations are outside what the model was trained on; use "
            "hp.x for it"
        )


__all__ = ["UV_TYPE", "SUPPORTED_QE", "element_of", "HubbardPrediction", "HubbardUV"]
