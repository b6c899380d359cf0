"""Helpers for the repository itself (not part of the capsim package)."""
