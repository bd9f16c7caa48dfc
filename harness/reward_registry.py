"""Reward functions by name: ``Trajectories -> (B,)`` float32 tensor, one value a rollout.

The one registry every method and config validates against (``OnlineConfig.reward`` names a key
of ``REWARDS``). Task rewards:

- ``boxed-exact``: 1 on an exact match of the last ``\\boxed{}`` answer with the gold answer after
  normalisation (``harness.rewards.exact_match``), else 0 — VOLD §3.2 / §4.1's reward;
- ``math``: 1 when the final answer is math-verify-equivalent to the gold answer
  (``harness.rewards.math_reward``), else 0;
- ``format-accuracy``: PTD-PO's ``0.1 * format + 0.9 * math`` (format: ``<think>...</think>``
  then a ``\\boxed{}`` answer).

Smoke-only rewards (``smoke-*``) exist so tiny random models see a learnable signal in seconds;
they say nothing about a task. A method adds a reward with ``@register_reward("name")``.
"""
from __future__ import annotations

from typing import Callable

import torch

from harness.rewards import exact_match, format_reward, math_reward
from harness.types import Trajectories
from harness.errors import UnknownNameError

RewardFn = Callable[[Trajectories], torch.Tensor]

__all__ = ["REWARDS", "RewardFn", "even_token_fraction", "make_reward_fn", "register_reward", "reward_names"]

REWARDS: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: add ``fn`` to ``REWARDS`` under ``name`` (a name already taken is an error)."""

    def add(fn: RewardFn) -> RewardFn:
        if name in REWARDS and REWARDS[name] is not fn:
            raise ValueError(f"reward {name!r} is already registered ({REWARDS[name].__qualname__})")
        REWARDS[name] = fn
        return fn

    return add


def reward_names() -> list[str]:
    return sorted(REWARDS)


def make_reward_fn(name: str) -> RewardFn:
    """The reward registered as ``name``; ``KeyError`` listing the known names otherwise."""
    if name not in REWARDS:
        raise UnknownNameError(f"reward {name!r}: known rewards are {reward_names()}")
    return REWARDS[name]


def _per_row(fn: Callable[[str, str], float]) -> RewardFn:
    """A rollout-level reward from a ``(response text, gold answer) -> float`` function."""

    def reward(traj: Trajectories) -> torch.Tensor:
        return torch.tensor([float(fn(text, traj.sample_of(i).answer or ""))
                             for i, text in enumerate(traj.texts)], dtype=torch.float32)

    reward.__doc__ = fn.__doc__
    reward.__name__ = reward.__qualname__ = fn.__name__.lstrip("_")
    return reward


def _boxed_exact(text: str, gold: str) -> float:
    """VOLD §3.2 / §4.1: 1 when the last ``\\boxed{}`` of the response equals the gold answer after
    normalisation (harness.rewards.exact_match: no equivalence checking, no fallback), else 0."""
    return float(exact_match(text, gold))


def _math(text: str, gold: str) -> float:
    """1 if the final answer is math-verify-equivalent to the gold answer, else 0
    (harness.rewards.math_reward; VOLD ambiguity V11's switch)."""
    return float(math_reward(text, gold))


def _contains_answer(text: str, gold: str) -> float:
    """Smoke only: 1 if the gold answer string occurs in the response. With the learnable task
    (harness.data.synthetic.learnable, gold "3") a tiny random model hits it now and then, so
    groups have signal and GRPO can raise the rate within a few steps. Not a task metric."""
    return float(bool(gold) and gold in text)


register_reward("boxed-exact")(_per_row(_boxed_exact))
register_reward("math")(_per_row(_math))
register_reward("smoke-contains-answer")(_per_row(_contains_answer))


def _think_format(text: str) -> float:
    """1 when the response is ``<think>R</think>`` then text with a closed ``\\boxed{}``
    (harness.rewards.format_reward); a response whose ``<think>`` the chat template already
    opened (Qwen3-VL-Thinking) counts too, as ``R</think>...\\boxed{}``."""
    return max(format_reward(text, "think"), format_reward(text, "think", opened_in_prompt=True))


def _format_accuracy(text: str, gold: str) -> float:
    """PTD-PO (arXiv 2606.07000) Table 3 / App. B: ``0.1 * format + 0.9 * accuracy``; accuracy is
    the rule-based math-verify match of the final answer (``math``), format ``_think_format``
    (the paper does not define it: docs/methods/ptdpo.md T11). Values in {0, 0.1, 0.9, 1}."""
    return 0.1 * _think_format(text) + 0.9 * _math(text, gold)


register_reward("format-accuracy")(_per_row(_format_accuracy))


@register_reward("smoke-even-tokens")
def even_token_fraction(traj: Trajectories) -> torch.Tensor:
    """Smoke only: the fraction of a response's tokens whose id is even. Dense (about 0.5 for a
    random policy, whatever the vocabulary) and learnable by a tiny model in a few steps, so the
    smoke run and the learning test see non-zero advantages. Not a task metric."""
    mask = traj.response_mask.float()
    even = (traj.response_ids % 2 == 0).float() * mask
    return (even.sum(1) / mask.sum(1).clamp(min=1)).cpu()


@register_reward("smoke-even-majority")
def even_token_majority(traj: Trajectories) -> torch.Tensor:
    """Smoke only: 1 when more than half of a response's tokens have an even id, else 0. A *binary*
    stand-in for the exact-match reward that a tiny random policy hits about half the time and can
    learn within a few steps, so groups have signal and VOLD Eq. 6's reward mask acts. Not a task
    metric."""
    return (even_token_fraction(traj) > 0.5).to(torch.float32)
