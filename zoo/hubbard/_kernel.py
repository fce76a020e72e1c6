"""Kernel ridge regression of Hubbard U or V on rotation invariants of the occupation irreps.

The inputs are those of the tensor-square networks (:func:`onsite_features`,
:func:`intersite_features`); the descriptor of a row is the ``0e`` part of the tensor square
of each site's ``occs_sum`` and ``occs_prod`` (:func:`invariants`), the run's U_in / V_in and
(V) the pair distance, standardised on the training rows, plus the species one-hot. The
prediction is ``mean + std * sum_i alpha_i exp(-gamma |z - z_i|^2)`` over the training rows
``z_i``. Rotation, reflection and spin-swap invariance follow from the descriptor.

Why a kernel and not only HubbardML's network: on the same cluster splits of ``data/hubbard``
it errs 3-4x less (``docs/experiments.md``, Hubbard models), it has no initialisation to get
stuck in, and a sum of Gaussians stays bounded off the data where the network (a high-degree
polynomial of its inputs) blew up to 1e5 eV. It also knows when it is off the data, per
species: a row farther from every training row of its species (U: the metal; V: the
ligand-metal pair) than a few times the largest such distance among the training rows of that
species (:meth:`KernelModel.species_support`) is refused by :meth:`KernelModel.check_support`,
and so is a row of a species without training rows or whose U_in / V_in lies outside the
values of the species' training rows (:meth:`KernelModel.param_ranges`, kept in the config).
"""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._dtype import resolve_float
from .._hub_mixin import HubMixin
from ._features import invariants, occs_prod_irreps, occs_sum_irreps, onsite_irreps
from ._models import _zoo_version, intersite_input_irreps
from ._prediction import PredictsRuns
from ._support import SUPPORT_FACTOR, param_problem, param_ranges, species_support, support_report

KERNEL_TYPE = "hubbard-kernel"
KINDS = ("onsite", "intersite")
#: smallest ridge: below it (K + lam I) is so ill-conditioned that float32 weights move
#: predictions by meV (measured: 2 meV at 1e-5, 0.2 meV at 1e-4, on ~270 V rows)
LAMBDA_MIN = 1e-4
#: smallest spread a descriptor component is standardised by. The invariants are quadratic
#: in occupations (0..1): the l = 6, 8 products of a near-cubic site vary by ~1e-6 and, divided
#: by that, a rattled cell's 1e-4 would sit 1e2-1e6 units away (every row "off the data")
STD_FLOOR = 1e-3
SPECIES_WEIGHT = 3.0  # one-hot scale: rows of two species are 18 (standardised units^2) apart


def _site_invariants(x, n_species: int, l: int, xp) -> tuple:
    """``(one-hot, invariants of occs_sum and occs_prod)`` of :func:`site_features` rows."""
    a, b = n_species, n_species + occs_sum_irreps(l).dim
    c = b + occs_prod_irreps(l).dim
    inv = [
        invariants(x[..., a:b], occs_sum_irreps(l), xp),
        invariants(x[..., b:c], occs_prod_irreps(l), xp),
    ]
    return x[..., :a], inv


def raw_descriptor(kind: str, n_species: int, inputs, xp=np) -> tuple:
    """``(one-hots, invariants)`` of a batch of model inputs: `inputs` = ``(x,)`` (U, the
    :func:`onsite_features` array) or ``(p_site, d_site, edge)`` (V), numpy or jax per `xp`.
    Shapes ``(..., n_onehot)``, ``(..., n_inv)``."""
    if kind == "onsite":
        (x,) = inputs
        onehot, inv = _site_invariants(x, n_species, 2, xp)
        return onehot, xp.concatenate(inv + [x[..., -1:]], axis=-1)  # + U_in
    p, d, edge = inputs
    p_hot, p_inv = _site_invariants(p, n_species, 1, xp)
    d_hot, d_inv = _site_invariants(d, n_species, 2, xp)
    inv = xp.concatenate(p_inv + d_inv + [edge[..., :2]], axis=-1)  # + distance, V_in
    return xp.concatenate([p_hot, d_hot], axis=-1), inv


