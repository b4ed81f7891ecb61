"""segone: a segmentation compute engine for customer data.

Events (Arrow / Parquet) -> one profile per customer -> scored features ->
mini-batch k-means segments -> assignment, segment table and run summary.

Public API
----------
build_profiles    events -> one profile row per customer (pyarrow.Table)
FeatureScorer     profiles -> float32 feature matrix (mergeable state)
rfm_scores        R, F, M scores, RFM code and named RFM segment per customer
QuantileSketch    mergeable quantile sketch (relative error, exact merge)
Segmenter         mini-batch k-means (scikit-learn estimator API)
assign            nearest-segment assignment (labels, distance, margin)
personas          what sets each customer apart: top traits and a sentence per customer
describe_segments the segment table: sizes, value share, lifts, traits, unique labels
run               the whole job (in this process or on Dask), outputs written atomically
synth             synthetic customer data with known segments
errors            the exceptions segone raises
"""

__version__ = "0.1.0"

from segone import errors, synth
from segone._backend import available_backends
from segone.assign import Assignment, assign
from segone.describe import DEFAULT_LABEL_RULES, DEFAULT_PHRASES, PersonaModel, describe_segments, personas
from segone.pipeline import RunResult, run
from segone.segment import Segmenter
from segone.profile import build_profiles
from segone.rfm import DEFAULT_RFM_RULES, rfm_scores
from segone.score import FeatureScorer
from segone.sketch import QuantileSketch

__all__ = [
    "DEFAULT_LABEL_RULES",
    "DEFAULT_PHRASES",
    "DEFAULT_RFM_RULES",
    "PersonaModel",
    "Assignment",
    "FeatureScorer",
    "QuantileSketch",
    "RunResult",
    "Segmenter",
    "assign",
    "available_backends",
    "build_profiles",
    "describe_segments",
    "errors",
    "personas",
    "rfm_scores",
    "run",
    "synth",
    "__version__",
]
