import os

# Idle OpenMP threads sleep instead of spinning (libgomp reads this once, when the first OpenMP library loads: so
# before numpy, scikit-learn and segone's kernels are imported).  segone's Cython and Numba (``omp`` layer) kernels
# and scikit-learn open many short parallel regions; between them the default policy keeps every thread spinning,
# which on the 2 shared cores of CI steals the CPU the other thread, the Dask workers and the subprocesses need.
# The policy changes no result, only how threads wait; an OMP_WAIT_POLICY set by the caller is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
