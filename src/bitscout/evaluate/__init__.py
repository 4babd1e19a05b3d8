"""Scoring candidates: the evaluator, its fast engine and the metric registry."""
