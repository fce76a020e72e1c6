"""The kernel models' support guard, per species: is a row inside the training data?

A row's species is read from the one-hot tail of its descriptor (U: the metal, ``"Ni"``;
V: ligand-metal, ``"O-Ni"``). Its distance to the nearest training row *of that species* is
compared with that species' own range, a factor times the largest nearest-neighbour distance
among its distinct training rows, twice: in the environment part of the descriptor
(occupation invariants and pair distance) and in the whole descriptor (with the run's U_in /
V_in). One radius for all species let a new family of a known element through (held-out
LiFeO2: U 30 %, V 106 % off, every row answered; ``docs/experiments.md``).

Before both, the run's own U_in / V_in is compared with the values of that parameter among the
species' training rows (:func:`param_ranges`): the kernel has seen U_in only at the queue's
starting guess (4 eV) and at hp.x's answers, and a self-consistent loop that carries U_in past
them is answered from the nearest of those; the error names the species, the value and the
range. It refuses rather than warns: a self-consistent loop started inside the range stays in
it while the model interpolates, and one that leaves it is extrapolating (the ML loop on
LiNiO2 with Ni rows up to U_in 8.3 eV fed back 9.48 eV and then oscillated to 8.1 eV against
hp.x's 9.2 eV).
"""

import numpy as np

#: whole descriptor: refused beyond this many times the largest nearest-neighbour distance
#: among the species' training rows (all species pooled, shipped fit: the held-out FeO site
#: of another orbital order sits at 7-9x, every validation row below 0.31x)
SUPPORT_FACTOR = 2.0
#: environment part. Distance / largest nearest-neighbour distance on the recipe split of
#: the shipped steps: validation rows 0.04-1.13; held-out LiFeO2 with Fe only from FeO 1.33
#: (V) and 1.61-1.63 (U), whose errors are U 28 %, V 102 %; held-out FeO with Fe only from
#: LiFeO2 77-5050. With thin data it refuses known families too: one rattled NiO cell held
#: out of seven is refused in part (1 of 6 U, 5 of 32 V rows), the other six answered
ENVIRONMENT_FACTOR = 1.25
#: training rows closer than this (standardised units) are one point for a radius:
#: symmetry-equivalent sites of one run differ by float noise (~1e-6), which would otherwise
#: set a species' range
DUPLICATE_TOL = 1e-2
#: a run's U_in / V_in is inside its species' training range widened on each side by this
#: fraction of the range's width, at least :data:`PARAM_MARGIN_EV`: the loop's fixed point sits
#: at the top of the range (converged training rows), and a prediction a little beyond it
#: must not stop a loop that is converging
PARAM_MARGIN = 0.1
PARAM_MARGIN_EV = 0.05


def species_keys(config: dict, z: np.ndarray) -> np.ndarray:
    """Species of each descriptor row ``(m, dim)`` of a kernel model of `config`, from its
    one-hot tail: the metal (U) or ``ligand-metal`` (V, p site then d site)."""
    species = config["species"]
    blocks = 1 if config["kind"] == "onsite" else 2
    hot = z[:, z.shape[1] - blocks * len(species) :].reshape(len(z), blocks, len(species))
    return np.array(["-".join(species[j] for j in row) for row in hot.argmax(-1)], dtype=object)


def environment_columns(config: dict) -> np.ndarray:
    """Mask of the descriptor columns without the run's U_in / V_in (the invariant just
    before the one-hot tail, :func:`zoo.hubbard._kernel.raw_descriptor`)."""
    blocks = 1 if config["kind"] == "onsite" else 2
    keep = np.ones(config["descriptor_dim"], bool)
    keep[config["descriptor_dim"] - blocks * len(config["species"]) - 1] = False
    return keep


def param_values(config: dict, z: np.ndarray) -> np.ndarray:
    """The run's U_in / V_in (eV) ``(m,)`` of standardised descriptor rows `z` ``(m, dim)``:
    the column :func:`environment_columns` drops, its scaling undone."""
    col = int(np.flatnonzero(~environment_columns(config))[0])
    stats = config["input_stats"]["descriptor"]
    return z[:, col] / stats["scale"][col] + stats["mean"][col]


