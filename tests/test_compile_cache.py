"""The persistent compilation cache (`zoo._jax_cache`): where it goes, how it is moved or
switched off, that a user's own JAX setting wins, and that a second process predicts without
compiling."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo._jax_cache import cache_dir, default_dir

ROOT = Path(__file__).resolve().parents[1]

#: A tiny response model (same weights in every process: key 0), one prediction, and what
#: XLA did, as JSON on the last line.
PREDICT = """
import json, sys, warnings
import jax
from ase.build import bulk
from zoo._jax_cache import count_compiles
from zoo.model import ResponseModel, make_config

backbone = dict(channels=2, lmax=2, num_layers=2, radial_hidden=4, r_max=3.0,
                avg_num_neighbors=10.0)
model = ResponseModel(make_config([14], ["born_charges"], backbone=backbone), key=jax.random.key(0))
before = jax.config.jax_compilation_cache_dir
with count_compiles() as count:
    out = model.predict(bulk("Si", "diamond", 5.43))
print(json.dumps({"before": before, "after": jax.config.jax_compilation_cache_dir,
                  "compiles": count.compiles, "fresh": count.fresh, "hits": count.cache_hits,
                  "z": out["born_charges"].tolist()}))
"""


def run_python(code: str, **env) -> dict:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ZOO_JAX", "JAX_COMP"))}
    full.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **env)
    proc = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                          text=True, timeout=900, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cache_dir_follows_the_environment(tmp_path):
    home = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    if sys.platform.startswith("linux"):
        assert cache_dir(home) == tmp_path / "xdg" / "zoo" / "jax"
        assert cache_dir({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache/zoo/jax"
    assert cache_dir({}) == default_dir()
    assert cache_dir({**home, "ZOO_JAX_CACHE_DIR": str(tmp_path / "c")}) == tmp_path / "c"
    for off in ("0", "false", "OFF", ""):
        assert cache_dir({"ZOO_JAX_CACHE": off, "ZOO_JAX_CACHE_DIR": str(tmp_path)}) is None
    with pytest.raises(ValueError, match="ZOO_JAX_CACHE_DIR is empty"):
        cache_dir({"ZOO_JAX_CACHE_DIR": " "})


def test_a_second_process_predicts_from_the_cache(tmp_path):
    cache = tmp_path / "jax-cache"
    first = run_python(PREDICT, ZOO_JAX_CACHE_DIR=str(cache))
    assert first["before"] is None and first["after"] == str(cache)  # set at first use
    assert first["fresh"] >= 1 and any(cache.iterdir())
    second = run_python(PREDICT, ZOO_JAX_CACHE_DIR=str(cache))
    assert second["fresh"] == 0 and second["hits"] == second["compiles"] >= 1, second
    assert second["z"] == first["z"]


ENABLE = """
import json, jax
from zoo._jax_cache import enable
print(json.dumps({"dir": enable(), "jax": jax.config.jax_compilation_cache_dir}))
"""


def test_a_cache_dir_configured_in_jax_is_kept_and_zero_disables(tmp_path):
    mine = str(tmp_path / "mine")
    user = f"import jax; jax.config.update('jax_compilation_cache_dir', {mine!r})"
    kept = run_python(user + ENABLE, ZOO_JAX_CACHE_DIR=str(tmp_path / "zoo"))
    assert kept == {"dir": mine, "jax": mine} and not (tmp_path / "zoo").exists()
    off = run_python(ENABLE, ZOO_JAX_CACHE="0", XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert off == {"dir": None, "jax": None} and not (tmp_path / "xdg").exists()


def test_importing_zoo_does_not_configure_the_cache(tmp_path):
    code = ("import json, jax, zoo, zoo.model, zoo.graph\n"
            "print(json.dumps({'dir': jax.config.jax_compilation_cache_dir}))")  # fmt: skip
    assert run_python(code, ZOO_JAX_CACHE_DIR=str(tmp_path / "c"))["dir"] is None
    assert not (tmp_path / "c").exists()
