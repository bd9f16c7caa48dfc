"""Reward functions by name: Trajectories -> (B,) float tensor."""
from __future__ import annotations

from typing import Callable

import torch

from harness.rewards import exact_match, math_reward
from harness.types import Trajectories


def _per_row(fn: Callable[[str, str], float]) -> Callable[[Trajectories], torch.Tensor]:
    def reward(traj: Trajectories) -> torch.Tensor:
        return torch.tensor([float(fn(text, traj.sample_of(i).answer or ""))
                             for i, text in enumerate(traj.texts)], dtype=torch.float32)
    return reward


def _boxed_exact(text: str, gold: str) -> float:
    """VOLD §3.2 / §4.1: 1 on an exact match of the ``\\boxed{}`` answer with the gold answer after
    normalisation (harness.rewards.exact_match; METHODS.md §1.5 default), else 0."""
    return float(exact_match(text, gold))


def _math(text: str, gold: str) -> float:
    """1 if the final answer is math-verify-equivalent to the gold answer, else 0
    (harness.rewards.math_reward; VOLD ambiguity V11's switch)."""
    return math_reward(text, gold)


def _contains_answer(text: str, gold: str) -> float:
    """Smoke only: 1 if the gold answer string occurs in the response. With the learnable task
    (harness.data.synthetic.learnable, gold "3") a tiny random model hits it now and then, so
    groups have signal and GRPO can raise the rate within a few steps. Not a task metric."""
    return float(bool(gold) and gold in text)


def even_token_fraction(traj: Trajectories) -> torch.Tensor:
    """Smoke only: the fraction of a response's tokens whose id is even. Dense (about 0.5 for a
    random policy, whatever the vocabulary) and learnable by a tiny model in a few steps, so the
    smoke run and the learning test see non-zero advantages. Not a task metric."""
    mask = traj.response_mask.float()
    even = (traj.response_ids % 2 == 0).float() * mask
    return (even.sum(1) / mask.sum(1).clamp(min=1)).cpu()


REWARDS: dict[str, Callable[[Trajectories], torch.Tensor]] = {
    "boxed-exact": _per_row(_boxed_exact),
    "math": _per_row(_math),
    "smoke-contains-answer": _per_row(_contains_answer),
    "smoke-even-tokens": even_token_fraction,
}


def make_reward_fn(name: str) -> Callable[[Trajectories], torch.Tensor]:
    if name not in REWARDS:
        raise KeyError(f"reward {name!r}: known rewards are {sorted(REWARDS)}")
    return REWARDS[name]
