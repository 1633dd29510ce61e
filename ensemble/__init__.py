"""Stacks a run's base models into `stack` and `mean-blend` (see README.md)."""
