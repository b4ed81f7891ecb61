"""Reading any table or file segone accepts, normalised once; writing outputs atomically.

Every public function that takes a table (:func:`segone.build_profiles`,
:class:`segone.FeatureScorer`, :func:`segone.describe_segments`,
:func:`segone.personas`, :func:`segone.rfm_scores`, :func:`segone.run`)
reads it through :func:`read_table` or :func:`iter_batches`, which accept:

* in memory: a pyarrow Table, RecordBatch, RecordBatchReader or Dataset; a
  pandas DataFrame (NumPy, nullable, ArrowDtype or categorical columns; the
  index is never read); a polars DataFrame or LazyFrame; a DuckDB relation;
  anything exporting the Arrow C stream (``__arrow_c_stream__``) or array
  (``__arrow_c_array__``) interface;
* on disk: a file or a directory of files in one format, chosen by the
  extension (``.parquet`` / ``.pq``, ``.csv`` / ``.csv.gz``, ``.tsv`` /
  ``.tsv.gz``, ``.arrow`` / ``.feather`` / ``.ipc``) or, without one, by the
  file's first bytes (Parquet and Arrow IPC magic numbers, else text is
  CSV).  A directory mixing formats is an error.  CSV is streamed with
  ``pyarrow.dataset``: types are inferred (ISO dates and times become dates
  and timestamps, empty fields are nulls) or given with
  :func:`dataset` ``(path, column_types={...})``.  The files of a directory
  are read with one schema, the union of theirs: a column some files lack is
  null there (but a column a role requires must be in every file), types
  the files disagree on meet at the wider one or raise naming the files, and
  a file that cannot be read is named.

Outputs are directories written atomically (:func:`atomic_directory`),
checked and locked before any work (:func:`check_output`).

Types are normalised once, here, so that the rest of segone sees one type
per kind (:func:`normalize_schema`): ``string_view`` and ``large_string``
become ``string``, ``binary_view`` and ``large_binary`` become ``binary``,
dictionary (categorical) columns keep their encoding with int32 indices
and normalised values (polars Categorical / Enum, pandas categorical),
``large_list`` / list views become ``list``.  Timestamps, dates, numbers
and time zones are left as they are (the profile converts them).

The modules, one concern each (every public name is imported from
``segone.io``): ``normalise`` (types), ``files`` (formats, sniffing,
datasets with one schema), ``readers`` (:func:`read_table`,
:func:`iter_batches`, ``--schema``) and ``writers`` (checked, locked,
atomic outputs).
"""

import os  # noqa: F401 - segone.io.os and segone.io.pq: the modules these write with (tests patch them)

import pyarrow.parquet as pq  # noqa: F401

from segone._modules import adopt
from segone.io.files import (  # noqa: F401 - _open_path: for segone.privacy
    DELIMITERS, EXTENSIONS, FORMAT_NAMES, PARTIAL_COLUMNS_KEY, _open_path, data_files, dataset, file_format,
    parquet_files, parquet_format, resolve_inputs, sniff_delimiter,
)
from segone.io.normalise import normalize_schema, normalize_table, normalize_type, to_float64
from segone.io.readers import SCAN_READAHEAD, iter_batches, parse_schema_options, read_table, release_arrow_memory
from segone.io.writers import (
    KILL_ENV, OutputLock, OutputRecoveryWarning, atomic_directory, check_output, is_segone_output, write_json,
    write_parquet,
)

__all__ = [
    "DELIMITERS", "EXTENSIONS", "FORMAT_NAMES", "PARTIAL_COLUMNS_KEY", "data_files", "dataset", "file_format",
    "parquet_files", "parquet_format", "resolve_inputs", "sniff_delimiter", "normalize_schema", "normalize_table",
    "normalize_type", "to_float64", "SCAN_READAHEAD", "iter_batches", "parse_schema_options", "read_table",
    "release_arrow_memory", "KILL_ENV", "OutputLock", "OutputRecoveryWarning", "atomic_directory", "check_output",
    "is_segone_output", "write_json", "write_parquet",
]

adopt(globals())  # the public names are this package's (repr, pickles, doctest.testmod(segone.io))