class KernelModel(HubMixin, PredictsRuns, eqx.Module):
    """Hubbard U (``kind="onsite"``) or V (``"intersite"``) by kernel ridge regression.

    Build it with :meth:`fit`; call it like the networks: ``model(x)`` (U) or
    ``model(p_site, d_site, edge)`` (V) -> ``(...)`` eV (JAX, differentiable);
    :meth:`predict_numpy` is the same function in float64 numpy (no compilation).
    """

    train_z: Float[Array, "n dim"]
    train_y: Float[Array, " n"]
    alpha: Float[Array, " n"]
    config: dict[str, Any] = eqx.field(static=True)

    def __init__(self, config: dict, train_z, train_y, alpha):
        """`config` as :meth:`fit` writes it; `train_z` the standardised training
        descriptors ``(n_train, dim)``, `train_y` their labels (eV; kept so that
        :meth:`extend` can refit), `alpha` the ridge weights ``(n_train,)``."""
        _check_config(config)
        dtype = jnp.dtype(config["dtype"])
        n, dim = config["n_train"], config["descriptor_dim"]
        shapes = (np.shape(train_z), np.shape(train_y), np.shape(alpha))
        if shapes != ((n, dim), (n,), (n,)):
            raise ValueError(
                f"KernelModel: train_z, train_y, alpha of shapes {shapes} do not match config "
                f"(n_train {n}, descriptor_dim {dim})"
            )
        self.config = config
        self.train_z = jnp.asarray(train_z, dtype)
        self.train_y = jnp.asarray(train_y, dtype)
        self.alpha = jnp.asarray(alpha, dtype)

    @classmethod
    def fit(
        cls,
        species: list[str],
        inputs: tuple,
        targets: Float[np.ndarray, " n"],
        *,
        kind: str,
        gamma: float,
        lam: float,
        dtype=None,
    ) -> "KernelModel":
        """Solve the ridge system on training rows.

        **Arguments:** the model's `species` (one-hot order of the features), the training
        `inputs` (``(x,)`` or ``(p_site, d_site, edge)`` arrays or IrrepsArrays), `targets`
        (eV, ``(n,)``), `kind` ("onsite" / "intersite"), kernel width `gamma` (per
        standardised unit^2) and ridge `lam` (>= :data:`LAMBDA_MIN`), `dtype` of the stored
        arrays (None: float32, or float64 under x64).
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not (np.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        if not (np.isfinite(lam) and lam >= LAMBDA_MIN):
            raise ValueError(f"lam must be >= {LAMBDA_MIN} (float32 conditioning), got {lam!r}")
        arrays = tuple(np.asarray(getattr(a, "array", a), np.float64) for a in inputs)
        _check_inputs(kind, len(species), arrays)
        y = np.asarray(targets, np.float64).reshape(-1)
        n = len(arrays[0])
        if y.shape != (n,) or n < 2 or not np.isfinite(y).all():
            raise ValueError(f"targets: need {max(n, 2)} finite values for {n} rows, got {y.shape}")
        onehot, inv = raw_descriptor(kind, len(species), arrays)
        mean, std = inv.mean(0), inv.std(0)
        scale = 1 / np.maximum(std, STD_FLOOR)
        z = np.concatenate([(inv - mean) * scale, SPECIES_WEIGHT * onehot], axis=1)
        config = {
            "model_type": KERNEL_TYPE,
            "zoo_version": _zoo_version(),
            "kind": kind,
            "species": list(species),
            "l": 2,
            "bond_lmax": 0,
            "residual": False,
            "gamma": float(gamma),
            "lam": float(lam),
            "species_weight": SPECIES_WEIGHT,
            "descriptor_dim": int(z.shape[1]),
            "input_stats": {"descriptor": {"mean": mean.tolist(), "scale": scale.tolist()}},
            "dtype": jnp.dtype(resolve_float(dtype)).name,
        }
        return cls._solve(config, z, y)

    @classmethod
    def _solve(cls, config: dict, z: np.ndarray, y: np.ndarray) -> "KernelModel":
        """The ridge weights, target scaling and support radius of descriptors `z`, labels `y`."""
        n = len(y)
        t_mean, t_std = float(y.mean()), float(y.std()) if y.std() > 1e-8 else 1.0
        sq = _sq_dist(z, z)
        k = np.exp(-config["gamma"] * sq)
        alpha = np.linalg.solve(k + config["lam"] * np.eye(n), (y - t_mean) / t_std)
        d = np.sqrt(sq)
        d[d < 1e-9] = np.inf  # itself and exact duplicates
        nearest = d.min(1)
        support = float(nearest[np.isfinite(nearest)].max()) if np.isfinite(nearest).any() else None
        config = config | {
            "n_train": int(n), "target_mean": t_mean, "target_std": t_std,
            # all species pooled (the cards report it); the guard uses species_support()
            "support_distance": None if support is None else SUPPORT_FACTOR * support,
        }  # fmt: skip
        # recomputed on every solve: extend() widens it with the rows it adds
        config["param_in_range"] = param_ranges(config, z)
        return cls(config, z, y, alpha)

    def extend(self, inputs: tuple, targets: Float[np.ndarray, " m"]) -> "KernelModel":
        """This model refit on its training rows plus `m` new ones (fine-tuning on your own
        hp.x labels): same width, ridge and descriptor scaling; new rows with the species
        of this model only. `inputs` as for :meth:`__call__` (arrays ``(m, dim)``), `targets`
        eV ``(m,)``. ``config["extended_rows"]`` counts the rows added since :meth:`fit`."""
        arrays = tuple(np.asarray(getattr(a, "array", a), np.float64) for a in inputs)
        _check_inputs(self.config["kind"], len(self.config["species"]), arrays)
        y = np.asarray(targets, np.float64).reshape(-1)
        if y.shape != (len(arrays[0]),) or not np.isfinite(y).all():
            raise ValueError(f"targets: need {len(arrays[0])} finite values, got {y.shape}")
        z = np.concatenate([np.asarray(self.train_z, np.float64), self.descriptor(*arrays)])
        y = np.concatenate([np.asarray(self.train_y, np.float64), y])
        added = self.config.get("extended_rows", 0) + len(arrays[0])
        return self._solve(self.config | {"extended_rows": added}, z, y)

    @classmethod
    def from_config(cls, config: dict) -> "KernelModel":
        """A model of the right shapes (zero weights) from a :attr:`config` dict."""
        return cls.skeleton_from_config(config)

    @classmethod
    def skeleton_from_config(cls, config: dict) -> "KernelModel":
        """Zero arrays of the config's shapes: for loading weights into."""
        _check_config(config)
        n, dim = config["n_train"], config["descriptor_dim"]
        return cls(config, np.zeros((n, dim)), np.zeros(n), np.zeros(n))

    @property
    def irreps_in(self):
        n = len(self.config["species"])
        if self.config["kind"] == "onsite":
            return onsite_irreps(n, 2)
        return intersite_input_irreps(n, 0)

    def descriptor(self, *inputs, xp=np):
        """Standardised descriptors ``(..., dim)`` of model inputs (numpy or jax per `xp`)."""
        dims = _input_dims(self.config["kind"], len(self.config["species"]))
        if len(inputs) != len(dims) or any(a.shape[-1] != d for a, d in zip(inputs, dims)):
            raise ValueError(
                f"inputs: this {self.config['kind']} model (species {self.config['species']}) "
                f"takes {len(dims)} array(s) of last dims {dims}, got "
                f"{[tuple(a.shape) for a in inputs]}"
            )
        onehot, inv = raw_descriptor(self.config["kind"], len(self.config["species"]), inputs, xp)
        stats = self.config["input_stats"]["descriptor"]
        dtype = inv.dtype
        z = (inv - xp.asarray(stats["mean"], dtype)) * xp.asarray(stats["scale"], dtype)
        return xp.concatenate([z, self.config["species_weight"] * onehot], axis=-1)

    def __call__(self, *inputs, dense=None) -> Float[Array, "..."]:
        """U or V (eV) of a batch of inputs, in JAX; `dense` is accepted for the networks'
        call signature and ignored."""
        inputs = tuple(jnp.asarray(getattr(a, "array", a), self.train_z.dtype) for a in inputs)
        z = self.descriptor(*inputs, xp=jnp)
        sq = jnp.sum((z[..., None, :] - self.train_z) ** 2, axis=-1)
        y = jnp.exp(-self.config["gamma"] * sq) @ self.alpha
        return self.config["target_std"] * y + self.config["target_mean"]

    def predict_numpy(self, *inputs) -> Float[np.ndarray, "..."]:
        """:meth:`__call__` in float64 numpy (concrete inputs; no tracing or compilation)."""
        z = self.descriptor(*(np.asarray(getattr(a, "array", a), np.float64) for a in inputs))
        train = np.asarray(self.train_z, np.float64)
        flat = z.reshape(-1, z.shape[-1])
        y = np.exp(-self.config["gamma"] * _sq_dist(flat, train)) @ np.asarray(
            self.alpha, np.float64
        )
        return (self.config["target_std"] * y + self.config["target_mean"]).reshape(z.shape[:-1])

    def distance_to_training(self, *inputs) -> Float[np.ndarray, "..."]:
        """Distance (standardised descriptor units) of each row to its nearest training row."""
        z = self.descriptor(*(np.asarray(getattr(a, "array", a), np.float64) for a in inputs))
        flat = z.reshape(-1, z.shape[-1])
        d = np.sqrt(_sq_dist(flat, np.asarray(self.train_z, np.float64)).min(1))
        return d.reshape(z.shape[:-1])

    def species_support(self) -> dict[str, dict]:
        """``{species: {"rows", "environment", "descriptor"}}``: the training rows and support
        radii per species of the training rows (U: the metal, ``"Ni"``; V: ligand-metal,
        ``"O-Ni"``), :func:`zoo.hubbard._support.species_support`."""
        return species_support(self.config, np.asarray(self.train_z, np.float64))

    def param_ranges(self) -> dict[str, list[float]]:
        """``{species: [lowest, highest]}`` U_in (U model) or V_in (V model) in eV of the
        training rows, as stored in ``config["param_in_range"]``. Weights saved before the
        range was stored have no such key: their range is recovered from the stored training
        descriptors (the same values up to the weights' float precision)."""
        if "param_in_range" in self.config:
            return self.config["param_in_range"]
        return param_ranges(self.config, np.asarray(self.train_z, np.float64))

    def param_problem(self, species: str, value: float) -> str | None:
        """None when a run's U_in / V_in `value` (eV) of `species` (``"Ni"``; V: ``"O-Ni"``)
        lies inside the training range (:meth:`param_ranges`, widened by
        :data:`zoo.hubbard._support.PARAM_MARGIN`) or `species` has no training rows, else
        why not: the species, the value and the range."""
        if not (isinstance(value, int | float) and np.isfinite(value)):
            raise ValueError(f"value: expected a finite number of eV, got {value!r}")
        return param_problem(self.config, self.param_ranges(), species, float(value))

    def support_report(self, *inputs) -> list[str | None]:
        """Per row of `inputs` (as for :meth:`__call__`, arrays ``(m, dim)``): None when it
        lies within the training range of its species, else why not
        (:func:`zoo.hubbard._support.support_report`)."""
        z = self.descriptor(*(np.asarray(getattr(a, "array", a), np.float64) for a in inputs))
        train_z = np.asarray(self.train_z, np.float64)
        return support_report(self.config, train_z, z.reshape(-1, z.shape[-1]), self.param_ranges())

    def check_support(self, inputs: tuple, names: list[str]) -> None:
        """ValueError naming the first row of `inputs` outside the training range of its
        species (:meth:`support_report`): an extrapolation, where the kernel would only
        return the training mean."""
        report = self.support_report(*inputs)
        bad = [i for i, why in enumerate(report) if why is not None]
        if bad:
            raise ValueError(
                f"{names[bad[0]]}: {report[bad[0]]} ({len(bad)} of {len(report)} such rows): "
                "outside what the model was trained on; use hp.x for it"
            )


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0.0)


