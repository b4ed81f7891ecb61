"""Personal columns: attribute columns holding personal data, found by name and removed before any work."""

import re

import pyarrow as pa



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
