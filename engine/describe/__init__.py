"""DESCRIBE: what each segment is (statistics, label) and, later, each customer."""

from segone.describe.segments import SUMMARY_COLUMNS, SegmentStats, describe_segments, label_segments

__all__ = ["SUMMARY_COLUMNS", "SegmentStats", "describe_segments", "label_segments"]
