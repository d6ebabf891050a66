"""Training: one typed spec per kind, and one module per kind that runs the libraries."""
