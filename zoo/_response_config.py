"""Configs of `zoo.model.ResponseModel`: output table, `make_config`, `fit_normalization`.

The config is the JSON-safe static dict stored in ``config.json``; normalisation constants are
fitted on the training split only and live there, so an optimiser never touches them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from . import heads as H
from .backbones import architecture, architecture_name
from .irreps import irreps_of
from .structure import Structure, as_structures

MODEL_TYPE = "response"
FORMULATIONS = ("direct", "electric", "magnetic")
#: output name -> (tensor kind, per atom, unit, formulations that can produce it)
OUTPUTS: dict[str, tuple[str, bool, str, tuple[str, ...]]] = {
    "born_charges": ("rank2", True, "e", ("direct", "electric")),
    "raman_tensors": ("raman", True, "Å^2", ("direct", "electric")),
    "dielectric": ("symmetric2", False, "1", ("direct", "electric")),
    "chi2": ("chi2", False, "pm/V", ("direct",)),
    "shielding": ("rank2_axial", True, "ppm", ("direct", "magnetic")),
}
#: outputs that are bulk properties: they need a periodic cell.
NEEDS_CELL = ("dielectric", "chi2")
ASR_OUTPUTS = ("born_charges", "raman_tensors")


def _version() -> str:
    from ._serialization import FORMAT_VERSION

    return FORMAT_VERSION


def head_entries(outputs) -> dict:
    """Config entries of the heads `outputs`, unnormalised (scale 1, no shift): refit them with
    :func:`fit_normalization`."""
    return {
        name: {"kind": OUTPUTS[name][0], "unit": OUTPUTS[name][2], "scale": 1.0, "shift": None}
        for name in outputs
    }


def make_config(
    species,
    outputs,
    *,
    formulation: str = "direct",
    backbone: Mapping | None = None,
    feature_irreps: str | None = None,
    acoustic_sum_rule: bool = True,
    born_order: str = "field_first",
    raman_convention: str = "qe",
    dtype: str = "float32",
) -> dict:
    """A JSON-safe config with unit normalisation (refit it with `fit_normalization`).

    **Arguments:** `species` (atomic numbers), `outputs` (names from :data:`OUTPUTS`),
    `formulation`, `backbone` (``{"architecture": "nequip" | "mace" | "allegro", ...}`` and
    that architecture's config fields; no ``"architecture"`` means NequIP; ``species`` and the
    irreps are filled in), `feature_irreps` (node features fed to the heads; default: every
    irrep the backbone can make, x8),
    `acoustic_sum_rule` (subtract the per-structure mean over atoms of Born and Raman tensors),
    `born_order`, `raman_convention` (see `zoo.heads.derivative`), `dtype`.
    """
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
    outputs = list(outputs)
    for name in outputs:
        if name not in OUTPUTS:
            raise ValueError(f"unknown output {name!r}; known: {sorted(OUTPUTS)}")
        if formulation not in OUTPUTS[name][3]:
            raise ValueError(f"output {name!r} is not available with formulation {formulation!r}")
    if not outputs:
        raise ValueError("outputs must name at least one output")
    if born_order not in H.derivative.BORN_ORDERS:
        raise ValueError(f"born_order must be one of {H.derivative.BORN_ORDERS}")
    if raman_convention not in H.derivative.RAMAN_CONVENTIONS:
        raise ValueError(f"raman_convention must be one of {H.derivative.RAMAN_CONVENTIONS}")
    bb = _backbone(backbone, species, formulation, feature_irreps)
    _check_heads_have_features(outputs, formulation, bb)
    heads = head_entries(outputs)
    return {
        "model_type": MODEL_TYPE,
        "zoo_version": _version(),
        "dtype": str(jnp.dtype(dtype)),
        "formulation": formulation,
        "backbone": bb,
        "heads": heads,
        "field_scale": 1.0,
        "energy_scale": 1.0,
        "acoustic_sum_rule": bool(acoustic_sum_rule),
        "born_order": born_order,
        "raman_convention": raman_convention,
        "domain": None,
    }


def _backbone(backbone, species, formulation: str, feature_irreps) -> dict:
    """The backbone dict of a config: architecture, species, node inputs, output irreps."""
    bb = dict(backbone or {})
    name = architecture_name(bb)
    config_cls, _ = architecture(name)
    bb = {"architecture": name, **bb, "species": [int(z) for z in species]}
    if formulation != "direct":
        if not config_cls.NODE_INPUTS:
            raise ValueError(
                f"formulation {formulation!r} feeds the field to every node as an input, but "
                f"the {name} backbone takes no per-node inputs: use formulation 'direct' or "
                f"another architecture ({', '.join(n for n in _node_input_archs())})"
            )
        bb["node_input_irreps"] = {"electric": "1x1o", "magnetic": "2x1e"}[formulation]
    elif config_cls.NODE_INPUTS:
        bb["node_input_irreps"] = ""
    if feature_irreps is None:
        probe = config_cls.from_dict({**bb, "output_irreps": "1x0e"})
        kinds = dict.fromkeys(ir for _, ir in probe.feature_irreps)  # in order, once each
        feature_irreps = str(e3nn.Irreps([(8, ir) for ir in kinds]))
    bb["output_irreps"] = feature_irreps
    checked = config_cls.from_dict(bb)  # validates
    if formulation == "magnetic":
        # B and mu (1e) only meet in a scalar through axial (odd-parity) features; in NequIP
        # through gates, so mu.B-type terms first appear in the third layer
        few = name == "nequip" and checked.num_layers < 3
        if not checked.parity or few:
            raise ValueError(
                f"formulation 'magnetic' needs backbone parity=True (and for nequip "
                f"num_layers >= 3), got {checked.to_dict()}: otherwise d2E/dB dmu = 0"
            )
    return bb


def _node_input_archs() -> list[str]:
    from .backbones import ARCHITECTURES

    return [n for n, (c, _) in ARCHITECTURES.items() if c.NODE_INPUTS]


def _check_heads_have_features(outputs, formulation: str, bb: dict) -> None:
    """Refuse a direct head whose irreps the backbone's node features lack (its linear
    read-out would silently output zero there)."""
    if formulation != "direct":
        return
    have = {ir for _, ir in e3nn.Irreps(bb["output_irreps"])}
    for name in outputs:
        missing = [str(ir) for _, ir in irreps_of(OUTPUTS[name][0]) if ir not in have]
        if missing:
            raise ValueError(
                f"head {name!r} needs node features {'+'.join(dict.fromkeys(missing))}, which "
                f"the {bb['architecture']} backbone does not give (feature irreps "
                f"{bb['output_irreps']}): configure it with them (e.g. parity=True, a higher "
                "lmax, or for mace hidden_irreps that contain them)"
            )


def _irreps_rows(kind: str, values: np.ndarray) -> np.ndarray:
    from .irreps import to_irreps

    with jax.default_device(jax.devices("cpu")[0]):
        return np.asarray(to_irreps(kind, np.asarray(values, np.float64)).array, np.float64)


def fit_normalization(config: dict, structures, targets: Mapping[str, list]) -> dict:
    """Scales and shifts of every head from the *training* data; returns a new config.

    `targets[name]` is a list (one entry per structure) of per-atom `(n, ...)` or global
    arrays. Per-atom heads get a per-species shift of their 0e part and one scale (RMS of the
    rest); global heads a scalar shift. The derivative formulations also get ``field_scale``
    and ``energy_scale`` so the first and second field derivatives start at the targets' size.
    Also records the training domain (volume per atom, shortest distance) for OOD warnings.
    """
    structures = as_structures(structures)
    config = {**config, "heads": {k: dict(v) for k, v in config["heads"].items()}}
    species = config["backbone"]["species"]
    numbers = np.concatenate([s.numbers for s in structures])
    rms = {}
    for name, head in config["heads"].items():
        if name not in targets:
            raise ValueError(f"targets has no {name!r}: every head needs training data")
        per_atom = OUTPUTS[name][1]
        values = [np.asarray(t) if per_atom else np.asarray(t)[None] for t in targets[name]]
        rows = _irreps_rows(head["kind"], np.concatenate(values)).copy()
        has_scalar = e3nn.Irrep("0e") in [mul_ir.ir for mul_ir in irreps_of(head["kind"])]
        shift = None
        if has_scalar and per_atom:
            shift = [float(rows[numbers == z, 0].mean()) if np.any(numbers == z) else 0.0
                     for z in species]  # fmt: skip
            rows[:, 0] -= np.asarray([shift[species.index(int(z))] for z in numbers])
        elif has_scalar:
            shift = float(rows[:, 0].mean())
            rows[:, 0] -= shift
        scale = float(np.sqrt(np.mean(rows**2)))
        head["scale"] = scale if scale > 0 and math.isfinite(scale) else 1.0
        head["shift"] = shift
        rms[name] = head["scale"]
    if config["formulation"] == "electric":
        z = rms.get("born_charges", 1.0)
        if "raman_tensors" in rms:
            config["field_scale"] = rms["raman_tensors"] / (H.COULOMB * z)
        config["energy_scale"] = z / config["field_scale"]
    elif config["formulation"] == "magnetic":
        config["energy_scale"] = rms.get("shielding", 1.0)
    config["domain"] = training_domain(structures)
    return config


def training_domain(structures: list[Structure]) -> dict:
    """The config's ``domain``: what the training structures span (for out-of-domain
    warnings): volume per atom range (periodic ones), shortest distance, all periodic."""
    vpa = [s.volume / len(s) for s in structures if s.pbc.all()]
    return {
        "volume_per_atom": [min(vpa), max(vpa)] if vpa else None,
        "min_distance": float(min(_min_distance(s) for s in structures)),
        "periodic": bool(all(s.pbc.all() for s in structures)),
    }


def _min_distance(s: Structure, r: float = 6.0) -> float:
    from ._neighbors import neighbor_pairs

    i, j, shifts = neighbor_pairs(s, r)
    if len(i) == 0:
        return r
    d = s.positions[j] - s.positions[i] + shifts @ s.cell
    return float(np.linalg.norm(d, axis=1).min())