def _input_dims(kind: str, n_species: int) -> list[int]:
    """Last dims of the model inputs: ``[x]`` (U) or ``[p_site, d_site, edge]`` (V)."""
    if kind == "onsite":
        return [onsite_irreps(n_species, 2).dim]
    return [ir.dim for ir in intersite_input_irreps(n_species, 0).values()]


def _check_inputs(kind: str, n_species: int, arrays: tuple) -> None:
    dims = _input_dims(kind, n_species)
    if len(arrays) != len(dims) or any(
        a.ndim != 2 or a.shape[1] != d for a, d in zip(arrays, dims)
    ):
        got = [a.shape for a in arrays]
        raise ValueError(
            f"inputs: {kind} kernel needs {len(dims)} arrays (n, dim) of dims {dims}, got {got}"
        )
    if len({len(a) for a in arrays}) != 1 or not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("inputs: the arrays must have the same rows and finite values")


def _check_config(config: dict) -> None:
    if not isinstance(config, dict) or config.get("model_type") != KERNEL_TYPE:
        raise ValueError(f"config: expected model_type {KERNEL_TYPE!r}")
    missing = {
        "kind",
        "species",
        "gamma",
        "lam",
        "n_train",
        "descriptor_dim",
        "input_stats",
        "dtype",
    }
    missing -= set(config)
    if missing:
        raise ValueError(f"config: kernel model config lacks {sorted(missing)}")
    if config["kind"] not in KINDS:
        raise ValueError(f"config: kind must be one of {KINDS}, got {config['kind']!r}")
    ranges = config.get("param_in_range", {})  # absent in weights saved before it was kept
    if not isinstance(ranges, dict) or not all(
        isinstance(r, list | tuple)
        and len(r) == 2
        and all(isinstance(x, int | float) and np.isfinite(x) for x in r)
        and r[0] <= r[1]
        for r in ranges.values()
    ):
        raise ValueError("config: param_in_range must map each species to [lowest, highest] eV")


