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
clock = lambda: (time.perf_counter(), time.process_time())
t0 = clock()
import zoo
t1 = clock()
model = zoo.load(sys.argv[1])
t2 = clock()
ex = sys.argv[2]
labels = open(ex + "/MnO.labels.txt").read().split()
kw = dict(occup=ex + "/MnO.occup.txt", labels=labels)
pred = model.predict(ex + "/MnO.out", **kw)
t3 = clock()
model.predict(ex + "/MnO.out", **kw)
t4 = clock()
out = {"U": {str(k): v for k, v in pred.U.items()}}
for name, a, b in (("import", t0, t1), ("load", t1, t2), ("first_predict", t2, t3),
                   ("second_predict", t3, t4)):
    out[name + "_s"], out[name + "_cpu_s"] = b[0] - a[0], b[1] - a[1]
print(json.dumps(out))
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
    # CPU time is what the wall time is on an idle machine for this (mostly single-threaded)
    # work; on a shared machine the wall time also counts waiting for a core
    print("\n| step | wall median (s) | CPU median (s) | wall, runs |\n|---|---:|---:|---|")
    for key in ("import", "load", "first_predict", "second_predict"):
        wall, cpu = [r[key + "_s"] for r in rows], [r[key + "_cpu_s"] for r in rows]
        print(f"| {key} | {statistics.median(wall):.2f} | {statistics.median(cpu):.2f} | "
              f"{', '.join(f'{v:.2f}' for v in wall)} |")  # fmt: skip


if __name__ == "__main__":
    main()
