"""Loss and metrics of `zoo.field.FieldModel` over every observable of the field data.

Each quantity's mean squared error is divided by the square of a reference error (by default
the targets of the field-potential recipe), so a term of 1 means "at the target"; the loss is
their weighted sum. Polarization differences are folded modulo the polarization quantum.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .field import fold
from .graph import Graph, build_graph
from .train._loss import weighted_loss

#: quantity -> reference error used to normalise its squared error (units of the metric)
REFERENCE = {
    "energy": 0.4e-3,  # eV/atom
    "forces": 0.015,  # eV/Å
    "stress": 1e-3,  # eV/Å^3
    "polarization": 0.04,  # e·Å (folded)
    "born_charges": 0.014,  # e
    "polarizability": 0.016,  # e·Å^2/V
}
QUANTITIES = tuple(REFERENCE)


def frame_batch(records: list[dict], r_max: float, dtype, **sizes) -> tuple[Graph, dict]:
    """One padded graph of `records` (`zoo.data.field.load_field`) and its targets as arrays
    shaped like the model's outputs (per-atom `(n_nodes, ...)`, per-graph `(n_graphs, ...)`)."""
    graph = build_graph([r["structure"] for r in records], r_max, dtype=dtype, **sizes)
    n, g = graph.n_nodes, graph.n_graphs
    targets = {}
    for name in QUANTITIES:
        per_atom = name in ("forces", "born_charges")
        parts = [np.asarray(r[name], np.float64) for r in records]
        if per_atom:
            full = np.zeros((n, *parts[0].shape[1:]))
            full[: sum(len(p) for p in parts)] = np.concatenate(parts)
        else:
            full = np.zeros((g, *np.shape(parts[0])))
            full[: len(parts)] = np.stack(parts)
        targets[name] = jnp.asarray(full, dtype)
    return graph, targets


def errors(pred: dict, targets: dict, graph: Graph) -> dict:
    """Signed errors per quantity, in the units of :data:`REFERENCE` (energy per atom,
    folded polarization); padding entries are zero."""
    count = jnp.maximum(graph.n_node, 1).astype(pred["energy"].dtype)
    gmask = graph.graph_mask
    cell = jnp.where(gmask[:, None, None], graph.cell, jnp.eye(3, dtype=graph.cell.dtype))
    out = {"energy": jnp.where(gmask, (pred["energy"] - targets["energy"]) / count, 0)}
    for name in ("forces", "born_charges", "stress", "polarizability"):
        out[name] = pred[name] - targets[name]
    out["polarization"] = jnp.where(
        gmask[:, None], fold(pred["polarization"] - targets["polarization"], cell), 0
    )
    return out


def total_loss(model, graph: Graph, targets: dict, weights: dict, reference=None):
    """``(sum_q weights[q] * term_q, {q: term_q})``: per quantity the mean squared error over
    real entries divided by ``reference[q]**2`` (`zoo.train.weighted_loss` on the errors
    scaled by their reference)."""
    reference = REFERENCE if reference is None else reference
    err = errors(model(graph), targets, graph)
    outputs = {}
    for name, e in err.items():
        mask = graph.node_mask if name in ("forces", "born_charges") else graph.graph_mask
        scaled = e / reference[name]
        outputs[name] = (scaled, jnp.zeros_like(scaled), mask)
    total, aux = weighted_loss(outputs, weights, loss="mse")
    return total, {name: aux[f"loss_{name}"] for name in weights}


def make_step(optimizer, weights: dict, reference=None):
    """A jitted training step ``(model, opt_state, graph, targets) -> (model, state, terms)``."""

    @eqx.filter_jit
    def step(model, opt_state, graph, targets):
        (_, terms), grads = eqx.filter_value_and_grad(total_loss, has_aux=True)(
            model, graph, targets, weights, reference
        )
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, terms

    return step


@eqx.filter_jit
def _errors(model, graph, targets):
    return errors(model(graph), targets, graph), model(graph)


def evaluate(model, batches: list[tuple[Graph, dict]]) -> tuple[dict, dict]:
    """MAE (and RMSE) per quantity over `batches`, plus the (prediction, target) pairs of the
    real entries for parity plots. Energy in meV/atom, forces meV/Å, stress meV/Å^3."""
    errs: dict[str, list] = {k: [] for k in QUANTITIES}
    pairs: dict[str, list] = {k: [] for k in QUANTITIES}
    for graph, targets in batches:
        err, pred = _errors(model, graph, targets)
        nm, gm = np.asarray(graph.node_mask), np.asarray(graph.graph_mask)
        for name in QUANTITIES:
            mask = nm if name in ("forces", "born_charges") else gm
            errs[name].append(np.asarray(err[name])[mask].reshape(-1))
            tgt = np.asarray(targets[name])[mask]
            shown = (
                tgt + np.asarray(err[name])[mask].reshape(tgt.shape)
                if name != "energy"
                else (np.asarray(pred["energy"])[mask] / np.asarray(graph.n_node)[mask])
            )
            if name == "energy":
                tgt = tgt / np.asarray(graph.n_node)[mask]
            pairs[name].append(np.stack([np.ravel(shown), np.ravel(tgt)]))
    milli = {"energy": 1e3, "forces": 1e3, "stress": 1e3}
    metrics = {}
    for name in QUANTITIES:
        e = np.concatenate(errs[name]) * milli.get(name, 1.0)
        metrics[name] = {"mae": float(np.mean(np.abs(e))), "rmse": float(np.sqrt(np.mean(e**2)))}
    return metrics, {k: np.concatenate(v, axis=1) for k, v in pairs.items()}