def cluster_folds(groups, folds: int, seed: int = 0) -> np.ndarray:
    """Fold index (0 .. `folds` - 1) of each row: whole groups, shuffled, dealt round-robin."""
    uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if len(uniq) < folds:
        raise ValueError(f"cross-validation: {len(uniq)} clusters for {folds} folds")
    return (np.random.default_rng(seed).permutation(len(uniq)) % folds)[inverse]


def cross_validate(
    species: list[str],
    inputs: tuple,
    targets: np.ndarray,
    groups: np.ndarray,
    *,
    kind: str,
    gammas=(0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
    lams=(1e-4, 1e-3, 1e-2, 1e-1),
    folds: int = 5,
    seed: int = 0,
    rule: str = "min",
) -> tuple[float, float, list[dict]]:
    """``(gamma, lam, table)`` by `folds`-fold cross-validation on training rows, whole
    `groups` (duplicate clusters) per fold so that no near-duplicate of a held-out row is fit.

    `rule` ``"min"``: the grid point of lowest mean relative error; ``"one-se"``: the largest
    ridge whose error is within one standard error (over folds) of that lowest, then its
    lowest-error width (the smoothest fit the folds cannot tell apart from the best; compared
    in docs/experiments.md). `table`: every grid point's ``{"gamma", "lam", "mare", "se"}``."""
    if rule not in ("min", "one-se"):
        raise ValueError(f"rule must be 'min' or 'one-se', not {rule!r}")
    fold = cluster_folds(groups, folds, seed)
    arrays = tuple(np.asarray(getattr(a, "array", a), np.float64) for a in inputs)
    y = np.asarray(targets, np.float64)
    table = []
    for gamma in gammas:
        for lam in lams:
            err = []
            for f in range(folds):
                tr, te = fold != f, fold == f
                if te.sum() == 0 or tr.sum() < 2:
                    continue
                m = KernelModel.fit(species, tuple(a[tr] for a in arrays), y[tr], kind=kind,
                                    gamma=gamma, lam=lam, dtype=jnp.float32)  # fmt: skip
                p = m.predict_numpy(*(a[te] for a in arrays))
                err.append(np.abs(p - y[te]) / np.abs(y[te]))
            per_fold = [e.mean() for e in err]
            se = float(np.std(per_fold, ddof=1) / np.sqrt(len(err))) if len(err) > 1 else 0.0
            table.append(
                {"gamma": gamma, "lam": lam, "mare": float(np.concatenate(err).mean()), "se": se}
            )
    best = min(table, key=lambda r: r["mare"])
    if rule == "one-se":
        near = [r for r in table if r["mare"] <= best["mare"] + best["se"]]
        lam = max(r["lam"] for r in near)
        best = min((r for r in near if r["lam"] == lam), key=lambda r: r["mare"])
    return best["gamma"], best["lam"], table


__all__ = ["KERNEL_TYPE", "KernelModel", "cluster_folds", "cross_validate", "raw_descriptor"]
