"""Data stage: read and validate the official ESCI layout, render product text, make folds."""
