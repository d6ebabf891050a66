"""Serving trained models: classifications (API and CLI), embeddings and generated text (the
OpenAI-compatible endpoints), from models loaded once and kept in memory."""
