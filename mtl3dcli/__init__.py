"""mtl3d: multi-task dense prediction with a training-only 3D-aware (tri-plane) regularizer."""

__version__ = "0.1.0"
