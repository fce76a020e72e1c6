import os
import shutil
import tempfile

import jax
import numpy as np
import pytest

#: the JAX cache folder this process created (removed at the end)
_CREATED: list[str] = []

#: the test modules that take the longest, longest first: pytest-xdist gives each worker whole
#: modules (their module fixtures and compiled models are built once), and a long module started
#: last would run alone
SLOW_FIRST = (
    "tests/test_architectures.py",
    "tests/test_field.py",
    "tests/test_field_shipped.py",
    "tests/hubbard/test_recipe_steps.py",
    "tests/hubbard/test_dft_qe.py",
    "tests/test_cli.py",
    "tests/test_heads.py",
    "tests/test_si29.py",
    "tests/test_calculator.py",
    "tests/hubbard/test_loop.py",
    "tests/test_finetune.py",
    "tests/test_response_fields.py",
    "tests/test_bad_input.py",
)


def pytest_configure(config):
    # the suite never writes to the user's cache; compiled executables are shared between the
    # tests of one process. A pytest-xdist worker inherits the controller's environment and
    # gets a folder of its own inside the controller's.
    cache = os.environ.get("ZOO_JAX_CACHE_DIR")
    if cache is None:
        cache = tempfile.mkdtemp(prefix="zoo-test-jax-cache-")
        _CREATED.append(cache)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and not _CREATED:
        cache = os.path.join(cache, worker)
    os.environ["ZOO_JAX_CACHE_DIR"] = cache
    # on from the start, not from the first model.predict: a test that calls a jitted model
    # directly and builds the same model again (e.g. loaded from disk) then reads its executable
    # back instead of compiling it again
    from zoo._jax_cache import enable

    enable()


def pytest_unconfigure(config):
    for cache in _CREATED:
        shutil.rmtree(cache, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``-n 2 --dist loadfile``, pyproject.toml) the slowest modules first."""
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: its order is the schedule's
        rank = {name: k for k, name in enumerate(SLOW_FIRST)}
        items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run a test in f32 and in f64 (the latter inside jax.enable_x64)."""
    if request.param == "float64":
        with jax.enable_x64(True):
            yield np.float64
    else:
        yield np.float32


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_code():
    """Drop compiled executables after each test module. A long pytest process otherwise keeps
    thousands of XLA executables mapped and can exhaust vm.max_map_count (65530 by default),
    which shows up as a segfault inside a later compilation."""
    yield
    jax.clear_caches()
    import gc

    gc.collect()
