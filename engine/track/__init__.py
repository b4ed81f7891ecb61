"""Dynamic segmentation: stable segment ids and who moved where between runs.

Three pieces:

* **Stable ids** (:func:`match_segments`, :func:`match_counts`,
  :func:`match_centroids`): the segments of a new run are matched one to
  one to the previous run's segment ids with the Hungarian algorithm
  (``scipy.optimize.linear_sum_assignment``), maximising the number of
  customers the matched segments share (customers present in both runs,
  joined by id).  A matched segment keeps its id; an unmatched one gets a
  new id from the ``next_id`` counter (ids are never reused); previous ids
  left without a match have *vanished*.  When the runs share no customer the
  match falls back to the distance between the centroids (in the same
  feature space).
* **Migration** (:func:`moves_piece`, :class:`Contingency`,
  :func:`migration_table`): the customers of both runs joined by id (for
  integer ids one compiled merge pass over the ids in increasing order --
  already sorted, or put in order by a counting sort for compact ranges and
  an O(n) radix sort otherwise --; Arrow's hash join for strings), one row
  per customer with its previous and new segment and a status (``stayed``,
  ``moved``, ``new``, ``gone``), and the mergeable per (previous segment,
  new segment) counts and spend sums (kind ``"migration"``).  The run
  figures (share of common customers that stayed, adjusted Rand index
  between the runs on the common customers, population stability index of
  the segment shares) are computed from the counts alone.
* **Per part** (:func:`track_parts`): on an engine, the previous
  assignments are read part by part, both runs are split by a hash of the
  customer id so that each customer's rows of both runs meet in one bucket,
  each bucket is joined into its moves and a :class:`Contingency`, and only
  the contingencies reach the driver (O(segments^2)), where the ids are
  matched; the moves are then renamed and written bucket by bucket.
* **Feature drift** (:class:`FeatureHistogram`, :func:`feature_psi`): a
  mergeable binned histogram of every feature, stored with the model, and
  the population stability index (PSI) of each feature between two runs.

Reading a previous output (:func:`read_previous`) and comparing two outputs
without refitting (:func:`compare_outputs`) build on these.

Previous outputs that cannot serve every purpose are handled so:

* a model of another format version (or another feature list) still has its
  ``assignments.parquet``, the version-independent record of which customer
  was in which segment id: the ids are matched on the customers only, and
  what could not be used (warm start, centroid fallback, feature PSI) is
  recorded in ``notes`` and ``feature_mismatch``.  Refusing would force a
  renumbering of every segment, which is what stable ids exist to avoid;
* a customer id type that changed (integers then, strings now) is a
  :class:`~segone.errors.SchemaError`: no customer could be joined;
* duplicated customer ids in the previous assignments are a
  :class:`~segone.errors.DataError`;
* a missing path is a :class:`~segone.errors.ParameterError`; a directory
  without ``assignments.parquet`` or ``model/`` (half-written, or not a
  segone output), or with truncated files, is a
  :class:`~segone.errors.ModelFormatError`.

The modules, one concern each (every public name is imported from
``segone.track``):

* ``matching``: stable ids (:func:`match_segments` and friends);
* ``moves``: the join of two runs by customer id and the moves of a piece;
* ``migration``: :class:`Contingency`, :func:`migration_table`, :func:`psi`;
* ``drift``: :class:`FeatureHistogram`, :func:`feature_psi`;
* ``previous``: reading a previous output (:func:`read_previous`);
* ``tracking``: a tracked run, in one process or per part;
* ``compare``: comparing two outputs (:func:`compare_outputs`) and the checks
  of a previous output (:func:`check_previous`).
"""

from segone._modules import adopt
from segone.track._common import GONE, HIST_ALPHA, MOVED, NEW, PSI_BINS, PSI_EPSILON, STATUSES, STAYED
from segone.track.matching import SegmentMatch, match_centroids, match_counts, match_segments
from segone.track.moves import _join_ids, check_id_types, id_kind, moves_and_contingency, moves_piece
from segone.track.migration import Contingency, migration_table, psi
from segone.track.drift import FeatureHistogram, feature_psi
from segone.track.previous import (
    ASSIGNMENT_COLUMNS, PART_ROWS, PreviousRun, previous_piece, read_previous, remap_centroids,
)
from segone.track.tracking import (
    TrackedParts, Tracking, finish_tracking, moves_bucket, relabel_moves_piece, relabel_piece, track_assignments,
    track_parts, tracking_columns, tracking_figures,
)
from segone.track.compare import Comparison, check_previous, compare_outputs, output_pseudonymised

__all__ = [
    "Comparison", "Contingency", "FeatureHistogram", "PreviousRun", "SegmentMatch", "Tracking", "check_id_types",
    "check_previous", "compare_outputs", "feature_psi", "match_centroids", "match_counts", "match_segments",
    "migration_table", "moves_and_contingency", "moves_piece", "output_pseudonymised", "psi", "read_previous",
    "relabel_piece", "remap_centroids", "TrackedParts", "finish_tracking", "moves_bucket", "previous_piece",
    "relabel_moves_piece", "track_assignments", "track_parts", "tracking_columns", "tracking_figures",
]

adopt(globals())  # the public names are this package's (repr, pickles, doctest.testmod(segone.track))
