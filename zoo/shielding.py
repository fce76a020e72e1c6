"""`ShieldingModel`: NMR tensors of one nucleus (e.g. Si-29) for users.

A thin wrapper around a :class:`~zoo.model.ResponseModel` with a ``shielding`` head (direct
0e+1e+2e head or the magnetic derivative ``d2E / dmu dB``; the head keeps that name). What the
head predicts is the quantity of the training data. For `si29-shielding` that is VASP's
unreferenced chemical shift tensor (``-sigma`` without core contributions, rising with the
chemical shift; see data/si29/README.md), returned as ``unreferenced_shift``. The config's
``reference`` (``{"slope", "offset"}``, fitted to experimental shifts by
``recipes/si29_reference.py``) maps it to the chemical shift vs TMS,
``delta = slope * raw + offset``, returned by default as ``shift_tensor`` and
``chemical_shift``.

It adds what a user of an NMR model needs: NaN for atoms of other elements, the tensor
analysis of `zoo.nmr` in the shift form (isotropic value, Haeberlen and Herzfeld-Berger
parameters, principal axes, Euler angles), a one-call spectrum, and the input checks of
`zoo._predict` (no atom of the nucleus, an element outside the training set, or, for a model
trained on crystals only, a structure not periodic in all three directions: error).

An ensemble (``config["members"] > 1``: the same architecture trained from other seeds)
predicts the mean of its members, and ``unreferenced_shift_std`` says how much they disagree.

Units: ppm.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import numpy as np

from . import _predict, nmr
from ._hub_mixin import HubMixin
from ._serialization import FORMAT_VERSION
from .irreps import to_irreps
from .model import ResponseModel, make_config

MODEL_TYPE = "shielding"


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[int(z)]


def shielding_config(
    species,
    *,
    backbone: dict | None = None,
    formulation: str = "direct",
    atomic_number: int = 14,
    reference: dict | None = None,
    feature_irreps: str | None = None,
    members: int = 1,
) -> dict:
    """A :class:`ShieldingModel` config with unit normalisation.

    **Arguments:** `species` (atomic numbers), `backbone` (``{"architecture": "nequip" |
    "mace" | "allegro", ...}``, see `zoo.backbones`; default NequIP), `formulation`
    (``"direct"`` or ``"magnetic"``), `atomic_number` of the nucleus, `reference`
    (``{"slope", "offset"}`` or None), `feature_irreps`, `members` (ensemble size). Refit the
    response part's head with `zoo.model.fit_normalization` before training.
    """
    if formulation not in ("direct", "magnetic"):
        raise ValueError(f"formulation must be 'direct' or 'magnetic', got {formulation!r}")
    response = make_config(
        species, ["shielding"], formulation=formulation, backbone=backbone,
        feature_irreps=feature_irreps, acoustic_sum_rule=False,
    )  # fmt: skip
    config = {
        "model_type": MODEL_TYPE,
        "zoo_version": FORMAT_VERSION,
        "atomic_number": int(atomic_number),
        "reference": reference,
        "response": response,
    }
    if members != 1:
        config["members"] = members
    return config


class ShieldingModel(HubMixin, eqx.Module):
    """NMR tensors (the training data's quantity) of the atoms of one element; see the module
    docstring.

    **Arguments** of `__init__`: `config` (from :func:`shielding_config`, or
    ``{"model_type": "shielding", "zoo_version",
    "atomic_number", "reference": {"slope", "offset", ...} or None, "response": <ResponseModel
    config>, "members": 1}``),
    keyword-only `key`. `members` > 1 is an ensemble of that many response models of the same
    config (the first is `response`, the others `others`).
    """

    response: ResponseModel
    others: tuple[ResponseModel, ...]
    config: dict = eqx.field(static=True)

    def __init__(self, config: dict, *, key):
        if not isinstance(config, dict) or config.get("model_type") != MODEL_TYPE:
            got = config.get("model_type") if isinstance(config, dict) else config
            raise ValueError(f"config: model_type must be {MODEL_TYPE!r}, got {got!r}")
        z = config.get("atomic_number")
        if not isinstance(z, int) or not 1 <= z <= 118:
            raise ValueError(f"config: atomic_number must be an int in 1..118, got {z!r}")
        response = config.get("response")
        if not isinstance(response, dict) or "shielding" not in response.get("heads", {}):
            raise ValueError(
                "config: 'response' must be a response-model config with a shielding head"
            )
        ref = config.get("reference")
        if ref is not None:
            try:
                nmr._slope_offset(ref)
            except ValueError as err:
                raise ValueError(f"config: {err}") from None
        n = config.get("members", 1)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"config: members must be an int >= 1, got {n!r}")
        self.config = dict(config)
        keys = jax.random.split(key, n)
        self.response = ResponseModel(response, key=keys[0])
        self.others = tuple(ResponseModel(response, key=k) for k in keys[1:])

    @classmethod
    def from_config(cls, config: dict) -> ShieldingModel:
        """A model of the right shapes (random weights) from a config dict."""
        return cls(config, key=jax.random.key(0))

    @classmethod
    def wrap(
        cls,
        response: ResponseModel | list[ResponseModel],
        atomic_number: int = 14,
        reference: dict | None = None,
    ) -> ShieldingModel:
        """Wrap a trained response model, or a list of them (an ensemble of one config);
        the weights are kept."""
        members = list(response) if isinstance(response, (list, tuple)) else [response]
        if not members:
            raise ValueError("wrap: no response model given")
        if any(m.config != members[0].config for m in members[1:]):
            raise ValueError("wrap: ensemble members must share one config (architecture, data)")
        config = {
            "model_type": MODEL_TYPE,
            "zoo_version": FORMAT_VERSION,
            "atomic_number": int(atomic_number),
            "reference": reference,
            "response": members[0].config,
        }
        if len(members) > 1:
            config["members"] = len(members)
        skeleton = eqx.filter_eval_shape(cls.from_config, config)
        return eqx.tree_at(
            lambda m: (m.response, m.others), skeleton, (members[0], tuple(members[1:]))
        )

    @property
    def members(self) -> tuple[ResponseModel, ...]:
        return (self.response, *self.others)

    @property
    def atomic_number(self) -> int:
        return self.config["atomic_number"]

    @property
    def species(self) -> tuple[int, ...]:
        return self.response.species

    def input_spec(self) -> _predict.InputSpec:
        """What :meth:`predict` accepts (see `zoo._predict`): the response model's species,
        cutoff and domain, and at least one atom of the nucleus per structure."""
        return dataclasses.replace(
            self.response.input_spec(), name="this shielding model", nucleus=self.atomic_number
        )

    def check_inputs(self, structures) -> None:
        """The checks of :meth:`predict` without predicting: errors for inputs it refuses,
        warnings for structures outside the training domain."""
        _predict.check(structures, self.input_spec())

    def raw_output(self, structures, batch_size: int = 8) -> list[np.ndarray]:
        """The head's output `(n_atoms, 3, 3)` ppm (``unreferenced_shift``) of every atom of
        every structure (no masking); of an ensemble, the members' mean."""
        structures, _ = _predict.prepare(structures, self.input_spec())
        return [r["shielding"] for r in self._members_shielding(structures, batch_size)]

    def _members_shielding(self, structures, batch_size) -> list[dict[str, np.ndarray]]:
        """Per validated structure: ``shielding`` (members' mean) and ``shielding_std``, each
        `(n_atoms, 3, 3)` ppm."""

        def call(graph):
            each = [np.asarray(_predict.forward(m, graph)["shielding"], np.float64)
                    for m in self.members]  # fmt: skip
            return {"shielding": np.mean(each, axis=0), "shielding_std": np.std(each, axis=0)}

        per_atom = ("shielding", "shielding_std")
        return _predict.run(structures, self.input_spec(), call, per_atom, batch_size=batch_size)

    def predict(
        self, atoms, *, reference: dict | None = None, batch_size: int = 8
    ) -> dict[str, np.ndarray]:
        """Shift tensors and their analysis for one structure or a list of them.

        **Arguments:** `atoms` (an ``ase.Atoms``, :class:`~zoo.Structure`, dict, or a list of
        them; a model trained on crystals only refuses molecules and slabs), `reference`
        (``{"slope", "offset"}``; default the config's, the fitted one for shipped models),
        `batch_size`.

        **Returns:** numpy arrays, per atom (NaN for atoms of other elements), ppm:
        ``unreferenced_shift`` `(N, 3, 3)` (the head's output, on the training data's scale);
        with a reference ``shift_tensor`` `(N, 3, 3)` (``slope * raw + offset * I``, vs TMS)
        and ``chemical_shift`` `(N,)` (its isotropic value); the analysis of the shift tensor
        (of the unreferenced one without a reference), shift form: ``isotropic``,
        ``anisotropy``, ``reduced_anisotropy``, ``asymmetry`` (Haeberlen), ``span``, ``skew``
        (Herzfeld-Berger) `(N,)`; ``principal_values`` `(N, 3)` and ``principal_axes``
        `(N, 3, 3)` (columns, Haeberlen order xx, yy, zz), ``euler_angles`` `(N, 3)` (zyz,
        radians); ``mask`` `(N,)` (atoms of the nucleus); of an ensemble,
        ``unreferenced_shift_std`` `(N, 3, 3)` (the members' standard deviation). For a list,
        per-atom arrays are concatenated and ``structure_index`` `(N,)` says which structure
        each row is from.

        **Raises** ``ValueError`` naming the structure index for an element outside the
        training species or a structure without the nucleus, and for an empty input. An
        iterable is read whole before anything is predicted: if reading fails part-way, its
        error is raised before any model call, so no computed output is lost.
        """
        structures, single = _predict.prepare(atoms, self.input_spec())
        stats = _predict.merge(
            self._members_shielding(structures, batch_size),
            structures,
            ("shielding", "shielding_std"),
        )
        raw = stats["shielding"]
        numbers = np.concatenate([s.numbers for s in structures])
        mask = numbers == self.atomic_number
        ref = self.config.get("reference") if reference is None else reference
        out = analyse(raw, mask, ref)
        if self.others:
            out["unreferenced_shift_std"] = np.where(
                mask[:, None, None], stats["shielding_std"], np.nan
            )
        if not single:
            out["structure_index"] = np.repeat(
                np.arange(len(structures)), [len(s) for s in structures]
            )
        return out

    def spectrum(
        self,
        atoms,
        *,
        kind: str = "isotropic",
        reference: dict | None = None,
        grid=None,
        fwhm: float = 1.0,
        n_orientations: int = 5000,
        ax=None,
        plot: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Simulated 1D spectrum of the structure(s): ``"isotropic"`` (MAS-like, one Gaussian
        per site) or ``"static"`` (CSA powder pattern). In ppm vs TMS with a reference (given
        or the config's), else on the unreferenced scale. Every atom of the nucleus counts
        once (equivalent sites add up). `grid` defaults to the lines' range plus margins;
        `plot` (or an `ax`) draws it with matplotlib. **Returns:** `(x, intensity)`."""
        if kind not in ("isotropic", "static"):
            raise ValueError(f"kind must be 'isotropic' or 'static', got {kind!r}")
        pred = self.predict(atoms, reference=reference)
        key = "shift_tensor" if "shift_tensor" in pred else "unreferenced_shift"
        tensors = pred[key][pred["mask"]]
        if grid is None:
            values = nmr.isotropic(tensors)
            if kind == "static":
                values = np.linalg.eigvalsh(nmr.symmetric_part(tensors)).reshape(-1)
            lo, hi = values.min() - 10 * fwhm, values.max() + 10 * fwhm
            grid = np.linspace(lo, hi, 2000)
        if kind == "isotropic":
            x, y = nmr.isotropic_spectrum(tensors, grid, fwhm)
        else:
            x, y = nmr.static_powder_pattern(tensors, grid, fwhm, n_orientations)
        if plot or ax is not None:
            label = "chemical shift vs TMS (ppm)" if key == "shift_tensor" else (
                "unreferenced shift (ppm)")  # fmt: skip
            nmr.plot_spectrum(x, y, ax, xlabel=label, invert_x=True)
        return x, y


def analyse(raw: np.ndarray, mask: np.ndarray, reference: dict | None = None) -> dict:
    """`zoo.nmr` analysis (shift form) of the rows of `raw` `(N, 3, 3)` where `mask`; NaN
    elsewhere. With a `reference` the analysed tensor is `nmr.reference_shift(raw, reference)`.
    """
    n = len(raw)
    sel = raw[mask]

    def fill(values, shape=()):
        full = np.full((n, *shape), np.nan)
        full[mask] = values
        return full

    out = {"unreferenced_shift": fill(sel, (3, 3))}
    if reference is not None:
        sel = nmr.reference_shift(sel, reference)
        out["shift_tensor"] = fill(sel, (3, 3))
        out["chemical_shift"] = fill(nmr.isotropic(sel))
    hae = nmr.haeberlen(sel)
    hb = nmr.herzfeld_berger(sel, form="shift")
    _, axes = nmr.principal_components(sel)
    out |= {
        "isotropic": fill(nmr.isotropic(sel)),
        "anisotropy": fill(hae["anisotropy"]),
        "reduced_anisotropy": fill(hae["reduced_anisotropy"]),
        "asymmetry": fill(hae["asymmetry"]),
        "span": fill(hb["span"]),
        "skew": fill(hb["skew"]),
        "principal_values": fill(hae["principal_values"], (3,)),
        "principal_axes": fill(axes, (3, 3)),
        "euler_angles": fill(nmr.euler_angles(axes), (3,)),
        "mask": np.asarray(mask, bool),
    }
    return out


def shielding_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Errors (ppm) of predicted vs reference tensors `(M, 3, 3)` of labelled atoms.

    ``isotropic_mae``/``_rmse``/``_r2``; ``tensor_mae``/``_rmse`` over the 9 Cartesian
    components; ``mae_0e``, ``mae_1e``, ``mae_2e``: MAE of the irreps components
    (orthonormal basis: 0e = trace / sqrt 3, 1e the antisymmetric and 2e the symmetric
    traceless part); ``span_mae``, ``skew_mae`` (Herzfeld-Berger; skew is dimensionless).
    """
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if pred.shape != true.shape or pred.ndim != 3 or pred.shape[1:] != (3, 3) or not len(pred):
        raise ValueError(
            f"pred and true must be (M, 3, 3) with M > 0, got {pred.shape}, {true.shape}"
        )
    iso_p, iso_t = nmr.isotropic(pred), nmr.isotropic(true)
    err = pred - true
    ir = np.asarray(to_irreps("rank2_axial", jax.numpy.asarray(err)).array, np.float64)
    hp, ht = nmr.herzfeld_berger(pred), nmr.herzfeld_berger(true)
    ss = float(np.sum((iso_t - iso_t.mean()) ** 2))
    return {
        "n": int(len(pred)),
        "isotropic_mae": float(np.mean(np.abs(iso_p - iso_t))),
        "isotropic_rmse": float(np.sqrt(np.mean((iso_p - iso_t) ** 2))),
        "isotropic_r2": float(1 - np.sum((iso_p - iso_t) ** 2) / ss) if ss > 0 else float("nan"),
        "tensor_mae": float(np.mean(np.abs(err))),
        "tensor_rmse": float(np.sqrt(np.mean(err**2))),
        "mae_0e": float(np.mean(np.abs(ir[:, 0:1]))),
        "mae_1e": float(np.mean(np.abs(ir[:, 1:4]))),
        "mae_2e": float(np.mean(np.abs(ir[:, 4:9]))),
        "span_mae": float(np.mean(np.abs(hp["span"] - ht["span"]))),
        "skew_mae": float(np.mean(np.abs(hp["skew"] - ht["skew"]))),
    }
