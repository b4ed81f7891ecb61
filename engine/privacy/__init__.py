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
"""

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone._state import State
from segone._validation import check_int
from segone import outputs
from segone.errors import DataError, ModelFormatError, ParameterError, SchemaError, examples
from segone.io import to_float64

KEY_ENV = "SEGONE_ID_KEY"
MIN_KEY_BYTES = 16
PSEUDONYM_HEX = 32  # hex characters of a pseudonym: 128 bits
HASH_ALGORITHM = "HMAC-SHA256"
CONSENT_SCOPES = ("export", "processing")
SMALL_SEGMENTS = ("merge", "withhold")
DEFAULT_PURPOSES = (
    "marketing", "analytics", "profiling", "personalisation", "personalization", "segmentation", "research",
    "advertising", "email", "sms", "phone", "post", "third_party", "service",
)  # fmt: skip

# personal-data column names: whole tokens (split on non-alphanumerics and camelCase) ...
PERSONAL_TOKENS = (
    "email", "mail", "phone", "mobile", "tel", "telephone", "cell", "fax", "msisdn",
    "name", "firstname", "lastname", "surname", "forename", "fullname", "givenname", "username",
    "address", "addr", "street", "zip", "zipcode", "postcode", "postal",
    "birth", "birthday", "birthdate", "dob",
    "ssn", "passport", "iban", "ip", "ipaddress", "nino", "taxid",
)  # fmt: skip
# ... and substrings of the lower-cased name with separators removed
PERSONAL_SUBSTRINGS = (
    "email", "phone", "firstname", "lastname", "fullname", "surname", "birth", "address", "postcode",
    "zipcode", "street", "passport", "socialsecurity", "nationalid", "creditcard", "cardnumber",
)  # fmt: skip


# ====================================================================== consent
@dataclass(frozen=True)
class ConsentRule:
    """One consent rule: a boolean ``column``, or a purpose ``column`` and the ``purpose`` it must hold.

    Examples
    --------
    >>> ConsentRule.parse("consent_marketing")
    ConsentRule(column='consent_marketing', purpose=None)
    >>> str(ConsentRule.parse("consent_purposes = Analytics"))
    'consent_purposes=analytics'
    """

    column: str
    purpose: str | None = None

    @classmethod
    def parse(cls, spec):
        """``"COLUMN"`` (boolean column) or ``"COLUMN=purpose"`` (purpose column) -> ConsentRule."""
        if isinstance(spec, ConsentRule):
            return spec
        if not isinstance(spec, str):
            raise ParameterError(
                f"consent entry {spec!r} is not a column name; give 'COLUMN' for a boolean consent column or "
                "'COLUMN=purpose' for a column of purposes."
            )
        col, sep, purpose = spec.partition("=")
        col, purpose = col.strip(), purpose.strip().lower()
        if not col:
            raise ParameterError(f"consent entry {spec!r} names no column; use 'COLUMN' or 'COLUMN=purpose'.")
        if sep and (not purpose or "," in purpose):
            raise ParameterError(
                f"consent entry {spec!r} names no single purpose after '='; use e.g. 'consent_purposes=marketing' "
                "(give several entries for several purposes)."
            )
        return cls(col, purpose if sep else None)

    def __str__(self):
        return self.column if self.purpose is None else f"{self.column}={self.purpose}"


def parse_consent(consent):
    """``consent`` (None, a string, a ConsentRule or a list of them) -> tuple of ConsentRule."""
    if consent is None:
        return ()
    if isinstance(consent, (str, ConsentRule)):
        consent = [consent]
    try:
        items = list(consent)
    except TypeError:
        raise ParameterError(
            f"consent must be a column name, 'COLUMN=purpose' or a list of them, got {consent!r}."
        ) from None
    rules = tuple(ConsentRule.parse(c) for c in items)
    if len(set(rules)) != len(rules):
        raise ParameterError(f"consent names the same rule twice: {[str(r) for r in rules]}.")
    return rules


# consent states, ordered so that the combination of rules is their minimum
REFUSED, UNKNOWN, CONSENTED = 0, 1, 2


def _profile_column(table, column):
    """The attribute ``column`` in a profiles table (attributes clashing with a profile column get ``crm_``)."""
    for name in (f"crm_{column}", column):  # the crm_ name first: then the plain name is a profile column
        if name in table.column_names:
            return name
    return None


def _is_text(t):
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _purpose_type(t):
    """True for the column types that can hold purposes (strings, dictionary or list of strings)."""
    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _is_text(t.value_type) or (pa.types.is_dictionary(t.value_type) and _is_text(t.value_type.value_type))
    return _is_text(t)


def _check_rule_type(rule, t, where):
    if rule.purpose is None:
        if not pa.types.is_boolean(t):
            hint = (f"name the purpose it must hold: '{rule.column}=marketing'" if _purpose_type(t)
                    else "cast it to a boolean column (true: consents)")  # fmt: skip
            raise SchemaError(f"{where}: consent column {rule.column!r} has type {t}, not boolean; {hint}.")
    elif not _purpose_type(t):
        hint = (f"use '{rule.column}' without '={rule.purpose}' for a boolean column" if pa.types.is_boolean(t)
                else "give a column of comma-separated purpose strings or of lists of strings")  # fmt: skip
        raise SchemaError(f"{where}: consent column {rule.column!r} has type {t}, which holds no purposes; {hint}.")


def _purpose_lists(col):
    """A purpose column -> (list array of trimmed lower-case purposes, row validity as bool ndarray)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        lists = col
        if pa.types.is_dictionary(t.value_type):
            lists = type(col).from_arrays(col.offsets, col.values.cast(t.value_type.value_type))
    else:
        lists = pc.split_pattern(col, ",")
    return lists, valid


def _norm_purposes(values):
    return pc.utf8_lower(pc.utf8_trim_whitespace(values))


def _rule_state(table, rule, purposes, where="attributes"):
    """int8 ndarray of REFUSED / UNKNOWN / CONSENTED per row of ``table`` for one rule."""
    name = _profile_column(table, rule.column)
    if name is None:
        raise SchemaError(
            f"{where}: consent column {rule.column!r} not found; the table has columns "
            f"{table.column_names[:30]}. Name a column of the customer attributes."
        )
    col = table.column(name)
    _check_rule_type(rule, col.type, where)
    n = table.num_rows
    if rule.purpose is None:
        valid = col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else np.ones(n, dtype=bool)
        val = pc.fill_null(col, False).to_numpy(zero_copy_only=False).astype(bool)
        return np.where(valid, np.where(val, CONSENTED, REFUSED), UNKNOWN).astype(np.int8)
    lists, valid = _purpose_lists(col)
    flat = lists.flatten()
    parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    vals = _norm_purposes(flat)
    present = pc.fill_null(pc.not_equal(vals, ""), False).to_numpy(zero_copy_only=False)
    _check_purposes(vals.filter(pa.array(present)), purposes, rule, where)
    hit = pc.fill_null(pc.equal(vals, rule.purpose), False).to_numpy(zero_copy_only=False)
    has = np.zeros(n, dtype=bool)
    has[parent[hit]] = True
    return np.where(valid, np.where(has, CONSENTED, REFUSED), UNKNOWN).astype(np.int8)


def _check_purposes(values, purposes, rule, where):
    """Raise DataError when ``values`` (normalised purposes) hold one outside ``purposes``."""
    if not len(values):
        return
    uniq = pc.unique(values)
    bad = uniq.filter(pc.invert(pc.is_in(uniq, value_set=pa.array(sorted(purposes), pa.string()))))
    if len(bad):
        raise DataError(
            f"{where}: consent column {rule.column!r} holds purpose(s) {examples(bad.to_pylist())} that are not "
            f"known purposes ({', '.join(sorted(purposes))}). Fix the values, or name your purposes with "
            "purposes=[...] so that a typo cannot silently refuse consent."
        )


def consent_mask(profiles, rule, *, default=False, purposes=DEFAULT_PURPOSES):
    """Who consents, per row of one piece: ``(bool ndarray, counts)``.

    Parameters
    ----------
    profiles : pyarrow.Table or RecordBatch
        Profiles (the attributes are columns; a customer without an
        attributes row has nulls there) or the attributes table itself.
    rule : ConsentRule, str, or a list of them
        Every rule must hold (a refusal of any one wins; else a missing
        value makes the record unknown).  An empty list: everyone consents.
    default : bool, default False
        What a customer without a consent record (unknown) counts as.
    purposes : iterable of str
        The known purposes (values outside raise DataError).

    Returns
    -------
    (mask, counts)
        ``mask[i]`` is True when row ``i`` may appear in per-customer
        outputs; ``counts`` = {"customers", "consented", "refused",
        "unknown"} (``unknown`` before the default is applied).

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"ok": [True, False, None], "p": ["marketing,analytics", "", None]})
    >>> mask, counts = consent_mask(t, ["ok", "p=analytics"])
    >>> mask.tolist(), counts
    ([True, False, False], {'customers': 3, 'consented': 1, 'refused': 1, 'unknown': 1})
    >>> consent_mask(t, "p=marketing", default=True)[0].tolist()
    [True, False, True]
    """
    if isinstance(profiles, pa.RecordBatch):
        profiles = pa.Table.from_batches([profiles])
    rules = parse_consent(rule)
    purposes = _vocabulary(purposes)
    n = profiles.num_rows
    state = np.full(n, CONSENTED, dtype=np.int8)
    for r in rules:
        if r.purpose is not None and r.purpose not in purposes:
            raise ParameterError(f"consent rule {str(r)!r} names an unknown purpose; known: {sorted(purposes)}.")
        np.minimum(state, _rule_state(profiles, r, purposes, "profiles"), out=state)
    counts = {"customers": int(n), "consented": int((state == CONSENTED).sum()),
              "refused": int((state == REFUSED).sum()), "unknown": int((state == UNKNOWN).sum())}  # fmt: skip
    mask = state == CONSENTED
    if default:
        mask |= state == UNKNOWN
    return mask, counts


