"""Constants that the command line needs before anything else: kept free of imports, so that
`tuneforge --help` loads neither pydantic nor the settings (tuneforge.config and
tuneforge.training.spec take them from here)."""

# Where `tuneforge serve` listens unless told otherwise, and so where the CLI looks for it.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000

# The embedding losses a job spec accepts (tuneforge.training.spec.EmbeddingMethodParams).
LOSSES = ("mnrl", "cached_mnrl", "triplet", "cosine", "cosent")
# The method of a job spec that names none.
DEFAULT_METHOD_TYPE = "embedding"
