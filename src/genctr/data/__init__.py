"""Canonical events, their validation, and adapters from public data formats."""
