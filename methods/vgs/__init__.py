"""VGS: decomposed on-policy distillation with Visual Gradient Steering (arXiv 2606.00564):
``python -m methods.vgs --profile smoke`` (distillation) or ``--stage teacher`` (the teacher's GRPO)."""
from methods.vgs.config import PROFILES, TEACHER_PROFILES, TeacherGRPOConfig, VGSConfig

__all__ = ["PROFILES", "TEACHER_PROFILES", "TeacherGRPOConfig", "VGSConfig"]
