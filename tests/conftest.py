import jax
import numpy as np
import pytest


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
