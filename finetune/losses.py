"""Losses over soft targets: Poly-1 cross-entropy with label smoothing and sample weights.

Every head's targets are probability vectors (task2: over E/S/C/I; task1 and task3: [1-p, p]),
so one function serves all heads and mixup's mixed labels. A single-logit head z is lifted to
the two logits [0, z], whose softmax is [1 - sigmoid(z), sigmoid(z)]: its cross-entropy is the
binary cross-entropy, and its softmax KL the Bernoulli KL.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def class_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, K) logits as they are; (B, 1) single logits lifted to (B, 2) = [0, z]."""
    if logits.shape[-1] == 1:
        return torch.cat([torch.zeros_like(logits), logits], dim=-1)
    return logits


def smooth(target: torch.Tensor, amount: float) -> torch.Tensor:
    return target * (1 - amount) + amount / target.shape[-1] if amount else target


def poly1_cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon: float = 0.0,
                        weight: torch.Tensor | None = None) -> torch.Tensor:
    """Poly-1 loss (Leng et al. 2022): CE + epsilon * (1 - p_t), p_t = sum(target * softmax).

    logits (B, K) or (B, 1); target (B, K) or (B, 2) probabilities; weight (B,) or None.
    Returns the weighted mean over the batch.
    """
    logp = F.log_softmax(class_logits(logits).float(), dim=-1)
    ce = -(target * logp).sum(-1)
    per_row = ce + epsilon * (1 - (target * logp.exp()).sum(-1)) if epsilon else ce
    if weight is None:
        return per_row.mean()
    return (per_row * weight).sum() / weight.sum().clamp(min=1e-12)


class TaskLoss(nn.Module):
    """Weighted sum of the heads' losses. Task 1 regresses to the gain, so it gets neither
    smoothing nor the Poly-1 term; tasks 2 and 3 are classifications and get both."""

    def __init__(self, task_weights: dict[str, float], epsilon: float = 0.0,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.task_weights, self.epsilon, self.label_smoothing = task_weights, epsilon, label_smoothing

    def forward(self, logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                weight: torch.Tensor | None = None) -> torch.Tensor:
        total = 0.0
        for task, z in logits.items():
            if task == "task1":
                loss = poly1_cross_entropy(z, targets[task], 0.0, weight)
            else:
                loss = poly1_cross_entropy(z, smooth(targets[task], self.label_smoothing),
                                           self.epsilon, weight)
            total = total + self.task_weights.get(task, 1.0) * loss
        return total
