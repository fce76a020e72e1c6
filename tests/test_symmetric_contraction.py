"""The MACE product basis (`zoo._symmetric_contraction`): its coupling paths span e3nn-jax's
dense symmetric coupling tensors, and the contraction equals the dense evaluation."""

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo._symmetric_contraction import _dense, coupling_paths


def test_coupling_paths_span_the_dense_coupling_tensors(rng):
    """U (e3nn-jax's symmetric basis) = sum_p C[p, k] Sym(T_p) exactly, and so the paths
    evaluated on x (x) x (x) x give U contracted with x."""
    irreps = "0e+1o+2e"
    irs = [ir for _, ir in e3nn.Irreps(irreps)]
    x = rng.normal(size=9)
    for degree in (2, 3):
        for ir in ("0e", "1o", "2e"):
            paths, coeff = coupling_paths(irreps, degree, ir)
            u = np.asarray(
                e3nn.reduced_symmetric_tensor_product_basis(
                    e3nn.Irreps(irreps), degree, keep_ir=[ir]
                ).array
            )
            k = len(paths)
            assert k > 0 and coeff.shape == (k, k)
            t = np.stack([_dense(irs, p, e3nn.Irrep(ir)) for p in paths], axis=-1)
            rebuilt = np.einsum("...mp,pk->...km", t, coeff).reshape(u.shape)
            np.testing.assert_allclose(rebuilt, u, atol=1e-10)
            letters = "ijk"[:degree]
            dense = np.einsum(f"{letters}r,{','.join(letters)}->r", u, *[x] * degree)
            assert np.abs(dense).max() > 1e-3


def test_symmetric_contraction_equals_dense_coupling_tensors():
    """The coupling-path evaluation equals sum_k w[z, k, c] U[i.., k, m] x_i x_j .. per
    channel, with U the dense e3nn-jax basis (f64)."""
    from zoo._symmetric_contraction import SymmetricContraction

    with jax.enable_x64(True):
        irreps_in, per_channel = "2x0e+2x1o+2x2e", e3nn.Irreps("0e+1o+2e")
        sc = SymmetricContraction(irreps_in, "2x0e+2x1o+2x2e", 3, 2, dtype=jnp.float64,
                                  key=jax.random.key(0))  # fmt: skip
        a = e3nn.normal(irreps_in, jax.random.key(1), (3,)).astype(jnp.float64)
        species = jnp.array([0, 1, 1])
        out = np.asarray(sc(a, species).array)
        x = np.concatenate(
            [a.array[:, sl].reshape(3, 2, ir.dim) for sl, (_, ir) in zip(a.irreps.slices(), a.irreps)],
            axis=2,
        )  # fmt: skip
        expected = {}
        for (degree, ir), w in zip(sc.keys, sc.weights):
            u = np.asarray(e3nn.reduced_symmetric_tensor_product_basis(
                per_channel, degree, keep_ir=[ir]).array)  # fmt: skip
            k_count, dim = w.shape[1], e3nn.Irrep(ir).dim
            u = u.reshape(u.shape[:-1] + (k_count, dim))
            letters = "pqr"[:degree]
            operands = [x] * degree
            basis = np.einsum(
                f"{letters}km,{','.join('nc' + l for l in letters)}->nckm", u, *operands
            )
            wz = np.asarray(w)[np.asarray(species)] / np.sqrt(k_count)
            expected.setdefault(ir, []).append(np.einsum("nkc,nckm->ncm", wz, basis))
        for (_, ir), sl in zip(sc.irreps_out, sc.irreps_out.slices()):
            terms = expected[str(ir)]
            ref = sum(terms) / np.sqrt(len(terms))
            np.testing.assert_allclose(out[:, sl].reshape(ref.shape), ref, atol=1e-10)
