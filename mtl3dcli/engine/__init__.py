"""Training: the Trainer, the objective, training-state checkpoints, distributed set-up and run logging."""
