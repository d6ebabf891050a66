"""Hyperparameter studies: Optuna searches over job specs, every trial a normal job."""
