"""Importing base models: a GGUF file or a Hugging Face folder written into the data folder
as a plain safetensors model, with where it came from recorded beside it."""
