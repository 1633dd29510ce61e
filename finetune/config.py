"""Config of the fine-tuning stage (section ``finetune`` of the run config)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FinetuneConfig:
    enabled: bool = False
