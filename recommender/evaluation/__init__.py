"""Offline evaluation: judgments, metrics, baselines, reports, TREC files."""
