"""The Hubbard recipe's data split, batching, prediction and metrics (``recipes/hubbard_uv.py``).

Rows of held-out structures are "test"; the rest is split by near-duplicate clusters per
(species, self-consistent path), HubbardML's ``predict_hp`` protocol. Metrics per species and
per material, for the model and the U_in / V_in baseline.
"""

import equinox as eqx
import numpy as np

from zoo.hubbard import (
    TRAIN,
    VALIDATE,
    KernelModel,
    baseline_metrics,
    duplicate_clusters,
    regression_metrics,
    split_by_clusters,
)

TEST = "test"


def clusters_of(ds: dict, idx: np.ndarray) -> np.ndarray:
    """Near-duplicate cluster id of each row `idx` of `ds` (among those rows)."""
    return duplicate_clusters(
        [ds["key"][i] for i in idx], [s[idx] for s in ds["spectra"]], ds["param_in"][idx],
        None if ds["distance"] is None else ds["distance"][idx], param_tol=ds["tol"],
    )  # fmt: skip


def split(ds: dict, seed: int, transfer: int | None, test_paths=()) -> np.ndarray:
    """ "train" / "validate" / "duplicate" / "test" per row.

    Rows of `test_paths` (whole self-consistent paths = structures) are "test" and take no
    part in clustering or training; the rest is split by duplicate clusters per
    (species, sc path), HubbardML's ``predict_hp`` protocol.
    """
    test = np.array([r["sc_path"] in set(test_paths) for r in ds["rows"]])
    labels = np.full(len(test), TEST, dtype=object)
    rest = np.flatnonzero(~test)
    if transfer is not None:  # the paper's transfer test: iterations < k train, the rest test
        it = np.array([ds["rows"][i]["iteration"] for i in rest])
        labels[rest] = np.where(it < transfer, TRAIN, VALIDATE)
        return labels.astype(str)
    clusters = clusters_of(ds, rest)
    groups = [(ds["key"][i], ds["rows"][i]["sc_path"]) for i in rest]
    labels[rest] = split_by_clusters(clusters, groups, seed=seed)
    return labels.astype(str)


def batches(ds: dict, idx: np.ndarray, size: int) -> list[dict]:
    """Fixed-shape batches; the last one padded by repeating rows with mask 0."""
    out = []
    for start in range(0, len(idx), size):
        part = idx[start : start + size]
        mask = np.zeros(size, np.float32)
        mask[: len(part)] = 1.0
        part = np.concatenate([part, np.repeat(part[:1], size - len(part))])
        out.append({"x": tuple(a[part] for a in ds["inputs"]), "y": ds["y"][part], "mask": mask})
    return out


def _call(model, x):
    return model(*x)


@eqx.filter_jit
def _predict_jit(model, x):
    return _call(model, x)


def _predict(model, x):
    # a kernel model answers in float64 numpy, as zoo.load's predict does
    if isinstance(model, KernelModel):
        return model.predict_numpy(*x)
    return _predict_jit(model, x)


def evaluate(model, ds: dict, idx: np.ndarray, name: str) -> dict:
    if len(idx) == 0:
        return {}
    pred = np.concatenate(
        [np.asarray(_predict(model, b["x"]))[b["mask"] > 0] for b in batches(ds, idx, 64)]
    )
    keys = [ds["key"][i] for i in idx]
    materials = [ds["rows"][i]["material"] for i in idx]
    return {
        f"{name}_model": regression_metrics(ds["y"][idx], pred, keys),
        f"{name}_baseline": baseline_metrics(ds["param_in"][idx], ds["y"][idx], keys),
        f"{name}_by_material": {
            "model": regression_metrics(ds["y"][idx], pred, materials),
            "baseline": baseline_metrics(ds["param_in"][idx], ds["y"][idx], materials),
        },
        f"{name}_predictions": {
            ds["rows"][i]["id"]: [float(ds["y"][i]), float(p)] for i, p in zip(idx, pred)
        },
    }


def report_metrics(model, ds: dict, labels: np.ndarray) -> dict:
    """Row counts and the train / validation / test metrics of a trained model."""
    tr, va = np.flatnonzero(labels == TRAIN), np.flatnonzero(labels == VALIDATE)
    counts = {
        "species": {
            k: int(n) for k, n in zip(*np.unique(np.asarray(ds["key"])[tr], return_counts=True))
        },
        "train": int(len(tr)),
        "validate": int(len(va)),
        "duplicate": int((labels == "duplicate").sum()),
    }
    te = np.flatnonzero(labels == TEST)
    counts["test"] = int(len(te))
    return {
        "rows": counts,
        **evaluate(model, ds, tr, "train"),
        **evaluate(model, ds, va, "validation"),
        **evaluate(model, ds, te, "test"),
    }


def held_out(metrics: dict) -> dict:
    """The row counts and validation metrics (per species and per family) of a run (other
    splits, transfer test)."""
    keys = ("rows", "validation_model", "validation_baseline", "validation_by_material")
    return {k: metrics[k] for k in keys if k in metrics}


def left_out(metrics: dict, paths: dict[str, str]) -> dict:
    """What a run with the sc paths `paths` (``{sc_path: material}``) held out says about
    their materials: per material, the model and U_in / V_in baseline metrics, how many rows
    the kernel's support guard refuses and the metrics of the rows it answers."""
    materials = set(paths.values())
    by = metrics.get("test_by_material", {})
    pick = lambda d: {k: v for k, v in d.items() if k in materials}  # noqa: E731
    refused = [
        paths.get(i.split("/", 1)[0]) for i in metrics.get("kernel", {}).get("test_refused", [])
    ]
    out = {
        "model": pick(by.get("model", {})),
        "baseline": pick(by.get("baseline", {})),
        "train": metrics["rows"]["train"],
        "refused": {m: refused.count(m) for m in sorted(materials)},
    }
    if "supported_test_by_material" in metrics:
        out["answered"] = pick(metrics["supported_test_by_material"]["model"])
    return out
