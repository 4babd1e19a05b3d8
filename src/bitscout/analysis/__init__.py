"""Analyses beside the search: per-choice sensitivity probes and strategy comparisons."""
