"""zoo.train in subprocesses: data parallel over 2 forced CPU devices, and resuming after SIGKILL.

XLA_FLAGS must be set before jax is imported, hence a fresh interpreter; the tiny model and data
come from test_train.py (imported by path).
"""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_train import CFG, loss_fn, make_batches, make_model, same  # noqa: E402

from zoo.train import fit  # noqa: E402

TESTS = str(Path(__file__).parent)


def run_python(code: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **env_extra}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


PARALLEL = f"""
    import dataclasses, json, sys
    import jax
    jax.config.update("jax_enable_x64", True)  # fresh process: tight comparison in float64
    import numpy as np
    sys.path.insert(0, {TESTS!r})
    from test_train import CFG, leaves, loss_fn, make_batches, make_model, predict_fn
    from zoo.train import fit
    from zoo.train._parallel import Placement

    devs = jax.devices()
    tr, va = make_batches(4, 0), make_batches(2, 1)
    cfg = dataclasses.replace(CFG, max_epochs=3)
    one = fit(make_model(), loss_fn, tr, va, cfg, predict_fn=predict_fn, progress=False,
              devices=devs[:1])
    two = fit(make_model(), loss_fn, tr, va, cfg, predict_fn=predict_fn, progress=False,
              devices=devs)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(leaves(one.model), leaves(two.model)))
    placed = Placement(devs).batch(tr[0])
    print(json.dumps({{
        "n_devices": len(devs),
        "dtype": str(leaves(two.model)[0].dtype),
        "max_weight_diff": diff,
        "val_loss": [one.best_val_loss, two.best_val_loss],
        "mae": [one.metrics["validation"]["y"]["mae"], two.metrics["validation"]["y"]["mae"]],
        "weight_devices": len(jax.tree.leaves(two.model)[0].sharding.device_set),
        "x_shards": [s.data.shape[0] for s in placed["x"].addressable_shards],
        "moved": bool(np.max(np.abs(leaves(two.model)[0] - leaves(make_model())[0])) > 1e-3),
    }}))
"""


def test_two_devices_match_one_device():
    proc = run_python(PARALLEL, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["n_devices"] == 2 and r["dtype"] == "float64"
    assert r["x_shards"] == [4, 4]  # the batch axis is split across the two devices
    assert r["weight_devices"] == 2  # parameters replicated on both
    assert r["moved"]  # it did train
    assert r["max_weight_diff"] < 1e-9
    assert r["val_loss"][0] == pytest.approx(r["val_loss"][1], rel=1e-9)
    assert r["mae"][0] == pytest.approx(r["mae"][1], rel=1e-9)


KILL = f"""
    import dataclasses, os, signal, sys
    sys.path.insert(0, {TESTS!r})
    from test_train import CFG, loss_fn, make_batches, make_model
    from zoo.train import fit

    class KillAfter:  # SIGKILL in the middle of epoch 3: no cleanup, no finally blocks
        def __init__(self, batches, n):
            self.batches, self.left = batches, n
        def __len__(self):
            return len(self.batches)
        def __getitem__(self, i):
            self.left -= 1
            if self.left < 0:
                os.kill(os.getpid(), signal.SIGKILL)
            return self.batches[i]

    cfg = dataclasses.replace(CFG, max_epochs=5, schedule="cosine")
    tr, va = make_batches(4, 0), make_batches(2, 1)
    fit(make_model(), loss_fn, KillAfter(tr, 1 + 10), va, cfg, out_dir=sys.argv[1],
        progress=False)
"""


def test_resume_after_sigkill(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILL), str(tmp_path)],
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    cfg = dataclasses.replace(CFG, max_epochs=5, schedule="cosine")
    tr, va = make_batches(4, 0), make_batches(2, 1)
    ref = fit(make_model(), loss_fn, tr, va, cfg, progress=False)
    res = fit(make_model(), loss_fn, tr, va, cfg, out_dir=tmp_path, progress=False)
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4, 5]
    assert same(res.final_model, ref.final_model) and same(res.model, ref.model)
    assert np.allclose([r["val_loss"] for r in res.history], [r["val_loss"] for r in ref.history])
