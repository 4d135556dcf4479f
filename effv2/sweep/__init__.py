"""Multirun support: the per-job record and the sweep summary."""
