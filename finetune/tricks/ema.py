"""EMA of the weights with ``torch.optim.swa_utils.AveragedModel``; evaluation and saving use it.

With ``warmup`` the decay ramps as min(decay, (1+t)/(10+t)) (the TensorFlow
``ExponentialMovingAverage(num_updates=...)`` rule): at decay 0.999 a run of a few hundred steps
would otherwise still hold mostly its initial weights.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_multi_avg_fn(decay: float, warmup: bool):
    if not warmup:
        return get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(ema_params, params, num_averaged):
        t = float(num_averaged)
        d = min(decay, (1 + t) / (10 + t))
        torch._foreach_lerp_(ema_params, params, 1 - d)
    return update


def make_ema(model: nn.Module, decay: float = 0.999, warmup: bool = True) -> AveragedModel:
    """Parameters only (``use_buffers=False``): integer buffers such as position ids must not be averaged."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"make_ema: decay must be in [0, 1), got {decay}")
    return AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(decay, warmup), use_buffers=False)
