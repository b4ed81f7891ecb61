import os

import numpy as np
import pytest

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
