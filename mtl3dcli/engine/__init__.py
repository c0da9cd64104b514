"""Training loop, evaluation loop and checkpoints."""
