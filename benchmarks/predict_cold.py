"""Cold vs warm prediction: how much of a first prediction is compiling.

Each scenario runs in a fresh Python process with its own persistent compilation cache
directory (`ZOO_JAX_CACHE_DIR`), empty unless the scenario says it was filled by the one
before. Times are wall-clock and process CPU of the `predict` calls only (the model is loaded
before timing); "XLA compiles" counts executables built (a load from the persistent cache is
not one; `zoo._jax_cache.count_compiles`).

- si29 list: `zoo.load("si29-shielding").predict(list)` over the 67 validation structures of
  `data/si29` (the 84 held-out ones are not in the source tree), first call vs second call;
  then a new process with the cache the first filled.
- si29 one by one: the same structures, one `predict` call each.
- BaTiO3 a: a 5-atom cubic cell at a = 4.00 Å, then 4.10 Å (a new edge count), then 4.00 again.

    .venv/bin/python benchmarks/predict_cold.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn):
    from zoo._jax_cache import count_compiles

    wall, cpu = time.perf_counter(), time.process_time()
    with count_compiles() as count:
        fn()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
            "compiles": count.fresh, "cache_hits": count.cache_hits}  # fmt: skip


def _si29_structures():
    from zoo.data.si29 import load_si29, load_split, split_records

    return [r.structure for r in split_records(load_si29(), load_split())["validation"]]


def child(scenario: str) -> dict:
    """One scenario in this process: a dict of timed passes."""
    import numpy as np

    import zoo

    warnings.simplefilter("ignore")  # out-of-domain warnings are not what is measured
    if scenario.startswith("si29"):
        model = zoo.load("si29-shielding")
        structures = _si29_structures()
        if scenario == "si29-list":
            run = lambda: model.predict(structures)  # noqa: E731
        else:
            run = lambda: [model.predict(s) for s in structures]  # noqa: E731
        out = {"n": len(structures), "atoms": int(sum(len(s) for s in structures))}
        out["cold"], out["warm"] = _timed(run), _timed(run)
        return out
    from ase import Atoms

    model = zoo.load("batio3-response")
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]

    def cell(a):
        return Atoms("BaTiO3", scaled_positions=frac, cell=[a, a, a], pbc=True)

    out = {}
    for key, a in (("cold", 4.00), ("strained", 4.10), ("warm", 4.00)):
        result = {}
        out[key] = _timed(lambda: result.update(model.predict(cell(a))))  # noqa: B023
        out[key]["born_Ti_xx"] = float(np.asarray(result["born_charges"])[1, 0, 0])
    return out


def _spawn(scenario: str, cache: Path) -> dict:
    env = dict(os.environ, ZOO_JAX_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # zoo's own default is what is measured
    proc = subprocess.run([sys.executable, __file__, "--child", scenario], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode:
        raise RuntimeError(f"{scenario} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(name: str, cold: dict, warm: dict) -> str:
    return (f"| {name} | {cold['wall']:.2f} / {cold['cpu']:.2f} | {warm['wall']:.2f} / "
            f"{warm['cpu']:.2f} | {cold['wall'] / warm['wall']:.1f}x | "
            f"{cold['cpu'] / warm['cpu']:.1f}x | {cold['compiles']} "
            f"({cold['cache_hits']} from disk) | {warm['compiles']} |")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    with tempfile.TemporaryDirectory(prefix="zoo-cold-") as tmp:
        tmp = Path(tmp)
        rows = []
        first = _spawn("si29-list", tmp / "si29")
        again = _spawn("si29-list", tmp / "si29")  # same cache dir, now filled
        loop = _spawn("si29-loop", tmp / "loop")
        bto = _spawn("batio3", tmp / "bto")
        n = f"{first['n']} structures, {first['atoms']} atoms"
        rows.append(_row(f"si29 list ({n}), empty disk cache", first["cold"], first["warm"]))
        rows.append(_row("si29 list, new process, disk cache filled", again["cold"], again["warm"]))
        rows.append(_row("si29 one by one, empty disk cache", loop["cold"], loop["warm"]))
        rows.append(_row("BaTiO3 5 atoms a=4.00, empty disk cache", bto["cold"], bto["warm"]))
        rows.append(_row("BaTiO3 a=4.10 after a=4.00 (vs warm 4.00)", bto["strained"], bto["warm"]))
    load = os.getloadavg()[0]
    print(
        f"cold vs warm `predict` ({os.cpu_count()} cores, load average {load:.1f}); "
        "times wall / CPU s"
    )
    print()
    print("| scenario | cold | warm | cold/warm wall | cold/warm CPU | XLA compiles, cold | warm |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
