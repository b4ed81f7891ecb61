"""The name and the shape of every file segone writes: one place, used by every writer and reader.

An output directory of ``segone run`` holds (see the README's output
contract):

==========================  ===========  =============================================================
name                        kind         content
==========================  ===========  =============================================================
``assignments.parquet``     customer     id (or pseudonym), segment, distance, margin, RFM, value
``personas.parquet``        customer     id (or pseudonym), segment, traits, summary
``moves.parquet``           customer     id (or pseudonym), previous segment, segment, status
``changelog.parquet``       customer     ``segone update``: id (or pseudonym), from / to segment, at
``actions.parquet``         customer     id (or pseudonym), segment, the next best offers, channel, timing
``segments.parquet``        segment      one row per segment (sizes, shares, medians, lifts, label, predicted
                                         totals with 90% intervals)
``rfm.parquet``             segment      the recency x frequency grid (customers, spend per cell)
``migration.parquet``       segment      from/to segment counts between two runs
``effects.parquet``         segment      per campaign and previous segment: moves of treated vs control
``sweep.parquet``           run          the sweep over k (``-k auto``)
``backtest.parquet``        run          ``segone backtest``: one row per value model and baseline
``backtest_deciles.parquet`` run         ``segone backtest``: per model and decile, predicted vs actual
``run.json``                run          the run summary, its ``privacy`` section
``tracking.json``           run          ``segone track``'s summary (instead of run.json)
``model/``                  model        ``model.json``, ``centroids.npy``, ``scorer.json``,
                                         ``feature_histogram.json``
``report.html``             report       the HTML report
==========================  ===========  =============================================================

*customer* outputs hold one row per customer and go through the export
stage per piece (:func:`segone.privacy.export_piece`: consent, pseudonyms,
personal columns, the exported segment ids); *segment* outputs are
suppressed below the minimum segment size
(:func:`segone.privacy.suppress_segment_table`,
:func:`~segone.privacy.suppress_migration`,
:func:`~segone.privacy.suppress_counts_table`).  Every directory is written
atomically (:func:`segone.io.atomic_directory`).

Writers and readers use these constants, never the file names as string
literals, so that a name is changed here once.

Examples
--------
>>> from segone import outputs
>>> outputs.ASSIGNMENTS, outputs.MODEL_DIR, outputs.MOVES in outputs.PER_CUSTOMER
('assignments.parquet', 'model', True)
"""

import os

# -- an output directory ----------------------------------------------------------------------------------
ASSIGNMENTS = "assignments.parquet"
PERSONAS = "personas.parquet"
MOVES = "moves.parquet"
ACTIONS = "actions.parquet"
SEGMENTS = "segments.parquet"
RFM = "rfm.parquet"
MIGRATION = "migration.parquet"
EFFECTS = "effects.parquet"
SWEEP = "sweep.parquet"
BACKTEST = "backtest.parquet"
BACKTEST_DECILES = "backtest_deciles.parquet"
CHANGELOG = "changelog.parquet"
RUN_JSON = "run.json"
TRACKING_JSON = "tracking.json"
MODEL_DIR = "model"
REPORT = "report.html"

# -- inside model/ ----------------------------------------------------------------------------------------
MODEL_JSON = "model.json"
CENTROIDS = "centroids.npy"
SCORER = "scorer.json"
FEATURE_HISTOGRAM = "feature_histogram.json"
MODEL_FILES = (MODEL_JSON, CENTROIDS, SCORER)  # every model directory has these; the histogram is optional

# -- schemas ----------------------------------------------------------------------------------------------
ID_COLUMN = "customer_id"  # the id column of every per-customer output, whatever the input calls it
SEGMENT_COLUMN = "segment"  # the stable (exported) segment id
ASSIGNMENT_COLUMNS = (ID_COLUMN, SEGMENT_COLUMN, "distance", "margin")  # the first columns of assignments
PERSONA_COLUMNS = (ID_COLUMN, SEGMENT_COLUMN, "traits", "summary")
MOVES_COLUMNS = (ID_COLUMN, "previous_segment", SEGMENT_COLUMN, "status")
#: segments.parquet's 90% intervals of the predicted totals (``total_expected_purchases``, ``total_clv``), from the
#: value models' parameter covariance (:class:`segone.clv.SegmentTotals`); null when the model was skipped
SEGMENT_INTERVAL_COLUMNS = ("total_expected_purchases_lo", "total_expected_purchases_hi", "total_clv_lo",
                            "total_clv_hi")
MIGRATION_COLUMNS = ("from_segment", "to_segment", "status", "customers", "share", "spend", "clv", "clv_before")
PSEUDONYM_METADATA = b"segone.pseudonym"  # field metadata of an id column holding pseudonyms

# which files hold what (the export stage treats each kind its own way)
PER_CUSTOMER = (ASSIGNMENTS, PERSONAS, MOVES, ACTIONS, CHANGELOG)
PER_SEGMENT = (SEGMENTS, RFM, MIGRATION, EFFECTS)
SUMMARIES = (RUN_JSON, TRACKING_JSON, SWEEP, BACKTEST, BACKTEST_DECILES)


def model_dir(out_dir):
    """The model directory of an output directory: ``out_dir/model``."""
    return os.path.join(os.fspath(out_dir), MODEL_DIR)


__all__ = [
    "ACTIONS", "ASSIGNMENTS", "ASSIGNMENT_COLUMNS", "BACKTEST", "BACKTEST_DECILES", "CENTROIDS", "EFFECTS", "FEATURE_HISTOGRAM", "ID_COLUMN", "MIGRATION",
    "MIGRATION_COLUMNS", "MODEL_DIR", "MODEL_FILES", "MODEL_JSON", "MOVES", "MOVES_COLUMNS", "PERSONAS",
    "PERSONA_COLUMNS", "PER_CUSTOMER", "PER_SEGMENT", "PSEUDONYM_METADATA", "REPORT", "RFM", "RUN_JSON",
    "SCORER", "SEGMENTS", "SEGMENT_COLUMN", "SEGMENT_INTERVAL_COLUMNS", "SUMMARIES", "SWEEP", "TRACKING_JSON",
    "model_dir",
]  # fmt: skip
