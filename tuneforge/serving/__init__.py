"""Serving trained models: predictions for the API and the CLI."""
