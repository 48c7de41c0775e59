"""Verification pair files (``<name>.bin``): reading and writing."""

__all__ = []
