"""Answering for a whole DFT+U+V pw.x run: ``HubbardUV`` (both models) and one model alone.

Predicted: U of every Hubbard site with a d manifold, V of every p-d pair of pw.x's pair
table (reading and checks: :mod:`zoo.hubbard._run`). Everything else (U of p manifolds, d-d V,
the part a lone U or V model does not cover) is reported in ``not_predicted`` and carried over
unchanged into the card.
"""

from pathlib import Path

import equinox as eqx
import numpy as np
from jaxtyping import Float

from .._hub_mixin import HubMixin
from .._registry import model_class
from ._features import intersite_features, onsite_features, pair_vectors
from ._infer import predict_u, predict_v
from ._kernel import KernelModel
from ._models import INTERSITE_TYPE, ONSITE_TYPE, _zoo_version, param_offset
from ._prediction import HubbardPrediction, PairKey
from ._run import Prepared, classify, prepare, read_run
from .dft.inputs import is_ligand

UV_TYPE = "hubbard-uv"
_PARTS = {ONSITE_TYPE: "U", "onsite": "U", INTERSITE_TYPE: "V", "intersite": "V"}


def part_of(model) -> str:
    """``"U"`` or ``"V"``: what a single Hubbard model (network, ensemble, kernel) predicts."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise ValueError(f"model: expected a Hubbard model, got {type(model).__name__}")
    kind = config.get("kind", config.get("member_type", config.get("model_type")))
    if kind not in _PARTS:
        raise ValueError(f"model: {config.get('model_type')!r} is not a Hubbard U or V model")
    return _PARTS[kind]


class HubbardUV(HubMixin, eqx.Module):
    """The on-site (U) and inter-site (V) models together, for whole pw.x outputs."""

    u_model: eqx.Module
    v_model: eqx.Module
    config: dict = eqx.field(static=True)

    def __init__(self, u_model: eqx.Module, v_model: eqx.Module):
        """`u_model`: an ``OnsiteModel``, ``HubbardEnsemble`` or ``KernelModel`` of U (d
        manifolds); `v_model`: one of V."""
        if part_of(u_model) != "U" or part_of(v_model) != "V":
            raise ValueError("HubbardUV: needs a U model (u_model) and a V model (v_model)")
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
        # each part's class from the package's one model-type table (zoo._registry)
        parts = [getattr(model_class(config[k]["model_type"]), how)(config[k]) for k in "uv"]
        return cls(*parts)

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
          Atoms without a Hubbard manifold (Li, P, ...) are skipped.
        - `occup`: that run's ``<outdir>/<prefix>.save/occup.txt`` (default: ``occup.txt``
          beside `pw_output`); refused if its traces differ from the ones pw.x printed.
        - `labels`: species label of every atom (``["Mn1", "Mn2", "O", "O"]``), when the pw.x
          parser does not provide them.
        - `pairs`: only these V pairs ``(i, j, image)``; ValueError if the run lacks one.
        """
        return predict_run(self.u_model, self.v_model, pw_output, occup, labels, pairs)

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
        run = read_run(pw_output, occup, labels)
        prep = run.prepared
        u_model, v_model = self.u_model, self.v_model
        u_sites, v_pairs, _ = classify(prep)  # what predict would answer for
        if U:
            sites = list(U)
            for i in sites:
                if i not in u_sites:
                    raise ValueError(f"U: site {i} is not a d-manifold Hubbard site of this run")
            x = _u_features(u_model, sites, prep, run.labels)
            u_model = u_model.extend((x,), _labels(U, sites, "U"))
        if V:
            keys = list(V)
            for key in keys:
                if key not in v_pairs:
                    raise ValueError(
                        f"V: pair {key} is not an inter-site p-d pair of this run's table"
                    )
            bonds = pair_bonds(v_model, keys, run.positions, run.cell, len(run.labels))
            feats = _v_features(v_model, keys, prep, run.labels, bonds)
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
        return answer(
            self.u_model, self.v_model, labels, prepare(labels, table, occupations),
            pairs=pairs, projector=projector, positions=positions, cell=cell,
        )  # fmt: skip

    def hubbard_card(self, pw_output: str | Path, syntax: str = "qe7", **kwargs) -> str:
        """``self.predict(pw_output, **kwargs).hubbard_card(syntax)``."""
        return self.predict(pw_output, **kwargs).hubbard_card(syntax)


def predict_part(model, pw_output, *, occup=None, labels=None, pairs=None) -> HubbardPrediction:
    """``model.predict`` of a lone U or V model: its part of :meth:`HubbardUV.predict`."""
    if part_of(model) == "U":
        if model.config["l"] != 2:
            raise ValueError("predict: this U model is for p manifolds (l=1); pw.x runs give d")
        return predict_run(model, None, pw_output, occup, labels, pairs)
    return predict_run(None, model, pw_output, occup, labels, pairs)


def predict_run(u_model, v_model, pw_output, occup, labels, pairs) -> HubbardPrediction:
    """U (with `u_model`) and V (with `v_model`; either may be None) of a pw.x run."""
    run = read_run(pw_output, occup, labels)
    return answer(
        u_model, v_model, run.labels, run.prepared,
        pairs=pairs, positions=run.positions, cell=run.cell,
    )  # fmt: skip