def param_ranges(config: dict, train_z: np.ndarray) -> dict[str, list[float]]:
    """``{species: [lowest, highest]}`` U_in / V_in (eV) among the standardised training
    descriptors `train_z` ``(n, dim)`` of a kernel model of `config` (its descriptor scaling
    undone)."""
    raw = param_values(config, train_z)
    keys = species_keys(config, train_z)
    return {
        k: [float(raw[keys == k].min()), float(raw[keys == k].max())] for k in sorted(set(keys))
    }


def param_problem(config: dict, ranges: dict, key: str, value: float) -> str | None:
    """None when `value` (eV) of the run's U_in (U model) / V_in (V model) lies within the
    training range ``ranges[key]`` of species `key` (:func:`param_ranges`) widened by
    :data:`PARAM_MARGIN`, else why not (naming the species, the value and the range)."""
    if key not in ranges:
        return None  # a species without training rows: support_report names that
    lo, hi = ranges[key]
    margin = max(PARAM_MARGIN * (hi - lo), PARAM_MARGIN_EV)
    if lo - margin <= value <= hi + margin:
        return None
    name = "U_in" if config["kind"] == "onsite" else "V_in"
    return (
        f"its {name} = {value:.4g} eV is outside the {key} training range of {name}, "
        f"{lo:.4g} to {hi:.4g} eV (+- {margin:.2g} eV)"
    )


def _radius(group: np.ndarray, factor: float) -> float:
    """`factor` x the largest nearest-neighbour distance among the distinct rows of `group`
    ``(n, dim)``; :data:`DUPLICATE_TOL` when they are one point."""
    d = np.sqrt(((group[:, None] - group[None]) ** 2).sum(-1))
    d[d < DUPLICATE_TOL] = np.inf  # itself and (near-)duplicates
    nearest = d.min(1)
    finite = nearest[np.isfinite(nearest)]
    return factor * float(finite.max()) if finite.size else DUPLICATE_TOL


def species_support(config: dict, train_z: np.ndarray) -> dict[str, dict]:
    """``{species: {"rows": n, "environment": radius, "descriptor": radius}}`` of the
    standardised training descriptors `train_z` ``(n, dim)``: :data:`ENVIRONMENT_FACTOR` /
    :data:`SUPPORT_FACTOR` times the largest nearest-neighbour distance among the species'
    distinct training rows, in the environment columns / the whole descriptor."""
    keys = species_keys(config, train_z)
    env = environment_columns(config)
    out = {}
    for key in sorted(set(keys)):
        group = train_z[keys == key]
        out[key] = {
            "rows": len(group),
            "environment": _radius(group[:, env], ENVIRONMENT_FACTOR),
            "descriptor": _radius(group, SUPPORT_FACTOR),
        }
    return out


def support_report(
    config: dict, train_z: np.ndarray, z: np.ndarray, ranges: dict
) -> list[str | None]:
    """Per standardised descriptor row of `z` ``(m, dim)``: None inside the training range
    of its species (:func:`species_support` of `train_z`), else why not: no training rows of
    its species, its U_in / V_in outside their range (`ranges`, :func:`param_ranges`), or its
    environment or whole descriptor too far from them."""
    train_keys = species_keys(config, train_z)
    env = environment_columns(config)
    support = species_support(config, train_z)
    report = []
    for row, key, value in zip(z, species_keys(config, z), param_values(config, z)):
        if key not in support:
            report.append(f"no {key} training rows (trained on {', '.join(support)})")
            continue
        near = train_z[train_keys == key]
        why = param_problem(config, ranges, key, float(value))
        if why is not None:
            report.append(why)
            continue
        for what, part, cols in (
            ("environment", "environment (occupations, distance)", env),
            ("descriptor", "descriptor (with the run's parameter)", slice(None)),
        ):
            d = float(np.sqrt(((near[:, cols] - row[cols]) ** 2).sum(-1).min()))
            if not d <= support[key][what]:
                why = (
                    f"its {key} {part} is {d:.3g} standardised units from the nearest of the "
                    f"{len(near)} {key} training rows, beyond their range "
                    f"({support[key][what]:.3g})"
                )
                break
        report.append(why)
    return report
