"""Config of the figures stage (section ``figures`` of the run config)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FiguresConfig:
    enabled: bool = True
    max_models: int = 4  # error-analysis figures compare the best non-leaky models, at most this many
    calibration_bins: int = 10
    worst_queries: int = 20  # queries in figures/worst_queries.csv