def answer(
    u_model, v_model, labels, prep: Prepared, *, pairs, projector="ortho-atomic",
    positions=None, cell=None,
) -> HubbardPrediction:  # fmt: skip
    """The prediction of a prepared run (see :meth:`HubbardUV.predict_parsed`)."""
    for key in pairs or []:
        if key not in prep.keyed:
            raise ValueError(f"pairs: V{key} is not in the run's Hubbard pair table")
    u_sites, v_pairs, skipped = classify(prep, pairs)
    if u_model is None:
        skipped.update({(i, i, (0, 0, 0)): _ALONE.format("V", "U") for i in u_sites})
        u_sites = []
    if v_model is None:
        skipped.update({key: _ALONE.format("U", "V") for key in v_pairs})
        v_pairs = []
    u_pred = _predict_u(u_model, u_sites, prep, labels)
    bonds = pair_bonds(v_model, v_pairs, positions, cell, len(labels))
    v_pred = _predict_v(v_model, v_pairs, prep, labels, bonds)
    keyed = prep.keyed
    return HubbardPrediction(
        U=u_pred, V=v_pred, labels={i + 1: lab for i, lab in enumerate(labels)},
        elements=prep.elements, distances={k: d for k, (_, d, _) in keyed.items()},
        param_in={k: v for k, (_, _, v) in keyed.items()},
        sc_index={k: j for k, (j, _, _) in keyed.items()}, not_predicted=skipped,
        projector=projector,
    )  # fmt: skip


_ALONE = "a {} model alone: its {} is predicted by zoo.load('hubbard-uv')"


def _labels(values: dict, keys: list, what: str) -> np.ndarray:
    y = np.array([values[k] for k in keys], dtype=np.float64)
    if not (np.isfinite(y).all() and (y > 0).all()):
        raise ValueError(f"{what}: hp.x values must be finite and > 0 eV, got {y.tolist()}")
    return y


def _u_features(model, sites, prep: Prepared, labels) -> np.ndarray:
    """:func:`onsite_features` array ``(n_sites, dim)`` of the U model for `sites`."""
    x = onsite_features(
        [prep.elements[i] for i in sites],
        np.stack([prep.onsite[i][0] for i in sites]),
        np.stack([prep.onsite[i][1] for i in sites]),
        [prep.keyed[(i, i, (0, 0, 0))][2] for i in sites],
        species=model.config["species"],
        labels=[f"site {i} ({labels[i - 1]})" for i in sites],
    )
    return np.asarray(x.array)


def _predict_u(model, sites, prep: Prepared, labels) -> dict[int, float]:
    if not sites:
        return {}
    x = _u_features(model, sites, prep, labels)
    # numpy on the dense form of each layer (`_infer`): no tracing or XLA compilation
    y = predict_u(model, x)
    names = [f"U of site {i} ({labels[i - 1]})" for i in sites]
    _check_support(model, (x,), names)
    _check_range(y, x, model.config, names)
    return {i: float(u) for i, u in zip(sites, np.asarray(y))}


def pair_bonds(model, keys, positions, cell, nat) -> np.ndarray | None:
    """``(n_pairs, 3)`` vectors atom i -> atom j (in its image) of V `keys`, or None when
    the V `model` does not use them (the sign is irrelevant: even harmonics only)."""
    if not keys or not model.config.get("bond_lmax", 0):
        return None
    if positions is None or cell is None:
        raise ValueError(
            "positions, cell: this V model uses bond directions; pass the structure "
            "(pw.x outputs give it; predict() reads it from the header)"
        )
    if np.shape(positions) != (nat, 3):
        raise ValueError(f"positions: expected shape ({nat}, 3), got {np.shape(positions)}")
    return pair_vectors(positions, cell, keys)


def _v_features(model, keys, prep: Prepared, labels, bonds) -> tuple:
    """:func:`intersite_features` arrays ``(p_site, d_site, edge)`` of the V pairs `keys`."""
    els, onsite = prep.elements, prep.onsite
    p_at, d_at = [], []
    for i, b, _ in keys:
        p, d = (i, b) if is_ligand(els[i]) else (b, i)
        p_at.append(p)
        d_at.append(d)
    feats = intersite_features(
        [els[a] for a in p_at], np.stack([onsite[a][0][:3, :3] for a in p_at]),
        np.stack([onsite[a][1][:3, :3] for a in p_at]),
        [els[a] for a in d_at], np.stack([onsite[a][0] for a in d_at]),
        np.stack([onsite[a][1] for a in d_at]),
        [prep.keyed[k][1] for k in keys], [prep.keyed[k][2] for k in keys],
        species=model.config["species"], labels=[f"pair {k}" for k in keys],
        bond=bonds, bond_lmax=model.config.get("bond_lmax", 0),
    )  # fmt: skip
    return tuple(np.asarray(f.array) for f in feats)


def _predict_v(model, keys, prep: Prepared, labels, bonds) -> dict[PairKey, float]:
    if not keys:
        return {}
    feats = _v_features(model, keys, prep, labels, bonds)
    y = predict_v(model, *feats)
    names = [f"V of pair {k}" for k in keys]
    _check_support(model, feats, names)
    _check_range(y, feats[2], model.config, names)
    return {k: float(v) for k, v in zip(keys, np.asarray(y))}


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


__all__ = ["UV_TYPE", "HubbardUV", "part_of", "predict_part"]
