"""segone: a segmentation compute engine for customer data.

Events (Arrow / Parquet) -> one profile per customer -> scored features ->
mini-batch k-means segments -> assignment, segment table and run summary.

Public API
----------
build_profiles    events -> one profile row per customer (pyarrow.Table)
FeatureScorer     profiles -> float32 feature matrix (mergeable state)
Segmenter         mini-batch k-means (scikit-learn estimator API)
assign            nearest-segment assignment (labels, distance, margin)
run               the whole job, outputs written atomically
synth             synthetic customer data with known segments
errors            the exceptions segone raises
"""

__version__ = "0.1.0"

from segone import errors, synth
from segone._backend import available_backends
from segone.assign import Assignment, assign
from segone.cluster import Segmenter
from segone.pipeline import RunResult, describe_segments, run
from segone.profile import build_profiles
from segone.score import FeatureScorer

__all__ = [
    "Assignment",
    "FeatureScorer",
    "RunResult",
    "Segmenter",
    "assign",
    "available_backends",
    "build_profiles",
    "describe_segments",
    "errors",
    "run",
    "synth",
    "__version__",
]
