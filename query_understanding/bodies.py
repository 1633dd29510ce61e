"""Interchangeable multi-task bodies between the shared encoder and the task heads.

Each maps token states (..., H) to one representation per task, {task: (..., out_dim)}:

* ``MTDNN``: the shared states themselves (Liu et al. 2019), every head reads the same thing.
* ``MMoE``: shared experts, one softmax gate per task over them (Ma et al. 2018).
* ``PLE``: per-task and shared experts in stacked extraction layers; a task's gate mixes its own
  and the shared experts, a shared gate mixes all experts for the next layer (Tang et al. 2020).

Gates act per token, so token-level tasks (NER, TW) get their own mixture at every position.
``forward(x, return_gates=True)`` also returns the gate weights, {name: (..., n_experts)}.
"""
from __future__ import annotations

import torch
from torch import nn


def _expert(width: int, out_dim: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(width, out_dim), nn.GELU(), nn.Dropout(dropout))


def _mix(gate_logits: torch.Tensor, outputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    weights = torch.softmax(gate_logits, dim=-1)
    return (torch.stack(outputs, dim=-1) * weights.unsqueeze(-2)).sum(-1), weights


class MTDNN(nn.Module):
    def __init__(self, width: int, tasks: list[str], **_):
        super().__init__()
        self.tasks, self.out_dim = list(tasks), width

    def forward(self, x: torch.Tensor, return_gates: bool = False):
        out = {t: x for t in self.tasks}
        return (out, {}) if return_gates else out


class MMoE(nn.Module):
    def __init__(self, width: int, tasks: list[str], n_experts: int = 3, expert_dim: int = 64,
                 dropout: float = 0.1, **_):
        super().__init__()
        if n_experts < 1:
            raise ValueError(f"MMoE: n_experts must be >= 1, got {n_experts}")
        self.tasks, self.out_dim = list(tasks), expert_dim
        self.experts = nn.ModuleList(_expert(width, expert_dim, dropout) for _ in range(n_experts))
        self.gates = nn.ModuleDict({t: nn.Linear(width, n_experts) for t in tasks})

    def forward(self, x: torch.Tensor, return_gates: bool = False):
        experts = [e(x) for e in self.experts]
        out, gates = {}, {}
        for t in self.tasks:
            out[t], gates[t] = _mix(self.gates[t](x), experts)
        return (out, gates) if return_gates else out


class _ExtractionLayer(nn.Module):
    """One PLE layer: per-task experts, shared experts, a gate per task (+ a shared gate unless last)."""

    def __init__(self, width: int, tasks: list[str], n_experts: int, expert_dim: int,
                 dropout: float, last: bool):
        super().__init__()
        self.tasks, self.last = tasks, last
        self.task_experts = nn.ModuleDict({
            t: nn.ModuleList(_expert(width, expert_dim, dropout) for _ in range(n_experts)) for t in tasks})
        self.shared_experts = nn.ModuleList(_expert(width, expert_dim, dropout) for _ in range(n_experts))
        self.task_gates = nn.ModuleDict({t: nn.Linear(width, 2 * n_experts) for t in tasks})
        self.shared_gate = None if last else nn.Linear(width, n_experts * (len(tasks) + 1))

    def forward(self, task_in: dict[str, torch.Tensor], shared_in: torch.Tensor):
        shared = [e(shared_in) for e in self.shared_experts]
        own = {t: [e(task_in[t]) for e in self.task_experts[t]] for t in self.tasks}
        out, gates = {}, {}
        for t in self.tasks:
            out[t], gates[t] = _mix(self.task_gates[t](task_in[t]), own[t] + shared)
        shared_out = None
        if self.shared_gate is not None:
            every = [h for t in self.tasks for h in own[t]] + shared
            shared_out, gates["shared"] = _mix(self.shared_gate(shared_in), every)
        return out, shared_out, gates


class PLE(nn.Module):
    def __init__(self, width: int, tasks: list[str], n_experts: int = 3, expert_dim: int = 64,
                 ple_layers: int = 2, dropout: float = 0.1, **_):
        super().__init__()
        if n_experts < 1 or ple_layers < 1:
            raise ValueError(f"PLE: n_experts and ple_layers must be >= 1, got {n_experts}, {ple_layers}")
        self.tasks, self.out_dim = list(tasks), expert_dim
        self.layers = nn.ModuleList(
            _ExtractionLayer(width if i == 0 else expert_dim, self.tasks, n_experts, expert_dim, dropout,
                             last=i == ple_layers - 1) for i in range(ple_layers))

    def forward(self, x: torch.Tensor, return_gates: bool = False):
        task_in, shared_in, all_gates = {t: x for t in self.tasks}, x, {}
        for i, layer in enumerate(self.layers):
            task_in, shared_in, gates = layer(task_in, shared_in)
            all_gates.update({f"{name}@{i}": g for name, g in gates.items()})
        return (task_in, all_gates) if return_gates else task_in


BODIES = {"mtdnn": MTDNN, "mmoe": MMoE, "ple": PLE}


def make_body(name: str, width: int, tasks: list[str], *, n_experts: int, expert_dim: int,
              ple_layers: int, dropout: float) -> nn.Module:
    if name not in BODIES:
        raise ValueError(f"config query_understanding.body: {name!r} is not one of {sorted(BODIES)}")
    return BODIES[name](width, tasks, n_experts=n_experts, expert_dim=expert_dim,
                        ple_layers=ple_layers, dropout=dropout)
