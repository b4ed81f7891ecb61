"""Privacy: consent honoured, pseudonymous ids, no segment small enough to identify a person.

Four rules, each written as plain per-piece functions and a mergeable state
(:mod:`segone._state`), so they run the same in this process and on every
Dask partition:

**Consent.**  The user names the consent columns of the customer attributes
(:class:`ConsentRule`, parsed from ``"COLUMN"`` or ``"COLUMN=purpose"``):

* a *boolean* column: the customer consents when the value is true;
* a *purpose* column (``COLUMN=purpose``): strings holding comma-separated
  purposes (``"marketing, analytics"``) or lists of strings; the customer
  consents to ``purpose`` when it is present (trimmed, case-insensitive).
  Every purpose found must be a known one (:data:`DEFAULT_PURPOSES` plus the
  user's ``purposes``), so a typo never silently refuses everybody.

With several rules a customer consents when every rule holds (a refusal of
any one wins; else a missing value makes the record unknown).  A customer
without a consent record (a null value, or no attributes row at all) follows
``consent_default``: ``False`` (the default) treats them as not consenting.
Customers without consent never reach a per-customer output (assignments,
personas, moves); with ``consent_scope="processing"`` they are dropped right
after the profiles are built, before any processing.  :func:`consent_mask`
is the per-piece mask, :class:`PrivacyCounts` the mergeable counts,
:func:`filter_consented` the per-piece filter.

**Pseudonymous ids.**  On request every output carries, instead of the
customer id, ``HMAC-SHA256(key, canonical bytes of the id)`` as lower-case hex,
truncated to :data:`PSEUDONYM_HEX` = 32 hex characters (128 bits).  The same
key gives the same pseudonym in every run, so runs can still be tracked
against each other.  The canonical bytes of an id are:

* an integer: its decimal text in ASCII (``-`` for negatives, no leading
  zeros, no ``+``): ``7 -> b"7"``, ``-12 -> b"-12"``;
* a string: its UTF-8 bytes exactly as stored (no Unicode normalisation, no
  trimming, case-sensitive);
* bytes (binary columns): the bytes themselves.

So the integer ``7`` and the string ``"7"`` get the **same** pseudonym (by
design: a customer keeps its pseudonym whether a system stores the id as a
number or as text, and anyone holding the key reproduces a pseudonym with
``hmac.new(key, str(id).encode(), "sha256").hexdigest()[:32]``), while
``"007"`` and ``7`` differ.  Collisions: for ``n`` distinct ids the chance
that any two share a 128-bit pseudonym is below ``n**2 / 2**129`` (about
``1.5e-21`` for a billion customers).

The key comes from ``id_key``, a key file (``id_key_file``) or the
environment variable :data:`KEY_ENV` (``SEGONE_ID_KEY``), in that order.  A
key is the text (a trailing newline of a file is dropped) or, with a
``hex:`` or ``base64:`` prefix, the decoded bytes; it must hold at least
:data:`MIN_KEY_BYTES` (16) bytes (``openssl rand -hex 32 > segone.key``).
The key is never written anywhere.  A model records a *key check*,
``HMAC-SHA256(key, b"segone id key check v1")`` (32 hex characters,
:func:`key_check`), so that ``apply`` and ``persona`` can tell the same key
from another; like any pseudonym in the outputs it reveals nothing about the
key.

:func:`pseudonymise` hashes each distinct id once with the standard
library's ``hmac.digest`` (OpenSSL's one-shot HMAC) and maps the pseudonyms
back to the rows.  It replaced a hand-written Numba HMAC-SHA256 kernel whose
compilation (several seconds in every new process: its cache never hit)
cost more than it saved on a run.

**Personal columns.**  Attribute columns holding personal data (e-mail,
phone, name, address, birth date, national id numbers, ...; detected by
column-name patterns, :func:`personal_columns`, plus the user's own list)
are removed from the profiles before anything is computed, so they reach no
output, unless the user keeps them (``keep_columns``).

**Minimum segment size** ``k``.  No exported table shows a cell of fewer
than ``k`` customers: segments below ``k`` are merged into their nearest
segment (:func:`merge_small_segments`, :func:`merge_segment_stats`) or
withheld (:func:`withhold_small_segments`: their customers get a null
segment), and cells of a table that imply fewer than ``k`` customers are
suppressed (:func:`suppress_small_cells`, :func:`suppress_segment_table`,
:func:`suppress_migration`), with a complementary suppression so that a
suppressed cell cannot be recovered from a published total.

Everything is checked before any work (:class:`PrivacyOptions`,
:func:`check_privacy`), and :func:`privacy_summary` writes run.json's
``privacy`` section.

**The model's record.**  The model of a run records the options it was
fitted with (:func:`model_record`, ``settings.privacy`` of model.json: the
consent rules, scope and default, whether ids are hashed and the key check,
the minimum segment size, the personal columns, the id every fitted cluster
was exported as).  Every command that writes from a model or an output
honours it: ``apply`` takes the model's options by default and refuses
options that would widen them (:func:`apply_plan`, :class:`WiderPrivacyError`),
``track`` applies the stricter of its two outputs' options
(:func:`tracking_plan`), and ``persona`` and the report read it
(:func:`output_record`).  Models written before the record keep working
(no options are assumed).

The modules, one concern each (every public name is imported from
``segone.privacy``): ``consent``, ``pseudonyms``, ``personal`` (personal
columns), ``suppression`` (minimum segment size, small cells), ``options``
(:class:`PrivacyOptions`, :class:`PrivacyPlan`, :func:`check_privacy`),
``export`` (the per-piece stages and run.json's section) and ``record``
(the model's record, :func:`apply_plan`, :func:`tracking_plan`).
"""

