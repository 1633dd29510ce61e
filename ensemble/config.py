"""Config of the ensemble stage (section ``ensemble`` of the run config)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EnsembleConfig:
    enabled: bool = False
