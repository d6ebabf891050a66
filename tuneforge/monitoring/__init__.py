"""Watching the service: usage of served models, resources of jobs, training statistics,
and /metrics in Prometheus' text format."""
