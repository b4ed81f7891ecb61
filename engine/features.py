"""The profile-feature registry: every profile feature, declared once.

A :class:`Feature` says what a profile column is (its group, kind and unit),
which profile step builds it, and how every consumer treats it: the scorer's
default transform, the persona phrase, the segment table (medians, totals,
traits, mixes), the labels and the report (plain name, section, colour
direction, drift).  The consumers read :data:`FEATURES` through the helpers
below instead of keeping lists of feature names of their own:

* :mod:`segone.profile` builds the columns of the ``"transactions"`` and
  ``"btyd"`` steps by iterating the registry (one builder per feature in
  ``profile._BUILDERS``); the other steps build families of columns;
* :mod:`segone.score` takes its default features, "never" fills and share
  weights from :func:`scorer_defaults`, :func:`null_means_never` and
  :func:`share_group_of`;
* :mod:`segone.describe` builds :data:`~segone.DEFAULT_PHRASES` from
  :func:`persona_phrases`, the segment table's medians from
  :func:`median_columns`, totals from :func:`total_columns`, and reads the
  ``trait`` / ``mix`` flags;
* :mod:`segone.report` reads the plain name, section, direction and
  ``grows_with_time``.

A name holding ``*`` declares a family of columns (``share_*``: one column
per category); ``{label}`` in its texts stands for what the ``*`` matched,
made readable.  An exact name always wins over a family it also matches
(``share_other`` over ``share_*``).

The registry's order is the order of the segment table's median columns
and (exact names first) of the persona vocabulary; the profile's own
column order is fixed by its build steps (:func:`segone.build_profiles`),
and the scorer's default columns come by :data:`KIND_ORDER` (counts,
money, days; then the families), the order saved models carry.

Adding a feature: its entry here and its kernel code (a builder in
``segone.profile._BUILDERS`` reading the kernel's outputs, and a new kernel
output in ``kernels/`` when none holds what it needs); nothing else.  The
consistency test ``tests/test_features_registry.py`` checks that profiles,
scorer, personas, segment table and report agree with the registry.

Examples
--------
>>> from segone.features import find, scorer_defaults
>>> find("share_shoes").name, find("share_other").name
('share_*', 'share_other')
>>> scorer_defaults(["customer_id", "recency_days", "orders", "share_shoes"])
[('orders', 'log1p'), ('recency_days', 'log1p'), ('share_shoes', 'identity')]
"""

import fnmatch
import functools
from dataclasses import dataclass, field

ID_COLUMN = "customer_id"
# the profile steps that build columns, in the order they run (see segone.profile); "predict" columns come from the
# PREDICT stage (segone.clv) and join the profiles there
STEPS = ("transactions", "windows", "categories", "channels", "events", "funnel", "btyd", "predict")
KINDS = ("timestamp", "days", "count", "money", "share", "rate", "stage", "flag", "probability")
# the scorer's default columns come in this order of kinds (single features first, then the families)
KIND_ORDER = ("count", "money", "days", "share")
TRANSFORMS = (None, "identity", "log1p")
DIRECTIONS = ("higher", "lower", "neutral")


