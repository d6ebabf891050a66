"""Deployments: a registered model version taken to a target (an Ollama server, or
tuneforge's own endpoints under an alias), health-checked before it counts as live, and
rolled back when the check fails."""
