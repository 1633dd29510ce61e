"""Embedding mixup: mix pooled representations and their soft labels within a batch.

x' = lam * x + (1 - lam) * x[perm], y' = lam * y + (1 - lam) * y[perm], lam ~ Beta(alpha, alpha).
Sample weights mix the same way. The model applies ``Mix.apply`` to its pooled features, so the
encoder and the ID/unit embeddings see clean inputs and only the head sees mixed ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Mix:
    lam: float
    perm: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.lam * x + (1 - self.lam) * x[self.perm]

    def targets(self, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {task: self.apply(t) for task, t in targets.items()}


def sample_mix(batch_size: int, alpha: float) -> Mix:
    """A random lam ~ Beta(alpha, alpha) and a random pairing, from torch's global RNG (so a
    resumed run, whose RNG state is restored, draws the same mixes)."""
    if alpha <= 0:
        raise ValueError(f"sample_mix: alpha must be > 0, got {alpha}")
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    return Mix(lam, torch.randperm(batch_size))
