"""Autodiff order of the field derivatives: forward-over-reverse vs reverse-over-forward.

Times `zoo.response.mixed_derivatives` of the BaTiO3 electric model's backbone (2-layer,
lmax-2 NequIP, random weights) on one 135-atom structure of ``data/batio3``: prediction of
first and second derivatives and one training step (gradient of the second derivatives).
Reported per case: the first call (compile) and the mean of `--repeats` further calls.

    python benchmarks/autodiff.py [--repeats 3] [--out benchmarks/results/autodiff.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp

from zoo.data.batio3 import DATA_DIR, load_batio3
from zoo.graph import build_graph
from zoo.model import ResponseModel, make_config
from zoo.response import mixed_derivatives

BACKBONE = dict(channels=8, lmax=2, r_max=4.5, num_layers=2, radial_hidden=32, parity=False,
                avg_num_neighbors=28.0)  # fmt: skip


def run(repeats: int) -> dict:
    config = make_config([56, 22, 8], ["born_charges", "raman_tensors"], formulation="electric",
                         backbone=BACKBONE)  # fmt: skip
    model = ResponseModel(config, key=jax.random.key(0))
    structure = load_batio3(DATA_DIR, ids=["00000"])[0]["structure"]
    graph = build_graph([structure], BACKBONE["r_max"])
    zeros = jnp.zeros((graph.n_graphs, 3))
    results = {}
    for mode in ("forward_over_reverse", "reverse_over_forward"):
        for order, train_step in ((1, False), (2, False), (2, True)):

            def derivs(m, g, order=order, mode=mode):
                d = mixed_derivatives(lambda r, e: m.energy(g, r, e), g.positions, zeros,
                                      order=order, mode=mode)  # fmt: skip
                return sum(jnp.sum(v**2) for k, v in d.items() if k.startswith("d_global_node")
                           or k == "d_node_global_global")  # fmt: skip

            fn = eqx.filter_jit(eqx.filter_grad(derivs) if train_step else derivs)
            t0 = time.perf_counter()
            jax.block_until_ready(fn(model, graph))
            compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(repeats):
                jax.block_until_ready(fn(model, graph))
            key = f"{mode}/order{order}/{'train_step' if train_step else 'predict'}"
            results[key] = {"compile_s": compile_s, "run_s": (time.perf_counter() - t0) / repeats}
            print(key, results[key], flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "autodiff.json")
    args = p.parse_args()
    results = run(args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
