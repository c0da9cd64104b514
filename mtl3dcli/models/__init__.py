"""Networks: backbones (multi-scale encoders), the multi-task baseline and the training-only 3D-aware regularizer."""
