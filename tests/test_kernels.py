"""Fast formulations against the straightforward ones they replace, in float32 and float64."""

from __future__ import annotations

import functools

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo._sh_tensor_product import channelwise_tensor_product, paths
from zoo.response import mixed_derivatives


def _energy(node_graph, n_graphs):
    """A per-graph energy with non-zero mixed derivatives of every order used."""
    w = jnp.linspace(-0.8, 1.3, 9).reshape(3, 3)

    def energy(x, g):
        gi = g[node_graph]
        u = jnp.einsum("ia,ab,ib->i", x, w.astype(x.dtype), gi)
        per_node = jnp.tanh(u) * jnp.sum(x**2, -1) + jnp.exp(0.2 * gi[:, 0]) * jnp.sin(x[:, 1])
        per_node = per_node + 0.3 * u**2 * jnp.cos(gi[:, 2] + x[:, 0])
        return jax.ops.segment_sum(per_node, node_graph, num_segments=n_graphs)

    return energy


def _straightforward(energy, x, g):
    """Every derivative by nested jacfwd of the gradient, indexed per node's own graph."""
    total = lambda x, g: jnp.sum(energy(x, g))  # noqa: E731
    grad_x = jax.grad(total, argnums=0)
    return {
        "energy": energy(x, g),
        "d_node": grad_x(x, g),
        "d_global": jax.grad(total, argnums=1)(x, g),
        "d_global_node": jax.jacfwd(grad_x, argnums=1)(x, g),  # (n, 3, G, 3)
        "d_node_global_global": jax.jacfwd(jax.jacfwd(grad_x, argnums=1), argnums=1)(x, g),
        "d_global_global": jax.hessian(total, argnums=1)(x, g),  # (G, 3, G, 3)
    }


@pytest.mark.parametrize("double", [False, True], ids=["f32", "f64"])
@pytest.mark.parametrize("order", [1, 2])
def test_forward_over_reverse_equals_straightforward(double, order):
    node_graph = jnp.asarray([0, 0, 1, 1, 1, 2])
    rng = np.random.default_rng(3)
    with jax.enable_x64(double):
        dtype = jnp.float64 if double else jnp.float32
        x = jnp.asarray(rng.normal(size=(6, 3)), dtype)
        g = jnp.asarray(rng.normal(size=(3, 3)) * 0.4, dtype)
        energy = _energy(node_graph, 3)
        # compiled whole: op-by-op dispatch would compile each of hundreds of small operations
        fast = jax.jit(lambda x, g: mixed_derivatives(energy, x, g, order=order))(x, g)
        ref = jax.jit(lambda x, g: _straightforward(energy, x, g))(x, g)
        other = jax.jit(
            lambda x, g: mixed_derivatives(energy, x, g, order=order, mode="reverse_over_forward")
        )(x, g)
    n, ng = np.arange(6), np.asarray(node_graph)
    want = {
        "energy": ref["energy"],
        "d_node": ref["d_node"],
        "d_global": ref["d_global"],
        "d_global_node": np.asarray(ref["d_global_node"])[n, :, ng, :].transpose(0, 2, 1),
    }
    if order == 2:
        t = np.asarray(ref["d_node_global_global"])
        want["d_node_global_global"] = t[n, :, ng, :, ng, :]
        want["d_global_global"] = np.asarray(ref["d_global_global"])[[0, 1, 2], :, [0, 1, 2], :]
    assert set(fast) == set(want)
    # float32: rounding of values of order 10 through three derivatives
    tol = dict(rtol=1e-10, atol=1e-12) if double else dict(rtol=1e-4, atol=1e-4)
    for key, value in want.items():
        assert fast[key].dtype == dtype, key
        assert fast[key].shape == value.shape, key
        np.testing.assert_allclose(fast[key], value, err_msg=key, **tol)
        np.testing.assert_allclose(other[key], value, err_msg=key, **tol)


def _dense_product(x, irreps_x, y, keep, w):
    """``channelwise_tensor_product`` spelled out with dense Clebsch-Gordan blocks."""
    keep_set = {ir for _, ir in e3nn.Irreps(keep)}
    blocks, start, path = [], 0, 0
    for _, ir1 in irreps_x:
        for sl, (_, ir2) in zip(y.irreps.slices(), y.irreps):
            for ir3 in ir1 * ir2:
                if ir3 in keep_set:
                    cg = e3nn.clebsch_gordan(ir1.l, ir2.l, ir3.l) * np.sqrt(2 * ir3.l + 1)
                    xi = x[:, start : start + ir1.dim]
                    out = jnp.einsum(
                        "ijk,bic,bj->bkc", jnp.asarray(cg, x.dtype), xi, y.array[:, sl]
                    )
                    blocks.append(out * w[:, path, None, :])
                    path += 1
        start += ir1.dim
    return jnp.concatenate(blocks, axis=1)


def test_channelwise_product_derivatives_equal_the_dense_product():
    """The custom JVP of the slab product (used by the reverse pass, and by Born / Raman
    derivatives through forward-over-reverse) equals autodiff of the dense product."""
    irreps_x, keep = e3nn.Irreps("3x0e+3x1o+3x2e+3x1e"), e3nn.Irreps("0e+0o+1o+1e+2e+2o")
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(5, irreps_x.dim // 3, 3)))
        vec = jnp.asarray(rng.normal(size=(5, 3)))
        n_paths = paths(irreps_x, e3nn.Irreps("0e+1o+2e"), keep).num_irreps
        w = jnp.asarray(rng.normal(size=(5, n_paths, 3)))
        probe = jnp.asarray(rng.normal(size=(5, n_paths * 5 * 3)))  # d3 <= 5

        def loss(product, x, vec, w):
            y = e3nn.spherical_harmonics("0e+1o+2e", vec, True, "component")
            out = product(x, irreps_x, y, keep, w)
            return jnp.sum(jnp.tanh(out.reshape(5, -1) * probe[:, : out[0].size]))

        fast = functools.partial(loss, channelwise_tensor_product)
        dense = functools.partial(loss, _dense_product)
        args = (x, vec, w)
        np.testing.assert_allclose(fast(*args), dense(*args), rtol=1e-12)
        for a, b in zip(jax.grad(fast, (0, 1, 2))(*args), jax.grad(dense, (0, 1, 2))(*args)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        # forward-over-reverse, as Born charges use it
        tangent = jnp.asarray(rng.normal(size=vec.shape))
        hv = [jax.jvp(lambda v: jax.grad(f, 1)(x, v, w), (vec,), (tangent,))[1]
              for f in (fast, dense)]  # fmt: skip
        np.testing.assert_allclose(hv[0], hv[1], rtol=1e-10, atol=1e-12)
