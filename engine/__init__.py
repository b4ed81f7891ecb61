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
assign            nearest-segment assignment (labels, distance, margin); its module is segone.assignment
personas          what sets each customer apart: top traits and a sentence per customer (segone.describe)
describe_segments the segment table: sizes, value share, lifts, traits, unique labels
BetaGeo, GammaGamma, predict_value   predicted customer value (lifetimes' definitions, fast)
save_model, load_model, apply_model  versioned model directories (plain data), applied without refitting
compare_outputs, match_segments      who moved where between two runs, stable segment ids
write_report      one self-contained HTML report of an output directory (pip install segone[report])
privacy           consent, pseudonymous ids (HMAC-SHA256), personal columns, minimum segment size
sweep             how many segments: segone.sweep(X) over k, with a documented automatic choice (segone.tuning)
run               the whole job (in this process or on Dask), outputs written atomically
update, Updater   fold new events into the state store of a run (segone.update): equal to a full run, O(batch)
Engine            what an engine provides to run (LocalEngine here; segone.dask.DaskEngine on a cluster)
synth             synthetic customer data with known segments
io                read any table or file (pyarrow, pandas, polars, DuckDB, Parquet, CSV, Arrow IPC)
errors            the exceptions segone raises
keep_freed_memory opt-in: keep freed memory in this process's heap (nothing is changed on import)
"""

__version__ = "0.1.0"

from segone import clv, errors, io, model, privacy, synth, track, tuning, update
from segone._engine import Engine, LocalEngine
from segone._backend import available_backends
from segone._memory import keep_freed_memory
from segone._memory import release as release_memory
from segone._memory import settings as memory_settings
from segone.assignment import Assignment, assign
from segone.backtesting import backtest, calibration_and_holdout
from segone.describe import DEFAULT_LABEL_RULES, DEFAULT_PHRASES, PersonaModel, describe_segments, personas
from segone.clv import BetaGeo, GammaGamma, predict_value
from segone.model import Model, apply_model, load_model, save_model
from segone.pipeline import RunResult, run
from segone.segment import Segmenter
from segone.profile import build_profiles
from segone.rfm import DEFAULT_RFM_RULES, rfm_scores
from segone.score import FeatureScorer
from segone.sketch import QuantileSketch
from segone.report import write_report
from segone.track import compare_outputs, match_segments
from segone.tuning import sweep
from segone.update import Updater

__all__ = [
    "DEFAULT_LABEL_RULES",
    "DEFAULT_PHRASES",
    "DEFAULT_RFM_RULES",
    "PersonaModel",
    "Assignment",
    "Engine",
    "LocalEngine",
    "BetaGeo",
    "GammaGamma",
    "Model",
    "FeatureScorer",
    "QuantileSketch",
    "RunResult",
    "Segmenter",
    "apply_model",
    "assign",
    "backtest",
    "calibration_and_holdout",
    "clv",
    "compare_outputs",
    "available_backends",
    "build_profiles",
    "describe_segments",
    "errors",
    "io",
    "keep_freed_memory",
    "memory_settings",
    "release_memory",
    "load_model",
    "match_segments",
    "model",
    "personas",
    "predict_value",
    "privacy",
    "rfm_scores",
    "run",
    "save_model",
    "sweep",
    "synth",
    "track",
    "tuning",
    "update",
    "Updater",
    "write_report",
    "__version__",
]
