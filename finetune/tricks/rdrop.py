"""R-Drop (Liang et al. 2021): the task loss of two dropout passes plus alpha times their
symmetric KL.

A single-logit head is compared as a Bernoulli distribution [1 - sigmoid(z), sigmoid(z)]: a
softmax over one logit is always [1.0], so its KL would be identically 0 (the bug in the public
competition code). ``consistency`` is also what the ``clean_adv`` variant uses, between the clean
and the FGM logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from finetune.losses import class_logits


def symmetric_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """0.5 * (KL(p_a || p_b) + KL(p_b || p_a)), mean over the batch; (B, 1) logits are Bernoulli."""
    la = F.log_softmax(class_logits(a).float(), dim=-1)
    lb = F.log_softmax(class_logits(b).float(), dim=-1)
    kl_ab = F.kl_div(lb, la, log_target=True, reduction="none").sum(-1)  # KL(p_a || p_b)
    kl_ba = F.kl_div(la, lb, log_target=True, reduction="none").sum(-1)
    return 0.5 * (kl_ab + kl_ba).mean()


def consistency(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over heads of the symmetric KL between two sets of logits."""
    return sum(symmetric_kl(a[task], b[task]) for task in a)


class RDropLoss(nn.Module):
    """Wraps a task loss: ``forward(logits_a, logits_b, targets, weight)``."""

    def __init__(self, base: nn.Module, alpha: float):
        super().__init__()
        if alpha < 0:
            raise ValueError(f"RDropLoss: alpha must be >= 0, got {alpha}")
        self.base, self.alpha = base, alpha

    def forward(self, logits_a: dict, logits_b: dict, targets: dict, weight=None) -> torch.Tensor:
        task = 0.5 * (self.base(logits_a, targets, weight) + self.base(logits_b, targets, weight))
        return task + self.alpha * consistency(logits_a, logits_b)
