"""Users' feedback on a model's answers, and the training data made from it."""
