"""Supervised fine-tuning on response tokens (VOLD stage 1): ``python -m methods.sft --profile smoke``."""
from methods.sft.config import PROFILES, SFTConfig

__all__ = ["SFTConfig", "PROFILES"]
