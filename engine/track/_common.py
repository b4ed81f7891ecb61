"""What the tracking modules share: the move statuses, the PSI settings and two small helpers."""

import numpy as np

from segone.errors import SchemaError


STATUSES = ("stayed", "moved", "new", "gone")
STAYED, MOVED, NEW, GONE = range(4)
PSI_EPSILON = 1e-4  # shares are floored at this before the PSI (an empty bin would give infinity)
PSI_BINS = 10
HIST_ALPHA = 0.01  # relative bucket width of the feature histograms


def _lookup(ids):
    """Dense lookup table id -> position (-1 for ids not listed)."""
    lut = np.full(int(ids.max()) + 1 if ids.size else 0, -1, dtype=np.int64)
    lut[ids] = np.arange(ids.size)
    return lut


def _column(table, name, where):
    if name not in table.column_names:
        raise SchemaError(f"{where}: column {name!r} not found; it has {table.column_names[:20]}.")
    return table.column(name)