@dataclass(frozen=True)
class Feature:
    """One profile feature (or a family of them) and how every consumer treats it.

    Attributes
    ----------
    name : str
        The column name; a glob (``"share_*"``) for a family of columns.
    group : str
        What it measures: recency, tenure, frequency, monetary, basket,
        breadth, category, channel, web, btyd (the purchase-model inputs) or
        value (predicted).
    kind : str
        One of :data:`KINDS` (days, count, money, share, rate, stage, flag,
        probability, timestamp).
    unit : str
        The unit of its values ("days", "orders", "currency", "fraction", ...).
    step : str
        The step that builds it (:data:`STEPS`): a profile step, or "predict".
    title : str
        The report's plain-language name.  Families: ``{label}`` / ``{Label}``
        (what ``*`` matched, in words / capitalised); ``{event}`` /
        ``{event_one}`` (the report's name of that event type).
    section : str
        The report section it is shown under (``segone.report._names.GROUPS``).
    transform : {None, "identity", "log1p"}
        The scorer's transform when it is a default feature; None: not scored
        unless asked for.
    null_means_never : bool
        A null means "never happened" (no purchase, no such event): the
        scorer fills it with the largest value seen in fit, not 0.
    share_group : bool
        A family of shares: the scorer weighs its ``g`` columns
        ``sqrt(2 / g)`` each, so the group counts like about two features.
    phrase : dict or None
        The persona rule (without ``match``): ``group`` (members of one group
        are said once), ``high`` / ``low`` phrases and their optional keys
        (see :mod:`segone.describe._personas`); None: no rule of its own (the
        catch-all applies).
    direction : {"higher", "lower", "neutral"}
        Which way is good for the business; the report colours "lower"
        features (days since the last purchase) the other way round.
    grows_with_time : bool
        Grows by construction at every run (days since the first purchase):
        drift figures ignore it.
    median : bool or tuple of str
        The segment table reports its median per segment (True), or, for a
        family, the median of these members.
    total : bool
        The segment table reports its total per segment (predicted value).
    trait : bool
        May be named as a segment trait (the BTYD repeats are not).
    mix : bool
        A mix column (a share, an event count): a segment is never
        described by being far below the base on it.
    labels : bool
        The segment labels read it (:data:`segone.DEFAULT_LABEL_RULES` and
        :func:`segone.describe.segments.label_segments`).
    report : bool
        The report shows it (the lift heat map); timestamps are not shown.
    report_table : bool
        A median column of the report's segment table.
    digits : bool
        A family whose ``*`` stands for a whole number (the day windows).
    """

    name: str
    group: str
    kind: str
    unit: str
    step: str
    title: str
    section: str
    transform: "str | None" = None
    null_means_never: bool = False
    share_group: bool = False
    phrase: "dict | None" = field(default=None, hash=False)
    direction: str = "neutral"
    grows_with_time: bool = False
    median: "bool | tuple" = False
    total: bool = False
    trait: bool = True
    mix: bool = False
    labels: bool = False
    report: bool = True
    report_table: bool = False
    digits: bool = False

    @property
    def is_family(self):
        """True for a family of columns (a name with ``*``)."""
        return "*" in self.name

    def matches(self, column):
        """True when ``column`` is this feature or a member of its family."""
        if not self.is_family:
            return column == self.name
        if not fnmatch.fnmatchcase(column, self.name):
            return False
        return not self.digits or label_of(column, self.name, readable=False).isdigit()


_REC, _ORD = "Recency and tenure", "Orders and spend"
_PRED, _CAT, _CHAN = "Predicted value", "Category mix (share of spend)", "Channels (share of orders)"
_WEB, _BTYD, _OTHER = "Web activity", "Purchase model inputs", "Other"

