"""Readers that find, verify and decode data sets on disk (no learners, no episodes)."""

__all__ = []
