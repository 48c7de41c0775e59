"""InsightFace-layout and plain RecordIO training sets: reading, checking, writing."""

__all__ = []
