"""System prompts the papers state for evaluation (``evals run --system NAME``).

The user-turn instruction (``\\boxed{}``, option letter) comes from each benchmark; a system
prompt is optional and off by default (VLMEvalKit's setting, VOLD).
"""
from __future__ import annotations

from harness.data.prompts import THINK_BOXED

SYSTEM_PROMPTS: dict[str, str] = {
    # VGS, Appendix B.4: the unified training and inference template.
    "vgs": ("A conversation between user and assistant. The user asks a question, and the assistant "
            "solves it. The assistant first thinks about the reasoning process in the mind and then "
            "provides the user with the answer. The reasoning process should be enclosed within "
            "<reason></reason>tags. The final answer MUST BE put in \\boxed{}."),
    # PTD-PO, Appendix B: <think> ... </think> then \boxed{} (train-inference consistent).
    "ptdpo": THINK_BOXED,
    "think": THINK_BOXED,
}


def resolve_system(system: str | None) -> str | None:
    """A key of :data:`SYSTEM_PROMPTS` -> its text; other strings verbatim; None/"" -> None."""
    if not system:
        return None
    return SYSTEM_PROMPTS.get(system, system)
