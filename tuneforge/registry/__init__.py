"""The model registry: named models with versions 1..N, aliases, model cards, promotion."""
