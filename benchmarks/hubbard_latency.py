"""Time to a Hubbard U/V prediction on a pw.x output, in a fresh process.

    .venv/bin/python benchmarks/hubbard_latency.py [MODEL] [--runs 3]

MODEL is a shipped name or a model folder (default ``hubbard-uv``). Each run is a new Python
process that times ``import zoo``, ``zoo.load(MODEL)``, the first ``predict`` (tracing and XLA
compilation included) and a second ``predict`` on the bundled MnO example. With
``--cache DIR`` the processes share JAX's persistent compilation cache
(``JAX_COMPILATION_CACHE_DIR``), so runs after the first skip compilation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "zoo" / "examples" / "hubbard-uv"

WORKER = """
import json, sys, time
t0 = time.perf_counter()
import zoo
t1 = time.perf_counter()
model = zoo.load(sys.argv[1])
t2 = time.perf_counter()
ex = sys.argv[2]
labels = open(ex + "/MnO.labels.txt").read().split()
kw = dict(occup=ex + "/MnO.occup.txt", labels=labels)
pred = model.predict(ex + "/MnO.out", **kw)
t3 = time.perf_counter()
model.predict(ex + "/MnO.out", **kw)
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_predict_s": t3 - t2,
                  "second_predict_s": t4 - t3, "U": {str(k): v for k, v in pred.U.items()}}))
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default="hubbard-uv")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cache", help="JAX persistent compilation cache folder shared by the runs")
    args = p.parse_args(argv)
    env = dict(os.environ)
    if args.cache:
        env["JAX_COMPILATION_CACHE_DIR"] = args.cache
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    rows = []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-c", WORKER, args.model, str(EXAMPLE)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| step | median (s) | runs |\n|---|---:|---|")
    for key in ("import_s", "load_s", "first_predict_s", "second_predict_s"):
        values = [r[key] for r in rows]
        print(f"| {key[:-2]} | {statistics.median(values):.2f} | "
              f"{', '.join(f'{v:.2f}' for v in values)} |")  # fmt: skip


if __name__ == "__main__":
    main()
