"""The kernel models' support guard, per species: is a row inside the training data?

A row's species is read from the one-hot tail of its descriptor (U: the metal, ``"Ni"``;
V: ligand-metal, ``"O-Ni"``). Its distance to the nearest training row *of that species* is
compared with that species' own range, a factor times the largest nearest-neighbour distance
among its distinct training rows, twice: in the environment part of the descriptor
(occupation invariants and pair distance) and in the whole descriptor (with the run's U_in /
V_in). One radius for all species let a new family of a known element through (held-out
LiFeO2: U 30 %, V 106 % off, every row answered; ``docs/experiments.md``).
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


def support_report(config: dict, train_z: np.ndarray, z: np.ndarray) -> list[str | None]:
    """Per standardised descriptor row of `z` ``(m, dim)``: None inside the training range
    of its species (:func:`species_support` of `train_z`), else why not: no training rows of
    its species, or its environment or whole descriptor too far from them."""
    train_keys = species_keys(config, train_z)
    env = environment_columns(config)
    support = species_support(config, train_z)
    report = []
    for row, key in zip(z, species_keys(config, z)):
        if key not in support:
            report.append(f"no {key} training rows (trained on {', '.join(support)})")
            continue
        near = train_z[train_keys == key]
        why = None
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
