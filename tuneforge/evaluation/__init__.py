"""Evaluations: a model (and a baseline) measured on a file or on a job's validation split."""
