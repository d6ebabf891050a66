"""Data files: reading JSONL/CSV/Parquet, validation reports, statistics, ingestion."""
