"""Answer-format instructions and the one function that appends them to a question.

Every data set, generator and benchmark formats its user prompt through :func:`format_prompt`
so that methods and evals share the exact instruction strings (the reward's answer extraction
relies on them: ``\\boxed{}`` or a choice letter).
"""
from __future__ import annotations

BOXED = "Put your final answer within \\boxed{}."
STEP_BY_STEP_BOXED = "Please reason step by step, and put your final answer within \\boxed{}."
# PTD-PO (docs/methods/ptdpo.md §5): "<think> ... </think> then \boxed{}".
THINK_BOXED = ("You FIRST think about the reasoning process as an internal monologue and then "
               "provide the final answer. The reasoning process MUST BE enclosed within "
               "<think> </think> tags. The final answer MUST BE put in \\boxed{}.")
CHOICE_BOXED = "Answer with the option's letter from the given choices, within \\boxed{}."
SINGLE_DIGIT = "Reply with a single digit only, within \\boxed{}."

INSTRUCTIONS: dict[str, str] = {
    "boxed": BOXED,
    "step_by_step": STEP_BY_STEP_BOXED,
    "think_boxed": THINK_BOXED,
    "choice": CHOICE_BOXED,
    "single_digit": SINGLE_DIGIT,
}


def resolve_instruction(instruction: str | None) -> str | None:
    """A key of :data:`INSTRUCTIONS` -> its text; any other string is used verbatim; None -> None."""
    if instruction is None:
        return None
    return INSTRUCTIONS.get(instruction, instruction)


def format_choices(choices: dict[str, str]) -> str:
    """``{"A": "3", "B": "5"}`` -> ``"Choices:\\n(A) 3\\n(B) 5"`` (letters in the given order)."""
    return "Choices:\n" + "\n".join(f"({k}) {v}" for k, v in choices.items())


def format_prompt(question: str, instruction: str | None = "boxed",
                  choices: dict[str, str] | None = None) -> str:
    """The full user-turn text: question, then the options (if any), then the instruction.

    For multiple choice the default instruction ``"boxed"`` becomes :data:`CHOICE_BOXED`.
    """
    parts = [question.strip()]
    if choices:
        parts.append(format_choices(choices))
        if instruction == "boxed":
            instruction = "choice"
    text = resolve_instruction(instruction)
    if text:
        parts.append(text)
    return "\n".join(parts)