# fmt: off
FEATURES = (
    Feature("first_purchase", "recency", "timestamp", "UTC instant", "transactions", "First purchase", _OTHER,
            report=False),
    Feature("last_purchase", "recency", "timestamp", "UTC instant", "transactions", "Last purchase", _OTHER,
            report=False),
    Feature("recency_days", "recency", "days", "days", "transactions", "Days since last purchase", _REC,
            transform="log1p", null_means_never=True, direction="lower", median=True, labels=True,
            report_table=True,
            phrase={"group": "recency", "high": "last bought {value:.0f} days ago",
                    "low": "bought recently ({value:.0f} days ago)"}),
    Feature("tenure_days", "tenure", "days", "days", "transactions", "Days since first purchase", _REC,
            transform="log1p", grows_with_time=True, median=True, labels=True,
            phrase={"group": "tenure", "high": "a customer for {value:.0f} days",
                    "low": "first bought only {value:.0f} days ago"}),
    Feature("orders", "frequency", "count", "orders", "transactions", "Orders", _ORD,
            transform="log1p", direction="higher", median=True, labels=True, report_table=True,
            phrase={"group": "frequency", "high": "{value:.0f} orders, {ratio:.1f}x the typical customer",
                    "high_far": "{value:.0f} orders, far above the typical customer",
                    "low": "{value:.0f} orders only", "low_one": "1 order only", "low_zero": "no purchase yet"}),
    Feature("purchase_days", "frequency", "count", "days with a purchase", "transactions", "Days with a purchase",
            _ORD, transform="log1p", direction="higher", trait=False, labels=True,
            phrase={"group": "frequency", "high": "bought on {value:.0f} different days",
                    "low": "bought on only {value:.0f} days", "low_one": "bought on 1 day only", "low_min": 1}),
    Feature("spend_total", "monetary", "money", "currency", "transactions", "Total spend", _ORD,
            transform="log1p", direction="higher", median=True, labels=True, report_table=True,
            phrase={"group": "spend", "high": "spends {ratio:.1f}x the typical customer",
                    "high_far": "spends far above the typical customer ({value:.0f} in all)",
                    "low": "spends little ({value:.0f} in all)", "low_min": 0.5}),
    Feature("spend_mean", "basket", "money", "currency per order", "transactions", "Average order value", _ORD,
            transform="log1p", direction="higher", median=True, labels=True,
            phrase={"group": "basket", "high": "big baskets ({value:.0f} per order, {ratio:.1f}x typical)",
                    "high_far": "big baskets ({value:.0f} per order, far above typical)",
                    "low": "small baskets ({value:.0f} per order)", "low_min": 0.5}),
    Feature("spend_max", "basket", "money", "currency", "transactions", "Largest order", _ORD, direction="higher",
            phrase={"group": "basket", "high": "a top order of {value:.0f}", "low": None}),
    Feature("orders_*d", "frequency", "count", "orders", "windows", "Orders, last {label} days", _ORD,
            direction="higher", median=("orders_90d",), labels=True, digits=True,
            phrase={"group": "frequency", "high": "{value:.0f} orders in the last {label} days", "low": None}),
    Feature("spend_*d", "monetary", "money", "currency", "windows", "Spend, last {label} days", _ORD,
            direction="higher", median=("spend_365d",), labels=True, digits=True,
            phrase={"group": "spend", "high": "spent {value:.0f} in the last {label} days", "low": None}),
    Feature("n_categories", "breadth", "count", "categories", "categories", "Categories bought", _ORD,
            direction="higher", median=True, labels=True,
            phrase={"group": "breadth", "high": "buys across {value:.0f} categories",
                    "low": "sticks to {value:.0f} categories", "low_one": "sticks to 1 category", "low_min": 1}),
    Feature("share_*", "category", "share", "fraction of positive spend", "categories", "{Label}", _CAT,
            transform="identity", share_group=True, mix=True, labels=True,
            # a share that rounds to 0% is never said high; "never buys X" only of a category the base spends on
            phrase={"group": "category mix", "high": "{pct:.0f}% of spend on {label}", "high_min": 0.01,
                    "low": "never buys {label}", "low_max": 0.0, "low_base_min": 0.15}),
    Feature("share_other", "category", "share", "fraction of positive spend", "categories", "Other categories",
            _CAT, transform="identity", share_group=True, mix=True,
            phrase={"group": "share_other", "high": "{pct:.0f}% of spend outside the top categories", "low": None,
                    "high_min": 0.01}),
    Feature("channel_*", "channel", "share", "fraction of orders", "channels", "{Label}", _CHAN,
            transform="identity", share_group=True, mix=True, labels=True,
            phrase={"group": "channel", "high": "{pct:.0f}% of orders via {label}", "low": None, "high_min": 0.01}),
    Feature("events_*", "web", "count", "events", "events", "{event}", _WEB, transform="log1p", mix=True,
            labels=True,
            phrase={"group": "event:{label}", "high": "{label}: {value:.0f} times (top {top:.0f}%)",
                    "high_one": "{label}: once (top {top:.0f}%)", "low": None}),
    Feature("days_since_*", "web", "days", "days", "events", "Days since last {event_one}", _WEB,
            null_means_never=True, direction="lower", mix=True,
            phrase={"group": "event:{label}", "high": None, "low": "{label} seen {value:.0f} days ago",
                    "low_one": "{label} seen 1 day ago", "low_zero": "{label} seen today"}),
    # the BTYD columns repeat the columns above in lifetimes' units: never traits of their own
    Feature("frequency", "btyd", "count", "repeat periods", "btyd", "Repeat purchases", _BTYD, median=True,
            trait=False, labels=True, phrase={"group": "frequency", "high": None, "low": None}),
    Feature("recency", "btyd", "days", "periods", "btyd", "Days from first to last purchase", _BTYD, trait=False,
            labels=True, phrase={"group": "recency", "high": None, "low": None}),
    Feature("T", "btyd", "days", "periods", "btyd", "Days since first purchase (model)", _BTYD,
            grows_with_time=True, trait=False, phrase={"group": "tenure", "high": None, "low": None}),
    Feature("monetary_value", "btyd", "money", "currency per repeat period", "btyd", "Average repeat order value",
            _BTYD, median=True, trait=False, phrase={"group": "basket", "high": None, "low": None}),
    # predicted value (segone run's PREDICT stage)
    Feature("clv", "value", "money", "currency", "predict", "Predicted customer value (CLV)", _PRED,
            direction="higher", total=True,
            phrase={"group": "value", "high": "predicted value {value:.0f} (top {top:.0f}%)",
                    "low": "low predicted value ({value:.0f})"}),
    Feature("p_alive", "value", "probability", "probability", "predict", "Chance still active", _PRED,
            direction="higher", median=True, labels=True,
            phrase={"group": "value", "high": None, "low": "probably lapsed ({pct:.0f}% chance still active)"}),
    Feature("expected_purchases", "value", "count", "purchases", "predict", "Expected purchases", _PRED,
            direction="higher", total=True,
            phrase={"group": "value", "high": "expected to buy {value:.1f} more times soon", "low": None}),
    Feature("expected_order_value", "value", "money", "currency", "predict", "Expected order value", _PRED,
            direction="higher", trait=False, phrase={"group": "basket", "high": None, "low": None}),
    # the web funnel (events with a type); the report has shown them under "Other" from the start
    Feature("sessions", "web", "count", "sessions", "funnel", "Sessions", _OTHER, direction="higher", median=True,
            labels=True,
            phrase={"group": "web visits", "high": "{value:.0f} visits to the site (top {top:.0f}%)",
                    "high_one": "1 visit to the site (top {top:.0f}%)", "low": "few visits to the site ({value:.0f})",
                    "low_zero": "no visit to the site", "low_one": "1 visit to the site only"}),
    Feature("pages_per_session", "web", "rate", "pages per session", "funnel", "Pages per session", _OTHER,
            direction="higher", median=True, labels=True,
            phrase={"group": "web depth", "high": "{value:.1f} pages a visit (top {top:.0f}%)",
                    "low": "leaves after {value:.1f} pages a visit", "low_one": "bounces: 1 page a visit"}),
    Feature("funnel_stage", "web", "stage", "stage 0-4", "funnel", "Funnel stage", _OTHER,
            phrase={"group": "web funnel", "high": None, "low": None}),
    Feature("cart_abandoned", "web", "flag", "0 or 1", "funnel", "Cart abandoned", _OTHER, direction="lower",
            labels=True, phrase={"group": "web funnel", "high": "left a cart or checkout without buying", "low": None}),
)
# fmt: on


