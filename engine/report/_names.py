"""Plain-language names of features and number formats for the report."""

import math
import textwrap

# feature groups, in the order the report shows them
GROUPS = (
    "Recency and tenure",
    "Orders and spend",
    "Predicted value",
    "Category mix (share of spend)",
    "Channels (share of orders)",
    "Web activity",
    "Purchase model inputs",
    "Other",
)

# features that grow with time by construction (every customer is a day older at every run): never "drift"
GROWS_WITH_TIME = frozenset({"tenure_days", "T"})


def lower_is_better(name):
    """True for features where less is good for the business (days since the last purchase or visit, an
    abandoned cart): the report colours a low value of these like a high value of spend."""
    return name in ("recency_days", "cart_abandoned") or name.startswith("days_since_")


_FIXED = {
    "recency_days": ("Days since last purchase", "Recency and tenure"),
    "tenure_days": ("Days since first purchase", "Recency and tenure"),
    "orders": ("Orders", "Orders and spend"),
    "purchase_days": ("Days with a purchase", "Orders and spend"),
    "spend_total": ("Total spend", "Orders and spend"),
    "spend_mean": ("Average order value", "Orders and spend"),
    "spend_max": ("Largest order", "Orders and spend"),
    "n_categories": ("Categories bought", "Orders and spend"),
    "clv": ("Predicted customer value (CLV)", "Predicted value"),
    "p_alive": ("Chance still active", "Predicted value"),
    "expected_purchases": ("Expected purchases", "Predicted value"),
    "expected_order_value": ("Expected order value", "Predicted value"),
    "frequency": ("Repeat purchases", "Purchase model inputs"),
    "recency": ("Days from first to last purchase", "Purchase model inputs"),
    "T": ("Days since first purchase (model)", "Purchase model inputs"),
    "monetary_value": ("Average repeat order value", "Purchase model inputs"),
    "share_other": ("Other categories", "Category mix (share of spend)"),
}

_EVENTS = {
    "visit": "Site visits",
    "pricing_page": "Pricing-page views",
    "cart": "Add-to-cart events",
    "email_click": "Email clicks",
}


def _words(s):
    return s.replace("_", " ").strip()


def feature_info(name):
    """(plain-language name, group) of a profile feature name."""
    if name in _FIXED:
        return _FIXED[name]
    for prefix, template in (("orders_", "Orders, last {n} days"), ("spend_", "Spend, last {n} days")):
        rest = name[len(prefix):]
        if name.startswith(prefix) and rest.endswith("d") and rest[:-1].isdigit():
            return template.format(n=rest[:-1]), "Orders and spend"
    if name.startswith("share_"):
        return _words(name[6:]).capitalize(), "Category mix (share of spend)"
    if name.startswith("channel_"):
        return _words(name[8:]).capitalize(), "Channels (share of orders)"
    if name.startswith("events_"):
        ev = name[7:]
        return _EVENTS.get(ev, f"Web events: {_words(ev)}"), "Web activity"
    if name.startswith("days_since_"):
        ev = name[11:]
        return f"Days since last {_EVENTS.get(ev, _words(ev)).lower().rstrip('s')}", "Web activity"
    return _words(name).capitalize(), "Other"


def feature_name(name):
    return feature_info(name)[0]


def attribute_name(column):
    """'region=north' -> ('Region', 'north')."""
    attr, _, value = column.partition("=")
    return _words(attr).capitalize(), value


def trait_text(trait):
    """A segment trait of segments.parquet ('share_shoes x3.79') in plain words."""
    feat, sep, ratio = str(trait).rpartition(" x")
    if not sep:
        return str(trait)
    try:
        r = float(ratio)
    except ValueError:
        return str(trait)
    return f"{feature_name(feat)} {fmt_lift(r)}"


# ------------------------------------------------------------------ numbers
def _bad(x):
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def fmt_int(x):
    return "–" if _bad(x) else f"{int(round(x)):,}"


def fmt_pct(x, digits=1):
    if _bad(x):
        return "–"
    if 0 < abs(x) < 10 ** -(digits + 2):
        return f"<{10 ** -digits:g}%"
    return f"{x * 100:,.{digits}f}%"


def fmt_num(x, digits=None):
    """Amounts and counts: thousands separators; fewer decimals for bigger numbers."""
    if _bad(x):
        return "–"
    if digits is None:
        a = abs(x)
        digits = 0 if a >= 100 else 1 if a >= 10 else 2
    return f"{x:,.{digits}f}"


def fmt_lift(x):
    if _bad(x):
        return "n/a"
    return f"×{x:.2f}" if x < 10 else f"×{x:,.0f}" if x >= 100 else f"×{x:.1f}"


def fmt_seconds(x):
    if _bad(x):
        return "–"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:,.1f} s"


def wrap_lines(text, width=22, max_lines=3):
    lines = textwrap.wrap(str(text), width=width) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(width - 1, 1)] + "…"
    return lines
