"""`finetune`: continue training a pretrained response model on a user's labelled structures.

Labels live on ``ase.Atoms`` (or an extxyz file of them): per-atom tensors in
``atoms.arrays[name]`` as `(n, 3, 3)` or flattened `(n, 9)` (Raman `(n, 27)`), global ones in
``atoms.info[name]`` (`(3, 3)` or `(9,)`). Names are the model outputs (``born_charges``,
``raman_tensors``, ``dielectric``, ``chi2``, ``shielding``; ASE's ``born_effective_charges``
and ``dielectric_tensor`` are accepted too). A row of NaN means "not labelled" (e.g. only the
Si atoms of a silicate carry a shielding), and so does a False in a boolean per-atom array
``has_<name>``; such rows are masked out of the loss and metrics.

What can change: the trunk can be frozen (only heads train), heads can be added or replaced
(normalised on the fine-tuning training split), and new species can be added on any backbone: the
arrays indexed by species grow by new rows (`zoo._species_growth`), so predictions for the
old species are unchanged before training (and stay so with ``freeze_trunk=True``).
Reading, checking and batching the labels is `zoo._labels`; this module fits the model to them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ._labels import ALIASES as ALIASES
from ._labels import Labelled, _labelled_rows, check_labels, make_batches, read_labelled
from ._response_config import _min_distance
from ._species_growth import freeze_rows
from ._species_growth import grow_model as grow_model
from .irreps import irreps_of, to_irreps
from .model import OUTPUTS, ResponseModel
from .structure import Structure
from .train import TrainConfig, evaluate, fit, weighted_loss

DEFAULT_TRAIN = TrainConfig(max_epochs=30, learning_rate=2e-3, schedule="cosine")


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """What `finetune` returns: the best `model`, `metrics` (as in ``metrics.json``), the
    `out_dir` with the artefacts, and the structure indices of both splits."""

    model: Any
    metrics: dict
    out_dir: Path
    train_indices: list[int]
    val_indices: list[int]


def _fit_head(name: str, species, data: Labelled, idx, scale=None, shift=None) -> dict:
    """Scale (unless given) and per-species / global 0e shift of a head from the training split;
    a given per-species `shift` keeps its entries and only gains those of new species."""
    kind, per_atom, unit = OUTPUTS[name][0], OUTPUTS[name][1], OUTPUTS[name][2]
    rows, mask = _labelled_rows([data.targets[name][i] for i in idx], per_atom)
    if not len(rows):
        raise ValueError(f"head {name!r}: no labelled {name} in the training split")
    try:
        ir = np.asarray(to_irreps(kind, rows).array, np.float64).copy()
    except ValueError as err:
        raise ValueError(f"labels {name!r}: {err}") from None
    has_scalar = any(str(mul_ir.ir) == "0e" for mul_ir in irreps_of(kind))
    new_shift = None
    if has_scalar and per_atom:
        numbers = np.concatenate([data.structures[i].numbers for i in idx])[mask]
        old = list(shift) if shift is not None else []
        new_shift = old + [
            float(ir[numbers == z, 0].mean()) if np.any(numbers == z) else 0.0
            for z in species[len(old) :]
        ]
        ir[:, 0] -= np.asarray([new_shift[list(species).index(int(z))] for z in numbers])
    elif has_scalar:
        new_shift = float(ir[:, 0].mean()) if shift is None else shift
        ir[:, 0] -= new_shift
    if scale is None:
        scale = float(np.sqrt(np.mean(ir**2)))
        scale = scale if scale > 0 and math.isfinite(scale) else 1.0
    return {"kind": kind, "unit": unit, "scale": scale, "shift": new_shift}


def _merge_domain(old: dict | None, structures: list[Structure]) -> dict | None:
    if old is None:
        return None
    vpa = [s.volume / len(s) for s in structures if s.pbc.all()]
    ranges = [r for r in (old.get("volume_per_atom"), [min(vpa), max(vpa)] if vpa else None) if r]
    return {
        "volume_per_atom": [min(r[0] for r in ranges), max(r[1] for r in ranges)]
        if ranges
        else None,
        "min_distance": float(min([old["min_distance"]] + [_min_distance(s) for s in structures])),
        "periodic": bool(old.get("periodic", True) and all(s.pbc.all() for s in structures)),
    }


def _species_numbers(new_species) -> list[int]:
    from ase.data import atomic_numbers

    out = []
    for z in new_species or ():
        if isinstance(z, str) and z in atomic_numbers:
            out.append(atomic_numbers[z])
        elif isinstance(z, (int, np.integer)) and 1 <= int(z) <= 118:
            out.append(int(z))
        else:
            raise ValueError(f"new_species: {z!r} is neither an element symbol nor 1..118")
    return out


def finetune_config(
    model: ResponseModel, data: Labelled, idx, heads=None, reset_heads=(), new_species=None
) -> tuple[dict, set[str]]:
    """The fine-tuned model's config and the names of the head modules to keep."""
    from ase.data import chemical_symbols

    cfg = copy.deepcopy(model.config)
    old_species = list(model.species)
    added = [z for z in _species_numbers(new_species) if z not in old_species]
    species = old_species + list(dict.fromkeys(added))
    present = {int(z) for s in data.structures for z in s.numbers}
    unknown = sorted(present - set(species))
    if unknown:
        names = ", ".join(chemical_symbols[z] for z in unknown)
        raise ValueError(f"data contains {names}, unknown to the model: pass new_species=[...]")
    names = list(model.outputs) if heads is None else list(dict.fromkeys(heads))
    for name in names:
        if name not in OUTPUTS or cfg["formulation"] not in OUTPUTS[name][3]:
            ok = [n for n in OUTPUTS if cfg["formulation"] in OUTPUTS[n][3]]
            raise ValueError(f"heads: {name!r} is not an output of a {cfg['formulation']} "
                             f"model; choose from {ok}")  # fmt: skip
    modules = set(model.heads)
    bad = sorted(set(reset_heads) - modules)
    if bad:
        raise ValueError(
            f"reset_heads: {bad} are not head modules of this model: {sorted(modules)}"
        )
    direct = cfg["formulation"] == "direct"
    new_heads = {}
    for name in names:
        fresh = name not in cfg["heads"] or (direct and name in reset_heads)
        if fresh and name not in data.targets:
            raise ValueError(f"heads: new head {name!r} needs {name} labels in the data")
        if fresh:
            new_heads[name] = _fit_head(name, species, data, idx)
        elif added and name in data.targets:
            old = cfg["heads"][name]
            head = _fit_head(name, species, data, idx, old["scale"], old["shift"])
            new_heads[name] = {**old, "shift": head["shift"]}
        else:
            old = cfg["heads"][name]
            grow = isinstance(old["shift"], list) and len(old["shift"]) < len(species)
            pad = [0.0] * (len(species) - len(old["shift"])) if grow else []
            new_heads[name] = {**old, "shift": old["shift"] + pad if grow else old["shift"]}
    cfg["heads"] = new_heads
    cfg["backbone"] = {**cfg["backbone"], "species": species}
    cfg["domain"] = _merge_domain(cfg.get("domain"), [data.structures[i] for i in idx])
    keep = {n for n in modules if n not in reset_heads and (not direct or n in new_heads)}
    return cfg, keep


