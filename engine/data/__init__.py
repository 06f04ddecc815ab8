"""Deterministic, step-indexed data for training runs (DESIGN.md sections 2 and 6)."""
