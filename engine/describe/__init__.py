"""DESCRIBE: what each segment is (statistics, lift, label) and what sets each customer apart (personas)."""

from segone.describe._personas import DEFAULT_PHRASES, PersonaModel, PersonaState, personas
from segone.describe.segments import (
    DEFAULT_LABEL_RULES,
    SUMMARY_COLUMNS,
    RFMGrid,
    SegmentStats,
    describe_segments,
    label_segments,
)

__all__ = [
    "DEFAULT_LABEL_RULES",
    "DEFAULT_PHRASES",
    "SUMMARY_COLUMNS",
    "PersonaModel",
    "PersonaState",
    "RFMGrid",
    "SegmentStats",
    "describe_segments",
    "label_segments",
    "personas",
]
