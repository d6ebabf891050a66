"""The REST API (FastAPI): OpenAI-compatible resources, tuneforge's own, the seed-000 API."""
