"""Config of the figures stage (section ``figures`` of the run config)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FiguresConfig:
    enabled: bool = False
