"""Synthetic training data: template prompts answered by a model, filtered for quality."""
