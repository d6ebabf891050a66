"""tuneforge: a self-hosted fine-tuning service."""

__version__ = "0.1.0"
