"""PTD-PO (arXiv 2606.07000): privileged tutoring distillation on failed rollouts of an RLVR
optimiser (GRPO / DAPO / GSPO). ``python -m methods.ptdpo --profile smoke``; offline hint
construction: ``python -m methods.ptdpo.hints``."""
from methods.ptdpo.config import OPTIMIZERS, PROFILES, PTDPOConfig

__all__ = ["OPTIMIZERS", "PROFILES", "PTDPOConfig"]
