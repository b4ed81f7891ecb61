"""Pseudonymous ids: the secret key, the canonical bytes of an id and its HMAC-SHA256 pseudonym."""

import base64
import binascii
import hashlib
import hmac
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone._validation import check_int
from segone.errors import ParameterError
from segone.privacy.consent import _is_text


KEY_ENV = "SEGONE_ID_KEY"
MIN_KEY_BYTES = 16
PSEUDONYM_HEX = 32  # hex characters of a pseudonym: 128 bits
HASH_ALGORITHM = "HMAC-SHA256"


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
