"""GRPO with DAPO's asymmetric clip (VOLD's RL stage): ``python -m methods.grpo --profile smoke``."""
from methods.grpo.config import PROFILES, GRPOConfig

__all__ = ["GRPOConfig", "PROFILES"]
