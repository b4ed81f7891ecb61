"""The model's privacy record: what a model was fitted with, and the plans of ``apply`` and ``track`` that
honour it (never wider)."""

import hashlib
import hmac
import os
import re
from dataclasses import replace

import numpy as np

from segone._validation import check_int
from segone import outputs
from segone.errors import ModelFormatError, ParameterError
from segone.privacy.consent import CONSENT_SCOPES, DEFAULT_PURPOSES, parse_consent
from segone.privacy.options import PrivacyPlan, _names, attributes_schema, check_privacy
from segone.privacy.pseudonyms import KEY_ENV, PSEUDONYM_HEX, load_key
from segone.privacy.suppression import SMALL_SEGMENTS


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