@functools.lru_cache(maxsize=8)
def _index(features):
    exact = {f.name: f for f in features if not f.is_family}
    return exact, tuple(f for f in features if f.is_family)


def find(column, features=None):
    """The registry entry of a profile column (its own, else its family's), or None.

    Examples
    --------
    >>> find("orders_30d").name, find("orders_paid") is None
    ('orders_*d', True)
    """
    exact, families = _index(FEATURES if features is None else tuple(features))
    f = exact.get(column)
    if f is not None:
        return f
    for f in families:
        if f.matches(column):
            return f
    return None


def get(name):
    """The entry named ``name`` exactly (a column or a family pattern); KeyError when there is none.

    Examples
    --------
    >>> get("share_*").section
    'Category mix (share of spend)'
    """
    exact, families = _index(FEATURES)
    if name in exact:
        return exact[name]
    for f in families:
        if f.name == name:
            return f
    raise KeyError(f"no profile feature named {name!r} in segone.features.FEATURES")


def label_of(column, pattern, readable=True):
    """What ``*`` of ``pattern`` stands for in ``column`` (``share_home_garden`` -> "home garden").

    With ``readable=False`` the matched text as it is ("home_garden").

    Examples
    --------
    >>> label_of("share_home_garden", "share_*"), label_of("orders_30d", "orders_*d", readable=False)
    ('home garden', '30')
    """
    if "*" in pattern:
        head, tail = pattern.split("*", 1)
        rest = column[len(head) : len(column) - len(tail) if tail else None]
    else:
        rest = column
    return rest.replace("_", " ").strip() if readable else rest


def features_of_step(step):
    """The entries a profile ``step`` builds, in registry order.

    Examples
    --------
    >>> [f.name for f in features_of_step("btyd")]
    ['frequency', 'recency', 'T', 'monetary_value']
    """
    return [f for f in FEATURES if f.step == step]


def not_features():
    """The id and timestamp columns of a profile: never described, scored or summed.

    Examples
    --------
    >>> not_features()
    ('customer_id', 'first_purchase', 'last_purchase')
    """
    return (ID_COLUMN,) + tuple(f.name for f in FEATURES if f.kind == "timestamp")


