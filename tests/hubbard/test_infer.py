"""The numpy inference path (`zoo.hubbard._infer`) is the JAX forward of the models."""

import contextlib
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

import zoo
from zoo.hubbard._features import onsite_irreps
from zoo.hubbard._infer import predict_u, predict_v
from zoo.hubbard._models import (
    IntersiteModel,
    OnsiteModel,
    input_statistics,
    intersite_input_irreps,
)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("layers", [1, 2])
def test_numpy_forward_is_the_jax_forward(precision, layers):
    rng = np.random.default_rng(layers)
    bond_lmax = 4 if layers == 2 else 0  # with and without bond harmonics in the V edge
    irr = intersite_input_irreps(3, bond_lmax)
    x = rng.normal(size=(16, onsite_irreps(2).dim)) * rng.uniform(0.1, 3, onsite_irreps(2).dim)
    xs = tuple(rng.normal(size=(16, irr[k].dim)) for k in ("p_site", "d_site", "edge"))
    # non-trivial standardisation and target scaling, as `fit_scalers` sets them
    u_stats = {"x": input_statistics(x, onsite_irreps(2))}
    v_stats = {k: input_statistics(a, irr[k]) for k, a in zip(("p_site", "d_site", "edge"), xs)}
    kw = {"hidden_layers": layers, "dtype": precision, "target_mean": 4.0, "target_std": 0.5}
    kw["residual"] = layers == 2  # the output plus U_in / V_in (param_offset) too
    kw["squash"] = layers == 1  # bounded gated layers (_squash) too
    with jax.enable_x64(True) if precision == "float64" else contextlib.nullcontext():
        u = OnsiteModel(["Mn", "Ni"], input_stats=u_stats, key=jax.random.key(1), **kw)
        v = IntersiteModel(
            ["Mn", "Ni", "O"], input_stats=v_stats, bond_lmax=bond_lmax, key=jax.random.key(2), **kw
        )
        # against JAX on the same dense form (test_models: the dense form is the path form)
        du, dv = u.dense_coefficients(), v.dense_coefficients()
        forward = eqx.filter_jit(lambda m, d, *a: m(*a, dense=d))
        ref_u, ref_v = np.asarray(forward(u, du, x)), np.asarray(forward(v, dv, *xs))
        got_u, got_v = predict_u(u, x, du), predict_v(v, *xs, dv)
    tol = 1e-10 if precision == "float64" else 2e-5
    assert got_u.dtype == np.dtype(precision) and got_v.shape == (16,)
    assert np.std(ref_u) > 1e-3 and np.std(ref_v) > 1e-3  # a function that depends on x
    np.testing.assert_allclose(got_u, ref_u, rtol=tol, atol=tol)
    np.testing.assert_allclose(got_v, ref_v, rtol=tol, atol=tol)


def test_shipped_models_answer_the_same_through_jax():
    """The shipped weights (float32) through numpy (what ``predict`` uses) and through the
    jitted JAX forward, on committed data rows (random inputs would sit off a kernel's data)."""
    from zoo.data.hubbard import DATA_DIR, load_rows, select_steps, u_dataset, v_dataset

    model = zoo.load("hubbard-uv")
    u, v = model.u_model, model.v_model
    rows = [r for r in load_rows(DATA_DIR / "labels.jsonl")
            if r.get("purpose") == "production"]  # fmt: skip
    # the rows the shipped model saw: fixed however the data set grows
    rows = select_steps(
        rows, Path(zoo.__file__).parent / "weights" / "hubbard-uv" / "data_steps.json"
    )
    us, vs = u_dataset(rows), v_dataset(rows)
    assert us["species"] == u.config["species"] and vs["species"] == v.config["species"]
    forward = eqx.filter_jit(lambda m, *a: m(*a))
    for m, predict, ds in ((u, predict_u, us), (v, predict_v, vs)):
        y = predict(m, *ds["inputs"])
        np.testing.assert_allclose(y, forward(m, *ds["inputs"]), rtol=1e-4, atol=1e-3)
        assert np.ptp(y) > 0.1 and np.mean(np.abs(y - ds["y"]) / ds["y"]) < 0.1  # eV; a real fit
