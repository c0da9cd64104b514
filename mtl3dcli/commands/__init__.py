"""The user-facing commands, each a thin layer over the inference session or the Trainer."""
