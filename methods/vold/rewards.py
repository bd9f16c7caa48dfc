"""VOLD's reward: binary exact match of the ``\\boxed{}`` answer (§3.2, §4.1), plus methods.grpo's
rewards (math-verify equivalence ``math``, and the smoke-only ones) under their names."""
from __future__ import annotations

from typing import Callable

import torch

from harness.types import Trajectories
from methods.grpo.rewards import REWARDS as GRPO_REWARDS


def boxed_exact(traj: Trajectories) -> torch.Tensor:
    """1 when the last ``\\boxed{}`` of the response equals the gold answer after normalisation
    (harness.rewards.exact_match: no equivalence checking, no fallback), else 0."""
    from harness.rewards import exact_match

    return torch.tensor([float(exact_match(text, traj.sample_of(i).answer or ""))
                         for i, text in enumerate(traj.texts)], dtype=torch.float32)


def even_token_majority(traj: Trajectories) -> torch.Tensor:
    """Smoke only: 1 when more than half of a response's tokens have an even id, else 0. A *binary*
    stand-in for the exact-match reward that a tiny random policy hits about half the time and can
    learn within a few steps, so groups have signal and Eq. 6's reward mask acts. Not a task metric."""
    from methods.grpo.rewards import even_token_fraction

    return (even_token_fraction(traj) > 0.5).to(torch.float32)


REWARDS: dict[str, Callable[[Trajectories], torch.Tensor]] = {**GRPO_REWARDS, "boxed-exact": boxed_exact,
                                                          "smoke-even-majority": even_token_majority}


def make_reward_fn(name: str) -> Callable[[Trajectories], torch.Tensor]:
    if name not in REWARDS:
        raise KeyError(f"reward {name!r}: known rewards are {sorted(REWARDS)}")
    return REWARDS[name]
