"""Plain on-policy distillation and GKD (methods.opd.loss): ``python -m methods.opd --profile smoke``."""
from methods.opd.config import PROFILES, OPDConfig

__all__ = ["OPDConfig", "PROFILES"]
