"""Differentiable tri-plane volume rendering: rays and samples, tri-plane lookup, alpha compositing."""
