import os
import shutil
import tempfile

import jax
import numpy as np
import pytest

_CACHE = tempfile.mkdtemp(prefix="zoo-test-jax-cache-")


def pytest_configure(config):
    # the suite never writes to the user's cache; compiled models are shared between tests
    os.environ.setdefault("ZOO_JAX_CACHE_DIR", _CACHE)


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)


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
