"""REOPOLD, relaxed on-policy distillation (arXiv 2603.11137): ``python -m methods.reopold --profile smoke``."""
from methods.reopold.config import PROFILES, REOPOLDConfig

__all__ = ["PROFILES", "REOPOLDConfig"]