def filter_consented(table, mask):
    """The rows of ``table`` (one piece) where ``mask`` is True; ``table`` rows follow the mask's rows.

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> filter_consented(pa.table({"a": [1, 2, 3]}), np.array([True, False, True])).column("a").to_pylist()
    [1, 3]
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (table.num_rows,):
        raise ParameterError(
            f"the consent mask has {mask.size} rows but the table has {table.num_rows}; the table must hold the "
            "rows of the profiles piece the mask was computed on, in the same order."
        )
    if mask.all():
        return table
    return table.filter(pa.array(mask))


class PrivacyCounts(State):
    """Mergeable consent counts: customers, consented, refused, unknown, dropped and excluded.

    ``dropped`` counts the customers removed before any processing
    (``consent_scope="processing"``); ``excluded`` those kept out of the
    per-customer outputs (every customer without consent, in both scopes).
    Pieces hold disjoint customers, so the counts add up.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"ok": [True, False, None]})
    >>> a = PrivacyCounts.of(t.slice(0, 1), rules="ok")
    >>> b = PrivacyCounts.of(t.slice(1), rules="ok")
    >>> a.merge(b).finish()
    {'customers': 3, 'consented': 1, 'refused': 1, 'unknown': 1, 'dropped': 0, 'excluded': 2}
    """

    kind = "privacy_counts"
    FIELDS = ("customers", "consented", "refused", "unknown", "dropped", "excluded")

    def __init__(self, **counts):
        unknown = set(counts) - set(self.FIELDS)
        if unknown:
            raise ParameterError(f"PrivacyCounts has no field(s) {sorted(unknown)}; fields: {list(self.FIELDS)}.")
        self.counts = {f: int(counts.get(f, 0)) for f in self.FIELDS}

    @classmethod
    def empty(cls):
        return cls()

    @classmethod
    def of(cls, piece, *, rules=(), default=False, scope="export", purposes=DEFAULT_PURPOSES):
        """The counts of one profiles piece under the consent ``rules``."""
        mask, counts = consent_mask(piece, rules, default=default, purposes=purposes)
        return cls.from_mask(mask, counts, scope=scope)

    @classmethod
    def from_mask(cls, mask, counts, *, scope="export"):
        """From :func:`consent_mask`'s output (``scope`` tells whether the excluded are dropped too)."""
        excluded = int(mask.size - np.count_nonzero(mask))
        return cls(**counts, excluded=excluded, dropped=excluded if scope == "processing" else 0)

    def merge(self, other):
        self._check_same(other)
        return PrivacyCounts(**{f: self.counts[f] + other.counts[f] for f in self.FIELDS})

    def finish(self):
        return dict(self.counts)

    def _data(self):
        return dict(self.counts)

    @classmethod
    def _from_data(cls, d):
        return cls(**d)


