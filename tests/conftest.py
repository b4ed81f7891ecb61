import os

# OpenMP threads spin at most 10,000 rounds (libgomp's default: 300,000) before they sleep between parallel regions.
# segone's Cython and Numba ("omp" layer) kernels and scikit-learn open many short regions; on the 2 shared cores of
# CI the default spinning steals the CPU the other threads, the Dask workers and the subprocesses need.  It changes
# no result, only how idle threads wait.  libgomp reads it once, when it loads: so before numpy, scikit-learn or
# segone is imported here.  A GOMP_SPINCOUNT set by the caller is kept.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# keep hypothesis quick and deterministic in CI
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

BACKENDS = ["cython", "numba"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(scope="session")
def small_synth():
    from segone.synth import generate

    return generate(3000, seed=7)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