def scorer_defaults(columns):
    """The scorer's default ``(column, transform)`` list for a profile with these columns.

    Single features with a transform come first, by :data:`KIND_ORDER`
    (counts, money, days), then the families with a transform (every column
    of the family in column order, its exact members such as
    ``share_other`` included), by :data:`KIND_ORDER` again; registry order
    breaks ties.

    Examples
    --------
    >>> scorer_defaults(["share_a", "events_visit", "tenure_days", "spend_total"])
    [('spend_total', 'log1p'), ('tenure_days', 'log1p'), ('events_visit', 'log1p'), ('share_a', 'identity')]
    """
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    scored = [f for f in FEATURES if f.transform is not None]
    families = sorted((f for f in scored if f.is_family), key=lambda f: rank.get(f.kind, len(rank)))
    singles = sorted((f for f in scored if not f.is_family and not any(g.matches(f.name) for g in families)),
                     key=lambda f: rank.get(f.kind, len(rank)))  # fmt: skip
    cols = list(columns)
    have = set(cols)
    out = [(f.name, f.transform) for f in singles if f.name in have]
    for fam in families:
        out += [(c, fam.transform) for c in cols if fam.matches(c)]
    return out


def share_group_of(column):
    """The share family (pattern) ``column`` belongs to, or None (see :attr:`Feature.share_group`).

    Examples
    --------
    >>> share_group_of("channel_web"), share_group_of("orders")
    ('channel_*', None)
    """
    for fam in _index(FEATURES)[1]:
        if fam.share_group and fam.matches(column):
            return fam.name
    return None


def null_means_never(column):
    """True when a null of ``column`` means "never" (see :attr:`Feature.null_means_never`).

    Examples
    --------
    >>> null_means_never("days_since_visit"), null_means_never("tenure_days")
    (True, False)
    """
    f = find(column)
    return f is not None and f.null_means_never


def persona_phrases():
    """The persona rules of the registry: ``{"match": name, **phrase}``, exact names before families.

    An exact name is matched before any family it is also a member of
    (``share_other`` before ``share_*``); the persona vocabulary appends
    its catch-all rule (``"*"``).

    Examples
    --------
    >>> matches = [r["match"] for r in persona_phrases()]
    >>> matches.index("share_other") < matches.index("share_*")
    True
    """
    entries = [f for f in FEATURES if f.phrase is not None]
    ordered = [f for f in entries if not f.is_family] + [f for f in entries if f.is_family]
    return [{"match": f.name, **f.phrase} for f in ordered]


def median_columns():
    """The columns whose per-segment median the segment table reports, in registry order.

    Examples
    --------
    >>> median_columns()[:3]
    ('recency_days', 'tenure_days', 'orders')
    """
    out = []
    for f in FEATURES:
        if f.median is True:
            out.append(f.name)
        elif f.median:
            out += list(f.median)
    return tuple(out)


def total_columns():
    """The columns whose per-segment total the segment table reports (predicted value).

    Examples
    --------
    >>> total_columns()
    ('clv', 'expected_purchases')
    """
    return tuple(f.name for f in FEATURES if f.total)


def report_table_columns():
    """The median columns of the report's segment table, by :data:`KIND_ORDER` (orders, spend, recency).

    Examples
    --------
    >>> report_table_columns()
    ('orders', 'spend_total', 'recency_days')
    """
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    return tuple(f.name for f in sorted((f for f in FEATURES if f.report_table),
                                        key=lambda f: rank.get(f.kind, len(rank))))  # fmt: skip


def is_trait(column):
    """False for columns never named as a segment trait (see :attr:`Feature.trait`).

    Examples
    --------
    >>> is_trait("monetary_value"), is_trait("spend_total")
    (False, True)
    """
    f = find(column)
    return f is None or f.trait


def is_mix(column):
    """True for mix columns (see :attr:`Feature.mix`).

    Examples
    --------
    >>> is_mix("share_shoes"), is_mix("orders")
    (True, False)
    """
    f = find(column)
    return f is not None and f.mix


def grows_with_time(column):
    """True for columns that grow by construction at every run (see :attr:`Feature.grows_with_time`).

    Examples
    --------
    >>> grows_with_time("tenure_days"), grows_with_time("recency_days")
    (True, False)
    """
    f = find(column)
    return f is not None and f.grows_with_time


def lower_is_better(column):
    """True where less is good for the business (see :attr:`Feature.direction`).

    Examples
    --------
    >>> lower_is_better("recency_days"), lower_is_better("orders")
    (True, False)
    """
    f = find(column)
    return f is not None and f.direction == "lower"
