"""harness.reward_registry: one registry of reward functions, validated by the configs."""
from __future__ import annotations

import pytest

from harness.reward_registry import REWARDS, make_reward_fn, register_reward, reward_names


def test_one_registry_with_the_task_and_smoke_rewards():
    assert {"boxed-exact", "math", "smoke-contains-answer", "smoke-even-tokens",
            "smoke-even-majority"} <= set(REWARDS)
    assert reward_names() == sorted(REWARDS)
    for name in ("boxed-exact", "math", "smoke-even-majority"):
        assert make_reward_fn(name).__doc__, name  # every reward says what it is
    with pytest.raises(KeyError, match="known rewards are .*boxed-exact"):
        make_reward_fn("nope")


def test_register_refuses_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        register_reward("math")(lambda traj: traj)


def test_configs_validate_against_the_registry():
    from methods.grpo.config import GRPOConfig
    from methods.vold.config import VOLDConfig

    for cls in (GRPOConfig, VOLDConfig):
        extra = {"model": "m", "data": "d"}
        assert cls(reward="smoke-even-majority", **extra).reward == "smoke-even-majority"
        with pytest.raises(ValueError, match="unknown reward 'nope'.*boxed-exact"):
            cls(reward="nope", **extra)