from segone._modules import adopt
from segone.privacy.pseudonyms import (
    HASH_ALGORITHM, KEY_ENV, MIN_KEY_BYTES, PSEUDONYM_HEX, canonical_id_bytes, load_key, pseudonym_of, pseudonymise,
    pseudonymise_column,
)
from segone.privacy.consent import (
    CONSENTED, CONSENT_SCOPES, ConsentRule, DEFAULT_PURPOSES, PrivacyCounts, REFUSED, UNKNOWN, consent_mask,
    filter_consented, parse_consent,
)
from segone.privacy.suppression import (
    SMALL_SEGMENTS, cluster_labels, exported_ids, id_lookup, merge_segment_stats, merge_small_segments, relabel_moves,
    relabel_segments, small_segment_mapping, suppress_counts, suppress_counts_table, suppress_migration,
    suppress_segment_table, suppress_small_cells, withhold_small_segments,
)
from segone.privacy.personal import (
    PERSONAL_SUBSTRINGS, PERSONAL_TOKENS, drop_personal_columns, is_personal, personal_columns,
)
from segone.privacy.options import PrivacyOptions, PrivacyPlan, attributes_schema, check_privacy, rows_upper_bound
from segone.privacy.export import excluded_ids, export_piece, filter_moves, privacy_summary, processing_piece
from segone.privacy.record import (
    KEY_CHECK_MESSAGE, RECORD_VERSION, WiderPrivacyError, apply_plan, key_check, model_privacy, model_record,
    output_record, read_record, tracking_plan,
)

__all__ = [
    "tracking_plan", "read_record", "output_record", "model_record", "model_privacy", "key_check", "apply_plan",
    "WiderPrivacyError", "RECORD_VERSION", "KEY_CHECK_MESSAGE", "CONSENT_SCOPES", "DEFAULT_PURPOSES", "HASH_ALGORITHM",
    "KEY_ENV", "MIN_KEY_BYTES", "PSEUDONYM_HEX", "ConsentRule", "PrivacyCounts", "PrivacyOptions", "PrivacyPlan",
    "attributes_schema", "canonical_id_bytes", "check_privacy", "consent_mask", "drop_personal_columns",
    "cluster_labels", "excluded_ids", "export_piece", "exported_ids", "id_lookup", "filter_consented", "filter_moves",
    "is_personal", "load_key", "merge_segment_stats", "merge_small_segments", "parse_consent", "personal_columns",
    "privacy_summary", "processing_piece", "pseudonym_of", "pseudonymise", "pseudonymise_column", "relabel_moves",
    "relabel_segments", "rows_upper_bound", "small_segment_mapping", "suppress_counts", "suppress_counts_table",
    "suppress_migration", "suppress_segment_table", "suppress_small_cells", "withhold_small_segments",
]

adopt(globals())  # the public names are this package's (repr, pickles, doctest.testmod(segone.privacy))
