"""Field derivatives: `mixed_derivatives` against brute-force autodiff, and the derivative heads
of `ResponseModel` against finite differences of the field (f64)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_heads import BACKBONE, small_bto

from zoo.graph import build_graph
from zoo.heads import COULOMB
from zoo.model import ResponseModel, make_config
from zoo.response import mixed_derivatives


def _toy_energy(node_graph, n_graphs):
    w = jnp.linspace(0.3, 1.7, 9).reshape(3, 3)

    def energy(x, g):
        gi = g[node_graph]
        u = jnp.einsum("ia,ab,ib->i", x, w, gi)
        per_node = jnp.sin(u) + 0.3 * u**3 + jnp.sum(x**2, -1) * jnp.sum(gi**2, -1) * 0.1
        per_node = per_node + 0.2 * jnp.cos(x[:, 0]) * jnp.tanh(gi[:, 1] + gi[:, 2] ** 2)
        return jax.ops.segment_sum(per_node, node_graph, num_segments=n_graphs)

    return energy


def test_mixed_derivatives_match_brute_force(x64):
    rng = np.random.default_rng(0)
    node_graph = jnp.asarray([0, 0, 0, 1, 1])
    x = jnp.asarray(rng.normal(size=(5, 3)))
    g0 = jnp.asarray(rng.normal(size=(2, 3)) * 0.3)  # away from zero: all terms contribute
    energy = _toy_energy(node_graph, 2)
    d = mixed_derivatives(energy, x, g0, order=2)

    total = lambda x, g: jnp.sum(energy(x, g))  # noqa: E731
    gx = jax.grad(total, argnums=0)
    h_xg = jax.jacfwd(gx, argnums=1)(x, g0)  # (n, 3, G, 3)
    t_xgg = jax.jacfwd(jax.jacfwd(gx, argnums=1), argnums=1)(x, g0)  # (n, 3, G, 3, G, 3)
    h_gg = jax.hessian(total, argnums=1)(x, g0)  # (G, 3, G, 3)
    ng = np.asarray(node_graph)
    n = np.arange(5)
    np.testing.assert_allclose(d["energy"], energy(x, g0), rtol=1e-12)
    np.testing.assert_allclose(d["d_node"], gx(x, g0), rtol=1e-12)
    np.testing.assert_allclose(d["d_global"], jax.grad(total, argnums=1)(x, g0), rtol=1e-12)
    want = np.asarray(h_xg)[n, :, ng, :].transpose(0, 2, 1)  # [i, a, k]
    np.testing.assert_allclose(d["d_global_node"], want, rtol=1e-10, atol=1e-12)
    want3 = np.asarray(t_xgg)[n, :, ng, :, ng, :]  # [i, k, a, b]
    np.testing.assert_allclose(d["d_node_global_global"], want3, rtol=1e-10, atol=1e-12)
    want_gg = np.asarray(h_gg)[[0, 1], :, [0, 1], :]
    np.testing.assert_allclose(d["d_global_global"], want_gg, rtol=1e-10, atol=1e-12)

    d_rev = mixed_derivatives(energy, x, g0, order=2, mode="reverse_over_forward")
    for key, value in d.items():
        np.testing.assert_allclose(d_rev[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    d1 = mixed_derivatives(energy, x, g0, order=1)
    np.testing.assert_allclose(d1["d_global_node"], d["d_global_node"], rtol=1e-12)
    with pytest.raises(ValueError, match="order"):
        mixed_derivatives(energy, x, g0, order=3)
    with pytest.raises(ValueError, match="mode"):
        mixed_derivatives(energy, x, g0, mode="central_differences")
    with pytest.raises(ValueError, match="global_var"):
        mixed_derivatives(energy, x, g0[0], order=1)


@pytest.fixture(scope="module")
def electric():
    with jax.enable_x64(True):
        config = make_config([56, 22, 8], ["born_charges", "raman_tensors", "dielectric"],
                             formulation="electric", backbone={**BACKBONE, "lmax": 2, "parity": False},
                             dtype="float64", acoustic_sum_rule=False)  # fmt: skip
        config["field_scale"] = 0.8
        model = ResponseModel(config, key=jax.random.key(5))
        graph = build_graph(small_bto(), config["backbone"]["r_max"], dtype=np.float64)
        out = eqx.filter_jit(lambda m, g: m(g))(model, graph)
        yield model, graph, jax.tree.map(np.asarray, out)


@eqx.filter_jit
def _field_first_derivatives(model, graph, field):
    """dE/dr, dE/deps and d2E/deps dr at a given field (autodiff once: the FD is in the field)."""
    d = mixed_derivatives(lambda r, e: model.energy(graph, r, e), graph.positions, field, order=1)
    return d["d_node"], d["d_global"], d["d_global_node"]


def test_electric_heads_match_field_finite_differences(electric):
    model, graph, out = electric
    with jax.enable_x64(True):
        h = 1e-4
        n = int(graph.node_mask.sum())
        vol = float(graph.volume()[0])
        z_fd = np.zeros((n, 3, 3))
        r_fd = np.zeros((n, 3, 3, 3))
        eps_fd = np.zeros((3, 3))
        for b in range(3):
            e = np.zeros((graph.n_graphs, 3))
            e[:, b] = h
            plus = [np.asarray(x) for x in _field_first_derivatives(model, graph, jnp.asarray(e))]
            minus = [np.asarray(x) for x in _field_first_derivatives(model, graph, jnp.asarray(-e))]
            z_fd[:, b, :] = -(plus[0] - minus[0])[:n] / (2 * h)  # [i, field, displacement]
            r_fd[..., b] = -COULOMB * np.transpose((plus[2] - minus[2])[:n], (0, 2, 1)) / (2 * h)
            eps_fd[:, b] = -(4 * math.pi * COULOMB / vol) * (plus[1] - minus[1])[0] / (2 * h)
        eps_fd += np.eye(3)
    assert np.abs(z_fd).max() > 1e-3 and np.abs(r_fd).max() > 1e-4
    np.testing.assert_allclose(out["born_charges"][:n], z_fd, atol=1e-7 * np.abs(z_fd).max())
    np.testing.assert_allclose(out["raman_tensors"][:n], r_fd, atol=1e-6 * np.abs(r_fd).max())
    np.testing.assert_allclose(out["dielectric"][0], eps_fd, atol=1e-6 * np.abs(eps_fd).max())


def test_born_order_switch_transposes(electric):
    model, graph, out = electric
    with jax.enable_x64(True):
        config = {**model.config, "born_order": "displacement_first"}
        other = ResponseModel(config, key=jax.random.key(5))  # same key: same weights
        swapped = np.asarray(eqx.filter_jit(lambda m, g: m(g))(other, graph)["born_charges"])
    np.testing.assert_allclose(swapped, np.swapaxes(out["born_charges"], -1, -2), rtol=1e-12)


def test_shielding_matches_finite_differences(x64):
    config = make_config([56, 22, 8], ["shielding"], formulation="magnetic",
                         backbone={**BACKBONE, "lmax": 2, "num_layers": 3}, dtype="float64")  # fmt: skip
    config["field_scale"] = 10.0  # B and mu meet only through gates: small at init
    model = ResponseModel(config, key=jax.random.key(2))
    graph = build_graph(small_bto(), config["backbone"]["r_max"], dtype=np.float64)
    sigma = np.asarray(eqx.filter_jit(lambda m, g: m(g))(model, graph)["shielding"])
    n, h = int(graph.node_mask.sum()), 1e-4
    moments = jnp.zeros((graph.n_nodes, 3))

    grad_mu = eqx.filter_jit(
        lambda model, field: jax.grad(lambda m: model.energy(graph, field=field, moments=m).sum())(
            moments
        )
    )

    def d_mu(field):  # dE/dmu (autodiff) at a given B
        return np.asarray(grad_mu(model, field))

    fd = np.zeros((n, 3, 3))
    for b in range(3):
        e = np.zeros((graph.n_graphs, 3))
        e[:, b] = h
        fd[:, :, b] = (d_mu(jnp.asarray(e)) - d_mu(jnp.asarray(-e)))[:n] / (2 * h)
    assert np.abs(fd).max() > 1e-8
    np.testing.assert_allclose(sigma[:n], fd, atol=1e-5 * np.abs(fd).max())


def test_acoustic_sum_rule_switch():
    config = make_config([56, 22, 8], ["born_charges", "raman_tensors"],
                         backbone={**BACKBONE, "lmax": 3})  # fmt: skip
    config["heads"]["born_charges"]["shift"] = [2.0, 5.0, -2.0]
    model = ResponseModel(config, key=jax.random.key(1))
    graph = build_graph([small_bto(0), small_bto(1, rattle=0.2)], 4.0)
    call = eqx.filter_jit(
        lambda m, g, asr: m(g, asr),
    )
    on, off = call(model, graph, True), call(model, graph, False)
    for name in ("born_charges", "raman_tensors"):
        per_graph_on = np.asarray(jax.ops.segment_sum(on[name], graph.node_graph, graph.n_graphs))
        per_graph_off = np.asarray(jax.ops.segment_sum(off[name], graph.node_graph, graph.n_graphs))
        assert np.abs(per_graph_on[:2]).max() < 1e-5 * np.abs(off[name]).max()
        assert np.abs(per_graph_off[:2]).max() > 1e-3  # the switch actually changes something
        # the constraint only removes the per-structure mean
        diff = np.asarray(off[name] - on[name])[:10]
        np.testing.assert_allclose(diff[:5], np.broadcast_to(diff[0], diff[:5].shape), atol=1e-5)