# ================================================================= pseudonyms
def _decode_key(raw, where):
    """Key text or bytes -> key bytes (``hex:`` / ``base64:`` prefixes decoded)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if not isinstance(raw, (bytes, bytearray)):
        raise ParameterError(f"{where}: the id key must be bytes or a string, got {type(raw).__name__}.")
    raw = bytes(raw)
    for prefix, decode in ((b"hex:", binascii.unhexlify), (b"base64:", base64.b64decode)):
        if raw[: len(prefix)].lower() == prefix:
            try:
                return decode(raw[len(prefix) :].strip())
            except (binascii.Error, ValueError):
                raise ParameterError(
                    f"{where}: the key starts with {prefix.decode()!r} but the rest is not valid "
                    f"{prefix.decode()[:-1]}; fix the key or drop the prefix."
                ) from None
    return raw


def load_key(id_key=None, id_key_file=None, env=KEY_ENV):
    """The secret id key and where it came from: ``(bytes, source)``.

    Order: ``id_key`` (bytes or text), ``id_key_file`` (the file's bytes, a
    trailing newline dropped), the environment variable ``env``.  Prefixes
    ``hex:`` and ``base64:`` are decoded.  Raises ParameterError without a
    key, with two keys, with an unreadable file, or with a key shorter than
    :data:`MIN_KEY_BYTES` bytes.  The error messages never show the key.
    """
    if id_key is not None and id_key_file is not None:
        raise ParameterError("give either id_key or id_key_file, not both.")
    if id_key is not None:
        key, source = _decode_key(id_key, "id_key"), "id_key argument"
    elif id_key_file is not None:
        path = os.fspath(id_key_file)
        try:
            with open(path, "rb") as f:
                raw = f.read(1 << 16)
        except OSError as exc:
            raise ParameterError(
                f"id_key_file {path!r} cannot be read ({exc.strerror or type(exc).__name__}); give a readable file "
                "holding the secret key (e.g. `openssl rand -hex 32 > segone.key`)."
            ) from None
        for end in (b"\r\n", b"\n"):
            if raw.endswith(end):
                raw = raw[: -len(end)]
                break
        key, source = _decode_key(raw, f"id_key_file {path!r}"), "key file"
    else:
        raw = os.environ.get(env)
        if not raw:
            raise ParameterError(
                f"hash_ids=True needs a secret key: set the environment variable {env} (e.g. "
                f"`export {env}=$(openssl rand -hex 32)`) or pass id_key_file=PATH (--id-key-file PATH)."
            )
        key, source = _decode_key(raw, f"environment variable {env}"), f"environment variable {env}"
    if len(key) < MIN_KEY_BYTES:
        raise ParameterError(
            f"the id key from the {source} has {len(key)} bytes; at least {MIN_KEY_BYTES} are needed "
            "(use e.g. `openssl rand -hex 32`)."
        )
    return key, source


def canonical_id_bytes(value):
    """The bytes an id is hashed as: integers as ASCII decimal text, strings as UTF-8, bytes as is.

    Examples
    --------
    >>> canonical_id_bytes(7), canonical_id_bytes("7"), canonical_id_bytes(-12), canonical_id_bytes("é")
    (b'7', b'7', b'-12', b'\\xc3\\xa9')
    """
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (float, np.floating)):
        raise ParameterError(f"customer ids must be integers, strings or bytes, got {type(value).__name__} {value!r}.")
    if isinstance(value, (int, np.integer)):
        return str(int(value)).encode("ascii")
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise ParameterError(f"customer id {value!r} is not valid Unicode (a lone surrogate).") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise ParameterError(f"customer ids must be integers, strings or bytes, got {type(value).__name__}.")


def pseudonym_of(value, key, length=PSEUDONYM_HEX):
    """The pseudonym of one id, with the standard library (the reference of :func:`pseudonymise`).

    Examples
    --------
    >>> pseudonym_of(7, b"0123456789abcdef") == pseudonym_of("7", b"0123456789abcdef")
    True
    >>> len(pseudonym_of(7, b"0123456789abcdef"))
    32
    """
    if value is None:
        return None
    return hmac.new(bytes(key), canonical_id_bytes(value), hashlib.sha256).hexdigest()[: _check_length(length)]


def _check_length(length):
    length = check_int(length, "length", low=16, high=64)
    if length % 2:
        raise ParameterError(f"length must be an even number of hex characters (16..64), got {length}.")
    return length


# -- pseudonyms of many ids ---------------------------------------------------
def _hex_digests(messages, key, nbytes):
    """The first ``nbytes`` of ``HMAC-SHA256(key, m)`` of every message, as hex: a uint8 array (len, 2 * nbytes)."""
    digest = hmac.digest
    hexed = b"".join(digest(key, m, "sha256")[:nbytes] for m in messages).hex().encode("ascii")
    return np.frombuffer(hexed, dtype=np.uint8).reshape(len(messages), 2 * nbytes)


def _string_array(hexbytes, n, length, validity):
    """Fixed-width hex bytes -> a pyarrow string array (nulls where ``validity`` is False)."""
    offsets = np.arange(0, (n + 1) * length, length, dtype=np.int32)
    bitmap, nulls = None, 0
    if validity is not None and not validity.all():
        nulls = int(n - np.count_nonzero(validity))
        bitmap = pa.py_buffer(np.packbits(validity, bitorder="little"))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(hexbytes), bitmap, nulls)


def _max_rows(length):
    return (2**31 - 1) // length


def _pseudo_array(arr, key, length):
    """One pyarrow Array of ids -> pyarrow string array of pseudonyms (each distinct id hashed once)."""
    t = arr.type
    n = len(arr)
    if pa.types.is_dictionary(t):  # hash the dictionary once, then take
        return pc.take(_pseudo_array(arr.dictionary, key, length), arr.indices)
    if pa.types.is_null(t):
        return pa.nulls(n, pa.string())
    if pa.types.is_boolean(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        raise ParameterError(
            f"customer ids of type {t} cannot be pseudonymised; ids must be integers or strings (cast them first)."
        )
    if pa.types.is_unsigned_integer(t) and t.bit_width == 64:
        return _pseudo_array(pc.cast(arr, pa.string()), key, length)  # decimal text, exactly
    if n > _max_rows(length):
        parts = [_pseudo_array(arr.slice(i, _max_rows(length)), key, length) for i in range(0, n, _max_rows(length))]
        return pa.chunked_array(parts, pa.string())
    validity = arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count else None
    if pa.types.is_integer(t):
        ids = pc.fill_null(pc.cast(arr, pa.int64()), 0).to_numpy(zero_copy_only=False)
        distinct, codes = np.unique(ids, return_inverse=True)
        messages = [b"%d" % v for v in distinct.tolist()]
    elif _is_text(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        large = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
        enc = pc.dictionary_encode(arr.cast(pa.large_binary() if large else pa.binary()))  # the UTF-8 bytes as stored
        messages = enc.dictionary.to_pylist()
        codes = pc.fill_null(enc.indices, 0).to_numpy(zero_copy_only=False)
    else:
        raise ParameterError(f"customer ids of type {t} cannot be pseudonymised; ids must be integers or strings.")
    if not messages:  # only nulls
        return pa.nulls(n, pa.string())
    hexed = _hex_digests(messages, key, length // 2)[codes]
    return _string_array(np.ascontiguousarray(hexed).ravel(), n, length, validity)


def pseudonymise(ids, key, *, length=PSEUDONYM_HEX, n_threads=None):
    """The pseudonym of every id: ``HMAC-SHA256(key, canonical bytes)`` as ``length`` hex characters.

    Exactly :func:`pseudonym_of` for every id (see the module docstring for
    the canonical bytes: integer 7 and string "7" get the same pseudonym):
    each distinct id is hashed once with the standard library's
    ``hmac.digest`` and the pseudonyms are mapped back to the rows.

    Parameters
    ----------
    ids : pyarrow Array / ChunkedArray (integers, strings, binary, dictionary), NumPy array or list
        Nulls stay null.  Python integers beyond int64 are hashed by their
        decimal text too.
    key : bytes
        The secret key (see :func:`load_key`); at least 16 bytes.
    length : int, default 32
        Hex characters kept (even, 16..64): 32 = 128 bits.
    n_threads : int or None
        Accepted for compatibility and ignored: the hashing runs in this thread.

    Returns
    -------
    pyarrow string Array (ChunkedArray for a ChunkedArray)

    Examples
    --------
    >>> import pyarrow as pa
    >>> key = b"an example key, not secret"
    >>> p = pseudonymise(pa.array([7, None, -12]), key)
    >>> p[0].as_py() == pseudonym_of("7", key), p[1].as_py()
    (True, None)
    """
    key = bytes(key) if isinstance(key, (bytes, bytearray)) else _decode_key(key, "key")
    if len(key) < MIN_KEY_BYTES:
        raise ParameterError(f"the key has {len(key)} bytes; at least {MIN_KEY_BYTES} are needed.")
    length = _check_length(length)
    if isinstance(ids, pa.ChunkedArray):
        return pa.chunked_array([_pseudo_array(c, key, length) for c in ids.chunks], pa.string())
    if isinstance(ids, pa.Array):
        return _pseudo_array(ids, key, length)
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
        arr = pa.array(ids) if ids.dtype != np.uint64 else pa.array(ids.astype(str))
        return _pseudo_array(arr, key, length)
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "bfc":
        raise ParameterError(f"customer ids of dtype {ids.dtype} cannot be pseudonymised; use integers or strings.")
    values = list(ids)
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        arr = None
    if arr is None or pa.types.is_boolean(arr.type) or pa.types.is_floating(arr.type):
        # mixed types or integers beyond 64 bits: the reference, one id at a time
        return pa.array([pseudonym_of(v, key, length) for v in values], pa.string())
    return _pseudo_array(arr, key, length)


def pseudonymise_column(table, column, key, *, length=PSEUDONYM_HEX, n_threads=None):
    """``table`` with ``column`` replaced by its pseudonyms (same name, string type; one piece).

    The field keeps its name so that the outputs of two runs with the same
    key still join on it; its metadata records ``segone.pseudonym`` (the
    algorithm and length, never the key).
    """
    if column not in table.column_names:
        return table
    i = table.column_names.index(column)
    col = pseudonymise(table.column(i), key, length=length, n_threads=n_threads)
    f = pa.field(column, pa.string(), metadata={b"segone.pseudonym": f"{HASH_ALGORITHM}/{length * 4}".encode()})
    return table.set_column(i, f, col)


# ============================================================ personal columns
def _tokens(name):
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
    return [t for t in re.split(r"[^0-9A-Za-z]+", spaced.lower()) if t]


def is_personal(name):
    """True when the column name looks like personal data (e-mail, phone, name, address, birth date, ids).

    Examples
    --------
    >>> [is_personal(c) for c in ("email", "firstName", "date_of_birth", "region", "consent_marketing")]
    [True, True, True, False, False]
    """
    toks = _tokens(name)
    if any(t in PERSONAL_TOKENS for t in toks):
        return True
    if any("".join(toks[i : i + 2]) in ("email", "ipaddress") for i in range(len(toks))):
        return True
    flat = "".join(toks)
    return any(s in flat for s in PERSONAL_SUBSTRINGS)


def personal_columns(names, extra=()):
    """The names among ``names`` that hold personal data: detected by pattern, plus ``extra``.

    ``names`` may be column names, a pyarrow Schema or a table.  With a
    schema or a table, boolean columns are never detected (a flag holds no
    e-mail or phone number), so ``email_opt_in: bool`` stays.  ``extra``
    names count whatever they look like.

    Examples
    --------
    >>> personal_columns(["customer_id", "email", "phone", "name", "region", "loyalty_tier"], extra=["loyalty_tier"])
    ['email', 'phone', 'name', 'loyalty_tier']
    """
    if isinstance(names, (pa.Table, pa.RecordBatch)):
        names = names.schema
    types = {}
    if isinstance(names, pa.Schema):
        types = {f.name: f.type for f in names}
        names = names.names
    extra = [extra] if isinstance(extra, str) else list(extra)
    out = []
    for n in names:
        t = types.get(n)
        if n in extra or (is_personal(n) and not (t is not None and pa.types.is_boolean(t))):
            out.append(n)
    return out


def drop_personal_columns(table, columns):
    """``table`` (one piece) without ``columns`` (attribute names; their ``crm_`` names too)."""
    drop = [c for c in table.column_names if c in columns or (c.startswith("crm_") and c[4:] in columns)]
    return table.drop_columns(drop) if drop else table


# ========================================================= minimum segment size
def _check_k(k, n=None, what="customers"):
    k = check_int(k, "min_segment_size", low=1)
    if n is not None and k > n:
        raise ParameterError(
            f"min_segment_size={k} is larger than the {n} {what}: no segment could be shown. Lower it to at most "
            f"{n}, or leave it unset."
        )
    return k


def merge_small_segments(sizes, centroids, k, *, return_survivors=False):
    """Merge every segment below ``k`` customers into its nearest segment: old id -> new id.

    Repeatedly takes the smallest segment below ``k`` (ties: the lowest id)
    and merges it into the nearest remaining segment by squared Euclidean
    distance between centroids (ties: the lowest id); the merged segment's
    centroid is the size-weighted mean of the two.  Empty segments merge too.
    The surviving segments are renumbered 0..m-1 in their old order.

    Parameters
    ----------
    sizes : array of int (n_segments,)
    centroids : array (n_segments, n_features)
    k : int >= 1; at most ``sizes.sum()``

    Returns
    -------
    ndarray of int64 (n_segments,): the new id of every old segment.
    With ``return_survivors``, also the old id of every new segment (the
    segment the others were merged into).

    Examples
    --------
    >>> import numpy as np
    >>> merge_small_segments([50, 3, 40, 2], np.array([[0.0], [0.9], [1.0], [0.1]]), 10).tolist()
    [0, 1, 1, 0]
    """
    size = np.asarray(sizes, dtype=np.int64).copy()
    if size.ndim != 1 or (size < 0).any():
        raise ParameterError("sizes must be a 1-D array of non-negative counts.")
    cent = np.asarray(centroids, dtype=np.float64).copy()
    if cent.ndim != 2 or cent.shape[0] != size.size:
        raise ParameterError(f"centroids has shape {cent.shape}; expected ({size.size}, n_features).")
    if not np.isfinite(cent).all():
        raise ParameterError("centroids hold NaN or infinite values.")
    k = _check_k(k, int(size.sum()), "customers in the segments")
    m = size.size
    alive = np.ones(m, dtype=bool)
    target = np.arange(m)
    while True:
        cand = alive & (size < k)
        if not cand.any() or alive.sum() <= 1:
            break
        i = int(np.argmin(np.where(cand, size, np.iinfo(np.int64).max)))
        d = ((cent - cent[i]) ** 2).sum(axis=1)
        d[~alive] = np.inf
        d[i] = np.inf
        j = int(np.argmin(d))
        tot = size[i] + size[j]
        if tot > 0:
            cent[j] = (size[j] * cent[j] + size[i] * cent[i]) / tot
        size[j] = tot
        size[i] = 0
        alive[i] = False
        target[i] = j
    root = target.copy()
    for _ in range(m):  # follow chains of merges to the survivor
        nxt = target[root]
        if (nxt == root).all():
            break
        root = nxt
    new_id = np.cumsum(alive) - 1
    mapping = new_id[root].astype(np.int64)
    return (mapping, np.flatnonzero(alive).astype(np.int64)) if return_survivors else mapping


def withhold_small_segments(sizes, k):
    """Withhold every segment below ``k`` customers: old id -> new id, -1 for a withheld segment.

    Examples
    --------
    >>> withhold_small_segments([50, 3, 40, 0], 10).tolist()
    [0, -1, 1, -1]
    """
    size = np.asarray(sizes, dtype=np.int64)
    k = _check_k(k)
    keep = size >= k
    return np.where(keep, np.cumsum(keep) - 1, -1).astype(np.int64)


def small_segment_mapping(sizes, centroids, k, how="merge"):
    """:func:`merge_small_segments` or :func:`withhold_small_segments` by ``how``, and a report.

    Returns ``(mapping, report)``; the report (for :func:`privacy_summary`)
    holds the method, the segments merged (old -> old id of the segment it
    was merged into) or withheld, how many customers were withheld, the
    ``mapping`` (old cluster -> exported segment, -1: withheld; the model
    keeps the fitted clusters) and the ``survivors`` (the old id of every
    exported segment).
    """
    if how not in SMALL_SEGMENTS:
        raise ParameterError(f"small_segments={how!r}; use one of {SMALL_SEGMENTS}.")
    sizes = np.asarray(sizes, dtype=np.int64)
    if how == "merge":
        mapping, survivors = merge_small_segments(sizes, centroids, k, return_survivors=True)
        merged = {str(o): int(survivors[n]) for o, n in enumerate(mapping.tolist()) if survivors[n] != o}
        report = {"method": "merge", "segments_before": int(sizes.size), "segments_after": int(mapping.max()) + 1,
                  "merged": merged, "withheld": [], "customers_withheld": 0, "mapping": mapping.tolist(),
                  "survivors": survivors.tolist()}  # fmt: skip
    else:
        mapping = withhold_small_segments(sizes, k)
        held = np.flatnonzero(mapping < 0)
        report = {"method": "withhold", "segments_before": int(sizes.size),
                  "segments_after": int((mapping >= 0).sum()), "merged": {}, "withheld": held.tolist(),
                  "customers_withheld": int(sizes[held].sum()), "mapping": mapping.tolist(),
                  "survivors": np.flatnonzero(mapping >= 0).tolist()}  # fmt: skip
    return mapping, report


def relabel_segments(table, mapping, column="segment"):
    """One piece with ``column`` renamed through ``mapping`` (old -> new; -1 becomes null).

    Examples
    --------
    >>> import pyarrow as pa
    >>> relabel_segments(pa.table({"segment": [0, 1, 2, None]}), [0, -1, 0]).column("segment").to_pylist()
    [0, None, 0, None]
    """
    if column not in table.column_names:
        return table
    mapping = np.asarray(mapping, dtype=np.int64)
    i = table.column_names.index(column)
    col = table.column(i)
    v = pc.fill_null(col, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    if v.size and v.max() >= mapping.size:
        raise DataError(f"column {column!r} holds segment {v.max()} but the mapping covers 0..{mapping.size - 1}.")
    new = np.where(v >= 0, mapping[np.maximum(v, 0)], -1)
    return table.set_column(i, column, pa.array(new.astype(np.int32), mask=new < 0))


def exported_ids(mapping, survivors, segment_ids=None):
    """Cluster index -> the id written in the outputs, -1 for a withheld cluster.

    ``mapping`` and ``survivors`` come from :func:`small_segment_mapping`;
    ``segment_ids`` are the stable ids of the clusters (tracking; default:
    the cluster index), so an exported segment carries its survivor's id.

    Examples
    --------
    >>> exported_ids([0, 1, 1, -1], [0, 2], segment_ids=[7, 8, 9, 10]).tolist()
    [7, 9, 9, -1]
    >>> exported_ids([0, 1, 1, -1], [0, 2]).tolist()
    [0, 1, 1, -1]
    """
    mapping = np.asarray(mapping, dtype=np.int64)
    survivors = np.asarray(survivors, dtype=np.int64)
    if segment_ids is None:
        ids = np.arange(survivors.size, dtype=np.int64)
    else:
        ids = np.asarray(segment_ids, dtype=np.int64)[survivors]
    return np.where(mapping >= 0, ids[np.maximum(mapping, 0)] if ids.size else -1, -1).astype(np.int64)


def id_lookup(old_ids, new_ids):
    """A lookup array for :func:`relabel_segments` sending each ``old_ids[i]`` to ``new_ids[i]`` (others: -1).

    For tables already holding stable ids (moves, migration): e.g.
    ``id_lookup(segment_ids, exported_ids(mapping, survivors, segment_ids))``.

    Examples
    --------
    >>> id_lookup([7, 8, 9], [7, 9, 9]).tolist()
    [-1, -1, -1, -1, -1, -1, -1, 7, 9, 9]
    """
    old_ids = np.asarray(old_ids, dtype=np.int64)
    if old_ids.size and old_ids.min() < 0:
        raise ParameterError("segment ids must be non-negative.")
    out = np.full(int(old_ids.max()) + 1 if old_ids.size else 0, -1, dtype=np.int64)
    out[old_ids] = np.asarray(new_ids, dtype=np.int64)
    return out


def cluster_labels(mapping, labels, withheld="(withheld)"):
    """One label per fitted cluster (for the model): its exported segment's label, ``withheld`` for a withheld one.

    Examples
    --------
    >>> cluster_labels([0, 1, 1, -1], ["Loyal", "New"])
    ['Loyal', 'New', 'New', '(withheld)']
    """
    labels = list(labels)
    return [labels[m] if m >= 0 else withheld for m in np.asarray(mapping, dtype=np.int64).tolist()]


def relabel_moves(moves, lookup):
    """A moves table (:func:`segone.track.moves_piece`, new segments in stable ids) after merging or withholding.

    ``segment`` goes through ``lookup`` (:func:`id_lookup`: stable id ->
    exported id, -1 withheld); the rows of customers whose segment was
    withheld are dropped (they are in no exported segment), and ``status``
    is recomputed (stayed when the previous and the exported segment agree).
    """
    from segone.track import STATUSES

    seg = moves.column("segment")
    before = seg.is_valid().to_numpy(zero_copy_only=False) if seg.null_count else np.ones(moves.num_rows, bool)
    moves = relabel_segments(moves, lookup)
    after = moves.column("segment")
    now = after.is_valid().to_numpy(zero_copy_only=False) if after.null_count else np.ones(moves.num_rows, bool)
    keep = ~(before & ~now)
    if not keep.all():
        moves = moves.filter(pa.array(keep))
        now = now[keep]
    prev = moves.column("previous_segment")
    had = prev.is_valid().to_numpy(zero_copy_only=False) if prev.null_count else np.ones(moves.num_rows, bool)
    p = pc.fill_null(prev, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    q = pc.fill_null(moves.column("segment"), -1).to_numpy(zero_copy_only=False).astype(np.int64)
    status = np.where(had & now, np.where(p == q, 0, 1), np.where(now, 2, 3)).astype(np.int8)
    col = pa.DictionaryArray.from_arrays(pa.array(status), pa.array(STATUSES))
    return moves.set_column(moves.column_names.index("status"), "status", col)


def merge_segment_stats(stats, mapping):
    """The :class:`~segone.describe.SegmentStats` of the segments after ``mapping`` (old -> new, -1: withheld).

    Exact: sizes, sums and counts add, the median sketches and the attribute
    value counts merge; the customers of a withheld segment count in ``n``
    only (as unassigned customers do), so the shares of the other segments
    keep their denominator.  ``stats.finish(rules)`` then gives the segment
    table, labels included.  (The same as a ``SegmentStats.merge_segments``
    method would do; the integrator may move it there.)
    """
    from segone.describe import SegmentStats

    mapping = np.asarray(mapping, dtype=np.int64)
    if mapping.shape != (stats.k,):
        raise ParameterError(f"mapping has shape {mapping.shape}; give one new id per segment ({stats.k}).")
    if (mapping >= 0).all() and (mapping == np.arange(stats.k)).all():
        return stats
    k2 = int(mapping.max()) + 1 if (mapping >= 0).any() else 0
    if k2 and set(np.unique(mapping[mapping >= 0]).tolist()) != set(range(k2)):
        raise ParameterError("mapping must send the kept segments onto 0..m-1 without gaps.")
    out = SegmentStats(k2, stats.columns, stats.median_columns, stats.categorical)
    out.n = stats.n
    keep = mapping >= 0
    out.size = np.bincount(mapping[keep], weights=stats.size[keep], minlength=k2).astype(np.int64)
    for j in range(k2):
        members = np.flatnonzero(mapping == j)
        out.sums[j] = stats.sums[members].sum(axis=0)
        out.counts[j] = stats.counts[members].sum(axis=0)
        for m in range(len(stats.median_columns)):
            sk = stats.seg_sketch[m][members[0]]
            for i in members[1:]:
                sk = sk.merge(stats.seg_sketch[m][i])
            out.seg_sketch[m][j] = sk
        for c in stats.categorical:
            d = {}
            for i in members:
                for key, v in stats.cat_counts[c][i].items():
                    d[key] = d.get(key, 0) + v
            out.cat_counts[c][j] = d
    out.all_sketch = list(stats.all_sketch)
    out.gap = stats.gap
    return out


# -- suppressing small cells -------------------------------------------------------
def _values(table, column):
    """A numeric column as float64 with NaN for nulls."""
    col = to_float64(table.column(column))
    return pc.fill_null(col, np.nan).to_numpy(zero_copy_only=False).astype(np.float64)


def suppress_small_cells(table, k, *, count_columns=(), share_columns=None, groups=(), row_columns=(),
                         flag_column="suppressed"):  # fmt: skip
    """Null every cell of ``table`` that stands for 1..k-1 customers, and the cells that would reveal it.

    Parameters
    ----------
    table : pyarrow.Table
        A small exported table (segment table, migration table, a report).
    k : int >= 1
        The minimum number of customers a shown cell may stand for.
    count_columns : names
        Columns holding customer counts.
    share_columns : dict {column: size}, optional
        Columns holding shares of a number of customers: ``size`` is a column
        name, a number or an array; the implied count is ``round(share * size)``.
    groups : list of lists of (column, row)
        Cells whose total is published or can be derived (a row's shares sum
        to 1, a segment's migration counts to its size): when one cell of a
        group is suppressed, the smallest other positive cell of the group is
        suppressed as well (repeated until no group has a lone suppressed cell).
    row_columns : names
        Columns nulled in every row with a suppressed cell (e.g. the spend of
        a suppressed migration cell).
    flag_column : str or None
        A boolean column added (True: the row has a suppressed cell).

    Zero cells are shown (they stand for no customer).  Returns ``(table,
    report)`` with report = {"k", "cells", "primary", "secondary", "rows"}.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"size": [100, 40], "x=a": [0.95, 0.5], "x=b": [0.05, 0.5]})
    >>> out, rep = suppress_small_cells(t, 10, share_columns={"x=a": "size", "x=b": "size"},
    ...                                 groups=[[("x=a", 0), ("x=b", 0)], [("x=a", 1), ("x=b", 1)]])
    >>> out.column("x=b").to_pylist(), out.column("x=a").to_pylist(), rep["primary"], rep["secondary"]
    ([None, 0.5], [None, 0.5], 1, 1)
    """
    k = _check_k(k)
    share_columns = dict(share_columns or {})
    sizes = [v for v in share_columns.values() if isinstance(v, str)]
    missing = [c for c in [*count_columns, *share_columns, *sizes, *row_columns] if c not in table.column_names]
    if missing:
        raise ParameterError(f"the table has no column(s) {missing}; columns: {table.column_names[:30]}.")
    n = table.num_rows
    counts = {}
    for c in count_columns:
        counts[c] = _values(table, c)
    for c, size in share_columns.items():
        s = _values(table, size) if isinstance(size, str) else np.broadcast_to(np.asarray(size, np.float64), (n,))
        counts[c] = np.round(_values(table, c) * s)
    sup = {c: (v > 0) & (v < k) for c, v in counts.items()}
    primary = int(sum(m.sum() for m in sup.values()))
    secondary = 0
    groups = [list(g) for g in groups]
    changed = True
    while changed:
        changed = False
        for g in groups:
            cells = [(c, r) for c, r in g if c in counts]
            hidden = [cell for cell in cells if sup[cell[0]][cell[1]]]
            if len(hidden) != 1:
                continue
            cand = [(counts[c][r], i) for i, (c, r) in enumerate(cells)
                    if not sup[c][r] and np.isfinite(counts[c][r]) and counts[c][r] > 0]  # fmt: skip
            if not cand:
                continue
            _, i = min(cand)
            c, r = cells[i]
            sup[c][r] = True
            secondary += 1
            changed = True
    rows = np.zeros(n, dtype=bool)
    for m in sup.values():
        rows |= m
    for c, m in sup.items():
        if m.any():
            i = table.column_names.index(c)
            col = table.column(i)
            table = table.set_column(i, table.field(i), pc.if_else(pa.array(m), pa.scalar(None, col.type), col))
    for c in row_columns:
        if rows.any():
            i = table.column_names.index(c)
            col = table.column(i)
            table = table.set_column(i, table.field(i), pc.if_else(pa.array(rows), pa.scalar(None, col.type), col))
    if flag_column:
        flag = pa.array(rows)
        if flag_column in table.column_names:
            table = table.set_column(table.column_names.index(flag_column), flag_column, flag)
        else:
            table = table.append_column(flag_column, flag)
    return table, {"k": k, "cells": primary + secondary, "primary": primary, "secondary": secondary,
                   "rows": int(rows.sum())}  # fmt: skip


def _mix_groups(names, categorical):
    """{attribute: [mix column names]} of a segment table (columns ``attribute=value``)."""
    out = {}
    if categorical is None:
        for n in names:
            if "=" in n:
                out.setdefault(n.split("=", 1)[0], []).append(n)
    else:
        for c in categorical:
            cols = [n for n in names if n.startswith(f"{c}=")]
            if cols:
                out[c] = cols
    return out


def suppress_segment_table(segments, k, *, categorical=None):
    """The segment table with no cell below ``k`` customers: ``(table, report)``.

    A segment whose ``size`` is 1..k-1 (merge or withhold them first) has
    every cell but its id nulled.  Attribute-mix columns (``attribute=value``,
    shares of the segment's size; those of ``categorical`` when given, else
    every column with ``=`` in its name) imply ``share * size`` customers:
    cells of 1..k-1 customers are nulled, and per segment and attribute one
    more cell when a single one was (the shares sum to 1).
    """
    k = _check_k(k)
    size = _values(segments, "size")
    small = (size > 0) & (size < k)
    mixes = _mix_groups(segments.column_names, categorical)
    share_columns = {c: "size" for cols in mixes.values() for c in cols}
    groups = [[(c, r) for c in cols] for cols in mixes.values() for r in range(segments.num_rows)]
    out, report = suppress_small_cells(segments, k, share_columns=share_columns, groups=groups)
    if small.any():
        rows = pa.array(small)
        for i, name in enumerate(out.column_names):
            if name in ("segment", "suppressed"):
                continue
            col = out.column(i)
            out = out.set_column(i, out.field(i), pc.if_else(rows, pa.scalar(None, col.type), col))
        flag = out.column_names.index("suppressed")
        out = out.set_column(flag, "suppressed", pc.or_(out.column(flag), rows))
        report["rows"] = int(pc.sum(out.column(flag)).as_py() or 0)
        report["small_segments"] = np.flatnonzero(small).tolist()
    return out, report


def suppress_counts_table(table, k, *, count="customers", keys=(), row_columns=("share", "spend")):
    """A long table of customer counts per cell (one row per combination of ``keys``) with no cell below ``k``.

    ``count`` of 1..k-1 becomes null with the ``row_columns`` of its row
    (those present), and a ``suppressed`` column flags those rows; within
    every value of every key (whose totals are published or derivable) a lone
    suppressed cell takes the smallest other cell with it.  Returns ``(table,
    report)``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"r": [1, 1, 2, 2], "f": [1, 2, 1, 2], "customers": [30, 3, 40, 50]})
    >>> out, rep = suppress_counts_table(t, 10, keys=("r",))
    >>> out.column("customers").to_pylist(), out.column("suppressed").to_pylist(), rep["cells"]
    ([None, None, 40, 50], [True, True, False, False], 2)
    >>> suppress_counts_table(t, 10, keys=("r", "f"))[0].column("customers").to_pylist()  # 2 x 2: all or none
    [None, None, None, None]
    """
    k = _check_k(k)
    groups = {}
    for key in keys:
        for r, v in enumerate(table.column(key).to_pylist()):
            groups.setdefault((key, v), []).append((count, r))
    rows = [c for c in row_columns if c in table.column_names]
    return suppress_small_cells(table, k, count_columns=[count], groups=list(groups.values()), row_columns=rows)


def suppress_migration(table, k):
    """The migration table (:func:`segone.track.migration_table`) with no cell below ``k`` customers.

    ``customers`` of 1..k-1 become null with their ``share`` and ``spend``,
    and a ``suppressed`` column flags those rows; within every from-segment
    and every to-segment (whose totals are published) a lone suppressed cell
    takes the smallest other cell with it.  Returns ``(table, report)``.
    """
    return suppress_counts_table(table, k, keys=("from_segment", "to_segment"))


def suppress_counts(counts, k):
    """A dict of customer counts (e.g. run.json's tracking counts) with every 1..k-1 value replaced by None.

    Examples
    --------
    >>> suppress_counts({"new": 3, "gone": 0, "stayed": 120, "note": "x"}, 10)
    {'new': None, 'gone': 0, 'stayed': 120, 'note': 'x'}
    """
    k = _check_k(k)
    return {key: (None if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 < v < k else v)
            for key, v in counts.items()}  # fmt: skip


# =================================================================== options
def attributes_schema(attributes):
    """The schema of the attributes input, read cheaply (Parquet metadata, a table's schema); None if unknown."""
    if attributes is None:
        return None
    if isinstance(attributes, (pa.Table, pa.RecordBatch, pa.RecordBatchReader)):
        return attributes.schema
    if isinstance(attributes, (str, os.PathLike)):
        from segone.io import _open_path

        return _open_path(attributes, "attributes").schema
    if hasattr(attributes, "schema") and isinstance(attributes.schema, pa.Schema):  # a pyarrow Dataset
        return attributes.schema
    meta = getattr(attributes, "_meta", None)  # a Dask DataFrame
    if meta is not None:
        return pa.Schema.from_pandas(meta, preserve_index=False)
    if type(attributes).__name__ == "DataFrame" and type(attributes).__module__.startswith("pandas"):
        return pa.Schema.from_pandas(attributes.head(0), preserve_index=False)
    if hasattr(attributes, "__arrow_c_schema__"):
        return pa.schema(attributes)
    if hasattr(attributes, "__arrow_c_stream__"):
        try:
            return pa.RecordBatchReader.from_stream(attributes).schema
        except (TypeError, pa.ArrowInvalid):
            return None
    return None


def rows_upper_bound(sources):
    """The number of rows of all ``sources`` (an upper bound of the customers), cheaply; None when unknown.

    Parquet paths are counted from their metadata; tables by ``num_rows``.
    """
    import pyarrow.dataset as ds

    total = 0
    for src in sources:
        if src is None:
            continue
        if isinstance(src, (pa.Table, pa.RecordBatch)):
            total += src.num_rows
        elif isinstance(src, (str, os.PathLike)):
            from segone.io import _open_path

            total += _open_path(src, "input").count_rows()
        elif isinstance(src, ds.Dataset):
            total += src.count_rows()
        else:
            return None
    return total


def _vocabulary(purposes):
    out = set(DEFAULT_PURPOSES)
    if purposes is not None:
        out |= {str(p).strip().lower() for p in ([purposes] if isinstance(purposes, str) else purposes)}
    return frozenset(out)


def _names(value, what):
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        out = tuple(value)
    except TypeError:
        raise ParameterError(f"{what} must be a column name or a list of names, got {value!r}.") from None
    if not all(isinstance(v, str) for v in out):
        raise ParameterError(f"{what} must hold column names (strings), got {list(out)!r}.")
    return out


@dataclass
class PrivacyOptions:
    """What the user asked for; :meth:`validate` checks it and returns a :class:`PrivacyPlan`.

    Parameters
    ----------
    consent : str, ConsentRule or list, optional
        Consent rules: ``"COLUMN"`` (boolean) or ``"COLUMN=purpose"``.
    consent_scope : {"export", "processing"}
        "export": customers without consent are processed (in the segment
        statistics) but never written per customer; "processing": they are
        dropped right after the profiles are built.
    consent_default : bool, default False
        What a customer without a consent record counts as.
    hash_ids : bool, default False
        Replace the customer id by its HMAC pseudonym in every output.
    id_key : bytes or str, optional
        The secret key (else ``id_key_file``, else ``$SEGONE_ID_KEY``).
    id_key_file : path, optional
    min_segment_size : int, optional
        No exported cell below this many customers.
    small_segments : {"merge", "withhold"}
    keep_columns : names
        Personal attribute columns to keep anyway.
    personal : names
        More attribute columns to treat as personal data.
    purposes : names, optional
        Purposes known besides :data:`DEFAULT_PURPOSES`.
    """

    consent: object = None
    consent_scope: str = "export"
    consent_default: bool = False
    hash_ids: bool = False
    id_key: object = field(default=None, repr=False)
    id_key_file: object = None
    min_segment_size: int | None = None
    small_segments: str = "merge"
    keep_columns: tuple = ()
    personal: tuple = ()
    purposes: tuple | None = None

    def validate(self, attributes_schema=None, n_customers=None, *, id_column="customer_id"):
        """Check everything that can be checked without reading data: a :class:`PrivacyPlan`, or a SegoneError.

        ``attributes_schema`` (a pyarrow Schema of the customer attributes,
        None when unknown) lets the consent, keep and personal columns be
        checked; ``n_customers`` (the customers, or an upper bound of them)
        lets ``min_segment_size`` be checked.  ``id_column`` is the
        attributes' customer id column (never treated as personal); the
        plan's ``id_column`` is the outputs' (:data:`segone.outputs.ID_COLUMN`),
        which profiles and every output use whatever the input calls it.
        """
        rules = parse_consent(self.consent)
        if self.consent_scope not in CONSENT_SCOPES:
            raise ParameterError(f"consent_scope={self.consent_scope!r}; use one of {CONSENT_SCOPES}.")
        if not isinstance(self.consent_default, (bool, np.bool_)):
            raise ParameterError(f"consent_default must be True or False, got {self.consent_default!r}.")
        if not isinstance(self.hash_ids, (bool, np.bool_)):
            raise ParameterError(f"hash_ids must be True or False, got {self.hash_ids!r}.")
        if self.small_segments not in SMALL_SEGMENTS:
            raise ParameterError(f"small_segments={self.small_segments!r}; use one of {SMALL_SEGMENTS}.")
        purposes = _vocabulary(self.purposes)
        for r in rules:
            if r.purpose is not None and r.purpose not in purposes:
                raise ParameterError(
                    f"consent rule {str(r)!r} names the purpose {r.purpose!r}, which is not a known purpose "
                    f"({', '.join(sorted(purposes))}); fix the spelling or add it with purposes=[...]."
                )
        k = None
        if self.min_segment_size is not None:
            n = None if n_customers is None else int(n_customers)
            k = _check_k(self.min_segment_size)
            if n is not None and k > n:  # n: the rows of the inputs, an upper bound of the customers
                raise ParameterError(
                    f"min_segment_size={k} is larger than the {n} rows of the inputs, so larger than the number of "
                    "customers (at most one per row): no segment could be shown. Lower it below the number of "
                    "customers (each exported segment must hold at least min_segment_size of them), or leave it "
                    "unset."
                )
        key, source = None, None
        if self.hash_ids:
            key, source = load_key(self.id_key, self.id_key_file)
        elif self.id_key is not None or self.id_key_file is not None:
            raise ParameterError(
                "an id key is given but hash_ids is False; pass hash_ids=True (--hash-ids) to write pseudonymous "
                "ids, or drop the key."
            )
        keep = _names(self.keep_columns, "keep_columns")
        extra = _names(self.personal, "personal")
        personal = ()
        if attributes_schema is not None:
            names = attributes_schema.names
            for r in rules:
                if r.column not in names:
                    raise SchemaError(
                        f"attributes: consent column {r.column!r} not found; the attributes have columns "
                        f"{names[:30]}. Name one of them (--consent COLUMN or --consent COLUMN=purpose)."
                    )
                _check_rule_type(r, attributes_schema.field(r.column).type, "attributes")
            for what, cols in (("keep_columns", keep), ("personal", extra)):
                bad = [c for c in cols if c not in names]
                if bad:
                    raise SchemaError(
                        f"{what} names column(s) {bad} the attributes do not have; columns: {names[:30]}."
                    )
            protected = {id_column, *(r.column for r in rules)}
            personal = tuple(c for c in personal_columns(attributes_schema, extra)
                             if c not in keep and c not in protected)  # fmt: skip
            clash = [c for c in extra if c in protected]
            if clash:
                raise ParameterError(f"personal names {clash}, which is the id or a consent column; these stay.")
        elif keep or extra:
            personal = tuple(c for c in extra if c not in keep)
        return PrivacyPlan(rules=rules, scope=self.consent_scope, default=bool(self.consent_default),
                           key=key, key_source=source, min_segment_size=k, small_segments=self.small_segments,
                           keep_columns=keep, personal_columns=personal, purposes=purposes,
                           id_column=outputs.ID_COLUMN)  # fmt: skip


@dataclass(frozen=True)
class PrivacyPlan:
    """The validated privacy settings (from :meth:`PrivacyOptions.validate`), passed to the per-piece functions.

    Holds the key in memory (for the workers) but never shows it: not in
    ``repr``, not in :meth:`to_dict`.
    """

    rules: tuple = ()
    scope: str = "export"
    default: bool = False
    key: bytes | None = field(default=None, repr=False)
    key_source: str | None = None
    min_segment_size: int | None = None
    small_segments: str = "merge"
    keep_columns: tuple = ()
    personal_columns: tuple = ()
    purposes: frozenset = field(default=frozenset(DEFAULT_PURPOSES), repr=False)
    id_column: str = "customer_id"
    pseudonym_length: int = PSEUDONYM_HEX

    @property
    def hash_ids(self):
        return self.key is not None

    @property
    def active(self):
        """True when anything changes the job (consent, hashing, personal columns or a minimum size)."""
        return bool(self.rules or self.key is not None or self.personal_columns or self.min_segment_size)

    def check_customers(self, n):
        """Raise ParameterError when ``min_segment_size`` exceeds the ``n`` customers (call right after PROFILE)."""
        if self.min_segment_size is not None:
            _check_k(self.min_segment_size, int(n))

    def to_dict(self):
        """The settings for run.json (never the key)."""
        return {
            "consent": [str(r) for r in self.rules], "consent_scope": self.scope, "consent_default": self.default,
            "hash_ids": self.hash_ids, "min_segment_size": self.min_segment_size,
            "small_segments": self.small_segments, "keep_columns": list(self.keep_columns),
        }  # fmt: skip


def check_privacy(options=None, *, attributes=None, inputs=(), schema=None, scan=True, **kwargs):
    """Validate the privacy options before any work: a :class:`PrivacyPlan`, or a SegoneError.

    Call it first thing in ``run()``.  Reads only the attributes' schema
    (Parquet metadata) and, with ``scan``, the consent columns themselves
    (their values must be booleans or known purposes); the row counts of
    ``inputs`` (Parquet metadata) bound the number of customers for the
    ``min_segment_size`` check (the exact check is
    :meth:`PrivacyPlan.check_customers`, right after PROFILE).

    Parameters
    ----------
    options : PrivacyOptions, optional
        Or give its fields as keyword arguments.
    attributes : the attributes input (path, table, ...), optional
    inputs : the inputs (transactions, events, attributes)
    schema : dict, optional
        The run's role -> column mapping (for the customer id column).
    """
    from segone.profile import resolve_schema

    if options is None:
        options = PrivacyOptions(**kwargs)
    elif kwargs:
        raise ParameterError("give either a PrivacyOptions or its fields as keywords, not both.")
    cid = resolve_schema(schema)["customer_id"]
    rules = parse_consent(options.consent)
    if rules and attributes is None:
        raise ParameterError(
            f"consent={[str(r) for r in rules]} needs the customer attributes that hold the consent columns; "
            "pass attributes=... (a synth directory finds customers/ itself)."
        )
    aschema = attributes_schema(attributes)
    bound = rows_upper_bound(inputs) if inputs else None
    plan = options.validate(aschema, bound, id_column=cid)
    if scan and plan.rules and attributes is not None and aschema is not None and _rescannable(attributes):
        from segone.io import read_table

        cols = sorted({r.column for r in plan.rules})
        t = read_table(attributes, cols, name="attributes")
        for r in plan.rules:
            _rule_state(t, r, plan.purposes, "attributes")
    return plan


def _rescannable(source):
    """True when reading the source does not consume it (paths, tables, datasets, data frames)."""
    import pyarrow.dataset as ds

    return isinstance(source, (str, os.PathLike, pa.Table, pa.RecordBatch, ds.Dataset)) or (
        type(source).__name__ == "DataFrame" and not hasattr(source, "_meta"))


# ========================================================== per-piece stages
def processing_piece(profiles, *, plan, with_ids=False):
    """Right after PROFILE, per piece: ``(profiles, PrivacyCounts)``.

    Counts consent; with scope "processing" drops the customers without it;
    removes the personal columns.  With ``with_ids`` a third item: the ids
    (pseudonyms when hashing) of the customers without consent, for
    :func:`filter_moves`.
    """
    mask, counts = consent_mask(profiles, plan.rules, default=plan.default, purposes=plan.purposes)
    state = PrivacyCounts.from_mask(mask, counts, scope=plan.scope)
    ids = _ids_without_consent(profiles, mask, plan) if with_ids else None
    if plan.rules and plan.scope == "processing":
        profiles = filter_consented(profiles, mask)
    profiles = drop_personal_columns(profiles, plan.personal_columns)
    return (profiles, state, ids) if with_ids else (profiles, state)


def _ids_without_consent(profiles, mask, plan):
    ids = profiles.column(plan.id_column).filter(pa.array(~mask))
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    return pseudonymise(ids, plan.key, length=plan.pseudonym_length) if plan.key is not None else ids


def export_piece(table, profiles, *, plan, mapping=None, column="segment"):
    """At WRITE, per piece of a per-customer output (assignments, personas) and its profiles piece.

    Renames the segments through ``mapping`` (from
    :func:`small_segment_mapping`; a withheld segment's customers get a null
    segment), keeps the consenting customers (scope "export": the rows of
    ``table`` follow those of ``profiles``), replaces the id by its
    pseudonym when hashing, and drops any personal column.
    """
    if table.num_rows != profiles.num_rows:
        raise ParameterError(
            f"the output piece has {table.num_rows} rows but its profiles piece {profiles.num_rows}; give the "
            "piece computed from these profiles (the same rows, in the same order)."
        )
    if plan.key is not None and plan.id_column not in table.column_names:
        raise SchemaError(
            f"the output piece has no id column {plan.id_column!r} to pseudonymise (columns "
            f"{table.column_names[:10]}); per-customer outputs must name the id {outputs.ID_COLUMN!r}."
        )
    if mapping is not None:
        table = relabel_segments(table, mapping, column)
    if plan.rules and plan.scope == "export":
        mask, _ = consent_mask(profiles, plan.rules, default=plan.default, purposes=plan.purposes)
        table = filter_consented(table, mask)
    if plan.key is not None:
        table = pseudonymise_column(table, plan.id_column, plan.key, length=plan.pseudonym_length)
    return drop_personal_columns(table, plan.personal_columns)


def excluded_ids(profiles, *, plan):
    """The ids (pseudonyms when hashing) of the customers of one piece without consent (before any filter).

    For moves tables, whose rows do not follow the profiles (see :func:`filter_moves`).
    """
    if not plan.rules:
        return pa.array([], pa.string() if plan.key is not None else profiles.schema.field(plan.id_column).type)
    mask, _ = consent_mask(profiles, plan.rules, default=plan.default, purposes=plan.purposes)
    return _ids_without_consent(profiles, mask, plan)


def filter_moves(moves, excluded, *, plan, id_column=None):
    """A moves piece without the customers lacking consent.

    ``excluded``: the ids from :func:`excluded_ids` of every piece
    (concatenated), in the id form of ``moves``.  A customer gone since the
    previous run has no record in this run: kept only when
    ``consent_default`` is True.
    """
    if not plan.rules:
        return moves
    cid = id_column or plan.id_column
    keep = pc.invert(pc.is_in(moves.column(cid), value_set=excluded)) if len(excluded) else None
    if not plan.default and "segment" in moves.column_names:
        here = pc.is_valid(moves.column("segment"))
        keep = here if keep is None else pc.and_(keep, here)
    return moves if keep is None else moves.filter(keep)


# =================================================================== run.json
def privacy_summary(plan, counts=None, *, segments=None, suppressed=None, exported_ids=None):
    """run.json's ``privacy`` section: what was applied and what it did (never the key).

    Parameters
    ----------
    plan : PrivacyPlan
    counts : PrivacyCounts or dict, optional
        The merged consent counts.
    segments : dict, optional
        The report of :func:`small_segment_mapping`.
    suppressed : dict {table name: report of suppress_*}, optional
    exported_ids : array, optional
        The id each fitted cluster is written as (:func:`exported_ids`; -1: withheld).
    """
    c = counts.finish() if isinstance(counts, PrivacyCounts) else dict(counts or {})
    consent = None
    if plan.rules:
        consent = {
            "columns": [str(r) for r in plan.rules],
            "rule": "a customer consents when every rule holds",
            "scope": plan.scope,
            "default": plan.default,
            "unknown_counted_as": "consent" if plan.default else "no consent",
            "customers": c.get("customers"),
            "consented": c.get("consented"),
            "not_consented": c.get("refused"),
            "unknown": c.get("unknown"),
            "dropped_before_processing": c.get("dropped", 0),
            "excluded_from_outputs": c.get("excluded", 0),
        }
    hashing = {"enabled": plan.key is not None}
    if plan.key is not None:
        hashing.update({
            "algorithm": HASH_ALGORITHM,
            "pseudonym": f"lower-case hex, first {plan.pseudonym_length} characters ({plan.pseudonym_length * 4} bits)",
            "id_encoding": "integers as ASCII decimal text, strings as UTF-8 bytes (7 and '7' hash alike)",
            "key_source": plan.key_source,
            "columns": [plan.id_column],
        })  # fmt: skip
    out = {
        "consent": consent,
        "pseudonymous_ids": hashing,
        "personal_columns_removed": list(plan.personal_columns),
        "personal_columns_kept": list(plan.keep_columns),
        "min_segment_size": plan.min_segment_size,
    }
    if plan.min_segment_size is not None:
        seg = dict(segments or {})
        out["small_segments"] = {
            "method": plan.small_segments,
            "merged": seg.get("merged", {}),
            "withheld": seg.get("withheld", []),
            "customers_withheld": seg.get("customers_withheld", 0),
            "segments_before": seg.get("segments_before"),
            "segments_after": seg.get("segments_after"),
            "mapping": seg.get("mapping"),
            "exported_ids": None if exported_ids is None else [int(i) for i in np.asarray(exported_ids).tolist()],
        }
        out["cells_suppressed"] = {name: int(r.get("cells", 0)) for name, r in (suppressed or {}).items()}
    return out


# ========================================================== the model's record
RECORD_VERSION = 1
KEY_CHECK_MESSAGE = b"segone id key check v1"


class WiderPrivacyError(ParameterError):
    """Options that would widen the privacy options of the model or output they work from (refused)."""


def key_check(key):
    """The key check value of an id key: ``HMAC-SHA256(key, KEY_CHECK_MESSAGE)``, 32 hex characters.

    A model records it (never the key) so that ``apply`` and ``persona``
    can tell the key it was fitted with from another.  It is the pseudonym of
    the id ``b"segone id key check v1"``: it reveals no more about the key
    than any pseudonym in the outputs.

    Examples
    --------
    >>> key_check(b"0123456789abcdef") == pseudonym_of(KEY_CHECK_MESSAGE, b"0123456789abcdef")
    True
    """
    return hmac.new(bytes(key), KEY_CHECK_MESSAGE, hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]


def model_record(plan, exported_ids=None):
    """The privacy options a model was fitted with, for model.json's ``settings.privacy`` (never the key).

    Parameters
    ----------
    plan : PrivacyPlan
        The run's validated options.
    exported_ids : array of int, optional
        The id every fitted cluster (centroid row) was exported as, -1 for
        a withheld one (:func:`exported_ids`; with a minimum segment size).

    Returns
    -------
    dict
        ``version``, ``consent`` (rule strings), ``consent_scope``,
        ``consent_default``, ``purposes`` (those besides
        :data:`DEFAULT_PURPOSES`), ``hash_ids``, ``key_check``
        (:func:`key_check`, None without hashing), ``pseudonym_length``,
        ``min_segment_size``, ``small_segments``, ``personal_columns`` (those
        removed), ``keep_columns`` and ``exported_ids`` (None: every cluster
        is exported as its own id).

    Examples
    --------
    >>> plan = PrivacyOptions(consent="ok", hash_ids=True, id_key=b"0123456789abcdef", min_segment_size=5).validate()
    >>> rec = model_record(plan)
    >>> rec["consent"], rec["hash_ids"], rec["key_check"] == key_check(b"0123456789abcdef"), rec["min_segment_size"]
    (['ok'], True, True, 5)
    """
    return {
        "version": RECORD_VERSION,
        "consent": [str(r) for r in plan.rules],
        "consent_scope": plan.scope,
        "consent_default": bool(plan.default),
        "purposes": sorted(set(plan.purposes) - set(DEFAULT_PURPOSES)),
        "hash_ids": plan.hash_ids,
        "key_check": key_check(plan.key) if plan.key is not None else None,
        "pseudonym_length": int(plan.pseudonym_length),
        "min_segment_size": plan.min_segment_size,
        "small_segments": plan.small_segments,
        "personal_columns": list(plan.personal_columns),
        "keep_columns": list(plan.keep_columns),
        "exported_ids": None if exported_ids is None else [int(i) for i in np.asarray(exported_ids).tolist()],
    }


def read_record(record, where, n_clusters=None):
    """A model's privacy record (:func:`model_record`), checked: the dict, or None when there is none.

    ``where`` names the file in error messages; ``n_clusters`` checks the
    length of ``exported_ids``.  A malformed record raises
    :class:`~segone.errors.ModelFormatError` naming the field: a model whose
    privacy options cannot be read is never applied without them.
    """
    if record is None:
        return None
    fix = "re-run `segone run` to write the model again (or restore the model/ folder it wrote)"

    def bad(name, what):
        raise ModelFormatError(f"{where}: field 'settings.privacy.{name}' {what}; {fix}.")

    if not isinstance(record, dict):
        bad("", f"must be a JSON object, got {type(record).__name__}")
    version = record.get("version")
    if version != RECORD_VERSION:
        raise ModelFormatError(f"{where}: field 'settings.privacy.version' is {version!r}; this segone reads "
                               f"privacy records of version {RECORD_VERSION} (use the segone that wrote the "
                               "model).")  # fmt: skip
    out = dict(record)
    for name in ("consent", "purposes", "personal_columns", "keep_columns"):
        v = record.get(name, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            bad(name, f"must be a list of strings, got {v!r:.80}")
        out[name] = list(v)
    try:
        parse_consent(out["consent"])
    except ParameterError as exc:
        bad("consent", f"holds an invalid rule ({exc})")
    if record.get("consent_scope", "export") not in CONSENT_SCOPES:
        bad("consent_scope", f"must be one of {CONSENT_SCOPES}, got {record.get('consent_scope')!r}")
    if record.get("small_segments", "merge") not in SMALL_SEGMENTS:
        bad("small_segments", f"must be one of {SMALL_SEGMENTS}, got {record.get('small_segments')!r}")
    for name in ("consent_default", "hash_ids"):
        if not isinstance(record.get(name, False), bool):
            bad(name, f"must be true or false, got {record.get(name)!r}")
    out.setdefault("consent_scope", "export")
    out.setdefault("small_segments", "merge")
    out["consent_default"] = bool(record.get("consent_default", False))
    out["hash_ids"] = bool(record.get("hash_ids", False))
    kc = record.get("key_check")
    if kc is not None and (not isinstance(kc, str) or not re.fullmatch(r"[0-9a-f]{32}", kc)):
        bad("key_check", "must be 32 lower-case hex characters or null")
    if out["hash_ids"] and kc is None:
        bad("key_check", "is missing although hash_ids is true")
    out["key_check"] = kc
    length = record.get("pseudonym_length", PSEUDONYM_HEX)
    if isinstance(length, bool) or not isinstance(length, int) or length % 2 or not 16 <= length <= 64:
        bad("pseudonym_length", f"must be an even integer in 16..64, got {length!r}")
    out["pseudonym_length"] = length
    k = record.get("min_segment_size")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        bad("min_segment_size", f"must be a positive integer or null, got {k!r}")
    out["min_segment_size"] = k
    ids = record.get("exported_ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= -1
                                                for i in ids):  # fmt: skip
            bad("exported_ids", "must be a list of segment ids (-1: withheld) or null")
        if n_clusters is not None and len(ids) != n_clusters:
            bad("exported_ids", f"has {len(ids)} entries for {n_clusters} segments")
    out["exported_ids"] = ids
    return out


def model_privacy(model):
    """The checked privacy record of a loaded :class:`segone.model.Model` (None for a model without one)."""
    where = os.path.join(model.path or "model", outputs.MODEL_JSON)
    return read_record(model.settings.get("privacy"), where, n_clusters=len(model.segment_ids))


def _record_from_summary(p):
    """A record from run.json's ``privacy`` section (:func:`privacy_summary`): no key check, no exported ids."""
    consent = p.get("consent") if isinstance(p.get("consent"), dict) else {}
    hashing = p.get("pseudonymous_ids") if isinstance(p.get("pseudonymous_ids"), dict) else {}
    k = p.get("min_segment_size")
    return {
        "version": RECORD_VERSION, "consent": [c for c in consent.get("columns") or [] if isinstance(c, str)],
        "consent_scope": consent.get("scope", "export") if consent.get("scope") in CONSENT_SCOPES else "processing",
        "consent_default": consent.get("default") is True, "purposes": [], "hash_ids": hashing.get("enabled") is True,
        "key_check": None, "pseudonym_length": PSEUDONYM_HEX,
        "min_segment_size": k if isinstance(k, int) and not isinstance(k, bool) and k >= 1 else None,
        "small_segments": "merge", "personal_columns": [], "keep_columns": [], "exported_ids": None,
    }  # fmt: skip


def output_record(out_dir):
    """The privacy options an output directory was written with: ``(record or None, source)``.

    From the record of its model (``model/model.json``, ``settings.privacy``)
    when there is one, else from the ``privacy`` section of its run.json
    (outputs of ``apply``, models written before the record); ``source`` says
    which ("model", "run.json" or None).  A model.json that cannot be read at
    all counts as absent; a malformed privacy record raises ModelFormatError.
    """
    from segone._validation import load_json
    from segone.model import read_model_json

    out_dir = os.fspath(out_dir)
    mdir = outputs.model_dir(out_dir)
    if os.path.isfile(os.path.join(mdir, outputs.MODEL_JSON)):
        try:
            directory, meta = read_model_json(mdir)
        except ModelFormatError:
            meta = None
        if meta is not None and "privacy" in meta.get("settings", {}):
            where = os.path.join(directory, outputs.MODEL_JSON)
            return read_record(meta["settings"]["privacy"], where, n_clusters=meta.get("n_clusters")), "model"
    rpath = os.path.join(out_dir, outputs.RUN_JSON)
    if not os.path.isfile(rpath):
        return None, None
    try:
        run = load_json(rpath, outputs.RUN_JSON)  # nesting bounded: never a RecursionError
    except ModelFormatError:
        return None, None
    p = run.get("privacy") if isinstance(run, dict) else None
    return (_record_from_summary(p), "run.json") if isinstance(p, dict) else (None, None)


def _refuse(option, what, fix):
    raise WiderPrivacyError(f"{option}: {what}; {fix}.")


def apply_plan(record, *, attributes=None, inputs=(), schema=None, where="the model", consent=None,
               consent_scope=None, consent_default=None, hash_ids=None, id_key=None, id_key_file=None,
               min_segment_size=None, small_segments=None, keep_columns=None, personal_columns=None,
               purposes=None):  # fmt: skip
    """The privacy plan of ``apply``: the model's options, narrowed (never widened) by the given ones.

    Every option left at None takes the model's value (``record``, from
    :func:`read_record`; a model without a record: the defaults of
    :func:`segone.run`).  Options that would widen the model's are refused
    with :class:`WiderPrivacyError` naming the option and the fix:

    * ``hash_ids=False`` where the model hashed ids, or a key whose
      :func:`key_check` differs from the model's;
    * ``consent`` rules that leave out one of the model's, ``consent_scope=
      "export"`` where the model had "processing", ``consent_default=True``
      where the model had False;
    * a ``min_segment_size`` smaller than the model's;
    * ``keep_columns`` naming a column the model treated as personal.

    Narrower options (more consent rules, hashing where the model did not, a
    larger minimum size, more personal columns) are taken.

    Returns
    -------
    (PrivacyPlan, list of str)
        The plan, and the options taken from the model.

    Examples
    --------
    >>> key = b"0123456789abcdef"
    >>> rec = model_record(PrivacyOptions(hash_ids=True, id_key=key, min_segment_size=5).validate())
    >>> plan, taken = apply_plan(rec, id_key=key)
    >>> plan.hash_ids, plan.min_segment_size, taken
    (True, 5, ['hash_ids', 'min_segment_size'])
    >>> apply_plan(rec, id_key=key, min_segment_size=2)
    Traceback (most recent call last):
    ...
    segone.privacy.WiderPrivacyError: min_segment_size=2: the model was fitted with min_segment_size=5, ...
    """
    rec = record or {}
    taken = []
    rec_rules = parse_consent(rec.get("consent") or ())
    model = f"the model ({where})" if where != "the model" else "the model"

    # consent: the model's rules must all hold
    if consent is None:
        rules = rec_rules
        if rec_rules:
            taken.append("consent")
    else:
        rules = parse_consent(consent)
        missing = [str(r) for r in rec_rules if r not in rules]
        if missing:
            _refuse(f"consent={[str(r) for r in rules]}",
                    f"{model} was fitted with the consent rule(s) {[str(r) for r in rec_rules]} and this leaves out "
                    f"{missing}, so customers without that consent would be written",
                    "leave consent unset to use the model's rules (or add the missing ones: --consent "
                    f"{' --consent '.join(missing)})")  # fmt: skip
    if consent_scope is None:
        consent_scope = rec.get("consent_scope", "export")
        if rec_rules and consent_scope != "export":
            taken.append("consent_scope")
    elif rec_rules and rec.get("consent_scope") == "processing" and consent_scope == "export":
        _refuse("consent_scope='export'", f"{model} was fitted with consent_scope='processing' (customers without "
                "consent take part in nothing)", "leave consent_scope unset, or give 'processing'")  # fmt: skip
    if consent_default is None:
        consent_default = bool(rec.get("consent_default", False))
        if rec_rules and consent_default:
            taken.append("consent_default")
    elif rec_rules and consent_default and not rec.get("consent_default", False):
        _refuse("consent_default=True", f"{model} counts customers without a consent record as not consenting",
                "leave consent_default unset (--consent-default no)")  # fmt: skip

    # pseudonyms: never raw ids where the model hashed them, and only with the model's key
    if hash_ids is None:
        hash_ids = bool(rec.get("hash_ids", False))
        if hash_ids:
            taken.append("hash_ids")
            try:
                load_key(id_key, id_key_file)
            except ParameterError as exc:
                raise ParameterError(f"{model} was fitted with hash_ids=True, so apply writes pseudonyms with the "
                                     f"same key: {exc}") from None  # fmt: skip
    elif rec.get("hash_ids") and not hash_ids:
        _refuse("hash_ids=False", f"{model} was fitted with hash_ids=True, so this would write raw customer ids "
                "where its outputs hold pseudonyms", "leave hash_ids unset (drop --no-hash-ids) and give the model's "
                f"key (${KEY_ENV} or --id-key-file)")  # fmt: skip

    # minimum cell size: never smaller
    k_rec = rec.get("min_segment_size")
    if min_segment_size is None:
        min_segment_size = k_rec
        if k_rec is not None:
            taken.append("min_segment_size")
    elif k_rec is not None and check_int(min_segment_size, "min_segment_size", low=1) < k_rec:
        _refuse(f"min_segment_size={min_segment_size}", f"the model was fitted with min_segment_size={k_rec}, so "
                "smaller cells would be shown", f"leave min_segment_size unset or give at least {k_rec}")  # fmt: skip
    if small_segments is None:
        small_segments = rec.get("small_segments", "merge")

    # personal columns: those the model removed stay removed
    rec_personal = list(rec.get("personal_columns") or [])
    aschema = attributes_schema(attributes)
    names = set(aschema.names) if aschema is not None else None
    if keep_columns is None:
        keep_columns = [c for c in rec.get("keep_columns") or [] if names is None or c in names]
    else:
        keep_columns = list(_names(keep_columns, "keep_columns"))
        clash = [c for c in keep_columns if c in rec_personal]
        if clash:
            _refuse(f"keep_columns={keep_columns}", f"{model} removed {clash} as personal data",
                    "leave them out of keep_columns")  # fmt: skip
    purposes = sorted(set(rec.get("purposes") or []) | set(_names(purposes, "purposes")))
    if rules and attributes is None and "consent" in taken:
        raise ParameterError(f"{model} was fitted with the consent rule(s) {[str(r) for r in rules]}, so apply needs "
                             "the customer attributes that hold them: pass attributes=... (--attributes).")  # fmt: skip

    plan = check_privacy(
        attributes=attributes, inputs=inputs, schema=schema, consent=list(map(str, rules)) or None,
        consent_scope=consent_scope, consent_default=consent_default, hash_ids=hash_ids, id_key=id_key,
        id_key_file=id_key_file, min_segment_size=min_segment_size, small_segments=small_segments,
        keep_columns=keep_columns, personal=personal_columns or (), purposes=purposes or None,
    )  # fmt: skip
    if plan.key is not None and rec.get("hash_ids") and rec.get("key_check"):
        if key_check(plan.key) != rec["key_check"]:
            _refuse(f"the id key (from the {plan.key_source})", f"it is not the key {model} was fitted with (the key "
                    "checks differ), so the pseudonyms would not match the model's outputs",
                    f"give the model's key (${KEY_ENV} or --id-key-file)")  # fmt: skip
    extra = tuple(c for c in rec_personal if c not in plan.personal_columns and c not in plan.keep_columns)
    if plan.key is not None and rec.get("hash_ids"):
        plan = replace(plan, pseudonym_length=int(rec.get("pseudonym_length", PSEUDONYM_HEX)))
    if extra:
        plan = replace(plan, personal_columns=plan.personal_columns + extra)
    return plan, taken


def tracking_plan(old, new, *, where=("the old output", "the new output")):
    """The privacy plan of ``track``: the stricter options of its two outputs (records or None).

    The consent rules of both hold (customers gone since the old output are
    left out of the moves unless both count a missing record as consent),
    the larger minimum segment size applies.  Both outputs must hold the same
    kind of id: raw ids in one and pseudonyms in the other, or pseudonyms of
    two keys, cannot be compared (:class:`WiderPrivacyError`: the comparison
    would write raw ids next to pseudonyms, or match nobody).

    Examples
    --------
    >>> a = model_record(PrivacyOptions(consent="ok", min_segment_size=5).validate())
    >>> plan = tracking_plan(a, None)
    >>> [str(r) for r in plan.rules], plan.default, plan.min_segment_size
    (['ok'], False, 5)
    """
    recs = [r or {} for r in (old, new)]
    hashed = [bool(r.get("hash_ids")) for r in recs]
    if hashed[0] != hashed[1]:
        raw = where[hashed.index(False)]
        _refuse("track", f"{where[hashed.index(True)]} holds pseudonymous ids (hash_ids) and {raw} raw ids: no "
                "customer can be matched, and the comparison would write raw ids next to pseudonyms",
                f"write {raw} again with --hash-ids and the same key (or apply the model with it)")  # fmt: skip
    checks = [r.get("key_check") for r in recs]
    if all(hashed) and checks[0] and checks[1] and checks[0] != checks[1]:
        _refuse("track", f"{where[0]} and {where[1]} were written with different id keys, so their pseudonyms "
                "cannot be matched", "write both with the same key")  # fmt: skip
    rules = tuple(dict.fromkeys(r for rec in recs for r in parse_consent(rec.get("consent") or ())))
    with_rules = [rec for rec in recs if rec.get("consent")]
    default = bool(with_rules) and all(rec.get("consent_default") for rec in with_rules)
    ks = [rec.get("min_segment_size") for rec in recs if rec.get("min_segment_size")]
    return PrivacyPlan(rules=rules, default=default, min_segment_size=max(ks) if ks else None)


__all__ = [
    "tracking_plan",
    "read_record",
    "output_record",
    "model_record",
    "model_privacy",
    "key_check",
    "apply_plan",
    "WiderPrivacyError",
    "RECORD_VERSION",
    "KEY_CHECK_MESSAGE",
    "CONSENT_SCOPES",
    "DEFAULT_PURPOSES",
    "HASH_ALGORITHM",
    "KEY_ENV",
    "MIN_KEY_BYTES",
    "PSEUDONYM_HEX",
    "ConsentRule",
    "PrivacyCounts",
    "PrivacyOptions",
    "PrivacyPlan",
    "attributes_schema",
    "canonical_id_bytes",
    "check_privacy",
    "consent_mask",
    "drop_personal_columns",
    "cluster_labels",
    "excluded_ids",
    "export_piece",
    "exported_ids",
    "id_lookup",
    "filter_consented",
    "filter_moves",
    "is_personal",
    "load_key",
    "merge_segment_stats",
    "merge_small_segments",
    "parse_consent",
    "personal_columns",
    "privacy_summary",
    "processing_piece",
    "pseudonym_of",
    "pseudonymise",
    "pseudonymise_column",
    "relabel_moves",
    "relabel_segments",
    "rows_upper_bound",
    "small_segment_mapping",
    "suppress_counts",
    "suppress_counts_table",
    "suppress_migration",
    "suppress_segment_table",
    "suppress_small_cells",
    "withhold_small_segments",
]