def _split(n: int, split, seed: int) -> tuple[list[int], list[int]]:
    """(training, validation) structure indices: `split` is the held-out fraction (drawn with
    `seed`) or the validation indices themselves (a fixed validation set)."""
    if isinstance(split, (list, tuple, range, np.ndarray)):
        ints = all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in split)
        val = [int(i) for i in split] if ints else []
        if not ints or any(not 0 <= i < n for i in val) or len(set(val)) != len(val):
            raise ValueError(f"split: validation indices must be distinct ints in [0, {n}), "
                             f"got {list(split)!r}")  # fmt: skip
        train = [i for i in range(n) if i not in set(val)]
        if not train:
            raise ValueError(f"split: all {n} structure(s) are validation; none left to train")
        return train, sorted(val)
    if not (isinstance(split, (int, float)) and not isinstance(split, bool) and 0 <= split < 1):
        raise ValueError(f"split must be a fraction in [0, 1) or a list of validation "
                         f"indices, got {split!r}")  # fmt: skip
    n_val = 0 if split == 0 else max(1, round(split * n))
    if n - n_val < 1:
        raise ValueError(f"split={split}: {n} structure(s) leave none for training; pass split=0")
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in perm[n_val:]), sorted(int(i) for i in perm[:n_val])


def _check_out_dir(out_dir, overwrite: bool) -> Path:
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"out_dir {str(out)!r} is not empty; pass overwrite=True to reuse it")
    return out


