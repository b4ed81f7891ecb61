"""Plain-language names of features and number formats for the report."""

import math
import textwrap

from segone import features as _features

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


def grows_with_time(name):
    """True for features that grow with time by construction (every customer is a day older at every run): never
    "drift" (the registry's ``grows_with_time``)."""
    return _features.grows_with_time(name)


# the exact features that grow with time (the families have none)
GROWS_WITH_TIME = frozenset(f.name for f in _features.FEATURES if f.grows_with_time and not f.is_family)


def lower_is_better(name):
    """True for features where less is good for the business (days since the last purchase or visit, an
    abandoned cart: the registry's ``direction="lower"``): the report colours a low value of these like a high
    value of spend."""
    return _features.lower_is_better(name)


_EVENTS = {
    "visit": "Site visits",
    "pricing_page": "Pricing-page views",
    "cart": "Add-to-cart events",
    "email_click": "Email clicks",
}


def _words(s):
    return s.replace("_", " ").strip()


def feature_info(name):
    """(plain-language name, group) of a profile feature name, from the feature registry (title and section)."""
    f = _features.find(name)
    if f is None:
        return _words(name).capitalize(), "Other"
    if not f.is_family:
        return f.title, f.section
    raw = _features.label_of(name, f.name, readable=False)
    label = _words(raw)
    event = _EVENTS.get(raw)
    return f.title.format(label=label, Label=label.capitalize(), event=event or f"Web events: {label}",
                          event_one=(event or label).lower().rstrip("s")), f.section


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
