"""Rollout engines: ``generate(samples, sampling) -> Trajectories``."""
from harness.rollout.base import RolloutEngine

__all__ = ["RolloutEngine"]
