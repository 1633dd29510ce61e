"""FGM (Miyato et al. 2017): move the input embeddings along their gradient, then restore them.

Used after the clean backward pass:

    with fgm_perturbation(model, epsilon):
        adversarial_loss(model(batch)).backward()

The embedding matrix comes from ``model.get_input_embeddings()``. The restore sits in
``finally`` and copies a saved clone back, so the weights are bit-exact afterwards even if the
block raises.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def fgm_perturbation(model: nn.Module, epsilon: float) -> Iterator[torch.Tensor | None]:
    """Add epsilon * g / ||g|| to the embedding matrix for the block; yields the perturbation."""
    weight = model.get_input_embeddings().weight
    backup = weight.detach().clone()
    delta = None
    try:
        grad = weight.grad
        if grad is not None:
            norm = torch.linalg.vector_norm(grad)
            if torch.isfinite(norm) and norm > 0:
                delta = grad * (epsilon / norm)
                with torch.no_grad():
                    weight.add_(delta)
        yield delta
    finally:
        with torch.no_grad():
            weight.copy_(backup)
