"""Failure routing: which rollouts get the dense (teacher) guidance, decided from their rewards.

Two methods route on the same thing, a rollout's failure:

- VOLD (arXiv 2510.23497) Eq. 6, reward-guided KL masking: the distillation term of rollout i is
  weighted by ``1 - r_i`` — only failed rollouts are distilled (``failure_weights``);
- PTD-PO: dense guidance only on failed rollouts of groups whose mean accuracy ``rbar`` is below a
  threshold ``tau`` (``route_failed``).

Both take per-rollout rewards / accuracies in [0, 1] (binary for exact-match rewards; a fractional
value gives VOLD a soft weight) and refuse values outside that range: a weight ``1 - r`` outside
[0, 1] would silently flip or inflate the teacher term.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["failure_weights", "route_failed"]


def _unit_interval(x: Tensor, what: str) -> Tensor:
    x = x.detach().to(torch.float32)
    if x.dim() != 1:
        raise ValueError(f"{what}: expected one value per rollout, shape (B,), got {tuple(x.shape)}")
    if x.numel() and (bool(torch.isnan(x).any()) or x.min() < 0 or x.max() > 1):
        raise ValueError(f"{what} must lie in [0, 1], got range [{float(x.min())}, {float(x.max())}]")
    return x


def failure_weights(rewards: Tensor, masked: bool = True) -> Tensor:
    """Per-rollout weight of the dense guidance, (B,) float32: ``1 - r`` (VOLD Eq. 6: a correct
    rollout gets 0, a failed one 1) when ``masked``, else all ones (Eq. 5, every rollout, whatever
    the rewards). ``ValueError`` when masking and a reward lies outside [0, 1]."""
    if not masked:
        return torch.ones_like(rewards.detach(), dtype=torch.float32)
    return 1.0 - _unit_interval(rewards, "reward-guided masking (VOLD Eq. 6): rewards")


def route_failed(accuracy: Tensor, group_ids: Tensor, tau: float = 1.0) -> Tensor:
    """Which rollouts are routed to dense guidance, (B,) bool.

    Rollout i is routed when it failed (``accuracy[i] == 0``) **and** the mean accuracy of its
    group (the rollouts sharing ``group_ids[i]``, i.e. of the same prompt) is below ``tau``
    (PTD-PO's ``rbar < tau``). Consequences: routed rollouts are a subset of the failed ones;
    with accuracies in [0, 1] a group holding a failure has a mean below 1, so ``tau >= 1``
    (the default) routes every failure; ``tau <= 0`` routes none (a mean is never below 0). The
    result depends only on each rollout's own value and its group's multiset of values (not on the
    order of rows or on the group labels' values)."""
    acc = _unit_interval(accuracy, "accuracy")
    g = torch.as_tensor(group_ids)
    if g.shape != acc.shape:
        raise ValueError(f"group_ids must have the shape of accuracy {tuple(acc.shape)}, got {tuple(g.shape)}")
    if acc.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=acc.device)
    _, inverse = torch.unique(g, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    sums = torch.zeros(n_groups, dtype=torch.float64, device=acc.device).index_add_(0, inverse, acc.double())
    counts = torch.bincount(inverse, minlength=n_groups).to(torch.float64)
    group_mean = (sums / counts)[inverse]
    return (acc == 0) & (group_mean < tau)