def finetune(
    model,
    data,
    *,
    out_dir: str | os.PathLike,
    train_config: TrainConfig | None = None,
    freeze_trunk: bool = False,
    heads: Sequence[str] | None = None,
    reset_heads: Sequence[str] = (),
    new_species: Sequence[str | int] | None = None,
    split: float | Sequence[int] = 0.2,
    seed: int = 0,
    batch_size: int = 4,
    overwrite: bool = False,
    progress: bool = False,
) -> FinetuneResult:
    """Fine-tune a response model on labelled structures; write a model folder and metrics.

    **Arguments:**

    - `model`: a :class:`~zoo.model.ResponseModel` (or a `ShieldingModel`, or a name/path
      for `zoo.load`).
    - `data`: a list of ``ase.Atoms`` with labels (see the module docstring) or a file path.
    - `out_dir`: where ``model/`` (config.json, model.safetensors, README.md),
      ``metrics.json``, ``parity_<target>.png``, ``history.json``, ``split.json`` and the
      resumable checkpoint go; must be empty unless `overwrite`.
    - `train_config`: a `zoo.train.TrainConfig` (default: 30 epochs, cosine from 2e-3).
    - `freeze_trunk`: train only the heads (and the new species' rows).
    - `heads`: the outputs of the fine-tuned model (default: the model's); names it lacks are
      added as new heads normalised on the training split, omitted ones are dropped.
    - `reset_heads`: head modules to re-initialise (direct: output names, renormalised on the
      data; derivative formulations: ``"energy"``).
    - `new_species`: element symbols or atomic numbers to add to the model.
    - `split`: fraction of the structures held out for validation (0: none; `seed` picks
      them), or the indices of the validation structures (a fixed validation set, e.g. to
      compare runs on the same frames).
    - `batch_size`: structures per padded batch.

    **Returns:** a :class:`FinetuneResult`. ``metrics.json`` holds the metrics of the
    starting model (``"pretrained"``, on the same splits) and of the fine-tuned one.
    """
    base = _base_identity(model)
    if isinstance(model, (str, os.PathLike)):
        from .hub import load

        model = load(model)
        if not base.get("base_model") and _base_identity(model).get("base_model"):
            base = {**_base_identity(model), "folder": base.get("folder")}
    base_name = base.get("base_model") or base.get("folder")
    wrapper = None
    if not isinstance(model, ResponseModel) and isinstance(getattr(model, "response", None),
                                                           ResponseModel):  # fmt: skip
        wrapper, model = model, model.response
    if not isinstance(model, ResponseModel):
        raise ValueError(f"model must be a ResponseModel (or wrap one), got {type(model).__name__}")
    train_config = DEFAULT_TRAIN if train_config is None else train_config
    if not isinstance(train_config, TrainConfig):
        raise ValueError(f"train_config must be a zoo.train.TrainConfig, got {train_config!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    out = _check_out_dir(out_dir, overwrite)
    outputs = list(model.outputs) if heads is None else list(heads)
    unknown = [n for n in outputs if n not in OUTPUTS]
    if unknown or not outputs:
        raise ValueError(f"heads: {unknown or outputs} are not outputs; known: {list(OUTPUTS)}")
    data = read_labelled(data, outputs)
    train_idx, val_idx = _split(len(data.structures), split, seed)
    check_labels(data, train_idx)
    config, keep = finetune_config(model, data, train_idx, heads, reset_heads, new_species)
    start, grown = grow_model(model, config, keep, key=jax.random.key(seed))
    names = [n for n in config["heads"] if n in data.targets]
    if not names:
        raise ValueError(f"data has labels {sorted(data.targets)} but the model predicts "
                         f"{sorted(config['heads'])}: nothing to fit")  # fmt: skip
    n_old = len(model.species)
    weights = {n: 1.0 / config["heads"][n]["scale"] ** 2 for n in names}

    def predict_fn(m, batch):
        out_ = m(batch["graph"])
        return {n: (out_[n], batch["targets"][n], batch["masks"][n]) for n in names}

    def loss_fn(m, batch):
        return weighted_loss(predict_fn(freeze_rows(m, grown), batch), weights)

    trainable = None
    if freeze_trunk:
        trainable = lambda path: path.startswith(".heads") or path in grown  # noqa: E731
    train_b, val_b = make_batches(start, data, [train_idx, val_idx], names, batch_size)
    kinds = {n: OUTPUTS[n][0] for n in names}
    before = {"train": evaluate(start, predict_fn, train_b)}
    if val_b:
        before["validation"] = evaluate(start, predict_fn, val_b)
    result = fit(
        start, loss_fn, train_b, val_b, train_config, out_dir=out, predict_fn=predict_fn,
        trainable=trainable, tensor_kinds=kinds, units={n: OUTPUTS[n][2] for n in names},
        progress=progress,
    )  # fmt: skip
    tuned = result.model
    if wrapper is not None:
        tuned = type(wrapper).wrap(tuned, wrapper.atomic_number, wrapper.config.get("reference"))
    fraction = split if isinstance(split, (int, float)) else None
    split_info = {"train": train_idx, "validation": val_idx, "seed": seed, "fraction": fraction}
    metrics = {
        "pretrained": before,
        "finetuned": result.metrics,
        "targets": names,
        "freeze_trunk": freeze_trunk,
        "new_species": config["backbone"]["species"][n_old:],
        "base_model": base_name,
        "base_model_revision": base.get("revision"),
    }
    from ._io import atomic_write_json
    from .train._checkpoint import jsonable

    atomic_write_json(out / "metrics.json", jsonable(metrics))
    atomic_write_json(out / "split.json", jsonable(split_info))
    val = (result.metrics or {}).get("validation") or (result.metrics or {}).get("train", {})
    card_metrics = {f"mae_{n}": val[n]["mae"] for n in names if n in val}
    from ._serialization import make_model_card

    revision = f" (revision {base['revision']})" if base.get("revision") else ""
    card = make_model_card(
        out.name or "finetuned",
        description=f"Fine-tuned from {base_name or 'a zoo model'}{revision} on "
        f"{len(train_idx)} training and {len(val_idx)} validation structures with "
        f"`zoo.finetune`. Licence: {base['license']}, as the base model"
        + ("" if base.get("license_known") else " (unknown: set it before sharing)")
        + ".",
        license=base["license"],
        metrics=card_metrics,
        config=config,
        base_model=base.get("base_model"),
        base_model_revision=base.get("revision"),
        repo_id=(out / "model").as_posix(),
        tags=["fine-tuned"],
    )
    tuned.save_pretrained(out / "model", card=card, overwrite=overwrite)
    return FinetuneResult(tuned, metrics, out, train_idx, val_idx)


def _base_identity(model) -> dict:
    """Who the base model is, for the card: ``base_model`` (a Hub repo id), ``revision``,
    ``license`` (the base card's; ``license_known`` False when there is no such card) and,
    for a local folder, ``folder``. A model object is recognised as a shipped model when its
    config is byte-identical to the pinned config.json."""
    from . import _registry as registry
    from ._serialization import CARD_NAME, read_card_metadata

    name, card, out = None, None, {}
    if isinstance(model, str) and model in registry.SHIPPED:
        name = model
    elif isinstance(model, str) and model.count("/") == 1 and not Path(model).exists():
        from .hub import info

        out = {"base_model": model, "revision": "main"}
        card = info(model).get("card", {})
    elif isinstance(model, (str, os.PathLike)):
        folder = Path(model).expanduser()
        out = {"folder": str(folder)}
        card = read_card_metadata(folder / CARD_NAME) if (folder / CARD_NAME).is_file() else {}
    elif isinstance(getattr(model, "config", None), dict):
        name = _shipped_name(model.config)
        if name is not None and not _same_weights(model, registry.WEIGHTS_DIR / name):
            name = None  # the shipped architecture with other weights, e.g. trained from scratch
    if name is not None:
        entry = registry.SHIPPED[name]
        out = {"base_model": entry.repo_id, "revision": entry.revision}
        path = registry.WEIGHTS_DIR / name / CARD_NAME
        card = read_card_metadata(path) if path.is_file() else {}
    license = (card or {}).get("license")
    return {**out, "license": license or "other", "license_known": bool(license)}


def _shipped_name(config: dict) -> str | None:
    """The shipped model whose pinned config.json `config` is, up to the ``dtype`` it was
    loaded in (``zoo.load(..., dtype="float64")`` is still that model); None otherwise."""
    from . import _registry as registry
    from ._dtype import _set_dtype

    text = json.dumps(config, sort_keys=True, indent=2, allow_nan=False) + "\n"
    digest, pins = hashlib.sha256(text.encode()).hexdigest(), registry.read_registry()
    exact = [n for n in registry.SHIPPED if pins.get(n, {}).get("config.json") == digest]
    if exact or config.get("dtype") not in ("float32", "float64"):
        return exact[0] if exact else None
    for name in registry.SHIPPED:
        path = registry.WEIGHTS_DIR / name / "config.json"
        if path.is_file() and _set_dtype(json.loads(path.read_text()), config["dtype"]) == config:
            return name
    return None


def _same_weights(model, folder: Path) -> bool:
    """Whether `model`'s arrays equal those of the model folder `folder` (in the folder's
    dtype, so the shipped weights loaded in float64 are still the shipped weights)."""
    import equinox as eqx

    from .hub import from_pretrained

    ours = jax.tree.leaves(eqx.filter(model, eqx.is_array))
    theirs = jax.tree.leaves(eqx.filter(from_pretrained(folder), eqx.is_array))
    return len(ours) == len(theirs) and all(
        a.shape == b.shape and np.array_equal(np.asarray(a).astype(b.dtype), np.asarray(b))
        for a, b in zip(ours, theirs)
    )
